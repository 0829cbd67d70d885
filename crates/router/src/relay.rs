//! The data plane's own HTTP/1.1 path: a user's request parsed in place, its head written
//! again for a kept connection to the replica, the answer's head rewritten for the user and
//! its body copied through, all on the task that serves the user's connection.
//!
//! Why: hyper's general dispatch (a service future per request, header maps, the upstream
//! connection's own task and the channel to it) took most of the router's user-space CPU per
//! request, and a proxy's throughput is its CPU per request (profile in
//! bench/results/router.txt). The relay serves the common shape and nothing else:
//!
//! - HTTP/1.1 requests in origin form with a `Host`, with no body or a body framed by exactly
//!   one `Content-Length` of digits;
//! - no `Transfer-Encoding`, `Expect` or `Upgrade`, no `Connection` naming `Content-Length`
//!   or `Host` (hop-by-hop fields are left out of the replica's head), not `CONNECT`, not
//!   OFREP;
//! - a head that httparse takes whole within [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields.
//!
//! Anything else, malformed requests included, is handed to hyper with the bytes already
//! read, and hyper serves the rest of that connection (`proxy::handle`). So the relay never
//! forwards a request whose framing is in any doubt (two lengths, a length and chunks: the
//! ground request smuggling stands on); hyper refuses what it must. Answers are framed again
//! for the user: a length is kept; a chunked answer, or one that ends with its connection, is
//! sent in chunks of the relay's own (chunk extensions and trailers dropped).
//!
//! Routing, the breakers, statistics, retries and drills are the same code as hyper's path
//! (`proxy::table`, `proxy::decide`, `proxy::settle`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf as _, BytesMut};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

use crate::proxy::{self, Connection, Decision, Failure, Headers, ProxyBody};
use crate::routing::{GroupRt, Routing};
use crate::upstream::{SendError, UserFault};

/// The largest request or answer head the relay reads; a larger request goes to hyper (which
/// refuses it), a larger answer is the replica's failure.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// The most fields in a head the relay parses; a request with more goes to hyper.
pub(crate) const MAX_HEADERS: usize = 100;

/// How long a user may take to accept bytes of an answer before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Room made for each read of a replica's answer.
const READ_SIZE: usize = 16 * 1024;

/// Room made for each read of a user's request: most heads are a few hundred bytes, and a
/// kept-alive connection holds its buffer while idle.
const USER_READ_SIZE: usize = 4 * 1024;

/// A chunk-size line or a trailer field longer than this ends the answer as broken.
const MAX_CHUNK_LINE: usize = 4096;

/// How the relay left a user's connection.
#[derive(Debug)]
pub(crate) enum Left {
    /// Closed or to be closed.
    Done,
    /// A request the relay does not serve: hyper serves the connection from here, starting
    /// with these bytes, already read from it.
    HandOver(BytesMut),
}

/// One field of a head: where its name and value are in the buffer the head was read into.
type Field = (Range<usize>, Range<usize>);

/// A head's fields over the buffer they were parsed from.
struct View<'a> {
    buf: &'a [u8],
    fields: &'a [Field],
}

impl Headers for View<'_> {
    fn first(&self, name: &str) -> Option<&[u8]> {
        let (_, value) = self.fields.iter().find(|(n, _)| self.buf[n.clone()].eq_ignore_ascii_case(name.as_bytes()))?;
        Some(&self.buf[value.clone()])
    }

    fn each<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.fields
            .iter()
            .filter(move |(n, _)| self.buf[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.buf[v.clone()])
    }
}

/// Where `part` (a slice of `buf`) lies in `buf`.
fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// What the relay parsed of a request it serves.
#[derive(Debug, PartialEq, Eq)]
struct RequestHead {
    /// Bytes of the head, its blank line included.
    len: usize,
    method: Range<usize>,
    path: Range<usize>,
    content_length: u64,
    /// `Connection: close`: the user's last request on this connection.
    close: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed<T> {
    Complete(T),
    /// More bytes are needed.
    Partial,
    /// Not a request the relay serves (see the module's header).
    Unfit,
}

fn parse_request(buf: &[u8], fields: &mut Vec<Field>) -> Parsed<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Unfit,
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version) else {
        return Parsed::Unfit;
    };
    if !path.starts_with('/') || path.starts_with(crate::ofrep::PREFIX) || method == "CONNECT" {
        return Parsed::Unfit;
    }
    fields.clear();
    let (mut content_length, mut lengths, mut host, mut close) = (0u64, 0, false, false);
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::Unfit;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            match digits(field.value) {
                Some(n) if lengths == 1 => content_length = n,
                _ => return Parsed::Unfit,
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            host = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(field.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                // Fields the Connection field names are left out of the replica's head; the
                // ones that frame and address the request cannot be (the replica would read
                // the body as the next request).
                if token.eq_ignore_ascii_case(b"content-length") || token.eq_ignore_ascii_case(b"host") {
                    return Parsed::Unfit;
                }
            }
        }
        fields.push((range_in(buf, name), range_in(buf, field.value)));
    }
    if !host {
        return Parsed::Unfit;
    }
    Parsed::Complete(RequestHead {
        len,
        method: range_in(buf, method.as_bytes()),
        path: range_in(buf, path.as_bytes()),
        content_length,
        close,
    })
}

/// A length of 1 to 18 ASCII digits (so it fits a u64 without checks), nothing else.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The elements of a comma-separated field value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// The fields a head's `Connection` field names (hop-by-hop too); empty, and no allocation,
/// for most heads.
fn named_by_connection<'a>(view: &View<'a>) -> Vec<&'a [u8]> {
    view.fields
        .iter()
        .filter(|(n, _)| view.buf[n.clone()].eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| tokens(&view.buf[v.clone()]))
        .collect()
}

/// Hop-by-hop: one of RFC 9110's (and the legacy ones), or one the head's `Connection` names.
fn hop_by_hop(named: &[&[u8]], name: &[u8]) -> bool {
    proxy::HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
        || named.iter().any(|t| t.eq_ignore_ascii_case(name))
}

/// A value hyper would take as a header value (`HeaderValue::from_bytes`).
fn valid_value(value: &[u8]) -> bool {
    value.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// The head sent to the replica: the user's, in HTTP/1.1, without hop-by-hop fields, with
/// this router appended to `X-Forwarded-For` and the user's key in the sticky header (so what
/// the replica evaluates for the user follows the same group).
fn upstream_head(out: &mut Vec<u8>, view: &View<'_>, head: &RequestHead, peer_ip: &[u8], sticky: &str, key: &str) {
    let buf = view.buf;
    out.clear();
    out.extend_from_slice(&buf[head.method.clone()]);
    out.push(b' ');
    out.extend_from_slice(&buf[head.path.clone()]);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded = false;
    let mut has_sticky = false;
    let named = named_by_connection(view);
    for (name, value) in view.fields {
        let name = &buf[name.clone()];
        if hop_by_hop(&named, name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            // The chain in one field, this router last (what hyper's path sends too).
            if !forwarded {
                forwarded = true;
                out.extend_from_slice(b"x-forwarded-for: ");
                for earlier in view.each("x-forwarded-for") {
                    out.extend_from_slice(earlier);
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(peer_ip);
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        has_sticky |= name.eq_ignore_ascii_case(sticky.as_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&buf[value.clone()]);
        out.extend_from_slice(b"\r\n");
    }
    if !forwarded {
        out.extend_from_slice(b"x-forwarded-for: ");
        out.extend_from_slice(peer_ip);
        out.extend_from_slice(b"\r\n");
    }
    if !has_sticky && valid_value(key.as_bytes()) {
        out.extend_from_slice(sticky.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (an answer to HEAD, a 204 or a 304).
    Empty,
    Length(u64),
    Chunked,
    /// The body is whatever comes until the replica closes the connection.
    UntilClose,
}

/// What the relay parsed of a replica's answer.
#[derive(Debug)]
struct AnswerHead {
    len: usize,
    status: StatusCode,
    framing: Framing,
    /// The connection may carry another request once this answer is read.
    reusable: bool,
}

fn broken(why: String) -> SendError {
    SendError::Failed(why.into())
}

/// The answer's head, or `None` when more bytes are needed; an error for an answer that
/// cannot be relayed.
fn parse_answer(buf: &[u8], fields: &mut Vec<Field>, to_head: bool) -> Result<Option<AnswerHead>, SendError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(_) => return Err(broken(format!("the replica's answer head is over {MAX_HEAD} bytes"))),
        Err(error) => return Err(broken(format!("the replica's answer is not HTTP/1.1: {error}"))),
    };
    let (Some(version), Some(code)) = (answer.version, answer.code) else {
        return Err(broken("the replica's answer has no status".into()));
    };
    let status = StatusCode::from_u16(code).map_err(|_| broken(format!("the replica answered status {code}")))?;
    fields.clear();
    let (mut length, mut lengths_differ, mut chunked, mut encoded) = (None, false, false, false);
    // HTTP/1.1 keeps the connection unless it says close; HTTP/1.0 closes unless it says keep-alive.
    let (mut close, mut keep_alive) = (false, false);
    for field in answer.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = digits(field.value).ok_or_else(|| broken("the replica's Content-Length is not a length".into()))?;
            lengths_differ |= length.is_some_and(|l| l != n);
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encoded = true;
            chunked = tokens(field.value).last().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= tokens(field.value).any(|t| t.eq_ignore_ascii_case(b"close"));
            keep_alive |= tokens(field.value).any(|t| t.eq_ignore_ascii_case(b"keep-alive"));
        }
        fields.push((range_in(buf, name), range_in(buf, field.value)));
    }
    let framing = if to_head || status.is_informational() || code == 204 || code == 304 {
        Framing::Empty
    } else if encoded {
        // RFC 9112 6.3: Transfer-Encoding wins over Content-Length; a body not chunked last
        // runs until the connection closes.
        if chunked { Framing::Chunked } else { Framing::UntilClose }
    } else if lengths_differ {
        return Err(broken("the replica's answer has two different Content-Lengths".into()));
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    let reusable =
        !close && (version == 1 || keep_alive) && framing != Framing::UntilClose && !(encoded && length.is_some());
    Ok(Some(AnswerHead { len, status, framing, reusable }))
}

/// Kept connections to replicas, one set per runtime that serves users (like `upstream::Pool`
/// for hyper's path), so its lock is never contended.
pub(crate) struct Conns {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, tokio::time::Instant)>>>,
    connect_timeout: Duration,
    /// The upstream timeout, also the longest wait for each read of a request's body.
    timeout: Duration,
}

impl Conns {
    /// Connections driven by the current runtime, which also closes idle ones in the background.
    pub(crate) fn new(upstream_timeout: Duration) -> Arc<Conns> {
        let conns = Arc::new(Conns {
            idle: Mutex::new(HashMap::new()),
            connect_timeout: upstream_timeout.min(crate::upstream::MAX_CONNECT_TIMEOUT),
            timeout: upstream_timeout,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_every(Arc::downgrade(&conns)));
        }
        conns
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<(TcpStream, tokio::time::Instant)>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used kept connection to `addr` that is still open; closed and
    /// expired ones are dropped on the way.
    fn checkout(&self, addr: SocketAddr) -> Option<TcpStream> {
        let now = tokio::time::Instant::now();
        let mut idle = self.lock();
        let kept = idle.get_mut(&addr)?;
        while let Some((stream, since)) = kept.pop() {
            if now.saturating_duration_since(since) <= crate::upstream::IDLE_TIMEOUT && open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    fn checkin(&self, addr: SocketAddr, stream: TcpStream) {
        let mut idle = self.lock();
        let kept = idle.entry(addr).or_default();
        if kept.len() < crate::upstream::MAX_IDLE_PER_UPSTREAM {
            kept.push((stream, tokio::time::Instant::now()));
        }
    }

    fn sweep(&self) {
        let now = tokio::time::Instant::now();
        self.lock().retain(|_, kept| {
            kept.retain(|(_, since)| now.saturating_duration_since(*since) <= crate::upstream::IDLE_TIMEOUT);
            !kept.is_empty()
        });
    }

    #[cfg(test)]
    fn kept(&self, addr: SocketAddr) -> usize {
        self.lock().get(&addr).map_or(0, Vec::len)
    }
}

async fn sweep_every(conns: Weak<Conns>) {
    loop {
        tokio::time::sleep(crate::upstream::IDLE_TIMEOUT).await;
        let Some(conns) = conns.upgrade() else { return };
        conns.sweep();
    }
}

/// An idle connection the replica has not closed (nor sent anything on). Asks the runtime's
/// readiness first, so a quiet connection costs no system call.
fn open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

/// A replica's answer whose head is read: the connection it came on and the bytes read past
/// its head.
struct Answer {
    stream: TcpStream,
    addr: SocketAddr,
    head: AnswerHead,
    /// Sent before the replica took the whole body: the rest of it is still on the user's
    /// connection, which ends after this answer.
    early: bool,
}

/// The user's request body still to be copied to the replica.
struct Body<'a> {
    user: &'a mut TcpStream,
    buf: &'a mut BytesMut,
    remaining: u64,
}

/// Sends `out` (the head, with any body bytes already read) to the replica at `addr`, copies
/// the rest of the body, and reads the answer's head into `answer_buf`.
///
/// Each stretch has its own clock. A bodiless request's whole exchange is within the upstream
/// timeout (one timer). With a body, the connection and the head are within it, then the body
/// goes at the user's pace (each read from the user and each write to the replica within
/// it), then the answer's head within it from the body's end: a long upload is not the
/// replica being slow, and a user who stops sending or goes away is not the replica failing
/// (`SendError::User`).
async fn exchange(
    conns: &Conns,
    addr: SocketAddr,
    out: &[u8],
    body: Option<Body<'_>>,
    answer_buf: &mut BytesMut,
    fields: &mut Vec<Field>,
    to_head: bool,
) -> Result<Answer, SendError> {
    let Some(body) = body else {
        let exchanged = async {
            let stream = send_head(conns, addr, out).await?;
            read_answer_head(stream, addr, answer_buf, fields, to_head).await
        };
        return within(tokio::time::timeout(conns.timeout, exchanged).await);
    };
    let mut stream = within(tokio::time::timeout(conns.timeout, send_head(conns, addr, out)).await)?;
    match copy_body(&mut stream, body, conns.timeout).await {
        Ok(()) => {}
        // A replica may answer before it has the whole body (a 413 or a 401, say) and close
        // the connection, which fails the copy: that answer, already sent, is the user's, and
        // not the replica's failure.
        Err(SendError::Failed(error)) => {
            let early = tokio::time::timeout(EARLY_ANSWER, read_answer_head(stream, addr, answer_buf, fields, to_head));
            return match early.await {
                Ok(Ok(mut answer)) => {
                    answer.head.reusable = false;
                    answer.early = true;
                    Ok(answer)
                }
                _ => Err(SendError::Failed(error)),
            };
        }
        Err(other) => return Err(other),
    }
    within(tokio::time::timeout(conns.timeout, read_answer_head(stream, addr, answer_buf, fields, to_head)).await)
}

/// How long an answer a replica sent before failing the upload is waited for: it is in the
/// socket's buffer already, or it is not coming.
const EARLY_ANSWER: Duration = Duration::from_millis(100);

/// What a stretch under the upstream timeout ended with.
fn within<T>(ended: Result<Result<T, SendError>, tokio::time::error::Elapsed>) -> Result<T, SendError> {
    ended.unwrap_or(Err(SendError::TimedOut))
}

/// A connection to the replica with `out` written on it. On a kept connection found closed by
/// the replica as the request is written, the request goes on a new one: a write the replica
/// refused was not processed.
async fn send_head(conns: &Conns, addr: SocketAddr, out: &[u8]) -> Result<TcpStream, SendError> {
    loop {
        let (mut stream, reused) = match conns.checkout(addr) {
            Some(stream) => (stream, true),
            None => (crate::upstream::connect(addr, conns.connect_timeout).await?, false),
        };
        match stream.write_all(out).await {
            Ok(()) => return Ok(stream),
            Err(_) if reused => continue,
            Err(error) => return Err(SendError::Failed(error.into())),
        }
    }
}

/// Copies the rest of a request's body from the user to the replica.
async fn copy_body(stream: &mut TcpStream, body: Body<'_>, timeout: Duration) -> Result<(), SendError> {
    let Body { user, buf, mut remaining } = body;
    while remaining > 0 {
        if buf.is_empty() {
            buf.reserve(READ_SIZE);
            match tokio::time::timeout(timeout, user.read_buf(buf)).await {
                Ok(Ok(0) | Err(_)) => return Err(SendError::User(UserFault::Gone)),
                Ok(Ok(_)) => {}
                Err(_) => return Err(SendError::User(UserFault::Stalled)),
            }
        }
        let n = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        match tokio::time::timeout(timeout, stream.write_all(&buf[..n])).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(SendError::Failed(error.into())),
            Err(_) => return Err(SendError::TimedOut),
        }
        buf.advance(n);
        remaining -= n as u64;
    }
    Ok(())
}

/// Reads the replica's answer head into `answer_buf`, past any interim answers.
async fn read_answer_head(
    mut stream: TcpStream,
    addr: SocketAddr,
    answer_buf: &mut BytesMut,
    fields: &mut Vec<Field>,
    to_head: bool,
) -> Result<Answer, SendError> {
    answer_buf.clear();
    loop {
        match parse_answer(answer_buf, fields, to_head)? {
            // An interim answer (103 Early Hints, a stray 100) is not the user's answer.
            Some(head) if head.status.is_informational() => {
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(broken("the replica switched protocols unasked".into()));
                }
                answer_buf.advance(head.len);
                continue;
            }
            Some(head) => return Ok(Answer { stream, addr, head, early: false }),
            None => {}
        }
        answer_buf.reserve(READ_SIZE);
        match stream.read_buf(answer_buf).await {
            Ok(0) => return Err(broken("the replica closed the connection before its answer".into())),
            Ok(_) => {}
            Err(error) => return Err(SendError::Failed(error.into())),
        }
    }
}

/// Writes all of `bytes` to the user within [`WRITE_TIMEOUT`].
async fn send(user: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, user.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the user takes no more bytes")),
    }
}

/// Reads more of the replica's answer into `buf` within `timeout`: the bytes read, 0 at the
/// end of the connection.
async fn more(stream: &mut TcpStream, buf: &mut BytesMut, timeout: Duration) -> std::io::Result<usize> {
    buf.reserve(READ_SIZE);
    match tokio::time::timeout(timeout, stream.read_buf(buf)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the replica stopped sending its answer")),
    }
}

fn eof() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the replica closed the connection mid-answer")
}

/// The answer's head for the user: the replica's, in HTTP/1.1, without hop-by-hop fields,
/// framed for the relay's way of sending the body, with the group and version it came from.
fn user_head(
    out: &mut Vec<u8>,
    view: &View<'_>,
    head: &AnswerHead,
    group: &GroupRt,
    new_cookie: Option<&[u8]>,
    close: bool,
) {
    out.clear();
    status_line(out, head.status);
    let buf = view.buf;
    let reframed = matches!(head.framing, Framing::Chunked | Framing::UntilClose);
    let mut dated = false;
    let named = named_by_connection(view);
    for (name, value) in view.fields {
        let name = &buf[name.clone()];
        dated |= name.eq_ignore_ascii_case(b"date");
        if hop_by_hop(&named, name)
            || name.eq_ignore_ascii_case(proxy::GROUP_HEADER.as_bytes())
            || name.eq_ignore_ascii_case(proxy::VERSION_HEADER.as_bytes())
            || (name.eq_ignore_ascii_case(b"content-length") && head.framing != Framing::Empty)
        {
            continue;
        }
        field(out, name, &buf[value.clone()]);
    }
    match head.framing {
        Framing::Length(n) => field(out, b"content-length", n.to_string().as_bytes()),
        _ if reframed => field(out, b"transfer-encoding", b"chunked"),
        _ => {}
    }
    if !dated {
        // RFC 9110 6.6.1: a proxy forwarding an answer without a date adds one.
        date(out);
    }
    field(out, proxy::GROUP_HEADER.as_bytes(), group.name_header.as_bytes());
    field(out, proxy::VERSION_HEADER.as_bytes(), group.version_header.as_bytes());
    if let Some(cookie) = new_cookie {
        field(out, b"set-cookie", cookie);
    }
    if close {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A `Date` field for now, formatted once a second per thread (as hyper does).
fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static NOW: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    NOW.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        field(out, b"date", text.as_bytes());
    });
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes an answer of the router's own (no upstream, a drill's fault, a 502).
async fn send_own(user: &mut TcpStream, out: &mut Vec<u8>, answer: Response<ProxyBody>, close: bool) -> bool {
    use http_body_util::BodyExt as _;
    let (parts, body) = answer.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    out.clear();
    status_line(out, parts.status);
    // Whether the connection ends is the caller's to say (`close`).
    for (name, value) in parts.headers.iter().filter(|(name, _)| *name != hyper::header::CONNECTION) {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    date(out);
    field(out, b"content-length", body.len().to_string().as_bytes());
    if close {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    send(user, out).await.is_ok()
}

/// Copies the answer's body to the user, framed as `user_head` said. Returns whether the
/// replica's connection can carry another request (the body read to its end, nothing past it).
async fn relay_body(
    user: &mut (impl AsyncWrite + Unpin),
    out: &mut Vec<u8>,
    answer: &mut Answer,
    buf: &mut BytesMut,
    timeout: Duration,
) -> std::io::Result<bool> {
    let stream = &mut answer.stream;
    match answer.head.framing {
        Framing::Empty => {
            send(user, out).await?;
            Ok(buf.is_empty())
        }
        Framing::Length(mut remaining) => {
            // The head and the body's first bytes in one write: most answers are that write.
            let n = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
            out.extend_from_slice(&buf[..n]);
            buf.advance(n);
            remaining -= n as u64;
            send(user, out).await?;
            while remaining > 0 {
                buf.clear();
                if more(stream, buf, timeout).await? == 0 {
                    return Err(eof());
                }
                let n = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                send(user, &buf[..n]).await?;
                buf.advance(n);
                remaining -= n as u64;
            }
            Ok(buf.is_empty())
        }
        Framing::UntilClose => {
            send(user, out).await?;
            loop {
                if !buf.is_empty() {
                    out.clear();
                    chunk(out, buf);
                    buf.clear();
                    send(user, out).await?;
                }
                if more(stream, buf, timeout).await? == 0 {
                    send(user, b"0\r\n\r\n").await?;
                    return Ok(false);
                }
            }
        }
        Framing::Chunked => {
            send(user, out).await?;
            relay_chunks(user, out, stream, buf, timeout).await?;
            Ok(buf.is_empty())
        }
    }
}

/// `data` as one chunk of a chunked body.
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Decodes a chunked body from the replica and sends its data to the user in chunks of the
/// relay's own; the last chunk's trailers are read and dropped.
async fn relay_chunks(
    user: &mut (impl AsyncWrite + Unpin),
    out: &mut Vec<u8>,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> std::io::Result<()> {
    let invalid = |what: &str| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("the replica's chunked body: {what}"))
    };
    loop {
        let size = loop {
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    break size;
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_CHUNK_LINE => {
                    if more(stream, buf, timeout).await? == 0 {
                        return Err(eof());
                    }
                }
                _ => return Err(invalid("a chunk size line that is not one")),
            }
        };
        if size == 0 {
            // Trailer fields, then the blank line that ends the body.
            loop {
                match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        buf.advance(2);
                        return send(user, b"0\r\n\r\n").await;
                    }
                    Some(end) => buf.advance(end + 2),
                    None if buf.len() < MAX_CHUNK_LINE => {
                        if more(stream, buf, timeout).await? == 0 {
                            return Err(eof());
                        }
                    }
                    None => return Err(invalid("a trailer field too long")),
                }
            }
        }
        out.clear();
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        let mut remaining = size;
        loop {
            let n = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
            out.extend_from_slice(&buf[..n]);
            buf.advance(n);
            remaining -= n as u64;
            if remaining == 0 {
                break;
            }
            send(user, out).await?;
            out.clear();
            if more(stream, buf, timeout).await? == 0 {
                return Err(eof());
            }
        }
        while buf.len() < 2 {
            if more(stream, buf, timeout).await? == 0 {
                return Err(eof());
            }
        }
        if &buf[..2] != b"\r\n" {
            return Err(invalid("a chunk longer than its size"));
        }
        buf.advance(2);
        out.extend_from_slice(b"\r\n");
        send(user, out).await?;
    }
}

/// The buffers one user's connection reuses from request to request.
struct Buffers {
    /// The user's bytes: the request being served, and any sent after it.
    user: BytesMut,
    /// The replica's answer being relayed.
    answer: BytesMut,
    fields: Vec<Field>,
    /// The head (and first body bytes) sent to the replica.
    request: Vec<u8>,
    /// The head (and first body bytes) sent to the user.
    reply: Vec<u8>,
}

/// Serves a user's connection until it ends or brings a request the relay does not serve.
/// `stopping`: the router is stopping, so each answer says the connection closes after it.
/// `idle` is set while the connection waits for a request to begin (the only time it may be
/// closed without cutting a request short).
pub(crate) async fn serve(conn: &Connection, user: &mut TcpStream, stopping: &AtomicBool, idle: &AtomicBool) -> Left {
    let mut b = Buffers {
        user: BytesMut::with_capacity(USER_READ_SIZE),
        // Allocated by the first answer's read.
        answer: BytesMut::new(),
        fields: Vec::with_capacity(16),
        request: Vec::with_capacity(1024),
        reply: Vec::with_capacity(1024),
    };
    loop {
        // Set at the request's first byte: the whole head must be in by then.
        let mut deadline = None;
        let head = loop {
            match parse_request(&b.user, &mut b.fields) {
                Parsed::Complete(head) => break head,
                Parsed::Unfit => return Left::HandOver(b.user),
                Parsed::Partial => {}
            }
            let waiting = b.user.is_empty();
            let until = match deadline {
                Some(deadline) => deadline,
                None if waiting => tokio::time::Instant::now() + conn.shared.keep_alive,
                None => *deadline.insert(tokio::time::Instant::now() + conn.shared.head_timeout),
            };
            idle.store(waiting, Relaxed);
            b.user.reserve(USER_READ_SIZE);
            let read = tokio::time::timeout_at(until, user.read_buf(&mut b.user)).await;
            idle.store(false, Relaxed);
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Left::Done,
            }
        };
        match serve_one(conn, user, &mut b, head, stopping).await {
            Ok(true) => {}
            Ok(false) => return Left::Done,
            Err(error) => {
                tracing::debug!(%error, "connection ended with an error");
                return Left::Done;
            }
        }
    }
}

/// Serves one request whose head is at the start of `b.user`. Returns whether the connection
/// carries on.
async fn serve_one(
    conn: &Connection,
    user: &mut TcpStream,
    b: &mut Buffers,
    head: RequestHead,
    stopping: &AtomicBool,
) -> std::io::Result<bool> {
    let received = Instant::now();
    let shared = &conn.shared;
    let view = View { buf: &b.user, fields: &b.fields };
    let host = view.first("host").and_then(proxy::visible_ascii);
    let path = std::str::from_utf8(&b.user[head.path.clone()]).unwrap_or("/");
    // An answer of the router's own leaves the body unread: the connection ends after it, so
    // the body is not taken for the next request.
    let own_close = head.close || head.content_length > 0;
    let routing = match proxy::table(shared, host, path, received) {
        Ok(routing) => routing,
        Err(answer) => {
            let close = own_close || stopping.load(Relaxed);
            b.user.advance(head.len);
            return Ok(send_own(user, &mut b.reply, *answer, close).await && !close);
        }
    };
    if head.content_length > routing.table.max_request_body {
        // Answered before a byte of the body is read; the connection ends with it.
        b.user.advance(head.len);
        let (status, why) = UserFault::TooLarge.answer();
        send_own(user, &mut b.reply, proxy::plain(status, why), true).await;
        return Ok(false);
    }
    let decision = proxy::decide(shared, &routing, &view, head.content_length == 0, received).await;
    let Decision { group_index, attempt, key, new_cookie, shadow } = match decision {
        Ok(decision) => decision,
        Err(answer) => {
            let close = own_close || stopping.load(Relaxed);
            b.user.advance(head.len);
            return Ok(send_own(user, &mut b.reply, answer, close).await && !close);
        }
    };
    let group = &routing.groups[group_index];
    let method = &b.user[head.method.clone()];
    let (to_head, idempotent) = (method == b"HEAD", std::str::from_utf8(method).is_ok_and(proxy::idempotent));
    upstream_head(&mut b.request, &view, &head, conn.peer_ip.as_bytes(), routing.sticky_header.as_str(), &key);
    if let Some(i) = shadow {
        send_copy(conn, &routing, i, b.request.clone());
    }
    b.user.advance(head.len);
    // The part of the body already read goes with the head; the rest streams from the user
    // once a replica is connected.
    let in_head = b.user.len().min(usize::try_from(head.content_length).unwrap_or(usize::MAX));
    b.request.extend_from_slice(&b.user[..in_head]);
    b.user.advance(in_head);
    let remaining = head.content_length - in_head as u64;
    let first = attempt.upstream.addr;
    let timeout = shared.upstream_timeout;
    let mut result = {
        let body = (head.content_length > 0).then_some(Body { user: &mut *user, buf: &mut b.user, remaining });
        let sent = exchange(&conn.conns, first, &b.request, body, &mut b.answer, &mut b.fields, to_head).await;
        proxy::settle(attempt, &routing, sent, |answer| answer.head.status)
    };
    // Sent again to another replica of its group: a request that could not be connected
    // (nothing of it left, its body still with the user), or a bodiless one whose replica gave
    // no answer, when doing it twice is harmless. A body once streamed is gone.
    if let Err(failure) = &result
        && group.replicas() > 1
        && (head.content_length == 0 || *failure == Failure::Unreachable)
        && failure.may_retry(idempotent)
        && let Some(second) = group.admit_other(Instant::now(), first)
    {
        group.series.retries.fetch_add(1, Relaxed);
        tracing::debug!(%first, second = %second.upstream.addr, group = %group.name, ?failure, "retrying on another replica");
        let addr = second.upstream.addr;
        let body = (head.content_length > 0).then_some(Body { user: &mut *user, buf: &mut b.user, remaining });
        let sent = exchange(&conn.conns, addr, &b.request, body, &mut b.answer, &mut b.fields, to_head).await;
        result = proxy::settle(second, &routing, sent, |answer| answer.head.status);
    }
    let now = Instant::now();
    let mut close = head.close || stopping.load(Relaxed);
    let mut answer = match result {
        Ok(answer) => answer,
        Err(failure) => {
            let mut answer = proxy::no_answer(group, received, now, failure);
            proxy::decorate(answer.headers_mut(), group, new_cookie);
            // Part of the body may still be on the connection.
            let close = close || head.content_length > 0 || matches!(failure, Failure::User(_));
            return Ok(send_own(user, &mut b.reply, answer, close).await && !close);
        }
    };
    proxy::record(&group.series, &group.latency, received, now, answer.head.status.is_server_error());
    close |= answer.early;
    let view = View { buf: &b.answer, fields: &b.fields };
    user_head(&mut b.reply, &view, &answer.head, group, new_cookie.as_ref().map(|c| c.as_bytes()), close);
    b.answer.advance(answer.head.len);
    let reusable = relay_body(user, &mut b.reply, &mut answer, &mut b.answer, timeout).await?;
    if reusable && answer.head.reusable {
        conn.conns.checkin(answer.addr, answer.stream);
    }
    Ok(!close)
}

/// Sends a copy of a bodiless request (`head`, as the replica gets it) to a replica of the
/// shadow group, in the background: its answer is read to its end and dropped, and counted in
/// that version's statistics; the user never waits on it. A copy is nobody's answer, so its
/// replica's breaker is left alone.
fn send_copy(conn: &Connection, routing: &Routing, group_index: usize, head: Vec<u8>) {
    let group = &routing.groups[group_index];
    let Some(upstream) = group.next_upstream() else { return };
    let (series, latency) = (group.series.clone(), group.latency.clone());
    let (conns, timeout, addr) = (conn.conns.clone(), conn.shared.upstream_timeout, upstream.addr);
    let to_head = head.starts_with(b"HEAD ");
    tokio::spawn(async move {
        let sent = Instant::now();
        let (mut answer_buf, mut fields) = (BytesMut::new(), Vec::new());
        let exchanged = exchange(&conns, addr, &head, None, &mut answer_buf, &mut fields, to_head).await;
        let failed = match exchanged {
            Ok(mut answer) => {
                let server_error = answer.head.status.is_server_error();
                answer_buf.advance(answer.head.len);
                let (mut sink, mut nothing) = (tokio::io::sink(), Vec::new());
                let read = relay_body(&mut sink, &mut nothing, &mut answer, &mut answer_buf, timeout);
                let read = tokio::time::timeout(timeout, read).await;
                if let Ok(Ok(true)) = read
                    && answer.head.reusable
                {
                    conns.checkin(answer.addr, answer.stream);
                }
                server_error || !matches!(read, Ok(Ok(_)))
            }
            Err(_) => true,
        };
        proxy::record(&series, &latency, sent, Instant::now(), failed);
    });
}

/// A user's connection handed over to hyper: the bytes the relay already read come first.
pub(crate) struct Prefixed {
    prefix: BytesMut,
    stream: TcpStream,
}

impl Prefixed {
    pub(crate) fn new(prefix: BytesMut, stream: TcpStream) -> Prefixed {
        Prefixed { prefix, stream }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> (Parsed<RequestHead>, Vec<Field>) {
        let mut fields = Vec::new();
        (parse_request(text.as_bytes(), &mut fields), fields)
    }

    fn fit(text: &str) -> RequestHead {
        match request(text).0 {
            Parsed::Complete(head) => head,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn the_relay_serves_plain_http_1_1_requests() {
        let head = fit("GET /a?b=1 HTTP/1.1\r\nHost: shop\r\nX-User-Id: u1\r\n\r\nGET /next");
        assert_eq!(head.len, "GET /a?b=1 HTTP/1.1\r\nHost: shop\r\nX-User-Id: u1\r\n\r\n".len());
        assert_eq!((head.content_length, head.close), (0, false));
        let head = fit("POST / HTTP/1.1\r\nhost: shop\r\ncontent-length: 12\r\nConnection: keep-alive, Close\r\n\r\n");
        assert_eq!((head.content_length, head.close), (12, true));
        assert_eq!(request("GET / HTTP/1.1\r\nhost: sh").0, Parsed::Partial);
    }

    #[test]
    fn requests_the_relay_is_not_sure_of_go_to_hyper() {
        for text in [
            // Framing in any doubt.
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0x3\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: \r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length : 3\r\n\r\n",
            // What hyper handles and the relay does not.
            "POST / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n\r\n",
            "GET / HTTP/1.0\r\nhost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nhost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nhost: a\r\n\r\n",
            "POST /ofrep/v1/evaluate/flags HTTP/1.1\r\nhost: a\r\n\r\n",
            // A length named hop-by-hop would leave the body unframed for the replica.
            "POST / HTTP/1.1\r\nhost: a\r\nconnection: keep-alive, Content-Length\r\ncontent-length: 3\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nconnection: host\r\n\r\n",
            // Not HTTP/1.1 at all.
            "GET / HTTP/1.1\r\nhost: a\r\nx: \x01\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\n folded\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(request(text).0, Parsed::Unfit, "{text:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(request(&format!("GET / HTTP/1.1\r\nhost: a\r\n{many}\r\n")).0, Parsed::Unfit);
        let long = "a".repeat(MAX_HEAD);
        assert_eq!(request(&format!("GET / HTTP/1.1\r\nhost: a\r\nx: {long}")).0, Parsed::Unfit);
    }

    #[test]
    fn the_replica_gets_the_users_head_without_its_hops() {
        let text = "GET /p HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n\
                    Keep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 1.1.1.1\r\nCookie: a=1\r\n\
                    x-forwarded-for: 2.2.2.2\r\n\r\n";
        let (Parsed::Complete(head), fields) = request(text) else { panic!() };
        let view = View { buf: text.as_bytes(), fields: &fields };
        let mut out = Vec::new();
        upstream_head(&mut out, &view, &head, b"10.0.0.9", "x-user-id", "u42");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /p HTTP/1.1\r\nHost: shop\r\nx-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\nCookie: a=1\r\n\
             x-user-id: u42\r\n\r\n"
        );
        // A key the user sent stays as sent; a key that is no header value is not added.
        let text = "GET / HTTP/1.1\r\nhost: a\r\nX-User-Id: mine\r\n\r\n";
        let (Parsed::Complete(head), fields) = request(text) else { panic!() };
        let view = View { buf: text.as_bytes(), fields: &fields };
        let mut out = Vec::new();
        upstream_head(&mut out, &view, &head, b"10.0.0.9", "x-user-id", "mine");
        assert_eq!(String::from_utf8_lossy(&out).matches("mine").count(), 1);
        let text = "GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        let (Parsed::Complete(head), fields) = request(text) else { panic!() };
        upstream_head(&mut out, &View { buf: text.as_bytes(), fields: &fields }, &head, b"ip", "k", "a\r\nb");
        assert_eq!(String::from_utf8(out).unwrap(), "GET / HTTP/1.1\r\nhost: a\r\nx-forwarded-for: ip\r\n\r\n");
    }

    fn answer(text: &str, to_head: bool) -> Result<AnswerHead, String> {
        match parse_answer(text.as_bytes(), &mut Vec::new(), to_head) {
            Ok(Some(head)) => Ok(head),
            Ok(None) => Err("partial".into()),
            Err(error) => Err(error.to_string()),
        }
    }

    #[test]
    fn an_answers_framing_follows_rfc_9112() {
        let framing = |text: &str, to_head| answer(text, to_head).map(|a| (a.framing, a.reusable));
        assert_eq!(framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false), Ok((Framing::Length(5), true)));
        assert_eq!(framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true), Ok((Framing::Empty, true)));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", false), Ok((Framing::Empty, true)));
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n", false),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", false),
            Ok((Framing::Chunked, true))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
            Ok((Framing::UntilClose, false))
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", false), Ok((Framing::UntilClose, false)));
        // Chunks win over a length, and such a connection is not trusted again.
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n", false),
            Ok((Framing::Chunked, false))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n", false),
            Ok((Framing::Length(3), true))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\n", false),
            Ok((Framing::Length(3), false))
        );
        assert_eq!(framing("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n", false), Ok((Framing::Length(3), false)));
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 3\r\n\r\n", false),
            Ok((Framing::Length(3), true))
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\ncontent-len", false), Err("partial".into()));
        for broken in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n",
            "HTTP/2 200\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(answer(broken, false).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn the_users_answer_head_is_reframed_and_labelled() {
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\nConnection: x-hop\r\n\
                    X-Hop: 1\r\nX-Ringfence-Group: forged\r\nSet-Cookie: theirs=1\r\n\r\n";
        let mut fields = Vec::new();
        let head = parse_answer(text.as_bytes(), &mut fields, false).unwrap().unwrap();
        let table: crate::table::RouteTable = serde_json::from_value(serde_json::json!({
            "generation": 1, "workload": "w", "sticky_header": "x-user-id", "sticky_cookie": "rf_user",
            "groups": [{"name": "canary", "version": "v2", "weight_bp": 10000, "upstreams": ["127.0.0.1:1"]}],
        }))
        .unwrap();
        let routing = Routing::build(table, None, &crate::stats::Stats::default()).unwrap();
        let mut out = Vec::new();
        let view = View { buf: text.as_bytes(), fields: &fields };
        user_head(&mut out, &view, &head, &routing.groups[0], Some(b"rf_user=k; Path=/"), true);
        let out = String::from_utf8(out).unwrap();
        let (before, after) = out.split_once("date: ").expect("a date is added to an answer without one");
        assert_eq!(before, "HTTP/1.1 200 OK\r\nSet-Cookie: theirs=1\r\ntransfer-encoding: chunked\r\n");
        let (date, after) = after.split_once("\r\n").unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert_eq!(
            after,
            "x-ringfence-group: canary\r\nx-ringfence-version: v2\r\nset-cookie: rf_user=k; Path=/\r\n\
             connection: close\r\n\r\n"
        );
    }

    /// A replica's answer body, written by a real socket in the given pieces, through
    /// `relay_body` to what the user gets.
    async fn relayed(head: &str, pieces: &[&[u8]]) -> (std::io::Result<bool>, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            let (mut replica, _) = listener.accept().await.unwrap();
            for piece in pieces {
                replica.write_all(&piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Kept open a little, as a kept-alive replica would.
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let head = parse_answer(head.as_bytes(), &mut Vec::new(), false).unwrap().unwrap();
        let mut answer = Answer { stream, addr, head, early: false };
        let (mut user, mut out, mut buf) = (Vec::new(), Vec::new(), BytesMut::new());
        let result = relay_body(&mut user, &mut out, &mut answer, &mut buf, Duration::from_secs(5)).await;
        writer.abort();
        (result, String::from_utf8_lossy(&user).into_owned())
    }

    #[tokio::test]
    async fn chunks_are_relayed_in_chunks_of_the_relays_own() {
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let (result, user) =
            relayed(head, &[b"5;name=v", b"alue\r\nhel", b"lo\r\n1", b"\r\n!\r\n0\r\nx-t: 1\r\n", b"\r\n"]).await;
        assert!(result.unwrap(), "read to its end, the connection can carry another request");
        assert_eq!(user, "5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n");
        let (result, _) = relayed(head, &[b"5\r\nhelloXX0\r\n\r\n"]).await;
        assert!(result.is_err(), "a chunk longer than its size");
        let (result, _) = relayed(head, &[b"zz\r\n"]).await;
        assert!(result.is_err(), "not a size");
    }

    #[tokio::test]
    async fn a_length_is_relayed_and_a_short_body_is_an_error() {
        let (result, user) = relayed("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", &[b"01234", b"56789"]).await;
        assert!(result.unwrap());
        assert_eq!(user, "0123456789");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut replica, _) = listener.accept().await.unwrap();
            replica.write_all(b"short").await.unwrap();
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let head =
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", &mut Vec::new(), false).unwrap().unwrap();
        let mut answer = Answer { stream, addr, head, early: false };
        let result =
            relay_body(&mut Vec::new(), &mut Vec::new(), &mut answer, &mut BytesMut::new(), Duration::from_secs(5))
                .await;
        assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_kept_connection_the_replica_closed_is_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Conns::new(Duration::from_secs(5));
        let (kept, closed) = (TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap());
        let (_first, _) = listener.accept().await.unwrap();
        let (second, _) = listener.accept().await.unwrap();
        drop(second);
        // Let the close arrive and the runtime see it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        conns.checkin(addr, kept);
        conns.checkin(addr, closed);
        assert_eq!(conns.kept(addr), 2);
        let out = conns.checkout(addr).expect("the open one");
        assert!(open(&out));
        assert_eq!(conns.kept(addr), 0, "the closed one was dropped on the way");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Field names a request is framed by, hop-by-hop ones and plain ones, in several cases.
        fn name() -> impl Strategy<Value = &'static str> {
            proptest::sample::select(vec![
                "content-length",
                "Content-Length",
                "CONTENT-LENGTH",
                "transfer-encoding",
                "Transfer-Encoding",
                "connection",
                "Connection",
                "expect",
                "upgrade",
                "te",
                "keep-alive",
                "x-forwarded-for",
                "x-user-id",
                "cookie",
                "x-a",
                "host",
            ])
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                (0u32..100).prop_map(|n| n.to_string()),
                proptest::sample::select(vec![
                    "chunked",
                    "gzip, chunked",
                    "close",
                    "keep-alive, x-a",
                    "+3",
                    "-1",
                    "3,3",
                    "3, 3",
                    "",
                    "0x3",
                    "0",
                    "00",
                    "1.1.1.1",
                    "rf_user=k",
                    "x-a, content-length",
                    "Content-Length",
                    "host",
                ])
                .prop_map(str::to_owned),
            ]
        }

        fn text_of(fields: &[(&str, String)]) -> String {
            let mut text = String::from("POST /p?q=1 HTTP/1.1\r\n");
            for (name, value) in fields {
                text.push_str(&format!("{name}: {value}\r\n"));
            }
            text.push_str("\r\n");
            text
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn no_bytes_make_the_parsers_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let mut fields = Vec::new();
                if let Parsed::Complete(head) = parse_request(&bytes, &mut fields) {
                    prop_assert!(head.len <= bytes.len());
                    prop_assert!(fields.iter().all(|(n, v)| n.end <= head.len && v.end <= head.len));
                }
                let _ = parse_answer(&bytes, &mut fields, false);
            }

            /// Whatever the relay takes, it takes for the one framing the standard gives it, and
            /// the replica gets that framing, and only that.
            #[test]
            fn what_the_relay_takes_reaches_the_replica_framed_the_same(
                fields in proptest::collection::vec((name(), value()), 0..8),
            ) {
                let text = text_of(&fields);
                let named = |wanted: &str| -> Vec<&String> {
                    fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(wanted)).map(|(_, v)| v).collect()
                };
                let mut parsed = Vec::new();
                let Parsed::Complete(head) = parse_request(text.as_bytes(), &mut parsed) else {
                    // Refused: there was a reason to.
                    let lengths = named("content-length");
                    prop_assert!(
                        !named("transfer-encoding").is_empty()
                            || !named("expect").is_empty()
                            || !named("upgrade").is_empty()
                            || named("host").is_empty()
                            || lengths.len() > 1
                            || lengths.iter().any(|v| digits(v.as_bytes()).is_none())
                            || named("connection").iter().any(|v| {
                                tokens(v.as_bytes()).any(|t| {
                                    t.eq_ignore_ascii_case(b"content-length") || t.eq_ignore_ascii_case(b"host")
                                })
                            }),
                        "{text:?}"
                    );
                    return Ok(());
                };
                let lengths = named("content-length");
                prop_assert!(named("transfer-encoding").is_empty() && lengths.len() <= 1, "{text:?}");
                prop_assert_eq!(head.content_length, lengths.first().map_or(0, |v| v.parse().unwrap()));

                let view = View { buf: text.as_bytes(), fields: &parsed };
                let mut out = Vec::new();
                upstream_head(&mut out, &view, &head, b"10.0.0.9", "x-user-id", "k");
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 4];
                let mut again = httparse::Request::new(&mut headers);
                prop_assert_eq!(again.parse(&out), Ok(httparse::Status::Complete(out.len())));
                prop_assert_eq!((again.method, again.path, again.version), (Some("POST"), Some("/p?q=1"), Some(1)));
                let sent: Vec<&[u8]> = again
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| h.value)
                    .collect();
                prop_assert_eq!(sent, lengths.iter().map(|v| v.as_bytes()).collect::<Vec<_>>());
                prop_assert!(again.headers.iter().any(|h| h.name.eq_ignore_ascii_case("host")), "{text:?}");
                for h in again.headers.iter() {
                    let hop = proxy::HOP_BY_HOP.iter().any(|n| h.name.eq_ignore_ascii_case(n.as_str()));
                    prop_assert!(!hop, "{} reached the replica: {text:?}", h.name);
                }
            }

            /// An answer the relay relays is framed for the user the way its body is sent.
            #[test]
            fn the_users_answer_says_how_its_body_comes(
                fields in proptest::collection::vec((name(), value()), 0..8),
                status in proptest::sample::select(vec![200u16, 204, 304, 404, 503]),
            ) {
                let mut text = format!("HTTP/1.1 {status} X\r\n");
                for (name, value) in &fields {
                    text.push_str(&format!("{name}: {value}\r\n"));
                }
                text.push_str("\r\n");
                let mut parsed = Vec::new();
                let Ok(Some(head)) = parse_answer(text.as_bytes(), &mut parsed, false) else { return Ok(()) };
                let table: crate::table::RouteTable = serde_json::from_value(serde_json::json!({
                    "generation": 1, "workload": "w", "sticky_header": "x-user-id", "sticky_cookie": "rf_user",
                    "groups": [{"name": "g", "version": "v", "weight_bp": 10000, "upstreams": ["127.0.0.1:1"]}],
                }))
                .unwrap();
                let routing = Routing::build(table, None, &crate::stats::Stats::default()).unwrap();
                let mut out = Vec::new();
                user_head(&mut out, &View { buf: text.as_bytes(), fields: &parsed }, &head, &routing.groups[0], None, false);
                let again = parse_answer(&out, &mut Vec::new(), false).unwrap().unwrap();
                let expected = match head.framing {
                    Framing::UntilClose => Framing::Chunked,
                    other => other,
                };
                prop_assert_eq!(again.framing, expected, "{:?} -> {:?}", text, String::from_utf8_lossy(&out));
                prop_assert!(again.reusable);
            }
        }
    }
}
