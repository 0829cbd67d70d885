//! The traffic seam: how the controller and the API reach a workload's data plane.
//!
//! [`TrafficAdapter`] is what they need of it: install a routing table, read back the one it
//! serves, read per-version statistics, and say which group a user is routed to.
//! [`BuiltinRouter`], over the admin API of the workload's own `ringfence router` process
//! (`routerproc` starts and stops it), is the first adapter. HAProxy (its runtime API and stats)
//! and nginx follow behind the same trait; a deployment model that routes by host groups
//! rather than weights (blue-green, rings of hosts) installs its table here too.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use ringfence_router::{RouteTable, StatsSnapshot};

use crate::http::HttpClient;

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
    /// Installs `table`; the data plane swaps it atomically or refuses it whole.
    async fn install(&self, at: SocketAddr, table: &RouteTable) -> anyhow::Result<()>;
    /// The table the data plane serves now; `None` before the first install.
    async fn table(&self, at: SocketAddr) -> anyhow::Result<Option<RouteTable>>;
    /// Per-version counters since the data plane started (its instance id changes when it
    /// restarts, and its counters start over).
    async fn stats(&self, at: SocketAddr) -> anyhow::Result<StatsSnapshot>;
    /// The group and version `user` is routed to now.
    async fn assign(&self, at: SocketAddr, user: &str) -> anyhow::Result<Assignment>;
}

/// The built-in router's admin API.
#[derive(Clone)]
pub struct BuiltinRouter {
    http: HttpClient,
    /// Budget of one admin call.
    timeout: Duration,
}

impl BuiltinRouter {
    pub fn new(http: HttpClient) -> BuiltinRouter {
        BuiltinRouter { http, timeout: Duration::from_secs(2) }
    }

    /// The same adapter with another budget per call (the controller reads stats every tick
    /// and would rather skip one than wait).
    pub fn with_timeout(&self, timeout: Duration) -> BuiltinRouter {
        BuiltinRouter { http: self.http.clone(), timeout }
    }
}

impl TrafficAdapter for BuiltinRouter {
    async fn install(&self, at: SocketAddr, table: &RouteTable) -> anyhow::Result<()> {
        let body = Bytes::from(serde_json::to_vec(table)?);
        let resp =
            self.http.request(Method::PUT, &format!("http://{at}/v1/table"), &[], Some(body), self.timeout).await?;
        if !resp.status.is_success() {
            bail!(
                "router refused table generation {}: {} {}",
                table.generation,
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        Ok(())
    }

    async fn table(&self, at: SocketAddr) -> anyhow::Result<Option<RouteTable>> {
        let resp = self.http.get(&format!("http://{at}/v1/table"), self.timeout).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            bail!("router answered {} to GET /v1/table", resp.status);
        }
        Ok(Some(serde_json::from_slice(&resp.body).context("router sent a table that cannot be read")?))
    }

    async fn stats(&self, at: SocketAddr) -> anyhow::Result<StatsSnapshot> {
        let resp = self.http.get(&format!("http://{at}/v1/stats"), self.timeout).await?;
        if !resp.status.is_success() {
            bail!("router answered {} to GET /v1/stats", resp.status);
        }
        serde_json::from_slice(&resp.body).context("router sent stats that cannot be read")
    }

    async fn assign(&self, at: SocketAddr, user: &str) -> anyhow::Result<Assignment> {
        let url = format!("http://{at}/v1/assign?user={}", crate::http::encode_component(user));
        let resp = self.http.get(&url, self.timeout).await?;
        if !resp.status.is_success() {
            bail!("router answered {} to GET /v1/assign", resp.status);
        }
        let v: serde_json::Value =
            serde_json::from_slice(&resp.body).context("router sent an assignment that cannot be read")?;
        Ok(Assignment {
            group: v["group"].as_str().map(String::from),
            version: v["version"].as_str().map(String::from),
        })
    }
}
