//! The data plane: pick a group for the user, forward to one of its replicas, stream back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};

use crate::relay::Conns;
use crate::routing::{Attempt, GroupRt, Outcome, Routing};
use crate::server::Shared;
use crate::stats::{Latency, NO_VERSION, Series};
use crate::table::bucket;
use crate::upstream::{Pool, SendError, UserFault};
use crate::userbody::{UserBody, Watch};

/// Bodies are streamed through (a user's request body watched: `userbody`); the router's own
/// answers are small.
pub(crate) type ProxyBody = Either<UserBody, Full<Bytes>>;

pub const GROUP_HEADER: &str = "x-ringfence-group";
pub const VERSION_HEADER: &str = "x-ringfence-version";

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static GROUP: HeaderName = HeaderName::from_static(GROUP_HEADER);
static VERSION: HeaderName = HeaderName::from_static(VERSION_HEADER);

/// RFC 9110 7.6.1 plus the legacy ones still seen in the wild.
pub(crate) static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// What every request of one user's connection shares: built once per connection, so a
/// request clones one reference that no other thread touches (the router's shared state and
/// the worker's pool stay behind it) and the peer's address is formatted once.
pub(crate) struct Connection {
    pub(crate) shared: Arc<Shared>,
    /// hyper's path's connections to replicas.
    pub(crate) pool: Arc<Pool>,
    /// The relay's connections to replicas.
    pub(crate) conns: Arc<Conns>,
    /// The peer's IP as the `X-Forwarded-For` element this router appends.
    pub(crate) peer_ip: HeaderValue,
}

impl Connection {
    pub(crate) fn new(shared: Arc<Shared>, upstreams: &Upstreams, peer: SocketAddr) -> Connection {
        Connection { shared, pool: upstreams.pool.clone(), conns: upstreams.conns.clone(), peer_ip: ip_header(peer) }
    }
}

/// The kept connections to replicas of one runtime that serves users: hyper's path's and the
/// relay's.
#[derive(Clone)]
pub(crate) struct Upstreams {
    pool: Arc<Pool>,
    conns: Arc<Conns>,
}

impl Upstreams {
    /// Both sets, driven by (and swept on) the current runtime.
    pub(crate) fn new(upstream_timeout: Duration) -> Upstreams {
        Upstreams { pool: Pool::new(upstream_timeout), conns: Conns::new(upstream_timeout) }
    }
}

fn ip_header(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Header lookups the routing decision makes, over hyper's header map or a head the relay
/// parsed itself.
pub(crate) trait Headers: Sync {
    /// The first field called `name` (given in lowercase).
    fn first(&self, name: &str) -> Option<&[u8]>;
    /// Every field called `name`, in order.
    fn each<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]>;
}

impl Headers for HeaderMap {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(HeaderValue::as_bytes)
    }

    fn each<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

/// Where one request goes, decided before anything is sent.
pub(crate) struct Decision {
    pub(crate) group_index: usize,
    pub(crate) attempt: Attempt,
    /// The key the user was routed on (from the sticky header or cookie, or just assigned).
    pub(crate) key: String,
    /// The cookie to set when the key was just assigned.
    pub(crate) new_cookie: Option<HeaderValue>,
    /// The shadow group that gets a copy of the request.
    pub(crate) shadow: Option<usize>,
}

/// The table that serves a request: the router's, or in tier mode the one of the workload at
/// the request's host and path. An error is the answer to send instead.
pub(crate) fn table(
    shared: &Shared,
    host: Option<&str>,
    path: &str,
    received: Instant,
) -> Result<Arc<Routing>, Box<Response<ProxyBody>>> {
    // An owned Arc, not a guard: the request holds the table across awaits.
    if shared.tier_mode {
        let Some(tier) = shared.tier.load_full() else {
            return Err(Box::new(shared.no_upstream(received, "no routing table loaded yet\n", None, None)));
        };
        match tier.select(host, path) {
            Some(routing) => Ok(routing.clone()),
            None => Err(Box::new(plain(StatusCode::NOT_FOUND, "no workload is served at this host and path\n"))),
        }
    } else {
        match shared.routing.load_full() {
            Some(routing) => Ok(routing),
            None => Err(Box::new(shared.no_upstream(received, "no routing table loaded yet\n", None, None))),
        }
    }
}

/// Picks the user's group and an admitted replica of it, and plays a drill's fault on the
/// group. An error is the answer to send instead. `bodiless`: the request has no body (only
/// such requests are copied to a shadow group).
pub(crate) async fn decide(
    shared: &Shared,
    routing: &Routing,
    headers: &impl Headers,
    bodiless: bool,
    received: Instant,
) -> Result<Decision, Response<ProxyBody>> {
    let (key, new_cookie) = match user_key(headers, routing) {
        Some(key) => (key, None),
        None => {
            let key = format!("{:016x}", rand::random::<u64>());
            let cookie = format!("{}={key}; Path=/; HttpOnly; SameSite=Lax", routing.table.sticky_cookie);
            (key, HeaderValue::from_str(&cookie).ok())
        }
    };
    // Most tables route by bucket alone; a segment or a pin header asks for the request's headers.
    let preferred = if routing.by_request {
        routing.table.group_index(&key, |name| headers.first(name).and_then(visible_ascii).map(str::to_owned))
    } else {
        routing.group_index(bucket(&routing.table.workload, &key))
    };
    let picked = preferred.and_then(|preferred| routing.pick(preferred, received));
    let Some((group_index, attempt)) = picked else {
        return Err(shared.no_upstream(received, "no healthy upstream for this workload\n", new_cookie, Some(routing)));
    };
    let group = &routing.groups[group_index];
    group.latency.observe_user(user_hash(&key));
    if let Some(fault) = group.fault {
        // A drill: what a regressed release would do to this group's users, done here so any
        // release can be drilled; counted for the group's version, past the breakers (its
        // replicas are healthy).
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if fault.error_bp > 0 && rand::random::<u32>() % 10_000 < fault.error_bp {
            record(&group.series, &group.latency, received, Instant::now(), true);
            let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "fault injected by a ringfence drill\n");
            decorate(response.headers_mut(), group, new_cookie);
            return Err(response);
        }
    }
    let shadow = routing.shadow.filter(|&i| {
        i != group_index && bodiless && bucket(&routing.table.workload, &key) < routing.table.groups[i].shadow_bp
    });
    Ok(Decision { group_index, attempt, key, new_cookie, shadow })
}

/// A header value as text, when it is visible ASCII (what `HeaderValue::to_str` accepts).
pub(crate) fn visible_ascii(value: &[u8]) -> Option<&str> {
    value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)).then(|| std::str::from_utf8(value).ok()).flatten()
}

/// Serves one request that came through hyper (what the relay hands over: see `relay`).
pub(crate) async fn handle(conn: Arc<Connection>, req: Request<Incoming>) -> Response<ProxyBody> {
    let received = Instant::now();
    let (shared, pool) = (&conn.shared, &conn.pool);
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host());
    let routing = match table(shared, host, req.uri().path(), received) {
        Ok(routing) => routing,
        Err(answer) => return *answer,
    };
    if req.method() == Method::CONNECT {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
    }
    if req.uri().path().starts_with(crate::ofrep::PREFIX) {
        return crate::ofrep::handle(routing, req).await;
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > routing.table.max_request_body) {
        return no_answer_for_user(UserFault::TooLarge);
    }
    // Read before the hop-by-hop fields (`Transfer-Encoding` among them) are taken out.
    let bodiless = bodiless(req.headers());
    let Decision { group_index, attempt, key, new_cookie, shadow } =
        match decide(shared, &routing, req.headers(), bodiless, received).await {
            Ok(decision) => decision,
            Err(answer) => return answer,
        };
    let group = &routing.groups[group_index];

    let (mut parts, body) = req.into_parts();
    // Upstreams are spoken to over pooled HTTP/1.1 whatever the client used, in origin form
    // (a request in absolute form names the router, not the replica).
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        if !parts.headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
    }
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    append_forwarded_for(&mut parts.headers, &conn.peer_ip);
    // The upstream sees the key the user was routed on, also when it came from the cookie or
    // was just assigned, so what it evaluates for the user (flags over OFREP) follows the
    // same rollout group.
    if !parts.headers.contains_key(&routing.sticky_header)
        && let Ok(v) = HeaderValue::from_str(&key)
    {
        parts.headers.insert(routing.sticky_header.clone(), v);
    }
    if let Some(i) = shadow {
        send_copy(shared, pool, &routing, i, &parts);
    }
    // A bodiless request can be sent again as it was; one with a body cannot, since the body
    // streams through and is gone once sent. A group of one replica has nowhere to send it
    // again, so no copy is kept.
    let spare = (group.replicas() > 1 && bodiless).then(|| Spare {
        idempotent: idempotent(parts.method.as_str()),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
    });
    let first = attempt.upstream.addr;
    let watch = (!bodiless).then(Arc::<Watch>::default);
    let body = match &watch {
        Some(w) => UserBody::watched(body, routing.table.max_request_body, w.clone()),
        None => UserBody::plain(body),
    };
    let request = Request::from_parts(parts, Either::Left(body));
    let mut result = forward(shared, pool, &routing, attempt, request, watch.as_deref()).await;
    if let Err(failure) = &result
        && let Some(spare) = spare
        && failure.may_retry(spare.idempotent)
        && let Some(second) = group.admit_other(Instant::now(), first)
    {
        group.series.retries.fetch_add(1, Relaxed);
        tracing::debug!(%first, second = %second.upstream.addr, group = %group.name, ?failure, "retrying on another replica");
        result = forward(shared, pool, &routing, second, spare.into_request(), None).await;
    }
    let now = Instant::now();
    let mut response = match result {
        Ok(response) => {
            record(&group.series, &group.latency, received, now, response.status().is_server_error());
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Either::Left(UserBody::plain(body)))
        }
        Err(failure) => no_answer(group, received, now, failure),
    };
    decorate(response.headers_mut(), group, new_cookie);
    response
}

/// The router's answer when the replica gave none: counted as an error of the group's
/// version, unless the user's side failed (then the connection ends with the answer).
pub(crate) fn no_answer(group: &GroupRt, received: Instant, now: Instant, failure: Failure) -> Response<ProxyBody> {
    let (status, why) = match failure {
        Failure::User(fault) => return no_answer_for_user(fault),
        Failure::TimedOut => (StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
        Failure::Unreachable | Failure::Died => (StatusCode::BAD_GATEWAY, "upstream unavailable\n"),
    };
    record(&group.series, &group.latency, received, now, true);
    plain(status, why)
}

/// The router's answer to a request whose user's side failed; the connection ends with it.
fn no_answer_for_user(fault: UserFault) -> Response<ProxyBody> {
    let (status, why) = fault.answer();
    let mut answer = plain(status, why);
    answer.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    answer
}

/// What a request that got no answer needs to be sent once more.
struct Spare {
    idempotent: bool,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Spare {
    fn into_request(self) -> Request<ProxyBody> {
        let mut request = Request::new(Either::Right(Full::new(Bytes::new())));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        request
    }
}

/// Why one replica gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing was sent: the connection could not be made.
    Unreachable,
    /// The request may have reached the replica, which closed or reset the connection before
    /// its answer's headers.
    Died,
    /// No answer within the upstream timeout: the budget is spent, so no second try.
    TimedOut,
    /// The user's side failed (`UserFault`): not the replica's doing, and nothing to try again.
    User(UserFault),
}

impl Failure {
    /// A request that never left can go anywhere; one that may have been processed is sent
    /// again only when doing it twice is harmless (RFC 9110 9.2.2).
    pub(crate) fn may_retry(self, idempotent: bool) -> bool {
        match self {
            Failure::Unreachable => true,
            Failure::Died => idempotent,
            Failure::TimedOut | Failure::User(_) => false,
        }
    }
}

pub(crate) fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// Sends `request` on `attempt`'s replica and tells its breaker how that went. `watch`: the
/// user's body, whose failures are the user's, not the replica's.
async fn forward(
    shared: &Shared,
    pool: &Pool,
    routing: &Routing,
    attempt: Attempt,
    request: Request<ProxyBody>,
    watch: Option<&Watch>,
) -> Result<Response<Incoming>, Failure> {
    let upstream = attempt.upstream.addr;
    let result = match tokio::time::timeout(shared.upstream_timeout, pool.send(upstream, request)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(watch.and_then(|w| w.fault(false)).map_or(error, SendError::User)),
        Err(_) => Err(watch.and_then(|w| w.fault(true)).map_or(SendError::TimedOut, SendError::User)),
    };
    settle(attempt, routing, result, |response| response.status())
}

/// Tells the attempt's replica's breaker how its exchange ended: an answer (`status` says
/// which), no connection, a connection that died before the answer, no answer in time, or a
/// failure of the user's side (which leaves the breaker as it was).
pub(crate) fn settle<T>(
    attempt: Attempt,
    routing: &Routing,
    ended: Result<T, SendError>,
    status: impl FnOnce(&T) -> StatusCode,
) -> Result<T, Failure> {
    let upstream = attempt.upstream.addr;
    let now = Instant::now();
    let config = &routing.table.breaker;
    match ended {
        Ok(answer) => {
            let outcome = if status(&answer).is_server_error() { Outcome::Failed } else { Outcome::Served };
            attempt.finish(outcome, now, config);
            Ok(answer)
        }
        Err(error @ SendError::Connect(_)) => {
            attempt.finish(Outcome::Unreachable, now, config);
            tracing::debug!(%upstream, %error, "upstream unreachable");
            Err(Failure::Unreachable)
        }
        Err(error @ SendError::Failed(_)) => {
            attempt.finish(Outcome::Failed, now, config);
            tracing::debug!(%upstream, %error, "upstream request failed");
            Err(Failure::Died)
        }
        // Dropping the attempt unfinished leaves the breaker as it was.
        Err(SendError::User(fault)) => {
            drop(attempt);
            tracing::debug!(%upstream, ?fault, "the user's side of the request failed");
            Err(Failure::User(fault))
        }
        Err(SendError::TimedOut) => {
            attempt.finish(Outcome::Failed, now, config);
            tracing::debug!(%upstream, "upstream timed out");
            Err(Failure::TimedOut)
        }
    }
}

/// No request body to copy (a copy is sent without one, so only such requests are copied).
fn bodiless(headers: &impl Headers) -> bool {
    headers.first("transfer-encoding").is_none() && headers.first("content-length").is_none_or(|v| v == b"0")
}

/// The most of a copy's answer read (so its connection can be reused); the rest is dropped.
pub(crate) const MAX_COPY_ANSWER: usize = 1 << 20;

/// Sends a copy of a request to a replica of the shadow group, in the background: its answer
/// is counted in that version's statistics and dropped; the user never waits on it.
pub(crate) fn send_copy(
    shared: &Shared,
    pool: &Arc<Pool>,
    routing: &Routing,
    group_index: usize,
    parts: &hyper::http::request::Parts,
) {
    use http_body_util::{BodyExt as _, Limited};
    let group = &routing.groups[group_index];
    let Some(upstream) = group.next_upstream() else { return };
    let mut copy: Request<ProxyBody> = Request::new(Either::Right(Full::new(Bytes::new())));
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = parts.uri.clone();
    *copy.headers_mut() = parts.headers.clone();
    let (series, latency) = (group.series.clone(), group.latency.clone());
    let (pool, timeout, addr) = (pool.clone(), shared.upstream_timeout, upstream.addr);
    tokio::spawn(async move {
        let sent = Instant::now();
        let failed = match tokio::time::timeout(timeout, pool.send(addr, copy)).await {
            Ok(Ok(response)) => {
                let failed = response.status().is_server_error();
                let read = Limited::new(response.into_body(), MAX_COPY_ANSWER).collect();
                failed || tokio::time::timeout(timeout, read).await.map_or(true, |r| r.is_err())
            }
            _ => true,
        };
        record(&series, &latency, sent, Instant::now(), failed);
    });
}

impl Shared {
    /// 503 counted under version "none" (of the workload, when one was chosen): there was
    /// nowhere to send the request.
    pub(crate) fn no_upstream(
        &self,
        received: Instant,
        why: &'static str,
        new_cookie: Option<HeaderValue>,
        routing: Option<&Routing>,
    ) -> Response<ProxyBody> {
        let (series, latency) = routing.map_or((&self.none_series, &self.none_latency), |r| (&r.none.0, &r.none.1));
        record(series, latency, received, Instant::now(), true);
        let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, why);
        let headers = response.headers_mut();
        let none = HeaderValue::from_static(NO_VERSION);
        headers.insert(GROUP.clone(), none.clone());
        headers.insert(VERSION.clone(), none);
        if let Some(cookie) = new_cookie {
            headers.append(header::SET_COOKIE, cookie);
        }
        response
    }
}

/// A user's key, hashed for the count of distinct users (SipHash with fixed keys: the same
/// user counts once across requests and connections).
pub(crate) fn user_hash(key: &str) -> u64 {
    use std::hash::BuildHasher;
    std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(key)
}

pub(crate) fn record(series: &Series, latency: &Latency, received: Instant, now: Instant, failed: bool) {
    series.requests.fetch_add(1, Relaxed);
    if failed {
        series.errors.fetch_add(1, Relaxed);
    }
    let us = u64::try_from(now.saturating_duration_since(received).as_micros()).unwrap_or(u64::MAX);
    latency.observe_us(us);
}

pub(crate) fn decorate(headers: &mut HeaderMap, group: &GroupRt, new_cookie: Option<HeaderValue>) {
    headers.insert(GROUP.clone(), group.name_header.clone());
    headers.insert(VERSION.clone(), group.version_header.clone());
    if let Some(cookie) = new_cookie {
        // Append: the upstream may set cookies of its own.
        headers.append(header::SET_COOKIE, cookie);
    }
}

/// The sticky header if present, else the sticky cookie. Non-UTF-8 bytes are kept (lossily)
/// rather than ignored, so such users still stay sticky.
fn user_key(headers: &impl Headers, routing: &Routing) -> Option<String> {
    if let Some(value) = headers.first(routing.sticky_header.as_str()) {
        let value = String::from_utf8_lossy(value);
        let value = value.trim();
        if !value.is_empty() {
            return Some(value.to_owned());
        }
    }
    cookie(headers, &routing.table.sticky_cookie)
}

fn cookie(headers: &impl Headers, name: &str) -> Option<String> {
    headers.each("cookie").flat_map(|value| value.split(|&b| b == b';')).find_map(|pair| {
        let pair = String::from_utf8_lossy(pair);
        let (n, v) = pair.split_once('=')?;
        let v = v.trim().trim_matches('"');
        (n.trim() == name && !v.is_empty()).then(|| v.to_owned())
    })
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        // Headers named in Connection are hop-by-hop too.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    // Most messages carry none of them: look before hashing nine names into the map.
    if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR.clone(), ip.clone());
        return;
    }
    let mut chain: Vec<&[u8]> = headers.get_all(&X_FORWARDED_FOR).iter().map(|v| v.as_bytes()).collect();
    chain.push(ip.as_bytes());
    let joined = chain.join(&b", "[..]);
    let value = HeaderValue::from_bytes(&joined).unwrap_or_else(|_| ip.clone());
    headers.insert(X_FORWARDED_FOR.clone(), value);
}

pub(crate) fn plain(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(body.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Displays an error with its sources, since hyper's top-level messages alone say little.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    #[test]
    fn cookie_parsing_is_forgiving() {
        let h = headers(&[("cookie", b"a=1; rf_user=u42 ; b=2"), ("cookie", b"rf_user=second")]);
        assert_eq!(cookie(&h, "rf_user").as_deref(), Some("u42"));
        let h = headers(&[("cookie", b"garbage;;=;rf_user=\"quoted\"")]);
        assert_eq!(cookie(&h, "rf_user").as_deref(), Some("quoted"));
        let h = headers(&[("cookie", b"rf_user=; x=1"), ("cookie", b"\xffjunk; rf_user=\xfe")]);
        assert_eq!(cookie(&h, "rf_user").as_deref(), Some("\u{fffd}"));
        assert_eq!(cookie(&headers(&[("cookie", b"rf_user=")]), "rf_user"), None);
        assert_eq!(cookie(&HeaderMap::new(), "rf_user"), None);
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = headers(&[
            ("connection", b"keep-alive, X-Secret"),
            ("keep-alive", b"timeout=5"),
            ("x-secret", b"1"),
            ("transfer-encoding", b"chunked"),
            ("upgrade", b"websocket"),
            ("host", b"example.com"),
            ("x-user-id", b"u1"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["host", "x-user-id"]);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let ip = ip_header("10.0.0.9:5000".parse().unwrap());
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &ip);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
        let mut h = headers(&[("x-forwarded-for", b"1.1.1.1"), ("x-forwarded-for", b"2.2.2.2")]);
        append_forwarded_for(&mut h, &ip);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.9");
    }
}
