//! Order statistics over a handful of runs.

/// Median, p90, p95, min and max of a set of measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    /// The middle value; for an even count, the mean of the two middle values (the usual
    /// definition, so 20 runs do not silently report the 10th or the 11th).
    pub median: f64,
    /// Nearest rank: the smallest value with at least 90% of the runs at or below it. With 20
    /// runs that is the 18th; no interpolation, so it is always a value that was measured.
    pub p90: f64,
    /// Nearest rank, as `p90`.
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "n": self.n,
            "median": round3(self.median),
            "p90": round3(self.p90),
            "p95": round3(self.p95),
            "min": round3(self.min),
            "max": round3(self.max),
        })
    }
}

/// None for no values. Non-finite values are left out: they can only come from a bug in the
/// caller, and one of them must not turn the whole summary into NaN.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    let rank = |q: f64| ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(Summary { n, median, p90: v[rank(0.9) - 1], p95: v[rank(0.95) - 1], min: v[0], max: v[n - 1] })
}

/// The median alone, for the "where the time goes" columns.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = values.into_iter().collect();
    summarize(&v).map(|s| s.median)
}

/// Nearest rank: the smallest value with at least a share `q` of the values at or below it
/// (non-finite values left out); none for no values.
pub fn quantile(values: impl IntoIterator<Item = f64>, q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Milliseconds to three decimals: microsecond resolution is all the clocks here offer, and
/// it keeps the JSON readable.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_summary() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
    }

    #[test]
    fn odd_and_even_medians() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
    }

    #[test]
    fn p90_is_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = summarize(&v).unwrap();
        assert_eq!((s.n, s.p90, s.min, s.max, s.median), (20, 18.0, 1.0, 20.0, 10.5));
        assert_eq!(summarize(&[7.0]).unwrap().p90, 7.0);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(summarize(&ten).unwrap().p90, 9.0);
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let s = summarize(&[1.0, f64::INFINITY, 3.0, f64::NAN]).unwrap();
        assert_eq!((s.n, s.median), (2, 2.0));
    }
}
