//! Bad input gets a clear error with the documented exit code and changes nothing; read
//! commands speak JSON with `--output json`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Server, Spec, cli, path_str, rollout_id};

/// Line and column (1-based) where `needle` first appears in `text`.
fn place(text: &str, needle: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
        .unwrap_or_else(|| panic!("{needle:?} is not in the spec"))
}

/// Waits until the controller has nothing left to do (no open intent, the log unchanged for a
/// moment), and returns the number of events in the log.
async fn settled_count(server: &Server) -> usize {
    let deadline = Instant::now() + crate::harness::DEADLINE;
    let mut last = usize::MAX;
    loop {
        let events = server.all_events().await;
        let open = events.iter().fold(std::collections::BTreeSet::new(), |mut open, e| {
            match &e.kind {
                ringfence_core::EventKind::ActionIntended { op_id, .. } => {
                    open.insert(op_id.clone());
                }
                ringfence_core::EventKind::ActionSucceeded { op_id, .. }
                | ringfence_core::EventKind::ActionFailed { op_id, .. } => {
                    open.remove(op_id);
                }
                _ => {}
            }
            open
        });
        if open.is_empty() && events.len() == last {
            return last;
        }
        assert!(Instant::now() < deadline, "the controller never settled; open intents: {open:?}");
        last = events.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Events caused by people (not the controller): the ones a refused command could have added.
async fn people_events(server: &Server) -> usize {
    server.all_events().await.iter().filter(|e| e.actor != "controller").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let server = Server::start().await;
    let w = "shop";
    server.setup(&Spec::new(w), &[("v1", &[]), ("v2", &["GREETING=hello"]), ("v3", &[])]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", server.diagnose(w).await);
    let before = settled_count(&server).await;

    // A type error and a rule broken: file, line, column and field, exit 3, for both
    // `validate` (offline) and `apply` (through the server).
    let good = Spec::new(w).toml();
    let typo = good.replace("replicas = 1", "replicas = \"two\"");
    let (line, col) = place(&typo, "\"two\"");
    let broken = server.path("broken.toml");
    std::fs::write(&broken, &typo).expect("write broken.toml");
    let decreasing = Spec { phases: vec![(50, "1s"), (10, "1s"), (100, "1s")], ..Spec::new(w) }.toml();
    // The error points at the value of the second phase's weight.
    let wline = decreasing.lines().position(|l| l == "weight = 10").expect("the second phase's weight") + 1;
    let wcol = "weight = ".len() + 1;
    let unordered = server.path("decreasing.toml");
    std::fs::write(&unordered, &decreasing).expect("write decreasing.toml");

    let out = cli(&["validate", path_str(&broken)]).await;
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains(&format!("broken.toml:{line}:{col}: field `executor.replicas`")), "{out}");
    let out = cli(&["validate", path_str(&unordered)]).await;
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains(&format!("decreasing.toml:{wline}:{wcol}: field `rollout.phases[1].weight`")), "{out}");

    let out = server.cli(&["apply", path_str(&broken)]).await;
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr.contains(&format!("broken.toml:{line}:{col}")) && out.stderr.contains("executor.replicas"),
        "{out}"
    );
    let out = server.cli(&["apply", path_str(&unordered)]).await;
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("rollout.phases[1].weight"), "{out}");

    // Unknown release, unknown workload: exit 4, naming what was not found.
    let out = server.cli(&["deploy", w, "v9"]).await;
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stderr.contains("v9"), "{out}");
    let out = server.cli(&["deploy", "nosuch", "v1"]).await;
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stderr.contains("nosuch"), "{out}");

    // Releases are immutable: other content is a conflict (5); the same content is a no-op.
    let out = server
        .cli(&[
            "release",
            "create",
            w,
            "--version",
            "v2",
            "--artifact",
            "sample-app:v2",
            "--config",
            "SAMPLE_LATENCY_MS=5",
        ])
        .await;
    assert_eq!(out.code, 5, "{out}");
    assert!(out.stderr.contains("v2") && out.stderr.contains("already exists"), "{out}");
    let out = server.release(w, "v2", &["GREETING=hello"]).await;
    assert!(out.stdout.contains("already registered"), "{out}");

    assert_eq!(server.all_events().await.len(), before, "refused commands must not change anything");
    let s = server.status(w).await;
    assert_eq!((s.stable.as_deref(), s.desired.versions.len()), (Some("v1"), 1), "{s:#?}");

    // One rollout at a time: exit 5, naming the rollout in the way.
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    let people = people_events(&server).await;
    let out = server.cli(&["deploy", w, "v3"]).await;
    assert_eq!(out.code, 5, "{out}");
    assert!(out.stderr.contains(&id), "the refusal must name rollout {id}:\n{out}");
    assert_eq!(people_events(&server).await, people, "the refused deploy must not be recorded");
    assert_eq!(server.status(w).await.rollout.map(|r| r.id), Some(id));
    let out = server.cli(&["abort", w]).await;
    assert_eq!(out.code, 0, "{out}");

    // Nothing listens there: exit 6 with a hint.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
        l.local_addr().expect("its address")
    };
    let url = format!("http://{closed}");
    let out = cli(&["--server", &url, "status", w]).await;
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stderr.contains("cannot reach the ringfence server"), "{out}");
    let out = cli(&["--server", &url, "deploy", w, "v2"]).await;
    assert_eq!(out.code, 6, "{out}");
}

fn json(out: &crate::harness::Out) -> Value {
    assert_eq!(out.code, 0, "{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_speak_json() {
    let server = Server::start().await;
    let w = "js";
    server.setup(&Spec::new(w), &[("v1", &[]), ("v2", &["GREETING=hello"])]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", server.diagnose(w).await);

    let s = json(&server.cli(&["status", w, "--output", "json"]).await);
    assert_eq!(s["workload"], "js", "{s:#}");
    assert_eq!(s["stable"], "v1", "{s:#}");
    assert_eq!(s["last_known_good"]["version"], "v1", "{s:#}");
    assert!(s["router"]["listen"].as_str().is_some_and(|l| l.starts_with("127.0.0.1:")), "{s:#}");
    let replicas = s["replicas"].as_array().expect("replicas is a list");
    let instance_of_v1 = |r: &serde_json::Value| {
        r["version"] == "v1"
            && r["instance"].as_str().is_some_and(|i| i.starts_with("proc:"))
            && r["endpoint"].as_str().is_some_and(|e| e.starts_with("127.0.0.1:"))
    };
    assert!(!replicas.is_empty() && replicas.iter().all(instance_of_v1), "{s:#}");
    assert_eq!(s["rollout"]["status"], "completed", "{s:#}");
    assert_eq!(s["rollout"]["kind"], "initial", "{s:#}");

    // The API describes itself.
    let r = ringfence::http::HttpClient::new()
        .request(
            hyper::Method::GET,
            &format!("{}/v1/openapi.json", server.url()),
            &[("authorization", &server.bearer())],
            None,
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("GET /v1/openapi.json");
    assert!(r.status.is_success(), "{}", r.status);
    let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("the OpenAPI document is JSON");
    assert!(doc["paths"]["/v1/workloads/{name}/deploy"]["post"].is_object(), "{doc:#}");

    let all = json(&server.cli(&["status", "-o", "json"]).await);
    assert_eq!(all[0]["name"], "js", "{all:#}");
    assert_eq!(all[0]["rollout"]["status"], "completed", "{all:#}");

    let why = json(&server.cli(&["why", w, "-o", "json"]).await);
    assert!(why["text"].as_str().is_some_and(|t| t.contains("completed")), "{why:#}");
    assert_eq!(why["rollout"]["release"], "v1", "{why:#}");

    // With --all, every event of the log, gapless; without, the same timeline as the text.
    let notable = json(&server.cli(&["events", w, "-o", "json"]).await);
    let notable = notable.as_array().expect("events are a list");
    assert!(notable.iter().all(|e| e["type"] != "action_intended" && e["type"] != "action_succeeded"), "{notable:#?}");
    let text = server.cli(&["events", w]).await;
    assert_eq!(notable.len(), text.stdout.lines().count(), "{text}");
    let events = json(&server.cli(&["events", w, "-o", "json", "--all"]).await);
    let events = events.as_array().expect("events are a list");
    assert!(events.len() > notable.len());
    // The only workload, so its events are consecutive (the log's first events create the
    // tokens, which belong to no workload).
    let first = events[0]["seq"].as_u64().expect("a seq");
    for (i, e) in events.iter().enumerate() {
        for field in ["at", "actor", "reason", "type"] {
            assert!(e.get(field).is_some(), "event without {field}: {e:#}");
        }
        assert_eq!(e["seq"], first + i as u64, "{e:#}");
        assert_eq!(e["workload"], "js", "{e:#}");
    }
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for t in ["spec_applied", "release_created", "rollout_started", "replica_started", "rollout_completed"] {
        assert!(types.contains(&t), "no {t} event in {types:?}");
    }

    let releases = json(&server.cli(&["release", "list", w, "-o", "json"]).await);
    let releases = releases.as_array().expect("releases are a list");
    let versions: Vec<&str> = releases.iter().filter_map(|r| r["version"].as_str()).collect();
    assert_eq!(versions, ["v1", "v2"]);
    for r in releases {
        assert!(r["digest"].as_str().is_some_and(|d| d.starts_with("sha256:")), "{r:#}");
        assert_eq!(r["created_by"], "it-test", "{r:#}");
        assert_eq!(r["workload"], "js", "{r:#}");
    }
    assert_eq!(releases[1]["content"]["config"]["GREETING"], "hello");
    assert_eq!(releases[1]["content"]["artifact"], "sample-app:v2");

    // And the offline validator, whose errors carry their place.
    let broken = server.path("broken.toml");
    std::fs::write(&broken, Spec::new(w).toml().replace("weight = 100", "weight = 90")).expect("write broken.toml");
    let out = cli(&["validate", "-o", "json", path_str(&broken)]).await;
    assert_eq!(out.code, 3, "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    assert_eq!(v[0]["valid"], false, "{v:#}");
    let err = &v[0]["errors"][0];
    assert_eq!(err["field"], "rollout.phases[2].weight", "{v:#}");
    assert!(err["line"].as_u64().is_some_and(|l| l > 0) && err["column"].as_u64().is_some_and(|c| c > 0), "{v:#}");
}

/// Every refusal of the API has its one error shape, whatever refused: a bad query string, a
/// method the endpoint does not take, a field the body does not have, a body too large; and
/// the CLI reports a too large spec as refused input (3), not as an unreachable server (6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_the_api_error_shape() {
    use hyper::Method;
    use ringfence::http::HttpClient;

    let server = Server::start().await;
    let w = "edges";
    server.setup(&Spec::new(w), &[("v1", &[])]).await;
    let http = HttpClient::new();
    let bearer = server.bearer();
    let call = |method: Method, path: &str, body: Option<&str>| {
        let url = format!("{}{path}", server.url());
        let http = http.clone();
        let body = body.map(|b| bytes::Bytes::from(b.to_string()));
        let bearer = bearer.clone();
        async move {
            let headers = [("content-type", "application/json"), ("authorization", bearer.as_str())];
            let r =
                http.request(method, &url, &headers, body, Duration::from_secs(10)).await.expect("the server answers");
            let v: Value = serde_json::from_slice(&r.body)
                .unwrap_or_else(|e| panic!("{url}: {} with a body that is not JSON ({e}): {:?}", r.status, r.body));
            (r.status.as_u16(), v)
        }
    };
    let before = people_events(&server).await;

    let (status, v) = call(Method::GET, &format!("/v1/workloads/{w}/events?after=abc"), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v:#}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("after")), "{v:#}");

    // DELETE deletes a workload now; PUT is still no method of it.
    let (status, v) = call(Method::PUT, &format!("/v1/workloads/{w}"), None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (405, Some("method_not_allowed")), "{v:#}");

    let (status, v) =
        call(Method::POST, &format!("/v1/workloads/{w}/deploy"), Some(r#"{"version": "v1", "verison": "v2"}"#)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v:#}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("verison")), "{v:#}");

    // A body over the limit is refused from its announced length, before it is read.
    let (status, v) = crate::harness::announce_body(&server, "/v1/workloads", 3 * 1024 * 1024).await;
    assert_eq!((status, v["error"]["code"].as_str()), (413, Some("too_large")), "{v:#}");

    let big = server.path("big.toml");
    std::fs::write(&big, format!("{}\n{}", Spec::new(w).toml(), "# padding\n".repeat(300_000)))
        .expect("write big.toml");
    let out = server.cli(&["apply", path_str(&big)]).await;
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("the server accepts at most"), "{out}");

    assert_eq!(people_events(&server).await, before, "refusals change nothing");

    // A reader that went away (`| head`) ends the output: no panic, success. The reader here
    // is gone before the first byte is written, so the write surely meets a closed pipe.
    let sh = format!(
        "{{ sleep 0.3; {} --server {} events {w}; }} | true; echo \"${{PIPESTATUS[0]}}\"",
        crate::harness::BIN,
        server.url()
    );
    let out = tokio::process::Command::new("bash")
        .args(["-c", &sh])
        .env("RINGFENCE_TOKEN", server.bearer().trim_start_matches("Bearer "))
        .output()
        .await
        .expect("run bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
