//! The event store's guarantees, checked against every adapter behind the seam: the embedded
//! SQLite log and a real PostgreSQL (started by the test in a temporary directory). Each case
//! gets a fresh log.

#[path = "support/pgcluster.rs"]
mod pgcluster;

use ringfence_core::{EventKind, NewEvent, Timestamp};
use ringfence_store::postgres::PgStore;
use ringfence_store::{EventStore, Store, StoreError};

fn ev(workload: &str, n: u32) -> NewEvent {
    NewEvent {
        at: Timestamp(1_700_000_000_000 + i64::from(n)),
        actor: "test".into(),
        reason: format!("event {n}"),
        workload: workload.into(),
        kind: EventKind::RolloutPaused { rollout_id: format!("{workload}-{n}") },
    }
}

/// Opens the case's log again (a restart, or a second writer on it).
type Open<'a> = &'a dyn Fn() -> Box<dyn EventStore>;
/// A case of the suite, by name.
type Case = (&'static str, fn(Open));

fn appends_are_numbered_without_gaps_and_survive_reopen(open: Open) {
    let mut s = open();
    assert_eq!(s.last_seq(), 0);
    let a = s.append(0, vec![ev("a", 1), ev("b", 2)]).unwrap();
    assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    let b = s.append(2, vec![ev("a", 3)]).unwrap();
    assert_eq!(b[0].seq, 3);
    assert!(s.append(3, Vec::new()).unwrap().is_empty(), "nothing to append writes nothing");
    drop(s);
    let mut s = open();
    assert_eq!(s.last_seq(), 3, "{}", s.describe());
    let all = s.read(None, 0, usize::MAX).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[1].reason, "event 2");
    assert_eq!(all[2].kind, EventKind::RolloutPaused { rollout_id: "a-3".into() });
    assert_eq!(all[0].at, Timestamp(1_700_000_000_001));
    // By workload, after a sequence number, up to a limit.
    let a: Vec<u64> = s.read(Some("a"), 0, 10).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(a, [1, 3]);
    assert_eq!(s.read(None, 1, 1).unwrap()[0].seq, 2);
    assert!(s.read(Some("nope"), 0, 10).unwrap().is_empty());
}

fn an_append_after_another_writer_is_refused_and_writes_nothing(open: Open) {
    let mut first = open();
    let mut second = open();
    first.append(0, vec![ev("a", 1)]).unwrap();
    // The second writer still believes the log is empty.
    match second.append(0, vec![ev("a", 2), ev("a", 3)]) {
        Err(StoreError::Conflict { expected: 0, found: 1, .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(second.read(None, 0, 10).unwrap().len(), 1, "nothing of the refused append was written");
    // Caught up, it appends.
    assert_eq!(second.append(1, vec![ev("a", 2)]).unwrap()[0].seq, 2);
}

fn concurrent_writers_interleave_without_a_gap_or_a_double(open: Open) {
    const EACH: u64 = 40;
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let mut s = open();
            std::thread::spawn(move || {
                let mut done = 0;
                let mut conflicts = 0;
                let mut last = s.read(None, 0, usize::MAX).unwrap().last().map_or(0, |e| e.seq);
                while done < EACH {
                    match s.append(last, vec![ev(&format!("w{w}"), done as u32)]) {
                        Ok(e) => {
                            last = e[0].seq;
                            done += 1;
                        }
                        Err(StoreError::Conflict { found, .. }) => {
                            conflicts += 1;
                            last = found;
                        }
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut s = open();
    let all = s.read(None, 0, usize::MAX).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=3 * EACH).collect::<Vec<_>>());
    for w in 0..3 {
        let mine: Vec<String> =
            all.iter().filter(|e| e.workload == format!("w{w}")).map(|e| e.reason.clone()).collect();
        let expected: Vec<String> = (0..EACH).map(|n| format!("event {n}")).collect();
        assert_eq!(mine, expected, "writer {w}'s events, each once, in its order");
    }
}

fn run_suite(name: &str, open_fresh: &dyn Fn() -> Box<dyn Fn() -> Box<dyn EventStore>>) {
    let cases: [Case; 3] = [
        (
            "appends are numbered without gaps and survive a reopen",
            appends_are_numbered_without_gaps_and_survive_reopen,
        ),
        (
            "an append after another writer is refused and writes nothing",
            an_append_after_another_writer_is_refused_and_writes_nothing,
        ),
        (
            "concurrent writers interleave without a gap or a double",
            concurrent_writers_interleave_without_a_gap_or_a_double,
        ),
    ];
    for (case, f) in cases {
        eprintln!("{name}: {case}");
        let open = open_fresh();
        f(&*open);
    }
}

#[test]
fn the_store_suite_on_sqlite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    run_suite("sqlite", &|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        dirs.lock().unwrap().push(dir);
        Box::new(move || Box::new(Store::open(&path).unwrap()) as Box<dyn EventStore>)
    });
}

#[test]
fn the_store_suite_on_postgresql() {
    let Some(pg) = pgcluster::PgCluster::start() else { return };
    run_suite("postgresql", &|| {
        let url = pg.fresh_db();
        Box::new(move || Box::new(PgStore::open(&url, None).unwrap()) as Box<dyn EventStore>)
    });

    // What only PostgreSQL has: one server per log, a schema refused when newer, the chain.
    let url = pg.fresh_db();
    let db = url.rsplit('/').next().unwrap().to_string();
    let mut s = PgStore::open(&url, None).unwrap();
    s.claim().unwrap();
    let mut other = PgStore::open(&url, None).unwrap();
    let e = other.claim().unwrap_err().to_string();
    assert!(e.contains("another ringfence server runs on this event log"), "{e}");
    s.append(0, vec![ev("a", 1), ev("a", 2)]).unwrap();
    let hashes = pg.psql(&db, "SELECT count(DISTINCT hash) FROM events WHERE length(hash) = 32");
    assert_eq!(hashes, "2", "each row chained");
    assert_eq!(pg.psql(&db, "SELECT seq FROM head"), "2");
    // An unreadable row names its number.
    pg.psql(&db, "UPDATE events SET body = '{\"nope\": 1}' WHERE seq = 2");
    let e = s.read(None, 0, 10).unwrap_err().to_string();
    assert!(e.contains("event 2"), "{e}");
    drop((s, other));
    // A schema from a newer ringfence is refused, and nothing is changed.
    pg.psql(&db, "UPDATE meta SET value = 99 WHERE key = 'schema'");
    match PgStore::open(&url, None) {
        Err(StoreError::Schema { found: 99, known: 1, .. }) => {}
        Err(e) => panic!("expected the schema refused, got {e}"),
        Ok(_) => panic!("expected the schema refused"),
    }
    // A wrong address is a clear error that does not show a password.
    let bad = format!("postgres://postgres:hunter2@127.0.0.1:{}/nope", pg.port);
    let e = PgStore::open(&bad, None).err().expect("no such database").to_string();
    assert!(e.contains("nope") && !e.contains("hunter2"), "{e}");
}
