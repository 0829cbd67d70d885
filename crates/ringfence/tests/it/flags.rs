//! Feature flags end to end: releases carry flagd flag sets, each workload's router serves them
//! over OFREP, and real OpenFeature clients read them.
//!
//! - Conformance: the Python (`openfeature-sdk` + `openfeature-provider-ofrep`), Node server
//!   (`@openfeature/server-sdk` + `@openfeature/ofrep-provider`) and web
//!   (`@openfeature/web-sdk` + `@openfeature/ofrep-web-provider`) clients evaluate every case
//!   of `tests/conformance/cases.json` against the router, over HTTP on loopback, with token
//!   auth; the same expectations are checked against the in-process engine here, and the
//!   protocol's edges (errors, ETag, auth) over raw HTTP.
//! - The kill switch: a flag off for every user of every rollout group, seen by an SDK at its
//!   next poll, restored, and audited.
//! - A guarded flag rollout: a release that only changes flags runs on the processes already
//!   there, fails its health gate for the canary's users, and is reverted automatically.
//!
//! The clients are installed by `cargo xtask deps` (a venv and `npm ci` in `tests/conformance`). A test
//! that cannot find them fails and prints the command that installs them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Method;
use ringfence::http::HttpClient;
use ringfence_api::{Health, MitigationAction, RolloutStatus};
use ringfence_core::EventKind;
use ringfence_flags::{Bucketing, Context, FlagSet, ValueType, prepare_document};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::harness::{DEADLINE, Load, Server, Spec, assert_served_by, path_str, rollout_id, started_pids};

/// Tokens of the conformance workload; the clients present the second one.
const TOKENS: [&str; 2] = ["conformance-token-a", "conformance-token-b"];

fn conformance_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

const PY_INSTALL: &str = "python3 -m venv tests/conformance/.venv && \
     tests/conformance/.venv/bin/pip install -r tests/conformance/requirements.txt";
const NPM_INSTALL: &str = "(cd tests/conformance && npm ci)";

/// The Python that has the pinned clients: the venv `cargo xtask deps` makes, else a `python3` that can
/// import them (e.g. after `pip install --user -r tests/conformance/requirements.txt`).
fn python() -> PathBuf {
    let venv = conformance_dir().join(".venv/bin/python");
    let candidates = [venv, PathBuf::from("python3")];
    for py in &candidates {
        let ok = std::process::Command::new(py)
            .args(["-c", "import openfeature, openfeature.contrib.provider.ofrep"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py.clone();
        }
    }
    panic!(
        "the Python OFREP client is not installed (openfeature-sdk + openfeature-provider-ofrep). \
         From the repository root run:\n  {PY_INSTALL}\n(`cargo xtask deps` does this)"
    );
}

/// `node`, once the pinned packages are in `tests/conformance/node_modules`.
fn node() -> &'static str {
    let ok = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "node is not installed (Debian: apt-get install nodejs npm); then run {NPM_INSTALL}");
    let modules = conformance_dir().join("node_modules/@openfeature");
    for p in ["server-sdk", "ofrep-provider", "ofrep-core", "core", "web-sdk", "ofrep-web-provider"] {
        assert!(
            modules.join(p).join("package.json").is_file(),
            "the Node OFREP clients are not installed (no {}). From the repository root run:\n  {NPM_INSTALL}\n\
             (`cargo xtask deps` does this)",
            modules.join(p).display()
        );
    }
    "node"
}

/// A client script as a subprocess: the router's URL and the token in its environment.
fn client_command(program: &Path, script: &str, url: &str, token: Option<&str>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(script)
        .current_dir(conformance_dir())
        .env("OFREP_URL", url)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("OFREP_TOKEN")
        .env_remove("WATCH_FLAG")
        .env_remove("NODE_OPTIONS")
        .env_remove("OFREP_CASES")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(t) = token {
        cmd.env("OFREP_TOKEN", t);
    }
    cmd
}

/// Runs a client script to the end; its report, after checking that every case passed.
async fn run_client(program: &Path, script: &str, url: &str, token: Option<&str>) -> Value {
    run_client_with(program, script, url, token, None).await
}

/// [`run_client`], with the cases of another file (`OFREP_CASES`).
async fn run_client_with(program: &Path, script: &str, url: &str, token: Option<&str>, cases: Option<&Path>) -> Value {
    let mut cmd = client_command(program, script, url, token);
    if let Some(c) = cases {
        cmd.env("OFREP_CASES", c);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 120 s"))
        .unwrap_or_else(|e| panic!("cannot run {} {script}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed ({}):\n--- stderr\n{stderr}\n--- stdout\n{stdout}", out.status);
    // The web client writes JSON Lines; the report is the line with "event": "report".
    let report: Value = serde_json::from_str(&stdout)
        .ok()
        .or_else(|| {
            stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| v["event"] == "report")
        })
        .unwrap_or_else(|| panic!("{script} printed no JSON report:\n{stdout}\n{stderr}"));
    check_report(script, &report);
    report
}

fn check_report(script: &str, report: &Value) {
    let results = report["results"].as_array().unwrap_or_else(|| panic!("{script}: no results in {report}"));
    let failed: Vec<&Value> = results.iter().filter(|r| r["ok"] != true).collect();
    assert!(failed.is_empty(), "{script}: {} checks failed: {failed:#?}", failed.len());
    assert_eq!(report["failed"], 0, "{script}: {report}");
    eprintln!("{script}: {} checks passed with {} ({})", results.len(), report["client"], report["packages"]);
    for r in results.iter().filter(|r| r["quirk"].is_string()) {
        eprintln!("  client quirk in {:?}: {}", r["name"], r["quirk"]);
    }
}

/// The case names every client must have answered.
fn case_names(cases: &[Value]) -> BTreeSet<String> {
    cases.iter().map(|c| c["name"].as_str().expect("case name").to_string()).collect()
}

fn reported_names(report: &Value) -> BTreeSet<String> {
    report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// What the engine answers for one case, the way an OpenFeature SDK would hand it to the
/// application: the value (or the code default), variant, reason, error code and metadata.
fn engine_answer(flags: &FlagSet, case: &Value) -> Value {
    let default = &case["default"];
    let ctx = match Context::from_json(case["context"].clone()) {
        Ok(c) => c,
        Err(e) => return json!({"value": default, "reason": "ERROR", "errorCode": e.code.as_str()}),
    };
    let want = case["type"]
        .as_str()
        .and_then(ValueType::from_client_name)
        .unwrap_or_else(|| panic!("case {}: unknown type {:?}", case["name"], case["type"]));
    let r = flags.evaluate(case["flag"].as_str().expect("flag key"), &ctx).expect_type(want);
    match &r.error {
        Some(e) => json!({"value": default, "reason": "ERROR", "errorCode": e.code.as_str()}),
        None => json!({
            "value": r.value.cloned().unwrap_or_else(|| default.clone()),
            "variant": r.variant.unwrap_or(""),
            "reason": r.reason.as_str(),
            "errorCode": null,
            "metadata": Value::Object(r.metadata.clone()),
        }),
    }
}

/// Every expectation of cases.json is what the engine computes: the clients are checked
/// against the engine, not against numbers someone typed.
fn check_cases_against_engine(flags: &FlagSet, cases: &[Value]) {
    for case in cases {
        let name = &case["name"];
        let got = engine_answer(flags, case);
        let want = &case["expect"];
        assert_eq!(got["value"], want["value"], "case {name}: value");
        // serde_json tells 1 from 1.0: an integer flag must answer integers, a float flag floats.
        match case["type"].as_str() {
            Some("integer") => assert!(got["value"].is_i64(), "case {name}: {} is not an integer", got["value"]),
            Some("float") => assert!(got["value"].is_f64(), "case {name}: {} is not a float", got["value"]),
            _ => {}
        }
        for field in ["variant", "reason", "errorCode"] {
            if let Some(w) = want.get(field) {
                assert_eq!(&got[field], w, "case {name}: {field}");
            }
        }
        for (k, v) in want["metadata"].as_object().into_iter().flatten() {
            assert_eq!(&got["metadata"][k], v, "case {name}: metadata {k}");
        }
    }
}

/// One OFREP call over raw HTTP: status, headers and the body (`Value::Null` when empty).
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    text: String,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn ofrep(http: &HttpClient, url: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    let r = http
        .request(
            Method::POST,
            &format!("{url}/ofrep/v1/evaluate/flags{path}"),
            headers,
            Some(Bytes::copy_from_slice(body.as_bytes())),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("POST {url}/ofrep/v1/evaluate/flags{path}: {e}"));
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status: r.status.as_u16(), headers: r.headers, text, body }
}

fn ctx(targeting_key: &str) -> String {
    json!({"context": {"targetingKey": targeting_key}}).to_string()
}

/// Applies `extra` TOML after the test spec, and registers releases that share one artifact
/// and configuration (so they run on the same processes) with the given flag files.
async fn setup_flag_workload(server: &Server, spec: &Spec<'_>, extra: &str, releases: &[(&str, &Path)]) {
    let file = server.path(&format!("{}.toml", spec.name));
    std::fs::write(&file, format!("{}\n{extra}\n", spec.toml())).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "apply failed:\n{out}");
    for (version, flags) in releases {
        let out = server
            .cli(&[
                "release",
                "create",
                spec.name,
                "--version",
                version,
                "--artifact",
                "sample-app:1",
                "--flags",
                path_str(flags),
            ])
            .await;
        assert_eq!(out.code, 0, "release create {version} failed:\n{out}");
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_openfeature_clients_conform_over_http() {
    // Fail first, and with the install command, when the clients are missing.
    let py = python();
    let node = PathBuf::from(node());
    let dir = conformance_dir();
    let flags_file = dir.join("flags.json");
    let cases_doc = read_json(&dir.join("cases.json"));
    let cases = cases_doc["cases"].as_array().expect("cases.json has `cases`").clone();
    // The engine answers for the document as the release stores it (bucketing recorded).
    let mut stored = read_json(&flags_file);
    prepare_document(&mut stored);
    let flags =
        FlagSet::parse_strict(&stored.to_string()).unwrap_or_else(|e| panic!("flags.json does not load: {e:?}"));
    assert_eq!(flags.bucketing(), Bucketing::CURRENT);
    check_cases_against_engine(&flags, &cases);

    let server = Server::start().await;
    let w = "conformance";
    let tokens = format!("[flags]\ntokens = [\"{}\", \"{}\"]", TOKENS[0], TOKENS[1]);
    setup_flag_workload(&server, &Spec::new(w), &tokens, &[("v1", &flags_file)]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}\n{}", server.diagnose(w).await);
    let url = format!("http://{}", server.router_addr(w).await);
    let token = TOKENS[1];

    let python_report = run_client(&py, "python_client.py", &url, Some(token)).await;
    let server_report = run_client(&node, "node_server_client.mjs", &url, Some(token)).await;
    let web_report = run_client(&node, "node_web_client.mjs", &url, Some(token)).await;
    for report in [&python_report, &server_report, &web_report] {
        let missing: Vec<String> = case_names(&cases).difference(&reported_names(report)).cloned().collect();
        assert!(missing.is_empty(), "{} skipped cases {missing:?}", report["client"]);
        let names = reported_names(report);
        assert!(names.iter().any(|n| n.starts_with("auth: ")), "{} ran no auth check", report["client"]);
    }
    assert!(
        reported_names(&web_report).contains("bulk: polling revalidates with If-None-Match and gets 304"),
        "the web client did not check ETag revalidation"
    );

    // The protocol's edges over raw HTTP.
    let http = HttpClient::new();
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];

    let a = ofrep(&http, &url, "/bool-static", &ctx("u"), &[]).await;
    assert_eq!(a.status, 401, "no credentials: {}", a.text);
    assert_eq!(a.header("www-authenticate"), Some("Bearer"), "401 names the scheme");
    let a = ofrep(&http, &url, "/bool-static", &ctx("u"), &[("authorization", "Bearer wrong")]).await;
    assert_eq!(a.status, 401, "a wrong token: {}", a.text);
    let other_bearer = format!("Bearer {}", TOKENS[0]);
    for (name, value) in [("x-api-key", TOKENS[0]), ("authorization", other_bearer.as_str())] {
        let a = ofrep(&http, &url, "/bool-static", &ctx("u"), &[(name, value)]).await;
        assert_eq!((a.status, &a.body["value"]), (200, &json!(true)), "{name}: {}", a.text);
    }

    let a = ofrep(&http, &url, "/float-ratio", r#"{"context":{"targetingKey":"u","tier":"gold"}}"#, &auth).await;
    assert!(a.text.contains(r#""value":1.0"#), "a float flag's whole value is written as 1.0: {}", a.text);
    let a = ofrep(&http, &url, "/int-limit", r#"{"context":{"plan":"pro"}}"#, &auth).await;
    assert!(a.text.contains(r#""value":100,"#), "an integer flag's value is written as an integer: {}", a.text);

    let a = ofrep(&http, &url, "/disabled-flag", &ctx("u"), &auth).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["reason"], "DISABLED");
    assert!(a.body.get("value").is_none(), "a disabled flag has no value (codeDefaultFlag): {}", a.text);
    assert_eq!(a.body["variant"], "", "variant is a string, even when there is none: {}", a.text);

    let a = ofrep(&http, &url, "/no-such-flag", &ctx("u"), &auth).await;
    assert_eq!(
        (a.status, &a.body["errorCode"], &a.body["key"]),
        (404, &json!("FLAG_NOT_FOUND"), &json!("no-such-flag"))
    );
    // A targetingKey that is not a string is no targeting key (flagd resolves, it does not refuse).
    let a = ofrep(&http, &url, "/fractional-split", r#"{"context":{"targetingKey":42}}"#, &auth).await;
    assert_eq!(
        (a.status, &a.body["reason"], &a.body["value"]),
        (200, &json!("DEFAULT"), &json!("control")),
        "{}",
        a.text
    );
    for (body, code) in [(r#"{"context":["not","an","object"]}"#, "INVALID_CONTEXT"), (r#"{"context":"#, "PARSE_ERROR")]
    {
        let a = ofrep(&http, &url, "/bool-static", body, &auth).await;
        assert_eq!((a.status, &a.body["errorCode"]), (400, &json!(code)), "{body}: {}", a.text);
        assert_eq!(a.body["key"], "bool-static", "{body}: {}", a.text);
        assert!(a.body["errorDetails"].as_str().is_some_and(|d| !d.is_empty()), "{}", a.text);
        let a = ofrep(&http, &url, "", body, &auth).await;
        assert_eq!((a.status, &a.body["errorCode"]), (400, &json!(code)), "bulk {body}: {}", a.text);
    }

    // Bulk: every flag (disabled ones as value-less successes), an ETag, and 304 on revalidation.
    let a = ofrep(&http, &url, "", &ctx("bulk-user"), &auth).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let keys: BTreeSet<&str> =
        a.body["flags"].as_array().expect("flags").iter().filter_map(|f| f["key"].as_str()).collect();
    assert_eq!(keys, flags.keys().collect::<BTreeSet<_>>(), "bulk answers every flag");
    assert_eq!(a.body["metadata"]["flagSetId"], "ringfence-conformance");
    let etag = a.header("etag").expect("bulk answers carry an ETag").to_string();
    let mut revalidate = auth.to_vec();
    revalidate.push(("if-none-match", &etag));
    let b = ofrep(&http, &url, "", &ctx("bulk-user"), &revalidate).await;
    assert_eq!(b.status, 304, "same flags, same context, If-None-Match: {}", b.text);
    assert!(b.text.is_empty(), "304 has no body");
    assert_eq!(b.header("etag"), Some(etag.as_str()));
    let weak = format!("W/{etag}");
    let b = ofrep(&http, &url, "", &ctx("bulk-user"), &[auth[0], ("if-none-match", &weak)]).await;
    assert_eq!(b.status, 304, "a weak validator matches too");
    let b =
        ofrep(&http, &url, "", r#"{"context":{"targetingKey":"bulk-user","email":"x@ringfence.dev"}}"#, &revalidate)
            .await;
    assert_eq!(b.status, 200, "another context gets other answers, so not 304");
    assert_ne!(b.header("etag"), Some(etag.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_turns_a_flag_off_for_every_user_of_every_group_and_restore_brings_it_back() {
    let node = PathBuf::from(node());
    let dir = conformance_dir();
    let server = Server::start().await;
    let w = "killswitch";
    // v2 adds a flag and changes nothing else: two live groups answer the same cases.
    let mut v2_flags = read_json(&dir.join("flags.json"));
    v2_flags["flags"]["v2-only"] =
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    let v2_file = server.path("flags-v2.json");
    std::fs::write(&v2_file, v2_flags.to_string()).expect("write flags-v2.json");
    // Without traffic v2 is held in its first phase (unknown is never healthy): half the users.
    let spec = Spec { phases: vec![(50, "1500ms"), (100, "1500ms")], ..Spec::new(w) };
    setup_flag_workload(&server, &spec, "", &[("v1", &dir.join("flags.json")), ("v2", &v2_file)]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}\n{}", server.diagnose(w).await);
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    server
        .wait_status(w, "v1 and v2 both serving users", |s| {
            let (_, groups) = s.routes.as_ref()?;
            (groups.len() == 2 && groups.iter().all(|g| g.weight_bp > 0)).then_some(())
        })
        .await;
    let url = format!("http://{}", server.router_addr(w).await);
    let http = HttpClient::new();
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();

    // Before: on for everyone, in both groups.
    let mut groups = BTreeSet::new();
    for u in &users {
        let a = ofrep(&http, &url, "/kill-me", &ctx(u), &[]).await;
        assert_eq!((a.status, &a.body["value"]), (200, &json!(true)), "{u} before the kill: {}", a.text);
        groups.insert(a.header("x-ringfence-version").unwrap_or("?").to_string());
    }
    assert_eq!(groups, BTreeSet::from(["v1".to_string(), "v2".to_string()]), "users spread over both groups");
    let before = ofrep(&http, &url, "", &ctx("etag-user"), &[]).await;
    let etag_before = before.header("etag").expect("ETag").to_string();

    // A browser-style client polling the bulk endpoint with If-None-Match, as a user would.
    let mut web = client_command(&node, "node_web_client.mjs", &url, None);
    web.env("WATCH_FLAG", "kill-me")
        .env("OFREP_POLL_MS", "200")
        .env("WATCH_CHANGES", "2")
        .env("WATCH_TIMEOUT_MS", "90000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = web.spawn().expect("start node_web_client.mjs");
    let (tx, mut lines) = mpsc::unbounded_channel::<Value>();
    let stdout = child.stdout.take().expect("piped");
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({"event": "text", "line": line}));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let ready = next_event(&mut lines, "ready").await;
    assert_eq!(ready["details"]["value"], true, "{ready}");

    // Kill.
    let out = server.cli(&["flags", "kill", w, "kill-me", "--reason", "checkout errors on the new path"]).await;
    let killed_at = (Instant::now(), unix_ms());
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("is OFF for every user"), "{out}");
    let router_ms = wait_for_flag(&http, &url, "kill-me", "DISABLED", killed_at.0).await;
    for u in &users {
        let a = ofrep(&http, &url, "/kill-me", &ctx(u), &[]).await;
        assert_eq!(a.status, 200, "{u}: {}", a.text);
        assert_eq!(
            (&a.body["reason"], a.body.get("value")),
            (&json!("DISABLED"), None),
            "{u} after the kill: {}",
            a.text
        );
    }
    let other = ofrep(&http, &url, "/bool-static", &ctx("user-1"), &[]).await;
    assert_eq!(other.body["value"], true, "the kill switch touches only its flag: {}", other.text);
    let changed = next_event(&mut lines, "changed").await;
    assert_eq!(
        (&changed["details"]["value"], &changed["details"]["reason"]),
        (&json!(false), &json!("DISABLED")),
        "what the web client's application sees after the kill: {changed}"
    );
    assert_eq!(changed["status"], 200, "the revalidation after the kill gets a new body: {changed}");
    let client_ms = changed["at"].as_u64().unwrap_or(0).saturating_sub(killed_at.1);

    // The changed flag set changed the ETag: the old one no longer matches, the new one does.
    let after = ofrep(&http, &url, "", &ctx("etag-user"), &[("if-none-match", &etag_before)]).await;
    assert_eq!(after.status, 200, "after the kill the old ETag must not match: {}", after.text);
    let etag_after = after.header("etag").expect("ETag").to_string();
    assert_ne!(etag_after, etag_before);
    let again = ofrep(&http, &url, "", &ctx("etag-user"), &[("if-none-match", &etag_after)]).await;
    assert_eq!(again.status, 304);

    let list = server.cli(&["flags", "list", w]).await;
    assert!(list.stdout.contains("KILLED kill-me by it-test"), "{list}");
    assert!(list.stdout.contains("checkout errors on the new path"), "{list}");

    // Restore.
    let out = server.cli(&["flags", "restore", w, "kill-me", "--reason", "fixed in v3"]).await;
    let restored_at = Instant::now();
    assert_eq!(out.code, 0, "{out}");
    let restore_ms = wait_for_flag(&http, &url, "kill-me", "STATIC", restored_at).await;
    for u in &users {
        let a = ofrep(&http, &url, "/kill-me", &ctx(u), &[]).await;
        assert_eq!(a.body["value"], true, "{u} after the restore: {}", a.text);
    }
    let changed = next_event(&mut lines, "changed").await;
    assert_eq!(changed["details"]["value"], true, "the web client sees the restore: {changed}");
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("the web client exits").expect("wait");
    assert!(status.success(), "node_web_client.mjs exited with {status}");
    eprintln!(
        "kill switch: the router served DISABLED {router_ms} ms after `flags kill` returned; the web client \
         (polling every 200 ms) saw it {client_ms} ms after; restore reached the router in {restore_ms} ms"
    );

    // Both are audited, with who and why.
    let events = server.events(w).await;
    let audited: Vec<(String, String, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FlagKilled { flag } => {
                Some(("killed".into(), flag.clone(), format!("{} {}", e.actor, e.reason)))
            }
            EventKind::FlagRestored { flag } => {
                Some(("restored".into(), flag.clone(), format!("{} {}", e.actor, e.reason)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        audited,
        [
            ("killed".into(), "kill-me".into(), "it-test checkout errors on the new path".into()),
            ("restored".into(), "kill-me".into(), "it-test fixed in v3".into()),
        ],
        "the kill switch is audited"
    );
    let timeline = server.cli(&["events", w]).await;
    assert!(timeline.stdout.contains("kill-me"), "`ringfence events` shows the kill switch:\n{timeline}");
    let out = server.cli(&["flags", "kill", w, "no-such-flag", "--reason", "typo"]).await;
    assert_ne!(out.code, 0, "killing an unknown flag is refused:\n{out}");
}

/// The next line of the watching web client with this `event`, checking its report on the way.
async fn next_event(lines: &mut mpsc::UnboundedReceiver<Value>, want: &str) -> Value {
    loop {
        let v = tokio::time::timeout(DEADLINE, lines.recv())
            .await
            .unwrap_or_else(|_| panic!("the web client printed no {want:?} within {DEADLINE:?}"))
            .unwrap_or_else(|| panic!("the web client exited before {want:?}"));
        if v["event"] == "report" {
            check_report("node_web_client.mjs", &v);
        }
        if v["event"] == want {
            return v;
        }
    }
}

/// Polls one evaluation until the flag answers `reason`; the time it took, in ms (reported,
/// never asserted).
async fn wait_for_flag(http: &HttpClient, url: &str, flag: &str, reason: &str, since: Instant) -> u128 {
    loop {
        let a = ofrep(http, url, &format!("/{flag}"), &ctx("probe-user"), &[]).await;
        if a.body["reason"] == reason {
            return since.elapsed().as_millis();
        }
        assert!(since.elapsed() < DEADLINE, "{flag} did not answer {reason} within {DEADLINE:?}: {}", a.text);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_rollout_failing_its_health_gate_is_reverted_on_the_same_processes() {
    let server = Server::start().await;
    let w = "flagrollout";
    let flag_set = |default: &str| json!({"flags": {"new-path": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": default}}});
    let (f1, f2) = (server.path("flags-v1.json"), server.path("flags-v2.json"));
    std::fs::write(&f1, flag_set("off").to_string()).expect("write flags v1");
    std::fs::write(&f2, flag_set("on").to_string()).expect("write flags v2");
    // The sample app answers 500 to every user for whom `new-path` is on, reading it over OFREP.
    let spec = Spec { phases: vec![(20, "1500ms"), (100, "1500ms")], ..Spec::new(w) };
    setup_flag_workload(
        &server,
        &spec,
        "[executor.env]\nSAMPLE_FAIL_ON_FLAG = \"new-path\"",
        &[("v1", &f1), ("v2", &f2)],
    )
    .await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}\n{}", server.diagnose(w).await);
    let v1_pids = started_pids(&server.events(w).await, "v1");
    assert!(!v1_pids.is_empty());

    let router = server.router_addr(w).await;
    let url = format!("http://{router}");
    let http = HttpClient::new();
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    for u in users.iter().take(20) {
        let a = ofrep(&http, &url, "/new-path", &ctx(u), &[]).await;
        assert_eq!(a.body["value"], false, "{u} before: {}", a.text);
    }

    let load = Load::start(router, 150.0, 300);
    let out = server.deploy_wait(w, "v2").await;
    assert_eq!(
        out.code,
        10,
        "a flag release failing its health gate must end halted (exit 10):\n{out}\n{}",
        server.diagnose(w).await
    );
    let id = rollout_id(&out);
    let r = server.rollout(w, &id).await;
    assert_eq!(r.status, RolloutStatus::Mitigated, "{r:#?}");
    let d = r.decision.expect("a decision");
    assert_eq!(d.action, MitigationAction::Fallback, "{d:#?}");
    let v = d.verdict.expect("a verdict");
    let errors: Vec<_> = v
        .signals
        .iter()
        .filter(|s| s.signal.starts_with("error_rate") && s.version == "v2" && s.health == Health::Unhealthy)
        .collect();
    assert!(!errors.is_empty(), "the canary's error rate halted it: {:#?}", v.signals);

    // Traffic and flags back on v1.
    server
        .wait_status(w, "all users back on v1", |s| {
            let (_, groups) = s.routes.as_ref()?;
            groups.iter().all(|g| g.version == "v1").then_some(())
        })
        .await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut on = Vec::new();
        for u in &users {
            let a = ofrep(&http, &url, "/new-path", &ctx(u), &[]).await;
            if a.body["value"] != false || a.header("x-ringfence-version") != Some("v1") {
                on.push(format!("{u}: {} ({:?})", a.text, a.header("x-ringfence-version")));
            }
        }
        if on.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "users still evaluate v2's flags after the fallback: {:?}",
            &on[..3.min(on.len())]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reverted = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let samples = load.finish().await;
    assert_served_by(&samples, reverted, "v1", "after the flag rollout was reverted");

    // The canary's users really got the failing path, through the sample app reading the flag.
    let failed_v2 = samples.iter().filter(|s| s.version.as_deref() == Some("v2") && s.status == Some(500)).count();
    assert!(failed_v2 > 0, "no canary user saw the failure the flag guards");

    // A flag-only release starts nothing: v2 ran on v1's processes, which never restarted.
    let events = server.events(w).await;
    assert!(started_pids(&events, "v2").is_empty(), "a replica was started for v2");
    assert!(server.replica_processes(w, "v2").is_empty(), "a process runs as v2");
    assert_eq!(started_pids(&events, "v1"), v1_pids, "v1's processes were restarted");
    assert_eq!(server.real_starts(w, "v1", 0), 1, "v1 replica 0 started more than once");
    let list = server.cli(&["flags", "list", w]).await;
    assert!(list.stdout.contains("(v1, 100% of users)") && !list.stdout.contains("v2"), "{list}");
}

/// The flagd-testbed's flag files and cases (`tests/conformance/testbed`, written by its
/// `generate.py`): every scenario that applies to an OFREP server, through the Python and
/// Node server clients, against routers serving the testbed's own files from releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagd_testbed_suites_pass_through_real_openfeature_clients() {
    let py = python();
    let node = PathBuf::from(node());
    let dir = conformance_dir().join("testbed");
    let doc = read_json(&dir.join("cases.json"));
    let cases = doc["cases"].as_array().expect("testbed cases").clone();
    let server = Server::start().await;

    // The testbed's files, unchanged, load through `release create --flags`; what flagd loads
    // but cannot evaluate is a warning with its JSON path.
    let w = "tb-files";
    setup_flag_workload(&server, &Spec::new(w), "", &[]).await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("flags"))
        .expect("testbed flags")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n != "allFlags.json"))
        .collect();
    files.sort();
    for (i, f) in files.iter().enumerate() {
        let version = format!("f{i}");
        let out = server
            .cli(&["release", "create", w, "--version", &version, "--artifact", "a:1", "--flags", path_str(f)])
            .await;
        assert_eq!(out.code, 0, "{} does not load:\n{out}", f.display());
        let shown = server.cli(&["release", "show", w, &version, "-o", "json"]).await;
        let release: Value = serde_json::from_str(&shown.stdout).expect("release show -o json");
        assert_eq!(release["content"]["flags"]["$ringfence"]["fractional"], "v3", "the release records its bucketing");
    }
    let edge = dir.join("flags/edge-case-flags.json");
    let out =
        server.cli(&["release", "create", w, "--version", "e1", "--artifact", "a:1", "--flags", path_str(&edge)]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("warning: flags: flags.ends-with-wrong-args-flag.targeting.ends_with"),
        "a rule flagd cannot evaluate is a warning with its JSON path:\n{out}"
    );
    let out = server
        .cli(&["release", "create", w, "--version", "e2", "--artifact", "a:1", "--flags", path_str(&edge), "--strict"])
        .await;
    assert_eq!(out.code, 3, "--strict refuses it:\n{out}");
    let out = server.cli(&["validate", path_str(&edge)]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains(" flags, fractional v3 once released, ") && out.stderr.contains("warning: "), "{out}");
    let out = server.cli(&["validate", "--strict", path_str(&edge)]).await;
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("flags.semver-invalid-operator-flag.targeting.sem_ver[1]"), "{out}");
    // A spec can refuse such releases: `[flags] strict = true`.
    setup_flag_workload(&server, &Spec::new("tb-strict"), "[flags]\nstrict = true", &[]).await;
    let out = server
        .cli(&["release", "create", "tb-strict", "--version", "v1", "--artifact", "a:1", "--flags", path_str(&edge)])
        .await;
    assert_eq!(out.code, 3, "[flags] strict refuses a release with warnings:\n{out}");
    assert!(out.stderr.contains("strict"), "{out}");

    // One workload per flag set and bucketing the cases need.
    let mut groups: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for c in &cases {
        let key = (
            c["flagSet"].as_str().expect("flagSet").to_owned(),
            c["bucketing"].as_str().expect("bucketing").to_owned(),
        );
        groups.entry(key).or_default().push(c.clone());
    }
    let mut runs = Vec::new();
    for (i, ((set, bucketing), group)) in groups.iter().enumerate() {
        let file = dir.join(match set.as_str() {
            "testkit" => "flags/evaluator-testkit-flags.json".to_owned(),
            other => format!("flags/{other}.json"),
        });
        // Releases record flagd's current bucketing (v3); the v1 and v2 scenarios run against
        // releases that record theirs.
        let mut stored = read_json(&file);
        let release_file = if bucketing == Bucketing::CURRENT.as_str() {
            file.clone()
        } else {
            stored["$ringfence"] = json!({ "fractional": bucketing });
            let f = server.path(&format!("testbed-{i}.json"));
            std::fs::write(&f, stored.to_string()).expect("write the flag file");
            f
        };
        prepare_document(&mut stored);
        let flags = FlagSet::parse(&stored.to_string()).expect("the testbed flags load");
        assert_eq!(flags.bucketing().as_str(), bucketing);
        // A released client that cannot read a value-less success gets a documented quirk.
        let cases: Vec<Value> = group
            .iter()
            .map(|c| {
                let mut c = c.clone();
                let got = engine_answer(&flags, &c);
                if got["errorCode"].is_null() && got["variant"] == "" {
                    c["quirks"] = json!({"node-server": {
                        "expect": {"value": c["default"], "reason": "ERROR", "errorCode": "GENERAL"},
                        "why": "@openfeature/ofrep-provider 0.1.3 (the newest on npm) rejects a value-less success (DISABLED, or no default variant); the application gets its code default, with reason ERROR"
                    }});
                }
                c
            })
            .collect();
        let cases_file = server.path(&format!("testbed-cases-{i}.json"));
        std::fs::write(&cases_file, json!({ "cases": cases }).to_string()).expect("write the cases");
        let w = format!("tb-{i}");
        setup_flag_workload(&server, &Spec::new(&w), "", &[("v1", &release_file)]).await;
        let out = server.deploy_wait(&w, "v1").await;
        assert_eq!(out.code, 0, "deploy {w} ({set}, {bucketing}):\n{out}\n{}", server.diagnose(&w).await);
        runs.push((w, cases_file, group.len()));
    }

    // suite -> client -> (passed, with a client quirk, total)
    let suite_of: BTreeMap<String, String> = cases
        .iter()
        .map(|c| {
            (c["name"].as_str().unwrap_or_default().to_owned(), c["suite"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let mut tally: BTreeMap<String, BTreeMap<String, (usize, usize, usize)>> = BTreeMap::new();
    for (w, cases_file, n) in &runs {
        let url = format!("http://{}", server.router_addr(w).await);
        for (program, script) in [(py.as_path(), "python_client.py"), (node.as_path(), "node_server_client.mjs")] {
            // Every case must pass (or match its documented quirk): run_client_with asserts it.
            let report = run_client_with(program, script, &url, None, Some(cases_file)).await;
            let results = report["results"].as_array().expect("results");
            assert_eq!(results.len(), *n, "{script} on {w} answered {} of {n} cases", results.len());
            for r in results {
                let suite = suite_of.get(r["name"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
                let t = tally
                    .entry(suite)
                    .or_default()
                    .entry(report["client"].as_str().unwrap_or("?").to_owned())
                    .or_default();
                t.2 += 1;
                if r["ok"] == true {
                    t.0 += 1;
                    if r["quirk"].is_string() {
                        t.1 += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "flagd-testbed {} through real OpenFeature clients (passed, of which with a client quirk, total):",
        doc["testbed"]
    );
    for (suite, clients) in &tally {
        let line: Vec<String> = clients
            .iter()
            .map(|(client, (ok, quirk, total))| format!("{client} {ok}/{total} ({quirk} quirk)"))
            .collect();
        eprintln!("  {suite}: {}", line.join(", "));
    }
    let total: usize = tally.values().flat_map(|c| c.values()).map(|t| t.2).sum();
    assert_eq!(total, 2 * cases.len(), "every case ran through both clients");
    for na in doc["notApplicable"].as_array().into_iter().flatten() {
        assert!(na["why"].as_str().is_some_and(|w| !w.is_empty()), "{na}");
    }
}

/// A release whose new code path is behind a flag turns unhealthy: a bypass is offered, exposure
/// frozen. Nobody approves in time: everyone goes back. Next time an approver the spec names
/// approves (another person with the approver role is refused): the flag is turned off, the
/// rollout goes on and completes healthy, and running without the feature too long escalates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bypass_turns_the_guard_flag_off_on_a_named_approvers_word_and_is_bounded_in_time() {
    let server = Server::start().await;
    let w = "bypassed";
    let flag_set = |default: &str| json!({"flags": {"new-path": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": default}}});
    let (f1, f2) = (server.path("flags-v1.json"), server.path("flags-v2.json"));
    std::fs::write(&f1, flag_set("off").to_string()).expect("write flags v1");
    std::fs::write(&f2, flag_set("on").to_string()).expect("write flags v2");
    let spec = Spec { phases: vec![(20, "1500ms"), (100, "1500ms")], lenient_breaker: true, ..Spec::new(w) };
    let text = format!(
        "{}\n[executor.env]\nSAMPLE_FAIL_ON_FLAG = \"new-path\"\n",
        spec.toml().replacen(
            "[mitigation]\nauto_fallback = true\n",
            "[mitigation]\nauto_fallback = true\nbypass_approvers = [\"alice\"]\nbypass_wait = \"6s\"\nmax_degraded = \"3s\"\n",
            1
        )
    );
    let file = server.path("bypassed.toml");
    std::fs::write(&file, &text).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}\n{text}");
    // v2 and v3: new code (another config) whose new path, behind `new-path`, fails.
    for (version, flags, config) in [("v1", &f1, "GREETING=1"), ("v2", &f2, "GREETING=2"), ("v3", &f2, "GREETING=3")] {
        let out = server
            .cli(&[
                "release",
                "create",
                w,
                "--version",
                version,
                "--artifact",
                "sample-app:1",
                "--flags",
                path_str(flags),
                "--config",
                config,
                "--guarded-by",
                "new-path",
            ])
            .await;
        assert_eq!(out.code, 0, "{out}");
    }
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let alice = server.token_with("alice", &[&format!("approver:{w}")]).await;
    let bob = server.token_with("bob", &[&format!("approver:{w}")]).await;

    // Offered, not taken: after bypass_wait everyone is back on v1.
    let out = server.cli(&["deploy", w, "v2"]).await;
    let first = rollout_id(&out);
    let offered = server
        .wait_status(w, "the bypass offered", |s| {
            s.rollout
                .as_ref()
                .filter(|r| r.id == first && r.status == RolloutStatus::Halted)
                .and_then(|r| r.decision.clone())
        })
        .await;
    assert_eq!(offered.action, MitigationAction::Hold, "{offered:#?}");
    assert_eq!(offered.bypass_flags, vec!["new-path".to_string()], "{offered:#?}");
    assert!(offered.rule.contains("one of alice approves the bypass"), "{}", offered.rule);
    let r = server
        .wait_status(w, "the offer expires", |s| {
            s.rollout.as_ref().filter(|r| r.id == first && !r.status.is_active()).cloned()
        })
        .await;
    assert_eq!(r.status, RolloutStatus::Mitigated, "{r:#?}");
    let d = r.decision.expect("the decision after the offer");
    assert_eq!(d.action, MitigationAction::Fallback);
    assert!(d.rule.contains("no approver approved the bypass of new-path"), "{}", d.rule);

    // Offered and taken, by the right person: the offer now waits long enough for the three
    // answers below on a loaded machine.
    let longer = text.replace("bypass_wait = \"6s\"", "bypass_wait = \"30s\"");
    std::fs::write(&file, &longer).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}\n{longer}");
    let out = server.cli(&["deploy", w, "v3"]).await;
    let id = rollout_id(&out);
    server
        .wait_status(w, "the bypass offered again", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && r.status == RolloutStatus::Halted).map(|_| ())
        })
        .await;
    let refused = server.cli_as(&bob, &["bypass", w, "--reason", "let it through"]).await;
    assert_eq!(refused.code, 7, "{refused}");
    assert!(
        refused.stderr.contains("bob may not approve a bypass of bypassed: mitigation.bypass_approvers names alice"),
        "{refused}"
    );
    let no_reason = server.cli_as(&alice, &["bypass", w]).await;
    assert_eq!(no_reason.code, 3, "{no_reason}");
    let approved = server
        .cli_as(&alice, &["bypass", w, "--reason", "new-path off until the fix; checkout works without it"])
        .await;
    assert_eq!(approved.code, 0, "{approved}\n{}", server.diagnose(w).await);
    let done = server
        .wait_status(w, "the bypassed rollout ends", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).map(|r| r.status)
        })
        .await;
    assert_eq!(done, RolloutStatus::Completed, "{}", server.diagnose(w).await);
    let r = server.rollout(w, &id).await;
    let b = r.bypass.as_ref().expect("the bypass on record");
    assert_eq!((b.approver.as_str(), b.flags.clone()), ("alice", vec!["new-path".to_string()]));
    let events = server.events(w).await;
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::FlagKilled { flag } if flag == "new-path")));
    let passed: Vec<bool> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PhasePassed { rollout_id, verdict, .. } if *rollout_id == id => {
                Some(verdict.health == ringfence_core::Health::Healthy)
            }
            _ => None,
        })
        .collect();
    assert!(!passed.is_empty() && passed.iter().all(|h| *h), "health verified after the bypass: {passed:?}");
    server
        .wait_events(w, "degraded too long", |events| {
            events.iter().find_map(|e| match &e.kind {
                EventKind::DegradedTooLong { rollout_id, flags } if *rollout_id == id => Some(flags.clone()),
                _ => None,
            })
        })
        .await;
    let _ = load.finish().await;
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v3"));
}
