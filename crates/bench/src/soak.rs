//! A soak: continuous deploys on a few workloads through the real stack for a set time, one
//! release in three bad (halted and sent back), users' traffic on each workload all along.
//! Every few seconds the server's resident memory and open files, the routers' memory and
//! the event log's size are sampled; each rollout's time from deploy to its end is kept.
//!
//! Bars, comparing the last third of the run with the first: the server's memory at most
//! 1.5 times, its open files at most 10 more, and the median time of a healthy rollout at
//! most 1.5 times (a controller falling behind shows there first). The log grows with the
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
}

fn spec(name: &str) -> String {
    workload::sample_spec(
        name,
        1,
        &[("canary", 20, "2s"), ("all", 100, "1s")],
        "[health]\nmax_error_rate = 0.05\nmin_requests = 20\n\n[health.analysis]\npower = 0",
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
            bail!("{name}: the rollout of {version} ended {status}, expected {expected}");
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
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let (server_rss_mb, server_fds) = proc_usage(pid);
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
            Ok((samples, all))
        },
        "the server and its processes were stopped",
    );
    let _ = server.stop_and_tell("bench");
    let (mut samples, done) = outcome?;
    for s in &mut samples {
        s.rollouts = done.iter().filter(|d| d.at_s <= s.at_s).count();
    }
    Ok(Report { minutes: args.minutes, workloads: args.workloads, samples, done })
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
        self.enough() && self.memory_growth() <= 1.5 && self.fds_added() <= 10.0 && self.rollout_growth() <= 1.5
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
            "  {:>7} {:>9} {:>14} {:>11} {:>16} {:>8}",
            "s", "rollouts", "server RSS MiB", "server fds", "routers RSS MiB", "log MiB"
        );
        let step = (self.samples.len() / 12).max(1);
        for s in self.samples.iter().step_by(step).chain(self.samples.last()) {
            let _ = writeln!(
                o,
                "  {:>7.0} {:>9} {:>14.1} {:>11} {:>16.1} {:>8.2}",
                s.at_s, s.rollouts, s.server_rss_mb, s.server_fds, s.routers_rss_mb, s.log_mb
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
                "server_fds": s.server_fds,
                "routers_rss_mib": stats::round3(s.routers_rss_mb),
                "log_mib": stats::round3(s.log_mb),
            })).collect::<Vec<_>>(),
            "server_memory_growth": stats::round3(self.memory_growth()),
            "server_fds_added": self.fds_added(),
            "healthy_rollout_time_growth": stats::round3(self.rollout_growth()),
            "log_kib_per_rollout": stats::round3(self.log_per_rollout_kb()),
            "passed": crate::Report::passed(self),
        })
    }
}
