//! The router tier: one router serving many workloads, each by host name and path prefix,
//! with tables fetched from the control plane instead of pushed to an admin API.
//!
//! The fetching itself is the caller's (the `ringfence router --control-plane` command): this
//! module takes a whole set of tables through [`TierHandle::install`], checks it, swaps it in
//! atomically, saves it to the state file, and gives back per-workload counters for the
//! control plane. A set is all or nothing: one bad table keeps the whole last set in service.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::routing::Routing;
use crate::server::{Shared, persist_json};
use crate::stats::{Stats, StatsSnapshot};
use crate::table::{RouteTable, TableError};

/// One workload's table with what selects its requests.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TierRoute {
    /// The `Host` header (without its port, lower case) this workload answers; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path prefix this workload answers (`/shop` takes `/shop` and `/shop/...`, never
    /// `/shopping`); every path when absent. Requests are passed on with their path unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    pub table: RouteTable,
}

/// Every table a tier router serves, as the control plane sent them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct TierTables {
    /// The control plane's tag for this set: sent back (`If-None-Match`) to wait for the next.
    pub etag: String,
    pub routes: Vec<TierRoute>,
}

impl TierTables {
    /// Checks every table and that no two workloads claim the same host and prefix.
    pub fn validate(&self) -> Result<(), TableError> {
        let mut seen = HashSet::new();
        let mut names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            r.table.validate().map_err(|e| TableError::new(format!("routes[{i}].table.{}", e.field), e.message))?;
            if !names.insert(r.table.workload.as_str()) {
                return Err(TableError::new(
                    format!("routes[{i}].table.workload"),
                    format!("{:?} appears twice", r.table.workload),
                ));
            }
            if let Some(p) = &r.path_prefix
                && !p.starts_with('/')
            {
                return Err(TableError::new(
                    format!("routes[{i}].path_prefix"),
                    format!("{p:?} does not start with /"),
                ));
            }
            if !seen.insert((r.host.clone(), prefix_of(r))) {
                return Err(TableError::new(
                    format!("routes[{i}]"),
                    format!(
                        "{} claims host {:?} and path prefix {:?}, which another workload has",
                        r.table.workload, r.host, r.path_prefix
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `""` for every path, else the prefix without a trailing `/`.
fn prefix_of(r: &TierRoute) -> String {
    r.path_prefix.as_deref().unwrap_or("").trim_end_matches('/').to_owned()
}

/// A set compiled for the hot path: entries in match order (a named host before any host, a
/// longer prefix before a shorter one).
#[derive(Debug)]
pub(crate) struct TierRt {
    pub(crate) tables: TierTables,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    host: Option<String>,
    prefix: String,
    pub(crate) routing: Arc<Routing>,
}

impl TierRt {
    /// The workload that answers a request for `host` (as sent, with or without a port) and
    /// `path`.
    pub(crate) fn select(&self, host: Option<&str>, path: &str) -> Option<&Arc<Routing>> {
        let host = host.map(strip_port);
        self.entries
            .iter()
            .find(|e| {
                e.host.as_deref().is_none_or(|h| host.is_some_and(|got| got.eq_ignore_ascii_case(h)))
                    && (e.prefix.is_empty()
                        || path
                            .strip_prefix(e.prefix.as_str())
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
            })
            .map(|e| &e.routing)
    }

    pub(crate) fn routings(&self) -> impl Iterator<Item = &Arc<Routing>> {
        self.entries.iter().map(|e| &e.routing)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
}

/// What the `ringfence router --control-plane` command drives: installs the sets it fetches
/// and reads the counters it reports.
#[derive(Clone)]
pub struct TierHandle(pub(crate) Arc<Shared>);

impl std::fmt::Debug for TierHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierHandle").field("instance_id", &self.0.instance_id).finish()
    }
}

impl TierHandle {
    /// Random per process start, like the counters' `instance_id`.
    pub fn instance_id(&self) -> &str {
        &self.0.instance_id
    }

    /// The tag of the set in service, if any.
    pub fn etag(&self) -> Option<String> {
        self.0.tier.load().as_ref().map(|t| t.tables.etag.clone())
    }

    /// Checks `tables`, swaps them in and saves them to the state file. A set that fails its
    /// checks changes nothing; one that cannot be saved is served anyway (and the error says
    /// so), since the control plane may be mitigating through it.
    pub async fn install(&self, tables: TierTables) -> anyhow::Result<()> {
        tables.validate().map_err(|e| anyhow::anyhow!("the control plane sent an invalid table set: {e}"))?;
        let _writes = self.0.writes.lock().await;
        if self.0.tier.load().as_ref().is_some_and(|t| t.tables == tables) {
            return Ok(());
        }
        self.0.install_tier(tables.clone())?;
        if let Some(path) = &self.0.state_file {
            persist_json(path.clone(), &tables).await.map_err(|e| {
                anyhow::anyhow!("the new tables are served but could not be saved to {}: {e:#}", path.display())
            })?;
        }
        Ok(())
    }

    /// Per-workload counters since this router started, for every workload it serves now.
    pub fn snapshots(&self) -> BTreeMap<String, StatsSnapshot> {
        tier_snapshots(&self.0)
    }
}

pub(crate) fn tier_snapshots(shared: &Shared) -> BTreeMap<String, StatsSnapshot> {
    let now = Instant::now();
    let Some(tier) = shared.tier.load_full() else { return BTreeMap::new() };
    let stats = shared.tier_stats.lock().unwrap_or_else(PoisonError::into_inner);
    tier.routings()
        .filter_map(|r| {
            let s = stats.get(&r.table.workload)?;
            Some((r.table.workload.clone(), crate::admin::snapshot_of(shared, s, Some(r), now)))
        })
        .collect()
}

impl Shared {
    /// Compiles a checked set and swaps it in. Replicas keep their breakers and workloads
    /// their counters across sets. Callers hold `writes`.
    pub(crate) fn install_tier(&self, tables: TierTables) -> anyhow::Result<()> {
        let previous = self.tier.load_full();
        let before: HashMap<&str, &Arc<Routing>> = previous
            .as_deref()
            .into_iter()
            .flat_map(|p| p.routings())
            .map(|r| (r.table.workload.as_str(), r))
            .collect();
        let mut entries = Vec::with_capacity(tables.routes.len());
        {
            let mut stats = self.tier_stats.lock().unwrap_or_else(PoisonError::into_inner);
            for r in &tables.routes {
                let s: Arc<Stats> = stats.entry(r.table.workload.clone()).or_default().clone();
                let routing =
                    Routing::build(r.table.clone(), before.get(r.table.workload.as_str()).map(|r| &***r), &s)?;
                entries.push(Entry {
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    prefix: prefix_of(r),
                    routing: Arc::new(routing),
                });
            }
        }
        entries.sort_by(|a, b| b.host.is_some().cmp(&a.host.is_some()).then(b.prefix.len().cmp(&a.prefix.len())));
        tracing::info!(
            etag = %tables.etag,
            workloads = ?entries.iter().map(|e| (&e.routing.table.workload, e.routing.table.generation)).collect::<Vec<_>>(),
            "router tier tables installed"
        );
        self.tier.store(Some(Arc::new(TierRt { tables, entries })));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{BreakerConfig, Group};

    fn route(workload: &str, host: Option<&str>, prefix: Option<&str>) -> TierRoute {
        TierRoute {
            host: host.map(str::to_owned),
            path_prefix: prefix.map(str::to_owned),
            table: RouteTable {
                generation: 1,
                workload: workload.into(),
                sticky_header: "x-user-id".into(),
                sticky_cookie: "rf_user".into(),
                groups: vec![Group {
                    name: "stable".into(),
                    version: "v1".into(),
                    weight_bp: 10_000,
                    upstreams: vec![([127, 0, 0, 1], 9).into()],
                    flags: None,
                    segment: None,
                    shadow_bp: 0,
                    fault: None,
                }],
                breaker: BreakerConfig::default(),
                flag_tokens: vec![],
                pin_header: None,
            },
        }
    }

    fn compiled(routes: Vec<TierRoute>) -> Arc<TierRt> {
        let shared = Shared::new(crate::RouterConfig::new(crate::AdminAuth::Insecure));
        let tables = TierTables { etag: "e".into(), routes };
        tables.validate().unwrap();
        shared.install_tier(tables).unwrap();
        shared.tier.load_full().unwrap()
    }

    fn selected(t: &TierRt, host: Option<&str>, path: &str) -> Option<String> {
        t.select(host, path).map(|r| r.table.workload.clone())
    }

    #[test]
    fn a_named_host_and_a_longer_prefix_win() {
        let t = compiled(vec![
            route("fallback", None, None),
            route("shop", None, Some("/shop")),
            route("shop-api", None, Some("/shop/api")),
            route("admin", Some("admin.example"), None),
            route("admin-shop", Some("admin.example"), Some("/shop")),
        ]);
        assert_eq!(selected(&t, Some("www.example"), "/").as_deref(), Some("fallback"));
        assert_eq!(selected(&t, Some("www.example"), "/shop").as_deref(), Some("shop"));
        assert_eq!(selected(&t, Some("www.example"), "/shop/cart").as_deref(), Some("shop"));
        assert_eq!(selected(&t, Some("www.example"), "/shopping").as_deref(), Some("fallback"));
        assert_eq!(selected(&t, None, "/shop/api/v1").as_deref(), Some("shop-api"));
        assert_eq!(selected(&t, Some("Admin.Example:8080"), "/x").as_deref(), Some("admin"));
        assert_eq!(selected(&t, Some("admin.example"), "/shop/x").as_deref(), Some("admin-shop"));
    }

    #[test]
    fn nothing_matches_without_a_catch_all() {
        let t = compiled(vec![route("shop", Some("shop.example"), None)]);
        assert_eq!(selected(&t, Some("other.example"), "/"), None);
        assert_eq!(selected(&t, None, "/"), None);
        assert_eq!(selected(&t, Some("shop.example:80"), "/").as_deref(), Some("shop"));
    }

    #[test]
    fn a_set_with_a_clash_or_a_bad_table_is_refused_whole() {
        let clash =
            TierTables { etag: "e".into(), routes: vec![route("a", None, Some("/x")), route("b", None, Some("/x/"))] };
        assert!(clash.validate().unwrap_err().message.contains("another workload"), "{:?}", clash.validate());
        let twice = TierTables { etag: "e".into(), routes: vec![route("a", None, Some("/x")), route("a", None, None)] };
        assert!(twice.validate().is_err());
        let mut bad = route("a", None, None);
        bad.table.sticky_header = "bad header".into();
        let err = TierTables { etag: "e".into(), routes: vec![bad] }.validate().unwrap_err();
        assert_eq!(err.field, "routes[0].table.sticky_header");
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
