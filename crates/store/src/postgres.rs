//! The event log on PostgreSQL: the same guarantees as the SQLite log (sequence numbers
//! without gaps, one transaction per append, an append refused unless the log still ends
//! where the caller last saw it, each row's hash chained to the previous one's) on a database
//! that outlives one machine.
//!
//! The end of the log is one row (`head`), locked for the length of an append: two writers
//! serialise on it, and the second sees the first's end and is refused rather than numbering
//! over it. A server holds a session-level advisory lock on the log while it runs, so two
//! servers never drive the same workloads from one database until leadership per workload
//! comes (see docs/topology.md).

use std::time::Duration;

use postgres::{Client, NoTls};
use ringfence_core::{Event, NewEvent};

use crate::{EventStore, Fence, Lease, StoreError, audit};

/// The PostgreSQL schema this build writes; a newer one is refused.
pub const PG_SCHEMA: i64 = 1;

/// The advisory lock a running server holds on the log (an arbitrary constant: "ringfnce").
const SERVER_LOCK: i64 = 0x7269_6e67_666e_6365;

pub struct PgStore {
    /// Always `Some` until dropped (see `Drop`).
    client: Option<Client>,
    /// The URL without its password, for messages.
    at: String,
    last_seq: u64,
}

/// `postgres://user:secret@host/db` as `postgres://user@host/db`: a password never reaches a
/// message or a log line.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "postgres://(unparsable URL)".into() };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => format!("{}@{host}", user.split_once(':').map_or(user, |(u, _)| u)),
        None => authority.to_string(),
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    format!("{scheme}://{authority}/{path}")
}

fn pg(at: &str, e: postgres::Error) -> StoreError {
    // The server's own words (`ERROR: ...`) say more than the client's summary.
    let why = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    };
    StoreError::Postgres { at: at.to_string(), why }
}

impl PgStore {
    /// Connects to the log at `url` (`postgres://USER@HOST:PORT/DB`, with `password` if the
    /// server asks for one), creating its tables on first use and refusing a schema newer than this build's. Connecting gives up
    /// after 10 s, and every statement after 30 s.
    pub fn open(url: &str, password: Option<&str>) -> Result<PgStore, StoreError> {
        let at = redact(url);
        let mut config: postgres::Config =
            url.parse().map_err(|e: postgres::Error| StoreError::Postgres { at: at.clone(), why: e.to_string() })?;
        if let Some(p) = password {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        config.application_name("ringfence");
        let mut client = config.connect(NoTls).map_err(|e| pg(&at, e))?;
        client
            .batch_execute("SET statement_timeout = '30s'; SET lock_timeout = '30s'; SET client_min_messages = warning")
            .map_err(|e| pg(&at, e))?;
        migrate(&mut client, &at)?;
        let last: i64 = client.query_one("SELECT seq FROM head WHERE id = 1", &[]).map_err(|e| pg(&at, e))?.get(0);
        Ok(PgStore { client: Some(client), at, last_seq: last as u64 })
    }

    fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("the client lives as long as the store")
    }

    /// Claims the log for this server: refused while another server runs on it. Held until
    /// this connection closes (the server stops, or dies and PostgreSQL notices).
    pub fn claim(&mut self) -> Result<(), StoreError> {
        self.try_claim(
            "SELECT pg_try_advisory_lock($1)",
            "another ringfence server runs on this event log: one server per log, or replicas each \
             started with --replica-id (docs/topology.md)",
        )
    }

    /// Claims the log as one replica of several: refused while a server runs on it alone (and
    /// such a server is refused while replicas run). Held until this connection closes.
    pub fn claim_shared(&mut self) -> Result<(), StoreError> {
        self.try_claim(
            "SELECT pg_try_advisory_lock_shared($1)",
            "a ringfence server runs on this event log alone (without --replica-id); stop it first",
        )
    }

    fn try_claim(&mut self, sql: &str, refused: &str) -> Result<(), StoreError> {
        let got: bool = self.client().query_one(sql, &[&SERVER_LOCK]).map_err(|e| pg(&self.at, e))?.get(0);
        if got { Ok(()) } else { Err(StoreError::Postgres { at: self.at.clone(), why: refused.into() }) }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Takes the lease of `workload` for `holder` for `ttl` when it is free or has lapsed, or
    /// renews it when `holder` has it (same token). `None`: another holder has it.
    pub fn acquire(&mut self, workload: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
        let row = self
            .client()
            .query_opt(
                "INSERT INTO leases AS l (workload, holder, token, expires_at)
                 VALUES ($1, $2, 1, now() + make_interval(secs => $3::BIGINT / 1000.0))
                 ON CONFLICT (workload) DO UPDATE SET
                     token = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now()
                                  THEN l.token ELSE l.token + 1 END,
                     holder = EXCLUDED.holder,
                     expires_at = EXCLUDED.expires_at
                 WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
                 RETURNING holder, token, (extract(epoch FROM expires_at) * 1000)::BIGINT",
                &[&workload, &holder, &ttl_ms],
            )
            .map_err(|e| pg(&self.at, e))?;
        Ok(row.map(|r| Lease { workload: workload.into(), holder: r.get(0), token: r.get(1), expires_at_ms: r.get(2) }))
    }

    /// Renews, in one statement, every lease `holder` has that has not lapsed; returns them.
    /// A lapsed one is not renewed (another replica may have taken it; `acquire` takes it back
    /// under a new token if not).
    pub fn renew(&mut self, holder: &str, ttl: Duration) -> Result<Vec<Lease>, StoreError> {
        let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
        let rows = self
            .client()
            .query(
                "UPDATE leases SET expires_at = now() + make_interval(secs => $2::BIGINT / 1000.0)
                 WHERE holder = $1 AND expires_at > now()
                 RETURNING workload, holder, token, (extract(epoch FROM expires_at) * 1000)::BIGINT",
                &[&holder, &ttl_ms],
            )
            .map_err(|e| pg(&self.at, e))?;
        Ok(rows
            .iter()
            .map(|r| Lease { workload: r.get(0), holder: r.get(1), token: r.get(2), expires_at_ms: r.get(3) })
            .collect())
    }

    /// Gives the lease up at once (a clean shutdown), so another replica need not wait for it
    /// to lapse. Nothing happens unless `holder` has it with `fence`'s token.
    pub fn release(&mut self, fence: &Fence, holder: &str) -> Result<(), StoreError> {
        self.client()
            .execute(
                "UPDATE leases SET expires_at = now() WHERE workload = $1 AND holder = $2 AND token = $3",
                &[&fence.workload, &holder, &fence.token],
            )
            .map_err(|e| pg(&self.at, e))?;
        Ok(())
    }

    /// Says this replica is alive, and how many are (seen within `ttl`, itself included): how
    /// many ways the workloads are shared.
    pub fn heartbeat(&mut self, replica: &str, ttl: Duration) -> Result<u32, StoreError> {
        let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
        let at = self.at.clone();
        let client = self.client();
        client
            .execute(
                "INSERT INTO replicas (id, seen_at) VALUES ($1, now())
                 ON CONFLICT (id) DO UPDATE SET seen_at = now()",
                &[&replica],
            )
            .map_err(|e| pg(&at, e))?;
        let live: i64 = client
            .query_one(
                "SELECT count(*) FROM replicas WHERE seen_at > now() - make_interval(secs => $1::BIGINT / 1000.0)",
                &[&ttl_ms],
            )
            .map_err(|e| pg(&at, e))?
            .get(0);
        Ok(live.max(1) as u32)
    }

    /// Every workload's lease, by workload.
    pub fn leases(&mut self) -> Result<Vec<Lease>, StoreError> {
        let rows = self
            .client()
            .query(
                "SELECT workload, holder, token, (extract(epoch FROM expires_at) * 1000)::BIGINT
                 FROM leases ORDER BY workload",
                &[],
            )
            .map_err(|e| pg(&self.at, e))?;
        Ok(rows
            .iter()
            .map(|r| Lease { workload: r.get(0), holder: r.get(1), token: r.get(2), expires_at_ms: r.get(3) })
            .collect())
    }

    /// [`EventStore::append`] by a workload's leader: refused ([`StoreError::Fenced`]), with
    /// nothing written, unless `fence` still is the workload's current lease. The check and
    /// the append are one transaction, so a takeover lands either before the append (which
    /// is then refused) or after it; a deposed leader that still believes it leads cannot
    /// write.
    pub fn append_fenced(
        &mut self,
        fence: &Fence,
        expected_last: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, StoreError> {
        self.append_tx(Some(fence), expected_last, events)
    }
}

/// Creates the tables of schema 1, or checks the version found, under a transaction-scoped
/// advisory lock so that two servers starting at once do not race.
fn migrate(client: &mut Client, at: &str) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(|e| pg(at, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(SERVER_LOCK + 1)]).map_err(|e| pg(at, e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
         CREATE TABLE IF NOT EXISTS events (
             seq BIGINT PRIMARY KEY,
             at BIGINT NOT NULL,
             actor TEXT NOT NULL,
             reason TEXT NOT NULL,
             workload TEXT NOT NULL,
             type TEXT NOT NULL,
             rollout_id TEXT,
             body TEXT NOT NULL,
             hash BYTEA NOT NULL
         );
         CREATE INDEX IF NOT EXISTS events_by_workload ON events (workload, seq);
         CREATE TABLE IF NOT EXISTS head (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             seq BIGINT NOT NULL,
             hash BYTEA
         );
         INSERT INTO head (id, seq, hash) VALUES (1, 0, NULL) ON CONFLICT (id) DO NOTHING;
         CREATE TABLE IF NOT EXISTS replicas (
             id TEXT PRIMARY KEY,
             seen_at TIMESTAMPTZ NOT NULL
         );
         CREATE TABLE IF NOT EXISTS leases (
             workload TEXT PRIMARY KEY,
             holder TEXT NOT NULL,
             token BIGINT NOT NULL,
             expires_at TIMESTAMPTZ NOT NULL
         );",
    )
    .map_err(|e| pg(at, e))?;
    let found: Option<i64> =
        tx.query_opt("SELECT value FROM meta WHERE key = 'schema'", &[]).map_err(|e| pg(at, e))?.map(|r| r.get(0));
    match found {
        None => {
            tx.execute("INSERT INTO meta (key, value) VALUES ('schema', $1)", &[&PG_SCHEMA]).map_err(|e| pg(at, e))?;
        }
        Some(v) if v > PG_SCHEMA => {
            return Err(StoreError::Schema { path: at.into(), found: v, known: PG_SCHEMA });
        }
        // Schema 1 is the first: later versions upgrade here, in this transaction.
        Some(_) => {}
    }
    tx.commit().map_err(|e| pg(at, e))
}

impl PgStore {
    /// An append, by a workload's leader when `fence` is given (see [`PgStore::append_fenced`]).
    fn append_tx(
        &mut self,
        fence: Option<&Fence>,
        expected_last: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let at = self.at.clone();
        let e = |e| pg(&at, e);
        let mut tx = self.client.as_mut().expect("the client lives as long as the store").transaction().map_err(e)?;
        if let Some(f) = fence {
            // Share-locked: a takeover (which updates the row) waits for this append, or this
            // append reads the token the takeover left.
            let current: Option<i64> = tx
                .query_opt("SELECT token FROM leases WHERE workload = $1 FOR SHARE", &[&f.workload])
                .map_err(e)?
                .map(|r| r.get(0));
            if current != Some(f.token) {
                return Err(StoreError::Fenced { workload: f.workload.clone(), token: f.token, current });
            }
        }
        // The lock on the one row that says where the log ends: a second writer waits here,
        // then reads the end the first one left.
        let row = tx.query_one("SELECT seq, hash FROM head WHERE id = 1 FOR UPDATE", &[]).map_err(e)?;
        let found = row.get::<_, i64>(0) as u64;
        if found != expected_last {
            return Err(StoreError::Conflict { path: self.at.clone().into(), expected: expected_last, found });
        }
        let mut prev = match row.get::<_, Option<Vec<u8>>>(1) {
            None if found == 0 => audit::GENESIS,
            Some(h) if h.len() == 32 => {
                let mut a = [0u8; 32];
                a.copy_from_slice(&h);
                a
            }
            _ => {
                return Err(StoreError::Audit {
                    path: self.at.clone().into(),
                    why: format!(
                        "event {found}, the last of the log, has no valid hash: the log was changed outside ringfence; nothing was written"
                    ),
                });
            }
        };
        let insert = tx
            .prepare(
                "INSERT INTO events (seq, at, actor, reason, workload, type, rollout_id, body, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .map_err(e)?;
        let mut out = Vec::with_capacity(events.len());
        let mut seq = expected_last;
        for ev in events {
            seq += 1;
            let body = serde_json::to_string(&ev.kind).expect("events always serialize");
            let kind = ev.kind.type_name();
            let rollout_id = ev.kind.rollout_id().map(str::to_string);
            let fields = audit::EventFields {
                at: ev.at.millis(),
                actor: &ev.actor,
                reason: &ev.reason,
                workload: &ev.workload,
                kind: &kind,
                rollout_id: rollout_id.as_deref(),
                body: &body,
            };
            prev = audit::event_hash(&prev, seq, &fields);
            tx.execute(
                &insert,
                &[
                    &(seq as i64),
                    &ev.at.millis(),
                    &ev.actor,
                    &ev.reason,
                    &ev.workload,
                    &kind,
                    &rollout_id,
                    &body,
                    &prev.as_slice(),
                ],
            )
            .map_err(e)?;
            out.push(ev.numbered(seq));
        }
        tx.execute("UPDATE head SET seq = $1, hash = $2 WHERE id = 1", &[&(seq as i64), &prev.as_slice()])
            .map_err(e)?;
        tx.commit().map_err(e)?;
        self.last_seq = seq;
        Ok(out)
    }
}

impl EventStore for PgStore {
    fn append(&mut self, expected_last: u64, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        self.append_tx(None, expected_last, events)
    }

    fn append_fenced(
        &mut self,
        fence: &Fence,
        expected_last: u64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, StoreError> {
        PgStore::append_fenced(self, fence, expected_last, events)
    }

    fn acquire(&mut self, workload: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        PgStore::acquire(self, workload, holder, ttl)
    }

    fn release(&mut self, fence: &Fence, holder: &str) -> Result<(), StoreError> {
        PgStore::release(self, fence, holder)
    }

    fn renew(&mut self, holder: &str, ttl: Duration) -> Result<Vec<Lease>, StoreError> {
        PgStore::renew(self, holder, ttl)
    }

    fn heartbeat(&mut self, replica: &str, ttl: Duration) -> Result<u32, StoreError> {
        PgStore::heartbeat(self, replica, ttl)
    }

    fn leases(&mut self) -> Result<Vec<Lease>, StoreError> {
        PgStore::leases(self)
    }

    fn read(&mut self, workload: Option<&str>, after_seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        // One statement per case, as for SQLite: a generic plan of `$2 IS NULL OR workload = $2`
        // cannot use the workload's index.
        let sql = match workload {
            Some(_) => {
                "SELECT seq, at, actor, reason, workload, body FROM events
                 WHERE workload = $2::TEXT AND seq > $1
                 ORDER BY seq LIMIT $3"
            }
            None => {
                "SELECT seq, at, actor, reason, workload, body FROM events
                 WHERE seq > $1 AND $2::TEXT IS NULL
                 ORDER BY seq LIMIT $3"
            }
        };
        let rows = self.client().query(sql, &[&(after_seq as i64), &workload, &limit]).map_err(|e| pg(&self.at, e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let seq = r.get::<_, i64>(0) as u64;
            let body: String = r.get(5);
            let kind = serde_json::from_str(&body).map_err(|source| StoreError::Decode {
                path: self.at.clone().into(),
                seq,
                source,
            })?;
            out.push(Event {
                seq,
                at: ringfence_core::Timestamp(r.get(1)),
                actor: r.get(2),
                reason: r.get(3),
                workload: r.get(4),
                kind,
            });
        }
        Ok(out)
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn describe(&self) -> String {
        self.at.clone()
    }
}

/// The sync client closes its connection by blocking on its own runtime, which panics on a
/// thread that drives async tasks; the last of the store may be dropped on one (a server
/// shutting down), so the client goes away on a thread of its own.
impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(client));
        }
    }
}
