//! One-sided mixture e-processes for Bernoulli data, and what is built from them.
//!
//! Every test in [`crate::analysis`] reduces to the same question: in a stream of events, each
//! of which is a "success" or not, is the success probability above a null value `p0`? The
//! e-process is a mixture of likelihood ratios over a fixed grid of alternatives, each given
//! by its odds ratio against the null:
//!
//! ```text
//! E_t = sum_j w_j * (p_j / p0)^k * ((1 - p_j) / (1 - p0))^m,   odds(p_j) = OR_j * odds(p0), OR_j > 1
//! ```
//!
//! with `k` successes and `m` failures so far and prior weights `w_j` summing to one. For any
//! true probability `p <= p0`, each factor of each likelihood ratio has expectation at most 1
//! given the past, so `E_t` is a non-negative supermartingale with `E_0 = 1` and Ville's
//! inequality gives `P(sup_t E_t >= 1/alpha) <= alpha`: the test may be looked at after every
//! event, or every 100 ms, forever, without inflating its false-alarm probability. It depends
//! on the counts only, so cumulative counters are all it needs.
//!
//! In log form the ratio of one component is
//! `k ln OR_j - (k + m) ln(1 + (OR_j - 1) p0)`, which is increasing in `k`, decreasing in `m`
//! and decreasing in `p0`: every conservative approximation used by the callers (a larger null,
//! fewer successes, more failures) can only lower it.

/// One alternative of a mixture: its odds ratio against the null (> 1) and its prior weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Component {
    pub odds_ratio: f64,
    pub weight: f64,
}

/// Components with equal weights.
pub fn uniform(odds_ratios: &[f64]) -> Vec<Component> {
    let w = 1.0 / odds_ratios.len().max(1) as f64;
    odds_ratios.iter().map(|&odds_ratio| Component { odds_ratio, weight: w }).collect()
}

/// Probabilities this close to 0 or 1 are clamped, so that no count ever yields NaN.
const EDGE: f64 = 1e-12;

/// ln of one component's likelihood ratio: `k` successes and `m` failures against `p0`.
pub fn log_lr(k: f64, m: f64, p0: f64, odds_ratio: f64) -> f64 {
    let p0 = p0.clamp(EDGE, 1.0 - EDGE);
    k * odds_ratio.ln() - (k + m) * ((odds_ratio - 1.0) * p0).ln_1p()
}

/// ln E for the upward test `H0: p <= p0`.
pub fn log_e_upper(k: f64, m: f64, p0: f64, grid: &[Component]) -> f64 {
    Mixture::new(p0, grid).log_e(k, m)
}

/// A mixture prepared for one null `p0`: the logarithms that do not depend on the counts,
/// so that many count pairs (one per latency threshold) cost a multiply-add each.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    /// (ln weight, ln odds ratio, ln(1 + (odds ratio - 1) p0)) per component.
    terms: Vec<(f64, f64, f64)>,
}

impl Mixture {
    pub fn new(p0: f64, grid: &[Component]) -> Mixture {
        let p0 = p0.clamp(EDGE, 1.0 - EDGE);
        Mixture {
            terms: grid
                .iter()
                .map(|c| (c.weight.ln(), c.odds_ratio.ln(), ((c.odds_ratio - 1.0) * p0).ln_1p()))
                .collect(),
        }
    }

    /// ln E with `k` successes and `m` failures.
    pub fn log_e(&self, k: f64, m: f64) -> f64 {
        log_sum_exp(self.terms.iter().map(|&(w, or, l)| w + k * or - (k + m) * l))
    }

    /// ln of each component's likelihood ratio (without its weight), in grid order.
    pub fn log_ratios(&self, k: f64, m: f64) -> impl Iterator<Item = f64> + '_ {
        self.terms.iter().map(move |&(_, or, l)| k * or - (k + m) * l)
    }

    /// ln of each component's prior weight, in grid order.
    pub fn log_weights(&self) -> impl Iterator<Item = f64> + '_ {
        self.terms.iter().map(|&(w, _, _)| w)
    }

    /// Per component: (ln weight, log-ratio per success, log-ratio per failure).
    pub fn steps(&self) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
        self.terms.iter().map(|&(w, or, l)| (w, or - l, -l))
    }
}

/// ln of an e-process carried over the phases of a rollout.
///
/// `segments` holds, for each comparison phase seen so far in order, its ordinal among the
/// plan's comparison phases and the log-likelihood ratio of every alternative over that phase
/// (each phase has its own null, since the traffic split differs). `log_prior` is the ln prior
/// weight of each alternative. The process that starts at ordinal `k` multiplies the ratios
/// of the phases from `k` on and mixes them with the prior; the result mixes these processes
/// with the weights `starts` (summing to 1), a process not started yet counting as 1:
///
/// ```text
/// M = sum_{k <= current} starts[k] * sum_j prior_j * prod_{phases i >= k} LR_j(i)  +  sum_{k > current} starts[k]
/// ```
///
/// Each term is a non-negative supermartingale under the null (a phase ends at a stopping
/// time, and the next phase's ratios start from 1), so `M` is one too and Ville's inequality
/// bounds the whole rollout at once: evidence gathered in one phase counts in the next, and a
/// regression that first appears in a later phase is still caught by the process that starts
/// there.
pub fn carried_log_e(segments: &[(usize, Vec<f64>)], log_prior: &[f64], starts: &[f64], current: usize) -> f64 {
    let fallback = [1.0];
    let starts = if starts.is_empty() { &fallback[..] } else { starts };
    let current = current.min(starts.len() - 1);
    let mut acc = vec![0.0; log_prior.len()];
    let mut rest = segments.iter().rev().peekable();
    let mut terms = Vec::with_capacity(current + 2);
    for k in (0..=current).rev() {
        while let Some((_, ll)) = rest.next_if(|(o, _)| *o >= k) {
            for (a, l) in acc.iter_mut().zip(ll) {
                *a += l;
            }
        }
        if starts[k] > 0.0 {
            terms.push(starts[k].ln() + log_sum_exp(log_prior.iter().zip(&acc).map(|(w, a)| w + a)));
        }
    }
    let unstarted: f64 = starts[current + 1..].iter().sum();
    if unstarted > 0.0 {
        terms.push(unstarted.ln());
    }
    log_sum_exp(terms.into_iter())
}

/// ln E for the downward test `H0: p >= p0`: the upward test on the failures.
pub fn log_e_lower(k: f64, m: f64, p0: f64, grid: &[Component]) -> f64 {
    log_e_upper(m, k, 1.0 - p0, grid)
}

/// The success probability of component `c` under the null `p0`.
pub fn alternative(p0: f64, odds_ratio: f64) -> f64 {
    let o = odds_ratio * p0 / (1.0 - p0).max(EDGE);
    o / (1.0 + o)
}

/// `ln(sum(exp(t)))` without overflow, in one pass.
pub fn log_sum_exp(terms: impl Iterator<Item = f64>) -> f64 {
    let (mut max, mut sum) = (f64::NEG_INFINITY, 0.0);
    for t in terms {
        if t.is_nan() {
            continue;
        }
        if t <= max {
            sum += (t - max).exp();
        } else {
            sum = if max.is_finite() { sum * (max - t).exp() + 1.0 } else { 1.0 };
            max = t;
        }
    }
    if max.is_finite() { max + sum.ln() } else { max }
}

/// The canary's share of events under the null "the canary's per-request rate is at most
/// `ratio` times the stable's", when the canary carries the share `traffic_share` of requests:
/// `ratio * r / (ratio * r + 1 - r)`.
pub fn null_event_share(traffic_share: f64, ratio: f64) -> f64 {
    let r = traffic_share.clamp(EDGE, 1.0 - EDGE);
    ratio * r / (ratio * r + 1.0 - r)
}

/// Upper end of a time-uniform confidence sequence at level `1 - alpha` for a Bernoulli
/// probability, from `k` successes and `m` failures: the largest `p0` that the downward test
/// has not rejected. The downward e-value grows with `p0`, so bisection finds it.
pub fn upper_confidence(k: f64, m: f64, alpha: f64, grid: &[Component]) -> f64 {
    let target = (1.0 / alpha).ln();
    let mut lo = if k + m > 0.0 { k / (k + m) } else { 0.0 };
    let mut hi = 1.0;
    if log_e_lower(k, m, 1.0 - EDGE, grid) < target {
        return 1.0;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if log_e_lower(k, m, mid, grid) >= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The smallest number of successes, with `m` failures, that makes the upward test reject.
/// Used to state the rule in the units of the data ("the canary would fail at 1.9%").
pub fn successes_to_reject(m: f64, p0: f64, grid: &[Component], log_threshold: f64) -> Option<u64> {
    let rejects = |k: u64| log_e_upper(k as f64, m, p0, grid) >= log_threshold;
    let mut hi = 1u64;
    while !rejects(hi) {
        hi = hi.checked_mul(2)?;
        if hi > 1 << 40 {
            return None;
        }
    }
    let mut lo = 0u64;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if rejects(mid) { hi = mid } else { lo = mid }
    }
    Some(hi)
}

/// Inverse of the standard normal CDF (Acklam's rational approximation, relative error
/// below 1.2e-9), for the planner's power calculation.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let low = 0.02425;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_stable() {
        let direct = (1.0f64.exp() + 2.0f64.exp() + 0.5f64.exp()).ln();
        assert!((log_sum_exp([1.0, 2.0, 0.5].into_iter()) - direct).abs() < 1e-12);
        assert!((log_sum_exp([1000.0, 1000.0].into_iter()) - (1000.0 + 2f64.ln())).abs() < 1e-9);
        assert_eq!(log_sum_exp(std::iter::empty()), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp([f64::INFINITY, 1.0].into_iter()), f64::INFINITY);
    }

    #[test]
    fn no_events_is_one() {
        let g = uniform(&[2.0, 4.0]);
        assert!(log_e_upper(0.0, 0.0, 0.1, &g).abs() < 1e-12);
        assert!(log_e_lower(0.0, 0.0, 0.1, &g).abs() < 1e-12);
    }

    #[test]
    fn matches_the_plain_likelihood_ratio() {
        // One component: (p1/p0)^k ((1-p1)/(1-p0))^m.
        let p0 = 0.2;
        let p1 = alternative(p0, 3.0);
        let (k, m) = (7.0, 11.0);
        let direct = k * (p1 / p0).ln() + m * ((1.0 - p1) / (1.0 - p0)).ln();
        assert!((log_lr(k, m, p0, 3.0) - direct).abs() < 1e-9);
    }

    #[test]
    fn monotone_in_counts_and_null() {
        let g = uniform(&[1.5, 3.0, 10.0]);
        assert!(log_e_upper(5.0, 10.0, 0.1, &g) > log_e_upper(4.0, 10.0, 0.1, &g));
        assert!(log_e_upper(5.0, 10.0, 0.1, &g) > log_e_upper(5.0, 11.0, 0.1, &g));
        assert!(log_e_upper(5.0, 10.0, 0.1, &g) > log_e_upper(5.0, 10.0, 0.12, &g));
        assert!(log_e_lower(1.0, 50.0, 0.2, &g) > log_e_lower(1.0, 50.0, 0.1, &g));
    }

    #[test]
    fn extreme_inputs_stay_finite() {
        let g = uniform(&[2.0]);
        for p0 in [0.0, 1e-300, 0.5, 1.0 - 1e-17, 1.0] {
            for (k, m) in [(0.0, 0.0), (1e9, 0.0), (0.0, 1e9), (1e12, 1e12)] {
                let e = log_e_upper(k, m, p0, &g);
                assert!(!e.is_nan(), "p0={p0} k={k} m={m}");
            }
        }
        assert_eq!(upper_confidence(0.0, 0.0, 0.01, &g), 1.0);
    }

    #[test]
    fn confidence_bound_covers_the_estimate_and_shrinks() {
        let g = uniform(&[1.05, 1.1, 1.25, 1.5, 2.0, 4.0]);
        let small = upper_confidence(10.0, 90.0, 0.01, &g);
        let large = upper_confidence(1000.0, 9000.0, 0.01, &g);
        assert!(small > 0.1 && large > 0.1 && large < small, "{small} {large}");
        assert!(large < 0.12, "{large}");
    }

    #[test]
    fn successes_to_reject_is_the_boundary() {
        let g = uniform(&[2.0, 4.0, 8.0]);
        let t = (1000.0f64).ln();
        let k = successes_to_reject(100.0, 0.1, &g, t).unwrap();
        assert!(log_e_upper(k as f64, 100.0, 0.1, &g) >= t);
        assert!(log_e_upper(k as f64 - 1.0, 100.0, 0.1, &g) < t);
    }

    #[test]
    fn a_carried_process_with_one_phase_is_the_mixture() {
        let g = uniform(&[2.0, 4.0, 8.0]);
        let m = Mixture::new(0.1, &g);
        let ll: Vec<f64> = m.log_ratios(7.0, 20.0).collect();
        let lw: Vec<f64> = m.log_weights().collect();
        let carried = carried_log_e(&[(0, ll.clone())], &lw, &[1.0], 0);
        assert!((carried - m.log_e(7.0, 20.0)).abs() < 1e-12);
        // Nothing seen yet: every process is still at 1.
        assert!(carried_log_e(&[], &lw, &[0.8, 0.2], 0).abs() < 1e-12);
        // A second phase's process holds its weight until its phase starts.
        let two = carried_log_e(&[(0, ll)], &lw, &[0.8, 0.2], 0);
        assert!((two.exp() - (0.8 * m.log_e(7.0, 20.0).exp() + 0.2)).abs() < 1e-9);
    }

    #[test]
    fn evidence_adds_up_over_phases_and_a_late_regression_starts_fresh() {
        let g = uniform(&[2.0, 4.0]);
        let lw: Vec<f64> = Mixture::new(0.1, &g).log_weights().collect();
        let bad = |p0: f64| Mixture::new(p0, &g).log_ratios(8.0, 30.0).collect::<Vec<_>>();
        let good = |p0: f64| Mixture::new(p0, &g).log_ratios(10.0, 150.0).collect::<Vec<_>>();
        let starts = [0.85, 0.15];
        let second_only = carried_log_e(&[(1, bad(0.25))], &lw, &starts, 1);
        let both_bad = carried_log_e(&[(0, bad(0.1)), (1, bad(0.25))], &lw, &starts, 1);
        assert!(both_bad > second_only + 1.0, "{both_bad} {second_only}");
        // A clean first phase costs a late regression no more than its start weight.
        let clean_then_bad = carried_log_e(&[(0, good(0.1)), (1, bad(0.25))], &lw, &starts, 1);
        let fresh = 0.15f64.ln() + log_sum_exp(lw.iter().zip(bad(0.25)).map(|(w, l)| w + l));
        assert!(clean_then_bad >= fresh - 1e-12);
    }

    #[test]
    fn normal_quantile_known_values() {
        assert!(normal_quantile(0.5).abs() < 1e-9);
        assert!((normal_quantile(0.8) - 0.841_621_233_6).abs() < 1e-7);
        assert!((normal_quantile(0.01) + 2.326_347_874).abs() < 1e-7);
    }
}
