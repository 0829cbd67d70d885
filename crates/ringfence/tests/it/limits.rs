//! The API server's connection limits (docs/api.md, "Limits and timeouts"): idle connections
//! by the thousand do not lock anyone out of the API, and a client that sends part of a request
//! head and then nothing is disconnected.
//!
//! A refusal by the limits is an answer too (429 or 503, before any request is read), so the
//! checks that the API still answers refuse those two; any other answer counts (a 401 from
//! authentication as well as a 200).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::harness::{Server, Spec};

/// `Limits::default().max_connections` of the server.
const MAX_CONNECTIONS: usize = 512;
/// `Limits::default().header_read_timeout` of the server: a connection that sends nothing is
/// closed after it, so the checks under load happen well within it (and check that they did).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How many idle connections the test opens when the descriptor limit allows.
const IDLE_CONNECTIONS: usize = 1000;
/// Descriptors left to the other tests of this process, which run at the same time.
const HEADROOM: u64 = 512;
/// A generous bound for "the API still answers": far above what a loaded machine needs.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

fn server_addr(server: &Server) -> SocketAddr {
    let url = server.url();
    url.strip_prefix("http://")
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("the server's URL is not http://IP:PORT: {url}"))
}

/// Raises this process's soft limit on open files to its hard limit (inherited by the
/// servers it starts) and returns the soft limit in force.
fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    // An unlimited hard limit cannot be the soft one for open files; this is plenty.
    let target = hard.min(1 << 16);
    if soft < target && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        return target;
    }
    soft
}

/// A connection from a loopback address of its own (127.0.0.`last`): loopback is a /8, so the
/// server sees as many clients as the test wants.
async fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("create a socket");
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0)))
        .unwrap_or_else(|e| panic!("bind to 127.0.0.{last}: {e}"));
    tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .unwrap_or_else(|_| panic!("connecting from 127.0.0.{last} took over 10 s"))
        .unwrap_or_else(|e| panic!("connect from 127.0.0.{last}: {e}"))
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// `GET /v1/workloads` on a new connection from 127.0.0.`last`; the answer's status line, or
/// a panic if none arrives within [`ANSWER_WITHIN`] or it is a refusal by the limits.
async fn api_answers_from(last: u8, addr: SocketAddr) -> String {
    let started = Instant::now();
    let exchange = async {
        let mut s = connect_from(last, addr).await;
        s.write_all(format!("GET /v1/workloads HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .expect("send the request");
        read_to_close(&mut s).await
    };
    let got = tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer to GET /v1/workloads from 127.0.0.{last} within {ANSWER_WITHIN:?}"));
    let text = String::from_utf8_lossy(&got);
    let status = text.lines().next().unwrap_or_default().to_string();
    assert!(status.starts_with("HTTP/1.1 "), "not an HTTP answer from 127.0.0.{last}: {text:?}");
    assert!(
        !status.starts_with("HTTP/1.1 429") && !status.starts_with("HTTP/1.1 503"),
        "the limits refused a request from 127.0.0.{last} after {:?}: {text}",
        started.elapsed()
    );
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_lock_anyone_out() {
    let limit = raise_open_files_limit();
    let n = IDLE_CONNECTIONS.min(limit.saturating_sub(HEADROOM) as usize);
    if n < IDLE_CONNECTIONS {
        eprintln!("the open-files limit is {limit}: opening {n} idle connections instead of {IDLE_CONNECTIONS}");
    }
    let server = Server::start().await;
    let addr = server_addr(&server);
    // A rollout in progress (v2 holds: no traffic), for an operator to abort under the flood.
    let w = "flooded";
    server.setup(&Spec::new(w), &[("v1", &[]), ("v2", &["GREETING=x"])]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0);
    assert_eq!(server.cli(&["deploy", w, "v2"]).await.code, 0);

    // A fifth from 127.0.0.1, the address the CLI uses too (past the cap per address); the
    // rest from 16 other addresses, 50 each (within it): together past the total cap.
    let closed = Arc::new(AtomicUsize::new(0));
    let mut idle = JoinSet::new();
    for i in 0..n {
        let last = if i < n / 5 { 1 } else { 2 + (i % 16) as u8 };
        let mut stream = connect_from(last, addr).await;
        let closed = closed.clone();
        idle.spawn(async move {
            read_to_close(&mut stream).await;
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    let all_open = Instant::now();

    // The server keeps at most its cap open; the others are closed to make room. It keeps
    // that many: the idle connections still hold the server when the API is asked below.
    let deadline = Instant::now() + Duration::from_secs(20);
    while n.saturating_sub(closed.load(Ordering::Relaxed)) > MAX_CONNECTIONS {
        assert!(
            Instant::now() < deadline,
            "the server still holds {} of {n} idle connections after 20 s (cap {MAX_CONNECTIONS})",
            n - closed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still_held = |when: &str| {
        let held = n - closed.load(Ordering::Relaxed);
        assert!(
            held >= (MAX_CONNECTIONS.min(n) / 2).saturating_sub(2),
            "{when}, the server held only {held} of {n} idle connections (cap {MAX_CONNECTIONS}), {:?} after \
             the last one was opened: it should keep up to its cap until the header timeout ({HEADER_TIMEOUT:?})",
            all_open.elapsed()
        );
    };
    still_held("before the API was asked");

    // The API answers, while the server is full of idle connections: from the address that
    // holds its cap of them, and from a new address while the server is at its total cap.
    api_answers_from(1, addr).await;
    api_answers_from(200, addr).await;
    still_held("after the API answered");
    // And through the CLI (from 127.0.0.1, like the first one).
    let started = Instant::now();
    let out = server.cli(&["status"]).await;
    assert!(started.elapsed() < ANSWER_WITHIN, "`ringfence status` took {:?}", started.elapsed());
    assert_ne!(out.code, 6, "the CLI could not reach the server:\n{out}");
    for refusal in ["Too Many Requests", "Service Unavailable"] {
        assert!(!out.stderr.contains(refusal), "the limits refused the CLI:\n{out}");
    }
    // What an operator needs most in such a moment: to stop the rollout.
    let out = server.cli(&["abort", w, "--reason", "under a connection flood"]).await;
    assert_eq!(out.code, 0, "abort under 1,000 idle connections:\n{out}");

    // Every idle connection closed on this side, whatever the server did with it.
    idle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_sender_is_disconnected() {
    let server = Server::start().await;
    let addr = server_addr(&server);
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(format!("GET /v1/workloads HTTP/1.1\r\nhost: {addr}\r\nx-slow: ").as_bytes())
        .await
        .expect("send part of a head");
    let sent = Instant::now();
    let bound = HEADER_TIMEOUT + Duration::from_secs(5);
    let got = tokio::time::timeout(bound, read_to_close(&mut slow))
        .await
        .unwrap_or_else(|_| panic!("a connection with part of a head was still open after {bound:?}"));
    assert!(got.is_empty(), "an answer to a head that never ended: {:?}", String::from_utf8_lossy(&got));
    eprintln!("the slow header sender was disconnected after {:?}", sent.elapsed());
    drop(slow);
    // And the server goes on answering.
    api_answers_from(1, addr).await;
}
