//! End-to-end: real upstream servers, a real router, real HTTP on loopback.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ringfence_router::{
    AdminAuth, AdminToken, BreakerConfig, BreakerState, Group, RouteTable, RouterConfig, StatsSnapshot, bucket,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An upstream replica answering every request with `status` and its name as the body. It
/// echoes the Host and X-Forwarded-For it received so tests can check proxy hygiene.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

async fn upstream(name: &'static str, status: StatusCode) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let echo = |name: &str| req.headers().get(name).cloned();
                    let (host, xff) = (echo("host"), echo("x-forwarded-for"));
                    async move {
                        let mut response = Response::new(Full::new(Bytes::from(name)));
                        *response.status_mut() = status;
                        let headers = response.headers_mut();
                        if let Some(host) = host {
                            headers.insert("x-seen-host", host);
                        }
                        if let Some(xff) = xff {
                            headers.insert("x-seen-xff", xff);
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Upstream { addr, hits }
}

struct Router {
    proxy: SocketAddr,
    admin: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    /// What the admin API is called with: `Authorization: Bearer <this>`, if any.
    token: Option<String>,
    /// Pooled, like a real caller with keep-alive.
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Router {
    /// A router whose admin API needs a fresh secret, which this handle sends.
    async fn start(state_file: Option<PathBuf>) -> Router {
        let token = AdminToken::generate().unwrap();
        let secret = token.expose().to_owned();
        Router::start_with(state_file, AdminAuth::Token(token), Some(secret)).await
    }

    /// Users served by two worker threads, as `ringfence router` serves them on two cores.
    async fn start_with(state_file: Option<PathBuf>, admin_auth: AdminAuth, token: Option<String>) -> Router {
        Router::start_config(RouterConfig { state_file, workers: 2, ..RouterConfig::new(admin_auth) }, token).await
    }

    async fn start_config(config: RouterConfig, token: Option<String>) -> Router {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy_addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ringfence_router::run(config, listener, admin, shutdown.clone()));
        let client = Client::builder(TokioExecutor::new()).build_http();
        Router { proxy: proxy_addr, admin: admin_addr, shutdown, task, token, client }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    async fn put_table(&self, body: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.admin_call(Method::PUT, "/v1/table", self.token.as_deref(), body).await;
        (status, serde_json::from_str(&body).unwrap())
    }

    async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let (status, _, body) = self.admin_call(Method::GET, path, self.token.as_deref(), "").await;
        (status, body)
    }

    /// An admin request with `Authorization: Bearer <token>`, or with no such header.
    async fn admin_call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("authorization", a.as_str())).collect();
        self.send(method, self.admin, path, &headers, body).await
    }

    async fn stats(&self) -> StatsSnapshot {
        let (status, body) = self.admin_get("/v1/stats").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn get(&self, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        self.send(Method::GET, self.proxy, "/some/path?q=1", headers, "").await
    }

    async fn send(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(format!("http://{addr}{path}"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let response = self.client.request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap())
}

fn table(generation: u64, groups: &[(&str, &str, u32, &[SocketAddr])]) -> RouteTable {
    RouteTable {
        generation,
        workload: "checkout".into(),
        sticky_header: "x-user-id".into(),
        sticky_cookie: "rf_user".into(),
        groups: groups
            .iter()
            .map(|&(name, version, weight_bp, upstreams)| Group {
                name: name.into(),
                version: version.into(),
                weight_bp,
                upstreams: upstreams.to_vec(),
                flags: None,
                segment: None,
                shadow_bp: 0,
                fault: None,
            })
            .collect(),
        breaker: BreakerConfig::default(),
        flag_tokens: vec![],
        pin_header: None,
        max_request_body: ringfence_router::DEFAULT_MAX_REQUEST_BODY,
    }
}

fn to_json(t: &RouteTable) -> String {
    serde_json::to_string(t).unwrap()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringfence-router-{}-{:x}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn weighted_sticky_split_with_headers_and_matching_stats() {
    let stable = upstream("stable-1", StatusCode::OK).await;
    let canary = upstream("canary-1", StatusCode::OK).await;
    let router = Router::start(None).await;
    let t = table(1, &[("canary", "v2", 2_000, &[canary.addr]), ("stable", "v1", 8_000, &[stable.addr])]);
    let (status, body) = router.put_table(&to_json(&t)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_value::<RouteTable>(body).unwrap(), t);

    let users: u32 = 1_000;
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    let mut assigned = BTreeMap::new();
    for i in 0..users {
        let user = format!("user-{i}");
        let (status, headers, body) = router.get(&[("x-user-id", &user)]).await;
        assert_eq!(status, StatusCode::OK);
        let group = header(&headers, "x-ringfence-group").to_owned();
        let version = header(&headers, "x-ringfence-version");
        let (want_body, want_version) = if group == "canary" { ("canary-1", "v2") } else { ("stable-1", "v1") };
        assert_eq!((body.as_str(), version), (want_body, want_version), "group {group}");
        // A user with a key never gets a cookie.
        assert!(headers.get("set-cookie").is_none());
        *groups.entry(group.clone()).or_default() += 1;
        assigned.insert(user, group);
    }
    let canary_share = groups["canary"] as f64 / f64::from(users);
    assert!((0.15..0.25).contains(&canary_share), "canary got {canary_share} of users: {groups:?}");

    // Sticky: the same user, by header or by cookie, always lands in the same group, and the
    // admin API agrees with the data plane.
    let mut sent = u64::from(users);
    for i in (0..users).step_by(50) {
        let user = format!("user-{i}");
        let cookie = format!("other=1; rf_user={user}");
        for headers in [[("x-user-id", user.as_str())], [("cookie", cookie.as_str())]] {
            let (_, h, _) = router.get(&headers).await;
            assert_eq!(header(&h, "x-ringfence-group"), assigned[&user], "{user}");
            sent += 1;
        }
        let (status, body) = router.admin_get(&format!("/v1/assign?user={user}")).await;
        assert_eq!(status, StatusCode::OK);
        let assign: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(assign["group"], assigned[&user].as_str());
        assert_eq!(assign["bucket"], bucket("checkout", &user));
    }

    // Proxy hygiene: Host kept, X-Forwarded-For appended, hop-by-hop headers not forwarded.
    let (_, h, _) =
        router.get(&[("x-user-id", "user-1"), ("host", "shop.example"), ("x-forwarded-for", "203.0.113.7")]).await;
    sent += 1;
    assert_eq!(header(&h, "x-seen-host"), "shop.example");
    assert_eq!(header(&h, "x-seen-xff"), "203.0.113.7, 127.0.0.1");

    let stats = router.stats().await;
    assert_eq!(stats.generation, 1);
    let requests: u64 = stats.versions.values().map(|v| v.requests).sum();
    assert_eq!(requests, sent);
    assert_eq!(stats.versions["v1"].requests, stable.hits.load(Ordering::Relaxed));
    assert_eq!(stats.versions["v2"].requests, canary.hits.load(Ordering::Relaxed));
    assert!(stats.versions.values().all(|v| v.errors == 0));
    let v1 = &stats.versions["v1"];
    assert_eq!(v1.latency_buckets.iter().map(|b| b.1).sum::<u64>(), v1.requests);
    assert!(v1.quantile(0.99).is_some());
    assert!(!stats.versions.contains_key("none"), "nothing went unrouted");
    assert_eq!(stats.upstreams.len(), 2);
    assert!(stats.upstreams.iter().all(|u| u.state == BreakerState::Closed && u.trips == 0));

    let (status, metrics) = router.admin_get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let line =
        format!("ringfence_router_requests_total{{version=\"v1\",group=\"stable\"}} {}", stats.versions["v1"].requests);
    assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    assert!(metrics.contains("ringfence_router_table_generation 1"), "{metrics}");
    let bucket_line = "ringfence_router_request_duration_seconds_bucket{le=\"+Inf\",version=\"v2\"}";
    assert!(metrics.contains(bucket_line), "{metrics}");
    router.stop().await;
}

#[tokio::test]
async fn a_new_user_gets_a_cookie_that_keeps_them_sticky() {
    let stable = upstream("stable-1", StatusCode::OK).await;
    let canary = upstream("canary-1", StatusCode::OK).await;
    let router = Router::start(None).await;
    let t = table(1, &[("canary", "v2", 5_000, &[canary.addr]), ("stable", "v1", 5_000, &[stable.addr])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);

    for _ in 0..10 {
        let (status, headers, _) = router.get(&[]).await;
        assert_eq!(status, StatusCode::OK);
        let set_cookie = header(&headers, "set-cookie");
        let (pair, attributes) = set_cookie.split_once("; ").unwrap();
        assert_eq!(attributes, "Path=/; HttpOnly; SameSite=Lax");
        let key = pair.strip_prefix("rf_user=").unwrap();
        assert!(!key.is_empty());
        let group = header(&headers, "x-ringfence-group").to_owned();
        assert_eq!(group, t.group_for_bucket(bucket("checkout", key)).unwrap().name);

        for _ in 0..3 {
            let (_, again, _) = router.get(&[("cookie", pair)]).await;
            assert_eq!(header(&again, "x-ringfence-group"), group);
            assert!(again.get("set-cookie").is_none());
        }
    }
    router.stop().await;
}

#[tokio::test]
async fn breaker_trips_on_a_failing_upstream_and_traffic_moves_to_the_healthy_group() {
    let stable = upstream("stable-1", StatusCode::OK).await;
    let broken = upstream("canary-broken", StatusCode::INTERNAL_SERVER_ERROR).await;
    let router = Router::start(None).await;
    let mut t = table(1, &[("canary", "v2", 5_000, &[broken.addr]), ("stable", "v1", 5_000, &[stable.addr])]);
    // Long enough that no half-open probe happens during the test, however slow the machine.
    t.breaker.open_for_ms = 600_000;
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);

    let canary_users: Vec<String> = (0..)
        .map(|i| format!("user-{i}"))
        .filter(|u| t.group_for_bucket(bucket("checkout", u)).unwrap().name == "canary")
        .take(30)
        .collect();
    let mut seen: BTreeMap<(u16, String), u64> = BTreeMap::new();
    let mut statuses = Vec::new();
    for user in &canary_users {
        let (status, headers, _) = router.get(&[("x-user-id", user)]).await;
        statuses.push(status.as_u16());
        *seen.entry((status.as_u16(), header(&headers, "x-ringfence-group").to_owned())).or_default() += 1;
    }
    // Five failures in a row trip the breaker; after that canary users are served by stable.
    assert_eq!(statuses[..5], [500; 5]);
    assert!(statuses[5..].iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(seen[&(500, "canary".to_owned())], 5);
    assert_eq!(seen[&(200, "stable".to_owned())], 25);
    assert_eq!(broken.hits.load(Ordering::Relaxed), 5);

    let stats = router.stats().await;
    assert_eq!((stats.versions["v2"].requests, stats.versions["v2"].errors), (5, 5));
    assert_eq!((stats.versions["v1"].requests, stats.versions["v1"].errors), (25, 0));
    let broken_stats = stats.upstreams.iter().find(|u| u.addr == broken.addr).unwrap();
    assert_eq!((broken_stats.state, broken_stats.trips), (BreakerState::Open, 1));
    assert_eq!((broken_stats.group.as_str(), broken_stats.version.as_str()), ("canary", "v2"));
    let (_, metrics) = router.admin_get("/metrics").await;
    let gauge = format!("ringfence_router_breaker_open{{upstream=\"{}\",version=\"v2\"}} 1", broken.addr);
    assert!(metrics.contains(&gauge), "{gauge} missing from\n{metrics}");
    assert!(metrics.contains("ringfence_router_errors_total{version=\"v2\",group=\"canary\"} 5"));

    // A new table keeping the broken replica keeps its open breaker.
    t.generation = 2;
    t.groups[0].weight_bp = 1_000;
    t.groups[1].weight_bp = 9_000;
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
    let (status, headers, _) = router.get(&[("x-user-id", &canary_users[0])]).await;
    assert_eq!((status, header(&headers, "x-ringfence-group")), (StatusCode::OK, "stable"));
    let stats = router.stats().await;
    let broken_stats = stats.upstreams.iter().find(|u| u.addr == broken.addr).unwrap();
    assert_eq!((broken_stats.state, broken_stats.trips), (BreakerState::Open, 1));
    router.stop().await;
}

#[tokio::test]
async fn unreachable_upstreams_give_502_then_503_under_version_none() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let router = Router::start(None).await;

    // Before any table: 503, not ready, counted under "none".
    let (status, headers, _) = router.get(&[("x-user-id", "u")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&headers, "x-ringfence-version"), "none");
    assert_eq!(router.admin_get("/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(router.admin_get("/live").await.0, StatusCode::OK);
    let (status, body) = router.admin_get("/v1/table").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], "no_table");

    let t = table(1, &[("stable", "v1", 10_000, &[dead])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
    assert_eq!(router.admin_get("/ready").await.0, StatusCode::OK);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let (status, headers, _) = router.get(&[("x-user-id", &format!("u{i}"))]).await;
        statuses.push((status.as_u16(), header(&headers, "x-ringfence-group").to_owned()));
    }
    // The only replica refuses connections: ejected on the first, with no other replica of
    // its version to try; from then on nowhere to send.
    let expected: Vec<(u16, String)> =
        [(502, "stable"); 1].into_iter().chain([(503, "none"); 7]).map(|(s, g)| (s, g.to_owned())).collect();
    assert_eq!(statuses, expected);

    let stats = router.stats().await;
    assert_eq!((stats.versions["v1"].requests, stats.versions["v1"].errors), (1, 1));
    assert_eq!((stats.versions["none"].requests, stats.versions["none"].errors), (8, 8));
    router.stop().await;
}

/// A replica that takes each request and closes the connection without an answer, the way a
/// process dying mid-request looks from outside.
async fn hangs_up() -> SocketAddr {
    use tokio::io::AsyncReadExt as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_request_without_an_answer_is_tried_once_more_on_the_same_version_only() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let stable = upstream("stable-2", StatusCode::OK).await;
    let canary = upstream("canary-1", StatusCode::OK).await;
    let router = Router::start(None).await;
    let user_in = |group: u32| (0..).map(|i| format!("u{i}")).find(|u| (bucket("checkout", u) < 5_000) == (group == 0));
    let (stable_user, canary_user) = (user_in(0).unwrap(), user_in(1).unwrap());

    // A stable replica refusing connections: its users are served by the other one, and the
    // refusing replica is out after its first refusal.
    let t = table(1, &[("stable", "v1", 5_000, &[dead, stable.addr]), ("canary", "v2", 5_000, &[canary.addr])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
    for _ in 0..6 {
        let (status, headers, body) = router.get(&[("x-user-id", &stable_user)]).await;
        assert_eq!(
            (status, body.as_str(), header(&headers, "x-ringfence-version")),
            (StatusCode::OK, "stable-2", "v1")
        );
    }
    // A POST without a body never reached the refusing replica either: it goes too.
    let (status, _, _) = router.send(Method::POST, router.proxy, "/pay", &[("x-user-id", &stable_user)], "").await;
    assert_eq!(status, StatusCode::OK);
    let stats = router.stats().await;
    let dead_replica = stats.upstreams.iter().find(|u| u.addr == dead).unwrap();
    assert_eq!((dead_replica.state, dead_replica.trips), (BreakerState::Open, 1), "{stats:?}");
    assert_eq!((stats.versions["v1"].requests, stats.versions["v1"].errors), (7, 0));
    let metrics = router.admin_get("/metrics").await.1;
    assert!(metrics.contains(r#"ringfence_router_retries_total{version="v1",group="stable"} 1"#), "{metrics}");

    // A replica that takes the request and hangs up: a GET is sent again to the other
    // replica; a POST may have been processed, so its user gets the 502.
    let hangup = hangs_up().await;
    let t = table(2, &[("stable", "v1", 5_000, &[hangup, stable.addr]), ("canary", "v2", 5_000, &[canary.addr])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
    for _ in 0..4 {
        let (status, _, body) = router.get(&[("x-user-id", &stable_user)]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "stable-2"));
    }
    let mut posts = Vec::new();
    for _ in 0..4 {
        let (status, _, _) = router.send(Method::POST, router.proxy, "/pay", &[("x-user-id", &stable_user)], "").await;
        posts.push(status.as_u16());
    }
    posts.sort();
    assert_eq!(posts, [200, 200, 502, 502], "round robin sends half the POSTs to each replica");

    // The canary's only replica refuses: no other replica of v2, and never one of v1, so the
    // user sees the failure and the analysis counts it against v2.
    drop(canary);
    let dead_canary = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let t = table(3, &[("stable", "v1", 5_000, &[stable.addr]), ("canary", "v2", 5_000, &[dead_canary])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
    let before = router.stats().await;
    let (status, headers, _) = router.get(&[("x-user-id", &canary_user)]).await;
    assert_eq!((status, header(&headers, "x-ringfence-version")), (StatusCode::BAD_GATEWAY, "v2"));
    let after = router.stats().await;
    assert_eq!(after.versions["v2"].errors - before.versions["v2"].errors, 1);
    assert_eq!(after.versions["v1"].requests, before.versions["v1"].requests, "nothing of v2's went to v1");
    router.stop().await;
}

#[tokio::test]
async fn stale_generations_and_bad_tables_are_refused_without_changing_anything() {
    let stable = upstream("stable-1", StatusCode::OK).await;
    let dir = temp_dir();
    let state_file = dir.join("table.json");
    let router = Router::start(Some(state_file.clone())).await;
    let good = table(5, &[("stable", "v1", 10_000, &[stable.addr])]);
    assert_eq!(router.put_table(&to_json(&good)).await.0, StatusCode::OK);
    let persisted = std::fs::read(&state_file).unwrap();

    // Same generation, same content: idempotent.
    let (status, body) = router.put_table(&to_json(&good)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_value::<RouteTable>(body).unwrap(), good);

    let mut older = good.clone();
    older.generation = 4;
    let (status, body) = router.put_table(&to_json(&older)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "stale_generation");

    let mut no_upstreams = table(6, &[("canary", "v2", 100, &[]), ("stable", "v1", 9_900, &[stable.addr])]);
    let (status, body) = router.put_table(&to_json(&no_upstreams)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_table");
    assert_eq!(body["error"]["field"], "groups[0].upstreams");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("canary") && message.contains("upstreams"), "{message}");

    no_upstreams.groups[0].upstreams.push(stable.addr);
    no_upstreams.groups[1].weight_bp = 9_000;
    let (status, body) = router.put_table(&to_json(&no_upstreams)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "groups");

    let (status, body) = router.put_table("{\"generation\": 7, \"groups\": []}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_json");
    assert!(body["error"]["message"].as_str().unwrap().contains("workload"), "{body}");
    for junk in ["", "not json", "[1,2]", "{\"workload\": \"w\", \"groups\": [{\"name\": 1}]}"] {
        let (status, body) = router.put_table(junk).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{junk}");
        assert_eq!(body["error"]["code"], "invalid_json");
    }

    let (status, body) = router.admin_get("/v1/table").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<RouteTable>(&body).unwrap(), good);
    assert_eq!(std::fs::read(&state_file).unwrap(), persisted);
    assert_eq!(router.stats().await.generation, 5);

    // Bad input on the data plane never breaks it either.
    let (status, _, _) = router.get(&[("cookie", "=;;rf_user;==\"\""), ("x-user-id", " ")]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = router.admin_get("/v1/assign").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = router.admin_get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    router.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_restarted_router_serves_the_persisted_table() {
    let stable = upstream("stable-1", StatusCode::OK).await;
    let dir = temp_dir();
    let state_file = dir.join("nested").join("table.json");
    let t = table(3, &[("stable", "v1", 10_000, &[stable.addr])]);

    let first = Router::start(Some(state_file.clone())).await;
    assert_eq!(first.put_table(&to_json(&t)).await.0, StatusCode::OK);
    let first_id = first.stats().await.instance_id;
    first.stop().await;

    let second = Router::start(Some(state_file.clone())).await;
    assert_eq!(second.admin_get("/ready").await.0, StatusCode::OK);
    let (status, body) = second.admin_get("/v1/table").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<RouteTable>(&body).unwrap(), t);
    let (status, headers, body) = second.get(&[("x-user-id", "u1")]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "stable-1"));
    assert_eq!(header(&headers, "x-ringfence-group"), "stable");
    let stats = second.stats().await;
    assert_ne!(stats.instance_id, first_id, "a restart is visible to readers");
    assert_eq!((stats.generation, stats.versions["v1"].requests), (3, 1));
    second.stop().await;

    // A corrupt state file does not keep the router from starting.
    std::fs::write(&state_file, "{ half a table").unwrap();
    let third = Router::start(Some(state_file)).await;
    assert_eq!(third.admin_get("/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.admin_get("/live").await.0, StatusCode::OK);
    third.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// A router embedded in another program serves users on that program's runtime.
#[tokio::test]
async fn a_router_on_the_callers_runtime_serves_and_stops() {
    let stable = upstream("stable-1", StatusCode::OK).await;
    let canary = upstream("canary-1", StatusCode::OK).await;
    let token = AdminToken::generate().unwrap();
    let secret = token.expose().to_owned();
    let config = RouterConfig { workers: 0, ..RouterConfig::new(AdminAuth::Token(token)) };
    let router = Router::start_config(config, Some(secret)).await;
    let t = table(1, &[("canary", "v2", 5_000, &[canary.addr]), ("stable", "v1", 5_000, &[stable.addr])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
    for i in 0..40 {
        let (status, headers, body) = router.get(&[("x-user-id", &format!("user-{i}"))]).await;
        assert_eq!(status, StatusCode::OK);
        let want = if header(&headers, "x-ringfence-group") == "canary" { "canary-1" } else { "stable-1" };
        assert_eq!(body, want);
    }
    assert!(stable.hits.load(Ordering::Relaxed) > 0 && canary.hits.load(Ordering::Relaxed) > 0);
    router.stop().await;
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    // An upstream that answers only once the test lets it, after shutdown has begun.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (arrived_tx, release_rx) = (arrived.clone(), release.clone());
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
            let (arrived, release) = (arrived_tx.clone(), release_rx.clone());
            async move {
                arrived.notify_one();
                release.notified().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("late"))))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
    });

    let router = Router::start(None).await;
    let t = table(1, &[("stable", "v1", 10_000, &[addr])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
    let client = router.client.clone();
    let proxy = router.proxy;
    let in_flight = tokio::spawn(async move {
        let req =
            Request::get(format!("http://{proxy}/")).header("x-user-id", "u").body(Full::new(Bytes::new())).unwrap();
        let response = client.request(req).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    arrived.notified().await;
    router.shutdown.cancel();
    release.notify_one();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"late"[..]));
    router.task.await.unwrap().unwrap();
}

/// A client that keeps its connection alive and sends its next request just after the router
/// began to stop is answered (with `Connection: close`, so it goes elsewhere after), not cut off
/// mid-request: cutting it off is the failure users of a restarting router would see.
#[tokio::test]
async fn a_kept_alive_connection_is_answered_once_more_after_shutdown_begins() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let stable = upstream("stable-1", StatusCode::OK).await;
    let router = Router::start(None).await;
    let t = table(1, &[("stable", "v1", 10_000, &[stable.addr])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);

    let mut conn = tokio::net::TcpStream::connect(router.proxy).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nhost: {}\r\nx-user-id: u\r\n\r\n", router.proxy);
    // Reads one whole response (this upstream's bodies are short and sent with a length).
    async fn response(conn: &mut tokio::net::TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.unwrap().unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if n == 0 {
                return text;
            }
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    return text;
                }
            }
        }
    }
    conn.write_all(request.as_bytes()).await.unwrap();
    let first = response(&mut conn).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!first.to_ascii_lowercase().contains("connection: close"), "{first}");

    router.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.write_all(request.as_bytes()).await.unwrap();
    let second = response(&mut conn).await;
    assert!(second.starts_with("HTTP/1.1 200"), "the request after shutdown began: {second:?}");
    assert!(second.to_ascii_lowercase().contains("connection: close"), "{second}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(n, 0, "the router closes the connection after that answer");
    router.task.await.unwrap().unwrap();
}

/// Every admin endpoint but `/metrics` needs the secret; a request without it, or with a wrong
/// one, gets 401 in the usual error shape and changes nothing.
#[tokio::test]
async fn the_admin_api_needs_the_secret() {
    let stable = upstream("stable-1", StatusCode::OK).await;
    let dir = temp_dir();
    let state_file = dir.join("table.json");
    let router = Router::start(Some(state_file.clone())).await;
    let token = router.token.clone().unwrap();
    let good = table(1, &[("stable", "v1", 10_000, &[stable.addr])]);
    assert_eq!(router.put_table(&to_json(&good)).await.0, StatusCode::OK);
    let persisted = std::fs::read(&state_file).unwrap();

    let hijack = to_json(&table(2, &[("evil", "v666", 10_000, &[stable.addr])]));
    let wrong_token = format!("{token}0");
    let refused: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("a wrong token", Some("not-the-secret")),
        ("the token with one more character", Some(&wrong_token)),
        ("the token's first half", Some(&token[..32])),
        ("an empty token", Some("")),
    ];
    for (what, presented) in refused {
        let (status, headers, body) = router.admin_call(Method::PUT, "/v1/table", presented, &hijack).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "PUT /v1/table with {what}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        assert!(body["error"]["message"].as_str().unwrap().contains("token"), "{body}");
        assert!(!body.to_string().contains(&token), "the answer never shows the secret");
        assert_eq!(header(&headers, "www-authenticate"), "Bearer realm=\"ringfence-router\"");
        for path in ["/v1/table", "/v1/stats", "/v1/assign?user=u1", "/ready", "/live", "/nope"] {
            let (status, _, body) = router.admin_call(Method::GET, path, presented, "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "GET {path} with {what}: {body}");
        }
    }
    // Another scheme with the right secret is not a bearer token.
    let basic = format!("Basic {token}");
    let (status, _, _) =
        router.send(Method::PUT, router.admin, "/v1/table", &[("authorization", &basic)], &hijack).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Nothing changed: the same table served, persisted and routed to.
    let (status, body) = router.admin_get("/v1/table").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<RouteTable>(&body).unwrap(), good);
    assert_eq!(std::fs::read(&state_file).unwrap(), persisted);
    let (status, headers, _) = router.get(&[("x-user-id", "u1")]).await;
    assert_eq!((status, header(&headers, "x-ringfence-version")), (StatusCode::OK, "v1"));

    // Prometheus scrapes without the secret.
    let (status, _, body) = router.admin_call(Method::GET, "/metrics", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("ringfence_router_table_generation 1"), "{body}");

    // The right token, with the scheme in any case, is let in.
    let (status, _, _) = router.admin_call(Method::GET, "/v1/stats", Some(&token), "").await;
    assert_eq!(status, StatusCode::OK);
    let lower = format!("bearer {token}");
    let (status, _, _) = router.send(Method::GET, router.admin, "/ready", &[("authorization", &lower)], "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = router.put_table(&hijack).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(router.stats().await.generation, 2);
    router.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// The secret file as the server writes it (mode 0600) is what the router reads at start; one
/// that group or others may read, an empty one or none at all keep the router from starting.
#[tokio::test]
async fn the_secret_comes_from_a_private_file_read_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir();
    let path = dir.join("run").join("admin.token");
    // A temporary file left behind by a crash, readable by all, does not lend the secret its mode.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let stale_tmp = dir.join("run").join("admin.token.tmp");
    std::fs::write(&stale_tmp, "old").unwrap();
    std::fs::set_permissions(&stale_tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = AdminToken::generate().unwrap().expose().to_owned();
    ringfence_router::write_secret_file(&path, format!("{secret}\n").as_bytes()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!stale_tmp.exists());

    let auth = AdminAuth::from_options(Some(&path), false).unwrap();
    let router = Router::start_with(None, auth, Some(secret.clone())).await;
    assert_eq!(router.admin_get("/live").await.0, StatusCode::OK, "the trailing newline is not part of the secret");
    router.stop().await;

    for mode in [0o644, 0o640, 0o604, 0o660, 0o620] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let error = format!("{:#}", AdminAuth::from_options(Some(&path), false).unwrap_err());
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains(&format!("mode {mode:04o}")), "{error}");
        assert!(error.contains("group or others"), "{error}");
    }

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "  \n").unwrap();
    let error = format!("{:#}", AdminAuth::from_options(Some(&path), false).unwrap_err());
    assert!(error.contains(&path.display().to_string()) && error.contains("empty"), "{error}");

    std::fs::remove_file(&path).unwrap();
    let error = format!("{:#}", AdminAuth::from_options(Some(&path), false).unwrap_err());
    assert!(error.contains(&path.display().to_string()) && error.contains("No such file"), "{error}");

    let error = AdminAuth::from_options(None, false).unwrap_err().to_string();
    assert!(error.contains("--admin-token-file") && error.contains("--insecure-admin"), "{error}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A router run by hand with `--insecure-admin` serves its admin API to anyone.
#[tokio::test]
async fn an_insecure_router_needs_no_secret() {
    let stable = upstream("stable-1", StatusCode::OK).await;
    let auth = AdminAuth::from_options(None, true).unwrap();
    let router = Router::start_with(None, auth, None).await;
    let (status, body) = router.put_table(&to_json(&table(1, &[("stable", "v1", 10_000, &[stable.addr])]))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(router.stats().await.generation, 1);
    router.stop().await;
}

/// A replica speaking raw HTTP/1.1, to see exactly what the router sends and answer what a
/// library would not: each request (head and body, as received) is recorded, and answered with
/// `answer(path)` written as given; an answer ending in `\0` closes the connection after it
/// (the `\0` is not sent).
async fn raw_replica(answer: fn(&str) -> Vec<u8>) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::AsyncWriteExt as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = read_until(&mut stream, &mut buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4)).await
                    else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let lower = head.to_ascii_lowercase();
                    let body_end = if lower.contains("transfer-encoding: chunked") {
                        read_until(&mut stream, &mut buf, |b| find(&b[end..], b"0\r\n\r\n").map(|i| end + i + 5)).await
                    } else {
                        let length = lower
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                        read_until(&mut stream, &mut buf, |b| (b.len() >= end + length).then_some(end + length)).await
                    };
                    let Some(body_end) = body_end else { return };
                    log.lock().unwrap().push(String::from_utf8_lossy(&buf[..body_end]).into_owned());
                    buf.drain(..body_end);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let mut bytes = answer(&path);
                    let close = bytes.last() == Some(&0);
                    if close {
                        bytes.pop();
                    }
                    // In pieces, as a real server's writes may arrive.
                    for piece in bytes.chunks(7) {
                        if stream.write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::task::yield_now().await;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads into `buf` until `done` finds the end it looks for; `None` at the end of the stream.
async fn read_until(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    use tokio::io::AsyncReadExt as _;
    loop {
        if let Some(end) = done(buf) {
            return Some(end);
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await.unwrap() {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One answer read off a raw connection: its head (lowercase) and its body, decoded from
/// chunks when it came in chunks. Answers with no body must be named by `bodiless`.
async fn read_answer(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, bodiless: bool) -> (String, String) {
    let end = read_until(stream, buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4)).await.expect("an answer head");
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end);
    if bodiless {
        return (head, String::new());
    }
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let line = read_until(stream, buf, |b| find(b, b"\r\n")).await.expect("a chunk size");
            let size = usize::from_str_radix(String::from_utf8_lossy(&buf[..line]).trim(), 16).unwrap();
            buf.drain(..line + 2);
            read_until(stream, buf, |b| (b.len() >= size + 2).then_some(size + 2)).await.expect("a chunk");
            assert_eq!(&buf[size..size + 2], b"\r\n", "a chunk ends with CRLF");
            body.extend(buf.drain(..size + 2).take(size));
            if size == 0 {
                break;
            }
        }
    } else {
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|n| n.trim().parse::<usize>().unwrap())
            .expect("a length or chunks");
        read_until(stream, buf, |b| (b.len() >= length).then_some(length)).await.expect("the body");
        body.extend(buf.drain(..length));
    }
    (head, String::from_utf8(body).unwrap())
}

async fn raw_router(replica: SocketAddr) -> (Router, tokio::net::TcpStream) {
    let router = Router::start(None).await;
    let t = table(1, &[("stable", "v1", 10_000, &[replica])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
    let stream = tokio::net::TcpStream::connect(router.proxy).await.unwrap();
    (router, stream)
}

fn answer_for(path: &str) -> Vec<u8> {
    match path {
        "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
        "/until-close" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it\0".to_vec(),
        "/interim" => b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        "/hop" => b"HTTP/1.1 200 OK\r\nconnection: close, x-private\r\nx-private: 1\r\nkeep-alive: timeout=5\r\nx-ringfence-version: forged\r\ncontent-length: 3\r\n\r\nhop\0".to_vec(),
        "/empty" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        other => format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{other}", other.len()).into_bytes(),
    }
}

#[tokio::test]
async fn answers_are_framed_again_for_the_user_on_one_kept_connection() {
    use tokio::io::AsyncWriteExt as _;
    let (replica, seen) = raw_replica(answer_for).await;
    let (router, mut user) = raw_router(replica).await;
    let mut buf = Vec::new();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: shop\r\nx-user-id: u1\r\n\r\n");

    // Chunks come back as chunks of the router's own: no extension, no trailer, no length.
    user.write_all(get("/chunked").as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut user, &mut buf, false).await;
    assert_eq!(body, "hello, world");
    assert!(head.contains("transfer-encoding: chunked") && !head.contains("content-length"), "{head}");
    assert!(!head.contains("x-trailer"), "{head}");

    // A body that ends with the replica's connection reaches the user in chunks, and the
    // user's connection stays.
    user.write_all(get("/until-close").as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut user, &mut buf, false).await;
    assert_eq!(body, "all of it");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");

    // An interim answer is not the user's answer.
    user.write_all(get("/interim").as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut user, &mut buf, false).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok");

    // Hop-by-hop fields (named in Connection too) stay with the replica's hop; the group and
    // version are the router's to say.
    user.write_all(get("/hop").as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut user, &mut buf, false).await;
    assert_eq!(body, "hop");
    for hop in ["connection:", "x-private", "keep-alive", "forged"] {
        assert!(!head.contains(hop), "{hop} in {head}");
    }
    assert!(head.contains("x-ringfence-version: v1") && head.contains("x-ringfence-group: stable"), "{head}");

    // No body: a 204, and an answer to HEAD (its length says the GET's).
    user.write_all(get("/empty").as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut user, &mut buf, true).await;
    assert!(head.starts_with("http/1.1 204"), "{head}");
    user.write_all(b"HEAD /headed HTTP/1.1\r\nhost: shop\r\nx-user-id: u1\r\n\r\n").await.unwrap();
    let (head, _) = read_answer(&mut user, &mut buf, true).await;
    assert!(head.contains("content-length: 7"), "{head}");

    // Two requests in one write are answered in order.
    user.write_all(format!("{}{}", get("/one"), get("/two")).as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut user, &mut buf, false).await.1, "/one");
    assert_eq!(read_answer(&mut user, &mut buf, false).await.1, "/two");
    assert!(buf.is_empty());

    // All on the one connection the user opened; the replica saw each request once.
    assert_eq!(seen.lock().unwrap().len(), 8);
    router.stop().await;
}

#[tokio::test]
async fn the_replica_gets_requests_framed_without_doubt() {
    use tokio::io::AsyncWriteExt as _;
    let (replica, seen) = raw_replica(answer_for).await;
    let (router, mut user) = raw_router(replica).await;
    let mut buf = Vec::new();

    // A body by length, in two writes.
    user.write_all(b"POST /len HTTP/1.1\r\nhost: shop\r\nx-user-id: u1\r\ncontent-length: 11\r\n\r\nhello")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    user.write_all(b" world").await.unwrap();
    assert_eq!(read_answer(&mut user, &mut buf, false).await.1, "/len");
    // A chunked body (hyper serves this connection from here on).
    user.write_all(b"POST /chunks HTTP/1.1\r\nhost: shop\r\nx-user-id: u1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut user, &mut buf, false).await.1, "/chunks");
    // And a plain request after the hand-over, on the same connection.
    user.write_all(b"GET /after HTTP/1.1\r\nhost: shop\r\nx-user-id: u1\r\n\r\n").await.unwrap();
    assert_eq!(read_answer(&mut user, &mut buf, false).await.1, "/after");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(
            seen[0].starts_with("POST /len HTTP/1.1\r\n") && seen[0].ends_with("\r\n\r\nhello world"),
            "{}",
            seen[0]
        );
        assert!(seen[0].to_ascii_lowercase().contains("x-forwarded-for: 127.0.0.1"), "{}", seen[0]);
        assert!(seen[1].ends_with("abc\r\n0\r\n\r\n"), "{}", seen[1]);
    }

    // Ambiguous framing, the ground of request smuggling: two lengths, a length beside
    // chunks. Whatever the user gets, the replica never sees a request framed two ways, nor a
    // request hidden in another's body.
    for smuggle in [
        &b"POST /two-lengths HTTP/1.1\r\nhost: shop\r\ncontent-length: 3\r\ncontent-length: 30\r\n\r\nabcGET /hidden HTTP/1.1\r\nhost: shop\r\n\r\n"[..],
        &b"POST /both HTTP/1.1\r\nhost: shop\r\ncontent-length: 40\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /hidden HTTP/1.1\r\nhost: shop\r\n\r\n"[..],
        &b"POST /length-sign HTTP/1.1\r\nhost: shop\r\ncontent-length: +3\r\n\r\nabc"[..],
    ] {
        let mut user = tokio::net::TcpStream::connect(router.proxy).await.unwrap();
        user.write_all(smuggle).await.unwrap();
        let mut answer = Vec::new();
        let _ = read_until(&mut user, &mut answer, |_| None).await;
    }
    for request in seen.lock().unwrap().iter() {
        let lower = request.to_ascii_lowercase();
        assert!(!(lower.contains("content-length") && lower.contains("transfer-encoding")), "{request}");
        assert!(lower.matches("content-length").count() <= 1, "{request}");
    }
    router.stop().await;
}

#[tokio::test]
async fn a_users_last_request_is_answered_and_its_connection_closed() {
    use tokio::io::AsyncWriteExt as _;
    let (replica, _) = raw_replica(answer_for).await;
    let (router, mut user) = raw_router(replica).await;
    let mut buf = Vec::new();
    user.write_all(b"GET /last HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n").await.unwrap();
    let (head, body) = read_answer(&mut user, &mut buf, false).await;
    assert_eq!(body, "/last");
    assert!(head.contains("connection: close"), "{head}");
    assert!(head.contains("set-cookie: rf_user="), "a new user gets a cookie: {head}");
    assert_eq!(read_until(&mut user, &mut buf, |_| None).await, None, "the router closes after it");
    router.stop().await;
}

#[tokio::test]
async fn a_head_trickled_in_is_cut_off_at_its_deadline_and_an_idle_connection_after_its_keep_alive() {
    use tokio::io::AsyncWriteExt as _;
    let (replica, seen) = raw_replica(answer_for).await;
    let token = AdminToken::generate().unwrap();
    let secret = token.expose().to_owned();
    let config = RouterConfig {
        workers: 2,
        head_timeout: Duration::from_millis(400),
        keep_alive: Duration::from_millis(800),
        ..RouterConfig::new(AdminAuth::Token(token))
    };
    let router = Router::start_config(config, Some(secret)).await;
    let t = table(1, &[("stable", "v1", 10_000, &[replica])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);

    // A byte every 100 ms: each read comes well within the head's time, the head never does.
    let mut slow = tokio::net::TcpStream::connect(router.proxy).await.unwrap();
    let started = std::time::Instant::now();
    let mut cut = false;
    let head = b"GET /slow HTTP/1.1\r\nhost: shop\r\nx-padding: ".iter().copied();
    for byte in head.chain(std::iter::repeat(b'a')).take(200) {
        if slow.write_all(&[byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cut, "a head trickled in for {:?} was still being read", started.elapsed());
    let mut buf = Vec::new();
    assert_eq!(read_until(&mut slow, &mut buf, |_| None).await, None);

    // A connection that served a request and then sent nothing is closed after its keep-alive.
    let mut idle = tokio::net::TcpStream::connect(router.proxy).await.unwrap();
    idle.write_all(b"GET /once HTTP/1.1\r\nhost: shop\r\n\r\n").await.unwrap();
    assert_eq!(read_answer(&mut idle, &mut buf, false).await.1, "/once");
    assert_eq!(read_until(&mut idle, &mut buf, |_| None).await, None, "closed while idle");
    assert_eq!(seen.lock().unwrap().len(), 1, "only the whole request reached the replica");
    router.stop().await;
}

/// The connections a client opens one after another are served by both worker threads, not by
/// whichever the kernel happened to wake: each worker's count in `/metrics` stays within two
/// of the other's, and falls back when the connections end.
#[tokio::test]
async fn a_clients_connections_are_spread_over_the_workers() {
    use tokio::io::AsyncWriteExt as _;
    let (replica, _) = raw_replica(answer_for).await;
    let (router, first) = raw_router(replica).await;
    let counts = || async {
        let (status, metrics) = router.admin_get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        (0..2)
            .map(|w| {
                let line = format!("ringfence_router_worker_connections{{worker=\"{w}\"}} ");
                metrics.lines().find_map(|l| l.strip_prefix(line.as_str())?.parse::<i64>().ok()).unwrap_or(-1)
            })
            .collect::<Vec<i64>>()
    };
    let mut users = vec![first];
    for _ in 0..39 {
        users.push(tokio::net::TcpStream::connect(router.proxy).await.unwrap());
    }
    // Each connection answered once: accepted and placed by then.
    for user in &mut users {
        let mut buf = Vec::new();
        user.write_all(b"GET /x HTTP/1.1\r\nhost: shop\r\n\r\n").await.unwrap();
        let (head, body) = read_answer(user, &mut buf, false).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, "/x");
    }
    let n = counts().await;
    assert_eq!(n.iter().sum::<i64>(), 40, "{n:?}");
    assert!((n[0] - n[1]).abs() <= 2, "connections per worker: {n:?}");
    drop(users);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while counts().await != [0, 0] {
        assert!(std::time::Instant::now() < deadline, "closed connections still counted: {:?}", counts().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    router.stop().await;
}

/// A router with `upstream_timeout` and `max_request_body` over one raw replica, with a
/// client that keeps no connection of its own.
async fn raw_router_with(
    replica: SocketAddr,
    upstream_timeout: Duration,
    max_request_body: u64,
) -> (Router, impl AsyncFn() -> tokio::net::TcpStream) {
    let token = AdminToken::generate().unwrap();
    let secret = token.expose().to_owned();
    let config = RouterConfig { workers: 2, upstream_timeout, ..RouterConfig::new(AdminAuth::Token(token)) };
    let router = Router::start_config(config, Some(secret)).await;
    let t = RouteTable { max_request_body, ..table(1, &[("stable", "v1", 10_000, &[replica])]) };
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
    let proxy = router.proxy;
    (router, async move || tokio::net::TcpStream::connect(proxy).await.unwrap())
}

/// Reads an answer off `user` and checks it is a 200 with `body`.
async fn answered_ok(user: &mut tokio::net::TcpStream, body: &str) {
    let (head, got) = read_answer(user, &mut Vec::new(), false).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(got, body);
}

/// Reads what is left of a connection the router closes (its answer, if it sent one).
async fn rest_of(mut stream: tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await.unwrap();
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

/// Users who go away in the middle of an upload, or stop sending it, through the relay (a
/// length) and through hyper (chunks): none of it counts against the replica or its version,
/// so no one can make a healthy release look failing by cutting uploads short. Its breaker
/// stays closed (five failures would open it) and the next request is served.
#[tokio::test]
async fn a_user_who_cuts_an_upload_short_is_not_the_replicas_failure() {
    use tokio::io::AsyncWriteExt as _;
    let (replica, seen) = raw_replica(answer_for).await;
    let (router, connect) = raw_router_with(replica, Duration::from_millis(500), 1 << 20).await;
    for i in 0..8 {
        let mut user = connect().await;
        let head = if i % 2 == 0 {
            "POST /up HTTP/1.1\r\nhost: shop\r\ncontent-length: 1000\r\n\r\n0123456789"
        } else {
            "POST /up HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n"
        };
        user.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(user);
    }
    // Stalled past the upstream timeout: answered 408, through either path.
    for head in [
        "POST /up HTTP/1.1\r\nhost: shop\r\ncontent-length: 1000\r\n\r\n0123456789",
        "POST /up HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
    ] {
        let mut user = connect().await;
        user.write_all(head.as_bytes()).await.unwrap();
        let rest = rest_of(user).await;
        assert!(rest.starts_with("http/1.1 408"), "{head}: {rest}");
    }
    let stats = router.stats().await;
    assert_eq!(stats.versions.get("v1").map_or(0, |v| v.errors), 0, "{stats:?}");
    assert!(stats.upstreams.iter().all(|u| u.state == BreakerState::Closed && u.trips == 0), "{stats:?}");
    assert!(seen.lock().unwrap().is_empty(), "no whole request reached the replica");
    let mut user = connect().await;
    user.write_all(b"GET /after HTTP/1.1\r\nhost: shop\r\n\r\n").await.unwrap();
    answered_ok(&mut user, "/after").await;
    router.stop().await;
}

/// A body longer than the table's `max_request_body`: refused with 413 before a byte of it is
/// read when its length says so (relay and hyper alike), cut off when its chunks run past it;
/// a body of exactly the limit goes through. None of it is the replica's error.
#[tokio::test]
async fn a_body_over_the_limit_is_refused_and_one_at_the_limit_goes_through() {
    use tokio::io::AsyncWriteExt as _;
    let (replica, seen) = raw_replica(answer_for).await;
    let (router, connect) = raw_router_with(replica, Duration::from_secs(5), 100).await;
    let body = "x".repeat(100);
    for head in [
        "POST /big HTTP/1.1\r\nhost: shop\r\ncontent-length: 101\r\n\r\n".to_string(),
        // Handed to hyper (it asks for 100 Continue first).
        "POST /big HTTP/1.1\r\nhost: shop\r\nexpect: 100-continue\r\ncontent-length: 101\r\n\r\n".to_string(),
        format!(
            "POST /big HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n64\r\n{body}\r\n1\r\nx\r\n0\r\n\r\n"
        ),
    ] {
        let mut user = connect().await;
        user.write_all(head.as_bytes()).await.unwrap();
        let rest = rest_of(user).await;
        assert!(rest.starts_with("http/1.1 413"), "{head}: {rest}");
    }
    assert!(seen.lock().unwrap().is_empty(), "{:?}", seen.lock().unwrap());
    let mut user = connect().await;
    let request = format!("POST /fits HTTP/1.1\r\nhost: shop\r\ncontent-length: 100\r\n\r\n{body}");
    user.write_all(request.as_bytes()).await.unwrap();
    answered_ok(&mut user, "/fits").await;
    assert!(seen.lock().unwrap()[0].ends_with(&body));
    let stats = router.stats().await;
    assert_eq!(stats.versions.get("v1").map_or(0, |v| v.errors), 0, "{stats:?}");
    router.stop().await;
}

/// An upload that takes longer than the upstream timeout but keeps arriving is not cut off:
/// the timeout counts from the body's end for the answer, and per read for the body.
#[tokio::test]
async fn a_slow_upload_that_keeps_arriving_is_answered() {
    use tokio::io::AsyncWriteExt as _;
    let (replica, _) = raw_replica(answer_for).await;
    let (router, connect) = raw_router_with(replica, Duration::from_millis(400), 1 << 20).await;
    let mut user = connect().await;
    user.write_all(b"POST /slow HTTP/1.1\r\nhost: shop\r\ncontent-length: 8\r\n\r\n").await.unwrap();
    for piece in [b"ab", b"cd", b"ef", b"gh"] {
        tokio::time::sleep(Duration::from_millis(250)).await;
        user.write_all(piece).await.unwrap();
    }
    answered_ok(&mut user, "/slow").await;
    router.stop().await;
}

/// A request whose body streamed in chunks cannot be sent again once a replica took it (the
/// body is gone): when that replica hangs up, its user gets the 502, and the other replica
/// never gets the request without its body.
#[tokio::test]
async fn a_chunked_request_is_never_sent_again_without_its_body() {
    use tokio::io::AsyncWriteExt as _;
    let (good, seen) = raw_replica(answer_for).await;
    let hangup = hangs_up().await;
    let router = Router::start(None).await;
    let t = table(1, &[("stable", "v1", 10_000, &[hangup, good])]);
    assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let mut user = tokio::net::TcpStream::connect(router.proxy).await.unwrap();
        let put = "PUT /doc HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        user.write_all(put.as_bytes()).await.unwrap();
        let (head, _) = read_answer(&mut user, &mut Vec::new(), false).await;
        statuses.push(head[9..12].to_string());
    }
    statuses.sort();
    assert_eq!(statuses, ["200", "200", "502", "502"], "round robin sends half to each replica");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|r| r.contains("hello")), "a request reached the replica without its body: {seen:?}");
}

/// A replica that answers an upload before reading its body (413, as a server with a smaller
/// limit does) and closes the connection: the user gets that answer, not a 502, and it is not
/// the replica's failure (its breaker stays closed through more uploads than it takes to trip
/// it, its version counts no error).
#[tokio::test]
async fn a_replica_that_answers_before_the_whole_upload_is_relayed_not_blamed() {
    use tokio::io::AsyncWriteExt as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replica = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if read_until(&mut stream, &mut buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4)).await.is_none() {
                    return;
                }
                let answer =
                    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large";
                let _ = stream.write_all(answer).await;
                // Closed with the body unread: the kernel resets the connection.
            });
        }
    });
    let (router, connect) = raw_router_with(replica, Duration::from_secs(5), 64 << 20).await;
    for _ in 0..7 {
        let mut user = connect().await;
        let size = 16 << 20;
        user.write_all(format!("POST /up HTTP/1.1\r\nhost: shop\r\ncontent-length: {size}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (mut read, mut write) = user.into_split();
        let upload = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..size / chunk.len() {
                if write.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut read, &mut out))
                .await
                .expect("the router answers and closes");
        let answer = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 413"), "{answer}");
        assert!(answer.contains("connection: close") && answer.ends_with("too large"), "{answer}");
        upload.abort();
    }
    let stats = router.stats().await;
    assert_eq!(stats.versions.get("v1").map_or(0, |v| v.errors), 0, "{stats:?}");
    assert!(stats.upstreams.iter().all(|u| u.state == BreakerState::Closed && u.trips == 0), "{stats:?}");
    router.stop().await;
}

/// An upload whose replica refuses the connection never left the router, its body still with
/// the user: it goes to another replica of the same group, body and all.
#[tokio::test]
async fn an_upload_that_could_not_be_connected_goes_to_another_replica_whole() {
    use tokio::io::AsyncWriteExt as _;
    let (replica, seen) = raw_replica(answer_for).await;
    let (router, connect) = raw_router_with(replica, Duration::from_secs(5), 1 << 20).await;
    for generation in 2..6u64 {
        // A replica that refuses, new each time, beside the one that answers.
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let t = RouteTable {
            max_request_body: 1 << 20,
            ..table(generation, &[("stable", "v1", 10_000, &[dead, replica])])
        };
        assert_eq!(router.put_table(&to_json(&t)).await.0, StatusCode::OK);
        for i in 0..2 {
            let mut user = connect().await;
            let body = format!("upload {generation}-{i}");
            let head = format!("POST /pay HTTP/1.1\r\nhost: shop\r\ncontent-length: {}\r\n\r\n", body.len());
            user.write_all(head.as_bytes()).await.unwrap();
            // The body after the head, so that it is still with the user when the first
            // replica refuses.
            tokio::time::sleep(Duration::from_millis(20)).await;
            user.write_all(body.as_bytes()).await.unwrap();
            answered_ok(&mut user, "/pay").await;
            let last = seen.lock().unwrap().last().cloned().unwrap_or_default();
            assert!(last.ends_with(&body), "the replica got the whole body: {last:?}");
        }
    }
    let stats = router.stats().await;
    assert_eq!(stats.versions["v1"].errors, 0, "{stats:?}");
    let metrics = router.admin_get("/metrics").await.1;
    let retries = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"ringfence_router_retries_total{version="v1",group="stable"} "#))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(retries.is_some_and(|n| n >= 1), "uploads were sent again: {metrics}");
    router.stop().await;
}
