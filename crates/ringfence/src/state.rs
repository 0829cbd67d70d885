//! The server's shared state: the event log and the projections folded from it, behind one
//! lock so that checking a command and appending its events is atomic.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ringfence_core::command::CommandError;
use ringfence_core::{Event, EventKind, NewEvent, Timestamp, World};
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
}

/// The controller's latest verdict on a workload's rollout in progress.
#[derive(Debug, Clone)]
pub struct LiveVerdict {
    pub rollout_id: String,
    pub at: ringfence_core::Timestamp,
    pub verdict: ringfence_core::Verdict,
}

impl Shared {
    /// Opens the log in `data_dir` and rebuilds every projection from it.
    pub fn open(
        data_dir: PathBuf,
        ringfence_bin: PathBuf,
        tick: std::time::Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Shared>> {
        let claim = crate::datadir::DataDir::claim(&data_dir)?;
        let log_file = data_dir.join(ringfence_store::LOG_FILE);
        let store = Store::open(&log_file)?;
        for suffix in ["", "-wal", "-shm"] {
            crate::datadir::DataDir::make_private(&PathBuf::from(format!("{}{suffix}", log_file.display())));
        }
        let mut world = World::default();
        let events = store.load_all()?;
        for e in &events {
            world.apply(e);
        }
        let seq = events.last().map_or(0, |e| e.seq);
        tracing::info!(events = events.len(), workloads = world.workloads.len(), "state rebuilt from the event log");
        let http = HttpClient::new();
        let executor = Arc::new(Executors {
            process: ProcessExecutor::new(&data_dir, ringfence_bin.clone(), http.clone())?,
            command: CommandExecutor::new(&data_dir, ringfence_bin.clone(), http.clone()),
        });
        Ok(Arc::new(Shared {
            data_dir,
            _claim: claim,
            inner: Mutex::new(Inner { store: Box::new(store), world, seq }),
            executor,
            ringfence_bin,
            traffic: crate::traffic::Traffic::new(http.clone()),
            http,
            notifies: Mutex::default(),
            running_loops: Mutex::default(),
            tasks: tokio_util::task::TaskTracker::new(),
            shutdown,
            tick,
            live: Mutex::default(),
            webhooks: Default::default(),
        }))
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
        f: impl FnOnce(&World) -> Result<Vec<EventKind>, CommandError>,
    ) -> Result<Vec<Event>, AppendError> {
        self.command_many(actor, reason, |w| Ok(f(w)?.into_iter().map(|k| (workload.to_string(), k)).collect()))
    }

    /// [`Shared::command`] for a change of several workloads at once (stopping the line):
    /// each event names its workload, and all are appended in one transaction.
    pub fn command_many(
        &self,
        actor: &str,
        reason: &str,
        f: impl FnOnce(&World) -> Result<Vec<(String, EventKind)>, CommandError>,
    ) -> Result<Vec<Event>, AppendError> {
        let mut inner = self.inner.lock().expect("state lock");
        let kinds = f(&inner.world)?;
        let at = now();
        let new: Vec<NewEvent> = kinds
            .into_iter()
            .map(|(workload, kind)| NewEvent { at, actor: actor.into(), reason: reason.into(), workload, kind })
            .collect();
        let expected = inner.seq;
        let events = off_the_workers(|| inner.store.append(expected, new))?;
        for e in &events {
            inner.world.apply(e);
        }
        inner.seq = events.last().map_or(inner.seq, |e| e.seq);
        drop(inner);
        let touched: std::collections::BTreeSet<&str> =
            events.iter().map(|e| e.workload.as_str()).filter(|w| !w.is_empty()).collect();
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
        match self.command(workload, "controller", reason, |_| Ok(kinds)) {
            Ok(e) => Ok(e),
            Err(AppendError::Store(e)) => Err(e),
            Err(AppendError::Command(_)) => unreachable!("recording checks nothing"),
        }
    }

    pub fn events(&self, workload: Option<&str>, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let inner = self.inner.lock().expect("state lock");
        off_the_workers(|| inner.store.read(workload, after, limit))
    }

    pub fn notifier(&self, workload: &str) -> Arc<Notify> {
        self.notifies.lock().expect("notify lock").entry(workload.into()).or_default().clone()
    }

    pub fn notify(&self, workload: &str) {
        self.notifier(workload).notify_one();
    }
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
