//! Nothing panics on any input: random rules, random documents, corrupted
//! copies of a real document, and random contexts. Deterministic (seeded).

use ringfence_flags::{Context, FlagSet};
use serde_json::{Map, Value, json};

/// xorshift64*: small, seeded, good enough to drive shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const OPS: &[&str] = &[
    "var",
    "missing",
    "missing_some",
    "if",
    "?:",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    ">",
    ">=",
    "<",
    "<=",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    "map",
    "filter",
    "reduce",
    "all",
    "none",
    "some",
    "merge",
    "in",
    "cat",
    "substr",
    "fractional",
    "sem_ver",
    "starts_with",
    "ends_with",
    "$ref",
    "bogus",
];
const STRINGS: &[&str] = &[
    "",
    "a",
    "on",
    "off",
    "1.2.3",
    "v2",
    "=",
    "^",
    "~",
    ">=",
    "user.name",
    "$flagd.flagKey",
    "targetingKey",
    "e0",
    "é",
];

fn scalar(r: &mut Rng) -> Value {
    match r.below(7) {
        0 => Value::Null,
        1 => json!(r.below(2) == 0),
        2 => json!(r.below(200) as i64 - 100),
        3 => json!((r.next() % 10_000) as f64 / 7.0 - 500.0),
        4 => json!(u64::MAX - r.below(3) as u64),
        _ => json!(r.pick(STRINGS)),
    }
}

fn rule(r: &mut Rng, depth: u32) -> Value {
    if depth == 0 || r.below(4) == 0 {
        return scalar(r);
    }
    match r.below(6) {
        0 => Value::Array((0..r.below(4)).map(|_| rule(r, depth - 1)).collect()),
        1 => {
            let mut m = Map::new();
            for _ in 0..r.below(3) {
                m.insert(r.pick(OPS).to_string(), rule(r, depth - 1));
            }
            Value::Object(m)
        }
        _ => {
            let op = *r.pick(OPS);
            let args = if r.below(5) == 0 {
                rule(r, depth - 1)
            } else {
                Value::Array((0..r.below(5)).map(|_| rule(r, depth - 1)).collect())
            };
            json!({ op: args })
        }
    }
}

fn random_context(r: &mut Rng) -> Context {
    let mut m = Map::new();
    for key in ["targetingKey", "user", "email", "version", "a", "tier", "xs"] {
        if r.below(2) == 0 {
            let v = if key == "user" {
                json!({"name": scalar(r)})
            } else if key == "xs" {
                rule(r, 2)
            } else {
                scalar(r)
            };
            m.insert(key.into(), v);
        }
    }
    let base = Context::from_json(Value::Object(m.clone())).unwrap_or_else(|_| {
        m.remove("targetingKey");
        Context::from_json(Value::Object(m)).unwrap()
    });
    if r.below(2) == 0 { base.with_timestamp(r.next() as i64) } else { base }
}

/// Evaluates every flag a few times; returns how many evaluations ran a rule
/// (did not end in PARSE_ERROR or FLAG_NOT_FOUND).
fn exercise(json: &str, r: &mut Rng) -> usize {
    let mut ran = 0;
    let strict = FlagSet::parse(json);
    match FlagSet::parse_lenient(json) {
        Ok((set, _problems)) => {
            let keys: Vec<String> = set.keys().map(str::to_owned).collect();
            for _ in 0..4 {
                let ctx = random_context(r);
                for k in &keys {
                    let res = set.evaluate(k, &ctx);
                    // A success with a value always names a defined variant.
                    if res.value.is_some() {
                        assert!(res.variant.is_some() && res.error.is_none());
                    }
                    if res.error.as_ref().is_none_or(|e| e.code == ringfence_flags::ErrorCode::General) {
                        ran += 1;
                    }
                }
                set.evaluate("no-such-flag", &ctx);
            }
            let _ = set.etag();
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            assert!(strict.is_err());
        }
    }
    ran
}

#[test]
fn random_rules_never_panic() {
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let mut ran = 0;
    for _ in 0..3_000 {
        let mut evaluators = Map::new();
        for i in 0..r.below(3) {
            evaluators.insert(format!("e{i}"), rule(&mut r, 3));
        }
        let mut variants = Map::new();
        for name in ["on", "off", "a", "1.2.3", "true"] {
            if r.below(2) == 0 {
                variants.insert(name.into(), json!(r.below(2) == 0));
            }
        }
        let doc = json!({
            "flags": {
                "f": {"state": "ENABLED", "variants": variants.clone(), "defaultVariant": "on", "targeting": rule(&mut r, 5)},
                "g": {"variants": variants, "targeting": {"fractional": rule(&mut r, 3)}}
            },
            "$evaluators": evaluators
        });
        ran += exercise(&doc.to_string(), &mut r);
    }
    // The generator must reach the evaluator, not only the validator.
    assert!(ran > 5_000, "only {ran} evaluations ran a rule");
}

#[test]
fn corrupted_documents_never_panic() {
    let original = include_str!("data/testbed-flags.json").as_bytes().to_vec();
    let mut r = Rng(0x0dd_ba11_c0ff_ee00);
    let filler: &[u8] = b"{}[],:\"\\0-9eE.tfn \xc3\xa9";
    for _ in 0..400 {
        let mut bytes = original.clone();
        for _ in 0..1 + r.below(6) {
            let at = r.below(bytes.len());
            match r.below(4) {
                0 => bytes[at] = *r.pick(filler),
                1 => {
                    bytes.remove(at);
                }
                2 => bytes.insert(at, *r.pick(filler)),
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                bytes.push(b'{');
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = exercise(&text, &mut r);
    }
}

#[test]
fn hostile_shapes_never_panic() {
    let nested = "[".repeat(10_000) + &"]".repeat(10_000);
    for json in [
        "",
        "null",
        "{\"flags\": null}",
        "{\"flags\": {\"f\": {\"variants\": {\"a\": 1e400}}}}",
        &format!("{{\"flags\": {{\"f\": {{\"variants\": {{\"a\": 1}}, \"targeting\": {{\"if\": {nested}}}}}}}}}"),
        "{\"flags\": {\"f\": {\"variants\": {\"a\": \"x\"}, \"targeting\": {\"substr\": [\"abc\", -9223372036854775808, 9223372036854775807]}}}}",
        "{\"flags\": {\"f\": {\"variants\": {\"a\": \"x\"}, \"targeting\": {\"var\": \"a.b.c.d.e.f.g\"}}}}",
    ] {
        let mut r = Rng(7);
        let _ = exercise(json, &mut r);
    }
}

#[test]
fn deepest_accepted_rule_evaluates_on_a_small_stack() {
    // Nesting close to the limit: 120 levels in one evaluator, inlined twice
    // more through $ref chains (depth ~190 after inlining).
    fn nest(depth: usize, leaf: Value) -> Value {
        (0..depth)
            .fold(leaf, |inner, i| if i % 2 == 0 { json!({"!": [inner]}) } else { json!({"if": [true, inner, false]}) })
    }
    let doc = json!({
        "flags": {"deep": {"variants": {"true": true, "false": false}, "defaultVariant": "false", "targeting": nest(60, json!({"$ref": "a"}))}},
        "$evaluators": {"a": nest(60, json!({"$ref": "b"})), "b": nest(60, json!({"==": [{"var": "x"}, 1]}))}
    });
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let set = FlagSet::parse(&doc.to_string()).expect("within the limits");
            let ctx = Context::new().with_attribute("x", 1);
            set.evaluate("deep", &ctx).variant.map(str::to_owned)
        })
        .unwrap();
    assert!(handle.join().expect("no stack overflow").is_some());
}
