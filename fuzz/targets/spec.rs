//! The workload spec parser (`ringfence_core::spec::parse`) on any text.
//!
//! Never a panic; a refusal places every problem (file, a line and column inside the text,
//! the field of each semantic problem); an accepted spec is valid, and survives the event
//! log's JSON (a spec is stored in `spec_applied`) with the same digest.

use ringfence_core::{command, spec};

const FILE: &str = "fuzz.toml";

pub fn spec_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match spec::parse(FILE, text) {
        Ok(parsed) => {
            let problems = spec::validate(&parsed);
            assert!(problems.is_empty(), "an accepted spec is invalid: {problems:?}");
            let json = serde_json::to_string(&parsed).expect("an accepted spec serializes");
            let back: spec::WorkloadSpec = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("an accepted spec does not read back from the log: {e}\n{json}"));
            assert_eq!(
                command::spec_digest(&back),
                command::spec_digest(&parsed),
                "the digest changes through the log"
            );
            assert!(command::apply_spec(&Default::default(), &parsed).is_ok(), "an accepted spec is refused by apply");
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal names no problem");
            let lines: Vec<&str> = text.split('\n').collect();
            for e in &errors {
                assert_eq!(e.file, FILE);
                assert!(!e.message.trim().is_empty(), "a problem without a message: {e:?}");
                if e.line > 0 {
                    let line = lines.get(e.line - 1).unwrap_or_else(|| panic!("{e:?} is past the end of the text"));
                    assert!(e.column >= 1 && e.column <= line.chars().count() + 1, "{e:?} is outside its line");
                    assert!(e.to_string().starts_with(&format!("{FILE}:{}:{}: ", e.line, e.column)), "{e}");
                    // The place is the field's, or its nearest parent's: its line names one of
                    // the path's keys (a value spanning lines excepted: an array of tables).
                    let keys: Vec<&str> = e.field.split(['.', '[', ']']).filter(|k| !k.is_empty()).collect();
                    let names = |l: &str| keys.iter().any(|k| l.contains(k.trim_matches('"')));
                    assert!(
                        keys.is_empty() || names(line) || keys.iter().all(|k| k.parse::<usize>().is_ok()),
                        "{e} points at line {:?}, which names none of {keys:?}",
                        line
                    );
                }
                // Several problems come from validation, and each names its field.
                if errors.len() > 1 {
                    assert!(!e.field.is_empty(), "{e:?} names no field");
                }
            }
        }
    }
}
