//! The controller's part in a drill (`ringfence_core::drill`): it carries out the fault when
//! the drilled phase's bake begins, judges the drill on its rollout's record each tick, and
//! starts the drills `[drill] scheduled` says are due. What a fault is and how a drill is
//! judged are the core's; what happens to the instances is the executor's.

use std::sync::Arc;

use ringfence_core::EventKind;
use ringfence_core::drill::{self, Drill, DrillRequest, DrillTraffic, Fault};
use ringfence_core::state::WorkloadState;
use ringfence_router::StatsSnapshot;

use super::Local;
use crate::executor::InstanceFault;
use crate::state::{Shared, now};

/// While a control-plane-down drill keeps the workload's controller away: how long is left.
pub(super) fn controller_down_for(ws: &WorkloadState) -> Option<std::time::Duration> {
    let until = ws.drills.iter().rev().find(|d| d.is_running())?.controller_down_until()?;
    let left = until.since(now());
    (left > 0).then(|| std::time::Duration::from_millis(left))
}

/// One round of the workload's drill, if one runs or is due. True when something was
/// recorded (the loop looks again at once).
pub(super) async fn tick(
    shared: &Arc<Shared>,
    local: &mut Local,
    ws: &WorkloadState,
    stats: Option<&StatsSnapshot>,
) -> anyhow::Result<bool> {
    let name = ws.name.as_str();
    let Some(d) = ws.drills.iter().rev().find(|d| d.is_running()).cloned() else {
        local.drill_traffic = None;
        return scheduled(shared, ws).await;
    };
    // The drill version's counters, kept from the last look: once its rollout is mitigated
    // the router may no longer count it.
    if let Some(v) = stats.and_then(|s| s.versions.get(&d.version)) {
        let seen = DrillTraffic { requests: v.requests, failed: v.errors };
        local.drill_traffic = Some((d.id.clone(), seen));
    }
    if drill::injection_due(ws, &d) {
        let detail = inject(shared, ws, &d);
        tracing::warn!(workload = name, drill = d.id, fault = d.fault.describe(), detail, "drill fault in effect");
        shared
            .record(
                name,
                &format!("drill {}: {}", d.id, d.fault.describe()),
                vec![EventKind::DrillInjected { drill_id: d.id.clone(), detail }],
            )
            .await?;
        return Ok(true);
    }
    let traffic = local.drill_traffic.as_ref().filter(|(id, _)| *id == d.id).map(|(_, t)| *t).unwrap_or_default();
    let events = shared
        .command(name, "controller", &format!("drill {}", d.id), |w| {
            let Some(ws) = w.workload(name) else { return Ok(vec![]) };
            let Some(d) = ws.drills.iter().rev().find(|x| x.id == d.id && x.is_running()) else { return Ok(vec![]) };
            Ok(drill::assess(ws, d, now(), traffic))
        })
        .await?;
    for e in &events {
        if let EventKind::DrillEnded { report, .. } = &e.kind {
            tracing::info!(
                workload = name,
                drill = d.id,
                outcome = report.outcome.as_str(),
                time_to_detect_ms = report.time_to_detect_ms,
                time_to_mitigate_ms = report.time_to_mitigate_ms,
                problems = report.problems.join("; "),
                "drill ended"
            );
        }
    }
    Ok(!events.is_empty())
}

/// Carries the fault out, and says how in words. A fault the router or the signal seam
/// carries out is already in the desired state; only the instances' faults are acts.
fn inject(shared: &Shared, ws: &WorkloadState, d: &Drill) -> String {
    let share = format!("{}% of users", d.weight_bp as f64 / 100.0);
    let fault = match d.fault {
        Fault::ErrorRate { rate } => {
            return format!("the router answers {:.0}% of {}'s requests with 503 ({share})", rate * 100.0, d.version);
        }
        Fault::Latency { added_ms } => {
            return format!("the router delays each of {}'s requests by {added_ms} ms ({share})", d.version);
        }
        Fault::SignalOutage => {
            return "the traffic counters the analysis reads are unreadable until the drill ends".into();
        }
        Fault::ControlPlaneDown { down_ms } => {
            return format!(
                "the controller of {} stops for {} while the router answers half of {}'s requests with 503 ({share})",
                ws.name,
                ringfence_core::duration::Dur::ms(down_ms),
                d.version
            );
        }
        Fault::Crash => InstanceFault::Crash,
        Fault::Hang => InstanceFault::Hang,
    };
    let runtime = ws.runtime_of(&d.version);
    let mut done = Vec::new();
    for rec in ws.replicas.values().filter(|r| r.version == runtime) {
        match shared.executor.inject(&rec.instance, fault) {
            Ok(()) => done.push(format!("replica {}", rec.replica)),
            Err(e) => done.push(format!("replica {}: not done ({e})", rec.replica)),
        }
    }
    let how = if fault == InstanceFault::Crash { "SIGKILL" } else { "SIGSTOP" };
    format!("{how} to {}'s instances: {}", d.version, if done.is_empty() { "none ran".into() } else { done.join(", ") })
}

/// Starts the drill `[drill] scheduled` says is due, if one is.
async fn scheduled(shared: &Arc<Shared>, ws: &WorkloadState) -> anyhow::Result<bool> {
    if ws.spec.drill.scheduled.is_empty() || drill::scheduled_due(ws, now()).is_none() {
        return Ok(false);
    }
    let name = ws.name.as_str();
    let events = shared
        .command(name, "controller", "scheduled drill", |w| {
            let Some(ws) = w.workload(name) else { return Ok(vec![]) };
            let Some(fault) = drill::scheduled_due(ws, now()) else { return Ok(vec![]) };
            let req = DrillRequest {
                fault,
                weight: None,
                outside_window: false,
                reason: "[drill] scheduled".into(),
                scheduled: true,
            };
            drill::start(w, name, &req, "controller", now())
        })
        .await?;
    Ok(!events.is_empty())
}
