//! Bad releases are halted by the signal that catches them, traffic returns to the stable
//! version, the bad version's processes are stopped, and `deploy --wait` says so (exit 10).

use std::time::{Duration, Instant};

use ringfence_api::{Health, MitigationAction, RolloutStatus, SignalResult};
use ringfence_core::EventKind;
use ringfence_core::explain::describe;

use crate::harness::{Load, Server, Spec, alive, assert_served_by, rollout_id, started_pids};

/// One kind of bad release: how it is configured and what the evidence must show.
struct Case<'a> {
    workload: &'a str,
    spec: Spec<'a>,
    /// The v2 release's configuration (environment of its replicas).
    config: &'a [&'a str],
    /// The signal that must be named as failing.
    signal: &'a str,
    /// Checks the failing signal's numbers in the stored decision.
    check: fn(&SignalResult),
    /// Text the signal's line in `ringfence why` must contain.
    why_has: &'a [&'a str],
    /// A spec applied after v1 is live and before v2 is deployed.
    respec: Option<Spec<'a>>,
}

async fn bad_release_is_mitigated(case: Case<'_>) {
    let w = case.workload;
    let server = Server::start().await;
    server.setup(&case.spec, &[("v1", &[]), ("v2", case.config)]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", server.diagnose(w).await);
    if let Some(spec) = &case.respec {
        let file = server.path("respec.toml");
        std::fs::write(&file, spec.toml()).expect("write the new spec");
        let out = server.cli(&["apply", crate::harness::path_str(&file)]).await;
        assert_eq!(out.code, 0, "{out}");
    }

    let load = Load::start(server.router_addr(w).await, 150.0, 200);
    let out = server.cli(&["deploy", w, "v2", "--wait", "--timeout", "30s"]).await;
    let ended = Instant::now();
    assert_eq!(out.code, 10, "a halted rollout must exit 10:\n{out}\n{}", server.diagnose(w).await);
    let id = rollout_id(&out);

    // A replica of the new version that exits unasked is evidence, never restarted away.
    let events = server.events(w).await;
    if let Some(exit) =
        events.iter().position(|e| matches!(&e.kind, EventKind::ReplicaExited { version, .. } if version == "v2"))
    {
        let restarts: Vec<String> = events[exit..]
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::ReplicaStarted { version, adopted: false, .. } if version == "v2"))
            .map(describe)
            .collect();
        assert!(
            restarts.is_empty(),
            "v2 was started again after its replica exited ({}): {restarts:#?}\n{}",
            describe(&events[exit]),
            server.diagnose(w).await
        );
    }

    // Decided by the right signal, with its evidence.
    let r = server.rollout(w, &id).await;
    assert_eq!(r.status, RolloutStatus::Mitigated, "{r:#?}");
    let decision = r.decision.as_ref().expect("a mitigated rollout has a decision");
    assert_eq!(decision.action, MitigationAction::Fallback, "{decision:#?}");
    let verdict = decision.verdict.as_ref().expect("an automatic decision keeps its verdict");
    let failing = verdict
        .signals
        .iter()
        .find(|s| s.signal.starts_with(case.signal) && s.health == Health::Unhealthy)
        .unwrap_or_else(|| panic!("{} is not among the failing signals: {verdict:#?}", case.signal));
    (case.check)(failing);

    let why = server.cli(&["why", w]).await;
    assert_eq!(why.code, 0, "{why}");
    assert!(why.stdout.contains("Decision: Fallback"), "{why}");
    let line = why
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("[FAILED ] {}", case.signal)))
        .unwrap_or_else(|| panic!("`why` does not name {} as failing:\n{why}", case.signal));
    for part in case.why_has {
        assert!(line.contains(part), "`why` line {line:?} lacks {part:?}:\n{why}");
    }

    // The bad version is gone, the stable version is what runs and what is desired.
    let v2_pids = started_pids(&server.events(w).await, "v2");
    let running: Vec<u32> = v2_pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(running.is_empty(), "v2 replicas still run: {running:?}");
    assert_eq!(server.replica_processes(w, "v2"), Vec::<u32>::new(), "v2 processes still run");
    let s = server.status(w).await;
    assert_eq!(s.stable.as_deref(), Some("v1"));
    assert_eq!(s.pin.as_ref().map(|p| p.version.as_str()), Some("v1"));
    assert!(s.replicas.iter().all(|r| r.version == "v1"), "{:?}", s.replicas);

    // Stable keeps serving: everything sent after the mitigation ended is v1, without errors.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_served_by(&load.finish().await, ended, "v1", "after the mitigation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_with_errors_is_halted_and_falls_back() {
    bad_release_is_mitigated(Case {
        workload: "errors",
        // The breaker reacts to the same errors; it is kept out of the way so the error
        // rate is what decides here.
        spec: Spec { lenient_breaker: true, ..Spec::new("errors") },
        config: &["SAMPLE_ERROR_RATE=0.5"],
        // The sequential test against the stable version: its evidence (an e-value) crossed
        // 1/alpha, with both versions' counts behind it.
        signal: "error_rate",
        // (or the absolute 5% guard, also sequential).
        check: |s| {
            if s.unit == "e-value" {
                assert!(s.observed.zip(s.threshold).is_some_and(|(o, t)| o >= t), "{s:#?}");
                assert!(s.sample_size > 0 && s.baseline_sample_size.is_some_and(|n| n > 0), "{s:#?}");
            } else {
                assert_eq!((s.signal.as_str(), s.threshold), ("error_rate_limit", Some(0.05)), "{s:#?}");
                assert!(s.observed.is_some_and(|o| o > 0.05), "{s:#?}");
            }
        },
        why_has: &["error_rate", "failed"],
        respec: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_release_is_halted_and_falls_back() {
    bad_release_is_mitigated(Case {
        workload: "slow",
        spec: Spec { max_p99_latency: "100ms", ..Spec::new("slow") },
        config: &["SAMPLE_LATENCY_MS=300"],
        // Slower than the stable version everywhere in the distribution: the sequential latency
        // test (or the absolute p99 guard) decides, with the p99s of both in evidence.
        signal: "latency",
        check: |s| {
            if s.unit == "e-value" {
                assert!(s.observed.zip(s.threshold).is_some_and(|(o, t)| o >= t), "{s:#?}");
            } else {
                assert_eq!((s.signal.as_str(), s.unit.as_str(), s.threshold), ("latency_p99_limit", "ms", Some(100.0)));
                assert!(s.observed.is_some_and(|o| o >= 100.0), "{s:#?}");
            }
        },
        why_has: &["latency", "p99"],
        respec: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_that_crashes_on_start_is_halted_and_falls_back() {
    bad_release_is_mitigated(Case {
        workload: "nostart",
        spec: Spec::new("nostart"),
        config: &["SAMPLE_CRASH_ON_START=true"],
        signal: "start",
        check: |s| assert!(s.detail.contains("exited during start"), "{s:#?}"),
        why_has: &["v2 replica", "exited during start", "exit status: 3"],
        respec: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_that_crashes_under_load_is_halted_and_falls_back() {
    bad_release_is_mitigated(Case {
        workload: "crashy",
        spec: Spec { phases: vec![(10, "2s"), (50, "2s"), (100, "2s")], ..Spec::new("crashy") },
        config: &["SAMPLE_CRASH_AFTER=30"],
        signal: "crash",
        check: |s| {
            assert!(s.observed.is_some_and(|o| o >= 1.0), "{s:#?}");
            assert!(s.detail.contains("exit status: 4"), "{s:#?}");
        },
        why_has: &["replica 0 (instance proc:", "exited", "exit status: 4"],
        respec: None,
    })
    .await;
}

/// Bad input of another kind: an executor command that cannot run at all. The stable version,
/// started before the spec changed, keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_whose_command_cannot_start_is_halted_and_stable_keeps_serving() {
    bad_release_is_mitigated(Case {
        workload: "nobin",
        spec: Spec::new("nobin"),
        config: &[],
        signal: "start",
        check: |s| assert!(s.detail.contains("/nonexistent/ringfence-test-binary"), "{s:#?}"),
        why_has: &["v2 replica 0", "/nonexistent/ringfence-test-binary"],
        respec: Some(Spec {
            command: Some(r#"["/nonexistent/ringfence-test-binary", "{port}"]"#),
            ..Spec::new("nobin")
        }),
    })
    .await;
}
