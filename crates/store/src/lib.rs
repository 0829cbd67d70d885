//! The event log: append-only, numbered without gaps, durable at commit.
//!
//! [`EventStore`] is the seam; [`Store`], on SQLite, is the embedded default, and
//! [`postgres::PgStore`] keeps the same guarantees on PostgreSQL. Appends of one call go in one
//! transaction, so a crash leaves either all of them or none. The SQLite database runs in WAL
//! mode with `synchronous=FULL`: an acknowledged append survives a power cut, not just a
//! process crash.
//!
//! The log is tamper-evident (`audit`): each row carries a hash chained to the previous
//! row's, and digests of the chain are signed with a key kept beside the log.

use std::path::{Path, PathBuf};

pub mod audit;
pub mod migrate;
pub mod postgres;

pub use audit::{AuditOptions, Digest};
use ringfence_core::{Event, NewEvent};
use rusqlite::{Connection, OptionalExtension, params};

/// The event log's file name in a server's data directory.
pub const LOG_FILE: &str = "events.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the event log {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("the event log {path} was written by a newer ringfence (schema {found}, this one knows {known})")]
    Schema { path: PathBuf, found: i64, known: i64 },
    #[error("event log {path}: {source}")]
    Sql { path: PathBuf, source: rusqlite::Error },
    #[error("cannot upgrade the event log {path} from schema {from}: event {seq}: {why}; nothing was changed")]
    Migrate { path: PathBuf, from: i64, seq: u64, why: String },
    #[error("event {seq} in {path} cannot be read: {source}")]
    Decode { path: PathBuf, seq: u64, source: serde_json::Error },
    /// Optimistic concurrency: another writer appended since this one last read the log (a
    /// second server on the same data, or a deposed leader). Nothing was written.
    #[error(
        "the event log {path} ends at event {found}, not {expected}: another writer appended to it; nothing was written"
    )]
    Conflict { path: PathBuf, expected: u64, found: u64 },
    /// The audit trail's key files, options or chain (the file named, and what is wrong).
    #[error("{path}: {why}")]
    Audit { path: PathBuf, why: String },
    /// A workload's lease moved to another holder since this writer took it (or never was
    /// its): the writer no longer leads the workload. Nothing was written.
    #[error(
        "the lease of workload {workload} is no longer this writer's (its token {token}, the current one {current:?}): another server leads it; nothing was written"
    )]
    Fenced { workload: String, token: i64, current: Option<i64> },
    #[error("{what}")]
    Unsupported { what: String },
    /// Events committed together with others whose commit failed (`why`): decided on a state
    /// that included the failed ones, they are dropped with them. Nothing was written.
    #[error("the event log refused the commit these events were part of ({why}); nothing was written")]
    Dropped { why: String },
    /// PostgreSQL refused or failed (`at`: the log's URL without its password).
    #[error("event log {at}: {why}")]
    Postgres { at: String, why: String },
}

/// The event log as the server uses it. Adapters: [`Store`] (SQLite, embedded, the default)
/// and [`postgres::PgStore`]. Implementations keep the guarantees the
/// server relies on: sequence numbers without gaps, one transaction per append call, and an
/// append refused unless the log still ends where the caller last saw it.
pub trait EventStore: Send {
    /// Appends `events` atomically if the log's last event is `expected_last`, and returns
    /// them numbered from `expected_last + 1`; else [`StoreError::Conflict`] and nothing is
    /// written. This blocks until the events are durable: call it off the async workers.
    fn append(&mut self, expected_last: u64, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError>;
    /// Events after `after_seq`, optionally of one workload, oldest first, at most `limit`.
    fn read(&mut self, workload: Option<&str>, after_seq: u64, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// The number of the last event.
    fn last_seq(&self) -> u64;
    /// Where the log is, for messages.
    fn describe(&self) -> String;
    /// Signs a digest of the log as it ends now, if it grew since the last one: what a
    /// stopping server calls, so that no event it wrote is left covered by the chain alone.
    /// Adapters without digests write nothing.
    fn write_digest(&mut self) -> Result<Option<Digest>, StoreError> {
        Ok(None)
    }
    /// [`EventStore::append`] by the leader of `fence.workload`: refused
    /// ([`StoreError::Fenced`]), with nothing written, unless `fence` still is the workload's
    /// current lease. Adapters without leases (one server per log) append as usual.
    fn append_fenced(
        &mut self,
        fence: &Fence,
        expected_last: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, StoreError> {
        let _ = fence;
        self.append(expected_last, events)
    }
    /// Takes the lease of `workload` for `holder` for `ttl` when it is free or lapsed, or renews
    /// it when `holder` has it; `None` while another holder has it. Only adapters shared by
    /// several servers have leases.
    fn acquire(&mut self, workload: &str, holder: &str, ttl: std::time::Duration) -> Result<Option<Lease>, StoreError> {
        let _ = (workload, holder, ttl);
        Err(StoreError::Unsupported { what: format!("leases (replicas) on {}: they need PostgreSQL", self.describe()) })
    }
    /// Renews every unlapsed lease `holder` has, at once, and returns them.
    fn renew(&mut self, holder: &str, ttl: std::time::Duration) -> Result<Vec<Lease>, StoreError> {
        let _ = (holder, ttl);
        Err(StoreError::Unsupported { what: format!("leases (replicas) on {}: they need PostgreSQL", self.describe()) })
    }
    /// Gives a lease up at once (a clean shutdown, or a share handed to another replica).
    fn release(&mut self, fence: &Fence, holder: &str) -> Result<(), StoreError> {
        let _ = (fence, holder);
        Ok(())
    }
    /// Every workload's lease (none for adapters without leases).
    fn leases(&mut self) -> Result<Vec<Lease>, StoreError> {
        Ok(Vec::new())
    }
    /// Says `replica` is alive and returns how many replicas are (seen within `ttl`).
    fn heartbeat(&mut self, replica: &str, ttl: std::time::Duration) -> Result<u32, StoreError> {
        let _ = (replica, ttl);
        Ok(1)
    }
}

/// Who leads a workload's controller, until when, and the fencing token its writes carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub workload: String,
    pub holder: String,
    /// Grows with every change of holder (and when a holder comes back after its lease
    /// lapsed): a write carrying an older one is refused.
    pub token: i64,
    /// Milliseconds since the Unix epoch, by PostgreSQL's clock, the one every replica shares.
    pub expires_at_ms: i64,
}

/// What a leader's append carries: the workload it leads and its lease's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub workload: String,
    pub token: i64,
}

const SCHEMA_VERSION: i64 = migrate::CURRENT;

pub struct Store {
    conn: Connection,
    path: PathBuf,
    last_seq: u64,
    signer: audit::Signer,
    options: AuditOptions,
}

impl Store {
    /// Opens (creating if needed) the log at `path`, with the audit trail's default options
    /// (and `RINGFENCE_AUDIT_DIGEST_EVERY_MS` when set).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let options = AuditOptions::from_env().map_err(|why| StoreError::Audit { path: path.to_owned(), why })?;
        Store::open_with(path, options)
    }

    /// Opens (creating if needed) the log at `path`. Its signing key (`audit.key`) and public
    /// key (`audit.pub`) are beside it, created on the first open. Events an earlier run left
    /// without a signed digest (a crash) get one now.
    pub fn open_with(path: &Path, options: AuditOptions) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open { path: path.to_owned(), source };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS events (
                 seq INTEGER PRIMARY KEY,
                 at INTEGER NOT NULL,
                 actor TEXT NOT NULL,
                 reason TEXT NOT NULL,
                 workload TEXT NOT NULL,
                 type TEXT NOT NULL,
                 rollout_id TEXT,
                 body TEXT NOT NULL,
                 hash BLOB
             );
             CREATE INDEX IF NOT EXISTS events_by_workload ON events (workload, seq);",
        )
        .map_err(open_err)?;
        let found: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .optional()
            .map_err(open_err)?;
        match found {
            None => {
                conn.execute_batch(audit::DIGESTS_TABLE).map_err(open_err)?;
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?1)", [SCHEMA_VERSION])
                    .map_err(open_err)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Schema { path: path.to_owned(), found: v, known: SCHEMA_VERSION });
            }
            Some(v) if v < SCHEMA_VERSION => upgrade(&mut conn, path, v)?,
            Some(_) => {}
        }
        let last: Option<i64> = conn.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0)).map_err(open_err)?;
        let has_digests: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM digests)", [], |r| r.get(0)).map_err(open_err)?;
        let signer =
            audit::Signer::load_or_create(path, has_digests).map_err(|(path, why)| StoreError::Audit { path, why })?;
        let mut store = Store { conn, path: path.to_owned(), last_seq: last.unwrap_or(0) as u64, signer, options };
        store.write_digest()?;
        Ok(store)
    }

    /// Signs a digest of the log as it ends now, unless no event was appended since the last
    /// digest. The server calls it when it stops; appends sign one on their own every
    /// [`AuditOptions::digest_every`].
    pub fn write_digest(&mut self) -> Result<Option<Digest>, StoreError> {
        let path = self.path.clone();
        let sql = move |source| StoreError::Sql { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(&sql)?;
        let Some((seq, hash)) = audit::tail(&tx).map_err(&sql)? else { return Ok(None) };
        let hash = hash.ok_or_else(|| unchained(&self.path, seq))?;
        let digest = audit::digest_if_due(&tx, &self.signer, seq, &hash, audit::now_ms(), None).map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        Ok(digest)
    }

    /// The short name of the key this store signs digests with (the `key_id` of each).
    pub fn key_id(&self) -> &str {
        self.signer.key_id()
    }

    /// The public key of the digests' signatures (the content of `audit.pub`, as bytes).
    pub fn public_key(&self) -> &[u8] {
        self.signer.public_key()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sql { path: self.path.clone(), source }
    }

    /// Appends events atomically after whatever the log holds now, and returns them numbered.
    pub fn append_now(&mut self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        let last = self.last_seq;
        self.append_after(last, events)
    }

    fn append_after(&mut self, expected_last: u64, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.path.clone();
        let sql = move |source| StoreError::Sql { path: path.clone(), source };
        // IMMEDIATE takes the write lock first, so the check below and the inserts see the
        // same log even with another process on the same file.
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(&sql)?;
        // The last event's hash is read under the same write lock as the check, so the chain
        // continues from the row that really is last.
        let tail = audit::tail(&tx).map_err(&sql)?;
        let found = tail.map_or(0, |(seq, _)| seq);
        if found != expected_last {
            return Err(StoreError::Conflict { path: self.path.clone(), expected: expected_last, found });
        }
        let mut prev = match tail {
            None => audit::GENESIS,
            Some((seq, hash)) => hash.ok_or_else(|| unchained(&self.path, seq))?,
        };
        let mut out = Vec::with_capacity(events.len());
        let mut seq = expected_last;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (seq, at, actor, reason, workload, type, rollout_id, body, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(&sql)?;
            for e in events {
                seq += 1;
                let body = serde_json::to_string(&e.kind).expect("events always serialize");
                let kind = e.kind.type_name();
                let rollout_id = e.kind.rollout_id();
                let fields = audit::EventFields {
                    at: e.at.millis(),
                    actor: &e.actor,
                    reason: &e.reason,
                    workload: &e.workload,
                    kind: &kind,
                    rollout_id,
                    body: &body,
                };
                prev = audit::event_hash(&prev, seq, &fields);
                stmt.execute(params![
                    seq as i64,
                    e.at.millis(),
                    e.actor,
                    e.reason,
                    e.workload,
                    kind,
                    rollout_id,
                    body,
                    prev.to_vec()
                ])
                .map_err(&sql)?;
                out.push(e.numbered(seq));
            }
        }
        let every = Some(self.options.digest_every);
        audit::digest_if_due(&tx, &self.signer, seq, &prev, audit::now_ms(), every).map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        self.last_seq = out.last().map(|e| e.seq).unwrap_or(self.last_seq);
        Ok(out)
    }

    /// Events after `after_seq`, optionally of one workload, oldest first, at most `limit`.
    pub fn read_events(&self, workload: Option<&str>, after_seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        // Two statements, not one with `?2 IS NULL OR workload = ?2`: SQLite plans a prepared
        // statement once, and that one walks the whole log from `after_seq` instead of the
        // workload's index, which with thousands of workloads reads every event of every one.
        let sql = if workload.is_some() { READ_WORKLOAD } else { READ_ALL };
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.sql())?;
        let rows = stmt
            .query_map(params![after_seq as i64, workload, limit.min(i64::MAX as usize) as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(self.sql())?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, at, actor, reason, workload, body) = row.map_err(self.sql())?;
            let kind = serde_json::from_str(&body).map_err(|source| StoreError::Decode {
                path: self.path.clone(),
                seq,
                source,
            })?;
            out.push(Event { seq, at: ringfence_core::Timestamp(at), actor, reason, workload, kind });
        }
        Ok(out)
    }

    /// The whole log, oldest first.
    pub fn load_all(&self) -> Result<Vec<Event>, StoreError> {
        self.read_events(None, 0, usize::MAX)
    }
}

/// A workload's events after a cursor, through `events_by_workload`.
const READ_WORKLOAD: &str = "SELECT seq, at, actor, reason, workload, body FROM events
     WHERE workload = ?2 AND seq > ?1
     ORDER BY seq LIMIT ?3";
/// Every event after a cursor (`?2` is NULL: the parameters are the same as above).
const READ_ALL: &str = "SELECT seq, at, actor, reason, workload, body FROM events
     WHERE seq > ?1 AND ?2 IS NULL
     ORDER BY seq LIMIT ?3";

/// Appending after a last row without a valid hash would extend a chain nobody can check:
/// refused, since only a change made outside ringfence leaves such a row.
fn unchained(path: &Path, seq: u64) -> StoreError {
    StoreError::Audit {
        path: path.to_owned(),
        why: format!(
            "event {seq}, the last of the log, has no valid hash: the log was changed outside ringfence (`ringfence audit verify` names what changed); nothing was written"
        ),
    }
}

/// Upgrades a log of schema `from` in place, in one transaction, after keeping a copy of it
/// as it was (`<file>.schema-<from>`, written once).
fn upgrade(conn: &mut Connection, path: &Path, from: i64) -> Result<(), StoreError> {
    let sql = |source| StoreError::Sql { path: path.to_owned(), source };
    let backup = PathBuf::from(format!("{}.schema-{from}", path.display()));
    if !backup.exists() {
        conn.execute("VACUUM INTO ?1", [backup.to_string_lossy()]).map_err(sql)?;
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
    let types = migrate::REWRITTEN_TYPES.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(",");
    let rows: Vec<(i64, String)> = {
        let mut stmt =
            tx.prepare(&format!("SELECT seq, body FROM events WHERE type IN ({types}) ORDER BY seq")).map_err(sql)?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql)?.collect::<Result<_, _>>().map_err(sql)?
    };
    for (seq, body) in rows {
        let new = migrate::upgrade(from, &body).map_err(|why| StoreError::Migrate {
            path: path.to_owned(),
            from,
            seq: seq as u64,
            why,
        })?;
        if let Some(new) = new {
            tx.execute("UPDATE events SET body = ?1 WHERE seq = ?2", params![new, seq]).map_err(sql)?;
        }
    }
    // After the bodies' rewrites: the chain is over the rows as this schema stores them.
    if from < 3 {
        audit::chain_existing(&tx).map_err(sql)?;
    }
    tx.execute("UPDATE meta SET value = ?1 WHERE key = 'schema'", [SCHEMA_VERSION]).map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(())
}

impl EventStore for Store {
    fn append(&mut self, expected_last: u64, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        self.append_after(expected_last, events)
    }

    fn read(&mut self, workload: Option<&str>, after_seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read_events(workload, after_seq, limit)
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }

    fn write_digest(&mut self) -> Result<Option<Digest>, StoreError> {
        Store::write_digest(self)
    }
}

#[cfg(test)]
mod tests {
    use ringfence_core::Timestamp;
    use ringfence_core::event::EventKind;

    use super::*;

    fn ev(workload: &str, n: u32) -> NewEvent {
        NewEvent {
            at: Timestamp(1000 + n as i64),
            actor: "tester".into(),
            reason: format!("event {n}"),
            workload: workload.into(),
            kind: EventKind::RolloutPaused { rollout_id: format!("{workload}-{n}") },
        }
    }

    #[test]
    fn a_workloads_events_are_read_through_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("events.db")).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = s.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map(params![0i64, "a", 10i64], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let one = plan(READ_WORKLOAD);
        assert!(one.contains("USING INDEX events_by_workload"), "{one}");
        let all = plan(READ_ALL);
        assert!(all.contains("INTEGER PRIMARY KEY"), "{all}");
    }

    #[test]
    fn appends_are_numbered_without_gaps_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        {
            let mut s = Store::open(&path).unwrap();
            let a = s.append_now(vec![ev("a", 1), ev("b", 2)]).unwrap();
            assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
            s.append_now(vec![ev("a", 3)]).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.last_seq(), 3);
        let all = s.load_all().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].reason, "event 3");
        assert_eq!(all[0].kind, EventKind::RolloutPaused { rollout_id: "a-1".into() });
        let only_a = s.read_events(Some("a"), 0, 10).unwrap();
        assert_eq!(only_a.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(s.read_events(None, 1, 1).unwrap()[0].seq, 2);
    }

    #[test]
    fn an_append_after_another_writer_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let mut mine = Store::open(&path).unwrap();
        let mut other = Store::open(&path).unwrap();
        EventStore::append(&mut mine, 0, vec![ev("a", 1)]).unwrap();
        // The other writer last saw an empty log: refused, nothing written.
        let err = EventStore::append(&mut other, 0, vec![ev("b", 2)]).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { expected: 0, found: 1, .. }), "{err}");
        assert!(err.to_string().contains("another writer"), "{err}");
        assert_eq!(Store::open(&path).unwrap().load_all().unwrap().len(), 1);
        // Told where the log ends, it appends after it.
        let e = EventStore::append(&mut other, 1, vec![ev("b", 2)]).unwrap();
        assert_eq!(e[0].seq, 2);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        Store::open(&path).unwrap();
        Connection::open(&path).unwrap().execute("UPDATE meta SET value = 99 WHERE key = 'schema'", []).unwrap();
        let err = Store::open(&path).err().unwrap();
        assert!(err.to_string().contains("newer ringfence"), "{err}");
    }

    #[test]
    fn an_unreadable_event_names_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let mut s = Store::open(&path).unwrap();
        s.append_now(vec![ev("a", 1)]).unwrap();
        Connection::open(&path).unwrap().execute("UPDATE events SET body = '{\"type\":\"nope\"}'", []).unwrap();
        let err = s.load_all().unwrap_err();
        assert!(err.to_string().contains("event 1"), "{err}");
    }
}
