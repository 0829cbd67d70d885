//! The fuzz targets of the core (`fuzz/targets/`: the spec parser, a release body as the
//! server checks it) on stable, as property tests: arbitrary bytes and text, and edits of
//! valid documents. `fuzz/README.md` runs the same targets under libFuzzer.

use proptest::prelude::*;
use ringfence_core::spec::EXAMPLE;

#[path = "../../../fuzz/targets/release.rs"]
mod release;
#[path = "../../../fuzz/targets/spec.rs"]
mod spec;
#[path = "../../../fuzz/targets/support.rs"]
mod support;

/// What spec files are made of, and values their fields refuse.
#[rustfmt::skip]
const SPEC_TOKENS: &[&str] = &[
    "=", "[", "]", "{", "}", ",", "\"", "'''", "#", "\n", "[[rollout.phases]]", "[health]", "0",
    "-1", "100", "100.5", "1e400", "nan", "inf", "-inf", "true", "\"\"", "\"10m\"", "\"-1s\"",
    "\"0s\"", "\"99999999999d\"", "[]", "[\"approval\"]", "\"blue_green\"", "\"rings\"",
    "\"critical\"", "\"é\"", "\"a b\"", "9223372036854775808", "{ prefixes = [\"staff-\"] }",
    "\"secret://X\"",
];

#[test]
fn the_seeds_are_valid() {
    assert!(ringfence_core::spec::parse("checkout.toml", EXAMPLE).is_ok());
    for seed in support::seeds("release") {
        let req: ringfence_core::release::ReleaseRequest = serde_json::from_str(&seed).expect("a release seed reads");
        assert!(req.content.flags.is_some() && req.content.migration.is_some());
        release::release_body(seed.as_bytes());
    }
}

proptest! {
    #![proptest_config(support::config(1024))]

    #[test]
    fn spec_parser_takes_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        spec::spec_text(&data);
    }

    #[test]
    fn spec_parser_takes_any_text(text in any::<String>()) {
        spec::spec_text(text.as_bytes());
    }

    #[test]
    fn spec_parser_takes_edited_examples(edits in support::edits(SPEC_TOKENS)) {
        spec::spec_text(support::apply(EXAMPLE, &edits).as_bytes());
    }

    #[test]
    fn release_checks_take_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        release::release_body(&data);
    }

    #[test]
    fn release_checks_take_edited_releases(seed in proptest::sample::select(support::seeds("release")), edits in support::json_edits()) {
        let seed: serde_json::Value = serde_json::from_str(&seed).expect("valid JSON");
        release::release_body(support::apply_json(&seed, &edits).to_string().as_bytes());
    }
}
