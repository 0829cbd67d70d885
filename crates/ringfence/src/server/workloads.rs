//! Workloads: apply a spec, list them, one workload's status.

use ringfence_core::access::Perm;

use super::prelude::*;

pub(super) async fn apply_spec(
    State(sh): St,
    Actor(who): Actor,
    caller: Caller,
    Body(b): Body<api::ApplySpec>,
) -> Result<Json<api::Applied>, ApiError> {
    let spec = ringfence_core::spec::parse(&b.file, &b.spec).map_err(|errors: Vec<SpecError>| {
        ApiError::new(ErrorKind::InvalidSpec, errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))
            .with_details(serde_json::to_value(&errors).unwrap_or_default())
    })?;
    let spec = spec.sealed();
    let name = spec.workload.name.clone();
    caller.require(Perm::Deploy, Some(&name))?;
    // What runs as the server's user is the admin's to set: a new workload's command, or a
    // change to an existing one's.
    let same_execution = sh.world(|w| w.workload(&name).is_some_and(|ws| ws.spec.executes_as(&spec)));
    if !same_execution {
        caller.require(Perm::Execute, Some(&name))?;
    }
    // How deployments are governed (previous environment, attestations, approvals, windows,
    // the emergency path) is not a pipeline's to weaken.
    let same_governance = sh.world(|w| w.workload(&name).is_some_and(|ws| ws.spec.governs_as(&spec)));
    if !same_governance {
        caller.require(Perm::Govern, Some(&name))?;
    }
    let events =
        sh.command(&name, &who, "spec applied", |w| Ok(command::apply_spec(w, &spec)?.into_iter().collect()))?;
    controller::spawn_workload(&sh, &name);
    let warnings = bake_warnings(&sh, &name).await;
    Ok(Json(api::Applied { workload: name, changed: !events.is_empty(), warnings }))
}

pub(super) async fn list_workloads(State(sh): St, caller: Caller) -> Json<Vec<api::WorkloadSummary>> {
    Json(sh.world(|w| {
        w.workloads
            .values()
            .filter(|ws| !ws.deleted && caller.may(Perm::Read, Some(&ws.name)))
            .map(wire::summary)
            .collect()
    }))
}

pub(super) async fn workload_status(
    State(sh): St,
    Path(name): Path<String>,
) -> Result<Json<api::WorkloadStatus>, ApiError> {
    let live = sh.live.lock().expect("live lock").get(&name).cloned();
    sh.world(|w| Ok(Json(wire::status(w, command::workload(w, &name)?, live.as_ref(), now()))))
}

#[derive(Deserialize)]
pub(super) struct DeleteQuery {
    #[serde(default)]
    reason: String,
}

/// `DELETE /v1/workloads/{name}?reason=...`: nothing of the workload runs any more; its
/// history stays. Refused while a rollout is in progress.
pub(super) async fn delete_workload(
    State(sh): St,
    Actor(who): Actor,
    Path(name): Path<String>,
    Params(q): Params<DeleteQuery>,
) -> Result<Json<api::Started>, ApiError> {
    let reason = if q.reason.trim().is_empty() { "workload deleted".to_string() } else { q.reason };
    sh.command(&name, &who, &reason, |w| Ok(vec![command::delete_workload(w, &name)?]))?;
    controller::spawn_workload(&sh, &name);
    Ok(Json(api::Started { rollout_id: String::new(), warnings: Vec::new(), queued: Vec::new() }))
}
