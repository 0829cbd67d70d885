//! Commands from people and pipelines, checked against the current state. Each returns the
//! events to append, or an error that changes nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::decision;
use crate::event::EventKind;
use crate::release::{self, Release, ReleaseRequest};
use crate::rollout::{RolloutKind, RolloutStatus};
use crate::spec::{Gate, PhaseSpec, WorkloadSpec};
use crate::state::{WorkloadState, World};
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    Conflict,
    Invalid,
    /// Allowed by the caller's role, but not to this person (an approval only named people give).
    Forbidden,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandError {}

fn err(code: ErrorCode, message: impl Into<String>) -> CommandError {
    CommandError { code, message: message.into() }
}

pub fn workload<'a>(world: &'a World, name: &str) -> Result<&'a WorkloadState, CommandError> {
    match world.workload(name) {
        Some(ws) if ws.deleted => Err(err(
            ErrorCode::NotFound,
            format!(
                "workload {name:?} was deleted; its events remain (`ringfence events {name}`), and applying its spec brings it back"
            ),
        )),
        Some(ws) => Ok(ws),
        None => Err(err(
            ErrorCode::NotFound,
            format!("no workload named {name:?}; apply its spec first (`ringfence apply FILE`)"),
        )),
    }
}

/// Deletes a workload: nothing of it runs any more; its history stays.
pub fn delete_workload(world: &World, name: &str) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    if let Some(r) = ws.active_rollout() {
        return Err(err(
            ErrorCode::Conflict,
            format!("rollout {} is {}: abort it or let it end before deleting {name}", r.id, r.status.as_str()),
        ));
    }
    Ok(EventKind::WorkloadDeleted)
}

/// Stores a new spec, or nothing if it is unchanged.
pub fn apply_spec(world: &World, spec: &WorkloadSpec) -> Result<Option<EventKind>, CommandError> {
    let problems = crate::spec::validate(spec);
    if let Some((field, msg)) = problems.first() {
        return Err(err(ErrorCode::Invalid, format!("field `{field}`: {msg}")));
    }
    let digest = spec_digest(spec);
    // The same spec again changes nothing, but for a deleted workload, which it brings back.
    if world.workload(&spec.workload.name).is_some_and(|ws| ws.spec_digest == digest && !ws.deleted) {
        return Ok(None);
    }
    Ok(Some(EventKind::SpecApplied { spec: Box::new(spec.clone()), digest }))
}

pub fn spec_digest(spec: &WorkloadSpec) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(spec).expect("spec always serializes");
    format!("sha256:{}", hex::encode(Sha256::digest(&json)))
}

/// Registers a release. The same version with the same content again is fine (nothing is
/// appended); with different content it is refused.
pub fn create_release(
    world: &World,
    name: &str,
    req: &ReleaseRequest,
    actor: &str,
    now: Timestamp,
) -> Result<(Option<EventKind>, Release), CommandError> {
    let ws = workload(world, name)?;
    release::check_version(&req.version).map_err(|m| err(ErrorCode::Invalid, format!("field `version`: {m}")))?;
    release::check_config(&req.content.config).map_err(|m| err(ErrorCode::Invalid, format!("field `config`: {m}")))?;
    if let Some(flags) = &req.content.flags {
        release::check_flags(flags).map_err(|m| err(ErrorCode::Invalid, format!("field `flags`: {m}")))?;
    }
    let mut content = req.content.clone();
    if let Some(m) = &req.content.migration {
        content.migration = Some(m.normalized().map_err(|m| err(ErrorCode::Invalid, m))?);
    }
    let req = &ReleaseRequest { version: req.version.clone(), content };
    let digest = req.content.digest();
    if let Some(stub) = ws.releases_let_go.get(&req.version) {
        if stub.digest == digest {
            // The same content: the request holds all of it.
            let release = Release {
                workload: name.into(),
                version: req.version.clone(),
                content: req.content.clone(),
                digest,
                created_at: stub.created_at,
                created_by: stub.created_by.clone(),
            };
            return Ok((None, release));
        }
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "release {} of {name} already exists with different content ({}, created {} by {}); releases are immutable: register a new version",
                req.version, stub.digest, stub.created_at, stub.created_by
            ),
        ));
    }
    if let Some(existing) = ws.releases.get(&req.version) {
        if existing.digest == digest {
            return Ok((None, (**existing).clone()));
        }
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "release {} of {name} already exists with different content ({}, created {} by {}); releases are immutable: register a new version",
                req.version, existing.digest, existing.created_at, existing.created_by
            ),
        ));
    }
    let release = Release {
        workload: name.into(),
        version: req.version.clone(),
        content: req.content.clone(),
        digest,
        created_at: now,
        created_by: actor.into(),
    };
    Ok((Some(EventKind::ReleaseCreated { release: Box::new(release.clone()) }), release))
}

fn active_conflict(ws: &WorkloadState) -> Result<(), CommandError> {
    if let Some(r) = ws.active_rollout() {
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "rollout {} of {} {} is {} on {}; wait for it, or `ringfence abort {}` / `ringfence rollback {}` first",
                r.id,
                ws.name,
                r.release,
                r.status.as_str(),
                ws.name,
                ws.name,
                ws.name
            ),
        ));
    }
    Ok(())
}

/// Expand, then contract: a contract is deployed only after a completed release carried its
/// expand, and never while the last known good still needs what it removes (falling back to
/// it must stay safe).
fn check_contract(ws: &WorkloadState, version: &str) -> Result<(), CommandError> {
    let Some(m) = ws.releases.get(version).and_then(|r| r.content.migration.as_ref()) else { return Ok(()) };
    if m.kind() != crate::release::MigrationKind::Contract {
        return Ok(());
    }
    let after = m.after.as_deref().unwrap_or_default();
    let carried = |v: &str| ws.migration_of(v) == Some(after);
    if !ws.lkg.iter().any(|e| carried(&e.version)) {
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "{version} carries contract migration {} after {after}, which no completed release of {} carried: deploy the expand first (expand, then contract)",
                m.id, ws.name
            ),
        ));
    }
    if let Some(lkg) = ws.lkg()
        && let Some(r) = ws.releases.get(&lkg.version)
    {
        let needed: Vec<&str> =
            m.removes.iter().filter(|x| r.content.requires_schema.contains(x)).map(String::as_str).collect();
        if !needed.is_empty() {
            return Err(err(
                ErrorCode::Conflict,
                format!(
                    "{version} carries contract migration {}, which removes {}; {}, the last known good, still needs it (requires_schema), so falling back would break: release a version that no longer needs it first",
                    m.id,
                    needed.join(", "),
                    lkg.version
                ),
            ));
        }
    }
    Ok(())
}

/// A deploy of `version` while a rollout is active: refused, unless `version` is an announced
/// hotfix of the release that rollout halted on, which rolls it forward (the halted rollout
/// ends, replaced). Returns the events that end the replaced rollout.
fn roll_forward(ws: &WorkloadState, version: &str) -> Result<Vec<EventKind>, CommandError> {
    let Some(r) = ws.active_rollout() else { return Ok(Vec::new()) };
    let fixes = ws.releases.get(version).and_then(|x| x.content.hotfix_for.as_deref());
    if fixes == Some(r.release.as_str()) && r.status == RolloutStatus::Halted {
        return Ok(vec![EventKind::RolloutAborted { rollout_id: r.id.clone() }]);
    }
    active_conflict(ws)?;
    Ok(Vec::new())
}

/// `f` on `world` with `release`, read back from its `release_created` event, restored to
/// `name`'s projection when `[history]` let it go (and it is what was kept of it: its digest),
/// the event that restores it just before the first that names it; otherwise `f` on `world`
/// as it is. For the commands that
/// need an old release's content: a deploy of it, a rollback to it.
pub fn restoring(
    world: &World,
    name: &str,
    release: Option<&Release>,
    f: impl FnOnce(&World) -> Result<Vec<EventKind>, CommandError>,
) -> Result<Vec<EventKind>, CommandError> {
    let let_go = |r: &&Release| {
        world.workload(name).and_then(|ws| ws.releases_let_go.get(&r.version)).is_some_and(|s| s.digest == r.digest)
    };
    let Some(r) = release.filter(let_go) else { return f(world) };
    let restored = EventKind::ReleaseRestored { release: Box::new(r.clone()) };
    let mut with = world.clone();
    with.apply(&crate::Event {
        seq: world.last_seq + 1,
        at: r.created_at,
        actor: String::new(),
        reason: String::new(),
        workload: name.into(),
        kind: restored.clone(),
    });
    let mut out = f(&with)?;
    // Just before the event that names it: a rollout's end before it (a roll forward ends the
    // halted one first) lets go of what nothing names, and would let it go again.
    let names = |e: &EventKind| match e {
        EventKind::RolloutStarted { release, .. } => *release == r.version,
        EventKind::DeployQueued { version, .. } => *version == r.version,
        _ => false,
    };
    let at = out.iter().position(names).unwrap_or(0);
    out.insert(at, restored);
    Ok(out)
}

/// Starts a rollout of `version` through the workload's plan.
pub fn deploy(world: &World, name: &str, version: &str) -> Result<EventKind, CommandError> {
    deploy_checked(world, name, version, true)
}

/// A deployment as people and pipelines ask for it: the workload's own rules
/// ([`start_rollout`]), then governance (`governance::admit`: the previous environment,
/// attestations, change size, approvals, windows, the line). It starts at once, or is queued
/// until what it waits for is there. Returns the events and the warnings to show.
pub fn deploy_governed(
    world: &World,
    name: &str,
    version: &str,
    actor: &str,
    emergency: Option<crate::governance::Emergency>,
    now: Timestamp,
) -> Result<(Vec<EventKind>, Vec<String>), CommandError> {
    let started = start_rollout(world, name, version)?;
    let ws = workload(world, name)?;
    let admitted = crate::governance::admit(world, ws, version, actor, emergency.as_ref(), now)?;
    if admitted.waiting_for.is_empty() && admitted.approvals_needed == 0 {
        return Ok((started, admitted.warnings));
    }
    let Some(first) = started.last().cloned() else { return Ok((started, admitted.warnings)) };
    Ok(crate::governance::start_or_queue(ws, admitted, first, emergency))
}

/// [`deploy`], or, when `version` is an announced hotfix of the release a halted rollout is
/// on, a roll forward: that rollout ends and the hotfix's begins. The workload's own rules
/// only: governance is [`deploy_governed`]'s.
pub fn start_rollout(world: &World, name: &str, version: &str) -> Result<Vec<EventKind>, CommandError> {
    let ws = workload(world, name)?;
    let mut out = if ws.releases.contains_key(version) { roll_forward(ws, version)? } else { Vec::new() };
    out.push(deploy_checked(world, name, version, out.is_empty())?);
    Ok(out)
}

fn deploy_checked(world: &World, name: &str, version: &str, check_active: bool) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    if ws.releases_let_go.contains_key(version) {
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "release {version} of {name} was let go from memory under [history] and is read back from the log first: try again"
            ),
        ));
    }
    if !ws.releases.contains_key(version) {
        let known: Vec<_> = ws.release_order.iter().rev().take(5).cloned().collect();
        return Err(err(
            ErrorCode::NotFound,
            format!(
                "{name} has no release {version:?}{}; register it with `ringfence release create {name} --version {version} ...`",
                if known.is_empty() { String::new() } else { format!(" (newest: {})", known.join(", ")) }
            ),
        ));
    }
    if check_active {
        active_conflict(ws)?;
    }
    if let Some(r) = ws.revoked.get(version) {
        return Err(err(
            ErrorCode::Conflict,
            format!("{version} was revoked by {}: {}; it never runs again: release a new version", r.actor, r.reason),
        ));
    }
    if let Some(h) = ws.held.get(version) {
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "{version} is held since rollout {} was mitigated ({}); once the cause is fixed, clear the hold with `ringfence release clear-hold {name} {version} --reason ...`, or release a new version",
                h.rollout_id, h.reason
            ),
        ));
    }
    if ws.stable.as_deref() == Some(version) {
        return Err(err(ErrorCode::Conflict, format!("{version} is already the stable version of {name}")));
    }
    check_contract(ws, version)?;
    let (kind, phases) = match &ws.stable {
        None => (
            RolloutKind::Initial,
            vec![PhaseSpec {
                name: "initial".into(),
                weight: 100.0,
                bake: ws.spec.rollout.phases[0].bake,
                gates: vec![Gate::Health],
                segment: None,
                shadow: None,
            }],
        ),
        Some(_) => (RolloutKind::Deploy, ws.spec.rollout.phases_for(ws.spec.executor.replicas)),
    };
    Ok(EventKind::RolloutStarted {
        rollout_id: ws.next_rollout_id(),
        kind,
        release: version.into(),
        from: ws.stable.clone(),
        phases,
        spec_digest: ws.spec_digest.clone(),
    })
}

fn active(ws: &WorkloadState, verb: &str) -> Result<(String, RolloutStatus), CommandError> {
    ws.active_rollout()
        .map(|r| (r.id.clone(), r.status))
        .ok_or_else(|| err(ErrorCode::Conflict, format!("{} has no rollout in progress to {verb}", ws.name)))
}

pub fn pause(world: &World, name: &str) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    let (id, status) = active(ws, "pause")?;
    if status != RolloutStatus::Progressing {
        return Err(err(ErrorCode::Conflict, format!("rollout {id} is {}, not progressing", status.as_str())));
    }
    Ok(EventKind::RolloutPaused { rollout_id: id })
}

pub fn resume(world: &World, name: &str) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    if let Some(l) = &world.line {
        return Err(err(
            ErrorCode::Conflict,
            format!("the line is stopped (by {}: {}): nothing resumes until `ringfence freeze --lift`", l.by, l.reason),
        ));
    }
    let (id, status) = active(ws, "resume")?;
    if status != RolloutStatus::Paused {
        return Err(err(ErrorCode::Conflict, format!("rollout {id} is {}, not paused", status.as_str())));
    }
    Ok(EventKind::RolloutResumed { rollout_id: id })
}

/// Promote by hand: the current phase passes now, whatever its bake and gates. An approver's
/// act, so the same separation of duties as an approval, and never outside a deployment
/// window or with the line stopped.
pub fn promote(world: &World, name: &str, actor: &str, now: Timestamp) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    let (id, status) = active(ws, "promote")?;
    if !matches!(status, RolloutStatus::Progressing | RolloutStatus::Paused) {
        return Err(err(
            ErrorCode::Conflict,
            format!("rollout {id} is {}; only a progressing or paused rollout can be promoted", status.as_str()),
        ));
    }
    if let Some(r) = ws.active_rollout() {
        if r.started_by == actor {
            return Err(err(
                ErrorCode::Forbidden,
                format!("{actor} started rollout {id} and may not promote it (separation of duties)"),
            ));
        }
        if ws.releases.get(&r.release).is_some_and(|x| x.created_by == actor || x.content.metadata.author == actor) {
            return Err(err(
                ErrorCode::Forbidden,
                format!("{actor} is the author of {} and may not promote it (separation of duties)", r.release),
            ));
        }
        if let Some(why) = crate::governance::advance_blocked(world, ws, r, now) {
            return Err(err(ErrorCode::Conflict, format!("rollout {id} may not advance now: {why}")));
        }
    }
    Ok(EventKind::PromoteRequested { rollout_id: id })
}

/// `promote` as recorded: at a phase with an approval gate it is also this person's approval
/// (one of the `approval.required` the gate needs: a promote never stands for more people).
pub fn promote_all(world: &World, name: &str, actor: &str, now: Timestamp) -> Result<Vec<EventKind>, CommandError> {
    let promoted = promote(world, name, actor, now)?;
    let ws = workload(world, name)?;
    let mut out = Vec::new();
    if let Some(r) = ws.active_rollout()
        && r.current_phase().gates.contains(&Gate::Approval)
        && !r.approvals.iter().any(|a| a.by == actor && a.phase == Some(r.phase) && a.at >= r.phase_started_at)
    {
        out.push(EventKind::ApprovalGiven {
            rollout_id: Some(r.id.clone()),
            phase: Some(r.phase),
            approver: actor.into(),
            comment: "promoted by hand".into(),
            emergency: false,
        });
    }
    out.push(promoted);
    Ok(out)
}

pub fn abort(world: &World, name: &str) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    let (id, status) = active(ws, "abort")?;
    if status == RolloutStatus::Mitigating {
        return Err(err(ErrorCode::Conflict, format!("rollout {id} is already being mitigated")));
    }
    Ok(EventKind::RolloutAborted { rollout_id: id })
}

/// Clears the hold a mitigation put on a release, so it may be deployed again.
pub fn clear_hold(world: &World, name: &str, version: &str) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    if let Some(r) = ws.revoked.get(version) {
        return Err(err(
            ErrorCode::Conflict,
            format!("{version} was revoked by {}: {}; it never runs again", r.actor, r.reason),
        ));
    }
    if !ws.held.contains_key(version) {
        return Err(err(ErrorCode::Conflict, format!("{version} of {name} is not held")));
    }
    Ok(EventKind::ReleaseHoldCleared { version: version.into() })
}

/// Revokes a release: it never runs again (no deploy, no rollback to it). Not the version in
/// service: deploy or roll back to another first.
pub fn revoke_release(world: &World, name: &str, version: &str) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    if !ws.has_release(version) {
        return Err(err(ErrorCode::NotFound, format!("{name} has no release {version:?}")));
    }
    if let Some(r) = ws.revoked.get(version) {
        return Err(err(ErrorCode::Conflict, format!("{version} is already revoked (by {}: {})", r.actor, r.reason)));
    }
    if ws.stable.as_deref() == Some(version) {
        return Err(err(
            ErrorCode::Conflict,
            format!("{version} is the stable version of {name}: deploy or roll back to another release first"),
        ));
    }
    if let Some(r) = ws.active_rollout().filter(|r| r.release == version || r.from.as_deref() == Some(version)) {
        return Err(err(
            ErrorCode::Conflict,
            format!("rollout {} involves {version}: let it end or abort it first", r.id),
        ));
    }
    Ok(EventKind::ReleaseRevoked { version: version.into() })
}

/// Blue-green's watch window: while the old stack is kept warm after a switch, a crash of the
/// new stable version, or an alert about the workload that began firing since the switch, is a
/// regression found after promotion. The answer is a switch back to the warm stack at once
/// (a fast-path rollback), with why; `None` when nothing is wrong or there is nothing warm.
/// `served`: the requests and errors of the stable version since the switch, when the router
/// could be read (a regression in its own traffic counts as one).
pub fn regression_in_watch(world: &World, name: &str, served: Option<(u64, u64)>) -> Option<(String, Vec<EventKind>)> {
    let ws = world.workload(name)?;
    let warm = ws.warm.as_ref()?;
    if ws.active_rollout().is_some() || ws.deleted {
        return None;
    }
    let stable = ws.stable.as_deref()?;
    let switched_at = ws.rollout(&warm.rollout_id)?.ended_at?;
    let crash = ws.crashes.iter().find(|c| c.version == stable && c.at >= switched_at).map(|c| {
        format!("{stable} replica {} exited ({}) within the watch window after the switch", c.replica, c.status)
    });
    let alert = || {
        ws.alerts
            .values()
            .find(|a| a.since >= switched_at && ws.spec.mitigation.trusts(&format!("alert:{}", a.alertname)))
            .map(|a| format!("alert {} began firing within the watch window after the switch", a.alertname))
    };
    let errors = || {
        let (requests, errors) = served?;
        let h = &ws.spec.health;
        let rate = errors as f64 / requests.max(1) as f64;
        (requests >= h.min_requests && rate > h.max_error_rate && ws.spec.mitigation.trusts("error_rate_limit")).then(
            || {
                format!(
                    "{stable} failed {errors} of {requests} requests ({:.1}%, above health.max_error_rate {:.1}%) within the watch window after the switch",
                    rate * 100.0,
                    h.max_error_rate * 100.0
                )
            },
        )
    };
    let why = crash.or_else(alert).or_else(errors)?;
    let reason = format!("{why}: switching back to the warm stack of {}", warm.version);
    let events = rollback_all(world, name, Some(&warm.version), "controller", &reason).ok()?;
    Some((reason, events))
}

/// The spec to restore with a fast-path rollback to `target`: the one in force when `target`
/// was last known good, when it is not the one in force now. The last known good state is the
/// release and the spec together (scale, executor, health), not the release alone.
pub fn rollback_spec(world: &World, name: &str, target: &str) -> Option<EventKind> {
    let ws = world.workload(name)?;
    if ws.active_rollout().is_some() {
        return None; // a fallback keeps the spec: it has not changed during the rollout
    }
    let entry = ws.lkg.iter().rev().find(|e| e.version == target)?;
    if entry.spec_digest == ws.spec_digest {
        return None;
    }
    let old = ws.specs.get(&entry.spec_digest)?;
    // Governance stays as it is now: a rollback (which a deployer, or the controller, may
    // start, inside a freeze too) must not bring back the gates, approvers and windows of an
    // older spec.
    let mut spec = (**old).clone();
    let now = &ws.spec;
    spec.environment = now.environment.clone();
    spec.approval = now.approval.clone();
    spec.emergency = now.emergency.clone();
    spec.schedule = now.schedule.clone();
    spec.mitigation.bypass_approvers = now.mitigation.bypass_approvers.clone();
    if !spec.governs_as(now) {
        spec.rollout.phases = now.rollout.phases.clone();
        spec.rollout.model = now.rollout.model;
        spec.executor.replicas = now.executor.replicas;
    }
    let digest = spec_digest(&spec);
    if digest == ws.spec_digest {
        return None;
    }
    Some(EventKind::SpecApplied { spec: Box::new(spec), digest })
}

/// The events of a rollback: the last known good's spec first when it differs from the one in
/// force, then the rollback itself (see [`rollback`]).
pub fn rollback_all(
    world: &World,
    name: &str,
    to: Option<&str>,
    actor: &str,
    reason: &str,
) -> Result<Vec<EventKind>, CommandError> {
    let started = rollback(world, name, to, actor, reason)?;
    let spec = match &started {
        EventKind::RolloutStarted { release, .. } => rollback_spec(world, name, release),
        _ => None,
    };
    Ok(spec.into_iter().chain([started]).collect())
}

/// Back to the last known good. With a rollout in progress: fall back to its stable version.
/// Otherwise: a fast-path rollout of the previous last known good (or of `to`, which must
/// have been last known good once).
pub fn rollback(
    world: &World,
    name: &str,
    to: Option<&str>,
    actor: &str,
    reason: &str,
) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    if let Some(r) = ws.active_rollout() {
        if r.status == RolloutStatus::Mitigating {
            return Err(err(ErrorCode::Conflict, format!("rollout {} is already falling back", r.id)));
        }
        if let Some(to) = to
            && r.from.as_deref() != Some(to)
        {
            return Err(err(
                ErrorCode::Conflict,
                format!(
                    "rollout {} is in progress; rollback now returns to its stable version {}",
                    r.id,
                    r.from.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        let d = decision::manual_rollback(r, actor, reason);
        return Ok(EventKind::RolloutHalted { rollout_id: r.id.clone(), decision: Box::new(d) });
    }
    let target = rollback_target(ws, to)?;
    if ws.releases_let_go.contains_key(&target) {
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "release {target} of {name} was let go from memory under [history] and is read back from the log first: try again"
            ),
        ));
    }
    Ok(EventKind::RolloutStarted {
        rollout_id: ws.next_rollout_id(),
        kind: RolloutKind::Rollback,
        release: target,
        from: ws.stable.clone(),
        phases: vec![PhaseSpec {
            name: "rollback".into(),
            weight: 100.0,
            bake: crate::duration::Dur(0),
            gates: vec![Gate::Health],
            segment: None,
            shadow: None,
        }],
        spec_digest: ws.spec_digest.clone(),
    })
}

/// The release a rollback with no rollout in progress returns to: `to`, which must have been
/// last known good once, or the newest last known good a rollback has not left already.
pub fn rollback_target(ws: &WorkloadState, to: Option<&str>) -> Result<String, CommandError> {
    let name = &ws.name;
    let current = ws.stable.as_deref();
    match to {
        Some(v) => {
            if !ws.lkg.iter().any(|e| e.version == v) {
                return Err(err(
                    ErrorCode::Invalid,
                    format!(
                        "{v} was never last known good for {name}; deploy it with `ringfence deploy {name} {v}` to verify it"
                    ),
                ));
            }
            if current == Some(v) {
                return Err(err(ErrorCode::Conflict, format!("{v} is already the stable version of {name}")));
            }
            if let Some(r) = ws.revoked.get(v) {
                return Err(err(
                    ErrorCode::Conflict,
                    format!("{v} was revoked by {}: {}; it never runs again", r.actor, r.reason),
                ));
            }
            Ok(v.to_string())
        }
        // Versions a rollback already left are not candidates, so repeated rollbacks walk
        // further back instead of toggling between two releases. What a rollback left is on
        // its last-known-good entry, which stays when `[history]` lets the rollout go.
        None => {
            let left: std::collections::BTreeSet<&str> = ws.lkg.iter().filter_map(|e| e.left.as_deref()).collect();
            ws.lkg
                .iter()
                .rev()
                .map(|e| e.version.as_str())
                .filter(|v| !ws.revoked.contains_key(*v) && !left.contains(v))
                .find(|v| Some(*v) != current)
                .map(String::from)
                .ok_or_else(|| {
                    err(ErrorCode::Conflict, format!("{name} has no earlier last known good release to roll back to"))
                })
        }
    }
}

/// The kill switch: turns `flag` off for every user at once. Always allowed, in any state:
/// it is the emergency path.
/// An approver approves the bypass a halted rollout offers: the release's guard flags are
/// turned off and the rollout goes on. Only a person `mitigation.bypass_approvers` names may.
pub fn bypass(world: &World, name: &str, actor: &str, reason: &str) -> Result<Vec<EventKind>, CommandError> {
    let ws = workload(world, name)?;
    let offered =
        ws.active_rollout().filter(|r| r.status == RolloutStatus::Halted && r.bypass.is_none()).and_then(|r| {
            let d = r.decision.as_ref().filter(|d| !d.bypass_flags.is_empty())?;
            Some((r, d))
        });
    let Some((r, d)) = offered else {
        return Err(err(
            ErrorCode::Conflict,
            format!(
                "no rollout of {name} offers a bypass: one is offered when a release with guard flags turns unhealthy and the spec names approvers"
            ),
        ));
    };
    let approvers = &ws.spec.mitigation.bypass_approvers;
    if !approvers.iter().any(|a| a == actor) {
        return Err(err(
            ErrorCode::Forbidden,
            format!(
                "{actor} may not approve a bypass of {name}: mitigation.bypass_approvers names {}",
                approvers.join(", ")
            ),
        ));
    }
    if reason.trim().is_empty() {
        return Err(err(ErrorCode::Invalid, "a bypass needs a reason: why running without the feature is acceptable"));
    }
    let mut events: Vec<EventKind> = d
        .bypass_flags
        .iter()
        .filter(|f| !ws.killed_flags.contains_key(*f))
        .map(|f| EventKind::FlagKilled { flag: f.clone() })
        .collect();
    events.push(EventKind::BypassApproved {
        rollout_id: r.id.clone(),
        approver: actor.into(),
        flags: d.bypass_flags.clone(),
        justification: reason.into(),
    });
    Ok(events)
}

/// Redeploys the stable version onto fresh instances, one at a time: for instances that
/// fail (a bad host, a leak) rather than code that does.
pub fn redeploy(world: &World, name: &str) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    active_conflict(ws)?;
    let Some(version) = ws.stable.clone() else {
        return Err(err(ErrorCode::Conflict, format!("{name} has no stable version to redeploy")));
    };
    if !ws.recycle.is_empty() {
        return Err(err(
            ErrorCode::Conflict,
            format!("a redeploy of {name} is under way ({} instance(s) to go)", ws.recycle.len()),
        ));
    }
    Ok(EventKind::RedeployRequested { version })
}

/// A bypass whose flags are still off after `mitigation.max_degraded`, not yet escalated.
pub fn degraded_too_long(world: &World, name: &str, now: Timestamp) -> Option<EventKind> {
    let ws = world.workload(name)?;
    // Asked every tick: with no flag turned off (nearly always) no bypass can be degraded, and
    // the history of rollouts is not looked at.
    if ws.killed_flags.is_empty() {
        return None;
    }
    let max = ws.spec.mitigation.max_degraded.as_ms();
    ws.rollouts.iter().rev().find_map(|r| {
        let b = r.bypass.as_ref()?;
        let off: Vec<String> = b.flags.iter().filter(|f| ws.killed_flags.contains_key(*f)).cloned().collect();
        (!off.is_empty() && now.since(b.at) >= max && !ws.degraded_escalated.contains(&r.id))
            .then(|| EventKind::DegradedTooLong { rollout_id: r.id.clone(), flags: off })
    })
}

pub fn kill_flag(world: &World, name: &str, flag: &str) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    if !ws.live_flag_keys().contains(flag) {
        return Err(err(
            ErrorCode::NotFound,
            format!(
                "{name} has no flag {flag:?}: none of the releases serving its users defines it; `ringfence flags list {name}` shows the flags they define"
            ),
        ));
    }
    if ws.killed_flags.contains_key(flag) {
        return Err(err(ErrorCode::Conflict, format!("flag {flag} of {name} is already killed")));
    }
    Ok(EventKind::FlagKilled { flag: flag.into() })
}

pub fn restore_flag(world: &World, name: &str, flag: &str) -> Result<EventKind, CommandError> {
    let ws = workload(world, name)?;
    if !ws.killed_flags.contains_key(flag) {
        return Err(err(ErrorCode::Conflict, format!("flag {flag} of {name} is not killed")));
    }
    Ok(EventKind::FlagRestored { flag: flag.into() })
}
