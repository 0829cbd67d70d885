//! The attacks of docs/security.md, each refused with nothing changed: a web page in the
//! operator's browser, a rebinding DNS name, a caller without a token or with too small a
//! role, a forged actor, a stolen position on the same machine (the data directory), names
//! chosen to collide, a replica hiding behind a wrapper, a second server on the same data.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use ringfence::http::HttpClient;
use serde_json::{Value, json};

use crate::harness::{Server, Spec, pid_of};

/// A raw call: `(status, body as JSON or Null)`.
async fn call(
    server: &Server,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let url = format!("{}{path}", server.url());
    let r = HttpClient::new()
        .request(method, &url, headers, body.map(|b| Bytes::from(b.to_string())), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    (r.status.as_u16(), serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

/// A spec whose executor runs a shell command: what an attacker would apply.
fn evil_spec(name: &str, marker: &std::path::Path) -> String {
    format!(
        "[workload]\nname = \"{name}\"\n[executor]\ncommand = [\"/bin/sh\", \"-c\", \"id > {}; sleep {{port}}\"]\n[[rollout.phases]]\nname = \"all\"\nweight = 100\nbake = \"1s\"\n",
        marker.display()
    )
}

async fn workload_names(server: &Server) -> Vec<String> {
    let out = server.cli(&["status", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let v: Value = serde_json::from_str(&out.stdout).expect("status -o json");
    v.as_array().into_iter().flatten().filter_map(|w| w["name"].as_str().map(String::from)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_or_a_rebinding_name_cannot_drive_the_api() {
    let server = Server::start().await;
    let marker = server.path("pwned");
    let body = json!({"spec": evil_spec("evil", &marker), "file": "evil.toml"}).to_string();
    let bearer = server.bearer();
    let host = server.url().trim_start_matches("http://").to_string();

    // A browser's "simple" request: text/plain, no token, from another origin. No preflight
    // happens for it, so the server itself must refuse it.
    let (status, v) = call(
        &server,
        Method::POST,
        "/v1/workloads",
        &[("content-type", "text/plain"), ("origin", "http://evil.example")],
        Some(&body),
    )
    .await;
    assert_eq!(status, 403, "{v:#}");
    // The same without an Origin header (some browsers omit it): still not JSON.
    let (status, v) =
        call(&server, Method::POST, "/v1/workloads", &[("content-type", "text/plain")], Some(&body)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (415, Some("unsupported_media_type")), "{v:#}");
    // Even with a token, a form post is refused.
    let (status, _) = call(
        &server,
        Method::POST,
        "/v1/workloads",
        &[("content-type", "application/x-www-form-urlencoded"), ("authorization", &bearer)],
        Some(&body),
    )
    .await;
    assert_eq!(status, 415);
    // A cross-origin page that somehow holds a token: refused for its origin.
    let (status, v) = call(
        &server,
        Method::POST,
        "/v1/workloads",
        &[("content-type", "application/json"), ("authorization", &bearer), ("origin", "https://evil.example")],
        Some(&body),
    )
    .await;
    assert_eq!((status, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v:#}");
    // DNS rebinding: the page's own name resolves to 127.0.0.1, so the Host is foreign.
    let (status, v) = call(
        &server,
        Method::GET,
        "/v1/workloads",
        &[("host", "rebind.evil.example:80"), ("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, 403, "{v:#}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("rebind.evil.example")), "{v:#}");
    // The same page's origin with our own Host is still a foreign origin.
    let (status, _) = call(
        &server,
        Method::GET,
        "/v1/workloads",
        &[("host", &host), ("origin", "http://rebind.evil.example"), ("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, 403);
    // No CORS: a preflight gets no permission.
    let url = format!("{}/v1/workloads", server.url());
    let pre = HttpClient::new()
        .request(Method::OPTIONS, &url, &[("origin", "http://evil.example")], None, Duration::from_secs(5))
        .await
        .expect("answer");
    assert!(pre.headers.get("access-control-allow-origin").is_none(), "{:?}", pre.headers);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!marker.exists(), "the attacker's command ran");
    assert!(workload_names(&server).await.is_empty(), "a workload was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_a_valid_token_and_the_right_role() {
    let server = Server::start().await;
    let w = "shop";
    server.setup(&Spec::new(w), &[("v1", &[])]).await;

    // Every route the API describes answers 401 without a token (but the liveness check).
    let doc: Value = serde_json::from_str(ringfence::server::openapi_json()).expect("openapi");
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let concrete =
                path.replace("{name}", w).replace("{version}", "v1").replace("{id}", "x").replace("{flag}", "f");
            let m: Method = method.to_uppercase().parse().expect("a method");
            let body = (m == Method::POST).then_some("{}");
            let (status, v) = call(&server, m.clone(), &concrete, &[("content-type", "application/json")], body).await;
            if path == "/v1/health" {
                assert_eq!(status, 200, "{method} {path}: {v:#}");
            } else if path.starts_with("/status") {
                // The public status pages: shop is not public, so nothing of it is shown.
                let expected = if path == "/status" { 200 } else { 404 };
                assert_eq!(status, expected, "{method} {path}: a workload that is not public is not shown");
            } else {
                assert_eq!(status, 401, "{method} {path} without a token: {v:#}");
                assert_eq!(v["error"]["code"], "unauthenticated", "{method} {path}: {v:#}");
            }
            // A token that looks right but is not.
            let forged = "Bearer rf1.000000000000.0000000000000000000000000000000000000000000000000000000000000000";
            let (status, _) =
                call(&server, m, &concrete, &[("content-type", "application/json"), ("authorization", forged)], body)
                    .await;
            if path != "/v1/health" && !path.starts_with("/status") {
                assert_eq!(status, 401, "{method} {path} with a forged token");
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} routes checked");

    // A viewer reads but cannot deploy, roll back, kill flags or make tokens: exit 7, and
    // nothing in the log changes.
    let viewer = server.token_with("vic", &["viewer"]).await;
    let other = server.token_with("ci-search", &["deployer:search"]).await;
    let before = server.all_events().await.len();
    assert_eq!(server.cli_as(&viewer, &["status", w]).await.code, 0);
    for args in [
        vec!["deploy", w, "v1"],
        vec!["rollback", w],
        vec!["abort", w],
        vec!["flags", "kill", w, "f", "--reason", "x"],
        vec!["token", "create", "mallory", "--role", "admin"],
        vec!["token", "list"],
    ] {
        let out = server.cli_as(&viewer, &args).await;
        assert_eq!(out.code, 7, "a viewer ran `{}`:\n{out}", args.join(" "));
        assert!(out.stderr.contains("may not"), "{out}");
    }
    // A deployer of another workload cannot touch this one; one of this workload can, and
    // the actor of its events is its token's name whatever header it sends.
    let out = server.cli_as(&other, &["release", "create", w, "--version", "v9"]).await;
    assert_eq!(out.code, 7, "{out}");
    assert_eq!(server.all_events().await.len(), before, "a refused command changed the log");

    let ci = server.token_with("ci-shop", &["deployer:shop"]).await;
    let (status, v) = call(
        &server,
        Method::POST,
        &format!("/v1/workloads/{w}/releases"),
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {ci}")),
            ("x-ringfence-actor", "alice"),
        ],
        Some(r#"{"version": "v2"}"#),
    )
    .await;
    assert_eq!(status, 201, "{v:#}");
    let events = server.events(w).await;
    let created = events.last().expect("the release event");
    assert_eq!(created.actor, "ci-shop", "the actor is the token's name, never a header: {created:?}");

    // What runs as the server's user is the admin's: a deployer may not change the command
    // (nor put a code-loading variable in a release's configuration).
    let mut spec = Spec::new(w);
    spec.command = Some(r#"["/bin/sh", "-c", "id > /tmp/x; sleep {port}"]"#);
    let file = server.path("changed.toml");
    std::fs::write(&file, spec.toml()).expect("write spec");
    let out = server.cli_as(&ci, &["apply", crate::harness::path_str(&file)]).await;
    assert_eq!(out.code, 7, "a deployer changed the executor command:\n{out}");
    assert!(out.stderr.contains("may not change what a workload executes"), "{out}");
    let same = server.path("same.toml");
    std::fs::write(&same, Spec::new(w).toml()).expect("write spec");
    assert_eq!(server.cli_as(&ci, &["apply", crate::harness::path_str(&same)]).await.code, 0);
    let out =
        server.cli_as(&ci, &["release", "create", w, "--version", "v3", "--config", "LD_PRELOAD=/tmp/evil.so"]).await;
    assert_eq!(out.code, 7, "{out}");
    assert!(out.stderr.contains("LD_PRELOAD"), "{out}");

    // A revoked token stops working at once.
    let list = server.cli(&["token", "list", "-o", "json"]).await;
    let tokens: Value = serde_json::from_str(&list.stdout).expect("token list -o json");
    let id = tokens
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["name"] == "ci-shop")
        .and_then(|t| t["id"].as_str())
        .expect("ci-shop is listed")
        .to_string();
    assert!(!list.stdout.contains(&ci) && !list.stdout.contains("hash"), "the list shows secrets:\n{}", list.stdout);
    assert_eq!(server.cli(&["token", "revoke", &id]).await.code, 0);
    let out = server.cli_as(&ci, &["status", w]).await;
    assert_eq!(out.code, 7, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_the_log_and_the_api_and_the_data_is_private() {
    let mut server = Server::start().await;
    let w = "vault";
    // A secret the release refers to, in the server's secrets directory; an OFREP token given
    // in the clear in the spec.
    let db_password = format!("hunter2-{}", std::process::id());
    let ofrep_token = format!("ofrep-plain-{}", std::process::id());
    let secrets_dir = server.data_dir().join("secrets");
    std::fs::create_dir_all(&secrets_dir).expect("secrets dir");
    std::fs::write(secrets_dir.join("db"), format!("{db_password}\n")).expect("write the secret");
    std::fs::set_permissions(secrets_dir.join("db"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let spec_file = server.path("vault.toml");
    std::fs::write(&spec_file, format!("{}\n[flags]\ntokens = [\"{ofrep_token}\"]\n", Spec::new(w).toml()))
        .expect("write the spec");
    assert_eq!(server.cli(&["apply", crate::harness::path_str(&spec_file)]).await.code, 0);
    server.release(w, "v1", &["DB_PASSWORD=secret://db"]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    // The replica got the value; nothing else did.
    let pids = server.replica_processes(w, "v1");
    assert!(!pids.is_empty());
    let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).expect("the replica's environment");
    let wanted = format!("DB_PASSWORD={db_password}");
    assert!(environ.split(|b| *b == 0).any(|e| e == wanted.as_bytes()), "the replica did not get the secret");
    // The OFREP token works at the router (its digest), though the log holds only the digest.
    let router = server.router_addr(w).await;
    let ofrep = |token: String| async move {
        HttpClient::new()
            .request(
                Method::POST,
                &format!("http://{router}/ofrep/v1/evaluate/flags"),
                &[("authorization", &format!("Bearer {token}"))],
                Some(Bytes::from_static(b"{\"context\": {\"targetingKey\": \"u1\"}}")),
                Duration::from_secs(5),
            )
            .await
            .expect("the router answers")
            .status
            .as_u16()
    };
    assert_ne!(ofrep(ofrep_token.clone()).await, 401, "the sealed token no longer opens OFREP");
    assert_eq!(ofrep("wrong".into()).await, 401);

    let extra = server.token_with("pipeline", &["deployer"]).await;
    let admin = std::fs::read_to_string(server.data_dir().join("admin.token")).expect("admin token");
    let secrets = [admin.trim().to_string(), extra.clone()];
    let mut secret_parts: Vec<&str> = secrets.iter().map(|t| t.rsplit('.').next().expect("a secret")).collect();
    secret_parts.push(&db_password);
    secret_parts.push(&ofrep_token);

    // The API: the whole log with hashes redacted, the token list without them.
    let (status, all) =
        call(&server, Method::GET, "/v1/events?limit=1000", &[("authorization", &server.bearer())], None).await;
    assert_eq!(status, 200);
    let text = all.to_string();
    for s in &secret_parts {
        assert!(!text.contains(s), "a token's secret is in GET /v1/events");
    }
    assert!(text.contains("<redacted>") && !text.contains("\"salt\":\"0"), "token hashes are not redacted");

    // On disk: the log holds neither secret, and the data directory is the server's alone.
    assert!(server.stop_cleanly(), "the server did not stop cleanly");
    let data = server.data_dir().to_path_buf();
    let raw = std::fs::read(data.join("events.db")).expect("read events.db");
    let raw = String::from_utf8_lossy(&raw);
    for s in &secret_parts {
        assert!(!raw.contains(s), "a token's secret is in events.db");
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data directory");
    for f in ["events.db", "admin.token", "lock"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_cannot_collide_and_a_stop_reaches_every_process_of_a_replica() {
    let mut server = Server::start().await;
    // `col` release `x--v1` and `col--x` release `v1` had the same pid file once.
    let wrapper =
        r#"["/bin/sh", "-c", "{ringfence} sample-app --listen 127.0.0.1:{port} --version {version}; exit 0"]"#;
    let mut a = Spec::new("col");
    a.command = Some(wrapper);
    server.setup(&a, &[("x--v1", &[])]).await;
    server.setup(&Spec::new("col--x"), &[("v1", &[])]).await;
    assert_eq!(server.deploy_wait("col--x", "v1").await.code, 0);
    assert_eq!(server.deploy_wait("col", "x--v1").await.code, 0);
    let started = |events: &[ringfence_core::Event]| -> Vec<u32> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                ringfence_core::EventKind::ReplicaStarted { instance, .. } => Some(pid_of(instance)),
                _ => None,
            })
            .collect()
    };
    let col = started(&server.events("col").await);
    let colx = started(&server.events("col--x").await);
    assert_eq!((col.len(), colx.len()), (1, 1), "each started its own replica: {col:?} {colx:?}");
    assert_ne!(col, colx, "one workload adopted the other's replica");
    // The wrapper's shell and the app under it: both carry the workload's environment.
    let col_procs = server.replica_processes("col", "x--v1");
    assert!(col_procs.len() >= 2, "the wrapper and its child: {col_procs:?}");
    let colx_procs = server.replica_processes("col--x", "v1");

    // After a crash of the server, each keeps its own: the restarted server knows them by
    // instance (pid and start time), finds them running, and neither stops nor restarts them.
    server.kill9();
    server.restart().await;
    server.wait_status("col", "the restarted server to look", |s| s.router.is_some().then_some(())).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (w, before) in [("col", &col), ("col--x", &colx)] {
        let events = server.events(w).await;
        assert_eq!(&started(&events), before, "{w}'s replica was restarted or replaced");
        assert!(
            !events.iter().any(|e| matches!(e.kind, ringfence_core::EventKind::ReplicaExited { .. })),
            "{w}'s replica was taken for exited after the restart"
        );
    }
    assert_eq!(server.replica_processes("col--x", "v1"), colx_procs, "col--x's processes changed");
    assert_eq!(server.replica_processes("col", "x--v1"), col_procs, "col's processes changed");

    // A clean stop stops the whole process group: the wrapper's child too.
    assert!(server.stop_cleanly());
    let left: Vec<u32> = col_procs.iter().copied().filter(|p| crate::harness::alive(*p)).collect();
    assert!(left.is_empty(), "processes of the stopped replica still run: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_is_refused() {
    let server = Server::start().await;
    let out = crate::harness::cli_with(
        &["server", "--listen", "127.0.0.1:0", "--data-dir", crate::harness::path_str(server.data_dir())],
        &[],
    )
    .await;
    assert_ne!(out.code, 0, "a second server started:\n{out}");
    assert!(out.stderr.contains("another ringfence server") && out.stderr.contains("pid"), "{out}");
    // And a public address is refused while the API has no TLS.
    let out = crate::harness::cli_with(&["server", "--listen", "0.0.0.0:0", "--data-dir", "/nonexistent"], &[]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("not a loopback address"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_body_is_answered_413_and_changes_nothing() {
    let server = Server::start().await;
    // As a client streaming an upload sends it: the head announces 10 MB, the body starts to
    // flow. The answer comes at once, before the server reads the body.
    let (status, v) = crate::harness::announce_body(&server, "/v1/workloads", 10 << 20).await;
    assert_eq!((status, v["error"]["code"].as_str()), (413, Some("too_large")), "{v:#}");
    assert!(workload_names(&server).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_takes_no_table_without_its_secret_and_a_stolen_secret_is_undone() {
    let server = Server::start().await;
    let w = "routed";
    server.setup(&Spec::new(w), &[("v1", &[])]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0);
    let status = server.status(w).await;
    let admin = status.router.expect("a router").admin;
    let url = format!("http://{admin}/v1/table");
    let http = HttpClient::new();
    let table_now = |auth: Option<String>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();
            let r =
                http.request(Method::GET, &url, &headers, None, Duration::from_secs(5)).await.expect("router answers");
            (r.status.as_u16(), serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null))
        }
    };
    let secret = ringfence::routerproc::admin_token(server.data_dir(), w).expect("the router's secret");
    let bearer = format!("Bearer {secret}");
    let (status, original) = table_now(Some(bearer.clone())).await;
    assert_eq!(status, 200);
    let mut hijack = original.clone();
    hijack["generation"] = json!(original["generation"].as_u64().expect("generation") + 100);
    for g in hijack["groups"].as_array_mut().expect("groups") {
        g["upstreams"] = json!(["127.0.0.1:9"]);
    }
    let body = Bytes::from(hijack.to_string());

    // Without the secret: refused, and the table is what it was.
    let r = http
        .request(Method::PUT, &url, &[("content-type", "application/json")], Some(body.clone()), Duration::from_secs(5))
        .await
        .expect("router answers");
    assert_eq!(r.status.as_u16(), 401);
    assert_eq!(table_now(Some(bearer.clone())).await.1, original);
    assert_eq!(table_now(None).await.0, 401, "the table is not even readable without the secret");

    // With a stolen secret the router takes it, and the controller takes it back.
    let r = http
        .request(
            Method::PUT,
            &url,
            &[("content-type", "application/json"), ("authorization", &bearer)],
            Some(body),
            Duration::from_secs(5),
        )
        .await
        .expect("router answers");
    assert!(r.status.is_success(), "{}", r.status);
    server
        .wait_events(w, "the drift to be recorded", |events| {
            events.iter().any(|e| matches!(e.kind, ringfence_core::EventKind::RoutesDrifted { .. })).then_some(())
        })
        .await;
    let restored = crate::harness::wait_until("the desired table back in the router", || {
        let bearer = bearer.clone();
        async move {
            let (_, t) = table_now(Some(bearer)).await;
            let upstreams: Vec<Value> =
                t["groups"].as_array().into_iter().flatten().map(|g| g["upstreams"].clone()).collect();
            (!upstreams.is_empty() && upstreams.iter().all(|u| u != &json!(["127.0.0.1:9"]))).then_some(t)
        }
    })
    .await;
    assert!(
        restored["generation"].as_u64() > hijack["generation"].as_u64(),
        "the desired table is installed above the hijacker's generation: {restored:#}"
    );
}

/// A `ringfence server` started by hand, killed when dropped.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ringfence server` with `args` and returns it with the URL of its banner line.
fn spawn_server(args: &[&str]) -> (Spawned, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(crate::harness::BIN)
        .arg("server")
        .args(args)
        .env_remove("RINGFENCE_KEEP_WORKLOADS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ringfence server");
    let stdout = child.stdout.take().expect("piped");
    let guard = Spawned(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("the banner");
    let url = line
        .strip_prefix("ringfence server listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
        .to_string();
    (guard, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_api_speaks_tls_and_may_leave_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("a self-signed certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.key_pair.serialize_pem()).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    let data = dir.path().join("data");
    let (cert_s, key_s, data_s) =
        (crate::harness::path_str(&cert), crate::harness::path_str(&key), crate::harness::path_str(&data));
    let (_server, url) =
        spawn_server(&["--listen", "127.0.0.1:0", "--tls-cert", cert_s, "--tls-key", key_s, "--data-dir", data_s]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let token = data.join("admin.token");
    crate::harness::wait_until("the admin token", || {
        let ok = token.is_file();
        async move { ok.then_some(()) }
    })
    .await;
    let token_s = crate::harness::path_str(&token);

    // A client that trusts the certificate talks to it; one that does not is refused.
    let trusted = crate::harness::cli_with(
        &["--server", &url, "--token-file", token_s, "token", "list"],
        &[("RINGFENCE_CA_FILE", cert_s)],
    )
    .await;
    assert_eq!(trusted.code, 0, "{trusted}");
    assert!(trusted.stdout.contains("admin"), "{trusted}");
    let untrusted = crate::harness::cli_with(&["--server", &url, "--token-file", token_s, "token", "list"], &[]).await;
    assert_ne!(untrusted.code, 0, "a client that does not trust the certificate got through:\n{untrusted}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = url.replacen("https://", "http://", 1);
    let r = HttpClient::new().get(&format!("{plain}/v1/health"), Duration::from_secs(5)).await;
    assert!(r.is_err(), "plain HTTP was answered: {:?}", r.map(|r| r.status));

    // With TLS, a non-loopback address is allowed (without it, refused: see above).
    let other = dir.path().join("data2");
    let (_wide, wide_url) = spawn_server(&[
        "--listen",
        "0.0.0.0:0",
        "--tls-cert",
        cert_s,
        "--tls-key",
        key_s,
        "--data-dir",
        crate::harness::path_str(&other),
    ]);
    assert!(wide_url.starts_with("https://0.0.0.0:"), "{wide_url}");
}
