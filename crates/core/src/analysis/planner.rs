//! How long a phase needs: from live traffic, the time the sequential tests take to detect a
//! given regression, and a warning when a phase's bake is shorter.
//!
//! Each component of a mixture e-process ([`super::eprocess`]) adds a fixed amount to its
//! log-likelihood ratio per canary event (`ln OR - ln(1 + (OR - 1) s0)`) and per stable event
//! (`-ln(1 + (OR - 1) s0)`). With events arriving as Poisson processes at the rates the
//! regression implies, the log-ratio is a random walk with drift `mu` and variance `sigma^2`
//! per unit of exposure; the mixture rejects once one component passes
//! `ln(1/alpha) + ln(1/weight)`. The expected exposure to detect is that over `mu`; the exposure
//! to detect with probability `power` solves `mu n - z sigma sqrt(n) = threshold` (Brownian
//! approximation, `z` the normal quantile of `power`). Taking the best single component is
//! conservative: the mixture is never below any of its weighted components.
//!
//! All functions are pure; rates come in as arguments.

use super::eprocess::{self, Mixture};
use super::latency::{Hist, router_grid};
use super::{PhaseContext, SequentialConfig};

/// Exposure (in whatever unit the rates are per) a test needs to detect a regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Mean exposure until the e-value reaches its threshold.
    pub expected: f64,
    /// Exposure after which it has done so with probability `power`.
    pub powered: f64,
}

/// Drift and variance per unit exposure of a log-likelihood ratio that moves by `per_canary`
/// per canary event and `per_stable` per stable event.
fn walk(canary_rate: f64, stable_rate: f64, per_canary: f64, per_stable: f64) -> (f64, f64) {
    let mu = canary_rate * per_canary + stable_rate * per_stable;
    let var = canary_rate * per_canary * per_canary + stable_rate * per_stable * per_stable;
    (mu, var)
}

fn exposure(mu: f64, var: f64, threshold: f64, z: f64) -> Option<Detection> {
    if mu.is_nan() || mu <= 0.0 || !threshold.is_finite() {
        return None;
    }
    let threshold = threshold.max(0.0);
    let sigma = var.max(0.0).sqrt();
    let root = (z * sigma + ((z * sigma).powi(2) + 4.0 * mu * threshold).max(0.0).sqrt()) / (2.0 * mu);
    Some(Detection { expected: threshold / mu, powered: root.max(0.0).powi(2) })
}

/// The best component of a mixture prepared for the null share: canary events at
/// `canary_rate`, stable events at `stable_rate` per unit exposure, rejection at
/// `log_threshold` (plus each component's `ln(1/weight)`).
pub fn exposure_to_detect(
    canary_rate: f64,
    stable_rate: f64,
    mixture: &Mixture,
    log_threshold: f64,
    power: f64,
) -> Option<Detection> {
    exposure_with_z(canary_rate, stable_rate, mixture, log_threshold, z_of(power))
}

pub(crate) fn z_of(power: f64) -> f64 {
    eprocess::normal_quantile(power.clamp(0.5, 0.9999))
}

/// [`exposure_to_detect`] with the normal quantile of the power computed once by the caller.
pub(crate) fn exposure_with_z(
    canary_rate: f64,
    stable_rate: f64,
    mixture: &Mixture,
    log_threshold: f64,
    z: f64,
) -> Option<Detection> {
    mixture
        .steps()
        .filter_map(|(w, up, down)| {
            let (mu, var) = walk(canary_rate, stable_rate, up, down);
            exposure(mu, var, log_threshold - w, z)
        })
        .min_by(|a, b| a.powered.total_cmp(&b.powered))
}

/// Probability (Brownian approximation) that the best component has rejected after
/// `exposure` units.
pub fn power_after(canary_rate: f64, stable_rate: f64, mixture: &Mixture, log_threshold: f64, exposure: f64) -> f64 {
    if exposure <= 0.0 {
        return 0.0;
    }
    mixture
        .steps()
        .map(|(w, up, down)| {
            let (mu, var) = walk(canary_rate, stable_rate, up, down);
            if var <= 0.0 {
                return 0.0;
            }
            normal_cdf((mu * exposure - (log_threshold - w)) / (var * exposure).sqrt())
        })
        .fold(0.0, f64::max)
}

fn normal_cdf(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 on erf; absolute error below 1.5e-7.
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 { 0.5 * (1.0 + erf) } else { 0.5 * (1.0 - erf) }
}

/// Per-unit event rates of the latency test at each threshold when the canary is the stable
/// version slowed down `scale` times: `(stable's exceedance of x, canary's of x')`, from the
/// stable version's histogram `stable` (fractions of its requests).
pub(crate) fn latency_rates(config: &SequentialConfig, stable: &Hist, scale: f64) -> Vec<(f64, f64)> {
    if stable.is_empty() {
        return Vec::new();
    }
    let n = stable.total as f64;
    config
        .latency_thresholds()
        .iter()
        .map(|t| {
            let stable_rate = stable.above_at_most(t.stable_us) as f64 / n;
            // The canary exceeds x' when the stable would have exceeded x'/scale.
            let canary_rate = survival(stable, t.canary_us as f64 / scale);
            (stable_rate, canary_rate)
        })
        .collect()
}

/// Fraction of `h` above `y`, interpolated log-linearly between the grid bounds around `y`.
fn survival(h: &Hist, y: f64) -> f64 {
    let grid = router_grid();
    let n = h.total as f64;
    let i = grid.partition_point(|&b| (b as f64) < y);
    if i == 0 {
        return h.above_at_most(0) as f64 / n;
    }
    let Some(&hi) = grid.get(i) else { return 0.0 };
    let lo = grid[i - 1];
    let (s_lo, s_hi) = (h.above_at_most(lo) as f64 / n, h.above_at_most(hi) as f64 / n);
    if hi == u64::MAX {
        return s_hi;
    }
    let f = ((y / lo as f64).ln() / (hi as f64 / lo as f64).ln()).clamp(0.0, 1.0);
    s_lo + (s_hi - s_lo) * f
}

/// What the planner needs to know of the live traffic.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LiveTraffic {
    /// Requests per second to the new version in the phase considered.
    pub canary_rps: f64,
    /// Requests per second to the stable version in the same phase.
    pub stable_rps: f64,
    /// The stable version's error rate, 0..1.
    pub stable_error_rate: f64,
    /// The stable version's latency histogram over any recent window, router format.
    pub stable_latency_us: Vec<(u64, u64)>,
}

impl LiveTraffic {
    /// The traffic of a phase at `weight_bp` when the workload serves `total_rps`.
    pub fn split(total_rps: f64, weight_bp: u32, stable_error_rate: f64, stable_latency_us: &[(u64, u64)]) -> Self {
        let w = weight_bp.min(10_000) as f64 / 10_000.0;
        LiveTraffic {
            canary_rps: total_rps * w,
            stable_rps: total_rps * (1.0 - w),
            stable_error_rate,
            stable_latency_us: stable_latency_us.to_vec(),
        }
    }
}

/// A regression to plan for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Regression {
    /// The new version's error rate becomes this (0..1), e.g. 0.02 for 0.5% -> 2%.
    ErrorRate(f64),
    /// Every latency of the new version is this many times the stable's (1.5: +50% at p99).
    LatencyScale(f64),
}

/// Time to detect a regression in one phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Mean seconds until the test rejects.
    pub expected_s: f64,
    /// Seconds until it has rejected with probability `power`.
    pub powered_s: f64,
    pub power: f64,
    /// The false-alarm probability behind the e-process that starts in this phase (its share
    /// of the rollout's budget).
    pub alpha: f64,
}

/// Seconds the phase needs to detect `regression`, or `None` when it cannot be detected at
/// all (no traffic on one side, a regression that is no regression, a weight of 100%).
pub fn time_to_detect(
    config: &SequentialConfig,
    ctx: Option<&PhaseContext>,
    live: &LiveTraffic,
    regression: Regression,
) -> Option<Estimate> {
    let total = live.canary_rps + live.stable_rps;
    let positive = |x: f64| x > 0.0 && x.is_finite();
    if !positive(live.canary_rps) || !positive(live.stable_rps) {
        return None;
    }
    let share = live.canary_rps / total;
    let budget = config.budget(ctx);
    // Detection is planned with the spec's power, or 80% when the spec turns the pass tests off.
    let power = if config.power > 0.0 { config.power } else { 0.8 };
    // A regression that first appears in this phase: the e-process that starts here.
    let (errors, latency) = (budget.errors * budget.fresh(), budget.latency * budget.fresh());
    let (detection, alpha) = match regression {
        Regression::ErrorRate(to) => {
            let s0 = eprocess::null_event_share(share, null_ratio_at(config, live.stable_error_rate));
            let d = exposure_to_detect(
                live.canary_rps * to,
                live.stable_rps * live.stable_error_rate,
                &Mixture::new(s0, &config.error_grid()),
                (1.0 / errors).ln(),
                power,
            )?;
            (d, errors)
        }
        Regression::LatencyScale(scale) => {
            let stable = Hist::new(&live.stable_latency_us, &[]);
            let thresholds = config.latency_thresholds().len().max(1) as f64;
            let mixture =
                Mixture::new(eprocess::null_event_share(share, config.min_exceedance_ratio), &config.latency_grid());
            let d = latency_rates(config, &stable, scale)
                .into_iter()
                .filter_map(|(stable_rate, canary_rate)| {
                    exposure_to_detect(
                        live.canary_rps * canary_rate,
                        live.stable_rps * stable_rate,
                        &mixture,
                        (1.0 / latency).ln() + thresholds.ln(),
                        power,
                    )
                })
                .min_by(|a, b| a.powered.total_cmp(&b.powered))?;
            (d, latency)
        }
    };
    Some(Estimate { expected_s: detection.expected, powered_s: detection.powered, power, alpha })
}

/// The error test's null ratio at a stable error rate, for planning: as if the stable version
/// had served 10,000 requests at that rate.
fn null_ratio_at(config: &SequentialConfig, stable_error_rate: f64) -> f64 {
    const N: u64 = 10_000;
    config.error_null_ratio((stable_error_rate.clamp(0.0, 1.0) * N as f64).round() as u64, N)
}

/// Probability with which the planner wants a release as good as the stable one to have
/// passed a phase by the time it recommends.
pub const PASS_PLAN_PROBABILITY: f64 = 0.95;

/// Requests the new version must serve before a version exactly as good as the stable one
/// (failing at `stable_rate`) passes the error pass test with [`PASS_PLAN_PROBABILITY`].
/// `None` when the pass tests are off or cannot pass.
pub fn requests_to_pass_errors(config: &SequentialConfig, stable_rate: f64) -> Option<f64> {
    let level = config.pass_level()?;
    let p = stable_rate.clamp(0.0, 1.0);
    let limit = config.pass_error_limit(p);
    // The downward test on the new version's requests is the upward test on its successes.
    let mixture = Mixture::new(1.0 - limit, &eprocess::uniform(&super::sequential::PASS_ALTERNATIVES));
    exposure_with_z(1.0 - p, p, &mixture, (1.0 / level).ln(), z_of(PASS_PLAN_PROBABILITY)).map(|d| d.powered)
}

/// Requests the new version must serve before a version exactly as fast as the stable one
/// (whose latencies are `stable`) passes the latency pass test at every quantile, when it gets
/// `share` of the requests. `None` when the pass tests are off or cannot pass.
pub fn requests_to_pass_latency(config: &SequentialConfig, stable: &Hist, share: f64) -> Option<f64> {
    let level = config.pass_level()?;
    if stable.is_empty() || !(share > 0.0 && share < 1.0) {
        return None;
    }
    let n = stable.total as f64;
    // The downward test on the new version's share of events is the upward test on the
    // stable's share: successes are the stable's events.
    let mixture = Mixture::new(1.0 - share, &eprocess::uniform(&super::sequential::PASS_ALTERNATIVES));
    let z = z_of(PASS_PLAN_PROBABILITY);
    let mut worst: f64 = 0.0;
    for q in super::sequential::PASS_QUANTILES {
        let x = stable.quantile(q)?;
        let Some(bound) = config.pass_latency_bound(x) else { continue };
        let canary = stable.above_at_most(bound) as f64 / n;
        let stable_events = stable.above_at_least(x) as f64 / n * (1.0 - share) / share;
        let d = exposure_with_z(stable_events, canary, &mixture, (1.0 / level).ln(), z)?;
        worst = worst.max(d.powered);
    }
    Some(worst)
}

/// Seconds a release as good as the stable one needs to pass a phase (errors and, given the
/// stable's latencies, latency), with [`PASS_PLAN_PROBABILITY`]; `None` when the pass tests
/// are off, or at 100% (judged by the guards) or without traffic.
pub fn time_to_pass(config: &SequentialConfig, live: &LiveTraffic) -> Option<f64> {
    config.pass_level()?;
    if !(live.canary_rps > 0.0 && live.stable_rps > 0.0) {
        return None;
    }
    let share = live.canary_rps / (live.canary_rps + live.stable_rps);
    let errors = requests_to_pass_errors(config, live.stable_error_rate)?;
    let stable = Hist::new(&live.stable_latency_us, &[]);
    let latency = if stable.is_empty() { 0.0 } else { requests_to_pass_latency(config, &stable, share)? };
    Some(errors.max(latency) / live.canary_rps)
}

/// The smallest weight (in basis points, in whole percent, below 100%) at which a release as
/// good as the stable one passes phase `p` within its bake, if one does.
fn weight_to_pass(
    config: &SequentialConfig,
    total_rps: f64,
    p: &PhasePlan,
    stable_error_rate: f64,
    stable_latency_us: &[(u64, u64)],
) -> Option<u32> {
    (p.weight_bp / 100 + 1..100).map(|pct| pct * 100).find(|&w| {
        let live = LiveTraffic::split(total_rps, w, stable_error_rate, stable_latency_us);
        time_to_pass(config, &live).is_some_and(|t| t <= p.bake_s)
    })
}

/// One phase of a plan, for [`check_bakes`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhasePlan {
    pub weight_bp: u32,
    pub bake_s: f64,
}

/// The planner's advice on one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct BakeAdvice {
    pub phase: usize,
    pub weight_bp: u32,
    pub bake_s: f64,
    /// Seconds the phase needs: for a release as good as the stable one to pass (the same
    /// figure `status` counts down), or, with the pass tests off, to detect every regression
    /// asked about with the planning power; infinite when it cannot at this traffic, `None`
    /// when the phase has nothing to compare with (100%) and relies on the guards.
    pub needed_s: Option<f64>,
    /// Seconds for a release as good as the stable one to pass, with
    /// [`PASS_PLAN_PROBABILITY`]; `None` when the pass tests are off.
    pub pass_s: Option<f64>,
    /// Seconds to catch every regression asked about with the planning power.
    pub detect_s: Option<f64>,
    /// Set when the bake is shorter than needed, or when the phase cannot decide at all.
    pub warning: Option<String>,
}

/// The stable version's error rate a plan assumes from `errors` of `requests` counted: the
/// lower 95% Wilson bound, not the point estimate. Fewer errors take longer to tell apart, so
/// a plan on the low side never promises a bake too short; a point estimate from the first few
/// requests (one error in ten reads as 10%) would promise catching a x4 regression in a second.
pub fn planning_error_rate(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        return 0.0;
    }
    const Z: f64 = 1.96;
    let n = requests as f64;
    let p = (errors.min(requests) as f64) / n;
    let z2n = Z * Z / n;
    let centre = p + z2n / 2.0;
    let spread = Z * (p * (1.0 - p) / n + z2n / (4.0 * n)).sqrt();
    ((centre - spread) / (1.0 + z2n)).clamp(0.0, p)
}

/// [`check_bakes`] for a spec's plan at `rps`, with the stable version's error rate and
/// latency (the router's histogram buckets): the advice `ringfence plan` shows and `lint`
/// reports from.
pub fn spec_bakes(
    spec: &crate::spec::WorkloadSpec,
    rps: f64,
    stable_error_rate: f64,
    stable_latency_us: &[(u64, u64)],
) -> Vec<BakeAdvice> {
    let a = &spec.health.analysis;
    let config = SequentialConfig::from_spec(a);
    let plan: Vec<PhasePlan> = spec
        .rollout
        .phases
        .iter()
        // A shadow phase is judged on the copies it gets: plan it at that share.
        .map(|p| PhasePlan { weight_bp: p.weight_bp().max(p.shadow_bp()), bake_s: p.bake.as_ms() as f64 / 1000.0 })
        .collect();
    let target_rate = config.pass_error_limit(stable_error_rate);
    // Latency can only be planned from the stable version's latency distribution, and only
    // when the target slow-down at its p99 exceeds the latency margin: x1.5 of a 0.3 ms
    // service is a difference not worth acting on.
    let mut regressions = vec![Regression::ErrorRate(target_rate)];
    let p99_us = crate::analysis::latency::Hist::new(stable_latency_us, &[]).quantile(0.99);
    if let Some(p99) = p99_us
        && p99 as f64 * (a.target_latency_ratio - 1.0) > config.latency_margin_us as f64
    {
        regressions.push(Regression::LatencyScale(a.target_latency_ratio));
    }
    check_bakes(&config, &plan, rps, stable_error_rate, stable_latency_us, &regressions)
}

/// Checks every comparison phase of a plan against the regressions it should catch, and the
/// time a release as good as the stable one needs to pass, at the workload's current traffic.
pub fn check_bakes(
    config: &SequentialConfig,
    plan: &[PhasePlan],
    total_rps: f64,
    stable_error_rate: f64,
    stable_latency_us: &[(u64, u64)],
    regressions: &[Regression],
) -> Vec<BakeAdvice> {
    let weights: Vec<u32> = plan.iter().map(|p| p.weight_bp).collect();
    plan.iter()
        .enumerate()
        .map(|(i, p)| {
            let mut advice = BakeAdvice {
                phase: i,
                weight_bp: p.weight_bp,
                bake_s: p.bake_s,
                needed_s: None,
                pass_s: None,
                detect_s: None,
                warning: None,
            };
            if p.weight_bp >= 10_000 {
                return advice;
            }
            let ctx = PhaseContext::of_plan(&weights, i);
            let live = LiveTraffic::split(total_rps, p.weight_bp, stable_error_rate, stable_latency_us);
            let mut detect: f64 = 0.0;
            let mut detect_problems = Vec::new();
            for r in regressions {
                match time_to_detect(config, Some(&ctx), &live, *r) {
                    Some(e) => {
                        detect = detect.max(e.powered_s);
                        if e.powered_s > p.bake_s {
                            detect_problems.push(format!(
                                "{}{} needs {:.0} s to be caught with {:.0}% probability (mean {:.0} s), the bake is {:.0} s",
                                describe(*r, stable_error_rate),
                                if ctx.ordinal > 0 { " first appearing in this phase" } else { "" },
                                e.powered_s,
                                e.power * 100.0,
                                e.expected_s,
                                p.bake_s
                            ));
                        }
                    }
                    None => {
                        detect = f64::INFINITY;
                        detect_problems
                            .push(format!("{} cannot be detected at this traffic", describe(*r, stable_error_rate)));
                    }
                }
            }
            advice.detect_s = Some(detect);
            // With the pass tests on, a phase passes on evidence: what it needs is the time
            // for that evidence, and a regression it has not caught by then cannot pass (it is
            // caught while the phase extends). With them off it passes on "nothing found", so
            // the bake must be long enough to find the target regressions.
            let (needed, problems) = if config.pass_level().is_some() {
                let pass = time_to_pass(config, &live);
                advice.pass_s = pass;
                match pass {
                    Some(pass) if pass > p.bake_s => (
                        pass,
                        vec![format!(
                            "a release as good as the stable one needs {:.0} s to pass ({:.0}% of the time), the bake is {:.0} s: the phase will extend{}",
                            pass,
                            PASS_PLAN_PROBABILITY * 100.0,
                            p.bake_s,
                            weight_to_pass(config, total_rps, p, stable_error_rate, stable_latency_us)
                                .map_or(String::new(), |w| format!(
                                    "; a bake of {:.0} s, or a weight of {}% with this bake, would do",
                                    pass.ceil(),
                                    w as f64 / 100.0
                                ))
                        )],
                    ),
                    Some(pass) => (pass, Vec::new()),
                    None => (f64::INFINITY, vec!["no release can pass it at this traffic".to_string()]),
                }
            } else {
                (detect, detect_problems)
            };
            advice.needed_s = Some(needed);
            if !problems.is_empty() {
                advice.warning = Some(format!(
                    "phase {} at {}% of {:.0} req/s: {}",
                    i + 1,
                    p.weight_bp as f64 / 100.0,
                    total_rps,
                    problems.join("; ")
                ));
            }
            advice
        })
        .collect()
}

fn describe(r: Regression, stable_error_rate: f64) -> String {
    match r {
        Regression::ErrorRate(to) => {
            format!("an error rate of {} (stable {})", crate::health::pct(to), crate::health::pct(stable_error_rate))
        }
        Regression::LatencyScale(s) => format!("latency x{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_assumes_the_stable_error_rate_the_sample_is_sure_of() {
        assert_eq!(planning_error_rate(0, 0), 0.0);
        assert_eq!(planning_error_rate(0, 1_000), 0.0);
        // One error in ten is weak evidence of a 10% rate; ten thousand requests pin 0.5%.
        let few = planning_error_rate(1, 10);
        assert!(few > 0.0 && few < 0.02, "{few}");
        let many = planning_error_rate(50, 10_000);
        assert!(many > 0.0037 && many < 0.005, "{many}");
        assert!(planning_error_rate(10, 10) <= 1.0);
        // Never above the point estimate, whatever the counts.
        for (e, n) in [(1, 1), (3, 7), (999, 1000), (5, 3)] {
            assert!(planning_error_rate(e, n) <= (e.min(n) as f64 / n as f64), "{e}/{n}");
        }
    }

    fn lognormal_hist(median_us: f64, sigma: f64, n: u64) -> Vec<(u64, u64)> {
        // Expected counts per router bucket of a log-normal distribution.
        let grid = router_grid();
        let cdf = |x: f64| normal_cdf(((x / median_us).ln()) / sigma);
        let mut prev = 0.0;
        let mut out = Vec::new();
        for &b in grid {
            let c = if b == u64::MAX { 1.0 } else { cdf(b as f64) };
            let count = ((c - prev) * n as f64).round() as u64;
            prev = c;
            if count > 0 {
                out.push((b, count));
            }
        }
        out
    }

    #[test]
    fn the_subtle_error_regression_takes_tens_of_seconds() {
        let cfg = SequentialConfig::default();
        let plan = [1000, 2500, 5000, 10_000];
        for (phase, lo, hi) in [(0usize, 20.0, 120.0), (1, 10.0, 60.0)] {
            let ctx = PhaseContext::of_plan(&plan, phase);
            let live = LiveTraffic::split(200.0, plan[phase], 0.005, &[]);
            let e = time_to_detect(&cfg, Some(&ctx), &live, Regression::ErrorRate(0.02)).unwrap();
            assert!(e.expected_s > lo && e.expected_s < hi, "phase {phase}: {e:?}");
            assert!(e.powered_s > e.expected_s);
        }
    }

    #[test]
    fn hard_failures_are_fast_and_more_traffic_is_faster() {
        let cfg = SequentialConfig::default();
        let slow = LiveTraffic::split(200.0, 1000, 0.005, &[]);
        let fast = LiveTraffic::split(2000.0, 1000, 0.005, &[]);
        let a = time_to_detect(&cfg, None, &slow, Regression::ErrorRate(0.2)).unwrap();
        let b = time_to_detect(&cfg, None, &fast, Regression::ErrorRate(0.2)).unwrap();
        assert!(a.expected_s < 3.0, "{a:?}");
        assert!((a.expected_s / b.expected_s - 10.0).abs() < 1e-6);
    }

    #[test]
    fn no_regression_or_no_traffic_cannot_be_detected() {
        let cfg = SequentialConfig::default();
        let live = LiveTraffic::split(200.0, 1000, 0.005, &[]);
        assert!(time_to_detect(&cfg, None, &live, Regression::ErrorRate(0.005)).is_none());
        assert!(time_to_detect(&cfg, None, &live, Regression::ErrorRate(0.001)).is_none());
        let full = LiveTraffic::split(200.0, 10_000, 0.005, &[]);
        assert!(time_to_detect(&cfg, None, &full, Regression::ErrorRate(0.2)).is_none());
        let none = LiveTraffic::default();
        assert!(time_to_detect(&cfg, None, &none, Regression::ErrorRate(0.2)).is_none());
        // Latency without a histogram of the stable version: nothing to plan from.
        assert!(time_to_detect(&cfg, None, &live, Regression::LatencyScale(1.5)).is_none());
    }

    #[test]
    fn latency_regression_from_a_histogram() {
        let cfg = SequentialConfig { latency_margin_ratio: 1.0, latency_margin_us: 0, ..SequentialConfig::default() };
        let hist = lognormal_hist(20_000.0, 0.5, 100_000);
        let live = LiveTraffic::split(200.0, 2500, 0.005, &hist);
        let e = time_to_detect(&cfg, None, &live, Regression::LatencyScale(1.5)).unwrap();
        assert!(e.expected_s < 15.0, "{e:?}");
        let small = time_to_detect(&cfg, None, &live, Regression::LatencyScale(1.2)).unwrap();
        assert!(small.expected_s > e.expected_s);
        // With a tolerated 10% slow-down, 5% is no regression.
        let tolerant =
            SequentialConfig { latency_margin_ratio: 1.1, latency_margin_us: 0, ..SequentialConfig::default() };
        assert!(time_to_detect(&tolerant, None, &live, Regression::LatencyScale(1.05)).is_none());
        let slower = time_to_detect(&tolerant, None, &live, Regression::LatencyScale(1.5)).unwrap();
        assert!(slower.expected_s > e.expected_s);
    }

    #[test]
    fn warns_when_the_bake_is_too_short() {
        // With the pass tests off a phase passes on "nothing found": the bake must be long
        // enough to catch the targets.
        let cfg = SequentialConfig { power: 0.0, ..SequentialConfig::default() };
        let plan = [
            PhasePlan { weight_bp: 1000, bake_s: 10.0 },
            PhasePlan { weight_bp: 5000, bake_s: 600.0 },
            PhasePlan { weight_bp: 10_000, bake_s: 60.0 },
        ];
        let advice = check_bakes(&cfg, &plan, 200.0, 0.005, &[], &[Regression::ErrorRate(0.02)]);
        assert_eq!(advice.len(), 3);
        let w = advice[0].warning.as_deref().unwrap();
        assert!(w.contains("phase 1 at 10% of 200 req/s") && w.contains("the bake is 10 s"), "{w}");
        assert!(!w.contains("first appearing"), "the first phase plans for any regression: {w}");
        assert_eq!(advice[0].needed_s, advice[0].detect_s);
        assert_eq!(advice[0].pass_s, None);
        // A later phase plans for a regression that first appears there, and says so.
        let short_later = [plan[0], PhasePlan { weight_bp: 5000, bake_s: 5.0 }, plan[2]];
        let later = check_bakes(&cfg, &short_later, 200.0, 0.005, &[], &[Regression::ErrorRate(0.02)]);
        let w = later[1].warning.as_deref().unwrap();
        assert!(w.contains("first appearing in this phase"), "{w}");
        assert!(advice[1].warning.is_none(), "{:?}", advice[1]);
        assert!(advice[1].needed_s.unwrap() < 600.0);
        assert_eq!(advice[2].needed_s, None);
        let idle = check_bakes(&cfg, &plan, 0.0, 0.005, &[], &[Regression::ErrorRate(0.02)]);
        assert!(idle[0].warning.as_deref().unwrap().contains("cannot be detected"));
    }

    #[test]
    fn with_the_pass_tests_a_phase_needs_the_time_to_pass() {
        let cfg = SequentialConfig::default();
        let plan = [PhasePlan { weight_bp: 1000, bake_s: 10.0 }, PhasePlan { weight_bp: 10_000, bake_s: 60.0 }];
        let advice = check_bakes(&cfg, &plan, 200.0, 0.0, &[], &[Regression::ErrorRate(0.005)]);
        let a = &advice[0];
        let pass = a.pass_s.expect("the pass tests are on");
        assert_eq!(a.needed_s, Some(pass));
        // The same figure the analyzer counts down: the requests to pass at 20 req/s.
        let requests = requests_to_pass_errors(&cfg, 0.0).unwrap();
        assert!((pass - requests / 20.0).abs() < 1e-9, "{pass} {requests}");
        let w = a.warning.as_deref().unwrap();
        assert!(w.contains("needs") && w.contains("to pass") && w.contains("the phase will extend"), "{w}");
        // It says what would do: a bake of that long, or the smallest weight that passes
        // within this bake (checked against the same function).
        assert!(w.contains(&format!("a bake of {:.0} s", pass.ceil())), "{w}");
        let pct: f64 = w.split("or a weight of ").nth(1).and_then(|r| r.split('%').next()).unwrap().parse().unwrap();
        let at = |pct: f64| time_to_pass(&cfg, &LiveTraffic::split(200.0, (pct * 100.0) as u32, 0.0, &[])).unwrap();
        assert!(at(pct) <= 10.0 && at(pct - 1.0) > 10.0, "{pct}%: {} s, {} s", at(pct), at(pct - 1.0));
        // Long enough: no warning, whatever the detection time.
        let long = [PhasePlan { weight_bp: 1000, bake_s: pass + 1.0 }, plan[1]];
        assert!(check_bakes(&cfg, &long, 200.0, 0.0, &[], &[Regression::ErrorRate(0.005)])[0].warning.is_none());
        // No traffic: it cannot pass, and says so.
        let idle = check_bakes(&cfg, &plan, 0.0, 0.0, &[], &[]);
        assert!(idle[0].warning.as_deref().unwrap().contains("no release can pass"), "{:?}", idle[0]);
        assert_eq!(idle[0].needed_s, Some(f64::INFINITY));
    }

    #[test]
    fn power_grows_with_exposure() {
        let m = Mixture::new(eprocess::null_event_share(0.1, 1.0), &eprocess::uniform(&[4.0]));
        let t = (1000.0f64).ln();
        let a = power_after(0.4, 0.9, &m, t, 10.0);
        let b = power_after(0.4, 0.9, &m, t, 100.0);
        assert!(a < b && b > 0.5, "{a} {b}");
        assert_eq!(power_after(0.4, 0.9, &m, t, 0.0), 0.0);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7 && (normal_cdf(1.96) - 0.975).abs() < 1e-4);
    }
}
