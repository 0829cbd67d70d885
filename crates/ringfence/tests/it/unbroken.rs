//! No user sees a failure ringfence could have avoided: while users are served at 500
//! requests per second, a stable replica is SIGKILLed (the router tries the request again on
//! the other replica and ejects the dead one at its first refusal), then the router itself is
//! stopped (the server starts the next one on the same listening socket, so connections that
//! arrive in between wait instead of being refused), and the same after a server restart; and
//! weight shifts, the old version's replicas stopped, and a fallback from a bad release fail
//! no request of a healthy version.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{Load, Server, Spec, alive, by_version, pid_of};

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replica_and_a_restarted_router_fail_no_request() {
    let server = Server::start().await;
    let w = "unbroken";
    let spec = Spec { replicas: 2, ..Spec::new(w) };
    server.setup(&spec, &[("v1", &[])]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}\n{}", server.diagnose(w).await);
    let addr = server.router_addr(w).await;
    let load = Load::start(addr, 500.0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let s = server.status(w).await;
    let victim = pid_of(&s.replicas[0].instance);
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("SIGKILL a stable replica");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A router stopped the way an upgrade or an operator stops it.
    let old = s.router.as_ref().and_then(|r| r.pid).expect("the router is a process");
    kill(Pid::from_raw(old as i32), Signal::SIGTERM).expect("SIGTERM the router");
    let new = server
        .wait_status(w, "a new router", |s| s.router.as_ref().and_then(|r| r.pid).filter(|&p| p != old && alive(p)))
        .await;
    assert_eq!(server.router_addr(w).await, addr, "the new router serves the same address");
    tokio::time::sleep(Duration::from_secs(1)).await;

    none_failed(&server, w, load, 1_000, &format!("router {old} -> {new}, replica {victim} killed")).await;
}

/// Ends `load` and checks it ran (more than `at_least` requests) and no request failed.
async fn none_failed(server: &Server, w: &str, load: Load, at_least: usize, what: &str) {
    let samples = load.finish().await;
    let failed: Vec<_> = samples.iter().filter(|s| s.is_error()).collect();
    assert!(samples.len() > at_least, "the load ran: {} requests", samples.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed ({what}): first {:?}; by version {:?}\n{}",
        failed.len(),
        samples.len(),
        failed.first(),
        by_version(&samples),
        server.diagnose(w).await
    );
}

/// A server restarted while its router runs adopts the router and takes a copy of its users'
/// socket from it (`ringfence::handover`): when that router then exits, the address stays
/// open, and users who connect before the next router listens wait instead of being refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_router_adopted_after_a_server_restart_exits_and_refuses_nobody() {
    let mut server = Server::start().await;
    let w = "adopted";
    let spec = Spec { replicas: 2, ..Spec::new(w) };
    server.setup(&spec, &[("v1", &[])]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}\n{}", server.diagnose(w).await);
    let addr = server.router_addr(w).await;
    let old = server.status(w).await.router.and_then(|r| r.pid).expect("the router is a process");

    server.kill9();
    server.restart().await;
    let kept = "kept a copy of the adopted router's users' socket";
    crate::harness::wait_until("the restarted server to adopt the router and its socket", || {
        let tail = server.log_tail(200);
        async move { tail.contains(kept).then_some(()) }
    })
    .await;
    assert_eq!(server.status(w).await.router.and_then(|r| r.pid), Some(old), "the router was adopted, not replaced");

    let load = Load::start(addr, 500.0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill(Pid::from_raw(old as i32), Signal::SIGTERM).expect("SIGTERM the adopted router");
    let new = server
        .wait_status(w, "a new router", |s| s.router.as_ref().and_then(|r| r.pid).filter(|&p| p != old && alive(p)))
        .await;
    assert_eq!(server.router_addr(w).await, addr, "the new router serves the same address");
    tokio::time::sleep(Duration::from_secs(1)).await;

    none_failed(&server, w, load, 700, &format!("adopted router {old} -> {new}")).await;
}

/// At 500 requests per second: a healthy release shifted through every phase (10%, 50%, 100%)
/// and the old version's replicas stopped after it, then a bad release halted and fallen back
/// from. Only the bad release's own answers fail: none of a healthy version, and none the
/// router answers itself (no version).
#[tokio::test(flavor = "multi_thread")]
async fn weight_shifts_and_a_fallback_fail_no_request_of_a_healthy_version() {
    let server = Server::start().await;
    let w = "shifting";
    let spec = Spec { replicas: 2, ..Spec::new(w) };
    server.setup(&spec, &[("v1", &[]), ("v2", &["GREETING=hello"]), ("v3", &["SAMPLE_ERROR_RATE=0.5"])]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "deploy v1:\n{out}\n{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 500.0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let out = server.deploy_wait(w, "v2").await;
    assert_eq!(out.code, 0, "the healthy v2 completes:\n{out}\n{}", server.diagnose(w).await);
    server
        .wait_status(w, "v1's replicas to be stopped", |s| s.replicas.iter().all(|r| r.version == "v2").then_some(()))
        .await;
    let out = server.cli(&["deploy", w, "v3", "--wait", "--timeout", "30s"]).await;
    assert_eq!(out.code, 10, "the bad v3 is halted and fallen back from:\n{out}\n{}", server.diagnose(w).await);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let samples = load.finish().await;
    let seen = by_version(&samples);
    for v in ["v1", "v2", "v3"] {
        assert!(seen.get(v).is_some_and(|(n, _)| *n > 0), "{v} served nothing: {seen:?}");
    }
    assert!(seen["v3"].1 > 0, "the bad release failed requests of its own: {seen:?}");
    let avoidable: Vec<_> = samples.iter().filter(|s| s.is_error() && s.version.as_deref() != Some("v3")).collect();
    assert!(samples.len() > 3_000, "the load ran: {} requests", samples.len());
    assert!(
        avoidable.is_empty(),
        "{} of {} requests failed outside the bad release: first {:?}; by version {seen:?}\n{}",
        avoidable.len(),
        samples.len(),
        avoidable.first(),
        server.diagnose(w).await
    );
}
