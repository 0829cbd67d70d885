//! Kept-alive HTTP/1.1 connections to upstream replicas, one pool per runtime that serves users.
//!
//! Built on hyper's connection API rather than a general-purpose client: the router knows the
//! replica's address already (no URI to resolve, no pool keyed by scheme and host to hash); a
//! connection goes back to the pool as soon as its answer's headers are in (hyper refuses a
//! second request on it until the answer's body is through, so a checkout passes over it until
//! then), and no task is spawned per request to watch for that moment. Each worker thread owns
//! one pool, so its lock is never contended.
//!
//! Tried and measured against this: driving each connection from the task that uses it (no
//! task per connection, the answer's body handing the connection back at its end) cost the
//! same CPU per request, with more code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::proxy::{ErrorChain, ProxyBody};

/// Below the idle timeouts of common upstream servers (Node.js closes after 5 s), so the pool
/// rarely sends on a connection the upstream is closing, which would surface as a spurious 502
/// and count against the replica's breaker.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Kept connections per replica and pool; more are closed after their answer.
pub(crate) const MAX_IDLE_PER_UPSTREAM: usize = 512;

/// Connects fail fast on their own; the request's overall budget is the upstream timeout.
pub(crate) const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request got no answer from the replica.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made: nothing was sent.
    Connect(std::io::Error),
    /// The request may have reached the replica, which gave no answer.
    Failed(Box<dyn std::error::Error + Send + Sync>),
    /// The replica took no more of the request, or gave no answer, within the upstream
    /// timeout.
    TimedOut,
    /// The user's side failed, not the replica: see [`UserFault`].
    User(UserFault),
}

/// How a user's request went wrong on the user's side while it was being sent to a replica.
/// Nothing the replica did: its breaker and its version's statistics are left alone, or any
/// user could make a healthy release look failing (and have it rolled back) by cutting
/// uploads short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserFault {
    /// The user closed the connection (or it failed) before the whole body was in.
    Gone,
    /// The user sent nothing of the body for the upstream timeout.
    Stalled,
    /// The body is longer than the workload's `max_request_body`.
    TooLarge,
}

impl UserFault {
    /// The router's answer (the user may no longer be there to read it).
    pub(crate) fn answer(self) -> (hyper::StatusCode, &'static str) {
        match self {
            UserFault::Gone => (hyper::StatusCode::BAD_REQUEST, "the request's body ended early\n"),
            UserFault::Stalled => (hyper::StatusCode::REQUEST_TIMEOUT, "the request's body stopped arriving\n"),
            UserFault::TooLarge => (hyper::StatusCode::PAYLOAD_TOO_LARGE, "the request's body is too large\n"),
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(error) => write!(f, "cannot connect: {error}"),
            SendError::Failed(error) => write!(f, "{}", ErrorChain(&**error)),
            SendError::TimedOut => f.write_str("no answer within the upstream timeout"),
            SendError::User(fault) => write!(f, "the user's side failed: {fault:?}"),
        }
    }
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    connect_timeout: Duration,
}

impl Pool {
    /// A pool whose connections are driven by tasks on the current runtime, which also closes
    /// its idle connections in the background.
    pub(crate) fn new(upstream_timeout: Duration) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            idle: Mutex::new(HashMap::new()),
            connect_timeout: upstream_timeout.min(MAX_CONNECT_TIMEOUT),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_every(Arc::downgrade(&pool), IDLE_TIMEOUT));
        }
        pool
    }

    /// Sends `request` (origin-form URI) to the replica at `addr` on a kept connection, or a
    /// new one when none is free. A request without `Host` (HTTP/1.0) gets the replica's.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, SendError> {
        if !request.headers().contains_key(hyper::header::HOST)
            && let Ok(host) = hyper::header::HeaderValue::from_str(&addr.to_string())
        {
            request.headers_mut().insert(hyper::header::HOST, host);
        }
        loop {
            let (mut sender, reused) = match self.checkout(addr) {
                Some(sender) => (sender, true),
                None => (self.connect(addr).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.checkin(addr, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    // The kept connection was closed before the request left (the replica
                    // closed it while idle): the request is intact, so it goes on another.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Failed(error.into_error().into())),
                },
            }
        }
    }

    /// The most recently used free connection to `addr`. Closed and expired ones are dropped
    /// on the way; busy ones (their answer's body still streaming) stay.
    fn checkout(&self, addr: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept = idle.get_mut(&addr)?;
        let mut i = kept.len();
        while i > 0 {
            i -= 1;
            let entry = &kept[i];
            if entry.sender.is_closed() || now.saturating_duration_since(entry.since) > IDLE_TIMEOUT {
                kept.remove(i);
            } else if entry.sender.is_ready() {
                return Some(kept.remove(i).sender);
            }
        }
        None
    }

    fn checkin(&self, addr: SocketAddr, sender: SendRequest<ProxyBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept = idle.entry(addr).or_default();
        if kept.len() < MAX_IDLE_PER_UPSTREAM {
            kept.push(Idle { sender, since: Instant::now() });
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<ProxyBody>, SendError> {
        let stream = connect(addr, self.connect_timeout).await?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|e| SendError::Failed(e.into()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(upstream = %addr, error = %ErrorChain(&error), "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// Drops closed connections and closes those idle too long.
    fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.retain(|_, kept| {
            kept.retain(|e| !e.sender.is_closed() && now.saturating_duration_since(e.since) <= IDLE_TIMEOUT);
            !kept.is_empty()
        });
    }

    #[cfg(test)]
    fn kept(&self, addr: SocketAddr) -> usize {
        self.idle.lock().unwrap().get(&addr).map_or(0, Vec::len)
    }
}

/// A new connection to the replica at `addr`, with Nagle's delay off (the router writes whole
/// heads and bodies; waiting to coalesce them only adds latency).
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, SendError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(SendError::Connect(error)),
        Err(_elapsed) => {
            let why = format!("no answer to the connection within {timeout:?}");
            return Err(SendError::Connect(std::io::Error::new(std::io::ErrorKind::TimedOut, why)));
        }
    };
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "set_nodelay failed");
    }
    Ok(stream)
}

async fn sweep_every(pool: Weak<Pool>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Either, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;

    fn get(path: &str) -> Request<ProxyBody> {
        Request::get(path).header("host", "upstream").body(Either::Right(Full::new(Bytes::new()))).unwrap()
    }

    /// A replica that answers every request on a connection with its count of connections,
    /// and closes each connection after `per_connection` answers. With `release`, each
    /// answer's last byte waits for a permit.
    async fn replica(per_connection: usize, release: Option<Arc<Semaphore>>) -> (SocketAddr, Arc<AtomicUsize>) {
        replica_with(per_connection, release, false).await
    }

    /// `replica`, answering 204 without a body when `no_content`.
    async fn replica_with(
        per_connection: usize,
        release: Option<Arc<Semaphore>>,
        no_content: bool,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let release = release.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..per_connection {
                        let mut read = 0;
                        while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf[read..]).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => read += k,
                            }
                        }
                        if no_content {
                            if stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let body = n.to_string();
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}.", body.len() + 1);
                        let (head, last) = answer.as_bytes().split_at(answer.len() - 1);
                        if stream.write_all(head).await.is_err() {
                            return;
                        }
                        if let Some(release) = &release {
                            release.acquire().await.unwrap().forget();
                        }
                        if stream.write_all(last).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn body(response: Response<Incoming>) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_kept_and_used_again_once_its_answer_is_read() {
        let (addr, accepted) = replica(usize::MAX, None).await;
        let pool = Pool::new(Duration::from_secs(5));
        for _ in 0..5 {
            let response = pool.send(addr, get("/")).await.unwrap();
            assert_eq!(body(response).await, "1.");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.kept(addr), 1);
    }

    #[tokio::test]
    async fn a_busy_connection_is_passed_over() {
        let release = Arc::new(Semaphore::new(0));
        let (addr, accepted) = replica(usize::MAX, Some(release.clone())).await;
        let pool = Pool::new(Duration::from_secs(5));
        // The first answer's body is not all there: its connection cannot take a second request.
        let first = pool.send(addr, get("/")).await.unwrap();
        let second = pool.send(addr, get("/")).await.unwrap();
        release.add_permits(2);
        assert_eq!(body(second).await, "2.");
        assert_eq!(body(first).await, "1.");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_on_a_connection_the_replica_closed_goes_on_a_new_one() {
        let (addr, accepted) = replica(1, None).await;
        let pool = Pool::new(Duration::from_secs(5));
        assert_eq!(body(pool.send(addr, get("/")).await.unwrap()).await, "1.");
        // Let the replica's close reach the kept connection, or not: either way the next
        // request is answered, on a new connection.
        tokio::task::yield_now().await;
        assert_eq!(body(pool.send(addr, get("/")).await.unwrap()).await, "2.");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_whose_answer_has_no_body_is_used_again() {
        let (addr, accepted) = replica_with(usize::MAX, None, true).await;
        let pool = Pool::new(Duration::from_secs(5));
        for _ in 0..3 {
            let response = pool.send(addr, get("/")).await.unwrap();
            assert_eq!(response.status(), 204);
            drop(response);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_dropped_before_its_end_closes_its_connection() {
        let release = Arc::new(Semaphore::new(0));
        let (addr, accepted) = replica(usize::MAX, Some(release.clone())).await;
        let pool = Pool::new(Duration::from_secs(5));
        drop(pool.send(addr, get("/")).await.unwrap());
        // One for the dropped answer's replica, still waiting to send its last byte.
        release.add_permits(2);
        assert_eq!(body(pool.send(addr, get("/")).await.unwrap()).await, "2.");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_without_a_host_gets_the_replicas() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                read += stream.read(&mut buf[read..]).await.unwrap();
            }
            let head = String::from_utf8_lossy(&buf[..read]).to_lowercase();
            let host = head.lines().find_map(|l| l.strip_prefix("host: ")).unwrap_or("none").to_owned();
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{host}", host.len());
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        let pool = Pool::new(Duration::from_secs(5));
        let request = Request::get("/").body(Either::Right(Full::new(Bytes::new()))).unwrap();
        assert_eq!(body(pool.send(addr, request).await.unwrap()).await, addr.to_string());
    }

    #[tokio::test]
    async fn no_listener_is_a_connect_error() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let pool = Pool::new(Duration::from_secs(5));
        assert!(matches!(pool.send(addr, get("/")).await, Err(SendError::Connect(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (addr, _) = replica(usize::MAX, None).await;
        let pool = Pool::new(Duration::from_secs(5));
        body(pool.send(addr, get("/")).await.unwrap()).await;
        assert_eq!(pool.kept(addr), 1);
        tokio::time::sleep(IDLE_TIMEOUT * 2 + Duration::from_millis(10)).await;
        assert_eq!(pool.kept(addr), 0);
    }
}
