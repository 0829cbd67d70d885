//! [`SequentialAnalyzer`]: the new version against the stable one with anytime-valid tests.
//! The methods and their validity are described in the [module docs](super).

use super::eprocess::{self, Mixture, carried_log_e, log_e_lower, log_e_upper, null_event_share, upper_confidence};
use super::latency::{self, Hist};
use super::planner;
use super::{Budget, GUARD_ALTERNATIVES, GUARD_TAIL, PhaseContext, SHARE_ALTERNATIVES, SequentialConfig};
use crate::health::{
    Health, HealthAnalyzer, Mode, Observation, PhaseWindow, SignalResult, ThresholdAnalyzer, Traffic, Verdict,
    VersionObservation, pct, rollup,
};
use crate::spec::HealthSpec;

/// Judges the new version against the stable one over the same window with sequential tests.
///
/// Start, crash, breaker and probe signals are those of [`ThresholdAnalyzer`], unchanged. Give
/// it the phase with [`SequentialAnalyzer::in_phase`] so that it can check the traffic split
/// and spend its false-alarm budget by the actual plan, and the rollout's passed phases with
/// [`SequentialAnalyzer::after`] so that their evidence counts.
#[derive(Debug, Clone, Default)]
pub struct SequentialAnalyzer {
    pub config: SequentialConfig,
    pub context: Option<PhaseContext>,
    carried: Carried,
}

/// The evidence of the rollout's earlier comparison phases, computed once: per phase, its
/// ordinal among the comparison phases and every alternative's log-likelihood ratio.
#[derive(Debug, Clone, Default)]
struct Carried {
    errors: Vec<(usize, Vec<f64>)>,
    latency: Vec<(usize, Vec<f64>)>,
}

impl SequentialAnalyzer {
    pub fn new(config: SequentialConfig) -> Self {
        SequentialAnalyzer { config, context: None, carried: Carried::default() }
    }

    /// The same analyzer, judging phase `ctx`.
    pub fn in_phase(mut self, ctx: PhaseContext) -> Self {
        self.context = Some(ctx);
        self
    }

    /// The same analyzer, carrying the evidence of the rollout's passed phases (`windows`) of
    /// a plan with these weights. Call it last: it computes with the analyzer's config.
    pub fn after(mut self, plan_bp: &[u32], windows: &[PhaseWindow]) -> Self {
        let mut earlier: Vec<(usize, &PhaseWindow)> = windows
            .iter()
            .filter(|w| w.weight_bp < 10_000 && w.canary.requests > 0 && w.stable.requests > 0)
            .map(|w| (PhaseContext::of_plan(plan_bp, w.phase).ordinal, w))
            .collect();
        earlier.sort_by_key(|(o, _)| *o);
        let cfg = &self.config;
        self.carried = Carried {
            errors: earlier.iter().map(|(o, w)| (*o, error_ratios(cfg, w))).collect(),
            latency: earlier.iter().filter_map(|(o, w)| Some((*o, latency_ratios(cfg, w)?))).collect(),
        };
        self
    }

    /// How many earlier phases' evidence this analyzer carries, and their ordinals.
    pub fn carried_phases(&self) -> Vec<usize> {
        self.carried.errors.iter().map(|(o, _)| *o).collect()
    }
}

/// Every error alternative's log-likelihood ratio over an earlier phase.
fn error_ratios(cfg: &SequentialConfig, w: &PhaseWindow) -> Vec<f64> {
    let m = Mixture::new(
        null_event_share(
            window_share(w, cfg.share_prior_requests),
            cfg.error_null_ratio(w.stable.errors, w.stable.requests),
        ),
        &cfg.error_grid(),
    );
    m.log_ratios(w.canary.errors.min(w.canary.requests) as f64, w.stable.errors.min(w.stable.requests) as f64).collect()
}

/// Every (latency threshold, alternative) log-likelihood ratio over an earlier phase.
fn latency_ratios(cfg: &SequentialConfig, w: &PhaseWindow) -> Option<Vec<f64>> {
    let hc = Hist::new(&w.canary.latency_us, &w.stable.latency_us);
    let hb = Hist::new(&w.stable.latency_us, &w.canary.latency_us);
    if hc.is_empty() || hb.is_empty() {
        return None;
    }
    let weight = w.weight_bp as f64 / 10_000.0;
    let share = share_of(weight, hc.total, hb.total, 0.0);
    let m = Mixture::new(null_event_share(share, cfg.min_exceedance_ratio), &cfg.latency_grid());
    Some(exceedance_ratios(&cfg.latency_thresholds(), &m, &hc, &hb))
}

fn exceedance_ratios(thresholds: &[latency::Threshold], mixture: &Mixture, hc: &Hist, hb: &Hist) -> Vec<f64> {
    thresholds
        .iter()
        .flat_map(|th| {
            let (k, m) = (hc.above_at_least(th.canary_us), hb.above_at_most(th.stable_us));
            mixture.log_ratios(k as f64, m as f64).collect::<Vec<_>>()
        })
        .collect()
}

static NOTHING_CARRIED: Carried = Carried { errors: Vec::new(), latency: Vec::new() };

/// e-values are shown as numbers; keep them finite for JSON.
fn shown(log_e: f64) -> f64 {
    log_e.min(690.0).exp()
}

fn fmt_e(log_e: f64) -> String {
    let e = shown(log_e);
    if e >= 1e6 {
        format!("{e:.2e}")
    } else if e >= 100.0 {
        format!("{e:.0}")
    } else {
        format!("{e:.2}")
    }
}

/// Two significant digits: 0.00075, 0.005.
fn fmt_alpha(a: f64) -> String {
    if a.is_nan() || a <= 0.0 {
        return "0".into();
    }
    let decimals = (1 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{a:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn ms(us: u64) -> String {
    if us == u64::MAX { "above 60 s".into() } else { format!("{:.1} ms", us as f64 / 1000.0) }
}

struct Ctx<'a> {
    cfg: &'a SequentialConfig,
    budget: Budget,
    /// Earlier comparison phases' evidence, only when the phase is known.
    carried: &'a Carried,
    weight: Option<f64>,
    version: &'a str,
    /// Distinct users the router sent the new version (see [`VersionObservation::users`]).
    users: Option<u64>,
    window_s: f64,
}

impl Ctx<'_> {
    fn signal(&self, signal: &str, health: Health, unit: &str, rule: String, detail: String) -> SignalResult {
        SignalResult::new(signal, self.version, health, unit, rule, detail)
    }

    /// "~12 s more" at the canary's current request rate.
    fn time_for(&self, more_requests: f64, canary_requests: u64) -> String {
        if self.window_s > 0.0 && canary_requests > 0 {
            let rate = canary_requests as f64 / self.window_s;
            format!(" (~{:.0} s more at {:.1} req/s)", more_requests / rate, rate)
        } else {
            String::new()
        }
    }
}

impl HealthAnalyzer for SequentialAnalyzer {
    fn name(&self) -> &'static str {
        "sequential"
    }

    fn evaluate(&self, obs: &Observation, spec: &HealthSpec, mode: Mode) -> Verdict {
        let c = &obs.canary;
        let ctx = Ctx {
            cfg: &self.config,
            budget: self.config.budget(self.context.as_ref()),
            carried: if self.context.is_some() { &self.carried } else { &NOTHING_CARRIED },
            // With a ring of chosen users or copies of requests the canary's share is what
            // they make it: judged as observed, as when the phase is unknown.
            weight: self.context.filter(|p| !p.share_observed).map(|p| p.weight()),
            version: &c.version,
            users: c.users,
            window_s: obs.window_ms as f64 / 1000.0,
        };
        // Probes, crashes, start failures and breakers: exactly the threshold analyzer's (asked
        // without the traffic, which is judged here).
        let bare = Observation {
            canary: VersionObservation { traffic: None, ..c.clone() },
            baseline: None,
            window_ms: obs.window_ms,
            freshness_ms: obs.freshness_ms,
            signals: Vec::new(),
        };
        let mut signals: Vec<SignalResult> = ThresholdAnalyzer
            .evaluate(&bare, spec, mode)
            .signals
            .into_iter()
            .filter(|s| matches!(s.signal.as_str(), "start" | "crash" | "breaker" | "probe"))
            .collect();

        let baseline = obs.baseline.as_ref().map(|b| (b.version.as_str(), b.traffic.as_ref()));
        match &c.traffic {
            None => signals.push(ctx.signal(
                "traffic",
                if mode == Mode::Phase { Health::Unknown } else { Health::Healthy },
                "count",
                "router metrics must be readable".into(),
                "the router's metrics could not be read".into(),
            )),
            Some(t) => {
                let enough = t.requests >= spec.min_requests;
                let mut volume = ctx.signal(
                    "traffic",
                    if enough || mode == Mode::ProbesOnly { Health::Healthy } else { Health::Unknown },
                    "requests",
                    format!("at least {} requests to the new version", spec.min_requests),
                    if enough {
                        format!("{} requests served", t.requests)
                    } else {
                        format!("only {} of the {} requests needed so far", t.requests, spec.min_requests)
                    },
                );
                volume.observed = Some(t.requests as f64);
                volume.threshold = Some(spec.min_requests as f64);
                volume.sample_size = t.requests;
                volume.baseline = baseline.and_then(|(_, b)| b).map(|b| b.requests as f64);
                signals.push(volume);

                let stable = baseline.and_then(|(_, b)| b);
                signals.push(error_guard(&ctx, spec, t, stable));
                if let Some(s) = latency_guard(&ctx, spec, t, stable) {
                    signals.push(s);
                }
                if mode == Mode::Phase {
                    compare(&ctx, t, baseline, &mut signals);
                }
            }
        }

        Verdict {
            health: rollup(signals.iter().map(|s| s.health)),
            model: None,
            signals,
            window_ms: obs.window_ms,
            freshness_ms: obs.freshness_ms,
            analyzer: self.name().into(),
        }
    }
}

/// A guard's verdict: failed on evidence; pending while its observation is over the limit
/// without evidence yet (never "ok" next to a rate above it); else fine.
fn guard_health(bad: bool, pending: bool) -> Health {
    if bad {
        Health::Unhealthy
    } else if pending {
        Health::Unknown
    } else {
        Health::Healthy
    }
}

/// Sequential one-sample test of "error rate at most `max_error_rate`".
fn error_guard(ctx: &Ctx<'_>, spec: &HealthSpec, t: &Traffic, stable: Option<&Traffic>) -> SignalResult {
    let errors = t.errors.min(t.requests);
    let alpha = ctx.budget.error_guard;
    let log_e = if spec.max_error_rate >= 1.0 || alpha <= 0.0 {
        0.0
    } else {
        log_e_upper(
            errors as f64,
            (t.requests - errors) as f64,
            spec.max_error_rate.max(0.0),
            &eprocess::uniform(&GUARD_ALTERNATIVES),
        )
    };
    let bad = alpha > 0.0 && log_e >= (1.0 / alpha).ln();
    let rate = t.error_rate().unwrap_or(0.0);
    // Above the limit but not yet significant: pending, never "ok" next to a rate over it.
    let pending = !bad && rate > spec.max_error_rate;
    let mut s = ctx.signal(
        "error_rate_limit",
        guard_health(bad, pending),
        "ratio",
        format!(
            "fails on evidence that the error rate is above {} (sequential test, α = {} per phase)",
            pct(spec.max_error_rate),
            fmt_alpha(alpha)
        ),
        format!(
            "{}{} of {} requests failed ({}); e-value {} of {} needed for a rate above {}",
            if pending { "pending: above the limit, not yet significant; " } else { "" },
            errors,
            t.requests,
            pct(rate),
            fmt_e(log_e),
            fmt_e((1.0 / alpha).ln()),
            pct(spec.max_error_rate)
        ),
    );
    s.observed = Some(rate);
    s.threshold = Some(spec.max_error_rate);
    s.sample_size = t.requests;
    s.baseline = stable.and_then(Traffic::error_rate);
    s.baseline_sample_size = stable.map(|b| b.requests);
    s
}

/// Sequential one-sample test of "at most 1% of requests slower than `max_p99_latency`".
fn latency_guard(ctx: &Ctx<'_>, spec: &HealthSpec, t: &Traffic, stable: Option<&Traffic>) -> Option<SignalResult> {
    let limit = spec.max_p99_latency?;
    let limit_us = limit.as_ms().saturating_mul(1000);
    let h = Hist::new(&t.latency_us, stable.map_or(&[][..], |b| &b.latency_us[..]));
    let slow = h.above_at_least(limit_us);
    let alpha = ctx.budget.latency_guard;
    let log_e = if alpha <= 0.0 {
        0.0
    } else {
        log_e_upper(slow as f64, (h.total - slow) as f64, GUARD_TAIL, &eprocess::uniform(&GUARD_ALTERNATIVES))
    };
    let bad = alpha > 0.0 && log_e >= (1.0 / alpha).ln();
    let pending = !bad && h.total > 0 && slow as f64 > GUARD_TAIL * h.total as f64;
    let mut s = ctx.signal(
        "latency_p99_limit",
        guard_health(bad, pending),
        "ms",
        format!(
            "fails on evidence that more than 1% of requests are slower than {limit} (sequential test, α = {} per phase)",
            fmt_alpha(alpha)
        ),
        format!(
            "{}{slow} of {} requests slower than {limit}; e-value {} of {} needed for more than 1%",
            if pending { "pending: p99 above the limit, not yet significant; " } else { "" },
            h.total,
            fmt_e(log_e),
            fmt_e((1.0 / alpha).ln())
        ),
    );
    s.observed = h.quantile(0.99).map(|u| if u == u64::MAX { f64::MAX } else { u as f64 / 1000.0 });
    s.threshold = Some(limit.as_ms() as f64);
    s.sample_size = h.total;
    s.baseline = stable.and_then(|b| b.quantile_us(0.99)).map(|u| u as f64 / 1000.0);
    s.baseline_sample_size = stable.map(|b| b.requests);
    Some(s)
}

/// The comparison with the stable version: sample ratio, error rate and latency.
fn compare(ctx: &Ctx<'_>, t: &Traffic, baseline: Option<(&str, Option<&Traffic>)>, out: &mut Vec<SignalResult>) {
    if ctx.weight.is_some_and(|w| w >= 1.0) {
        return; // All traffic on the new version: nothing to compare with; the guards judge.
    }
    let Some((stable_version, stable)) = baseline else {
        return; // A first deploy: the guards judge.
    };
    let unknown = |why: String| {
        ["error_rate", "latency"]
            .map(|s| ctx.signal(s, Health::Unknown, "e-value", "compared with the stable version".into(), why.clone()))
    };
    let Some(b) = stable else {
        out.extend(unknown(format!("the traffic of {stable_version} could not be read")));
        return;
    };
    if b.requests == 0 {
        if ctx.weight.is_some() || t.requests == 0 {
            out.extend(unknown(format!("{stable_version} has served no request in the window yet")));
        }
        return;
    }
    if t.requests == 0 {
        out.extend(unknown("the new version has served no request in the window yet".into()));
        return;
    }
    let share_grid = eprocess::uniform(&SHARE_ALTERNATIVES);
    let observed_share = t.requests as f64 / (t.requests + b.requests) as f64;
    if let Some(w) = ctx.weight {
        out.push(sample_ratio(ctx, t, b, w, observed_share, &share_grid));
    }
    // The canary's share of traffic used as the null: see the module docs.
    let null_share = |k: u64, m: u64| match ctx.weight {
        Some(w) => share_of(w, k, m, ctx.cfg.share_prior_requests),
        None => upper_confidence(k as f64, m as f64, ctx.budget.share / 2.0, &share_grid),
    };
    out.push(error_test(ctx, t, b, null_share(t.requests, b.requests)));
    // The latency test takes the observed share as it is (no prior): at thresholds that nearly
    // every request exceeds, its events are the requests themselves, so an early excess of
    // requests to the new version (a burst, a heavy user) would read as a slow-down.
    let latency_share = |k: u64, m: u64| match ctx.weight {
        Some(w) => share_of(w, k, m, 0.0),
        None => null_share(k, m),
    };
    out.push(latency_test(ctx, t, b, &latency_share));
}

fn sample_ratio(
    ctx: &Ctx<'_>,
    t: &Traffic,
    b: &Traffic,
    w: f64,
    observed: f64,
    grid: &[eprocess::Component],
) -> SignalResult {
    let (k, m) = (t.requests as f64, b.requests as f64);
    let tol = ctx.cfg.srm_tolerance.max(0.0);
    // The users' sampling spread (see the module docs), from the users the canary drew.
    let drawn = ctx.users.filter(|&u| u > 0 && w > 0.0 && w < 1.0).map(|u| (u, (u as f64 / w).max(1.0)));
    let spread = drawn.map_or(0.0, |(_, n)| ctx.cfg.srm_user_spread.max(0.0) * (w * (1.0 - w) / n).sqrt());
    let hi = (w * (1.0 + tol) + spread).min(1.0);
    let lo = w * (1.0 - tol) - spread;
    let log_hi = if hi < 1.0 { log_e_upper(k, m, hi, grid) } else { 0.0 };
    let log_lo = if lo > 0.0 { log_e_lower(k, m, lo, grid) } else { 0.0 };
    let log_e = log_hi.max(log_lo);
    let alpha = ctx.cfg.srm_alpha;
    let bad = log_e >= (2.0 / alpha).ln();
    let mut s = ctx.signal(
        "sample_ratio",
        if bad { Health::Unknown } else { Health::Healthy },
        "ratio",
        format!(
            "the new version's share of requests within {} ± {:.0}% of its weight{} (sequential test, α = {}); a mismatch holds the rollout",
            pct(w),
            tol * 100.0,
            match drawn {
                Some((u, n)) => format!(
                    ", ± {:.1} points for the chance in which of about {} sticky users ({u} of them to the new version) its buckets hold",
                    spread * 100.0,
                    n.round() as u64
                ),
                None => String::new(),
            },
            fmt_alpha(alpha)
        ),
        if bad {
            format!(
                "sample ratio mismatch: the router sent {} of requests to the new version ({} of {}), told {}; e-value {}",
                pct(observed),
                t.requests,
                t.requests + b.requests,
                pct(w),
                fmt_e(log_e)
            )
        } else {
            format!(
                "{} of requests to the new version ({} of {}), told {}",
                pct(observed),
                t.requests,
                t.requests + b.requests,
                pct(w)
            )
        },
    );
    s.observed = Some(observed);
    s.threshold = Some(w);
    s.sample_size = t.requests;
    s.baseline_sample_size = Some(b.requests);
    s
}

/// The traffic share an earlier phase is judged with: its weight or what it actually got,
/// whichever is larger (see the module docs).
fn window_share(w: &PhaseWindow, n0: f64) -> f64 {
    share_of(w.weight_bp as f64 / 10_000.0, w.canary.requests, w.stable.requests, n0)
}

/// The larger of the weight and the share `k` of `k + m` observed, the latter counted with
/// `n0` requests at the weight: sampling noise in the first requests is not a skewed split,
/// and a split that really is skewed shows once the requests outnumber `n0`.
fn share_of(weight: f64, k: u64, m: u64, n0: f64) -> f64 {
    let n0 = n0.max(0.0);
    weight.max((k as f64 + weight * n0) / ((k + m) as f64 + n0).max(1.0))
}

/// ", with the evidence of 2 earlier phases" when there is any.
fn carried_note(ctx: &Ctx<'_>) -> String {
    match ctx.carried.errors.len() {
        0 => String::new(),
        1 => ", with the evidence of the earlier phase".into(),
        n => format!(", with the evidence of {n} earlier phases"),
    }
}

fn error_test(ctx: &Ctx<'_>, t: &Traffic, b: &Traffic, share: f64) -> SignalResult {
    let cfg = ctx.cfg;
    let (ec, eb) = (t.errors.min(t.requests), b.errors.min(b.requests));
    let alpha = ctx.budget.errors;
    let log_threshold = (1.0 / alpha).ln();
    let null_ratio = cfg.error_null_ratio(eb, b.requests);
    let mixture = Mixture::new(null_event_share(share, null_ratio), &cfg.error_grid());
    let mut segments = ctx.carried.errors.clone();
    segments.push((ctx.budget.ordinal, mixture.log_ratios(ec as f64, eb as f64).collect()));
    let log_weights: Vec<f64> = mixture.log_weights().collect();
    let log_e = carried_log_e(&segments, &log_weights, &ctx.budget.starts, ctx.budget.ordinal);
    let rate_c = ec as f64 / t.requests as f64;
    let rate_b = eb as f64 / b.requests as f64;
    let numbers = format!(
        "new {ec} of {} failed ({}), stable {eb} of {} ({}){}; e-value {} of {} needed, new version's share of traffic taken as {}",
        t.requests,
        pct(rate_c),
        b.requests,
        pct(rate_b),
        carried_note(ctx),
        fmt_e(log_e),
        fmt_e(log_threshold),
        pct(share)
    );
    let pass = pass_errors(ctx, t, rate_b);
    let (health, detail) = if log_e >= log_threshold {
        (Health::Unhealthy, format!("error rate above the margin: {numbers}"))
    } else {
        match &pass {
            Some(p) if !p.passed => (Health::Unknown, format!("pending: {}; {numbers}", p.detail)),
            Some(p) => (Health::Healthy, format!("{}; {numbers}", p.detail)),
            None => (Health::Healthy, format!("no regression beyond the margin: {numbers}")),
        }
    };
    let mut s = ctx.signal(
        "error_rate",
        health,
        "e-value",
        format!(
            "fails on evidence that the new version's error rate is above {} and {} points above it (sequential test, α = {} over the rollout){}",
            if cfg.error_margin_ratio > 1.0 {
                format!("{} the stable's", fmt_ratio(cfg.error_margin_ratio))
            } else {
                "the stable's".to_string()
            },
            fmt_points(cfg.error_margin_abs),
            fmt_alpha(alpha),
            pass.as_ref().map_or(String::new(), |p| format!("; passes on evidence that it is below {} (α = {})", pct(p.limit), fmt_alpha(p.level)))
        ),
        detail,
    );
    s.observed = Some(shown(log_e));
    s.threshold = Some(1.0 / alpha);
    s.sample_size = t.requests;
    s.baseline_sample_size = Some(b.requests);
    s.values = [
        ("canary_errors", ec as f64),
        ("canary_rate", rate_c),
        ("stable_errors", eb as f64),
        ("stable_rate", rate_b),
        ("share", share),
        ("alpha", alpha),
        ("null_ratio", null_ratio),
        ("carried_phases", ctx.carried.errors.len() as f64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(
        pass.iter().flat_map(|p| [("pass_e_value".to_string(), shown(p.log_e)), ("pass_limit".to_string(), p.limit)]),
    )
    .collect();
    s
}

/// The outcome of a pass (non-inferiority) test.
struct Pass {
    passed: bool,
    log_e: f64,
    /// The error rate (or, for latency, unused) the new version was shown to be below.
    limit: f64,
    level: f64,
    detail: String,
}

/// Odds ratios of the pass tests' alternatives: from "as good as the stable version" at the
/// default target (x4) to "no failure at all".
pub(crate) const PASS_ALTERNATIVES: [f64; 6] = [1.5, 2.0, 4.0, 10.0, 100.0, 1000.0];

/// Has the new version been shown to fail less often than the target regression would? A
/// one-sample sequential test of "error rate at least the limit" on its requests, at level
/// `1 - power`; `None` when the spec turns the pass tests off.
fn pass_errors(ctx: &Ctx<'_>, t: &Traffic, stable_rate: f64) -> Option<Pass> {
    let cfg = ctx.cfg;
    let level = cfg.pass_level()?;
    let limit = cfg.pass_error_limit(stable_rate);
    let ec = t.errors.min(t.requests);
    let grid = eprocess::uniform(&PASS_ALTERNATIVES);
    let log_e = log_e_lower(ec as f64, (t.requests - ec) as f64, limit, &grid);
    let log_threshold = (1.0 / level).ln();
    if log_e >= log_threshold {
        return Some(Pass {
            passed: true,
            log_e,
            limit,
            level,
            detail: format!("shown to be below {} (the target regression)", pct(limit)),
        });
    }
    // How many requests a version as good as the stable one needs in all, with the planner's
    // assumptions: the same figure `ringfence plan` gives for the phase.
    let needed = planner::requests_to_pass_errors(cfg, stable_rate).unwrap_or(f64::INFINITY);
    let more = (needed - t.requests as f64).max(1.0);
    Some(Pass {
        passed: false,
        log_e,
        limit,
        level,
        detail: if needed.is_finite() {
            format!(
                "not yet shown to be below {} (the target regression); ~{:.0} more requests{}",
                pct(limit),
                more,
                ctx.time_for(more, t.requests)
            )
        } else {
            format!("not yet shown to be below {} (the target regression)", pct(limit))
        },
    })
}

/// The quantiles of the stable version at which a phase must show the new version to be
/// within the target before it passes.
pub(crate) const PASS_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// Has the new version been shown to be no slower than the target at the stable version's
/// median, p90 and p99? At each, a sequential test of "the new version's requests exceed the
/// target bound at least as often as the stable's exceed the quantile" on the share of those
/// events that are the new version's, against its share of requests; all three must reject
/// (an intersection-union test: each at level `1 - power`, no correction needed). Counts are
/// rounded against passing.
fn pass_latency(ctx: &Ctx<'_>, hc: &Hist, hb: &Hist) -> Option<Pass> {
    let cfg = ctx.cfg;
    let level = cfg.pass_level()?;
    let log_threshold = (1.0 / level).ln();
    let grid = eprocess::uniform(&PASS_ALTERNATIVES);
    let share = hc.total as f64 / (hc.total + hb.total) as f64;
    let mut weakest: Option<(f64, f64, u64, u64)> = None;
    for q in PASS_QUANTILES {
        let x = hb.quantile(q)?;
        let Some(bound) = cfg.pass_latency_bound(x) else { continue };
        let (k, m) = (hc.above_at_most(bound), hb.above_at_least(x));
        let log_e = log_e_lower(k as f64, m as f64, share, &grid);
        if weakest.is_none_or(|w| log_e < w.1) {
            weakest = Some((q, log_e, x, bound));
        }
    }
    let (q, log_e, x, bound) = weakest?;
    let name = |q: f64| if q == 0.5 { "median".to_string() } else { format!("p{:.0}", q * 100.0) };
    if log_e >= log_threshold {
        return Some(Pass {
            passed: true,
            log_e,
            limit: 0.0,
            level,
            detail: format!(
                "shown to be within {} of the stable's median, p90 and p99 (the target regression)",
                fmt_ratio(cfg.target_latency_ratio)
            ),
        });
    }
    let needed = planner::requests_to_pass_latency(cfg, hb, share).unwrap_or(f64::INFINITY);
    let more = (needed - hc.total as f64).max(1.0);
    Some(Pass {
        passed: false,
        log_e,
        limit: 0.0,
        level,
        detail: format!(
            "not yet shown to be within {} of the stable's {} ({} of the new version's requests slower than {} vs {} of the stable's slower than {}){}",
            fmt_ratio(cfg.target_latency_ratio),
            name(q),
            hc.above_at_most(bound),
            ms(bound),
            hb.above_at_least(x),
            ms(x),
            if needed.is_finite() {
                format!("; ~{:.0} more requests{}", more, ctx.time_for(more, hc.total))
            } else {
                String::new()
            }
        ),
    })
}

fn fmt_ratio(r: f64) -> String {
    format!("{}x", (r * 100.0).round() / 100.0)
}

fn fmt_points(abs: f64) -> String {
    let p = abs * 100.0;
    if p == p.round() { format!("{p:.0}") } else { format!("{}", (p * 1000.0).round() / 1000.0) }
}

fn latency_test(ctx: &Ctx<'_>, t: &Traffic, b: &Traffic, null_share: &dyn Fn(u64, u64) -> f64) -> SignalResult {
    let cfg = ctx.cfg;
    let alpha = ctx.budget.latency;
    let log_threshold = (1.0 / alpha).ln();
    let rule = format!(
        "fails on evidence that the new version is slower than {} the stable's and {} more at some quantile (sequential test over every latency threshold, α = {} over the rollout){}",
        fmt_ratio(cfg.latency_margin_ratio),
        ms(cfg.latency_margin_us),
        fmt_alpha(alpha),
        cfg.pass_level().map_or(String::new(), |level| format!(
            "; passes on evidence that it is within {} (and {} more) at the stable's median, p90 and p99 (α = {})",
            fmt_ratio(cfg.target_latency_ratio),
            ms(cfg.latency_margin_us),
            fmt_alpha(level)
        ))
    );
    let hc = Hist::new(&t.latency_us, &b.latency_us);
    let hb = Hist::new(&b.latency_us, &t.latency_us);
    if hc.is_empty() || hb.is_empty() {
        let mut s = ctx.signal(
            "latency",
            Health::Unknown,
            "e-value",
            rule,
            format!("no latency recorded yet for the {} version", if hc.is_empty() { "new" } else { "stable" }),
        );
        s.threshold = Some(1.0 / alpha);
        return s;
    }
    let share = null_event_share(null_share(hc.total, hb.total), cfg.min_exceedance_ratio);
    let mixture = Mixture::new(share, &cfg.latency_grid());
    let alternatives: Vec<f64> = mixture.log_weights().collect();
    let thresholds = cfg.latency_thresholds();
    // Every (threshold, alternative) pair is one alternative of a single mixture, weighted
    // by the alternative's weight over the number of thresholds; carried like the error test.
    let current = exceedance_ratios(&thresholds, &mixture, &hc, &hb);
    let per_threshold = -(thresholds.len().max(1) as f64).ln();
    let log_weights: Vec<f64> =
        thresholds.iter().flat_map(|_| alternatives.iter().map(|w| w + per_threshold)).collect();
    // The threshold with the most evidence in this phase, for the evidence's words.
    let (best, best_log) = current
        .chunks(alternatives.len().max(1))
        .map(|ll| eprocess::log_sum_exp(ll.iter().zip(&alternatives).map(|(l, w)| l + w)))
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, 0.0));
    let mut segments = ctx.carried.latency.clone();
    segments.push((ctx.budget.ordinal, current));
    let log_e = carried_log_e(&segments, &log_weights, &ctx.budget.starts, ctx.budget.ordinal);
    let (k, m) =
        thresholds.get(best).map_or((0, 0), |th| (hc.above_at_least(th.canary_us), hb.above_at_most(th.stable_us)));
    let p99 = |h: &Hist| h.quantile(0.99).map_or("-".into(), ms);
    let numbers = match thresholds.get(best) {
        Some(th) if best_log > 0.0 => format!(
            "p99 new {} vs stable {}; strongest at {}: new {} of {} slower than {}, stable {} of {} slower than {}; e-value {} of {} needed (α = {}){}",
            p99(&hc),
            p99(&hb),
            ms(th.stable_us),
            k,
            hc.total,
            ms(th.canary_us),
            m,
            hb.total,
            ms(th.stable_us),
            fmt_e(log_e),
            fmt_e(log_threshold),
            fmt_alpha(alpha),
            carried_note(ctx)
        ),
        _ => format!(
            "p99 new {} vs stable {}; e-value {} of {} needed (α = {}){}",
            p99(&hc),
            p99(&hb),
            fmt_e(log_e),
            fmt_e(log_threshold),
            fmt_alpha(alpha),
            carried_note(ctx)
        ),
    };
    let pass = pass_latency(ctx, &hc, &hb);
    let (health, detail) = if log_e >= log_threshold {
        (Health::Unhealthy, format!("latency above the margin: {numbers}"))
    } else {
        match &pass {
            Some(p) if !p.passed => (Health::Unknown, format!("pending: {}; {numbers}", p.detail)),
            Some(p) => (Health::Healthy, format!("{}; {numbers}", p.detail)),
            None => (Health::Healthy, format!("no regression beyond the margin: {numbers}")),
        }
    };
    let mut s = ctx.signal("latency", health, "e-value", rule, detail);
    s.observed = Some(shown(log_e));
    s.threshold = Some(1.0 / alpha);
    s.sample_size = hc.total;
    s.baseline_sample_size = Some(hb.total);
    s.values.insert("alpha".into(), alpha);
    if let Some(p) = &pass {
        s.values.insert("pass_e_value".into(), shown(p.log_e));
    }
    if let (Some(c), Some(b)) = (t.quantile_us(0.99), b.quantile_us(0.99)) {
        s.values.insert("canary_p99_ms".into(), c as f64 / 1000.0);
        s.values.insert("stable_p99_ms".into(), b as f64 / 1000.0);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::latency::router_grid;

    /// SplitMix64: a tiny deterministic generator for simulated traffic.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn f64(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (self.f64().max(1e-300), self.f64());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    /// Cumulative counters of one version.
    #[derive(Default, Clone)]
    struct Side {
        requests: u64,
        errors: u64,
        buckets: Vec<u64>,
    }

    impl Side {
        fn add(&mut self, failed: bool, latency_us: f64) {
            let grid = router_grid();
            if self.buckets.is_empty() {
                self.buckets = vec![0; grid.len()];
            }
            self.requests += 1;
            self.errors += failed as u64;
            let i = grid.partition_point(|&b| (b as f64) < latency_us).min(grid.len() - 1);
            self.buckets[i] += 1;
        }

        fn traffic(&self) -> Traffic {
            let grid = router_grid();
            Traffic {
                requests: self.requests,
                errors: self.errors,
                latency_us: self
                    .buckets
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(i, c)| (grid[i], *c))
                    .collect(),
            }
        }
    }

    struct Version {
        errors: f64,
        latency_scale: f64,
    }

    const STABLE: Version = Version { errors: 0.005, latency_scale: 1.0 };

    fn observation(canary: Option<Traffic>, stable: Option<Option<Traffic>>, window_ms: u64) -> Observation {
        Observation {
            canary: VersionObservation {
                version: "v2".into(),
                traffic: canary,
                probes_answered: 1,
                ..Default::default()
            },
            baseline: stable.map(|traffic| VersionObservation {
                version: "v1".into(),
                traffic,
                probes_answered: 1,
                ..Default::default()
            }),
            window_ms,
            freshness_ms: 100,
            signals: vec![],
        }
    }

    fn analyzer(weight_bp: u32) -> SequentialAnalyzer {
        let phase = PLAN.iter().position(|&w| w == weight_bp).unwrap_or(0);
        SequentialAnalyzer::default().in_phase(PhaseContext::of_plan(&PLAN, phase))
    }

    /// Simulates `seconds` of 200 req/s split at `weight_bp`, asking for a verdict every
    /// second; returns the second of the first unhealthy verdict and the last verdict.
    fn simulate(seed: u64, weight_bp: u32, canary: &Version, seconds: u64) -> (Option<u64>, Verdict) {
        let mut rng = Rng(seed);
        let (mut c, mut s) = (Side::default(), Side::default());
        let a = analyzer(weight_bp);
        let spec = HealthSpec::default();
        let mut last = None;
        for second in 1..=seconds {
            for _ in 0..200 {
                let on_canary = rng.f64() * 10_000.0 < weight_bp as f64;
                let v = if on_canary { canary } else { &STABLE };
                let failed = rng.f64() < v.errors;
                let latency = 20_000.0 * v.latency_scale * (0.5 * rng.normal()).exp();
                if on_canary { c.add(failed, latency) } else { s.add(failed, latency) }
            }
            let o = observation(Some(c.traffic()), Some(Some(s.traffic())), second * 1000);
            let v = a.evaluate(&o, &spec, Mode::Phase);
            if v.health == Health::Unhealthy {
                return (Some(second), v);
            }
            last = Some(v);
        }
        (None, last.expect("at least one second"))
    }

    fn signal<'a>(v: &'a Verdict, name: &str) -> &'a SignalResult {
        v.signals.iter().find(|s| s.signal == name).unwrap_or_else(|| panic!("no {name} in {v:#?}"))
    }

    #[test]
    fn identical_versions_are_almost_never_rejected() {
        // 30 seeded A/A phases of 60 s, looked at every second. The guarantee is that fewer
        // than alpha of them reject; allow one for slack.
        let rejected = (0..30).filter(|&seed| simulate(seed, 2500, &STABLE, 60).0.is_some()).count();
        assert!(rejected <= 1, "{rejected} of 30 A/A phases rejected");
    }

    #[test]
    fn an_identical_version_passes_once_the_phase_has_enough_data() {
        let (failed, last) = simulate(7, 2500, &STABLE, 120);
        assert_eq!(failed, None);
        assert_eq!(last.health, Health::Healthy, "{last:#?}");
        assert_eq!(last.analyzer, "sequential");
        assert!(signal(&last, "error_rate").detail.starts_with("shown to be below"), "{last:#?}");
        assert!(signal(&last, "latency").detail.starts_with("shown to be within"), "{last:#?}");
    }

    #[test]
    fn too_little_data_is_inconclusive_not_healthy() {
        let (_, last) = simulate(3, 1000, &STABLE, 5);
        assert_eq!(last.health, Health::Unknown);
        let e = signal(&last, "error_rate");
        assert_eq!(e.health, Health::Unknown);
        assert!(e.detail.starts_with("pending: not yet shown to be below"), "{}", e.detail);
        assert!(e.detail.contains("more requests"), "{}", e.detail);
    }

    #[test]
    fn a_hard_failure_is_caught_within_seconds_with_evidence() {
        let bad = Version { errors: 0.2, latency_scale: 1.0 };
        let (at, v) = simulate(11, 1000, &bad, 30);
        assert!(at.is_some_and(|s| s <= 3), "{at:?}");
        let s = signal(&v, "error_rate");
        assert_eq!(s.health, Health::Unhealthy);
        assert_eq!(s.unit, "e-value");
        assert!(s.observed.unwrap() >= s.threshold.unwrap());
        assert!(s.sample_size > 0 && s.baseline_sample_size.unwrap() > s.sample_size);
        assert!(s.detail.contains("stable") && s.rule.contains("α = "), "{s:?}");
    }

    #[test]
    fn a_subtle_error_regression_is_caught() {
        let bad = Version { errors: 0.03, latency_scale: 1.0 };
        let (at, v) = simulate(5, 2500, &bad, 120);
        assert!(at.is_some(), "not detected: {v:#?}");
        assert_eq!(v.deciding().next().unwrap().signal, "error_rate");
    }

    #[test]
    fn a_slower_version_is_caught_by_latency() {
        let slow = Version { errors: 0.005, latency_scale: 1.6 };
        let (at, v) = simulate(9, 2500, &slow, 60);
        assert!(at.is_some_and(|s| s <= 20), "{at:?}");
        let s = signal(&v, "latency");
        assert_eq!(s.health, Health::Unhealthy);
        assert!(s.detail.contains("slower than"), "{}", s.detail);
    }

    /// `requests`, `errors` of them failed, all in one latency bucket.
    fn t(requests: u64, errors: u64) -> Traffic {
        Traffic { requests, errors, latency_us: vec![(router_grid()[100], requests)] }
    }

    fn window(phase: usize, weight_bp: u32, canary: (u64, u64), stable: (u64, u64)) -> PhaseWindow {
        PhaseWindow { phase, weight_bp, canary: t(canary.0, canary.1), stable: t(stable.0, stable.1) }
    }

    const PLAN: [u32; 4] = [1000, 2500, 5000, 10_000];

    #[test]
    fn evidence_from_an_earlier_phase_counts() {
        // Phase 1 at 10% ended with the new version failing 1.5% against 0.5%: suspicious,
        // not yet conclusive. The start of phase 2 at 25% alone is not conclusive either.
        let spec = HealthSpec::default();
        let first = window(0, 1000, (1200, 18), (10_800, 54));
        let o = observation(Some(t(250, 5)), Some(Some(t(750, 4))), 5000);
        let alone = analyzer(2500).evaluate(&o, &spec, Mode::Phase);
        assert_ne!(alone.health, Health::Unhealthy, "{alone:#?}");
        let carried = analyzer(2500).after(&PLAN, std::slice::from_ref(&first)).evaluate(&o, &spec, Mode::Phase);
        assert_eq!(carried.health, Health::Unhealthy, "{carried:#?}");
        let s = signal(&carried, "error_rate");
        assert!(s.detail.contains("with the evidence of the earlier phase"), "{}", s.detail);
        assert_eq!(s.values["carried_phases"], 1.0);
        // And phase 1 on its own had not crossed the line.
        let phase1 = observation(Some(first.canary.clone()), Some(Some(first.stable.clone())), 60_000);
        assert_ne!(analyzer(1000).evaluate(&phase1, &spec, Mode::Phase).health, Health::Unhealthy);
    }

    #[test]
    fn the_traffic_share_trusts_the_weight_until_requests_say_otherwise() {
        // 12 of the first 100 requests at 10%: sampling noise, the null stays near the weight.
        assert!((share_of(0.1, 12, 88, 1000.0) - 0.1018).abs() < 1e-3);
        // 12% over 10,000 requests is a skewed split: the observed share takes over.
        assert!(share_of(0.1, 1200, 8800, 1000.0) > 0.118);
        // Never below the weight, and with no prior the plain observed share.
        assert_eq!(share_of(0.1, 5, 95, 1000.0), 0.1);
        assert!((share_of(0.1, 12, 88, 0.0) - 0.12).abs() < 1e-12);
        assert_eq!(share_of(0.25, 0, 0, 1000.0), 0.25);
    }

    #[test]
    fn a_clean_first_phase_does_not_hide_a_later_regression() {
        let spec = HealthSpec::default();
        let clean = window(0, 1000, (1200, 6), (10_800, 54));
        let o = observation(Some(t(100, 20)), Some(Some(t(300, 2))), 2000);
        let v = analyzer(2500).after(&PLAN, &[clean]).evaluate(&o, &spec, Mode::Phase);
        assert_eq!(v.health, Health::Unhealthy, "{v:#?}");
    }

    #[test]
    fn windows_of_full_phases_or_without_traffic_are_not_carried() {
        let a = analyzer(5000).after(
            &PLAN,
            &[
                window(1, 2500, (100, 1), (300, 1)),
                window(0, 1000, (0, 0), (900, 4)),
                window(3, 10_000, (10, 0), (0, 0)),
            ],
        );
        assert_eq!(a.carried_phases(), vec![1], "phase 2 is the second comparison phase");
    }

    #[test]
    fn identical_versions_over_a_whole_rollout_are_almost_never_rejected() {
        // 20 seeded A/A rollouts through both comparison phases with the evidence carried.
        let spec = HealthSpec::default();
        let mut rejected = 0;
        for seed in 0..20 {
            let mut windows = Vec::new();
            for (phase, &w) in PLAN.iter().take(3).enumerate() {
                let mut rng = Rng(seed * 7 + phase as u64);
                let (mut c, mut s) = (Side::default(), Side::default());
                let a = analyzer(w).after(&PLAN, &windows);
                let mut failed = false;
                for second in 1..=60 {
                    for _ in 0..200 {
                        let on_canary = rng.f64() * 10_000.0 < w as f64;
                        let failed_req = rng.f64() < STABLE.errors;
                        let latency = 20_000.0 * (0.5 * rng.normal()).exp();
                        if on_canary { c.add(failed_req, latency) } else { s.add(failed_req, latency) }
                    }
                    let o = observation(Some(c.traffic()), Some(Some(s.traffic())), second * 1000);
                    if a.evaluate(&o, &spec, Mode::Phase).health == Health::Unhealthy {
                        failed = true;
                        break;
                    }
                }
                if failed {
                    rejected += 1;
                    break;
                }
                windows.push(PhaseWindow { phase, weight_bp: w, canary: c.traffic(), stable: s.traffic() });
            }
        }
        assert!(rejected <= 1, "{rejected} of 20 A/A rollouts rejected");
    }

    /// A spread of latencies around grid bucket `center`, shifted by `shift` buckets (each
    /// bucket is ×1.1), `n` requests in all.
    fn spread(center: usize, shift: usize, n: u64) -> Vec<(u64, u64)> {
        let g = router_grid();
        let weights = [1u64, 3, 8, 16, 24, 16, 8, 3, 1];
        let total: u64 = weights.iter().sum();
        weights.iter().enumerate().map(|(k, w)| (g[center + shift + k - 4], n * w / total)).collect()
    }

    fn judged(cfg: SequentialConfig, canary: Traffic, stable: Traffic) -> Verdict {
        let spec = HealthSpec { max_error_rate: 1.0, ..HealthSpec::default() };
        SequentialAnalyzer::new(cfg).in_phase(PhaseContext::of_plan(&[1000, 10_000], 0)).evaluate(
            &observation(Some(canary), Some(Some(stable)), 600_000),
            &spec,
            Mode::Phase,
        )
    }

    #[test]
    fn errors_just_inside_the_margin_never_fail_and_just_outside_they_do() {
        // The margin "x2 and +0.5 points" on a stable version failing 1%: the new version
        // fails only above 2%. Huge samples, so the evidence is overwhelming either way (the
        // prior's smallest alternative is x1.3 over the margin).
        let cfg = SequentialConfig { error_margin_ratio: 2.0, error_margin_abs: 0.005, ..Default::default() };
        let g = router_grid();
        let stable = Traffic { requests: 900_000, errors: 9_000, latency_us: vec![(g[100], 900_000)] };
        let at = |errors: u64| Traffic { requests: 100_000, errors, latency_us: vec![(g[100], 100_000)] };
        let inside = judged(cfg.clone(), at(1_900), stable.clone());
        assert_ne!(signal(&inside, "error_rate").health, Health::Unhealthy, "1.9%: {inside:#?}");
        let outside = judged(cfg.clone(), at(2_400), stable.clone());
        assert_eq!(signal(&outside, "error_rate").health, Health::Unhealthy, "2.4%: {outside:#?}");
        // Without the margin 1.9% against 1% is a regression.
        let strict = SequentialConfig { error_margin_ratio: 1.0, error_margin_abs: 0.0, ..Default::default() };
        assert_eq!(signal(&judged(strict, at(1_900), stable), "error_rate").health, Health::Unhealthy);
        // Where the stable version hardly fails, the absolute part decides: 0.3% against
        // 0.1% is x3 but only +0.2 points, inside "+0.5 points".
        let rare = Traffic { requests: 900_000, errors: 900, latency_us: vec![(g[100], 900_000)] };
        assert_ne!(signal(&judged(cfg.clone(), at(300), rare.clone()), "error_rate").health, Health::Unhealthy);
        assert_eq!(signal(&judged(cfg, at(1_200), rare), "error_rate").health, Health::Unhealthy, "1.2% vs 0.1%");
    }

    #[test]
    fn latency_just_inside_the_margin_never_fails_and_just_outside_it_does() {
        // The default margin: x1.1 and +2 ms. Around 40 ms the relative part decides: one
        // bucket (+10%) slower is inside, two buckets (+21%) outside.
        let cfg = SequentialConfig::default();
        let g = router_grid();
        let center = g.partition_point(|&b| b < 40_000);
        let t = |shift: usize, n: u64| Traffic { requests: n, errors: 0, latency_us: spread(center, shift, n) };
        let inside = judged(cfg.clone(), t(1, 100_000), t(0, 900_000));
        assert_ne!(signal(&inside, "latency").health, Health::Unhealthy, "+10%: {inside:#?}");
        let outside = judged(cfg.clone(), t(2, 100_000), t(0, 900_000));
        assert_eq!(signal(&outside, "latency").health, Health::Unhealthy, "+21%: {outside:#?}");
        // Below a millisecond the absolute part decides: 0.5 ms -> 1.3 ms (x2.6, +0.8 ms) is
        // inside "+2 ms"; 0.5 ms -> 3.5 ms is outside.
        let sub = g.partition_point(|&b| b < 500);
        let fast = |to: usize, n: u64| Traffic { requests: n, errors: 0, latency_us: spread(to, 0, n) };
        let slower = g.partition_point(|&b| b < 1_300);
        let inside = judged(cfg.clone(), fast(slower, 100_000), fast(sub, 900_000));
        assert_ne!(signal(&inside, "latency").health, Health::Unhealthy, "+0.8 ms: {inside:#?}");
        let much = g.partition_point(|&b| b < 3_500);
        let outside = judged(cfg, fast(much, 100_000), fast(sub, 900_000));
        assert_eq!(signal(&outside, "latency").health, Health::Unhealthy, "+3 ms: {outside:#?}");
    }

    #[test]
    fn a_pending_pass_test_is_shown_as_pending_and_a_pass_says_what_it_ruled_out() {
        let cfg = SequentialConfig::default();
        let g = router_grid();
        let few = Traffic { requests: 50, errors: 0, latency_us: vec![(g[100], 50)] };
        let stable = Traffic { requests: 450, errors: 2, latency_us: vec![(g[100], 450)] };
        let v = judged(cfg.clone(), few, stable);
        let e = signal(&v, "error_rate");
        assert_eq!(e.health, Health::Unknown);
        assert!(e.detail.starts_with("pending: "), "{}", e.detail);
        assert!(e.rule.contains("passes on evidence") && e.rule.matches("α = ").count() == 2, "{}", e.rule);
    }

    #[test]
    fn a_better_version_is_not_rejected() {
        let good = Version { errors: 0.0, latency_scale: 0.5 };
        assert_eq!(simulate(13, 2500, &good, 60).0, None);
    }

    #[test]
    fn a_sample_ratio_mismatch_holds_and_does_not_roll_back() {
        let spec = HealthSpec::default();
        let canary = Traffic { requests: 3000, errors: 15, latency_us: vec![(router_grid()[100], 3000)] };
        let stable = Traffic { requests: 7000, errors: 35, latency_us: vec![(router_grid()[100], 7000)] };
        let v = analyzer(1000).evaluate(&observation(Some(canary), Some(Some(stable)), 60_000), &spec, Mode::Phase);
        assert_eq!(v.health, Health::Unknown, "{v:#?}");
        let s = signal(&v, "sample_ratio");
        assert_eq!(s.health, Health::Unknown);
        assert!(s.detail.contains("sample ratio mismatch"), "{}", s.detail);
        assert_ne!(signal(&v, "error_rate").health, Health::Unhealthy);
    }

    /// The sample-ratio check of a phase at 10% over `requests` requests of which `share`
    /// went to the new version, the router having sent it `users` distinct users.
    fn sample_ratio_at_10(requests: u64, share: f64, users: Option<u64>) -> SignalResult {
        let k = (requests as f64 * share).round() as u64;
        let canary = Traffic { requests: k, errors: 0, latency_us: vec![(router_grid()[100], k)] };
        let stable =
            Traffic { requests: requests - k, errors: 0, latency_us: vec![(router_grid()[100], requests - k)] };
        let mut obs = observation(Some(canary), Some(Some(stable)), 600_000);
        obs.canary.users = users;
        let v = analyzer(1000).evaluate(&obs, &HealthSpec::default(), Mode::Phase);
        signal(&v, "sample_ratio").clone()
    }

    /// A sticky split draws users: with 1,000 of them a 10% canary's buckets held 12.6% of
    /// them for one workload's name in a test (12.8% of its requests), and then that share of
    /// the requests however many there are. Counted as requests alone that is a mismatch; with
    /// the users' spread it is not.
    #[test]
    fn the_chance_in_which_users_fall_in_the_canary_is_not_a_mismatch() {
        let judged_on_requests = sample_ratio_at_10(60_000, 0.128, None);
        assert_eq!(judged_on_requests.health, Health::Unknown, "{judged_on_requests:#?}");
        let s = sample_ratio_at_10(60_000, 0.128, Some(128));
        assert_eq!(s.health, Health::Healthy, "{s:#?}");
        assert!(s.rule.contains("about 1280 sticky users (128 of them"), "{}", s.rule);
        // Of about 82,000 users, 12.8% in the canary's buckets is far beyond chance.
        let many = sample_ratio_at_10(300_000, 0.128, Some(8_192));
        assert_eq!(many.health, Health::Unknown, "{many:#?}");
    }

    /// The band widens with the users' chance, not enough to hide a router that sends the
    /// canary half the traffic, or a tenth of its weight when there are many users.
    #[test]
    fn a_real_mismatch_is_still_seen_with_the_users_spread() {
        // Five times the users it should have (of 1,000).
        let excess = sample_ratio_at_10(20_000, 0.5, Some(500));
        assert_eq!(excess.health, Health::Unknown, "{excess:#?}");
        // Half its share, of 10,000 users.
        let starved = sample_ratio_at_10(50_000, 0.05, Some(500));
        assert_eq!(starved.health, Health::Unknown, "{starved:#?}");
        // The same share of 100 users is within their chance (5 of an expected 10).
        let few = sample_ratio_at_10(50_000, 0.05, Some(5));
        assert_eq!(few.health, Health::Healthy, "{few:#?}");
    }

    #[test]
    fn a_ring_of_chosen_users_is_judged_on_the_share_it_sends_not_on_the_weight() {
        // A phase at 0% whose chosen users sent 5% of the requests, failing as the rest do.
        let spec = HealthSpec::default();
        let canary = Traffic { requests: 500, errors: 3, latency_us: vec![(router_grid()[100], 500)] };
        let stable = Traffic { requests: 9500, errors: 47, latency_us: vec![(router_grid()[100], 9500)] };
        let plan = [0, 1000, 10_000];
        let ring = PhaseContext { share_observed: true, ..PhaseContext::of_plan(&plan, 0) };
        let obs = observation(Some(canary), Some(Some(stable)), 60_000);
        let v = SequentialAnalyzer::default().in_phase(ring).evaluate(&obs, &spec, Mode::Phase);
        assert!(v.signals.iter().all(|s| s.signal != "sample_ratio"), "{v:#?}");
        assert_ne!(signal(&v, "error_rate").health, Health::Unhealthy, "{v:#?}");
        // Told a weight of 0% without the ring, the same split is a mismatch.
        let told =
            SequentialAnalyzer::default().in_phase(PhaseContext::of_plan(&plan, 0)).evaluate(&obs, &spec, Mode::Phase);
        assert_eq!(signal(&told, "sample_ratio").health, Health::Unknown, "{told:#?}");
    }

    #[test]
    fn first_deploy_and_empty_windows_do_not_panic() {
        let spec = HealthSpec::default();
        let a = SequentialAnalyzer::default();
        for mode in [Mode::Phase, Mode::ProbesOnly] {
            for canary in [None, Some(Traffic::default())] {
                for stable in [None, Some(None), Some(Some(Traffic::default()))] {
                    let v = a.evaluate(&observation(canary.clone(), stable, 0), &spec, mode);
                    if mode == Mode::Phase {
                        assert_ne!(v.health, Health::Healthy, "{v:#?}");
                    }
                    assert_ne!(v.health, Health::Unhealthy, "{v:#?}");
                }
            }
        }
        // Rollback or first deploy: judged on probes, crashes and the guards only.
        let v = a.evaluate(&observation(Some(Traffic::default()), None, 0), &spec, Mode::ProbesOnly);
        assert_eq!(v.health, Health::Healthy, "{v:#?}");
    }

    #[test]
    fn without_a_baseline_the_absolute_guard_still_fails_a_broken_version() {
        let spec = HealthSpec::default();
        let broken = Traffic { requests: 400, errors: 200, latency_us: vec![(1000, 400)] };
        let v =
            SequentialAnalyzer::default().evaluate(&observation(Some(broken), None, 10_000), &spec, Mode::ProbesOnly);
        assert_eq!(v.health, Health::Unhealthy);
        assert_eq!(v.deciding().next().unwrap().signal, "error_rate_limit");
        // A few errors in a tiny sample are not enough evidence to fail it, nor to call it ok:
        // 10% against a 5% limit is pending.
        let tiny = Traffic { requests: 20, errors: 2, latency_us: vec![(1000, 20)] };
        let v = SequentialAnalyzer::default().evaluate(&observation(Some(tiny), None, 1000), &spec, Mode::ProbesOnly);
        assert_eq!(v.health, Health::Unknown, "{v:#?}");
        assert!(signal(&v, "error_rate_limit").detail.starts_with("pending: above the limit"), "{v:#?}");
        // Under the limit with few requests: ok.
        let fine = Traffic { requests: 20, errors: 0, latency_us: vec![(1000, 20)] };
        let v = SequentialAnalyzer::default().evaluate(&observation(Some(fine), None, 1000), &spec, Mode::ProbesOnly);
        assert_eq!(v.health, Health::Healthy, "{v:#?}");
    }

    #[test]
    fn the_latency_guard_uses_the_configured_limit() {
        let spec = HealthSpec { max_p99_latency: Some(crate::duration::Dur::ms(500)), ..Default::default() };
        let g = router_grid();
        let slow = g.iter().position(|&b| b > 600_000).unwrap();
        let t = Traffic { requests: 1000, errors: 0, latency_us: vec![(g[100], 800), (g[slow], 200)] };
        let v = SequentialAnalyzer::default().evaluate(&observation(Some(t), None, 10_000), &spec, Mode::Phase);
        assert_eq!(v.health, Health::Unhealthy);
        let s = signal(&v, "latency_p99_limit");
        assert_eq!(s.health, Health::Unhealthy);
        assert_eq!(s.threshold, Some(500.0));
    }

    #[test]
    fn odd_histograms_do_not_panic() {
        let spec = HealthSpec { max_p99_latency: Some(crate::duration::Dur::ms(1)), ..Default::default() };
        let g = router_grid();
        let shapes: Vec<Vec<(u64, u64)>> = vec![
            vec![],
            vec![(u64::MAX, 50)],
            vec![(0, 10), (1, 10)],
            vec![(5000, 3), (1000, 7), (5000, 0)],
            vec![(g[3], u64::MAX / 4), (g[4], u64::MAX / 4)],
            vec![(250, 10), (2500, 10), (25_000, 10), (u64::MAX, 10)],
        ];
        for a in &shapes {
            for b in &shapes {
                for (requests, errors) in [(0, 0), (20, 0), (20, 25), (u64::MAX / 2, 7)] {
                    let c = Traffic { requests, errors, latency_us: a.clone() };
                    let s = Traffic { requests: requests / 2 + 1, errors: errors / 3, latency_us: b.clone() };
                    for analyzer in [SequentialAnalyzer::default(), analyzer(1000), analyzer(10_000)] {
                        let v = analyzer.evaluate(
                            &observation(Some(c.clone()), Some(Some(s.clone())), 1000),
                            &spec,
                            Mode::Phase,
                        );
                        for sig in &v.signals {
                            assert!(sig.observed.is_none_or(|o| !o.is_nan()), "{sig:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn at_full_weight_only_the_guards_judge() {
        let spec = HealthSpec::default();
        let canary = Traffic { requests: 2000, errors: 10, latency_us: vec![(router_grid()[100], 2000)] };
        let stable = Traffic::default();
        let v = analyzer(10_000).evaluate(&observation(Some(canary), Some(Some(stable)), 60_000), &spec, Mode::Phase);
        assert_eq!(v.health, Health::Healthy, "{v:#?}");
        assert!(v.signals.iter().all(|s| s.signal != "error_rate"));
    }

    #[test]
    fn crashes_and_probes_are_judged_as_by_the_threshold_analyzer() {
        let spec = HealthSpec::default();
        let mut o = observation(Some(Traffic::default()), None, 0);
        o.canary.crashes.push("replica 0 (pid 1) exited: status 101".into());
        let v = SequentialAnalyzer::default().evaluate(&o, &spec, Mode::Phase);
        let t = ThresholdAnalyzer.evaluate(&o, &spec, Mode::Phase);
        assert_eq!(v.health, Health::Unhealthy);
        assert_eq!(signal(&v, "crash"), signal(&t, "crash"));
        assert_eq!(signal(&v, "probe"), signal(&t, "probe"));
    }

    #[test]
    fn without_the_weight_the_share_is_bounded_by_a_confidence_sequence() {
        // 10% of traffic, the canary failing 3x as often: still caught, just not as early.
        let spec = HealthSpec::default();
        let canary = Traffic { requests: 6000, errors: 90, latency_us: vec![(router_grid()[100], 6000)] };
        let stable = Traffic { requests: 54_000, errors: 270, latency_us: vec![(router_grid()[100], 54_000)] };
        let v = SequentialAnalyzer::default().evaluate(
            &observation(Some(canary), Some(Some(stable)), 300_000),
            &spec,
            Mode::Phase,
        );
        assert_eq!(v.health, Health::Unhealthy, "{v:#?}");
        assert!(v.signals.iter().all(|s| s.signal != "sample_ratio"));
    }
}
