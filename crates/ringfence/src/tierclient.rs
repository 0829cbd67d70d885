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
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
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
        // Only what changed since the set held, unless the last install failed: a set that
        // could not be installed is asked for whole.
        let mut whole = false;
        loop {
            let base = &self.control_planes[which % self.control_planes.len()];
            let since = if whole { None } else { tier.cursor() };
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.fetch(base, tier.etag(), since) => r,
            };
            match result {
                Ok(Some(tables)) => {
                    let (etag, delta, routes) = (tables.etag.clone(), tables.workloads.is_some(), tables.routes.len());
                    match tier.install(tables).await {
                        Ok(()) => {
                            whole = false;
                            tracing::info!(control_plane = %base, %etag, delta, routes, "tables fetched");
                        }
                        Err(e) => {
                            // A set served but not saved is in service: what follows it can
                            // come as a delta. One refused is asked for whole next time.
                            let served = tier.etag().as_deref() == Some(etag.as_str());
                            whole = !served;
                            let what = if served { "tables served but not saved" } else { "tables not installed" };
                            tracing::error!(control_plane = %base, error = %format!("{e:#}"), "{what}");
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

    /// The next table set (only what changed after `since`, when given and the control plane
    /// gave it out), or `None` when nothing changed within [`WAIT`].
    async fn fetch(
        &self,
        base: &str,
        etag: Option<String>,
        since: Option<String>,
    ) -> Result<Option<TierTables>, String> {
        let mut url = format!("{}/v1/routes?wait={}", base.trim_end_matches('/'), WAIT.as_secs());
        if let Some(cursor) = since {
            url.push_str("&since=");
            url.push_str(&crate::http::encode_component(&cursor));
        }
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

    /// Reports the counters once a second: to a server that has them all, only the workloads
    /// whose counters changed since the last report and a share of the others (each unchanged
    /// workload every [`RESEND_EVERY`] reports, so the server's copy is never much older and it
    /// knows the router still serves it); to a server that has not (the first report, a failed
    /// one, a server that says it has not heard from this router since it started), all.
    /// With thousands of workloads most see no request from one second to the next, and
    /// sending and parsing all their counters every second was a third of the router's work.
    async fn report_loop(&self, tier: &TierHandle, shutdown: &CancellationToken) {
        let mut ticker = tokio::time::interval(REPORT_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let auth = format!("Bearer {}", self.token);
        let mut warned = None;
        let mut last: BTreeMap<String, StatsSnapshot> = BTreeMap::new();
        let mut whole_next = vec![true; self.control_planes.len()];
        let mut round: u64 = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let workloads = tier.snapshots();
            if workloads.is_empty() {
                continue;
            }
            round += 1;
            let due = due_now(&last, &workloads, round);
            let mut failures = Vec::new();
            // To every server at once: a slow one must not delay the others' counters.
            let mut sends = tokio::task::JoinSet::new();
            for (i, base) in self.control_planes.iter().enumerate() {
                let part = if whole_next[i] { workloads.clone() } else { due.clone() };
                let this = self.clone();
                let (base, auth) = (base.clone(), auth.clone());
                let whole = whole_next[i];
                sends.spawn(async move { (i, whole, this.send(&base, &auth, part).await) });
            }
            let mut again = Vec::new();
            for (i, whole, outcome) in sends.join_all().await {
                whole_next[i] = outcome.is_err();
                match outcome {
                    Ok(send_all) if send_all && !whole => again.push(i),
                    Ok(_) => {}
                    Err(e) => failures.push(e),
                }
            }
            // A server that restarted has only what was sent since: it gets all of them now,
            // not a second later, so its first reads after a restart find every workload.
            for i in again {
                if let Err(e) = self.send(&self.control_planes[i], &auth, workloads.clone()).await {
                    whole_next[i] = true;
                    failures.push(e);
                }
            }
            last = workloads;
            // A server away is expected now and then (a restart, a failover): said at debug.
            // A refusal is not: the analysis of these workloads goes without their traffic.
            if let Some(first) = failures.iter().find(|f| f.contains("refused")) {
                if warned.is_none_or(|t: std::time::Instant| t.elapsed() >= REFUSAL_WARN_EVERY) {
                    warned = Some(std::time::Instant::now());
                    tracing::warn!(refused = failures.len(), first = %first, "reports of traffic refused by the control plane");
                }
            } else if let Some(first) = failures.first() {
                tracing::debug!(failed = failures.len(), first = %first, "reports not sent");
            }
        }
    }

    /// Sends `workloads`' counters to the server at `base`, in parts under the API's limit;
    /// whether the server asked for all of them (it had not heard from this router).
    async fn send(&self, base: &str, auth: &str, workloads: BTreeMap<String, StatsSnapshot>) -> Result<bool, String> {
        let url = format!("{}/v1/routes/report", base.trim_end_matches('/'));
        let mut send_all = false;
        for part in report_parts(workloads, REPORT_BYTES) {
            let report = RouterReport { router: self.name.clone(), workloads: part };
            let body = bytes::Bytes::from(serde_json::to_vec(&report).expect("a report serializes"));
            let headers = [("authorization", auth)];
            match self.http.request(Method::POST, &url, &headers, Some(body), REPORT_EVERY).await {
                Ok(r) if r.status.is_success() => {
                    send_all |= serde_json::from_slice::<Accepted>(&r.body).is_ok_and(|a| a.send_all);
                }
                Ok(r) => {
                    let why = String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned();
                    return Err(format!("{url} refused a report: {} {why}", r.status));
                }
                Err(e) => return Err(format!("cannot report to {url}: {e}")),
            }
        }
        Ok(send_all)
    }
}

/// The part of the server's answer to a report the router reads (an older server's answer
/// lacks it: it never asks).
#[derive(Deserialize)]
struct Accepted {
    #[serde(default)]
    send_all: bool,
}

/// An unchanged workload's counters are sent again every this many reports: the server takes
/// breakers and the served generation only from reports under 5 s old.
const RESEND_EVERY: u64 = 2;

/// The counters a server holding the last report needs now: those that changed since `last`
/// (or are new), and this round's share of the unchanged ones (each workload's turn comes
/// every [`RESEND_EVERY`] rounds, the workloads spread over the rounds by a hash of the name).
fn due_now(
    last: &BTreeMap<String, StatsSnapshot>,
    now: &BTreeMap<String, StatsSnapshot>,
    round: u64,
) -> BTreeMap<String, StatsSnapshot> {
    now.iter()
        .filter(|(name, s)| {
            let changed = last.get(*name).is_none_or(|before| !before.same_counters(s));
            changed || turn(name) == round % RESEND_EVERY
        })
        .map(|(name, s)| (name.clone(), s.clone()))
        .collect()
}

/// A workload's turn among [`RESEND_EVERY`] rounds: the same every time.
fn turn(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish() % RESEND_EVERY
}

/// The most a report's body may take: the API refuses bodies over
/// [`ringfence_api::MAX_REQUEST_BYTES`], so a router serving thousands of workloads sends its
/// counters in as many parts as that takes.
const REPORT_BYTES: usize = ringfence_api::MAX_REQUEST_BYTES / 2;
/// How often a refused report is logged at warn level.
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(60);

/// Splits the counters into parts whose JSON stays under `budget` bytes (a single workload's
/// counters larger than that go alone, and the server says why it refuses them).
fn report_parts(workloads: BTreeMap<String, StatsSnapshot>, budget: usize) -> Vec<BTreeMap<String, StatsSnapshot>> {
    let mut parts = Vec::new();
    let mut part = BTreeMap::new();
    let mut size = 0;
    for (name, snapshot) in workloads {
        // The workload's entry: its name quoted, a colon, its counters, a comma.
        let entry = name.len() + 4 + serde_json::to_vec(&snapshot).map_or(0, |v| v.len());
        if !part.is_empty() && size + entry > budget {
            parts.push(std::mem::take(&mut part));
            size = 0;
        }
        size += entry;
        part.insert(name, snapshot);
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(requests: u64, uptime_ms: u64) -> StatsSnapshot {
        let v1 = ringfence_router::VersionStats { requests, ..Default::default() };
        StatsSnapshot {
            instance_id: "r1".into(),
            generation: 1,
            uptime_ms,
            versions: [("v1".to_string(), v1)].into(),
            upstreams: vec![],
        }
    }

    #[test]
    fn a_report_carries_what_changed_and_each_unchanged_workload_in_its_turn() {
        let names: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
        let first: BTreeMap<String, StatsSnapshot> = names.iter().map(|n| (n.clone(), counted(0, 10))).collect();
        assert_eq!(due_now(&BTreeMap::new(), &first, 1), first, "all are new");
        // A second later: only the uptime moved, except for w7, which counted a request.
        let mut now: BTreeMap<String, StatsSnapshot> = names.iter().map(|n| (n.clone(), counted(0, 1010))).collect();
        now.insert("w7".into(), counted(1, 1010));
        let mut seen = std::collections::BTreeSet::new();
        for round in 2..2 + RESEND_EVERY {
            let due = due_now(&first, &now, round);
            assert_eq!(due.get("w7"), now.get("w7"), "round {round}: a change is sent every time");
            // A share of the others, spread over the rounds.
            let share = due.len() as f64 / names.len() as f64;
            assert!((0.3..0.7).contains(&share), "round {round}: {} of {}", due.len(), names.len());
            seen.extend(due.into_keys());
        }
        assert_eq!(seen.len(), names.len(), "every workload within {RESEND_EVERY} reports");
        // A workload the router no longer serves is not sent; one it now serves is.
        let mut later = now.clone();
        later.remove("w1");
        later.insert("new".into(), counted(0, 2010));
        let due = due_now(&now, &later, 9);
        assert!(due.contains_key("new") && !due.contains_key("w1"));
    }

    #[test]
    fn a_report_of_many_workloads_goes_in_parts_under_the_api_limit() {
        let snapshot = StatsSnapshot {
            instance_id: "r1".into(),
            generation: 3,
            uptime_ms: 1,
            // Two versions with a few latency buckets each: what a rollout's counters look like.
            versions: ["v1", "v2"]
                .into_iter()
                .map(|v| {
                    let buckets = (1..=12).map(|i| (100 * i, 1000 + i)).collect();
                    let stats = ringfence_router::VersionStats {
                        requests: 123_456,
                        errors: 12,
                        latency_sum_us: 98_765_432,
                        latency_buckets: buckets,
                        users: 4321,
                    };
                    (v.to_string(), stats)
                })
                .collect(),
            upstreams: vec![],
        };
        let workloads: BTreeMap<String, StatsSnapshot> =
            (0..20_000).map(|i| (format!("workload-{i:05}"), snapshot.clone())).collect();
        let whole = serde_json::to_vec(&RouterReport { router: "edge".into(), workloads: workloads.clone() }).unwrap();
        assert!(whole.len() > ringfence_api::MAX_REQUEST_BYTES, "the test needs a report over the limit");
        let parts = report_parts(workloads.clone(), REPORT_BYTES);
        assert!(parts.len() > 1);
        for part in &parts {
            let body = serde_json::to_vec(&RouterReport { router: "edge".into(), workloads: part.clone() }).unwrap();
            assert!(body.len() <= REPORT_BYTES, "{} bytes", body.len());
        }
        let rejoined: BTreeMap<String, StatsSnapshot> = parts.into_iter().flatten().collect();
        assert_eq!(rejoined, workloads);
        assert!(report_parts(BTreeMap::new(), REPORT_BYTES).is_empty());
    }
}
