//! Listeners, connection lifecycle, shared state and the persisted table.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::BytesMut;
use hyper::body::{Body, Incoming};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::RouterConfig;
use crate::auth::AdminAuth;
use crate::balance::{Assigned, Balance, Handed};
use crate::proxy::{Connection, ErrorChain, Upstreams};
use crate::relay::{Left, Prefixed};
use crate::routing::Routing;
use crate::stats::{Latency, NO_VERSION, Series, Stats};
use crate::table::RouteTable;
use crate::tier::{TierRt, TierTables};

/// Everything the proxy and admin handlers share. Only `routing` changes after start.
pub(crate) struct Shared {
    pub(crate) routing: ArcSwapOption<Routing>,
    /// Tier mode (`RouterConfig::tier`): every workload's table, fetched from the control
    /// plane; `routing` then stays empty.
    pub(crate) tier: ArcSwapOption<TierRt>,
    /// Tier mode: each workload's counters, kept across table sets.
    pub(crate) tier_stats: std::sync::Mutex<std::collections::HashMap<String, Arc<Stats>>>,
    pub(crate) tier_mode: bool,
    pub(crate) stats: Stats,
    pub(crate) none_series: Arc<Series>,
    pub(crate) none_latency: Arc<Latency>,
    pub(crate) upstream_timeout: Duration,
    /// `RouterConfig::head_timeout` and `keep_alive`.
    pub(crate) head_timeout: Duration,
    pub(crate) keep_alive: Duration,
    /// Threads of their own serving users' connections (`RouterConfig::workers`).
    pub(crate) workers: usize,
    /// How the workers' connections are spread over them.
    pub(crate) balance: Arc<Balance>,
    pub(crate) state_file: Option<PathBuf>,
    /// Who may call the admin API.
    pub(crate) admin_auth: AdminAuth,
    pub(crate) instance_id: String,
    pub(crate) started: Instant,
    /// Serialises table writes so the generation check, the swap and the file agree.
    pub(crate) writes: tokio::sync::Mutex<WriteState>,
}

#[derive(Debug, Default)]
pub(crate) struct WriteState {
    /// The served table is not on disk yet (the last write failed); retried on the next PUT.
    pub(crate) unpersisted: bool,
    /// Tier mode: when the set in service was last saved, and whether a save of a later one
    /// is due (`tier::SAVE_EVERY`).
    pub(crate) tier_saved_at: Option<std::time::Instant>,
    pub(crate) tier_save_due: bool,
}

impl Shared {
    pub(crate) fn new(config: RouterConfig) -> Shared {
        let stats = Stats::default();
        Shared {
            routing: ArcSwapOption::empty(),
            tier: ArcSwapOption::empty(),
            tier_stats: Default::default(),
            tier_mode: config.tier,
            none_series: stats.series(NO_VERSION, NO_VERSION),
            none_latency: stats.latency(NO_VERSION),
            stats,
            upstream_timeout: config.upstream_timeout,
            head_timeout: config.head_timeout,
            keep_alive: config.keep_alive,
            workers: config.workers,
            balance: Arc::new(Balance::new(config.workers)),
            state_file: config.state_file,
            admin_auth: config.admin_auth,
            instance_id: format!("{:016x}", rand::random::<u64>()),
            started: Instant::now(),
            writes: tokio::sync::Mutex::new(WriteState::default()),
        }
    }

    /// Compiles and swaps in a validated table. Callers hold `writes`.
    pub(crate) fn install(&self, table: RouteTable) -> anyhow::Result<()> {
        let previous = self.routing.load_full();
        let routing = Routing::build(table, previous.as_deref(), &self.stats)?;
        let t = &routing.table;
        tracing::info!(
            generation = t.generation,
            workload = %t.workload,
            groups = ?t.groups.iter().map(|g| (&g.name, &g.version, g.weight_bp)).collect::<Vec<_>>(),
            "routing table installed"
        );
        self.routing.store(Some(Arc::new(routing)));
        Ok(())
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let drain_for = shared.upstream_timeout;
    tracing::info!(
        proxy = %listener.local_addr()?,
        admin = %admin.local_addr()?,
        instance_id = %shared.instance_id,
        "router listening"
    );
    if matches!(shared.admin_auth, AdminAuth::Insecure) {
        tracing::warn!(
            admin = %admin.local_addr()?,
            "the admin API takes requests without a token (--insecure-admin): anyone who can connect can reroute all traffic"
        );
    }

    let tracker = TaskTracker::new();
    // Cancelled when the drain period is over, to cut connections that are still busy.
    let hard_stop = CancellationToken::new();
    let admin_shared = shared.clone();
    let admin = serve(admin, None, &shutdown, &hard_stop, &tracker, shared.head_timeout, move |_peer| {
        let shared = admin_shared.clone();
        (None, move |req| crate::admin::handle(shared.clone(), req))
    });
    if shared.workers == 0 {
        let (proxy_shared, upstreams) = (shared.clone(), Upstreams::new(shared.upstream_timeout));
        let proxy = serve(listener, None, &shutdown, &hard_stop, &tracker, shared.head_timeout, move |peer| {
            let conn = Arc::new(Connection::new(proxy_shared.clone(), &upstreams, peer));
            (Some(conn.clone()), move |req| crate::proxy::handle(conn.clone(), req))
        });
        tokio::join!(proxy, admin);
    } else {
        let workers = spawn_workers(&shared, listener, &shutdown, &hard_stop)?;
        // Each worker drains its own connections; they count in the drain below as one task.
        tracker.spawn(async move {
            for worker in workers {
                let _ = worker.await;
            }
        });
        admin.await;
    }

    tracker.close();
    if tokio::time::timeout(drain_for, tracker.wait()).await.is_err() {
        tracing::warn!(connections = tracker.len(), "drain period over, closing remaining connections");
        hard_stop.cancel();
        tracker.wait().await;
    }
    tracing::info!("router stopped");
    Ok(())
}

/// Users' connections served by `shared.workers` threads, each running a single-threaded
/// runtime with its own pool of upstream connections and accepting on the same listening
/// socket. A request, its upstream connection and its answer then stay on one thread: no
/// hand-over between threads, no pool shared under a lock (the shape of nginx's workers).
/// Connections are spread evenly over the workers (`balance`). Each receiver says when its
/// worker has drained its connections and stopped.
fn spawn_workers(
    shared: &Arc<Shared>,
    listener: TcpListener,
    shutdown: &CancellationToken,
    hard_stop: &CancellationToken,
) -> anyhow::Result<Vec<tokio::sync::oneshot::Receiver<()>>> {
    use anyhow::Context as _;
    let listener = listener.into_std().context("the users' listening socket")?;
    let mut done = Vec::with_capacity(shared.workers);
    for n in 0..shared.workers {
        let socket = listener.try_clone().context("a copy of the users' listening socket for a worker")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a runtime for a router worker")?;
        let (shared, shutdown, hard_stop) = (shared.clone(), shutdown.clone(), hard_stop.clone());
        let inbox = shared.balance.inbox(n).context("a worker's inbox for connections handed over")?;
        let spread = Spread { balance: shared.balance.clone(), me: n, inbox };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("router-worker-{n}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(socket) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(%error, worker = n, "a router worker cannot take the listening socket");
                            return;
                        }
                    };
                    let tracker = TaskTracker::new();
                    let upstreams = Upstreams::new(shared.upstream_timeout);
                    let head_timeout = shared.head_timeout;
                    serve(listener, Some(spread), &shutdown, &hard_stop, &tracker, head_timeout, move |peer| {
                        let conn = Arc::new(Connection::new(shared.clone(), &upstreams, peer));
                        (Some(conn.clone()), move |req| crate::proxy::handle(conn.clone(), req))
                    })
                    .await;
                    tracker.close();
                    tracker.wait().await;
                });
                let _ = tx.send(());
            })
            .context("a thread for a router worker")?;
        done.push(rx);
    }
    Ok(done)
}

/// How long a kept-alive connection may stay idle after the router begins to stop before it is
/// closed. Long enough for a busy client to send one more request on each of its pooled
/// connections (and get `Connection: close` back), short enough that the connections waiting
/// in the shared listening socket's backlog for the next router wait little.
const IDLE_GRACE: Duration = Duration::from_millis(300);

/// A worker's share of the users' connections: it serves those it accepts unless another
/// worker serves fewer, and those handed to it through `inbox`.
struct Spread {
    balance: Arc<Balance>,
    me: usize,
    inbox: tokio::sync::mpsc::UnboundedReceiver<Handed>,
}

impl Spread {
    /// The next connection handed over; never, once every sender is gone.
    async fn handed(spread: Option<&mut Spread>) -> Handed {
        match spread {
            Some(s) => match s.inbox.recv().await {
                Some(handed) => handed,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Where a connection this worker accepted is served: here (returned, counted here), or
    /// handed to a worker that serves fewer.
    fn place(&self, stream: TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        let to = self.balance.assign(self.me);
        if to == self.me {
            return Some(stream);
        }
        let handed = match stream.into_std() {
            Ok(handed) => handed,
            Err(error) => {
                self.balance.ended(to);
                tracing::debug!(%peer, %error, "cannot hand a connection over");
                return None;
            }
        };
        match self.balance.hand(to, (handed, peer)) {
            Ok(()) => None,
            // That worker has stopped: served here after all.
            Err((back, _)) => {
                self.balance.ended(to);
                self.balance.count(self.me);
                self.take(back, peer)
            }
        }
    }

    /// Keeps a connection counted here until it ends.
    fn assigned(&self) -> Assigned {
        Assigned { balance: self.balance.clone(), worker: self.me }
    }

    /// A connection handed to this worker (or back to it), already counted here, registered
    /// with its runtime.
    fn take(&self, stream: std::net::TcpStream, peer: SocketAddr) -> Option<TcpStream> {
        TcpStream::from_std(stream)
            .inspect_err(|error| {
                self.balance.ended(self.me);
                tracing::debug!(%peer, %error, "cannot take a connection handed over");
            })
            .ok()
    }
}

/// What woke an accept loop.
enum Next {
    Stop,
    Accepted(std::io::Result<(TcpStream, SocketAddr)>),
    Handed(Handed),
}

/// Accepts until `shutdown`, serving each connection on its own task tracked by `tracker`,
/// each request's head within `head_timeout` of its first byte. With `spread`, connections
/// are shared with the other workers (see `balance`).
/// `connection` is called once per accepted connection with the peer's address and returns
/// what answers that connection's requests: the relay (users' connections), then hyper with
/// the handler for what the relay hands over (or for everything, when there is no relay).
async fn serve<C, H, F, B>(
    listener: TcpListener,
    mut spread: Option<Spread>,
    shutdown: &CancellationToken,
    hard_stop: &CancellationToken,
    tracker: &TaskTracker,
    head_timeout: Duration,
    connection: C,
) where
    C: Fn(SocketAddr) -> (Option<Arc<Connection>>, H),
    H: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Read by every answer; a flag of this accept loop's own rather than the token, whose
    // reads take a lock shared with every other thread holding a clone of it.
    let stopping = Arc::new(AtomicBool::new(false));
    let start = |stream: TcpStream, peer: SocketAddr, assigned: Option<Assigned>| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "set_nodelay failed");
        }
        let (relay, handler) = connection(peer);
        let shutdown = shutdown.clone();
        let hard_stop = hard_stop.clone();
        let stopping = stopping.clone();
        tracker.spawn(async move {
            let _assigned = assigned;
            let mut stream = stream;
            let prefix = match relay {
                Some(relay) => match relayed(&relay, &mut stream, &stopping, &shutdown, &hard_stop).await {
                    Left::Done => return,
                    Left::HandOver(prefix) => prefix,
                },
                None => BytesMut::new(),
            };
            let service = service_fn(move |req| {
                let response = handler(req);
                let stopping = stopping.clone();
                async move {
                    let mut response = response.await;
                    if stopping.load(Relaxed) {
                        // The client learns from the answer itself that this connection ends,
                        // and takes the next request elsewhere instead of racing our close.
                        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let io = TokioIo::new(Prefixed::new(prefix, stream));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = shutdown.cancelled() => {
                    // Closing a kept-alive connection the moment we stop races a client that is
                    // already writing its next request on it: that request fails. A connection
                    // in use gets its next answer with `Connection: close` instead; only one
                    // left idle through the grace is closed.
                    let graced = tokio::select! {
                        result = conn.as_mut() => Some(result),
                        () = tokio::time::sleep(IDLE_GRACE) => None,
                        () = hard_stop.cancelled() => Some(Ok(())),
                    };
                    match graced {
                        Some(result) => result,
                        None => {
                            conn.as_mut().graceful_shutdown();
                            tokio::select! {
                                result = conn.as_mut() => result,
                                () = hard_stop.cancelled() => Ok(()),
                            }
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, error = %ErrorChain(&error), "connection ended with an error");
            }
        });
    };
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => Next::Stop,
            handed = Spread::handed(spread.as_mut()) => Next::Handed(handed),
            accepted = listener.accept() => Next::Accepted(accepted),
        };
        let stream = match next {
            Next::Stop => break,
            Next::Accepted(Ok((stream, peer))) => match &spread {
                Some(s) => s.place(stream, peer).map(|stream| (stream, peer)),
                None => Some((stream, peer)),
            },
            Next::Accepted(Err(error)) => {
                // Usually out of file descriptors: back off rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
            Next::Handed((stream, peer)) => {
                spread.as_ref().and_then(|s| s.take(stream, peer)).map(|stream| (stream, peer))
            }
        };
        if let Some((stream, peer)) = stream {
            start(stream, peer, spread.as_ref().map(Spread::assigned));
        }
    }
    stopping.store(true, Relaxed);
    // Connections another worker accepted for this one before it stopped are served too
    // (answered with `Connection: close`), not dropped: once no worker accepts any more,
    // nothing more can arrive.
    if let Some(mut s) = spread.take() {
        s.balance.stop_accepting();
        loop {
            let all_stopped = s.balance.all_stopped_accepting();
            while let Ok((stream, peer)) = s.inbox.try_recv() {
                if let Some(stream) = s.take(stream, peer) {
                    start(stream, peer, Some(s.assigned()));
                }
            }
            if all_stopped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Serves a user's connection with the relay until it ends or is handed over to hyper. When
/// the router stops, the connection's next answer says it closes, and a connection left idle
/// through the grace is closed (the same rules as hyper's path below).
async fn relayed(
    conn: &Connection,
    stream: &mut tokio::net::TcpStream,
    stopping: &AtomicBool,
    shutdown: &CancellationToken,
    hard_stop: &CancellationToken,
) -> Left {
    let idle = AtomicBool::new(false);
    let relay = crate::relay::serve(conn, stream, stopping, &idle);
    let mut relay = std::pin::pin!(relay);
    tokio::select! {
        left = relay.as_mut() => left,
        () = shutdown.cancelled() => {
            tokio::select! {
                left = relay.as_mut() => left,
                () = tokio::time::sleep(IDLE_GRACE) => {
                    if idle.load(Relaxed) {
                        return Left::Done;
                    }
                    tokio::select! {
                        left = relay.as_mut() => left,
                        () = hard_stop.cancelled() => Left::Done,
                    }
                }
                () = hard_stop.cancelled() => Left::Done,
            }
        }
    }
}

/// Starts from the persisted table (or, in tier mode, table set) so the data plane serves
/// before the control plane is back. A missing file is normal on first start; a broken one is
/// logged and ignored, since refusing to start would take traffic down over a file the
/// control plane will rewrite anyway.
pub(crate) async fn load_state(shared: &Shared, path: &Path) {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot read state file; starting without a table");
            return;
        }
    };
    let installed = if shared.tier_mode {
        match decode(&bytes, TierTables::validate) {
            Ok(tables) => {
                let _writes = shared.writes.lock().await;
                shared.install_tier(tables)
            }
            Err(error) => Err(error),
        }
    } else {
        match decode(&bytes, RouteTable::validate) {
            Ok(table) => {
                let _writes = shared.writes.lock().await;
                shared.install(table)
            }
            Err(error) => Err(error),
        }
    };
    match installed {
        Ok(()) => tracing::info!(path = %path.display(), "routing tables restored from state file"),
        Err(error) => {
            tracing::error!(path = %path.display(), error = %format!("{error:#}"), "state file not used; starting without a table")
        }
    }
}

/// A state file's content, parsed and checked.
fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    validate: impl Fn(&T) -> Result<(), crate::table::TableError>,
) -> anyhow::Result<T> {
    let value: T = serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("not a table this router serves: {e}"))?;
    validate(&value).map_err(|e| anyhow::anyhow!("invalid table: {e}"))?;
    Ok(value)
}

/// Writes the table next to its final place and renames it over, so a crash leaves either
/// the old or the new file, never half of one.
pub(crate) async fn persist(path: PathBuf, table: &RouteTable) -> anyhow::Result<()> {
    persist_json(path, table).await
}

/// [`persist`] for any JSON document (the tier's table set).
pub(crate) async fn persist_json(path: PathBuf, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    tokio::task::spawn_blocking(move || {
        write_atomically(&path, &bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    })
    .await??;
    Ok(())
}

/// Writes `bytes` to `path` so that a reader sees the old or the new file, never half of one
/// (a temporary file beside it, synced, then renamed over it); creates the directory. The
/// one implementation for the router's state file, the server's pid and ready files.
///
/// The file gets the default mode (0666 less the umask); a secret goes through
/// [`write_secret_file`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Like [`write_atomically`], for a secret: the file is created with mode 0600 (readable and
/// writable by this user only) from its first byte, so there is no moment where another user
/// could open it, and readers see the old or the new secret, never half of one.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // A temporary file left by a crash may have another mode; `create_new` keeps the mode
    // below from being ignored on an existing file.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    // The umask can only take bits away; this puts back the owner's (and nothing else).
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
