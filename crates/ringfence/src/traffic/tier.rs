//! The router tier (`[router] kind = "tier"`): shared `ringfence router --control-plane`
//! processes serve the workload, several of them at once, each for many workloads.
//!
//! The direction is reversed from the other adapters: the routers call the API, the server
//! never calls them. A table reaches them through the event log (`RoutesPublished`, which
//! the controller appends with the outcome of its `apply_routes` action) and `GET /v1/routes`,
//! which any server reading the log answers, so routers may talk to any replica. Their
//! counters come back with `POST /v1/routes/report`, to every server they know; this adapter
//! keeps each router's latest report and merges them per workload for the analysis.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringfence_core::spec::RouterKind;
use ringfence_core::state::WorkloadState;
use ringfence_router::{RouteTable, StatsSnapshot, TierRoute};
use sha2::{Digest as _, Sha256};

use super::{Assignment, TrafficAdapter};

/// A workload of the tier: its name and the table it serves now, as the log says.
#[derive(Debug, Clone, PartialEq)]
pub struct TierEndpoint {
    pub workload: String,
    pub table: Option<RouteTable>,
}

/// A report older than this no longer says what a router's breakers look like now.
const FRESH: Duration = Duration::from_secs(5);
/// A router silent for this long is forgotten (its counters leave the merged sum, which
/// then goes on under another instance id, so no reader mistakes it for a drop).
const FORGET: Duration = Duration::from_secs(600);
/// How often the reports of every workload are swept for forgotten routers.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// After this server starts answering, how long the counters are withheld while the routers
/// report for the first time: every router reports once a second, and a sum read before all
/// of them have would go under another instance id than the one before the restart, starting
/// every analysis window over. It counts from when the API listens, not from the start of the
/// process: rebuilding the state from a long log can take longer than this, and no router can
/// report before the API answers.
const FIRST_REPORTS: Duration = Duration::from_millis(1500);

/// The routers' latest reports, per workload and router instance.
#[derive(Clone)]
pub struct Tier {
    reports: Arc<Mutex<Reports>>,
    /// Each workload's route as last served, by name.
    served: Arc<Mutex<Memo>>,
    /// Random per process: names the revisions of `served`, which start over with it.
    epoch: Arc<str>,
}

/// The routes as last served, each stamped with the revision it last changed at: a router
/// that held the set at some revision is sent only what changed after it.
#[derive(Default)]
struct Memo {
    routes: HashMap<String, Served>,
    /// The latest revision given out (never lowered within an epoch).
    revision: u64,
}

/// A tier workload's route serialized as the routers get it (a `TierRoute`), with a digest of
/// it for the set's etag and the revision it last changed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRoute {
    pub json: Arc<[u8]>,
    pub digest: [u8; 16],
    pub revision: u64,
}

impl ServedRoute {
    pub fn of(route: &TierRoute) -> ServedRoute {
        let json = serde_json::to_vec(route).expect("tables serialize");
        let digest = Sha256::digest(&json)[..16].try_into().expect("16 bytes of a 32-byte digest");
        ServedRoute { json: json.into(), digest, revision: 0 }
    }
}

/// The routes of a pass, and where the changes stood when it was made.
pub struct ServedRoutes {
    pub routes: Vec<Option<ServedRoute>>,
    /// `<epoch>.<revision>`: every route changed after it has a higher revision.
    pub cursor: String,
}

impl Tier {
    /// The revision `cursor` names, if this process gave it out (another process's, or
    /// anything else, is `None`: the whole set is sent).
    pub fn revision_of(&self, cursor: &str) -> Option<u64> {
        let (epoch, revision) = cursor.split_once('.')?;
        (epoch == &*self.epoch).then(|| revision.parse().ok()).flatten()
    }
}

/// A route kept with what it was made from: the table the log published (compared by
/// pointer: a new event, a new table) and the spec.
struct Served {
    table: Arc<RouteTable>,
    spec_digest: String,
    route: ServedRoute,
}

struct Reports {
    /// When the API began answering (`None` before: no router can have reported).
    started: Option<Instant>,
    swept: Instant,
    by_workload: HashMap<String, HashMap<String, Report>>,
    /// Router instances heard from since this server started. A router sends only the counters
    /// that changed (and a share of the rest each second); one this server has not heard from
    /// is asked for all of them at once.
    heard: HashSet<String>,
}

struct Report {
    router: String,
    received: Instant,
    snapshot: StatsSnapshot,
}

/// A router and when it last reported, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportingRouter {
    pub name: String,
    pub instance_id: String,
    pub age: Duration,
    pub generation: u64,
}

impl Default for Tier {
    fn default() -> Self {
        Tier {
            reports: Arc::new(Mutex::new(Reports {
                started: None,
                swept: Instant::now(),
                by_workload: HashMap::new(),
                heard: HashSet::new(),
            })),
            served: Arc::default(),
            epoch: format!("{:016x}", rand::random::<u64>()).into(),
        }
    }
}

impl Tier {
    /// Keeps `snapshot` as `router`'s latest counters of `workload`; whether they say anything
    /// new (a router not heard from before, another table served, a request counted, a
    /// breaker moved). A report only later than the one before changes no judgement: with
    /// thousands of workloads most carry no request from one second to the next, and waking
    /// their loops for it would be most of the controller's work.
    pub fn report(&self, router: &str, workload: &str, snapshot: StatsSnapshot) -> bool {
        let mut reports = self.reports.lock().expect("tier reports lock");
        let now = Instant::now();
        let routers = reports.by_workload.entry(workload.to_owned()).or_default();
        routers.retain(|_, r| now.duration_since(r.received) < FORGET);
        let news = routers.get(&snapshot.instance_id).is_none_or(|b| !b.snapshot.same_counters(&snapshot));
        routers.insert(snapshot.instance_id.clone(), Report { router: router.to_owned(), received: now, snapshot });
        // The other workloads' routers now and then, not on every report: with thousands of
        // workloads a sweep per report would cost thousands of times the report itself.
        if now.duration_since(reports.swept) >= SWEEP_EVERY {
            reports.swept = now;
            for routers in reports.by_workload.values_mut() {
                routers.retain(|_, r| now.duration_since(r.received) < FORGET);
            }
            reports.by_workload.retain(|_, routers| !routers.is_empty());
            let Reports { by_workload, heard, .. } = &mut *reports;
            heard.retain(|id| by_workload.values().any(|routers| routers.contains_key(id)));
        }
        news
    }

    /// Whether this server had heard from router instance `instance` since it started; from
    /// now on it has. A router not heard from yet is asked for every workload's counters.
    pub fn heard_before(&self, instance: &str) -> bool {
        let mut reports = self.reports.lock().expect("tier reports lock");
        if reports.heard.contains(instance) {
            return true;
        }
        reports.heard.insert(instance.to_owned());
        false
    }

    /// The API answers from now on: the routers' first reports can arrive.
    pub fn listening(&self) {
        self.reports.lock().expect("tier reports lock").started = Some(Instant::now());
    }

    /// While this server waits for the routers' first reports after it began answering: how
    /// long until their counters are read.
    pub fn first_reports_left(&self) -> Option<Duration> {
        let started = self.reports.lock().expect("tier reports lock").started;
        let Some(started) = started else { return Some(FIRST_REPORTS) };
        FIRST_REPORTS.checked_sub(started.elapsed()).filter(|left| !left.is_zero())
    }

    /// The routers that reported `workload`'s traffic, freshest first.
    pub fn routers(&self, workload: &str) -> Vec<ReportingRouter> {
        let reports = self.reports.lock().expect("tier reports lock");
        let now = Instant::now();
        let mut out: Vec<ReportingRouter> = reports
            .by_workload
            .get(workload)
            .into_iter()
            .flat_map(|m| m.values())
            .map(|r| ReportingRouter {
                name: r.router.clone(),
                instance_id: r.snapshot.instance_id.clone(),
                age: now.duration_since(r.received),
                generation: r.snapshot.generation,
            })
            .collect();
        out.sort_by_key(|r| r.age);
        out
    }

    /// Every router's latest counters of `workload`, summed. Each router's count is
    /// cumulative and a restarted router reports under a new instance, so the sum only grows
    /// while the set of instances stays the same. The merged instance id names that set: a
    /// router that joins or is forgotten changes it (the sum jumps), and a restart of this
    /// server that hears from the same routers keeps it, so analysis windows go on.
    fn merged(&self, workload: &str) -> Option<StatsSnapshot> {
        use sha2::Digest as _;
        let reports = self.reports.lock().expect("tier reports lock");
        let routers = reports.by_workload.get(workload).filter(|m| !m.is_empty())?;
        let now = Instant::now();
        let mut ids: Vec<&str> = routers.keys().map(String::as_str).collect();
        ids.sort_unstable();
        let mut digest = sha2::Sha256::new();
        for id in ids {
            digest.update(id.as_bytes());
            digest.update([0]);
        }
        let digest = digest.finalize();
        let mut merged =
            StatsSnapshot::merge(format!("tier-{}", hex::encode(&digest[..8])), routers.values().map(|r| &r.snapshot));
        // Breakers and the served generation: only what the routers say now.
        let fresh: Vec<&Report> = routers.values().filter(|r| now.duration_since(r.received) < FRESH).collect();
        merged.upstreams = fresh.iter().flat_map(|r| r.snapshot.upstreams.iter().cloned()).collect();
        merged.generation = fresh.iter().map(|r| r.snapshot.generation).min().unwrap_or(0);
        Some(merged)
    }
}

impl Tier {
    /// The routes of `workloads` as the routers get them, `None` for one not yet published.
    /// The set is rebuilt after every change anywhere: a route is serialized again only when
    /// its table or spec changed, since serializing thousands of unchanged tables was most of
    /// every pass. A workload whose flags name OFREP tokens is serialized every time (their
    /// secrets may change without an event). A route whose bytes changed gets the next
    /// revision. `tier_workloads` counts the tier's workloads, to forget the routes of deleted
    /// ones (those forgotten and served again get new revisions: sent again, never missed).
    pub fn served_routes(
        &self,
        data_dir: &Path,
        workloads: &[Arc<WorkloadState>],
        tier_workloads: usize,
    ) -> ServedRoutes {
        let mut memo = self.served.lock().expect("served routes lock");
        if memo.routes.len() > 2 * tier_workloads + 64 {
            memo.routes.clear();
        }
        let routes = workloads
            .iter()
            .map(|ws| {
                let table = ws.published.as_ref()?;
                if ws.spec.router.kind != RouterKind::Tier {
                    return None;
                }
                let tokens = !ws.spec.flags.tokens.is_empty();
                let kept = memo.routes.get(&ws.name);
                if !tokens
                    && let Some(s) = kept
                    && Arc::ptr_eq(&s.table, table)
                    && s.spec_digest == ws.spec_digest
                {
                    return Some(s.route.clone());
                }
                let mut route = ServedRoute::of(&TierRoute {
                    host: ws.spec.router.host.clone(),
                    path_prefix: ws.spec.router.path_prefix.clone(),
                    table: served_table(data_dir, ws)?,
                });
                route.revision = match kept {
                    Some(s) if s.route.digest == route.digest => s.route.revision,
                    _ => {
                        memo.revision += 1;
                        memo.revision
                    }
                };
                let kept = Served { table: table.clone(), spec_digest: ws.spec_digest.clone(), route: route.clone() };
                memo.routes.insert(ws.name.clone(), kept);
                Some(route)
            })
            .collect();
        ServedRoutes { routes, cursor: format!("{}.{}", self.epoch, memo.revision) }
    }
}

/// The table the tier serves for `ws`: the one the log last published, with the digests of
/// the OFREP tokens its spec names (kept out of the log), or `None` before the first.
pub fn served_table(data_dir: &Path, ws: &WorkloadState) -> Option<RouteTable> {
    let mut table = RouteTable::clone(ws.published.as_ref()?);
    table.flag_tokens =
        ws.spec.flags.tokens.iter().map(|t| crate::secrets::token_digest(data_dir, &ws.name, t)).collect();
    Some(table)
}

impl TrafficAdapter for Tier {
    type Endpoint = TierEndpoint;

    /// Nothing to send: the controller records the table in the log with the action's
    /// outcome (`RoutesPublished`), and the routers fetch it from there.
    async fn install(&self, _at: &TierEndpoint, _table: &RouteTable) -> anyhow::Result<()> {
        Ok(())
    }

    async fn table(&self, at: &TierEndpoint) -> anyhow::Result<Option<RouteTable>> {
        Ok(at.table.clone())
    }

    async fn stats(&self, at: &TierEndpoint) -> anyhow::Result<StatsSnapshot> {
        if self.first_reports_left().is_some() {
            let started = self.reports.lock().expect("tier reports lock").started;
            anyhow::bail!(
                "this server began answering {} ms ago: the routers of the tier are reporting for the first time",
                started.map_or(0, |s| s.elapsed().as_millis())
            );
        }
        self.merged(&at.workload).ok_or_else(|| {
            anyhow::anyhow!("no router of the tier has reported {}'s traffic yet (POST /v1/routes/report)", at.workload)
        })
    }

    async fn assign(&self, at: &TierEndpoint, user: &str) -> anyhow::Result<Assignment> {
        let Some(table) = &at.table else { return Ok(Assignment::default()) };
        Ok(table
            .group_index(user, |_| None)
            .map(|i| &table.groups[i])
            .map(|g| Assignment { group: Some(g.name.clone()), version: Some(g.version.clone()) })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ringfence_router::VersionStats;

    use super::*;

    fn snap(instance: &str, requests: u64) -> StatsSnapshot {
        StatsSnapshot {
            instance_id: instance.into(),
            generation: 2,
            uptime_ms: 1,
            versions: BTreeMap::from([(
                "v1".to_string(),
                VersionStats { requests, errors: 0, latency_sum_us: 0, latency_buckets: vec![], users: 0 },
            )]),
            upstreams: vec![],
        }
    }

    /// A workload of the tier named `name`, with `table` published when given.
    fn tier_workload(name: &str, router: &str, table: Option<Arc<RouteTable>>) -> Arc<WorkloadState> {
        use ringfence_core::{World, command, event::NewEvent, time::Timestamp};
        let text = include_str!("../../../../examples/checkout.toml")
            .replace("name = \"checkout\"", &format!("name = \"{name}\""))
            .replace("listen = \"127.0.0.1:0\"", &format!("kind = \"tier\"\n{router}"));
        let spec = ringfence_core::spec::parse("w.toml", &text).expect("a tier spec");
        let mut world = World::default();
        let kind = command::apply_spec(&world, &spec).expect("valid").expect("a new spec");
        let at = Timestamp(1_795_343_106_000);
        world.apply(&NewEvent { at, actor: "t".into(), reason: "t".into(), workload: name.into(), kind }.numbered(1));
        let mut ws = WorkloadState::clone(world.workload(name).expect("the workload"));
        ws.published = table;
        Arc::new(ws)
    }

    fn table(workload: &str, generation: u64) -> Arc<RouteTable> {
        Arc::new(serde_json::from_value(serde_json::json!({"workload": workload, "generation": generation})).unwrap())
    }

    #[test]
    fn a_route_is_serialized_again_only_when_its_table_or_spec_changes() {
        let tier = Tier::default();
        let data = tempfile::tempdir().unwrap();
        let t1 = table("a", 1);
        let a = tier_workload("a", "host = \"a.test\"", Some(t1.clone()));
        let unpublished = tier_workload("b", "host = \"b.test\"", None);
        let first = tier.served_routes(data.path(), &[a.clone(), unpublished], 2).routes;
        let Some(route) = &first[0] else { panic!("a has a table") };
        assert_eq!(first[1], None, "nothing published for b yet");
        let read: TierRoute = serde_json::from_slice(&route.json).unwrap();
        assert_eq!(read, TierRoute { host: Some("a.test".into()), path_prefix: None, table: RouteTable::clone(&t1) });

        // Another state of the workload, the same table: the same bytes, not serialized again.
        let again = tier_workload("a", "host = \"a.test\"", Some(t1.clone()));
        let second = tier.served_routes(data.path(), &[again], 1).routes;
        assert!(Arc::ptr_eq(&second[0].as_ref().unwrap().json, &route.json));

        // A new table (even an equal one: a new event) or another spec: serialized again.
        let republished = tier_workload("a", "host = \"a.test\"", Some(table("a", 1)));
        let third = tier.served_routes(data.path(), &[republished], 1).routes;
        assert!(!Arc::ptr_eq(&third[0].as_ref().unwrap().json, &route.json));
        let t2 = table("a", 2);
        let moved = tier_workload("a", "host = \"a2.test\"", Some(t2.clone()));
        let fourth = tier.served_routes(data.path(), &[moved], 1).routes;
        let read: TierRoute = serde_json::from_slice(&fourth[0].as_ref().unwrap().json).unwrap();
        assert_eq!(read.host.as_deref(), Some("a2.test"));
        assert_ne!(fourth[0].as_ref().unwrap().digest, route.digest);
    }

    #[test]
    fn a_route_changed_after_a_cursor_has_a_higher_revision_and_an_equal_one_keeps_its_own() {
        let tier = Tier::default();
        let data = tempfile::tempdir().unwrap();
        let a = tier_workload("a", "host = \"a.test\"", Some(table("a", 1)));
        let b = tier_workload("b", "host = \"b.test\"", Some(table("b", 1)));
        let first = tier.served_routes(data.path(), &[a.clone(), b.clone()], 2);
        let since = tier.revision_of(&first.cursor).expect("this process's cursor");
        let revision = |set: &ServedRoutes, i: usize| set.routes[i].as_ref().unwrap().revision;
        assert!(revision(&first, 0) <= since && revision(&first, 1) <= since);

        // b published again with the same content (a new event): the same bytes, the same
        // revision. a with another generation: a revision after the cursor.
        let b_again = tier_workload("b", "host = \"b.test\"", Some(table("b", 1)));
        let a_next = tier_workload("a", "host = \"a.test\"", Some(table("a", 2)));
        let second = tier.served_routes(data.path(), &[a_next, b_again], 2);
        assert!(revision(&second, 0) > since, "a changed");
        assert_eq!(revision(&second, 1), revision(&first, 1), "b did not");
        assert!(tier.revision_of(&second.cursor).unwrap() >= revision(&second, 0));

        // Another process's cursor, or none of ours: no revision (the whole set is sent).
        assert_eq!(Tier::default().revision_of(&first.cursor), None);
        assert_eq!(tier.revision_of("garbage"), None);
        assert_eq!(tier.revision_of(&format!("{}.x", first.cursor.split_once('.').unwrap().0)), None);
    }

    #[test]
    fn the_routes_of_deleted_workloads_are_forgotten() {
        let tier = Tier::default();
        let data = tempfile::tempdir().unwrap();
        let many: Vec<_> = (0..100).map(|i| tier_workload(&format!("w{i}"), "", Some(table("w", 1)))).collect();
        tier.served_routes(data.path(), &many, many.len());
        assert_eq!(tier.served.lock().unwrap().routes.len(), 100);
        // Only one left in the tier: the others' routes go once they are many more than it.
        tier.served_routes(data.path(), &many[..1], 1);
        assert!(tier.served.lock().unwrap().routes.len() <= 1);
    }

    /// A tier whose server started long enough ago for every router to have reported.
    fn settled() -> Tier {
        let tier = Tier::default();
        let mut reports = tier.reports.lock().unwrap();
        reports.started = Instant::now().checked_sub(FIRST_REPORTS);
        drop(reports);
        tier
    }

    #[tokio::test]
    async fn reports_of_several_routers_are_summed_and_a_restart_never_lowers_the_sum() {
        let tier = settled();
        let at = TierEndpoint { workload: "w".into(), table: None };
        assert!(tier.stats(&at).await.is_err(), "nothing reported yet");
        tier.report("edge-a", "w", snap("a1", 10));
        tier.report("edge-b", "w", snap("b1", 5));
        let first = tier.stats(&at).await.unwrap();
        assert_eq!(first.versions["v1"].requests, 15);
        // edge-a restarts: its old counters stay, the new ones add to them. The set of
        // instances is another one, so the analysis window starts over, as it does when a
        // workload's own router restarts.
        tier.report("edge-a", "w", snap("a2", 1));
        let second = tier.stats(&at).await.unwrap();
        assert_eq!(second.versions["v1"].requests, 16);
        assert_ne!(first.instance_id, second.instance_id);
        assert_eq!(tier.routers("w").len(), 3);
        assert!(tier.routers("other").is_empty());
        // More reports from the same routers: the same instance id, the sum grows.
        assert!(tier.report("edge-b", "w", snap("b1", 9)), "a request counted is news");
        let third = tier.stats(&at).await.unwrap();
        assert_eq!((third.versions["v1"].requests, &third.instance_id), (20, &second.instance_id));
    }

    #[test]
    fn a_router_not_heard_from_since_this_server_started_is_asked_for_all() {
        let tier = Tier::default();
        assert!(!tier.heard_before("r1"), "the first report of r1");
        assert!(tier.heard_before("r1"));
        assert!(!tier.heard_before("r2"), "another router");
        // A restarted server has heard from nobody.
        assert!(!Tier::default().heard_before("r1"));
    }

    #[tokio::test]
    async fn a_restarted_server_hearing_from_the_same_routers_goes_on_with_the_same_counters() {
        let before = settled();
        let at = TierEndpoint { workload: "w".into(), table: None };
        before.report("edge-a", "w", snap("a1", 10));
        before.report("edge-b", "w", snap("b1", 5));
        let id = before.stats(&at).await.unwrap().instance_id;

        // The new server withholds the counters until every router has had time to report:
        // read after edge-a's report alone, they would go under another id.
        let after = Tier::default();
        // However long the state's rebuild takes, the wait counts from when the API answers.
        assert_eq!(after.first_reports_left(), Some(FIRST_REPORTS), "no router can have reported yet");
        after.listening();
        after.report("edge-a", "w", snap("a1", 12));
        let early = after.stats(&at).await.unwrap_err().to_string();
        assert!(early.contains("reporting for the first time"), "{early}");
        assert!(after.first_reports_left().is_some_and(|left| left <= FIRST_REPORTS), "the controller waits for them");
        after.report("edge-b", "w", snap("b1", 6));
        after.reports.lock().unwrap().started = Instant::now().checked_sub(FIRST_REPORTS);
        assert_eq!(after.first_reports_left(), None);
        let resumed = after.stats(&at).await.unwrap();
        assert_eq!((resumed.instance_id, resumed.versions["v1"].requests), (id, 18));

        // A router gone with the restart: its counters are gone from the sum, so the id changes.
        let without_b = settled();
        without_b.report("edge-a", "w", snap("a1", 12));
        assert_ne!(without_b.stats(&at).await.unwrap().instance_id, before.stats(&at).await.unwrap().instance_id);
    }

    #[test]
    fn only_a_report_that_says_something_new_wakes_the_workload() {
        let tier = settled();
        assert!(tier.report("edge-a", "w", snap("a1", 10)), "a router heard from for the first time");
        let later = StatsSnapshot { uptime_ms: 5_000, ..snap("a1", 10) };
        assert!(!tier.report("edge-a", "w", later), "the same counters, a second later");
        assert!(tier.report("edge-a", "w", snap("a1", 11)), "a request counted");
        let other_table = StatsSnapshot { generation: 3, ..snap("a1", 11) };
        assert!(tier.report("edge-a", "w", other_table), "another table served");
        assert!(tier.report("edge-b", "w", snap("b1", 11)), "another router");
        assert!(tier.report("edge-a", "w", snap("a2", 0)), "edge-a restarted");
    }
}
