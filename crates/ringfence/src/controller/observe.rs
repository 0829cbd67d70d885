//! Observe: everything the core judges a rollout on, gathered from the world in one place:
//! probes of every replica, the router's per-version counters since the bake (or the router's
//! restart) began, crashes and failed starts, breakers, and the signals from the workload's
//! state, Prometheus and usage. The controller then hands the [`Observation`] to the core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringfence_core::event::BakeBaseline;
use ringfence_core::health::{Observation, SignalResult, Traffic, VersionObservation};
use ringfence_core::rollout::{Rollout, Stage};
use ringfence_core::state::WorkloadState;
use ringfence_core::time::Timestamp;
use ringfence_router::{BreakerState, StatsSnapshot};

use super::{Local, ProbeState};
use crate::state::{Shared, now};

/// What the core judges the rollout on, the router's counters to start a bake window from,
/// and the time of the observation.
pub(super) async fn observe(
    shared: &Arc<Shared>,
    local: &mut Local,
    ws: &WorkloadState,
    r: &Rollout,
    stats: Option<&StatsSnapshot>,
) -> (Observation, Option<BakeBaseline>, Timestamp) {
    let name = ws.name.clone();
    // A signal-outage drill: the analysis sees what an unreadable router looks like.
    let outage = ringfence_core::drill::signal_outage(ws, &r.id);
    let stats = if outage { None } else { stats.cloned() };
    let freshness_ms = match &local.stats {
        Some((t, _)) if !outage => t.elapsed().as_millis() as u64,
        _ => u64::MAX,
    };
    let mut versions = vec![ws.runtime_of(&r.release)];
    versions.extend(r.from.as_ref().map(|f| ws.runtime_of(f)));
    probe(shared, local, ws, &versions).await;

    let baseline = r.baseline.as_ref().filter(|b| stats.as_ref().is_some_and(|s| s.instance_id == b.router_instance));
    let traffic_of = |version: &str, base: Option<&Traffic>| -> Option<Traffic> {
        let s = stats.as_ref()?;
        let now = s.versions.get(version).map(to_traffic).unwrap_or_default();
        Some(match base {
            Some(b) => now.since(b),
            None => now,
        })
    };
    let in_window = r.stage == Stage::Baking && baseline.is_some();
    let t = now();
    // Traffic is the release's (the router labels it so); processes are its runtime's.
    let observe = |version: &str, base: Option<&Traffic>| {
        let runtime = ws.runtime_of(version);
        let runtime = runtime.as_str();
        VersionObservation {
            version: version.to_string(),
            traffic: if in_window { traffic_of(version, base) } else { None },
            users: stats.as_ref().and_then(|s| s.versions.get(version)).map(|v| v.users).filter(|&u| u > 0),
            probes_failing: ws
                .replicas
                .values()
                .filter(|rec| rec.version == runtime)
                .filter_map(|rec| {
                    let p = local.probes.get(&rec.instance)?;
                    (p.consecutive_failures >= ws.spec.health.probe.failure_threshold)
                        .then(|| format!("replica {} (at {}): {}", rec.replica, rec.endpoint, p.last_error))
                })
                .collect(),
            probes_answered: ws
                .replicas
                .values()
                .filter(|rec| rec.version == runtime && local.probes.get(&rec.instance).is_some_and(|p| p.answered))
                .count() as u32,
            crashes: ws
                .crashes
                .iter()
                .filter(|c| c.version == runtime && c.at >= r.started_at)
                .map(|c| format!("replica {} (instance {}) exited: {}", c.replica, c.instance, c.status))
                .collect(),
            start_failure: ws.start_failures.get(runtime).cloned(),
            breakers_open: stats
                .as_ref()
                .map(|s| {
                    s.upstreams
                        .iter()
                        .filter(|u| u.version == version && u.state == BreakerState::Open)
                        .map(|u| u.addr.to_string())
                        .collect()
                })
                .unwrap_or_default(),
        }
    };
    let canary = observe(&r.release, baseline.map(|b| &b.canary));
    let stable = r.from.as_deref().map(|f| observe(f, baseline.and_then(|b| b.stable.as_ref())));
    // The analysis window: from the bake's start, or from the router's restart within it.
    let window_ms = r.window_started_at.or(r.bake_started_at).map(|b| t.since(b)).unwrap_or(0);
    // Which signals count for which kind of rollout is the core's policy.
    let analysed = r.is_analysed();
    let mut signals = ringfence_core::signals::for_rollout(ws, r);
    if analysed
        && in_window
        && let Some(u) = ringfence_core::signals::usage(
            window_ms,
            canary.traffic.as_ref(),
            stable.as_ref().and_then(|s| s.traffic.as_ref()),
            baseline.and_then(|b| b.usage_rps_before),
            ws.spec.health.min_usage_ratio,
            &r.release,
        )
    {
        signals.push(u);
    }
    if let Some(prom) = &ws.spec.health.prometheus
        && analysed
        && r.stage == Stage::Baking
    {
        signals.extend(local.prom.signals(&shared.http, prom, &name, &r.release, r.from.as_deref()).await);
    }
    if let (Some(bake), Some(window)) = (r.bake_started_at, r.window_started_at)
        && window > bake
        && in_window
    {
        signals.push(SignalResult::new(
            "window",
            &r.release,
            ringfence_core::health::Health::Healthy,
            "ms",
            "the analysis window restarts when the router restarts (its counters start over)",
            format!(
                "the router restarted {:.1} s into the bake; traffic is judged from then on ({:.1} s so far)",
                window.since(bake) as f64 / 1000.0,
                window_ms as f64 / 1000.0
            ),
        ));
    }
    let observation = Observation { canary, baseline: stable, window_ms, freshness_ms, signals };
    let usage_rps_before = local.usage_before.as_ref().and_then(|(_, rps)| *rps);
    let baseline_now = stats.as_ref().map(|s| BakeBaseline {
        router_instance: s.instance_id.clone(),
        canary: s.versions.get(&r.release).map(to_traffic).unwrap_or_default(),
        stable: r.from.as_ref().map(|f| s.versions.get(f).map(to_traffic).unwrap_or_default()),
        usage_rps_before,
    });
    (observation, baseline_now, t)
}

/// Probes the replicas of `versions` whose probe is due, all at once.
///
/// The tick waits for its probes: that is the loop's backpressure. A tick that went on
/// without them (taking their answers in later) kept every loop judging while a swamped probe
/// target answered ever later: at a restart with 10,000 rollouts, a thousand phases were held
/// on "no probe has answered yet" and the catch-up took 81 s instead of 9.
///
/// A phase cannot pass before a replica of the new version has answered a probe, so a replica
/// that has not answered yet (since it started, or since this server did) is probed again
/// after the probe's timeout (at least a second) rather than a whole interval: a first probe
/// lost in a crowd (a restart of this server with thousands of rollouts) would otherwise hold
/// the phase an interval. Its failures are still counted at most once an interval, so a slow
/// start is not taken for a failing replica any sooner than before.
pub(super) async fn probe(shared: &Arc<Shared>, local: &mut Local, ws: &WorkloadState, versions: &[String]) {
    let spec = &ws.spec.health.probe;
    let interval = spec.interval.std();
    let retry = interval.min(spec.timeout.std().max(Duration::from_secs(1)));
    // Just after this server started, every replica of every rollout is new to it: the
    // replicas of a rollout whose bake is not due within an interval take their first probe
    // at their place in the interval, so the probes the steps falling due need are not lost
    // in a crowd of ones that can wait (a crash is seen without a probe; a hang, within the
    // interval, as it would be anyway).
    let now = Instant::now();
    let can_wait = local.bake_due.is_some_and(|due| due > now + interval);
    let due: Vec<(String, String)> = ws
        .replicas
        .values()
        .filter(|r| versions.contains(&r.version))
        .filter(|r| match local.probes.get(&r.instance) {
            None => !can_wait,
            Some(p) => {
                p.not_before.is_none_or(|t| now >= t)
                    && p.last.is_none_or(|t| t.elapsed() >= if p.answered { interval } else { retry })
            }
        })
        .map(|r| (r.instance.clone(), r.endpoint.clone()))
        .collect();
    if can_wait {
        for r in ws.replicas.values().filter(|r| versions.contains(&r.version)) {
            local.probes.entry(r.instance.clone()).or_insert_with(|| ProbeState {
                not_before: Some(now + spread(&r.instance, interval)),
                ..Default::default()
            });
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for (instance, endpoint) in due {
        let exec = shared.executor.clone();
        let path = spec.path.clone();
        let timeout = spec.timeout.std();
        set.spawn(async move {
            let result = exec.probe(&endpoint, &path, timeout).await;
            (instance, result)
        });
    }
    while let Some(Ok(answer)) = set.join_next().await {
        take_answer(local, answer, interval);
    }
}

/// One probe's answer, into the replica's probe state.
fn take_answer(local: &mut Local, (instance, result): (String, Result<(), String>), interval: Duration) {
    let offset = spread(&instance, interval);
    let p = local.probes.entry(instance).or_default();
    // A first probe put off to its place in the interval is there already: spread again, the
    // replicas put off together would all come back together an interval later.
    let first = p.last.is_none() && p.not_before.is_none();
    p.last = Some(Instant::now());
    match result {
        Ok(()) => {
            // The first answer since this server started: the next probe comes somewhere in
            // the interval rather than a whole interval on. After a restart every replica is
            // probed at once; left alone they would all be probed again together, every
            // interval, and every step falling due meanwhile would wait on the crowd.
            if first {
                p.last = Instant::now().checked_sub(offset);
            }
            p.consecutive_failures = 0;
            p.answered = true;
        }
        Err(e) => {
            if p.counted.is_none_or(|t| t.elapsed() >= interval) {
                p.consecutive_failures += 1;
                p.counted = Some(Instant::now());
            }
            p.last_error = e;
        }
    }
}

/// A share of `interval` that is the same for an instance every time and differs from one
/// instance to the next: where in the interval its probes fall.
fn spread(instance: &str, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    instance.hash(&mut h);
    interval.mul_f64((h.finish() % 1000) as f64 / 1000.0)
}

pub(super) fn to_traffic(v: &ringfence_router::VersionStats) -> Traffic {
    Traffic { requests: v.requests, errors: v.errors, latency_us: v.latency_buckets.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a restart every replica answers its first probe at about the same time; the
    /// places their next probes fall must cover the interval, not bunch up.
    #[test]
    fn the_next_probes_of_many_replicas_spread_over_the_interval() {
        let interval = Duration::from_secs(30);
        let offsets: Vec<Duration> = (0..1000).map(|i| spread(&format!("w{i}/v2/0-{i}"), interval)).collect();
        assert!(offsets.iter().all(|o| *o < interval));
        assert_eq!(spread("w1/v2/0-1", interval), offsets[1], "the same instance, the same place");
        // Ten slices of 3 s: none empty, none with more than twice its share.
        let mut slices = [0u32; 10];
        for o in &offsets {
            slices[(o.as_secs_f64() / 3.0) as usize] += 1;
        }
        assert!(slices.iter().all(|n| (1..=200).contains(n)), "{slices:?}");
    }

    /// The first answer since the server started places the next probe in the interval; a
    /// first probe that was put off to its place already is not moved again.
    #[test]
    fn a_first_answer_is_placed_in_the_interval_once() {
        let interval = Duration::from_secs(30);
        // Instances whose place is well into the interval, so "placed" and "not" differ.
        let mut far = (0..).map(|i| format!("w/v2/0-{i}")).filter(|i| spread(i, interval) > Duration::from_secs(10));
        let (fresh, deferred) = (far.next().unwrap(), far.next().unwrap());
        let mut local = Local::new("w");
        take_answer(&mut local, (fresh.clone(), Ok(())), interval);
        let since = local.probes[&fresh].last.unwrap().elapsed();
        assert!(since >= spread(&fresh, interval) && since < interval, "{since:?}");
        assert!(local.probes[&fresh].answered);

        local.probes.insert(deferred.clone(), ProbeState { not_before: Some(Instant::now()), ..Default::default() });
        take_answer(&mut local, (deferred.clone(), Ok(())), interval);
        assert!(local.probes[&deferred].last.unwrap().elapsed() < Duration::from_secs(5), "not moved again");
    }
}
