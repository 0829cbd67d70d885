//! Every flagd-testbed scenario that applies to an OFREP server, evaluated in process.
//!
//! The cases and the testbed's flag files (unchanged) are in `tests/conformance/testbed/`,
//! written from flagd-testbed by its `generate.py`. Each case names the flag set and the
//! `fractional` bucketing it runs with. The integration test `flags.rs` runs the same cases
//! through real OpenFeature clients against a router; here the engine answers them directly,
//! as an OpenFeature SDK would hand the answer to the application.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ringfence_flags::{Bucketing, Context, FlagSet, ValueType};
use serde_json::{Value, json};

fn testbed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/testbed")
}

fn read_json(name: &str) -> Value {
    let path = testbed_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The file of `flags/` a flag set name stands for.
fn flag_file(set: &str) -> String {
    match set {
        "testkit" => "flags/evaluator-testkit-flags.json".into(),
        other => format!("flags/{other}.json"),
    }
}

/// The flag set's document with the bucketing recorded, as a release stores it.
fn document(set: &str, bucketing: &str) -> Value {
    let mut doc = read_json(&flag_file(set));
    doc["$ringfence"] = json!({ "fractional": bucketing });
    doc
}

/// What the application gets: value (or its code default), reason, error code, metadata.
fn answer(flags: &FlagSet, case: &Value) -> Value {
    let default = &case["default"];
    let ctx = Context::from_json(case["context"].clone())
        .expect("testbed contexts are objects")
        .with_timestamp(1_700_000_000);
    let want = case["type"]
        .as_str()
        .and_then(ValueType::from_client_name)
        .unwrap_or_else(|| panic!("case {}: unknown type {:?}", case["name"], case["type"]));
    let r = flags.evaluate(case["flag"].as_str().expect("flag"), &ctx).expect_type(want);
    match &r.error {
        Some(e) => json!({"value": default, "reason": "ERROR", "errorCode": e.code.as_str(), "metadata": {}}),
        None => json!({
            "value": r.value.cloned().unwrap_or_else(|| default.clone()),
            "reason": r.reason.as_str(),
            "errorCode": null,
            "metadata": Value::Object(r.metadata.clone()),
        }),
    }
}

/// The differences between an answer and a case's expectation.
fn problems(got: &Value, case: &Value) -> Vec<String> {
    let want = &case["expect"];
    let mut out = Vec::new();
    if let Some(v) = want.get("value") {
        // The testbed's numbers are typed by the step (Integer, Float); JSON keeps 1 and 1.0 apart.
        let same = match (v, &got["value"]) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        };
        if !same {
            out.push(format!("value {}, want {v}", got["value"]));
        }
        if case["type"] == "integer" && !got["value"].is_i64() && !got["value"].is_u64() {
            out.push(format!("value {} is not an integer", got["value"]));
        }
    }
    for field in ["reason", "errorCode"] {
        if let Some(w) = want.get(field)
            && &got[field] != w
        {
            out.push(format!("{field} {}, want {w}", got[field]));
        }
    }
    for (k, v) in want["metadata"].as_object().into_iter().flatten() {
        let g = &got["metadata"][k];
        if g.as_f64().zip(v.as_f64()).map_or(g != v, |(a, b)| a != b) {
            out.push(format!("metadata {k} {g}, want {v}"));
        }
    }
    if want["metadataEmpty"] == true && got["metadata"].as_object().is_some_and(|m| !m.is_empty()) {
        out.push(format!("metadata {}, want none", got["metadata"]));
    }
    out
}

#[test]
fn every_applicable_testbed_scenario_passes_in_process() {
    let doc = read_json("cases.json");
    let cases = doc["cases"].as_array().expect("cases");
    let mut sets: BTreeMap<(String, String), FlagSet> = BTreeMap::new();
    let mut per_suite: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in cases {
        let set = case["flagSet"].as_str().expect("flagSet").to_owned();
        let bucketing = case["bucketing"].as_str().expect("bucketing").to_owned();
        let flags = sets.entry((set.clone(), bucketing.clone())).or_insert_with(|| {
            let flags = FlagSet::parse(&document(&set, &bucketing).to_string())
                .unwrap_or_else(|e| panic!("{set} does not load: {e:?}"));
            assert_eq!(Some(flags.bucketing()), Bucketing::parse(&bucketing));
            flags
        });
        let got = answer(flags, case);
        let p = problems(&got, case);
        let counts = per_suite.entry(case["suite"].as_str().unwrap_or_default().to_owned()).or_default();
        counts.1 += 1;
        if p.is_empty() {
            counts.0 += 1;
        } else {
            failures.push(format!("{}: {} (context {})", case["name"], p.join("; "), case["context"]));
        }
    }
    for (suite, (passed, total)) in &per_suite {
        eprintln!("{suite}: {passed} of {total}");
    }
    assert!(failures.is_empty(), "{} of {} testbed cases fail:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(cases.len() >= 400, "only {} cases: is cases.json complete?", cases.len());
}

#[test]
fn the_testbed_flag_files_load_unchanged_and_strict_validation_finds_their_problems() {
    let dir = testbed_dir().join("flags");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("testbed flags").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    let mut with_warnings = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let (set, warnings) =
            FlagSet::parse_lenient(&text).unwrap_or_else(|e| panic!("{} does not load: {e:?}", f.display()));
        assert!(!set.is_empty(), "{}", f.display());
        assert_eq!(FlagSet::parse(&text).map(|s| s.len()).ok(), Some(set.len()));
        if !warnings.is_empty() {
            assert!(FlagSet::parse_strict(&text).is_err(), "{}", f.display());
            with_warnings.push(f.file_name().unwrap_or_default().to_string_lossy().into_owned());
        }
    }
    // The files with rules flagd loads but cannot evaluate (the list).
    for name in ["custom-ops.json", "edge-case-flags.json", "evaluator-refs.json", "zero-flags.json"] {
        assert!(with_warnings.iter().any(|w| w == name), "{name} has no warning: {with_warnings:?}");
    }
}
