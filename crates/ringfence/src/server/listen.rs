//! The API's accept loop, hardened: idle and slow connections cannot use up the server's file
//! descriptors, so the controller, the store and the routers always have theirs, and an
//! operator can always reach the API to abort or roll back.
//!
//! - A request head must arrive whole within [`Limits::header_read_timeout`] of its first
//!   byte, and the first request of a connection within that time of the connection (a
//!   slowloris sender, or a client that connects and says nothing, is dropped); between
//!   requests, a kept-alive connection on which nothing arrives for [`Limits::idle_timeout`]
//!   is closed; a request body must arrive whole within [`Limits::body_read_timeout`] of its
//!   head (the handler's read fails and the request is answered 400).
//! - At most [`Limits::max_connections`] connections are open, and at most
//!   [`Limits::max_connections_per_ip`] from one address. At a cap, a new connection takes
//!   the place of an idle one (no request in progress: the oldest of that address at the
//!   address cap, the oldest of the address holding the most at the total cap), which is
//!   closed; only when every connection in the way has a request in progress is the new one
//!   refused: answered 429 (address cap) or 503 (total cap) and closed. So a client that opens
//!   connections and sends nothing cannot lock anyone out, not even a person on the same
//!   host, and a request that is being served is never cut off for a newcomer.
//! - On shutdown the listener closes, idle connections close, requests in progress finish
//!   for up to [`Limits::shutdown_grace`], then whatever is left is closed.
//!
//! Connections refused or closed by these limits are counted and logged at debug level, at
//! most one line per [`REPORT_EVERY`], never a line per connection.
//!
//! The clocks are this module's, not hyper's `header_read_timeout`: hyper's clock also runs
//! while a kept-alive connection waits for its next request, so it cannot tell a slow head
//! from an idle connection.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What one client and all clients together may hold of the API server. The defaults are
/// documented in docs/api.md ("Limits and timeouts"); keep both in step.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request head (request line and headers) must arrive whole within this time of its
    /// first byte, and the first one of a connection within this time of the connection, or
    /// the connection is closed without an answer. Default 10 s.
    pub header_read_timeout: Duration,
    /// A kept-alive connection on which no request is in progress and no byte of a new one
    /// arrives for this long after an answer is closed. Default 60 s: longer than the CLI's own 30 s for an idle pooled
    /// connection, so the client always closes first and never sends a request on a
    /// connection the server is closing.
    pub idle_timeout: Duration,
    /// A request body must arrive whole within this time of its head; a handler that reads it
    /// later gets an error and the request is answered 400. Default 30 s (the largest body,
    /// 2 MiB, at about 70 KB/s).
    pub body_read_timeout: Duration,
    /// Connections open at once, from all clients. Default 512: half the usual 1,024 file
    /// descriptors, so the store, the controller loops, the replicas' pipes and the routers'
    /// sockets always have theirs.
    pub max_connections: usize,
    /// Connections open at once from one client address. Default 64.
    pub max_connections_per_ip: usize,
    /// On shutdown, how long requests in progress may take to finish before their
    /// connections are closed. Default 10 s.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_connections_per_ip: 64,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// At most one debug line per this interval about connections refused or closed by the limits.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// How long a connection evicted for a newcomer may take to finish writing an answer it is
/// sending before it is closed anyway.
const EVICTION_LINGER: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` within `limits` until `shutdown` is cancelled, then stops
/// accepting, lets requests in progress finish for up to [`Limits::shutdown_grace`], and
/// returns once every connection is closed.
/// `tls`: serve HTTPS with this configuration (see `server::tls`); plain HTTP without.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let ctx = Arc::new(Ctx {
        tls: tls.map(tokio_rustls::TlsAcceptor::from),
        registry: Registry::default(),
        tally: Tally::default(),
        shutdown: shutdown.clone(),
        hard_stop: CancellationToken::new(),
        limits,
    });
    let tracker = TaskTracker::new();
    let mut accept_failures = RateLimited::default();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // The client gave up before we took the connection: nothing to do.
                Err(e) if is_connection_error(&e) => continue,
                Err(error) => {
                    // Usually out of file descriptors: back off rather than spin.
                    if let Some(failures) = accept_failures.due() {
                        tracing::warn!(%error, failures, "the API server cannot accept connections");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ip = peer.ip().to_canonical();
        match ctx.registry.admit(ip, &ctx.limits, &ctx.tally) {
            Ok(admitted) => {
                tracker.spawn(connection(stream, peer, app.clone(), admitted, ctx.clone()));
            }
            Err(refusal) => refuse(stream, refusal, &ctx),
        }
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(ctx.limits.shutdown_grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            connections = ctx.registry.open(),
            "requests still in progress {:?} after shutdown began; closing their connections",
            ctx.limits.shutdown_grace
        );
        ctx.hard_stop.cancel();
        tracker.wait().await;
    }
    ctx.tally.report(true);
    Ok(())
}

/// What every connection task shares.
struct Ctx {
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    registry: Registry,
    tally: Tally,
    /// Graceful: idle connections close, requests in progress finish.
    shutdown: CancellationToken,
    /// Every connection closes now.
    hard_stop: CancellationToken,
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

// ---------------------------------------------------------------------------------------------
// Admission: the caps, and which idle connection makes room.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The address holds its cap of connections, every one with a request in progress.
    PerIp,
    /// The server holds its cap of connections, every one with a request in progress (or,
    /// under a flood, too many evicted ones have not closed yet).
    Total,
}

#[derive(Default)]
struct Registry {
    state: Mutex<RegistryState>,
}

#[derive(Default)]
struct RegistryState {
    next_id: u64,
    /// Every connection whose task runs, by age (ids grow).
    conns: BTreeMap<u64, Entry>,
    /// Connections not being evicted: what the caps count.
    live: usize,
    live_per_ip: HashMap<IpAddr, usize>,
}

struct Entry {
    ip: IpAddr,
    activity: Arc<Activity>,
    evict: CancellationToken,
    evicting: bool,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, RegistryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> usize {
        self.lock().conns.len()
    }

    fn admit(&self, ip: IpAddr, limits: &Limits, tally: &Tally) -> Result<Admitted, Refusal> {
        let max_total = limits.max_connections.max(1);
        let max_per_ip = limits.max_connections_per_ip.max(1);
        let mut st = self.lock();
        // Evicted connections close within EVICTION_LINGER; past this many open at once (a
        // flood of newcomers), refuse rather than hold more descriptors.
        if st.conns.len() >= max_total + max_total / 4 {
            return Err(Refusal::Total);
        }
        let evicted = if st.live_per_ip.get(&ip).copied().unwrap_or(0) >= max_per_ip {
            if !st.evict_one(|e| e.ip == ip, false) {
                return Err(Refusal::PerIp);
            }
            true
        } else if st.live >= max_total {
            if !st.evict_one(|_| true, true) {
                return Err(Refusal::Total);
            }
            true
        } else {
            false
        };
        let id = st.next_id;
        st.next_id += 1;
        let activity = Arc::new(Activity::new());
        let evict = CancellationToken::new();
        st.conns.insert(id, Entry { ip, activity: activity.clone(), evict: evict.clone(), evicting: false });
        st.live += 1;
        *st.live_per_ip.entry(ip).or_default() += 1;
        drop(st);
        if evicted {
            tally.add(&tally.evicted);
        }
        Ok(Admitted { id, activity, evict })
    }

    fn release(&self, id: u64) {
        let mut st = self.lock();
        if let Some(e) = st.conns.remove(&id)
            && !e.evicting
        {
            st.forget_live(e.ip);
        }
    }
}

impl RegistryState {
    fn forget_live(&mut self, ip: IpAddr) {
        self.live -= 1;
        if let Some(n) = self.live_per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.live_per_ip.remove(&ip);
            }
        }
    }

    /// Evicts the oldest idle connection among those `eligible` (with `biggest_first`, of the
    /// address that holds the most connections); false when every one has a request in
    /// progress.
    fn evict_one(&mut self, eligible: impl Fn(&Entry) -> bool, biggest_first: bool) -> bool {
        let mut best: Option<(usize, u64)> = None;
        for (id, e) in &self.conns {
            if e.evicting || !eligible(e) || !e.activity.is_idle() {
                continue;
            }
            let weight = if biggest_first { self.live_per_ip.get(&e.ip).copied().unwrap_or(0) } else { 0 };
            // Ids ascend: the first one of the highest weight is the oldest of it.
            if best.is_none_or(|(w, _)| weight > w) {
                best = Some((weight, *id));
            }
        }
        let Some((_, id)) = best else { return false };
        let Some(e) = self.conns.get_mut(&id) else { return false };
        e.evicting = true;
        e.evict.cancel();
        let ip = e.ip;
        self.forget_live(ip);
        true
    }
}

/// What [`Registry::admit`] gives a connection; it gives it back with [`Registry::release`]
/// when its task ends (see [`Release`]).
struct Admitted {
    id: u64,
    activity: Arc<Activity>,
    evict: CancellationToken,
}

/// Gives a connection's place back however its task ends (even by a panic in a handler).
struct Release {
    ctx: Arc<Ctx>,
    id: u64,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.ctx.registry.release(self.id);
    }
}

/// Answers a connection the caps leave no room for, if its socket takes the bytes at once,
/// and closes it. The answer is not in the API's JSON error shape: no request was read.
fn refuse(stream: TcpStream, refusal: Refusal, ctx: &Ctx) {
    let (status, message, counter) = match refusal {
        Refusal::PerIp => (
            "429 Too Many Requests",
            format!(
                "too many connections from this address (at most {}, none of them idle); retry shortly\n",
                ctx.limits.max_connections_per_ip
            ),
            &ctx.tally.refused_per_ip,
        ),
        Refusal::Total => (
            "503 Service Unavailable",
            format!(
                "the server holds its maximum of {} connections, none of them idle; retry shortly\n",
                ctx.limits.max_connections
            ),
            &ctx.tally.refused_total,
        ),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{message}",
        message.len()
    );
    // Best effort: never wait on a client the server has no room for.
    let _ = stream.try_write(answer.as_bytes());
    drop(stream);
    ctx.tally.add(counter);
}

// ---------------------------------------------------------------------------------------------
// One connection: its clocks, its requests in progress, and how it ends.

/// What the clocks of one connection read: requests in progress, and since when it is idle or
/// receiving a head. Written by the socket (bytes read), the service (a request begins) and
/// the answer's body (a request ends); read by the connection's task and the registry.
struct Activity {
    state: Mutex<ActivityState>,
    /// Wakes the connection's task when a clock starts.
    changed: Notify,
}

struct ActivityState {
    in_flight: usize,
    /// When the last request ended (or the connection was accepted).
    idle_since: Instant,
    /// When the head clock started: the first byte of a head with no request in progress,
    /// or, for the first request, the connection.
    head_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
enum Expiry {
    Header,
    Idle,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new({
                let now = Instant::now();
                ActivityState { in_flight: 0, idle_since: now, head_since: Some(now) }
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bytes_read(&self) {
        let mut st = self.lock();
        if st.in_flight == 0 && st.head_since.is_none() {
            st.head_since = Some(Instant::now());
            drop(st);
            self.changed.notify_one();
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut st = self.lock();
        st.in_flight += 1;
        st.head_since = None;
        InFlight(self.clone())
    }

    fn end(&self) {
        let mut st = self.lock();
        st.in_flight -= 1;
        if st.in_flight == 0 {
            st.idle_since = Instant::now();
            st.head_since = None;
            drop(st);
            self.changed.notify_one();
        }
    }

    fn is_idle(&self) -> bool {
        self.lock().in_flight == 0
    }

    /// Idle, waiting for a head (the first, or one of which a part arrived): nothing is owed
    /// to the client.
    fn head_pending(&self) -> bool {
        let st = self.lock();
        st.in_flight == 0 && st.head_since.is_some()
    }

    /// When the connection is to be closed if nothing changes; none while a request is in
    /// progress (the body has its own clock, and a handler is bounded by its own timeouts).
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Expiry)> {
        let st = self.lock();
        if st.in_flight > 0 {
            return None;
        }
        let idle = (st.idle_since + limits.idle_timeout, Expiry::Idle);
        Some(match st.head_since {
            Some(h) if h + limits.header_read_timeout < idle.0 => (h + limits.header_read_timeout, Expiry::Header),
            _ => idle,
        })
    }
}

/// A request in progress, from its head until hyper drops the answer's body (written).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, app: Router, admitted: Admitted, ctx: Arc<Ctx>) {
    let _release = Release { ctx: ctx.clone(), id: admitted.id };
    let Admitted { activity, evict, .. } = admitted;
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "set_nodelay failed");
    }
    let stream: Box<dyn Io> = match &ctx.tls {
        None => Box::new(stream),
        // The handshake is on the header clock: a client that starts one and stalls is gone
        // as surely as one that sends half a head.
        Some(acceptor) => match tokio::time::timeout(ctx.limits.header_read_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                ctx.tally.add(&ctx.tally.header_timeouts);
                return;
            }
        },
    };
    let io = TokioIo::new(Watched { stream, activity: activity.clone() });
    let service =
        ConnService { app: TowerToHyperService::new(app), activity: activity.clone(), peer, ctx: ctx.clone() };
    let mut builder = http1::Builder::new();
    // This module's clocks replace hyper's (see the module's documentation).
    builder.header_read_timeout(None);
    let mut conn = pin!(builder.serve_connection(io, service));
    // Once draining (evicted or shutting down): a bound past which the connection is closed.
    let mut drain_until: Option<Option<Instant>> = None;
    loop {
        let deadline = activity.deadline(&ctx.limits);
        tokio::select! {
            biased;
            () = ctx.hard_stop.cancelled() => return,
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "API connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = sleep_until(deadline.map(|(at, _)| at)) => {
                if let Some((at, why)) = activity.deadline(&ctx.limits)
                    && at <= Instant::now()
                {
                    ctx.tally.add(match why {
                        Expiry::Header => &ctx.tally.header_timeouts,
                        Expiry::Idle => &ctx.tally.idle_timeouts,
                    });
                    return;
                }
            }
            () = sleep_until(drain_until.flatten()) => return,
            () = evict.cancelled(), if drain_until.is_none() => {
                if activity.head_pending() {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                drain_until = Some(Some(Instant::now() + EVICTION_LINGER));
            }
            () = ctx.shutdown.cancelled(), if drain_until.is_none() => {
                if activity.head_pending() {
                    return;
                }
                // Idle: hyper closes at once. A request in progress finishes; `serve` bounds it.
                conn.as_mut().graceful_shutdown();
                drain_until = Some(None);
            }
        }
    }
}

/// The socket, telling the connection's clocks when bytes arrive.
struct Watched {
    /// The socket, or the TLS session over it.
    stream: Box<dyn Io>,
    activity: Arc<Activity>,
}

/// A connection's byte stream: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The router, with each request's body on its clock and its answer counted in progress
/// until written.
#[derive(Clone)]
struct ConnService {
    app: TowerToHyperService<Router>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Answer>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Answer>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let limit = self.ctx.limits.body_read_timeout;
        let ctx = self.ctx.clone();
        let mut req = req.map(|body| {
            axum::body::Body::new(TimedBody {
                inner: body,
                deadline: Instant::now() + limit,
                limit,
                sleep: None,
                ctx,
                done: false,
            })
        });
        // What axum's own `serve` would give with connect info; handlers may ask for it.
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let answer = hyper::service::Service::call(&self.app, req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Answer { body, _in_flight: in_flight }))
        })
    }
}

/// The answer's body; the request stays in progress until hyper drops it.
struct Answer {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails once its deadline passes before it has arrived whole.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    /// Made on the first wait only: most bodies are empty or already here.
    sleep: Option<Pin<Box<Sleep>>>,
    ctx: Arc<Ctx>,
    done: bool,
}

#[derive(Debug)]
struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive whole within {} s of its headers", self.0.as_secs_f64())
    }
}

impl std::error::Error for BodyTimeout {}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(BoxError::from)));
        }
        let deadline = this.deadline;
        let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.done = true;
                this.ctx.tally.add(&this.ctx.tally.body_timeouts);
                Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ---------------------------------------------------------------------------------------------
// Logging: counts, at most one line per REPORT_EVERY.

/// Connections refused or closed by the limits since the last report.
#[derive(Default)]
struct Tally {
    refused_per_ip: AtomicU64,
    refused_total: AtomicU64,
    evicted: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    last_report: Mutex<Option<std::time::Instant>>,
}

impl Tally {
    fn add(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.report(false);
    }

    /// Logs the counts and starts them over, if the last report is old enough (or `now`).
    fn report(&self, now: bool) {
        let mut last = self.last_report.lock().unwrap_or_else(PoisonError::into_inner);
        if !now && last.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            return;
        }
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let counts = [
            take(&self.refused_per_ip),
            take(&self.refused_total),
            take(&self.evicted),
            take(&self.header_timeouts),
            take(&self.idle_timeouts),
            take(&self.body_timeouts),
        ];
        if counts.iter().all(|c| *c == 0) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let [refused_per_ip, refused_total, evicted, header_timeouts, idle_timeouts, body_timeouts] = counts;
        tracing::debug!(
            refused_per_ip,
            refused_total,
            evicted,
            header_timeouts,
            idle_timeouts,
            body_timeouts,
            "API connections refused or closed by the server's limits since the last report"
        );
    }
}

/// A warning that repeats at most once per [`REPORT_EVERY`], with how many times it was due.
#[derive(Default)]
struct RateLimited {
    last: Option<std::time::Instant>,
    count: u64,
}

impl RateLimited {
    fn due(&mut self) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

#[cfg(test)]
mod tests {
    //! The limits on a tiny router with short clocks, on loopback. Lower bounds on time are
    //! exact (a clock never fires early); upper bounds are loose, for a loaded machine.

    use std::net::Ipv4Addr;

    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;
    use tokio::task::JoinHandle;

    use super::*;

    const LOOSE: Duration = Duration::from_secs(3);

    fn quick() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(900),
            body_read_timeout: Duration::from_millis(400),
            max_connections: 4,
            max_connections_per_ip: 2,
            shutdown_grace: Duration::from_secs(5),
        }
    }

    /// Clocks long enough not to interfere with tests of the caps.
    fn patient() -> Limits {
        Limits { header_read_timeout: Duration::from_secs(5), idle_timeout: Duration::from_secs(10), ..quick() }
    }

    struct TestServer {
        addr: SocketAddr,
        stop: CancellationToken,
        task: Option<JoinHandle<io::Result<()>>>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.stop.cancel();
            if let Some(task) = self.task.take() {
                task.abort();
            }
        }
    }

    async fn start(limits: Limits) -> TestServer {
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    "slow"
                }),
            )
            .route("/echo", post(|body: Bytes| async move { body }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, limits, None, stop.clone()));
        TestServer { addr, stop, task: Some(task) }
    }

    /// A connection from a loopback address of its own (127.0.0.`last`).
    async fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0))).expect("bind a loopback source");
        socket.connect(to).await.expect("connect")
    }

    /// Everything the server sends until it closes the connection, or `None` if it is still
    /// open after `within`.
    async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let read_all = async {
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(within, read_all).await.ok().map(|()| got)
    }

    /// One answer on a kept-alive connection: its status line and body.
    async fn answer(stream: &mut TcpStream) -> (String, String) {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let read = async {
            loop {
                let n = stream.read(&mut buf).await.expect("read an answer");
                assert!(n > 0, "closed before a whole answer: {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        return (head.lines().next().unwrap_or_default().to_string(), body.to_string());
                    }
                }
            }
        };
        tokio::time::timeout(LOOSE, read).await.expect("an answer in time")
    }

    async fn get_on(stream: &mut TcpStream, path: &str) -> (String, String) {
        stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes()).await.expect("write");
        answer(stream).await
    }

    async fn is_open(stream: &mut TcpStream) -> bool {
        until_closed(stream, Duration::from_millis(50)).await.is_none()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partial_head_is_dropped_at_the_header_timeout() {
        let server = start(quick()).await;
        let mut c = connect_from(1, server.addr).await;
        c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nx-slow: a").await.expect("write");
        let sent = Instant::now();
        let got = until_closed(&mut c, LOOSE).await.expect("closed by the header timeout");
        assert!(sent.elapsed() >= Duration::from_millis(290), "closed after {:?}", sent.elapsed());
        assert!(got.is_empty(), "no answer to a head that never ended: {:?}", String::from_utf8_lossy(&got));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_that_says_nothing_is_dropped_at_the_header_timeout() {
        let server = start(quick()).await;
        let mut silent = connect_from(1, server.addr).await;
        let connected = Instant::now();
        let got = until_closed(&mut silent, LOOSE).await.expect("closed by the header timeout");
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
        let after = connected.elapsed();
        assert!(after >= Duration::from_millis(290), "closed after {after:?}");
        assert!(after < Duration::from_millis(850), "closed after {after:?}: the idle clock, not the header clock");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_kept_alive_connection_lives_until_the_idle_timeout_only() {
        let server = start(quick()).await;
        let mut kept = connect_from(1, server.addr).await;
        assert_eq!(get_on(&mut kept, "/").await.0, "HTTP/1.1 200 OK");
        // Past the header timeout, and it serves again: the idle clock starts over.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(get_on(&mut kept, "/").await.0, "HTTP/1.1 200 OK");
        let answered_again = Instant::now();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(is_open(&mut kept).await, "closed before the idle timeout (past the header timeout)");
        assert!(until_closed(&mut kept, LOOSE).await.is_some(), "a kept-alive idle connection stays open");
        assert!(answered_again.elapsed() >= Duration::from_millis(890), "closed after {:?}", answered_again.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_slower_than_the_body_timeout_is_answered_400_and_closed() {
        let server = start(quick()).await;
        let mut c = connect_from(1, server.addr).await;
        c.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc").await.expect("write");
        let sent = Instant::now();
        let got = until_closed(&mut c, LOOSE).await.expect("answered and closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("did not arrive whole within 0.4 s"), "{text}");
        assert!(sent.elapsed() >= Duration::from_millis(390), "answered after {:?}", sent.elapsed());
        // A body in time is served.
        let mut d = connect_from(1, server.addr).await;
        d.write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc").await.expect("write");
        assert_eq!(answer(&mut d).await, ("HTTP/1.1 200 OK".to_string(), "abc".to_string()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newcomer_takes_the_place_of_the_oldest_idle_connection_of_its_address() {
        let server = start(patient()).await;
        let mut a = connect_from(1, server.addr).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut b = connect_from(1, server.addr).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut c = connect_from(1, server.addr).await;
        assert_eq!(get_on(&mut c, "/").await.0, "HTTP/1.1 200 OK");
        assert!(until_closed(&mut a, LOOSE).await.is_some(), "the oldest idle connection was kept");
        assert!(is_open(&mut b).await, "a younger idle connection was closed");
        assert_eq!(get_on(&mut b, "/").await.0, "HTTP/1.1 200 OK");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_in_progress_are_never_cut_off_for_a_newcomer() {
        let server = start(patient()).await;
        let mut a = connect_from(1, server.addr).await;
        let mut b = connect_from(1, server.addr).await;
        for s in [&mut a, &mut b] {
            s.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n").await.expect("write");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut c = connect_from(1, server.addr).await;
        let got = until_closed(&mut c, LOOSE).await.expect("refused at once");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests"), "{text}");
        // Another address is within both caps.
        let mut d = connect_from(2, server.addr).await;
        assert_eq!(get_on(&mut d, "/").await.0, "HTTP/1.1 200 OK");
        assert_eq!(answer(&mut a).await.1, "slow");
        assert_eq!(answer(&mut b).await.1, "slow");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_total_cap_the_address_holding_most_gives_way() {
        let server = start(Limits { max_connections_per_ip: 3, ..patient() }).await;
        let mut small = connect_from(3, server.addr).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut big = Vec::new();
        for _ in 0..3 {
            big.push(connect_from(2, server.addr).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut newcomer = connect_from(4, server.addr).await;
        assert_eq!(get_on(&mut newcomer, "/").await.0, "HTTP/1.1 200 OK");
        assert!(until_closed(&mut big[0], LOOSE).await.is_some(), "the oldest of the biggest address was kept");
        assert!(is_open(&mut small).await, "the smaller address gave way (it holds the oldest connection)");
        assert!(is_open(&mut big[1]).await && is_open(&mut big[2]).await, "more than one gave way");
        // Full of requests in progress: a newcomer is refused 503.
        let mut busy = vec![small, newcomer, big.pop().expect("one"), big.pop().expect("two")];
        for s in &mut busy {
            s.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n").await.expect("write");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut refused = connect_from(5, server.addr).await;
        let got = until_closed(&mut refused, LOOSE).await.expect("refused at once");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable"), "{text}");
        for s in &mut busy {
            assert_eq!(answer(s).await.1, "slow");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_idle_connections_and_lets_requests_finish() {
        let mut server = start(patient()).await;
        let mut idle = connect_from(1, server.addr).await;
        let mut partial = connect_from(2, server.addr).await;
        partial.write_all(b"GET / HTTP/1.1\r\nhost").await.expect("write");
        let mut busy = connect_from(3, server.addr).await;
        busy.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n").await.expect("write");
        tokio::time::sleep(Duration::from_millis(150)).await;
        server.stop.cancel();
        let stopped = Instant::now();
        assert!(until_closed(&mut idle, Duration::from_millis(250)).await.is_some(), "an idle connection stayed");
        assert!(until_closed(&mut partial, Duration::from_millis(250)).await.is_some(), "a partial head stayed");
        let got = until_closed(&mut busy, LOOSE).await.expect("closed after its answer");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK") && text.ends_with("slow"), "{text}");
        let task = server.task.take().expect("running");
        tokio::time::timeout(LOOSE, task).await.expect("serve returns").expect("no panic").expect("no error");
        assert!(stopped.elapsed() < LOOSE);
        assert!(TcpStream::connect(server.addr).await.is_err(), "still accepting after shutdown");
    }
}
