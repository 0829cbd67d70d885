//! The request bodies fuzz target (`fuzz/targets/bodies.rs`) on stable, as property tests:
//! arbitrary bytes, arbitrary JSON, and edits of a valid body of each kind. `fuzz/README.md`
//! runs it under libFuzzer.

use proptest::prelude::*;
use serde_json::Value;

#[path = "../../../fuzz/targets/bodies.rs"]
mod bodies;
#[path = "../../../fuzz/targets/support.rs"]
mod support;

#[test]
fn every_seed_is_some_body() {
    for body in support::seeds("bodies") {
        let doc: Value = serde_json::from_str(&body).expect("valid JSON");
        assert!(doc.is_object());
        assert!(bodies::request_bodies(body.as_bytes()) >= 1, "no body reads {body}");
    }
}

proptest! {
    #![proptest_config(support::config(1024))]

    #[test]
    fn bodies_take_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = bodies::request_bodies(&data);
    }

    #[test]
    fn bodies_take_any_json(doc in support::json_value()) {
        let _ = bodies::request_bodies(doc.to_string().as_bytes());
    }

    #[test]
    fn bodies_take_edited_bodies(seed in proptest::sample::select(support::seeds("bodies")), edits in support::json_edits()) {
        let doc: Value = serde_json::from_str(&seed).expect("valid JSON");
        let _ = bodies::request_bodies(support::apply_json(&doc, &edits).to_string().as_bytes());
    }
}
