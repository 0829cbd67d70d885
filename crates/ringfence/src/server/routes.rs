//! The router tier's side of the API: the tables routers fetch (`GET /v1/routes`, a
//! long-poll) and the counters they report (`POST /v1/routes/report`).
//!
//! Any server reading the log answers both: the tables come from the log (`RoutesPublished`),
//! and a router reports to every server it knows, so each replica can analyse the workloads
//! it comes to lead.

use axum::http::{HeaderMap, HeaderValue, header};
use ringfence_core::access::Perm;
use ringfence_core::spec::RouterKind;
use sha2::{Digest, Sha256};

use super::prelude::*;
use crate::tierclient::RouterReport;
use crate::traffic::tier::ServedRoute;

/// The longest a fetch is held open.
const MAX_WAIT_S: u64 = 60;
/// After a change, how long a held fetch waits for more before it answers.
const COALESCE: Duration = Duration::from_millis(50);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoutesQuery {
    /// Seconds to wait for a change when `If-None-Match` names the current set.
    #[serde(default)]
    wait: u64,
    /// The `cursor` of the set the router holds: only the routes changed after it are sent.
    #[serde(default)]
    since: Option<String>,
}

/// `GET /v1/routes`: the tables of every tier workload the caller may route. With
/// `If-None-Match: "<etag>"` naming the current set, the answer waits up to `wait` seconds
/// for a change, then is 304. With `since` naming a cursor this process gave out, the answer
/// is a delta: every workload of the set by name, and the routes changed after the cursor.
pub(super) async fn routes(
    State(sh): St,
    caller: Caller,
    Params(q): Params<RoutesQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if q.wait > MAX_WAIT_S {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("wait: at most {MAX_WAIT_S} seconds, found {}", q.wait),
        ));
    }
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"').to_owned());
    let since = q.since.as_deref().and_then(|c| sh.traffic.tier.revision_of(c));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait);
    // Subscribed before reading, so no change between the read and the wait is missed.
    let mut changes = sh.changes();
    // The routes' part of the state at the last pass: (generation of the state, changes to
    // what the tier serves). Most events change none of it, and then no pass is needed.
    let mut passed: Option<(u64, u64)> = None;
    let mut pass = Duration::ZERO;
    loop {
        let (routes_changed, now) = sh.world_at(|w| w.routes_changed);
        if passed != Some((now.generation, routes_changed)) {
            let started = std::time::Instant::now();
            let (tables, decided, routes_changed) = tables_for(&sh, &caller, since);
            pass = started.elapsed();
            passed = Some((decided.generation, routes_changed));
            if known.as_deref() != Some(tables.etag.as_str()) {
                // A router acts on what it is given: never on a table whose event is not yet
                // durable (a crash would leave routers serving what the log never held).
                let mut durable = sh.durable();
                let settled =
                    durable.wait_for(|d| d.generation != decided.generation || d.seq >= decided.seq).await.map(|d| *d);
                if settled.is_ok_and(|d| d.generation != decided.generation) {
                    passed = None;
                    continue;
                }
                let etag = HeaderValue::from_str(&format!("\"{}\"", tables.etag)).expect("hex is a header value");
                let json = HeaderValue::from_static("application/json");
                return Ok(([(header::ETAG, etag), (header::CONTENT_TYPE, json)], tables.body).into_response());
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            () = tokio::time::sleep_until(deadline) => break,
            () = sh.shutdown.cancelled() => break,
        }
        // Every event of every workload wakes this, and a pass over all the tier's workloads
        // runs only when what the tier serves changed: changes arriving close together are
        // answered together, and with thousands of workloads (a pass of milliseconds) the
        // pause grows so that the passes take at most a fifth of the time. The OFREP tokens'
        // digests are read by every pass, so a secret changed behind the log reaches the
        // routers with the next change of a route or the router's next request.
        let pause = COALESCE.max(pass * 4);
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
        changes.mark_unchanged();
    }
    Ok(StatusCode::NOT_MODIFIED.into_response())
}

/// A [`ringfence_router::TierTables`] serialized: each route is serialized once per change of
/// it, for the digest and the answer both (with thousands of workloads the set is megabytes,
/// and a pass after every change); a delta carries only the routes changed.
struct Serialized {
    etag: String,
    body: Vec<u8>,
}

/// The set as it is now, for what `caller` may route; its etag is a digest of its content.
/// With `since`, a delta: the routes changed after that revision.
fn tables_for(sh: &Shared, caller: &Caller, since: Option<u64>) -> (Serialized, crate::state::Durable, u64) {
    // The workloads' snapshots under the lock (a pointer each), the tables outside it: with
    // thousands of workloads the pass takes milliseconds every command would wait for.
    let ((tier, tier_workloads, routes_changed), decided) = sh.world_at(|w| {
        let mut all = 0;
        let tier: Vec<std::sync::Arc<ringfence_core::state::WorkloadState>> = w
            .workloads
            .values()
            .filter(|ws| !ws.deleted && ws.spec.router.kind == RouterKind::Tier)
            .inspect(|_| all += 1)
            .filter(|ws| caller.may(Perm::Route, Some(&ws.name)))
            .cloned()
            .collect();
        (tier, all, w.routes_changed)
    });
    let served = sh.traffic.tier.served_routes(&sh.data_dir, &tier, tier_workloads);
    let cursor = served.cursor;
    let served = served.routes;
    // Two workloads claiming the same host and prefix: the first by name keeps it (a router
    // refuses a set with a clash whole, which would freeze every other workload's changes).
    let mut claimed = std::collections::HashSet::new();
    let mut routes = Vec::with_capacity(served.len());
    let mut names = Vec::with_capacity(served.len());
    for (ws, route) in tier.iter().zip(served) {
        let Some(route) = route else { continue };
        let (host, path_prefix) = (&ws.spec.router.host, &ws.spec.router.path_prefix);
        if !claimed.insert((host.as_deref(), path_prefix.as_deref().unwrap_or_default())) {
            tracing::warn!(
                workload = ws.name,
                ?host,
                ?path_prefix,
                "another workload serves the same host and path prefix in the router tier; this one is left out"
            );
            continue;
        }
        routes.push(route);
        names.push(ws.name.as_str());
    }
    (serialize(&routes, &cursor, since.map(|s| (s, names.as_slice()))), decided, routes_changed)
}

/// The same document as `TierTables { etag, cursor, routes }` serialized, its etag a digest
/// of the routes' digests (the whole set's, delta or not). With `delta` (a revision and every
/// route's workload), `TierTables { etag, cursor, workloads, routes }` with only the routes
/// changed after that revision.
fn serialize(routes: &[ServedRoute], cursor: &str, delta: Option<(u64, &[&str])>) -> Serialized {
    let mut digest = Sha256::new();
    for route in routes {
        digest.update(route.digest);
    }
    let etag = hex::encode(&digest.finalize()[..16]);
    let sent: Vec<&ServedRoute> = routes.iter().filter(|r| delta.is_none_or(|(since, _)| r.revision > since)).collect();
    let size: usize = sent.iter().map(|r| r.json.len() + 1).sum::<usize>()
        + delta.map_or(0, |(_, names)| names.iter().map(|n| n.len() + 3).sum());
    let mut body = Vec::with_capacity(size + etag.len() + cursor.len() + 64);
    body.extend_from_slice(b"{\"etag\":\"");
    body.extend_from_slice(etag.as_bytes());
    body.extend_from_slice(b"\",\"cursor\":");
    body.extend_from_slice(&serde_json::to_vec(cursor).expect("a string serializes"));
    if let Some((_, names)) = delta {
        body.extend_from_slice(b",\"workloads\":");
        body.extend_from_slice(&serde_json::to_vec(names).expect("names serialize"));
    }
    body.extend_from_slice(b",\"routes\":[");
    for (i, route) in sent.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&route.json);
    }
    body.extend_from_slice(b"]}");
    Serialized { etag, body }
}

/// `POST /v1/routes/report`: a router's counters per workload since it started (those that
/// changed since its last report, and a share of the others). Refused whole (403) if it names
/// a workload the token may not route; workloads not served by the tier are ignored.
pub(super) async fn report(
    State(sh): St,
    caller: Caller,
    Body(report): Body<RouterReport>,
) -> Result<Json<api::RoutesReportAccepted>, ApiError> {
    if report.router.is_empty() || report.router.chars().count() > 128 || report.router.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("router: expected a name of 1 to 128 printable characters, found {:?}", report.router),
        ));
    }
    for name in report.workloads.keys() {
        caller.require(Perm::Route, Some(name))?;
    }
    let served: std::collections::HashSet<String> = sh.world(|w| {
        report
            .workloads
            .keys()
            .filter(|n| w.workloads.get(*n).is_some_and(|ws| !ws.deleted && ws.spec.router.kind == RouterKind::Tier))
            .cloned()
            .collect()
    });
    // One router instance sends a report: its first since this server started asks for all.
    let send_all = report.workloads.values().next().is_some_and(|s| !sh.traffic.tier.heard_before(&s.instance_id));
    let mut accepted = Vec::new();
    let mut ignored = Vec::new();
    for (name, snapshot) in report.workloads {
        if served.contains(&name) {
            // Its loop judges on these counters: it wakes now rather than at its next tick,
            // unless they say nothing new.
            if sh.traffic.tier.report(&report.router, &name, snapshot) {
                sh.notifier(&name).notify_one();
            }
            accepted.push(name);
        } else {
            ignored.push(name);
        }
    }
    Ok(Json(api::RoutesReportAccepted { accepted, ignored, send_all }))
}

#[cfg(test)]
mod tests {
    use ringfence_router::{RouteTable, TierRoute, TierTables};

    use super::*;

    #[test]
    fn the_set_serialized_once_is_the_tier_tables_document() {
        let table = |w: &str| -> RouteTable {
            serde_json::from_value(serde_json::json!({"workload": w, "generation": 3})).expect("a table")
        };
        let routes = vec![
            TierRoute { host: Some("a.test".into()), path_prefix: None, table: table("a") },
            TierRoute { host: None, path_prefix: Some("/b".into()), table: table("b") },
        ];
        let mut served: Vec<ServedRoute> = routes.iter().map(ServedRoute::of).collect();
        (served[0].revision, served[1].revision) = (4, 7);
        let tables = |etag: &str, workloads: Option<Vec<String>>, routes: Vec<TierRoute>| TierTables {
            etag: etag.into(),
            cursor: Some("e.7".into()),
            workloads,
            routes,
        };
        let s = serialize(&served, "e.7", None);
        let read: TierTables = serde_json::from_slice(&s.body).expect("a TierTables document");
        assert_eq!(read, tables(&s.etag, None, routes.clone()));
        assert_ne!(serialize(&served[..1], "e.7", None).etag, s.etag, "another set, another etag");
        let empty = serialize(&[], "e.7", None);
        assert_eq!(empty.body, serde_json::to_vec(&tables(&empty.etag, None, vec![])).unwrap());

        // A delta after revision 5: every workload by name, b's route alone, the whole set's etag.
        let delta = serialize(&served, "e.7", Some((5, &["a", "b"])));
        let read: TierTables = serde_json::from_slice(&delta.body).expect("a TierTables document");
        assert_eq!(read, tables(&s.etag, Some(vec!["a".into(), "b".into()]), vec![routes[1].clone()]));
    }
}
