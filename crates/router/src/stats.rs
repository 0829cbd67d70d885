//! Per-version statistics: lock-free counters on the hot path, plain snapshots for readers.
//!
//! The controller's health analysis reads `StatsSnapshot`s and diffs consecutive ones with
//! `VersionStats::delta`, so everything here is cumulative since the router started and the
//! `instance_id` changes on restart. A version off the table is reported for
//! [`RETIRED_KEPT`] more, then forgotten: a router serving release after release would
//! otherwise carry (and send, every second) the counters of every version it ever served.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ringfence_traffic::grid::lower_bound_us;

use serde::{Deserialize, Serialize};

/// What the admin API returns at `GET /v1/stats`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    /// Random per process start: a change means the counters were reset.
    pub instance_id: String,
    /// Generation of the table being served, 0 when none is loaded.
    pub generation: u64,
    pub uptime_ms: u64,
    pub versions: BTreeMap<String, VersionStats>,
    pub upstreams: Vec<UpstreamStats>,
}

/// Cumulative counters of one version (all groups serving it together).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct VersionStats {
    pub requests: u64,
    /// 5xx responses plus transport errors (connect error, timeout, no upstream).
    pub errors: u64,
    pub latency_sum_us: u64,
    /// `(upper bound in µs, count)` of the non-empty buckets, ascending. The last possible
    /// bound is `u64::MAX` (above 60 s).
    pub latency_buckets: Vec<(u64, u64)>,
    /// Distinct users (sticky keys) sent to the version since the router started (or since
    /// the version came back after it was forgotten, off the table for [`RETIRED_KEPT`]): a
    /// HyperLogLog estimate, within about 5%. Distinct counts do not subtract: `delta` keeps
    /// the later one.
    #[serde(default)]
    pub users: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UpstreamStats {
    pub addr: SocketAddr,
    pub group: String,
    pub version: String,
    pub state: BreakerState,
    pub trips: u64,
    pub consecutive_failures: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Version (and group) under which requests that found no upstream are counted.
pub const NO_VERSION: &str = "none";

/// Fine bucket bounds in µs: the grid shared with the analysis (`ringfence_traffic::grid`).
pub(crate) use ringfence_traffic::grid::LATENCY_BOUNDS_US as FINE_BOUNDS_US;

/// The conventional Prometheus bucket set (seconds), with a finer low end for a loopback proxy.
pub(crate) const COARSE_BOUNDS_S: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl StatsSnapshot {
    /// The same counters, breakers and table: the same evidence, however long the router has
    /// run (only `uptime_ms` may differ).
    pub fn same_counters(&self, other: &StatsSnapshot) -> bool {
        self.instance_id == other.instance_id
            && self.generation == other.generation
            && self.versions == other.versions
            && self.upstreams == other.upstreams
    }

    /// Several routers' counters for one workload as one, under `instance_id`: per version,
    /// requests, errors, latency sums and buckets add up; distinct users add up too, so a user
    /// who reached the workload through two routers counts twice (an upper bound). The
    /// generation is the lowest served (every router serves at least that table); the
    /// upstreams are each router's view of its breakers.
    pub fn merge<'a>(instance_id: String, parts: impl IntoIterator<Item = &'a StatsSnapshot>) -> StatsSnapshot {
        let mut out = StatsSnapshot {
            instance_id,
            generation: u64::MAX,
            uptime_ms: 0,
            versions: BTreeMap::new(),
            upstreams: Vec::new(),
        };
        for part in parts {
            out.generation = out.generation.min(part.generation);
            out.uptime_ms = out.uptime_ms.max(part.uptime_ms);
            out.upstreams.extend(part.upstreams.iter().cloned());
            for (version, v) in &part.versions {
                let m = out.versions.entry(version.clone()).or_default();
                m.requests += v.requests;
                m.errors += v.errors;
                m.latency_sum_us += v.latency_sum_us;
                m.users += v.users;
                let mut buckets: BTreeMap<u64, u64> = m.latency_buckets.iter().copied().collect();
                for &(upper, n) in &v.latency_buckets {
                    *buckets.entry(upper).or_default() += n;
                }
                m.latency_buckets = buckets.into_iter().collect();
            }
        }
        if out.generation == u64::MAX {
            out.generation = 0;
        }
        out
    }
}

impl VersionStats {
    /// Estimated latency quantile in µs, interpolating linearly inside the bucket.
    /// `None` without observations or for `q` outside `0.0..=1.0`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) {
            return None;
        }
        let total: u64 = self.latency_buckets.iter().map(|&(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).max(1.0);
        let mut seen = 0u64;
        for &(upper, count) in &self.latency_buckets {
            if count == 0 {
                continue;
            }
            if (seen + count) as f64 >= rank {
                let lower = lower_bound_us(upper);
                if upper == u64::MAX {
                    // Nothing to interpolate towards: report the overflow bucket's floor.
                    return Some(lower as f64);
                }
                let within = (rank - seen as f64) / count as f64;
                return Some(lower as f64 + (upper - lower) as f64 * within);
            }
            seen += count;
        }
        // Only reachable through float rounding on the last bucket.
        self.latency_buckets.last().map(|&(upper, _)| upper as f64)
    }

    /// What happened between `earlier` and `self`. Saturating, so a snapshot from before a
    /// restart yields zeros rather than garbage; callers detect restarts by `instance_id`.
    pub fn delta(&self, earlier: &VersionStats) -> VersionStats {
        let mut buckets = Vec::with_capacity(self.latency_buckets.len());
        let mut old = earlier.latency_buckets.iter().peekable();
        for &(upper, count) in &self.latency_buckets {
            while old.next_if(|&&(u, _)| u < upper).is_some() {}
            let before = old.next_if(|&&(u, _)| u == upper).map_or(0, |&(_, n)| n);
            let n = count.saturating_sub(before);
            if n > 0 {
                buckets.push((upper, n));
            }
        }
        VersionStats {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency_sum_us: self.latency_sum_us.saturating_sub(earlier.latency_sum_us),
            latency_buckets: buckets,
            users: self.users,
        }
    }
}

/// Requests and errors of one (version, group) pair.
#[derive(Debug, Default)]
pub(crate) struct Series {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Requests sent a second time, to another replica of the group, after the first gave no
    /// answer. Each still counts once in `requests`, with the second try's outcome.
    pub(crate) retries: AtomicU64,
}

/// One series' counters, as read by the metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeriesCounts {
    pub(crate) version: String,
    pub(crate) group: String,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) retries: u64,
}

/// Latency of one version, in both the fine (JSON) and coarse (Prometheus) bucket sets, and
/// the distinct users it served.
#[derive(Debug)]
pub(crate) struct Latency {
    fine: Box<[AtomicU64]>,
    coarse: Box<[AtomicU64]>,
    sum_us: AtomicU64,
    users: Users,
}

impl Default for Latency {
    fn default() -> Self {
        let zeros = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        Latency {
            fine: zeros(FINE_BOUNDS_US.len()),
            coarse: zeros(COARSE_BOUNDS_S.len() + 1),
            sum_us: AtomicU64::new(0),
            users: Users::default(),
        }
    }
}

/// A HyperLogLog of users' sticky keys: 512 one-byte registers updated lock-free (an atomic
/// max per request), a standard error of about 4.6%.
#[derive(Debug)]
pub(crate) struct Users {
    registers: Box<[AtomicU8]>,
}

const USER_BITS: u32 = 9;

impl Default for Users {
    fn default() -> Self {
        Users { registers: (0..1usize << USER_BITS).map(|_| AtomicU8::new(0)).collect() }
    }
}

/// 2^-r exactly, from the exponent's bits (a rank is at most 56): a router of the tier
/// estimates every workload's versions each second, and `powi` was most of that work.
fn inverse_power_of_two(r: u8) -> f64 {
    f64::from_bits((1023 - u64::from(r)) << 52)
}

impl Users {
    /// Counts the user whose key hashes to `hash` (any well-mixed 64-bit hash).
    pub(crate) fn observe(&self, hash: u64) {
        let index = (hash >> (64 - USER_BITS)) as usize;
        let rest = hash << USER_BITS;
        let rank = (rest.leading_zeros() + 1).min(64 - USER_BITS + 1) as u8;
        self.registers[index].fetch_max(rank, Relaxed);
    }

    /// The estimate (Flajolet et al.), with linear counting while registers are still empty.
    pub(crate) fn estimate(&self) -> u64 {
        let m = self.registers.len() as f64;
        let mut sum = 0.0;
        let mut zeros = 0u32;
        for r in self.registers.iter() {
            let r = r.load(Relaxed);
            sum += inverse_power_of_two(r);
            zeros += u32::from(r == 0);
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let e = if raw <= 2.5 * m && zeros > 0 { m * (m / f64::from(zeros)).ln() } else { raw };
        e.round() as u64
    }
}

impl Latency {
    pub(crate) fn observe_user(&self, hash: u64) {
        self.users.observe(hash);
    }

    pub(crate) fn observe_us(&self, us: u64) {
        let fine = FINE_BOUNDS_US.partition_point(|&b| b < us);
        self.fine[fine.min(self.fine.len() - 1)].fetch_add(1, Relaxed);
        let secs = us as f64 / 1e6;
        let coarse = COARSE_BOUNDS_S.partition_point(|&b| b < secs);
        self.coarse[coarse].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub(crate) fn sum_us(&self) -> u64 {
        self.sum_us.load(Relaxed)
    }

    /// Non-empty fine buckets, ascending.
    pub(crate) fn fine_buckets(&self) -> Vec<(u64, u64)> {
        FINE_BOUNDS_US
            .iter()
            .zip(self.fine.iter())
            .map(|(&b, n)| (b, n.load(Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Per-bucket (not cumulative) counts with `f64::MAX` as +Inf, as prometheus-client wants.
    pub(crate) fn coarse_buckets(&self) -> Vec<(f64, u64)> {
        COARSE_BOUNDS_S
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.coarse.iter())
            .map(|(b, n)| (b, n.load(Relaxed)))
            .collect()
    }
}

/// How long a version that left the routing table is still reported: past the server's
/// recording of a mitigated release's aftermath (5 minutes), and far past any read that
/// takes the last counts of a version just taken off.
pub const RETIRED_KEPT: Duration = Duration::from_secs(6 * 60);

/// Registry of the counters of the versions served now and lately. Only touched when a table
/// is installed and when someone reads stats; the hot path holds `Arc`s to its own counters
/// (a request still counting into a forgotten version's counts into nothing).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Keyed by (version, group).
    series: Mutex<BTreeMap<(String, String), Arc<Series>>>,
    latency: Mutex<BTreeMap<String, Arc<Latency>>>,
    /// The versions off the table, since when it was first seen without them.
    retired: Mutex<BTreeMap<String, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stats {
    pub(crate) fn series(&self, version: &str, group: &str) -> Arc<Series> {
        let mut map = lock(&self.series);
        map.entry((version.to_owned(), group.to_owned())).or_default().clone()
    }

    pub(crate) fn latency(&self, version: &str) -> Arc<Latency> {
        let mut map = lock(&self.latency);
        map.entry(version.to_owned()).or_default().clone()
    }

    /// Copies of every series' counters.
    pub(crate) fn all_series(&self) -> Vec<SeriesCounts> {
        let map = lock(&self.series);
        map.iter()
            .map(|((version, group), s)| SeriesCounts {
                version: version.clone(),
                group: group.clone(),
                requests: s.requests.load(Relaxed),
                errors: s.errors.load(Relaxed),
                retries: s.retries.load(Relaxed),
            })
            .collect()
    }

    pub(crate) fn all_latency(&self) -> Vec<(String, Arc<Latency>)> {
        let map = lock(&self.latency);
        map.iter().map(|(k, l)| (k.clone(), l.clone())).collect()
    }

    /// Per-version totals. Versions without any request are left out unless listed in `keep`
    /// (the versions of the current table), so readers see every live version; versions off
    /// the table for [`RETIRED_KEPT`] are forgotten.
    pub(crate) fn versions<'a>(
        &self,
        keep: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> BTreeMap<String, VersionStats> {
        let keep: Vec<&str> = keep.into_iter().collect();
        self.forget_retired(&keep, now);
        let mut out: BTreeMap<String, VersionStats> = BTreeMap::new();
        for c in self.all_series() {
            let v = out.entry(c.version).or_default();
            v.requests += c.requests;
            v.errors += c.errors;
        }
        for (version, latency) in self.all_latency() {
            let v = out.entry(version).or_default();
            v.latency_sum_us = latency.sum_us();
            v.latency_buckets = latency.fine_buckets();
            v.users = latency.users.estimate();
        }
        out.retain(|version, v| v.requests > 0 || keep.contains(&version.as_str()));
        out
    }

    /// Marks the versions not in `live` as retired (from `now`, unless they were already) and
    /// drops the counters of those retired for [`RETIRED_KEPT`]. A version back in the table
    /// before that keeps counting where it was; the no-upstream series is never retired.
    fn forget_retired(&self, live: &[&str], now: Instant) {
        let mut retired = lock(&self.retired);
        retired.retain(|version, _| !live.contains(&version.as_str()));
        // A tier router runs this for every workload every second: nothing is copied unless a
        // version has just left the table.
        let mut retire = |version: &String| {
            if version != NO_VERSION && !live.contains(&version.as_str()) && !retired.contains_key(version) {
                retired.insert(version.clone(), now);
            }
        };
        lock(&self.latency).keys().for_each(&mut retire);
        lock(&self.series).keys().for_each(|(version, _)| retire(version));
        let gone: Vec<String> = retired
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= RETIRED_KEPT)
            .map(|(version, _)| version.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for version in &gone {
            retired.remove(version);
        }
        lock(&self.latency).retain(|version, _| !gone.contains(version));
        lock(&self.series).retain(|(version, _), _| !gone.contains(version));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_power_of_two_from_the_exponent_bits_is_exact_for_every_rank() {
        for r in 0..=(64 - USER_BITS + 1) as u8 {
            assert_eq!(inverse_power_of_two(r), 2f64.powi(-i32::from(r)), "rank {r}");
        }
    }

    #[test]
    fn merged_counters_add_up_per_version_and_bucket() {
        let v = |requests, errors, buckets: &[(u64, u64)]| VersionStats {
            requests,
            errors,
            latency_sum_us: requests * 10,
            latency_buckets: buckets.to_vec(),
            users: requests / 2,
        };
        let a = StatsSnapshot {
            instance_id: "a".into(),
            generation: 4,
            uptime_ms: 10,
            versions: [("v1".to_string(), v(10, 1, &[(100, 4), (121, 6)]))].into(),
            upstreams: vec![],
        };
        let b = StatsSnapshot {
            instance_id: "b".into(),
            generation: 3,
            uptime_ms: 20,
            versions: [("v1".to_string(), v(6, 0, &[(110, 1), (121, 5)])), ("v2".to_string(), v(2, 2, &[(100, 2)]))]
                .into(),
            upstreams: vec![],
        };
        let m = StatsSnapshot::merge("tier".into(), [&a, &b]);
        assert_eq!((m.instance_id.as_str(), m.generation, m.uptime_ms), ("tier", 3, 20));
        let v1 = &m.versions["v1"];
        assert_eq!((v1.requests, v1.errors, v1.latency_sum_us, v1.users), (16, 1, 160, 8));
        assert_eq!(v1.latency_buckets, vec![(100, 4), (110, 1), (121, 11)]);
        assert_eq!(m.versions["v2"].requests, 2);
        assert_eq!(StatsSnapshot::merge("x".into(), []).generation, 0);
    }

    #[test]
    fn fine_bounds_are_log_spaced_from_100us_to_60s() {
        let b = &*FINE_BOUNDS_US;
        assert_eq!(b[0], 100);
        assert_eq!(*b.last().unwrap(), u64::MAX);
        let finite = &b[..b.len() - 1];
        assert!(*finite.last().unwrap() >= 60_000_000);
        assert!(finite[finite.len() - 2] < 60_000_000);
        assert!((130..=150).contains(&b.len()), "{} buckets", b.len());
        for w in finite.windows(2) {
            let ratio = w[1] as f64 / w[0] as f64;
            assert!(w[1] > w[0] && (1.05..1.15).contains(&ratio), "{w:?}");
        }
    }

    #[test]
    fn observe_lands_in_the_right_bucket() {
        let l = Latency::default();
        for us in [0, 100, 101, 1_000, 1_000, 59_000_000, 70_000_000, u64::MAX / 4] {
            l.observe_us(us);
        }
        let buckets = l.fine_buckets();
        assert_eq!(buckets[0], (100, 2), "0 and 100 are both <= 100");
        assert_eq!(buckets[1], (110, 1));
        let (ub, n) = buckets.iter().copied().find(|&(ub, _)| ub >= 1_000).unwrap();
        assert_eq!(n, 2);
        assert!(lower_bound_us(ub) < 1_000);
        assert_eq!(*buckets.last().unwrap(), (u64::MAX, 2));
        let coarse = l.coarse_buckets();
        assert_eq!(coarse.len(), COARSE_BOUNDS_S.len() + 1);
        assert_eq!(coarse.iter().map(|&(_, n)| n).sum::<u64>(), 8);
        assert_eq!(coarse[0], (0.0005, 3));
        assert_eq!(coarse.last().unwrap().1, 3, "59 s, 70 s and huge are above 10 s");
    }

    fn stats_of(latencies_us: &[u64]) -> VersionStats {
        let l = Latency::default();
        for &us in latencies_us {
            l.observe_us(us);
        }
        VersionStats {
            requests: latencies_us.len() as u64,
            errors: 0,
            latency_sum_us: l.sum_us(),
            latency_buckets: l.fine_buckets(),
            users: 0,
        }
    }

    #[test]
    fn quantiles_are_within_one_bucket() {
        // 1..=10_000 ms in 1 ms steps: the true p50 is 5 s, p99 is 9.9 s.
        let values: Vec<u64> = (1..=10_000).map(|ms| ms * 1_000).collect();
        let s = stats_of(&values);
        for (q, truth) in [(0.5, 5_000_000.0), (0.9, 9_000_000.0), (0.99, 9_900_000.0)] {
            let got = s.quantile(q).unwrap();
            assert!((got / truth - 1.0).abs() < 0.1, "q{q}: {got} vs {truth}");
        }
        let min = s.quantile(0.0).unwrap();
        assert!((900.0..1_100.0).contains(&min), "{min}");
        let max = s.quantile(1.0).unwrap();
        assert!((10_000_000.0..11_000_000.0).contains(&max), "{max}");

        assert_eq!(VersionStats::default().quantile(0.5), None);
        assert_eq!(s.quantile(1.5), None);
        assert_eq!(s.quantile(f64::NAN), None);
        // Everything in the overflow bucket reads as its floor, not as infinity.
        let overflow = stats_of(&[100_000_000]);
        assert!(overflow.quantile(0.99).unwrap() >= 60_000_000.0);
        assert!(overflow.quantile(0.99).unwrap() < 70_000_000.0);
    }

    #[test]
    fn delta_subtracts_bucket_by_bucket() {
        let earlier = stats_of(&[200, 5_000]);
        let mut later = stats_of(&[200, 5_000, 200, 200, 70_000]);
        later.errors = 2;
        let d = later.delta(&earlier);
        assert_eq!(d.requests, 3);
        assert_eq!(d.errors, 2);
        assert_eq!(d.latency_sum_us, 70_400);
        assert_eq!(d, stats_of(&[200, 200, 70_000]).with_errors(2));
        // The window between two snapshots has its own quantiles.
        assert!(d.quantile(0.5).unwrap() < 250.0);

        // Saturating: a counter reset (restart) never underflows.
        let reset = earlier.delta(&later);
        assert_eq!(reset, VersionStats::default());
        assert_eq!(later.delta(&VersionStats::default()), later);
    }

    impl VersionStats {
        fn with_errors(mut self, errors: u64) -> Self {
            self.errors = errors;
            self
        }
    }

    #[test]
    fn distinct_users_are_counted_within_a_few_percent_and_repeats_count_once() {
        use std::hash::BuildHasher;
        let h = |i: u64| std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(i);
        for n in [10u64, 100, 1_000, 20_000] {
            let users = Users::default();
            // Each user three times: counted once.
            for _ in 0..3 {
                for i in 0..n {
                    users.observe(h(i));
                }
            }
            let e = users.estimate() as f64;
            let error = (e - n as f64).abs() / n as f64;
            assert!(error < 0.15, "{n} users estimated {e}");
        }
        assert_eq!(Users::default().estimate(), 0);
    }

    #[test]
    fn snapshot_shape() {
        let s = StatsSnapshot {
            instance_id: "abc".into(),
            generation: 3,
            uptime_ms: 10,
            versions: BTreeMap::from([("v1".to_owned(), stats_of(&[150]))]),
            upstreams: vec![UpstreamStats {
                addr: "127.0.0.1:80".parse().unwrap(),
                group: "stable".into(),
                version: "v1".into(),
                state: BreakerState::HalfOpen,
                trips: 1,
                consecutive_failures: 0,
            }],
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["versions"]["v1"]["latency_buckets"], serde_json::json!([[161, 1]]));
        assert_eq!(json["upstreams"][0]["state"], "half_open");
        assert_eq!(json["upstreams"][0]["addr"], "127.0.0.1:80");
        let back: StatsSnapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    /// Counts one request of `version` (in group `group`), as the data plane does.
    fn serve(stats: &Stats, version: &str, group: &str) {
        stats.series(version, group).requests.fetch_add(1, Relaxed);
        stats.latency(version).observe_us(100);
    }

    #[test]
    fn a_version_off_the_table_is_reported_for_a_while_then_forgotten() {
        let stats = Stats::default();
        let t0 = Instant::now();
        for (version, group) in [("v1", "stable"), ("v2", "canary"), ("v3", "canary"), (NO_VERSION, NO_VERSION)] {
            serve(&stats, version, group);
        }
        let names =
            |live: &[&str], at: Instant| stats.versions(live.iter().copied(), at).into_keys().collect::<Vec<_>>();
        assert_eq!(names(&["v1", "v2", "v3"], t0), ["none", "v1", "v2", "v3"]);

        // v2 and v3 leave the table; v3 comes back before its time is up.
        assert_eq!(names(&["v1"], t0), ["none", "v1", "v2", "v3"], "the last counts of a version just taken off");
        assert_eq!(names(&["v1", "v3"], t0 + RETIRED_KEPT / 2), ["none", "v1", "v2", "v3"]);
        assert_eq!(names(&["v1"], t0 + RETIRED_KEPT * 3 / 4), ["none", "v1", "v2", "v3"]);
        assert_eq!(names(&["v1"], t0 + RETIRED_KEPT), ["none", "v1", "v3"], "v2 is forgotten");
        assert!(stats.all_series().iter().all(|s| s.version != "v2"), "and its counters are gone");
        assert!(stats.all_latency().iter().all(|(v, _)| v != "v2"));
        assert_eq!(stats.versions(["v1"], t0 + RETIRED_KEPT)["v3"].requests, 1, "v3 kept counting where it was");
        assert_eq!(
            names(&["v1"], t0 + RETIRED_KEPT * 7 / 4),
            ["none", "v1"],
            "v3 is forgotten a full period after it left"
        );

        // Served again, a forgotten version counts from nothing; the stable one never left.
        serve(&stats, "v2", "canary");
        let now = stats.versions(["v1", "v2"], t0 + RETIRED_KEPT * 2);
        assert_eq!((now["v2"].requests, now["v1"].requests, now["none"].requests), (1, 1, 1));
    }
}
