//! Workloads: apply a spec, list them, one workload's status.

use ringfence_core::access::Perm;

use super::prelude::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyBody {
    /// The spec file's text (TOML).
    spec: String,
    /// File name for error messages.
    #[serde(default = "default_file")]
    file: String,
}

pub(super) fn default_file() -> String {
    "spec.toml".into()
}

#[derive(Serialize)]
pub(super) struct Applied {
    workload: String,
    changed: bool,
    /// Bakes too short for the workload's measured traffic (see `GET .../plan`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

pub(super) async fn apply_spec(
    State(sh): St,
    Actor(who): Actor,
    caller: Caller,
    Body(b): Body<ApplyBody>,
) -> Result<Json<Applied>, ApiError> {
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
    let events =
        sh.command(&name, &who, "spec applied", |w| Ok(command::apply_spec(w, &spec)?.into_iter().collect()))?;
    controller::spawn_workload(&sh, &name);
    let warnings = bake_warnings(&sh, &name).await;
    Ok(Json(Applied { workload: name, changed: !events.is_empty(), warnings }))
}

#[derive(Serialize)]
pub(super) struct WorkloadSummary {
    name: String,
    stable: Option<String>,
    rollout: Option<RolloutSummary>,
}

#[derive(Serialize)]
pub(super) struct RolloutSummary {
    id: String,
    release: String,
    status: String,
    phase: usize,
    phases: usize,
}

pub(super) fn summary(r: &Rollout) -> RolloutSummary {
    RolloutSummary {
        id: r.id.clone(),
        release: r.release.clone(),
        status: r.status.as_str().into(),
        phase: r.phase + 1,
        phases: r.phases.len(),
    }
}

pub(super) async fn list_workloads(State(sh): St, caller: Caller) -> Json<Vec<WorkloadSummary>> {
    Json(sh.world(|w| {
        w.workloads
            .values()
            .filter(|ws| caller.may(Perm::Read, Some(&ws.name)))
            .map(|ws| WorkloadSummary {
                name: ws.name.clone(),
                stable: ws.stable.clone(),
                rollout: ws.latest_rollout().map(summary),
            })
            .collect()
    }))
}

pub(super) async fn workload_status(State(sh): St, Path(name): Path<String>) -> Result<Json<WorkloadStatus>, ApiError> {
    let live = sh.live.lock().expect("live lock").get(&name).cloned();
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        Ok(Json(WorkloadStatus {
            workload: ws.name.clone(),
            criticality: ws.spec.workload.criticality,
            stable: ws.stable.clone(),
            last_known_good: ws.lkg().cloned(),
            pin: ws.pin.clone(),
            router: ws.router.clone(),
            replicas: ws.replicas.values().cloned().collect(),
            desired: ws.desired(),
            routes: ws.routes.clone(),
            rollout: ws.latest_rollout().cloned(),
            health: live.filter(|l| ws.active_rollout().is_some_and(|r| r.id == l.rollout_id)),
            alerts_firing: ws.alerts.values().cloned().collect(),
            now: now(),
        }))
    })
}
