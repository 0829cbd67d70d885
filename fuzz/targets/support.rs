//! What the proptest form of the fuzz targets shares: mutations of valid documents (libFuzzer
//! mutates its corpus itself), the seeds, and the run's settings. Text edits for any document;
//! edits of JSON values for JSON ones, which text edits mostly turn into syntax errors. Each
//! edit prints as what it does, so a shrunk failure reads as the few edits that break a target.

#![allow(dead_code)]

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

/// `cases` unless `PROPTEST_CASES` asks for more (a longer hunt than CI's); failures are not
/// written to files: one worth keeping becomes a plain test.
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(cases);
    Config { cases, failure_persistence: None, ..Config::default() }
}

#[derive(Debug, Clone)]
pub enum Edit {
    /// Removes up to `len` bytes from `at` (positions are taken modulo the text's length).
    Delete {
        at: usize,
        len: usize,
    },
    Insert {
        at: usize,
        token: &'static str,
    },
    /// The value of the `line`-th line holding `=` becomes `token`.
    SetValue {
        line: usize,
        token: &'static str,
    },
    DuplicateLine {
        line: usize,
    },
    SwapLines {
        a: usize,
        b: usize,
    },
    Truncate {
        at: usize,
    },
}

pub fn edits(tokens: &'static [&'static str]) -> impl Strategy<Value = Vec<Edit>> {
    let token = proptest::sample::select(tokens);
    let edit = prop_oneof![
        1 => (any::<usize>(), 1usize..16).prop_map(|(at, len)| Edit::Delete { at, len }),
        1 => (any::<usize>(), token.clone()).prop_map(|(at, token)| Edit::Insert { at, token }),
        3 => (any::<usize>(), token).prop_map(|(line, token)| Edit::SetValue { line, token }),
        1 => any::<usize>().prop_map(|line| Edit::DuplicateLine { line }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines { a, b }),
        1 => any::<usize>().prop_map(|at| Edit::Truncate { at }),
    ];
    proptest::collection::vec(edit, 1..6)
}

/// `text` with `edits` made in order.
pub fn apply(text: &str, edits: &[Edit]) -> String {
    let mut text = text.to_owned();
    for e in edits {
        let at = |n: usize, text: &str| {
            let mut i = n % (text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        match *e {
            Edit::Delete { at: n, len } => {
                let start = at(n, &text);
                let end = at(start + len.min(text.len() - start), &text).max(start);
                text.replace_range(start..end, "");
            }
            Edit::Insert { at: n, token } => {
                let i = at(n, &text);
                text.insert_str(i, token);
            }
            Edit::SetValue { line, token } => {
                let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
                let with_values: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains('=')).collect();
                if let Some(&i) = with_values.get(line % with_values.len().max(1)) {
                    let key = lines[i].split('=').next().unwrap_or_default().to_owned();
                    lines[i] = format!("{key}= {token}");
                }
                text = lines.join("\n");
            }
            Edit::DuplicateLine { line } => {
                let mut lines: Vec<&str> = text.split('\n').collect();
                let i = line % lines.len();
                lines.insert(i, lines[i]);
                text = lines.join("\n");
            }
            Edit::SwapLines { a, b } => {
                let mut lines: Vec<&str> = text.split('\n').collect();
                let n = lines.len();
                lines.swap(a % n, b % n);
                text = lines.join("\n");
            }
            Edit::Truncate { at: n } => {
                let i = at(n, &text);
                text.truncate(i);
            }
        }
    }
    text
}

/// Any JSON value, a few levels deep, with the numbers and strings parsers stumble on.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        proptest::sample::select(&["", "0", "-1", "v1", "1.2.3", "v3", "\u{0}", "é", "ON", "$ref", "fractional"][..])
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replacements of nodes of a document: (which node, in document order, modulo their
/// number; what it becomes). A replaced object member may also be removed.
pub fn json_edits() -> impl Strategy<Value = Vec<(usize, Option<Value>)>> {
    proptest::collection::vec((any::<usize>(), proptest::option::weighted(0.8, json_value())), 1..4)
}

/// `doc` with `edits` made in order.
pub fn apply_json(doc: &Value, edits: &[(usize, Option<Value>)]) -> Value {
    let mut doc = doc.clone();
    for (n, with) in edits {
        let count = nodes(&doc);
        let mut target = n % count;
        replace(&mut doc, &mut target, with);
    }
    doc
}

fn nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(nodes).sum(),
        Value::Object(m) => m.values().map(nodes).sum(),
        _ => 0,
    }
}

/// Replaces the `target`-th node (preorder); `None` removes it from its parent.
fn replace(v: &mut Value, target: &mut usize, with: &Option<Value>) -> bool {
    if *target == 0 {
        *v = with.clone().unwrap_or(Value::Null);
        return true;
    }
    *target -= 1;
    match v {
        Value::Array(items) => {
            for i in 0..items.len() {
                if *target == 0 && with.is_none() {
                    items.remove(i);
                    return true;
                }
                if replace(&mut items[i], target, with) {
                    return true;
                }
            }
            false
        }
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if *target == 0 && with.is_none() {
                    map.remove(&k);
                    return true;
                }
                if replace(map.get_mut(&k).expect("a key just listed"), target, with) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

/// The seed documents of a target (`fuzz/seeds/<target>/`, the corpus libFuzzer starts from
/// too), by file name.
pub fn seeds(target: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| f.expect("a readable directory").path())
        .collect();
    files.sort();
    let seeds: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).expect("a seed is text")).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}
