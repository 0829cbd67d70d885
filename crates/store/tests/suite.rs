//! The event store's guarantees, checked against every adapter behind the seam: the embedded
//! SQLite log and a real PostgreSQL (started by the test in a temporary directory). Each case
//! gets a fresh log.

#[path = "support/pgcluster.rs"]
mod pgcluster;

use ringfence_core::{EventKind, NewEvent, Timestamp};
use ringfence_store::Fence;
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

#[test]
fn a_deposed_leader_cannot_write_and_a_lease_moves_only_when_it_lapses() {
    use std::time::Duration;
    let Some(pg) = pgcluster::PgCluster::start() else { return };
    let url = pg.fresh_db();
    let (mut a, mut b) = (PgStore::open(&url, None).unwrap(), PgStore::open(&url, None).unwrap());
    let lease = a.acquire("shop", "replica-a", Duration::from_millis(400)).unwrap().expect("free: a takes it");
    assert_eq!((lease.holder.as_str(), lease.token), ("replica-a", 1));
    assert!(b.acquire("shop", "replica-b", Duration::from_secs(5)).unwrap().is_none(), "a holds it");
    // a renews: the same token; renewing all its leases at once finds this one.
    assert_eq!(a.acquire("shop", "replica-a", Duration::from_millis(400)).unwrap().map(|l| l.token), Some(1));
    let renewed = a.renew("replica-a", Duration::from_millis(400)).unwrap();
    assert_eq!(renewed.iter().map(|l| (l.workload.as_str(), l.token)).collect::<Vec<_>>(), [("shop", 1)]);
    assert!(b.renew("replica-b", Duration::from_secs(5)).unwrap().is_empty(), "b has none");
    let fence_a = Fence { workload: "shop".into(), token: 1 };
    a.append_fenced(&fence_a, 0, vec![ev("shop", 1)]).unwrap();
    // a stops renewing (a pause, a partition); its lease lapses and b takes over.
    std::thread::sleep(Duration::from_millis(600));
    assert!(a.renew("replica-a", Duration::from_secs(5)).unwrap().is_empty(), "a lapsed lease is not renewed");
    let taken = b.acquire("shop", "replica-b", Duration::from_secs(5)).unwrap().expect("lapsed: b takes it");
    assert_eq!(taken.token, 2, "a new holder, a new token");
    // a still believes it leads: its write is refused and nothing is written.
    match a.append_fenced(&fence_a, 1, vec![ev("shop", 2)]) {
        Err(StoreError::Fenced { token: 1, current: Some(2), .. }) => {}
        other => panic!("expected the deposed leader fenced off, got {other:?}"),
    }
    assert_eq!(b.read(None, 0, 10).unwrap().len(), 1, "nothing of the fenced append");
    // A token for a workload nobody leads is refused too.
    let stray = Fence { workload: "nobody".into(), token: 1 };
    assert!(matches!(a.append_fenced(&stray, 1, vec![ev("x", 3)]), Err(StoreError::Fenced { current: None, .. })));
    // b writes with its token; a can no longer take the lease while b holds it.
    let fence_b = Fence { workload: "shop".into(), token: 2 };
    assert_eq!(b.append_fenced(&fence_b, 1, vec![ev("shop", 2)]).unwrap()[0].seq, 2);
    assert!(a.acquire("shop", "replica-a", Duration::from_secs(1)).unwrap().is_none());
    // A clean handover: b releases, a takes it at once with the next token.
    b.release(&fence_b, "replica-b").unwrap();
    assert_eq!(a.acquire("shop", "replica-a", Duration::from_secs(1)).unwrap().map(|l| l.token), Some(3));
    let leases = a.leases().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].holder.as_str(), leases[0].token), ("replica-a", 3));
    let e = b.append_fenced(&fence_b, 2, vec![ev("shop", 3)]).unwrap_err().to_string();
    assert!(e.contains("another server leads it") && e.contains("nothing was written"), "{e}");
}

#[test]
fn a_takeover_racing_an_append_lands_wholly_before_or_after_it() {
    use std::time::Duration;
    let Some(pg) = pgcluster::PgCluster::start() else { return };
    let url = pg.fresh_db();
    let mut leader = PgStore::open(&url, None).unwrap();
    let token = leader.acquire("shop", "old", Duration::from_millis(50)).unwrap().unwrap().token;
    let fence = Fence { workload: "shop".into(), token };
    // The old leader appends as fast as it can while another replica takes over once the
    // lease lapses: every append either lands before the takeover or is refused after it.
    let url2 = url.clone();
    let taker = std::thread::spawn(move || {
        let mut s = PgStore::open(&url2, None).unwrap();
        let token = loop {
            if let Some(l) = s.acquire("shop", "new", Duration::from_secs(30)).unwrap() {
                break l.token;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // The new leader's first write, as soon as it leads.
        let fence = Fence { workload: "shop".into(), token };
        loop {
            let last = s.read(None, 0, usize::MAX).unwrap().last().map_or(0, |e| e.seq);
            match s.append_fenced(&fence, last, vec![ev("new-leader", 0)]) {
                Ok(e) => return (token, e[0].seq),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    });
    let mut last = 0;
    let mut fenced_at = None;
    for n in 0..2_000u32 {
        match leader.append_fenced(&fence, last, vec![ev("shop", n)]) {
            Ok(e) => last = e[0].seq,
            Err(StoreError::Fenced { .. }) => {
                fenced_at = Some(last);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (new_token, marker) = taker.join().unwrap();
    assert_eq!(new_token, token + 1);
    let fenced_at = fenced_at.expect("the old leader was fenced off");
    // Every write of the old leader precedes the new leader's first: none slipped in after
    // the takeover.
    let all = leader.read(None, 0, usize::MAX).unwrap();
    let old_last = all.iter().filter(|e| e.workload == "shop").map(|e| e.seq).max().unwrap_or(0);
    assert!(old_last < marker, "the old leader wrote {old_last} after the new one's first write {marker}");
    assert_eq!(old_last, fenced_at, "its last accepted write is the last of its writes");
    assert!(leader.append_fenced(&fence, fenced_at, vec![ev("shop", 9)]).is_err(), "and never again");
}
