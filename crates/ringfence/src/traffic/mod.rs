//! The traffic seam: how the controller and the API reach a workload's data plane.
//!
//! [`TrafficAdapter`] is what they need of a data plane: install a routing table, read back
//! the one it serves, read per-version statistics, and say which group a user is routed to.
//! Two adapters stand behind it:
//!
//! - [`BuiltinRouter`] (`builtin.rs`): the admin API of the workload's own `ringfence router`
//!   process, which `routerproc` starts and stops;
//! - [`Haproxy`] (`haproxy.rs`): an HAProxy the team runs, through its runtime API, its
//!   statistics, its request logs and its configuration file;
//! - [`Tier`] (`tier.rs`): shared routers that fetch their tables from the API and report
//!   their counters to it.
//!
//! [`Traffic`] is the one door: it holds both and sends each call to the adapter a
//! [`DataPlane`] names. [`data_plane`] says which data plane a workload has, from its spec and
//! its state, so the controller and the API find it the same way.

pub mod builtin;
pub mod haproxy;
pub mod tier;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ringfence_core::spec::RouterKind;
use ringfence_core::state::WorkloadState;
use ringfence_router::{RouteTable, StatsSnapshot};

pub use builtin::{BuiltinRouter, RouterEndpoint};
pub use haproxy::{Haproxy, HaproxyEndpoint};
pub use tier::{Tier, TierEndpoint};

/// Where a user is routed: the group and the version serving it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    pub group: Option<String>,
    pub version: Option<String>,
}

/// What the control plane needs of a data plane. Every call has its own timeout: the data
/// plane never waits on the control plane, and the control plane never hangs on it either.
#[allow(async_fn_in_trait)] // used with static dispatch; no Send bound needed beyond the futures'
pub trait TrafficAdapter {
    /// How the adapter reaches one data plane.
    type Endpoint;
    /// Installs `table`. The built-in router swaps it atomically or refuses it whole; an
    /// adapter that cannot (HAProxy) applies it in an order that never leaves users without a
    /// server, and says so in its docs.
    async fn install(&self, at: &Self::Endpoint, table: &RouteTable) -> anyhow::Result<()>;
    /// The table the data plane serves now; `None` before the first install.
    async fn table(&self, at: &Self::Endpoint) -> anyhow::Result<Option<RouteTable>>;
    /// Per-version counters since the data plane started (its instance id changes when it
    /// restarts, and its counters start over).
    async fn stats(&self, at: &Self::Endpoint) -> anyhow::Result<StatsSnapshot>;
    /// The group and version `user` is routed to now.
    async fn assign(&self, at: &Self::Endpoint, user: &str) -> anyhow::Result<Assignment>;
}

/// One workload's data plane, as the adapter that reaches it needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum DataPlane {
    Builtin(RouterEndpoint),
    Haproxy(HaproxyEndpoint),
    Tier(TierEndpoint),
}

/// Every adapter, one door: calls go to the adapter of the [`DataPlane`] they name.
#[derive(Clone)]
pub struct Traffic {
    pub builtin: BuiltinRouter,
    pub haproxy: Haproxy,
    pub tier: Tier,
}

impl Traffic {
    pub fn new(http: crate::http::HttpClient) -> Traffic {
        Traffic { builtin: BuiltinRouter::new(http), haproxy: Haproxy::new(), tier: Tier::default() }
    }

    /// The same adapters with another budget per call (the controller reads stats every tick
    /// and would rather skip one than wait).
    pub fn with_timeout(&self, timeout: Duration) -> Traffic {
        Traffic {
            builtin: self.builtin.with_timeout(timeout),
            haproxy: self.haproxy.with_timeout(timeout),
            tier: self.tier.clone(),
        }
    }

    pub async fn install(&self, at: &DataPlane, table: &RouteTable) -> anyhow::Result<()> {
        match at {
            DataPlane::Builtin(e) => self.builtin.install(e, table).await,
            DataPlane::Haproxy(e) => self.haproxy.install(e, table).await,
            DataPlane::Tier(e) => self.tier.install(e, table).await,
        }
    }

    pub async fn table(&self, at: &DataPlane) -> anyhow::Result<Option<RouteTable>> {
        match at {
            DataPlane::Builtin(e) => self.builtin.table(e).await,
            DataPlane::Haproxy(e) => self.haproxy.table(e).await,
            DataPlane::Tier(e) => self.tier.table(e).await,
        }
    }

    pub async fn stats(&self, at: &DataPlane) -> anyhow::Result<StatsSnapshot> {
        match at {
            DataPlane::Builtin(e) => self.builtin.stats(e).await,
            DataPlane::Haproxy(e) => self.haproxy.stats(e).await,
            DataPlane::Tier(e) => self.tier.stats(e).await,
        }
    }

    pub async fn assign(&self, at: &DataPlane, user: &str) -> anyhow::Result<Assignment> {
        match at {
            DataPlane::Builtin(e) => self.builtin.assign(e, user).await,
            DataPlane::Haproxy(e) => self.haproxy.assign(e, user).await,
            DataPlane::Tier(e) => self.tier.assign(e, user).await,
        }
    }
}

/// The data plane of a workload as its spec and state say: its router process once one runs
/// (`None` before), the HAProxy its spec names, or the router tier.
pub fn data_plane(data_dir: &Path, ws: &WorkloadState) -> Option<DataPlane> {
    match (ws.spec.router.kind, &ws.spec.router.haproxy) {
        (RouterKind::Tier, _) => {
            Some(DataPlane::Tier(TierEndpoint { workload: ws.name.clone(), table: tier::served_table(data_dir, ws) }))
        }
        (RouterKind::Haproxy, Some(h)) => Some(DataPlane::Haproxy(HaproxyEndpoint::new(&ws.spec.router, h))),
        (RouterKind::Haproxy, None) => None, // refused by validation
        (RouterKind::Builtin, _) => {
            let rec = ws.router.as_ref()?;
            let admin: SocketAddr = rec.admin.parse().ok()?;
            Some(DataPlane::Builtin(crate::routerproc::endpoint(data_dir, &ws.name, admin)))
        }
    }
}
