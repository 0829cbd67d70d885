//! The admin API the controller talks to. Small enough for a plain match on method and path.
//!
//! Every request needs the router's secret (`Authorization: Bearer <secret>`, see
//! [`crate::AdminAuth`]), checked before anything else: without it the answer is 401 and
//! nothing is read or changed. The one exception is `GET /metrics`, so Prometheus can scrape
//! the router without holding the secret that lets one reroute traffic. It is read-only and
//! shows what any scraper is meant to see (per-version counters and latency, breaker states
//! by upstream address, the table's generation); it cannot change anything.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::json;

use crate::auth::{AdminAuth, bearer};
use crate::server::{Shared, persist};
use crate::stats::StatsSnapshot;
use crate::table::{RouteTable, bucket};

/// Tables are a few KiB; anything this large is a mistake.
const MAX_TABLE_BYTES: usize = 1 << 20;

type AdminResponse = Response<Full<Bytes>>;

pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> AdminResponse {
    let path = req.uri().path().to_owned();
    if path != "/metrics"
        && let Some(refused) = refusal(&shared.admin_auth, &req)
    {
        return refused;
    }
    if shared.tier_mode {
        match (req.method(), path.as_str()) {
            (&Method::GET, "/v1/table") => {
                return match shared.tier.load_full() {
                    Some(tier) => json_ok(&tier.tables),
                    None => error(StatusCode::NOT_FOUND, "no_table", "no routing table has been loaded yet"),
                };
            }
            (&Method::PUT, "/v1/table") => {
                return error(
                    StatusCode::CONFLICT,
                    "tier_mode",
                    "this router takes its tables from the control plane (--control-plane), not from PUT /v1/table",
                );
            }
            (&Method::GET, "/v1/stats") => return json_ok(&crate::tier::tier_snapshots(&shared)),
            (&Method::GET, "/ready") => {
                return if shared.tier.load().is_some() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "no routing table loaded\n")
                };
            }
            (&Method::GET, "/v1/assign") => {
                return error(StatusCode::NOT_FOUND, "tier_mode", "ask the control plane which version a user gets");
            }
            _ => {}
        }
    }
    match (req.method(), path.as_str()) {
        (&Method::GET, "/v1/table") => match shared.routing.load_full() {
            Some(routing) => json_ok(&routing.table),
            None => error(StatusCode::NOT_FOUND, "no_table", "no routing table has been loaded yet"),
        },
        (&Method::PUT, "/v1/table") => put_table(&shared, req).await,
        (&Method::GET, "/v1/stats") => json_ok(&snapshot(&shared)),
        (&Method::GET, "/v1/assign") => assign(&shared, req.uri().query()),
        (&Method::GET, "/metrics") => metrics(&shared),
        (&Method::GET, "/ready") => {
            if shared.routing.load().is_some() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "no routing table loaded\n")
            }
        }
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (_, "/v1/table") => method_not_allowed("GET, PUT"),
        (_, "/v1/stats" | "/v1/assign" | "/metrics" | "/ready" | "/live") => method_not_allowed("GET"),
        _ => error(StatusCode::NOT_FOUND, "not_found", &format!("no such endpoint: {path}")),
    }
}

/// The 401 to answer if the request may not use the admin API; `None` if it may.
fn refusal(auth: &AdminAuth, req: &Request<Incoming>) -> Option<AdminResponse> {
    let AdminAuth::Token(token) = auth else { return None };
    let (reason, message) = match bearer(req.headers().get(header::AUTHORIZATION)) {
        Some(presented) if token.matches(presented) => return None,
        Some(_) => ("wrong token", "the admin token is wrong"),
        None => (
            "no token",
            "the admin API needs the router's secret: send `Authorization: Bearer <secret>` (the secret is in the \
             router's --admin-token-file)",
        ),
    };
    // Never the presented credentials: a near miss is still most of a secret.
    tracing::warn!(method = %req.method(), path = req.uri().path(), reason, "admin request refused");
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"ringfence-router\""));
    Some(response)
}

async fn put_table(shared: &Shared, req: Request<Incoming>) -> AdminResponse {
    let body = match Limited::new(req.into_body(), MAX_TABLE_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return if e.is::<http_body_util::LengthLimitError>() {
                let message = format!("table is larger than {MAX_TABLE_BYTES} bytes");
                error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", &message)
            } else {
                error(StatusCode::BAD_REQUEST, "bad_body", &format!("cannot read body: {e}"))
            };
        }
    };
    let table: RouteTable = match serde_json::from_slice(&body) {
        Ok(table) => table,
        Err(e) => {
            let message = format!("body is not a routing table: {e}");
            return error(StatusCode::BAD_REQUEST, "invalid_json", &message);
        }
    };
    if let Err(e) = table.validate() {
        let body = json!({"error": {"code": "invalid_table", "message": e.to_string(), "field": e.field}});
        return json_response(StatusCode::BAD_REQUEST, &body);
    }

    let mut writes = shared.writes.lock().await;
    let current = shared.routing.load_full();
    if let Some(current) = &current {
        let current = &current.table;
        if table.generation < current.generation {
            let message =
                format!("generation {} is older than the served generation {}", table.generation, current.generation);
            return error(StatusCode::CONFLICT, "stale_generation", &message);
        }
        if table == *current && !writes.unpersisted {
            return json_ok(current);
        }
    }
    // Swap before persisting: a full disk must not stop the controller from mitigating.
    if current.as_ref().is_none_or(|c| c.table != table)
        && let Err(e) = shared.install(table.clone())
    {
        tracing::error!(error = %e, "validated table failed to compile");
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string());
    }
    if let Some(path) = &shared.state_file
        && let Err(e) = persist(path.clone(), &table).await
    {
        writes.unpersisted = true;
        let error_chain = format!("{e:#}");
        tracing::error!(path = %path.display(), error = %error_chain, "cannot persist routing table");
        let message = format!("the table is being served but could not be saved to {}: {error_chain}", path.display());
        return error(StatusCode::INTERNAL_SERVER_ERROR, "persist_failed", &message);
    }
    writes.unpersisted = false;
    json_ok(&table)
}

pub(crate) fn snapshot(shared: &Shared) -> StatsSnapshot {
    let routing = shared.routing.load_full();
    snapshot_of(shared, &shared.stats, routing.as_deref(), Instant::now())
}

/// The counters in `stats` with what `routing` (the table they belong to) adds.
pub(crate) fn snapshot_of(
    shared: &Shared,
    stats: &crate::stats::Stats,
    routing: Option<&crate::routing::Routing>,
    now: Instant,
) -> StatsSnapshot {
    let live_versions = routing.iter().flat_map(|r| r.groups.iter().map(|g| g.version.as_str()));
    StatsSnapshot {
        instance_id: shared.instance_id.clone(),
        generation: routing.map_or(0, |r| r.table.generation),
        uptime_ms: u64::try_from(now.duration_since(shared.started).as_millis()).unwrap_or(u64::MAX),
        versions: stats.versions(live_versions, now),
        upstreams: routing.map(|r| r.upstream_stats(now)).unwrap_or_default(),
    }
}

fn assign(shared: &Shared, query: Option<&str>) -> AdminResponse {
    let Some(user) = query_param(query.unwrap_or(""), "user").filter(|u| !u.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "missing_user", "query parameter `user` is required");
    };
    let Some(routing) = shared.routing.load_full() else {
        return error(StatusCode::NOT_FOUND, "no_table", "no routing table has been loaded yet");
    };
    let table = &routing.table;
    let bucket = bucket(&table.workload, &user);
    match table.group_index(&user, |_| None).map(|i| &table.groups[i]) {
        Some(group) => json_ok(&json!({"bucket": bucket, "group": group.name, "version": group.version})),
        None => error(StatusCode::NOT_FOUND, "no_group", "the routing table has no groups"),
    }
}

fn metrics(shared: &Arc<Shared>) -> AdminResponse {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(crate::metrics::Collector(shared.clone())));
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &format!("encoding metrics: {e}"));
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The first value of `name` in a query string, percent-decoded (`+` is a space).
fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn json_ok(value: &impl Serialize) -> AdminResponse {
    json_response(StatusCode::OK, value)
}

fn json_response(status: StatusCode, value: &impl Serialize) -> AdminResponse {
    let body = match serde_json::to_vec(value) {
        Ok(body) => body,
        Err(e) => {
            return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("encoding JSON: {e}\n"));
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> AdminResponse {
    json_response(status, &json!({"error": {"code": code, "message": message}}))
}

fn method_not_allowed(allow: &'static str) -> AdminResponse {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", &format!("allowed: {allow}"));
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn text(status: StatusCode, body: &str) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(query_param("user=alice", "user").as_deref(), Some("alice"));
        assert_eq!(query_param("x=1&user=a%20b+c%2B", "user").as_deref(), Some("a b c+"));
        assert_eq!(query_param("user=%zz%4%+1", "user").as_deref(), Some("%zz%4% 1"));
        assert_eq!(query_param("user=%ff", "user").as_deref(), Some("\u{fffd}"));
        assert_eq!(query_param("user", "user").as_deref(), Some(""));
        assert_eq!(query_param("other=1", "user"), None);
    }
}
