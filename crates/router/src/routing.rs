//! A validated table compiled for the hot path: header values, counters and breakers resolved
//! once per table instead of once per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use hyper::header::{HeaderName, HeaderValue};

use crate::breaker::{Breaker, Permit};
use crate::stats::{BreakerState, Latency, NO_VERSION, Series, Stats, UpstreamStats};
use crate::table::{BreakerConfig, RouteTable, group_index_for_bucket};

#[derive(Debug)]
pub(crate) struct Routing {
    pub(crate) table: RouteTable,
    pub(crate) sticky_header: HeaderName,
    pub(crate) groups: Vec<GroupRt>,
    /// SHA-256 digests of the OFREP tokens; empty when OFREP is open.
    pub(crate) flag_tokens: Vec<[u8; 32]>,
    /// The table routes some requests by more than their bucket (a segment, a pin header).
    pub(crate) by_request: bool,
    /// The group that gets copies of requests (shadow traffic), if any.
    pub(crate) shadow: Option<usize>,
    /// Where requests that found no upstream are counted (version "none").
    pub(crate) none: (Arc<Series>, Arc<Latency>),
}

#[derive(Debug)]
pub(crate) struct GroupRt {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) name_header: HeaderValue,
    pub(crate) version_header: HeaderValue,
    weight_bp: u32,
    upstreams: Vec<Arc<Upstream>>,
    next: AtomicUsize,
    pub(crate) series: Arc<Series>,
    pub(crate) latency: Arc<Latency>,
    /// Compiled once per table; evaluated per OFREP request without locks.
    pub(crate) flags: Option<Arc<ringfence_flags::FlagSet>>,
    /// A drill's fault on this group's requests.
    pub(crate) fault: Option<ringfence_traffic::table::GroupFault>,
}

/// One replica. Shared between consecutive tables so its breaker survives a table swap.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    breaker: Mutex<Breaker>,
}

impl Upstream {
    fn new(addr: SocketAddr) -> Upstream {
        Upstream { addr, breaker: Mutex::new(Breaker::default()) }
    }

    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        // The breaker has no invariant a panic elsewhere could break; keep serving.
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request admitted by one replica's breaker. Dropping it without `finish` (the client went
/// away) releases a half-open probe slot instead of wedging the breaker.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) upstream: Arc<Upstream>,
    permit: Permit,
    finished: bool,
}

/// How an attempt on one replica ended, for its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The replica answered with a status below 500.
    Served,
    /// A 5xx, a timeout, or the connection died before the answer.
    Failed,
    /// The replica could not be connected to: ejected at once.
    Unreachable,
}

impl Attempt {
    pub(crate) fn finish(mut self, outcome: Outcome, now: Instant, config: &BreakerConfig) {
        self.finished = true;
        let mut breaker = self.upstream.breaker();
        let before = breaker.state_at(now);
        match outcome {
            Outcome::Served => breaker.record(self.permit, true, now, config),
            Outcome::Failed => breaker.record(self.permit, false, now, config),
            Outcome::Unreachable => breaker.eject(self.permit, now, config),
        }
        let after = breaker.state_at(now);
        let trips = breaker.trips();
        drop(breaker);
        if before != after {
            let upstream = self.upstream.addr;
            match after {
                BreakerState::Open => {
                    tracing::warn!(%upstream, trips, ?before, "circuit breaker opened")
                }
                _ => tracing::info!(%upstream, ?before, ?after, "circuit breaker state changed"),
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.upstream.breaker().abandon(self.permit);
        }
    }
}

impl Routing {
    /// Compiles a table that already passed `RouteTable::validate`. Replicas also present in
    /// `previous` for the same version keep their breaker. Breakers are per version and
    /// replica: when two releases run on the same processes (a flag-only rollout), failures
    /// of the new release's users must not shut the stable release's users out.
    pub(crate) fn build(table: RouteTable, previous: Option<&Routing>, stats: &Stats) -> anyhow::Result<Routing> {
        let mut known: HashMap<(String, SocketAddr), Arc<Upstream>> = previous
            .into_iter()
            .flat_map(|p| p.groups.iter())
            .flat_map(|g| g.upstreams.iter().map(move |u| ((g.version.clone(), u.addr), u.clone())))
            .collect();
        let sticky_header = HeaderName::from_bytes(table.sticky_header.as_bytes())?;
        let mut groups = Vec::with_capacity(table.groups.len());
        for g in &table.groups {
            let upstreams = g
                .upstreams
                .iter()
                .map(|&addr| {
                    known.entry((g.version.clone(), addr)).or_insert_with(|| Arc::new(Upstream::new(addr))).clone()
                })
                .collect();
            groups.push(GroupRt {
                fault: g.fault.filter(|f| f.error_bp > 0 || f.delay_ms > 0),
                name: g.name.clone(),
                version: g.version.clone(),
                name_header: HeaderValue::from_str(&g.name)?,
                version_header: HeaderValue::from_str(&g.version)?,
                weight_bp: g.weight_bp,
                upstreams,
                next: AtomicUsize::new(0),
                series: stats.series(&g.version, &g.name),
                latency: stats.latency(&g.version),
                flags: match &g.flags {
                    Some(doc) => Some(Arc::new(
                        ringfence_flags::FlagSet::parse(&doc.to_string())
                            .map_err(|e| anyhow::anyhow!("group {}: invalid flags: {:?}", g.name, e.first()))?,
                    )),
                    None => None,
                },
            });
        }
        let mut flag_tokens = Vec::with_capacity(table.flag_tokens.len());
        for t in &table.flag_tokens {
            let mut d = [0u8; 32];
            hex::decode_to_slice(t, &mut d)?;
            flag_tokens.push(d);
        }
        let by_request = table.routes_by_request();
        let shadow = table.groups.iter().position(|g| g.shadow_bp > 0 && !g.upstreams.is_empty());
        let none = (stats.series(NO_VERSION, NO_VERSION), stats.latency(NO_VERSION));
        Ok(Routing { table, sticky_header, groups, flag_tokens, by_request, shadow, none })
    }

    pub(crate) fn group_index(&self, bucket: u32) -> Option<usize> {
        group_index_for_bucket(self.groups.iter().map(|g| g.weight_bp), bucket)
    }

    /// An admitted replica of the preferred group, else of the next group in list order
    /// (wrapping) that has one.
    pub(crate) fn pick(&self, preferred: usize, now: Instant) -> Option<(usize, Attempt)> {
        let n = self.groups.len();
        (0..n).map(|k| (preferred + k) % n).find_map(|i| Some((i, self.groups[i].admit(now)?)))
    }

    pub(crate) fn upstream_stats(&self, now: Instant) -> Vec<UpstreamStats> {
        let mut out = Vec::new();
        for g in &self.groups {
            for u in &g.upstreams {
                let breaker = u.breaker();
                out.push(UpstreamStats {
                    addr: u.addr,
                    group: g.name.clone(),
                    version: g.version.clone(),
                    state: breaker.state_at(now),
                    trips: breaker.trips(),
                    consecutive_failures: breaker.consecutive_failures(),
                });
            }
        }
        out
    }
}

impl GroupRt {
    /// How many replicas the group has, healthy or not.
    pub(crate) fn replicas(&self) -> usize {
        self.upstreams.len()
    }

    /// The next replica in turn, breakers aside: a copy of a request is nobody's answer, so
    /// its failures must not shut users out of a replica (they count in the statistics).
    pub(crate) fn next_upstream(&self) -> Option<Arc<Upstream>> {
        let n = self.upstreams.len();
        (n > 0).then(|| self.upstreams[self.next.fetch_add(1, Relaxed) % n].clone())
    }

    /// Round-robin over the replicas, skipping those whose breaker refuses.
    fn admit(&self, now: Instant) -> Option<Attempt> {
        self.admit_except(now, None)
    }

    /// Another replica of this group (so of the same version) for a second try, never
    /// `failed`: a retry must not cross versions, or the analysis would count one version's
    /// failure as the other's success.
    pub(crate) fn admit_other(&self, now: Instant, failed: SocketAddr) -> Option<Attempt> {
        self.admit_except(now, Some(failed))
    }

    fn admit_except(&self, now: Instant, except: Option<SocketAddr>) -> Option<Attempt> {
        let n = self.upstreams.len();
        if n == 0 {
            return None;
        }
        // A second try does not take a turn, so first tries stay evenly spread.
        let start = if except.is_some() { self.next.load(Relaxed) } else { self.next.fetch_add(1, Relaxed) };
        (0..n).find_map(|k| {
            let upstream = &self.upstreams[(start + k) % n];
            if Some(upstream.addr) == except {
                return None;
            }
            let permit = upstream.breaker().admit(now)?;
            Some(Attempt { upstream: upstream.clone(), permit, finished: false })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Group;

    fn table(groups: &[(&str, u32, &[u16])]) -> RouteTable {
        RouteTable {
            generation: 1,
            workload: "w".into(),
            sticky_header: "x-user-id".into(),
            sticky_cookie: "rf_user".into(),
            groups: groups
                .iter()
                .map(|&(name, weight_bp, ports)| Group {
                    name: name.into(),
                    version: format!("{name}-v"),
                    weight_bp,
                    upstreams: ports.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p))).collect(),
                    flags: None,
                    segment: None,
                    shadow_bp: 0,
                    fault: None,
                })
                .collect(),
            breaker: BreakerConfig { consecutive_failures: 1, ..BreakerConfig::default() },
            flag_tokens: vec![],
            pin_header: None,
            max_request_body: crate::table::DEFAULT_MAX_REQUEST_BODY,
        }
    }

    fn trip(r: &Routing, group: usize, now: Instant) {
        let (_, attempt) = r.pick(group, now).unwrap();
        attempt.finish(Outcome::Failed, now, &r.table.breaker);
    }

    #[test]
    fn round_robin_skips_open_replicas_and_falls_back_in_list_order() {
        let stats = Stats::default();
        let r =
            Routing::build(table(&[("a", 5_000, &[1, 2]), ("b", 0, &[3]), ("c", 5_000, &[4])]), None, &stats).unwrap();
        let now = Instant::now();
        let ports: Vec<u16> = (0..4).map(|_| r.pick(0, now).unwrap().1.upstream.addr.port()).collect();
        assert_eq!(ports, [1, 2, 1, 2]);

        trip(&r, 0, now); // port 1 (round robin is at 4: even -> port 1)
        let ports: Vec<u16> = (0..3).map(|_| r.pick(0, now).unwrap().1.upstream.addr.port()).collect();
        assert_eq!(ports, [2, 2, 2]);
        trip(&r, 0, now); // port 2
        // Group a is out: fall back to the next group in list order, even with weight 0.
        let (group, attempt) = r.pick(0, now).unwrap();
        assert_eq!((group, attempt.upstream.addr.port()), (1, 3));
        drop(attempt);
        trip(&r, 1, now);
        // Only c is left, whichever group is preferred.
        assert_eq!(r.pick(0, now).unwrap().0, 2);
        assert_eq!(r.pick(2, now).unwrap().0, 2);
        trip(&r, 2, now);
        assert!(r.pick(0, now).is_none());
        assert!(r.pick(2, now).is_none());
    }

    #[test]
    fn a_second_try_stays_in_the_group_and_skips_the_failed_replica() {
        let stats = Stats::default();
        let now = Instant::now();
        let r = Routing::build(table(&[("a", 5_000, &[1, 2]), ("b", 5_000, &[3])]), None, &stats).unwrap();
        let failed = SocketAddr::from(([127, 0, 0, 1], 1));
        for _ in 0..4 {
            assert_eq!(r.groups[0].admit_other(now, failed).unwrap().upstream.addr.port(), 2);
        }
        // Group b's only replica failed: no other replica of its version, so no second try.
        assert!(r.groups[1].admit_other(now, SocketAddr::from(([127, 0, 0, 1], 3))).is_none());
        // An unreachable replica is out after one attempt.
        let (_, attempt) = r.pick(0, now).unwrap();
        let port = attempt.upstream.addr.port();
        attempt.finish(Outcome::Unreachable, now, &r.table.breaker);
        for _ in 0..4 {
            assert_ne!(r.pick(0, now).unwrap().1.upstream.addr.port(), port);
        }
    }

    #[test]
    fn two_releases_on_the_same_replica_have_their_own_breakers() {
        // A flag-only rollout: canary and stable users are served by the same process.
        let stats = Stats::default();
        let now = Instant::now();
        let r = Routing::build(table(&[("canary", 5_000, &[1]), ("stable", 5_000, &[1])]), None, &stats).unwrap();
        trip(&r, 0, now);
        let up = r.upstream_stats(now);
        assert_eq!(up.iter().filter(|u| u.state == BreakerState::Open).count(), 1, "{up:?}");
        assert_eq!(r.pick(1, now).unwrap().0, 1, "stable users are still served");
    }

    #[test]
    fn breakers_survive_a_table_swap() {
        let stats = Stats::default();
        let now = Instant::now();
        let old = Routing::build(table(&[("a", 10_000, &[1, 2])]), None, &stats).unwrap();
        trip(&old, 0, now); // port 1
        let new = Routing::build(table(&[("a", 5_000, &[1]), ("b", 5_000, &[5])]), Some(&old), &stats).unwrap();
        let up = new.upstream_stats(now);
        assert_eq!(up[0].addr.port(), 1);
        assert_eq!((up[0].state, up[0].trips), (BreakerState::Open, 1));
        assert_eq!(up[1].state, BreakerState::Closed);
        assert_eq!(new.pick(0, now).unwrap().0, 1, "a's only replica is still open");
    }
}
