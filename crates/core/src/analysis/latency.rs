//! Latency histograms: the router's bucket grid and exceedance counts that never overstate
//! the evidence.
//!
//! The router counts latencies in buckets `(upper bound in µs, count)` whose bounds are
//! `100 µs * 1.1^n` rounded, up to 60 s, then an overflow bucket bounded by `u64::MAX`
//! (`ringfence_traffic::grid`, the one definition the router counts in). The latency test
//! compares, for thresholds on that grid,
//! how many requests of each version were slower than the threshold. A bucket straddling a
//! threshold cannot be split, so the counts are made conservative: the canary's count above
//! a threshold only includes buckets that lie wholly above it (a lower bound), the stable's
//! includes every bucket that reaches above it (an upper bound). On the router's grid both
//! are exact, because the thresholds are grid bounds.

/// The router's bucket bounds in µs, ascending, ending with `u64::MAX`: the one grid, shared
/// with the router through `ringfence-traffic`.
pub fn router_grid() -> &'static [u64] {
    ringfence_traffic::grid::latency_bounds_us()
}

/// The lower edge of the bucket whose upper bound is `upper`: the previous grid bound when
/// `upper` is on the router's grid, else `fallback` (the previous bound seen in the data,
/// which can only be lower than the true edge).
fn lower_edge(upper: u64, fallback: u64) -> u64 {
    let grid = router_grid();
    match grid.binary_search(&upper) {
        Ok(0) => 0,
        Ok(i) => grid[i - 1],
        Err(_) => fallback,
    }
}

/// A histogram prepared for exceedance queries.
#[derive(Debug, Clone, Default)]
pub struct Hist {
    /// (lower edge, upper bound, count), ascending, non-zero counts only.
    buckets: Vec<(u64, u64, u64)>,
    /// `above[i]`: total count of `buckets[i..]`.
    above: Vec<u64>,
    pub total: u64,
}

impl Hist {
    /// From a router histogram. `other` is the histogram it is compared with: its bounds help
    /// to bound the lower edge of buckets that are not on the router's grid. Unsorted input,
    /// duplicate bounds and zero counts are tolerated.
    pub fn new(buckets: &[(u64, u64)], other: &[(u64, u64)]) -> Hist {
        let mut b: Vec<(u64, u64)> = buckets.iter().copied().filter(|&(_, c)| c > 0).collect();
        b.sort_unstable_by_key(|&(u, _)| u);
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(b.len());
        for (u, c) in b {
            match merged.last_mut() {
                Some((lu, lc)) if *lu == u => *lc = lc.saturating_add(c),
                _ => merged.push((u, c)),
            }
        }
        let grid = router_grid();
        let on_grid: Vec<Option<usize>> = merged.iter().map(|&(u, _)| grid.binary_search(&u).ok()).collect();
        let buckets: Vec<(u64, u64, u64)> = if on_grid.iter().all(Option::is_some) {
            merged
                .iter()
                .zip(&on_grid)
                .map(|(&(u, c), i)| (i.and_then(|i| i.checked_sub(1)).map_or(0, |i| grid[i]), u, c))
                .collect()
        } else {
            // Off the router's grid: the largest bound below `u` seen in either histogram can
            // only be at or below the bucket's true lower edge.
            let below = |u: u64| {
                let mine = merged.iter().map(|&(b, _)| b).filter(|&b| b < u).max().unwrap_or(0);
                let theirs = other.iter().map(|&(b, _)| b).filter(|&b| b < u).max().unwrap_or(0);
                mine.max(theirs)
            };
            merged.iter().map(|&(u, c)| (lower_edge(u, below(u)), u, c)).collect()
        };
        let mut above = vec![0u64; buckets.len() + 1];
        for i in (0..buckets.len()).rev() {
            above[i] = above[i + 1].saturating_add(buckets[i].2);
        }
        let total = above[0];
        Hist { buckets, above, total }
    }

    /// At most this many observations are above `x` (buckets reaching above `x`).
    pub fn above_at_most(&self, x: u64) -> u64 {
        let i = self.buckets.partition_point(|&(_, u, _)| u <= x);
        self.above[i]
    }

    /// At least this many observations are above `x` (buckets wholly above `x`).
    pub fn above_at_least(&self, x: u64) -> u64 {
        let i = self.buckets.partition_point(|&(lo, _, _)| lo < x);
        self.above[i]
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Upper bound of the bucket holding quantile `q` (the same rule as `Traffic::quantile_us`).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for &(_, u, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return Some(u);
            }
        }
        self.buckets.last().map(|&(_, u, _)| u)
    }
}

/// A pair of thresholds on the grid: the stable's exceedances of `stable_us` are compared
/// with the canary's exceedances of `canary_us`, a higher bound (the tolerated slow-down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub stable_us: u64,
    pub canary_us: u64,
}

/// The grid bound paired with `grid[i]` when the new version may be `ratio` times and
/// `abs_us` slower: at least `steps_for(ratio - 1)` buckets higher and at least `abs_us` above
/// it, whichever is higher; `None` when that is the overflow bucket.
pub fn tolerated(i: usize, ratio: f64, abs_us: u64) -> Option<u64> {
    let grid = router_grid();
    let by_ratio = i + steps_for(ratio - 1.0);
    let floor = grid.get(i)?.saturating_add(abs_us);
    let by_abs = grid.partition_point(|&b| b < floor);
    let j = by_ratio.max(by_abs);
    (j < grid.len() - 1).then(|| grid[j])
}

/// The fixed thresholds of the latency test: every `every`-th grid bound, paired with the bound
/// the margin allows above it ([`tolerated`]), leaving out pairs whose canary side is the
/// overflow bucket. Fixed in advance, independent of the data, as the mixture needs.
pub fn thresholds(every: usize, ratio: f64, abs_us: u64) -> Vec<Threshold> {
    thresholds_within(every, ratio, abs_us, JUDGED_FROM_US, JUDGED_UP_TO_US)
}

/// [`thresholds`] over another range of the grid.
pub fn thresholds_within(every: usize, ratio: f64, abs_us: u64, from_us: u64, up_to_us: u64) -> Vec<Threshold> {
    let grid = router_grid();
    let every = every.max(1);
    (grid_index(from_us)..grid.len())
        .step_by(every)
        .take_while(|&i| grid[i] <= up_to_us)
        .filter_map(|i| Some(Threshold { stable_us: grid[i], canary_us: tolerated(i, ratio, abs_us)? }))
        .collect()
}

/// The latency test's thresholds lie from 1 ms to 10 s: below 1 ms no difference is worth
/// acting on for an HTTP service (and the default 2 ms margin compares such thresholds with
/// the new version above 2 ms anyway); above 10 s requests time out. Every threshold costs the
/// mixture `ln(count)`, so the range is kept to what matters, fixed in advance.
pub const JUDGED_FROM_US: u64 = 1000;
pub const JUDGED_UP_TO_US: u64 = 10_000_000;

/// The index of `bound` on the router's grid, or of the first grid bound above it.
pub fn grid_index(bound: u64) -> usize {
    router_grid().partition_point(|&b| b < bound)
}

/// Grid steps of the tolerated slow-down: the smallest number of ×1.1 buckets at least
/// `increase` (0.1 = 10%) above a bound, up to rounding of the grid.
pub fn steps_for(increase: f64) -> usize {
    if increase <= 0.0 || !increase.is_finite() {
        return 0;
    }
    ((1.0 + increase).ln() / 1.1f64.ln() - 1e-6).ceil().max(0.0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_the_one_the_router_counts_in() {
        assert_eq!(router_grid(), ringfence_traffic::grid::latency_bounds_us());
    }

    #[test]
    fn exact_on_the_grid() {
        let g = router_grid();
        let h = Hist::new(&[(g[10], 5), (g[11], 3), (g[20], 2)], &[]);
        assert_eq!(h.total, 10);
        assert_eq!(h.above_at_most(g[10]), 5);
        assert_eq!(h.above_at_least(g[10]), 5);
        assert_eq!(h.above_at_most(g[11]), 2);
        assert_eq!(h.above_at_least(g[11]), 2);
        assert_eq!(h.above_at_least(g[19]), 2);
        assert_eq!(h.above_at_most(g[25]), 0);
        assert_eq!(h.above_at_least(0), 10);
        assert_eq!(h.above_at_most(u64::MAX), 0);
    }

    #[test]
    fn conservative_off_the_grid() {
        // Prometheus-like coarse buckets: the bucket (1000, 5000] straddles 2000.
        let h = Hist::new(&[(1000, 4), (5000, 6)], &[]);
        assert_eq!(h.above_at_most(2000), 6);
        assert_eq!(h.above_at_least(2000), 0);
        assert_eq!(h.above_at_least(1000), 6);
    }

    #[test]
    fn messy_input() {
        let g = router_grid();
        let h = Hist::new(&[(g[5], 0), (g[7], 2), (g[3], 1), (g[7], 1)], &[]);
        assert_eq!(h.total, 4);
        assert_eq!(h.above_at_most(g[3]), 3);
        assert_eq!(Hist::new(&[], &[]).quantile(0.99), None);
        let overflow = Hist::new(&[(u64::MAX, 3)], &[]);
        assert_eq!(overflow.above_at_least(60_000_000), 3);
    }

    #[test]
    fn threshold_pairs() {
        assert_eq!(steps_for(0.0), 0);
        assert_eq!(steps_for(0.1), 1);
        assert_eq!(steps_for(0.5), 5);
        let g = router_grid();
        let t = thresholds(4, 1.1, 0);
        let first = grid_index(JUDGED_FROM_US);
        assert_eq!(t[0], Threshold { stable_us: g[first], canary_us: g[first + 1] });
        assert!(t.last().unwrap().stable_us <= JUDGED_UP_TO_US);
        assert!(t.iter().all(|p| p.canary_us != u64::MAX && p.canary_us > p.stable_us));
        // With an absolute margin of 2 ms, sub-millisecond thresholds compare with 2.1 ms and
        // more; far above 2 ms the relative margin decides.
        let t = thresholds(4, 1.1, 2000);
        assert!(t[0].stable_us >= 1000 && t[0].stable_us < 1100, "{:?}", t[0]);
        assert!(
            t[0].canary_us >= t[0].stable_us + 2000 && t[0].canary_us < (t[0].stable_us + 2000) * 11 / 10,
            "{:?}",
            t[0]
        );
        let far = t.iter().find(|p| p.stable_us > 100_000).unwrap();
        let i = grid_index(far.stable_us);
        assert_eq!(far.canary_us, g[i + 1]);
        // No margin at all: the same bound.
        assert_eq!(thresholds(4, 1.0, 0)[3], Threshold { stable_us: g[first + 12], canary_us: g[first + 12] });
    }
}
