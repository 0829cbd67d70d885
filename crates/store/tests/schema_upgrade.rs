//! A log written by an older release opens, upgrades and replays. `fixtures/schema-1.db` was
//! written by the last release with schema 1: a workload `shop` applied, v1 rolled out, v2
//! started and aborted, the server stopped cleanly (replicas started and stopped).

use ringfence_core::{EventKind, World};
use ringfence_store::Store;

fn fixture_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-1.db"), &path).unwrap();
    (dir, path)
}

#[test]
fn a_schema_1_log_upgrades_and_replays() {
    let (_dir, path) = fixture_copy();
    let before = rusqlite::Connection::open(&path).unwrap();
    let count: i64 = before.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
    drop(before);

    let store = Store::open(&path).unwrap();
    let events = store.load_all().unwrap();
    assert_eq!(events.len() as i64, count, "every event is still there");
    assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1), "still gapless");

    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ReplicaStarted { instance, endpoint, .. } => Some((instance.clone(), endpoint.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 2, "{started:?}");
    for (instance, endpoint) in &started {
        assert!(instance.starts_with("proc:") && instance[5..].parse::<u32>().is_ok(), "{instance}");
        assert!(endpoint.starts_with("127.0.0.1:"), "{endpoint}");
    }
    // Each stop names the instance its start named, so the fold frees the slot.
    let stopped: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ReplicaStopped { instance, .. } => Some(instance.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stopped.iter().collect::<std::collections::BTreeSet<_>>(), started.iter().map(|s| &s.0).collect());

    let mut world = World::default();
    for e in &events {
        world.apply(e);
    }
    let shop = world.workload("shop").expect("the workload folds");
    assert_eq!(shop.lkg.last().map(|l| l.version.as_str()), Some("v1"));
    assert!(shop.replicas.is_empty(), "both replicas were stopped: {:?}", shop.replicas);
    assert_eq!(shop.rollouts.len(), 2);

    // The old file is kept beside the upgraded one, and a second open changes nothing.
    assert!(path.with_file_name("events.db.schema-1").is_file());
    drop(store);
    let again = Store::open(&path).unwrap();
    assert_eq!(again.load_all().unwrap(), events);
    assert_eq!(again.last_seq(), events.last().unwrap().seq);
    drop(again);

    // The upgrade chained every event and signed a digest over all of them.
    let report = ringfence_store::audit::verify(&path, None).unwrap();
    assert!(report.intact, "{:?}", report.findings);
    assert_eq!(report.events as usize, events.len());
    assert_eq!(report.signed.map(|s| s.through_seq), Some(events.last().unwrap().seq));
    assert!(path.with_file_name("events.db.schema-1").is_file() && path.with_file_name("audit.pub").is_file());
}

#[test]
fn a_log_that_cannot_be_upgraded_is_left_as_it_was() {
    let (_dir, path) = fixture_copy();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE events SET body = '{\"type\":\"replica_started\",\"version\":\"v1\",\"replica\":0}' \
         WHERE seq = (SELECT MIN(seq) FROM events WHERE type = 'replica_started')",
        [],
    )
    .unwrap();
    drop(conn);
    let err = Store::open(&path).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("from schema 1") && text.contains("without a numeric `pid`"), "{text}");
    let schema: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(schema, 1, "nothing changed");
}
