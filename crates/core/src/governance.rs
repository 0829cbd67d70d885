//! Governance: what a deployment must get past before it starts or advances, decided here,
//! in the pure core, for every caller alike (a pipeline cannot skip it by not asking).
//!
//! - **Environments**: a release reaches a workload only after it completed a rollout in the
//!   workload `[environment] after` names, as the same build.
//! - **Predeployment checks**: the attestations `[environment] requires`, each passed and
//!   about the release's artifact.
//! - **Approvals** with separation of duties: the release's author and the deployment's
//!   starter never approve it; approvals expire, and a deployment window closing voids them.
//! - **Windows and freezes** (`crate::schedule`): starting and advancing wait or are refused
//!   outside them. Mitigations never are.
//! - **Stop the line**: every rollout paused, no new one, until lifted.
//! - **Change size**: above a bound, a warning or one more approval.
//! - **Emergency protocol**: a hotfix naming an incident, approved by an emergency approver
//!   when the spec's criteria hold; shorter bakes; the gates it skipped owed out of band.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{CommandError, ErrorCode};
use crate::event::EventKind;
use crate::rollout::{Rollout, RolloutStatus};
use crate::schedule::Gate as Window;
use crate::spec::{Gate, OverSize, PhaseSpec};
use crate::state::{WorkloadState, World};
use crate::time::Timestamp;

/// An emergency deployment's claim: which incident, how severe, and why it cannot wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emergency {
    pub incident: String,
    pub severity: String,
    pub justification: String,
}

/// A predeployment check's result about a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// What was checked: `code-review`, `security-scan`, `compliance`, `tests`, ...
    pub kind: String,
    /// Who or what checked it: a URL of the review, the scanner and its run.
    pub source: String,
    /// What was checked: the artifact's digest (`sha256:...`), or the release's commit.
    pub subject: String,
    pub passed: bool,
    /// When the check ran (the time the attesting system gives; else when it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Attestation {
    /// Whether it is about `release`: its subject is the artifact, the digest the artifact
    /// names (`image@sha256:...`), or the release's commit.
    pub fn is_about(&self, release: &crate::release::Release) -> bool {
        let artifact = &release.content.artifact;
        let digest = artifact.rsplit_once('@').map(|(_, d)| d);
        let commit = &release.content.metadata.commit;
        self.subject == *artifact
            || Some(self.subject.as_str()) == digest
            || (!commit.is_empty() && self.subject == *commit)
    }

    pub fn check(&self) -> Result<(), String> {
        for (field, value, max) in
            [("kind", &self.kind, 63), ("source", &self.source, 512), ("subject", &self.subject, 512)]
        {
            if value.trim().is_empty() || value.chars().count() > max {
                return Err(format!("field `{field}`: expected 1 to {max} characters, found {value:?}"));
            }
        }
        crate::spec::check_name(&self.kind).map_err(|m| format!("field `kind`: {:?}: {m}", self.kind))?;
        if self.detail.chars().count() > 4096 {
            return Err("field `detail`: expected at most 4096 characters".into());
        }
        Ok(())
    }
}

/// One person's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub at: Timestamp,
    pub comment: String,
    /// The phase it approves; none for a deployment's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub emergency: bool,
}

/// A deployment waiting to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    pub version: String,
    pub requested_by: String,
    pub reason: String,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<Emergency>,
    pub approvals_needed: u32,
    pub approvals: Vec<Approval>,
    pub waiting_for: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwedOutcome {
    Passed,
    Failed,
    /// Not settled by its due time: alerted, still owed.
    Overdue,
}

/// A gate an emergency deployment skipped, owed out of band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwedGate {
    pub version: String,
    pub rollout_id: String,
    pub gate: String,
    pub due: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OwedOutcome>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Who may not settle it: the emergency approver (an owed approval is someone else's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// An owed approval's approvers so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<String>,
}

impl OwedGate {
    /// Still owed: nothing settled it (an overdue gate is still owed).
    pub fn is_open(&self) -> bool {
        matches!(self.outcome, None | Some(OwedOutcome::Overdue))
    }
}

/// A workload's governance state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Governance {
    /// Attestations by version, oldest first; the newest of a kind counts.
    #[serde(default)]
    pub attestations: BTreeMap<String, Vec<Attestation>>,
    #[serde(default)]
    pub pending: Option<DeployRequest>,
    #[serde(default)]
    pub owed: Vec<OwedGate>,
}

/// The line stopped for every workload: who, why, since when, and what it paused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineStop {
    pub by: String,
    pub reason: String,
    pub at: Timestamp,
    /// (workload, rollout id) of the rollouts it paused, resumed when the line restarts.
    pub paused: Vec<(String, String)>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> CommandError {
    CommandError { code, message: message.into() }
}

fn line_stopped(world: &World) -> Result<(), CommandError> {
    match &world.line {
        Some(l) => Err(err(
            ErrorCode::Conflict,
            format!(
                "the line is stopped (by {} at {}: {}); no rollout starts or advances until `ringfence freeze --lift --reason ...`; rollbacks still run",
                l.by, l.at, l.reason
            ),
        )),
        None => Ok(()),
    }
}

/// The newest attestation of `kind` about `version`.
fn attestation<'a>(ws: &'a WorkloadState, version: &str, kind: &str) -> Option<&'a Attestation> {
    ws.governance.attestations.get(version)?.iter().rev().find(|a| a.kind == kind)
}

/// What a deployment of `version` still needs, decided when it is asked for.
#[derive(Debug, Default)]
pub struct Admission {
    pub approvals_needed: u32,
    pub waiting_for: Vec<String>,
    pub warnings: Vec<String>,
    /// Gates an emergency deployment skips (owed out of band).
    pub skipped: Vec<String>,
}

/// The governance checks of a deployment request: refused (with what is missing, named), or
/// admitted with what it still waits for.
pub fn admit(
    world: &World,
    ws: &WorkloadState,
    version: &str,
    actor: &str,
    emergency: Option<&Emergency>,
    now: Timestamp,
) -> Result<Admission, CommandError> {
    line_stopped(world)?;
    let spec = &ws.spec;
    let name = &ws.name;
    let release = ws
        .releases
        .get(version)
        .ok_or_else(|| err(ErrorCode::NotFound, format!("{name} has no release {version:?}")))?;
    let mut a = Admission::default();
    if let Some(e) = emergency {
        check_emergency(ws, e)?;
    }
    // The previous environment.
    if let Some(after) = &spec.environment.after {
        let upstream = world.workload(after).filter(|u| !u.deleted);
        // Completed there, and not withdrawn since (revoked, or held after a mitigation).
        let done = upstream.is_some_and(|u| {
            u.lkg.iter().any(|e| e.version == version)
                && !u.revoked.contains_key(version)
                && !u.held.contains_key(version)
        });
        let differs = upstream.and_then(|u| match u.releases.get(version) {
            Some(r) => {
                let (x, y) = (&r.content, &release.content);
                if x.artifact != y.artifact {
                    Some("artifact")
                } else if x.flags != y.flags {
                    Some("flags")
                } else if x.migration != y.migration {
                    Some("migration")
                } else {
                    None
                }
            }
            // Let go there under `[history]`: what was kept of its build is compared whole.
            None => u
                .releases_let_go
                .get(version)
                .filter(|s| s.build != release.content.build())
                .map(|_| "artifact, flags or migration"),
        });
        if let Some(what) = differs {
            return Err(err(
                ErrorCode::Conflict,
                format!(
                    "{version} of {after} differs from {version} of {name} in its {what}: a release is promoted as the same build"
                ),
            ));
        }
        if !done {
            let gate = format!("promotion through {after}");
            if emergency.is_some() {
                a.skipped.push(gate);
            } else {
                let newest = upstream.and_then(|u| u.lkg.last()).map(|e| e.version.clone());
                return Err(err(
                    ErrorCode::Conflict,
                    format!(
                        "{version} has not completed a rollout in {after}, the previous environment; a release reaches {name} only after it did there ({})",
                        match (upstream, newest) {
                            (None, _) => format!("{after} is not a workload here"),
                            (Some(_), Some(v)) => format!("{after}'s newest completed release is {v}"),
                            (Some(_), None) => format!("{after} has completed no release yet"),
                        }
                    ),
                ));
            }
        }
    }
    // Predeployment checks.
    let mut problems = Vec::new();
    for kind in &spec.environment.requires {
        let problem = match attestation(ws, version, kind) {
            None => format!("attestation {kind} is missing"),
            Some(x) if !x.is_about(release) => {
                format!(
                    "attestation {kind} is about {}, not this release's artifact {}",
                    x.subject, release.content.artifact
                )
            }
            Some(x) if !x.passed => format!(
                "attestation {kind} failed ({}{})",
                x.source,
                if x.detail.is_empty() { String::new() } else { format!(": {}", x.detail) }
            ),
            Some(_) => continue,
        };
        if emergency.is_some() {
            a.skipped.push(format!("attestation {kind}"));
        } else {
            problems.push(problem);
        }
    }
    // Checks ringfence runs itself: once per deployment request, before it starts (or, on
    // the emergency path, right after it).
    for c in &spec.environment.checks {
        if emergency.is_some() {
            a.skipped.push(format!("check {}", c.name));
        } else {
            a.waiting_for.push(format!("check {} to pass", c.name));
        }
    }
    if !problems.is_empty() {
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "{version} cannot be deployed to {name}: {}; record checks with `ringfence release attest {name} {version} --kind KIND --source WHERE --subject DIGEST`",
                problems.join("; ")
            ),
        ));
    }
    // Change size.
    let lines = release.content.metadata.size.as_ref().map(|s| s.lines);
    let over = match (spec.environment.max_change_lines, lines) {
        (Some(max), Some(lines)) if lines > max => {
            Some(format!("the change is {lines} lines, above environment.max_change_lines = {max}"))
        }
        // A size the pipeline did not give cannot be shown to be small.
        (Some(max), None) if spec.environment.over_size == OverSize::Approve => Some(format!(
            "the release gives no change size (metadata.size) to hold against environment.max_change_lines = {max}"
        )),
        _ => None,
    };
    if let Some(why) = over {
        match spec.environment.over_size {
            OverSize::Warn => {
                a.warnings.push(format!("{why}: smaller, more frequent changes are easier to judge and undo"))
            }
            OverSize::Approve if emergency.is_none() => {
                a.approvals_needed += 1;
                a.waiting_for.push(format!("one more approval: {why}"));
            }
            OverSize::Approve => {}
        }
    }
    // Separation of duties needs to know who wrote the change, not only who registered it.
    let approvals_here = spec.approval.before_start
        || a.approvals_needed > 0
        || spec.rollout.phases.iter().any(|p| p.gates.contains(&Gate::Approval))
        || emergency.is_some();
    if approvals_here && release.content.metadata.author.trim().is_empty() {
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "{version} names no author (metadata.author): {name} needs approvals, which its author may not give; register the release with --author"
            ),
        ));
    }
    if emergency.is_some() {
        // One emergency approver stands for every approval on the accelerated path.
        a.approvals_needed = 1;
        a.waiting_for = vec![format!("an emergency approver (role emergency-approver on {name}), not {actor}")];
        if spec.approval.before_start || spec.rollout.phases.iter().any(|p| p.gates.contains(&Gate::Approval)) {
            a.skipped.push("approval".into());
        }
        return Ok(a);
    }
    if spec.approval.before_start {
        let n = spec.approval.required;
        a.approvals_needed += n;
        a.waiting_for.insert(
            0,
            format!(
                "{n} approval{} from approvers of {name}, neither {actor} nor the release's author {}",
                if n == 1 { "" } else { "s" },
                release.created_by
            ),
        );
    }
    // Deployment windows and freezes.
    if let Window::Closed { why, next_open } = spec.schedule.check(now) {
        let next = next_open.map_or("no window opens within a year".to_string(), |t| {
            format!("the next window opens {}", spec.schedule.format_time(t))
        });
        if spec.schedule.outside == crate::schedule::Outside::Refuse {
            return Err(err(ErrorCode::Conflict, format!("{name}: {why}; {next}")));
        }
        a.waiting_for.push(format!("{why}; {next}"));
    }
    Ok(a)
}

fn check_emergency(ws: &WorkloadState, e: &Emergency) -> Result<(), CommandError> {
    let allowed = &ws.spec.emergency.severities;
    if allowed.is_empty() {
        return Err(err(
            ErrorCode::Invalid,
            format!("{} has no emergency path: its spec's [emergency] names no severities", ws.name),
        ));
    }
    if e.incident.trim().is_empty() || e.incident.chars().count() > 128 {
        return Err(err(ErrorCode::Invalid, "field `emergency.incident`: name the incident (1 to 128 characters)"));
    }
    if e.justification.trim().is_empty() {
        return Err(err(ErrorCode::Invalid, "an emergency deployment needs a reason: say why it cannot wait"));
    }
    if !allowed.contains(&e.severity) {
        return Err(err(
            ErrorCode::Forbidden,
            format!(
                "severity {:?} does not allow an emergency deployment of {}: emergency.severities is {}",
                e.severity,
                ws.name,
                allowed.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The events that start or queue a deployment `admit` admitted.
pub fn start_or_queue(
    ws: &WorkloadState,
    admitted: Admission,
    started: EventKind,
    emergency: Option<Emergency>,
) -> (Vec<EventKind>, Vec<String>) {
    let version = match &started {
        EventKind::RolloutStarted { release, .. } => release.clone(),
        _ => String::new(),
    };
    if !admitted.waiting_for.is_empty() || admitted.approvals_needed > 0 {
        let mut events = Vec::new();
        if let Some(p) = &ws.governance.pending {
            events.push(EventKind::DeployDropped {
                version: p.version.clone(),
                why: format!("replaced by a deployment of {version}"),
            });
        }
        events.push(EventKind::DeployQueued {
            version,
            emergency,
            approvals_needed: admitted.approvals_needed,
            waiting_for: admitted.waiting_for,
        });
        return (events, admitted.warnings);
    }
    (vec![started], admitted.warnings)
}

/// Approvals of `request` that still count at `now`: not expired, not voided by a window
/// that closed since, one per person.
fn live_approvals<'a>(
    ws: &WorkloadState,
    approvals: &'a [Approval],
    phase: Option<usize>,
    since: Timestamp,
    now: Timestamp,
) -> Vec<&'a Approval> {
    let expires = ws.spec.approval.expires.as_ms();
    let mut seen = std::collections::BTreeSet::new();
    approvals
        .iter()
        .rev()
        .filter(|a| a.phase == phase && a.at >= since && now.since(a.at) < expires)
        .filter(|a| a.emergency || !window_closed_since(ws, a.at, now))
        .filter(|a| seen.insert(a.by.clone()))
        .collect()
}

/// Whether a deployment window closed between `at` and `now` (the approval was given for a
/// window that has since closed: the phase asks again).
fn window_closed_since(ws: &WorkloadState, at: Timestamp, now: Timestamp) -> bool {
    let s = &ws.spec.schedule;
    if s.is_always_open() {
        return false;
    }
    let start = match s.check(at) {
        Window::Open => at,
        Window::Closed { next_open: Some(t), .. } => t,
        Window::Closed { next_open: None, .. } => return false,
    };
    start <= now && !s.open_throughout(start, now)
}

/// Whether the current phase of `r` has the approvals its gate needs.
pub fn phase_approved(ws: &WorkloadState, r: &Rollout, now: Timestamp) -> bool {
    if r.emergency.is_some() {
        return true;
    }
    live_approvals(ws, &r.approvals, Some(r.phase), r.phase_started_at, now).len() as u32 >= ws.spec.approval.required
}

/// Why the rollout may not advance now (outside a window, a freeze, the line stopped); none
/// when it may. An emergency deployment is not held by windows and freezes.
pub fn advance_blocked(world: &World, ws: &WorkloadState, r: &Rollout, now: Timestamp) -> Option<String> {
    // A rollback is a mitigation: nothing holds it back.
    if r.kind == crate::rollout::RolloutKind::Rollback {
        return None;
    }
    if let Some(l) = &world.line {
        return Some(format!("the line is stopped: {}", l.reason));
    }
    if r.emergency.is_some() || r.kind != crate::rollout::RolloutKind::Deploy {
        return None;
    }
    match ws.spec.schedule.check(now) {
        Window::Open => None,
        Window::Closed { why, next_open } => Some(match next_open {
            Some(t) => format!("{why}; the next window opens {}", ws.spec.schedule.format_time(t)),
            None => why,
        }),
    }
}

/// Separation of duties: who may not approve a deployment of `version` started by `starter`.
fn check_duties(ws: &WorkloadState, version: &str, starter: &str, actor: &str) -> Result<(), CommandError> {
    if actor == starter {
        return Err(err(
            ErrorCode::Forbidden,
            format!("{actor} started this deployment of {version} and may not approve it (separation of duties)"),
        ));
    }
    if let Some(r) = ws.releases.get(version)
        && (r.created_by == actor || (!r.content.metadata.author.is_empty() && r.content.metadata.author == actor))
    {
        return Err(err(
            ErrorCode::Forbidden,
            format!("{actor} is the author of {version} and may not approve its deployment (separation of duties)"),
        ));
    }
    Ok(())
}

/// Who is approving, as the server authenticated them.
pub struct Approver<'a> {
    pub name: &'a str,
    /// Holds the emergency-approver role on this workload.
    pub emergency: bool,
}

/// `approve`: a queued deployment, the current phase's gate, or, after an emergency
/// deployment, the approval it skipped. Returns the events (the start too, when this was the
/// last thing it waited for).
pub fn approve(
    world: &World,
    name: &str,
    who: &Approver<'_>,
    comment: &str,
    now: Timestamp,
) -> Result<Vec<EventKind>, CommandError> {
    let ws = crate::command::workload(world, name)?;
    if comment.chars().count() > 2048 {
        return Err(err(ErrorCode::Invalid, "field `reason`: expected at most 2048 characters"));
    }
    if let Some(p) = &ws.governance.pending {
        check_duties(ws, &p.version, &p.requested_by, who.name)?;
        if p.emergency.is_some() && !who.emergency {
            return Err(err(
                ErrorCode::Forbidden,
                format!(
                    "{} is an emergency deployment: only an emergency approver of {name} may approve it",
                    p.version
                ),
            ));
        }
        if p.approvals.iter().any(|a| a.by == who.name && now.since(a.at) < ws.spec.approval.expires.as_ms()) {
            return Err(err(
                ErrorCode::Conflict,
                format!("{} already approved the deployment of {}", who.name, p.version),
            ));
        }
        let given = EventKind::ApprovalGiven {
            rollout_id: None,
            phase: None,
            approver: who.name.into(),
            comment: comment.into(),
            emergency: p.emergency.is_some(),
        };
        let mut p2 = p.clone();
        p2.approvals.push(Approval {
            by: who.name.into(),
            at: now,
            comment: comment.into(),
            phase: None,
            emergency: p.emergency.is_some(),
        });
        let mut out = vec![given];
        if startable(ws, &p.version)
            && let Some(start) = ready(world, ws, &p2, now)?
        {
            out.extend(start);
        }
        return Ok(out);
    }
    let gated = gated_rollout(ws);
    if let Ok(Some(r)) = gated {
        check_duties(ws, &r.release, &r.started_by, who.name)?;
        if r.approvals.iter().any(|a| a.by == who.name && a.phase == Some(r.phase) && a.at >= r.phase_started_at) {
            return Err(err(
                ErrorCode::Conflict,
                format!("{} already approved phase {} of {}", who.name, r.phase + 1, r.id),
            ));
        }
        return Ok(vec![EventKind::ApprovalGiven {
            rollout_id: Some(r.id.clone()),
            phase: Some(r.phase),
            approver: who.name.into(),
            comment: comment.into(),
            emergency: false,
        }]);
    }
    if let Some(o) = ws.governance.owed.iter().find(|o| o.gate == "approval" && o.is_open()) {
        let starter = ws.rollout(&o.rollout_id).map(|r| r.started_by.clone()).unwrap_or_default();
        check_duties(ws, &o.version, &starter, who.name)?;
        if o.exclude.iter().any(|x| x == who.name) {
            return Err(err(
                ErrorCode::Forbidden,
                format!(
                    "{} approved the emergency deployment of {}: the approval it skipped is someone else's",
                    who.name, o.version
                ),
            ));
        }
        if o.approvals.iter().any(|x| x == who.name) {
            return Err(err(
                ErrorCode::Conflict,
                format!("{} already approved {} after the fact", who.name, o.version),
            ));
        }
        let mut out = vec![EventKind::ApprovalGiven {
            rollout_id: None,
            phase: None,
            approver: who.name.into(),
            comment: comment.into(),
            emergency: false,
        }];
        if o.approvals.len() as u32 + 1 >= ws.spec.approval.required {
            let mut by = o.approvals.clone();
            by.push(who.name.into());
            out.push(EventKind::OwedGateSettled {
                version: o.version.clone(),
                gate: o.gate.clone(),
                outcome: OwedOutcome::Passed,
                detail: format!("approved out of band by {}", by.join(", ")),
            });
        }
        return Ok(out);
    }
    gated?;
    Err(err(ErrorCode::Conflict, format!("nothing of {name} waits for an approval")))
}

/// Whether a queued deployment of `version` could start now: no rollout is active, or the
/// active one is halted on the release `version` is an announced hotfix of (a roll forward).
fn startable(ws: &WorkloadState, version: &str) -> bool {
    match ws.active_rollout() {
        None => true,
        Some(r) => {
            r.status == RolloutStatus::Halted
                && ws.releases.get(version).and_then(|x| x.content.hotfix_for.as_deref()) == Some(r.release.as_str())
        }
    }
}

/// The rollout in progress, if any, when its current phase waits at an approval gate; an
/// error when it has no such gate (nothing of it waits for a person's approval).
fn gated_rollout(ws: &WorkloadState) -> Result<Option<&Rollout>, CommandError> {
    let Some(r) =
        ws.active_rollout().filter(|r| matches!(r.status, RolloutStatus::Progressing | RolloutStatus::Paused))
    else {
        return Ok(None);
    };
    if !r.current_phase().gates.contains(&Gate::Approval) {
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "phase {} ({}) of rollout {} has no approval gate: nothing waits for an approval (to stop it: `ringfence abort {}`)",
                r.phase + 1,
                r.current_phase().name,
                r.id,
                ws.name
            ),
        ));
    }
    Ok(Some(r))
}

/// `reject`: the queued deployment is dropped, or the rollout waiting at an approval gate is
/// aborted (traffic back to the stable version). One eligible rejection fails the gate.
pub fn reject(world: &World, name: &str, who: &Approver<'_>, comment: &str) -> Result<Vec<EventKind>, CommandError> {
    let ws = crate::command::workload(world, name)?;
    if comment.trim().is_empty() || comment.chars().count() > 2048 {
        return Err(err(
            ErrorCode::Invalid,
            "a rejection needs a reason (at most 2048 characters): say what must change",
        ));
    }
    if let Some(p) = &ws.governance.pending {
        check_duties(ws, &p.version, &p.requested_by, who.name)?;
        return Ok(vec![
            EventKind::ApprovalRejected { rollout_id: None, approver: who.name.into(), comment: comment.into() },
            EventKind::DeployDropped {
                version: p.version.clone(),
                why: format!("rejected by {}: {comment}", who.name),
            },
        ]);
    }
    if let Some(r) = gated_rollout(ws)? {
        check_duties(ws, &r.release, &r.started_by, who.name)?;
        return Ok(vec![
            EventKind::ApprovalRejected {
                rollout_id: Some(r.id.clone()),
                approver: who.name.into(),
                comment: comment.into(),
            },
            EventKind::RolloutAborted { rollout_id: r.id.clone() },
        ]);
    }
    Err(err(ErrorCode::Conflict, format!("nothing of {name} waits for an approval")))
}

/// The events that start the queued deployment `p` if nothing is missing any more (approvals,
/// a window, the line), else `None`. An emergency approval that expired drops it.
fn ready(
    world: &World,
    ws: &WorkloadState,
    p: &DeployRequest,
    now: Timestamp,
) -> Result<Option<Vec<EventKind>>, CommandError> {
    if world.line.is_some() {
        return Ok(None);
    }
    if p.emergency.is_none() {
        for c in &ws.spec.environment.checks {
            match ws
                .governance
                .attestations
                .get(&p.version)
                .and_then(|v| v.iter().rev().find(|a| a.kind == c.name && a.checked_at.is_some_and(|t| t >= p.at)))
            {
                None => return Ok(None),
                Some(a) if !a.passed => {
                    return Ok(Some(vec![EventKind::DeployDropped {
                        version: p.version.clone(),
                        why: format!(
                            "check {} failed ({}{})",
                            c.name,
                            a.source,
                            if a.detail.is_empty() { String::new() } else { format!(": {}", a.detail) }
                        ),
                    }]));
                }
                Some(_) => {}
            }
        }
    }
    if p.emergency.is_none() && matches!(ws.spec.schedule.check(now), Window::Closed { .. }) {
        return Ok(None);
    }
    // Everything admitted at the request is checked again now, under the spec in force: an
    // attestation may have failed, the release been revoked or held, the previous environment
    // withdrawn it, the approvals needed grown.
    let dropped = |why: String| Ok(Some(vec![EventKind::DeployDropped { version: p.version.clone(), why }]));
    let admitted = match admit(world, ws, &p.version, &p.requested_by, p.emergency.as_ref(), now) {
        Ok(a) => a,
        Err(e) => return dropped(e.message),
    };
    let approvals = live_approvals(ws, &p.approvals, None, p.at, now);
    let eligible = approvals.iter().filter(|a| p.emergency.is_none() || a.emergency).count() as u32;
    if eligible < p.approvals_needed.max(admitted.approvals_needed) {
        return Ok(None);
    }
    let mut out = match crate::command::start_rollout(world, &ws.name, &p.version) {
        Ok(out) => out,
        Err(e) => return dropped(e.message),
    };
    if let (Some(e), Some(id)) = (&p.emergency, out.last().and_then(|e| e.rollout_id()).map(String::from)) {
        accelerate(ws, &mut out, e, &id, admitted.skipped, now);
    }
    Ok(Some(out))
}

/// An emergency deployment's rollout: shorter bakes, no approval gates (the emergency
/// approval stands for them), and the skipped gates owed out of band.
fn accelerate(
    ws: &WorkloadState,
    out: &mut Vec<EventKind>,
    e: &Emergency,
    id: &str,
    skipped: Vec<String>,
    now: Timestamp,
) {
    if let Some(EventKind::RolloutStarted { phases, .. }) = out.last_mut() {
        *phases = accelerated(phases, ws.spec.emergency.bake_factor);
    }
    out.push(EventKind::EmergencyDeclared {
        rollout_id: id.into(),
        emergency: e.clone(),
        skipped,
        due: now.plus_ms(ws.spec.emergency.out_of_band_within.as_ms()),
    });
}

/// What the controller does about governance on its tick: start a queued deployment whose
/// wait is over, drop one whose emergency approval expired, settle the owed gates that
/// passed in the previous environment, and flag the overdue ones.
pub fn tick(world: &World, name: &str, now: Timestamp) -> Vec<EventKind> {
    let Some(ws) = world.workload(name).filter(|ws| !ws.deleted) else { return Vec::new() };
    let mut out = Vec::new();
    if let Some(p) = &ws.governance.pending {
        let expired = p.emergency.is_some()
            && p.approvals.last().is_some_and(|a| now.since(a.at) >= ws.spec.emergency.expires.as_ms());
        if expired {
            out.push(EventKind::DeployDropped {
                version: p.version.clone(),
                why: format!("its emergency approval expired after {}", ws.spec.emergency.expires),
            });
        } else if startable(ws, &p.version) {
            match ready(world, ws, p, now) {
                Ok(Some(start)) => out.extend(start),
                Ok(None) => {}
                Err(e) => out.push(EventKind::DeployDropped { version: p.version.clone(), why: e.message }),
            }
        }
    }
    for o in ws.governance.owed.iter().filter(|o| o.is_open()) {
        if let Some(after) = o.gate.strip_prefix("promotion through ")
            && world.workload(after).is_some_and(|u| u.lkg.iter().any(|e| e.version == o.version))
        {
            out.push(EventKind::OwedGateSettled {
                version: o.version.clone(),
                gate: o.gate.clone(),
                outcome: OwedOutcome::Passed,
                detail: format!("{} completed in {after}", o.version),
            });
        } else if o.outcome.is_none() && now >= o.due {
            out.push(EventKind::OwedGateSettled {
                version: o.version.clone(),
                gate: o.gate.clone(),
                outcome: OwedOutcome::Overdue,
                detail: format!("skipped by the emergency deployment of {} and still not passed", o.version),
            });
        }
    }
    out
}

/// The checks the controller runs now: those of a queued deployment that have no result
/// since it was asked for, and those an emergency deployment skipped once its rollout has
/// ended. (version, check).
pub fn checks_due(world: &World, name: &str) -> Vec<(String, crate::spec::CheckSpec)> {
    let Some(ws) = world.workload(name).filter(|ws| !ws.deleted) else { return Vec::new() };
    let checks = &ws.spec.environment.checks;
    let result_since = |version: &str, kind: &str, since: Timestamp| {
        ws.governance
            .attestations
            .get(version)
            .is_some_and(|v| v.iter().any(|a| a.kind == kind && a.checked_at.is_some_and(|t| t >= since)))
    };
    let mut out = Vec::new();
    if let Some(p) = ws.governance.pending.as_ref().filter(|p| p.emergency.is_none()) {
        for c in checks.iter().filter(|c| !result_since(&p.version, &c.name, p.at)) {
            out.push((p.version.clone(), c.clone()));
        }
    }
    for o in ws.governance.owed.iter().filter(|o| o.is_open()) {
        let ended = ws.rollout(&o.rollout_id).is_some_and(|r| !r.status.is_active());
        if let (true, Some(kind)) = (ended, o.gate.strip_prefix("check "))
            && let Some(c) = checks.iter().find(|c| c.name == kind)
        {
            out.push((o.version.clone(), c.clone()));
        }
    }
    out
}

/// `attest`: records a check about a release; settles the gate an emergency deployment owes.
/// `actor`: `controller` for the checks ringfence runs itself, whose kinds nobody else may
/// record (a pipeline must not pass a check it is held by).
pub fn attest(
    world: &World,
    name: &str,
    version: &str,
    a: &Attestation,
    actor: &str,
    now: Timestamp,
) -> Result<Vec<EventKind>, CommandError> {
    let ws = crate::command::workload(world, name)?;
    if !ws.has_release(version) {
        return Err(err(ErrorCode::NotFound, format!("{name} has no release {version:?}")));
    }
    a.check().map_err(|m| err(ErrorCode::Invalid, m))?;
    let by_controller = actor == "controller";
    if !by_controller && ws.spec.environment.checks.iter().any(|c| c.name == a.kind) {
        return Err(err(
            ErrorCode::Forbidden,
            format!(
                "{} is a check {name} runs itself ([[environment.checks]]): its result is not recorded by hand",
                a.kind
            ),
        ));
    }
    if a.checked_at.is_some_and(|t| t > now.plus_ms(5 * 60_000)) {
        return Err(err(ErrorCode::Invalid, "field `checked_at`: a check cannot have run in the future"));
    }
    if !by_controller && ws.governance.attestations.get(version).is_some_and(|v| v.len() >= 256) {
        return Err(err(ErrorCode::Conflict, format!("{version} of {name} already has 256 attestations")));
    }
    let mut out = vec![EventKind::AttestationAdded { version: version.into(), attestation: a.clone() }];
    let gates = [format!("attestation {}", a.kind), format!("check {}", a.kind)];
    if let Some(gate) = ws
        .governance
        .owed
        .iter()
        .find(|o| o.version == version && gates.contains(&o.gate) && o.is_open())
        .map(|o| o.gate.clone())
    {
        let about = ws.releases.get(version).is_some_and(|r| a.is_about(r));
        let passed = a.passed && about;
        out.push(EventKind::OwedGateSettled {
            version: version.into(),
            gate,
            outcome: if passed { OwedOutcome::Passed } else { OwedOutcome::Failed },
            detail: if passed {
                format!("passed out of band ({})", a.source)
            } else if !about {
                format!("an attestation about {}, not this release", a.subject)
            } else {
                format!(
                    "failed out of band ({}{})",
                    a.source,
                    if a.detail.is_empty() { String::new() } else { format!(": {}", a.detail) }
                )
            },
        });
    }
    Ok(out)
}

/// Stop the line: every progressing rollout of every workload paused, no new one started.
pub fn stop_line(world: &World) -> Result<Vec<(String, EventKind)>, CommandError> {
    if let Some(l) = &world.line {
        return Err(err(
            ErrorCode::Conflict,
            format!("the line is already stopped (by {} at {}: {})", l.by, l.at, l.reason),
        ));
    }
    let mut paused = Vec::new();
    for ws in world.workloads.values().filter(|w| !w.deleted) {
        let stoppable =
            |r: &&Rollout| r.status == RolloutStatus::Progressing && r.kind != crate::rollout::RolloutKind::Rollback;
        if let Some(r) = ws.active_rollout().filter(stoppable) {
            paused.push((ws.name.clone(), r.id.clone()));
        }
    }
    let mut out = vec![(String::new(), EventKind::LineStopped { paused: paused.clone() })];
    out.extend(paused.into_iter().map(|(w, id)| (w, EventKind::RolloutPaused { rollout_id: id })));
    Ok(out)
}

/// Restarts the line: the rollouts it paused resume (those still paused by it).
pub fn restart_line(world: &World) -> Result<Vec<(String, EventKind)>, CommandError> {
    let Some(l) = &world.line else {
        return Err(err(ErrorCode::Conflict, "the line is not stopped"));
    };
    let mut out = vec![(String::new(), EventKind::LineRestarted)];
    for (w, id) in &l.paused {
        let still = world.workload(w).and_then(|ws| ws.rollout(id)).is_some_and(|r| r.status == RolloutStatus::Paused);
        if still {
            out.push((w.clone(), EventKind::RolloutResumed { rollout_id: id.clone() }));
        }
    }
    Ok(out)
}

/// Folds a governance event into the workload's state.
pub(crate) fn apply(ws: &mut WorkloadState, actor: &str, reason: &str, kind: &EventKind, at: Timestamp) {
    let g = &mut ws.governance;
    match kind {
        EventKind::DeployQueued { version, emergency, approvals_needed, waiting_for } => {
            g.pending = Some(DeployRequest {
                version: version.clone(),
                requested_by: actor.into(),
                reason: reason.into(),
                at,
                emergency: emergency.clone(),
                approvals_needed: *approvals_needed,
                approvals: Vec::new(),
                waiting_for: waiting_for.clone(),
            });
        }
        EventKind::DeployDropped { version, .. } if g.pending.as_ref().is_some_and(|p| p.version == *version) => {
            g.pending = None;
        }
        // A rollback to the queued version is not its start: the deployment stays queued.
        EventKind::RolloutStarted { release, kind, .. }
            if *kind != crate::rollout::RolloutKind::Rollback
                && g.pending.as_ref().is_some_and(|p| p.version == *release) =>
        {
            g.pending = None;
        }
        EventKind::ApprovalGiven { rollout_id: None, approver, comment, emergency, .. } => {
            if let Some(p) = &mut g.pending {
                p.approvals.push(Approval {
                    by: approver.clone(),
                    at,
                    comment: comment.clone(),
                    phase: None,
                    emergency: *emergency,
                });
            } else if let Some(o) = g.owed.iter_mut().find(|o| o.gate == "approval" && o.is_open()) {
                o.approvals.push(approver.clone());
            }
        }
        EventKind::EmergencyDeclared { rollout_id, skipped, due, .. } => {
            let version = ws.rollout(rollout_id).map(|r| r.release.clone()).unwrap_or_default();
            for gate in skipped {
                ws.governance.owed.push(OwedGate {
                    version: version.clone(),
                    rollout_id: rollout_id.clone(),
                    gate: gate.clone(),
                    due: *due,
                    outcome: None,
                    detail: String::new(),
                    exclude: vec![actor.to_string()],
                    approvals: Vec::new(),
                });
            }
        }
        EventKind::OwedGateSettled { version, gate, outcome, detail } => {
            if let Some(o) = g.owed.iter_mut().find(|o| o.version == *version && o.gate == *gate && o.is_open()) {
                o.outcome = Some(*outcome);
                o.detail = detail.clone();
            }
        }
        EventKind::AttestationAdded { version, attestation } => {
            let mut a = attestation.clone();
            a.checked_at.get_or_insert(at);
            g.attestations.entry(version.clone()).or_default().push(a);
        }
        _ => {}
    }
}

/// The start of a queued deployment is attributed to who asked for it, not to the
/// controller that started it when the wait was over.
pub(crate) fn starter(ws: &WorkloadState, release: &str) -> Option<String> {
    ws.governance.pending.as_ref().filter(|p| p.version == release).map(|p| p.requested_by.clone())
}

/// One difference between two environments' desired states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// `spec`, `config` or `flags`.
    pub area: String,
    /// The field or key (`executor.replicas`, `DB_POOL`, `new-checkout`).
    pub key: String,
    /// Its value in each environment (JSON), none where it is absent.
    pub left: Option<serde_json::Value>,
    pub right: Option<serde_json::Value>,
}

/// How `left`'s desired state differs from `right`'s beyond the version: the spec (scale,
/// executor settings, plan, health), the stable release's configuration keys and its flags.
/// What names the environment itself (its name, its place, its gates' owners) is left out.
pub fn parity(left: &WorkloadState, right: &WorkloadState) -> Vec<Difference> {
    fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    flatten(&p, x, out);
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    fn diff(
        area: &str,
        l: BTreeMap<String, serde_json::Value>,
        r: BTreeMap<String, serde_json::Value>,
        out: &mut Vec<Difference>,
    ) {
        let keys: std::collections::BTreeSet<&String> = l.keys().chain(r.keys()).collect();
        for k in keys {
            let (a, b) = (l.get(k), r.get(k));
            if a != b {
                out.push(Difference { area: area.into(), key: k.clone(), left: a.cloned(), right: b.cloned() });
            }
        }
    }
    let spec_map = |ws: &WorkloadState| {
        let mut m = BTreeMap::new();
        flatten("", &serde_json::to_value(&ws.spec).unwrap_or_default(), &mut m);
        m.retain(|k, _| {
            !(k == "workload.name"
                || k == "workload.description"
                || k.starts_with("environment.")
                || k.starts_with("approval.")
                || k.starts_with("emergency."))
        });
        m
    };
    let stable = |ws: &WorkloadState| ws.stable.as_ref().and_then(|v| ws.releases.get(v)).cloned();
    let config = |ws: &WorkloadState| {
        stable(ws)
            .map(|r| r.content.config.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect())
            .unwrap_or_default()
    };
    let flags = |ws: &WorkloadState| {
        let mut m = BTreeMap::new();
        if let Some(f) = stable(ws).and_then(|r| r.content.flags.clone()) {
            flatten("", f.get("flags").unwrap_or(&f), &mut m);
        }
        m
    };
    let mut out = Vec::new();
    diff("spec", spec_map(left), spec_map(right), &mut out);
    diff("config", config(left), config(right), &mut out);
    diff("flags", flags(left), flags(right), &mut out);
    out
}

/// Phases as an emergency deployment runs them (for tests and the plan).
pub fn accelerated(phases: &[PhaseSpec], factor: f64) -> Vec<PhaseSpec> {
    phases
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.bake = crate::duration::Dur((p.bake.as_ms() as f64 * factor).round() as u64);
            p.gates.retain(|g| *g != Gate::Approval);
            p
        })
        .collect()
}
