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

impl EventsQuery {
    /// The page asked for: (after, limit). A limit past the largest page is refused rather than
    /// cut down, so a client that asked for more never takes a short page for the end of the
    /// log; sequence numbers are 63-bit (the document's int64).
    fn page(&self) -> Result<(u64, usize), ApiError> {
        if self.after > i64::MAX as u64 {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("after: expected 0 to {}, found {}", i64::MAX, self.after),
            ));
        }
        if self.limit == 0 || self.limit > MAX_PAGE {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!("limit: expected 1 to {MAX_PAGE}, found {}", self.limit),
            ));
        }
        Ok((self.after, self.limit))
    }
}

/// The most events one answer holds; a client pages on with `after` until a page is empty
/// (docs/api.md).
const MAX_PAGE: usize = 1000;

/// The most bytes of events one answer holds (a page ends early past it, always with at least
/// one event): events carry releases, and a release may be 2 MiB.
const MAX_PAGE_BYTES: usize = 4 << 20;

pub(super) async fn workload_events(
    State(sh): St,
    Path(name): Path<String>,
    Params(q): Params<EventsQuery>,
) -> Result<Json<Vec<api::Event>>, ApiError> {
    // A deleted workload's history stays readable.
    sh.world(|w| match w.workload(&name) {
        Some(_) => Ok(()),
        None => command::workload(w, &name).map(|_| ()),
    })?;
    let (after, limit) = q.page()?;
    Ok(Json(bounded(sh.events(Some(&name), after, limit)?).iter().map(wire::event).collect()))
}

pub(super) async fn all_events(
    State(sh): St,
    Params(q): Params<EventsQuery>,
) -> Result<Json<Vec<api::Event>>, ApiError> {
    let (after, limit) = q.page()?;
    let mut events = bounded(sh.events(None, after, limit)?);
    events.iter_mut().for_each(redact);
    Ok(Json(events.iter().map(wire::event).collect()))
}

/// The events up to [`MAX_PAGE_BYTES`] of JSON, and at least the first.
fn bounded(events: Vec<Event>) -> Vec<Event> {
    let mut size = 0;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        size += serde_json::to_vec(&e).map_or(0, |v| v.len());
        if size > MAX_PAGE_BYTES && !out.is_empty() {
            break;
        }
        out.push(e);
    }
    out
}

/// What the log keeps to verify a token is no one else's business: not even the hash leaves
/// the server.
fn redact(e: &mut Event) {
    if let ringfence_core::EventKind::TokenCreated { token } = &mut e.kind {
        token.salt = "<redacted>".into();
        token.hash = "<redacted>".into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, reason_bytes: usize) -> Event {
        Event {
            seq,
            at: ringfence_core::Timestamp(0),
            actor: "a".into(),
            reason: "x".repeat(reason_bytes),
            workload: "w".into(),
            kind: ringfence_core::EventKind::RolloutPaused { rollout_id: "w-1".into() },
        }
    }

    #[test]
    fn a_page_ends_at_its_size_bound_but_always_holds_one_event() {
        let big: Vec<Event> = (1..=3).map(|s| event(s, 3 << 20)).collect();
        assert_eq!(bounded(big.clone()).len(), 1);
        assert_eq!(bounded(vec![event(1, 5 << 20)]).len(), 1, "one event larger than the bound still goes");
        let small: Vec<Event> = (1..=1000).map(|s| event(s, 100)).collect();
        assert_eq!(bounded(small).len(), 1000);
    }
}
