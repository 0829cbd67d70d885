//! Incidents (list, ack, resolve), the postmortem draft of a failed rollout, and DORA
//! metrics. The rules are the core's (`ringfence_core::{incident, postmortem, dora}`).

use ringfence_core::{WorkloadState, dora, incident, postmortem};

use super::prelude::*;

/// What a postmortem is written from: the workload (folded again from its whole log when the
/// rollout is one its projection let go under `[history]`) and its events from the rollout's
/// first on (its timeline, its signals and its incident's events all come after it). Read
/// off the workers, and the draft is written outside the state's lock.
fn postmortem_inputs(
    sh: &Shared,
    name: &str,
    rollout: Option<&str>,
) -> Result<(Arc<WorkloadState>, Vec<Event>), ApiError> {
    let forgot = rollout.is_some_and(|id| sh.world(|w| w.workload(name).is_some_and(|ws| ws.forgot_rollout(id))));
    let whole = if forgot { sh.whole_history(name)? } else { None };
    let ws = match whole {
        Some(ws) => ws,
        None => sh.world(|w| {
            command::workload(w, name)?;
            w.snapshot(name).ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no workload {name}")))
        })?,
    };
    let id = rollout
        .map(str::to_owned)
        .or_else(|| ws.incidents.values().max_by_key(|i| i.detected_at).map(|i| i.rollout_id.clone()));
    let after = id.as_deref().and_then(|id| ws.rollout(id)).map_or(0, |r| r.first_seq.saturating_sub(1));
    let events = sh.workload_log_after(name, after)?;
    Ok((ws, events))
}

pub(super) async fn list_incidents(
    State(sh): St,
    Path(name): Path<String>,
) -> Result<Json<Vec<api::Incident>>, ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, &name)?;
        let mut list: Vec<_> = ws.incidents.values().map(|i| wire::incident(ws, i)).collect();
        list.sort_by_key(|i| std::cmp::Reverse(i.detected_at));
        Ok(Json(list))
    })
}

/// One incident: from the projection, or, for one let go under `[history]`, from the
/// workload's whole log folded again.
pub(super) async fn show_incident(
    State(sh): St,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<api::Incident>, ApiError> {
    let not_found = || ApiError::new(ErrorKind::NotFound, format!("no incident {id}"));
    // One look: a rollout that ends between two looks can let this one go.
    let kept = sh.world(|w| {
        let ws = command::workload(w, &name)?;
        Ok::<_, ApiError>(match ws.incidents.get(&id) {
            Some(i) => Some(wire::incident(ws, i)),
            None if ws.forgot_rollout(&id) => None,
            None => return Err(not_found()),
        })
    })?;
    if let Some(i) = kept {
        return Ok(Json(i));
    }
    let whole = sh.whole_history(&name)?;
    whole.as_deref().and_then(|ws| ws.incidents.get(&id).map(|i| Json(wire::incident(ws, i)))).ok_or_else(not_found)
}

pub(super) async fn ack_incident(
    State(sh): St,
    Actor(who): Actor,
    Path((name, id)): Path<(String, String)>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::Incident>, ApiError> {
    let reason = if b.reason.is_empty() { "acknowledged".to_string() } else { b.reason.clone() };
    sh.command(&name, &who, &reason, |w| Ok(vec![incident::acknowledge(w, &name, &id)?])).await?;
    show(&sh, &name, &id)
}

pub(super) async fn resolve_incident(
    State(sh): St,
    Actor(who): Actor,
    Path((name, id)): Path<(String, String)>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::Incident>, ApiError> {
    let reason = if b.reason.is_empty() { "resolved".to_string() } else { b.reason.clone() };
    sh.command(&name, &who, &reason, |w| Ok(vec![incident::resolve(w, &name, &id)?])).await?;
    show(&sh, &name, &id)
}

fn show(sh: &Shared, name: &str, id: &str) -> Result<Json<api::Incident>, ApiError> {
    sh.world(|w| {
        let ws = command::workload(w, name)?;
        let i = ws.incidents.get(id).ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no incident {id}")))?;
        Ok(Json(wire::incident(ws, i)))
    })
}

#[derive(Deserialize)]
pub(super) struct PostmortemQuery {
    /// The failed rollout; the latest incident's when absent.
    rollout: Option<String>,
}

pub(super) async fn show_postmortem(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<PostmortemQuery>,
) -> Result<Json<api::Postmortem>, ApiError> {
    let (ws, events) = postmortem_inputs(&sh, &name, q.rollout.as_deref())?;
    let markdown = postmortem::draft(&ws, &events, q.rollout.as_deref())?;
    let rollout_id = q
        .rollout
        .clone()
        .or_else(|| ws.incidents.values().max_by_key(|i| i.detected_at).map(|i| i.rollout_id.clone()))
        .unwrap_or_default();
    Ok(Json(api::Postmortem { rollout_id, markdown }))
}

/// `GET .../postmortem.svg`: the key signals of the new and the stable version around the
/// incident, drawn; 404 when no traffic was recorded for the rollout.
pub(super) async fn show_postmortem_svg(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<PostmortemQuery>,
) -> Result<Response, ApiError> {
    let (ws, events) = postmortem_inputs(&sh, &name, q.rollout.as_deref())?;
    let svg = postmortem::signals_svg(&ws, &events, q.rollout.as_deref())?;
    match svg {
        Some(svg) => Ok(([(axum::http::header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()),
        None => Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no traffic was recorded for this rollout of {name}: nothing to draw (was a router serving it?)"),
        )),
    }
}

#[derive(Deserialize)]
pub(super) struct DoraQuery {
    /// The window, in days back from now (default 30, at most 3660).
    days: Option<u32>,
}

impl DoraQuery {
    /// The window the metrics cover: `days` back from now.
    fn window(&self) -> Result<(ringfence_core::Timestamp, ringfence_core::Timestamp), ApiError> {
        let days = self.days.unwrap_or(30);
        if days == 0 || days > 3660 {
            return Err(ApiError::new(ErrorKind::BadRequest, format!("days: expected 1 to 3660, found {days}")));
        }
        let to = now();
        Ok((ringfence_core::Timestamp(to.millis() - i64::from(days) * 86_400_000), to))
    }
}

pub(super) async fn show_dora(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<DoraQuery>,
) -> Result<Json<api::Dora>, ApiError> {
    let (from, to) = q.window()?;
    Ok(Json(wire::dora(&dora_over(&sh, &name, from, to)?)))
}

/// DORA's metrics over `[from, to)`: from the projection, or, when the window reaches back
/// past what it keeps (`[history]`), from the workload's whole log folded again.
fn dora_over(
    sh: &Shared,
    name: &str,
    from: ringfence_core::Timestamp,
    to: ringfence_core::Timestamp,
) -> Result<dora::Dora, ApiError> {
    let reaches_back =
        sh.world(|w| command::workload(w, name).map(|ws| ws.forgotten.until.is_some_and(|until| until >= from)))?;
    let whole = if reaches_back { sh.whole_history(name)? } else { None };
    sh.world(|w| {
        let ws = match &whole {
            Some(ws) => ws,
            None => command::workload(w, name)?,
        };
        Ok(dora::compute(ws, from, to))
    })
}

fn follow_up(f: &ringfence_core::incident::FollowUp, now: ringfence_core::Timestamp) -> api::FollowUp {
    api::FollowUp {
        id: f.id.clone(),
        incident: f.incident.clone(),
        title: f.title.clone(),
        owner: f.owner.clone(),
        due: f.due.map(wire::ts),
        created_at: wire::ts(f.created_at),
        created_by: f.created_by.clone(),
        closed_at: f.closed_at.map(wire::ts),
        overdue: f.is_overdue(now),
        reminders: f.reminders.len() as u32,
        exported: f.exported.clone(),
    }
}

pub(super) async fn list_follow_ups(
    State(sh): St,
    Path(name): Path<String>,
) -> Result<Json<Vec<api::FollowUp>>, ApiError> {
    let now = now();
    sh.world(|w| Ok(Json(command::workload(w, &name)?.follow_ups.values().map(|f| follow_up(f, now)).collect())))
}

pub(super) async fn create_follow_up(
    State(sh): St,
    Actor(who): Actor,
    Path(name): Path<String>,
    Body(b): Body<api::NewFollowUp>,
) -> Result<(StatusCode, Json<api::FollowUp>), ApiError> {
    let now = now();
    let due = match &b.due_in {
        Some(d) => Some(
            now.plus_ms(
                ringfence_core::duration::parse(d)
                    .map_err(|e| ApiError::new(ErrorKind::Invalid, format!("field `due_in`: {e}")))?
                    .as_ms(),
            ),
        ),
        None => None,
    };
    let events = sh
        .command(&name, &who, "follow-up item", |w| {
            Ok(vec![incident::follow_up(w, &name, &b.incident, &b.title, &b.owner, due)?])
        })
        .await?;
    let id = match events.first().map(|e| &e.kind) {
        Some(ringfence_core::EventKind::FollowUpCreated { id, .. }) => id.clone(),
        _ => String::new(),
    };
    sh.world(|w| {
        let f = command::workload(w, &name)?.follow_ups.get(&id).map(|f| follow_up(f, now));
        f.map(|f| (StatusCode::CREATED, Json(f))).ok_or_else(|| ApiError::new(ErrorKind::NotFound, "the item is gone"))
    })
}

pub(super) async fn assign_follow_up(
    State(sh): St,
    Actor(who): Actor,
    Path((name, id)): Path<(String, String)>,
    Body(b): Body<api::AssignFollowUp>,
) -> Result<Json<api::FollowUp>, ApiError> {
    sh.command(&name, &who, "follow-up assigned", |w| Ok(vec![incident::assign_follow_up(w, &name, &id, &b.owner)?]))
        .await?;
    show_follow_up(&sh, &name, &id)
}

pub(super) async fn close_follow_up(
    State(sh): St,
    Actor(who): Actor,
    Path((name, id)): Path<(String, String)>,
    Body(b): Body<api::Reason>,
) -> Result<Json<api::FollowUp>, ApiError> {
    let reason = if b.reason.is_empty() { "follow-up closed".to_string() } else { b.reason.clone() };
    sh.command(&name, &who, &reason, |w| Ok(vec![incident::close_follow_up(w, &name, &id)?])).await?;
    show_follow_up(&sh, &name, &id)
}

fn show_follow_up(sh: &Shared, name: &str, id: &str) -> Result<Json<api::FollowUp>, ApiError> {
    let now = now();
    sh.world(|w| {
        let f = command::workload(w, name)?.follow_ups.get(id).map(|f| follow_up(f, now));
        f.map(Json).ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no follow-up item {id}")))
    })
}

/// `GET .../dora.svg`: the same window drawn.
pub(super) async fn show_dora_svg(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<DoraQuery>,
) -> Result<Response, ApiError> {
    let (from, to) = q.window()?;
    let svg = dora::svg(&dora_over(&sh, &name, from, to)?);
    Ok(([(axum::http::header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}
