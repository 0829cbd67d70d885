//! Can a team trust the verdicts? Two questions, asked of the real stack: the `ringfence server`
//! process, each workload's router process, sample-app replica processes and open-loop HTTP load
//! on loopback, so that everything the simulation (`crates/core/examples/detect_bench.rs`)
//! leaves out is in: scheduling noise on a shared machine, connection set-up, per-replica
//! differences, the controller's tick and the router's counters.
//!
//! 1. **Healthy releases (A/A).** Many rollouts of an identical binary (only the version label
//!    differs, fresh processes each time) under steady load, through the plan and analysis of
//!    `examples/checkout.toml`. A rollout should complete on its own; one that halts is a false
//!    rollback, one that holds past its bakes needs a person for nothing.
//! 2. **Detection.** A stable release and a canary that differ only in the sample-app options of
//!    their release config: a hard failure, a subtle error increase and a p99 regression with the
//!    same median. How long from the canary's bake start (and from its first request) to the
//!    `rollout_halted` event, from the event log's own timestamps.
//!
//! Workloads run in parallel, each with its own load generator and its own sequence of releases,
//! so that enough rollouts fit in a reasonable time on a small machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use ringfence::client::ApiClient;
use ringfence::loadgen::{LoadConfig, LoadSummary, Sample};
use ringfence_core::duration::{self, Dur};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::Output;
use crate::server::{Server, StopReport};
use crate::stats::{self, Summary, round3};
use crate::workload::{
    self, Clock, Load, command, create_release, deploy, events_after, read_decision, read_events, router_address,
    wait_rollout, workload_events,
};

/// The example spec every workload here is generated from.
const EXAMPLE: &str = ringfence_core::spec::EXAMPLE;

/// A/A bars, per rate: no false halt, and at least this share of the rollouts complete on their
/// own (48 of 50), as a fraction `REQUIRED_OF / OUT_OF` so that the count is exact.
const REQUIRED_OF: u32 = 48;
const OUT_OF: u32 = 50;

/// Load on a workload before its first measured rollout: the controller's usage meter (the rate
/// before a rollout, which the usage signal compares against) needs a few seconds to settle.
const WARMUP: Duration = Duration::from_secs(3);

/// Bake of the throwaway first deploy of each workload. A first deploy has no stable version to
/// compare with and bakes for the first phase's bake; it only makes a stable version here, so it
/// runs under the same spec with short bakes, and the measured spec is applied afterwards.
const SETUP_BAKE: Dur = Dur::secs(1);

/// How long the first deploy of a workload, and the end of a mitigation or an abort, may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a rollout is looked at. It only decides when the bench acts (approval, next
/// release); the measured times come from the event log.
const POLL: Duration = Duration::from_millis(500);

/// How long a detection run watches the first phase after its bake (held, inconclusive).
const DETECT_PAST_BAKE: Duration = Duration::from_secs(60);

/// A detection run polls faster: it stops watching when the first phase ends.
const DETECT_POLL: Duration = Duration::from_millis(200);

/// A workload's slot gives up after this many bench-side failures in a row (not outcomes of a
/// rollout: API errors, a release that cannot be registered), so a broken workload cannot burn
/// through every remaining rollout in seconds.
const MAX_CONSECUTIVE_FAILURES: u32 = 3;

/// Progress on stderr at least this often while rollouts run.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// Sample-app behaviour of the detection cases, as release config (environment variables).
/// The stable release of every case is the simulation's: 0.5% errors, latency log-normal with
/// median 20 ms and sigma 0.5 (p99 64 ms); the canary changes one thing.
const STABLE_ERROR_RATE: f64 = 0.005;
const LATENCY_MS: u64 = 20;
const STABLE_SIGMA: f64 = 0.5;

#[derive(Args, Debug, Clone)]
pub struct TrustArgs {
    /// Healthy (A/A) rollouts per rate; 0 skips the A/A part. Default 50 (3 with --quick).
    #[arg(long)]
    pub rollouts: Option<u32>,
    /// Requests per second of load on each A/A workload, one set of rollouts per rate.
    /// Default 100,200 (100 with --quick).
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<f64>>,
    /// Workloads rolling out at once, per rate (the rates run side by side), and detection runs
    /// at once. Default 10 (6 with --quick).
    #[arg(long)]
    pub parallel: Option<u32>,
    /// Bake of every phase of the A/A plan, e.g. "20s"; by default the example spec's own bakes
    /// (10s with --quick).
    #[arg(long, value_parser = parse_dur)]
    pub bake: Option<Dur>,
    /// How long past the sum of its bakes an A/A rollout may take before it is counted as held
    /// (and aborted, so the next release can go). Default 3m (30s with --quick).
    #[arg(long, value_parser = parse_dur)]
    pub hold_timeout: Option<Dur>,
    /// Sample-app configuration of every A/A release (the same in all of them), KEY=VALUE, e.g.
    /// SAMPLE_LATENCY_MS=20; repeatable. Default none: the example spec's service as it is.
    #[arg(long = "aa-config", value_parser = parse_key_value)]
    pub aa_config: Vec<(String, String)>,
    /// Runs of each detection case; 0 skips detection. Default 10 (2 with --quick).
    #[arg(long)]
    pub detect_runs: Option<u32>,
    /// Requests per second of load in the detection runs.
    #[arg(long, default_value_t = 200.0)]
    pub detect_rps: f64,
    /// Percent of users on the canary in the first phase of the detection runs.
    #[arg(long, default_value_t = 10.0)]
    pub detect_weight: f64,
    /// Bake of the first phase of a detection run. A regression counts as detected when the
    /// rollout halts while still in that phase: within its bake, or after it while an
    /// inconclusive verdict holds the phase (watched up to the bake plus 1 minute).
    /// Default 2m (30s with --quick).
    #[arg(long, value_parser = parse_dur)]
    pub detect_bake: Option<Dur>,
    /// A smoke run of about 3 minutes: 3 rollouts at one rate with 10 s bakes, and 2 runs per
    /// detection case with a 30 s first phase. It shows the benchmark works, not whether the bars
    /// are met.
    #[arg(long)]
    pub quick: bool,
    /// Distinct simulated users per workload (routing is sticky per user).
    #[arg(long, default_value_t = 5000)]
    pub users: u32,
    /// Passed to `ringfence server --tick`; by default the server's own default is measured.
    #[arg(long)]
    pub server_tick: Option<String>,
    /// Keep the servers' data directories (event logs, logs) and print where they are.
    #[arg(long)]
    pub keep_data: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

fn parse_dur(text: &str) -> Result<Dur, String> {
    duration::parse(text)
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// The arguments with every default filled in (they depend on `--quick`) and checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    pub rollouts: u32,
    pub rates: Vec<f64>,
    pub parallel: u32,
    pub bake: Option<Dur>,
    pub hold_timeout: Dur,
    pub aa_config: Vec<(String, String)>,
    pub detect_runs: u32,
    pub detect_rps: f64,
    pub detect_weight: f64,
    pub detect_bake: Dur,
    pub users: u32,
    pub server_tick: Option<String>,
    pub keep_data: bool,
    pub output: Output,
}

impl TrustArgs {
    /// Fills in the defaults and refuses what would make a run meaningless or impossible,
    /// naming the flag.
    pub fn resolve(&self) -> Result<Config> {
        let q = self.quick;
        let c = Config {
            quick: q,
            rollouts: self.rollouts.unwrap_or(if q { 3 } else { 50 }),
            rates: self.rates.clone().unwrap_or_else(|| if q { vec![100.0] } else { vec![100.0, 200.0] }),
            parallel: self.parallel.unwrap_or(if q { 6 } else { 10 }),
            bake: self.bake.or(q.then_some(Dur::secs(10))),
            hold_timeout: self.hold_timeout.unwrap_or(Dur::secs(if q { 30 } else { 180 })),
            aa_config: self.aa_config.clone(),
            detect_runs: self.detect_runs.unwrap_or(if q { 2 } else { 10 }),
            detect_rps: self.detect_rps,
            detect_weight: self.detect_weight,
            detect_bake: self.detect_bake.unwrap_or(Dur::secs(if q { 30 } else { 120 })),
            users: self.users,
            server_tick: self.server_tick.clone(),
            keep_data: self.keep_data,
            output: self.output,
        };
        if c.rollouts > 1000 {
            bail!("--rollouts must be at most 1000, got {}", c.rollouts);
        }
        if c.rates.is_empty() {
            bail!("--rates needs at least one value");
        }
        for r in &c.rates {
            if !(r.is_finite() && (1.0..=5000.0).contains(r)) {
                bail!("--rates must be between 1 and 5000 requests per second, got {r}");
            }
        }
        if !(1..=50).contains(&c.parallel) {
            bail!("--parallel must be between 1 and 50, got {}", c.parallel);
        }
        if let Some(b) = c.bake
            && !(1_000..=3_600_000).contains(&b.as_ms())
        {
            bail!("--bake must be between 1s and 1h, got {b}");
        }
        if !(10_000..=3_600_000).contains(&c.hold_timeout.as_ms()) {
            bail!("--hold-timeout must be between 10s and 1h, got {}", c.hold_timeout);
        }
        if c.detect_runs > 1000 {
            bail!("--detect-runs must be at most 1000, got {}", c.detect_runs);
        }
        if !(c.detect_rps.is_finite() && (1.0..=5000.0).contains(&c.detect_rps)) {
            bail!("--detect-rps must be between 1 and 5000, got {}", c.detect_rps);
        }
        // Below 100: the first phase must not be the last one, or there is no canary to judge.
        if !(c.detect_weight.is_finite() && c.detect_weight >= 0.01 && c.detect_weight < 100.0) {
            bail!("--detect-weight must be a percentage of at least 0.01 and below 100, got {}", c.detect_weight);
        }
        if !(10_000..=3_600_000).contains(&c.detect_bake.as_ms()) {
            bail!("--detect-bake must be between 10s and 1h, got {}", c.detect_bake);
        }
        if c.users == 0 {
            bail!("--users must be at least 1");
        }
        if c.rollouts == 0 && c.detect_runs == 0 {
            bail!("--rollouts 0 and --detect-runs 0 leave nothing to measure");
        }
        // The plan must be readable before any process starts.
        plan(&spec_from_example("check", &SpecEdit { bake: c.bake, first_phase: None })?)?;
        Ok(c)
    }
}

/// How a generated spec differs from the example: besides the name and the router's port (0:
/// picked per workload), only bakes and, for detection, the first phase's weight.
#[derive(Debug, Clone, Default)]
struct SpecEdit {
    /// Every phase's bake.
    bake: Option<Dur>,
    /// The first phase's weight and bake (after `bake`).
    first_phase: Option<(f64, Dur)>,
}

/// `examples/checkout.toml` for workload `name`, edited as `edit` says; comments and every
/// other field are kept.
fn spec_from_example(name: &str, edit: &SpecEdit) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = EXAMPLE.parse().context("the example spec is not TOML")?;
    doc["workload"]["name"] = toml_edit::value(name);
    doc["router"]["listen"] = toml_edit::value("127.0.0.1:0");
    let phases = doc["rollout"]["phases"]
        .as_array_of_tables_mut()
        .ok_or_else(|| anyhow!("the example spec has no [[rollout.phases]]"))?;
    // Milliseconds: every duration is written back in a form the spec parser reads.
    let dur = |d: Dur| toml_edit::value(format!("{}ms", d.as_ms()));
    for (i, phase) in phases.iter_mut().enumerate() {
        if let Some(b) = edit.bake {
            phase["bake"] = dur(b);
        }
        if i == 0
            && let Some((weight, bake)) = edit.first_phase
        {
            phase["weight"] = toml_edit::value(weight);
            phase["bake"] = dur(bake);
        }
    }
    Ok(doc.to_string())
}

/// One phase of a plan, as the bench needs it.
#[derive(Debug, Clone, PartialEq)]
struct PlanPhase {
    name: String,
    weight: f64,
    bake: Dur,
    approval: bool,
}

/// The phases of a generated spec.
fn plan(spec: &str) -> Result<Vec<PlanPhase>> {
    let doc: toml_edit::DocumentMut = spec.parse().context("the generated spec is not TOML")?;
    let phases = doc
        .get("rollout")
        .and_then(|r| r.get("phases"))
        .and_then(|p| p.as_array_of_tables())
        .ok_or_else(|| anyhow!("the spec has no [[rollout.phases]]"))?;
    let mut out = Vec::new();
    for p in phases {
        let name = p.get("name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let weight = p
            .get("weight")
            .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            .ok_or_else(|| anyhow!("phase {name:?} has no weight"))?;
        let bake = p
            .get("bake")
            .and_then(|v| v.as_str())
            .map(|s| duration::parse(s).map_err(|e| anyhow!("phase {name:?}: {e}")))
            .transpose()?
            .ok_or_else(|| anyhow!("phase {name:?} has no bake"))?;
        let approval = p
            .get("gates")
            .and_then(|v| v.as_array())
            .is_some_and(|gates| gates.iter().any(|g| g.as_str() == Some("approval")));
        out.push(PlanPhase { name, weight, bake, approval });
    }
    if out.is_empty() {
        bail!("the spec has no phases");
    }
    Ok(out)
}

fn plan_ms(plan: &[PlanPhase]) -> u64 {
    plan.iter().map(|p| p.bake.as_ms()).sum()
}

fn describe_plan(plan: &[PlanPhase]) -> String {
    plan.iter()
        .map(|p| format!("{} {}% {}{}", p.name, p.weight, p.bake, if p.approval { " (+approval)" } else { "" }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rate_label(rate: f64) -> String {
    rate.to_string().replace('.', "_")
}

fn config_json(pairs: &[(String, String)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

/// Makes `name` a workload whose stable version is `v1` (with `config`), under `spec` from then
/// on. The first deploy runs under `setup_spec` (short bakes): it is not measured.
async fn setup_workload(api: &ApiClient, name: &str, setup_spec: &str, spec: &str, config: &Value) -> Result<()> {
    workload::apply_spec(api, name, setup_spec).await?;
    create_release(api, name, "v1", config, "stable").await?;
    let first = deploy(api, name, "v1").await?;
    let status = wait_rollout(api, name, &first, SETUP_TIMEOUT).await?;
    if status != "completed" {
        bail!("setup: the first deploy of v1 of {name} ended {status}, not completed");
    }
    workload::apply_spec(api, name, spec).await
}

/// An error that ends the whole benchmark rather than one rollout: the server is gone.
async fn server_gone(api: &ApiClient) -> Option<anyhow::Error> {
    let health: Result<Value, _> = api.get("/v1/health").await;
    health.err().map(|e| anyhow!("the ringfence server stopped answering: {}", e.message))
}

/// The lines of `ringfence why` that say why: the decision's summary, a hold or wait, and every
/// signal that is not healthy, on one line. A decision's summary already names its failed
/// signals, so their evidence lines are left out then.
fn why_summary(text: &str) -> String {
    let decided = text.lines().any(|l| l.trim().starts_with("Why:"));
    let picked: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("Why:")
                || l.starts_with("Held after")
                || l.starts_with("Waiting for approval")
                || l.starts_with("No decision yet")
                || (l.starts_with("[FAILED") && !decided)
                || l.starts_with("[unknown")
                || l.starts_with("[pending")
        })
        .collect();
    if picked.is_empty() { text.lines().next().unwrap_or_default().trim().to_string() } else { picked.join(" | ") }
}

// ---------------------------------------------------------------------------------------------
// Part 1: healthy releases (A/A)
// ---------------------------------------------------------------------------------------------

/// How an A/A rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AaOutcome {
    /// Every phase passed with nobody's help but the approval of a baked, healthy last phase.
    Completed,
    /// Completed, but a phase passed on the bench's approval while its verdict was not healthy
    /// (`phase_passed` with `by_hand`): a person's decision, not the analysis'.
    CompletedByHand,
    /// Still waiting at the limit, with its phase held (unknown verdict) or escalated.
    Held,
    /// Still progressing at the limit without a hold: stuck somewhere else (deploying, baking).
    TimedOut,
    /// Halted and mitigated: a false rollback.
    Halted,
    /// The bench could not run it (an API error); no result.
    Failed,
}

impl AaOutcome {
    fn as_str(self) -> &'static str {
        match self {
            AaOutcome::Completed => "completed",
            AaOutcome::CompletedByHand => "completed by hand",
            AaOutcome::Held => "held",
            AaOutcome::TimedOut => "timed out",
            AaOutcome::Halted => "HALTED",
            AaOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AaRollout {
    rate: f64,
    workload: String,
    version: String,
    rollout_id: String,
    outcome: AaOutcome,
    /// Deploy to the end (or to the limit).
    secs: f64,
    /// Phases held after their bake with a verdict that was not healthy, even if they passed
    /// later on their own.
    holds: u32,
    escalated: bool,
    /// The phase it stopped in, for held, timed-out and halted rollouts; empty when completed.
    phase: String,
    /// Signals that were not healthy: the unhealthy ones of a halt's decision; for a rollout
    /// stopped at the limit, those of the controller's live verdict then (the `why` shows the
    /// verdict recorded when the phase was held, which may be older).
    signals: Vec<String>,
    /// `ringfence why`, condensed; the full text is in `why_text`.
    why: String,
    why_text: String,
}

/// What the events of one rollout say, beyond its status.
#[derive(Debug, Default, PartialEq)]
struct AaEvents {
    holds: u32,
    escalated: bool,
    by_hand: bool,
    halt_phase: Option<String>,
    halt_signals: Vec<String>,
}

fn read_aa_events(events: &[Value], rollout: &str) -> AaEvents {
    let mut out = AaEvents::default();
    for e in events.iter().filter(|e| e["rollout_id"].as_str() == Some(rollout)) {
        match e["type"].as_str().unwrap_or_default() {
            // A hold with a healthy verdict is the approval gate waiting, not the analysis.
            "phase_held" if e["verdict"]["health"].as_str() != Some("healthy") => out.holds += 1,
            "escalated" => out.escalated = true,
            "phase_passed" if e["by_hand"].as_bool() == Some(true) => out.by_hand = true,
            "rollout_halted" => {
                let h = read_decision(&e["decision"]);
                out.halt_phase = Some(h.phase);
                out.halt_signals = h.signals;
            }
            _ => {}
        }
    }
    out
}

/// Whether the rollout waits only for the approval gate of its phase: the bake is over (the
/// phase is held), the phase asks for approval, and the controller's live verdict on this
/// rollout is healthy. A person would promote it then; so does the bench.
fn awaiting_approval(rollout: &Value, status: &Value, plan: &[PlanPhase]) -> bool {
    let phase = rollout["phase"].as_u64().and_then(|p| plan.get(p as usize));
    let live = &status["health"];
    rollout["status"].as_str() == Some("progressing")
        && rollout["stage"].as_str() == Some("baking")
        && !rollout["held_since"].is_null()
        && rollout["promote_requested"].as_bool() != Some(true)
        && phase.is_some_and(|p| p.approval)
        && live["rollout_id"] == rollout["id"]
        && live["verdict"]["health"].as_str() == Some("healthy")
}

/// The names of the signals of a verdict with the given health.
fn signals_with(verdict: &Value, health: &str) -> Vec<String> {
    verdict["signals"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|s| s["health"].as_str() == Some(health))
                .filter_map(|s| s["signal"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

struct AaSlot {
    api: ApiClient,
    /// Passes the example plan's approval gate: someone other than the release's author and
    /// the deployment's starter (separation of duties).
    approver: ApiClient,
    cfg: Arc<Config>,
    rate: f64,
    name: String,
    plan: Vec<PlanPhase>,
    /// Events up to here were read already.
    after: u64,
    pids: Vec<u32>,
}

impl AaSlot {
    /// The limit of one rollout: its bakes plus the hold timeout.
    fn limit(&self) -> Duration {
        Duration::from_millis(plan_ms(&self.plan) + self.cfg.hold_timeout.as_ms())
    }

    async fn new_events(&mut self) -> Result<Vec<Value>> {
        let events = events_after(&self.api, &self.name, self.after).await?;
        self.after = events.iter().filter_map(|e| e["seq"].as_u64()).max().unwrap_or(self.after);
        self.pids.extend(workload::pids(&events));
        Ok(events)
    }

    /// Deploys `version` and watches it to its end or its limit.
    async fn rollout(&mut self, version: &str) -> Result<AaRollout> {
        let (api, name) = (&self.api, self.name.as_str());
        create_release(api, name, version, &config_json(&self.cfg.aa_config), "identical to the stable one").await?;
        let started = Instant::now();
        let id = deploy(api, name, version).await?;
        let mut approved_phase = None;
        let (r, ended) = loop {
            let r = workload::rollout(api, name, &id).await?;
            let status = r["status"].as_str().unwrap_or_default().to_string();
            if status != "progressing" && status != "paused" {
                break (r, status);
            }
            if started.elapsed() > self.limit() {
                break (r, "limit".to_string());
            }
            let phase = r["phase"].as_u64();
            let approval = phase.and_then(|p| self.plan.get(p as usize)).is_some_and(|p| p.approval);
            if approval && !r["held_since"].is_null() && approved_phase != phase {
                let st = workload::status(api, name).await?;
                if awaiting_approval(&r, &st, &self.plan) {
                    let approver = &self.approver;
                    command(approver, name, "promote", "ringfence-bench: approval gate of a baked, healthy phase")
                        .await?;
                    approved_phase = phase;
                }
            }
            tokio::time::sleep(POLL).await;
        };
        let secs = started.elapsed().as_secs_f64();
        let phase = r["phase"].as_u64().and_then(|p| self.plan.get(p as usize)).map(|p| p.name.clone());
        let mut signals = Vec::new();
        let (mut why, mut why_text) = (String::new(), String::new());
        if ended != "completed" {
            // Read before anything else changes the latest decision.
            why_text = workload::why(api, name).await?;
            why = why_summary(&why_text);
        }
        match ended.as_str() {
            "limit" => {
                let st = workload::status(api, name).await?;
                signals = signals_with(&st["health"]["verdict"], "unknown");
                signals.extend(signals_with(&st["health"]["verdict"], "unhealthy"));
                // Out of the way of the next release.
                command(api, name, "abort", "ringfence-bench: held past its bakes").await?;
                wait_rollout(api, name, &id, SETUP_TIMEOUT).await?;
            }
            "mitigating" => {
                wait_rollout(api, name, &id, SETUP_TIMEOUT).await?;
            }
            // Halted with exposure frozen (automatic fallback off): nobody else will end it.
            "halted" => {
                command(api, name, "abort", "ringfence-bench: halted").await?;
                wait_rollout(api, name, &id, SETUP_TIMEOUT).await?;
            }
            "completed" | "mitigated" => {}
            other => bail!("rollout {id} ended {other}: something other than the bench acted on it"),
        }
        let events = self.new_events().await?;
        let ev = read_aa_events(&events, &id);
        let held = !r["held_since"].is_null() || r["escalated"].as_bool() == Some(true) || ev.escalated;
        let outcome = match ended.as_str() {
            "completed" if ev.by_hand => AaOutcome::CompletedByHand,
            "completed" => AaOutcome::Completed,
            "limit" if held => AaOutcome::Held,
            "limit" => AaOutcome::TimedOut,
            _ => AaOutcome::Halted,
        };
        if outcome == AaOutcome::Halted {
            signals = ev.halt_signals.clone();
        }
        Ok(AaRollout {
            rate: self.rate,
            workload: self.name.clone(),
            version: version.to_string(),
            rollout_id: id,
            outcome,
            secs,
            holds: ev.holds,
            escalated: ev.escalated,
            // Where it stopped; a completed rollout stopped nowhere.
            phase: if matches!(outcome, AaOutcome::Completed | AaOutcome::CompletedByHand) {
                String::new()
            } else {
                ev.halt_phase.or(phase).unwrap_or_default()
            },
            signals,
            why,
            why_text,
        })
    }

    /// After a failed rollout: whatever is still active is aborted, so the next one can start.
    async fn clear(&self) {
        let _ = command(&self.api, &self.name, "abort", "ringfence-bench: the bench failed on this rollout").await;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while Instant::now() < deadline {
            let Ok(st) = workload::status(&self.api, &self.name).await else { return };
            let status = st["rollout"]["status"].as_str().unwrap_or_default();
            if !matches!(status, "progressing" | "paused" | "mitigating" | "halted") {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Counts shared by the slots, for the progress lines.
#[derive(Default)]
struct Progress {
    started: Option<Instant>,
    /// rate label -> outcome -> count
    done: BTreeMap<String, BTreeMap<&'static str, u32>>,
}

impl Progress {
    fn record(&mut self, rate: f64, outcome: AaOutcome) -> u32 {
        let per = self.done.entry(format!("{rate} req/s")).or_default();
        *per.entry(outcome.as_str()).or_default() += 1;
        per.values().sum()
    }

    fn line(&self) -> String {
        self.done
            .iter()
            .map(|(rate, counts)| {
                let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
                format!("{rate}: {}", parts.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The result of one A/A slot (one workload).
struct SlotResult {
    rollouts: Vec<AaRollout>,
    failures: Vec<String>,
    load: LoadSummary,
    pids: Vec<u32>,
}

async fn aa_slot(
    api: ApiClient,
    cfg: Arc<Config>,
    rate: f64,
    index: u32,
    next: Arc<AtomicU32>,
    progress: Arc<Mutex<Progress>>,
) -> Result<SlotResult> {
    let name = format!("aa-r{}-w{index:02}", rate_label(rate));
    let spec = spec_from_example(&name, &SpecEdit { bake: cfg.bake, first_phase: None })?;
    let setup = spec_from_example(&name, &SpecEdit { bake: Some(SETUP_BAKE), first_phase: None })?;
    let mut slot = AaSlot {
        approver: approver_client(&api).await?,
        api: api.clone(),
        cfg: cfg.clone(),
        rate,
        name: name.clone(),
        plan: plan(&spec)?,
        after: 0,
        pids: vec![],
    };
    let mut result = SlotResult { rollouts: vec![], failures: vec![], load: LoadSummary::default(), pids: vec![] };
    let config = config_json(&cfg.aa_config);
    if let Err(e) = setup_workload(&api, &name, &setup, &spec, &config).await {
        if let Some(gone) = server_gone(&api).await {
            return Err(gone);
        }
        // The slot cannot run; the jobs it would have taken go to the others.
        eprintln!("trust: A/A {name}: setup FAILED: {e:#}");
        result.failures.push(format!("{name}: setup: {e:#}"));
        let _ = slot.new_events().await;
        result.pids = slot.pids;
        return Ok(result);
    }
    let load = Load::start(LoadConfig::steady(router_address(&api, &name).await?, rate, cfg.users), None)?;
    tokio::time::sleep(WARMUP).await;
    let mut version = 1;
    let mut failures_in_a_row = 0;
    while next.fetch_add(1, Ordering::SeqCst) < cfg.rollouts {
        version += 1;
        let v = format!("v{version}");
        match slot.rollout(&v).await {
            Ok(r) => {
                failures_in_a_row = 0;
                let done = progress.lock().map(|mut p| p.record(rate, r.outcome)).unwrap_or(0);
                let holds = if r.holds > 0 { format!(" ({} hold(s) on the way)", r.holds) } else { String::new() };
                let place = if r.phase.is_empty() { String::new() } else { format!(" in {}", r.phase) };
                // The first part only; the report has all of it.
                let why =
                    r.why.split(" | ").next().filter(|w| !w.is_empty()).map(|w| format!(": {w}")).unwrap_or_default();
                let detail = format!("{holds}{place}{why}");
                eprintln!(
                    "trust: A/A {rate} req/s [{done:>3}/{}] {name} {v}: {} after {:.0} s{detail}",
                    cfg.rollouts,
                    r.outcome.as_str(),
                    r.secs
                );
                result.rollouts.push(r);
            }
            Err(e) => {
                if let Some(gone) = server_gone(&api).await {
                    return Err(gone);
                }
                failures_in_a_row += 1;
                let done = progress.lock().map(|mut p| p.record(rate, AaOutcome::Failed)).unwrap_or(0);
                eprintln!("trust: A/A {rate} req/s [{done:>3}/{}] {name} {v}: FAILED: {e:#}", cfg.rollouts);
                result.failures.push(format!("{name} {v}: {e:#}"));
                slot.clear().await;
                if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES {
                    eprintln!("trust: A/A {name}: {failures_in_a_row} failures in a row; this workload stops");
                    break;
                }
            }
        }
    }
    result.load = load.stop().await;
    let _ = slot.new_events().await;
    result.pids = slot.pids;
    Ok(result)
}

/// The A/A results of one rate.
#[derive(Debug, Default)]
pub struct RateReport {
    rate: f64,
    rollouts: Vec<AaRollout>,
    failures: Vec<String>,
    requests: u64,
    request_errors: u64,
}

impl RateReport {
    fn count(&self, outcome: AaOutcome) -> u32 {
        self.rollouts.iter().filter(|r| r.outcome == outcome).count() as u32
    }

    fn completed_after_hold(&self) -> u32 {
        self.rollouts.iter().filter(|r| r.outcome == AaOutcome::Completed && r.holds > 0).count() as u32
    }

    /// Out of the rollouts asked for (failed ones and ones that never ran included), no false
    /// halt and enough completed on their own.
    fn passed(&self, asked: u32) -> bool {
        self.count(AaOutcome::Halted) == 0 && self.count(AaOutcome::Completed) >= required(asked)
    }

    fn median_completed_secs(&self) -> Option<f64> {
        stats::median(self.rollouts.iter().filter(|r| r.outcome == AaOutcome::Completed).map(|r| r.secs))
    }
}

pub struct AaReport {
    plan: Vec<PlanPhase>,
    limit_secs: f64,
    rates: Vec<RateReport>,
    elapsed_secs: f64,
    cleanup: Option<StopReport>,
}

/// A client with an approver's token of its own, made with the admin's (a server without
/// tokens, an older build measured as a baseline, takes the admin's client as it is).
pub(crate) async fn approver_client(api: &ApiClient) -> Result<ApiClient> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!("bench-approver-{}-{nanos}", std::process::id());
    let made: Result<Value, _> = api.post("/v1/tokens", &json!({"name": name, "grants": ["approver"]})).await;
    match made.ok().and_then(|v| v["token"].as_str().map(String::from)) {
        Some(token) => Ok(ApiClient::new(
            api.base(),
            Some(ringfence::credentials::Found { token, source: "ringfence-bench's approver token".into() }),
        )),
        None => Ok(api.clone()),
    }
}

async fn run_aa(cfg: Arc<Config>, api: ApiClient) -> Result<(AaReport, Vec<u32>)> {
    let spec = spec_from_example("aa", &SpecEdit { bake: cfg.bake, first_phase: None })?;
    let plan = plan(&spec)?;
    let limit = Duration::from_millis(plan_ms(&plan) + cfg.hold_timeout.as_ms());
    let slots = cfg.parallel.min(cfg.rollouts);
    let rounds = cfg.rollouts.div_ceil(slots);
    eprintln!(
        "trust: A/A: {} rollouts at each of {:?} req/s, {slots} workloads per rate at once; plan {}; limit per rollout {:.0} s; expect about {:.0} min",
        cfg.rollouts,
        cfg.rates,
        describe_plan(&plan),
        limit.as_secs_f64(),
        // Each rollout takes its bakes plus a few seconds of deploys and polling.
        f64::from(rounds) * (plan_ms(&plan) as f64 / 1000.0 + 10.0) / 60.0 + 0.5
    );
    let progress = Arc::new(Mutex::new(Progress { started: Some(Instant::now()), ..Progress::default() }));
    let started = Instant::now();
    let mut set: JoinSet<Result<(f64, SlotResult)>> = JoinSet::new();
    for &rate in &cfg.rates {
        let next = Arc::new(AtomicU32::new(0));
        for index in 1..=slots {
            let (api, cfg, next, progress) = (api.clone(), cfg.clone(), next.clone(), progress.clone());
            set.spawn(async move { aa_slot(api, cfg, rate, index, next, progress).await.map(|r| (rate, r)) });
        }
    }
    let mut rates: Vec<RateReport> =
        cfg.rates.iter().map(|&rate| RateReport { rate, ..RateReport::default() }).collect();
    let mut pids = Vec::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                // An error here is the server gone or a panic: the whole part is void. Dropping
                // the set aborts the other slots, and their guards stop their load.
                let (rate, slot) = joined.context("an A/A workload task failed")??;
                pids.extend(slot.pids);
                if let Some(r) = rates.iter_mut().find(|r| r.rate == rate) {
                    r.rollouts.extend(slot.rollouts);
                    r.failures.extend(slot.failures);
                    r.requests += slot.load.sent;
                    r.request_errors += slot.load.errors;
                }
            }
            _ = heartbeat.tick() => {
                if let Ok(p) = progress.lock() {
                    let mins = p.started.map(|s| s.elapsed().as_secs_f64() / 60.0).unwrap_or(0.0);
                    eprintln!("trust: A/A {mins:.0} min in: {}", if p.done.is_empty() { "no rollout ended yet".into() } else { p.line() });
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    for r in &mut rates {
        r.rollouts
            .sort_by(|a, b| (&a.workload, version_number(&a.version)).cmp(&(&b.workload, version_number(&b.version))));
    }
    Ok((AaReport { plan, limit_secs: limit.as_secs_f64(), rates, elapsed_secs: elapsed, cleanup: None }, pids))
}

/// Rollouts that must complete on their own out of `asked`: 48 of 50, rounded up.
fn required(asked: u32) -> u32 {
    (REQUIRED_OF * asked).div_ceil(OUT_OF)
}

fn version_number(v: &str) -> u32 {
    v.trim_start_matches('v').parse().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Part 2: detection through the real stack
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseKind {
    Hard,
    Subtle,
    P99,
}

/// A regression, as the sample-app configuration of the stable and the canary release.
#[derive(Debug, Clone)]
struct Case {
    kind: CaseKind,
    key: &'static str,
    label: &'static str,
    /// The simulation's row in bench/results/detect.txt.
    sim_row: &'static str,
    canary: Vec<(String, String)>,
    /// The bar, in seconds, and what it is measured on.
    bar_secs: f64,
    bar_label: &'static str,
}

fn stable_config() -> Vec<(String, String)> {
    vec![
        ("SAMPLE_ERROR_RATE".into(), STABLE_ERROR_RATE.to_string()),
        ("SAMPLE_LATENCY_MS".into(), LATENCY_MS.to_string()),
        ("SAMPLE_LATENCY_SIGMA".into(), STABLE_SIGMA.to_string()),
    ]
}

/// The stable configuration with `key` set to `value`.
fn with(key: &str, value: &str) -> Vec<(String, String)> {
    let mut c = stable_config();
    for (k, v) in c.iter_mut() {
        if k == key {
            *v = value.to_string();
        }
    }
    c
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            kind: CaseKind::Hard,
            key: "hard",
            label: "hard: 20% errors",
            sim_row: "(a) 20% errors",
            canary: with("SAMPLE_ERROR_RATE", "0.2"),
            bar_secs: 2.0,
            bar_label: "bake start -> traffic back on stable",
        },
        Case {
            kind: CaseKind::Subtle,
            key: "subtle",
            label: "subtle: errors 0.5% -> 2%",
            sim_row: "(b) errors 0.5% -> 2%",
            canary: with("SAMPLE_ERROR_RATE", "0.02"),
            bar_secs: 30.0,
            bar_label: "bake start -> halt",
        },
        Case {
            kind: CaseKind::P99,
            key: "p99",
            label: "p99 +50% (same median)",
            sim_row: "(c) p99 +50% (same median)",
            // exp(2.326 * (0.674 - 0.5)) = 1.50: p99 up by half, the median unchanged.
            canary: with("SAMPLE_LATENCY_SIGMA", "0.674"),
            bar_secs: 30.0,
            bar_label: "bake start -> halt",
        },
    ]
}

#[derive(Debug, Clone)]
pub struct DetectRun {
    run: u32,
    workload: String,
    /// Halted in the first phase.
    detected: bool,
    /// How the rollout ended: "mitigated", or why the bench stopped watching and the status its
    /// abort left ("passed the first phase; aborted").
    ended: String,
    /// `rollout_halted` - `bake_started` of the first phase.
    detect_ms: Option<f64>,
    /// `rollout_halted` - the first request the canary answered (sent_at).
    from_first_request_ms: Option<f64>,
    /// The router's table without the canary acknowledged - `bake_started`.
    mitigate_ms: Option<f64>,
    signals: Vec<String>,
    canary_requests: u64,
    canary_errors: u64,
}

impl DetectRun {
    /// The time the case's bar is measured on; None = not detected.
    fn measured_ms(&self, kind: CaseKind) -> Option<f64> {
        if !self.detected {
            return None;
        }
        match kind {
            CaseKind::Hard => self.mitigate_ms,
            CaseKind::Subtle | CaseKind::P99 => self.detect_ms,
        }
    }
}

async fn detect_run(api: ApiClient, cfg: Arc<Config>, case: Case, run: u32) -> Result<DetectRun> {
    let name = format!("det-{}-r{run:02}", case.key);
    let first_bake = cfg.detect_bake;
    let spec = spec_from_example(&name, &SpecEdit { bake: None, first_phase: Some((cfg.detect_weight, first_bake)) })?;
    let setup = spec_from_example(
        &name,
        &SpecEdit { bake: Some(SETUP_BAKE), first_phase: Some((cfg.detect_weight, SETUP_BAKE)) },
    )?;
    let first_phase = plan(&spec)?.remove(0);
    setup_workload(&api, &name, &setup, &spec, &config_json(&stable_config())).await?;
    create_release(&api, &name, "v2", &config_json(&case.canary), case.label).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let clock = Clock::now();
    let load =
        Load::start(LoadConfig::steady(router_address(&api, &name).await?, cfg.detect_rps, cfg.users), Some(tx))?;
    tokio::time::sleep(WARMUP).await;
    let id = deploy(&api, &name, "v2").await?;
    // Past its bake an inconclusive phase is held, not passed, and a halt then is still a
    // detection at this weight; a minute more is watched.
    let limit = first_bake.std() + DETECT_PAST_BAKE;
    let started = Instant::now();
    let ended = loop {
        let r = workload::rollout(&api, &name, &id).await?;
        let status = r["status"].as_str().unwrap_or_default();
        if status != "progressing" && status != "paused" {
            break status.to_string();
        }
        // Past the first phase: not detected at its weight, and nothing more to learn here.
        if r["phase"].as_u64().is_some_and(|p| p > 0) {
            break "passed the first phase".to_string();
        }
        if started.elapsed() > limit {
            break "still in the first phase at the limit".to_string();
        }
        tokio::time::sleep(DETECT_POLL).await;
    };
    let ended = match ended.as_str() {
        "mitigating" => wait_rollout(&api, &name, &id, SETUP_TIMEOUT).await?,
        "mitigated" | "aborted" | "completed" => ended,
        // Progressing or halted with exposure frozen: ended here, so the workload is idle.
        _ => {
            command(&api, &name, "abort", "ringfence-bench: detection run over").await?;
            let status = wait_rollout(&api, &name, &id, SETUP_TIMEOUT).await?;
            format!("{ended}; {status}")
        }
    };
    // A moment so that requests sent just before the halt are answered and seen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.stop().await;
    let mut samples: Vec<Sample> = Vec::new();
    while let Some(s) = rx.recv().await {
        samples.push(s);
    }
    let events = workload_events(&api, &name).await?;
    let facts = read_events(&events, &id, "v2")?;
    let detected = facts.halted.is_some() && facts.halt.phase == first_phase.name;
    let between = |a: Option<i64>, b: Option<i64>| Some((b? - a?) as f64);
    let canary: Vec<&Sample> = samples.iter().filter(|s| s.version.as_deref() == Some("v2")).collect();
    let first_request = canary.iter().map(|s| s.sent_at).min().map(|t| clock.wall_ms(t));
    Ok(DetectRun {
        run,
        workload: name,
        detected,
        ended,
        detect_ms: between(facts.bake_started, facts.halted),
        from_first_request_ms: facts.halted.zip(first_request).map(|(h, f)| h as f64 - f),
        mitigate_ms: between(facts.bake_started, facts.routes_back),
        signals: facts.halt.signals,
        canary_requests: canary.len() as u64,
        canary_errors: canary.iter().filter(|s| s.is_error()).count() as u64,
    })
}

pub struct CaseReport {
    case: Case,
    runs: Vec<DetectRun>,
    failures: Vec<(u32, String)>,
    /// The simulation's figure for the same case and weight, from bench/results/detect.txt.
    simulation: Option<String>,
}

impl CaseReport {
    /// Median of the measured time with runs never detected counted as later than any detected
    /// one (the simulation does the same), so a case detected in fewer than half of its runs has
    /// no finite median.
    fn median_ms(&self, f: impl Fn(&DetectRun) -> Option<f64>) -> Option<f64> {
        let mut v: Vec<f64> =
            self.runs.iter().map(|r| if r.detected { f(r) } else { None }.unwrap_or(f64::INFINITY)).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
    }

    fn bar_ms(&self) -> Option<f64> {
        self.median_ms(|r| r.measured_ms(self.case.kind))
    }

    fn detected(&self) -> usize {
        self.runs.iter().filter(|r| r.detected).count()
    }

    fn passed(&self) -> bool {
        self.failures.is_empty()
            && self.bar_ms().is_some_and(|m| m < self.case.bar_secs * 1000.0)
            && self.within_simulation() != Some(false)
    }

    /// The second bar: through the real stack, no more than 20% slower than the simulation's
    /// median for the same case and weight, plus half a second for what the simulation does
    /// not have (the controller's tick, reading the router's counters), which would otherwise
    /// decide sub-second cases alone. `None` without a simulation figure.
    fn within_simulation(&self) -> Option<bool> {
        let sim_s: f64 = self.simulation.as_deref()?.split(" s").next()?.trim().parse().ok()?;
        let real_ms = self.median_ms(|r| r.detect_ms)?;
        Some(real_ms <= sim_s * 1000.0 * 1.2 + 500.0)
    }

    fn summary(&self, f: impl Fn(&DetectRun) -> Option<f64>) -> Option<Summary> {
        stats::summarize(&self.runs.iter().filter(|r| r.detected).filter_map(f).collect::<Vec<_>>())
    }
}

pub struct DetectReport {
    cases: Vec<CaseReport>,
    elapsed_secs: f64,
    cleanup: Option<StopReport>,
}

async fn run_detect(cfg: Arc<Config>, api: ApiClient) -> Result<(DetectReport, Vec<u32>)> {
    let cases = cases();
    let total = cfg.detect_runs as usize * cases.len();
    eprintln!(
        "trust: detection: {} runs of each of {} cases at {} req/s, first phase {}% baking {}; {} at once",
        cfg.detect_runs,
        cases.len(),
        cfg.detect_rps,
        cfg.detect_weight,
        cfg.detect_bake,
        cfg.parallel
    );
    let sim = simulation_figures(cfg.detect_weight);
    let mut reports: Vec<CaseReport> = cases
        .iter()
        .map(|c| CaseReport {
            case: c.clone(),
            runs: vec![],
            failures: vec![],
            simulation: sim.get(c.sim_row).cloned(),
        })
        .collect();
    // Runs interleaved over the cases, so that drift over the part (a busier machine) affects
    // every case alike.
    let mut queue: Vec<(usize, u32)> =
        (1..=cfg.detect_runs).flat_map(|run| (0..cases.len()).map(move |c| (c, run))).collect();
    queue.reverse();
    let started = Instant::now();
    let mut set: JoinSet<(usize, u32, Result<DetectRun>, Vec<u32>)> = JoinSet::new();
    let mut pids = Vec::new();
    let mut done = 0;
    loop {
        while set.len() < cfg.parallel as usize
            && let Some((c, run)) = queue.pop()
        {
            let (api, cfg, case) = (api.clone(), cfg.clone(), cases[c].clone());
            set.spawn(async move {
                let name = format!("det-{}-r{run:02}", case.key);
                let outcome = detect_run(api.clone(), cfg, case, run).await;
                // Whatever happened, learn the processes it started, for the guard to check on.
                let pids = workload_events(&api, &name).await.map(|e| workload::pids(&e)).unwrap_or_default();
                (c, run, outcome, pids)
            });
        }
        let Some(joined) = set.join_next().await else { break };
        let (c, run, outcome, run_pids) = joined.context("a detection task failed")?;
        pids.extend(run_pids);
        done += 1;
        let report = &mut reports[c];
        match outcome {
            Ok(r) => {
                let secs = |ms: Option<f64>| ms.map(|v| format!("{:.2} s", v / 1000.0)).unwrap_or_else(|| "-".into());
                eprintln!(
                    "trust: detect [{done:>3}/{total}] {} run {run}: {} ({}): bake -> halt {}, first canary request -> halt {}, bake -> traffic back {}; canary {} requests, {} errors [{}]",
                    report.case.key,
                    if r.detected { "detected" } else { "NOT detected" },
                    r.ended,
                    secs(r.detect_ms),
                    secs(r.from_first_request_ms),
                    secs(r.mitigate_ms),
                    r.canary_requests,
                    r.canary_errors,
                    if r.signals.is_empty() { "-".to_string() } else { r.signals.join("+") }
                );
                report.runs.push(r);
            }
            Err(e) => {
                if let Some(gone) = server_gone(&api).await {
                    return Err(gone);
                }
                eprintln!("trust: detect [{done:>3}/{total}] {} run {run}: FAILED: {e:#}", report.case.key);
                report.failures.push((run, format!("{e:#}")));
            }
        }
    }
    for r in &mut reports {
        r.runs.sort_by_key(|r| r.run);
    }
    Ok((DetectReport { cases: reports, elapsed_secs: started.elapsed().as_secs_f64(), cleanup: None }, pids))
}

/// The default analysis' figures (the first column) of the simulation's committed
/// output, row label -> cell (e.g. "0.8 s / 100%"), at the given weight. Empty when the file is
/// missing or its layout changed: the comparison is a courtesy, not part of the measurement.
fn simulation_figures(weight: f64) -> BTreeMap<&'static str, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/results/detect.txt");
    std::fs::read_to_string(path).map(|t| parse_simulation(&t, weight)).unwrap_or_default()
}

fn parse_simulation(text: &str, weight: f64) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    let weight = format!("{weight}%");
    for case in cases() {
        let cell = text.lines().find_map(|line| {
            let mut cells = line.split('|');
            let head = cells.next()?.trim();
            let rest = head.strip_prefix(case.sim_row)?;
            (rest.trim() == weight).then(|| cells.next().map(|c| c.trim().to_string()))?
        });
        if let Some(cell) = cell {
            out.insert(case.sim_row, cell);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The whole benchmark and its report
// ---------------------------------------------------------------------------------------------

pub struct Report {
    cfg: Config,
    ringfence: String,
    aa: Option<AaReport>,
    detect: Option<DetectReport>,
}

/// Runs both parts, each on its own fresh server (so the idle workloads of one do not load the
/// controller during the other), stopping each server before going on.
pub fn run(cfg: Config, ringfence: &Path) -> Result<Report> {
    let cfg = Arc::new(cfg);
    let mut report = Report { cfg: (*cfg).clone(), ringfence: ringfence.display().to_string(), aa: None, detect: None };
    if cfg.rollouts > 0 {
        let (mut aa, stop) = with_server(&cfg, ringfence, "A/A", |api| run_aa(cfg.clone(), api))?;
        aa.cleanup = Some(stop);
        report.aa = Some(aa);
    }
    if cfg.detect_runs > 0 {
        let (mut detect, stop) = with_server(&cfg, ringfence, "detection", |api| run_detect(cfg.clone(), api))?;
        detect.cleanup = Some(stop);
        report.detect = Some(detect);
    }
    Ok(report)
}

/// Starts a server, runs `part` against it, stops it. The server is started and stopped outside
/// the async runtime: the guard blocks, and its Drop must work even after the runtime is gone.
fn with_server<T, F>(
    cfg: &Config,
    ringfence: &Path,
    label: &str,
    part: impl FnOnce(ApiClient) -> F,
) -> Result<(T, StopReport)>
where
    F: std::future::Future<Output = Result<(T, Vec<u32>)>>,
{
    let mut server = Server::start(ringfence, cfg.server_tick.as_deref(), cfg.keep_data)?;
    eprintln!("trust: {label}: ringfence server {} on {}", ringfence.display(), server.base);
    let api = server.api()?;
    let outcome = crate::block_on(part(api), "the server and its processes were stopped");
    let (value, pids) = match outcome {
        Ok(v) => v,
        Err(e) => {
            // A dead server explains the error better than what the part saw of it.
            server.check_alive()?;
            return Err(e);
        }
    };
    server.note_pids(pids);
    Ok((value, server.stop_and_tell("trust")))
}

fn secs(ms: Option<f64>) -> String {
    match ms {
        Some(v) if v.is_finite() => format!("{:.2} s", v / 1000.0),
        Some(_) => "not detected".into(),
        None => "-".into(),
    }
}

impl Report {
    fn cleanups(&self) -> Vec<(&'static str, &StopReport)> {
        let mut out = Vec::new();
        if let Some(c) = self.aa.as_ref().and_then(|a| a.cleanup.as_ref()) {
            out.push(("A/A", c));
        }
        if let Some(c) = self.detect.as_ref().and_then(|d| d.cleanup.as_ref()) {
            out.push(("detection", c));
        }
        out
    }

    fn aa_passed(&self) -> bool {
        self.aa.as_ref().is_none_or(|a| a.rates.iter().all(|r| r.passed(self.cfg.rollouts)))
    }

    fn detect_passed(&self) -> bool {
        self.detect.as_ref().is_none_or(|d| d.cases.iter().all(CaseReport::passed))
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.cfg.quick {
            notes.push("--quick: a smoke run with few rollouts and short bakes; it says nothing about the bars".into());
        }
        if let Some(a) = &self.aa {
            for r in &a.rates {
                let counted = r.rollouts.len() as u32 + r.failures.len() as u32;
                if counted < self.cfg.rollouts {
                    notes.push(format!(
                        "{} req/s: {} of {} rollouts never ran (their workloads failed); they count as not completed",
                        r.rate,
                        self.cfg.rollouts - counted,
                        self.cfg.rollouts
                    ));
                }
                let by_hand = r.count(AaOutcome::CompletedByHand);
                if by_hand > 0 {
                    notes.push(format!(
                        "{} req/s: {by_hand} rollout(s) completed only because the approval passed a phase whose verdict was not healthy",
                        r.rate
                    ));
                }
            }
        }
        for (label, c) in self.cleanups() {
            if !c.leftovers.is_empty() {
                notes.push(format!(
                    "{label}: the server exited but left {} ringfence process(es) running; the bench stopped them",
                    c.leftovers.len()
                ));
            }
        }
        notes
    }
}

impl crate::Report for Report {
    fn passed(&self) -> bool {
        self.aa_passed() && self.detect_passed() && self.cleanups().iter().all(|(_, c)| c.leftovers.is_empty())
    }

    fn table(&self) -> String {
        let c = &self.cfg;
        let mut o = String::new();
        let _ = writeln!(o, "ringfence-bench trust: healthy releases and detection through the real stack");
        let _ = writeln!(
            o,
            "  stack   `ringfence server`, one router process per workload, sample-app replica processes (2 per version), open-loop HTTP load from {} users per workload, all on 127.0.0.1",
            c.users
        );
        let _ = writeln!(
            o,
            "          binary {}; controller tick: {}",
            self.ringfence,
            c.server_tick.as_deref().unwrap_or("server default")
        );
        if c.quick {
            let _ = writeln!(
                o,
                "  QUICK   smoke run (--quick): it shows the benchmark works, not whether the bars are met"
            );
        }
        if let Some(a) = &self.aa {
            self.aa_table(&mut o, a);
        }
        if let Some(d) = &self.detect {
            self.detect_table(&mut o, d);
        }
        let notes = self.notes();
        if !notes.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "Notes:");
            for n in notes {
                let _ = writeln!(o, "  - {n}");
            }
        }
        let cleanups = self.cleanups();
        if !cleanups.is_empty() {
            let _ = writeln!(o);
            for (label, s) in cleanups {
                let _ = writeln!(
                    o,
                    "Cleanup ({label}): server stopped with SIGTERM ({}); ringfence processes left running: {}",
                    s.exit,
                    if s.leftovers.is_empty() { "none".to_string() } else { s.leftovers.join("; ") }
                );
            }
        }
        o
    }

    fn json(&self) -> Value {
        let c = &self.cfg;
        let opt = |v: Option<f64>| v.filter(|v| v.is_finite()).map(round3);
        let aa = self.aa.as_ref().map(|a| {
            json!({
                "plan": a.plan.iter().map(|p| json!({"name": p.name, "weight": p.weight, "bake": p.bake.to_string(), "approval": p.approval})).collect::<Vec<_>>(),
                "limit_per_rollout_s": round3(a.limit_secs),
                "elapsed_s": round3(a.elapsed_secs),
                "rates": a.rates.iter().map(|r| json!({
                    "rate": r.rate,
                    "asked": c.rollouts,
                    "completed": r.count(AaOutcome::Completed),
                    "completed_after_a_hold": r.completed_after_hold(),
                    "completed_by_hand": r.count(AaOutcome::CompletedByHand),
                    "held": r.count(AaOutcome::Held),
                    "timed_out": r.count(AaOutcome::TimedOut),
                    "halted": r.count(AaOutcome::Halted),
                    "failed": r.failures,
                    "required_completed": required(c.rollouts),
                    "pass": r.passed(c.rollouts),
                    "median_completed_s": opt(r.median_completed_secs()),
                    "load": {"requests": r.requests, "errors": r.request_errors},
                    "rollouts": r.rollouts.iter().map(|x| json!({
                        "workload": x.workload, "version": x.version, "rollout_id": x.rollout_id,
                        "outcome": x.outcome.as_str(), "secs": round3(x.secs), "holds": x.holds,
                        "escalated": x.escalated, "phase": x.phase, "signals": x.signals,
                        "why": x.why, "why_text": x.why_text,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "cleanup": a.cleanup.as_ref().map(|s| json!({"server_exit": s.exit, "leftovers": s.leftovers})),
            })
        });
        let detect = self.detect.as_ref().map(|d| {
            json!({
                "elapsed_s": round3(d.elapsed_secs),
                "stable": config_json(&stable_config()),
                "cases": d.cases.iter().map(|k| json!({
                    "case": k.case.key,
                    "label": k.case.label,
                    "canary": config_json(&k.case.canary),
                    "runs_measured": k.runs.len(),
                    "runs_failed": k.failures.iter().map(|(run, why)| json!({"run": run, "error": why})).collect::<Vec<_>>(),
                    "detected": k.detected(),
                    "bar": {"measure": k.case.bar_label, "median_s_below": k.case.bar_secs},
                    "bar_median_ms": opt(k.bar_ms()),
                    "pass": k.passed(),
                    "median_ms_counting_undetected_as_late": {
                        "bake_to_halt": opt(k.median_ms(|r| r.detect_ms)),
                        "first_canary_request_to_halt": opt(k.median_ms(|r| r.from_first_request_ms)),
                        "bake_to_traffic_back": opt(k.median_ms(|r| r.mitigate_ms)),
                    },
                    "detected_runs_ms": {
                        "bake_to_halt": k.summary(|r| r.detect_ms).map(|s| s.json()),
                        "first_canary_request_to_halt": k.summary(|r| r.from_first_request_ms).map(|s| s.json()),
                        "bake_to_traffic_back": k.summary(|r| r.mitigate_ms).map(|s| s.json()),
                    },
                    "simulation": k.simulation,
                    "runs": k.runs.iter().map(|r| json!({
                        "run": r.run, "workload": r.workload, "detected": r.detected, "ended": r.ended,
                        "bake_to_halt_ms": opt(r.detect_ms), "first_canary_request_to_halt_ms": opt(r.from_first_request_ms),
                        "bake_to_traffic_back_ms": opt(r.mitigate_ms), "signals": r.signals,
                        "canary_requests": r.canary_requests, "canary_errors": r.canary_errors,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "cleanup": d.cleanup.as_ref().map(|s| json!({"server_exit": s.exit, "leftovers": s.leftovers})),
            })
        });
        json!({
            "benchmark": "trust",
            "quick": c.quick,
            "config": {
                "rollouts": c.rollouts, "rates": c.rates, "parallel": c.parallel,
                "bake": c.bake.map(|b| b.to_string()), "hold_timeout": c.hold_timeout.to_string(),
                "aa_config": config_json(&c.aa_config), "detect_runs": c.detect_runs, "detect_rps": c.detect_rps,
                "detect_weight": c.detect_weight, "detect_bake": c.detect_bake.to_string(), "users": c.users,
                "server_tick": c.server_tick, "ringfence": self.ringfence,
            },
            "bars": {
                "aa": format!("per rate: no false halt, and at least {REQUIRED_OF} of {OUT_OF} rollouts complete on their own"),
                "detection": cases().iter().map(|k| format!("{}: median {} under {} s", k.key, k.bar_label, k.bar_secs)).collect::<Vec<_>>(),
            },
            "pass": crate::Report::passed(self),
            "aa": aa,
            "detection": detect,
            "notes": self.notes(),
        })
    }
}

impl Report {
    fn aa_table(&self, o: &mut String, a: &AaReport) {
        let c = &self.cfg;
        let _ = writeln!(o);
        let _ =
            writeln!(o, "1. Healthy releases (A/A): rollouts of an identical binary, only the version label differs");
        let _ = writeln!(
            o,
            "  plan    examples/checkout.toml{}: {}; analysis and health rules as in the example",
            if c.bake.is_some() { " with every bake set by --bake" } else { "" },
            describe_plan(&a.plan)
        );
        let _ = writeln!(
            o,
            "          the approval gate is given by the bench once its phase has baked with a healthy live verdict"
        );
        let _ = writeln!(
            o,
            "  release sample-app config {}; fresh replica processes per release; {} workloads per rate at once, each deploying v2, v3, ... one after another",
            if c.aa_config.is_empty() {
                "none (the example's service as it is)".to_string()
            } else {
                c.aa_config.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            },
            c.parallel.min(c.rollouts)
        );
        let _ = writeln!(
            o,
            "  limit   a rollout still running {:.0} s after its deploy (bakes + --hold-timeout {}) counts as held, and is aborted",
            a.limit_secs, c.hold_timeout
        );
        let _ = writeln!(
            o,
            "  bars    per rate: no false halt in {} rollouts; at least {} complete on their own ({REQUIRED_OF} of {OUT_OF})",
            c.rollouts,
            required(c.rollouts)
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:>10} {:>6} {:>10} {:>11} {:>8} {:>6} {:>10} {:>7} {:>7} {:>8} {:>6}  {:<6}  {:>18}",
            "rate",
            "asked",
            "completed",
            "after hold",
            "by hand",
            "held",
            "timed out",
            "HALTED",
            "failed",
            "median",
            "need",
            "result",
            "requests (errors)"
        );
        for r in &a.rates {
            let _ = writeln!(
                o,
                "{:>10} {:>6} {:>10} {:>11} {:>8} {:>6} {:>10} {:>7} {:>7} {:>8} {:>6}  {:<6}  {:>18}",
                format!("{} req/s", r.rate),
                c.rollouts,
                r.count(AaOutcome::Completed),
                r.completed_after_hold(),
                r.count(AaOutcome::CompletedByHand),
                r.count(AaOutcome::Held),
                r.count(AaOutcome::TimedOut),
                r.count(AaOutcome::Halted),
                r.failures.len(),
                r.median_completed_secs().map(|s| format!("{s:.0} s")).unwrap_or_else(|| "-".into()),
                format!(">= {}", required(c.rollouts)),
                if r.passed(c.rollouts) { "PASS" } else { "FAIL" },
                format!("{} ({})", r.requests, r.request_errors)
            );
        }
        let _ = writeln!(
            o,
            "  (completed = on their own; after hold = of those, how many were held after a bake and then passed on their own; by hand = completed only because the approval passed a phase whose verdict was not healthy; HALTED = false rollbacks; failed = the bench could not run it; median = deploy to completed on their own; {:.0} min in all)",
            a.elapsed_secs / 60.0
        );
        let odd: Vec<&AaRollout> = a
            .rates
            .iter()
            .flat_map(|r| &r.rollouts)
            .filter(|r| r.outcome != AaOutcome::Completed || r.holds > 0)
            .collect();
        if !odd.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "Rollouts that did not simply complete (the `why` at the end or at the limit):");
            for r in odd {
                let _ = writeln!(
                    o,
                    "  {:>5} req/s {} {} ({}): {} after {:.0} s{}{}{}",
                    r.rate,
                    r.workload,
                    r.version,
                    r.rollout_id,
                    r.outcome.as_str(),
                    r.secs,
                    if r.phase.is_empty() { String::new() } else { format!(" in phase {}", r.phase) },
                    if r.holds > 0 { format!(", {} hold(s)", r.holds) } else { String::new() },
                    match (r.signals.is_empty(), r.outcome) {
                        (true, _) => String::new(),
                        (false, AaOutcome::Halted) => format!(", halted by {}", r.signals.join("+")),
                        (false, _) => format!(", not healthy at the limit: {}", r.signals.join("+")),
                    }
                );
                if !r.why.is_empty() {
                    let _ = writeln!(o, "      why: {}", r.why);
                }
            }
        }
        let failures: Vec<(f64, &String)> =
            a.rates.iter().flat_map(|r| r.failures.iter().map(move |f| (r.rate, f))).collect();
        if !failures.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "A/A rollouts the bench could not run:");
            for (rate, f) in failures {
                let _ = writeln!(o, "  {rate:>5} req/s {f}");
            }
        }
    }

    fn detect_table(&self, o: &mut String, d: &DetectReport) {
        let c = &self.cfg;
        let _ = writeln!(o);
        let _ = writeln!(o, "2. Detection through the real stack");
        let _ = writeln!(
            o,
            "  setup   examples/checkout.toml with its first phase at {}% baking {}; {} req/s per workload; detected = halted while still in the first phase",
            c.detect_weight, c.detect_bake, c.detect_rps
        );
        let _ = writeln!(
            o,
            "          (in its bake, or after it while an inconclusive verdict holds the phase, watched up to {} s past the bake)",
            DETECT_PAST_BAKE.as_secs()
        );
        let _ = writeln!(
            o,
            "          stable release: {STABLE_ERROR_RATE} errors, latency log-normal median {LATENCY_MS} ms sigma {STABLE_SIGMA} (the simulation's); the canary changes one option"
        );
        let _ = writeln!(
            o,
            "  measure from the event log: bake_started of the first phase -> rollout_halted (detect), -> the router's table without the canary (traffic back);"
        );
        let _ =
            writeln!(o, "          and from the first request the canary answered (load generator) -> rollout_halted");
        let _ = writeln!(
            o,
            "  median  over all runs, a run not detected counting as later than any detected one; simulation = bench/results/detect.txt, the default analysis, same weight; a case also fails when its median is more than 20% (+0.5 s) above the simulation's"
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<28} {:>9} {:>12} {:>14} {:>14} {:>14} {:>22} {:>34}  {:<6}",
            "case",
            "detected",
            "bake->halt",
            "1st req->halt",
            "bake->back",
            "p90 bake->halt",
            "simulation",
            "bar",
            "result"
        );
        for k in &d.cases {
            let runs = k.runs.len() + k.failures.len();
            let _ = writeln!(
                o,
                "{:<28} {:>9} {:>12} {:>14} {:>14} {:>14} {:>22} {:>34}  {:<6}",
                k.case.label,
                format!("{}/{runs}", k.detected()),
                secs(k.median_ms(|r| r.detect_ms)),
                secs(k.median_ms(|r| r.from_first_request_ms)),
                secs(k.median_ms(|r| r.mitigate_ms)),
                secs(k.summary(|r| r.detect_ms).map(|s| s.p90)),
                k.simulation.as_deref().unwrap_or("-"),
                format!("{} < {} s", k.case.bar_label, k.case.bar_secs),
                if k.passed() { "PASS" } else { "FAIL" }
            );
        }
        let _ = writeln!(o, "  ({:.1} min in all; p90 is over the detected runs)", d.elapsed_secs / 60.0);
        let _ = writeln!(o);
        let _ = writeln!(o, "Per run (s; halted by = the signals of the decision):");
        let _ = writeln!(
            o,
            "{:<8} {:>4} {:<14} {:>11} {:>14} {:>11} {:>9} {:>8}  {:<36} halted by",
            "case", "run", "workload", "bake->halt", "1st req->halt", "bake->back", "canary", "errors", "ended"
        );
        for k in &d.cases {
            for r in &k.runs {
                let s = |v: Option<f64>| v.map(|v| format!("{:.2}", v / 1000.0)).unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    o,
                    "{:<8} {:>4} {:<14} {:>11} {:>14} {:>11} {:>9} {:>8}  {:<36} {}",
                    k.case.key,
                    r.run,
                    r.workload,
                    s(r.detect_ms),
                    s(r.from_first_request_ms),
                    s(r.mitigate_ms),
                    r.canary_requests,
                    r.canary_errors,
                    r.ended,
                    if r.signals.is_empty() { "-".to_string() } else { r.signals.join("+") }
                );
            }
            for (run, why) in &k.failures {
                let _ = writeln!(o, "{:<8} {:>4} FAILED: {why}", k.case.key, run);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Report as _;
    use crate::workload::tests::ev;

    fn args() -> TrustArgs {
        TrustArgs {
            rollouts: None,
            rates: None,
            parallel: None,
            bake: None,
            hold_timeout: None,
            aa_config: vec![],
            detect_runs: None,
            detect_rps: 200.0,
            detect_weight: 10.0,
            detect_bake: None,
            quick: false,
            users: 5000,
            server_tick: None,
            keep_data: false,
            output: Output::Table,
        }
    }

    #[test]
    fn defaults_follow_the_brief_and_quick_shrinks_them() {
        let c = args().resolve().unwrap();
        assert_eq!(
            (c.rollouts, c.rates.clone(), c.parallel, c.bake, c.detect_runs),
            (50, vec![100.0, 200.0], 10, None, 10)
        );
        assert_eq!((c.hold_timeout, c.detect_bake), (Dur::secs(180), Dur::secs(120)));
        let q = TrustArgs { quick: true, ..args() }.resolve().unwrap();
        assert_eq!((q.rollouts, q.rates.clone(), q.bake, q.detect_runs), (3, vec![100.0], Some(Dur::secs(10)), 2));
        // An explicit value wins over --quick's.
        let q = TrustArgs { quick: true, rollouts: Some(5), bake: Some(Dur::secs(20)), ..args() }.resolve().unwrap();
        assert_eq!((q.rollouts, q.bake), (5, Some(Dur::secs(20))));
    }

    #[test]
    fn bad_arguments_are_refused_with_the_flag_named() {
        let cases: Vec<(TrustArgs, &str)> = vec![
            (TrustArgs { rollouts: Some(5000), ..args() }, "--rollouts"),
            (TrustArgs { rates: Some(vec![]), ..args() }, "--rates"),
            (TrustArgs { rates: Some(vec![0.0]), ..args() }, "--rates"),
            (TrustArgs { rates: Some(vec![f64::NAN]), ..args() }, "--rates"),
            (TrustArgs { parallel: Some(0), ..args() }, "--parallel"),
            (TrustArgs { bake: Some(Dur::ms(10)), ..args() }, "--bake"),
            (TrustArgs { hold_timeout: Some(Dur::secs(1)), ..args() }, "--hold-timeout"),
            (TrustArgs { detect_rps: 0.0, ..args() }, "--detect-rps"),
            (TrustArgs { detect_weight: 100.0, ..args() }, "--detect-weight"),
            (TrustArgs { detect_bake: Some(Dur::secs(1)), ..args() }, "--detect-bake"),
            (TrustArgs { users: 0, ..args() }, "--users"),
            (TrustArgs { rollouts: Some(0), detect_runs: Some(0), ..args() }, "nothing to measure"),
        ];
        for (a, flag) in cases {
            let err = a.resolve().unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
        assert_eq!(parse_key_value("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }

    #[test]
    fn specs_change_only_the_name_port_bakes_and_first_weight() {
        let same = spec_from_example("aa-r100-w01", &SpecEdit::default()).unwrap();
        assert!(same.contains("name = \"aa-r100-w01\""));
        assert!(same.contains("listen = \"127.0.0.1:0\""));
        let example = plan(EXAMPLE).unwrap();
        assert_eq!(plan(&same).unwrap(), example);
        assert!(example.last().unwrap().approval && !example[0].approval);
        // Everything else of the example is there, comments included.
        assert!(same.contains("max_error_rate = 0.05"));
        assert!(same.contains("# percent of users on the new version"));

        let short = spec_from_example("x", &SpecEdit { bake: Some(Dur::secs(10)), first_phase: None }).unwrap();
        let p = plan(&short).unwrap();
        assert!(p.iter().all(|p| p.bake == Dur::secs(10)));
        assert_eq!(plan_ms(&p), 10_000 * p.len() as u64);
        assert_eq!(
            p.iter().map(|p| p.weight).collect::<Vec<_>>(),
            example.iter().map(|p| p.weight).collect::<Vec<_>>()
        );

        let detect =
            spec_from_example("d", &SpecEdit { bake: None, first_phase: Some((10.0, Dur::secs(120))) }).unwrap();
        let p = plan(&detect).unwrap();
        assert_eq!((p[0].weight, p[0].bake), (10.0, Dur::secs(120)));
        assert_eq!(p[1..], example[1..]);
    }

    #[test]
    fn why_is_condensed_to_the_lines_that_say_why() {
        let halted = "Rollout w-3 of w v3 is mitigated (replacing v2).\nDecision: Fallback, in phase \"canary\" at 5% of traffic.\nWhy: error_rate is worse than stable\nRule: ...\nEvidence (sequential analysis over 3.0 s, data 10 ms old):\n  [ok     ] traffic: 40 requests\n            rule: x\n  [FAILED ] error_rate: 3 of 40 failed\n            rule: y\n";
        assert_eq!(why_summary(halted), "Why: error_rate is worse than stable");
        let failed_without_decision = "Held after its bake: x\n  [FAILED ] probe: down\n";
        assert_eq!(why_summary(failed_without_decision), "Held after its bake: x | [FAILED ] probe: down");
        let held = "Rollout w-4 of w v4 is progressing (replacing v3).\nNow in phase 1 of 4 (\"canary\", 5% of traffic), stage Baking.\nHeld after its bake: the verdict is unknown, and only healthy promotes.\nEvidence (...):\n  [unknown] error_rate: not enough evidence yet\n";
        assert_eq!(
            why_summary(held),
            "Held after its bake: the verdict is unknown, and only healthy promotes. | [unknown] error_rate: not enough evidence yet"
        );
        assert_eq!(why_summary("w has had no rollout yet.\n"), "w has had no rollout yet.");
    }

    fn plan4() -> Vec<PlanPhase> {
        plan(EXAMPLE).unwrap()
    }

    #[test]
    fn approval_is_given_only_to_a_baked_healthy_approval_phase() {
        let r = |phase: u64, held: bool, promote: bool| {
            json!({"id": "w-2", "status": "progressing", "stage": "baking", "phase": phase,
                   "held_since": if held { json!(123) } else { Value::Null }, "promote_requested": promote})
        };
        let live = |health: &str| json!({"health": {"rollout_id": "w-2", "verdict": {"health": health}}});
        assert!(awaiting_approval(&r(3, true, false), &live("healthy"), &plan4()));
        // Not baked yet, not an approval phase, already promoted, or not healthy: no.
        assert!(!awaiting_approval(&r(3, false, false), &live("healthy"), &plan4()));
        assert!(!awaiting_approval(&r(0, true, false), &live("healthy"), &plan4()));
        assert!(!awaiting_approval(&r(3, true, true), &live("healthy"), &plan4()));
        assert!(!awaiting_approval(&r(3, true, false), &live("unknown"), &plan4()));
        // A verdict about another rollout says nothing about this one.
        let other = json!({"health": {"rollout_id": "w-1", "verdict": {"health": "healthy"}}});
        assert!(!awaiting_approval(&r(3, true, false), &other, &plan4()));
    }

    #[test]
    fn events_count_holds_but_not_the_approval_wait() {
        let id = json!("w-2");
        let events = vec![
            ev("phase_held", 1, json!({"rollout_id": id, "phase": 0, "verdict": {"health": "unknown"}})),
            ev("phase_held", 2, json!({"rollout_id": "w-1", "phase": 0, "verdict": {"health": "unknown"}})),
            ev("phase_passed", 3, json!({"rollout_id": id, "phase": 0, "by_hand": false})),
            ev("phase_held", 4, json!({"rollout_id": id, "phase": 3, "verdict": {"health": "healthy"}})),
            ev("phase_passed", 5, json!({"rollout_id": id, "phase": 3, "by_hand": false})),
        ];
        assert_eq!(read_aa_events(&events, "w-2"), AaEvents { holds: 1, ..AaEvents::default() });
        let halted = vec![
            ev("escalated", 1, json!({"rollout_id": id, "phase": 1})),
            ev("phase_passed", 2, json!({"rollout_id": id, "phase": 1, "by_hand": true})),
            ev(
                "rollout_halted",
                3,
                json!({"rollout_id": id, "decision": {"phase_name": "half", "weight": 50.0, "verdict": {"signals": [
                    {"signal": "latency_p99", "health": "unhealthy"}, {"signal": "traffic", "health": "healthy"}]}}}),
            ),
        ];
        let e = read_aa_events(&halted, "w-2");
        assert!(e.escalated && e.by_hand);
        assert_eq!((e.halt_phase.as_deref(), e.halt_signals), (Some("half"), vec!["latency_p99".to_string()]));
    }

    fn rollout(outcome: AaOutcome, holds: u32) -> AaRollout {
        AaRollout {
            rate: 100.0,
            workload: "aa-r100-w01".into(),
            version: "v2".into(),
            rollout_id: "aa-r100-w01-2".into(),
            outcome,
            secs: 340.0,
            holds,
            escalated: false,
            phase: String::new(),
            signals: vec![],
            why: String::new(),
            why_text: String::new(),
        }
    }

    fn report(rates: Vec<RateReport>, cases: Vec<CaseReport>, rollouts: u32) -> Report {
        let mut cfg = TrustArgs { rollouts: Some(rollouts), detect_runs: Some(3), ..args() }.resolve().unwrap();
        cfg.rates = rates.iter().map(|r| r.rate).collect();
        Report {
            cfg,
            ringfence: "ringfence".into(),
            aa: Some(AaReport { plan: plan4(), limit_secs: 510.0, rates, elapsed_secs: 60.0, cleanup: None }),
            detect: Some(DetectReport { cases, elapsed_secs: 60.0, cleanup: None }),
        }
    }

    fn rate(outcomes: &[(AaOutcome, u32)]) -> RateReport {
        let rollouts = outcomes.iter().flat_map(|&(o, n)| (0..n).map(move |_| rollout(o, 0))).collect();
        RateReport { rate: 100.0, rollouts, ..RateReport::default() }
    }

    fn run(run: u32, detected: bool, detect_ms: f64) -> DetectRun {
        DetectRun {
            run,
            workload: format!("det-hard-r{run:02}"),
            detected,
            ended: if detected { "mitigated".into() } else { "passed the first phase; aborted".into() },
            detect_ms: detected.then_some(detect_ms),
            from_first_request_ms: detected.then_some(detect_ms + 100.0),
            mitigate_ms: detected.then_some(detect_ms + 20.0),
            signals: vec!["error_rate".into()],
            canary_requests: 50,
            canary_errors: 10,
        }
    }

    fn case(kind: usize, runs: Vec<DetectRun>) -> CaseReport {
        CaseReport { case: cases()[kind].clone(), runs, failures: vec![], simulation: Some("0.8 s / 100%".into()) }
    }

    #[test]
    fn aa_bar_needs_no_halt_and_48_of_50_completed() {
        use AaOutcome::*;
        let hard = || case(0, vec![run(1, true, 900.0)]);
        let ok = report(vec![rate(&[(Completed, 48), (Held, 2)])], vec![hard()], 50);
        assert!(ok.passed(), "{}", ok.table());
        assert!(!report(vec![rate(&[(Completed, 47), (Held, 3)])], vec![hard()], 50).passed());
        let halted = report(vec![rate(&[(Completed, 49), (Halted, 1)])], vec![hard()], 50);
        assert!(!halted.passed());
        assert!(halted.table().contains("FAIL"));
        assert_eq!(halted.json()["aa"]["rates"][0]["halted"], json!(1));
        // Rollouts that never ran count as not completed.
        assert!(!report(vec![rate(&[(Completed, 47)])], vec![hard()], 50).passed());
        // By hand is not on its own.
        assert!(!report(vec![rate(&[(Completed, 47), (CompletedByHand, 3)])], vec![hard()], 50).passed());
        // Small runs need every rollout: 48/50 of 3 rounds up to 3.
        assert!(!report(vec![rate(&[(Completed, 2), (Held, 1)])], vec![hard()], 3).passed());
    }

    #[test]
    fn detection_bar_is_the_median_with_misses_counted_late() {
        let hard = case(0, vec![run(1, true, 900.0), run(2, true, 1200.0), run(3, false, 0.0)]);
        // Hard is measured to traffic back: 920 and 1220 ms, then a miss: median 1220.
        assert_eq!(hard.bar_ms(), Some(1220.0));
        assert!(hard.passed());
        let missed = case(0, vec![run(1, true, 900.0), run(2, false, 0.0), run(3, false, 0.0)]);
        assert_eq!(missed.bar_ms(), Some(f64::INFINITY));
        assert!(!missed.passed());
        let subtle = case(1, vec![run(1, true, 29_000.0), run(2, true, 31_000.0)]);
        assert_eq!(subtle.bar_ms(), Some(30_000.0));
        assert!(!subtle.passed());
        let mut failed = case(0, vec![run(1, true, 900.0)]);
        failed.failures.push((2, "boom".into()));
        assert!(!failed.passed());
        // Within its own bar but much slower than the simulation (0.8 s): fails.
        let slow = case(0, vec![run(1, true, 1_600.0)]);
        assert_eq!(slow.within_simulation(), Some(false));
        assert!(!slow.passed());
        assert_eq!(case(0, vec![run(1, true, 1_400.0)]).within_simulation(), Some(true));
        let r = report(vec![rate(&[(AaOutcome::Completed, 3)])], vec![missed], 3);
        assert!(!r.passed());
        assert!(r.table().contains("not detected"));
        assert_eq!(r.json()["detection"]["cases"][0]["detected"], json!(1));
    }

    #[test]
    fn the_simulation_figures_are_read_from_its_table() {
        let text = "  case                             weight |   sequential a=0.005 |    sequential a=0.05 |\n\
                    \x20 (a) 20% errors                      10% |         0.8 s / 100% |         0.5 s / 100% |\n\
                    \x20 (a) 20% errors                      25% |         0.6 s / 100% |         0.3 s / 100% |\n\
                    \x20 (b) errors 0.5% -> 2%               10% |         28.3 s / 90% |         16.1 s / 96% |\n\
                    \x20 (b) errors 0.5% -> 2%          25% late |         20.7 s / 99% |         14.1 s / 99% |\n\
                    \x20 (c) p99 +50% (same median)          10% |        21.7 s / 100% |        16.4 s / 100% |\n";
        let ten = parse_simulation(text, 10.0);
        assert_eq!(ten.get("(a) 20% errors").map(String::as_str), Some("0.8 s / 100%"));
        assert_eq!(ten.get("(b) errors 0.5% -> 2%").map(String::as_str), Some("28.3 s / 90%"));
        assert_eq!(ten.get("(c) p99 +50% (same median)").map(String::as_str), Some("21.7 s / 100%"));
        let quarter = parse_simulation(text, 25.0);
        assert_eq!(quarter.get("(a) 20% errors").map(String::as_str), Some("0.6 s / 100%"));
        // "25% late" is another row.
        assert_eq!(quarter.get("(b) errors 0.5% -> 2%"), None);
        assert!(parse_simulation("", 10.0).is_empty());
    }

    #[test]
    fn the_canaries_differ_from_stable_in_one_option() {
        let stable = stable_config();
        for c in cases() {
            let diff: Vec<_> = c.canary.iter().zip(&stable).filter(|(a, b)| a != b).collect();
            assert_eq!(diff.len(), 1, "{}", c.key);
        }
        // p99 up by half at the same median: exp(2.326 * (0.674 - 0.5)).
        let ratio = (2.326_f64 * (0.674 - STABLE_SIGMA)).exp();
        assert!((ratio - 1.5).abs() < 0.01, "{ratio}");
    }
}
