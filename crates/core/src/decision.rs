//! Decisions: which mitigation to carry out for an unhealthy rollout, and why.
//!
//! [`decide`] weighs every mitigation the seeds name (fall back, roll back, bypass with the
//! release's guard flags, roll forward, redeploy the last known good, hold) against what it
//! knows: the kind of rollout, the exposure model, the trust in the failing signals, the
//! release's data changes and guard flags, the spec's policy. It carries out the ones it can
//! (fallback, hold, stop) and records every option with why it was or was not chosen; the
//! ones that need a person's approval or a hotfix (bypass, roll forward) are recorded as
//! such until the approvals of governance exist.

use serde::{Deserialize, Serialize};

use crate::health::{Health, Verdict};
use crate::release::Migration;
use crate::rollout::{Rollout, RolloutKind};
use crate::spec::{Criticality, ExposureModel, MitigationSpec};

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
    /// Every option weighed, the chosen one marked, each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub considered: Vec<Considered>,
    /// A bypass is offered: turning these guard flags off may keep the release. The rollout
    /// holds until an approver approves (`ringfence bypass`) or `mitigation.bypass_wait` ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypass_flags: Vec<String>,
}

/// One mitigation the engine weighed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Considered {
    /// `fallback`, `rollback`, `bypass`, `roll_forward`, `redeploy`, `hold`, `stop`.
    pub option: String,
    pub chosen: bool,
    pub why: String,
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
        considered: Vec::new(),
        bypass_flags: Vec::new(),
    }
}

/// What the workload and the release say that a mitigation depends on, beside the rollout.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecisionContext<'a> {
    pub model: ExposureModel,
    pub criticality: Criticality,
    /// Flags the release declares as guarding its new code paths (a bypass turns them off).
    pub guard_flags: &'a [String],
    /// The schema migration the release carries, if any.
    pub migration: Option<&'a Migration>,
    /// What the backup hook recorded before this rollout's migration, if it ran.
    pub backup: Option<&'a str>,
    /// An announced hotfix for the release (a release whose `hotfix_for` names it).
    pub hotfix: Option<&'a str>,
    /// Triggers not trusted for automatic mitigation until a drill shows they work
    /// (`[drill] trust_only_drilled`: `crate::drill::undrilled`), each with why.
    pub undrilled: &'a [(String, String)],
}

/// Everything a mitigation is decided from, in one value: what is coming (approvals, an
/// announced hotfix) is a new field here, and no caller changes.
#[derive(Debug, Clone, Copy)]
pub struct DecisionInput<'a> {
    pub rollout: &'a Rollout,
    /// The unhealthy verdict being answered.
    pub verdict: &'a Verdict,
    pub policy: &'a MitigationSpec,
    /// The new release runs on the stable release's processes (it changes only flags), so
    /// falling back reverts flags and stops nothing.
    pub flags_only: bool,
    pub context: DecisionContext<'a>,
}

/// The mitigation for an unhealthy verdict, with the rule that chose it and every option
/// weighed.
pub fn decide(input: &DecisionInput<'_>) -> Decision {
    let DecisionInput { rollout, verdict, policy, flags_only, context } = *input;
    debug_assert_eq!(verdict.health, Health::Unhealthy);
    let phase = rollout.current_phase();
    let stable = rollout.from.as_deref().unwrap_or("the stable version");
    let failing: Vec<&str> = verdict.deciding().map(|s| s.signal.as_str()).collect();
    // A drill is what earns a trigger its trust: its own halt is never held back for want of one.
    let undrilled = |s: &str| {
        let t = crate::drill::trigger_of(s).filter(|_| rollout.kind != RolloutKind::Drill)?;
        context.undrilled.iter().find(|(u, _)| u == t).map(|(_, why)| why)
    };
    let untrusted: Vec<&str> =
        failing.iter().copied().filter(|s| !policy.trusts(s) || undrilled(s).is_some()).collect();
    let only_untrusted = !untrusted.is_empty() && untrusted.len() == failing.len();
    let drill_note: Vec<String> =
        untrusted.iter().filter_map(|s| undrilled(s).map(|why| format!("{s}: {why}"))).collect();
    let irreversible =
        context.migration.filter(|m| m.kind() == crate::release::MigrationKind::Irreversible && !flags_only);
    // A bypass is offered once per rollout, for a release whose new code paths are behind
    // flags, when the spec names who may approve it.
    let offer_bypass = !flags_only
        && rollout.kind == RolloutKind::Deploy
        && rollout.bypass.is_none()
        && !context.guard_flags.is_empty()
        && !policy.bypass_approvers.is_empty();

    let (action, rule) = if rollout.kind == RolloutKind::Rollback {
        (
            MitigationAction::Hold,
            format!(
                "a fast-path rollback turned unhealthy: returning traffic to {stable}, the release it left, would flap between two bad states; a person decides"
            ),
        )
    } else if rollout.from.is_none() {
        (
            MitigationAction::Stop,
            "first deploy of the workload: there is no stable version to fall back to, so the new version is stopped"
                .into(),
        )
    } else if only_untrusted {
        (
            MitigationAction::Hold,
            format!(
                "only signals the spec does not trust for automatic mitigation failed ({}; trusted: {}{}): exposure is frozen and a person decides",
                untrusted.join(", "),
                if policy.trusted.is_empty() { "every signal".to_string() } else { policy.trusted.join(", ") },
                if drill_note.is_empty() {
                    String::new()
                } else {
                    format!("; [drill] trust_only_drilled: {}", drill_note.join("; "))
                }
            ),
        )
    } else if let Some(m) = irreversible {
        (
            MitigationAction::Hold,
            format!(
                "the release carries migration {:?}, which is irreversible: {stable} may not work on the migrated data, so traffic is not sent back to it blindly; a person decides (restore from the backup{}, or roll forward)",
                m.id,
                context.backup.map_or(String::new(), |b| format!(" taken before it: {b}"))
            ),
        )
    } else if offer_bypass {
        (
            MitigationAction::Hold,
            format!(
                "the release's new code paths are behind {}: turning them off may keep it serving, so exposure is frozen while one of {} approves the bypass (`ringfence bypass {} --reason ...`); without an approval within {}, all traffic returns to {stable}",
                context.guard_flags.join(", "),
                policy.bypass_approvers.join(", "),
                rollout.workload,
                policy.bypass_wait
            ),
        )
    } else if !policy.auto_fallback {
        (
            MitigationAction::Hold,
            "mitigation.auto_fallback is off: freeze exposure and wait for a person to roll back or abort".into(),
        )
    } else if flags_only {
        (
            MitigationAction::Fallback,
            "mitigation.auto_fallback is on: send every user back to the stable release and its flags".into(),
        )
    } else {
        (
            MitigationAction::Fallback,
            match context.model {
                ExposureModel::BlueGreen => format!(
                    "mitigation.auto_fallback is on: the old stack of {stable} never stopped, so switching back is the fastest way out; the new stack is stopped"
                ),
                ExposureModel::Rings => format!(
                    "mitigation.auto_fallback is on: {stable} still serves on the instances not yet updated, so all traffic returns to them at once; the updated ring gets {stable} back before the new version is stopped"
                ),
                ExposureModel::Canary => format!(
                    "mitigation.auto_fallback is on: {stable} still serves beside the new version, so all traffic returns to it and the new version is stopped"
                ),
            },
        )
    };
    // The branch above that offers it: every earlier one ruled out.
    let offered = offer_bypass && rollout.from.is_some() && !only_untrusted && irreversible.is_none();
    let considered = weigh(input, action, offered);
    let what: Vec<String> = verdict.deciding().map(|s| format!("{}: {}", s.signal, s.detail)).collect();
    let then = match action {
        MitigationAction::Fallback => format!("all traffic returns to {stable}"),
        MitigationAction::Hold if offered => {
            format!("exposure is frozen while the bypass awaits approval (at most {})", policy.bypass_wait)
        }
        MitigationAction::Hold => "exposure is frozen until a person acts".into(),
        MitigationAction::Stop => format!("{} is stopped", rollout.release),
        MitigationAction::ManualRollback => unreachable!("never chosen from a verdict"),
    };
    Decision {
        action,
        rule,
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
        considered,
        bypass_flags: if offered { context.guard_flags.to_vec() } else { Vec::new() },
    }
}

/// The decision when an offered bypass found no approver in time: everyone goes back to the
/// stable version (or the release stops, on a first deploy).
pub fn bypass_expired(rollout: &Rollout, offered: &Decision, wait: crate::duration::Dur) -> Decision {
    let stable = rollout.from.as_deref();
    let action = if stable.is_some() { MitigationAction::Fallback } else { MitigationAction::Stop };
    Decision {
        action,
        rule: format!(
            "no approver approved the bypass of {} within mitigation.bypass_wait ({wait})",
            offered.bypass_flags.join(", ")
        ),
        summary: format!(
            "{} stayed unhealthy with no bypass approved within {wait}; {}",
            rollout.release,
            match stable {
                Some(s) => format!("all traffic returns to {s}"),
                None => format!("{} is stopped", rollout.release),
            }
        ),
        phase: offered.phase,
        phase_name: offered.phase_name.clone(),
        weight: offered.weight,
        verdict: offered.verdict.clone(),
        considered: offered.considered.clone(),
        bypass_flags: Vec::new(),
    }
}

/// Every option with why it was or was not chosen.
fn weigh(input: &DecisionInput<'_>, chosen: MitigationAction, offered: bool) -> Vec<Considered> {
    let DecisionInput { rollout, policy, flags_only, context, .. } = *input;
    let stable = rollout.from.as_deref().unwrap_or("the stable version");
    let option = |option: &str, is: bool, why: String| Considered { option: option.into(), chosen: is, why };
    let mut out = Vec::new();
    out.push(match rollout.from {
        None => option("fallback", false, "nothing to fall back to: this is the workload's first release".into()),
        Some(_) if rollout.kind == RolloutKind::Rollback => {
            option("fallback", false, format!("{stable} is the release this rollback left"))
        }
        Some(_) if chosen == MitigationAction::Fallback => option(
            "fallback",
            true,
            format!("{stable} still runs beside the new version: the quickest way back, confirmed by its probes"),
        ),
        Some(_) if !policy.auto_fallback => option("fallback", false, "mitigation.auto_fallback is off".into()),
        Some(_) => option("fallback", false, "see the rule: it would not restore a known good state safely".into()),
    });
    out.push(option(
        "rollback",
        false,
        if rollout.from.is_some() && rollout.kind != RolloutKind::Rollback {
            format!("{stable} has not stopped: falling back to it is faster than redeploying it")
        } else {
            "no earlier state to return to that is not the one in question".into()
        },
    ));
    out.push(option(
        "bypass",
        false,
        if context.guard_flags.is_empty() || flags_only {
            "the release declares no flag guarding its new code paths".into()
        } else if offered {
            format!(
                "offered: turning off {} may keep the release; one of {} approves it within {}",
                context.guard_flags.join(", "),
                policy.bypass_approvers.join(", "),
                policy.bypass_wait
            )
        } else if rollout.bypass.is_some() {
            "already taken in this rollout: its guard flags are off, and it failed anyway".into()
        } else {
            format!(
                "turning off {} would keep the release, but it needs a named approver and the spec names none (mitigation.bypass_approvers)",
                context.guard_flags.join(", ")
            )
        },
    ));
    out.push(option(
        "roll_forward",
        false,
        match context.hotfix {
            Some(h) => format!(
                "hotfix {h} is announced: `ringfence deploy {} {h}` rolls forward, replacing this rollout, through the plan (never on its own: a person decides to)",
                rollout.workload
            ),
            None => "no hotfix release was announced (`release create --hotfix-for`)".into(),
        },
    ));
    out.push(option(
        "redeploy",
        false,
        format!(
            "{stable}'s instances still run; redeploying the last known good onto fresh instances is for when they fail (done by itself if its probes fail once traffic is back; `ringfence redeploy` by hand)"
        ),
    ));
    out.push(option(
        "hold",
        chosen == MitigationAction::Hold,
        if offered {
            "exposure frozen while the bypass awaits its approver".into()
        } else if chosen == MitigationAction::Hold {
            "see the rule: a person decides, with the evidence below".into()
        } else {
            "a safe automatic way back exists".into()
        },
    ));
    if chosen == MitigationAction::Stop {
        out.push(option("stop", true, "the new version serves everyone and nothing else can".into()));
    }
    if matches!(context.criticality, Criticality::High | Criticality::Critical)
        && chosen == MitigationAction::Fallback
        && let Some(f) = out.first_mut()
    {
        let kind = if context.criticality == Criticality::Critical { "business-critical" } else { "high-criticality" };
        f.why.push_str(&format!("; a {kind} workload is kept side by side for exactly this"));
    }
    out
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
        considered: Vec::new(),
        bypass_flags: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::SignalResult;
    use crate::rollout::RolloutKind;
    use crate::spec::{Gate, PhaseSpec};
    use crate::time::Timestamp;

    fn rollout(kind: RolloutKind, from: Option<&str>) -> Rollout {
        let phase = |name: &str, weight: f64| PhaseSpec {
            name: name.into(),
            weight,
            bake: crate::duration::Dur::secs(60),
            gates: vec![Gate::Health],
            segment: None,
            shadow: None,
        };
        crate::rollout::started(
            "w-2",
            "w",
            kind,
            "v2",
            from,
            &[phase("canary", 10.0), phase("full", 100.0)],
            "d",
            Timestamp(0),
        )
    }

    fn failing(signals: &[&str]) -> Verdict {
        Verdict {
            health: Health::Unhealthy,
            signals: signals
                .iter()
                .map(|s| SignalResult::new(*s, "v2", Health::Unhealthy, "ratio", "rule", "worse than stable"))
                .collect(),
            ..Verdict::placeholder()
        }
    }

    struct Case {
        name: &'static str,
        kind: RolloutKind,
        from: Option<&'static str>,
        signals: &'static [&'static str],
        trusted: &'static [&'static str],
        auto_fallback: bool,
        migration: Option<bool>,
        guard_flags: &'static [&'static str],
        approvers: &'static [&'static str],
        hotfix: Option<&'static str>,
        model: ExposureModel,
        criticality: Criticality,
        want: MitigationAction,
        rule_has: &'static str,
        considered_has: &'static [(&'static str, &'static str)],
    }

    const BASE: Case = Case {
        name: "",
        kind: RolloutKind::Deploy,
        from: Some("v1"),
        signals: &["error_rate"],
        trusted: &[],
        auto_fallback: true,
        migration: None,
        guard_flags: &[],
        approvers: &[],
        hotfix: None,
        model: ExposureModel::Canary,
        criticality: Criticality::Medium,
        want: MitigationAction::Fallback,
        rule_has: "",
        considered_has: &[],
    };

    #[test]
    fn the_engine_weighs_every_option_the_seeds_name() {
        let cases = [
            Case { name: "canary: fall back to the version still serving", rule_has: "still serves beside", ..BASE },
            Case {
                name: "blue-green: switch back to the old stack",
                model: ExposureModel::BlueGreen,
                rule_has: "old stack of v1 never stopped",
                ..BASE
            },
            Case {
                name: "critical workload: side by side, fall back",
                criticality: Criticality::Critical,
                considered_has: &[("fallback", "critical workload is kept side by side")],
                ..BASE
            },
            Case {
                name: "guard flags: bypass weighed, needs an approver",
                guard_flags: &["new-checkout"],
                considered_has: &[("bypass", "turning off new-checkout"), ("bypass", "names none")],
                ..BASE
            },
            Case {
                name: "guard flags and a named approver: a bypass is offered, exposure frozen",
                guard_flags: &["new-checkout"],
                approvers: &["alice"],
                want: MitigationAction::Hold,
                rule_has: "one of alice approves the bypass",
                considered_has: &[("bypass", "offered: turning off new-checkout"), ("hold", "awaits its approver")],
                ..BASE
            },
            Case {
                name: "an announced hotfix: roll forward is a person's choice, fallback protects users now",
                hotfix: Some("v3"),
                considered_has: &[("roll_forward", "hotfix v3 is announced"), ("fallback", "quickest way back")],
                ..BASE
            },
            Case {
                name: "an irreversible migration is not bypassed either",
                guard_flags: &["new-checkout"],
                approvers: &["alice"],
                migration: Some(false),
                want: MitigationAction::Hold,
                rule_has: "which is irreversible",
                ..BASE
            },
            Case {
                name: "cheap fix: roll forward needs a hotfix",
                considered_has: &[("roll_forward", "no hotfix")],
                ..BASE
            },
            Case {
                name: "an additive migration: falling back is safe",
                migration: Some(true),
                rule_has: "still serves beside",
                ..BASE
            },
            Case {
                name: "an irreversible migration: no blind fallback",
                migration: Some(false),
                want: MitigationAction::Hold,
                rule_has: "which is irreversible",
                considered_has: &[("hold", "a person decides")],
                ..BASE
            },
            Case {
                name: "no last known good: stop",
                kind: RolloutKind::Initial,
                from: None,
                want: MitigationAction::Stop,
                rule_has: "first deploy",
                considered_has: &[("fallback", "nothing to fall back to"), ("stop", "")],
                ..BASE
            },
            Case {
                name: "an untrusted trigger: halt and ask",
                signals: &["user_reports"],
                trusted: &["error_rate", "crash", "latency*"],
                want: MitigationAction::Hold,
                rule_has: "does not trust",
                ..BASE
            },
            Case {
                name: "a trusted trigger among untrusted ones: fall back",
                signals: &["user_reports", "latency_p99_limit"],
                trusted: &["latency*"],
                ..BASE
            },
            Case {
                name: "a rollback that turns unhealthy holds instead of flapping back",
                kind: RolloutKind::Rollback,
                want: MitigationAction::Hold,
                rule_has: "would flap",
                considered_has: &[("fallback", "the release this rollback left")],
                ..BASE
            },
            Case {
                name: "automatic fallback off: hold",
                auto_fallback: false,
                want: MitigationAction::Hold,
                rule_has: "auto_fallback is off",
                considered_has: &[("fallback", "auto_fallback is off")],
                ..BASE
            },
        ];
        for c in cases {
            let r = rollout(c.kind, c.from);
            let verdict = failing(c.signals);
            let policy = MitigationSpec {
                auto_fallback: c.auto_fallback,
                trusted: c.trusted.iter().map(|s| s.to_string()).collect(),
                bypass_approvers: c.approvers.iter().map(|s| s.to_string()).collect(),
                ..MitigationSpec::default()
            };
            let migration =
                c.migration.map(|b| Migration { id: "m1".into(), backward_compatible: b, ..Migration::default() });
            let flags: Vec<String> = c.guard_flags.iter().map(|s| s.to_string()).collect();
            let d = decide(&DecisionInput {
                rollout: &r,
                verdict: &verdict,
                policy: &policy,
                flags_only: false,
                context: DecisionContext {
                    undrilled: &[],
                    model: c.model,
                    criticality: c.criticality,
                    guard_flags: &flags,
                    migration: migration.as_ref(),
                    backup: None,
                    hotfix: c.hotfix,
                },
            });
            assert_eq!(d.action, c.want, "{}: {d:#?}", c.name);
            assert!(d.rule.contains(c.rule_has), "{}: rule {:?}", c.name, d.rule);
            // Every option is weighed, exactly the chosen one marked.
            let options: Vec<&str> = d.considered.iter().map(|o| o.option.as_str()).collect();
            for o in ["fallback", "rollback", "bypass", "roll_forward", "redeploy", "hold"] {
                assert!(options.contains(&o), "{}: {o} not weighed: {options:?}", c.name);
            }
            assert_eq!(d.considered.iter().filter(|o| o.chosen).count(), 1, "{}: {:#?}", c.name, d.considered);
            for (option, why) in c.considered_has {
                assert!(
                    d.considered.iter().any(|o| o.option == *option && o.why.contains(why)),
                    "{}: {option} should say {why:?}: {:#?}",
                    c.name,
                    d.considered
                );
            }
        }
    }
}
