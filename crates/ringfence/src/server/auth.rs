//! Who may call the API, in two layers, before any handler runs.
//!
//! [`guard`] (every request, matched or not) refuses what a web page or a rebinding DNS name
//! could send on the operator's behalf: a `Host` the server was not told to answer to, an
//! `Origin` of another site, a POST that is not `application/json` (a browser's
//! "simple" cross-site request cannot set that type without a preflight, and the server
//! answers no preflight: there is no CORS).
//!
//! [`authorize`] (every matched route) finds the caller's token (`Authorization: Bearer`),
//! and checks the permission [`policy`] names for the route on the workload of its path. The
//! caller becomes the actor of every event the request causes. Deny by default: a route that
//! [`policy`] does not know needs the admin role.

use axum::extract::{MatchedPath, RawPathParams, Request};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use ringfence_core::access::{Access, Denied, Perm, TokenRecord};

use super::extract::Actor;
use super::prelude::*;

/// The `Host` values the server answers to (lowercase `host:port`).
#[derive(Debug, Clone)]
pub struct HostPolicy {
    allowed: Vec<String>,
}

impl HostPolicy {
    /// The loopback names on `port`, the bound address itself, and `extra` (`host` or
    /// `host:port`; a bare host is allowed on `port`).
    pub fn new(bound: std::net::SocketAddr, extra: &[String]) -> HostPolicy {
        let port = bound.port();
        let mut allowed = vec![format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")];
        if !bound.ip().is_unspecified() {
            allowed.push(bound.to_string());
        }
        for h in extra {
            let h = h.trim().to_ascii_lowercase();
            if h.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !h.ends_with(']') {
                allowed.push(h);
            } else {
                allowed.push(format!("{h}:{port}"));
            }
        }
        allowed.sort();
        allowed.dedup();
        HostPolicy { allowed }
    }

    fn allows(&self, host: &str) -> bool {
        self.allowed.iter().any(|a| a.eq_ignore_ascii_case(host))
    }

    fn allows_origin(&self, origin: &str) -> bool {
        let lower = origin.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://")) else {
            return false;
        };
        // An origin without a port has the scheme's default one.
        let with_port = if rest.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !rest.ends_with(']')
        {
            rest.to_string()
        } else if lower.starts_with("https://") {
            format!("{rest}:443")
        } else {
            format!("{rest}:80")
        };
        self.allows(&with_port)
    }
}

/// The caller, as [`authorize`] established it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: TokenRecord,
}

impl Caller {
    /// Whether the caller may do `perm` on `workload`.
    pub fn may(&self, perm: Perm, workload: Option<&str>) -> bool {
        Access::check(&self.token, perm, workload).is_ok()
    }

    /// `Ok` if the caller may, else the API's 403.
    pub fn require(&self, perm: Perm, workload: Option<&str>) -> Result<(), ApiError> {
        Access::check(&self.token, perm, workload).map_err(denied)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorKind::Store, "no caller: the server's layers are misconfigured"))
    }
}

pub(super) fn denied(d: Denied) -> ApiError {
    match d {
        Denied::Unauthenticated(m) => ApiError::new(ErrorKind::Unauthenticated, m),
        Denied::Forbidden(m) => ApiError::new(ErrorKind::Forbidden, m),
    }
}

/// Where a route's permission applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The workload named in the path.
    Workload,
    /// Some workload: the handler narrows what it answers or checks the workload it reads
    /// from the body.
    Any,
    /// Nothing of one workload (tokens, Alertmanager's webhook): a grant on `*`.
    Global,
}

/// The permission each route needs. The one table of the API's authorization: a new route
/// adds its line here (a test checks every declared route has one).
pub fn policy(method: &Method, route: &str) -> Option<(Perm, Scope)> {
    use Perm::*;
    use Scope::*;
    let get = method == Method::GET || method == Method::HEAD;
    Some(match (get, route) {
        (true, "/v1/openapi.json" | "/v1/workloads") => (Read, Any),
        // The workloads the caller may read, each series labelled with its workload.
        (true, "/v1/metrics") => (Read, Any),
        // The whole log, every workload's and the tokens' events: for grants on `*`; a scoped
        // reader reads its workloads' events.
        (true, "/v1/events") => (Read, Global),
        (true, r) if r.starts_with("/v1/workloads/{name}") => (Read, Workload),
        (true, "/v1/tokens") => (Admin, Global),
        // Applying a spec checks the spec's workload in the handler (and what it executes).
        (false, "/v1/workloads") => (Deploy, Any),
        (
            false,
            "/v1/workloads/{name}/releases"
            | "/v1/workloads/{name}/releases/{version}/clear-hold"
            | "/v1/workloads/{name}/releases/{version}/revoke"
            | "/v1/workloads/{name}/deploy"
            | "/v1/workloads/{name}/pause"
            | "/v1/workloads/{name}/resume"
            | "/v1/workloads/{name}/abort"
            | "/v1/workloads/{name}/rollback"
            | "/v1/workloads/{name}/redeploy"
            | "/v1/workloads/{name}/releases/{version}/attestations"
            | "/v1/workloads/{name}/incidents/{id}/ack"
            | "/v1/workloads/{name}/incidents/{id}/resolve"
            | "/v1/workloads/{name}/followups"
            | "/v1/workloads/{name}/followups/{id}/assign"
            | "/v1/workloads/{name}/followups/{id}/close"
            // A drill is a deployment of a drill release, limited in exposure and time.
            | "/v1/workloads/{name}/drills"
            | "/v1/workloads/{name}/drills/abort",
        ) => (Deploy, Workload),
        (
            false,
            "/v1/workloads/{name}/promote"
            | "/v1/workloads/{name}/bypass"
            | "/v1/workloads/{name}/approve"
            | "/v1/workloads/{name}/reject",
        ) => (Approve, Workload),
        // Stopping the line halts every workload: for grants on `*`.
        (false, "/v1/line/stop" | "/v1/line/restart") => (Govern, Global),
        (false, "/v1/workloads/{name}/flags/{flag}/kill" | "/v1/workloads/{name}/flags/{flag}/restore") => {
            (Flags, Workload)
        }
        (false, "/v1/workloads/{name}/reports") => (Report, Workload),
        (false, "/v1/alerts") => (Report, Global),
        // The router tier: the handlers narrow to the workloads the caller may route.
        (true, "/v1/routes") | (false, "/v1/routes/report") => (Route, Any),
        (false, "/v1/tokens" | "/v1/tokens/{id}") => (Admin, Global),
        // Deleting stops everything of the workload: the admin's.
        (false, "/v1/workloads/{name}") => (Admin, Workload),
        _ => return None,
    })
}

/// Routes anyone may call: the liveness check of load balancers and supervisors (it says
/// only that the server runs). The OpenAPI document marks the same routes as needing no token.
use ringfence_api::openapi::PUBLIC;

/// The first layer: Host, Origin and Content-Type.
pub async fn guard(
    axum::extract::State(hosts): axum::extract::State<Arc<HostPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    if let Err(e) = check_request(&hosts, req.method(), req.uri().path(), req.headers()) {
        return e.into_response();
    }
    next.run(req).await
}

fn check_request(hosts: &HostPolicy, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    // A body announced too large is refused before a byte of it is read: the answer comes
    // at once, not after the server has taken in what it will not use.
    let announced =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > ringfence_api::MAX_REQUEST_BYTES as u64) {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            format!(
                "the body is {} bytes; the server accepts at most {}",
                announced.unwrap_or(0),
                ringfence_api::MAX_REQUEST_BYTES
            ),
        ));
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !hosts.allows(host) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "Host {host:?} is not a name this server answers to (a DNS rebinding attempt, or a name it was not told: start it with --allowed-host NAME)"
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !hosts.allows_origin(origin) {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                format!("requests from web pages of another origin ({origin}) are refused"),
            ));
        }
    }
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return Err(ApiError::new(ErrorKind::Forbidden, "cross-site requests are refused"));
    }
    // Of the methods a page can send without a preflight (GET, HEAD, POST), POST is the one
    // that changes something; PUT and DELETE always need a preflight, which gets no answer.
    // The hub's pages post forms: they carry the session's form token instead, which another
    // site cannot know (checked by each `/ui` handler), and the checks above still apply.
    if *method == Method::POST {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        let json = content_type.eq_ignore_ascii_case("application/json");
        let ui_form =
            path.starts_with("/ui/") && content_type.eq_ignore_ascii_case("application/x-www-form-urlencoded");
        if !json && !ui_form {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                "POST requests must be Content-Type: application/json (with a JSON body, `{}` if none)",
            ));
        }
    }
    Ok(())
}

/// The second layer, on matched routes: the token and the route's permission.
pub async fn authorize(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    matched: MatchedPath,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut req: Request,
    next: Next,
) -> Response {
    // A segment that is not UTF-8 names nothing; refused here, before the token is looked at,
    // in the error shape rather than as axum's plain text.
    let params = match params {
        Ok(p) => p,
        Err(e) => return ApiError::new(ErrorKind::BadRequest, format!("path: {}", e.body_text())).into_response(),
    };
    let route = matched.as_str().to_owned();
    if PUBLIC.contains(&route.as_str()) {
        return next.run(req).await;
    }
    let workload = params.iter().find(|(k, _)| *k == "name").map(|(_, v)| v.to_owned());
    match caller_of(&shared, req.method(), &route, req.headers(), workload.as_deref()) {
        Ok(caller) => {
            req.extensions_mut().insert(Actor(caller.token.name.clone()));
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            tracing::info!(method = %req.method(), route, error = %e.message(), "request refused");
            e.into_response()
        }
    }
}

fn caller_of(
    shared: &Shared,
    method: &Method,
    route: &str,
    headers: &HeaderMap,
    workload: Option<&str>,
) -> Result<Caller, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::Unauthenticated,
                "no token: send Authorization: Bearer TOKEN (the CLI reads RINGFENCE_TOKEN, or the admin token the server wrote to its data directory)",
            )
        })?;
    let token = shared.world(|w| w.access.authenticate(presented, now()).cloned()).map_err(denied)?;
    let caller = Caller { token };
    // Deny by default: a route without a line in the policy is for admins.
    let (perm, scope) = policy(method, route).unwrap_or((Perm::Admin, Scope::Global));
    match scope {
        Scope::Workload => caller.require(perm, workload)?,
        Scope::Global => caller.require(perm, None)?,
        Scope::Any => {
            if !caller.token.grants.iter().any(|g| g.role.grants(perm)) {
                caller.require(perm, None)?;
            }
        }
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> HostPolicy {
        HostPolicy::new("127.0.0.1:7070".parse().unwrap(), &["deploy.example.com".into(), "10.0.0.5:8443".into()])
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_known_hosts_and_same_origin_pages_get_through() {
        let h = hosts();
        let ok =
            |pairs: &[(&'static str, &str)]| check_request(&h, &Method::GET, "/v1/workloads", &headers(pairs)).is_ok();
        assert!(ok(&[("host", "127.0.0.1:7070")]));
        assert!(ok(&[("host", "LOCALHOST:7070")]));
        assert!(ok(&[("host", "deploy.example.com:7070")]));
        assert!(ok(&[("host", "10.0.0.5:8443")]));
        assert!(!ok(&[("host", "evil.example:7070")]), "a rebinding name");
        assert!(!ok(&[("host", "127.0.0.1:7071")]));
        assert!(!ok(&[]));
        assert!(ok(&[("host", "127.0.0.1:7070"), ("origin", "http://127.0.0.1:7070")]));
        assert!(!ok(&[("host", "127.0.0.1:7070"), ("origin", "http://evil.example")]));
        assert!(!ok(&[("host", "127.0.0.1:7070"), ("origin", "null")]));
        assert!(!ok(&[("host", "127.0.0.1:7070"), ("sec-fetch-site", "cross-site")]));
    }

    #[test]
    fn a_mutating_request_must_be_json() {
        let h = hosts();
        let post = |ct: Option<&str>| {
            let mut pairs = vec![("host", "127.0.0.1:7070")];
            if let Some(ct) = ct {
                pairs.push(("content-type", ct));
            }
            check_request(&h, &Method::POST, "/v1/workloads/w/pause", &headers(&pairs))
        };
        assert!(post(Some("application/json")).is_ok());
        assert!(post(Some("application/json; charset=utf-8")).is_ok());
        for simple in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data")]
        {
            assert!(post(simple).is_err(), "{simple:?}");
        }
        // The hub's pages post forms (with their form token), and only they.
        let form = |path: &str, origin: Option<&'static str>| {
            let mut pairs = vec![("host", "127.0.0.1:7070"), ("content-type", "application/x-www-form-urlencoded")];
            pairs.extend(origin.map(|o| ("origin", o)));
            check_request(&h, &Method::POST, path, &headers(&pairs))
        };
        assert!(form("/ui/w/shop/act", None).is_ok());
        assert!(form("/ui/w/shop/act", Some("http://127.0.0.1:7070")).is_ok());
        assert!(form("/ui/w/shop/act", Some("http://evil.example")).is_err(), "another site's form");
        assert!(form("/v1/ui/w/shop/act", None).is_err());
    }

    #[test]
    fn every_mutating_route_has_a_policy_line() {
        for (method, path) in super::super::tests::declared_routes() {
            if PUBLIC.contains(&path.as_str()) {
                continue;
            }
            assert!(
                policy(&method.to_uppercase().parse().unwrap(), &path).is_some(),
                "{method} {path} has no line in auth::policy"
            );
        }
    }
}
