//! Governance: approve and reject, attestations, the parity report, and stopping the line.
//! The rules are the core's (`ringfence_core::governance`); this module only reads requests
//! and the caller's roles.

use ringfence_core::access::Perm;
use ringfence_core::governance::{self, Approver};

use super::prelude::*;

fn change(events: &[Event]) -> api::GovernanceChange {
    api::GovernanceChange {
        recorded: events.iter().map(explain::describe).collect(),
        rollout_id: events.iter().rev().find_map(|e| e.kind.rollout_id()).map(String::from),
    }
}

/// `POST .../approve`: a queued deployment, the current phase's approval gate, or the
/// approval an emergency deployment owes. Separation of duties is checked in the core.
pub(super) async fn approve(
    State(sh): St,
    caller: Caller,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::GovernanceChange>, ApiError> {
    let approver = Approver { name: &who, emergency: caller.may(Perm::Emergency, Some(&name)) };
    let reason = if b.reason.is_empty() { "approved".to_string() } else { b.reason.clone() };
    let events =
        sh.command(&name, &who, &reason, |w| governance::approve(w, &name, &approver, &b.reason, now())).await?;
    Ok(Json(change(&events)))
}

/// `POST .../reject`: one eligible rejection fails the gate.
pub(super) async fn reject(
    State(sh): St,
    caller: Caller,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::GovernanceChange>, ApiError> {
    let approver = Approver { name: &who, emergency: caller.may(Perm::Emergency, Some(&name)) };
    let events = sh.command(&name, &who, &b.reason, |w| governance::reject(w, &name, &approver, &b.reason)).await?;
    Ok(Json(change(&events)))
}

/// `POST .../releases/{version}/attestations`: a predeployment check's result.
pub(super) async fn attest(
    State(sh): St,
    Actor(who): Actor,
    Path((name, version)): Path<(String, String)>,
    Body(a): Body<api::Attestation>,
) -> Result<(StatusCode, Json<api::GovernanceChange>), ApiError> {
    let a = governance::Attestation {
        kind: a.kind,
        source: a.source,
        subject: a.subject,
        passed: a.passed,
        checked_at: a.checked_at.map(|t| ringfence_core::Timestamp(t.0)),
        detail: a.detail,
    };
    let reason = format!("attestation {} {}", a.kind, if a.passed { "passed" } else { "failed" });
    let events = sh.command(&name, &who, &reason, |w| governance::attest(w, &name, &version, &a, &who, now())).await?;
    Ok((StatusCode::CREATED, Json(change(&events))))
}

#[derive(Deserialize)]
pub(super) struct ParityQuery {
    /// The other environment's workload; the spec's `environment.after` if absent.
    against: Option<String>,
}

/// `GET .../parity`: how this environment's desired state differs from another's beyond the
/// version. The caller must be able to read both.
pub(super) async fn parity(
    State(sh): St,
    caller: Caller,
    Path(name): Path<String>,
    Params(q): Params<ParityQuery>,
) -> Result<Json<api::Parity>, ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        // Against the previous environment, or the one that names this one as its previous.
        let against = q
            .against
            .clone()
            .or_else(|| ws.spec.environment.after.clone())
            .or_else(|| {
                w.workloads.values().find(|o| !o.deleted && o.spec.environment.after.as_deref() == Some(&name)).map(|o| o.name.clone())
            })
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::Invalid,
                    format!("{name} names no previous environment (environment.after) and none names it: say which with ?against=WORKLOAD"),
                )
            })?;
        caller.require(Perm::Read, Some(&against))?;
        let other = command::workload(w, &against)?;
        Ok(Json(api::Parity {
            workload: name.clone(),
            against: against.clone(),
            workload_version: ws.stable.clone(),
            against_version: other.stable.clone(),
            differences: governance::parity(ws, other)
                .into_iter()
                .map(|d| api::Difference { area: d.area, key: d.key, workload: d.left, against: d.right })
                .collect(),
        }))
    })
}

/// `POST /v1/line/stop`: every progressing rollout of every workload paused, none started,
/// until the line restarts. Mitigations still run.
pub(super) async fn stop_line(
    State(sh): St,
    Actor(who): Actor,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::LineChange>, ApiError> {
    if b.reason.trim().is_empty() {
        return Err(ApiError::new(ErrorKind::Invalid, "stopping the line needs a reason: say what is wrong"));
    }
    let events = sh.command_many(&who, &b.reason, governance::stop_line).await?;
    Ok(Json(line_change(&events)))
}

/// `POST /v1/line/restart`: the rollouts the stop paused resume.
pub(super) async fn restart_line(
    State(sh): St,
    Actor(who): Actor,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::LineChange>, ApiError> {
    let reason = if b.reason.is_empty() { "line restarted".to_string() } else { b.reason.clone() };
    let events = sh.command_many(&who, &reason, governance::restart_line).await?;
    Ok(Json(line_change(&events)))
}

fn line_change(events: &[Event]) -> api::LineChange {
    api::LineChange {
        rollouts: events.iter().filter_map(|e| e.kind.rollout_id().map(|id| format!("{}/{id}", e.workload))).collect(),
    }
}

/// `POST /v1/hooks/{name}/attestations`: an attestation from a system that signs instead of
/// holding a token (a CI server, a scanner): verified with the workload's
/// `environment.webhook_secret` by the Standard Webhooks scheme, a replay refused.
pub(super) async fn attestation_hook(
    State(sh): St,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<api::GovernanceChange>), ApiError> {
    // Before the signature holds, the caller is nobody: every refusal is the same 401, so
    // nobody learns which workloads exist or how they are configured; the log says why.
    let refuse = |why: String| {
        tracing::warn!(workload = name, why, "signed attestation refused");
        ApiError::new(ErrorKind::Unauthenticated, "the webhook signature does not verify for this workload")
    };
    let secret = sh
        .world(|w| w.workload(&name).filter(|ws| !ws.deleted).and_then(|ws| ws.spec.environment.webhook_secret.clone()))
        .ok_or_else(|| refuse("no such workload, or its spec names no environment.webhook_secret".into()))?;
    let secret = crate::secrets::resolve(&sh.data_dir, &secret).map_err(refuse)?;
    sh.webhooks.verify(&secret, &body, &headers).map_err(|e| match e.contains("replay") {
        true => ApiError::new(ErrorKind::Unauthenticated, e),
        false => refuse(e),
    })?;
    let hook: api::AttestationHook = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("request body: {e}")))?;
    let a = governance::Attestation {
        kind: hook.attestation.kind,
        source: hook.attestation.source,
        subject: hook.attestation.subject,
        passed: hook.attestation.passed,
        checked_at: hook.attestation.checked_at.map(|t| ringfence_core::Timestamp(t.0)),
        detail: hook.attestation.detail,
    };
    let actor = format!("webhook:{name}");
    let reason = format!("signed attestation {} {}", a.kind, if a.passed { "passed" } else { "failed" });
    if hook.workload != name {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            format!("the signed body is about workload {:?}, not {name:?}", hook.workload),
        ));
    }
    let version = hook.version;
    let events =
        sh.command(&name, &actor, &reason, |w| governance::attest(w, &name, &version, &a, &actor, now())).await?;
    Ok((StatusCode::CREATED, Json(change(&events))))
}
