//! The rollout state machine.
//!
//! A rollout walks its release through the phases of a plan. In each phase the new version is
//! first deployed (replicas ready, traffic shifted: `deploying`), then watched for the bake
//! time (`baking`); when its gates hold the phase has `passed` and the next begins. An
//! unhealthy verdict at any moment halts it and hands it to mitigation. [`step`] is the whole
//! decision procedure: a pure function of the rollout, what was observed and the time.

use serde::{Deserialize, Serialize};

use crate::decision::{self, Decision};
use crate::duration::Dur;
use crate::event::{BakeBaseline, EventKind};
use crate::health::{Health, HealthAnalyzer, Mode, Observation, PhaseWindow, Verdict};
use crate::spec::{Gate, HealthSpec, MitigationSpec, PhaseSpec};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKind {
    /// The workload's first release: nothing to compare with or fall back to.
    Initial,
    /// A release through the workload's plan.
    Deploy,
    /// Back to a release that was last known good: one phase at 100%, judged on probes and
    /// crashes, no re-analysis.
    Rollback,
    /// A mitigation drill (`crate::drill`): one phase at a capped weight with a fault
    /// injected, judged like a deployment, and never completed: a phase that passes aborts it.
    Drill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Still owns the workload: no other rollout may start.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Deploying,
    Baking,
    Passed,
}

/// The projection keeps one per rollout ever started, so its size is the history's: the
/// large parts most rollouts never have, or no longer have once ended (the baseline, a
/// decision, a bypass, an emergency), are boxed, and the plan is shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub workload: String,
    pub kind: RolloutKind,
    pub release: String,
    /// The stable version it replaces (the last known good), if any.
    pub from: Option<String>,
    /// Shared with the rollouts before it that followed the same phases (the fold hands the
    /// same `Arc` on): a workload's thousands of rollouts keep one copy of its plan, not one
    /// each.
    pub phases: std::sync::Arc<[PhaseSpec]>,
    pub phase: usize,
    pub stage: Stage,
    pub status: RolloutStatus,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub phase_started_at: Timestamp,
    pub bake_started_at: Option<Timestamp>,
    pub baseline: Option<Box<BakeBaseline>>,
    /// When the analysis window began: the bake's start, or the last baseline reset (a router
    /// restart) within it.
    #[serde(default)]
    pub window_started_at: Option<Timestamp>,
    /// Paused time inside the current bake, which does not count as baking.
    pub paused_ms: u64,
    pub paused_at: Option<Timestamp>,
    pub promote_requested: bool,
    pub held_since: Option<Timestamp>,
    pub escalated: bool,
    pub decision: Option<Box<Decision>>,
    /// The verdict that last changed something (a pass, a hold, a halt).
    pub last_verdict: Option<Verdict>,
    pub spec_digest: String,
    /// Who started it and why (the `rollout_started` event's actor and reason).
    #[serde(default)]
    pub started_by: String,
    #[serde(default)]
    pub reason: String,
    /// Smoke test results, every phase's own (a pass in one phase says nothing of the next).
    #[serde(default)]
    pub smoke: Vec<SmokeResult>,
    /// The traffic each passed comparison phase was judged on: evidence later phases carry.
    #[serde(default)]
    pub windows: Vec<PhaseWindow>,
    /// When it was last halted (an offered bypass waits from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted_at: Option<Timestamp>,
    /// A bypass an approver approved: the guard flags turned off and the rollout going on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<Box<Bypass>>,
    /// Approvals of its phases' gates, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<crate::governance::Approval>,
    /// An emergency deployment: the incident it answers, on the accelerated path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<Box<crate::governance::Emergency>>,
    /// The sequence numbers of its first and its latest event: where its events lie in the
    /// log, so a reader of one rollout reads that stretch, not the workload's whole history.
    #[serde(default)]
    pub first_seq: u64,
    #[serde(default)]
    pub last_seq: u64,
    /// The projection keeps only this one's summary (see [`Rollout::drop_detail`]): a reader
    /// of its verdicts and evidence folds them again from its events ([`detailed`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub detail_dropped: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A bypass as approved: who, why, which flags were turned off, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bypass {
    pub approver: String,
    pub reason: String,
    pub flags: Vec<String>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeResult {
    pub phase: usize,
    pub name: String,
    pub version: String,
    pub passed: bool,
    pub detail: String,
    pub at: Timestamp,
}

impl Rollout {
    /// Drops what only a reader of this one rollout needs, once it has ended: its last verdict,
    /// the decision's copy of it and the options it weighed, the evidence windows, the smoke
    /// results. What lists, metrics and later events read stays: ids, versions, status, times,
    /// who and why, the decision's action and summary, the phases. Without this the projection
    /// grows by about 10 KB per rollout forever (its verdicts are most of it); the log keeps
    /// everything, and [`detailed`] folds it back.
    pub fn drop_detail(&mut self) {
        self.last_verdict = None;
        if let Some(d) = &mut self.decision {
            d.verdict = None;
            d.considered = Vec::new();
        }
        self.baseline = None;
        self.windows = Vec::new();
        self.smoke = Vec::new();
        self.detail_dropped = true;
    }

    /// Whether the new version is judged against the stable one and on every signal, or only
    /// on health checks (probes, crashes, smoke tests). A first deploy has nothing to compare
    /// with; a rollback returns to a release that was verified, and an alert that prompted it
    /// must not block it.
    pub fn is_analysed(&self) -> bool {
        matches!(self.kind, RolloutKind::Deploy | RolloutKind::Drill) && !self.current_phase().is_dark()
    }

    pub fn current_phase(&self) -> &PhaseSpec {
        &self.phases[self.phase.min(self.phases.len() - 1)]
    }

    /// Milliseconds of bake so far, paused time excluded.
    pub fn baked_ms(&self, now: Timestamp) -> u64 {
        let Some(start) = self.bake_started_at else {
            return 0;
        };
        // An ended rollout baked until it ended, however long ago that was.
        let end = self.paused_at.or(self.ended_at).unwrap_or(now);
        end.since(start).saturating_sub(self.paused_ms)
    }

    /// While a phase bakes and the clock runs (not paused): milliseconds until its bake
    /// time is served, when the phase falls due to be judged. The controller wakes then
    /// rather than at its next tick.
    pub fn bake_due_in_ms(&self, now: Timestamp) -> Option<u64> {
        let running = self.stage == Stage::Baking && self.status == RolloutStatus::Progressing;
        (running && self.bake_started_at.is_some() && self.paused_at.is_none())
            .then(|| self.current_phase().bake.as_ms().saturating_sub(self.baked_ms(now)))
    }

    /// Weight of the new version the router should carry now, in basis points.
    pub fn target_weight_bp(&self) -> u32 {
        match self.status {
            RolloutStatus::Progressing | RolloutStatus::Paused | RolloutStatus::Halted => {
                self.current_phase().weight_bp()
            }
            RolloutStatus::Completed => 10_000,
            _ => 0,
        }
    }

    fn mode(&self) -> Mode {
        match self.kind {
            // A dark phase (a blue-green preview) has no users' traffic to compare.
            RolloutKind::Deploy if self.current_phase().is_dark() => Mode::ProbesOnly,
            RolloutKind::Deploy | RolloutKind::Drill => Mode::Phase,
            RolloutKind::Initial | RolloutKind::Rollback => Mode::ProbesOnly,
        }
    }
}

/// What [`step`] needs besides the rollout.
pub struct StepInput<'a> {
    pub now: Timestamp,
    /// The world matches what this rollout wants right now (replicas ready, routes applied,
    /// or, when mitigating, traffic away from and replicas of the new version stopped).
    pub converged: bool,
    pub observation: &'a Observation,
    /// Router counters now, to start a bake window from.
    pub baseline_now: Option<BakeBaseline>,
    pub health: &'a HealthSpec,
    pub mitigation: &'a MitigationSpec,
    pub max_hold: Dur,
    pub analyzer: &'a dyn HealthAnalyzer,
    /// The new release runs on the stable release's processes (it changes only flags), so a
    /// fallback reverts flags and stops nothing.
    pub flags_only: bool,
    /// What the workload and the release say that a mitigation depends on.
    pub decision: decision::DecisionContext<'a>,
    /// Governance: whether the current phase's approval gate has its approvals
    /// (`governance::phase_approved`), and why the rollout may not advance now (a closed
    /// deployment window, a freeze, the line stopped), if it may not. Neither ever holds back
    /// a mitigation.
    pub approved: bool,
    pub advance_blocked: Option<String>,
}

/// What the rollout does next, as events to append. Empty when nothing changes.
pub fn step(r: &Rollout, input: &StepInput<'_>) -> Vec<EventKind> {
    step_judged(r, input).0
}

/// The verdict on a progressing rollout with every signal merged and the health model applied.
pub fn judge(r: &Rollout, input: &StepInput<'_>) -> Verdict {
    let mut verdict = input.analyzer.evaluate(input.observation, input.health, r.mode());
    verdict.merge(&input.observation.signals);
    if !input.health.components.is_empty() {
        let (health, model) = crate::model::apply(&verdict, &input.health.components);
        verdict.health = health;
        verdict.model = Some(model);
    }
    verdict
}

/// [`step`], also returning the verdict it judged on (none when the rollout was not judged).
pub fn step_judged(r: &Rollout, input: &StepInput<'_>) -> (Vec<EventKind>, Option<Verdict>) {
    if matches!(r.status, RolloutStatus::Progressing | RolloutStatus::Paused) {
        let verdict = judge(r, input);
        (step_inner(r, input, verdict.clone()), Some(verdict))
    } else {
        (step_inner(r, input, Verdict::placeholder()), None)
    }
}

fn step_inner(r: &Rollout, input: &StepInput<'_>, verdict: Verdict) -> Vec<EventKind> {
    let id = r.id.clone();
    match r.status {
        RolloutStatus::Halted => {
            // An offered bypass that no approver took in time: everyone goes back.
            match &r.decision {
                Some(d)
                    if !d.bypass_flags.is_empty()
                        && r.bypass.is_none()
                        && r.halted_at.is_some_and(|h| input.now.since(h) >= input.mitigation.bypass_wait.as_ms()) =>
                {
                    let decision = decision::bypass_expired(r, d, input.mitigation.bypass_wait);
                    vec![EventKind::RolloutHalted { rollout_id: id, decision: Box::new(decision) }]
                }
                _ => vec![],
            }
        }
        RolloutStatus::Completed | RolloutStatus::Mitigated | RolloutStatus::Aborted => vec![],
        RolloutStatus::Mitigating => {
            if !input.converged {
                return vec![];
            }
            let (verified, detail) = match (&r.from, &input.observation.baseline) {
                (None, _) => (true, format!("{} stopped; there was no stable version to return to", r.release)),
                (Some(from), None) => (false, format!("traffic is back on {from}, but it could not be observed")),
                (Some(_), Some(b)) if !b.probes_failing.is_empty() => {
                    // The way back does not restore health: its instances fail too. Fresh ones,
                    // and a person is told.
                    return vec![
                        EventKind::MitigationCompleted {
                            rollout_id: id.clone(),
                            verified: false,
                            detail: format!(
                                "traffic is back on {} but its probes fail ({}): it is redeployed onto fresh instances, and escalated",
                                b.version,
                                b.probes_failing.join(", ")
                            ),
                        },
                        EventKind::Escalated { rollout_id: id, phase: r.phase },
                        EventKind::RedeployRequested { version: b.version.clone() },
                    ];
                }
                (Some(_), Some(b)) if b.probes_answered == 0 => {
                    (false, format!("traffic is back on {}, but none of its probes has answered yet", b.version))
                }
                (Some(_), Some(b)) => (
                    true,
                    if input.flags_only {
                        format!("all users back on {} and its flags, probes pass", b.version)
                    } else {
                        format!("all traffic on {}, {} stopped, probes pass", b.version, r.release)
                    },
                ),
            };
            vec![EventKind::MitigationCompleted { rollout_id: id, verified, detail }]
        }
        RolloutStatus::Progressing | RolloutStatus::Paused => {
            if verdict.health == Health::Unhealthy {
                let decision = decision::decide(&decision::DecisionInput {
                    rollout: r,
                    verdict: &verdict,
                    policy: input.mitigation,
                    flags_only: input.flags_only,
                    context: input.decision,
                });
                return vec![EventKind::RolloutHalted { rollout_id: id, decision: Box::new(decision) }];
            }
            match r.stage {
                Stage::Deploying => {
                    // Smoke tests run once the phase's exposure is in place; the bake waits for
                    // every one of them (a failure has already halted above).
                    let smoked = r.smoke.iter().filter(|t| t.phase == r.phase).count();
                    if input.converged && smoked >= input.health.smoke.len() {
                        vec![EventKind::BakeStarted {
                            rollout_id: id,
                            phase: r.phase,
                            baseline: input.baseline_now.clone(),
                        }]
                    } else {
                        vec![]
                    }
                }
                Stage::Baking => match (&r.baseline, &input.baseline_now) {
                    // The router restarted: its counters started over, so the window must too,
                    // or the analysis stays blind for the rest of the bake.
                    (Some(old), Some(now)) if old.router_instance != now.router_instance => {
                        vec![EventKind::BaselineReset { rollout_id: id, phase: r.phase, baseline: now.clone() }]
                    }
                    _ => bake_step(r, input, verdict),
                },
                Stage::Passed => advance(r),
            }
        }
    }
}

fn bake_step(r: &Rollout, input: &StepInput<'_>, verdict: Verdict) -> Vec<EventKind> {
    if r.status == RolloutStatus::Paused {
        return vec![];
    }
    let phase = r.current_phase();
    let baked = r.baked_ms(input.now) >= phase.bake.as_ms();
    if !baked && !r.promote_requested {
        return vec![];
    }
    let health_ok = !phase.gates.contains(&Gate::Health) || verdict.health == Health::Healthy;
    // An approval gate passes on its approvals only: a promote by hand is one person's
    // approval (recorded with it), never more.
    let approved = !phase.gates.contains(&Gate::Approval) || input.approved;
    let mut out = Vec::new();
    if input.advance_blocked.is_some() && approved && (health_ok || r.promote_requested) {
        // Ready, but it may not advance now (the status says why): wait, with no event and no
        // escalation, since nothing is wrong with the release.
        return out;
    }
    if approved && (health_ok || r.promote_requested) {
        out.push(EventKind::PhasePassed {
            rollout_id: r.id.clone(),
            phase: r.phase,
            by_hand: r.promote_requested && !(health_ok && baked),
            verdict: Box::new(verdict),
            window: compared_window(r, input).map(Box::new),
        });
        out.extend(advance(r));
        return out;
    }
    // Unknown health or a missing approval: hold, never promote; escalate after a bound.
    match r.held_since {
        None => out.push(EventKind::PhaseHeld {
            rollout_id: r.id.clone(),
            phase: r.phase,
            verdict: Some(Box::new(verdict)),
        }),
        Some(since) if !r.escalated && input.now.since(since) >= input.max_hold.as_ms() => {
            out.push(EventKind::Escalated { rollout_id: r.id.clone(), phase: r.phase });
            // Held for want of evidence, not for an approval: fall back when the spec says so.
            if !health_ok && r.from.is_some() && input.mitigation.fallback_after_max_hold {
                let decision = decision::decide_held(r, &verdict, input.max_hold);
                out.push(EventKind::RolloutHalted { rollout_id: r.id.clone(), decision: Box::new(decision) });
            }
        }
        Some(_) => {}
    }
    out
}

/// The traffic the phase compared the two versions on, if it did.
fn compared_window(r: &Rollout, input: &StepInput<'_>) -> Option<PhaseWindow> {
    let weight_bp = r.current_phase().weight_bp();
    if weight_bp >= 10_000 || r.mode() != Mode::Phase {
        return None;
    }
    let canary = input.observation.canary.traffic.clone()?;
    let stable = input.observation.baseline.as_ref()?.traffic.clone()?;
    (canary.requests > 0 && stable.requests > 0).then_some(PhaseWindow { phase: r.phase, weight_bp, canary, stable })
}

fn advance(r: &Rollout) -> Vec<EventKind> {
    if r.kind == RolloutKind::Drill {
        // The fault went unnoticed for a whole phase: the drill release never goes further.
        return vec![EventKind::RolloutAborted { rollout_id: r.id.clone() }];
    }
    if r.phase + 1 < r.phases.len() {
        vec![EventKind::PhaseStarted { rollout_id: r.id.clone(), phase: r.phase + 1 }]
    } else {
        vec![
            EventKind::RolloutCompleted { rollout_id: r.id.clone() },
            EventKind::LkgUpdated { version: r.release.clone(), rollout_id: r.id.clone() },
        ]
    }
}

/// Applies an event about this rollout. Events about other rollouts are ignored.
pub fn apply(r: &mut Rollout, kind: &EventKind, at: Timestamp) {
    // A new last known good names its rollout but is the workload's to fold, not the
    // rollout's: it changes nothing here, not even `updated_at` (so that a rollout folded
    // again from its events, `detailed`, is the one the projection had).
    if kind.rollout_id() != Some(r.id.as_str()) || matches!(kind, EventKind::LkgUpdated { .. }) {
        return;
    }
    r.updated_at = at;
    match kind {
        EventKind::ApprovalGiven { phase, approver, comment, emergency, .. } => {
            r.approvals.push(crate::governance::Approval {
                by: approver.clone(),
                at,
                comment: comment.clone(),
                phase: *phase,
                emergency: *emergency,
            });
        }
        EventKind::EmergencyDeclared { emergency, .. } => {
            r.emergency = Some(Box::new(emergency.clone()));
        }
        EventKind::BakeStarted { phase, baseline, .. } => {
            r.phase = *phase;
            r.stage = Stage::Baking;
            r.bake_started_at = Some(at);
            r.window_started_at = Some(at);
            r.baseline = baseline.clone().map(Box::new);
            r.paused_ms = 0;
            if r.status == RolloutStatus::Paused {
                r.paused_at = Some(at);
            }
        }
        EventKind::BaselineReset { baseline, .. } => {
            r.window_started_at = Some(at);
            r.baseline = Some(Box::new(baseline.clone()));
        }
        EventKind::PhasePassed { verdict, window, .. } => {
            r.stage = Stage::Passed;
            if let Some(w) = window {
                r.windows.push((**w).clone());
            }
            r.last_verdict = Some((**verdict).clone());
            r.promote_requested = false;
            r.held_since = None;
            r.escalated = false;
        }
        EventKind::PhaseStarted { phase, .. } => {
            r.phase = *phase;
            r.stage = Stage::Deploying;
            r.phase_started_at = at;
            r.bake_started_at = None;
            r.baseline = None;
            r.paused_ms = 0;
            if r.status == RolloutStatus::Paused {
                r.paused_at = Some(at);
            }
        }
        EventKind::PhaseHeld { verdict, .. } => {
            r.held_since = Some(at);
            r.last_verdict = verdict.as_ref().map(|v| (**v).clone());
        }
        EventKind::Escalated { .. } => r.escalated = true,
        EventKind::RolloutCompleted { .. } => {
            r.status = RolloutStatus::Completed;
            r.ended_at = Some(at);
            r.baseline = None;
        }
        EventKind::RolloutHalted { decision, .. } => {
            r.status = match decision.action {
                decision::MitigationAction::Hold => RolloutStatus::Halted,
                _ => RolloutStatus::Mitigating,
            };
            r.last_verdict = decision.verdict.clone();
            r.decision = Some(decision.clone());
            r.halted_at = Some(at);
        }
        EventKind::BypassApproved { approver, flags, justification, .. } => {
            // The phase starts over with the flags off: what was judged before is not this.
            r.status = RolloutStatus::Progressing;
            r.stage = Stage::Deploying;
            r.phase_started_at = at;
            r.bake_started_at = None;
            r.baseline = None;
            r.window_started_at = None;
            r.paused_ms = 0;
            r.paused_at = None;
            r.held_since = None;
            r.bypass = Some(Box::new(Bypass {
                approver: approver.clone(),
                reason: justification.clone(),
                flags: flags.clone(),
                at,
            }));
        }
        EventKind::MitigationCompleted { .. } => {
            r.status = RolloutStatus::Mitigated;
            r.ended_at = Some(at);
            r.baseline = None;
        }
        EventKind::RolloutPaused { .. } => {
            r.status = RolloutStatus::Paused;
            r.paused_at = Some(at);
        }
        EventKind::RolloutResumed { .. } => {
            if let Some(p) = r.paused_at.take()
                && r.bake_started_at.is_some()
            {
                r.paused_ms += at.since(p.max(r.bake_started_at.unwrap_or(p)));
            }
            r.status = RolloutStatus::Progressing;
        }
        EventKind::PromoteRequested { .. } => r.promote_requested = true,
        EventKind::SmokeTestRan { phase, name, version, passed, detail, .. } => r.smoke.push(SmokeResult {
            phase: *phase,
            name: name.clone(),
            version: version.clone(),
            passed: *passed,
            detail: detail.clone(),
            at,
        }),
        EventKind::RolloutAborted { .. } => {
            r.status = RolloutStatus::Aborted;
            r.ended_at = Some(at);
            r.baseline = None;
        }
        _ => {}
    }
}

/// A rollout just started.
#[allow(clippy::too_many_arguments)]
pub fn started(
    id: &str,
    workload: &str,
    kind: RolloutKind,
    release: &str,
    from: Option<&str>,
    phases: &[PhaseSpec],
    spec_digest: &str,
    at: Timestamp,
) -> Rollout {
    Rollout {
        id: id.into(),
        workload: workload.into(),
        kind,
        release: release.into(),
        from: from.map(Into::into),
        phases: phases.into(),
        phase: 0,
        stage: Stage::Deploying,
        status: RolloutStatus::Progressing,
        started_at: at,
        updated_at: at,
        ended_at: None,
        phase_started_at: at,
        bake_started_at: None,
        baseline: None,
        window_started_at: None,
        paused_ms: 0,
        paused_at: None,
        promote_requested: false,
        held_since: None,
        escalated: false,
        decision: None,
        last_verdict: None,
        spec_digest: spec_digest.into(),
        started_by: String::new(),
        reason: String::new(),
        smoke: Vec::new(),
        windows: Vec::new(),
        halted_at: None,
        first_seq: 0,
        last_seq: 0,
        bypass: None,
        approvals: Vec::new(),
        emergency: None,
        detail_dropped: false,
    }
}

/// `r` with its whole detail: itself, or, when the projection dropped it
/// ([`Rollout::drop_detail`]), folded again from its events, which `events` must hold (the
/// stretch of the log from its first event to its latest, or more: other events are skipped).
/// Without them (a log that could not be read whole) the summary is all there is.
pub fn detailed<'a>(r: &'a Rollout, events: &[crate::Event]) -> std::borrow::Cow<'a, Rollout> {
    use std::borrow::Cow;
    if !r.detail_dropped {
        return Cow::Borrowed(r);
    }
    let mut own = events.iter().filter(|e| {
        e.workload == r.workload && (r.first_seq..=r.last_seq).contains(&e.seq) && e.kind.rollout_id() == Some(&r.id)
    });
    let Some(first) = own.next() else { return Cow::Borrowed(r) };
    let EventKind::RolloutStarted { kind, release, from, phases, spec_digest, .. } = &first.kind else {
        return Cow::Borrowed(r);
    };
    let mut full = started(&r.id, &r.workload, *kind, release, from.as_deref(), phases, spec_digest, first.at);
    // Who started it is the projection's reading of governance at the time: kept, not refolded.
    full.started_by = r.started_by.clone();
    full.reason = r.reason.clone();
    (full.first_seq, full.last_seq) = (r.first_seq, r.last_seq);
    for e in own {
        apply(&mut full, &e.kind, e.at);
    }
    Cow::Owned(full)
}
