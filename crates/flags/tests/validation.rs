//! Loading: every problem is reported with its JSON path; lenient loading
//! keeps flagd's behaviour for broken flags.

use ringfence_flags::{Bucketing, Context, Effect, ErrorCode, FlagSet, Reason, prepare_document};
use serde_json::{Value, json};

/// Wraps `flags` (and optional `$evaluators`) into a document.
fn doc(flags: Value, evaluators: Option<Value>) -> String {
    let mut d = json!({ "flags": flags });
    if let Some(e) = evaluators {
        d["$evaluators"] = e;
    }
    d.to_string()
}

/// A valid boolean flag with the given targeting.
fn with_targeting(t: Value) -> Value {
    json!({"f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": t}})
}

/// Strict parsing fails with exactly these (path, message fragment) problems.
#[track_caller]
fn check_errors(json: &str, want: &[(&str, &str)]) {
    let errors = match FlagSet::parse_strict(json) {
        Ok(_) => panic!("expected errors {want:?}, but {json} parsed"),
        Err(e) => e,
    };
    let got: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), want.len(), "errors: {got:#?}");
    for ((path, fragment), e) in want.iter().zip(&errors) {
        assert_eq!(e.path, *path, "errors: {got:#?}");
        assert!(e.message.contains(fragment), "{:?} should mention {fragment:?}; errors: {got:#?}", e.message);
    }
}

#[test]
fn document_level_problems() {
    check_errors("{", &[("", "invalid JSON")]);
    check_errors("[]", &[("", "must be a JSON object")]);
    check_errors("{}", &[("", "missing required property \"flags\"")]);
    check_errors(r#"{"flags": 3}"#, &[("flags", "must be an object")]);
    check_errors(r#"{"flags": [3]}"#, &[("flags[0]", "must be an object")]);
    check_errors(r#"{"flags": [{"state": "ENABLED"}]}"#, &[("flags[0].key", "needs a key")]);
    check_errors(
        r#"{"flags": {}, "$ringfence": {"fractional": "v9"}}"#,
        &[("$ringfence.fractional", "\"v1\", \"v2\" or \"v3\"")],
    );
    check_errors(
        r#"{"flags": {}, "$ringfence": {"fractionl": "v3"}}"#,
        &[("$ringfence.fractionl", "unknown ringfence setting")],
    );
    check_errors(r#"{"flags": {}, "flag": {}}"#, &[("flag", "unknown top-level property")]);
    check_errors(r#"{"flags": {}, "$evaluators": 3}"#, &[("$evaluators", "must be an object")]);
    check_errors(r#"{"flags": {}, "metadata": {"team": ["a"]}}"#, &[("metadata.team", "strings, numbers or booleans")]);
    // Only these refuse the document in the default (flagd's) loading.
    for refused in ["{", "[]", "{}", r#"{"flags": 3}"#, r#"{"flags": {}, "$evaluators": 3}"#] {
        assert!(FlagSet::parse(refused).is_err(), "{refused}");
    }
    assert!(FlagSet::parse(r#"{"flags": {}, "flag": {}}"#).is_ok());
}

#[test]
fn the_array_form_of_flags_loads_and_prepares_as_the_object_form() {
    let mut doc = json!({"flags": [
        {"key": "a", "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
        {"key": "b", "variants": {"x": "x"}, "defaultVariant": "x"}
    ]});
    let set = FlagSet::parse_strict(&doc.to_string()).unwrap();
    assert_eq!(set.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(set.evaluate("b", &Context::new()).value, Some(&json!("x")));
    assert_eq!(set.bucketing(), Bucketing::UNRECORDED);
    assert_eq!(prepare_document(&mut doc), Some(Bucketing::CURRENT));
    assert_eq!(doc["flags"]["a"]["defaultVariant"], "on");
    assert!(doc["flags"]["a"].get("key").is_none());
    assert_eq!(doc["$ringfence"]["fractional"], "v3");
    let again = FlagSet::parse_strict(&doc.to_string()).unwrap();
    assert_eq!(again.bucketing(), Bucketing::V3);
    // A recorded bucketing is kept.
    let mut v1 = json!({"flags": {}, "$ringfence": {"fractional": "v1"}});
    assert_eq!(prepare_document(&mut v1), Some(Bucketing::V1));
    assert_eq!(v1["$ringfence"]["fractional"], "v1");
}

#[test]
fn flag_structure_problems() {
    let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (json!({"f": 3}), vec![("flags.f", "must be an object")]),
        (
            json!({"f": {"state": "ON", "variants": {"a": 1}}}),
            vec![("flags.f.state", "\"ENABLED\" or \"DISABLED\", found \"ON\"")],
        ),
        (json!({"f": {"variants": {}}}), vec![("flags.f.variants", "at least one variant")]),
        (json!({"f": {"variants": [1, 2]}}), vec![("flags.f.variants", "must be an object")]),
        (json!({"f": {"variants": {"a": null}}}), vec![("flags.f.variants.a", "found null")]),
        (
            json!({"f": {"variants": {"on": true, "off": "false"}}}),
            vec![("flags.f.variants.on", "\"off\" is a string, \"on\" is a boolean")],
        ),
        (
            json!({"f": {"variants": {"red": "c0", "green": "2f"}, "defaultVariant": "purple"}}),
            vec![("flags.f.defaultVariant", "\"purple\" is not one of the variants (green, red)")],
        ),
        (json!({"f": {"variants": {"a": 1}, "defaultVariant": 1}}), vec![("flags.f.defaultVariant", "a variant name")]),
        (
            json!({"f": {"variants": {"big": 9_007_199_254_740_993u64}}}),
            vec![("flags.f.variants.big", "outside the safe range")],
        ),
        (
            json!({"f": {"variants": {"a": 1}, "defaultVarient": "a"}}),
            vec![("flags.f.defaultVarient", "unknown flag property")],
        ),
        (
            json!({"f": {"variants": {"a": 1}, "metadata": {"x": {}}}}),
            vec![("flags.f.metadata.x", "strings, numbers or booleans")],
        ),
        (
            json!({"f": {"variants": {"a": 1}, "targeting": "a"}}),
            vec![("flags.f.targeting", "must be a JsonLogic rule")],
        ),
        (json!({"": {"variants": {"a": 1}}}), vec![("flags.", "must not be empty")]),
    ];
    for (flags, want) in cases {
        check_errors(&doc(flags, None), &want);
    }
}

#[test]
fn targeting_problems() {
    type Case = (Value, Option<Value>, Vec<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        (json!({"foo": [1]}), None, vec![("flags.f.targeting.foo", "unknown operator \"foo\"")]),
        (
            json!({"if": [{"bogus": 1}, "on", {"nope": 2}]}),
            None,
            vec![
                ("flags.f.targeting.if[0].bogus", "unknown operator \"bogus\""),
                ("flags.f.targeting.if[2].nope", "unknown operator \"nope\""),
            ],
        ),
        (json!({"if": [true, "on"], "==": [1, 1]}), None, vec![("flags.f.targeting", "exactly one key")]),
        (json!({"==": [1]}), None, vec![("flags.f.targeting.==", "2 arguments, found 1 argument")]),
        (
            json!({"var": "$flagd.flagkey"}),
            None,
            vec![("flags.f.targeting.var", "unknown flagd property \"$flagd.flagkey\"")],
        ),
        (
            json!({"if": [{"$ref": "missing"}, "on", "off"]}),
            Some(json!({"known": {"==": [1, 1]}})),
            vec![("flags.f.targeting.if[0].$ref", "unknown evaluator \"missing\" (defined evaluators: known)")],
        ),
        (json!({"$ref": 7}), None, vec![("flags.f.targeting.$ref", "must be the name of an evaluator")]),
        (
            json!({"$ref": "a", "x": 1}),
            Some(json!({"a": {"==": [1, 1]}})),
            vec![("flags.f.targeting", "no other keys")],
        ),
        (
            json!({"$ref": "a"}),
            Some(json!({"a": {"or": [{"$ref": "b"}]}, "b": {"and": [{"$ref": "a"}]}})),
            vec![
                ("$evaluators.a.or[0].$ref", "invalid (see $evaluators.b)"),
                ("$evaluators.b.and[0].$ref", "$ref cycle: a -> b -> a"),
                ("flags.f.targeting.$ref", "invalid (see $evaluators.a)"),
            ],
        ),
        (
            json!({"==": [1, 1]}),
            Some(json!({"unused": {"nope": []}})),
            vec![("$evaluators.unused.nope", "unknown operator")],
        ),
        (
            json!({"==": [1, 1]}),
            Some(json!({"bad": "x"})),
            vec![("$evaluators.bad", "non-empty JsonLogic rule object")],
        ),
        (
            json!({"sem_ver": [{"var": "v"}, "===", "1.0.0"]}),
            None,
            vec![("flags.f.targeting.sem_ver[1]", "invalid sem_ver operator \"===\"")],
        ),
        (json!({"sem_ver": [{"var": "v"}, "="]}), None, vec![("flags.f.targeting.sem_ver", "3 arguments")]),
        (
            json!({"sem_ver": [{"var": "v"}, ">", "2.0.0.0"]}),
            None,
            vec![("flags.f.targeting.sem_ver[2]", "not a semantic version")],
        ),
        (json!({"starts_with": ["abc"]}), None, vec![("flags.f.targeting.starts_with", "2 arguments")]),
        (json!({"ends_with": [{"var": "id"}, 3]}), None, vec![("flags.f.targeting.ends_with[1]", "compares strings")]),
        (json!({"fractional": []}), None, vec![("flags.f.targeting.fractional", "at least one")]),
        (
            json!({"fractional": [["on", 0], ["off", 0]]}),
            None,
            vec![("flags.f.targeting.fractional", "every fractional weight is 0")],
        ),
        (
            json!({"fractional": [["on", 2.5], ["off", 1]]}),
            None,
            vec![("flags.f.targeting.fractional[0][1]", "must be an integer")],
        ),
        (
            json!({"fractional": [["on", -1], ["off", 1]]}),
            None,
            vec![("flags.f.targeting.fractional[0][1]", "must not be negative")],
        ),
        (
            json!({"fractional": [["on", 2_147_483_647u64], ["off", 1]]}),
            None,
            vec![("flags.f.targeting.fractional", "more than the maximum 2147483647")],
        ),
        (
            json!({"fractional": [["on", "10"], ["off"]]}),
            None,
            vec![("flags.f.targeting.fractional[0][1]", "integer or a rule")],
        ),
        (json!({"fractional": [[["on"], 1]]}), None, vec![("flags.f.targeting.fractional[0][0]", "found an array")]),
        (json!({"fractional": [["on", 1, 2]]}), None, vec![("flags.f.targeting.fractional[0]", "found 3 elements")]),
        (
            json!({"fractional": [42, ["on", 1]]}),
            None,
            vec![("flags.f.targeting.fractional[0]", "bucketing value must be a string")],
        ),
        (json!({"fractional": "x"}), None, vec![("flags.f.targeting.fractional", "takes an array")]),
    ];
    for (targeting, evaluators, want) in cases {
        check_errors(&doc(with_targeting(targeting), evaluators), &want);
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let json = json!({
        "flags": {
            "a": {"state": "on", "variants": {"x": 1, "y": "2"}, "defaultVariant": "z"},
            "b": {"variants": {"on": true}, "targeting": {"in": ["x"]}}
        }
    })
    .to_string();
    let errors = FlagSet::parse_strict(&json).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["flags.a.defaultVariant", "flags.a.state", "flags.a.variants.y", "flags.b.targeting.in"]);
}

#[test]
fn exponential_ref_expansion_is_rejected() {
    // e0 = [e1, e1], e1 = [e2, e2], …: 2^40 nodes if inlined naively.
    let mut evals = serde_json::Map::new();
    for i in 0..40 {
        evals
            .insert(format!("e{i}"), json!({"or": [{"$ref": format!("e{}", i + 1)}, {"$ref": format!("e{}", i + 1)}]}));
    }
    evals.insert("e40".into(), json!({"==": [1, 1]}));
    let json = doc(with_targeting(json!({"$ref": "e0"})), Some(Value::Object(evals)));
    let errors = FlagSet::parse_strict(&json).unwrap_err();
    assert!(errors.iter().any(|e| e.message.contains("rule too large")), "{errors:?}");
    // Lenient loading keeps the rest usable and the flag resolves to PARSE_ERROR.
    let (set, _) = FlagSet::parse_lenient(&json).unwrap();
    let r = set.evaluate("f", &Context::new());
    assert_eq!(r.error.map(|e| e.code), Some(ErrorCode::ParseError));
}

#[test]
fn deep_ref_chain_is_rejected_without_overflowing_the_stack() {
    let mut evals = serde_json::Map::new();
    for i in 0..5_000 {
        evals.insert(format!("e{i}"), json!({"!": [{"$ref": format!("e{}", i + 1)}]}));
    }
    evals.insert("e5000".into(), json!({"==": [1, 1]}));
    let json = doc(with_targeting(json!({"$ref": "e0"})), Some(Value::Object(evals)));
    let errors = FlagSet::parse_strict(&json).unwrap_err();
    assert!(!errors.is_empty());
}

#[test]
fn lenient_loading_matches_flagd() {
    let json = json!({
        "flags": {
            "good": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
            "bad-state": {"state": "MAYBE", "variants": {"on": true}, "defaultVariant": "on"},
            "bad-op": {"variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": {"nope": []}},
            "bad-semver": {
                "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"if": [{"sem_ver": [{"var": "v"}, "=>", "1.0.0"]}, "on", "off"]}
            }
        }
    })
    .to_string();
    assert!(FlagSet::parse_strict(&json).is_err());
    let (set, problems) = FlagSet::parse_lenient(&json).unwrap();
    assert_eq!(problems.len(), 3, "{problems:?}");
    let c = Context::new();
    assert_eq!(set.evaluate("good", &c).value, Some(&json!(true)));
    // flagd disables only "DISABLED": any other state is enabled (with a warning).
    let r = set.evaluate("bad-state", &c);
    assert_eq!((r.value, r.reason), (Some(&json!(true)), Reason::Static));
    let effects: Vec<(&str, Effect)> = problems.iter().map(|p| (p.path.as_str(), p.effect)).collect();
    assert_eq!(
        effects,
        [
            ("flags.bad-op.targeting.nope", Effect::ParseError),
            ("flags.bad-semver.targeting.if[0].sem_ver[1]", Effect::DefaultVariant),
            ("flags.bad-state.state", Effect::Ignored),
        ]
    );
    // The default parse loads it the same way, without the warnings.
    let plain = FlagSet::parse(&json).unwrap();
    assert_eq!(plain.evaluate("bad-state", &c).value, Some(&json!(true)));
    assert_eq!(set.evaluate("bad-op", &c).error.map(|e| e.code), Some(ErrorCode::ParseError));
    // A misused custom operator: the rule falls back to the default variant.
    let r = set.evaluate("bad-semver", &c.clone().with_attribute("v", "1.0.0"));
    assert_eq!((r.value, r.reason), (Some(&json!(false)), Reason::Default));
}

#[test]
fn omitted_state_and_variants_use_the_schema_defaults() {
    let set = FlagSet::parse_strict(r#"{"flags": {"f": {"defaultVariant": "true"}}}"#).unwrap();
    let r = set.evaluate("f", &Context::new());
    assert_eq!((r.value, r.variant, r.reason), (Some(&json!(true)), Some("true"), Reason::Static));
}

#[test]
fn etag_ignores_formatting_and_key_order() {
    let a = r#"{"flags": {"x": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a"}}}"#;
    let b =
        r#"{ "flags" : { "x" : { "defaultVariant" : "a", "variants" : { "b" : 2, "a" : 1 }, "state" : "ENABLED" } } }"#;
    let c = r#"{"flags": {"x": {"state": "ENABLED", "variants": {"a": 1, "b": 3}, "defaultVariant": "a"}}}"#;
    let (ea, eb, ec) =
        (FlagSet::parse_strict(a).unwrap(), FlagSet::parse_strict(b).unwrap(), FlagSet::parse_strict(c).unwrap());
    assert_eq!(ea.etag(), eb.etag());
    assert_ne!(ea.etag(), ec.etag());
    assert_eq!(ea.etag().len(), 32);
}

#[test]
fn contexts_from_json() {
    let c = Context::from_json(json!({"targetingKey": "u1", "plan": "pro"})).unwrap();
    assert_eq!(c.targeting_key(), Some("u1"));
    assert!(c.attribute("targetingKey").is_none());
    assert_eq!(c.attribute("plan"), Some(&json!("pro")));
    assert_eq!(c.attributes().count(), 1);
    assert_eq!(Context::from_json(Value::Null).unwrap(), Context::new());
    // A targetingKey that is not a string is no targeting key, but rules still read it.
    let c = Context::from_json(json!({"targetingKey": 12})).unwrap();
    assert_eq!(c.targeting_key(), None);
    assert_eq!(c.attribute("targetingKey"), Some(&json!(12)));
    for bad in [json!([1]), json!("x")] {
        let e = Context::from_json(bad).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidContext);
    }
}

#[test]
fn keys_and_lookups() {
    let set = FlagSet::parse_strict(
        r#"{"flags": {"b": {"variants": {"on": true}, "state": "DISABLED"}, "a": {"variants": {"x": "1"}, "defaultVariant": "x"}}}"#,
    )
    .unwrap();
    assert_eq!(set.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert!(set.is_disabled("b") && !set.is_disabled("a") && !set.is_disabled("zz"));
    assert_eq!(set.value_type("a"), Some(ringfence_flags::ValueType::String));
    assert!(!set.bool_value("b", &Context::new(), false));
    assert!(set.bool_value("missing", &Context::new(), true));
}
