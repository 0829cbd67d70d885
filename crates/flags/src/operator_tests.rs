//! One table of JsonLogic rules, data and expected results, covering every
//! operator the engine compiles (json-logic-js is the reference for the
//! standard operators; flagd's docs for the custom ones).

use serde_json::{Value, json};

use crate::Context;
use crate::logic::{Compiler, Env, Path};

/// Marker for "the rule aborted" (a flagd custom operator failed).
const ABORT: &str = "<abort>";

fn run(rule: &Value, data: &Value) -> Value {
    let mut compiler = Compiler::new(None, crate::Bucketing::V2);
    let node = compiler
        .compile_rule(rule, &Path::Root("rule"))
        .unwrap_or_else(|_| panic!("{rule} did not compile: {:?}", compiler.problems));
    assert!(compiler.problems.is_empty(), "{rule}: {:?}", compiler.problems);
    let ctx = Context::from_json(data.clone()).unwrap().with_timestamp(1_700_000_000);
    let flag_key = String::from("test-flag");
    let env = Env { flag_key: &flag_key, ctx: &ctx };
    match node.evaluate(&env) {
        Ok(v) => v.to_json(),
        Err(_) => json!(ABORT),
    }
}

#[track_caller]
fn check(rows: &[(Value, Value, Value)]) {
    for (rule, data, want) in rows {
        assert_eq!(&run(rule, data), want, "rule {rule} with data {data}");
    }
}

#[test]
fn var() {
    let d = json!({"a": 1, "b": {"c": "deep"}, "arr": [10, 20], "targetingKey": "user-1", "nul": null});
    check(&[
        (json!({"var": "a"}), d.clone(), json!(1)),
        (json!({"var": ["a"]}), d.clone(), json!(1)),
        (json!({"var": ["zz", 26]}), d.clone(), json!(26)),
        (json!({"var": ["nul", "dflt"]}), d.clone(), json!("dflt")),
        (json!({"var": "b.c"}), d.clone(), json!("deep")),
        (json!({"var": "arr.1"}), d.clone(), json!(20)),
        (json!({"var": "arr.9"}), d.clone(), json!(null)),
        (json!({"var": "b.c.d"}), d.clone(), json!(null)),
        (json!({"var": "missing"}), d.clone(), json!(null)),
        (json!({"var": "targetingKey"}), d.clone(), json!("user-1")),
        (json!({"var": "$flagd.flagKey"}), d.clone(), json!("test-flag")),
        (json!({"var": "$flagd.timestamp"}), d.clone(), json!(1_700_000_000)),
        (json!({"var": "$flagd"}), d.clone(), json!({"flagKey": "test-flag", "timestamp": 1_700_000_000})),
        (json!({"var": {"cat": ["b", ".c"]}}), d.clone(), json!("deep")),
        (
            json!({"var": ""}),
            json!({"x": 1}),
            json!({"x": 1, "$flagd": {"flagKey": "test-flag", "timestamp": 1_700_000_000}}),
        ),
    ]);
}

#[test]
fn conditionals_and_logic() {
    let e = json!({});
    check(&[
        (json!({"if": [true, "yes", "no"]}), e.clone(), json!("yes")),
        (json!({"if": [false, "yes", "no"]}), e.clone(), json!("no")),
        (json!({"if": [false, "a", false, "b", "c"]}), e.clone(), json!("c")),
        (json!({"if": [false, "a", true, "b", "c"]}), e.clone(), json!("b")),
        (json!({"if": [false, "a"]}), e.clone(), json!(null)),
        (json!({"if": ["only"]}), e.clone(), json!("only")),
        (json!({"if": []}), e.clone(), json!(null)),
        (json!({"?:": [[], "yes", "no"]}), e.clone(), json!("no")),
        (json!({"and": [true, "a"]}), e.clone(), json!("a")),
        (json!({"and": [true, 0, "a"]}), e.clone(), json!(0)),
        (json!({"and": []}), e.clone(), json!(null)),
        (json!({"or": [false, 0, "a"]}), e.clone(), json!("a")),
        (json!({"or": [false, ""]}), e.clone(), json!("")),
        (json!({"!": [true]}), e.clone(), json!(false)),
        (json!({"!": false}), e.clone(), json!(true)),
        (json!({"!": [[]]}), e.clone(), json!(true)),
        (json!({"!": ["0"]}), e.clone(), json!(false)),
        (json!({"!!": ["0"]}), e.clone(), json!(true)),
        (json!({"!!": [0]}), e.clone(), json!(false)),
        (json!({"!!": [{"var": "x"}]}), json!({"x": [1]}), json!(true)),
    ]);
}

#[test]
fn comparisons() {
    let e = json!({});
    check(&[
        (json!({"==": [1, 1]}), e.clone(), json!(true)),
        (json!({"==": [1, "1"]}), e.clone(), json!(true)),
        (json!({"==": [0, false]}), e.clone(), json!(true)),
        (json!({"==": ["", 0]}), e.clone(), json!(true)),
        (json!({"==": [null, 0]}), e.clone(), json!(false)),
        (json!({"==": [null, null]}), e.clone(), json!(true)),
        (json!({"==": [[1], 1]}), e.clone(), json!(true)),
        (json!({"==": [{"var": "x"}, "a"]}), json!({"x": "a"}), json!(true)),
        (json!({"===": [1, "1"]}), e.clone(), json!(false)),
        (json!({"===": [1, 1.0]}), e.clone(), json!(true)),
        (json!({"!=": [1, "1"]}), e.clone(), json!(false)),
        (json!({"!==": [1, "1"]}), e.clone(), json!(true)),
        (json!({">": [2, 1]}), e.clone(), json!(true)),
        (json!({">": ["b", "a"]}), e.clone(), json!(true)),
        (json!({">=": [1, 1]}), e.clone(), json!(true)),
        (json!({"<": [1, 2]}), e.clone(), json!(true)),
        (json!({"<": ["10", "9"]}), e.clone(), json!(true)),
        (json!({"<": [10, "9"]}), e.clone(), json!(false)),
        (json!({"<": [1, "abc"]}), e.clone(), json!(false)),
        (json!({"<=": [2, 2]}), e.clone(), json!(true)),
        (json!({"<": [1, 2, 3]}), e.clone(), json!(true)),
        (json!({"<": [1, 1, 3]}), e.clone(), json!(false)),
        (json!({"<=": [1, 1, 3]}), e.clone(), json!(true)),
        (json!({"<=": [1, 4, 3]}), e.clone(), json!(false)),
        (json!({">": [{"var": "$flagd.timestamp"}, 1_600_000_000]}), e.clone(), json!(true)),
    ]);
}

#[test]
fn membership_and_strings() {
    let e = json!({});
    let many: Vec<String> = (0..20).map(|i| format!("user{i}@example.com")).collect();
    check(&[
        (json!({"in": ["Spring", "Springfield"]}), e.clone(), json!(true)),
        (json!({"in": ["Illinois", "Springfield"]}), e.clone(), json!(false)),
        (json!({"in": ["Mike", ["Bob", "Mike"]]}), e.clone(), json!(true)),
        (json!({"in": ["Todd", ["Bob", "Mike"]]}), e.clone(), json!(false)),
        (json!({"in": [1, [1, 2]]}), e.clone(), json!(true)),
        (json!({"in": ["1", [1, 2]]}), e.clone(), json!(false)),
        (json!({"in": [{"var": "e"}, [{"var": "a"}, "b"]]}), json!({"e": "x", "a": "x"}), json!(true)),
        (json!({"in": [{"var": "e"}, many]}), json!({"e": "user7@example.com"}), json!(true)),
        (json!({"in": [{"var": "e"}, many]}), json!({"e": "nobody@example.com"}), json!(false)),
        (json!({"in": [{"var": "n"}, many]}), json!({"n": 7}), json!(false)),
        (json!({"in": ["x", 5]}), e.clone(), json!(false)),
        (json!({"cat": ["I love", " pie"]}), e.clone(), json!("I love pie")),
        (json!({"cat": ["a", 1, true, null, 1.5]}), e.clone(), json!("a1true1.5")),
        (json!({"cat": [[1, 2]]}), e.clone(), json!("1,2")),
        (json!({"substr": ["jsonlogic", 4]}), e.clone(), json!("logic")),
        (json!({"substr": ["jsonlogic", -5]}), e.clone(), json!("logic")),
        (json!({"substr": ["jsonlogic", 1, 3]}), e.clone(), json!("son")),
        (json!({"substr": ["jsonlogic", 4, -2]}), e.clone(), json!("log")),
        (json!({"substr": ["héllo", 1, 2]}), e.clone(), json!("él")),
        (json!({"starts_with": ["192.168.0.1", "192.168"]}), e.clone(), json!(true)),
        (json!({"starts_with": ["10.0.0.1", "192.168"]}), e.clone(), json!(false)),
        (json!({"ends_with": ["noreply@example.com", "@example.com"]}), e.clone(), json!(true)),
        (json!({"ends_with": ["noreply@example.com", "@test.com"]}), e.clone(), json!(false)),
        (json!({"starts_with": [{"var": "n"}, "1"]}), json!({"n": 123}), json!(ABORT)),
        (json!({"ends_with": [{"var": "missing"}, "x"]}), e.clone(), json!(ABORT)),
    ]);
}

#[test]
fn arithmetic() {
    let e = json!({});
    check(&[
        (json!({"+": [1, 2, 3]}), e.clone(), json!(6)),
        (json!({"+": ["1", 2]}), e.clone(), json!(3)),
        (json!({"+": "2.5"}), e.clone(), json!(2.5)),
        (json!({"-": [5, 2]}), e.clone(), json!(3)),
        (json!({"-": [2]}), e.clone(), json!(-2)),
        (json!({"*": [2, 3, 4]}), e.clone(), json!(24)),
        (json!({"/": [4, 2]}), e.clone(), json!(2)),
        (json!({"/": [1, 0]}), e.clone(), json!(null)),
        (json!({"%": [7, 3]}), e.clone(), json!(1)),
        (json!({"min": [3, 1, 2]}), e.clone(), json!(1)),
        (json!({"max": [3, 1, 2]}), e.clone(), json!(3)),
        (json!({"max": [1, "x"]}), e.clone(), json!(null)),
        (json!({"+": [1, "x"]}), e.clone(), json!(null)),
        (json!({"+": [0.1, 0.2]}), e.clone(), json!(0.30000000000000004)),
    ]);
}

#[test]
fn arrays() {
    let d = json!({"xs": [1, 2, 3], "people": [{"age": 20}, {"age": 40}], "empty": [], "a": 1});
    check(&[
        (json!({"merge": [[1, 2], [3], 4]}), d.clone(), json!([1, 2, 3, 4])),
        (json!({"merge": []}), d.clone(), json!([])),
        (json!({"map": [{"var": "xs"}, {"*": [{"var": ""}, 2]}]}), d.clone(), json!([2, 4, 6])),
        (json!({"map": [{"var": "people"}, {"var": "age"}]}), d.clone(), json!([20, 40])),
        (json!({"filter": [{"var": "xs"}, {">": [{"var": ""}, 1]}]}), d.clone(), json!([2, 3])),
        (json!({"all": [{"var": "xs"}, {">": [{"var": ""}, 0]}]}), d.clone(), json!(true)),
        (json!({"all": [{"var": "empty"}, {">": [{"var": ""}, 0]}]}), d.clone(), json!(false)),
        (json!({"some": [{"var": "people"}, {">": [{"var": "age"}, 30]}]}), d.clone(), json!(true)),
        (json!({"none": [{"var": "people"}, {">": [{"var": "age"}, 50]}]}), d.clone(), json!(true)),
        (json!({"some": [{"var": "nothing"}, true]}), d.clone(), json!(false)),
        (
            json!({"reduce": [{"var": "xs"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}),
            d.clone(),
            json!(6),
        ),
        (json!({"map": [{"merge": [[1], [2]]}, {"+": [{"var": ""}, 1]}]}), d.clone(), json!([2, 3])),
        (json!({"missing": ["a", "b"]}), d.clone(), json!(["b"])),
        (json!({"missing": {"merge": ["a", "zz"]}}), d.clone(), json!(["zz"])),
        (json!({"missing": ["s"]}), json!({"s": ""}), json!(["s"])),
        (json!({"missing_some": [1, ["a", "b"]]}), d.clone(), json!([])),
        (json!({"missing_some": [2, ["a", "b", "c"]]}), d.clone(), json!(["b", "c"])),
    ]);
}

#[test]
fn sem_ver() {
    let e = json!({});
    check(&[
        (json!({"sem_ver": ["1.2.3", ">=", "1.0.0"]}), e.clone(), json!(true)),
        (json!({"sem_ver": ["1.2.3", "<", "1.10.0"]}), e.clone(), json!(true)),
        (json!({"sem_ver": ["1.0.0-rc.1", "<", "1.0.0"]}), e.clone(), json!(true)),
        (json!({"sem_ver": ["1.0.0", "!=", "1.0.0+build.7"]}), e.clone(), json!(false)),
        (json!({"sem_ver": ["1.0.0", "<=", "1.0.0"]}), e.clone(), json!(true)),
        (json!({"sem_ver": ["1.0.1", ">", "1.0.0"]}), e.clone(), json!(true)),
        (json!({"sem_ver": ["2.0.0", "^", "2.9.1"]}), e.clone(), json!(true)),
        (json!({"sem_ver": ["3.0.0", "^", "2.9.1"]}), e.clone(), json!(false)),
        (json!({"sem_ver": ["2.1.0", "~", "2.1.9"]}), e.clone(), json!(true)),
        (json!({"sem_ver": ["2.2.0", "~", "2.1.9"]}), e.clone(), json!(false)),
        (json!({"sem_ver": [{"var": "v"}, "=", {"var": "w"}]}), json!({"v": "v1.2", "w": "1.2.0"}), json!(true)),
        (json!({"sem_ver": [{"var": "v"}, "=", {"var": "w"}]}), json!({"v": "1.2", "w": "x"}), json!(ABORT)),
        (json!({"sem_ver": [{"var": "v"}, ">", "1.0.0"]}), json!({"v": 2}), json!(true)),
        (json!({"sem_ver": [{"var": "v"}, ">", "1.0.0"]}), json!({"v": true}), json!(ABORT)),
        (json!({"sem_ver": [{"var": "v"}, ">", "1.0.0"]}), json!({}), json!(ABORT)),
    ]);
}

#[test]
fn fractional() {
    // Expected variants computed from MurmurHash3 with (hash * total) >> 32.
    let rows = [
        // One entry carrying all the weight is selected, but the bucketing value must still
        // be there, as in flagd (testbed `targeting-null-flag`).
        (json!({"fractional": [["only", 5], ["never", 0]]}), json!({"targetingKey": "k"}), json!("only")),
        (json!({"fractional": [["only", 5], ["never", 0]]}), json!({}), json!(ABORT)),
        (json!({"fractional": [null, ["only"]]}), json!({}), json!(ABORT)),
        (json!({"fractional": [null, ["only"]]}), json!({"targetingKey": "k"}), json!("only")),
        (json!({"fractional": [["only"]]}), json!({"targetingKey": ""}), json!(ABORT)),
        // Non-string variants pass through (the caller maps true/false to variant names).
        (json!({"fractional": [[true, 0], [false, 1]]}), json!({"targetingKey": "k"}), json!(false)),
        (json!({"fractional": [[null, 1]]}), json!({"targetingKey": "k"}), json!(null)),
        // A rule in first place that returns an array is an entry (flagd sees evaluated arguments).
        (json!({"fractional": [{"merge": ["x", 1]}, ["y", 0]]}), json!({"targetingKey": "k"}), json!("x")),
        // A null bucketing value computed by a rule: v2 buckets by the targeting key.
        (json!({"fractional": [{"var": "nope"}, ["a", 1]]}), json!({"targetingKey": "k"}), json!("a")),
        // Explicit bucketing value that is not a string: an error.
        (json!({"fractional": [{"var": "n"}, ["a", 1], ["b", 1]]}), json!({"n": 5}), json!(ABORT)),
        // No targeting key and no bucketing value: an error.
        (json!({"fractional": [["a", 1], ["b", 1]]}), json!({}), json!(ABORT)),
        // A computed weight that is not a number: an error; a negative one counts as 0.
        (json!({"fractional": [["a", {"var": "w"}], ["b", 1]]}), json!({"targetingKey": "k", "w": "x"}), json!(ABORT)),
        (json!({"fractional": [["a", {"var": "w"}], ["b", 1]]}), json!({"targetingKey": "k", "w": -3}), json!("b")),
        (json!({"fractional": [["a", {"var": "w"}], ["b", 1]]}), json!({"targetingKey": "k", "w": 0.5}), json!(ABORT)),
    ];
    check(&rows);
    // The default bucketing value is flagKey immediately followed by targetingKey.
    let explicit = run(
        &json!({"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}, ["a", 3], ["b", 5], ["c", 2]]}),
        &json!({"targetingKey": "user-77"}),
    );
    let implicit = run(&json!({"fractional": [["a", 3], ["b", 5], ["c", 2]]}), &json!({"targetingKey": "user-77"}));
    assert_eq!(explicit, implicit);
    let h = crate::murmur3_x86_32(b"test-flaguser-77");
    let b = crate::bucket(h, 10);
    let want = if b < 3 {
        "a"
    } else if b < 8 {
        "b"
    } else {
        "c"
    };
    assert_eq!(implicit, json!(want));
}

#[test]
fn fractional_distribution_tracks_weights() {
    // 10 000 subjects over weights 1:2:7 land within 2 percentage points of 10/20/70 %.
    let rule = json!({"fractional": [["a", 1], ["b", 2], ["c", 7]]});
    let mut counts = std::collections::HashMap::new();
    for i in 0..10_000 {
        let v = run(&rule, &json!({"targetingKey": format!("subject-{i}")}));
        *counts.entry(v.as_str().unwrap().to_owned()).or_insert(0u32) += 1;
    }
    for (k, want) in [("a", 1_000.0), ("b", 2_000.0), ("c", 7_000.0)] {
        let got = f64::from(counts[k]);
        assert!((got - want).abs() < 200.0, "{k}: {got} vs {want}");
    }
}

#[test]
fn murmur3_matches_reference_vectors_and_an_independent_implementation() {
    // SMHasher reference values for seed 0.
    for (input, want) in [
        ("", 0u32),
        ("a", 0x3c25_69b2),
        ("hello", 0x248b_fa47),
        ("The quick brown fox jumps over the lazy dog", 0x2e4f_f723),
    ] {
        assert_eq!(crate::murmur3_x86_32(input.as_bytes()), want, "{input:?}");
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..200 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let theirs = murmur3::murmur3_32(&mut std::io::Cursor::new(&bytes), 0).unwrap();
        assert_eq!(crate::murmur3_x86_32(&bytes), theirs, "len {len}");
    }
}
