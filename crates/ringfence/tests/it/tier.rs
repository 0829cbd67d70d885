//! The router tier: two `ringfence router --control-plane` processes serve one workload. They
//! fetch its tables from the API, their counters reach the analysis together, they keep
//! serving the last table while the server is away (one of them across its own restart), and
//! a routing change reaches both within a second of the server being back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use ringfence::http::HttpClient;
use ringfence_core::EventKind;

use crate::harness::{BIN, Load, Server, Spec, path_str, rollout_id, wait_until};

/// A router of the tier, killed when dropped.
struct TierRouter {
    child: Option<Child>,
    name: String,
    args: Vec<String>,
    mark: (String, String),
    ready: PathBuf,
    log: PathBuf,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    admin_token: String,
}

impl TierRouter {
    async fn start(server: &Server, name: &str, token_file: &Path) -> TierRouter {
        let admin_token_file = server.path(&format!("{name}.admin-token"));
        let admin_token = format!("{:032x}", rand::random::<u128>());
        ringfence_router::write_secret_file(&admin_token_file, admin_token.as_bytes()).unwrap();
        let ready = server.path(&format!("{name}.ready.json"));
        let args: Vec<String> = [
            "router",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--admin-token-file",
            path_str(&admin_token_file),
            "--state-file",
            path_str(&server.path(&format!("{name}.tables.json"))),
            "--ready-file",
            path_str(&ready),
            "--control-plane",
            server.url(),
            "--api-token-file",
            path_str(token_file),
            "--name",
            name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (var, mark) = server.mark();
        let mut r = TierRouter {
            child: None,
            name: name.into(),
            args,
            mark: (var.into(), mark.into()),
            ready,
            log: server.path(&format!("{name}.log")),
            listen: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
            admin_token,
        };
        r.launch().await;
        r
    }

    async fn launch(&mut self) {
        let _ = std::fs::remove_file(&self.ready);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            .env(&self.mark.0, &self.mark.1)
            .env("RINGFENCE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn `ringfence router`");
        self.child = Some(child);
        let ready: serde_json::Value = wait_until(&format!("{} to listen", self.name), || async {
            std::fs::read_to_string(&self.ready).ok().and_then(|t| serde_json::from_str(&t).ok())
        })
        .await;
        self.listen = ready["listen"].as_str().unwrap().parse().unwrap();
        // The listen port is kept across restarts, as a supervisor's router keeps its address.
        if let Some(i) = self.args.iter().position(|a| a == "--listen") {
            self.args[i + 1] = self.listen.to_string();
        }
        self.admin = ready["admin"].as_str().unwrap().parse().unwrap();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The generation of `workload`'s table this router serves, if any.
    async fn generation(&self, workload: &str) -> Option<u64> {
        let auth = format!("Bearer {}", self.admin_token);
        let url = format!("http://{}/v1/table", self.admin);
        let r = HttpClient::new()
            .request(Method::GET, &url, &[("authorization", &auth)], None, Duration::from_secs(2))
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        v["routes"].as_array()?.iter().find(|r| r["table"]["workload"] == workload)?["table"]["generation"].as_u64()
    }

    /// `n` requests through this router: how many were answered 200.
    async fn ok_of(&self, n: usize) -> usize {
        let http = HttpClient::new();
        let url = format!("http://{}/", self.listen);
        let mut ok = 0;
        for i in 0..n {
            let user = format!("u{i}");
            let r = http.request(Method::GET, &url, &[("x-user-id", &user)], None, Duration::from_secs(5)).await;
            ok += usize::from(r.is_ok_and(|r| r.status.is_success()));
        }
        ok
    }
}

impl Drop for TierRouter {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET` a table set (no `If-None-Match`: answered at once).
async fn routes_doc(http: &HttpClient, url: &str, auth: &str) -> serde_json::Value {
    let r = http.request(Method::GET, url, &[("authorization", auth)], None, Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status.as_u16(), 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

fn published(events: &[ringfence_core::Event]) -> Vec<(u64, i64)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RoutesPublished { table } => Some((table.generation, e.at.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tier_routers_serve_a_rollout_and_carry_on_without_the_server() {
    let mut server = Server::start().await;
    let w = "shop";
    let spec = Spec { phases: vec![(50, "2s"), (100, "2s")], ..Spec::new(w) };
    let toml = spec.toml().replace("[router]\n", "[router]\nkind = \"tier\"\n");
    let file = server.path("shop.toml");
    std::fs::write(&file, toml).unwrap();
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}");
    for v in ["v1", "v2", "v3"] {
        server.release(w, v, &[]).await;
    }
    // The routers' token may route and do nothing else.
    let token = server.token_with("edge", &["router"]).await;
    let token_file = server.path("router.token");
    ringfence_router::write_secret_file(&token_file, token.as_bytes()).unwrap();
    let denied = server.cli_as(&token, &["deploy", w, "v1"]).await;
    assert_ne!(denied.code, 0, "a router token cannot deploy: {denied}");

    // A router token for another workload sees no table of this one and cannot report its
    // traffic; a viewer cannot fetch tables at all.
    let http = HttpClient::new();
    let other = format!("Bearer {}", server.token_with("edge-other", &["router:other"]).await);
    let viewer = format!("Bearer {}", server.token_with("watcher", &["viewer"]).await);
    let url = format!("{}/v1/routes", server.url());
    let r = http.request(Method::GET, &url, &[("authorization", &other)], None, Duration::from_secs(5)).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((r.status.as_u16(), v["routes"].as_array().map(Vec::len)), (200, Some(0)), "{v}");
    let r = http.request(Method::GET, &url, &[("authorization", &viewer)], None, Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status.as_u16(), 403);
    let report = serde_json::json!({"router": "spoof", "workloads": {w: {"instance_id": "x", "generation": 1, "uptime_ms": 1, "versions": {"v1": {"requests": 1000000, "errors": 1000000, "latency_sum_us": 0, "latency_buckets": []}}, "upstreams": []}}});
    let r = http
        .request(
            Method::POST,
            &format!("{url}/report"),
            &[("authorization", &other)],
            Some(serde_json::to_vec(&report).unwrap().into()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 403, "{}", String::from_utf8_lossy(&r.body));

    let mut a = TierRouter::start(&server, "edge-a", &token_file).await;
    let b = TierRouter::start(&server, "edge-b", &token_file).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    for r in [&a, &b] {
        wait_until(&format!("{} to serve v1", r.name), || async { (r.ok_of(5).await == 5).then_some(()) }).await;
    }
    // A router is sent only what changed after the cursor of the set it holds: every workload
    // by name, and the routes changed since.
    let auth = format!("Bearer {token}");
    let whole = routes_doc(&http, &url, &auth).await;
    let cursor = whole["cursor"].as_str().expect("a cursor").to_string();
    assert!(whole.get("workloads").is_none() && whole["routes"].as_array().unwrap().len() == 1, "{whole}");
    let since = format!("{url}?since={cursor}");
    let delta = routes_doc(&http, &since, &auth).await;
    assert_eq!(delta["workloads"], serde_json::json!([w]), "{delta}");
    let changed = if delta["etag"] == whole["etag"] { 0 } else { 1 };
    assert_eq!(delta["routes"].as_array().unwrap().len(), changed, "only a changed route is sent: {delta}");
    let foreign = routes_doc(&http, &format!("{url}?since=0123.4"), &auth).await;
    assert!(foreign.get("workloads").is_none() && foreign["routes"].as_array().unwrap().len() == 1, "{foreign}");

    // A rollout with traffic through both routers: the analysis counts both.
    let (load_a, load_b) = (Load::start(a.listen, 40.0, 50), Load::start(b.listen, 40.0, 50));
    let out = server.cli(&["deploy", w, "v2", "--wait", "--timeout", "45s"]).await;
    assert_eq!(out.code, 0, "{out}\n{}", server.diagnose(w).await);
    let id = rollout_id(&out);
    let (sa, sb) = (load_a.finish().await, load_b.finish().await);
    let served = |s: &[ringfence::loadgen::Sample]| s.iter().filter(|x| x.version.as_deref() == Some("v2")).count();
    let (via_a, via_b) = (served(&sa), served(&sb));
    assert!(via_a > 0 && via_b > 0, "both routers served v2: {via_a}, {via_b}");
    assert_eq!(sa.iter().chain(&sb).filter(|x| x.is_error()).count(), 0, "no user saw a failure");
    // The traffic samples of a rollout are appended at its end, by the loop's next look at
    // the counters, which for a tier workload comes with the routers' next report.
    let counted: u64 = wait_until("the rollout's traffic samples", || async {
        let events = server.events(w).await;
        let counted: u64 = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::SignalsRecorded { rollout_id, samples } if *rollout_id == id => Some(samples),
                _ => None,
            })
            .flatten()
            .filter(|s| s.version == "v2")
            .map(|s| s.requests)
            .sum();
        (counted > 0).then_some(counted)
    })
    .await;
    assert!(
        counted as usize > via_a.max(via_b),
        "the analysis saw {counted} requests to v2: more than either router alone ({via_a}, {via_b})"
    );
    let status = server.cli(&["status", w]).await;
    assert!(status.stdout.contains("edge-a") && status.stdout.contains("edge-b"), "{status}");
    // The rollout changed the route: the delta since the first cursor carries it.
    let delta = routes_doc(&http, &since, &auth).await;
    let route = &delta["routes"][0];
    assert_eq!((delta["workloads"].clone(), route["table"]["workload"].as_str()), (serde_json::json!([w]), Some(w)));
    assert!(route["table"]["generation"].as_u64() > whole["routes"][0]["table"]["generation"].as_u64(), "{delta}");

    // The control plane dies: both keep serving the last table, one across its own restart.
    // The rollout's end still changes the table (the old version's group leaves): the routers
    // are given a moment to fetch the last one before the server goes.
    let serving = wait_until("edge-a to hold the last table published", || async {
        let last = published(&server.events(w).await).last().copied().expect("a published table").0;
        (a.generation(w).await == Some(last)).then_some(last)
    })
    .await;
    // The state file follows within a second (saved at most once a second, the latest set).
    let state = server.path("edge-a.tables.json");
    wait_until("edge-a to save the last table", || async {
        let saved: ringfence_router::TierTables = serde_json::from_str(&std::fs::read_to_string(&state).ok()?).ok()?;
        saved.routes.iter().any(|r| r.table.workload == w && r.table.generation == serving).then_some(())
    })
    .await;
    server.kill9();
    assert_eq!(a.ok_of(20).await, 20, "edge-a serves while the server is away");
    assert_eq!(b.ok_of(20).await, 20, "edge-b serves while the server is away");
    a.kill();
    a.launch().await;
    assert_eq!(a.generation(w).await, Some(serving), "edge-a restored its tables from its state file");
    assert_eq!(a.ok_of(20).await, 20, "edge-a serves after its restart with no server");

    // The server is back; both routers' counters reach it (it has heard from neither since it
    // started, so each sends all of its workloads' at once) ...
    server.restart_on_same_port().await;
    wait_until("both routers report to the restarted server", || async {
        (server.status(w).await.tier_routers.len() == 2).then_some(())
    })
    .await;
    // ... and a new rollout's first table reaches both routers at once: pushed to their waiting
    // requests, not found at their next 25 s long poll. The bound is that difference, not a
    // timing (this test's own polling, on a loaded machine, is part of the figure).
    let out = server.cli(&["deploy", w, "v3"]).await;
    assert_eq!(out.code, 0, "{out}");
    let (generation, at_ms) = wait_until("the first table of v3 published", || async {
        published(&server.events(w).await).into_iter().find(|(g, _)| *g > serving)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reached = [None, None];
    while reached.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, r) in [&a, &b].iter().enumerate() {
            if reached[i].is_none() && r.generation(w).await.is_some_and(|g| g >= generation) {
                reached[i] = Some(ringfence::state::now().0 - at_ms);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (r, took) in [&a, &b].iter().zip(reached) {
        let took = took.unwrap_or_else(|| panic!("{} never got table {generation}", r.name));
        assert!(took < 5_000, "{} got table {generation} {took} ms after it was published", r.name);
    }
}
