//! The server on a real PostgreSQL event log (started by the test in a temporary directory):
//! it deploys, a SIGKILL mid-rollout loses nothing, the log stays gapless, and a second server
//! on the same log is refused.

use crate::pgcluster;

use ringfence_api::RolloutStatus;

use crate::harness::{BIN, Load, Server, Spec, rollout_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_postgresql_deploys_survives_a_kill_and_holds_its_log_alone() {
    let Some(pg) = pgcluster::PgCluster::start() else { return };
    let url = pg.fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let mut server = Server::start_with(&["--store", &url]).await;
    let w = "pgw";
    server.setup(&Spec::new(w), &[("v1", &[]), ("v2", &[])]).await;
    assert_eq!(server.deploy_wait(w, "v1").await.code, 0, "{}", server.diagnose(w).await);
    assert!(!server.data_dir().join("events.db").exists(), "the log is in PostgreSQL, not beside the server");

    // Killed mid-rollout, restarted on the same database: the rollout finishes.
    let load = Load::start(server.router_addr(w).await, 150.0, 200);
    let out = server.cli(&["deploy", w, "v2"]).await;
    assert_eq!(out.code, 0, "{out}");
    let id = rollout_id(&out);
    server.kill9();
    server.restart().await;
    let deadline = std::time::Instant::now() + crate::harness::DEADLINE;
    while server.rollout(w, &id).await.status != RolloutStatus::Completed {
        assert!(std::time::Instant::now() < deadline, "the rollout did not complete:\n{}", server.diagnose(w).await);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let s = server.status(w).await;
    assert_eq!(s.stable.as_deref(), Some("v2"));
    assert!(s.leader.is_none(), "a server running alone names no leader");
    drop(load);
    let timeline = server.cli(&["events", w]).await;
    assert!(timeline.stdout.contains("rollout pgw-2 completed"), "{timeline}");
    // Gapless, and every event the API shows is the database's.
    let (count, max) = {
        let row = pg.psql(&db, "SELECT count(*) || ' ' || max(seq) FROM events");
        let (c, m) = row.split_once(' ').unwrap();
        (c.parse::<u64>().unwrap(), m.parse::<u64>().unwrap())
    };
    assert_eq!(count, max, "numbered without gaps");
    let events = server.events(w).await;
    assert!(events.windows(2).all(|p| p[0].seq < p[1].seq), "in order");
    assert!(events.last().unwrap().seq <= max);
    assert!(events.iter().filter(|e| e.kind.type_name() == "rollout_completed").count() == 2);

    // A second server on the same log is refused: one server per log.
    let other = server.path("other-data");
    let out = tokio::process::Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--store", &url, "--data-dir"])
        .arg(&other)
        .env("RINGFENCE_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), out).await.expect("it exits").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused:\n{stderr}");
    assert!(stderr.contains("another ringfence server runs on this event log"), "{stderr}");

    // A password never goes on a command line.
    let out = std::process::Command::new(BIN)
        .args(["server", "--listen", "127.0.0.1:0", "--store", "postgres://rf:hunter2@127.0.0.1:1/x", "--data-dir"])
        .arg(&other)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--store-password-file") && !stderr.contains("hunter2"), "{stderr}");
}
