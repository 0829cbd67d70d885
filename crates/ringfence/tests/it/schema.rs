//! The API against its own description: schemathesis (PyPI, pinned in
//! `tests/schema/requirements.txt`, installed by `cargo xtask deps`) generates requests from the
//! committed `docs/openapi.json`, valid and invalid, and sends them to a real server with a
//! workload whose rollout is in progress. Every answer must be no 5xx, a status the document
//! lists for the operation, in the content type and the schema it gives (errors in the one
//! error shape), and every request that breaks the document must be refused.
//!
//! Three passes, each seeded and with one worker, so every run sends the same requests in the
//! same order: a viewer (everything but reads is refused), an admin over every operation but
//! the two that would end the run's own reach, and those two last (deleting the workload,
//! revoking a token), on their own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ringfence::client::ApiClient;
use ringfence::credentials::Found;
use ringfence_api::RolloutStatus;
use serde_json::Value;

use crate::harness::{Server, Spec, path_str, rollout_id};

const INSTALL: &str = "python3 -m venv tests/schema/.venv && \
     tests/schema/.venv/bin/pip install -r tests/schema/requirements.txt";

/// Test cases per operation and phase. The three passes take about a minute on two cores.
/// `RINGFENCE_SCHEMATHESIS_EXAMPLES` and `RINGFENCE_SCHEMATHESIS_SEED` (added to each pass's
/// seed) search further by hand.
const MAX_EXAMPLES: &str = "25";

/// The checks. Not `positive_data_acceptance`: a request that fits the document may still be
/// refused by the state (422: a version that was never last known good), in the documented
/// shape, which the checks here already hold it to. The rest of `all` is about behaviour the
/// document does not describe (which methods a path refuses, data kept after a delete).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
     response_schema_conformance,negative_data_rejection";

/// Longer than any pass takes; only there so a hung run fails instead of holding CI.
const PASS_DEADLINE: Duration = Duration::from_secs(300);

fn root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// The pinned schemathesis in the venv `cargo xtask deps` makes.
fn schemathesis() -> PathBuf {
    let bin = root().join("tests/schema/.venv/bin/schemathesis");
    let ok = std::process::Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "schemathesis is not installed ({}). From the repository root run:\n  {INSTALL}\n(`cargo xtask deps` does this)",
        bin.display()
    );
    bin
}

/// Where generated values come from besides the document: the names that exist on this
/// server, most of the time (random ones only meet 404s). `/v1/routes` holds a request open
/// up to `wait` seconds when `If-None-Match` names the current tables, which schemathesis can
/// learn from an answer; it waits 0 here so a case never stalls the run.
fn config(ids: &[&str]) -> String {
    let quoted = |v: &[&str]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    format!(
        r#"[dictionaries.workloads]
values = ["shop"]
[dictionaries.versions]
values = ["v1", "v2", "v3"]
[dictionaries.ids]
values = [{ids}]

[parameters]
"path.name" = {{ dictionary = "workloads", probability = 0.9 }}
"path.version" = {{ dictionary = "versions", probability = 0.9 }}
"path.id" = {{ dictionary = "ids", probability = 0.9 }}

[[operations]]
include-path = "/v1/routes"
include-method = "GET"
parameters = {{ "query.wait" = 0 }}
"#,
        ids = quoted(ids)
    )
}

struct Pass<'a> {
    name: &'a str,
    token: &'a str,
    seed: u64,
    /// `--include-...`/`--exclude-...` arguments.
    filter: &'a [&'a str],
}

/// Runs one schemathesis pass; its report when it found anything.
async fn run(bin: &Path, server: &Server, dir: &Path, config_file: &Path, pass: &Pass<'_>) -> Result<String, String> {
    let started = Instant::now();
    let examples = std::env::var("RINGFENCE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.into());
    let seed = pass.seed + std::env::var("RINGFENCE_SCHEMATHESIS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--config-file")
        .arg(config_file)
        .arg("--no-color")
        .arg("run")
        .arg(root().join("docs/openapi.json"))
        .args(["--url", server.url()])
        .args(["--header", &format!("Authorization: Bearer {}", pass.token)])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples, "--seed", &seed.to_string()])
        // One worker: the order of requests, and so the server's state, repeats with the seed.
        .args(["--workers", "1", "--generation-database", "none", "--request-timeout", "30"])
        // Hypothesis' health checks judge how fast data is generated on a loaded machine, not
        // the API; in CI beside other tests they would fail a sound run.
        .args(["--suppress-health-check", "all"])
        .args(pass.filter)
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(PASS_DEADLINE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis pass {:?} ran past {PASS_DEADLINE:?}", pass.name))
        .unwrap_or_else(|e| panic!("run schemathesis: {e}"));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("schemathesis pass {:?}: {:?} in {:.0?}", pass.name, out.status, started.elapsed());
    if out.status.success() { Ok(report) } else { Err(report) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_its_openapi_document_says() {
    let bin = schemathesis();
    let server = Server::start().await;
    let w = "shop";
    let viewer = server.token_with("schema-viewer", &["viewer"]).await;
    let admin = server.token_with("schema-admin", &["admin"]).await;
    // A token for the revocation to find: `rf1.<id>.<secret>`.
    let spare = server.token_with("schema-spare", &["viewer"]).await;
    let spare_id = spare.split('.').nth(1).expect("a token id").to_string();

    let api = ApiClient::new(server.url(), Some(Found { token: admin.clone(), source: "the test".into() }));
    // The first deploy bakes for the first phase's time; a later one stays in its last phase.
    // Public, so the status pages have something to show.
    let spec = Spec { phases: vec![(10, "1s"), (100, "1h")], ..Spec::new(w) };
    let file = server.path("shop.toml");
    std::fs::write(&file, format!("{}\n[status_page]\npublic = true\n", spec.toml())).expect("write the spec");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "apply:\n{out}");
    for (version, config) in [("v1", &[][..]), ("v2", &["GREETING=hello"][..]), ("v3", &["GREETING=hi"][..])] {
        server.release(w, version, config).await;
    }
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", server.diagnose(w).await);

    // An incident to read, acknowledge and follow up on: v2 halted by a firing alert and
    // mitigated, the alert resolved before the next rollout.
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "deploy v2:\n{out}");
    let failed = rollout_id(&out);
    let alert = |status: &str| {
        serde_json::json!({"version": "4", "status": status, "alerts": [
            {"status": status, "labels": {"workload": w, "alertname": "SchemaTest"}, "fingerprint": "schema-test"}
        ]})
    };
    let _: Value = api.post("/v1/alerts", &alert("firing")).await.expect("a firing alert");
    server
        .wait_status(w, "v2 mitigated", |s| {
            s.rollout.as_ref().filter(|r| r.id == failed && r.status == RolloutStatus::Mitigated).map(|_| ())
        })
        .await;
    let _: Value = api.post("/v1/alerts", &alert("resolved")).await.expect("the alert resolved");
    let _: Value = api
        .post(
            &format!("/v1/workloads/{w}/followups"),
            &serde_json::json!({"incident": failed, "title": "alert sooner"}),
        )
        .await
        .expect("a follow-up item");

    let out = server.cli(&["deploy", w, "v3", "--reason", "in progress while the API is tried"]).await;
    assert_eq!(out.code, 0, "deploy v3:\n{out}");
    let rollout = rollout_id(&out);

    refusals_schemathesis_cannot_send(&server).await;

    let dir = server.path("schemathesis");
    std::fs::create_dir_all(&dir).expect("create the schemathesis directory");
    let config_file = dir.join("schemathesis.toml");
    std::fs::write(&config_file, config(&[&rollout, &failed, "fu-1", &spare_id])).expect("write the config");

    let passes = [
        Pass { name: "viewer", token: &viewer, seed: 1, filter: &[] },
        // The API's two DELETEs come last, alone: revoking its own token would leave the rest of
        // the pass only 401s, and a deleted workload only 404s.
        Pass { name: "admin", token: &admin, seed: 2, filter: &["--exclude-method", "DELETE"] },
        Pass { name: "admin, deleting", token: &admin, seed: 3, filter: &["--include-method", "DELETE"] },
    ];
    let started = Instant::now();
    let mut failed = Vec::new();
    for pass in &passes {
        if let Err(report) = run(&bin, &server, &dir, &config_file, pass).await {
            failed.push(format!("=== schemathesis pass {:?} ===\n{report}", pass.name));
        }
    }
    eprintln!("schemathesis: {} passes in {:.0?}", passes.len(), started.elapsed());
    assert!(
        failed.is_empty(),
        "the API does not answer as docs/openapi.json says:\n{}\nserver log:\n{}",
        failed.join("\n"),
        server.log_tail(40)
    );
}

/// What a generator of valid Unicode never sends (a path segment that is not UTF-8), and the
/// page size past the largest, which was once cut down silently.
async fn refusals_schemathesis_cannot_send(server: &Server) {
    let http = ringfence::http::HttpClient::new();
    let bearer = server.bearer();
    for (path, needle) in [
        ("/v1/workloads/%FF", "UTF-8"),
        ("/v1/workloads/shop/rollouts/%FF", "UTF-8"),
        ("/status/%FF", "UTF-8"),
        ("/v1/events?limit=1001", "limit: expected 1 to 1000"),
        ("/v1/workloads/shop/events?limit=0", "limit: expected 1 to 1000"),
    ] {
        let url = format!("{}{path}", server.url());
        let r = http
            .request(hyper::Method::GET, &url, &[("authorization", bearer.as_str())], None, Duration::from_secs(10))
            .await
            .expect("the server answers");
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{path}: {} with a body that is not JSON ({e}): {:?}", r.status, r.body));
        assert_eq!((r.status.as_u16(), v["error"]["code"].as_str()), (400, Some("bad_request")), "{path}: {v:#}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains(needle)), "{path}: {v:#}");
    }
}
