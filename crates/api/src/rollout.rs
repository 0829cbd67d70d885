//! Rollouts: the plan, where a rollout is, its decision and the verdicts with their evidence.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;
use crate::workload::Criticality;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKind {
    /// The workload's first release: nothing to compare with or fall back to.
    Initial,
    /// A release through the workload's plan.
    Deploy,
    /// Back to a release that was last known good.
    Rollback,
    /// A mitigation drill: one capped phase of a drill release with a fault injected.
    Drill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    Progressing,
    Paused,
    Completed,
    /// Stopped by an unhealthy verdict with exposure frozen (automatic fallback off).
    Halted,
    Mitigating,
    Mitigated,
    Aborted,
}

impl RolloutStatus {
    /// Still owns the workload: no other rollout may start, and it may still change.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RolloutStatus::Progressing | RolloutStatus::Paused | RolloutStatus::Halted | RolloutStatus::Mitigating
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStatus::Progressing => "progressing",
            RolloutStatus::Paused => "paused",
            RolloutStatus::Completed => "completed",
            RolloutStatus::Halted => "halted",
            RolloutStatus::Mitigating => "mitigating",
            RolloutStatus::Mitigated => "mitigated",
            RolloutStatus::Aborted => "aborted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Deploying,
    Baking,
    Passed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// The health verdict must be healthy at the end of the bake.
    Health,
    /// A person must promote the phase after its bake.
    Approval,
}

/// One phase of a rollout's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Phase {
    pub name: String,
    /// Percent of users on the new version, 0 < weight <= 100.
    pub weight: f64,
    /// How long the phase must stay healthy before it passes, as written (`30s`, `5m`).
    pub bake: String,
    /// The same in milliseconds.
    pub bake_ms: u64,
    pub gates: Vec<Gate>,
    /// A ring of chosen users on the new version whatever their bucket, on top of `weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,
    /// Shadow traffic: percent of requests copied to the new version, its answers discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<f64>,
}

/// A ring of chosen users: those whose key is listed or starts with a listed prefix, and the
/// requests carrying `header` with one of `values`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Segment {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// A targeting rule over the user key (flagd's JsonLogic, in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// One rollout: a release moving through the phases of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Rollout {
    pub id: String,
    pub workload: String,
    pub kind: RolloutKind,
    pub release: String,
    /// The stable version it replaces (the last known good), if any.
    pub from: Option<String>,
    pub phases: Vec<Phase>,
    /// The phase it is in, from 0.
    pub phase: usize,
    pub stage: Stage,
    pub status: RolloutStatus,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub phase_started_at: Timestamp,
    pub bake_started_at: Option<Timestamp>,
    /// When the analysis window began: the bake's start, or the last restart of the router
    /// within it.
    pub window_started_at: Option<Timestamp>,
    /// Bake time served in the current phase when the server answered (paused time does not
    /// count).
    pub baked_ms: u64,
    pub paused_at: Option<Timestamp>,
    /// A person promoted the current phase; it passes once deployed.
    pub promote_requested: bool,
    /// Since when the phase has been held on an unknown verdict past its bake.
    pub held_since: Option<Timestamp>,
    /// The hold outlasted `rollout.max_hold` and was escalated.
    pub escalated: bool,
    pub decision: Option<Decision>,
    /// The verdict that last changed something (a pass, a hold, a halt).
    pub last_verdict: Option<Verdict>,
    pub spec_digest: String,
    /// Who started it and why.
    pub started_by: String,
    pub reason: String,
    /// A bypass an approver approved in this rollout: its guard flags are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<Bypass>,
    /// Smoke test results, per phase.
    pub smoke: Vec<SmokeResult>,
    /// The traffic of both versions each passed comparison phase was judged on: the evidence
    /// later phases carry.
    pub windows: Vec<PhaseWindow>,
}

impl Rollout {
    /// The phase it is in.
    pub fn current_phase(&self) -> Option<&Phase> {
        self.phases.get(self.phase)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MitigationAction {
    /// All traffic back to the stable version; the new version is stopped.
    Fallback,
    /// Exposure frozen where it is; a person decides (automatic fallback is off).
    Hold,
    /// First deploy, nothing to fall back to: the new version is stopped.
    Stop,
    /// A person asked to return to the last known good state.
    ManualRollback,
}

/// A mitigation decision with the rule that chose it and the verdict that triggered it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub action: MitigationAction,
    /// The rule that chose the action, in words.
    pub rule: String,
    /// One line for people: what was wrong and what is done about it.
    pub summary: String,
    pub phase: usize,
    pub phase_name: String,
    pub weight: f64,
    /// The verdict that triggered it; absent for a person's command.
    pub verdict: Option<Verdict>,
    /// Every mitigation weighed (fallback, rollback, bypass, roll_forward, redeploy, hold,
    /// stop), the chosen one marked, each with why.
    #[serde(default)]
    pub considered: Vec<Considered>,
    /// A bypass is offered: turning these guard flags off may keep the release; the rollout
    /// holds until an approver approves (`POST .../bypass`) or `mitigation.bypass_wait` ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypass_flags: Vec<String>,
}

/// An approved bypass: who approved it, why, which flags it turned off, and when.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Bypass {
    pub approver: String,
    pub reason: String,
    pub flags: Vec<String>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Considered {
    pub option: String,
    pub chosen: bool,
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Unhealthy,
    Unknown,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unknown => "unknown",
        })
    }
}

/// A health verdict: every signal with its evidence, rolled up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Verdict {
    pub health: Health,
    /// The health model: the workload's components, rolled up to one level.
    pub model: Option<HealthModel>,
    pub signals: Vec<SignalResult>,
    pub window_ms: u64,
    /// Age of the newest data the verdict used.
    pub freshness_ms: u64,
    /// Which analysis reached it (`sequential`, `threshold`).
    pub analyzer: String,
}

/// One signal's judgement, with what it was compared against.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignalResult {
    /// `error_rate`, `latency_p99`, `probe`, `crash`, `alert:<name>`, `smoke`...
    pub signal: String,
    pub version: String,
    pub health: Health,
    pub observed: Option<f64>,
    pub threshold: Option<f64>,
    /// The unit of `observed` and `threshold` (`ratio`, `ms`, `e-value`...).
    pub unit: String,
    pub sample_size: u64,
    /// The stable version's value, when compared.
    pub baseline: Option<f64>,
    pub baseline_sample_size: Option<u64>,
    /// The rule applied, in words.
    pub rule: String,
    pub detail: String,
    /// Further named figures of the test (rates, quantiles, bounds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Healthy,
    Degraded,
    Unhealthy,
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthModel {
    pub level: Level,
    pub components: Vec<ComponentHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComponentHealth {
    pub name: String,
    pub criticality: Criticality,
    pub health: Health,
    pub signals: Vec<String>,
}

/// Requests, errors and latency of one version over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Traffic {
    pub requests: u64,
    pub errors: u64,
    /// `[upper bound in µs, count]` per latency bucket of the router.
    #[schema(value_type = Vec<Vec<u64>>)]
    pub latency_us: Vec<(u64, u64)>,
}

/// The traffic a passed comparison phase was judged on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PhaseWindow {
    pub phase: usize,
    pub weight_bp: u32,
    pub canary: Traffic,
    pub stable: Traffic,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SmokeResult {
    pub phase: usize,
    pub name: String,
    pub version: String,
    pub passed: bool,
    pub detail: String,
    pub at: Timestamp,
}

/// `POST .../deploy`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub version: String,
    #[serde(default)]
    pub reason: String,
    /// An emergency deployment (a hotfix during an incident): approved by an emergency
    /// approver, bakes shortened, skipped gates owed out of band. `reason` is its justification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<crate::EmergencyClaim>,
}

/// `POST .../pause`, `resume`, `promote`, `abort`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    pub reason: String,
}

/// The body of the commands that must say why (the kill switch, stopping the line, clearing a
/// hold, revoking, a bypass, a rejection): `Reason` on the wire, with the reason required and
/// not blank (a blank one is refused with 422).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequiredReason {
    #[schema(pattern = r"[^ \t\n\r\x0b\x0c]")]
    pub reason: String,
}

/// `POST .../rollback`: to the last known good, or to `to`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    #[serde(default)]
    pub reason: String,
    /// A version that was last known good; the latest when absent.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub to: Option<String>,
}

/// A rollout started, or a command on one accepted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Started {
    pub rollout_id: String,
    /// Bakes too short for the workload's measured traffic (see `GET .../plan`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// A deployment that may not start yet: what it waits for (approvals, a window). It
    /// starts by itself when nothing is missing; `rollout_id` is empty until then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued: Vec<String>,
}

/// The last decision in plain words, with its evidence.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Why {
    pub text: String,
    pub rollout: Option<Rollout>,
}
