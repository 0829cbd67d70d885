//! Time to mitigate a hard failure (design.md section 5, first bar).
//!
//! Per run, a fresh workload goes live on a healthy v1; simulated users send a fixed rate of
//! requests through its router; then v2, which answers a fixed fraction of requests with 5xx, is
//! deployed with its first phase at the given weight. The controller must notice and send the
//! traffic back to v1. The time to mitigate is measured where users are, from the load
//! generator's own samples: from the first 5xx answer of v2 (when it arrived, `done_at`) to the
//! last request the router sent to v2 (when it left, `sent_at`). The controller's event log is
//! read afterwards to show where that time went.
//!
//! With `--baseline BINARY`, a second server run from that binary takes the same runs,
//! alternated with this binary's, and every table shows both, weight by weight.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ringfence::client::ApiClient;
use ringfence::loadgen::{LoadConfig, Sample};
use serde_json::{Value, json};

use crate::procs;
use crate::server::{Server, StopReport};
use crate::stats::{self, Summary, round3};
use crate::workload::{
    self, Clock, Halt, Load, create_release, deploy, pids, read_events, router_address, signed_ms, wait_rollout,
    workload_events,
};
use crate::{Output, baseline};

/// The bar: the median time to mitigate must be under this.
const BAR_MS: f64 = 2000.0;

/// The health rule of the workload under test; the same as the demo's.
const MAX_ERROR_RATE: f64 = 0.05;
const MIN_REQUESTS: u64 = 20;

/// The anchors of design.md section 5, in seconds: Flagger's default rolls back about 1-2
/// minutes after the first failing check; Argo Rollouts' documented example takes 15-20 minutes.
const ANCHORS: [(&str, f64, f64); 2] = [
    ("Flagger default (1-2 min after the first failing check)", 60.0, 120.0),
    ("Argo Rollouts documented example (15-20 min)", 900.0, 1200.0),
];

/// Bake of the throwaway first deploy of v1. A first deploy bakes for the first phase's bake,
/// which in the measured plan is long on purpose; v1 is only the stable version here, so it is
/// deployed under a plan with a short bake and the real plan is applied afterwards.
const SETUP_BAKE_SECS: u64 = 1;

/// Releases of every run's workload.
const GOOD: &str = "v1";
const BAD: &str = "v2";

#[derive(Args, Debug, Clone)]
pub struct MitigationArgs {
    /// Runs per weight.
    #[arg(long, default_value_t = 20)]
    pub runs: u32,
    /// Requests per second of simulated user traffic through the router.
    #[arg(long, default_value_t = 200.0)]
    pub rps: f64,
    /// Fraction of requests the bad version answers with a 5xx.
    #[arg(long, default_value_t = 0.2)]
    pub error_rate: f64,
    /// Percent of users on the new version in its first phase. Repeat it or separate with commas
    /// to measure several weights in one invocation; their runs are interleaved so that drift
    /// over the invocation affects all weights alike.
    #[arg(long = "weight", value_delimiter = ',', default_values_t = [10.0, 25.0])]
    pub weights: Vec<f64>,
    /// Distinct simulated users (routing is sticky per user).
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Bake of each phase, in seconds: long enough that the halt, not the end of the bake, ends
    /// the first phase.
    #[arg(long, default_value_t = 60)]
    pub bake_secs: u64,
    /// Load on v1 alone before v2 is deployed, in milliseconds, so the load generator's
    /// connections and rate are steady when v2 gets traffic.
    #[arg(long, default_value_t = 1000)]
    pub warmup_ms: u64,
    /// Load kept on after the rollout ended, in milliseconds, so a request that still reached v2
    /// after the controller called the mitigation done would be seen.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// Passed to `ringfence server --tick`; by default the server's own default is measured.
    #[arg(long)]
    pub server_tick: Option<String>,
    /// Keep the server's data directory (event log, logs) and print where it is.
    #[arg(long)]
    pub keep_data: bool,
    /// Also measure the blue-green model: the bad version previewed at 0% (probes only), then
    /// switched to for every user at once, and switched back to the old stack, which never
    /// stopped. Its runs are interleaved with the weights' and it stands beside them.
    #[arg(long)]
    pub blue_green: bool,
    /// Also measure the first weight through an HAProxy (Debian's `haproxy`, one started per
    /// run) instead of the built-in router: weights through its runtime API, counters from
    /// `show stat`, latency from its logs. Its runs are interleaved with the others'.
    #[arg(long)]
    pub haproxy: bool,
    /// Also measure rings over host groups: 4 instances updated in place, the first ring one
    /// instance (25%) with that bake, then all; a fallback takes traffic off the ring at once,
    /// then gives the ring the stable version back. Its runs are interleaved with the others'.
    #[arg(long)]
    pub rings: bool,
    /// An earlier ringfence binary to measure in the same invocation: its own server (and so its
    /// routers and replicas) takes every run too, alternated with this binary's, and the report
    /// puts both side by side. The bar applies to this binary.
    #[arg(long, value_name = "BINARY")]
    pub baseline: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

impl MitigationArgs {
    /// Refuses what would make the measurement meaningless or a run impossible, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if !(1..=1000).contains(&self.runs) {
            bail!("--runs must be between 1 and 1000, got {}", self.runs);
        }
        if !(self.rps.is_finite() && (1.0..=20_000.0).contains(&self.rps)) {
            bail!("--rps must be between 1 and 20000, got {}", self.rps);
        }
        // Above the health limit, or the release is not bad; at most 1 as it is a fraction.
        if !(self.error_rate.is_finite() && self.error_rate > MAX_ERROR_RATE && self.error_rate <= 1.0) {
            bail!(
                "--error-rate must be above the health limit {MAX_ERROR_RATE} and at most 1.0, got {}",
                self.error_rate
            );
        }
        if self.weights.is_empty() {
            bail!("--weight needs at least one value");
        }
        for w in &self.weights {
            // 100 would make the first phase the last one: the plan needs a phase after it.
            if !(w.is_finite() && *w >= 0.01 && *w < 100.0) {
                bail!("--weight must be a percentage of at least 0.01 and below 100, got {w}");
            }
        }
        if self.users == 0 {
            bail!("--users must be at least 1");
        }
        if !(5..=3600).contains(&self.bake_secs) {
            bail!("--bake-secs must be between 5 and 3600, got {}", self.bake_secs);
        }
        if self.warmup_ms > 60_000 || self.settle_ms > 60_000 {
            bail!("--warmup-ms and --settle-ms must be at most 60000");
        }
        if self.settle_ms < 200 {
            bail!("--settle-ms must be at least 200, to see requests that reach v2 after the mitigation ended");
        }
        if let Some(b) = &self.baseline
            && !b.is_file()
        {
            bail!("--baseline {} is not a file", b.display());
        }
        Ok(())
    }
}

/// Everything measured in one run. Times on the timeline are milliseconds after the v2
/// rollout started (its `rollout_started` event).
#[derive(Debug, Clone)]
struct RunResult {
    run: u32,
    workload: String,
    /// T1 (`sent_at` of the last request to v2) - T0 (`done_at` of v2's first 5xx).
    ttm_ms: f64,
    /// The same with T1 = `done_at` of the last request to v2.
    ttm_done_ms: f64,
    v2_requests: u64,
    v2_errors: u64,
    /// Every failed request users saw during the run, whatever answered.
    user_errors: u64,
    total_requests: u64,
    /// Of the requests sent while the router had v2 in its table, the fraction v2 answered:
    /// should be close to the weight, or the health window fills slower than planned.
    v2_share: Option<f64>,
    /// `rollout_halted` - `rollout_started`.
    deploy_to_halt_ms: f64,
    timeline: Timeline,
    halt: Halt,
}

#[derive(Debug, Clone, Default)]
struct Timeline {
    /// The last v2 replica ready.
    replicas_ready: Option<f64>,
    /// The router acknowledged a table sending traffic to v2.
    routed: Option<f64>,
    bake_started: Option<f64>,
    first_bad: f64,
    halted: Option<f64>,
    /// The router acknowledged the table without v2.
    routes_back: Option<f64>,
    last_v2_sent: f64,
    last_v2_done: f64,
    mitigated: Option<f64>,
}

struct WeightReport {
    /// The first phase's weight; 100 for blue-green, whose switch sends everyone at once.
    weight: f64,
    model: Model,
    results: Vec<RunResult>,
    failures: Vec<(u32, String)>,
}

/// What a run exposes the bad version with.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Exposure {
    weight: f64,
    model: Model,
}

/// How the bad version is exposed, and through which data plane.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Canary,
    BlueGreen,
    /// The canary through an HAProxy rather than the built-in router.
    HaproxyCanary,
    /// Rings over 4 instances updated in place.
    Rings,
}

/// Instances of the rings workload (the demo's 2 would make the first ring half the fleet).
const RING_REPLICAS: u32 = 4;

impl Exposure {
    /// Every exposure the arguments ask for, in the order they are measured.
    fn all(args: &MitigationArgs) -> Vec<Exposure> {
        let mut out: Vec<Exposure> =
            args.weights.iter().map(|&weight| Exposure { weight, model: Model::Canary }).collect();
        if args.blue_green {
            out.push(Exposure { weight: 100.0, model: Model::BlueGreen });
        }
        if args.haproxy {
            out.push(Exposure { weight: args.weights[0], model: Model::HaproxyCanary });
        }
        if args.rings {
            out.push(Exposure { weight: 100.0 / RING_REPLICAS as f64, model: Model::Rings });
        }
        out
    }

    fn label(&self) -> String {
        match self.model {
            Model::BlueGreen => "blue-green".into(),
            Model::HaproxyCanary => format!("{}% HAProxy", self.weight),
            Model::Rings => format!("ring {}%", self.weight),
            Model::Canary => format!("{}%", self.weight),
        }
    }

    fn workload(&self, run: u32) -> String {
        if self.model == Model::BlueGreen {
            format!("mit-bg-r{run:02}")
        } else if self.model == Model::Rings {
            format!("mit-ring-r{run:02}")
        } else if self.model == Model::HaproxyCanary {
            format!("mit-hx-w{}-r{run:02}", self.weight.to_string().replace('.', "_"))
        } else {
            format!("mit-w{}-r{run:02}", self.weight.to_string().replace('.', "_"))
        }
    }
}

/// What one binary's server measured.
struct Side {
    ringfence: String,
    /// False for a build from before authentication: it wrote no admin token and took requests
    /// without one.
    authenticated: bool,
    weights: Vec<WeightReport>,
    cleanup: Option<StopReport>,
}

pub struct Report {
    args: MitigationArgs,
    /// This binary's.
    after: Side,
    /// `--baseline`'s, from the same invocation.
    before: Option<Side>,
}

/// Runs the benchmark against the started servers: this binary's, then `--baseline`'s when
/// given. Each run of each weight goes to every server in turn, so that drift over the
/// invocation affects them alike.
pub async fn run(args: &MitigationArgs, servers: &mut [Server]) -> Result<Report> {
    let mut sides = Vec::new();
    for server in servers.iter_mut() {
        let api = server.api()?;
        let weights = Exposure::all(args)
            .into_iter()
            .map(|e| WeightReport { weight: e.weight, model: e.model, results: Vec::new(), failures: Vec::new() })
            .collect();
        let side = Side {
            ringfence: server.binary().display().to_string(),
            authenticated: server.authenticated(),
            weights,
            cleanup: None,
        };
        sides.push((api, side));
    }
    let exposures = Exposure::all(args);
    let total = args.runs as usize * exposures.len() * servers.len();
    let mut done = 0;
    for run in 1..=args.runs {
        for (i, exposure) in exposures.iter().enumerate() {
            for (n, (server, (api, side))) in servers.iter_mut().zip(sides.iter_mut()).enumerate() {
                done += 1;
                let w = &mut side.weights[i];
                let name = exposure.workload(run);
                let label = if n == 0 { name.clone() } else { format!("{name} (baseline)") };
                measure(args, server, api, w, run, &name, &format!("[{done:>3}/{total}] {label}")).await?;
            }
        }
    }
    let mut sides = sides.into_iter().map(|(_, side)| side);
    let after = sides.next().ok_or_else(|| anyhow!("no server to measure"))?;
    Ok(Report { args: args.clone(), after, before: sides.next() })
}

/// One run of one weight on one server, recorded in `w`; an error only when the server died.
async fn measure(
    args: &MitigationArgs,
    server: &mut Server,
    api: &ApiClient,
    w: &mut WeightReport,
    run: u32,
    name: &str,
    progress: &str,
) -> Result<()> {
    let started = Instant::now();
    let outcome = one_run(api, args, w.exposure(), run, name).await;
    // Whatever happened, learn the processes it started, for the guard to check on.
    if let Ok(events) = workload_events(api, name).await {
        server.note_pids(pids(&events));
    }
    match outcome {
        Ok(r) => {
            eprintln!(
                "{progress}: mitigated in {:.3} s (first 5xx -> last request to v2); v2 served {} requests, {} errors; halted {:.3} s after deploy [{:.1} s]",
                r.ttm_ms / 1000.0,
                r.v2_requests,
                r.v2_errors,
                r.deploy_to_halt_ms / 1000.0,
                started.elapsed().as_secs_f64()
            );
            w.results.push(r);
        }
        Err(e) => {
            // A dead server ends the benchmark; anything else is this run's result.
            server.check_alive()?;
            eprintln!("{progress}: FAILED: {e:#}");
            w.failures.push((run, format!("{e:#}")));
        }
    }
    Ok(())
}

/// The demo's workload (`ringfence::demo::DEMO_SPEC`), measured as it is but for what the
/// benchmark sets: two phases (the weight under test, then 100%), its bakes, and the health
/// limits of the plan the report prints.
fn spec(name: &str, exposure: Exposure, bake_secs: u64, haproxy: Option<&procs::Haproxy>) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = ringfence::demo::DEMO_SPEC.parse().context("the demo's spec is not TOML")?;
    if let Some(h) = haproxy {
        let router: toml_edit::DocumentMut = h.router_spec().parse().context("the HAProxy router spec")?;
        doc["router"] = router["router"].clone();
    }
    doc["workload"]["name"] = toml_edit::value(name);
    doc["workload"]["description"] = toml_edit::value("ringfence-bench mitigation run");
    let phases = doc["rollout"]["phases"]
        .as_array_of_tables_mut()
        .ok_or_else(|| anyhow!("the demo's spec has no [[rollout.phases]]"))?;
    phases.retain(|p| matches!(p.get("name").and_then(|n| n.as_str()), Some("canary" | "full")));
    for p in phases.iter_mut() {
        let first = p.get("name").and_then(|n| n.as_str()) == Some("canary");
        match (first, exposure.model == Model::BlueGreen) {
            // Blue-green: a short preview at 0%, then the switch bakes.
            (true, true) => {
                p["weight"] = toml_edit::value(0);
                p["bake"] = toml_edit::value("1s");
            }
            (true, false) => {
                p["weight"] = toml_edit::value(exposure.weight);
                p["bake"] = toml_edit::value(format!("{bake_secs}s"));
            }
            (false, _) => p["bake"] = toml_edit::value(format!("{bake_secs}s")),
        }
    }
    match exposure.model {
        Model::BlueGreen => doc["rollout"]["model"] = toml_edit::value("blue_green"),
        Model::Rings => {
            doc["rollout"]["model"] = toml_edit::value("rings");
            doc["executor"]["replicas"] = toml_edit::value(RING_REPLICAS as i64);
        }
        Model::Canary | Model::HaproxyCanary => {}
    }
    doc["health"]["max_error_rate"] = toml_edit::value(MAX_ERROR_RATE);
    doc["health"]["min_requests"] = toml_edit::value(MIN_REQUESTS as i64);
    Ok(doc.to_string())
}

async fn apply(
    api: &ApiClient,
    name: &str,
    exposure: Exposure,
    bake_secs: u64,
    haproxy: Option<&procs::Haproxy>,
) -> Result<()> {
    workload::apply_spec(api, name, &spec(name, exposure, bake_secs, haproxy)?).await
}

async fn one_run(
    api: &ApiClient,
    args: &MitigationArgs,
    exposure: Exposure,
    run: u32,
    name: &str,
) -> Result<RunResult> {
    // Setup: a workload whose stable version is the healthy v1 (behind its own HAProxy).
    let haproxy = if exposure.model == Model::HaproxyCanary { Some(procs::Haproxy::start()?) } else { None };
    apply(api, name, exposure, SETUP_BAKE_SECS, haproxy.as_ref()).await?;
    create_release(api, name, GOOD, &json!({}), "healthy").await?;
    let bad_config = json!({"SAMPLE_ERROR_RATE": args.error_rate.to_string()});
    create_release(api, name, BAD, &bad_config, "hard failure").await?;
    let first = deploy(api, name, GOOD).await?;
    let status = wait_rollout(api, name, &first, Duration::from_secs(60)).await?;
    if status != "completed" {
        bail!("setup: the first deploy of {GOOD} ended {status}, not completed");
    }
    apply(api, name, exposure, args.bake_secs, haproxy.as_ref()).await?;
    let router = router_address(api, name).await?;

    // The load, then the bad deploy under it.
    let load = LoadConfig::steady(router, args.rps, args.users);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let clock = Clock::now();
    let task = Load::start(load, Some(tx))?;
    tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
    let rollout = deploy(api, name, BAD).await?;
    // Unhalted, the rollout would pass both bakes and complete; a margin beyond that.
    let status = wait_rollout(api, name, &rollout, Duration::from_secs(2 * args.bake_secs + 60)).await?;
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    task.stop().await;
    let mut samples: Vec<Sample> = Vec::new();
    // The sender went away with the task, so this ends.
    while let Some(s) = rx.recv().await {
        samples.push(s);
    }
    if status != "mitigated" {
        bail!("the rollout of the bad {BAD} ended {status}, not mitigated: the hard failure was not caught");
    }
    let events = workload_events(api, name).await?;
    let ev = read_events(&events, &rollout, BAD)?;
    let s = read_samples(&samples, BAD).ok_or_else(|| {
        anyhow!("no user saw a 5xx from {BAD} ({} requests in all): nothing to measure", samples.len())
    })?;
    let rel = |t: Instant| clock.wall_ms(t) - ev.started;
    let at = |t: Option<i64>| t.map(|ms| ms as f64 - ev.started);
    let halted = at(ev.halted).ok_or_else(|| anyhow!("{rollout} was mitigated without a rollout_halted event"))?;
    let v2_share = match (ev.routed, ev.routes_back) {
        (Some(from), Some(to)) => share(&samples, BAD, |s| {
            let t = clock.wall_ms(s.sent_at);
            t >= from as f64 && t < to as f64
        }),
        _ => None,
    };
    Ok(RunResult {
        run,
        workload: name.to_string(),
        ttm_ms: signed_ms(s.last_v2_sent, s.first_bad),
        ttm_done_ms: signed_ms(s.last_v2_done, s.first_bad),
        v2_requests: s.v2_requests,
        v2_errors: s.v2_errors,
        user_errors: s.user_errors,
        total_requests: samples.len() as u64,
        v2_share,
        deploy_to_halt_ms: halted,
        timeline: Timeline {
            replicas_ready: at(ev.replicas_ready),
            routed: at(ev.routed),
            bake_started: at(ev.bake_started),
            first_bad: rel(s.first_bad),
            halted: Some(halted),
            routes_back: at(ev.routes_back),
            last_v2_sent: rel(s.last_v2_sent),
            last_v2_done: rel(s.last_v2_done),
            mitigated: at(ev.mitigated),
        },
        halt: ev.halt,
    })
}

/// The fraction of the samples picked by `during` that `version` answered; None for none.
fn share(samples: &[Sample], version: &str, during: impl Fn(&Sample) -> bool) -> Option<f64> {
    let picked: Vec<&Sample> = samples.iter().filter(|s| during(s)).collect();
    let hits = picked.iter().filter(|s| s.version.as_deref() == Some(version)).count();
    (!picked.is_empty()).then(|| hits as f64 / picked.len() as f64)
}

/// What users saw of the bad version.
#[derive(Debug, PartialEq)]
struct SampleFacts {
    /// T0: the earliest arrival of a 5xx answered by the bad version.
    first_bad: Instant,
    /// T1: the latest departure of a request the router sent to the bad version.
    last_v2_sent: Instant,
    last_v2_done: Instant,
    v2_requests: u64,
    v2_errors: u64,
    user_errors: u64,
}

/// None when no user saw a 5xx from `bad`.
fn read_samples(samples: &[Sample], bad: &str) -> Option<SampleFacts> {
    let from_bad = || samples.iter().filter(|s| s.version.as_deref() == Some(bad));
    // A 5xx with the version header: the bad version answered it. A transport error carries no
    // version and so cannot be blamed on it.
    let first_bad = from_bad().filter(|s| s.status.is_some_and(|c| c >= 500)).map(|s| s.done_at).min()?;
    Some(SampleFacts {
        first_bad,
        last_v2_sent: from_bad().map(|s| s.sent_at).max()?,
        last_v2_done: from_bad().map(|s| s.done_at).max()?,
        v2_requests: from_bad().count() as u64,
        v2_errors: from_bad().filter(|s| s.is_error()).count() as u64,
        user_errors: samples.iter().filter(|s| s.is_error()).count() as u64,
    })
}

impl WeightReport {
    fn ttm(&self) -> Option<Summary> {
        stats::summarize(&self.results.iter().map(|r| r.ttm_ms).collect::<Vec<_>>())
    }

    fn summary(&self, f: impl Fn(&RunResult) -> f64) -> Option<Summary> {
        stats::summarize(&self.results.iter().map(f).collect::<Vec<_>>())
    }

    /// Median of a quantity that some runs may lack.
    fn median(&self, f: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
        stats::median(self.results.iter().filter_map(f))
    }

    fn exposure(&self) -> Exposure {
        Exposure { weight: self.weight, model: self.model }
    }

    /// Every run measured, none failed, and the median under the bar.
    fn passed(&self) -> bool {
        self.failures.is_empty() && self.ttm().is_some_and(|s| s.median < BAR_MS)
    }

    /// Requests to the new version the health window needs, over the rate it gets them at.
    fn expected_window_ms(&self, rps: f64) -> f64 {
        MIN_REQUESTS as f64 / (rps * self.weight / 100.0) * 1000.0
    }

    /// Runs that halted somewhere other than the first phase: the bake, not the halt, ended it.
    fn late_halts(&self) -> usize {
        self.results.iter().filter(|r| r.halt.weight.is_some_and(|w| (w - self.weight).abs() > 1e-9)).count()
    }

    /// The durations between the steps of a run, as (label, median ms).
    fn breakdown(&self) -> Vec<(&'static str, Option<f64>)> {
        let t = |f: fn(&Timeline) -> Option<f64>| move |r: &RunResult| f(&r.timeline);
        let diff = |a: fn(&Timeline) -> Option<f64>, b: fn(&Timeline) -> Option<f64>| {
            move |r: &RunResult| Some(b(&r.timeline)? - a(&r.timeline)?)
        };
        vec![
            ("deploy -> v2 replicas ready", self.median(t(|t| t.replicas_ready))),
            ("ready -> router sends users to v2", self.median(diff(|t| t.replicas_ready, |t| t.routed))),
            ("routed -> health window opens (bake_started)", self.median(diff(|t| t.routed, |t| t.bake_started))),
            ("routed -> first 5xx seen by a user (T0)", self.median(diff(|t| t.routed, |t| Some(t.first_bad)))),
            ("window opens -> halt", self.median(diff(|t| t.bake_started, |t| t.halted))),
            ("T0 -> halt (detection)", self.median(diff(|t| Some(t.first_bad), |t| t.halted))),
            ("halt -> router acknowledges v1-only table", self.median(diff(|t| t.halted, |t| t.routes_back))),
            (
                "v1-only table -> last request sent to v2 (T1)",
                self.median(diff(|t| t.routes_back, |t| Some(t.last_v2_sent))),
            ),
            ("halt -> mitigation_completed", self.median(diff(|t| t.halted, |t| t.mitigated))),
        ]
    }
}

impl Report {
    /// How each server stopped, in the order of the servers given to [`run`].
    pub fn cleanup(&mut self, stops: Vec<StopReport>) {
        let sides = std::iter::once(&mut self.after).chain(self.before.as_mut());
        for (side, stop) in sides.zip(stops) {
            side.cleanup = Some(stop);
        }
    }

    /// The columns of the tables: a weight each, or with a baseline a weight and binary each,
    /// the baseline's first, so before and after of a weight stand next to each other.
    fn columns(&self) -> Vec<(String, &WeightReport)> {
        match &self.before {
            None => self.after.weights.iter().map(|w| (w.exposure().label(), w)).collect(),
            Some(before) => before
                .weights
                .iter()
                .zip(&self.after.weights)
                .flat_map(|(b, a)| {
                    [(format!("{} before", b.exposure().label()), b), (format!("{} after", a.exposure().label()), a)]
                })
                .collect(),
        }
    }

    /// The median TTM per weight, before and after, in seconds: the figures with a bar.
    fn figures(&self) -> Vec<baseline::Figure> {
        let median = |w: &WeightReport| w.ttm().map(|s| s.median / 1000.0);
        let before = self.before.as_ref().map(|b| b.weights.as_slice()).unwrap_or_default();
        self.after
            .weights
            .iter()
            .enumerate()
            .map(|(i, a)| baseline::Figure {
                name: format!("median TTM at {} (s)", a.exposure().label()),
                before: before.get(i).and_then(median),
                after: median(a),
                decimals: 3,
            })
            .collect()
    }

    fn tick_label(&self) -> String {
        match &self.args.server_tick {
            Some(t) => format!("--tick {t}"),
            None => "server default (100ms)".into(),
        }
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for (label, w) in self.columns() {
            if !w.failures.is_empty() {
                notes.push(format!("{label}: {} run(s) failed; see below", w.failures.len()));
            }
            let late = w.late_halts();
            if late > 0 {
                notes.push(format!(
                    "{label}: {late} run(s) halted after the first phase: its bake ended before the halt (raise --bake-secs)"
                ));
            }
            let others: Vec<String> = w
                .results
                .iter()
                .filter(|r| r.user_errors > r.v2_errors)
                .map(|r| format!("run {} ({})", r.run, r.user_errors - r.v2_errors))
                .collect();
            if !others.is_empty() {
                notes.push(format!(
                    "{label}: users saw errors not from v2 (transport errors or v1 5xx): {}",
                    others.join(", ")
                ));
            }
            let unverified = w.results.iter().filter(|r| r.halt.verified == Some(false)).count();
            if unverified > 0 {
                notes.push(format!("{label}: {unverified} mitigation(s) completed unverified"));
            }
        }
        for (server, c) in self.stops() {
            if !c.leftovers.is_empty() {
                notes.push(format!(
                    "the {server} exited but left {} ringfence process(es) running; the bench stopped them",
                    c.leftovers.len()
                ));
            }
        }
        notes
    }

    /// How the servers stopped, named for the report.
    fn stops(&self) -> Vec<(&'static str, &StopReport)> {
        [("server", Some(&self.after)), ("baseline's server", self.before.as_ref())]
            .into_iter()
            .filter_map(|(server, side)| Some((server, side?.cleanup.as_ref()?)))
            .collect()
    }
}

impl crate::Report for Report {
    /// Every weight met the bar and nothing was left running, with this binary.
    fn passed(&self) -> bool {
        let a = &self.after;
        a.weights.iter().all(WeightReport::passed) && a.cleanup.as_ref().is_none_or(|c| c.leftovers.is_empty())
    }

    fn table(&self) -> String {
        let a = &self.args;
        let columns = self.columns();
        // The label column: as wide as "weight" unless a baseline's labels need more.
        let lw = columns.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(7);
        let cw = columns.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(9);
        let mut o = String::new();
        let _ = writeln!(o, "ringfence-bench mitigation: time to mitigate a hard failure (design.md section 5)");
        let _ = writeln!(
            o,
            "  setup   v2 answers {}% of requests with 5xx; {} req/s from {} users through the workload's router",
            a.error_rate * 100.0,
            a.rps,
            a.users
        );
        let _ = writeln!(
            o,
            "          the demo's workload (2 replicas), its plan cut to: first phase at the weight below, bake {} s, then 100%; health: max_error_rate {MAX_ERROR_RATE}, min_requests {MIN_REQUESTS}",
            a.bake_secs
        );
        if a.blue_green {
            let _ = writeln!(
                o,
                "          blue-green: model = \"blue_green\", a 1 s preview at 0% (probes only), then the switch to 100% with that bake; the old stack never stops"
            );
        }
        if a.haproxy {
            let _ = writeln!(
                o,
                "          HAProxy: the first weight again, through a real HAProxy (one per run, `kind = \"haproxy\"`) instead of the built-in router"
            );
        }
        if a.rings {
            let _ = writeln!(
                o,
                "          rings: model = \"rings\" over {RING_REPLICAS} instances updated in place, the first ring one instance (25%) with that bake, then all"
            );
        }
        let _ = writeln!(o, "          binary {}; controller tick: {}", self.after.ringfence, self.tick_label());
        if let Some(b) = &self.before {
            let _ = writeln!(
                o,
                "          baseline {} (--baseline): its own server, each run alternated with this binary's",
                b.ringfence
            );
            if !b.authenticated {
                let _ = writeln!(o, "          baseline: a server without authentication (it wrote no admin token)");
            }
        }
        let _ = writeln!(
            o,
            "  measure T0 = first 5xx from v2 arriving at a user (done_at); T1 = last request routed to v2 leaving (sent_at); TTM = T1 - T0"
        );
        let _ = writeln!(o, "  bar     median TTM under {:.0} s over {} runs, per weight", BAR_MS / 1000.0, a.runs);
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:>lw$} {:>6} {:>9} {:>9} {:>9} {:>9} {:>6}  {:<6}  {:>12} {:>14}",
            "weight", "runs", "median", "p90", "min", "max", "bar", "result", "TTM(done_at)", "deploy->halt"
        );
        for (label, w) in &columns {
            let runs = format!("{}/{}", w.results.len(), w.results.len() + w.failures.len());
            let secs = |x: f64| format!("{:.3} s", x / 1000.0);
            let (median, p90, min, max) = match w.ttm() {
                Some(s) => (secs(s.median), secs(s.p90), secs(s.min), secs(s.max)),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            let done = w.summary(|r| r.ttm_done_ms).map(|s| secs(s.median)).unwrap_or_else(|| "-".into());
            let halt = w.summary(|r| r.deploy_to_halt_ms).map(|s| secs(s.median)).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "{label:>lw$} {:>6} {:>9} {:>9} {:>9} {:>9} {:>6}  {:<6}  {:>12} {:>14}",
                runs,
                median,
                p90,
                min,
                max,
                format!("< {:.0} s", BAR_MS / 1000.0),
                if w.passed() { "PASS" } else { "FAIL" },
                done,
                halt
            );
        }
        let _ = writeln!(
            o,
            "  (TTM(done_at) and deploy->halt are medians; deploy->halt is rollout_halted - rollout_started)"
        );
        if let Some(b) = &self.before {
            let _ = writeln!(o);
            baseline::table(&mut o, &b.ringfence, &self.figures());
        }

        let _ = writeln!(o);
        let _ = writeln!(o, "Users' view (median per run):");
        let _ = writeln!(
            o,
            "{:>lw$} {:>14} {:>12} {:>13} {:>16}",
            "weight", "v2 requests", "v2 errors", "user errors", "all requests"
        );
        for (label, w) in &columns {
            let m = |f: fn(&RunResult) -> u64| {
                w.summary(|r| f(r) as f64).map(|s| format!("{}", s.median)).unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(
                o,
                "{label:>lw$} {:>14} {:>12} {:>13} {:>16}",
                m(|r| r.v2_requests),
                m(|r| r.v2_errors),
                m(|r| r.user_errors),
                m(|r| r.total_requests)
            );
        }

        let _ = writeln!(o);
        let _ =
            writeln!(o, "Where the time goes (median ms over the runs; from the event log and the users' samples):");
        let labels: Vec<&str> =
            self.after.weights.first().map(|w| w.breakdown().iter().map(|(l, _)| *l).collect()).unwrap_or_default();
        let _ = write!(o, "{:<48}", "");
        for (label, _) in &columns {
            let _ = write!(o, " {label:>cw$}");
        }
        let _ = writeln!(o);
        let rows: Vec<Vec<(&str, Option<f64>)>> = columns.iter().map(|(_, w)| w.breakdown()).collect();
        for (i, label) in labels.iter().enumerate() {
            let _ = write!(o, "{label:<48}");
            for row in &rows {
                let _ = write!(o, " {:>cw$}", row[i].1.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into()));
            }
            let _ = writeln!(o);
        }
        let _ = write!(o, "{:<48}", "expected window: min_requests / (rps x weight)");
        for (_, w) in &columns {
            let _ = write!(o, " {:>cw$.0}", w.expected_window_ms(a.rps));
        }
        let _ = writeln!(o);
        let _ = write!(o, "{:<48}", "share of requests v2 answered while routed (%)");
        for (_, w) in &columns {
            let v = w.median(|r| r.v2_share.map(|x| x * 100.0));
            let _ = write!(o, " {:>cw$}", v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into()));
        }
        let _ = writeln!(o);
        let _ = write!(o, "{:<48}", "requests to v2 in the window at the halt");
        for (_, w) in &columns {
            let v = w.median(|r| r.halt.window_requests.map(|n| n as f64));
            let _ = write!(o, " {:>cw$}", v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into()));
        }
        let _ = writeln!(o);

        let _ = writeln!(o);
        let _ =
            writeln!(o, "Context: the median against the anchors of design.md section 5 (ratio = median / anchor):");
        for w in &self.after.weights {
            let Some(s) = w.ttm() else { continue };
            for (name, lo, hi) in ANCHORS {
                let (rlo, rhi) = (s.median / 1000.0 / lo, s.median / 1000.0 / hi);
                let _ = writeln!(
                    o,
                    "{:>10}  {name}: {:.4}-{:.4} ({:.0}x-{:.0}x shorter)",
                    w.exposure().label(),
                    rlo,
                    rhi,
                    1.0 / rlo,
                    1.0 / rhi
                );
            }
        }

        let notes = self.notes();
        if !notes.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "Notes:");
            for n in notes {
                let _ = writeln!(o, "  - {n}");
            }
        }

        let _ = writeln!(o);
        let _ = writeln!(o, "Per run (ms; timeline columns are after rollout_started of v2):");
        let _ = writeln!(
            o,
            "{:>lw$} {:>4} {:>8} {:>9} {:>6} {:>6} {:>6} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  halted by",
            "weight",
            "run",
            "TTM",
            "TTM(done)",
            "v2req",
            "v2err",
            "usrerr",
            "v2%",
            "routed",
            "bake",
            "T0",
            "halt",
            "back",
            "T1",
            "window"
        );
        for (label, w) in &columns {
            for r in &w.results {
                let opt = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
                let t = &r.timeline;
                let _ = writeln!(
                    o,
                    "{label:>lw$} {:>4} {:>8.1} {:>9.1} {:>6} {:>6} {:>6} {:>5} {:>7} {:>7} {:>7.0} {:>7} {:>7} {:>7.0} {:>7}  {} in {}",
                    r.run,
                    r.ttm_ms,
                    r.ttm_done_ms,
                    r.v2_requests,
                    r.v2_errors,
                    r.user_errors,
                    r.v2_share.map(|x| format!("{:.1}", x * 100.0)).unwrap_or_else(|| "-".into()),
                    opt(t.routed),
                    opt(t.bake_started),
                    t.first_bad,
                    opt(t.halted),
                    opt(t.routes_back),
                    t.last_v2_sent,
                    r.halt.window_requests.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                    if r.halt.signals.is_empty() { "?".to_string() } else { r.halt.signals.join("+") },
                    r.halt.phase
                );
            }
            for (run, why) in &w.failures {
                let _ = writeln!(o, "{label:>lw$} {run:>4} FAILED: {why}");
            }
        }
        let stops = self.stops();
        if !stops.is_empty() {
            let _ = writeln!(o);
        }
        for (server, c) in stops {
            let _ = writeln!(
                o,
                "Cleanup: {server} stopped with SIGTERM ({}); ringfence processes left running: {}",
                c.exit,
                if c.leftovers.is_empty() { "none".to_string() } else { c.leftovers.join("; ") }
            );
        }
        o
    }

    fn json(&self) -> Value {
        let a = &self.args;
        let cleanup =
            |side: &Side| side.cleanup.as_ref().map(|c| json!({"server_exit": c.exit, "leftovers": c.leftovers}));
        json!({
            "benchmark": "mitigation",
            "bar": {"median_ttm_ms_below": BAR_MS, "runs": a.runs},
            "config": {
                "runs": a.runs, "rps": a.rps, "error_rate": a.error_rate, "weights": a.weights, "users": a.users,
                "bake_secs": a.bake_secs, "warmup_ms": a.warmup_ms, "settle_ms": a.settle_ms,
                "max_error_rate": MAX_ERROR_RATE, "min_requests": MIN_REQUESTS, "replicas": 2,
                "server_tick": a.server_tick, "ringfence": self.after.ringfence,
            },
            "pass": self.passed(),
            "weights": weights_json(&self.after, a.rps),
            "notes": self.notes(),
            "cleanup": cleanup(&self.after),
            "baseline": self.before.as_ref().map(|b| json!({
                "authenticated": b.authenticated,
                "weights": weights_json(b, a.rps),
                "cleanup": cleanup(b),
                "comparison": baseline::json(&b.ringfence, &self.figures()),
            })),
        })
    }
}

fn weights_json(side: &Side, rps: f64) -> Vec<Value> {
    let opt = |v: Option<f64>| v.map(round3);
    side.weights
        .iter()
        .map(|w| {
            let ttm = w.ttm();
            let summary = |f: fn(&RunResult) -> f64| w.summary(f).map(|s| s.json());
            json!({
                "weight": w.weight,
                "model": match w.model { Model::BlueGreen => "blue_green", Model::Rings => "rings", _ => "canary" },
                "data_plane": if w.model == Model::HaproxyCanary { "haproxy" } else { "builtin" },
                "runs_measured": w.results.len(),
                "runs_failed": w.failures.iter().map(|(run, why)| json!({"run": run, "error": why})).collect::<Vec<_>>(),
                "ttm_ms": ttm.map(|s| s.json()),
                "pass": w.passed(),
                "ttm_done_at_ms": summary(|r| r.ttm_done_ms),
                "deploy_to_halt_ms": summary(|r| r.deploy_to_halt_ms),
                "v2_requests": summary(|r| r.v2_requests as f64),
                "v2_errors": summary(|r| r.v2_errors as f64),
                "user_errors": summary(|r| r.user_errors as f64),
                "v2_share_median": w.median(|r| r.v2_share).map(|x| round3(x * 1000.0) / 1000.0),
                "expected_window_ms": round3(w.expected_window_ms(rps)),
                "breakdown_median_ms": w.breakdown().into_iter().map(|(k, v)| (k.to_string(), json!(opt(v)))).collect::<serde_json::Map<_, _>>(),
                "median_over_anchor": ANCHORS.iter().filter_map(|(name, lo, hi)| {
                    let m = ttm?.median / 1000.0;
                    Some(json!({"anchor": name, "anchor_s": [lo, hi], "ratio": [m / lo, m / hi]}))
                }).collect::<Vec<_>>(),
                "runs": w.results.iter().map(run_json).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn run_json(r: &RunResult) -> Value {
    let t = &r.timeline;
    let opt = |v: Option<f64>| v.map(round3);
    json!({
        "run": r.run,
        "workload": r.workload,
        "ttm_ms": round3(r.ttm_ms),
        "ttm_done_at_ms": round3(r.ttm_done_ms),
        "v2_requests": r.v2_requests,
        "v2_errors": r.v2_errors,
        "user_errors": r.user_errors,
        "total_requests": r.total_requests,
        "v2_share": r.v2_share.map(|x| round3(x * 1000.0) / 1000.0),
        "deploy_to_halt_ms": round3(r.deploy_to_halt_ms),
        "timeline_ms": {
            "replicas_ready": opt(t.replicas_ready),
            "routed": opt(t.routed),
            "bake_started": opt(t.bake_started),
            "first_bad_response": round3(t.first_bad),
            "halted": opt(t.halted),
            "routes_back": opt(t.routes_back),
            "last_v2_sent": round3(t.last_v2_sent),
            "last_v2_done": round3(t.last_v2_done),
            "mitigated": opt(t.mitigated),
        },
        "halt": {
            "phase": r.halt.phase,
            "weight": r.halt.weight,
            "signals": r.halt.signals,
            "window_requests": r.halt.window_requests,
            "window_error_rate": r.halt.window_error_rate,
            "verified": r.halt.verified,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Report as _;

    #[test]
    fn the_measured_spec_is_the_demos_cut_to_two_phases() {
        let text = spec("m", Exposure { weight: 25.0, model: Model::Canary }, 7, None).unwrap();
        let parsed = ringfence_core::spec::parse("m.toml", &text).expect("a valid spec");
        let phases: Vec<(f64, u64)> = parsed.rollout.phases.iter().map(|p| (p.weight, p.bake.as_ms())).collect();
        assert_eq!(phases, vec![(25.0, 7000), (100.0, 7000)]);
        assert_eq!(parsed.workload.name, "m");
        assert_eq!(parsed.health.max_error_rate, MAX_ERROR_RATE);
        let demo = ringfence_core::spec::parse("demo.toml", ringfence::demo::DEMO_SPEC).unwrap();
        assert_eq!(parsed.executor, demo.executor);
        // Blue-green: a preview, then the switch, the old stack kept.
        let text = spec("m", Exposure { weight: 100.0, model: Model::BlueGreen }, 7, None).unwrap();
        let parsed = ringfence_core::spec::parse("m.toml", &text).expect("a valid blue-green spec");
        let phases: Vec<(f64, u64)> = parsed.rollout.phases.iter().map(|p| (p.weight, p.bake.as_ms())).collect();
        assert_eq!(phases, vec![(0.0, 1000), (100.0, 7000)]);
        assert_eq!(parsed.rollout.model, ringfence_core::spec::ExposureModel::BlueGreen);
    }

    fn sample(base: Instant, sent_ms: u64, done_ms: u64, version: &str, status: Option<u16>) -> Sample {
        Sample {
            sent_at: base + Duration::from_millis(sent_ms),
            done_at: base + Duration::from_millis(done_ms),
            user: 0,
            status,
            version: Some(version.to_string()),
            group: None,
        }
    }

    #[test]
    fn t0_is_the_first_arrival_of_a_v2_5xx_and_t1_the_last_departure_to_v2() {
        let b = Instant::now();
        let samples = vec![
            sample(b, 0, 5, "v1", Some(200)),
            sample(b, 10, 12, "v2", Some(200)),
            // Sent first but arrives last of the two errors: T0 is about arrival.
            sample(b, 20, 90, "v2", Some(500)),
            sample(b, 30, 40, "v2", Some(503)),
            sample(b, 50, 52, "v1", Some(500)),
            sample(b, 900, 1400, "v2", Some(200)),
            sample(b, 1000, 1001, "v1", Some(200)),
        ];
        let s = read_samples(&samples, "v2").unwrap();
        assert_eq!(s.first_bad, b + Duration::from_millis(40));
        assert_eq!(s.last_v2_sent, b + Duration::from_millis(900));
        assert_eq!(s.last_v2_done, b + Duration::from_millis(1400));
        assert_eq!((s.v2_requests, s.v2_errors, s.user_errors), (4, 2, 3));
        assert_eq!(signed_ms(s.last_v2_sent, s.first_bad), 860.0);
        assert_eq!(signed_ms(s.first_bad, s.last_v2_sent), -860.0);
        assert_eq!(share(&samples, "v2", |s| s.sent_at < b + Duration::from_millis(35)), Some(0.75));
        assert_eq!(share(&samples, "v2", |_| false), None);
    }

    #[test]
    fn no_5xx_from_v2_means_nothing_to_measure() {
        let b = Instant::now();
        let mut transport = sample(b, 0, 5, "v2", None);
        transport.version = None;
        let samples = vec![sample(b, 0, 5, "v2", Some(200)), sample(b, 1, 2, "v1", Some(502)), transport];
        assert_eq!(read_samples(&samples, "v2"), None);
        assert_eq!(read_samples(&[], "v2"), None);
    }

    fn args() -> MitigationArgs {
        MitigationArgs {
            runs: 20,
            rps: 200.0,
            error_rate: 0.2,
            weights: vec![10.0, 25.0],
            users: 1000,
            bake_secs: 60,
            warmup_ms: 1000,
            settle_ms: 1000,
            server_tick: None,
            keep_data: false,
            blue_green: false,
            haproxy: false,
            rings: false,
            baseline: None,
            output: Output::Table,
        }
    }

    #[test]
    fn bad_arguments_are_refused_with_the_flag_named() {
        assert!(args().validate().is_ok());
        let cases: Vec<(MitigationArgs, &str)> = vec![
            (MitigationArgs { runs: 0, ..args() }, "--runs"),
            (MitigationArgs { rps: f64::NAN, ..args() }, "--rps"),
            (MitigationArgs { rps: 0.0, ..args() }, "--rps"),
            (MitigationArgs { error_rate: 0.01, ..args() }, "--error-rate"),
            (MitigationArgs { error_rate: 1.5, ..args() }, "--error-rate"),
            (MitigationArgs { weights: vec![], ..args() }, "--weight"),
            (MitigationArgs { weights: vec![10.0, 100.0], ..args() }, "--weight"),
            (MitigationArgs { weights: vec![-1.0], ..args() }, "--weight"),
            (MitigationArgs { users: 0, ..args() }, "--users"),
            (MitigationArgs { bake_secs: 1, ..args() }, "--bake-secs"),
            (MitigationArgs { settle_ms: 0, ..args() }, "--settle-ms"),
        ];
        for (a, flag) in cases {
            let err = a.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
    }

    fn result(run: u32, ttm_ms: f64) -> RunResult {
        RunResult {
            run,
            workload: format!("w{run}"),
            ttm_ms,
            ttm_done_ms: ttm_ms + 1.0,
            v2_requests: 30,
            v2_errors: 6,
            user_errors: 6,
            total_requests: 600,
            v2_share: Some(0.1),
            deploy_to_halt_ms: 1500.0,
            timeline: Timeline::default(),
            halt: Halt { weight: Some(10.0), ..Halt::default() },
        }
    }

    #[test]
    fn pass_needs_the_median_under_the_bar_and_no_failed_run() {
        let report = |results: Vec<RunResult>, failures: Vec<(u32, String)>| Report {
            args: args(),
            after: side(vec![WeightReport { weight: 10.0, model: Model::Canary, results, failures }]),
            before: None,
        };
        let fast: Vec<RunResult> = (1..=3).map(|i| result(i, 1000.0 + f64::from(i))).collect();
        assert!(report(fast.clone(), vec![]).passed());
        assert!(!report(fast.clone(), vec![(4, "timeout".into())]).passed());
        let slow: Vec<RunResult> = (1..=3).map(|i| result(i, 2500.0)).collect();
        let r = report(slow, vec![]);
        assert!(!r.passed());
        assert!(r.table().contains("FAIL"));
        assert_eq!(r.json()["weights"][0]["ttm_ms"]["median"], json!(2500.0));
        assert!(!report(vec![], vec![]).passed());
        let mut left = report(fast, vec![]);
        left.cleanup(vec![StopReport {
            exit: "exit status: 0".into(),
            leftovers: vec!["pid 1: ringfence router".into()],
        }]);
        assert!(!left.passed());
    }

    fn side(weights: Vec<WeightReport>) -> Side {
        Side { ringfence: "ringfence".into(), authenticated: true, weights, cleanup: None }
    }

    #[test]
    fn a_baseline_stands_next_to_each_weight_with_the_ratio_of_the_medians() {
        let weight =
            |results: Vec<RunResult>| WeightReport { weight: 10.0, model: Model::Canary, results, failures: vec![] };
        let mut after: Vec<RunResult> = (1..=3).map(|i| result(i, 300.0)).collect();
        for r in &mut after {
            r.timeline = Timeline { replicas_ready: Some(60.0), ..Timeline::default() };
        }
        let before: Vec<RunResult> = (1..=3).map(|i| result(i, 600.0)).collect();
        let mut report = Report {
            args: MitigationArgs { weights: vec![10.0], ..args() },
            after: side(vec![weight(after)]),
            before: Some(Side { authenticated: false, ..side(vec![weight(before)]) }),
        };
        let stopped = || StopReport { exit: "exit status: 0".into(), leftovers: vec![] };
        report.cleanup(vec![stopped(), stopped()]);
        let t = report.table();
        assert!(t.contains("baseline: a server without authentication"), "{t}");
        assert!(t.contains("10% before"), "{t}");
        assert!(t.contains("median TTM at 10% (s)                         0.600      0.300          0.50"), "{t}");
        // The baseline's events gave no replica times: a dash there, the figure for this binary.
        let ready = t.lines().find(|l| l.starts_with("deploy -> v2 replicas ready")).unwrap();
        assert!(ready.ends_with("          -         60"), "{ready}");
        assert!(t.contains("Cleanup: baseline's server stopped"), "{t}");
        let j = report.json();
        assert_eq!(j["baseline"]["comparison"]["figures"][0]["after_over_before"], json!(0.5));
        assert_eq!(j["weights"][0]["ttm_ms"]["median"], json!(300.0));
        assert!(report.passed());
    }
}
