//! Controller scale: many workloads, each with a rollout in progress at once, on one server
//! with its embedded SQLite log, then the server SIGKILLed and started again in the middle.
//!
//! Every workload is real to the controller: a spec applied over the API, releases, a
//! deploy, its instances from the command executor (a deploy hook naming one shared
//! `ringfence sample-app` as the endpoint, so the machine runs the controller's work and not
//! thousands of copies of an app), its traffic through one shared router of the tier
//! (`ringfence router --control-plane`), which reports each workload's counters back, and
//! its phases judged on them. Users' requests are spread over the workloads by `Host`. The
//! one app answers every workload's probes too, so they come every 30 s with 3 s to answer:
//! the app stands in for thousands of replicas on a machine the controller saturates.
//!
//! Measured, and the bars of design.md section 5:
//! - **lag**: for every phase passed, how late it passed after its bake ended (the passing
//!   time minus the bake's start and length); p99 under 1 s. A phase the core held past its
//!   bake because a version had served too few requests in its window (`phase_held` with
//!   only the traffic-wanting signals unknown) waited for users, not for the controller: it
//!   is counted apart, and the report says how many there were. A hold for any other reason
//!   (the router's counters unreadable, say) counts as lateness;
//! - **memory**: the server's peak resident memory; under 1 GiB;
//! - **restart**: the server SIGKILLed while phases fall due, started again on the same data:
//!   the time until it answers, and until every step that fell due while it was away was
//!   taken; under 5 s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use hyper::Method;
use ringfence::client::ApiClient;
use ringfence::http::HttpClient;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::server::Server;
use crate::{Output, procs, stats, workload};

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Workloads, each with a rollout in progress at once.
    #[arg(long, default_value_t = 1000)]
    pub workloads: u32,
    /// Each of the two phases' bake, in seconds.
    #[arg(long, default_value_t = 30)]
    pub bake_secs: u64,
    /// Users' requests per second through the shared router, spread over the workloads.
    #[arg(long, default_value_t = 400.0)]
    pub rps: f64,
    /// API calls in flight while setting up and reading back.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Skip the SIGKILL and restart of the server.
    #[arg(long)]
    pub no_restart: bool,
    /// Keep the data directory (the event log, the router's log) and print where it is.
    #[arg(long)]
    pub keep_data: bool,
    /// The event log: SQLite in the data directory, or a PostgreSQL cluster the bench starts
    /// (durable: fsync on), whose CPU is measured beside the server's.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub store: Store,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    Sqlite,
    Postgres,
}

impl ScaleArgs {
    pub fn validate(&self) -> Result<()> {
        if !(1..=20_000).contains(&self.workloads) {
            bail!("--workloads: expected 1 to 20000, found {}", self.workloads);
        }
        if !(5..=600).contains(&self.bake_secs) {
            bail!("--bake-secs: expected 5 to 600, found {}", self.bake_secs);
        }
        if !(1.0..=5_000.0).contains(&self.rps) {
            bail!("--rps: expected 1 to 5000, found {}", self.rps);
        }
        if !(1..=256).contains(&self.concurrency) {
            bail!("--concurrency: expected 1 to 256, found {}", self.concurrency);
        }
        Ok(())
    }
}

/// The lag bar: a step due is taken within this.
const LAG_BAR_MS: f64 = 1000.0;
const MEMORY_BAR_MIB: f64 = 1024.0;
const RESTART_BAR_S: f64 = 5.0;
/// Steps due up to this long after the new server started count as the restart's.
const RESUMING_MS: i64 = 2000;

pub struct Report {
    workloads: u32,
    bake_secs: u64,
    rps: f64,
    setup_s: f64,
    deploy_s: f64,
    /// Lateness of every phase passed, in ms.
    lags_ms: Vec<f64>,
    /// Phases passed late because they fell due while the server was down (not in `lags_ms`).
    outage_steps: usize,
    /// Phases held past their bake for want of requests (in neither of the above).
    evidence_held: usize,
    peak_rss_mib: f64,
    /// The server's CPU while the rollouts baked, in cores.
    cpu_cores: f64,
    /// The controller's ticks per second over the same time (`ringfence_controller_ticks`).
    ticks_per_s: Option<f64>,
    store: Store,
    /// PostgreSQL's CPU (every process of the cluster) over the same time, in cores.
    pg_cpu_cores: Option<f64>,
    /// Transactions PostgreSQL committed per second over the same time (`pg_stat_database`).
    pg_commits_per_s: Option<f64>,
    restart: Option<Restart>,
    statuses: BTreeMap<String, usize>,
    requests: (u64, u64),
}

struct Restart {
    /// From the SIGKILL until the new server answered an API call (its state rebuilt).
    listening_s: f64,
    /// From the new server's start until the last step that fell due while it was away was taken.
    resumed_s: f64,
    steps_due: usize,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn spec(name: &str, upstream: std::net::SocketAddr, bake_secs: u64) -> String {
    format!(
        r#"[workload]
name = "{name}"

[executor]
kind = "command"
replicas = 1

[executor.hooks]
deploy = ["/bin/echo", "endpoint={upstream}"]
stop = ["/bin/true"]

[router]
kind = "tier"
host = "{name}.scale.test"

[health]
min_requests = 1
min_usage_ratio = 0

[health.analysis]
power = 0

[health.probe]
interval = "30s"
timeout = "3s"

[[rollout.phases]]
name = "half"
weight = 50
bake = "{bake_secs}s"

[[rollout.phases]]
name = "all"
weight = 100
bake = "{bake_secs}s"
"#
    )
}

/// A router of the tier, killed when dropped.
struct TierRouter {
    child: Child,
    listen: std::net::SocketAddr,
}

impl Drop for TierRouter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TierRouter {
    fn start(ringfence: &Path, dir: &Path, control_plane: &str, token: &str) -> Result<TierRouter> {
        let token_file = dir.join("router.token");
        ringfence_router_secret(&token_file, token)?;
        let admin_token_file = dir.join("router.admin-token");
        ringfence_router_secret(&admin_token_file, &format!("{:032x}", now_ms()))?;
        let ready = dir.join("router.ready.json");
        let log = std::fs::File::create(dir.join("router.log")).context("the router's log")?;
        let child = Command::new(ringfence)
            .args(["router", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--admin-token-file"])
            .arg(&admin_token_file)
            .arg("--state-file")
            .arg(dir.join("router.tables.json"))
            .arg("--ready-file")
            .arg(&ready)
            .args(["--control-plane", control_plane, "--api-token-file"])
            .arg(&token_file)
            .args(["--name", "edge"])
            .env("RINGFENCE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("the router's log")?)
            .stderr(log)
            .spawn()
            .context("cannot start `ringfence router`")?;
        let mut router = TierRouter { child, listen: ([127, 0, 0, 1], 0).into() };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(v) = std::fs::read_to_string(&ready).map(|t| serde_json::from_str::<Value>(&t)) {
                let v = v.context("the router's ready file")?;
                router.listen = v["listen"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| anyhow!("the router's ready file has no listen address: {v}"))?;
                return Ok(router);
            }
            if Instant::now() > deadline {
                bail!("the router of the tier did not start within 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn ringfence_router_secret(path: &Path, value: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut f, value.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs `f` for every workload, `concurrency` at a time; the first error ends it.
async fn for_each<F, Fut>(names: &[String], concurrency: usize, f: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut set = tokio::task::JoinSet::new();
    for name in names {
        let permit = permits.clone().acquire_owned().await.context("semaphore")?;
        let task = f(name.clone());
        set.spawn(async move {
            let r = task.await;
            drop(permit);
            r
        });
        // Errors surface early rather than after every workload was tried.
        while let Some(done) = set.try_join_next() {
            done.map_err(|e| anyhow!("a setup task panicked: {e}"))??;
        }
    }
    while let Some(done) = set.join_next().await {
        done.map_err(|e| anyhow!("a setup task panicked: {e}"))??;
    }
    Ok(())
}

/// Open-loop users: `rps` requests per second through the router, each to the next workload's
/// host. Counts (sent, answered 2xx).
fn users(
    router: std::net::SocketAddr,
    names: Arc<Vec<String>>,
    rps: f64,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let http = HttpClient::new();
        let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut sent = 0u64;
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rps));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let url = format!("http://{router}/");
        let mut i = 0usize;
        while !stop.is_cancelled() {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => break,
            }
            let host = format!("{}.scale.test", names[i % names.len()]);
            i += 1;
            sent += 1;
            let (http, url, ok) = (http.clone(), url.clone(), ok.clone());
            tokio::spawn(async move {
                let r = http.request(Method::GET, &url, &[("host", &host)], None, Duration::from_secs(5)).await;
                if r.is_ok_and(|r| r.status.is_success()) {
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        (sent, ok.load(std::sync::atomic::Ordering::Relaxed))
    })
}

/// (resident MiB, CPU seconds) of a process, from /proc.
fn proc_usage(pid: u32) -> (f64, f64) {
    (procs::rss_mib(pid), procs::cpu_seconds(pid))
}

/// The server's `ringfence_controller_ticks_total`, if its metrics can be read.
async fn controller_ticks(api: &ringfence::client::ApiClient) -> Option<u64> {
    let text = api.get_text("/v1/metrics").await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("ringfence_controller_ticks_total ")).and_then(|n| n.trim().parse().ok())
}

/// A passed phase: when its bake ended, when it passed (ms), and whether the core held it past
/// its bake for want of requests.
pub(crate) struct Step {
    pub due: i64,
    pub passed: i64,
    /// Held past its bake only for want of users' requests: waiting for evidence, not late.
    pub wanted_requests: bool,
}

/// Whether a hold's verdict waited only for users' requests: every unknown signal is the
/// traffic floor or a comparison without a request on one side, and the router's counters
/// were read (an unreadable router is the control plane's own delay, and counts).
fn wanted_requests(verdict: &Value) -> bool {
    let Some(signals) = verdict["signals"].as_array() else { return false };
    let read = signals.iter().any(|s| s["signal"] == "traffic" && s["observed"].is_number());
    let unknown: Vec<&Value> = signals.iter().filter(|s| s["health"] == "unknown").collect();
    read && !unknown.is_empty()
        && unknown.iter().all(|s| match s["signal"].as_str() {
            Some("traffic") => s["observed"].as_f64() < s["threshold"].as_f64(),
            Some("error_rate" | "latency") => s["sample_size"] == 0,
            _ => false,
        })
}

/// Every phase passed in the workload's rollout of v2.
fn phase_times(events: &[Value], bake_ms: i64) -> (Vec<Step>, Option<String>) {
    let rollouts = rollout_steps(events, &|_| bake_ms);
    rollouts.into_values().find(|r| r.release == "v2").map(|r| (r.steps, r.status)).unwrap_or_default()
}

/// A rollout's phases passed by the controller, from its events.
pub(crate) struct RolloutSteps {
    pub release: String,
    pub steps: Vec<Step>,
    /// How it ended (none while under way).
    pub status: Option<String>,
}

/// Every rollout in a workload's events, by id, with each phase the controller passed: when
/// it fell due (its bake started plus `bake_ms` of the phase's number) and when it passed.
pub(crate) fn rollout_steps(events: &[Value], bake_ms: &dyn Fn(u64) -> i64) -> BTreeMap<String, RolloutSteps> {
    let mut rollouts: BTreeMap<String, RolloutSteps> = BTreeMap::new();
    let mut bake_started: BTreeMap<(String, u64), i64> = BTreeMap::new();
    let mut held: std::collections::BTreeSet<(String, u64)> = std::collections::BTreeSet::new();
    for e in events {
        let kind = e["type"].as_str().unwrap_or_default();
        let Some(id) = e["rollout_id"].as_str() else { continue };
        if kind == "rollout_started" {
            let release = e["release"].as_str().unwrap_or_default().to_string();
            rollouts.insert(id.to_string(), RolloutSteps { release, steps: Vec::new(), status: None });
            continue;
        }
        let Some(r) = rollouts.get_mut(id) else { continue };
        let (at, phase) = (e["at"].as_i64().unwrap_or(0), e["phase"].as_u64().unwrap_or(0));
        let key = (id.to_string(), phase);
        match kind {
            "bake_started" => {
                bake_started.insert(key, at);
            }
            "phase_held" if wanted_requests(&e["verdict"]) => {
                held.insert(key);
            }
            "phase_passed" if e["by_hand"] != true => {
                if let Some(b) = bake_started.get(&key) {
                    r.steps.push(Step { due: b + bake_ms(phase), passed: at, wanted_requests: held.contains(&key) });
                }
            }
            "rollout_completed" => r.status = Some("completed".to_string()),
            "rollout_halted" => r.status = Some("halted".to_string()),
            "rollout_aborted" => r.status = Some("aborted".to_string()),
            _ => {}
        }
    }
    rollouts
}

pub fn run(args: &ScaleArgs, ringfence: &Path) -> Result<Report> {
    let dir = tempfile::Builder::new().prefix("ringfence-bench-scale-").tempdir().context("a temporary directory")?;
    // The guard removes the directory at the end, after everything in it has stopped.
    let (dir_path, _dir_guard) = if args.keep_data {
        let kept = dir.keep();
        eprintln!("bench: keeping the data in {}", kept.display());
        (kept, None)
    } else {
        (dir.path().to_path_buf(), Some(dir))
    };
    let data: PathBuf = dir_path.join("data");
    std::fs::create_dir_all(&data).context("the data directory")?;
    let upstream = procs::Upstream::start(ringfence, "v1")?;
    let listen = procs::free_port()?;
    let pg = match args.store {
        Store::Sqlite => None,
        Store::Postgres => Some(
            crate::pgcluster::PgCluster::start_durable()
                .ok_or_else(|| anyhow!("PostgreSQL is not installed: apt-get install postgresql"))?,
        ),
    };
    let pg_url = pg.as_ref().map(crate::pgcluster::PgCluster::fresh_db);
    let extra: Vec<&str> = pg_url.as_deref().map(|u| vec!["--store", u]).unwrap_or_default();
    let mut server = Server::start_in_at_with(ringfence, &data, listen, &extra)?;
    let mut old_servers = Vec::new();
    let api = server.api()?;
    let names: Vec<String> = (0..args.workloads).map(|i| format!("w{i:05}")).collect();
    let bake_ms = (args.bake_secs * 1000) as i64;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;

    // Set up: every workload with its first version running.
    let t0 = Instant::now();
    let token: Value =
        guarded(&runtime, async { Ok(api.post("/v1/tokens", &json!({"name": "edge", "grants": ["router"]})).await?) })?;
    let token = token["token"].as_str().ok_or_else(|| anyhow!("no router token in {token}"))?.to_string();
    let router = TierRouter::start(ringfence, &dir_path, &server.base, &token)?;
    guarded(
        &runtime,
        for_each(&names, args.concurrency, |name| {
            let (api, spec) = (api.clone(), spec(&name, upstream.addr, args.bake_secs));
            async move {
                workload::apply_spec(&api, &name, &spec).await?;
                for v in ["v1", "v2"] {
                    workload::create_release(&api, &name, v, &json!({}), v).await?;
                }
                workload::deploy(&api, &name, "v1").await?;
                Ok(())
            }
        }),
    )?;
    eprintln!(
        "bench: {} workloads applied in {:.1} s; waiting for v1 everywhere",
        names.len(),
        t0.elapsed().as_secs_f64()
    );
    guarded(&runtime, wait_all(&api, &names, Duration::from_secs(args.bake_secs * 2 + 300)))?;
    let setup_s = t0.elapsed().as_secs_f64();
    eprintln!("bench: set up in {setup_s:.1} s");

    // Users' traffic, then every workload's rollout of v2 at once.
    let stop = tokio_util::sync::CancellationToken::new();
    let names_arc = Arc::new(names.clone());
    // Spawned from within the runtime, where the users' task lives.
    let load = {
        let _entered = runtime.enter();
        users(router.listen, names_arc, args.rps, stop.clone())
    };
    pause(&runtime, Duration::from_secs(3))?;
    let pid = server.pid().ok_or_else(|| anyhow!("the server has no process"))?;
    let (_, cpu_before) = proc_usage(pid);
    let ticks_before = runtime.block_on(controller_ticks(&api));
    let pg_before = pg.as_ref().map(pg_cpu);
    let commits_before = pg.as_ref().zip(pg_url.as_deref()).and_then(|(pg, url)| pg_commits(pg, url));
    let t_deploy = Instant::now();
    guarded(
        &runtime,
        for_each(&names, args.concurrency, |name| {
            let api = api.clone();
            async move { workload::deploy(&api, &name, "v2").await.map(|_| ()) }
        }),
    )?;
    let deploy_s = t_deploy.elapsed().as_secs_f64();
    eprintln!("bench: {} rollouts started in {deploy_s:.1} s", names.len());

    // Sample memory until the first phases fall due; then the restart, while they do.
    let mut peak_rss_mib: f64 = 0.0;
    let first_due = t_deploy + Duration::from_secs(args.bake_secs);
    let kill_at = first_due + Duration::from_secs_f64(deploy_s / 2.0);
    while Instant::now() < kill_at.min(first_due) {
        peak_rss_mib = peak_rss_mib.max(proc_usage(pid).0);
        pause(&runtime, Duration::from_millis(500))?;
    }
    let (_, cpu_after) = proc_usage(pid);
    let cpu_cores = (cpu_after - cpu_before) / t_deploy.elapsed().as_secs_f64();
    let ticks_per_s = ticks_before
        .zip(runtime.block_on(controller_ticks(&api)))
        .map(|(b, a)| a.saturating_sub(b) as f64 / t_deploy.elapsed().as_secs_f64());
    let pg_cpu_cores =
        pg.as_ref().zip(pg_before).map(|(pg, before)| (pg_cpu(pg) - before) / t_deploy.elapsed().as_secs_f64());
    let commits_after = pg.as_ref().zip(pg_url.as_deref()).and_then(|(pg, url)| pg_commits(pg, url));
    let pg_commits_per_s =
        commits_before.zip(commits_after).map(|(b, a)| a.saturating_sub(b) as f64 / t_deploy.elapsed().as_secs_f64());
    let mut restart = None;
    let mut killed_window = None;
    if !args.no_restart {
        while Instant::now() < kill_at {
            peak_rss_mib = peak_rss_mib.max(proc_usage(pid).0);
            pause(&runtime, Duration::from_millis(100))?;
        }
        let killed = Instant::now();
        let killed_ms = now_ms();
        server.kill9();
        old_servers.push(server);
        server = Server::start_in_at_with(ringfence, &data, listen, &extra)?;
        // It listens at once and answers once it has rebuilt its state from the log.
        let api = server.api()?;
        let first = format!("/v1/workloads/{}", names[0]);
        guarded(&runtime, async {
            while api.get::<Value>(&first).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })?;
        let listening_s = killed.elapsed().as_secs_f64();
        let started_ms = now_ms();
        eprintln!("bench: server SIGKILLed and answering again in {listening_s:.2} s");
        killed_window = Some((killed_ms, started_ms));
        restart = Some(Restart { listening_s, resumed_s: 0.0, steps_due: 0 });
    }
    let pid = server.pid().ok_or_else(|| anyhow!("the server has no process"))?;
    let api = server.api()?;
    let deadline = Duration::from_secs(args.bake_secs * 2 + 600);
    let sampler_stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let stop = sampler_stop.clone();
        runtime.spawn(async move {
            let mut peak: f64 = 0.0;
            while !stop.is_cancelled() {
                peak = peak.max(proc_usage(pid).0);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            peak
        })
    };
    guarded(&runtime, wait_all(&api, &names, deadline))?;
    sampler_stop.cancel();
    peak_rss_mib = peak_rss_mib.max(runtime.block_on(sampler).unwrap_or(0.0));
    stop.cancel();
    let requests = runtime.block_on(load).map_err(|e| anyhow!("the users' task panicked: {e}"))?;

    // Read back every workload's events.
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    guarded(
        &runtime,
        for_each(&names, args.concurrency, |name| {
            let (api, results) = (api.clone(), results.clone());
            async move {
                let events = workload::workload_events(&api, &name).await?;
                results.lock().expect("results").push(phase_times(&events, bake_ms));
                Ok(())
            }
        }),
    )?;
    let results = std::mem::take(&mut *results.lock().expect("results"));
    let mut lags_ms = Vec::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut outage_steps = 0;
    let mut evidence_held = 0;
    let mut last_resumed = None::<i64>;
    for (steps, status) in &results {
        *statuses.entry(status.clone().unwrap_or_else(|| "unfinished".into())).or_default() += 1;
        for Step { due, passed, wanted_requests } in steps {
            if *wanted_requests {
                evidence_held += 1;
                continue;
            }
            match killed_window {
                // Due while the server was away or in its first moments (the routers of the
                // tier report once a second, and a new server waits for their first reports)
                // and not taken before the kill: waited out the restart, and measure it.
                Some((killed, started)) if *due < started + RESUMING_MS && *passed >= killed => {
                    outage_steps += 1;
                    last_resumed = Some(last_resumed.map_or(*passed, |l| l.max(*passed)));
                }
                _ => lags_ms.push((passed - due) as f64),
            }
        }
    }
    if let (Some(r), Some((_, started))) = (restart.as_mut(), killed_window) {
        r.steps_due = outage_steps;
        r.resumed_s = last_resumed.map_or(0.0, |l| (l - started) as f64 / 1000.0).max(0.0);
    }
    drop(router);
    let _ = server.stop_and_tell("bench");
    for mut s in old_servers {
        let _ = s.stop_and_tell("bench");
    }
    Ok(Report {
        workloads: args.workloads,
        bake_secs: args.bake_secs,
        rps: args.rps,
        setup_s,
        deploy_s,
        lags_ms,
        outage_steps,
        evidence_held,
        peak_rss_mib,
        cpu_cores,
        ticks_per_s,
        store: args.store,
        pg_cpu_cores,
        pg_commits_per_s,
        restart,
        statuses,
        requests,
    })
}

/// Transactions committed in the server's database so far.
fn pg_commits(pg: &crate::pgcluster::PgCluster, url: &str) -> Option<u64> {
    let db = url.rsplit('/').next()?;
    pg.psql(db, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").parse().ok()
}

/// CPU seconds of every process of the cluster: the postmaster and its children (the
/// backends serving the server's connections, the WAL writer, the checkpointer).
fn pg_cpu(pg: &crate::pgcluster::PgCluster) -> f64 {
    let Some(root) = pg.postmaster_pid() else { return 0.0 };
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            *pid == root
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|s| {
                    s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                        == Some(root)
                })
        })
        .map(|pid| proc_usage(pid).1)
        .sum()
}

/// Sleeps `d`, unless interrupted.
fn pause(runtime: &tokio::runtime::Runtime, d: Duration) -> Result<()> {
    guarded(runtime, async {
        tokio::time::sleep(d).await;
        Ok(())
    })
}

/// Runs `f` on `runtime`; Ctrl-C or SIGTERM ends it with an error, so the guards of the run
/// (server, router, upstream) stop what they started.
fn guarded<T>(runtime: &tokio::runtime::Runtime, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    runtime.block_on(async {
        tokio::select! {
            r = f => r,
            () = crate::interrupted() => Err(anyhow!("interrupted; the server, the router and the upstream were stopped")),
        }
    })
}

/// Waits until none of `names` has a rollout in progress (nor is still waiting for its first
/// release), from the workload list, one request a pass: polling every workload's full status
/// made the bench itself the server's heaviest client, 10,000 answers every few seconds, while
/// the steps it measures fell due.
async fn wait_all(api: &ApiClient, names: &[String], timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    loop {
        let list: Vec<Value> = api.get("/v1/workloads").await.context("listing the workloads")?;
        let ours: Vec<&Value> =
            list.iter().filter(|w| w["name"].as_str().is_some_and(|n| wanted.contains(n))).collect();
        let listed = ours.len();
        let pending: Vec<&str> = ours
            .iter()
            .filter(|w| {
                w["rollout"]["status"].as_str().is_some_and(|st| matches!(st, "progressing" | "paused" | "mitigating"))
                    || w["rollout"].is_null() && w["stable"].is_null()
            })
            .filter_map(|w| w["name"].as_str())
            .collect();
        if pending.is_empty() && listed == wanted.len() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "{} rollouts still in progress after {timeout:?} ({} of {} workloads listed), {} among them",
                pending.len(),
                listed,
                wanted.len(),
                pending.first().copied().unwrap_or("-")
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

impl Report {
    fn lag(&self, q: f64) -> f64 {
        stats::quantile(self.lags_ms.iter().copied(), q).unwrap_or(f64::NAN)
    }

    fn completed(&self) -> usize {
        self.statuses.get("completed").copied().unwrap_or(0)
    }

    fn restart_ok(&self) -> bool {
        self.restart.as_ref().is_none_or(|r| r.listening_s.max(r.resumed_s) < RESTART_BAR_S)
    }
}

impl crate::Report for Report {
    fn passed(&self) -> bool {
        self.completed() == self.workloads as usize
            && self.lag(0.99) < LAG_BAR_MS
            && self.peak_rss_mib < MEMORY_BAR_MIB
            && self.restart_ok()
    }

    fn table(&self) -> String {
        let mut o = String::new();
        let verdict = |ok: bool| if ok { "met    " } else { "NOT MET" };
        let store = match self.store {
            Store::Sqlite => "SQLite",
            Store::Postgres => "PostgreSQL, fsync on",
        };
        let _ = writeln!(o, "ringfence-bench scale: {} rollouts at once on one server ({store})", self.workloads);
        let _ = writeln!(
            o,
            "  setup    {} workloads (command executor, one shared router of the tier), 2 phases of {} s, {} req/s of users over all of them",
            self.workloads, self.bake_secs, self.rps
        );
        let _ = writeln!(
            o,
            "           set up in {:.1} s; {} rollouts started in {:.1} s; users' requests {} sent, {} answered 2xx",
            self.setup_s, self.workloads, self.deploy_s, self.requests.0, self.requests.1
        );
        let st: Vec<String> = self.statuses.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let _ = writeln!(o, "  rollouts {}", st.join(", "));
        let _ = writeln!(
            o,
            "  held     {} phases held past their bake for want of users' requests (a version served none, or too few, in its window): waiting for evidence, not counted as lateness",
            self.evidence_held
        );
        let _ = writeln!(
            o,
            "  server CPU while the rollouts baked: {:.2} cores{}{}",
            self.cpu_cores,
            self.ticks_per_s.map_or(String::new(), |t| format!(", {t:.0} controller ticks/s")),
            self.pg_cpu_cores.map_or(String::new(), |c| format!(
                "; PostgreSQL (every process of the cluster): {c:.2} cores, {:.0} commits/s",
                self.pg_commits_per_s.unwrap_or(0.0)
            ))
        );
        let _ = writeln!(o);
        let ok = self.completed() == self.workloads as usize;
        let _ = writeln!(o, "  {}  every rollout completed: {} of {}", verdict(ok), self.completed(), self.workloads);
        let p99 = self.lag(0.99);
        let _ = writeln!(
            o,
            "  {}  lag of a step due, over {} steps: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (bar: p99 under {LAG_BAR_MS:.0} ms)",
            verdict(p99 < LAG_BAR_MS),
            self.lags_ms.len(),
            self.lag(0.5),
            p99,
            self.lag(1.0)
        );
        let _ = writeln!(
            o,
            "  {}  server peak memory: {:.0} MiB (bar: under {MEMORY_BAR_MIB:.0} MiB)",
            verdict(self.peak_rss_mib < MEMORY_BAR_MIB),
            self.peak_rss_mib
        );
        match &self.restart {
            Some(r) => {
                let _ = writeln!(
                    o,
                    "  {}  restart after SIGKILL: answering in {:.2} s, the {} steps that fell due meanwhile taken {:.2} s after its start (bar: under {RESTART_BAR_S:.0} s)",
                    verdict(self.restart_ok()),
                    r.listening_s,
                    r.steps_due,
                    r.resumed_s
                );
            }
            None => {
                let _ = writeln!(o, "  (no restart: --no-restart)");
            }
        }
        o
    }

    fn json(&self) -> Value {
        json!({
            "benchmark": "scale",
            "workloads": self.workloads,
            "bake_secs": self.bake_secs,
            "rps": self.rps,
            "setup_s": stats::round3(self.setup_s),
            "deploy_s": stats::round3(self.deploy_s),
            "statuses": self.statuses,
            "requests": {"sent": self.requests.0, "ok": self.requests.1},
            "server_cpu_cores": stats::round3(self.cpu_cores),
            "controller_ticks_per_s": self.ticks_per_s.map(stats::round3),
            "store": match self.store { Store::Sqlite => "sqlite", Store::Postgres => "postgres" },
            "postgres_cpu_cores": self.pg_cpu_cores.map(stats::round3),
            "postgres_commits_per_s": self.pg_commits_per_s.map(stats::round3),
            "lag_ms": {"steps": self.lags_ms.len(), "p50": stats::round3(self.lag(0.5)), "p99": stats::round3(self.lag(0.99)), "max": stats::round3(self.lag(1.0))},
            "outage_steps": self.outage_steps,
            "held_for_requests": self.evidence_held,
            "peak_rss_mib": stats::round3(self.peak_rss_mib),
            "restart": self.restart.as_ref().map(|r| json!({
                "listening_s": stats::round3(r.listening_s),
                "resumed_s": stats::round3(r.resumed_s),
                "steps_due": r.steps_due,
            })),
            "passed": crate::Report::passed(self),
        })
    }
}
