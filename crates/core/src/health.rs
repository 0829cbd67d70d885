//! Health: what was observed of a version during a phase, and the verdict on it.
//!
//! [`HealthAnalyzer`] is the seam where the statistical canary analysis plugs in; the
//! [`ThresholdAnalyzer`] here judges against fixed limits with a minimum sample size.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::HealthSpec;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Unhealthy,
    /// Not enough data, or the signal is down. Never promotes; never rolls back by itself.
    Unknown,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unknown => "unknown",
        })
    }
}

/// Requests, errors and a latency histogram for one version over a window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Traffic {
    pub requests: u64,
    pub errors: u64,
    /// (upper bound in microseconds, count), ascending, non-zero buckets only.
    pub latency_us: Vec<(u64, u64)>,
}

/// One version's traffic over a short interval of a rollout, as the router counted it: what the
/// charts of a rollout and of its postmortem draw, new version against stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalSample {
    /// The end of the interval.
    pub at: Timestamp,
    pub version: String,
    /// The interval's length.
    pub span_ms: u64,
    pub requests: u64,
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<u64>,
    /// Distinct users the router had sent to the version by the interval's end, since it
    /// started (an estimate within about 5%; distinct counts do not add up across intervals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
}

impl SignalSample {
    /// The sample of `version` over the traffic `t` of an interval of `span_ms` ending `at`.
    pub fn of(version: &str, at: Timestamp, span_ms: u64, t: &Traffic) -> SignalSample {
        SignalSample {
            at,
            version: version.to_string(),
            span_ms,
            requests: t.requests,
            errors: t.errors,
            p50_us: t.quantile_us(0.5),
            p99_us: t.quantile_us(0.99),
            users: None,
        }
    }
}

/// The traffic one comparison phase of a rollout was judged on when it passed: what later
/// phases carry forward as evidence (see [`crate::analysis`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PhaseWindow {
    /// Index of the phase in the rollout's plan.
    pub phase: usize,
    /// The new version's weight the router was told, in basis points.
    pub weight_bp: u32,
    pub canary: Traffic,
    pub stable: Traffic,
}

impl Traffic {
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// The upper bound of the bucket holding quantile `q`, in microseconds.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency_us.iter().map(|(_, c)| c).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (upper, count) in &self.latency_us {
            seen += count;
            if seen >= rank {
                return Some(*upper);
            }
        }
        self.latency_us.last().map(|(u, _)| *u)
    }

    /// `self - earlier`, saturating: the traffic of the window between two cumulative reads.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        let latency_us = self
            .latency_us
            .iter()
            .filter_map(|(upper, count)| {
                let before = earlier.latency_us.iter().find(|(u, _)| u == upper).map(|(_, c)| *c).unwrap_or(0);
                let d = count.saturating_sub(before);
                (d > 0).then_some((*upper, d))
            })
            .collect();
        Traffic {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency_us,
        }
    }
}

/// What the controller saw of one version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VersionObservation {
    pub version: String,
    /// Traffic through the router in the window; `None` when the router could not be read.
    pub traffic: Option<Traffic>,
    /// Distinct users the router had sent to the version by the observation, since it started
    /// (an estimate within about 5%; a distinct count has no window): how many users a sticky
    /// split drew, which bounds how close to its weight the version's share of requests can be.
    /// `None` when the router does not count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
    /// Replicas whose latest probes failed `failure_threshold` times in a row.
    pub probes_failing: Vec<String>,
    /// Replicas probed at least once in the window with a result.
    pub probes_answered: u32,
    /// Replica exits nobody asked for, e.g. `replica 1 (pid 4242) exited with status 101`.
    pub crashes: Vec<String>,
    /// Why the version could not be started, if it could not.
    pub start_failure: Option<String>,
    /// Replicas whose circuit breaker in the router is open.
    pub breakers_open: Vec<String>,
}

/// Everything the analyzer judges, gathered by the controller.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Observation {
    pub canary: VersionObservation,
    /// The version being replaced, observed over the same window (absent on a first deploy).
    pub baseline: Option<VersionObservation>,
    pub window_ms: u64,
    /// Age of the freshest router read when the verdict was made.
    pub freshness_ms: u64,
    /// Signals judged outside the analyzer (smoke tests, alerts, user reports, usage,
    /// Prometheus queries); merged into its verdict.
    #[serde(default)]
    pub signals: Vec<SignalResult>,
}

/// One signal's contribution to a verdict, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalResult {
    /// `error_rate`, `latency_p99`, `probe`, `crash`, `start`, `breaker`, `traffic`.
    pub signal: String,
    pub version: String,
    pub health: Health,
    pub observed: Option<f64>,
    pub threshold: Option<f64>,
    /// Unit of `observed` and `threshold`: `ratio`, `ms`, `requests`, `count`.
    pub unit: String,
    pub sample_size: u64,
    pub baseline: Option<f64>,
    pub baseline_sample_size: Option<u64>,
    /// The rule, in words: "error rate above 5% with at least 20 requests".
    pub rule: String,
    pub detail: String,
    /// Raw numbers behind a statistic (e.g. `canary_errors`, `stable_rate`, `share`), by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub values: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub health: Health,
    /// The health model's roll-up (healthy, degraded, unhealthy, unknown) when components are
    /// declared; absent otherwise.
    #[serde(default)]
    pub model: Option<crate::model::HealthModel>,
    pub signals: Vec<SignalResult>,
    pub window_ms: u64,
    pub freshness_ms: u64,
    /// Name of the analyzer that judged.
    pub analyzer: String,
}

impl SignalResult {
    /// A signal with its verdict and words; numbers are filled in by the caller.
    pub fn new(
        signal: impl Into<String>,
        version: impl Into<String>,
        health: Health,
        unit: &str,
        rule: impl Into<String>,
        detail: impl Into<String>,
    ) -> SignalResult {
        SignalResult {
            signal: signal.into(),
            version: version.into(),
            health,
            observed: None,
            threshold: None,
            unit: unit.into(),
            sample_size: 0,
            baseline: None,
            baseline_sample_size: None,
            rule: rule.into(),
            detail: detail.into(),
            values: Default::default(),
        }
    }
}

impl Verdict {
    /// A verdict standing for "not judged"; never stored.
    pub fn placeholder() -> Verdict {
        Verdict {
            health: Health::Unknown,
            model: None,
            signals: vec![],
            window_ms: 0,
            freshness_ms: 0,
            analyzer: String::new(),
        }
    }

    /// Adds signals judged elsewhere and recomputes the overall health: any unhealthy signal
    /// makes it unhealthy, otherwise any unknown makes it unknown.
    pub fn merge(&mut self, extra: &[SignalResult]) {
        if extra.is_empty() {
            return;
        }
        self.signals.extend(extra.iter().cloned());
        self.health = rollup(self.signals.iter().map(|s| s.health));
    }

    /// The signals that made the verdict what it is.
    pub fn deciding(&self) -> impl Iterator<Item = &SignalResult> {
        self.signals.iter().filter(move |s| s.health == self.health)
    }
}

/// How strictly to judge: a normal phase needs traffic; a verified release on the fast path
/// (rollback to last known good) and a first deploy with no baseline are judged on probes,
/// crashes and whatever traffic there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Phase,
    ProbesOnly,
}

pub trait HealthAnalyzer {
    fn name(&self) -> &'static str;
    fn evaluate(&self, obs: &Observation, spec: &HealthSpec, mode: Mode) -> Verdict;
}

/// Fixed limits with a minimum sample. Any unhealthy signal makes the verdict unhealthy;
/// otherwise any unknown signal makes it unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThresholdAnalyzer;

impl HealthAnalyzer for ThresholdAnalyzer {
    fn name(&self) -> &'static str {
        "threshold"
    }

    fn evaluate(&self, obs: &Observation, spec: &HealthSpec, mode: Mode) -> Verdict {
        let c = &obs.canary;
        let mut signals = Vec::new();
        let base = |signal: &str, health: Health, rule: &str, detail: String| {
            SignalResult::new(signal, c.version.as_str(), health, "count", rule, detail)
        };

        if let Some(why) = &c.start_failure {
            signals.push(base("start", Health::Unhealthy, "the new version must start and become ready", why.clone()));
        }
        if !c.crashes.is_empty() {
            let mut s = base(
                "crash",
                Health::Unhealthy,
                "no replica of the new version may exit unasked",
                c.crashes.join("; "),
            );
            s.observed = Some(c.crashes.len() as f64);
            s.threshold = Some(0.0);
            signals.push(s);
        }
        if !c.breakers_open.is_empty() {
            let mut s = base(
                "breaker",
                Health::Unhealthy,
                "no circuit breaker of the new version may be open",
                format!("router tripped the breaker of {}", c.breakers_open.join(", ")),
            );
            s.observed = Some(c.breakers_open.len() as f64);
            s.threshold = Some(0.0);
            signals.push(s);
        }
        let probe_health = if !c.probes_failing.is_empty() {
            Health::Unhealthy
        } else if c.probes_answered > 0 {
            Health::Healthy
        } else {
            Health::Unknown
        };
        let mut probe = base(
            "probe",
            probe_health,
            &format!("probes of {} must not fail {} times in a row", spec.probe.path, spec.probe.failure_threshold),
            match probe_health {
                Health::Unhealthy => format!("failing probes: {}", c.probes_failing.join(", ")),
                Health::Healthy => {
                    format!("{} replica(s) answered their probes", c.probes_answered)
                }
                Health::Unknown => "no probe has answered yet".into(),
            },
        );
        probe.observed = Some(c.probes_failing.len() as f64);
        probe.threshold = Some(0.0);
        probe.sample_size = c.probes_answered as u64;
        signals.push(probe);

        let baseline_traffic = obs.baseline.as_ref().and_then(|b| b.traffic.as_ref());
        match &c.traffic {
            None => signals.push(base(
                "traffic",
                if mode == Mode::Phase { Health::Unknown } else { Health::Healthy },
                "router metrics must be readable",
                "the router's metrics could not be read".into(),
            )),
            Some(t) => {
                let enough = t.requests >= spec.min_requests;
                let mut volume = base(
                    "traffic",
                    if enough || mode == Mode::ProbesOnly { Health::Healthy } else { Health::Unknown },
                    &format!("at least {} requests to the new version", spec.min_requests),
                    if enough {
                        format!("{} requests served", t.requests)
                    } else {
                        format!("only {} of the {} requests needed so far", t.requests, spec.min_requests)
                    },
                );
                volume.unit = "requests".into();
                volume.observed = Some(t.requests as f64);
                volume.threshold = Some(spec.min_requests as f64);
                volume.sample_size = t.requests;
                volume.baseline = baseline_traffic.map(|b| b.requests as f64);
                signals.push(volume);

                if enough {
                    let rate = t.error_rate().unwrap_or(0.0);
                    let bad = rate > spec.max_error_rate;
                    let mut s = base(
                        "error_rate",
                        if bad { Health::Unhealthy } else { Health::Healthy },
                        &format!(
                            "error rate at most {} with at least {} requests",
                            pct(spec.max_error_rate),
                            spec.min_requests
                        ),
                        format!("{} of {} requests failed ({})", t.errors, t.requests, pct(rate)),
                    );
                    s.unit = "ratio".into();
                    s.observed = Some(rate);
                    s.threshold = Some(spec.max_error_rate);
                    s.sample_size = t.requests;
                    s.baseline = baseline_traffic.and_then(Traffic::error_rate);
                    s.baseline_sample_size = baseline_traffic.map(|b| b.requests);
                    signals.push(s);

                    if let Some(limit) = spec.max_p99_latency
                        && let Some(p99_us) = t.quantile_us(0.99)
                    {
                        let p99_ms = p99_us as f64 / 1000.0;
                        let bad = p99_ms > limit.as_ms() as f64;
                        let mut s = base(
                            "latency_p99",
                            if bad { Health::Unhealthy } else { Health::Healthy },
                            &format!("p99 latency at most {limit} with at least {} requests", spec.min_requests),
                            format!("p99 latency {p99_ms:.1} ms over {} requests", t.requests),
                        );
                        s.unit = "ms".into();
                        s.observed = Some(p99_ms);
                        s.threshold = Some(limit.as_ms() as f64);
                        s.sample_size = t.requests;
                        s.baseline = baseline_traffic.and_then(|b| b.quantile_us(0.99)).map(|u| u as f64 / 1000.0);
                        s.baseline_sample_size = baseline_traffic.map(|b| b.requests);
                        signals.push(s);
                    }
                }
            }
        }

        let health = rollup(signals.iter().map(|s| s.health));
        Verdict {
            health,
            model: None,
            signals,
            window_ms: obs.window_ms,
            freshness_ms: obs.freshness_ms,
            analyzer: self.name().into(),
        }
    }
}

/// Unhealthy beats unknown beats healthy.
pub fn rollup(healths: impl Iterator<Item = Health>) -> Health {
    let mut out = Health::Healthy;
    for h in healths {
        match h {
            Health::Unhealthy => return Health::Unhealthy,
            Health::Unknown => out = Health::Unknown,
            Health::Healthy => {}
        }
    }
    out
}

pub fn pct(ratio: f64) -> String {
    let p = ratio * 100.0;
    if p == p.round() { format!("{p:.0}%") } else { format!("{p:.1}%") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(requests: u64, errors: u64) -> Observation {
        Observation {
            canary: VersionObservation {
                version: "v2".into(),
                traffic: Some(Traffic { requests, errors, latency_us: vec![(1000, requests)] }),
                probes_answered: 1,
                ..Default::default()
            },
            baseline: None,
            window_ms: 1000,
            freshness_ms: 10,
            signals: vec![],
        }
    }

    fn judge(o: &Observation) -> Verdict {
        ThresholdAnalyzer.evaluate(o, &HealthSpec::default(), Mode::Phase)
    }

    #[test]
    fn too_little_traffic_is_unknown_even_with_errors() {
        let v = judge(&obs(5, 5));
        assert_eq!(v.health, Health::Unknown);
    }

    #[test]
    fn error_rate_above_threshold_is_unhealthy_with_evidence() {
        let v = judge(&obs(100, 20));
        assert_eq!(v.health, Health::Unhealthy);
        let s = v.deciding().next().unwrap();
        assert_eq!(s.signal, "error_rate");
        assert_eq!(s.observed, Some(0.2));
        assert_eq!(s.threshold, Some(0.05));
        assert_eq!(s.sample_size, 100);
    }

    #[test]
    fn clean_traffic_is_healthy() {
        assert_eq!(judge(&obs(100, 1)).health, Health::Healthy);
    }

    #[test]
    fn router_unreadable_is_unknown_not_unhealthy() {
        let mut o = obs(100, 0);
        o.canary.traffic = None;
        assert_eq!(judge(&o).health, Health::Unknown);
    }

    #[test]
    fn crash_is_unhealthy_whatever_the_traffic() {
        let mut o = obs(0, 0);
        o.canary.crashes.push("replica 0 exited with status 101".into());
        assert_eq!(judge(&o).health, Health::Unhealthy);
    }

    #[test]
    fn latency_limit() {
        let spec = HealthSpec { max_p99_latency: Some(crate::duration::Dur::ms(500)), ..Default::default() };
        let mut o = obs(100, 0);
        o.canary.traffic.as_mut().unwrap().latency_us = vec![(1000, 90), (800_000, 10)];
        let v = ThresholdAnalyzer.evaluate(&o, &spec, Mode::Phase);
        assert_eq!(v.health, Health::Unhealthy);
        assert_eq!(v.deciding().next().unwrap().signal, "latency_p99");
    }

    #[test]
    fn quantile_and_window() {
        let t = Traffic { requests: 100, errors: 0, latency_us: vec![(100, 50), (200, 49), (5000, 1)] };
        assert_eq!(t.quantile_us(0.5), Some(100));
        assert_eq!(t.quantile_us(0.99), Some(200));
        assert_eq!(t.quantile_us(1.0), Some(5000));
        let earlier = Traffic { requests: 40, errors: 0, latency_us: vec![(100, 40)] };
        let w = t.since(&earlier);
        assert_eq!(w.requests, 60);
        assert_eq!(w.latency_us, vec![(100, 10), (200, 49), (5000, 1)]);
    }

    #[test]
    fn probes_only_mode_does_not_need_traffic() {
        let mut o = obs(0, 0);
        o.canary.traffic = Some(Traffic::default());
        let v = ThresholdAnalyzer.evaluate(&o, &HealthSpec::default(), Mode::ProbesOnly);
        assert_eq!(v.health, Health::Healthy);
    }
}
