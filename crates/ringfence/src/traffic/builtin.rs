//! The built-in router's admin API: the first adapter of the traffic seam.
//!
//! A data plane is reached at a [`RouterEndpoint`]: its admin address and the secret its admin
//! API requires (`routerproc` creates it with the router and reads it back when adopting one).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use ringfence_router::{RouteTable, StatsSnapshot};

use super::{Assignment, TrafficAdapter};
use crate::http::{HttpClient, Response};

/// Where a workload's data plane takes admin calls, and the secret it takes them with
/// (`Authorization: Bearer <token>`). `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq)]
pub struct RouterEndpoint {
    pub admin: SocketAddr,
    /// Empty: call without a token (a router started before tokens existed accepts that; one
    /// that requires a token answers 401).
    pub token: String,
}

impl fmt::Debug for RouterEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterEndpoint").field("admin", &self.admin).field("token", &"<redacted>").finish()
    }
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

    /// One admin call, with the endpoint's secret.
    async fn call(
        &self,
        method: Method,
        at: &RouterEndpoint,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Response> {
        let authorization = format!("Bearer {}", at.token);
        let headers: &[(&str, &str)] =
            if at.token.is_empty() { &[] } else { &[("authorization", authorization.as_str())] };
        let url = format!("http://{}{path_and_query}", at.admin);
        Ok(self.http.request(method, &url, headers, body, self.timeout).await?)
    }
}

/// A refused admin call's error; a 401 says why, since that is a setup problem, not a blip.
fn refused(resp: &Response, call: &str) -> anyhow::Error {
    if resp.status == StatusCode::UNAUTHORIZED {
        anyhow::anyhow!(
            "router answered {} to {call}: it does not take this server's admin token ({})",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        )
    } else {
        anyhow::anyhow!("router answered {} to {call}", resp.status)
    }
}

impl TrafficAdapter for BuiltinRouter {
    type Endpoint = RouterEndpoint;

    async fn install(&self, at: &RouterEndpoint, table: &RouteTable) -> anyhow::Result<()> {
        let body = Bytes::from(serde_json::to_vec(table)?);
        let resp = self.call(Method::PUT, at, "/v1/table", Some(body)).await?;
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

    async fn table(&self, at: &RouterEndpoint) -> anyhow::Result<Option<RouteTable>> {
        let resp = self.call(Method::GET, at, "/v1/table", None).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status.is_success() {
            return Err(refused(&resp, "GET /v1/table"));
        }
        Ok(Some(serde_json::from_slice(&resp.body).context("router sent a table that cannot be read")?))
    }

    async fn stats(&self, at: &RouterEndpoint) -> anyhow::Result<StatsSnapshot> {
        let resp = self.call(Method::GET, at, "/v1/stats", None).await?;
        if !resp.status.is_success() {
            return Err(refused(&resp, "GET /v1/stats"));
        }
        serde_json::from_slice(&resp.body).context("router sent stats that cannot be read")
    }

    async fn assign(&self, at: &RouterEndpoint, user: &str) -> anyhow::Result<Assignment> {
        let path = format!("/v1/assign?user={}", crate::http::encode_component(user));
        let resp = self.call(Method::GET, at, &path, None).await?;
        if !resp.status.is_success() {
            return Err(refused(&resp, "GET /v1/assign"));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&resp.body).context("router sent an assignment that cannot be read")?;
        Ok(Assignment {
            group: v["group"].as_str().map(String::from),
            version: v["version"].as_str().map(String::from),
        })
    }
}
