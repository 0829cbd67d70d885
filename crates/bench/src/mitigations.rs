//! `ringfence-bench mitigations`: how fast each mitigation restores health, side by side in
//! one run, through the real server, routers, replicas and HTTP load.
//!
//! Each run gives every mitigation its own workload (the demo's, cut to a 10% phase and 100%),
//! interleaved so drift over the run affects them alike. The clock starts when the mitigation
//! is decided or a person asked for it, and stops when users are served healthily again:
//!
//! - **fallback** (automatic): `rollout_halted` -> `mitigation_completed`, verified (traffic on
//!   the stable version, the new one stopped, the stable's probes passing);
//! - **rollback** (a person): `POST .../rollback` after a completed release -> the router
//!   serving only the last known good again;
//! - **bypass** (an approver): `bypass_approved` -> the last failed request users saw (the guard
//!   flag off through OFREP, the release kept);
//! - **roll forward** (a person): the hotfix's `rollout_started`, replacing a halted rollout ->
//!   the last failed request users saw;
//! - **redeploy** (a person): `redeploy_requested` -> the last fresh instance serving.
//!
//! Users' failures during each interval are counted too: a fast mitigation that fails users
//! on the way is not a good one.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ringfence::client::ApiClient;
use ringfence::loadgen::{LoadConfig, Sample};
use serde_json::{Value, json};

use crate::Output;
use crate::server::Server;
use crate::stats::{self, round3};
use crate::workload::{self, Clock, Load, apply_spec, create_release, deploy, wait_rollout, workload_events};

#[derive(Args, Debug, Clone)]
pub struct MitigationsArgs {
    /// Runs per mitigation.
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Requests per second of user traffic through the workload's router.
    #[arg(long, default_value_t = 200.0)]
    pub rps: f64,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

impl MitigationsArgs {
    pub fn validate(&self) -> Result<()> {
        if !(1..=100).contains(&self.runs) {
            bail!("--runs must be between 1 and 100, got {}", self.runs);
        }
        if !(self.rps.is_finite() && (20.0..=5_000.0).contains(&self.rps)) {
            bail!("--rps must be between 20 and 5000, got {}", self.rps);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fallback,
    Rollback,
    Bypass,
    RollForward,
    Redeploy,
}

const KINDS: [Kind; 5] = [Kind::Fallback, Kind::Rollback, Kind::Bypass, Kind::RollForward, Kind::Redeploy];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Fallback => "fallback",
            Kind::Rollback => "rollback",
            Kind::Bypass => "bypass",
            Kind::RollForward => "roll forward",
            Kind::Redeploy => "redeploy",
        }
    }

    fn interval(self) -> &'static str {
        match self {
            Kind::Fallback => "rollout_halted -> mitigation_completed (verified)",
            Kind::Rollback => "rollback asked -> router serves only the last known good",
            Kind::Bypass => "bypass_approved -> last failed request users saw",
            Kind::RollForward => "hotfix rollout_started -> last failed request users saw",
            Kind::Redeploy => "redeploy_requested -> last fresh instance started",
        }
    }
}

/// One measurement: the interval and the users' failures in it.
#[derive(Debug, Clone)]
struct Run {
    ms: f64,
    failed: usize,
    /// Requests users saw fail before the interval: the failure being mitigated.
    failed_before: usize,
}

pub struct Report {
    args: MitigationsArgs,
    results: Vec<(Kind, Vec<Run>, Vec<String>)>,
}

pub async fn run(args: &MitigationsArgs, server: &mut Server) -> Result<Report> {
    let api = server.api()?;
    let mut results: Vec<(Kind, Vec<Run>, Vec<String>)> = KINDS.iter().map(|k| (*k, Vec::new(), Vec::new())).collect();
    let total = args.runs as usize * KINDS.len();
    let mut done = 0;
    for run in 1..=args.runs {
        for (kind, runs, failures) in results.iter_mut() {
            done += 1;
            let name = format!("mits-{}-r{run:02}", kind.name().replace(' ', "-"));
            let started = Instant::now();
            match one(&api, args, *kind, &name).await {
                Ok(r) => {
                    eprintln!(
                        "[{done:>3}/{total}] {name}: {} in {:.3} s, {} failed request(s) in it, {} before [{:.1} s]",
                        kind.name(),
                        r.ms / 1000.0,
                        r.failed,
                        r.failed_before,
                        started.elapsed().as_secs_f64()
                    );
                    runs.push(r);
                }
                Err(e) => {
                    server.check_alive()?;
                    eprintln!("[{done:>3}/{total}] {name}: FAILED: {e:#}");
                    failures.push(format!("run {run}: {e:#}"));
                }
            }
        }
    }
    Ok(Report { args: args.clone(), results })
}

/// The demo's workload, cut to a 10% phase and 100%, with what each mitigation needs.
fn spec(name: &str, kind: Kind, first_bake: &str) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = ringfence::demo::DEMO_SPEC.parse().context("the demo's spec is not TOML")?;
    doc["workload"]["name"] = toml_edit::value(name);
    let phases = doc["rollout"]["phases"]
        .as_array_of_tables_mut()
        .ok_or_else(|| anyhow!("the demo's spec has no [[rollout.phases]]"))?;
    phases.retain(|p| matches!(p.get("name").and_then(|n| n.as_str()), Some("canary" | "full")));
    for p in phases.iter_mut() {
        let first = p.get("name").and_then(|n| n.as_str()) == Some("canary");
        p["weight"] = toml_edit::value(if first { 10 } else { 100 });
        p["bake"] = toml_edit::value(if first { first_bake } else { "3s" });
    }
    doc["health"]["max_error_rate"] = toml_edit::value(0.05);
    doc["health"]["min_requests"] = toml_edit::value(20);
    // The healthy release of the rollback case passes its short phases without waiting for
    // the evidence to prove it as good (what is measured is the way back, not the way there).
    if kind == Kind::Rollback {
        doc["health"]["analysis"]["power"] = toml_edit::value(0.0);
    }
    match kind {
        Kind::Bypass => {
            doc["mitigation"]["bypass_approvers"] = toml_edit::value(toml_edit::Array::from_iter(["admin"]));
            doc["mitigation"]["bypass_wait"] = toml_edit::value("5m");
            doc["executor"]["env"]["SAMPLE_FAIL_ON_FLAG"] = toml_edit::value("new-path");
        }
        Kind::RollForward => doc["mitigation"]["auto_fallback"] = toml_edit::value(false),
        _ => {}
    }
    Ok(doc.to_string())
}

async fn one(api: &ApiClient, args: &MitigationsArgs, kind: Kind, name: &str) -> Result<Run> {
    // A first deploy bakes as long as the first phase: short for the setup, long (so the
    // mitigation, not the end of a bake, ends the phase) for what is measured.
    apply_spec(api, name, &spec(name, kind, "2s")?).await?;
    let bad = json!({"SAMPLE_ERROR_RATE": "0.2"});
    create_release(api, name, "v1", &json!({}), "healthy").await?;
    let first = deploy(api, name, "v1").await?;
    if wait_rollout(api, name, &first, Duration::from_secs(60)).await? != "completed" {
        bail!("setup: the first deploy of v1 did not complete");
    }
    apply_spec(api, name, &spec(name, kind, if kind == Kind::Rollback { "3s" } else { "60s" })?).await?;
    let router = workload::router_address(api, name).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let clock = Clock::now();
    let load = Load::start(LoadConfig::steady(router, args.rps, 1000), Some(tx))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let limit = Duration::from_secs(120);
    let t0_t1 = match kind {
        Kind::Fallback => {
            create_release(api, name, "v2", &bad, "bad").await?;
            let id = deploy(api, name, "v2").await?;
            wait_rollout(api, name, &id, limit).await?;
            let ev = workload_events(api, name).await?;
            let t0 = at(&ev, |e| e["type"] == "rollout_halted" && e["rollout_id"] == id.as_str())?;
            let t1 = at(&ev, |e| {
                e["type"] == "mitigation_completed" && e["rollout_id"] == id.as_str() && e["verified"] == true
            })?;
            (t0, Some(t1))
        }
        Kind::Rollback => {
            create_release(api, name, "v2", &json!({}), "healthy, later found wrong").await?;
            let id = deploy(api, name, "v2").await?;
            if wait_rollout(api, name, &id, limit).await? != "completed" {
                bail!("v2 did not complete");
            }
            let _: Value =
                api.post(&format!("/v1/workloads/{name}/rollback"), &json!({"reason": "ringfence-bench"})).await?;
            let back = wait_for_event(api, name, limit, |ev| {
                let asked = ev.iter().rposition(|e| e["type"] == "rollout_started" && e["kind"] == "rollback")?;
                let t0 = ev[asked]["at"].as_f64()?;
                let t1 = ev[asked..].iter().find(|e| {
                    e["type"] == "action_succeeded"
                        && e["detail"].as_str().is_some_and(|d| d.starts_with("route 100% v1"))
                })?["at"]
                    .as_f64()?;
                Some((t0, t1))
            })
            .await?;
            (back.0, Some(back.1))
        }
        Kind::Bypass => {
            let flags = |on: bool| json!({"flags": {"new-path": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": if on { "on" } else { "off" }}}});
            let body = json!({"version": "v2", "artifact": "sample-app v2", "config": {"SAMPLE_ERROR_RATE": "0"}, "guarded_by": ["new-path"], "flags": flags(true)});
            let _: Value = api.post(&format!("/v1/workloads/{name}/releases"), &body).await?;
            let id = deploy(api, name, "v2").await?;
            wait_status(api, name, &id, "halted", limit).await?;
            let _: Value =
                api.post(&format!("/v1/workloads/{name}/bypass"), &json!({"reason": "ringfence-bench"})).await?;
            let ev = workload_events(api, name).await?;
            (at(&ev, |e| e["type"] == "bypass_approved")?, None)
        }
        Kind::RollForward => {
            create_release(api, name, "v2", &bad, "bad").await?;
            let id = deploy(api, name, "v2").await?;
            wait_status(api, name, &id, "halted", limit).await?;
            let body = json!({"version": "v3", "artifact": "sample-app v3", "hotfix_for": "v2"});
            let _: Value = api.post(&format!("/v1/workloads/{name}/releases"), &body).await?;
            let hotfix = deploy(api, name, "v3").await?;
            let ev = workload_events(api, name).await?;
            (at(&ev, |e| e["type"] == "rollout_started" && e["rollout_id"] == hotfix.as_str())?, None)
        }
        Kind::Redeploy => {
            let _: Value =
                api.post(&format!("/v1/workloads/{name}/redeploy"), &json!({"reason": "ringfence-bench"})).await?;
            let r = wait_for_event(api, name, limit, |ev| {
                let asked = ev.iter().rposition(|e| e["type"] == "redeploy_requested")?;
                let started: Vec<f64> = ev[asked..]
                    .iter()
                    .filter(|e| e["type"] == "replica_started")
                    .filter_map(|e| e["at"].as_f64())
                    .collect();
                (started.len() >= 2).then(|| (ev[asked]["at"].as_f64().unwrap_or(0.0), started[started.len() - 1]))
            })
            .await?;
            (r.0, Some(r.1))
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop().await;
    let mut samples: Vec<Sample> = Vec::new();
    while let Some(s) = rx.recv().await {
        samples.push(s);
    }
    let (t0, t1) = t0_t1;
    let failed_after = |from: f64| samples.iter().filter(move |s| s.is_error() && clock.wall_ms(s.done_at) >= from);
    // Without an event that ends it, health is back when users stop failing.
    let t1 = t1.unwrap_or_else(|| failed_after(t0).map(|s| clock.wall_ms(s.done_at)).fold(t0, f64::max));
    let failed = failed_after(t0).filter(|s| clock.wall_ms(s.done_at) <= t1).count();
    let failed_before = samples.iter().filter(|s| s.is_error() && clock.wall_ms(s.done_at) < t0).count();
    Ok(Run { ms: t1 - t0, failed, failed_before })
}

/// The time of the first event `f` picks.
fn at(events: &[Value], f: impl Fn(&Value) -> bool) -> Result<f64> {
    events
        .iter()
        .find(|e| f(e))
        .and_then(|e| e["at"].as_f64())
        .ok_or_else(|| anyhow!("the event log lacks the event that marks the mitigation"))
}

async fn wait_for_event<T>(
    api: &ApiClient,
    name: &str,
    limit: Duration,
    f: impl Fn(&[Value]) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        let ev = workload_events(api, name).await?;
        if let Some(t) = f(&ev) {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_status(api: &ApiClient, name: &str, id: &str, want: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let r = workload::rollout(api, name, id).await?;
        let status = r["status"].as_str().unwrap_or_default();
        if status == want {
            return Ok(());
        }
        if !matches!(status, "progressing" | "paused" | "halted") || Instant::now() > deadline {
            bail!("rollout {id} is {status}, not {want}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl crate::Report for Report {
    /// No bar of its own: every mitigation measured in every run.
    fn passed(&self) -> bool {
        self.results.iter().all(|(_, runs, failures)| failures.is_empty() && !runs.is_empty())
    }

    fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "ringfence-bench mitigations: time to restored health, per mitigation, side by side");
        let _ = writeln!(
            o,
            "  setup   the demo's workload (2 replicas) cut to 10% then 100%; {} req/s from 1000 users through its router; runs interleaved",
            self.args.rps
        );
        let _ = writeln!(
            o,
            "          bad version: 20% 5xx (fallback, roll forward), or its guard flag's path failing (bypass)"
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<13} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}  interval",
            "mitigation", "runs", "median", "p90", "min", "max", "failed", "before"
        );
        for (kind, runs, failures) in &self.results {
            let ms: Vec<f64> = runs.iter().map(|r| r.ms).collect();
            let secs = |x: f64| format!("{:.3} s", x / 1000.0);
            let (median, p90, min, max) = match stats::summarize(&ms) {
                Some(s) => (secs(s.median), secs(s.p90), secs(s.min), secs(s.max)),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            let failed = stats::median(runs.iter().map(|r| r.failed as f64)).map_or("-".into(), |m| format!("{m}"));
            let before =
                stats::median(runs.iter().map(|r| r.failed_before as f64)).map_or("-".into(), |m| format!("{m}"));
            let _ = writeln!(
                o,
                "{:<13} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}  {}",
                kind.name(),
                format!("{}/{}", runs.len(), runs.len() + failures.len()),
                median,
                p90,
                min,
                max,
                failed,
                before,
                kind.interval()
            );
        }
        let _ = writeln!(
            o,
            "  (failed: median per run of the requests users saw fail inside the interval; before: before it, the failure being mitigated; none for rollback and redeploy, whose versions are healthy)"
        );
        for (kind, _, failures) in &self.results {
            for f in failures {
                let _ = writeln!(o, "  {}: {f}", kind.name());
            }
        }
        o
    }

    fn json(&self) -> Value {
        json!({
            "benchmark": "mitigations",
            "config": {"runs": self.args.runs, "rps": self.args.rps},
            "pass": self.passed(),
            "mitigations": self.results.iter().map(|(kind, runs, failures)| json!({
                "mitigation": kind.name(),
                "interval": kind.interval(),
                "ms": stats::summarize(&runs.iter().map(|r| r.ms).collect::<Vec<_>>()).map(|s| s.json()),
                "failed_requests": runs.iter().map(|r| r.failed).collect::<Vec<_>>(),
                "failed_before": runs.iter().map(|r| r.failed_before).collect::<Vec<_>>(),
                "runs": runs.iter().map(|r| round3(r.ms)).collect::<Vec<_>>(),
                "failures": failures,
            })).collect::<Vec<_>>(),
        })
    }
}
