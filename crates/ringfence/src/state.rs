//! The server's shared state: the event log and the projections folded from it, behind one
//! lock so that checking a command and appending its events is atomic.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ringfence_core::command::CommandError;
use ringfence_core::{Event, EventKind, NewEvent, Timestamp, World};
use ringfence_store::postgres::PgStore;
use ringfence_store::{EventStore, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::executor::{CommandExecutor, Executor, Executors, ProcessExecutor};
use crate::http::HttpClient;

pub fn now() -> Timestamp {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    Timestamp(ms)
}

/// Where the server keeps its event log.
#[derive(Debug, Clone, Default)]
pub enum StoreLocation {
    /// `events.db` in the data directory: embedded, nothing to run beside the server.
    #[default]
    Sqlite,
    /// A PostgreSQL database (`postgres://USER@HOST:PORT/DB`), its password apart (never in
    /// the URL: a command line is readable by every user of the machine).
    Postgres { url: String, password: Option<String> },
}

impl StoreLocation {
    /// `sqlite` (or nothing) or a `postgres://` URL without a password; `password_file` (mode
    /// 0600) holds the password.
    pub fn parse(value: Option<&str>, password_file: Option<&std::path::Path>) -> Result<StoreLocation, String> {
        let url = match value.map(str::trim) {
            None | Some("" | "sqlite") => {
                if password_file.is_some() {
                    return Err("--store-password-file: only a PostgreSQL store takes a password".into());
                }
                return Ok(StoreLocation::Sqlite);
            }
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => u,
            Some(other) => {
                return Err(format!(
                    "--store {:?}: expected `sqlite` or postgres://USER@HOST:PORT/DB",
                    ringfence_store::postgres::redact(other)
                ));
            }
        };
        let authority = url.split_once("://").map_or("", |(_, r)| r.split('/').next().unwrap_or(""));
        if authority.rsplit_once('@').is_some_and(|(user, _)| user.contains(':')) {
            return Err(format!(
                "--store {}: the URL holds a password, which every user of this machine can read in the process list; put it in a file readable only by you and name it with --store-password-file",
                ringfence_store::postgres::redact(url)
            ));
        }
        let password = match password_file {
            None => None,
            Some(path) => Some(crate::secrets::read_private_file(path)?),
        };
        Ok(StoreLocation::Postgres { url: url.to_string(), password })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Inner {
    store: Box<dyn EventStore>,
    world: World,
    /// The last event folded into `world`: where this server expects the log to end.
    seq: u64,
}

pub struct Shared {
    pub data_dir: PathBuf,
    /// This server's claim on the data directory, held for its lifetime.
    _claim: crate::datadir::DataDir,
    inner: Mutex<Inner>,
    /// What runs the workloads' instances, through the executor seam.
    pub executor: Arc<dyn Executor>,
    /// The ringfence binary: `{ringfence}` in commands, and what runs routers.
    pub ringfence_bin: PathBuf,
    pub http: HttpClient,
    /// The data planes, through the traffic seam.
    pub traffic: crate::traffic::Traffic,
    notifies: Mutex<HashMap<String, Arc<Notify>>>,
    /// Bumped whenever any workload's state changes (here or, for replicas, by another):
    /// what long-polls wait on.
    changes: tokio::sync::watch::Sender<u64>,
    pub running_loops: Mutex<HashSet<String>>,
    /// The controller loops, so that a clean shutdown waits for each to finish its round.
    pub tasks: tokio_util::task::TaskTracker,
    pub shutdown: CancellationToken,
    pub tick: std::time::Duration,
    /// The latest verdict the controller computed per workload (not stored: it changes every
    /// tick; the verdicts that decide something are stored with their events).
    pub live: Mutex<HashMap<String, LiveVerdict>>,
    /// Ids of the signed webhooks accepted lately, so a replay is refused.
    pub webhooks: crate::webhook::ReplayGuard,
    /// One replica of several on a shared log: this replica's id. Each workload's controller
    /// then runs where its lease is, and this state follows what the others append.
    pub replica: Option<String>,
    /// The workloads this replica leads, with the fence their controllers' appends carry.
    fences: Mutex<HashMap<String, ringfence_store::Fence>>,
    /// Every workload's lease as of the last renewal (unexpired ones), for `status`.
    pub leaders: Mutex<HashMap<String, ringfence_store::Lease>>,
    /// The users' listening socket of each workload's router, held here while routers come
    /// and go: connections that arrive between a router's exit and its successor's start wait
    /// in the socket's queue instead of being refused (`routerproc`).
    pub router_sockets: Mutex<HashMap<String, std::net::TcpListener>>,
}

/// How long a workload's lease lasts unless renewed, and how often it is renewed: a dead
/// leader's workloads move within `LEASE_TTL + LEASE_RENEW` (the 5 s bar).
pub const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(3);
pub const LEASE_RENEW: std::time::Duration = std::time::Duration::from_millis(750);

/// The controller's latest verdict on a workload's rollout in progress.
#[derive(Debug, Clone)]
pub struct LiveVerdict {
    pub rollout_id: String,
    pub at: ringfence_core::Timestamp,
    pub verdict: ringfence_core::Verdict,
}

/// Events read at a time while the state is rebuilt at start.
const FOLD_PAGE: usize = 5_000;

impl Shared {
    /// Opens the event log the configuration names and rebuilds every projection from it.
    pub fn open(config: &crate::server::ServerConfig, shutdown: CancellationToken) -> anyhow::Result<Arc<Shared>> {
        let (data_dir, ringfence_bin, tick) = (config.data_dir.clone(), config.ringfence_bin.clone(), config.tick);
        let claim = match config.replica {
            // Replicas on one machine share the data directory (the run files of the
            // processes a leader started are how the next one adopts them).
            Some(_) => crate::datadir::DataDir::claim_shared(&data_dir)?,
            None => crate::datadir::DataDir::claim(&data_dir)?,
        };
        let mut store: Box<dyn EventStore> = match &config.store {
            StoreLocation::Sqlite => {
                let log_file = data_dir.join(ringfence_store::LOG_FILE);
                let store = Store::open(&log_file)?;
                for suffix in ["", "-wal", "-shm"] {
                    crate::datadir::DataDir::make_private(&PathBuf::from(format!("{}{suffix}", log_file.display())));
                }
                Box::new(store)
            }
            StoreLocation::Postgres { url, password } if config.replica.is_some() => {
                let mut store = off_the_workers(|| PgStore::open(url, password.as_deref()))?;
                off_the_workers(|| store.claim_shared())?;
                tracing::info!(store = %store.describe(), replica = config.replica.as_deref(), "event log on PostgreSQL, shared by replicas");
                Box::new(store)
            }
            StoreLocation::Postgres { url, password } => {
                let mut store = off_the_workers(|| PgStore::open(url, password.as_deref()))?;
                // A server that just died may still hold the claim until PostgreSQL notices its
                // connection closed: a restart waits a little for it.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
                loop {
                    match off_the_workers(|| store.claim()) {
                        Ok(()) => break,
                        Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(250)),
                    }
                }
                tracing::info!(store = %store.describe(), "event log on PostgreSQL");
                Box::new(store)
            }
        };
        let (world, seq, folded) = off_the_workers(|| fold_log(store.as_mut(), FOLD_PAGE))?;
        tracing::info!(events = folded, workloads = world.workloads.len(), "state rebuilt from the event log");
        let http = HttpClient::new();
        let executor = Arc::new(Executors {
            process: ProcessExecutor::new(&data_dir, ringfence_bin.clone(), http.clone())?,
            command: CommandExecutor::new(&data_dir, ringfence_bin.clone(), http.clone()),
        });
        Ok(Arc::new(Shared {
            data_dir,
            _claim: claim,
            inner: Mutex::new(Inner { store, world, seq }),
            executor,
            ringfence_bin,
            traffic: crate::traffic::Traffic::new(http.clone()),
            http,
            notifies: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
            running_loops: Mutex::default(),
            tasks: tokio_util::task::TaskTracker::new(),
            shutdown,
            tick,
            live: Mutex::default(),
            webhooks: Default::default(),
            replica: config.replica.clone(),
            fences: Mutex::default(),
            leaders: Mutex::default(),
            router_sockets: Mutex::default(),
        }))
    }

    /// Whether this server runs `workload`'s controller: always when it runs alone; as one of
    /// several replicas, while it holds the workload's lease.
    pub fn leads(&self, workload: &str) -> bool {
        self.replica.is_none() || self.fences.lock().expect("fences lock").contains_key(workload)
    }

    /// Replicas: folds what the others appended since this one last looked. Returns whether
    /// anything was new.
    pub fn catch_up(&self) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock().expect("state lock");
        let touched = catch_up_locked(&mut inner)?;
        drop(inner);
        let any = !touched.is_empty();
        for w in touched {
            self.notify(&w);
        }
        Ok(any)
    }

    /// Replicas: renews the leases it holds, takes free ones while it holds fewer than its
    /// share (the workloads divided by the live replicas, rounded up), hands idle workloads
    /// beyond its share back for the others to take, and lets go of those it lost. Returns the
    /// workloads it newly leads.
    pub fn renew_leases(&self) -> Result<Vec<String>, StoreError> {
        let Some(me) = self.replica.clone() else { return Ok(Vec::new()) };
        let live = {
            let mut inner = self.inner.lock().expect("state lock");
            off_the_workers(|| inner.store.heartbeat(&me, LEASE_TTL))?
        };
        let names: Vec<(String, bool)> = self
            .world(|w| w.workloads.iter().map(|(name, ws)| (name.clone(), ws.active_rollout().is_none())).collect());
        let share = names.len().div_ceil(live.max(1) as usize).max(1);
        let mut gained = Vec::new();
        // The leases this replica has, renewed in one statement; one it no longer has (lapsed,
        // taken over) stops its controller.
        let renewed = {
            let mut inner = self.inner.lock().expect("state lock");
            off_the_workers(|| inner.store.renew(&me, LEASE_TTL))
        };
        match renewed {
            Ok(renewed) => {
                let mut fences = self.fences.lock().expect("fences lock");
                fences.retain(|name, f| {
                    let kept = renewed.iter().any(|l| l.workload == *name && l.token == f.token);
                    if !kept {
                        tracing::warn!(
                            workload = name,
                            replica = me,
                            "the lease is lost: another replica may lead now"
                        );
                    }
                    kept
                });
                for l in renewed {
                    if !fences.contains_key(&l.workload) {
                        // Held since before this process (a restart under the same id).
                        tracing::info!(workload = l.workload, replica = me, token = l.token, "leading the workload");
                        gained.push(l.workload.clone());
                        fences.insert(
                            l.workload.clone(),
                            ringfence_store::Fence { workload: l.workload, token: l.token },
                        );
                    }
                }
            }
            // Unrenewed, the leases lapse by themselves; until then the fences still hold (and
            // PostgreSQL refuses the writes once another replica takes a workload).
            Err(e) => tracing::warn!(replica = me, error = %e, "cannot renew the leases"),
        }
        // Free workloads, while this replica holds fewer than its share.
        for (name, _) in &names {
            let name = name.clone();
            let (held, mine) = {
                let fences = self.fences.lock().expect("fences lock");
                (fences.contains_key(&name), fences.len())
            };
            if held || mine >= share {
                continue;
            }
            let lease = {
                let mut inner = self.inner.lock().expect("state lock");
                off_the_workers(|| inner.store.acquire(&name, &me, LEASE_TTL))
            };
            match lease {
                Ok(Some(l)) => {
                    tracing::info!(workload = name, replica = me, token = l.token, "leading the workload");
                    let fence = ringfence_store::Fence { workload: name.clone(), token: l.token };
                    self.fences.lock().expect("fences lock").insert(name.clone(), fence);
                    gained.push(name);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(workload = name, error = %e, "cannot take the workload's lease"),
            }
        }
        // Beyond its share: idle workloads are handed over (never one mid-rollout).
        let excess: Vec<ringfence_store::Fence> = {
            let fences = self.fences.lock().expect("fences lock");
            let over = fences.len().saturating_sub(share);
            names
                .iter()
                .filter(|(name, idle)| *idle && fences.contains_key(name))
                .filter_map(|(name, _)| fences.get(name).cloned())
                .take(over)
                .collect()
        };
        let leases = {
            let mut inner = self.inner.lock().expect("state lock");
            off_the_workers(|| inner.store.leases())
        };
        match leases {
            Ok(all) => {
                let now = now().millis();
                *self.leaders.lock().expect("leaders lock") =
                    all.into_iter().filter(|l| l.expires_at_ms > now).map(|l| (l.workload.clone(), l)).collect();
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the leases"),
        }
        for f in excess {
            self.fences.lock().expect("fences lock").remove(&f.workload);
            let mut inner = self.inner.lock().expect("state lock");
            match off_the_workers(|| inner.store.release(&f, &me)) {
                Ok(()) => tracing::info!(
                    workload = f.workload,
                    replica = me,
                    share,
                    "handing the workload to a replica with room"
                ),
                Err(e) => {
                    tracing::warn!(workload = f.workload, error = %e, "cannot hand the lease back; it lapses by itself")
                }
            }
        }
        Ok(gained)
    }

    /// Replicas, on a clean stop: hands every lease back so the others take over at once.
    pub fn release_leases(&self) {
        let Some(me) = self.replica.clone() else { return };
        let fences: Vec<_> = self.fences.lock().expect("fences lock").drain().map(|(_, f)| f).collect();
        let mut inner = self.inner.lock().expect("state lock");
        for f in fences {
            if let Err(e) = off_the_workers(|| inner.store.release(&f, &me)) {
                tracing::warn!(workload = f.workload, error = %e, "cannot hand the lease back; it lapses by itself");
            }
        }
    }

    pub fn world<R>(&self, f: impl FnOnce(&World) -> R) -> R {
        f(&self.inner.lock().expect("state lock").world)
    }

    /// Checks a command against the current state and appends its events, atomically.
    pub fn command(
        &self,
        workload: &str,
        actor: &str,
        reason: &str,
        mut f: impl FnMut(&World) -> Result<Vec<EventKind>, CommandError>,
    ) -> Result<Vec<Event>, AppendError> {
        self.command_many(actor, reason, |w| Ok(f(w)?.into_iter().map(|k| (workload.to_string(), k)).collect()))
    }

    /// [`Shared::command`] for a change of several workloads at once (stopping the line):
    /// each event names its workload, and all are appended in one transaction.
    pub fn command_many(
        &self,
        actor: &str,
        reason: &str,
        mut f: impl FnMut(&World) -> Result<Vec<(String, EventKind)>, CommandError>,
    ) -> Result<Vec<Event>, AppendError> {
        let mut inner = self.inner.lock().expect("state lock");
        // A replica decides on the log as the others left it. An append that still races one
        // of theirs is refused (`Conflict`), and the command is decided again on the log as
        // it now ends, a few times before the caller is told to try again.
        let mut caught_up = Vec::new();
        let mut tries = 0;
        let events = loop {
            if self.replica.is_some() {
                caught_up.extend(catch_up_locked(&mut inner)?);
            }
            let kinds = f(&inner.world)?;
            let at = now();
            let new: Vec<NewEvent> = kinds
                .into_iter()
                .map(|(workload, kind)| NewEvent { at, actor: actor.into(), reason: reason.into(), workload, kind })
                .collect();
            let expected = inner.seq;
            // What a replica's controller appends carries the workload's fence: refused once
            // another replica has taken the workload over.
            let fence =
                match (&self.replica, actor, new.first()) {
                    (Some(_), "controller", Some(e)) => {
                        Some(self.fences.lock().expect("fences lock").get(&e.workload).cloned().ok_or_else(|| {
                            StoreError::Fenced { workload: e.workload.clone(), token: 0, current: None }
                        })?)
                    }
                    _ => None,
                };
            // Most controller ticks decide nothing: they must not pay for handing the worker
            // thread over to a blocking one (`block_in_place`), which cost more than the tick.
            if new.is_empty() {
                break Vec::new();
            }
            let appended = off_the_workers(|| match &fence {
                Some(f) => inner.store.append_fenced(f, expected, new),
                None => inner.store.append(expected, new),
            });
            match appended {
                Err(StoreError::Conflict { .. }) if self.replica.is_some() && tries < 5 => tries += 1,
                other => break other?,
            }
        };
        for e in &events {
            inner.world.apply(e);
        }
        inner.seq = events.last().map_or(inner.seq, |e| e.seq);
        drop(inner);
        let touched: std::collections::BTreeSet<&str> = events
            .iter()
            .map(|e| e.workload.as_str())
            .chain(caught_up.iter().map(String::as_str))
            .filter(|w| !w.is_empty())
            .collect();
        for w in touched {
            self.notify(w);
        }
        Ok(events)
    }

    /// Signs a digest of the log as it ends now (a clean stop), so no event this server wrote
    /// is covered by the hash chain alone.
    pub fn seal(&self) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("state lock");
        off_the_workers(|| inner.store.write_digest()).map(|_| ())
    }

    /// Appends events the controller decided on.
    pub fn record(&self, workload: &str, reason: &str, kinds: Vec<EventKind>) -> Result<Vec<Event>, StoreError> {
        match self.command(workload, "controller", reason, |_| Ok(kinds.clone())) {
            Ok(e) => Ok(e),
            Err(AppendError::Store(e)) => Err(e),
            Err(AppendError::Command(_)) => unreachable!("recording checks nothing"),
        }
    }

    pub fn events(&self, workload: Option<&str>, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut inner = self.inner.lock().expect("state lock");
        off_the_workers(|| inner.store.read(workload, after, limit))
    }

    pub fn notifier(&self, workload: &str) -> Arc<Notify> {
        self.notifies.lock().expect("notify lock").entry(workload.into()).or_default().clone()
    }

    pub fn notify(&self, workload: &str) {
        self.notifier(workload).notify_one();
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes when any workload's state changes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Folds the events appended after the last one `inner` knows (by other replicas); returns
/// the workloads they touched.
fn catch_up_locked(inner: &mut Inner) -> Result<Vec<String>, StoreError> {
    let mut touched = Vec::new();
    loop {
        let after = inner.seq;
        let new = off_the_workers(|| inner.store.read(None, after, 10_000))?;
        let Some(last) = new.last().map(|e| e.seq) else { return Ok(touched) };
        for e in &new {
            inner.world.apply(e);
            if !touched.contains(&e.workload) {
                touched.push(e.workload.clone());
            }
        }
        inner.seq = last;
    }
}

/// The state the log folds into, the last event's number and the events folded, read `page`
/// events at a time: the whole log read at once would hold every event in memory beside the
/// state it folds into, and the process keeps that peak for good.
fn fold_log(store: &mut dyn EventStore, page: usize) -> Result<(World, u64, usize), StoreError> {
    let mut world = World::default();
    let (mut seq, mut folded) = (0, 0);
    loop {
        let events = store.read(None, seq, page)?;
        let Some(last) = events.last() else { break };
        seq = last.seq;
        folded += events.len();
        for e in &events {
            world.apply(e);
        }
    }
    Ok((world, seq, folded))
}

/// Runs blocking IO (an fsync of the event log) without stalling the async runtime: on a
/// multi-threaded runtime the worker hands its other tasks over first; elsewhere (a
/// current-thread test runtime, plain threads) it just runs.
fn off_the_workers<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod fold_tests {
    use super::*;

    #[test]
    fn the_log_folded_page_by_page_is_the_log_folded_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("events.db")).unwrap();
        let events: Vec<NewEvent> = (0..7)
            .map(|n| NewEvent {
                at: Timestamp(1_000 + n),
                actor: "tester".into(),
                reason: format!("event {n}"),
                workload: String::new(),
                kind: if n % 2 == 0 { EventKind::LineStopped { paused: vec![] } } else { EventKind::LineRestarted },
            })
            .collect();
        store.append(0, events).unwrap();
        let whole = fold_log(&mut store, usize::MAX).unwrap();
        assert_eq!((whole.1, whole.2), (7, 7));
        for page in [1, 2, 3, 7, 8] {
            assert_eq!(fold_log(&mut store, page).unwrap(), whole, "pages of {page}");
        }
    }
}
