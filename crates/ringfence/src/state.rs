//! The server's shared state: the event log and the projections folded from it. A command is
//! checked and its events folded atomically under the projections' lock, in the order the log
//! will hold them; the log's committer then appends them, many commands' events in one
//! transaction, and the command is answered once they are durable.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ringfence_core::command::CommandError;
use ringfence_core::{Event, EventKind, NewEvent, Timestamp, WorkloadState, World};
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

/// The projections and the events decided but not yet durable. A server alone commits the
/// log in groups: a command decides and folds its events here under this lock, then waits,
/// outside it, for a commit that carries every event pending at that moment (one fsync for
/// many workloads' steps). Replicas decide and append under both locks, one command at a time.
struct Inner {
    world: World,
    /// The last event folded into `world`: where this server expects the log to end once the
    /// pending events are committed.
    seq: u64,
    /// Decided and folded into `world`, not yet in the log, oldest first.
    pending: Vec<Event>,
    /// Bumped when pending events are dropped (a failed commit), so their waiters learn it.
    generation: u64,
    /// The last event decided of each workload (`""`: of none, such as tokens and the line),
    /// so a read of one workload waits only for its own events to be durable.
    last_of: HashMap<String, u64>,
    /// Where the log ended when each generation ended (index: the generation): an event of
    /// that generation up to there is durable even if the waiter only hears of a later one.
    generation_ends: Vec<u64>,
}

/// A command decided, resolving once its events are durable. Named (and boxed) so that it
/// does not carry the deciding closure's type, which borrows the caller's locals.
pub type Committed<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Vec<Event>, AppendError>> + Send + 'a>>;

/// How far the log is durable, as the commits publish it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    pub generation: u64,
    pub seq: u64,
}

pub struct Shared {
    pub data_dir: PathBuf,
    /// This server's claim on the data directory, held for its lifetime.
    _claim: crate::datadir::DataDir,
    /// The log. Lock order: `store` before `inner`, never the other way.
    store: Mutex<Box<dyn EventStore>>,
    inner: Mutex<Inner>,
    durable: tokio::sync::watch::Sender<Durable>,
    /// Wakes the committer when events are pending (with `inner`'s lock).
    commit_wanted: std::sync::Condvar,
    /// Why the last failed commit failed, for the commands whose events it dropped.
    commit_failure: Mutex<String>,
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
    /// Controller ticks since this server started, for `/v1/metrics`: what the loops cost.
    pub ticks: std::sync::atomic::AtomicU64,
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
    /// The last workload folded whole (`whole_history`), carried on by the events after it:
    /// one such fold at a time, so readers asking for many old rollouts at once wait for each
    /// other instead of holding many whole histories in memory and every core, and the next
    /// reads of the same workload fold only what was appended since. Let go once unused for
    /// `WHOLE_FOLD_IDLE` (it holds a whole history, which is what `[history]` bounds).
    whole_fold: Mutex<Option<WholeFold>>,
}

/// A workload's whole log folded with nothing let go, as of the log's event `world.last_seq`.
struct WholeFold {
    workload: String,
    world: World,
    used: std::time::Instant,
}

/// How long an unused whole fold is kept (`Shared::whole_fold`).
const WHOLE_FOLD_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

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
        let shared = Arc::new(Shared {
            data_dir,
            _claim: claim,
            store: Mutex::new(store),
            inner: Mutex::new(Inner {
                world,
                seq,
                pending: Vec::new(),
                generation: 0,
                last_of: HashMap::new(),
                generation_ends: Vec::new(),
            }),
            durable: tokio::sync::watch::Sender::new(Durable { generation: 0, seq }),
            commit_wanted: std::sync::Condvar::new(),
            commit_failure: Mutex::default(),
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
            ticks: Default::default(),
            webhooks: Default::default(),
            replica: config.replica.clone(),
            fences: Mutex::default(),
            leaders: Mutex::default(),
            router_sockets: Mutex::default(),
            whole_fold: Mutex::default(),
        });
        if shared.replica.is_none() {
            let state = Arc::downgrade(&shared);
            std::thread::Builder::new()
                .name("ringfence-commit".into())
                .spawn(move || Shared::committer(state))
                .map_err(|e| anyhow::anyhow!("cannot start the event log's committer: {e}"))?;
        }
        let state = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("ringfence-whole-fold".into())
            .spawn(move || {
                while let Some(sh) = {
                    std::thread::sleep(WHOLE_FOLD_IDLE / 4);
                    state.upgrade()
                } {
                    let mut fold = sh.whole_fold.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if fold.as_ref().is_some_and(|f| f.used.elapsed() >= WHOLE_FOLD_IDLE) {
                        *fold = None;
                    }
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start the whole folds' expiry: {e}"))?;
        Ok(shared)
    }

    /// Whether this server runs `workload`'s controller: always when it runs alone; as one of
    /// several replicas, while it holds the workload's lease.
    pub fn leads(&self, workload: &str) -> bool {
        self.replica.is_none() || self.fences.lock().expect("fences lock").contains_key(workload)
    }

    /// Replicas: folds what the others appended since this one last looked. Returns whether
    /// anything was new.
    pub fn catch_up(&self) -> Result<bool, StoreError> {
        let mut store = self.store.lock().expect("store lock");
        let mut inner = self.inner.lock().expect("state lock");
        let touched = self.catch_up_locked(store.as_mut(), &mut inner)?;
        drop(inner);
        drop(store);
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
            let mut store = self.store.lock().expect("store lock");
            off_the_workers(|| store.heartbeat(&me, LEASE_TTL))?
        };
        let names: Vec<(String, bool)> = self
            .world(|w| w.workloads.iter().map(|(name, ws)| (name.clone(), ws.active_rollout().is_none())).collect());
        let share = names.len().div_ceil(live.max(1) as usize).max(1);
        let mut gained = Vec::new();
        // The leases this replica has, renewed in one statement; one it no longer has (lapsed,
        // taken over) stops its controller.
        let renewed = {
            let mut store = self.store.lock().expect("store lock");
            off_the_workers(|| store.renew(&me, LEASE_TTL))
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
                let mut store = self.store.lock().expect("store lock");
                off_the_workers(|| store.acquire(&name, &me, LEASE_TTL))
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
            let mut store = self.store.lock().expect("store lock");
            off_the_workers(|| store.leases())
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
            let mut store = self.store.lock().expect("store lock");
            match off_the_workers(|| store.release(&f, &me)) {
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
        let mut store = self.store.lock().expect("store lock");
        for f in fences {
            if let Err(e) = off_the_workers(|| store.release(&f, &me)) {
                tracing::warn!(workload = f.workload, error = %e, "cannot hand the lease back; it lapses by itself");
            }
        }
    }

    pub fn world<R>(&self, f: impl FnOnce(&World) -> R) -> R {
        f(&self.inner.lock().expect("state lock").world)
    }

    /// Checks a command against the current state and appends its events, atomically.
    ///
    /// The command is decided when this is called; the future it returns resolves once its
    /// events are durable (see [`Shared::command_many`]).
    pub fn command(
        &self,
        workload: &str,
        actor: &str,
        reason: &str,
        mut f: impl FnMut(&World) -> Result<Vec<EventKind>, CommandError>,
    ) -> Committed<'_> {
        self.command_scoped(Some(workload), actor, reason, |w| {
            Ok(f(w)?.into_iter().map(|k| (workload.to_string(), k)).collect())
        })
    }

    /// [`Shared::command`] for a change of several workloads at once (stopping the line):
    /// each event names its workload, and all are appended in one transaction.
    ///
    /// A server alone decides the command and folds its events under the state's lock when
    /// this is called, and the future waits, without holding a thread, for the log's committer
    /// to make them durable together with every other command's events pending by then (one
    /// transaction, one fsync). Replicas decide and append under the log's lock, one command
    /// at a time, on the log as the others left it. Either way the future resolves only once
    /// the events are in the log: nothing acts on a decision before it is durable.
    pub fn command_many(
        &self,
        actor: &str,
        reason: &str,
        f: impl FnMut(&World) -> Result<Vec<(String, EventKind)>, CommandError>,
    ) -> Committed<'_> {
        self.command_scoped(None, actor, reason, f)
    }

    /// A command that reads only `scope`'s state (and that of no workload), or all of it.
    fn command_scoped(
        &self,
        scope: Option<&str>,
        actor: &str,
        reason: &str,
        f: impl FnMut(&World) -> Result<Vec<(String, EventKind)>, CommandError>,
    ) -> Committed<'_> {
        let (decided, wait) = if self.replica.is_some() {
            (self.command_replica(actor, reason, f), None)
        } else {
            self.decide(scope, actor, reason, f)
        };
        Box::pin(async move {
            if let Some(through) = wait {
                self.durable_through(through).await?;
            }
            decided
        })
    }

    /// A server alone: decides the command and folds its events, pending for the committer.
    /// Returns the decision and how far the log must be durable before it is answered: its
    /// own events, or, when it decided nothing or refused, the pending events it was decided
    /// on (a refusal or a no-op must not rest on what a failed commit may still drop).
    fn decide(
        &self,
        scope: Option<&str>,
        actor: &str,
        reason: &str,
        mut f: impl FnMut(&World) -> Result<Vec<(String, EventKind)>, CommandError>,
    ) -> (Result<Vec<Event>, AppendError>, Option<Durable>) {
        let mut inner = self.inner.lock().expect("state lock");
        let kinds = match f(&inner.world) {
            Ok(kinds) if !kinds.is_empty() => kinds,
            // Most controller ticks decide nothing: they wait only if what they read is not
            // durable yet.
            other => {
                let read = self.read_through(&inner, scope);
                return (other.map(|_| Vec::new()).map_err(AppendError::from), read);
            }
        };
        let at = now();
        let first = inner.seq + 1;
        let events: Vec<Event> = kinds
            .into_iter()
            .zip(first..)
            .map(|((workload, kind), seq)| Event {
                seq,
                at,
                actor: actor.into(),
                reason: reason.into(),
                workload,
                kind,
            })
            .collect();
        for e in &events {
            inner.world.apply(e);
            inner.last_of.insert(e.workload.clone(), e.seq);
        }
        inner.seq += events.len() as u64;
        inner.pending.extend(events.iter().cloned());
        let through = Durable { generation: inner.generation, seq: inner.seq };
        drop(inner);
        self.commit_wanted.notify_one();
        (Ok(events), Some(through))
    }

    /// How far the log must be durable for a read of `scope` (a workload; `None`: all) to
    /// rest only on durable events; `None` when it already is.
    fn read_through(&self, inner: &Inner, scope: Option<&str>) -> Option<Durable> {
        let seq = match scope {
            None => inner.seq,
            Some(w) => {
                let of = |w: &str| inner.last_of.get(w).copied().unwrap_or(0);
                of(w).max(of(""))
            }
        };
        (seq > self.durable.borrow().seq).then_some(Durable { generation: inner.generation, seq })
    }

    /// Reads workload `name`'s state (and that of no workload) once every event it holds is
    /// durable: what the controller acts on outside the process reads through here, so that
    /// nothing is done on a decision a crash or a failed commit could still take back.
    pub async fn world_durable<R>(&self, name: &str, f: impl Fn(&World) -> R) -> R {
        loop {
            let (read, wait) = {
                let inner = self.inner.lock().expect("state lock");
                (f(&inner.world), self.read_through(&inner, Some(name)))
            };
            match wait {
                None => return read,
                // Read again if the commit failed: the state was folded again without it.
                Some(through) => {
                    if self.durable_through(through).await.is_ok() {
                        return read;
                    }
                }
            }
        }
    }

    /// Waits until the log is durable through `through`, or fails if the commit that carried
    /// it (or one before it) failed.
    async fn durable_through(&self, through: Durable) -> Result<(), StoreError> {
        let mut durable = self.durable.subscribe();
        let reached = durable
            .wait_for(|d| d.generation != through.generation || d.seq >= through.seq)
            .await
            .map(|d| *d)
            .map_err(|_| StoreError::Dropped { why: "the server stopped".into() })?;
        if reached.generation != through.generation {
            // Committed before the generation ended (the watch keeps only the latest value).
            let end = self.inner.lock().expect("state lock").generation_ends.get(through.generation as usize).copied();
            if end.is_some_and(|end| through.seq <= end) {
                return Ok(());
            }
            return Err(StoreError::Dropped { why: self.commit_failure.lock().expect("failure lock").clone() });
        }
        Ok(())
    }

    /// The log's committer (a thread of its own, a server alone): appends every pending event
    /// in one transaction, as soon as there are any, until the state is dropped.
    fn committer(state: std::sync::Weak<Shared>) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            loop {
                let Some(sh) = state.upgrade() else { return };
                let wanted = {
                    let inner = sh.inner.lock().expect("state lock");
                    let (inner, _) = sh
                        .commit_wanted
                        .wait_timeout_while(inner, std::time::Duration::from_millis(100), |i| i.pending.is_empty())
                        .expect("state lock");
                    !inner.pending.is_empty()
                };
                if wanted {
                    let mut store = sh.store.lock().expect("store lock");
                    sh.commit_pending(store.as_mut());
                }
            }
        }));
        if run.is_err() {
            // Every command would wait for a commit that never comes.
            tracing::error!("the event log's committer failed; the server stops (a restart folds the log)");
            std::process::exit(crate::exit::ExitCode::Failure as i32);
        }
    }

    /// Appends what is pending, in one transaction; on failure drops it and every decision
    /// made on it. Called with the log's lock held.
    fn commit_pending(&self, store: &mut dyn EventStore) {
        let (batch, generation) = {
            let mut inner = self.inner.lock().expect("state lock");
            (std::mem::take(&mut inner.pending), inner.generation)
        };
        let Some(last) = batch.last().map(|e| e.seq) else { return };
        let expected = batch[0].seq - 1;
        let touched: std::collections::BTreeSet<String> = batch.iter().map(|e| e.workload.clone()).collect();
        let new: Vec<NewEvent> = batch
            .into_iter()
            .map(|e| NewEvent { at: e.at, actor: e.actor, reason: e.reason, workload: e.workload, kind: e.kind })
            .collect();
        match store.append(expected, new) {
            Ok(_) => {
                self.durable.send_replace(Durable { generation, seq: last });
                // Here, not in the commands' futures: a future dropped unawaited (a client
                // gone) still has its change woken up.
                self.notify_touched(touched.iter().map(String::as_str));
            }
            Err(e) => self.drop_pending(store, &e),
        }
    }

    /// After a failed commit the projections hold decisions the log does not: they are folded
    /// again from the log, and every command that decided on the dropped events is told so.
    fn drop_pending(&self, store: &mut dyn EventStore, error: &StoreError) {
        tracing::error!(error = %error, "the event log refused a commit; the decisions it carried are dropped and the state is folded again from the log");
        *self.commit_failure.lock().expect("failure lock") = error.to_string();
        let refolded = fold_log(store, FOLD_PAGE);
        let Ok((world, seq, _)) = refolded.map_err(|e| {
            // The state holds what the log does not, and cannot be rebuilt: nothing may act
            // on it or serve it. The server stops; a restart folds the log.
            tracing::error!(error = %e, "the event log cannot be read after a failed commit; the server stops");
            std::process::exit(crate::exit::ExitCode::Failure as i32);
        });
        let mut inner = self.inner.lock().expect("state lock");
        inner.pending.clear();
        // What of this generation the log holds (a commit may fail after it was written).
        inner.generation_ends.push(seq);
        inner.generation += 1;
        inner.world = world;
        inner.seq = seq;
        inner.last_of.clear();
        self.durable.send_replace(Durable { generation: inner.generation, seq });
        let names: Vec<String> = inner.world.workloads.keys().cloned().collect();
        drop(inner);
        self.notify_touched(names.iter().map(String::as_str));
    }

    /// A replica's command: decided on the log as the others left it. An append that still
    /// races one of theirs is refused (`Conflict`), and the command is decided again on the
    /// log as it now ends, a few times before the caller is told to try again.
    fn command_replica(
        &self,
        actor: &str,
        reason: &str,
        mut f: impl FnMut(&World) -> Result<Vec<(String, EventKind)>, CommandError>,
    ) -> Result<Vec<Event>, AppendError> {
        let mut store = self.store.lock().expect("store lock");
        let mut inner = self.inner.lock().expect("state lock");
        let mut caught_up = Vec::new();
        let mut tries = 0;
        let events = loop {
            caught_up.extend(self.catch_up_locked(store.as_mut(), &mut inner)?);
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
                match (actor, new.first()) {
                    ("controller", Some(e)) => {
                        Some(self.fences.lock().expect("fences lock").get(&e.workload).cloned().ok_or_else(|| {
                            StoreError::Fenced { workload: e.workload.clone(), token: 0, current: None }
                        })?)
                    }
                    _ => None,
                };
            if new.is_empty() {
                break Vec::new();
            }
            let appended = off_the_workers(|| match &fence {
                Some(f) => store.append_fenced(f, expected, new),
                None => store.append(expected, new),
            });
            match appended {
                Err(StoreError::Conflict { .. }) if tries < 5 => tries += 1,
                other => break other?,
            }
        };
        for e in &events {
            inner.world.apply(e);
        }
        inner.seq = events.last().map_or(inner.seq, |e| e.seq);
        self.durable.send_replace(Durable { generation: inner.generation, seq: inner.seq });
        drop(inner);
        drop(store);
        self.notify_touched(events.iter().map(|e| e.workload.as_str()).chain(caught_up.iter().map(String::as_str)));
        Ok(events)
    }

    /// Folds the events appended after the last one `inner` knows (by other replicas); returns
    /// the workloads they touched.
    fn catch_up_locked(&self, store: &mut dyn EventStore, inner: &mut Inner) -> Result<Vec<String>, StoreError> {
        let mut touched = Vec::new();
        loop {
            let after = inner.seq;
            let new = off_the_workers(|| store.read(None, after, 10_000))?;
            let Some(last) = new.last().map(|e| e.seq) else { break };
            for e in &new {
                inner.world.apply(e);
                if !touched.contains(&e.workload) {
                    touched.push(e.workload.clone());
                }
            }
            inner.seq = last;
        }
        if !touched.is_empty() {
            self.durable.send_replace(Durable { generation: inner.generation, seq: inner.seq });
        }
        Ok(touched)
    }

    fn notify_touched<'a>(&self, workloads: impl Iterator<Item = &'a str>) {
        let touched: std::collections::BTreeSet<&str> = workloads.filter(|w| !w.is_empty()).collect();
        for w in touched {
            self.notify(w);
        }
    }

    /// How far the log is durable; changes as commits land.
    pub fn durable(&self) -> tokio::sync::watch::Receiver<Durable> {
        self.durable.subscribe()
    }

    /// The projections read together with the last event folded into them (which may still
    /// be pending: see [`Shared::durable`]).
    pub fn world_at<R>(&self, f: impl FnOnce(&World) -> R) -> (R, Durable) {
        let inner = self.inner.lock().expect("state lock");
        (f(&inner.world), Durable { generation: inner.generation, seq: inner.seq })
    }

    /// Signs a digest of the log as it ends now (a clean stop), so no event this server wrote
    /// is covered by the hash chain alone.
    pub fn seal(&self) -> Result<(), StoreError> {
        let mut store = self.store.lock().expect("store lock");
        off_the_workers(|| {
            self.commit_pending(store.as_mut());
            store.write_digest()
        })
        .map(|_| ())
    }

    /// Appends events the controller decided on.
    pub async fn record(&self, workload: &str, reason: &str, kinds: Vec<EventKind>) -> Result<Vec<Event>, StoreError> {
        // Cloned, not taken: a replica decides again after a race with another replica.
        match self.command(workload, "controller", reason, |_| Ok(kinds.clone())).await {
            Ok(e) => Ok(e),
            Err(AppendError::Store(e)) => Err(e),
            Err(AppendError::Command(_)) => unreachable!("recording checks nothing"),
        }
    }

    pub fn events(&self, workload: Option<&str>, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut store = self.store.lock().expect("store lock");
        off_the_workers(|| store.read(workload, after, limit))
    }

    /// Release `version` of `workload` as its `release_created` event has it, when `[history]`
    /// let it go from the projection (`None` when it is held whole, or unknown): for a command
    /// that needs its content (`command::restoring`) and for a look at it. With the event's
    /// number, and `None` in its place if that event is not the release's.
    #[allow(clippy::type_complexity)]
    pub fn let_go_release(
        &self,
        workload: &str,
        version: &str,
    ) -> Result<Option<(u64, Option<ringfence_core::release::Release>)>, StoreError> {
        let seq = self.world(|w| w.workload(workload)?.releases_let_go.get(version).map(|s| s.seq));
        let Some(seq) = seq else { return Ok(None) };
        let events = self.events(Some(workload), seq.saturating_sub(1), 1)?;
        let release = events.into_iter().find(|e| e.seq == seq).and_then(|e| match e.kind {
            EventKind::ReleaseCreated { release } if release.version == version => Some(*release),
            _ => None,
        });
        Ok(Some((seq, release)))
    }

    /// The workload's events after event `after` (0: every one), oldest first, read in pages:
    /// for a timeline, or to fold its whole history.
    pub fn workload_log_after(&self, workload: &str, mut after: u64) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        loop {
            let page = self.events(Some(workload), after, 10_000)?;
            let Some(last) = page.last() else { return Ok(out) };
            after = last.seq;
            out.extend(page);
        }
    }

    /// `workload` as its whole log folds with every rollout kept (`World::whole`): for what
    /// its projection let go under `[history]` (an old rollout or incident, a postmortem, a
    /// DORA window reaching back past what it keeps). The first read folds the workload's whole
    /// log; the next ones, while it stays the last workload asked for, only what was appended
    /// since. Asked only when the projection does not hold the answer.
    pub fn whole_history(&self, workload: &str) -> Result<Option<Arc<WorkloadState>>, StoreError> {
        off_the_workers(|| {
            let mut cache = self.whole_fold.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut fold = match cache.take() {
                Some(f) if f.workload == workload => f,
                _ => WholeFold {
                    workload: workload.to_owned(),
                    world: World::keeping_everything(),
                    used: std::time::Instant::now(),
                },
            };
            let events = match self.workload_log_after(workload, fold.world.last_seq) {
                Ok(events) => events,
                Err(e) => {
                    *cache = Some(fold);
                    return Err(e);
                }
            };
            for e in events.iter().filter(|e| e.workload == workload) {
                fold.world.apply(e);
            }
            fold.used = std::time::Instant::now();
            let ws = fold.world.snapshot(workload);
            *cache = Some(fold);
            Ok(ws)
        })
    }

    /// Rollout `id` in full (its verdicts and evidence too), with its stretch of the log, when
    /// its workload's projection let it go under `[history]`: found in the whole log folded
    /// again, its detail folded from its own events. `None` when the log has no such rollout
    /// either.
    pub fn forgotten_rollout(
        &self,
        workload: &str,
        id: &str,
    ) -> Result<Option<(ringfence_core::Rollout, Vec<Event>)>, StoreError> {
        let Some(ws) = self.whole_history(workload)? else { return Ok(None) };
        let Some(r) = ws.rollout(id) else { return Ok(None) };
        let events = self.stretch(workload, r.first_seq, r.last_seq)?;
        Ok(Some((ringfence_core::rollout::detailed(r, &events).into_owned(), events)))
    }

    /// The workload's events numbered `first` to `last`.
    fn stretch(&self, workload: &str, first: u64, last: u64) -> Result<Vec<Event>, StoreError> {
        let span = usize::try_from(last.saturating_sub(first) + 1).unwrap_or(usize::MAX).min(200_000);
        let events = self.events(Some(workload), first.saturating_sub(1), span)?;
        Ok(events.into_iter().filter(|e| e.seq <= last).collect())
    }

    /// The workload's events from rollout `id`'s first to its latest: the stretch of the log
    /// that holds its own (read, not the workload's whole history); none for no such rollout.
    pub fn rollout_events(&self, workload: &str, id: &str) -> Result<Vec<Event>, StoreError> {
        let Some((first, last)) =
            self.world(|w| w.workload(workload).and_then(|ws| ws.rollout(id)).map(|r| (r.first_seq, r.last_seq)))
        else {
            return Ok(Vec::new());
        };
        self.stretch(workload, first, last)
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
    use std::time::Duration;

    fn line(n: usize) -> EventKind {
        if n.is_multiple_of(2) { EventKind::LineStopped { paused: vec![] } } else { EventKind::LineRestarted }
    }

    fn shared(dir: &std::path::Path) -> Arc<Shared> {
        let config = crate::server::ServerConfig::new(dir.to_path_buf()).unwrap();
        Shared::open(&config, CancellationToken::new()).unwrap()
    }

    /// The state folded from the log as it is on disk.
    fn folded(sh: &Shared) -> (World, u64) {
        let mut store = sh.store.lock().unwrap();
        let (world, seq, _) = fold_log(store.as_mut(), 1_000).unwrap();
        (world, seq)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_committed_together_are_each_durable_once_in_the_order_decided() {
        let dir = tempfile::tempdir().unwrap();
        let sh = shared(dir.path());
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let sh = sh.clone();
                tokio::spawn(async move {
                    let mut answered = Vec::new();
                    for n in 0..50 {
                        let reason = format!("task {t} command {n}");
                        let pair = vec![(String::new(), line(n)), (String::new(), line(n + 1))];
                        answered.extend(sh.command_many("tester", &reason, |_| Ok(pair.clone())).await.unwrap());
                    }
                    answered
                })
            })
            .collect();
        let mut answered = Vec::new();
        for t in tasks {
            answered.extend(t.await.unwrap());
        }
        let on_disk = sh.events(None, 0, usize::MAX).unwrap();
        assert_eq!(on_disk.len(), 800);
        assert!(on_disk.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1), "numbered without gaps");
        // What each command was answered is what the log holds under that number, and a
        // command's two events stayed next to each other.
        for e in &answered {
            assert_eq!(&on_disk[e.seq as usize - 1], e);
        }
        for pair in on_disk.chunks(2) {
            assert_eq!(pair[0].reason, pair[1].reason);
        }
        let (world, seq) = folded(&sh);
        assert_eq!(seq, 800);
        assert!(sh.world(|w| *w == world), "the projections are the log folded");
        assert_eq!(*sh.durable().borrow(), Durable { generation: 0, seq: 800 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_drops_its_decisions_and_the_next_ones_continue_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let sh = shared(dir.path());
        sh.command_many("tester", "before", |_| Ok(vec![(String::new(), line(0))])).await.unwrap();
        // Another connection makes every insert fail, as a full disk would.
        let db = rusqlite::Connection::open(dir.path().join(ringfence_store::LOG_FILE)).unwrap();
        db.execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'disk full'); END;")
            .unwrap();
        // Two commands decided before the commit: the second decided on the first's events.
        let refused = sh.command_many("tester", "refused", |_| Ok(vec![(String::new(), line(1))]));
        let after_it = sh.command_many("tester", "decided after", |_| Ok(vec![(String::new(), line(2))]));
        let err = refused.await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        let err = after_it.await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(sh.world(|w| w.line.is_some()), "the refused restart of the line is not in the state");
        // One failed commit carried both, or each failed its own.
        let durable = *sh.durable().borrow();
        assert!(durable.seq == 1 && (1..=2).contains(&durable.generation), "{durable:?}");
        db.execute_batch("DROP TRIGGER refuse;").unwrap();
        let next = sh.command_many("tester", "after", |_| Ok(vec![(String::new(), line(1))])).await.unwrap();
        assert_eq!(next[0].seq, 2);
        let (world, seq) = folded(&sh);
        assert_eq!(seq, 2);
        assert!(sh.world(|w| *w == world));
        let reasons: Vec<String> = sh.events(None, 0, 10).unwrap().into_iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["before", "after"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[expect(clippy::await_holding_lock, reason = "the test holds the log's lock to hold the committer up")]
    async fn what_the_controller_acts_on_is_durable_and_other_workloads_do_not_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let sh = shared(dir.path());
        // The committer is held up: a decided event stays pending.
        let store = sh.store.lock().unwrap();
        let pending = sh.command("shop", "tester", "pending", |_| Ok(vec![line(0)]));
        assert!(sh.world(|w| w.line.is_some()), "decided and folded at once");
        let read = {
            let sh = sh.clone();
            tokio::spawn(async move { sh.world_durable("shop", |w| w.line.is_some()).await })
        };
        // The pending event is `shop`'s: a read of another workload does not wait for it.
        let other = tokio::time::timeout(Duration::from_millis(100), sh.world_durable("cart", |w| w.last_seq)).await;
        assert!(other.is_ok(), "a workload with nothing pending reads at once");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!read.is_finished(), "the read waits while its workload's event is not durable");
        // A no-op decided on the pending event waits for it too.
        let noop = sh.command("shop", "tester", "no-op", |_| Ok(vec![]));
        drop(store);
        assert!(read.await.unwrap());
        assert_eq!(pending.await.unwrap()[0].seq, 1);
        assert!(noop.await.unwrap().is_empty());
        assert_eq!(sh.events(None, 0, 10).unwrap().len(), 1);
    }

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
