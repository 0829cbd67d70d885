//! Flag definitions (`ringfence_flags::FlagSet`) on any text, and every flag of a document
//! that loads evaluated.
//!
//! Never a panic; the three ways of loading agree (flagd's, lenient, strict); a document
//! refused is refused for a reason with `Effect::Refused`, and a loaded one's warnings are
//! not; every problem's path starts at a key of the document.

use ringfence_flags::{Context, Effect, FlagError, FlagSet};
use serde_json::Value;

pub fn flag_document(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else { return };
    let lenient = FlagSet::parse_lenient(json);
    let strict = FlagSet::parse_strict(json);
    assert_eq!(FlagSet::parse(json).is_ok(), lenient.is_ok(), "flagd's way and the lenient way disagree");
    let doc: Option<Value> = serde_json::from_str(json).ok();
    match &lenient {
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal names no problem");
            assert!(strict.is_err(), "strict loads what lenient refuses");
            for e in errors {
                assert_eq!(e.effect, Effect::Refused, "{e:?} refuses the document");
                placed(e, doc.as_ref());
            }
        }
        Ok((set, warnings)) => {
            assert_eq!(strict.is_ok(), warnings.is_empty(), "strict disagrees with the warnings: {warnings:?}");
            for w in warnings {
                assert_ne!(w.effect, Effect::Refused, "{w:?} is a warning of a loaded document");
                placed(w, doc.as_ref());
            }
            evaluate_all(set);
            let mut doc = doc.expect("a loaded document is JSON");
            ringfence_flags::prepare_document(&mut doc);
            let prepared = FlagSet::parse(&doc.to_string());
            assert!(prepared.is_ok(), "a prepared document no longer loads: {:?}", prepared.err());
        }
    }
}

/// A problem's path starts at one of the document's keys (or is the document itself).
fn placed(e: &FlagError, doc: Option<&Value>) {
    assert!(!e.message.trim().is_empty(), "a problem without a message: {e:?}");
    let Some(Value::Object(map)) = doc else { return };
    if e.path.is_empty() {
        return;
    }
    assert!(
        map.keys()
            .any(|k| e.path == *k || e.path.starts_with(&format!("{k}.")) || e.path.starts_with(&format!("{k}["))),
        "{e:?} is not a place in the document"
    );
}

fn evaluate_all(set: &FlagSet) {
    let contexts = [
        Context::new(),
        Context::new().with_targeting_key("user-1"),
        Context::new()
            .with_targeting_key("")
            .with_attribute("email", "a@example.com")
            .with_attribute("version", "1.2.3")
            .with_attribute("n", -1.5)
            .with_timestamp(i64::MAX),
    ];
    let keys: Vec<String> = set.keys().map(str::to_owned).collect();
    for key in keys.iter().map(String::as_str).chain(["", "no-such-flag"]) {
        for ctx in &contexts {
            let _ = set.evaluate(key, ctx);
            let _ = set.bool_value(key, ctx, false);
        }
        let _ = (set.is_disabled(key), set.value_type(key));
    }
}
