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
    let mut a = Server::start_with(&["--store", &url, "--replica-id", "a"]).await;
    let w = "ha";
    let spec = Spec { replicas: 2, phases: vec![(10, "3s"), (50, "3s"), (100, "3s")], ..Spec::new(w) };
    a.setup(&spec, &[("v1", &[]), ("v2", &["GREETING=hello"])]).await;
    // The first replica took the workload's lease; the others join behind it.
    let b = a.beside(&["--store", &url, "--replica-id", "b"]).await;
    let c = a.beside(&["--store", &url, "--replica-id", "c"]).await;
    let out = a.deploy_wait(w, "v1").await;
    assert_eq!(out.code, 0, "first deploy of v1:\n{out}\n{}", a.diagnose(w).await);

    // Any replica serves the API: the deployment is asked of b.
    let load = Load::start(a.router_addr(w).await, 150.0, 200);
    let out = b.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    b.wait_status(w, "phase 2 to bake", |s| {
        let r = s.rollout.as_ref()?;
        (r.id == id && r.phase == 1 && r.stage == Stage::Baking).then_some(())
    })
    .await;

    // The leader dies. The workload moves to b or c; the rollout goes on.
    let before = b.status(w).await.rollout.expect("the rollout");
    a.kill9();
    let down = Instant::now();
    b.wait_status(w, "another replica to move the rollout on", |s| {
        let r = s.rollout.as_ref()?;
        (r.id == id && (r.phase > before.phase || r.status != RolloutStatus::Progressing)).then_some(())
    })
    .await;
    let took_over = [&b, &c].iter().any(|s| s.log_tail(200).contains("leading the workload"));
    assert!(took_over, "b or c says it leads the workload now:\n{}\n{}", b.log_tail(20), c.log_tail(20));
    let r = c
        .wait_status(w, "the rollout to complete on the replicas", |s| {
            s.rollout.as_ref().filter(|r| r.id == id && !r.status.is_active()).cloned()
        })
        .await;
    assert_eq!(r.status, RolloutStatus::Completed, "{r:#?}\n{}", c.diagnose(w).await);
    assert!(down.elapsed() < Duration::from_secs(60));
    assert_eq!(c.status(w).await.stable.as_deref(), Some("v2"));

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
    check_log(&c, w, &c.all_events().await, &events);
    drop((b, c));
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
