//! Drills (`POST/GET .../drills`, `POST .../drills/abort`), the game day (`GET .../gameday`,
//! `.../gameday.svg`) and the failure-mode analysis (`GET .../lint`). What a drill is and how
//! it is judged are the core's (`ringfence_core::drill`, `ringfence_core::lint`).

use ringfence_core::drill::{self, DrillRequest, Fault};
use ringfence_core::lint::{self, LintInput, PlanTraffic};

use super::planning::{plan_inputs, read_stats, total_requests};
use super::prelude::*;

pub(super) async fn start_drill(
    State(sh): St,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::StartDrill>,
) -> Result<(StatusCode, Json<api::DrillStarted>), ApiError> {
    // Limits first: an error message never echoes a long input back.
    if b.fault.chars().count() > 64 {
        return Err(ApiError::new(ErrorKind::Invalid, "field `fault`: at most 64 characters"));
    }
    if b.reason.chars().count() > 2048 {
        return Err(ApiError::new(ErrorKind::Invalid, "field `reason`: at most 2048 characters"));
    }
    let fault = Fault::parse(&b.fault).map_err(|e| ApiError::new(ErrorKind::Invalid, format!("field `fault`: {e}")))?;
    let reason = if b.reason.trim().is_empty() { format!("drill: {}", fault.describe()) } else { b.reason.clone() };
    let req = DrillRequest {
        fault,
        weight: b.weight,
        outside_window: b.outside_window,
        reason: reason.clone(),
        scheduled: false,
    };
    let events = sh.command(&name, &who, &reason, |w| drill::start(w, &name, &req, &who, now())).await?;
    let seq = events.last().map_or(0, |e| e.seq);
    let d = sh.world(|w| command::workload(w, &name).ok().and_then(|ws| ws.drills.last().map(|d| wire::drill(d))));
    let d = d.ok_or_else(|| ApiError::new(ErrorKind::Store, "the drill was recorded but cannot be read back"))?;
    Ok((StatusCode::CREATED, Json(api::DrillStarted { drill: d, seq })))
}

pub(super) async fn abort_drill(
    State(sh): St,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::DrillStarted>, ApiError> {
    let reason = if b.reason.trim().is_empty() { "drill aborted".to_string() } else { b.reason };
    let running = sh.world(|w| {
        command::workload(w, &name)
            .ok()
            .and_then(|ws| ws.drills.iter().rev().find(|d| d.is_running()).map(|d| d.id.clone()))
    });
    let events = sh.command(&name, &who, &reason, |w| drill::abort(w, &name, now())).await?;
    let seq = events.last().map_or(0, |e| e.seq);
    let d = sh.world(|w| {
        let ws = command::workload(w, &name).ok()?;
        ws.drills.iter().find(|d| Some(&d.id) == running.as_ref()).map(|d| wire::drill(d))
    });
    let d = d.ok_or_else(|| ApiError::new(ErrorKind::Store, "the drill was aborted but cannot be read back"))?;
    Ok(Json(api::DrillStarted { drill: d, seq }))
}

pub(super) async fn list_drills(State(sh): St, Path(name): Path<String>) -> Result<Json<Vec<api::Drill>>, ApiError> {
    sh.world(|w| Ok(Json(command::workload(w, &name)?.drills.iter().rev().map(|d| wire::drill(d)).collect())))
}

pub(super) async fn gameday(State(sh): St, Path(name): Path<String>) -> Result<Json<api::GameDay>, ApiError> {
    let t = now();
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        Ok(Json(api::GameDay {
            workload: name.clone(),
            coverage: drill::coverage(ws, t).iter().map(wire::coverage).collect(),
            drills: ws.drills.iter().filter(|d| d.report.is_some()).map(|d| wire::drill(d)).collect(),
        }))
    })
}

pub(super) async fn gameday_svg(State(sh): St, Path(name): Path<String>) -> Result<Response, ApiError> {
    let svg = sh.world(|w| Ok::<_, ApiError>(drill::game_day_svg(command::workload(w, &name)?)))?;
    let svg = svg.ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("{name} has no ended drill to draw")))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

#[derive(Deserialize)]
pub(super) struct LintQuery {
    /// Requests per second to check the bakes at; without it, the router's average since it
    /// started.
    rps: Option<f64>,
}

pub(super) async fn lint_workload(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<LintQuery>,
) -> Result<Json<api::LintReport>, ApiError> {
    if let Some(r) = q.rps
        && !(r.is_finite() && r > 0.0)
    {
        return Err(ApiError::new(ErrorKind::BadRequest, format!("rps must be above 0, found {r}")));
    }
    let (_, stable, admin) = plan_inputs(&sh, &name)?;
    let stats = match &admin {
        Some(a) => read_stats(&sh, a).await,
        None => None,
    };
    let measured = stats.as_ref().and_then(|s| {
        let uptime_s = s.uptime_ms as f64 / 1000.0;
        (uptime_s >= 10.0).then(|| total_requests(s) as f64 / uptime_s)
    });
    let rps = q.rps.or(measured).filter(|r| *r > 0.0);
    let stable_stats = stable.as_ref().and_then(|v| stats.as_ref()?.versions.get(v).cloned());
    let traffic = rps.map(|rps| PlanTraffic {
        rps,
        stable_error_rate: stable_stats
            .as_ref()
            .filter(|s| s.requests > 0)
            .map_or(0.0, |s| s.errors as f64 / s.requests as f64),
        stable_latency_us: stable_stats.map(|s| s.latency_buckets).unwrap_or_default(),
    });
    let t = now();
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        let previous = ws.spec.environment.after.as_deref().and_then(|p| w.workload(p));
        let emergency_approvers = w
            .access
            .tokens
            .values()
            .filter(|tok| tok.revoked_at.is_none() && tok.expires_at.is_none_or(|e| e > t))
            .filter(|tok| {
                tok.grants.iter().any(|g| {
                    g.role == ringfence_core::access::Role::EmergencyApprover
                        && g.workloads.iter().any(|x| x == "*" || *x == name)
                })
            })
            .count();
        let findings = lint::lint(&LintInput {
            spec: &ws.spec,
            state: Some(ws),
            previous,
            emergency_approvers: Some(emergency_approvers),
            traffic,
            now: t,
        });
        Ok(Json(wire::lint_report(&name, rps, &findings)))
    })
}
