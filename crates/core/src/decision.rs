//! Decisions: which mitigation to carry out for an unhealthy rollout, and why.
//!
//! This first engine knows fallback, hold and stop; the later full engine (rollback, bypass
//! with a flag, roll forward) replaces [`decide`] without changing the callers.

use serde::{Deserialize, Serialize};

use crate::health::{Health, Verdict};
use crate::rollout::Rollout;
use crate::spec::MitigationSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// The decision for a phase held on an unknown verdict past `rollout.max_hold`, when the spec
/// says to fall back then (`mitigation.fallback_after_max_hold`).
pub fn decide_held(rollout: &Rollout, verdict: &Verdict, max_hold: crate::duration::Dur) -> Decision {
    let phase = rollout.current_phase();
    let pending: Vec<String> = verdict
        .signals
        .iter()
        .filter(|s| s.health == Health::Unknown)
        .map(|s| format!("{}: {}", s.signal, s.detail))
        .collect();
    Decision {
        action: MitigationAction::Fallback,
        rule: format!(
            "mitigation.fallback_after_max_hold is on: a phase held on an unknown verdict for rollout.max_hold ({max_hold}) falls back"
        ),
        summary: format!(
            "{} could not be shown healthy in phase {:?} ({}% of traffic) within {max_hold}: {}; all traffic returns to {}",
            rollout.release,
            phase.name,
            phase.weight,
            if pending.is_empty() { "the verdict stayed unknown".to_string() } else { pending.join("; ") },
            rollout.from.as_deref().unwrap_or("the stable version")
        ),
        phase: rollout.phase,
        phase_name: phase.name.clone(),
        weight: phase.weight,
        verdict: Some(verdict.clone()),
    }
}

/// Everything a mitigation is decided from, in one value: what is coming (the exposure model,
/// the workload's criticality, the release's migrations and guarding flags, approvals) is a
/// new field here, and no caller changes.
#[derive(Debug, Clone, Copy)]
pub struct DecisionInput<'a> {
    pub rollout: &'a Rollout,
    /// The unhealthy verdict being answered.
    pub verdict: &'a Verdict,
    pub policy: &'a MitigationSpec,
    /// The new release runs on the stable release's processes (it changes only flags), so
    /// falling back reverts flags and stops nothing.
    pub flags_only: bool,
}

/// The mitigation for an unhealthy verdict, with the rule that chose it.
pub fn decide(input: &DecisionInput<'_>) -> Decision {
    let DecisionInput { rollout, verdict, policy, flags_only } = *input;
    debug_assert_eq!(verdict.health, Health::Unhealthy);
    let phase = rollout.current_phase();
    let (action, rule) = match (&rollout.from, policy.auto_fallback) {
        (None, _) => (
            MitigationAction::Stop,
            "first deploy of the workload: there is no stable version to fall back to, so the new version is stopped",
        ),
        (Some(_), true) if flags_only => (
            MitigationAction::Fallback,
            "mitigation.auto_fallback is on: send every user back to the stable release and its flags",
        ),
        (Some(_), true) => (
            MitigationAction::Fallback,
            "mitigation.auto_fallback is on: send all traffic to the stable version and stop the new one",
        ),
        (Some(_), false) => (
            MitigationAction::Hold,
            "mitigation.auto_fallback is off: freeze exposure and wait for a person to roll back or abort",
        ),
    };
    let what: Vec<String> = verdict.deciding().map(|s| format!("{}: {}", s.signal, s.detail)).collect();
    let then = match action {
        MitigationAction::Fallback => {
            format!("all traffic returns to {}", rollout.from.as_deref().unwrap_or("the stable version"))
        }
        MitigationAction::Hold => "exposure is frozen until a person acts".into(),
        MitigationAction::Stop => format!("{} is stopped", rollout.release),
        MitigationAction::ManualRollback => unreachable!("never chosen from a verdict"),
    };
    Decision {
        action,
        rule: rule.into(),
        summary: format!(
            "{} is unhealthy in phase {:?} ({}% of traffic): {}; {}",
            rollout.release,
            phase.name,
            phase.weight,
            what.join("; "),
            then
        ),
        phase: rollout.phase,
        phase_name: phase.name.clone(),
        weight: phase.weight,
        verdict: Some(verdict.clone()),
    }
}

pub fn manual_rollback(rollout: &Rollout, actor: &str, reason: &str) -> Decision {
    let phase = rollout.current_phase();
    Decision {
        action: MitigationAction::ManualRollback,
        rule: format!("`ringfence rollback` by {actor}"),
        summary: format!(
            "{actor} rolled back {} in phase {:?}{}; all traffic returns to {}",
            rollout.release,
            phase.name,
            if reason.is_empty() { String::new() } else { format!(" ({reason})") },
            rollout.from.as_deref().unwrap_or("nothing (first deploy)")
        ),
        phase: rollout.phase,
        phase_name: phase.name.clone(),
        weight: phase.weight,
        verdict: None,
    }
}
