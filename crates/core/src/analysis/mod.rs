//! Statistical canary analysis: the new version against the stable one, over the same window,
//! with sequential (always-valid) tests.
//!
//! The controller asks for a verdict every tick with the cumulative counts of the bake window
//! so far. A fixed-horizon test repeated that often would raise false alarms many times over
//! its nominal rate; every test here is instead an *e-process*, a statistic whose probability
//! of ever reaching `1/alpha` under the null hypothesis is at most `alpha`, however often and
//! for however long it is looked at (Ville's inequality). The design follows Lindon, Sanden and
//! Shirikian, "Rapid Regression Detection in Software Deployments through Sequential Testing"
//! (KDD 2022) and Lindon and Malek, "Anytime-Valid Inference for Multinomial Count Data"
//! (NeurIPS 2022): compare the two versions' counting processes, so that only the two running
//! counts and the traffic split are needed.
//!
//! # The tests
//!
//! All of them are one-sided mixtures of likelihood ratios over a fixed grid of alternatives
//! ([`eprocess`]); they differ in what counts as an event.
//!
//! * **Error rate** (`error_rate`). Given that a request failed, it came from the canary with
//!   probability `s = R r / (R r + 1 - r)`, where `r` is the canary's share of requests and `R`
//!   the ratio of the two versions' error rates. Under the null `R <= R0` the canary's count
//!   among the failed requests is a Bernoulli process with success probability at most `s0`,
//!   whatever the overall error rate does over time (a common-mode spike, a slow drift). `R0`
//!   is the margin worth acting on ([`SequentialConfig::error_null_ratio`]): the relative
//!   margin, or the absolute one as a ratio of the stable's rate counted with one extra
//!   failure, whichever is larger; never below the relative margin, so the guarantee holds
//!   exactly for it, and the absolute part only raises the bar where the stable version
//!   rarely fails. The e-value mixes the likelihood ratios of alternatives given as odds ratios
//!   over the null, [`SequentialConfig::error_alternatives`]: most weight on x4 (the default
//!   target), a little on x2 and x1.3, and almost half on x60, so that a hard failure is caught
//!   from its first few errors. Only the two running error counts and `r` are used.
//! * **Traffic share `r`**. The router is told a weight `w`; users are sticky, so the share of
//!   requests is only close to it. The tests use `r = max(w, r^)`, where `r^` is the observed
//!   share averaged with [`SequentialConfig::share_prior_requests`] (1,000) requests at `w`.
//!   Every likelihood ratio above decreases as `r` grows, so on every sample path the
//!   statistic is at most the one computed with the true share as long as the router sends
//!   the canary no more than `w`: the guarantee is exact then. When the router does send more
//!   (a few heavy users in the canary's buckets), `r^` takes over as the requests outnumber
//!   the prior: an estimate whose error is of order `sqrt(error rate)` relative to the
//!   evidence, and which the sample-ratio check below reports. The prior keeps the sampling
//!   noise of the first requests (a share of 12% after 100 requests at 10%) from costing a
//!   hard failure its first second. The latency test uses `max(w, observed share)` without the
//!   prior: at thresholds that almost every request exceeds, its events are the requests
//!   themselves, so a chance excess of early requests to the canary would read as a slow-down
//!   (the simulation saw 9 of the first 22 requests at 10%). Without a known weight, `r` is the upper end of a
//!   time-uniform confidence sequence for the share, whose own `alpha` is spent from the
//!   budget, and the guarantee is again exact.
//! * **Sample ratio** (`sample_ratio`). The same Bernoulli e-process on the requests themselves
//!   tests whether the canary's share of requests is outside `w * (1 ± srm_tolerance) ± d`, in
//!   each direction. A mismatch makes the verdict unknown (hold, then escalate), never a
//!   rollback: it says the experiment is broken, not that the release is. `d` is the users'
//!   sampling spread: a sticky split draws users, not requests, so of `n` users the share
//!   whose buckets fall in the canary's is binomial around `w`, and every request of a user
//!   follows the user; however many requests come, their share stays off `w` by that chance
//!   (with 1,000 users at 10%, a standard deviation of 0.95 points; 12.6% for one workload's
//!   name). `d = srm_user_spread * sqrt(w (1 - w) / n)`, with `n = u / w` from the `u`
//!   distinct users the router sent the canary (the users active since it started: a count
//!   since the router started would include the stable version's users of days past, and
//!   the canary's own count cannot). Without a count (a router that does not keep one) `d`
//!   is 0. A router that sends the canary too many users raises `u` and narrows the band, so
//!   excess is still seen; too few widens it, so a canary starved of users is seen only when
//!   the shortfall exceeds the spread its few users allow (one served nothing is held anyway:
//!   no traffic to judge). Users who send many times the requests of others spread the share
//!   further than `d` assumes; the tolerance covers a moderate mix.
//! * **Latency** (`latency`). For each threshold `x` of a fixed set on the router's bucket grid
//!   (every fourth bound, about ×1.46 apart, from 1 ms to 10 s), an event is a request slower
//!   than `x` (for the canary: slower than `x'`, the bound the margin allows above `x`:
//!   `max(latency_margin_ratio x, x + latency_margin_us)` rounded up to the grid,
//!   [`latency::tolerated`]). If the canary is nowhere slower than the stable version by more
//!   than the margin, a canary request exceeds `x'` no more often than a stable one exceeds
//!   `x`, so the canary's share of these events is at most `r`
//!   ([`SequentialConfig::min_exceedance_ratio`] times the odds, if set): the same
//!   counting-process test applies at each threshold, with alternatives `{1.5, 2, 3, 5, 10}`,
//!   and the average of the thresholds' e-processes (fixed, equal weights) is again an
//!   e-process. Because it looks at every threshold it sees a slower tail (p99 up 50% with the
//!   median unchanged) and a variance blow-up with the same mean, which fattens the upper
//!   tail, not only a moved median (the blind spot of Mann-Whitney). Counts in buckets that
//!   straddle a threshold are rounded against the canary, so any histogram grid is safe; on
//!   the router's grid they are exact. The margin is what makes the test usable on a real
//!   machine: a fresh canary is always a little slower than a warm stable version (0.8 ms
//!   against 0.7 ms at p99), and a test without one finds that difference given enough
//!   requests. It costs time: p99 +50% is seen about 10% later at 10% (the detection
//!   benchmark). A time-uniform DKW band per version was the alternative; its width is the
//!   same at every quantile, so near p99 it needs tens of thousands of requests where
//!   exceedance counts need hundreds, and comparing two bands wastes the pooling a two-sample
//!   count test gets. Thresholds chosen from the data (the stable version's p99) would break
//!   validity; the fixed grid with a uniform mixture costs `ln(25)` in the threshold instead.
//! * **Guards** (`error_rate_limit`, `latency_p99_limit`). The absolute limits of the health
//!   spec still apply, now as sequential one-sample tests of "error rate at most
//!   `max_error_rate`" and "at most 1% of requests slower than `max_p99_latency`". They are
//!   the only traffic tests when there is nothing to compare with (a first deploy, the 100%
//!   phase, a rollback).
//!
//! Assumptions, as in the papers: given the time and the version, requests succeed, fail and
//! take their time independently, and each request goes to the canary with the same
//! probability. Sticky users keep the second true when each request comes from a random
//! user; a few very heavy users with errors of their own (not of the version) would break the
//! first, and make errors cluster on one side by chance.
//!
//! # Evidence
//!
//! Each comparison signal has unit `e-value`: `observed` is the e-value, `threshold` is
//! `1/alpha`, `sample_size` and `baseline_sample_size` are the requests (or latency samples) of
//! each version, and `detail` gives both versions' rates, the strongest latency threshold, the
//! traffic share used and, while pending, what the pass test still needs.
//! The guards keep the threshold analyzer's units (`ratio`, `ms`) with the e-value in `detail`.
//!
//! # One e-process per rollout
//!
//! A rollout judges its new version in several phases (10%, 25%, 50%, ...). Each test is one
//! e-process over the whole rollout, not one per phase: when a phase passes, the traffic it
//! was judged on is recorded with the pass ([`crate::health::PhaseWindow`], in the
//! `phase_passed` event) and the next phases multiply their likelihood ratios onto it, each
//! phase with its own null (its traffic split). A regression that is present from the start
//! and was only suspicious at 10% is caught early at 25%; and the budget is not divided by the
//! number of phases. Because a phase in which the new version behaved well drives every
//! alternative's ratio down, a regression that only appears later (under more load, say)
//! would start handicapped; so the e-process is a mixture of processes that start at each
//! comparison phase ([`eprocess::carried_log_e`]): the one starting with the rollout has
//! `1 - restart_fraction` of the weight, the ones starting at later phases share the rest.
//! Phases end at stopping times and each restart begins at 1, so the mixture is still a
//! non-negative supermartingale under the null and Ville's inequality covers the rollout.
//!
//! # The false-alarm budget
//!
//! [`SequentialConfig::alpha`] bounds the probability that a release within the margin is
//! rolled back, over all phases of its rollout together. By the union bound it is split
//! ([`SequentialConfig::budget`]): `guard_fraction` of it to the guards, spread evenly over all
//! phases; the rest to the comparison, `latency_fraction` of it to the latency test and the
//! rest to the error-rate test (less a tenth for the traffic-share confidence sequence when the
//! weight is unknown). The sample-ratio check has its own `srm_alpha` per phase: it only holds.
//! The split follows where false alarms come from. Latency differs systematically between
//! real versions, and its margin keeps an identical release far inside the null, so the latency
//! test can spend most of the budget (0.043 with the defaults) and detect faster; the error
//! test has no relative margin by default (one would cost the subtle-regression bar), so its
//! share, 0.00475, is what bounds the false rollbacks of an identical release. With three
//! comparison phases the error test rejects when the mixture reaches `1/0.00475 = 211`.
//!
//! # Three outcomes
//!
//! * **fail** (unhealthy): an e-process reached `1/alpha`: evidence of a regression beyond
//!   the margin ([`SequentialConfig::error_margin_ratio`], [`SequentialConfig::latency_margin_us`], ...).
//! * **pass** (healthy): no rejection, at least `min_requests`, no sample-ratio mismatch, and
//!   evidence that the new version is better than the target regression: a non-inferiority
//!   test of its error rate against `max(target x stable, stable + target_error_abs)` and of
//!   its latency at the stable's median, p90 and p99 against `target_latency_ratio`, each
//!   sequential, at level `1 - power` (an intersection-union test: all must reject). Then "no
//!   rejection" means something, and a release as good as the stable one passes as soon as
//!   its own traffic shows it, not after a wait computed for the worst case.
//! * **pending** (unknown): otherwise. The rollout keeps baking past the bake time while the
//!   verdict is unknown, holds, and escalates after `max_hold` (and falls back when the spec
//!   says so); it never promotes. The evidence says how many more requests, and seconds at the
//!   current rate, a release as good as the stable one needs ([`planner`], the same figure
//!   `ringfence plan` gives).

pub mod eprocess;
pub mod latency;
pub mod planner;
pub(crate) mod sequential;

pub use sequential::SequentialAnalyzer;

/// The analyzer a workload's spec asks for, told where in its plan the rollout is and
/// carrying the evidence of its passed phases: the one place a rollout's analyzer is built.
pub fn analyzer_for(
    spec: &crate::spec::AnalysisSpec,
    r: &crate::Rollout,
) -> Box<dyn crate::health::HealthAnalyzer + Send> {
    match spec.method {
        crate::spec::AnalysisMethod::Threshold => Box::new(crate::health::ThresholdAnalyzer),
        crate::spec::AnalysisMethod::Sequential => {
            let weights: Vec<u32> = r.phases.iter().map(|p| p.weight_bp()).collect();
            let phase = r.current_phase();
            let context =
                PhaseContext { share_observed: phase.share_is_observed(), ..PhaseContext::of_plan(&weights, r.phase) };
            Box::new(
                SequentialAnalyzer::new(SequentialConfig::from_spec(spec))
                    .in_phase(context)
                    .after(&weights, &r.windows),
            )
        }
    }
}

use eprocess::Component;

/// Settings of the sequential analysis. The defaults are the documented ones.
#[derive(Debug, Clone, PartialEq)]
pub struct SequentialConfig {
    /// Probability of a false rollback of a release no worse than the stable one, over all
    /// phases of its rollout together.
    pub alpha: f64,
    /// Part of `alpha` spent on the absolute guards.
    pub guard_fraction: f64,
    /// Part of the comparison budget spent on latency; the rest goes to errors.
    pub latency_fraction: f64,
    /// Part of the comparison budget kept for regressions that first appear after the first
    /// comparison phase (split evenly over the later ones); the rest backs the e-process
    /// that starts with the rollout and carries its evidence through every phase.
    pub restart_fraction: f64,
    /// Phases assumed when the analyzer is not told the plan: one at 100% and the others with
    /// a comparison.
    pub assumed_phases: usize,
    /// The margin worth acting on, for errors: the error test fails only on evidence that the
    /// new version's error rate is above this many times the stable's ...
    pub error_margin_ratio: f64,
    /// ... and above the stable's plus this much (0.001 = 0.1 percentage points). The absolute
    /// part is applied as a larger ratio, `1 + abs / p_s` with the stable's rate `p_s` counted
    /// with one extra failure, so it only matters where the stable version rarely fails.
    pub error_margin_abs: f64,
    /// The margin worth acting on, for latency: the latency test fails only on evidence that
    /// the new version is slower than this many times the stable's latency ...
    pub latency_margin_ratio: f64,
    /// ... and slower than the stable's plus this many microseconds, at some quantile.
    pub latency_margin_us: u64,
    /// Null hypothesis of the latency test, in rates: at every threshold the canary exceeds
    /// at most this many times as often as the stable version.
    pub min_exceedance_ratio: f64,
    /// The error test's alternatives: odds ratios on top of the margin's ratio, with prior
    /// weights summing to 1.
    pub error_alternatives: Vec<Component>,
    /// Odds ratios of each latency threshold's alternatives.
    pub latency_alternatives: Vec<f64>,
    /// Every how many grid bounds a latency threshold is placed.
    pub latency_threshold_every: usize,
    /// The range of the grid the latency thresholds lie in, in µs (see
    /// [`latency::JUDGED_FROM_US`]).
    pub latency_judged_us: (u64, u64),
    /// Requests at the router's weight that the observed traffic share is averaged with
    /// before it may raise the null share above the weight (see "Traffic share" above).
    pub share_prior_requests: f64,
    /// False-mismatch probability of the sample-ratio check, per phase. A mismatch holds.
    pub srm_alpha: f64,
    /// Relative deviation of the canary's share of requests from its weight that is tolerated
    /// (users send different numbers of requests, so the request share differs from the user
    /// share).
    pub srm_tolerance: f64,
    /// Standard deviations of the users' sampling spread the sample-ratio band widens by when
    /// the router counts the users (see "Sample ratio" above).
    pub srm_user_spread: f64,
    /// What a phase must rule out before it passes (the non-inferiority test): a new version
    /// whose error rate is this many times the stable's ...
    pub target_error_ratio: f64,
    /// ... and the stable's plus this much (0.005 = 0.5 percentage points) ...
    pub target_error_abs: f64,
    /// ... or whose latency is this many times the stable's (and at least the latency margin
    /// above it) at the stable version's median, p90 or p99.
    pub target_latency_ratio: f64,
    /// Evidence needed to pass: the pass tests run at level `1 - power` (a release exactly as
    /// bad as the target passes a phase with at most that probability). 0 turns them off: no
    /// failure by the end of the bake passes.
    pub power: f64,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        SequentialConfig {
            alpha: 0.05,
            guard_fraction: 0.05,
            latency_fraction: 0.9,
            restart_fraction: 0.15,
            assumed_phases: 4,
            error_margin_ratio: 1.0,
            error_margin_abs: 0.0002,
            latency_margin_ratio: 1.1,
            latency_margin_us: 2000,
            min_exceedance_ratio: 1.0,
            // Weight on the regression worth catching within a minute (x4, the default target),
            // a little on x2 and x1.3 so that smaller ones beyond the margin are caught
            // eventually, and almost half on a hard failure, so that one is caught from its
            // first three errors (at 10% of 200 req/s, a second): the trade measured by the
            // detection benchmark.
            error_alternatives: [(1.3, 0.05), (2.0, 0.05), (4.0, 0.45), (60.0, 0.45)]
                .map(|(odds_ratio, weight)| Component { odds_ratio, weight })
                .to_vec(),
            latency_alternatives: vec![1.5, 2.0, 3.0, 5.0, 10.0],
            latency_threshold_every: 4,
            latency_judged_us: (latency::JUDGED_FROM_US, latency::JUDGED_UP_TO_US),
            share_prior_requests: 1000.0,
            srm_alpha: 0.001,
            srm_tolerance: 0.2,
            srm_user_spread: 4.0,
            target_error_ratio: 4.0,
            target_error_abs: 0.005,
            target_latency_ratio: 1.5,
            power: 0.8,
        }
    }
}

/// Where in its plan the judged phase is. Without it the analyzer assumes
/// [`SequentialConfig::assumed_phases`] and has no weight to check the split against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseContext {
    /// The canary's weight the router was told, in basis points.
    pub weight_bp: u32,
    /// Phases of the plan in all.
    pub phases: usize,
    /// Phases of the plan with a weight below 100%.
    pub comparison_phases: usize,
    /// How many comparison phases of the plan come before this one.
    pub ordinal: usize,
    /// The canary's share of traffic is not its weight (it also takes a ring of chosen users,
    /// or copies of requests): the split is neither checked against the weight nor assumed
    /// from it.
    pub share_observed: bool,
}

impl PhaseContext {
    /// The context of phase `phase` of a plan with these weights (basis points).
    pub fn of_plan(weights_bp: &[u32], phase: usize) -> PhaseContext {
        PhaseContext {
            weight_bp: weights_bp.get(phase).copied().unwrap_or(10_000),
            phases: weights_bp.len().max(1),
            comparison_phases: weights_bp.iter().filter(|&&w| w < 10_000).count(),
            ordinal: weights_bp.iter().take(phase).filter(|&&w| w < 10_000).count(),
            share_observed: false,
        }
    }

    pub fn weight(&self) -> f64 {
        self.weight_bp as f64 / 10_000.0
    }
}

/// The false-alarm probabilities the tests may spend.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Per phase.
    pub error_guard: f64,
    /// Per phase.
    pub latency_guard: f64,
    /// Whole rollout: the error e-process spans every comparison phase.
    pub errors: f64,
    /// Whole rollout, like `errors`.
    pub latency: f64,
    /// Confidence sequence for the traffic share, when the weight is unknown.
    pub share: f64,
    /// Weight of the e-process that starts at each comparison phase, in plan order; sums to 1.
    pub starts: Vec<f64>,
    /// The judged phase's place among the comparison phases.
    pub ordinal: usize,
}

impl Budget {
    /// Weight of the e-process that starts in the judged phase: what a regression that first
    /// appears here has to overcome on its own.
    pub fn fresh(&self) -> f64 {
        self.starts.get(self.ordinal).copied().unwrap_or(1.0)
    }
}

impl SequentialConfig {
    /// The scheme described in the module docs.
    pub fn budget(&self, ctx: Option<&PhaseContext>) -> Budget {
        let (phases, comparison, ordinal) = match ctx {
            Some(c) => (c.phases.max(1), c.comparison_phases, c.ordinal),
            None => (self.assumed_phases.max(1), self.assumed_phases.saturating_sub(1), 0),
        };
        let guard = self.alpha * self.guard_fraction / phases as f64;
        let compare = if comparison == 0 { 0.0 } else { self.alpha * (1.0 - self.guard_fraction) };
        let share = if ctx.is_none() { compare * 0.1 } else { 0.0 };
        let rest = compare - share;
        let restart = self.restart_fraction.clamp(0.0, 1.0);
        let starts = match comparison {
            0 => Vec::new(),
            1 => vec![1.0],
            n => std::iter::once(1.0 - restart).chain(std::iter::repeat_n(restart / (n - 1) as f64, n - 1)).collect(),
        };
        Budget {
            error_guard: guard / 2.0,
            latency_guard: guard / 2.0,
            errors: rest * (1.0 - self.latency_fraction),
            latency: rest * self.latency_fraction,
            share,
            starts,
            ordinal,
        }
    }

    pub(crate) fn error_grid(&self) -> Vec<Component> {
        let total: f64 = self.error_alternatives.iter().map(|c| c.weight.max(0.0)).sum();
        if total <= 0.0 {
            return eprocess::uniform(&[2.0, 4.0, 8.0, 60.0]);
        }
        self.error_alternatives
            .iter()
            .filter(|c| c.weight > 0.0 && c.odds_ratio > 1.0)
            .map(|c| Component { odds_ratio: c.odds_ratio, weight: c.weight / total })
            .collect()
    }

    pub(crate) fn latency_grid(&self) -> Vec<Component> {
        eprocess::uniform(&self.latency_alternatives)
    }

    pub(crate) fn latency_thresholds(&self) -> Vec<latency::Threshold> {
        let (from, up_to) = self.latency_judged_us;
        latency::thresholds_within(
            self.latency_threshold_every,
            self.latency_margin_ratio,
            self.latency_margin_us,
            from,
            up_to,
        )
    }

    /// The analysis a spec asks for: the one place a spec's `[health.analysis]` becomes the
    /// analyzer's settings (the controller, the planner and the benchmarks all use it).
    pub fn from_spec(spec: &crate::spec::AnalysisSpec) -> SequentialConfig {
        let d = SequentialConfig::default();
        SequentialConfig {
            alpha: spec.alpha,
            power: spec.power,
            target_error_ratio: spec.target_error_ratio,
            target_latency_ratio: spec.target_latency_ratio,
            error_margin_ratio: spec.margin.error_ratio,
            error_margin_abs: spec.margin.error_points / 100.0,
            latency_margin_ratio: spec.margin.latency_ratio,
            latency_margin_us: spec.margin.latency.as_ms().saturating_mul(1000),
            ..d
        }
    }

    /// The null of the error test, as a ratio of the two error rates: the relative margin, or
    /// the absolute one expressed as a ratio of the stable's rate, whichever is larger. The
    /// stable's rate is counted with one extra failure, so that a stable version with no
    /// failure yet does not make the ratio infinite. Never below the relative margin, so the
    /// false-alarm guarantee holds exactly for it (see the module docs).
    pub fn error_null_ratio(&self, stable_errors: u64, stable_requests: u64) -> f64 {
        let ratio = self.error_margin_ratio.max(1.0);
        if self.error_margin_abs <= 0.0 {
            return ratio;
        }
        let p = (stable_errors.min(stable_requests) as f64 + 1.0) / (stable_requests as f64 + 1.0);
        ratio.max(1.0 + self.error_margin_abs / p)
    }

    /// The error rate a phase must show the new version to be below before it passes, when the
    /// stable version fails at `stable_rate`.
    pub fn pass_error_limit(&self, stable_rate: f64) -> f64 {
        let p = stable_rate.clamp(0.0, 1.0);
        (self.target_error_ratio * p).max(p + self.target_error_abs).min(1.0)
    }

    /// The latency bound the new version's requests are counted above, for the pass test at
    /// the stable's grid bound `stable_us`: the target ratio, and never less than the latency
    /// margin above it.
    pub fn pass_latency_bound(&self, stable_us: u64) -> Option<u64> {
        let i = latency::grid_index(stable_us);
        let by_target = latency::tolerated(i, self.target_latency_ratio, self.latency_margin_us)?;
        let by_margin = latency::tolerated(i, self.latency_margin_ratio, self.latency_margin_us)?;
        Some(by_target.max(by_margin))
    }

    /// Level of the pass tests: `1 - power`, or none when `power` is 0.
    pub fn pass_level(&self) -> Option<f64> {
        (self.power > 0.0 && self.power < 1.0).then_some(1.0 - self.power)
    }
}

/// Odds ratios of the guards' and the share tests' alternatives.
pub(crate) const GUARD_ALTERNATIVES: [f64; 4] = [2.0, 4.0, 10.0, 40.0];
pub(crate) const SHARE_ALTERNATIVES: [f64; 6] = [1.05, 1.1, 1.25, 1.5, 2.0, 4.0];
/// The latency guard tests "at most this fraction of requests above the p99 limit".
pub(crate) const GUARD_TAIL: f64 = 0.01;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_adds_up_to_alpha_over_a_plan() {
        let cfg = SequentialConfig::default();
        let plan = [1000, 2500, 5000, 10_000];
        let guards: f64 = (0..plan.len())
            .map(|i| {
                let b = cfg.budget(Some(&PhaseContext::of_plan(&plan, i)));
                b.error_guard + b.latency_guard
            })
            .sum();
        // The comparison budget is the whole rollout's, the same in every phase.
        let b = cfg.budget(Some(&PhaseContext::of_plan(&plan, 1)));
        assert_eq!(b, Budget { ordinal: 1, ..cfg.budget(Some(&PhaseContext::of_plan(&plan, 0))) });
        assert!((guards + b.errors + b.latency - cfg.alpha).abs() < 1e-12, "{guards} {b:?}");
        assert!((b.starts.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(b.starts.len(), 3);
        assert!((b.fresh() - cfg.restart_fraction / 2.0).abs() < 1e-12);
        let b = cfg.budget(None);
        assert!(b.share > 0.0);
        assert!((b.errors + b.latency + b.share + (b.error_guard + b.latency_guard) * 4.0 - cfg.alpha).abs() < 1e-12);
        // One comparison phase: its process has all the weight.
        let b = cfg.budget(Some(&PhaseContext::of_plan(&[2500, 10_000], 0)));
        assert_eq!(b.starts, vec![1.0]);
    }

    #[test]
    fn the_error_prior_is_normalised_and_never_empty() {
        let mut cfg = SequentialConfig::default();
        let g = cfg.error_grid();
        assert!((g.iter().map(|c| c.weight).sum::<f64>() - 1.0).abs() < 1e-12);
        cfg.error_alternatives = vec![Component { odds_ratio: 3.0, weight: 2.0 }];
        assert_eq!(cfg.error_grid(), vec![Component { odds_ratio: 3.0, weight: 1.0 }]);
        cfg.error_alternatives.clear();
        assert!(!cfg.error_grid().is_empty());
    }

    #[test]
    fn single_full_phase_spends_only_guards() {
        let cfg = SequentialConfig::default();
        let ctx = PhaseContext::of_plan(&[10_000], 0);
        let b = cfg.budget(Some(&ctx));
        assert_eq!(b.errors, 0.0);
        assert!((b.error_guard + b.latency_guard - cfg.alpha * cfg.guard_fraction).abs() < 1e-15);
    }
}
