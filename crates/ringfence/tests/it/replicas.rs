//! Replicas on one PostgreSQL event log: three servers, a rollout under traffic, its leader
//! SIGKILLed mid-bake. Another replica takes the workload over and finishes the rollout; the
//! log stays gapless and no action is done twice; users see no failure.

use crate::pgcluster;

use std::time::{Duration, Instant};

use ringfence_api::{RolloutStatus, Stage};

use crate::crash::{check_log, open_intents, replicas_running};
use crate::harness::{Load, Server, Spec, rollout_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_finishes_a_rollout_whose_leader_was_killed() {
    let Some(pg) = pgcluster::PgCluster::start() else { return };
    let url = pg.fresh_db();
    let a = Server::start_with(&["--store", &url, "--replica-id", "a"]).await;
    let w = "ha";
    let spec = Spec { replicas: 2, phases: vec![(10, "3s"), (50, "3s"), (100, "3s")], ..Spec::new(w) };
    a.setup(&spec, &[("v1", &[]), ("v2", &["GREETING=hello"])]).await;
    let b = a.beside(&["--store", &url, "--replica-id", "b"]).await;
    let c = a.beside(&["--store", &url, "--replica-id", "c"]).await;
    let mut replicas = [a, b, c];
    let out = replicas[0].deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", replicas[0].diagnose(w).await);

    // Any replica serves the API: the deployment is asked of the second.
    let load = Load::start(replicas[0].router_addr(w).await, 150.0, 200);
    let out = replicas[1].cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    replicas[1]
        .wait_status(w, "phase 2 to bake", |s| {
            let r = s.rollout.as_ref()?;
            (r.id == id && r.phase == 1 && r.stage == Stage::Baking).then_some(())
        })
        .await;

    // The leader (any replica's status names it) dies; another takes the rollout on.
    let leader = replicas[1].wait_status(w, "a leader named", |s| s.leader.clone()).await;
    let dead = ["a", "b", "c"].iter().position(|r| *r == leader.replica).expect("a known replica");
    let (x, y) = ((dead + 1) % 3, (dead + 2) % 3);
    let before = replicas[x].status(w).await.rollout.expect("the rollout");
    replicas[dead].kill9();
    let down = Instant::now();
    replicas[x]
        .wait_status(w, "another replica to move the rollout on", |s| {
            let r = s.rollout.as_ref()?;
            (r.id == id && (r.phase > before.phase || r.status != RolloutStatus::Progressing)).then_some(())
        })
        .await;
    let r = replicas[y]
        .wait_status(w, "the rollout to complete on the replicas", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).cloned()
        })
        .await;
    assert_eq!(r.status, RolloutStatus::Completed, "{r:#?}\n{}", replicas[y].diagnose(w).await);
    assert!(down.elapsed() < Duration::from_secs(60));
    let c = &replicas[y];
    let s = c.status(w).await;
    assert_eq!(s.stable.as_deref(), Some("v2"));
    // Status names the replica that leads now; its token grew with the change of holder.
    let now =
        c.wait_status(w, "the new leader named", |s| s.leader.clone().filter(|l| l.replica != leader.replica)).await;
    assert!(now.token > leader.token, "{leader:?} then {now:?}");
    let took_over = replicas[x].log_tail(200).contains("leading the workload")
        || replicas[y].log_tail(200).contains("leading the workload");
    assert!(took_over, "the new leader says so in its log");
    let text = c.cli(&["status", w]).await;
    assert!(text.stdout.contains(&format!("leader     replica {}", now.replica)), "{text}");

    let events = c
        .wait_events(w, "v1 stopped and every intended action closed", |ev| {
            let open = open_intents(ev);
            let v1_running = replicas_running(ev).iter().any(|(v, _)| v == "v1");
            (open.is_empty() && !v1_running).then_some(ev.to_vec())
        })
        .await;
    let samples = load.finish().await;
    let failed = samples.iter().filter(|s| s.is_error()).count();
    assert_eq!(failed, 0, "users saw failures through the failover");
    // Gapless, each action once, each replica process started once and adopted after.
    check_log(c, w, &c.all_events().await, &events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_spread_over_the_replicas_and_move_when_one_dies() {
    let Some(pg) = pgcluster::PgCluster::start() else { return };
    let url = pg.fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let mut a = Server::start_with(&["--store", &url, "--replica-id", "a"]).await;
    let b = a.beside(&["--store", &url, "--replica-id", "b"]).await;
    let c = a.beside(&["--store", &url, "--replica-id", "c"]).await;
    // Six workloads, all created through a: they end up two per replica.
    for i in 0..6 {
        a.setup(&Spec::new(&format!("s{i}")), &[]).await;
    }
    let held = || {
        pg.psql(&db, "SELECT string_agg(n, ' ') FROM (SELECT holder || '=' || count(*) AS n FROM leases WHERE expires_at > now() GROUP BY holder ORDER BY holder) x")
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while held() != "a=2 b=2 c=2" {
        assert!(Instant::now() < deadline, "not spread: {}\n{}", held(), a.log_tail(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One dies: its two move to the others, three each.
    a.kill9();
    let deadline = Instant::now() + Duration::from_secs(40);
    while held() != "b=3 c=3" {
        assert!(Instant::now() < deadline, "not taken over: {}\n{}", held(), b.log_tail(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every workload is led by exactly one live replica.
    assert_eq!(pg.psql(&db, "SELECT count(DISTINCT workload) FROM leases WHERE expires_at > now()"), "6");
    drop((b, c));
}

/// Where in a rollout the leader dies: as the new version's replicas start, and as a bad
/// release is halted and mitigated. Another replica finishes what was begun, each action once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_as_replicas_start_or_as_a_mitigation_begins_loses_and_doubles_nothing() {
    use ringfence_core::EventKind;
    use ringfence_core::event::Action;

    let Some(pg) = pgcluster::PgCluster::start() else { return };
    for (bad, point) in [(false, "the new version's replicas start"), (true, "the bad release is halted")] {
        let url = pg.fresh_db();
        let a = Server::start_with(&["--store", &url, "--replica-id", "a"]).await;
        let w = if bad { "mitigate" } else { "start" };
        let spec = Spec { replicas: 2, phases: vec![(20, "3s"), (100, "2s")], lenient_breaker: bad, ..Spec::new(w) };
        let v2: &[&str] = if bad { &["SAMPLE_ERROR_RATE=0.5"] } else { &[] };
        a.setup(&spec, &[("v1", &[]), ("v2", v2)]).await;
        let b = a.beside(&["--store", &url, "--replica-id", "b"]).await;
        let c = a.beside(&["--store", &url, "--replica-id", "c"]).await;
        let mut replicas = [a, b, c];
        let out = replicas[0].deploy_wait(w, "v1").await;
        assert_eq!(out.code, 0, "{point}: first deploy of v1:\n{out}");
        let load = Load::start(replicas[0].router_addr(w).await, 100.0, 200);
        let leader = replicas[1].wait_status(w, "a leader named", |s| s.leader.clone()).await;
        let dead = ["a", "b", "c"].iter().position(|r| *r == leader.replica).expect("a known replica");
        let (x, y) = ((dead + 1) % 3, (dead + 2) % 3);
        let out = replicas[x].cli(&["deploy", w, "v2"]).await;
        assert_eq!(out.code, 0, "{out}");
        let id = rollout_id(&out);

        // Watch the log closely from another replica and kill the leader the moment the point
        // is reached.
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let events = replicas[x].events(w).await;
            let reached = events.iter().any(|e| match &e.kind {
                EventKind::ActionIntended { action: Action::StartReplica { version, .. }, .. } => {
                    !bad && version == "v2"
                }
                EventKind::RolloutHalted { rollout_id, .. } => bad && *rollout_id == id,
                _ => false,
            });
            if reached {
                break;
            }
            assert!(Instant::now() < deadline, "{point}: never reached\n{}", replicas[x].diagnose(w).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        replicas[dead].kill9();

        let r = replicas[y]
            .wait_status(w, "the rollout to end on another replica", |s| {
                s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).cloned()
            })
            .await;
        let expected = if bad { RolloutStatus::Mitigated } else { RolloutStatus::Completed };
        assert_eq!(r.status, expected, "{point}: {r:#?}\n{}", replicas[y].diagnose(w).await);
        let c = &replicas[y];
        let stable = if bad { "v1" } else { "v2" };
        let gone = if bad { "v2" } else { "v1" };
        assert_eq!(c.status(w).await.stable.as_deref(), Some(stable), "{point}");
        let events = c
            .wait_events(w, "every intended action closed", |ev| {
                let running = replicas_running(ev);
                (open_intents(ev).is_empty() && !running.iter().any(|(v, _)| v == gone)).then_some(ev.to_vec())
            })
            .await;
        let samples = load.finish().await;
        if !bad {
            assert_eq!(samples.iter().filter(|s| s.is_error()).count(), 0, "{point}: users saw failures");
        }
        check_log(c, w, &c.all_events().await, &events);
        drop(replicas);
    }
}
