//! `ringfence-bench router`: what the router costs on the data path, next to nginx doing the same
//! weighted split on the same machine, to the same two upstreams.
//!
//! Two `ringfence sample-app` processes are the upstreams (the new version and the stable one).
//! In front of them: a `ringfence router` process with a two-group table, and nginx with
//! `split_clients` on the same key (the `x-user-id` header when present, else a per-request
//! random id), keep-alive to the upstreams. Rounds interleave the three targets (direct to the
//! stable upstream, router, nginx) so that drift on the shared machine hits them alike.
//!
//! 1. Throughput: `wrk` (closed loop, keep-alive connections) against each target; requests/s.
//!    Bar: the router's median at least nginx's.
//! 2. Added latency: an open-loop load at a fixed rate, with user keys, against each target;
//!    p99 of each, minus the direct p99 of the same round. Bar: the router adds under 1 ms.
//! 3. A stable replica killed at full throughput: each proxy in front of two fresh stable
//!    replicas, wrk at full speed, the first replica SIGKILLed a third into the run; the
//!    requests that failed. Bar: none through the router (nginx, which also tries the next
//!    upstream on a connection error, is beside it).
//! 4. Changes at full throughput: wrk at full speed for three times `--secs` while the new
//!    version's share goes from `--weight` to 25%, 50%, 100% and back to 0% (a fallback), with
//!    a restart of the proxy in the middle: the router stopped (SIGTERM), and once it has
//!    exited the next one started on the users' socket the benchmark holds, in the order the
//!    server restarts a router; nginx reloading its
//!    configuration (SIGHUP), which is how nginx changes weights and its own restart that
//!    refuses nothing. Bar: no failed request through the router (nginx beside it).
//!
//! Client, proxies and upstreams share the machine's CPUs, as they would on a busy host; the
//! bar is a ratio measured in one run, not an absolute figure.
//!
//! With `--baseline BINARY`, that binary's router is a fourth target in the same rounds, with
//! the same table, upstreams and nginx, so both routers' figures come from one run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use ringfence::loadgen::{self, LoadConfig, Sample};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::procs::{Nginx, Router, Upstream};
use crate::stats::{Summary, summarize};
use crate::{Output, baseline};

#[derive(Args, Debug, Clone)]
pub struct RouterArgs {
    /// Rounds; each measures every target once, in a rotating order.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Seconds of wrk per target and round.
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    /// wrk's keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// Requests per second of the latency runs (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of each latency run (the first half second is not counted).
    #[arg(long, default_value_t = 5.0)]
    pub latency_secs: f64,
    /// The new version's share of traffic, in percent.
    #[arg(long, default_value_t = 10)]
    pub weight: u32,
    /// An earlier ringfence binary whose router is measured too, in the same rounds, against
    /// the same upstreams and nginx; the report puts both routers side by side.
    #[arg(long, value_name = "BINARY")]
    pub baseline: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

impl RouterArgs {
    pub fn validate(&self) -> Result<()> {
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if !(self.secs.is_finite() && self.secs >= 1.0) {
            bail!("--secs must be at least 1, got {}", self.secs);
        }
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if !(self.rate.is_finite() && self.rate >= 10.0) {
            bail!("--rate must be at least 10 requests per second, got {}", self.rate);
        }
        if !(self.latency_secs.is_finite() && self.latency_secs >= 1.0) {
            bail!("--latency-secs must be at least 1, got {}", self.latency_secs);
        }
        if !(1..=99).contains(&self.weight) {
            bail!("--weight must be a percentage from 1 to 99, got {}", self.weight);
        }
        if let Some(b) = &self.baseline
            && !b.is_file()
        {
            bail!("--baseline {} is not a file", b.display());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Direct,
    Router,
    /// The router of `--baseline`.
    Baseline,
    Nginx,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct (no proxy)",
            Target::Router => "ringfence router",
            Target::Baseline => "baseline router",
            Target::Nginx => "nginx",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Router => "router",
            Target::Baseline => "baseline_router",
            Target::Nginx => "nginx",
        }
    }
}

const TARGETS: [Target; 4] = [Target::Direct, Target::Router, Target::Baseline, Target::Nginx];

fn wrk_binary() -> Result<PathBuf> {
    ["/usr/bin/wrk", "/usr/local/bin/wrk"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("wrk is not installed: `apt-get install wrk` (bench/run.sh router does)"))
}

/// wrk sends each request as a random one of 10,000 users (the `x-user-id` header), so both
/// proxies split by a user key, the way the router sees returning users.
const WRK_USERS: &str = r#"
math.randomseed(42)
request = function()
  return wrk.format(nil, nil, { ["x-user-id"] = "user-" .. math.random(0, 9999) })
end
"#;

/// CPU time per request (µs) at full throughput, user and system, of each party sharing the
/// machine's cores: what a proxy costs the upstreams and the client shows here, not in its own
/// figure.
#[derive(Clone, Copy)]
struct CpuShare {
    /// The proxy's processes (none for the direct target).
    proxy: Option<f64>,
    upstreams: f64,
    /// wrk.
    client: f64,
}

/// One wrk run: requests per second, the requests that failed (socket errors, non-2xx), and
/// the CPU time per request of the proxy's processes `pids`, of the `upstreams` and of wrk.
fn wrk(
    bin: &Path,
    script: &Path,
    addr: SocketAddr,
    args: &RouterArgs,
    pids: &[u32],
    upstreams: &[u32],
) -> Result<(f64, u64, Option<CpuShare>)> {
    let cpu = |pids: &[u32]| pids.iter().map(|&p| crate::procs::cpu_seconds(p)).sum::<f64>();
    let (proxy_before, upstreams_before) = (cpu(pids), cpu(upstreams));
    // wrk is the only child reaped while it runs, so the reaped children's time is its own.
    let client_before = crate::procs::reaped_children_cpu_seconds();
    let out = Command::new(bin)
        .args(["-t1", &format!("-c{}", args.connections), &format!("-d{}s", args.secs.round() as u64)])
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}/"))
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let (proxy_used, upstreams_used) = (cpu(pids) - proxy_before, cpu(upstreams) - upstreams_before);
    let client_used = crate::procs::reaped_children_cpu_seconds() - client_before;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk against {addr} failed ({}): {}{}", out.status, text, String::from_utf8_lossy(&out.stderr));
    }
    // "  171234 requests in 5.00s, 37.12MB read"
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.trim().parse::<f64>().ok())
        .filter(|&n| n > 0.0);
    let cpu = requests.map(|n| CpuShare {
        proxy: (!pids.is_empty()).then(|| proxy_used * 1e6 / n),
        upstreams: upstreams_used * 1e6 / n,
        client: client_used * 1e6 / n,
    });
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow!("wrk printed no Requests/sec line:\n{text}"))?;
    // "Non-2xx or 3xx responses: N" and "Socket errors: connect A, read B, write C, timeout D".
    let mut failed = 0u64;
    for l in text.lines().map(str::trim) {
        if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            failed += v.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(v) = l.strip_prefix("Socket errors:") {
            failed += v.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum::<u64>();
        }
    }
    Ok((rps, failed, cpu))
}

/// One open-loop run: latency quantiles in ms of the answered requests, and how many requests
/// each version answered.
async fn latency(addr: SocketAddr, args: &RouterArgs) -> Result<(f64, f64, u64, BTreeMap<String, u64>)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let cfg = LoadConfig {
        duration: Some(Duration::from_secs_f64(args.latency_secs)),
        ..LoadConfig::steady(addr, args.rate, 10_000)
    };
    let started = Instant::now();
    let summary = loadgen::run(cfg, Some(tx), CancellationToken::new()).await;
    let skip = started + Duration::from_millis(500);
    let mut ms = Vec::new();
    let mut by_version = BTreeMap::new();
    while let Ok(s) = rx.try_recv() {
        if s.sent_at < skip || s.is_error() {
            continue;
        }
        ms.push(s.done_at.duration_since(s.sent_at).as_secs_f64() * 1000.0);
        *by_version.entry(s.version.unwrap_or_else(|| "(none)".into())).or_insert(0) += 1;
    }
    if ms.is_empty() {
        bail!("no request to {addr} was answered ({} sent, {} failed)", summary.sent, summary.errors);
    }
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    Ok((q(0.5), q(0.99), summary.errors, by_version))
}

struct Measured {
    rps: Vec<f64>,
    /// The proxy's CPU time per request at full throughput (µs), user and system: less noisy
    /// than the throughput on a shared machine, since it does not count the time the proxy
    /// waited for a CPU.
    cpu_us: Vec<f64>,
    /// The upstreams' and wrk's CPU time per request in the same runs (µs).
    upstream_cpu_us: Vec<f64>,
    client_cpu_us: Vec<f64>,
    wrk_failed: u64,
    p50_ms: Vec<f64>,
    p99_ms: Vec<f64>,
    /// p99 minus the direct p99 of the same round.
    added_p99_ms: Vec<f64>,
    load_failed: u64,
    by_version: BTreeMap<String, u64>,
}

/// One figure of a target in one round.
type RoundFigure = fn(&Report, Target, usize) -> Option<f64>;

pub struct Report {
    args: RouterArgs,
    cpus: usize,
    results: BTreeMap<Target, Measured>,
    /// Per proxy: wrk at full throughput while one of two stable replicas is SIGKILLed,
    /// (requests per second, requests that failed).
    killed: BTreeMap<Target, (f64, u64)>,
    /// Per proxy: wrk at full throughput through weight shifts and a restart, the same pair.
    changes: BTreeMap<Target, (f64, u64)>,
}

impl Report {
    fn summary(&self, t: Target, f: impl Fn(&Measured) -> &Vec<f64>) -> Option<Summary> {
        self.results.get(&t).and_then(|m| summarize(f(m)))
    }

    fn ratio(&self) -> Option<f64> {
        self.ratio_of(Target::Router)
    }

    fn added_p99(&self) -> Option<f64> {
        self.added_p99_of(Target::Router)
    }

    /// Throughput over nginx's, of the medians.
    fn ratio_of(&self, t: Target) -> Option<f64> {
        Some(self.summary(t, |m| &m.rps)?.median / self.summary(Target::Nginx, |m| &m.rps)?.median)
    }

    /// Throughput over nginx's in round `i`.
    fn round_ratio(&self, t: Target, i: usize) -> Option<f64> {
        Some(self.results.get(&t)?.rps.get(i)? / self.results.get(&Target::Nginx)?.rps.get(i)?)
    }

    fn cpu_us_of(&self, t: Target) -> Option<f64> {
        Some(self.summary(t, |m| &m.cpu_us)?.median)
    }

    fn round_cpu_us(&self, t: Target, i: usize) -> Option<f64> {
        self.results.get(&t)?.cpu_us.get(i).copied()
    }

    fn round_added_p99(&self, t: Target, i: usize) -> Option<f64> {
        self.results.get(&t)?.added_p99_ms.get(i).copied()
    }

    fn added_p99_of(&self, t: Target) -> Option<f64> {
        Some(self.summary(t, |m| &m.added_p99_ms)?.median)
    }

    /// The baseline's router next to this binary's, on the figures with a bar.
    fn figures(&self) -> Vec<baseline::Figure> {
        let fig = |name: &str, f: &dyn Fn(Target) -> Option<f64>, decimals| baseline::Figure {
            name: name.into(),
            before: f(Target::Baseline),
            after: f(Target::Router),
            decimals,
        };
        vec![
            fig("throughput, router / nginx", &|t| self.ratio_of(t), 2),
            fig("p99 added by the router (ms)", &|t| self.added_p99_of(t), 3),
            fig("router CPU per request (µs)", &|t| self.cpu_us_of(t), 1),
        ]
    }

    fn failures(&self) -> u64 {
        self.results.values().map(|m| m.wrk_failed + m.load_failed).sum()
    }
}

impl crate::Report for Report {
    fn passed(&self) -> bool {
        self.ratio().is_some_and(|r| r >= 1.0)
            && self.added_p99().is_some_and(|a| a < 1.0)
            && self.failures() == 0
            && self.killed.get(&Target::Router).is_some_and(|&(_, failed)| failed == 0)
            && self.changes.get(&Target::Router).is_some_and(|&(_, failed)| failed == 0)
    }

    fn table(&self) -> String {
        use std::fmt::Write as _;
        let a = &self.args;
        let mut o = String::new();
        let _ = writeln!(o, "ringfence-bench router: router overhead next to nginx, same split, same upstreams");
        let _ = writeln!(
            o,
            "  setup    two `ringfence sample-app` upstreams; the new version on {}% of traffic; {} CPUs shared by client, proxies and upstreams",
            a.weight, self.cpus
        );
        let _ = writeln!(
            o,
            "  rounds   {} (targets interleaved); throughput: wrk -t1 -c{} for {} s; latency: open loop at {} req/s for {} s, 10,000 user keys",
            a.rounds, a.connections, a.secs, a.rate, a.latency_secs
        );
        if let Some(b) = &a.baseline {
            let _ = writeln!(
                o,
                "  baseline {}: its router on the same upstreams, nginx and rounds (upstreams: this binary's sample-app)",
                b.display()
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:<20} {:>14} {:>14} {:>12} {:>10} {:>10} {:>13} {:>8}  split (answers per version)",
            "target", "req/s median", "req/s min", "CPU µs/req", "p50 ms", "p99 ms", "p99 added ms", "failed"
        );
        for t in TARGETS {
            let Some(m) = self.results.get(&t) else { continue };
            let s = |v: &Vec<f64>| summarize(v).map_or(f64::NAN, |s| s.median);
            let min = summarize(&m.rps).map_or(f64::NAN, |s| s.min);
            let added = if t == Target::Direct { "-".to_string() } else { format!("{:.3}", s(&m.added_p99_ms)) };
            let cpu = if m.cpu_us.is_empty() { "-".to_string() } else { format!("{:.1}", s(&m.cpu_us)) };
            let total: u64 = m.by_version.values().sum();
            let split: Vec<String> = m
                .by_version
                .iter()
                .map(|(v, n)| format!("{v} {:.1}%", *n as f64 * 100.0 / total.max(1) as f64))
                .collect();
            let _ = writeln!(
                o,
                "  {:<20} {:>14.0} {:>14.0} {:>12} {:>10.3} {:>10.3} {:>13} {:>8}  {}",
                t.name(),
                s(&m.rps),
                min,
                cpu,
                s(&m.p50_ms),
                s(&m.p99_ms),
                added,
                m.wrk_failed + m.load_failed,
                split.join(", ")
            );
        }
        let _ = writeln!(o);
        // Where the machine's CPU went per request under each target (medians over rounds):
        // a proxy that saves its own time but costs the upstreams or the client more shows here.
        let _ = writeln!(o, "  {:<20} {:>12} {:>12} {:>12} {:>12}", "CPU µs/req", "proxy", "upstreams", "wrk", "all");
        for t in TARGETS {
            let Some(m) = self.results.get(&t) else { continue };
            let s = |v: &Vec<f64>| summarize(v).map(|s| s.median);
            let (Some(up), Some(client)) = (s(&m.upstream_cpu_us), s(&m.client_cpu_us)) else { continue };
            let proxy = s(&m.cpu_us);
            let _ = writeln!(
                o,
                "  {:<20} {:>12} {:>12.1} {:>12.1} {:>12.1}",
                t.name(),
                proxy.map_or_else(|| "-".to_string(), |p| format!("{p:.1}")),
                up,
                client,
                proxy.unwrap_or(0.0) + up + client
            );
        }
        let _ = writeln!(o);
        let verdict = |ok: bool| if ok { "met" } else { "NOT MET" };
        match self.ratio() {
            Some(r) => {
                let _ = writeln!(
                    o,
                    "  {:<8} throughput at least nginx's: router/nginx = {r:.2} (medians over rounds)",
                    verdict(r >= 1.0)
                );
            }
            None => {
                let _ = writeln!(o, "  NOT MET  throughput: not measured");
            }
        }
        if let (Some(router), Some(nginx)) = (self.cpu_us_of(Target::Router), self.cpu_us_of(Target::Nginx)) {
            let _ = writeln!(
                o,
                "           CPU per request (not a bar; what the throughput hinges on): router/nginx = {:.2} ({router:.1} / {nginx:.1} µs)",
                router / nginx
            );
        }
        match self.added_p99() {
            Some(ms) => {
                let _ = writeln!(
                    o,
                    "  {:<8} p99 added latency under 1 ms: {ms:.3} ms (median over rounds)",
                    verdict(ms < 1.0)
                );
            }
            None => {
                let _ = writeln!(o, "  NOT MET  p99 added latency: not measured");
            }
        }
        if self.failures() > 0 {
            let _ = writeln!(o, "  NOT MET  {} requests failed", self.failures());
        }
        if let Some(&(_, failed)) = self.killed.get(&Target::Router) {
            let others: Vec<String> = self
                .killed
                .iter()
                .filter(|(t, _)| **t != Target::Router)
                .map(|(t, (_, f))| format!("{} {f}", t.name()))
                .collect();
            let _ = writeln!(
                o,
                "  {:<8} no failed request with a stable replica SIGKILLed at full throughput: {failed} failed ({})",
                verdict(failed == 0),
                others.join(", ")
            );
        }
        if let Some(&(_, failed)) = self.changes.get(&Target::Router) {
            let others: Vec<String> = self
                .changes
                .iter()
                .filter(|(t, _)| **t != Target::Router)
                .map(|(t, (_, f))| format!("{} {f}", t.name()))
                .collect();
            let _ = writeln!(
                o,
                "  {:<8} no failed request through weight shifts ({}% -> 25% -> 50% -> 100% -> 0%) and a restart at full throughput: {failed} failed ({})",
                verdict(failed == 0),
                a.weight,
                others.join(", ")
            );
        }
        if let Some(b) = &a.baseline {
            let _ = writeln!(o);
            baseline::table(&mut o, &b.display().to_string(), &self.figures());
            // Both routers ran in every round, so a round is a pair: a change that is real shows
            // in most pairs, noise of the shared machine flips from round to round.
            let _ = writeln!(o, "  per round, before / after:");
            let per_round: [RoundFigure; 3] = [Report::round_ratio, Report::round_added_p99, Report::round_cpu_us];
            for (figure, f) in self.figures().iter().zip(per_round) {
                let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
                let rounds: Vec<String> = (0..a.rounds as usize)
                    .map(|i| format!("{}/{}", cell(f(self, Target::Baseline, i)), cell(f(self, Target::Router, i))))
                    .collect();
                let _ = writeln!(o, "    {:<38} {}", figure.name, rounds.join("  "));
            }
        }
        o
    }

    fn json(&self) -> Value {
        let targets: serde_json::Map<String, Value> = self
            .results
            .iter()
            .map(|(t, m)| {
                let s = |v: &Vec<f64>| summarize(v).map(|s| s.json());
                (
                    t.key().to_string(),
                    json!({
                        "requests_per_sec": s(&m.rps),
                        "cpu_us_per_request": s(&m.cpu_us),
                        "upstreams_cpu_us_per_request": s(&m.upstream_cpu_us),
                        "wrk_cpu_us_per_request": s(&m.client_cpu_us),
                        "p50_ms": s(&m.p50_ms),
                        "p99_ms": s(&m.p99_ms),
                        "p99_added_ms": if *t == Target::Direct { None } else { s(&m.added_p99_ms) },
                        "failed": m.wrk_failed + m.load_failed,
                        "answers_by_version": m.by_version,
                    }),
                )
            })
            .collect();
        json!({
            "benchmark": "router",
            "rounds": self.args.rounds,
            "connections": self.args.connections,
            "secs": self.args.secs,
            "rate": self.args.rate,
            "weight_percent": self.args.weight,
            "cpus": self.cpus,
            "targets": targets,
            "router_over_nginx_throughput": self.ratio(),
            "router_p99_added_ms": self.added_p99(),
            "replica_killed": self.killed.iter().map(|(t, (rps, failed))| (t.key().to_string(), json!({"rps": rps, "failed": failed}))).collect::<serde_json::Map<String, Value>>(),
            "shifts_and_restart": self.changes.iter().map(|(t, (rps, failed))| (t.key().to_string(), json!({"rps": rps, "failed": failed}))).collect::<serde_json::Map<String, Value>>(),
            "passed": self.passed(),
            "baseline": self.args.baseline.as_ref().map(|b| baseline::json(&b.display().to_string(), &self.figures())),
        })
    }
}

pub async fn run(args: &RouterArgs, ringfence: &Path) -> Result<Report> {
    let wrk_bin = wrk_binary()?;
    let scratch = tempfile::Builder::new().prefix("ringfence-bench-wrk-").tempdir().context("temp dir")?;
    let script = scratch.path().join("users.lua");
    std::fs::write(&script, WRK_USERS).context("write the wrk script")?;
    crate::procs::nginx_binary()?;
    let canary = Upstream::start(ringfence, "v2")?;
    let stable = Upstream::start(ringfence, "v1")?;
    let upstream_pids = [canary.pid(), stable.pid()];
    let weight_bp = args.weight * 100;
    let table = json!({
        "generation": 1,
        "workload": "bench",
        "groups": [
            {"name": "canary", "version": "v2", "weight_bp": weight_bp, "upstreams": [canary.addr.to_string()]},
            {"name": "stable", "version": "v1", "weight_bp": 10_000 - weight_bp, "upstreams": [stable.addr.to_string()]},
        ]
    });
    let router = Router::start(ringfence, &table).await?;
    let before = match &args.baseline {
        Some(b) => Some(Router::start(b, &table).await?),
        None => None,
    };
    let targets: Vec<Target> = TARGETS.into_iter().filter(|t| *t != Target::Baseline || before.is_some()).collect();
    // The same split: by the user key when there is one, else at random per request; the same
    // keep-alive to the upstreams the router keeps; the client's address appended to
    // X-Forwarded-For, as the router does (and any nginx in front of services is set up to).
    let nginx = Nginx::start(&nginx_split(canary.addr, &[stable.addr], args.weight, true))?;
    let addr = |t: Target| match t {
        Target::Direct => stable.addr,
        Target::Router => router.listen,
        Target::Baseline => before.as_ref().expect("a baseline target has a baseline router").listen,
        Target::Nginx => nginx.listen,
    };
    let pids = |t: Target| match t {
        Target::Direct => Vec::new(),
        Target::Router => router.pids(),
        Target::Baseline => before.as_ref().map(Router::pids).unwrap_or_default(),
        Target::Nginx => nginx.pids(),
    };
    let mut results: BTreeMap<Target, Measured> = targets
        .iter()
        .map(|&t| {
            (
                t,
                Measured {
                    rps: Vec::new(),
                    cpu_us: Vec::new(),
                    upstream_cpu_us: Vec::new(),
                    client_cpu_us: Vec::new(),
                    wrk_failed: 0,
                    p50_ms: Vec::new(),
                    p99_ms: Vec::new(),
                    added_p99_ms: Vec::new(),
                    load_failed: 0,
                    by_version: BTreeMap::new(),
                },
            )
        })
        .collect();
    for round in 0..args.rounds as usize {
        let order: Vec<Target> = (0..targets.len()).map(|i| targets[(i + round) % targets.len()]).collect();
        eprintln!("bench: round {}/{}: throughput", round + 1, args.rounds);
        for &t in &order {
            let (rps, failed, cpu) = wrk(&wrk_bin, &script, addr(t), args, &pids(t), &upstream_pids)?;
            let m = results.get_mut(&t).expect("every target");
            m.rps.push(rps);
            if let Some(c) = cpu {
                m.cpu_us.extend(c.proxy);
                m.upstream_cpu_us.push(c.upstreams);
                m.client_cpu_us.push(c.client);
            }
            m.wrk_failed += failed;
        }
        eprintln!("bench: round {}/{}: latency at {} req/s", round + 1, args.rounds, args.rate);
        let mut p99 = BTreeMap::new();
        for &t in &order {
            let (p50, q99, failed, by_version) = latency(addr(t), args).await?;
            let m = results.get_mut(&t).expect("every target");
            m.p50_ms.push(p50);
            m.p99_ms.push(q99);
            m.load_failed += failed;
            for (v, n) in by_version {
                *m.by_version.entry(v).or_insert(0) += n;
            }
            p99.insert(t, q99);
        }
        for &t in targets.iter().filter(|t| **t != Target::Direct) {
            let added = p99[&t] - p99[&Target::Direct];
            results.get_mut(&t).expect("every target").added_p99_ms.push(added);
        }
    }
    drop((nginx, router, before));

    // A stable replica killed at full throughput: each proxy in front of two fresh stable
    // replicas (and the same canary), the first replica SIGKILLed a third into the run.
    let mut killed = BTreeMap::new();
    for &t in targets.iter().filter(|t| **t != Target::Direct) {
        eprintln!("bench: a stable replica SIGKILLed under {}", t.name());
        let (first, second) = (Upstream::start(ringfence, "v1")?, Upstream::start(ringfence, "v1")?);
        let stables = [first.addr.to_string(), second.addr.to_string()];
        let table = json!({
            "generation": 1,
            "workload": "bench",
            "groups": [
                {"name": "canary", "version": "v2", "weight_bp": weight_bp, "upstreams": [canary.addr.to_string()]},
                {"name": "stable", "version": "v1", "weight_bp": 10_000 - weight_bp, "upstreams": stables},
            ]
        });
        let mut router = None;
        let mut nginx = None;
        let listen = match t {
            Target::Router | Target::Baseline => {
                let binary =
                    if t == Target::Router { ringfence } else { args.baseline.as_deref().unwrap_or(ringfence) };
                router.insert(Router::start(binary, &table).await?).listen
            }
            _ => {
                nginx
                    .insert(Nginx::start(&nginx_split(canary.addr, &[first.addr, second.addr], args.weight, false))?)
                    .listen
            }
        };
        let (bin, path, wrk_args) = (wrk_bin.clone(), script.clone(), args.clone());
        let run = std::thread::spawn(move || wrk(&bin, &path, listen, &wrk_args, &[], &[]));
        tokio::time::sleep(Duration::from_secs_f64(args.secs / 3.0)).await;
        drop(first);
        let (rps, failed, _) = run.join().map_err(|_| anyhow!("the wrk thread panicked"))??;
        killed.insert(t, (rps, failed));
        drop((router, nginx, second));
    }

    // Changes at full throughput: the weight shifted step by step, the proxy restarted in the
    // middle, and a fallback to the stable version at the end.
    let mut changes = BTreeMap::new();
    let steps = [Some(25), Some(50), None, Some(100), Some(0)];
    let table_at = |generation: u64, weight: u32| {
        json!({
            "generation": generation,
            "workload": "bench",
            "groups": [
                {"name": "canary", "version": "v2", "weight_bp": weight * 100, "upstreams": [canary.addr.to_string()]},
                {"name": "stable", "version": "v1", "weight_bp": 10_000 - weight * 100, "upstreams": [stable.addr.to_string()]},
            ]
        })
    };
    let long = RouterArgs { secs: args.secs * 3.0, ..args.clone() };
    let pause = Duration::from_secs_f64(long.secs / (steps.len() + 1) as f64);
    for &t in targets.iter().filter(|t| matches!(t, Target::Router | Target::Nginx)) {
        eprintln!("bench: weight shifts and a restart under {}", t.name());
        let mut router = None;
        let mut nginx = None;
        let listen = match t {
            Target::Router => router.insert(Router::start_held(ringfence, &table_at(1, args.weight)).await?).listen,
            _ => nginx.insert(Nginx::start(&nginx_split(canary.addr, &[stable.addr], args.weight, false))?).listen,
        };
        let (bin, path, wrk_args) = (wrk_bin.clone(), script.clone(), long.clone());
        let run = std::thread::spawn(move || wrk(&bin, &path, listen, &wrk_args, &[], &[]));
        let mut weight = args.weight;
        for (i, step) in steps.iter().enumerate() {
            tokio::time::sleep(pause).await;
            weight = step.unwrap_or(weight);
            match (&mut router, &nginx) {
                (Some(r), _) if step.is_some() => r.put_table(&table_at(i as u64 + 2, weight)).await?,
                (Some(r), _) => r.restart(ringfence).await?,
                (_, Some(n)) => n.reload(&nginx_split(canary.addr, &[stable.addr], weight, false))?,
                _ => unreachable!("a proxy was started"),
            }
        }
        let (rps, failed, _) = run.join().map_err(|_| anyhow!("the wrk thread panicked"))??;
        changes.insert(t, (rps, failed));
        drop((router, nginx));
    }
    drop((canary, stable));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Report { args: args.clone(), cpus, results, killed, changes })
}

/// nginx's `http` block splitting users (by `x-user-id`, else at random per request) between
/// the canary and the stable upstreams, `weight` percent to the canary, with keep-alive to the
/// upstreams and the client appended to `X-Forwarded-For` as the router does; `tag_version`
/// passes the upstream's version header on, for the split to be counted.
fn nginx_split(canary: SocketAddr, stables: &[SocketAddr], weight: u32, tag_version: bool) -> String {
    let servers: String = stables.iter().map(|a| format!("server {a}; ")).collect();
    let split = match weight {
        0 => "* stable;".to_string(),
        100 => "* canary;".to_string(),
        w => format!("{w}% canary; * stable;"),
    };
    let tag = if tag_version { "\n      add_header x-ringfence-version $upstream_http_x_sample_version;" } else { "" };
    format!(
        "  upstream canary {{ server {canary}; keepalive 64; }}\n  upstream stable {{ {servers}keepalive 64; }}\n  \
         map $http_x_user_id $split_key {{ \"\" $request_id; default $http_x_user_id; }}\n  \
         split_clients \"$split_key\" $pool {{ {split} }}\n  \
         server {{\n    listen LISTEN;\n    location / {{\n      proxy_pass http://$pool;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;{tag}\n    }}\n  }}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Report as _;

    fn measured(rps: Vec<f64>, added_p99_ms: Vec<f64>, cpu_us: Vec<f64>) -> Measured {
        Measured {
            rps,
            cpu_us,
            upstream_cpu_us: vec![30.0, 30.0],
            client_cpu_us: vec![8.0, 8.0],
            wrk_failed: 0,
            p50_ms: vec![0.2, 0.2],
            p99_ms: vec![0.4, 0.4],
            added_p99_ms,
            load_failed: 0,
            by_version: BTreeMap::new(),
        }
    }

    #[test]
    fn a_baseline_router_is_compared_on_the_medians_and_round_by_round() {
        let args = RouterArgs {
            rounds: 2,
            secs: 5.0,
            connections: 32,
            rate: 1000.0,
            latency_secs: 5.0,
            weight: 10,
            baseline: Some("/old/ringfence".into()),
            output: Output::Table,
        };
        let results = BTreeMap::from([
            (Target::Direct, measured(vec![80_000.0, 80_000.0], vec![], vec![])),
            (Target::Router, measured(vec![36_000.0, 44_000.0], vec![0.2, 0.3], vec![26.0, 28.0])),
            (Target::Baseline, measured(vec![40_000.0, 40_000.0], vec![0.1, 0.3], vec![29.0, 31.0])),
            (Target::Nginx, measured(vec![40_000.0, 40_000.0], vec![0.1, 0.1], vec![20.0, 22.0])),
        ]);
        let report = Report { args, cpus: 2, results, killed: BTreeMap::new(), changes: BTreeMap::new() };
        let t = report.table();
        assert!(t.contains("router/nginx = 1.00"), "{t}");
        assert!(t.contains("throughput, router / nginx                     1.00       1.00          1.00"), "{t}");
        assert!(t.contains("p99 added by the router (ms)                  0.200      0.250          1.25"), "{t}");
        assert!(t.contains("1.00/0.90  1.00/1.10"), "{t}");
        assert!(t.contains("0.10/0.20  0.30/0.30"), "{t}");
        assert_eq!(report.json()["baseline"]["figures"][1]["after_over_before"], json!(1.25));
        assert!(t.contains("router/nginx = 1.29 (27.0 / 21.0 µs)"), "{t}");
        assert!(t.contains("router CPU per request (µs)                    30.0       27.0          0.90"), "{t}");
        assert!(t.contains("29.00/26.00  31.00/28.00"), "{t}");
        assert_eq!(report.json()["targets"]["nginx"]["cpu_us_per_request"]["median"], json!(21.0));
    }
}
