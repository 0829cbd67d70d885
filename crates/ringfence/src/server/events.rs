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
    MAX_PAGE
}

/// The most events one answer holds: a page of the log stays a few megabytes at most, and a
/// client pages on with `after` (docs/api.md).
const MAX_PAGE: usize = 1000;

pub(super) async fn workload_events(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<EventsQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    sh.world(|w| command::workload(w, &name).map(|_| ()))?;
    Ok(Json(sh.events(Some(&name), q.after, q.limit.min(MAX_PAGE))?))
}

pub(super) async fn all_events(State(sh): St, Params(q): Params<EventsQuery>) -> Result<Json<Vec<Event>>, ApiError> {
    let mut events = sh.events(None, q.after, q.limit.min(MAX_PAGE))?;
    events.iter_mut().for_each(redact);
    Ok(Json(events))
}

/// What the log keeps to verify a token is no one else's business: not even the hash leaves
/// the server.
fn redact(e: &mut Event) {
    if let ringfence_core::EventKind::TokenCreated { token } = &mut e.kind {
        token.salt = "<redacted>".into();
        token.hash = "<redacted>".into();
    }
}
