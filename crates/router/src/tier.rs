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

/// The state file is written at most this often; the latest set, always.
pub const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

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

/// Every table a tier router serves, as the control plane sent them; or, from a control plane
/// asked for what changed since a cursor, a delta (`workloads` set).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct TierTables {
    /// The control plane's tag for this set: sent back (`If-None-Match`) to wait for the next.
    pub etag: String,
    /// Where this set stands among the control plane's changes: sent back (`since`) to be
    /// given only the routes changed after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// In a delta only: every workload of the set, in order; `routes` then holds only those
    /// changed since the cursor asked from, and the others are as the router holds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<Vec<String>>,
    pub routes: Vec<TierRoute>,
}

impl TierTables {
    /// The whole set `delta` makes of this one (a set that is not a delta is itself). Fails,
    /// changing nothing, when the delta keeps a workload this set does not hold or changes one
    /// it does not list: the router then asks for the whole set.
    pub fn apply(&self, delta: TierTables) -> Result<TierTables, String> {
        let Some(names) = delta.workloads else { return Ok(delta) };
        let mut changed: HashMap<String, TierRoute> =
            delta.routes.into_iter().map(|r| (r.table.workload.clone(), r)).collect();
        let held: HashMap<&str, &TierRoute> = self.routes.iter().map(|r| (r.table.workload.as_str(), r)).collect();
        let mut routes = Vec::with_capacity(names.len());
        for name in &names {
            match changed.remove(name) {
                Some(r) => routes.push(r),
                None => routes.push(TierRoute::clone(
                    held.get(name.as_str())
                        .ok_or_else(|| format!("the delta keeps {name:?}, which is not held here"))?,
                )),
            }
        }
        if let Some(name) = changed.keys().next() {
            return Err(format!("the delta changes {name:?} without listing it among the set's workloads"));
        }
        Ok(TierTables { etag: delta.etag, cursor: delta.cursor, workloads: None, routes })
    }

    /// Checks every table and that no two workloads claim the same host and prefix.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.workloads.is_some() {
            return Err(TableError::new("workloads", "a delta, not a whole set".to_string()));
        }
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
/// longer prefix before a shorter one), and each named host's entries found by the host, so a
/// request costs the same whether the router serves ten workloads or ten thousand.
#[derive(Debug)]
pub(crate) struct TierRt {
    pub(crate) tables: TierTables,
    entries: Vec<Entry>,
    /// By host (lower case): the indexes of its entries in `entries`, in match order.
    by_host: HashMap<String, Vec<usize>>,
    /// The indexes of the entries that answer any host, in match order.
    any_host: Vec<usize>,
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
        let named = host.map(strip_port).and_then(|h| match self.by_host.get(h) {
            Some(found) => Some(found),
            // Host names are case-insensitive; lower-cased only when sent otherwise.
            None if h.bytes().any(|b| b.is_ascii_uppercase()) => self.by_host.get(&h.to_ascii_lowercase()),
            None => None,
        });
        let prefix_matches = |e: &Entry| {
            e.prefix.is_empty()
                || path.strip_prefix(e.prefix.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        named
            .into_iter()
            .flatten()
            .chain(&self.any_host)
            .map(|&i| &self.entries[i])
            .find(|e| prefix_matches(e))
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

    /// Where the set in service stands among the control plane's changes, if it said.
    pub fn cursor(&self) -> Option<String> {
        self.0.tier.load().as_ref().and_then(|t| t.tables.cursor.clone())
    }

    /// Checks `tables` (a whole set, or a delta to the one in service), swaps them in and
    /// saves them to the state file (at once, or within [`SAVE_EVERY`] of the last save). A
    /// set that fails its checks changes nothing; one that cannot be saved is served anyway
    /// (and the error says so, or the log when the save came later), since the control plane
    /// may be mitigating through it.
    pub async fn install(&self, tables: TierTables) -> anyhow::Result<()> {
        let mut writes = self.0.writes.lock().await;
        let current = self.0.tier.load_full();
        let tables = match &current {
            Some(held) => held.tables.apply(tables),
            None => TierTables::default().apply(tables),
        }
        .map_err(|e| anyhow::anyhow!("the control plane sent a delta this router cannot apply: {e}"))?;
        tables.validate().map_err(|e| anyhow::anyhow!("the control plane sent an invalid table set: {e}"))?;
        if current.as_ref().is_some_and(|t| t.tables == tables) {
            return Ok(());
        }
        self.0.install_tier(tables)?;
        let Some(path) = self.0.state_file.clone() else { return Ok(()) };
        // Saved at most once a second, the latest set: a router served sets many times a
        // second while thousands of workloads roll out, and each save writes them all.
        let due = writes.tier_saved_at.map(|at| at + SAVE_EVERY);
        if due.is_none_or(|due| Instant::now() >= due) {
            writes.tier_saved_at = Some(Instant::now());
            let installed = self.0.tier.load_full().expect("just installed");
            persist_json(path.clone(), &installed.tables).await.map_err(|e| {
                anyhow::anyhow!("the new tables are served but could not be saved to {}: {e:#}", path.display())
            })?;
        } else if !writes.tier_save_due {
            writes.tier_save_due = true;
            let (shared, due) = (self.0.clone(), due.expect("saved before"));
            tokio::spawn(async move {
                tokio::time::sleep_until(due.into()).await;
                let mut writes = shared.writes.lock().await;
                writes.tier_save_due = false;
                writes.tier_saved_at = Some(Instant::now());
                let Some(installed) = shared.tier.load_full() else { return };
                if let Err(e) = persist_json(path.clone(), &installed.tables).await {
                    tracing::error!(file = %path.display(), error = %format!("{e:#}"), "the tables served could not be saved");
                }
            });
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
        // A set changes a few tables at a time (one rollout's step): the others' compiled
        // routing is kept as it is, breakers and all, rather than built again.
        let mut changed = Vec::new();
        {
            let mut stats = self.tier_stats.lock().unwrap_or_else(PoisonError::into_inner);
            for r in &tables.routes {
                let previous = before.get(r.table.workload.as_str());
                let routing = match previous {
                    Some(p) if p.table == r.table => Arc::clone(p),
                    _ => {
                        let s: Arc<Stats> = stats.entry(r.table.workload.clone()).or_default().clone();
                        changed.push((r.table.workload.as_str(), r.table.generation));
                        Arc::new(Routing::build(r.table.clone(), previous.map(|p| &***p), &s)?)
                    }
                };
                entries.push(Entry {
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    prefix: prefix_of(r),
                    routing,
                });
            }
        }
        entries.sort_by(|a, b| b.host.is_some().cmp(&a.host.is_some()).then(b.prefix.len().cmp(&a.prefix.len())));
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_host = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match &e.host {
                Some(h) => by_host.entry(h.clone()).or_default().push(i),
                None => any_host.push(i),
            }
        }
        // A workload the set no longer has takes its counters with it.
        {
            let served: std::collections::HashSet<&str> =
                tables.routes.iter().map(|r| r.table.workload.as_str()).collect();
            self.tier_stats.lock().unwrap_or_else(PoisonError::into_inner).retain(|w, _| served.contains(w.as_str()));
        }
        // The tables that changed, not the whole set: a tier router may serve thousands.
        const NAMED: usize = 20;
        tracing::info!(
            etag = %tables.etag,
            workloads = entries.len(),
            changed = changed.len(),
            first_changed = ?&changed[..changed.len().min(NAMED)],
            "router tier tables installed"
        );
        self.tier.store(Some(Arc::new(TierRt { tables, entries, by_host, any_host })));
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
                max_request_body: crate::table::DEFAULT_MAX_REQUEST_BODY,
            },
        }
    }

    fn compiled(routes: Vec<TierRoute>) -> Arc<TierRt> {
        let shared = Shared::new(crate::RouterConfig::new(crate::AdminAuth::Insecure));
        let tables = TierTables { etag: "e".into(), routes, ..Default::default() };
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
    fn a_set_keeps_the_compiled_routing_of_every_table_it_does_not_change() {
        let shared = Shared::new(crate::RouterConfig::new(crate::AdminAuth::Insecure));
        let routes = vec![route("a", Some("a.example"), None), route("b", Some("b.example"), None)];
        let first = TierTables { etag: "1".into(), routes, ..Default::default() };
        shared.install_tier(first.clone()).unwrap();
        let before = shared.tier.load_full().unwrap();
        let mut second = first;
        second.etag = "2".into();
        second.routes[1].table.generation = 2;
        shared.install_tier(second).unwrap();
        let after = shared.tier.load_full().unwrap();
        let routing = |t: &TierRt, host: &str| t.select(Some(host), "/").unwrap().clone();
        assert!(Arc::ptr_eq(&routing(&before, "a.example"), &routing(&after, "a.example")));
        assert!(!Arc::ptr_eq(&routing(&before, "b.example"), &routing(&after, "b.example")));
        assert_eq!(routing(&after, "b.example").table.generation, 2);

        // A set without a workload takes its counters with it.
        let counted = |shared: &Shared| {
            let mut names: Vec<String> = shared.tier_stats.lock().unwrap().keys().cloned().collect();
            names.sort();
            names
        };
        assert_eq!(counted(&shared), ["a", "b"]);
        let third =
            TierTables { etag: "3".into(), routes: vec![route("a", Some("a.example"), None)], ..Default::default() };
        shared.install_tier(third).unwrap();
        assert_eq!(counted(&shared), ["a"]);
    }

    #[test]
    fn many_hosts_are_found_by_host_and_a_named_host_still_wins_over_any_host() {
        let mut routes: Vec<TierRoute> =
            (0..2000).map(|i| route(&format!("w{i}"), Some(&format!("w{i}.example")), None)).collect();
        routes.push(route("w7-api", Some("w7.example"), Some("/api")));
        routes.push(route("fallback", None, None));
        routes.push(route("any-api", None, Some("/api")));
        let t = compiled(routes);
        assert_eq!(selected(&t, Some("w1999.example"), "/").as_deref(), Some("w1999"));
        assert_eq!(selected(&t, Some("W1999.Example:443"), "/x").as_deref(), Some("w1999"));
        assert_eq!(selected(&t, Some("w7.example"), "/api/v1").as_deref(), Some("w7-api"));
        assert_eq!(selected(&t, Some("w7.example"), "/apiary").as_deref(), Some("w7"));
        // A named host with no prefix matching: the hosts-any entries, longer prefix first.
        assert_eq!(selected(&t, Some("elsewhere.example"), "/api/x").as_deref(), Some("any-api"));
        assert_eq!(selected(&t, Some("elsewhere.example"), "/"), Some("fallback".into()));
        assert_eq!(selected(&t, None, "/api").as_deref(), Some("any-api"));
    }

    #[test]
    fn a_delta_changes_what_it_names_keeps_the_rest_and_drops_what_it_no_longer_lists() {
        let held = TierTables {
            etag: "1".into(),
            cursor: Some("e.3".into()),
            workloads: None,
            routes: vec![route("a", None, Some("/a")), route("b", None, Some("/b")), route("c", None, Some("/c"))],
        };
        let mut b2 = route("b", None, Some("/b"));
        b2.table.generation = 2;
        let delta = TierTables {
            etag: "2".into(),
            cursor: Some("e.5".into()),
            workloads: Some(vec!["a".into(), "b".into(), "d".into()]),
            routes: vec![b2.clone(), route("d", None, Some("/d"))],
        };
        let whole = held.apply(delta.clone()).unwrap();
        assert_eq!(
            whole,
            TierTables {
                etag: "2".into(),
                cursor: Some("e.5".into()),
                workloads: None,
                routes: vec![route("a", None, Some("/a")), b2, route("d", None, Some("/d"))],
            }
        );
        // A whole set replaces what is held as it is.
        let full = TierTables { workloads: None, ..delta.clone() };
        assert_eq!(held.apply(full.clone()).unwrap(), full);
        // Kept but not held, or changed but not listed: refused, for the whole set to be fetched.
        let missing = TierTables { workloads: Some(vec!["a".into(), "x".into()]), routes: vec![], ..delta.clone() };
        assert!(held.apply(missing).unwrap_err().contains("\"x\""));
        let unlisted = TierTables { workloads: Some(vec!["a".into()]), ..delta };
        assert!(held.apply(unlisted).unwrap_err().contains("without listing"));
    }

    #[tokio::test]
    async fn the_state_file_gets_the_first_set_at_once_and_the_latest_of_a_burst_within_a_second() {
        let dir = std::env::temp_dir().join(format!("ringfence-tier-{:016x}", rand::random::<u64>()));
        let file = dir.join("tables.json");
        let mut config = crate::RouterConfig::new(crate::AdminAuth::Insecure);
        config.state_file = Some(file.clone());
        let handle = TierHandle(Arc::new(Shared::new(config)));
        let set = |generation: u64| {
            let mut r = route("a", Some("a.example"), None);
            r.table.generation = generation;
            TierTables { etag: format!("e{generation}"), routes: vec![r], ..Default::default() }
        };
        let saved = || -> Option<TierTables> { serde_json::from_slice(&std::fs::read(&file).ok()?).ok() };
        handle.install(set(1)).await.unwrap();
        assert_eq!(saved(), Some(set(1)), "the first set is saved before install returns");
        for generation in 2..=5 {
            handle.install(set(generation)).await.unwrap();
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while saved() != Some(set(5)) {
            assert!(Instant::now() < deadline, "the latest set was never saved: {:?}", saved());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
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
        let clash = TierTables {
            etag: "e".into(),
            routes: vec![route("a", None, Some("/x")), route("b", None, Some("/x/"))],
            ..Default::default()
        };
        assert!(clash.validate().unwrap_err().message.contains("another workload"), "{:?}", clash.validate());
        let twice = TierTables {
            etag: "e".into(),
            routes: vec![route("a", None, Some("/x")), route("a", None, None)],
            ..Default::default()
        };
        assert!(twice.validate().is_err());
        let mut bad = route("a", None, None);
        bad.table.sticky_header = "bad header".into();
        let err = TierTables { etag: "e".into(), routes: vec![bad], ..Default::default() }.validate().unwrap_err();
        assert_eq!(err.field, "routes[0].table.sticky_header");
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
