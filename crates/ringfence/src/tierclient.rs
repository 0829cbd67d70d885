//! A router of the tier (`ringfence router --control-plane URL`): fetches its tables from the
//! API by long-poll and reports its counters back.
//!
//! The router never depends on the control plane to serve: it starts from its state file,
//! keeps the last tables while no server answers, and moves on to the next `--control-plane`
//! URL (another replica) when one fails. Counters go to every URL, so whichever replica leads
//! a workload has them.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::{Method, StatusCode};
use ringfence_router::{StatsSnapshot, TierHandle, TierTables};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::http::HttpClient;

/// How long the server may hold a fetch open when nothing changes.
pub const WAIT: Duration = Duration::from_secs(25);
/// How often counters are reported.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// The longest pause between tries while no server answers: a server back reaches the
/// routers within it.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// A table set is a few KiB per workload; more than this is refused.
const MAX_TABLES_BYTES: usize = 16 << 20;

/// What `POST /v1/routes/report` takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterReport {
    /// The router's name (`--name`), for `status` and the logs.
    pub router: String,
    /// Per workload, the counters since the router started.
    pub workloads: BTreeMap<String, StatsSnapshot>,
}

#[derive(Clone)]
pub struct TierClient {
    /// API base URLs (`http://host:port`), tried in order.
    pub control_planes: Vec<String>,
    /// The API token (role `router`), sent as `Authorization: Bearer`.
    pub token: String,
    pub name: String,
    pub http: HttpClient,
}

impl TierClient {
    /// Fetches and reports until `shutdown`.
    pub async fn run(self, tier: TierHandle, shutdown: CancellationToken) {
        tokio::join!(self.fetch_loop(&tier, &shutdown), self.report_loop(&tier, &shutdown));
    }

    async fn fetch_loop(&self, tier: &TierHandle, shutdown: &CancellationToken) {
        let mut which = 0;
        let mut backoff = Duration::from_millis(50);
        let mut failing = false;
        loop {
            let base = &self.control_planes[which % self.control_planes.len()];
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.fetch(base, tier.etag()) => r,
            };
            match result {
                Ok(Some(tables)) => {
                    let (etag, workloads) = (tables.etag.clone(), tables.routes.len());
                    match tier.install(tables).await {
                        Ok(()) => tracing::info!(control_plane = %base, %etag, workloads, "tables fetched"),
                        Err(e) => {
                            tracing::error!(control_plane = %base, error = %format!("{e:#}"), "tables not installed")
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            control_plane = %base,
                            error = %e,
                            "cannot fetch tables; serving the last ones and trying again"
                        );
                    }
                    failing = true;
                    which += 1;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            if failing {
                tracing::info!(control_plane = %base, "control plane reachable again");
            }
            failing = false;
            backoff = Duration::from_millis(50);
        }
    }

    /// The next table set, or `None` when nothing changed within [`WAIT`].
    async fn fetch(&self, base: &str, etag: Option<String>) -> Result<Option<TierTables>, String> {
        let url = format!("{}/v1/routes?wait={}", base.trim_end_matches('/'), WAIT.as_secs());
        let auth = format!("Bearer {}", self.token);
        let if_none_match = etag.map(|e| format!("\"{e}\""));
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(inm) = &if_none_match {
            headers.push(("if-none-match", inm.as_str()));
        }
        let response = self
            .http
            .request(Method::GET, &url, &headers, None, WAIT + Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        match response.status {
            StatusCode::NOT_MODIFIED => Ok(None),
            StatusCode::OK if response.body.len() > MAX_TABLES_BYTES => {
                Err(format!("GET {url}: the table set is larger than {MAX_TABLES_BYTES} bytes"))
            }
            StatusCode::OK => serde_json::from_slice(&response.body)
                .map(Some)
                .map_err(|e| format!("GET {url}: the answer is not a table set: {e}")),
            status => Err(format!("GET {url}: {status}: {}", String::from_utf8_lossy(&response.body).trim())),
        }
    }

    async fn report_loop(&self, tier: &TierHandle, shutdown: &CancellationToken) {
        let mut ticker = tokio::time::interval(REPORT_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let auth = format!("Bearer {}", self.token);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let workloads = tier.snapshots();
            if workloads.is_empty() {
                continue;
            }
            let report = RouterReport { router: self.name.clone(), workloads };
            let body = bytes::Bytes::from(serde_json::to_vec(&report).expect("a report serializes"));
            // To every server at once: a slow one must not delay the others' counters.
            let mut sends = tokio::task::JoinSet::new();
            for base in &self.control_planes {
                let url = format!("{}/v1/routes/report", base.trim_end_matches('/'));
                let (body, auth, http) = (body.clone(), auth.clone(), self.http.clone());
                sends.spawn(async move {
                    match http.request(Method::POST, &url, &[("authorization", &auth)], Some(body), REPORT_EVERY).await
                    {
                        Ok(r) if r.status.is_success() => {}
                        Ok(r) => tracing::debug!(%url, status = %r.status, "report refused"),
                        Err(e) => tracing::debug!(%url, error = %e, "report not sent"),
                    }
                });
            }
            sends.join_all().await;
        }
    }
}
