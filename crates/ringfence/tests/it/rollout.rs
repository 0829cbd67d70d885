//! Rollouts that go as planned: a good release promoted without a human, a release with no
//! traffic held (unknown is never healthy), rollback to the last known good, and sticky users.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringfence::loadgen::Sample;
use ringfence_api::{MitigationAction, RolloutKind, RolloutStatus, Stage};
use ringfence_core::EventKind;

use crate::harness::{
    Load, Server, Spec, alive, assert_served_by, by_version, of_rollout, phases_passed, rollout_id, started_pids,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_release_is_promoted_through_every_phase_without_a_human() {
    let server = Server::start().await;
    let w = "good";
    server.setup(&Spec::new(w), &[("v1", &[]), ("v2", &["GREETING=hello"])]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", server.diagnose(w).await);

    let load = Load::start(server.router_addr(w).await, 150.0, 200);
    let out = server.deploy_wait(w, "v2").await;
    let completed = Instant::now();
    assert_eq!(out.code, 0, "`deploy good v2 --wait` must exit 0:\n{out}\n{}", server.diagnose(w).await);
    let id = rollout_id(&out);

    let r = server.rollout(w, &id).await;
    assert_eq!((r.kind, r.status), (RolloutKind::Deploy, RolloutStatus::Completed), "{r:#?}");
    let s = server.status(w).await;
    assert_eq!(s.stable.as_deref(), Some("v2"));
    assert_eq!(s.last_known_good.as_ref().map(|l| l.version.as_str()), Some("v2"));
    assert_eq!(s.last_known_good.as_ref().map(|l| l.rollout_id.as_str()), Some(id.as_str()));

    let events = server.events(w).await;
    let passed = phases_passed(&events, &id);
    assert_eq!(passed, [(0, false), (1, false), (2, false)], "one phase_passed per phase, none by hand");
    // Each comparison phase recorded the traffic it was judged on, for the next ones to carry.
    let windows: Vec<(usize, u32, u64, u64)> = of_rollout(&events, &id)
        .filter_map(|k| match k {
            EventKind::PhasePassed { window: Some(w), .. } => {
                Some((w.phase, w.weight_bp, w.canary.requests, w.stable.requests))
            }
            _ => None,
        })
        .collect();
    assert_eq!(windows.len(), 2, "the two phases below 100% carry windows: {windows:?}");
    assert!(windows.iter().all(|&(_, w, c, s)| w < 10_000 && c > 0 && s > 0), "{windows:?}");
    assert_eq!(r.windows.iter().map(|w| w.phase).collect::<Vec<_>>(), [windows[0].0, windows[1].0]);
    // Without a human: the deploy itself is the only thing a person did to this rollout.
    let by_people: Vec<_> = events
        .iter()
        .filter(|e| e.kind.rollout_id() == Some(id.as_str()) && e.actor != "controller")
        .map(|e| e.kind.type_name())
        .collect();
    assert_eq!(by_people, ["rollout_started"], "only the deploy came from a person");

    // v1 goes away once nothing routes to it.
    let v1_pids = started_pids(&events, "v1");
    server
        .wait_status(w, "v1's replicas to be stopped", |s| s.replicas.iter().all(|r| r.version == "v2").then_some(()))
        .await;
    assert!(v1_pids.iter().all(|p| !alive(*p)), "v1 replicas {v1_pids:?} still run");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.finish().await;
    let during: Vec<Sample> = samples.iter().filter(|s| s.sent_at < completed).cloned().collect();
    assert!(by_version(&during).get("v2").is_some_and(|(n, _)| *n > 0), "v2 served nothing during its rollout");
    assert_served_by(&samples, completed, "v2", "after the rollout completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_without_traffic_is_held_never_promoted_and_abort_returns_to_stable() {
    let server = Server::start().await;
    let w = "quiet";
    let spec = Spec { phases: vec![(10, "1s"), (50, "1s"), (100, "1s")], ..Spec::new(w) };
    server.setup(&spec, &[("v1", &[]), ("v2", &["GREETING=hello"])]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", server.diagnose(w).await);

    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    server
        .wait_events(w, "the first phase to be held after its bake", |ev| {
            of_rollout(ev, &id).any(|k| matches!(k, EventKind::PhaseHeld { phase: 0, .. })).then_some(())
        })
        .await;
    // Well past the bake (1 s), it must still be where it was.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = server.rollout(w, &id).await;
    assert_eq!((r.status, r.phase, r.stage), (RolloutStatus::Progressing, 0, Stage::Baking), "{r:#?}");
    let events = server.events(w).await;
    let moved: Vec<String> = of_rollout(&events, &id)
        .filter(|k| matches!(k, EventKind::PhasePassed { .. } | EventKind::RolloutHalted { .. }))
        .map(|k| k.type_name())
        .collect();
    assert!(moved.is_empty(), "no traffic must neither promote nor halt: {moved:?}");
    let held = r.last_verdict.as_ref().expect("a held phase keeps its verdict");
    assert_eq!(held.health, ringfence_api::Health::Unknown);

    let why = server.cli(&["why", w]).await;
    assert_eq!(why.code, 0, "{why}");
    assert!(why.stdout.contains("is progressing"), "{why}");
    assert!(why.stdout.contains("Held after its bake: the verdict is unknown"), "{why}");
    assert!(why.stdout.contains("[unknown] traffic: only 0 of the 20 requests"), "{why}");
    // And where to see it in the hub.
    assert!(why.stdout.contains(&format!("page: {}/ui/w/{w}/r/", server.url())), "{why}");

    let out = server.cli(&["abort", w, "--reason", "nobody uses it yet"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains(&id), "{out}");
    assert_eq!(server.rollout(w, &id).await.status, RolloutStatus::Aborted);
    server
        .wait_status(w, "traffic back on v1 and v2 stopped", |s| {
            let routes = s.routes.as_ref()?;
            let only_v1 = routes.1.iter().all(|g| g.version == "v1" && g.weight_bp == 10_000);
            (only_v1 && s.replicas.iter().all(|r| r.version == "v1")).then_some(())
        })
        .await;
    let v2_pids = started_pids(&events, "v2");
    assert!(!v2_pids.is_empty() && v2_pids.iter().all(|p| !alive(*p)), "v2 replicas {v2_pids:?} still run");
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v1"));

    let start = Instant::now();
    let load = Load::start(server.router_addr(w).await, 100.0, 50);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_served_by(&load.finish().await, start, "v1", "after the abort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_promotion_takes_the_fast_path_and_rollback_during_a_rollout_falls_back() {
    let server = Server::start().await;
    let w = "back";
    server.setup(&Spec::new(w), &[("v1", &[]), ("v2", &["GREETING=hello"]), ("v3", &["GREETING=hi"])]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", server.diagnose(w).await);
    let mut load = Load::start(server.router_addr(w).await, 150.0, 200);
    let out = server.deploy_wait(w, "v2").await;
    assert_eq!(out.code, 0, "deploy v2:\n{out}\n{}", server.diagnose(w).await);

    // After promotion: one command, the fast path.
    let out = server.cli(&["rollback", w, "--wait", "--timeout", "45s", "--reason", "v2 breaks checkout"]).await;
    let rolled_back = Instant::now();
    assert_eq!(out.code, 0, "`rollback --wait` must exit 0:\n{out}\n{}", server.diagnose(w).await);
    let s = server.status(w).await;
    let r = s.rollout.clone().expect("the rollback is the latest rollout");
    assert_eq!((r.kind, r.status), (RolloutKind::Rollback, RolloutStatus::Completed), "{r:#?}");
    assert_eq!(r.phases.len(), 1, "the fast path has one phase: {r:#?}");
    assert_eq!((r.release.as_str(), r.from.as_deref()), ("v1", Some("v2")));
    assert_eq!(s.stable.as_deref(), Some("v1"));
    assert_eq!(s.last_known_good.as_ref().map(|l| l.version.as_str()), Some("v1"));
    let pin = s.pin.as_ref().expect("a rollback pins the desired state");
    assert_eq!(pin.version, "v1", "{pin:?}");
    server
        .wait_status(w, "v2's replicas to be stopped", |s| s.replicas.iter().all(|r| r.version == "v1").then_some(()))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_served_by(load.samples(), rolled_back, "v1", "after the rollback");

    // During a rollout: back to its stable version.
    let out = server.cli(&["deploy", w, "v3"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    server
        .wait_status(w, "v3 to take its canary share", |s| {
            let r = s.rollout.as_ref()?;
            (r.id == id && r.stage == Stage::Baking).then_some(())
        })
        .await;
    let out = server.cli(&["rollback", w, "--wait", "--timeout", "45s"]).await;
    let fell_back = Instant::now();
    assert_eq!(out.code, 0, "`rollback --wait` during a rollout must exit 0:\n{out}\n{}", server.diagnose(w).await);
    let r = server.rollout(w, &id).await;
    assert_eq!(r.status, RolloutStatus::Mitigated, "{r:#?}");
    assert_eq!(r.decision.as_ref().map(|d| d.action), Some(MitigationAction::ManualRollback), "{r:#?}");
    let s = server.status(w).await;
    assert_eq!(s.stable.as_deref(), Some("v1"));
    let v3_pids = started_pids(&server.events(w).await, "v3");
    assert!(!v3_pids.is_empty() && v3_pids.iter().all(|p| !alive(*p)), "v3 replicas {v3_pids:?} still run");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_served_by(&load.finish().await, fell_back, "v1", "after falling back from v3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_stay_on_the_new_version_once_they_have_seen_it() {
    let server = Server::start().await;
    let w = "sticky";
    server.setup(&Spec::new(w), &[("v1", &[]), ("v2", &["GREETING=hello"])]).await;
    let out = server.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", server.diagnose(w).await);

    let start = Instant::now();
    let load = Load::start(server.router_addr(w).await, 150.0, 200);
    let out = server.deploy_wait(w, "v2").await;
    assert_eq!(out.code, 0, "deploy v2:\n{out}\n{}", server.diagnose(w).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.finish().await;

    // The router tells every user which group served them.
    for s in samples.iter().filter(|s| s.status.is_some()) {
        assert!(matches!(s.group.as_deref(), Some("canary" | "stable")), "no x-ringfence-group: {s:?}");
    }

    let mut per_user: BTreeMap<u32, Vec<&Sample>> = BTreeMap::new();
    for s in samples.iter().filter(|s| !s.is_error()) {
        per_user.entry(s.user).or_default().push(s);
    }
    let mut switched = 0;
    for (user, seq) in per_user.iter_mut() {
        seq.sort_by_key(|s| s.sent_at);
        let Some(first_v2) = seq.iter().position(|s| s.version.as_deref() == Some("v2")) else { continue };
        if first_v2 > 0 {
            switched += 1;
        }
        // Back on v1 means a request that left after the first v2 answer came back: two
        // requests in flight together may reach the router in either order around a change.
        let seen_v2 = seq[first_v2].done_at;
        let back = seq[first_v2..].iter().any(|s| s.sent_at >= seen_v2 && s.version.as_deref() == Some("v1"));
        let timeline: Vec<String> = seq
            .iter()
            .map(|s| {
                format!(
                    "{:.3}s {} {}",
                    s.sent_at.duration_since(start).as_secs_f64(),
                    s.version.as_deref().unwrap_or("-"),
                    s.group.as_deref().unwrap_or("-")
                )
            })
            .collect();
        assert!(!back, "user-{user} was served v2 and then v1 again: {timeline:#?}");
    }
    // Not vacuous: users moved from v1 to v2 as the weight rose.
    assert!(switched > 0, "no user moved from v1 to v2: {:?}", by_version(&samples));
    assert!(samples.iter().any(|s| s.group.as_deref() == Some("canary")), "nobody was in the canary group");
}

/// A deleted workload runs nothing any more (replicas, router), its history stays readable,
/// and applying its spec brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_workload_stops_everything_and_keeps_its_history() {
    let server = Server::start().await;
    let w = "retiring";
    server.setup(&Spec::new(w), &[("v1", &[]), ("v2", &[])]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let s = server.status(w).await;
    let router_pid = s.router.as_ref().expect("a router").pid.expect("a router process");
    let replicas: Vec<u32> = started_pids(&server.events(w).await, "v1");
    assert!(!replicas.is_empty() && crate::harness::alive(router_pid));

    // Only an admin deletes; a deployer is refused and nothing changes.
    let deployer = server.token_with("ci", &[&format!("deployer:{w}")]).await;
    let out = server.cli_as(&deployer, &["delete", w, "--reason", "cleanup"]).await;
    assert_eq!(out.code, 7, "{out}");
    let out = server.cli(&["delete", w, "--reason", "replaced by checkout"]).await;
    assert_eq!(out.code, 0, "{out}");
    crate::harness::wait_until("the workload's processes stopped", || async {
        (replicas.iter().chain([&router_pid]).all(|p| !crate::harness::alive(*p))).then_some(())
    })
    .await;
    let out = server.cli(&["status", w]).await;
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stderr.contains("was deleted"), "{out}");
    let list = server.cli(&["status", "-o", "json"]).await;
    assert!(!list.stdout.contains(w), "a deleted workload is not listed: {list}");
    let events = server.cli(&["events", w]).await;
    assert_eq!(events.code, 0, "{events}");
    assert!(events.stdout.contains("workload deleted") && events.stdout.contains("router (pid"), "{events}");
    let json = server.cli(&["events", w, "-o", "json"]).await;
    assert!(json.stdout.contains("\"reason\": \"replaced by checkout\""), "{json}");
    assert_eq!(server.cli(&["deploy", w, "v2"]).await.code, 4, "nothing deploys to a deleted workload");

    // Its spec applied again brings it back, its stable version running again.
    let file = server.path(&format!("{w}.toml"));
    assert_eq!(server.cli(&["apply", crate::harness::path_str(&file)]).await.code, 0);
    server
        .wait_status(w, "the workload back with v1 running", |s| {
            (s.stable.as_deref() == Some("v1") && s.replicas.iter().any(|r| r.version == "v1") && s.router.is_some())
                .then_some(())
        })
        .await;
}

/// `ringfence redeploy`: the stable version onto fresh instances, one at a time, each leaving
/// the traffic split before it stops, so users see no failure; refused while a rollout runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_replaces_every_stable_instance_one_at_a_time_without_a_failed_request() {
    let server = Server::start().await;
    let w = "fresh";
    let mut spec = Spec::new(w);
    spec.replicas = 2;
    server.setup(&spec, &[("v1", &[])]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let before: Vec<String> = server.status(w).await.replicas.iter().map(|r| r.instance.clone()).collect();
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let out = server.cli(&["redeploy", w, "--reason", "host-7 leaks file descriptors"]).await;
    assert_eq!(out.code, 0, "{out}");
    let again = server.cli(&["redeploy", w]).await;
    assert_eq!(again.code, 5, "one redeploy at a time: {again}");
    let after = server
        .wait_status(w, "both instances replaced", |s| {
            let now: Vec<String> = s.replicas.iter().map(|r| r.instance.clone()).collect();
            (now.len() == 2 && now.iter().all(|i| !before.contains(i))).then_some(now)
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let samples = load.finish().await;
    let failed: Vec<_> = samples.iter().filter(|s| s.is_error()).collect();
    assert!(
        failed.is_empty(),
        "users saw {} failures during the redeploy: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    // One at a time: the second old instance stopped only after the first one's slot ran again.
    let events = server.events(w).await;
    let order: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ReplicaStopped { instance, .. } if before.contains(instance) => Some("stop".to_string()),
            EventKind::ReplicaStarted { instance, .. } if after.contains(instance) => Some("start".to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["stop", "start", "stop", "start"], "one instance at a time");
}

/// Roll forward: a rollout halted with exposure frozen (here: automatic fallback is off) is
/// replaced by an announced hotfix of its release, which then goes through the plan and ends
/// healthy; any other release waits until the halted rollout is dealt with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_hotfix_rolls_a_halted_rollout_forward() {
    let server = Server::start().await;
    let w = "forward";
    let spec = Spec { lenient_breaker: true, ..Spec::new(w) };
    let text = spec.toml().replacen("auto_fallback = true", "auto_fallback = false", 1);
    let file = server.path("forward.toml");
    std::fs::write(&file, &text).unwrap();
    let out = server.cli(&["apply", crate::harness::path_str(&file)]).await;
    assert_eq!(out.code, 0, "{out}");
    server.release(w, "v1", &[]).await;
    server.release(w, "v2", &["SAMPLE_ERROR_RATE=0.5"]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    let load = Load::start(server.router_addr(w).await, 100.0, 200);
    let out = server.cli(&["deploy", w, "v2"]).await;
    let halted = rollout_id(&out);
    server
        .wait_status(w, "v2 halted, exposure frozen", |s| {
            s.rollout.as_ref().filter(|r| r.id == halted && r.status == RolloutStatus::Halted).map(|_| ())
        })
        .await;
    // The fix is announced; an unrelated release cannot jump the queue.
    let out = server
        .cli(&["release", "create", w, "--version", "v3", "--artifact", "sample-app:v3", "--hotfix-for", "v2"])
        .await;
    assert_eq!(out.code, 0, "{out}");
    let shown = server.cli(&["release", "show", w, "v3"]).await;
    assert!(shown.stdout.contains("hotfix   for v2"), "{shown}");
    server.release(w, "v4", &[]).await;
    let refused = server.cli(&["deploy", w, "v4"]).await;
    assert_eq!(refused.code, 5, "{refused}");
    let out = server.cli(&["deploy", w, "v3", "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 0, "the hotfix rolls forward and completes:\n{out}\n{}", server.diagnose(w).await);
    let r = server.rollout(w, &halted).await;
    assert_eq!(r.status, RolloutStatus::Aborted, "the halted rollout was replaced: {r:#?}");
    assert_eq!(server.status(w).await.stable.as_deref(), Some("v3"));
    server.wait_status(w, "only v3 runs", |s| s.replicas.iter().all(|r| r.version == "v3").then_some(())).await;
    let samples = load.finish().await;
    let v3_errors = samples.iter().filter(|s| s.version.as_deref() == Some("v3") && s.is_error()).count();
    assert_eq!(v3_errors, 0, "{:?}", by_version(&samples));
}

/// The projection keeps only a summary of ended rollouts beyond the newest
/// (`DETAILED_ROLLOUTS`); the API still shows an old one whole, folded again from its stretch
/// of the log, before and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_rollout_is_shown_whole_after_the_projection_dropped_its_detail() {
    let mut server = Server::start().await;
    let w = "history";
    let mut spec = Spec::new(w);
    spec.phases = vec![(100, "0s")];
    server.setup(&spec, &[]).await;
    let total = ringfence_core::state::DETAILED_ROLLOUTS + 2;
    let mut ids = Vec::new();
    let mut first = None;
    let mut load = None;
    for i in 1..=total {
        let version = format!("v{i}");
        server.release(w, &version, &[]).await;
        let out = server.deploy_wait(w, &version).await;
        assert_eq!(out.code, 0, "deploy {version}:\n{out}\n{}", server.diagnose(w).await);
        ids.push(rollout_id(&out));
        if i == 1 {
            // A phase passes on the requests it served.
            load = Some(Load::start(server.router_addr(w).await, 100.0, 100));
        }
        if i == 2 {
            // The first two as they were shown while the projection still held them whole.
            first = Some((server.rollout(w, &ids[0]).await, server.rollout(w, &ids[1]).await));
        }
    }
    let first = first.expect("shown before");
    drop(load);
    for pass in ["before a restart", "after a SIGKILL and a restart"] {
        if pass != "before a restart" {
            server.kill9();
            server.restart().await;
        }
        for id in &ids[..2] {
            let r = server.rollout(w, id).await;
            assert_eq!(r.status, RolloutStatus::Completed, "{pass}: {r:#?}");
            let v = r.last_verdict.as_ref().unwrap_or_else(|| panic!("{pass}: {id} keeps its verdict: {r:#?}"));
            assert!(!v.signals.is_empty(), "{pass}: {v:#?}");
        }
        let now = (server.rollout(w, &ids[0]).await, server.rollout(w, &ids[1]).await);
        assert_eq!(
            serde_json::to_value(&now).unwrap(),
            serde_json::to_value(&first).unwrap(),
            "{pass}: the same answer as when the projection held them whole"
        );
    }
}
