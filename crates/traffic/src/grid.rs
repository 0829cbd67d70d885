//! The latency histogram grid: bucket bounds in µs, ×1.1 apart from 100 µs to 60 s, then an
//! overflow bucket bounded by `u64::MAX`. Fine enough (10% relative error) to compare p99s
//! between versions; the router counts in it and the analysis' thresholds lie on it, which is
//! what makes the exceedance counts of the latency test exact.

use std::sync::LazyLock;

/// The bucket bounds in µs, ascending, ending with `u64::MAX`.
pub static LATENCY_BOUNDS_US: LazyLock<Vec<u64>> = LazyLock::new(|| {
    let mut bounds = Vec::new();
    let mut bound = 100.0_f64;
    loop {
        let b = bound.round() as u64;
        bounds.push(b);
        if b >= 60_000_000 {
            break;
        }
        bound *= 1.1;
    }
    bounds.push(u64::MAX);
    bounds
});

/// [`LATENCY_BOUNDS_US`] as a slice.
pub fn latency_bounds_us() -> &'static [u64] {
    &LATENCY_BOUNDS_US
}

/// The bound below `upper` on the grid (the lower edge of its bucket); for a bound not on the
/// grid, one ×1.1 step down.
pub fn lower_bound_us(upper: u64) -> u64 {
    let bounds = latency_bounds_us();
    match bounds.binary_search(&upper) {
        Ok(0) => 0,
        Ok(i) => bounds[i - 1],
        Err(_) => (upper as f64 / 1.1) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_tenth_steps_from_100_us_to_a_minute() {
        let g = latency_bounds_us();
        assert_eq!(&g[..4], &[100, 110, 121, 133]);
        assert!(g.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*g.last().unwrap(), u64::MAX);
        assert!(g[g.len() - 2] >= 60_000_000);
        assert_eq!(lower_bound_us(100), 0);
        assert_eq!(lower_bound_us(110), 100);
        assert!((900..1000).contains(&lower_bound_us(1000)));
    }
}
