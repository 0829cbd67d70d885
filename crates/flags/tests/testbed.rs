//! The flagd-testbed evaluator scenarios (open-feature/flagd-testbed,
//! `evaluator/gherkin/*.feature` and `gherkin/targeting.feature`), as a table.
//!
//! The flag definitions are in `tests/data/testbed-flags.json`. Each row is one
//! `Examples` line: the context, then the value the testbed expects. Where the
//! testbed expects the caller's "fallback"/code default, the engine returns no
//! value (`None`), with the reason or error code the scenario asserts.

use std::sync::OnceLock;

use ringfence_flags::{Context, ErrorCode, FlagSet, Reason};
use serde_json::{Value, json};

fn flags() -> &'static FlagSet {
    static SET: OnceLock<FlagSet> = OnceLock::new();
    SET.get_or_init(|| {
        let json = include_str!("data/testbed-flags.json");
        let (set, _problems) = FlagSet::parse_lenient(json).expect("testbed flags load");
        set
    })
}

fn ctx(attrs: Value) -> Context {
    Context::from_json(attrs).expect("valid context").with_timestamp(1_700_000_000)
}

/// What a row expects.
enum Want {
    /// This value, with this reason.
    Value(Value, Reason),
    /// No value (the caller's default), success, with this reason.
    NoValue(Reason),
    /// An error with this code.
    Error(ErrorCode),
}
use Want::*;

#[track_caller]
fn check(flag: &str, context: Value, want: Want) {
    let c = ctx(context.clone());
    let r = flags().evaluate(flag, &c);
    let what = format!("flag {flag} with {context}: got {r:?}");
    match want {
        Value(v, reason) => {
            assert_eq!(r.value, Some(&v), "{what}");
            assert_eq!(r.reason, reason, "{what}");
            assert!(r.error.is_none(), "{what}");
        }
        NoValue(reason) => {
            assert_eq!(r.value, None, "{what}");
            assert_eq!(r.variant, None, "{what}");
            assert_eq!(r.reason, reason, "{what}");
            assert!(r.error.is_none(), "{what}");
        }
        Error(code) => {
            assert_eq!(r.value, None, "{what}");
            assert_eq!(r.reason, Reason::Error, "{what}");
            assert_eq!(r.error.as_ref().map(|e| e.code), Some(code), "{what}");
        }
    }
}

const TM: Reason = Reason::TargetingMatch;

#[test]
fn fractional_v2_nested_property() {
    // fractional.feature "Fractional operator", @fractional-v2 examples.
    for (name, value) in
        [("jack", "hearts"), ("queen", "spades"), ("ten", "clubs"), ("nine", "diamonds"), ("3", "clubs")]
    {
        check("fractional-flag", json!({"user": {"name": name}}), Value(json!(value), TM));
    }
}

#[test]
fn fractional_v2_shorthand() {
    for (key, value) in [("jon@company.com", "heads"), ("jane@company.com", "tails")] {
        check("fractional-flag-shorthand", json!({"targetingKey": key}), Value(json!(value), TM));
    }
}

#[test]
fn fractional_v2_shared_seed() {
    for (name, a, b) in [
        ("seven", "hearts", "ace-of-hearts"),
        ("eight", "diamonds", "ace-of-diamonds"),
        ("nine", "clubs", "ace-of-clubs"),
        ("two", "spades", "ace-of-spades"),
    ] {
        check("fractional-flag-A-shared-seed", json!({"user": {"name": name}}), Value(json!(a), TM));
        check("fractional-flag-B-shared-seed", json!({"user": {"name": name}}), Value(json!(b), TM));
    }
}

#[test]
fn fractional_v2_hash_edges() {
    // Keys whose MurmurHash3 is exactly 0, 1, i32::MAX, 2^31 and u32::MAX.
    for (key, value) in
        [("ejOoVL", "lower"), ("bY9fO-", "lower"), ("SI7p-", "lower"), ("6LvT0", "upper"), ("ceQdGm", "upper")]
    {
        check("fractional-hash-edge-flag", json!({"targetingKey": key}), Value(json!(value), TM));
    }
}

#[test]
fn fractional_hash_edge_keys_have_the_documented_hashes() {
    let expect =
        [("ejOoVL", 0u32), ("bY9fO-", 1), ("SI7p-", 2_147_483_647), ("6LvT0", 2_147_483_648), ("ceQdGm", u32::MAX)];
    for (key, hash) in expect {
        assert_eq!(ringfence_flags::murmur3_x86_32(key.as_bytes()), hash, "{key}");
    }
    assert_eq!(ringfence_flags::bucket(u32::MAX, 100), 99);
    assert_eq!(ringfence_flags::bucket(2_147_483_647, 100), 49);
    assert_eq!(ringfence_flags::bucket(2_147_483_648, 100), 50);
}

#[test]
fn fractional_single_entry_still_needs_a_bucketing_value() {
    check("fractional-single-entry-flag", json!({"targetingKey": "some-targeting-key"}), Value(json!("single"), TM));
    // As in flagd: no targeting key, no bucketing value, so the default variant.
    check("fractional-single-entry-flag", json!({}), Value(json!("fallback"), Reason::Default));
}

#[test]
fn fractional_nested_rules() {
    for (key, tier, value) in [
        ("jon@company.com", "premium", "premium"),
        ("jon@company.com", "basic", "standard"),
        ("user1", "premium", "standard"),
        ("user1", "basic", "standard"),
    ] {
        check("fractional-nested-if-flag", json!({"targetingKey": key, "tier": tier}), Value(json!(value), TM));
    }
    for (key, color, want) in [
        ("jon@company.com", "red", Value(json!("red"), TM)),
        ("jon@company.com", "green", Value(json!("green"), TM)),
        ("user1", "red", Value(json!("blue"), TM)),
        // "yellow" and "" are not variants: an error, so the caller's fallback.
        ("jon@company.com", "yellow", Error(ErrorCode::General)),
        ("jon@company.com", "", Error(ErrorCode::General)),
    ] {
        check("fractional-nested-var-flag", json!({"targetingKey": key, "color": color}), want);
    }
    for (key, tier, value) in [
        ("jon@company.com", "premium", "red"),
        ("jon@company.com", "basic", "blue"),
        ("user1", "premium", "red"),
        ("user1", "basic", "blue"),
    ] {
        check("fractional-nested-weight-flag", json!({"targetingKey": key, "tier": tier}), Value(json!(value), TM));
    }
    check("fractional-as-condition-flag", json!({"targetingKey": "some-targeting-key"}), Value(json!("hundreds"), TM));
    check(
        "fractional-as-condition-false-flag",
        json!({"targetingKey": "some-targeting-key"}),
        Value(json!("ones"), TM),
    );
}

#[test]
fn fractional_operator_errors_fall_back_to_default() {
    let d = Reason::Default;
    check("fractional-null-bucket-key-flag", json!({}), Value(json!("fallback"), d));
    check("fractional-null-bucket-key-flag-in-if", json!({}), Value(json!("fallback"), d));
    check("fractional-zero-weights-flag", json!({"targetingKey": "any-user"}), Value(json!("fallback"), d));
    // A negative weight counts as 0.
    check("fractional-negative-weight-flag", json!({"targetingKey": "any-user"}), Value(json!("two"), TM));
}

#[test]
fn string_comparison() {
    for (id, value) in
        [("abcdef", "prefix"), ("uvwxyz", "postfix"), ("abcxyz", "prefix"), ("lmnopq", "none"), ("3", "none")]
    {
        let reason = if value == "none" { Reason::Default } else { TM };
        check("starts-ends-flag", json!({"id": id}), Value(json!(value), reason));
    }
    for flag in ["starts-with-non-string-flag", "ends-with-non-string-flag"] {
        check(flag, json!({"num": 123}), Value(json!("fallback"), Reason::Default));
    }
    for flag in ["starts-with-wrong-args-flag", "ends-with-wrong-args-flag"] {
        check(flag, json!({}), Value(json!("fallback"), Reason::Default));
    }
}

#[test]
fn semver() {
    for (version, value) in [("2.0.0", "equal"), ("2.1.0", "greater"), ("1.9.0", "lesser"), ("2.0.0-alpha", "lesser")] {
        check("equal-greater-lesser-version-flag", json!({"version": version}), Value(json!(value), TM));
    }
    // 2.0.0.0 is not a version: the rule falls back to the default variant.
    check("equal-greater-lesser-version-flag", json!({"version": "2.0.0.0"}), Value(json!("none"), Reason::Default));
    for (version, value) in [("3.0.1", "minor"), ("3.1.0", "major"), ("4.0.0", "none")] {
        check("major-minor-version-flag", json!({"version": version}), Value(json!(value), TM));
    }
    for (version, value) in [("1.0.0", "match"), ("v1.0.0", "match"), ("V1.0.0", "match"), ("2.0.0", "no-match")] {
        check("semver-v-prefix-flag", json!({"version": version}), Value(json!(value), TM));
    }
    for (version, value) in [
        (json!("1.5.0"), "match"),
        (json!("1.0.0"), "match"),
        (json!("1.0"), "match"),
        (json!("1"), "match"),
        (json!(1), "match"),
        (json!("2.0.0"), "no-match"),
    ] {
        check("semver-partial-version-flag", json!({"version": version}), Value(json!(value), TM));
    }
    for (version, value) in [("1.0.0", "match"), ("1.0.0+other", "match"), ("2.0.0", "no-match")] {
        check("semver-build-metadata-flag", json!({"version": version}), Value(json!(value), TM));
    }
    let d = Reason::Default;
    check("semver-invalid-version-flag", json!({"version": "not-a-version"}), Value(json!("fallback"), d));
    check("semver-invalid-operator-flag", json!({"version": "1.0.0"}), Value(json!("fallback"), d));
    check("semver-invalid-version-flag-in-if", json!({"version": "not-a-version"}), Value(json!("fallback"), d));
    check("semver-invalid-operator-flag-in-if", json!({"version": "1.0.0"}), Value(json!("fallback"), d));
    check("semver-wrong-args-flag", json!({"version": "1.0.0"}), Value(json!("fallback"), d));
}

#[test]
fn evaluator_refs() {
    let email = json!({"email": "ballmer@macrosoft.com"});
    check("some-email-targeted-flag", email.clone(), Value(json!("hi"), TM));
    check("some-other-email-targeted-flag", email, Value(json!("yes"), TM));
    check("some-email-targeted-flag", json!({"email": "user@example.com"}), Value(json!("bye"), TM));
    check("ref-to-nonexistent-evaluator-flag", json!({}), Error(ErrorCode::ParseError));
    // if [ref, "zero"] with no match returns null: the default variant.
    check("boolean-targeted-zero-flag", json!({}), Value(json!(false), Reason::Default));
}

#[test]
fn targeting_key_and_timestamp() {
    check(
        "targeting-key-flag",
        json!({"targetingKey": "5c3d8535-f81a-4478-a6d3-afaa4d51199e"}),
        Value(json!("hit"), TM),
    );
    check(
        "targeting-key-flag",
        json!({"targetingKey": "f20bd32d-703b-48b6-bc8e-79d53c85134a"}),
        Value(json!("miss"), Reason::Default),
    );
    check("timestamp-flag", json!({"time": 1}), Value(json!(-1), TM));
    check("timestamp-flag", json!({"time": 4_133_980_802u64}), Value(json!(1), TM));
}

#[test]
fn errors_and_edge_cases() {
    check("targeting-null-variant-flag", json!({}), Value(json!(2), Reason::Default));
    check("error-targeting-flag", json!({}), Error(ErrorCode::ParseError));
    check("missing-variant-targeting-flag", json!({}), Error(ErrorCode::General));
    check("non-string-variant-targeting-flag", json!({}), Value(json!(2), TM));
    check("empty-targeting-flag", json!({}), Value(json!(1), Reason::Static));
    check("missing-flag", json!({}), Error(ErrorCode::FlagNotFound));
}

#[test]
fn static_values_and_precision() {
    let s = Reason::Static;
    check("boolean-flag", json!({}), Value(json!(true), s));
    check("string-flag", json!({}), Value(json!("hi"), s));
    check("integer-flag", json!({}), Value(json!(10), s));
    check("float-flag", json!({}), Value(json!(0.5), s));
    check(
        "object-flag",
        json!({}),
        Value(json!({"showImages": true, "title": "Check out these pics!", "imagesPerPage": 100}), s),
    );
    check("large-integer-flag", json!({}), Value(json!(2_147_483_647), s));
    check("huge-integer-flag", json!({}), Value(json!(9_007_199_254_740_991u64), s));
    // An integral float stays a float: it serialises as 10.0.
    let c = Context::new();
    let r = flags().evaluate("integral-float-flag", &c);
    assert_eq!(r.value.map(|v| v.to_string()), Some("10.0".to_owned()));
}

#[test]
fn disabled_flags_resolve_without_value() {
    for flag in [
        "disabled-boolean-flag",
        "disabled-string-flag",
        "disabled-integer-flag",
        "disabled-float-flag",
        "disabled-object-flag",
    ] {
        check(flag, json!({}), NoValue(Reason::Disabled));
    }
}

#[test]
fn no_default_variant_uses_code_default() {
    check("null-default-flag", json!({}), NoValue(Reason::Default));
    check("undefined-default-flag", json!({}), NoValue(Reason::Default));
    check("no-default-flag-null-targeting-variant", json!({"email": "wozniak@orange.com"}), NoValue(Reason::Default));
    check("no-default-flag-null-targeting-variant", json!({"email": "jobs@orange.com"}), Value(json!("CEO"), TM));
    check(
        "no-default-flag-undefined-targeting-variant",
        json!({"email": "wozniak@orange.com"}),
        NoValue(Reason::Default),
    );
}

#[test]
fn type_mismatch_and_metadata() {
    use ringfence_flags::ValueType;
    let c = Context::new();
    let r = flags().evaluate("wrong-flag", &c).expect_type(ValueType::Number);
    assert_eq!(r.error.map(|e| e.code), Some(ErrorCode::TypeMismatch));
    for (flag, ty) in
        [("boolean-flag", ValueType::String), ("string-flag", ValueType::Boolean), ("integer-flag", ValueType::String)]
    {
        let r = flags().evaluate(flag, &c).expect_type(ty);
        assert_eq!(r.error.map(|e| e.code), Some(ErrorCode::TypeMismatch), "{flag}");
    }
    let r = flags().evaluate("metadata-flag", &c);
    assert_eq!(
        Value::Object(r.metadata.clone()),
        json!({"string": "1.0.2", "integer": 2, "boolean": true, "float": 0.1, "flagSetId": "testbed", "version": 7})
    );
    // A missing flag still carries the flag-set metadata.
    let r = flags().evaluate("missing-flag", &c);
    assert_eq!(Value::Object(r.metadata.clone()), json!({"flagSetId": "testbed", "version": 7}));
}
