//! The flag definitions fuzz target (`fuzz/targets/flags.rs`) on stable, as property tests:
//! arbitrary bytes and text, and edits of real documents (the flagd testbed's flags and a
//! small document using every operator). `fuzz/README.md` runs it under libFuzzer.

use proptest::prelude::*;
use serde_json::Value;

#[path = "../../../fuzz/targets/flags.rs"]
mod flags;
#[path = "../../../fuzz/targets/support.rs"]
mod support;

const TESTBED: &str = include_str!("data/testbed-flags.json");

/// What flag documents are made of, as text.
#[rustfmt::skip]
const JSON_TOKENS: &[&str] = &[
    "{", "}", "[", "]", ",", ":", "\"", "null", "true", "0", "-1", "1e308", "-0",
    "9007199254740993", "\"\"", "\"$ref\"", "\"fractional\"", "\"var\"", "\"if\"", "\"sem_ver\"",
    "\"targeting\"", "\"variants\"", "\\u0000", "\"\\ud800\"",
];

/// The testbed's flags and the seeds of `fuzz/seeds/flags/` (every operator, `$ref`, a
/// recorded bucketing).
fn seeds() -> Vec<String> {
    let mut seeds = support::seeds("flags");
    seeds.push(TESTBED.to_owned());
    seeds
}

#[test]
fn the_seeds_load_cleanly() {
    for doc in seeds() {
        flags::flag_document(doc.as_bytes());
        let (_, warnings) = ringfence_flags::FlagSet::parse_lenient(&doc).expect("a seed loads");
        assert!(warnings.is_empty() || doc == TESTBED, "{warnings:?}");
    }
}

proptest! {
    #![proptest_config(support::config(512))]

    #[test]
    fn flag_documents_take_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        flags::flag_document(&data);
    }

    #[test]
    fn flag_documents_take_any_json(doc in support::json_value()) {
        flags::flag_document(doc.to_string().as_bytes());
        flags::flag_document(serde_json::json!({ "flags": doc }).to_string().as_bytes());
    }

    #[test]
    fn flag_documents_take_edited_text(seed in proptest::sample::select(seeds()), edits in support::edits(JSON_TOKENS)) {
        flags::flag_document(support::apply(&seed, &edits).as_bytes());
    }

    #[test]
    fn flag_documents_take_edited_values(seed in proptest::sample::select(seeds()), edits in support::json_edits()) {
        let doc: Value = serde_json::from_str(&seed).expect("valid JSON");
        flags::flag_document(support::apply_json(&doc, &edits).to_string().as_bytes());
    }
}
