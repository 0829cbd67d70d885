//! An open-loop HTTP load generator for the demo, the integration tests and the benchmarks.
//!
//! Open loop means requests leave on a fixed schedule whether or not earlier ones have returned,
//! the way independent users behave. A closed loop (wait for the answer, then send the next) would
//! slow down exactly when the system under test does, hiding the latency and error spikes that
//! the controller is supposed to detect, and skewing time-to-mitigate measurements.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Uri;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Response header naming the version that answered, set by the router.
pub const VERSION_HEADER: &str = "x-ringfence-version";

/// Response header naming the rollout group the user was routed to, set by the router.
pub const GROUP_HEADER: &str = "x-ringfence-group";

/// Key in [`LoadSummary::by_version`] for answers without a version header, transport errors
/// included.
pub const NO_VERSION: &str = "(none)";

/// Smallest accepted request rate: one request every 1000 s.
pub const MIN_RPS: f64 = 0.001;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where to send requests, usually the router.
    pub target: SocketAddr,
    /// Request path, e.g. "/"; a missing leading '/' is added.
    pub path: String,
    /// Requests per second, sent on schedule whether or not earlier ones returned.
    pub rps: f64,
    /// Distinct user keys "user-0".."user-{n-1}", one chosen uniformly at random per request.
    /// 0 sends no user header at all (anonymous traffic); samples then report user 0.
    pub users: u32,
    /// Header carrying the user key, e.g. "x-user-id".
    pub user_header: String,
    /// None runs until shutdown.
    pub duration: Option<Duration>,
    /// Per request, connect included; a request that exceeds it is a transport error.
    pub timeout: Duration,
}

impl LoadConfig {
    /// Steady traffic to `/` from `users` sticky users (`x-user-id`), until shutdown, with a
    /// 5 s budget per request: what the demo, the benchmarks and the tests send.
    pub fn steady(target: SocketAddr, rps: f64, users: u32) -> LoadConfig {
        LoadConfig {
            target,
            path: "/".into(),
            rps,
            users,
            user_header: "x-user-id".into(),
            duration: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// Checks what [`run`] would otherwise refuse at start, naming the field and the value.
    pub fn validate(&self) -> Result<(), String> {
        // The lower bound keeps the period between requests representable; below it a "load"
        // test would send nothing for hours anyway.
        if !(self.rps.is_finite() && self.rps >= MIN_RPS) {
            return Err(format!("rps must be a number of at least {MIN_RPS}, got {}", self.rps));
        }
        if self.timeout.is_zero() {
            return Err("timeout must be greater than zero".into());
        }
        self.prepare().map(drop)
    }

    /// The parts of the request that are the same for every request.
    fn prepare(&self) -> Result<(Uri, HeaderName), String> {
        let user_header = HeaderName::try_from(self.user_header.as_str())
            .map_err(|_| format!("user_header {:?} is not a valid HTTP header name", self.user_header))?;
        Ok((self.uri()?, user_header))
    }

    fn uri(&self) -> Result<Uri, String> {
        let separator = if self.path.starts_with('/') { "" } else { "/" };
        let text = format!("http://{}{separator}{}", self.target, self.path);
        text.parse().map_err(|e| format!("path {:?} does not make a valid URL ({text}): {e}", self.path))
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request left, within about a millisecond of its slot in the schedule.
    pub sent_at: Instant,
    /// When the response body was fully read, or the request failed or timed out.
    pub done_at: Instant,
    pub user: u32,
    /// None = transport error or timeout.
    pub status: Option<u16>,
    /// From the `x-ringfence-version` response header (the router's), else `x-sample-version`
    /// (the sample app's).
    pub version: Option<String>,
    /// From the `x-ringfence-group` response header.
    pub group: Option<String>,
}

impl Sample {
    /// A 5xx answer or no answer at all.
    pub fn is_error(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }
}

/// Totals over a run. `ok + errors` counts finished requests; it falls short of `sent` only by
/// the requests still in flight when `shutdown` was cancelled, which are abandoned.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadSummary {
    pub sent: u64,
    /// Answers below 500 (4xx included: the request was served, just refused).
    pub ok: u64,
    /// 5xx or transport error/timeout.
    pub errors: u64,
    /// Version -> (requests, errors); answers without a version header are under [`NO_VERSION`].
    pub by_version: BTreeMap<String, (u64, u64)>,
}

impl LoadSummary {
    fn record(&mut self, sample: &Sample) {
        let error = sample.is_error();
        if error {
            self.errors += 1;
        } else {
            self.ok += 1;
        }
        let key = sample.version.as_deref().unwrap_or(NO_VERSION);
        // Avoids allocating a key per request once the version has been seen.
        let entry = match self.by_version.get_mut(key) {
            Some(entry) => entry,
            None => self.by_version.entry(key.to_owned()).or_default(),
        };
        entry.0 += 1;
        entry.1 += u64::from(error);
    }
}

/// Everything a request task needs, shared by all of them.
struct Shared {
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: Uri,
    user_header: HeaderName,
    users: u32,
    timeout: Duration,
}

/// Sends requests on schedule until `duration` has passed or `shutdown` is cancelled, sends every
/// finished request on `samples`, and returns the totals.
///
/// When the duration ends, requests still in flight are awaited (each is bounded by `timeout`)
/// so the totals are complete; when `shutdown` is cancelled they are abandoned so the caller is
/// not kept waiting. An invalid config (see [`LoadConfig::validate`]) is logged and sends nothing.
pub async fn run(
    cfg: LoadConfig,
    samples: Option<UnboundedSender<Sample>>,
    shutdown: CancellationToken,
) -> LoadSummary {
    let mut summary = LoadSummary::default();
    let (uri, user_header) = match cfg.validate().and_then(|()| cfg.prepare()) {
        Ok(parts) => parts,
        Err(err) => {
            tracing::error!("loadgen: invalid configuration: {err}");
            return summary;
        }
    };
    let shared = std::sync::Arc::new(Shared {
        client: build_client(cfg.timeout),
        uri,
        user_header,
        users: cfg.users,
        timeout: cfg.timeout,
    });
    // Cap the period away from zero so absurd rates degrade to "as fast as possible" instead of
    // dividing by nothing.
    let period = Duration::from_secs_f64((1.0 / cfg.rps).max(1e-6));
    tracing::info!(
        "loadgen: {} req/s to {}{} for {}",
        cfg.rps,
        cfg.target,
        shared.uri.path(),
        cfg.duration.map_or_else(|| "until stopped".to_owned(), |d| format!("{d:?}"))
    );

    let start = tokio::time::Instant::now();
    // A duration too large to add is as good as "until shutdown".
    let end = cfg.duration.and_then(|d| start.checked_add(d));
    let mut in_flight: JoinSet<Sample> = JoinSet::new();
    let mut next_due = start;
    let mut stopped = false;

    loop {
        if end.is_some_and(|end| next_due >= end) {
            break;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                stopped = true;
                break;
            }
            Some(done) = in_flight.join_next() => {
                deliver(done, &mut summary, samples.as_ref());
            }
            () = tokio::time::sleep_until(next_due) => {
                // The schedule is computed from the start time, and every request already due is
                // sent in one wake-up: timer granularity (1 ms) or a busy runtime then delays
                // requests slightly but never lowers the achieved rate, and high rates cost one
                // wake-up per millisecond rather than one per request.
                let now = tokio::time::Instant::now();
                while next_due <= now && end.is_none_or(|end| next_due < end) {
                    let shared = shared.clone();
                    in_flight.spawn(async move { send_one(&shared).await });
                    summary.sent += 1;
                    next_due = start + period.mul_f64(summary.sent as f64);
                }
            }
        }
    }

    if stopped {
        in_flight.abort_all();
    } else {
        while let Some(done) = in_flight.join_next().await {
            deliver(done, &mut summary, samples.as_ref());
        }
    }
    tracing::info!("loadgen: sent {}, ok {}, errors {}", summary.sent, summary.ok, summary.errors);
    summary
}

fn build_client(timeout: Duration) -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    // Small requests must not wait on Nagle's algorithm: it would add latency the router and the
    // benchmarks would wrongly be charged for.
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

fn deliver(
    done: Result<Sample, tokio::task::JoinError>,
    summary: &mut LoadSummary,
    samples: Option<&UnboundedSender<Sample>>,
) {
    match done {
        Ok(sample) => {
            summary.record(&sample);
            if let Some(samples) = samples {
                // A reader that went away is not a reason to stop generating load.
                let _ = samples.send(sample);
            }
        }
        Err(err) => tracing::warn!("loadgen: request task failed: {err}"),
    }
}

async fn send_one(shared: &Shared) -> Sample {
    let sent_at = Instant::now();
    let user = if shared.users == 0 { 0 } else { rand::random_range(0..shared.users) };
    let mut request = hyper::Request::get(shared.uri.clone());
    if shared.users > 0 {
        request = request.header(shared.user_header.clone(), format!("user-{user}"));
    }
    let mut sample = Sample { sent_at, done_at: sent_at, user, status: None, version: None, group: None };
    let request = match request.body(Empty::new()) {
        Ok(request) => request,
        Err(err) => {
            tracing::debug!("loadgen: cannot build request: {err}");
            return sample;
        }
    };
    let exchange = async {
        let response = shared.client.request(request).await?;
        let (parts, body) = response.into_parts();
        // The body is read to the end so the connection goes back to the pool instead of being
        // torn down; a fresh connection per request would cost far more CPU at 200+ req/s.
        body.collect().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(parts)
    };
    match tokio::time::timeout(shared.timeout, exchange).await {
        Ok(Ok(parts)) => {
            sample.status = Some(parts.status.as_u16());
            // Behind another proxy (HAProxy) only the app says which version answered.
            sample.version = header_string(&parts.headers, VERSION_HEADER)
                .or_else(|| header_string(&parts.headers, crate::sample_app::VERSION_HEADER));
            sample.group = header_string(&parts.headers, GROUP_HEADER);
        }
        Ok(Err(err)) => tracing::trace!("loadgen: request failed: {err}"),
        Err(_) => tracing::trace!("loadgen: request timed out after {:?}", shared.timeout),
    }
    sample.done_at = Instant::now();
    sample
}

fn header_string(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample_app::{self, SampleAppArgs};
    use std::collections::BTreeSet;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    fn config(target: SocketAddr, rps: f64, duration: Duration) -> LoadConfig {
        LoadConfig {
            target,
            path: "/".into(),
            rps,
            users: 10,
            user_header: "x-user-id".into(),
            duration: Some(duration),
            timeout: Duration::from_secs(2),
        }
    }

    fn app_args(version: &str, error_rate: f64) -> SampleAppArgs {
        SampleAppArgs { error_rate, ..SampleAppArgs::on_any_port(version) }
    }

    async fn start_sample_app(args: SampleAppArgs) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(sample_app::serve(args, listener, shutdown.clone()));
        (addr, shutdown)
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Sample>) -> Vec<Sample> {
        let mut out = Vec::new();
        while let Ok(sample) = rx.try_recv() {
            out.push(sample);
        }
        out
    }

    #[tokio::test]
    async fn achieves_roughly_the_requested_rate() {
        let (addr, stop_app) = start_sample_app(app_args("v1", 0.0)).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        let summary = run(config(addr, 100.0, Duration::from_secs(1)), Some(tx), CancellationToken::new()).await;
        let samples = drain(&mut rx);
        assert!((50..=150).contains(&samples.len()), "{} samples", samples.len());
        assert_eq!(summary.sent, samples.len() as u64);
        assert_eq!(summary.ok, summary.sent);
        assert_eq!(summary.errors, 0);
        assert!(samples.iter().all(|s| s.status == Some(200)));
        assert!(samples.iter().all(|s| s.done_at >= s.sent_at));
        assert!(samples.iter().all(|s| s.user < 10));
        // Uniform over 10 users: 100 draws all landing on a few users would mean a broken draw.
        let users: BTreeSet<u32> = samples.iter().map(|s| s.user).collect();
        assert!(users.len() >= 5, "{users:?}");
        // Straight at the sample app there is no router: the app's own header names the version.
        assert_eq!(summary.by_version.get("v1"), Some(&(summary.sent, 0)));
        assert!(started.elapsed() < Duration::from_secs(5));
        stop_app.cancel();
    }

    #[tokio::test]
    async fn counts_server_errors() {
        let (addr, stop_app) = start_sample_app(app_args("bad", 1.0)).await;
        let summary = run(config(addr, 50.0, Duration::from_millis(400)), None, CancellationToken::new()).await;
        assert!(summary.sent > 0);
        assert_eq!(summary.errors, summary.sent);
        assert_eq!(summary.ok, 0);
        stop_app.cancel();
    }

    /// The real router, in this process, splitting users half and half between v1 (healthy)
    /// and v2 (every answer a 500). Returns its address, its admin address and its stop.
    async fn start_router() -> (SocketAddr, SocketAddr, Vec<CancellationToken>) {
        let (v1, stop_v1) = start_sample_app(app_args("v1", 0.0)).await;
        let (v2, stop_v2) = start_sample_app(app_args("v2", 1.0)).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        let stop = CancellationToken::new();
        let config = ringfence_router::RouterConfig::new(ringfence_router::AdminAuth::Insecure);
        tokio::spawn(ringfence_router::run(config, listener, admin, stop.clone()));
        let group = |name: &str, version: &str, upstream| ringfence_router::Group {
            name: name.into(),
            version: version.into(),
            weight_bp: 5_000,
            upstreams: vec![upstream],
            flags: None,
            segment: None,
            shadow_bp: 0,
            fault: None,
        };
        let table = ringfence_router::RouteTable {
            generation: 1,
            workload: "loadgen-test".into(),
            groups: vec![group("canary", "v2", v2), group("stable", "v1", v1)],
            // A breaker that never opens: v2's users stay on v2, failing, as this test needs.
            breaker: ringfence_router::BreakerConfig {
                consecutive_failures: u32::MAX,
                min_success_rate: 0.0,
                ..Default::default()
            },
            ..serde_json::from_str(r#"{"workload": ""}"#).unwrap()
        };
        let r = crate::http::HttpClient::new()
            .request(
                hyper::Method::PUT,
                &format!("http://{admin_addr}/v1/table"),
                &[],
                Some(bytes::Bytes::from(serde_json::to_vec(&table).unwrap())),
                Duration::from_secs(5),
            )
            .await
            .expect("the router's admin API answers");
        assert!(r.status.is_success(), "the router refused the table: {}", r.status);
        (addr, admin_addr, vec![stop, stop_v1, stop_v2])
    }

    #[tokio::test]
    async fn records_status_version_and_group_headers() {
        let (addr, admin, stops) = start_router().await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cfg = LoadConfig { users: 20, ..config(addr, 100.0, Duration::from_millis(600)) };
        let summary = run(cfg, Some(tx), CancellationToken::new()).await;
        let samples = drain(&mut rx);
        assert!(!samples.is_empty());
        // Where the router itself says each user goes.
        let http = crate::http::HttpClient::new();
        let mut assigned = std::collections::BTreeMap::new();
        for user in samples.iter().map(|s| s.user).collect::<std::collections::BTreeSet<_>>() {
            let url = format!("http://{admin}/v1/assign?user=user-{user}");
            let r = http.get(&url, Duration::from_secs(5)).await.expect("assign answers");
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assigned.insert(user, (v["version"].as_str().unwrap().to_owned(), v["group"].as_str().unwrap().to_owned()));
        }
        for sample in &samples {
            let (version, group) = &assigned[&sample.user];
            assert_eq!(sample.version.as_deref(), Some(version.as_str()), "{sample:?}");
            assert_eq!(sample.group.as_deref(), Some(group.as_str()), "{sample:?}");
            assert_eq!(sample.status, Some(if version == "v2" { 500 } else { 200 }), "{sample:?}");
        }
        let canary = samples.iter().filter(|s| assigned[&s.user].0 == "v2").count() as u64;
        let stable = samples.len() as u64 - canary;
        assert!(canary > 0 && stable > 0, "20 users all in one half: {assigned:?}");
        assert_eq!(summary.by_version.get("v2").copied().unwrap_or_default(), (canary, canary));
        assert_eq!(summary.by_version.get("v1").copied().unwrap_or_default(), (stable, 0));
        assert_eq!(summary.errors, canary);
        assert_eq!(summary.ok, stable);
        stops.iter().for_each(CancellationToken::cancel);
    }

    #[tokio::test]
    async fn counts_transport_errors_when_the_target_is_closed() {
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let summary = run(config(closed, 50.0, Duration::from_millis(400)), Some(tx), CancellationToken::new()).await;
        let samples = drain(&mut rx);
        assert!(summary.sent > 0);
        assert_eq!(summary.errors, summary.sent);
        assert_eq!(summary.ok, 0);
        assert_eq!(summary.by_version.get(NO_VERSION), Some(&(summary.sent, summary.sent)));
        assert!(samples.iter().all(|s| s.status.is_none() && s.version.is_none()));
    }

    #[tokio::test]
    async fn stops_promptly_on_shutdown_even_with_slow_answers() {
        let (addr, stop_app) = start_sample_app(SampleAppArgs { latency_ms: 10_000, ..app_args("slow", 0.0) }).await;
        let shutdown = CancellationToken::new();
        let cfg = LoadConfig { duration: None, timeout: Duration::from_secs(30), ..config(addr, 50.0, Duration::ZERO) };
        let generator = tokio::spawn(run(cfg, None, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        shutdown.cancel();
        let summary = tokio::time::timeout(Duration::from_secs(2), generator)
            .await
            .expect("loadgen did not stop on shutdown")
            .unwrap();
        assert!(summary.sent > 0);
        // Every request was still waiting on the slow server.
        assert_eq!(summary.ok + summary.errors, 0);
        stop_app.cancel();
    }

    #[tokio::test]
    async fn a_timeout_is_a_transport_error() {
        let (addr, stop_app) = start_sample_app(SampleAppArgs { latency_ms: 5_000, ..app_args("slow", 0.0) }).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cfg = LoadConfig { timeout: Duration::from_millis(100), ..config(addr, 20.0, Duration::from_millis(200)) };
        let started = Instant::now();
        let summary = run(cfg, Some(tx), CancellationToken::new()).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(summary.sent > 0);
        assert_eq!(summary.errors, summary.sent);
        assert!(drain(&mut rx).iter().all(|s| s.status.is_none()));
        stop_app.cancel();
    }

    #[test]
    fn invalid_configs_are_rejected_with_the_field_named() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let base = config(addr, 10.0, Duration::from_secs(1));
        assert_eq!(base.validate(), Ok(()));
        for rps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = LoadConfig { rps, ..base.clone() }.validate().unwrap_err();
            assert!(err.contains("rps"), "{err}");
        }
        let err = LoadConfig { user_header: "no spaces".into(), ..base.clone() }.validate().unwrap_err();
        assert!(err.contains("user_header"), "{err}");
        let err = LoadConfig { path: "/a b".into(), ..base.clone() }.validate().unwrap_err();
        assert!(err.contains("path"), "{err}");
        assert_eq!(LoadConfig { path: "health".into(), ..base.clone() }.uri().unwrap().path(), "/health");
    }

    #[tokio::test]
    async fn an_invalid_config_sends_nothing_and_does_not_panic() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let summary =
            run(LoadConfig { rps: 0.0, ..config(addr, 10.0, Duration::from_secs(1)) }, None, CancellationToken::new())
                .await;
        assert_eq!(summary.sent, 0);
    }
}
