//! A soak: continuous deploys on a few workloads through the real stack for a set time, one
//! release in three bad (halted and sent back), users' traffic on each workload all along.
//! Every few seconds the server's resident memory and open files, the routers' memory and
//! the event log's size are sampled; each rollout's time from deploy to its end is kept.
//!
//! Bars, comparing the last third of the run with the first: the server's memory at most
//! 1.5 times, its open files at most 10 more, the median time of a healthy rollout at most 1.5
//! times (a controller falling behind shows there first), the server's CPU time at most 1.5
//! times (work per tick growing with the history shows there), and the lag of a step due (how
//! long after a phase's bake ended the controller passed it, read back from the log) under
//! 1 s at the 99th percentile in the last third as in the first. The log grows with the
//! rollouts, so its size is reported per rollout, not judged.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use ringfence::client::ApiClient;
use serde_json::json;

use crate::server::Server;
use crate::{Output, stats, workload};

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// How long deploys go on.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Workloads deploying at once.
    #[arg(long, default_value_t = 2)]
    pub workloads: u32,
    /// Users' requests per second on each workload.
    #[arg(long, default_value_t = 50.0)]
    pub rps: f64,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

impl SoakArgs {
    pub fn validate(&self) -> Result<()> {
        if !(0.5..=600.0).contains(&self.minutes) {
            bail!("--minutes: expected 0.5 to 600, found {}", self.minutes);
        }
        if !(1..=10).contains(&self.workloads) {
            bail!("--workloads: expected 1 to 10, found {}", self.workloads);
        }
        if !(1.0..=1_000.0).contains(&self.rps) {
            bail!("--rps: expected 1 to 1000, found {}", self.rps);
        }
        Ok(())
    }
}

/// One sample of the processes and the log.
struct Sample {
    at_s: f64,
    rollouts: usize,
    server_rss_mb: f64,
    /// The server's CPU time since the sample before, over the wall time between (%).
    server_cpu_pct: f64,
    server_fds: usize,
    routers_rss_mb: f64,
    log_mb: f64,
}

/// One rollout: when it ended (s into the run), how long it took, how it ended.
struct Done {
    at_s: f64,
    secs: f64,
    bad: bool,
    status: String,
}

pub struct Report {
    minutes: f64,
    workloads: u32,
    samples: Vec<Sample>,
    done: Vec<Done>,
    /// Every phase the controller passed: when (s into the run) and how late after its bake (ms).
    lags: Vec<(f64, f64)>,
    /// Phases held past their bake for want of users' requests (not lateness).
    evidence_held: usize,
}

/// The lag bar: a step due is taken within this, at the 99th percentile.
const LAG_BAR_MS: f64 = 1000.0;

/// The soak's phases' bakes in ms, by phase number (as in `spec`).
fn bake_ms(phase: u64) -> i64 {
    if phase == 0 { 2000 } else { 1000 }
}

/// Each workload keeps its newest 100 rollouts in memory (`[history]`; 1,000 by default): the
/// hour's 1,400 rollouts per workload cross that bound many times over, as months of deploys
/// would cross the default's.
fn spec(name: &str) -> String {
    workload::sample_spec(
        name,
        1,
        &[("canary", 20, "2s"), ("all", 100, "1s")],
        "[health]\nmax_error_rate = 0.05\nmin_requests = 20\n\n[health.analysis]\npower = 0\n\n[history]\nrollouts = 100",
    )
}

/// Resident memory in MiB and open files of a process, from /proc.
fn proc_usage(pid: u32) -> (f64, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (crate::procs::rss_mib(pid), fds)
}

/// The event log's files (the database and its write-ahead log), in MiB.
fn log_mb(data: &Path) -> f64 {
    let Ok(dir) = std::fs::read_dir(data) else { return 0.0 };
    let prefix = ringfence_store::LOG_FILE;
    let bytes: u64 = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    bytes as f64 / (1024.0 * 1024.0)
}

/// Deploys on `name` until `until`: releases v2, v3, ..., every third one bad.
async fn deploy_loop(api: &ApiClient, name: &str, t0: Instant, until: Instant) -> Result<Vec<Done>> {
    let mut done = Vec::new();
    let mut n = 2u32;
    while Instant::now() < until {
        let bad = n % 3 == 1;
        let version = format!("v{n}");
        let config = if bad { json!({"SAMPLE_ERROR_RATE": "0.3"}) } else { json!({}) };
        workload::create_release(api, name, &version, &config, if bad { "bad" } else { "healthy" }).await?;
        let sent = Instant::now();
        let id = workload::deploy(api, name, &version).await?;
        let status = workload::wait_rollout(api, name, &id, Duration::from_secs(180)).await?;
        let expected = if bad { "mitigated" } else { "completed" };
        if status != expected {
            // What decided it, so a false halt can be read from the run's output.
            let r = workload::rollout(api, name, &id).await.unwrap_or_default();
            bail!(
                "{name}: the rollout {id} of {version} ended {status}, expected {expected}; decision: {}; last verdict: {}; windows: {}",
                r["decision"],
                r["last_verdict"],
                r["windows"]
            );
        }
        done.push(Done { at_s: t0.elapsed().as_secs_f64(), secs: sent.elapsed().as_secs_f64(), bad, status });
        n += 1;
    }
    Ok(done)
}

pub fn run(args: &SoakArgs, ringfence: &Path) -> Result<Report> {
    let mut server = Server::start(ringfence, None, false)?;
    let pid = server.pid().ok_or_else(|| anyhow::anyhow!("the server has no process"))?;
    let data = server.data_dir().to_path_buf();
    let api = server.api()?;
    let names: Vec<String> = (0..args.workloads).map(|i| format!("soak-{i}")).collect();
    let minutes = args.minutes;
    let outcome = crate::block_on(
        async {
            let mut loads = Vec::new();
            for name in &names {
                workload::apply_spec(&api, name, &spec(name)).await?;
                workload::create_release(&api, name, "v1", &json!({}), "first").await?;
                let id = workload::deploy(&api, name, "v1").await?;
                if workload::wait_rollout(&api, name, &id, Duration::from_secs(120)).await? != "completed" {
                    bail!("{name}: the first deploy did not complete");
                }
                let router = workload::router_address(&api, name).await?;
                loads.push(workload::Load::start(ringfence::loadgen::LoadConfig::steady(router, args.rps, 100), None)?);
            }
            let t0 = Instant::now();
            let t0_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let until = t0 + Duration::from_secs_f64(minutes * 60.0);
            let tasks: Vec<_> = names
                .iter()
                .map(|n| {
                    let (api, name) = (api.clone(), n.clone());
                    tokio::spawn(async move { deploy_loop(&api, &name, t0, until).await })
                })
                .collect();
            let deploys = async {
                let mut out = Vec::new();
                for task in tasks {
                    out.push(task.await.map_err(|e| anyhow::anyhow!("a deploy loop panicked: {e}")).and_then(|r| r));
                }
                out
            };
            let sampler = async {
                let mut samples = Vec::new();
                let mut cpu_before = (Instant::now(), crate::procs::cpu_seconds(pid));
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let (server_rss_mb, server_fds) = proc_usage(pid);
                    let cpu_now = (Instant::now(), crate::procs::cpu_seconds(pid));
                    let server_cpu_pct =
                        (cpu_now.1 - cpu_before.1) * 100.0 / cpu_now.0.duration_since(cpu_before.0).as_secs_f64();
                    cpu_before = cpu_now;
                    let mut routers_rss_mb = 0.0;
                    for name in &names {
                        if let Ok(s) = workload::status(&api, name).await
                            && let Some(p) = s["router"]["pid"].as_u64()
                        {
                            routers_rss_mb += proc_usage(p as u32).0;
                        }
                    }
                    samples.push(Sample {
                        at_s: t0.elapsed().as_secs_f64(),
                        rollouts: 0,
                        server_rss_mb,
                        server_cpu_pct,
                        server_fds,
                        routers_rss_mb,
                        log_mb: log_mb(&data),
                    });
                }
                samples
            };
            let (done, samples) = tokio::join!(deploys, sampler);
            for load in loads {
                load.stop().await;
            }
            let mut all = Vec::new();
            for d in done {
                all.extend(d?);
            }
            all.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
            // Each step's lag, from the log: when its bake ended, when the controller passed it.
            let mut lags = Vec::new();
            let mut evidence_held = 0;
            for name in &names {
                let events = workload::workload_events(&api, name).await?;
                for r in crate::scale::rollout_steps(&events, &bake_ms).into_values() {
                    for step in r.steps.iter().filter(|s| s.due >= t0_ms) {
                        if step.wanted_requests {
                            evidence_held += 1;
                        } else {
                            lags.push(((step.passed - t0_ms) as f64 / 1000.0, (step.passed - step.due) as f64));
                        }
                    }
                }
            }
            lags.sort_by(|a, b| a.0.total_cmp(&b.0));
            Ok((samples, all, lags, evidence_held))
        },
        "the server and its processes were stopped",
    );
    let _ = server.stop_and_tell("bench");
    let (mut samples, done, lags, evidence_held) = outcome?;
    for s in &mut samples {
        s.rollouts = done.iter().filter(|d| d.at_s <= s.at_s).count();
    }
    Ok(Report { minutes: args.minutes, workloads: args.workloads, samples, done, lags, evidence_held })
}

impl Report {
    fn thirds<T>(items: &[T]) -> (&[T], &[T]) {
        let n = items.len() / 3;
        (&items[..n], &items[items.len() - n..])
    }

    fn growth(first: &[f64], last: &[f64]) -> f64 {
        match (stats::median(first.iter().copied()), stats::median(last.iter().copied())) {
            (Some(a), Some(b)) if a > 0.0 => b / a,
            _ => f64::NAN,
        }
    }

    fn memory_growth(&self) -> f64 {
        let (a, b) = Report::thirds(&self.samples);
        Report::growth(
            &a.iter().map(|s| s.server_rss_mb).collect::<Vec<_>>(),
            &b.iter().map(|s| s.server_rss_mb).collect::<Vec<_>>(),
        )
    }

    fn fds_added(&self) -> f64 {
        let (a, b) = Report::thirds(&self.samples);
        let m = |s: &[Sample]| stats::median(s.iter().map(|s| s.server_fds as f64)).unwrap_or(f64::NAN);
        m(b) - m(a)
    }

    fn rollout_growth(&self) -> f64 {
        let healthy: Vec<&Done> = self.done.iter().filter(|d| !d.bad).collect();
        let (a, b) = Report::thirds(&healthy);
        Report::growth(&a.iter().map(|d| d.secs).collect::<Vec<_>>(), &b.iter().map(|d| d.secs).collect::<Vec<_>>())
    }

    fn cpu_growth(&self) -> f64 {
        let (a, b) = Report::thirds(&self.samples);
        Report::growth(
            &a.iter().map(|s| s.server_cpu_pct).collect::<Vec<_>>(),
            &b.iter().map(|s| s.server_cpu_pct).collect::<Vec<_>>(),
        )
    }

    /// The lag's quantile `q` (ms) over the steps passed in the first and in the last third of
    /// the run's time.
    fn lag_by_third(&self, q: f64) -> (f64, f64) {
        let third = self.minutes * 60.0 / 3.0;
        let quantile = |from: f64, to: f64| {
            stats::quantile(self.lags.iter().filter(|(at, _)| (from..to).contains(at)).map(|l| l.1), q)
                .unwrap_or(f64::NAN)
        };
        (quantile(0.0, third), quantile(2.0 * third, f64::INFINITY))
    }

    fn lag_met(&self) -> bool {
        let (first, last) = self.lag_by_third(0.99);
        first < LAG_BAR_MS && last < LAG_BAR_MS
    }

    fn log_per_rollout_kb(&self) -> f64 {
        match (self.samples.first(), self.samples.last()) {
            (Some(a), Some(b)) if b.rollouts > a.rollouts => {
                (b.log_mb - a.log_mb) * 1024.0 / (b.rollouts - a.rollouts) as f64
            }
            _ => f64::NAN,
        }
    }

    fn enough(&self) -> bool {
        self.samples.len() >= 6 && self.done.iter().filter(|d| !d.bad).count() >= 6
    }
}

impl crate::Report for Report {
    fn passed(&self) -> bool {
        self.enough()
            && self.memory_growth() <= 1.5
            && self.fds_added() <= 10.0
            && self.rollout_growth() <= 1.5
            && self.cpu_growth() <= 1.5
            && self.lag_met()
    }

    fn table(&self) -> String {
        let mut o = String::new();
        let bad = self.done.iter().filter(|d| d.bad).count();
        let _ = writeln!(o, "ringfence-bench soak: continuous deploys through the real stack");
        let _ = writeln!(
            o,
            "  setup    {} workloads deploying for {} min, one release in three bad (halted, sent back), users' traffic all along",
            self.workloads, self.minutes
        );
        let _ = writeln!(
            o,
            "  rollouts {} ({} healthy completed, {bad} bad mitigated)",
            self.done.len(),
            self.done.len() - bad
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:>7} {:>9} {:>14} {:>13} {:>11} {:>16} {:>8}",
            "s", "rollouts", "server RSS MiB", "server CPU %", "server fds", "routers RSS MiB", "log MiB"
        );
        let step = (self.samples.len() / 12).max(1);
        for s in self.samples.iter().step_by(step).chain(self.samples.last()) {
            let _ = writeln!(
                o,
                "  {:>7.0} {:>9} {:>14.1} {:>13.1} {:>11} {:>16.1} {:>8.2}",
                s.at_s, s.rollouts, s.server_rss_mb, s.server_cpu_pct, s.server_fds, s.routers_rss_mb, s.log_mb
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "  log growth: {:.1} KiB per rollout", self.log_per_rollout_kb());
        let verdict = |ok: bool| if ok { "met    " } else { "NOT MET" };
        if !self.enough() {
            let _ = writeln!(o, "  NOT MET  too short to judge: at least 6 samples and 6 healthy rollouts are needed");
        }
        let m = self.memory_growth();
        let _ =
            writeln!(o, "  {}  server memory, last third / first third: {m:.2} (bar: at most 1.5)", verdict(m <= 1.5));
        let f = self.fds_added();
        let _ = writeln!(
            o,
            "  {}  server open files, last third - first third: {f:+.0} (bar: at most +10)",
            verdict(f <= 10.0)
        );
        let r = self.rollout_growth();
        let _ = writeln!(
            o,
            "  {}  healthy rollout time, last third / first third: {r:.2} (bar: at most 1.5)",
            verdict(r <= 1.5)
        );
        let c = self.cpu_growth();
        let _ = writeln!(
            o,
            "  {}  server CPU time, last third / first third: {c:.2} (bar: at most 1.5)",
            verdict(c <= 1.5)
        );
        let ((p50_first, p50_last), (p99_first, p99_last)) = (self.lag_by_third(0.5), self.lag_by_third(0.99));
        let _ = writeln!(
            o,
            "  {}  lag of a step due, over {} steps: first third p50 {p50_first:.0} ms, p99 {p99_first:.0} ms; last third p50 {p50_last:.0} ms, p99 {p99_last:.0} ms (bar: p99 under {LAG_BAR_MS:.0} ms in both)",
            verdict(self.lag_met()),
            self.lags.len()
        );
        if self.evidence_held > 0 {
            let _ = writeln!(
                o,
                "           {} phases held past their bake for want of users' requests: waiting for evidence, not counted as lag",
                self.evidence_held
            );
        }
        o
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "benchmark": "soak",
            "minutes": self.minutes,
            "workloads": self.workloads,
            "rollouts": self.done.len(),
            "statuses": self.done.iter().map(|d| d.status.as_str()).collect::<Vec<_>>(),
            "samples": self.samples.iter().map(|s| json!({
                "s": stats::round3(s.at_s),
                "rollouts": s.rollouts,
                "server_rss_mib": stats::round3(s.server_rss_mb),
                "server_cpu_percent": stats::round3(s.server_cpu_pct),
                "server_fds": s.server_fds,
                "routers_rss_mib": stats::round3(s.routers_rss_mb),
                "log_mib": stats::round3(s.log_mb),
            })).collect::<Vec<_>>(),
            "server_memory_growth": stats::round3(self.memory_growth()),
            "server_fds_added": self.fds_added(),
            "healthy_rollout_time_growth": stats::round3(self.rollout_growth()),
            "server_cpu_growth": stats::round3(self.cpu_growth()),
            "lag_ms": {
                "steps": self.lags.len(),
                "evidence_held": self.evidence_held,
                "first_third": {"p50": stats::round3(self.lag_by_third(0.5).0), "p99": stats::round3(self.lag_by_third(0.99).0)},
                "last_third": {"p50": stats::round3(self.lag_by_third(0.5).1), "p99": stats::round3(self.lag_by_third(0.99).1)},
            },
            "log_kib_per_rollout": stats::round3(self.log_per_rollout_kb()),
            "passed": crate::Report::passed(self),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Report as _;

    fn report(cpu_last: f64, lag_last_ms: f64) -> Report {
        // 60 samples over 5 minutes, steady but for the last third's CPU.
        let samples = (0..60)
            .map(|i| Sample {
                at_s: 5.0 * (i + 1) as f64,
                rollouts: i * 2,
                server_rss_mb: 40.0,
                server_cpu_pct: if i >= 40 { cpu_last } else { 20.0 },
                server_fds: 30,
                routers_rss_mb: 50.0,
                log_mb: i as f64 * 0.1,
            })
            .collect();
        let done = (0..30)
            .map(|i| Done { at_s: 10.0 * i as f64, secs: 4.0, bad: i % 3 == 1, status: "completed".into() })
            .collect();
        // A step every second; the last third's late by `lag_last_ms`.
        let lags = (0..300).map(|s| (s as f64, if s >= 200 { lag_last_ms } else { 40.0 })).collect();
        Report { minutes: 5.0, workloads: 2, samples, done, lags, evidence_held: 3 }
    }

    #[test]
    fn the_lag_and_the_cpu_are_judged_on_the_first_and_last_thirds() {
        let steady = report(22.0, 60.0);
        assert_eq!(steady.lag_by_third(0.99), (40.0, 60.0));
        assert!((steady.cpu_growth() - 1.1).abs() < 1e-9, "{}", steady.cpu_growth());
        assert!(steady.passed(), "{}", steady.table());
        let t = steady.table();
        assert!(t.contains("met      lag of a step due, over 300 steps: first third p50 40 ms, p99 40 ms; last third p50 60 ms, p99 60 ms"), "{t}");
        assert!(t.contains("3 phases held past their bake"), "{t}");

        let behind = report(22.0, 1500.0);
        assert!(!behind.passed());
        assert!(behind.table().contains("NOT MET  lag of a step due"), "{}", behind.table());

        let busier = report(40.0, 60.0);
        assert!(!busier.passed());
        assert!(
            busier.table().contains("NOT MET  server CPU time, last third / first third: 2.00"),
            "{}",
            busier.table()
        );
    }
}
