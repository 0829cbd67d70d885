//! The event log, per workload and whole.

use super::prelude::*;

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

pub(super) fn default_limit() -> usize {
    1000
}

pub(super) async fn workload_events(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<EventsQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    sh.world(|w| command::workload(w, &name).map(|_| ()))?;
    Ok(Json(sh.events(Some(&name), q.after, q.limit.min(10_000))?))
}

pub(super) async fn all_events(State(sh): St, Params(q): Params<EventsQuery>) -> Result<Json<Vec<Event>>, ApiError> {
    Ok(Json(sh.events(None, q.after, q.limit.min(10_000))?))
}
