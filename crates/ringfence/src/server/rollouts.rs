//! Rollouts: deploy, the verbs on a running rollout, rollback, one rollout, and `why`.

use super::prelude::*;
use crate::state::Shared;

pub(super) async fn deploy(
    State(sh): St,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::Deploy>,
) -> Result<(StatusCode, Json<api::Started>), ApiError> {
    let reason = if b.reason.is_empty() { format!("deploy {}", b.version) } else { b.reason.clone() };
    let emergency = b.emergency.map(|e| ringfence_core::governance::Emergency {
        incident: e.incident,
        severity: e.severity,
        justification: b.reason.clone(),
    });
    let mut governed = Vec::new();
    let events = reading_back(
        &sh,
        &name,
        &who,
        &reason,
        |_| Some(b.version.clone()),
        |w| {
            let (events, warnings) = command::deploy_governed(w, &name, &b.version, &who, emergency.clone(), now())?;
            governed = warnings;
            Ok(events)
        },
    )
    .await?;
    // The new rollout's id: a roll forward ends the one it replaces first.
    let id = events.last().and_then(|e| e.kind.rollout_id()).unwrap_or_default().to_string();
    let queued = events
        .iter()
        .find_map(|e| match &e.kind {
            ringfence_core::EventKind::DeployQueued { waiting_for, .. } => Some(waiting_for.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let mut warnings = governed;
    warnings.extend(bake_warnings(&sh, &name).await);
    Ok((StatusCode::ACCEPTED, Json(api::Started { rollout_id: id, warnings, queued })))
}

/// `POST .../promote`: the current phase passes by hand. The approver may not be the
/// release's author or the rollout's starter, and it never advances outside a window.
pub(super) async fn promote(
    State(sh): St,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::Started>, ApiError> {
    let reason = if b.reason.is_empty() { "promote".to_string() } else { b.reason.clone() };
    let events = sh.command(&name, &who, &reason, |w| command::promote_all(w, &name, &who, now())).await?;
    let id = events.first().and_then(|e| e.kind.rollout_id()).unwrap_or_default().to_string();
    Ok(Json(api::Started { rollout_id: id, warnings: Vec::new(), queued: Vec::new() }))
}

/// A command that may need a release `[history]` let go (`needs` names it, on the state the
/// command is decided on): its content is read back from the log and restored first
/// (`command::restoring`). One let go between that read and the decision is read again.
async fn reading_back(
    sh: &Shared,
    name: &str,
    who: &str,
    reason: &str,
    needs: impl Fn(&ringfence_core::World) -> Option<String>,
    mut f: impl FnMut(&ringfence_core::World) -> Result<Vec<ringfence_core::EventKind>, CommandError>,
) -> Result<Vec<Event>, ApiError> {
    let mut read: Option<ringfence_core::release::Release> = None;
    for _ in 0..3 {
        let mut missing = None;
        let decided = sh
            .command(name, who, reason, |w| {
                missing = None;
                let let_go = |v: &String| w.workload(name).is_some_and(|ws| ws.releases_let_go.contains_key(v));
                match needs(w).filter(let_go) {
                    Some(v) if read.as_ref().is_none_or(|r| r.version != v) => {
                        missing = Some(v);
                        Err(CommandError { code: ErrorCode::Conflict, message: String::new() })
                    }
                    _ => command::restoring(w, name, read.as_ref(), &mut f),
                }
            })
            .await;
        let Some(v) = missing else { return Ok(decided?) };
        read = super::releases::read_back(sh, name, &v)?;
    }
    Err(ApiError::new(
        ErrorKind::Conflict,
        format!("the release {name} needs was let go from memory again while it was read back from the log: try again"),
    ))
}

pub(super) type Verb = fn(&ringfence_core::World, &str) -> Result<ringfence_core::EventKind, CommandError>;

/// The handler of a rollout verb (pause, resume, promote, abort): same body, same answer.
pub(super) fn verb(name: &'static str, f: Verb) -> axum::routing::MethodRouter<Arc<Shared>> {
    post(move |State(sh): St, who: Actor, Path(n): Path<String>, Body(b): Body<api::Reason>| async move {
        simple(sh, who, n, name, b.reason, f).await
    })
}

pub(super) async fn simple(
    sh: Arc<Shared>,
    Actor(who): Actor,
    name: String,
    verb: &str,
    reason: String,
    f: Verb,
) -> Result<Json<api::Started>, ApiError> {
    let reason = if reason.is_empty() { verb.to_string() } else { reason };
    let events = sh.command(&name, &who, &reason, |w| Ok(vec![f(w, &name)?])).await?;
    let id = events.first().and_then(|e| e.kind.rollout_id()).unwrap_or_default().to_string();
    Ok(Json(api::Started { rollout_id: id, warnings: Vec::new(), queued: Vec::new() }))
}

pub(super) async fn rollback(
    State(sh): St,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::Rollback>,
) -> Result<Json<api::Started>, ApiError> {
    let reason = if b.reason.is_empty() { "rollback to last known good".to_string() } else { b.reason.clone() };
    let events = reading_back(
        &sh,
        &name,
        &who,
        &reason,
        // With no rollout in progress, it starts one of a last known good, maybe one let go.
        |w| {
            let ws = w.workload(&name).filter(|ws| ws.active_rollout().is_none())?;
            command::rollback_target(ws, b.to.as_deref()).ok()
        },
        |w| command::rollback_all(w, &name, b.to.as_deref(), &who, &b.reason),
    )
    .await?;
    // The last known good's spec may come first.
    let id = events.iter().find_map(|e| e.kind.rollout_id()).unwrap_or_default().to_string();
    Ok(Json(api::Started { rollout_id: id, warnings: Vec::new(), queued: Vec::new() }))
}

/// `POST .../bypass`: an approver approves the bypass a halted rollout offers (the command
/// checks the approver against the spec: the role alone is not enough).
pub(super) async fn bypass(
    State(sh): St,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::Started>, ApiError> {
    let events = sh.command(&name, &who, &b.reason, |w| command::bypass(w, &name, &who, &b.reason)).await?;
    let id = events.iter().find_map(|e| e.kind.rollout_id()).unwrap_or_default().to_string();
    Ok(Json(api::Started { rollout_id: id, warnings: Vec::new(), queued: Vec::new() }))
}

/// `POST .../redeploy`: the stable version onto fresh instances, one at a time.
pub(super) async fn redeploy(
    State(sh): St,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::Started>, ApiError> {
    let reason = if b.reason.is_empty() { "redeploy onto fresh instances".to_string() } else { b.reason.clone() };
    sh.command(&name, &who, &reason, |w| Ok(vec![command::redeploy(w, &name)?])).await?;
    Ok(Json(api::Started { rollout_id: String::new(), warnings: Vec::new(), queued: Vec::new() }))
}

pub(super) async fn why(State(sh): St, Path(name): Path<String>) -> Result<Json<api::Why>, ApiError> {
    let live = sh.live.lock().expect("live lock").get(&name).cloned();
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        let rollout = ws.latest_rollout();
        // The live verdict belongs to the rollout it was computed for, not a later one.
        let live = live.filter(|l| rollout.as_ref().is_some_and(|r| r.id == l.rollout_id));
        Ok(Json(api::Why {
            text: explain::why_with_live(ws, live.as_ref().map(|l| &l.verdict)),
            rollout: rollout.map(|r| wire::rollout(r, now())),
        }))
    })
}

pub(super) async fn show_rollout(
    State(sh): St,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<api::Rollout>, ApiError> {
    // An older rollout's verdicts and evidence are folded again from its stretch of the log.
    // Read for any ended one: the next rollout to end can drop its detail between two looks.
    let ended = sh.world(|w| w.workload(&name).and_then(|ws| ws.rollout(&id)).is_some_and(|r| r.ended_at.is_some()));
    let events = if ended { sh.rollout_events(&name, &id)? } else { Vec::new() };
    let kept = sh.world(|w| {
        let ws = command::workload(w, &name)?;
        Ok::<_, ApiError>(match ws.rollout(&id) {
            Some(r) => Some(wire::rollout(&ringfence_core::rollout::detailed(r, &events), now())),
            None if ws.forgot_rollout(&id) => None,
            None => return Err(ApiError::new(ErrorKind::NotFound, format!("{name} has no rollout {id:?}"))),
        })
    })?;
    match kept {
        Some(r) => Ok(Json(r)),
        // Let go under `[history]` (perhaps since the first look): the workload's whole log
        // folded again has it, in full.
        None => sh
            .forgotten_rollout(&name, &id)?
            .map(|(r, _)| Json(wire::rollout(&r, now())))
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("{name} has no rollout {id:?}"))),
    }
}
