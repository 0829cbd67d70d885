//! Mitigation drills: a rollout of a drill release (the stable release's own content under a
//! drill version) with a fault injected on purpose, to show that detection and mitigation
//! happen within the spec's targets. The seeds' "test your entire deployment failure
//! mitigation strategy frequently" and "adopt automatic rollback functionality only after you
//! test your pipeline thoroughly and regularly".
//!
//! A drill is a [`RolloutKind::Drill`] rollout: one phase of the plan, capped at
//! `[drill] max_weight`, judged like any deployment, and never completed (a phase that passes
//! aborts it: the fault went unnoticed). The fault is carried out by the data plane for the
//! drill version's share of traffic (`error-rate`, `latency`), by the executor (`crash`,
//! `hang`) or at the signal seam (`signal-outage`); [`assess`] says when the drill is over and
//! how it went, from the rollout's own record.

use serde::{Deserialize, Serialize};

use crate::command::{CommandError, ErrorCode};
use crate::event::EventKind;
use crate::release::Release;
use crate::rollout::{Rollout, RolloutKind, RolloutStatus, Stage};
use crate::spec::{Gate, PhaseSpec};
use crate::state::{WorkloadState, World};
use crate::time::Timestamp;

/// What a drill breaks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// The router answers this share of the drill version's requests with a 503 itself.
    ErrorRate { rate: f64 },
    /// The router delays each of the drill version's requests by this long.
    Latency { added_ms: u64 },
    /// The drill version's instances are killed (SIGKILL) once its bake starts.
    Crash,
    /// The drill version's instances stop answering (SIGSTOP) once its bake starts.
    Hang,
    /// The traffic counters the analysis reads are unreadable for the drill's length: the
    /// rollout must hold, never pass on no evidence.
    SignalOutage,
    /// The workload's controller stops (no observation, no decision, no action) for this
    /// long while the router fails half the drill version's requests: the data plane must go
    /// on serving from its last table, and the controller must detect and mitigate once it is
    /// back (what a server outage in the middle of a bad rollout does).
    ControlPlaneDown { down_ms: u64 },
}

/// The faults `ringfence drill --fault` takes, as written there.
pub const FAULTS: [&str; 6] = ["error-rate", "latency", "crash", "hang", "signal-outage", "control-plane-down"];

impl Fault {
    /// Parses `error-rate`, `error-rate=0.3`, `latency`, `latency=500ms`, `crash`, `hang`,
    /// `signal-outage`.
    pub fn parse(text: &str) -> Result<Fault, String> {
        let (kind, arg) = match text.split_once('=') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (text.trim(), None),
        };
        let no_arg = |f: Fault| match arg {
            None => Ok(f),
            Some(a) => Err(format!("fault `{kind}` takes no value, found `{a}`")),
        };
        match kind {
            "error-rate" => {
                let rate = match arg {
                    None => 0.5,
                    Some(a) => a
                        .parse::<f64>()
                        .map_err(|_| format!("expected a share like 0.3 after `error-rate=`, found `{a}`"))?,
                };
                if !(rate.is_finite() && rate > 0.0 && rate <= 1.0) {
                    return Err(format!("an error rate is above 0 and at most 1, found {rate}"));
                }
                Ok(Fault::ErrorRate { rate })
            }
            "latency" => {
                let added = match arg {
                    None => crate::duration::Dur::ms(500),
                    Some(a) => crate::duration::parse(a).map_err(|e| format!("`latency={a}`: {e}"))?,
                };
                if added.as_ms() == 0 || added.as_ms() > 60_000 {
                    return Err(format!("added latency is above 0 and at most 60s, found {added}"));
                }
                Ok(Fault::Latency { added_ms: added.as_ms() })
            }
            "control-plane-down" => {
                let down = match arg {
                    None => crate::duration::Dur::secs(10),
                    Some(a) => crate::duration::parse(a).map_err(|e| format!("`control-plane-down={a}`: {e}"))?,
                };
                if down.as_ms() < 1000 || down.as_ms() > 600_000 {
                    return Err(format!("a control-plane outage lasts 1s to 10m, found {down}"));
                }
                Ok(Fault::ControlPlaneDown { down_ms: down.as_ms() })
            }
            "crash" => no_arg(Fault::Crash),
            "hang" => no_arg(Fault::Hang),
            "signal-outage" => no_arg(Fault::SignalOutage),
            other => Err(format!("unknown fault `{other}`; known: {}", FAULTS.join(", "))),
        }
    }

    /// The fault's name as `--fault` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::ErrorRate { .. } => "error-rate",
            Fault::Latency { .. } => "latency",
            Fault::Crash => "crash",
            Fault::Hang => "hang",
            Fault::SignalOutage => "signal-outage",
            Fault::ControlPlaneDown { .. } => "control-plane-down",
        }
    }

    /// The fault with its value, as `--fault` takes it.
    pub fn describe(&self) -> String {
        match self {
            Fault::ErrorRate { rate } => format!("error-rate={rate}"),
            Fault::Latency { added_ms } => format!("latency={added_ms}ms"),
            Fault::ControlPlaneDown { down_ms } => format!("control-plane-down={}", crate::duration::Dur::ms(*down_ms)),
            other => other.name().to_string(),
        }
    }

    /// The trigger (a signal name of `[mitigation] trusted`) a drill of this fault exercises;
    /// `unknown` for the hold on no evidence.
    pub fn trigger(&self) -> &'static str {
        match self {
            Fault::ErrorRate { .. } => "error_rate",
            Fault::Latency { .. } => "latency",
            Fault::Crash => "crash",
            Fault::Hang => "probe",
            Fault::SignalOutage => "unknown",
            Fault::ControlPlaneDown { .. } => "control_plane",
        }
    }

    /// Whether the fault holds the rollout (unknown health) rather than halting it.
    pub fn expects_hold(&self) -> bool {
        matches!(self, Fault::SignalOutage)
    }

    /// What the router does to the drill version's requests, if the router carries it out.
    pub fn route_fault(&self) -> Option<ringfence_traffic::table::GroupFault> {
        match *self {
            Fault::ErrorRate { rate } => {
                Some(ringfence_traffic::table::GroupFault { error_bp: (rate * 10_000.0).round() as u32, delay_ms: 0 })
            }
            Fault::Latency { added_ms } => {
                Some(ringfence_traffic::table::GroupFault { error_bp: 0, delay_ms: added_ms })
            }
            Fault::ControlPlaneDown { .. } => {
                Some(ringfence_traffic::table::GroupFault { error_bp: 5000, delay_ms: 0 })
            }
            _ => None,
        }
    }
}

/// The triggers a drill can exercise, with the fault that does.
pub const TRIGGERS: [(&str, &str); 6] = [
    ("error_rate", "error-rate"),
    ("latency", "latency"),
    ("crash", "crash"),
    ("probe", "hang"),
    ("unknown", "signal-outage"),
    // Not a signal: that the automatic fallback still happens once the controller is back.
    ("control_plane", "control-plane-down"),
];

/// One drill, folded from its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drill {
    pub id: String,
    pub workload: String,
    pub fault: Fault,
    /// The drill release: the stable release's content under a drill version.
    pub version: String,
    pub stable: String,
    pub rollout_id: String,
    pub started_at: Timestamp,
    pub started_by: String,
    pub reason: String,
    /// Whether it was started by `[drill] scheduled`.
    #[serde(default)]
    pub scheduled: bool,
    pub weight_bp: u32,
    /// When the fault took effect, and how (`DrillInjected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub injection: String,
    pub detect_within_ms: u64,
    pub mitigate_within_ms: u64,
    /// Set once it is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<DrillReport>,
}

/// How a drill went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub outcome: DrillOutcome,
    pub ended_at: Timestamp,
    /// When the fault was in effect: the start of the drilled phase's bake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_at: Option<Timestamp>,
    /// From injection to the halt (or, for a signal outage, the hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_detect_ms: Option<u64>,
    /// From detection to the users back on the stable version (the mitigation verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_mitigate_ms: Option<u64>,
    /// The drill version's requests while the drill ran, and how many of them failed.
    pub requests: u64,
    pub failed_requests: u64,
    /// The mitigation the decision engine chose, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitigation: Option<String>,
    /// What went wrong, in words; empty when it passed.
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillOutcome {
    Passed,
    Failed,
    Aborted,
}

impl DrillOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillOutcome::Passed => "passed",
            DrillOutcome::Failed => "failed",
            DrillOutcome::Aborted => "aborted",
        }
    }
}

impl Drill {
    pub fn is_running(&self) -> bool {
        self.report.is_none()
    }

    /// While a control-plane-down drill's outage lasts: when it ends.
    pub fn controller_down_until(&self) -> Option<Timestamp> {
        match (self.fault, self.injected_at) {
            (Fault::ControlPlaneDown { down_ms }, Some(at)) if self.is_running() => Some(at.plus_ms(down_ms)),
            _ => None,
        }
    }

    /// How long the fault keeps the controller away, which detection cannot be faster than.
    fn outage_ms(&self) -> u64 {
        match self.fault {
            Fault::ControlPlaneDown { down_ms } => down_ms,
            _ => 0,
        }
    }
}

/// What `drill` is asked for.
#[derive(Debug, Clone)]
pub struct DrillRequest {
    pub fault: Fault,
    /// Percent of users; capped by `[drill] max_weight`.
    pub weight: Option<f64>,
    /// Run outside the deployment windows.
    pub outside_window: bool,
    pub reason: String,
    pub scheduled: bool,
}

/// Starts a drill: a drill release, the drill, and its rollout. Refused while a rollout runs,
/// without a stable release, and outside the deployment windows unless asked.
pub fn start(
    world: &World,
    name: &str,
    req: &DrillRequest,
    actor: &str,
    now: Timestamp,
) -> Result<Vec<EventKind>, CommandError> {
    let ws = crate::command::workload(world, name)?;
    let refuse = |code, msg: String| Err(CommandError { code, message: msg });
    if let Some(r) = ws.active_rollout() {
        return refuse(
            ErrorCode::Conflict,
            format!("rollout {} of {name} is in progress: drill when it is over", r.id),
        );
    }
    if let Some(l) = &world.line {
        return refuse(
            ErrorCode::Conflict,
            format!("the line is stopped ({}): no drill starts until it is lifted", l.reason),
        );
    }
    if let Some(q) = ws.governance.pending.as_ref() {
        return refuse(
            ErrorCode::Conflict,
            format!("a deployment of {} is queued for {name}: drill when it has run", q.version),
        );
    }
    let Some(stable) = ws.stable.clone() else {
        return refuse(ErrorCode::Conflict, format!("{name} has no stable release yet: a drill copies it"));
    };
    let Some(base) = ws.releases.get(&stable) else {
        return refuse(ErrorCode::Conflict, format!("{name}'s stable release {stable} is not known"));
    };
    if matches!(req.fault, Fault::Crash | Fault::Hang) && ws.spec.executor.kind != crate::spec::ExecutorKind::Process {
        return refuse(
            ErrorCode::Invalid,
            format!(
                "fault `{}` signals the instances' processes, which only the process executor can; drill a router fault (error-rate, latency) or signal-outage",
                req.fault.name()
            ),
        );
    }
    if req.fault.route_fault().is_some() && ws.spec.router.kind == crate::spec::RouterKind::Haproxy {
        return refuse(
            ErrorCode::Invalid,
            format!(
                "fault `{}` is carried out by ringfence's router; this workload's traffic goes through HAProxy",
                req.fault.name()
            ),
        );
    }
    if !req.outside_window
        && let Some(reason) = window_closed(ws, now)
    {
        return refuse(
            ErrorCode::Conflict,
            format!("{reason}: a drill runs inside a deployment window (--outside-window to run it anyway)"),
        );
    }
    let spec = &ws.spec;
    let max_bp = spec.drill.max_weight_bp();
    let weight_bp = match req.weight {
        Some(w) if !(w.is_finite() && w > 0.0) => {
            return refuse(ErrorCode::Invalid, format!("a drill's weight is above 0 (percent), found {w}"));
        }
        Some(w) => ((w * 100.0).round() as u32).min(max_bp),
        None => max_bp,
    };
    // The plan's first phase users reach gives the drill its bake; a preview gives nothing.
    let first = spec.rollout.phases.iter().find(|p| !p.is_dark()).unwrap_or(&spec.rollout.phases[0]);
    let phase = PhaseSpec {
        name: format!("drill-{}", req.fault.name()),
        weight: weight_bp as f64 / 100.0,
        bake: first.bake,
        gates: vec![Gate::Health],
        segment: None,
        shadow: None,
    };
    let n = ws.drills.len() + 1;
    let id = format!("{name}-drill-{n}");
    let version = format!("{stable}+drill.{n}");
    crate::release::check_version(&version).map_err(|e| CommandError {
        code: ErrorCode::Invalid,
        message: format!("the drill version {version:?}: {e}"),
    })?;
    let mut content = base.content.clone();
    // The drill release reruns no migration and announces no hotfix: it is the stable code.
    content.migration = None;
    content.hotfix_for = None;
    // Its own instances, not the stable ones (a release with the same artifact and
    // configuration runs on the processes already there): a crash or a hang must hit only it.
    content.config.insert("RINGFENCE_DRILL".into(), id.clone());
    let release = Release {
        workload: name.into(),
        version: version.clone(),
        digest: String::new(),
        content,
        created_at: now,
        created_by: actor.into(),
    };
    let release = Release { digest: release.content.digest(), ..release };
    let detect_within_ms = spec.drill.detect_within.map_or(phase.bake.as_ms(), |d| d.as_ms());
    let drill = Drill {
        id: id.clone(),
        workload: name.into(),
        fault: req.fault,
        version: version.clone(),
        stable: stable.clone(),
        rollout_id: ws.next_rollout_id(),
        started_at: now,
        started_by: actor.into(),
        reason: req.reason.clone(),
        scheduled: req.scheduled,
        weight_bp,
        injected_at: None,
        injection: String::new(),
        detect_within_ms,
        mitigate_within_ms: spec.drill.mitigate_within.as_ms(),
        report: None,
    };
    Ok(vec![
        EventKind::ReleaseCreated { release: Box::new(release) },
        EventKind::DrillStarted { drill: Box::new(drill.clone()) },
        EventKind::RolloutStarted {
            rollout_id: drill.rollout_id.clone(),
            kind: RolloutKind::Drill,
            release: version,
            from: Some(stable),
            phases: vec![phase],
            spec_digest: ws.spec_digest.clone(),
        },
    ])
}

/// Aborts a running drill: its rollout ends and the users go back to the stable version.
pub fn abort(world: &World, name: &str, now: Timestamp) -> Result<Vec<EventKind>, CommandError> {
    let ws = crate::command::workload(world, name)?;
    let Some(d) = ws.drills.iter().rev().find(|d| d.is_running()) else {
        return Err(CommandError { code: ErrorCode::Conflict, message: format!("{name} has no drill running") });
    };
    let mut out = Vec::new();
    if let Some(r) = ws.rollout(&d.rollout_id).filter(|r| r.status.is_active() && r.status != RolloutStatus::Mitigating)
    {
        out.push(EventKind::RolloutAborted { rollout_id: r.id.clone() });
    }
    let report = DrillReport {
        outcome: DrillOutcome::Aborted,
        ended_at: now,
        injected_at: ws.rollout(&d.rollout_id).and_then(|r| r.bake_started_at),
        time_to_detect_ms: None,
        time_to_mitigate_ms: None,
        requests: 0,
        failed_requests: 0,
        mitigation: None,
        problems: vec!["aborted by hand".into()],
    };
    out.push(EventKind::DrillEnded { drill_id: d.id.clone(), report: Box::new(report) });
    Ok(out)
}

/// Why deployments may not run now by the workload's deployment windows, if they may not.
fn window_closed(ws: &WorkloadState, now: Timestamp) -> Option<String> {
    match ws.spec.schedule.check(now) {
        crate::schedule::Gate::Open => None,
        crate::schedule::Gate::Closed { why, .. } => Some(why),
    }
}

fn action_name(a: crate::decision::MitigationAction) -> &'static str {
    use crate::decision::MitigationAction as A;
    match a {
        A::Fallback => "fallback",
        A::Hold => "hold",
        A::Stop => "stop",
        A::ManualRollback => "rollback",
    }
}

/// Whether the fault of a running drill is due to take effect now (its phase's bake began
/// and it has not yet): the controller carries it out and records `DrillInjected`.
pub fn injection_due(ws: &WorkloadState, d: &Drill) -> bool {
    d.is_running()
        && d.injected_at.is_none()
        && ws.rollout(&d.rollout_id).is_some_and(|r| r.status == RolloutStatus::Progressing && r.stage == Stage::Baking)
}

/// Whether the analysis of this rollout must see its traffic counters as unreadable now (a
/// signal-outage drill whose fault took effect).
pub fn signal_outage(ws: &WorkloadState, rollout_id: &str) -> bool {
    ws.drill_of(rollout_id).is_some_and(|d| d.fault == Fault::SignalOutage && d.injected_at.is_some())
}

/// What the drill's counters were when it ended, from the data plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrillTraffic {
    pub requests: u64,
    pub failed: u64,
}

/// Whether the running drill `d` is over, and if so its report. `now` is the time of the
/// tick; `traffic` the drill version's counters. Also says when the drill should stop its
/// rollout (a halt with exposure frozen that no one mitigates, a hold on no evidence): the
/// events to append, the report's `DrillEnded` among them.
pub fn assess(ws: &WorkloadState, d: &Drill, now: Timestamp, traffic: DrillTraffic) -> Vec<EventKind> {
    let Some(r) = ws.rollout(&d.rollout_id) else { return Vec::new() };
    let injected = d.injected_at.or(r.bake_started_at);
    let mut report = DrillReport {
        outcome: DrillOutcome::Failed,
        ended_at: now,
        injected_at: injected,
        time_to_detect_ms: None,
        time_to_mitigate_ms: None,
        requests: traffic.requests,
        failed_requests: traffic.failed,
        mitigation: r.decision.as_ref().map(|x| action_name(x.action).to_string()),
        problems: Vec::new(),
    };
    let detected_at = if d.fault.expects_hold() { r.held_since.or(r.halted_at) } else { r.halted_at };
    // Detection counts from when the controller could see the fault: after an outage of
    // the control plane, from its return.
    report.time_to_detect_ms = match (injected, detected_at) {
        (Some(i), Some(h)) => Some(h.since(i.plus_ms(d.outage_ms()))),
        _ => None,
    };
    let mut out = Vec::new();
    let stop = |out: &mut Vec<EventKind>, r: &Rollout| {
        if r.status.is_active() && r.status != RolloutStatus::Mitigating {
            out.push(EventKind::RolloutAborted { rollout_id: r.id.clone() });
        }
    };
    match r.status {
        // The phase passed with the fault in place: nobody noticed.
        RolloutStatus::Aborted if r.stage == Stage::Passed && detected_at.is_none() => {
            report.problems.push(format!(
                "the fault was not detected: the drill phase passed after {} of bake with {} in effect",
                crate::duration::Dur::ms(r.phases[0].bake.as_ms()),
                d.fault.describe()
            ));
        }
        RolloutStatus::Aborted => {
            // `ringfence abort` of the drill's rollout: the drill is over, unjudged.
            report.outcome = DrillOutcome::Aborted;
            report.problems.push("its rollout was aborted before the drill was judged".into());
            out.push(EventKind::DrillEnded { drill_id: d.id.clone(), report: Box::new(report) });
            return out;
        }
        // A person rolled the drill back before it was judged.
        RolloutStatus::Mitigating | RolloutStatus::Mitigated
            if r.decision.as_ref().is_some_and(|x| x.action == crate::decision::MitigationAction::ManualRollback) =>
        {
            if r.status == RolloutStatus::Mitigating {
                return Vec::new();
            }
            report.outcome = DrillOutcome::Aborted;
            report.time_to_detect_ms = None;
            report.problems.push("rolled back by a person before the drill was judged".into());
            out.push(EventKind::DrillEnded { drill_id: d.id.clone(), report: Box::new(report) });
            return out;
        }
        RolloutStatus::Mitigated => {
            let h = detected_at.unwrap_or(now);
            let mitigated = r.ended_at.unwrap_or(now);
            report.time_to_mitigate_ms = Some(mitigated.since(h));
            judge_times(d, &mut report);
        }
        RolloutStatus::Halted => {
            let h = detected_at.unwrap_or(now);
            if now.since(h) < d.mitigate_within_ms {
                return Vec::new();
            }
            report.problems.push(format!(
                "the rollout halted with exposure frozen and no mitigation followed within {} ({}): users stayed on the drill version until the drill ended it",
                crate::duration::Dur::ms(d.mitigate_within_ms),
                r.decision.as_ref().map_or("no decision".into(), |x| x.rule.clone())
            ));
            judge_times(d, &mut report);
            stop(&mut out, r);
        }
        RolloutStatus::Progressing | RolloutStatus::Paused if d.fault.expects_hold() && r.held_since.is_some() => {
            // Holding on no evidence is the right answer to a signal outage: the drill stops
            // here rather than wait out `max_hold`.
            report.time_to_mitigate_ms = Some(0);
            report.mitigation = Some("hold".into());
            judge_times(d, &mut report);
            stop(&mut out, r);
        }
        RolloutStatus::Progressing | RolloutStatus::Paused => {
            let Some(i) = injected else { return Vec::new() };
            // Past the bake, the phase extends on unknown evidence; the drill gives up at
            // twice its detection target (and never before the bake is served).
            let limit =
                d.detect_within_ms.max(r.phases[0].bake.as_ms()).saturating_mul(2).max(d.detect_within_ms + 10_000)
                    + d.outage_ms();
            if now.since(i) < limit {
                return Vec::new();
            }
            report.problems.push(format!(
                "the fault was not detected within {} of its injection ({} in effect)",
                crate::duration::Dur::ms(limit),
                d.fault.describe()
            ));
            stop(&mut out, r);
        }
        RolloutStatus::Mitigating => {
            // A mitigation under way is never cut short (that would leave users on the fault):
            // past twice its target, the drill is judged failed and the mitigation goes on.
            let h = detected_at.unwrap_or(now);
            let limit = d.mitigate_within_ms.saturating_mul(2).max(d.mitigate_within_ms + 10_000);
            if now.since(h) < limit {
                return Vec::new();
            }
            report.problems.push(format!(
                "the mitigation ({}) was still under way {} after detection, the target is {}",
                report.mitigation.as_deref().unwrap_or("none named"),
                crate::duration::Dur::ms(now.since(h)),
                crate::duration::Dur::ms(d.mitigate_within_ms)
            ));
            judge_times(d, &mut report);
        }
        RolloutStatus::Completed => {
            report.problems.push("the drill release completed its rollout: a drill must never do so".into());
        }
    }
    if report.problems.is_empty() {
        report.outcome = DrillOutcome::Passed;
    }
    out.push(EventKind::DrillEnded { drill_id: d.id.clone(), report: Box::new(report) });
    out
}

fn judge_times(d: &Drill, report: &mut DrillReport) {
    if let Some(t) = report.time_to_detect_ms
        && t > d.detect_within_ms
    {
        report.problems.push(format!(
            "detected after {}, the target is {}",
            crate::duration::Dur::ms(t),
            crate::duration::Dur::ms(d.detect_within_ms)
        ));
    }
    if let Some(t) = report.time_to_mitigate_ms
        && t > d.mitigate_within_ms
    {
        report.problems.push(format!(
            "mitigated {} after detection, the target is {}",
            crate::duration::Dur::ms(t),
            crate::duration::Dur::ms(d.mitigate_within_ms)
        ));
    }
}

/// The last ended drill of each fault, newest first.
pub fn last_per_fault(ws: &WorkloadState) -> Vec<&Drill> {
    let mut seen = std::collections::BTreeSet::new();
    ws.drills.iter().rev().filter(|d| d.report.is_some() && seen.insert(d.fault.name())).map(|d| d.as_ref()).collect()
}

/// Which scheduled drill is due now, if any: the first whose fault's last drill started
/// `every` ago or more (or never ran). None while a rollout or a drill runs.
pub fn scheduled_due(ws: &WorkloadState, now: Timestamp) -> Option<Fault> {
    if ws.active_rollout().is_some()
        || ws.governance.pending.is_some()
        || ws.stable.is_none()
        || ws.drills.iter().any(|d| d.is_running())
    {
        return None;
    }
    ws.spec.drill.scheduled.iter().find_map(|s| {
        let fault = Fault::parse(&s.fault).ok()?;
        let last = ws.drills.iter().rev().find(|d| d.fault.name() == fault.name());
        let due = last.is_none_or(|d| now.since(d.started_at) >= s.every.as_ms());
        (due && window_closed(ws, now).is_none()).then_some(fault)
    })
}

/// Folds a drill event into the workload's drills.
pub(crate) fn apply(ws: &mut WorkloadState, kind: &EventKind, at: Timestamp) {
    match kind {
        EventKind::DrillStarted { drill } => {
            std::sync::Arc::make_mut(&mut ws.drills).push(std::sync::Arc::new((**drill).clone()))
        }
        EventKind::DrillInjected { drill_id, detail } => {
            if let Some(d) = std::sync::Arc::make_mut(&mut ws.drills).iter_mut().rev().find(|d| d.id == *drill_id) {
                let d = std::sync::Arc::make_mut(d);
                d.injected_at = Some(at);
                d.injection = detail.clone();
            }
        }
        EventKind::DrillEnded { drill_id, report } => {
            if let Some(d) = std::sync::Arc::make_mut(&mut ws.drills).iter_mut().rev().find(|d| d.id == *drill_id) {
                std::sync::Arc::make_mut(d).report = Some((**report).clone());
            }
        }
        _ => {}
    }
}

/// Whether a rollout is a drill's: it opens no incident, notifies no one, and counts in no
/// DORA metric.
pub fn is_drill(r: &Rollout) -> bool {
    r.kind == RolloutKind::Drill
}

/// Whether automatic mitigation acts on `trigger` (a signal name, or `unknown` for the hold
/// on no evidence) under the workload's spec.
pub fn automatic(spec: &crate::spec::WorkloadSpec, trigger: &str) -> bool {
    let m = &spec.mitigation;
    if trigger == "unknown" {
        return m.fallback_after_max_hold;
    }
    if trigger == "control_plane" {
        return m.auto_fallback;
    }
    m.auto_fallback
        && (m.trusted.is_empty()
            || m.trusted.iter().any(|t| t == trigger || t.strip_suffix('*').is_some_and(|p| trigger.starts_with(p))))
}

/// The drill trigger a failing signal is, if a drill can exercise it.
pub fn trigger_of(signal: &str) -> Option<&'static str> {
    match signal {
        s if s.starts_with("error_rate") => Some("error_rate"),
        s if s.starts_with("latency") => Some("latency"),
        "crash" | "start" => Some("crash"),
        "probe" | "breaker" => Some("probe"),
        _ => None,
    }
}

/// Under `[drill] trust_only_drilled`, the triggers whose last drill did not pass within
/// `[drill] max_age`, each with why: automatic mitigation does not act on them alone.
pub fn undrilled(ws: &WorkloadState, now: Timestamp) -> Vec<(String, String)> {
    if !ws.spec.drill.trust_only_drilled {
        return Vec::new();
    }
    coverage(ws, now)
        .into_iter()
        .filter(|c| c.trigger != "unknown" && c.trigger != "control_plane" && c.status != "covered")
        .map(|c| {
            let why = match (c.status, &c.last) {
                ("failing", Some(d)) => format!("its last drill ({}) failed", d.id),
                ("stale", _) => {
                    format!("its last passed drill is older than [drill] max_age ({})", ws.spec.drill.max_age)
                }
                _ => format!("no drill has exercised it (`ringfence drill {} --fault {}`)", ws.name, c.fault),
            };
            (c.trigger.to_string(), why)
        })
        .collect()
}

/// One failure mode on a game day.
#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    pub fault: &'static str,
    pub trigger: &'static str,
    pub automatic: bool,
    /// `covered`, `stale`, `failing` or `not_drilled`.
    pub status: &'static str,
    pub drills: u32,
    pub passed: u32,
    pub failed: u32,
    pub last: Option<Drill>,
    pub median_detect_ms: Option<u64>,
    pub median_mitigate_ms: Option<u64>,
    /// The times of its first and latest passed drills: the trend, once there are two.
    pub first_detect_ms: Option<u64>,
    pub latest_detect_ms: Option<u64>,
    pub first_mitigate_ms: Option<u64>,
    pub latest_mitigate_ms: Option<u64>,
}

/// Every failure mode a drill can exercise, with how its drills went.
pub fn coverage(ws: &WorkloadState, now: Timestamp) -> Vec<Coverage> {
    TRIGGERS
        .iter()
        .map(|(trigger, fault)| {
            let ended: Vec<&Drill> = ws
                .drills
                .iter()
                .map(|d| d.as_ref())
                .filter(|d| d.fault.name() == *fault && d.report.is_some())
                .collect();
            let outcome = |d: &&Drill| d.report.as_ref().map(|r| r.outcome);
            let passed: Vec<&Drill> =
                ended.iter().copied().filter(|d| outcome(d) == Some(DrillOutcome::Passed)).collect();
            let last = ended.last().copied();
            let last_passed_age = passed.last().and_then(|d| d.report.as_ref()).map(|r| now.since(r.ended_at));
            let status = match (last.and_then(|d| outcome(&d)), last_passed_age) {
                (Some(DrillOutcome::Failed), _) => "failing",
                (_, Some(age)) if age > ws.spec.drill.max_age.as_ms() => "stale",
                (_, Some(_)) => "covered",
                _ => "not_drilled",
            };
            let median = |f: &dyn Fn(&DrillReport) -> Option<u64>| {
                let mut v: Vec<u64> = passed.iter().filter_map(|d| d.report.as_ref().and_then(f)).collect();
                v.sort_unstable();
                (!v.is_empty()).then(|| v[v.len() / 2])
            };
            let at = |d: Option<&&Drill>, f: &dyn Fn(&DrillReport) -> Option<u64>| {
                d.and_then(|d| d.report.as_ref().and_then(f))
            };
            Coverage {
                first_detect_ms: at(passed.first(), &|r| r.time_to_detect_ms),
                latest_detect_ms: at(passed.last(), &|r| r.time_to_detect_ms),
                first_mitigate_ms: at(passed.first(), &|r| r.time_to_mitigate_ms),
                latest_mitigate_ms: at(passed.last(), &|r| r.time_to_mitigate_ms),
                fault,
                trigger,
                automatic: automatic(&ws.spec, trigger),
                status,
                drills: ended.len() as u32,
                passed: passed.len() as u32,
                failed: ended.iter().filter(|d| outcome(d) == Some(DrillOutcome::Failed)).count() as u32,
                last: last.cloned(),
                median_detect_ms: median(&|r| r.time_to_detect_ms),
                median_mitigate_ms: median(&|r| r.time_to_mitigate_ms),
            }
        })
        .collect()
}

/// The game day's chart: time to detect and time to mitigate of every ended drill, a line per
/// fault, failed drills marked. `None` when no drill has ended.
pub fn game_day_svg(ws: &WorkloadState) -> Option<String> {
    use crate::chart::{Mark, Panel, Series, lines};
    // One colour per fault (the Okabe-Ito palette, told apart with colour blindness).
    const COLOURS: [&str; FAULTS.len()] = ["#d55e00", "#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"];
    let ended: Vec<(&Drill, &DrillReport)> =
        ws.drills.iter().filter_map(|d| d.report.as_ref().map(|r| (d.as_ref(), r))).collect();
    if ended.is_empty() {
        return None;
    }
    let series = |f: &dyn Fn(&DrillReport) -> Option<u64>| -> Vec<Series> {
        FAULTS
            .iter()
            .zip(COLOURS)
            .filter_map(|(fault, colour)| {
                let points: Vec<(Timestamp, f64)> = ended
                    .iter()
                    .filter(|(d, _)| d.fault.name() == *fault)
                    .filter_map(|(_, r)| f(r).map(|ms| (r.ended_at, ms as f64 / 1000.0)))
                    .collect();
                (!points.is_empty()).then(|| Series { name: (*fault).to_string(), colour, points })
            })
            .collect()
    };
    let panels = [
        Panel { label: "time to detect (s)".into(), series: series(&|r| r.time_to_detect_ms), threshold: None },
        Panel { label: "time to mitigate (s)".into(), series: series(&|r| r.time_to_mitigate_ms), threshold: None },
    ];
    let marks: Vec<Mark> = ended
        .iter()
        .filter(|(_, r)| r.outcome == DrillOutcome::Failed)
        .map(|(d, r)| Mark { at: r.ended_at, label: format!("{} failed", d.fault.name()) })
        .collect();
    let covered: Vec<String> = coverage(ws, ended.last().map_or(Timestamp(0), |(_, r)| r.ended_at))
        .iter()
        .map(|c| format!("{} {}", c.fault, c.status.replace('_', " ")))
        .collect();
    let description = format!(
        "{} drills of {} ended, {} passed, {} failed. By failure mode: {}.",
        ended.len(),
        ws.name,
        ended.iter().filter(|(_, r)| r.outcome == DrillOutcome::Passed).count(),
        ended.iter().filter(|(_, r)| r.outcome == DrillOutcome::Failed).count(),
        covered.join(", ")
    );
    Some(lines(&format!("Drills of {}: time to detect and to mitigate", ws.name), &description, &panels, &marks))
}
