//! ringfence's built-in L7 HTTP router: the data plane of a rollout.
//!
//! It splits a workload's traffic between rollout groups by sticky user buckets, guards every
//! upstream replica with a circuit breaker, and counts requests, errors and latency per
//! version for the controller's health analysis.
//!
//! The controller pushes routing tables over the admin API (`PUT /v1/table`) and reads
//! `GET /v1/stats`, sending the router's secret as `Authorization: Bearer` ([`AdminAuth`]);
//! only `GET /metrics` is served there without it, for Prometheus. The hot path never waits on it: the table is an atomically swapped value
//! read without locks, and the last accepted table is persisted so a restarted router serves
//! it before the controller is back.
//!
//! Of the other ringfence crates it depends only on the pure ones: the flag engine and
//! `ringfence-traffic` (the routing table and the latency grid it shares with the core).

mod admin;
mod auth;
mod balance;
mod breaker;
mod metrics;
mod ofrep;
mod proxy;
mod relay;
mod routing;
mod server;
mod stats;
mod tier;
mod upstream;
mod userbody;
/// The routing table lives in `ringfence-traffic`, shared with the control plane.
mod table {
    pub use ringfence_traffic::table::*;
}

use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{AdminAuth, AdminToken};
pub use proxy::{GROUP_HEADER, VERSION_HEADER};
pub use server::{write_atomically, write_secret_file};
pub use stats::{BreakerState, NO_VERSION, StatsSnapshot, UpstreamStats, VersionStats};
pub use table::{BUCKETS, BreakerConfig, DEFAULT_MAX_REQUEST_BODY, Group, RouteTable, TableError, bucket};
pub use tier::{TierHandle, TierRoute, TierTables};

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The last accepted table is written here (temporary file + rename) and loaded at start.
    pub state_file: Option<PathBuf>,
    /// Budget for connecting to an upstream and receiving its response headers.
    pub upstream_timeout: Duration,
    /// Who may call the admin API. No default: a router that serves users must be given a
    /// token, and one without must be asked for explicitly.
    pub admin_auth: AdminAuth,
    /// Serve many workloads, by host and path prefix, with tables installed through
    /// [`Router::tier`] (fetched from the control plane) instead of `PUT /v1/table`.
    pub tier: bool,
    /// Threads of their own that serve users' connections, each a single-threaded runtime
    /// with its own upstream connections, all accepting on the one listening socket (one per
    /// core is what nginx does with its workers). 0 serves them on the caller's runtime.
    pub workers: usize,
    /// How long a user's request head may take once its first byte is in: a client that
    /// trickles a head cannot hold a connection longer.
    pub head_timeout: Duration,
    /// How long a user's kept-alive connection may wait for its next request.
    pub keep_alive: Duration,
}

impl RouterConfig {
    /// No state file, a 30 s upstream timeout, the admin API guarded by `admin_auth`, users
    /// served on the caller's runtime, 30 s for a request's head and 60 s for an idle
    /// kept-alive connection.
    pub fn new(admin_auth: AdminAuth) -> RouterConfig {
        RouterConfig {
            state_file: None,
            upstream_timeout: Duration::from_secs(30),
            admin_auth,
            tier: false,
            workers: 0,
            head_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(60),
        }
    }
}

/// A router before it serves: its state file is loaded, and in tier mode [`Router::tier`]
/// hands out what installs tables and reads counters.
pub struct Router {
    shared: std::sync::Arc<server::Shared>,
}

impl Router {
    /// Loads the state file, if any, so the router serves its last tables from the start.
    pub async fn new(config: RouterConfig) -> Router {
        let shared = std::sync::Arc::new(server::Shared::new(config));
        if let Some(path) = shared.state_file.clone() {
            server::load_state(&shared, &path).await;
        }
        Router { shared }
    }

    /// Installs table sets and reads per-workload counters (tier mode).
    pub fn tier(&self) -> TierHandle {
        TierHandle(self.shared.clone())
    }

    /// Serves proxy traffic on `listener` and the admin API on `admin` until `shutdown` is
    /// cancelled, then drains open connections (for at most the upstream timeout).
    pub async fn run(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        server::run(self.shared, listener, admin, shutdown).await
    }
}

/// Serves proxy traffic on `listener` and the admin API on `admin` until `shutdown` is
/// cancelled, then stops accepting and drains open connections (for at most
/// `upstream_timeout`).
pub async fn run(
    config: RouterConfig,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Router::new(config).await.run(listener, admin, shutdown).await
}
