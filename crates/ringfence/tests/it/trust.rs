//! Whether the verdicts can be trusted on their own: a router that restarts in the middle of a
//! bake must not leave the analysis blind (a bad canary is still caught and falls back), and a
//! healthy release judged by the default analysis completes every phase without anyone
//! promoting it, and a bake too short for the traffic is warned about when it is deployed.

use std::time::{Duration, Instant};

use ringfence_api::WorkloadStatus;
use ringfence_api::{Health, MitigationAction, Rollout, RolloutStatus};
use ringfence_core::spec::{Gate, parse};
use ringfence_core::{Event, EventKind};

use crate::harness::{
    Load, Server, Spec, assert_served_by, by_version, of_rollout, path_str, phases_passed, rollout_id,
};

/// What a person would read to understand a failure: status, timeline, actions, the server's
/// log, the plain-words `why` and the planner's view of the workload.
async fn everything(server: &Server, w: &str) -> String {
    let why = server.cli(&["why", w]).await;
    let plan = server.cli(&["plan", w]).await;
    format!(
        "{}\n--- ringfence why {w}\n{}{}\n--- ringfence plan {w}\n{}{}",
        server.diagnose(w).await,
        why.stdout,
        why.stderr,
        plan.stdout,
        plan.stderr
    )
}

/// What a poll decided: keep waiting, done, or a failure to report (with the diagnostics).
enum Poll<T> {
    Wait,
    Done(T),
    Fail(String),
}

/// Polls the workload's events and status every `every` until `f` decides, failing with
/// everything a person would look at when `f` says so or after `timeout`.
async fn poll<T>(
    server: &Server,
    w: &str,
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut(&[Event], &WorkloadStatus) -> Poll<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let events = server.events(w).await;
        let status = server.status(w).await;
        match f(&events, &status) {
            Poll::Done(t) => return t,
            Poll::Fail(why) => panic!("while waiting for {what}: {why}\n{}", everything(server, w).await),
            Poll::Wait => {}
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", everything(server, w).await);
        }
        tokio::time::sleep(every).await;
    }
}

async fn apply_text(server: &Server, name: &str, text: &str) {
    let file = server.path(&format!("{name}.toml"));
    std::fs::write(&file, text).expect("write the spec file");
    let out = server.cli(&["apply", path_str(&file)]).await;
    assert_eq!(out.code, 0, "apply failed:\n{out}\n--- spec\n{text}");
}

fn halted(events: &[Event], id: &str) -> Option<u64> {
    events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::RolloutHalted { rollout_id, .. } if rollout_id == id))
        .map(|e| e.seq)
}

/// A router restart in the middle of a bake starts the router's counters over. The analysis
/// must go on judging the canary on the new router's counters rather than give up on the
/// window the old router's counters began: v2, failing 20% of its requests, is halted and
/// traffic falls back to v1, on the evidence of the error-rate analysis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_restart_mid_bake_does_not_blind_the_analysis() {
    let server = Server::start().await;
    let w = "rrestart";
    // The breaker reacts to the same errors; it is kept out of the way so the analysis of the
    // error rate is what decides (as in `bad_release`).
    server
        .setup(&Spec { lenient_breaker: true, ..Spec::new(w) }, &[("v1", &[]), ("v2", &["SAMPLE_ERROR_RATE=0.2"])])
        .await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", everything(&server, w).await);
    // v2's bakes are long: the router is killed at the start of the first one, and the
    // analysis has the rest of it, on the restarted router's counters, to catch v2.
    let long = Spec { lenient_breaker: true, phases: vec![(10, "30s"), (50, "30s"), (100, "30s")], ..Spec::new(w) };
    apply_text(&server, w, &long.toml()).await;

    // v1 serves steady load through the router.
    let addr = server.router_addr(w).await;
    let mut load = Load::start(addr, 150.0, 500);
    let since = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_served_by(load.samples(), since, "v1", "v1 under steady load before the deploy");

    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "deploy v2:\n{out}\n{}", everything(&server, w).await);
    let id = rollout_id(&out);

    // The moment the first bake begins (its baseline taken on the current router), the router
    // is killed: v2 has had at most a few requests judged, fewer than a verdict needs.
    let bake_seq = poll(
        &server,
        w,
        "the bake of v2's first phase to start",
        Duration::from_secs(60),
        Duration::from_millis(20),
        |evs, _| {
            if let Some(seq) = halted(evs, &id) {
                return Poll::Fail(format!("the rollout was halted (event {seq}) before its first bake began"));
            }
            evs.iter()
                .find(|e| matches!(&e.kind, EventKind::BakeStarted { rollout_id, phase: 0, .. } if *rollout_id == id))
                .map_or(Poll::Wait, |e| Poll::Done(e.seq))
        },
    )
    .await;
    let old_pid = server.kill9_router(w).await;

    // The server sees its router gone and starts another (on the same listen address, serving
    // the table the old one persisted).
    let (restart_seq, new_pid) = poll(
        &server,
        w,
        "the server to start the router again",
        Duration::from_secs(60),
        Duration::from_millis(50),
        |evs, _| {
            evs.iter()
                .filter(|e| e.seq > bake_seq)
                .find_map(|e| match &e.kind {
                    EventKind::RouterStarted { pid, .. } if *pid != old_pid => Some((e.seq, *pid)),
                    _ => None,
                })
                .map_or(Poll::Wait, Poll::Done)
        },
    )
    .await;
    // Otherwise this test did not exercise what it is about: the old router's counters decided.
    let evs = server.events(w).await;
    if let Some(seq) = halted(&evs, &id).filter(|seq| *seq < restart_seq) {
        panic!(
            "v2 was halted (event {seq}) on the killed router's counters, before the router restarted \
             (event {restart_seq}): the test could not exercise a restart mid-bake\n{}",
            everything(&server, w).await
        );
    }

    // v2 is judged on the restarted router's counters: halted and mitigated, never held as
    // unknown nor passed.
    poll(
        &server,
        w,
        "v2 to be halted and mitigated after the router restarted",
        Duration::from_secs(120),
        Duration::from_millis(100),
        |evs, s| {
            for k in of_rollout(evs, &id) {
                match k {
                    EventKind::PhaseHeld { phase, .. } => {
                        return Poll::Fail(format!(
                            "phase {phase} was held on an unknown verdict after the router restarted (pid {old_pid} \
                         killed, pid {new_pid} started): the analysis went blind instead of judging v2 on \
                         the new router's counters"
                        ));
                    }
                    EventKind::PhasePassed { phase, .. } => {
                        return Poll::Fail(format!("phase {phase} passed with v2 failing 20% of its requests"));
                    }
                    EventKind::RolloutCompleted { .. } => return Poll::Fail("v2 completed".into()),
                    _ => {}
                }
            }
            match s.rollout.as_ref().filter(|r| r.id == id).map(|r| r.status) {
                Some(RolloutStatus::Mitigated) => Poll::Done(()),
                Some(RolloutStatus::Progressing | RolloutStatus::Paused | RolloutStatus::Mitigating) => Poll::Wait,
                other => Poll::Fail(format!("the rollout ended {other:?}, not mitigated")),
            }
        },
    )
    .await;
    let ended = Instant::now();

    // The decision is the analysis's, with evidence from the new router's counters.
    let r: Rollout = server.rollout(w, &id).await;
    let diag = everything(&server, w).await;
    let decision = r.decision.as_ref().unwrap_or_else(|| panic!("a mitigated rollout has a decision\n{diag}"));
    assert_eq!(decision.action, MitigationAction::Fallback, "{decision:#?}\n{diag}");
    let verdict =
        decision.verdict.as_ref().unwrap_or_else(|| panic!("an automatic decision keeps its verdict\n{diag}"));
    let failing = verdict
        .signals
        .iter()
        .find(|s| s.signal.starts_with("error_rate") && s.health == Health::Unhealthy)
        .unwrap_or_else(|| panic!("the error-rate analysis is not among the failing signals: {verdict:#?}\n{diag}"));
    assert!(failing.sample_size > 0, "the failing error-rate signal counted no requests: {failing:#?}\n{diag}");
    let evs = server.events(w).await;
    let halt = halted(&evs, &id).expect("a mitigated rollout was halted");
    assert!(halt > restart_seq, "halted at event {halt}, before the router restarted at event {restart_seq}\n{diag}");

    let why = server.cli(&["why", w]).await;
    assert_eq!(why.code, 0, "{why}");
    assert!(why.stdout.contains("Decision: Fallback"), "{why}");
    assert!(
        why.stdout.lines().any(|l| l.trim_start().starts_with("[FAILED ] error_rate")),
        "`why` does not name the error-rate analysis as failing:\n{why}"
    );
    assert!(!why.stdout.contains("could not be read"), "`why` says the metrics could not be read:\n{why}");

    // Traffic is back on v1: stable, pinned, and everything sent after the mitigation is v1's.
    let s = server.status(w).await;
    assert_eq!(s.stable.as_deref(), Some("v1"), "{diag}");
    assert_eq!(s.pin.as_ref().map(|p| p.version.as_str()), Some("v1"), "{diag}");
    assert!(s.replicas.iter().all(|r| r.version == "v1"), "{:?}\n{diag}", s.replicas);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_served_by(&load.finish().await, ended, "v1", "after the mitigation");
}

/// The example spec (`examples/checkout.toml`) with another name and these phases, everything
/// else, its health section and default analysis included, as it is.
fn example_spec(name: &str, phases: &[(u32, &str)]) -> String {
    let example = ringfence_core::spec::EXAMPLE;
    let start = example.find("[[rollout.phases]]").expect("the example has phases");
    let end = example.find("\n[health]").expect("the example has a [health] section");
    assert!(start < end, "the example's phases no longer come before [health]");
    let mut text = example[..start].to_string();
    for (i, (weight, bake)) in phases.iter().enumerate() {
        text.push_str(&format!(
            "[[rollout.phases]]\nname = \"p{}\"\nweight = {weight}\nbake = \"{bake}\"\ngates = [\"health\"]\n\n",
            i + 1
        ));
    }
    text.push_str(&example[end..]);
    let from = "name = \"checkout\"";
    assert!(text.contains(from), "the example's workload name changed");
    let text = text.replacen(from, &format!("name = \"{name}\""), 1);

    // Nothing but the name and the phases differ: the analysis is the example's, unweakened.
    let mine = parse("trust.toml", &text).unwrap_or_else(|e| panic!("the test's spec is invalid: {e:#?}\n{text}"));
    let theirs = parse("checkout.toml", example).expect("the example parses");
    assert_eq!(mine.health, theirs.health, "the test's spec must judge as the example does");
    assert!(mine.rollout.phases.iter().all(|p| !p.gates.contains(&Gate::Approval)), "no approval gate here");
    text
}

/// Identical code and configuration as v1, under steady load: the default analysis must pass
/// every phase on its own, with no hold, no halt and no one promoting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_release_completes_on_its_own_with_the_default_analysis() {
    let server = Server::start().await;
    let w = "trusthealthy";
    // Bakes a little above what `ringfence plan` recommends at this load (about 40 s at 10%
    // and 10 s at 50% of 175 req/s for a release with no errors). Only the phases may change
    // here: the health and analysis sections stay the example's (checked by `example_spec`).
    let text = example_spec(w, &[(10, "60s"), (50, "20s"), (100, "10s")]);
    apply_text(&server, w, &text).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &[]).await;
    let out = server.cli(&["deploy", w, "v1", "--wait", "--timeout", "120s"]).await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", everything(&server, w).await);

    // Steady load, long enough before the deploy for the server to know the usual rate. 1,000
    // sticky users: this workload's first 10% of buckets holds 12.6% of them (users are hashed
    // with the workload's name), and so about 12.6% of the requests however many come; the
    // sample-ratio check must take that for the users' chance it is, not for a mismatch.
    let load = Load::start(server.router_addr(w).await, 175.0, 1000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "deploy v2:\n{out}\n{}", everything(&server, w).await);
    let id = rollout_id(&out);

    poll(
        &server,
        w,
        "v2 to complete every phase on its own",
        Duration::from_secs(240),
        Duration::from_millis(250),
        |evs, _| {
            for k in of_rollout(evs, &id) {
                match k {
                    // A phase held past its bake still passes on its own once the evidence is in;
                    // what must not happen is a halt or a person stepping in.
                    EventKind::RolloutHalted { .. } => return Poll::Fail("the identical release was halted".into()),
                    EventKind::PromoteRequested { .. } => return Poll::Fail("someone promoted".into()),
                    EventKind::RolloutCompleted { .. } => return Poll::Done(()),
                    _ => {}
                }
            }
            Poll::Wait
        },
    )
    .await;

    let diag = everything(&server, w).await;
    let r = server.rollout(w, &id).await;
    assert_eq!(r.status, RolloutStatus::Completed, "{r:#?}\n{diag}");
    let events = server.events(w).await;
    let passed = phases_passed(&events, &id);
    assert_eq!(passed, [(0, false), (1, false), (2, false)], "every phase passed on its own\n{diag}");
    let s = server.status(w).await;
    assert_eq!(s.stable.as_deref(), Some("v2"), "{diag}");
    let samples = load.finish().await;
    assert!(by_version(&samples).contains_key("v2"), "the load never reached v2: {:?}\n{diag}", by_version(&samples));
}

/// A bake too short for the workload's traffic is said at once, when the release is deployed,
/// with the figure `ringfence plan` gives; the deploy still starts (a warning, not a refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_too_short_for_the_traffic_is_warned_about_on_deploy() {
    let server = Server::start().await;
    let w = "trustshort";
    let text = example_spec(w, &[(10, "5s"), (100, "5s")]);
    apply_text(&server, w, &text).await;
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &[]).await;
    let out = server.cli(&["deploy", w, "v1", "--wait", "--timeout", "120s"]).await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", everything(&server, w).await);
    let _load = Load::start(server.router_addr(w).await, 100.0, 500);
    // The warning is computed from the router's average rate since it started: give it time
    // to have seen the load.
    tokio::time::sleep(Duration::from_secs(12)).await;

    let out = server.cli(&["-o", "json", "deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "deploy v2:\n{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("deploy answers JSON");
    let warnings: Vec<&str> = v["warnings"].as_array().into_iter().flatten().filter_map(|w| w.as_str()).collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("phase 1 at 10% of") && w.contains("the bake is 5 s")),
        "expected a warning on the 5 s bake at 10%: {v:#}"
    );
    let out = server.cli(&["abort", w, "--reason", "test done"]).await;
    assert_eq!(out.code, 0, "abort:\n{out}");
    poll(&server, w, "the abort to finish", Duration::from_secs(60), Duration::from_millis(250), |_, s| {
        match &s.rollout {
            Some(r) if !r.status.is_active() => Poll::Done(()),
            _ => Poll::Wait,
        }
    })
    .await;

    // The text output says it on stderr, as a warning.
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "deploy v2 again:\n{out}");
    assert!(out.stderr.contains("warning: phase 1 at 10% of"), "{out}");
}
