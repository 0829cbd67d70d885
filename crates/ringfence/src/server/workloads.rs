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
    // Checked against the spec in force when the change is appended (in the same critical
    // section), so an admin's stricter spec cannot be undone by a check made just before it.
    let events = sh
        .command(&name, &who, "spec applied", |w| {
            let current = w.workload(&name);
            let need = |perm: Perm| {
                ringfence_core::access::Access::check(&caller.token, perm, Some(&name)).map_err(|d| CommandError {
                    code: ErrorCode::Forbidden,
                    message: match d {
                        ringfence_core::access::Denied::Forbidden(m)
                        | ringfence_core::access::Denied::Unauthenticated(m) => m,
                    },
                })
            };
            // What runs as the server's user is the admin's to set: a new workload's command, or
            // a change to an existing one's.
            if !current.is_some_and(|ws| ws.spec.executes_as(&spec)) {
                need(Perm::Execute)?;
            }
            // How deployments are governed (previous environment, attestations, approvals, windows,
            // the emergency path, the exposure ahead of an approval) is not a pipeline's to weaken.
            if !current.is_some_and(|ws| ws.spec.governs_as(&spec)) {
                need(Perm::Govern)?;
            }
            Ok(command::apply_spec(w, &spec)?.into_iter().collect())
        })
        .await?;
    controller::spawn_workload(&sh, &name);
    let warnings = bake_warnings(&sh, &name).await;
    Ok(Json(api::Applied { workload: name, changed: !events.is_empty(), warnings }))
}

pub(super) async fn list_workloads(State(sh): St, caller: Caller) -> Json<Vec<api::WorkloadSummary>> {
    Json(sh.world(|w| {
        w.workloads
            .values()
            .filter(|ws| !ws.deleted && caller.may(Perm::Read, Some(&ws.name)))
            .map(|ws| wire::summary(ws))
            .collect()
    }))
}

pub(super) async fn workload_status(
    State(sh): St,
    Path(name): Path<String>,
) -> Result<Json<api::WorkloadStatus>, ApiError> {
    let live = sh.live.lock().expect("live lock").get(&name).cloned();
    let leader = sh
        .leaders
        .lock()
        .expect("leaders lock")
        .get(&name)
        .map(|l| api::Leader { replica: l.holder.clone(), token: l.token });
    sh.world(|w| {
        let mut s = wire::status(w, command::workload(w, &name)?, live.as_ref(), now());
        s.leader = leader;
        s.tier_routers = sh
            .traffic
            .tier
            .routers(&name)
            .into_iter()
            .map(|r| api::TierRouter {
                name: r.name,
                instance_id: r.instance_id,
                reported_ms_ago: u64::try_from(r.age.as_millis()).unwrap_or(u64::MAX),
                generation: r.generation,
            })
            .collect();
        Ok(Json(s))
    })
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
    sh.command(&name, &who, &reason, |w| Ok(vec![command::delete_workload(w, &name)?])).await?;
    controller::spawn_workload(&sh, &name);
    Ok(Json(api::Started { rollout_id: String::new(), warnings: Vec::new(), queued: Vec::new() }))
}
