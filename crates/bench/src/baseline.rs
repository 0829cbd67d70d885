//! `--baseline BINARY` of the mitigation and router benchmarks: an earlier build of ringfence
//! measured in the same invocation as this one, its runs alternated with this binary's, so that
//! a before/after comparison is a ratio within one run on one machine rather than two runs
//! hours apart, each with its own drift and neighbours.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

/// Whether `ringfence router` wants its admin secret from a file (`--admin-token-file`):
/// builds from before that secret take no such option and refuse it. Asked of the binary's own
/// `--help`, since what a build accepts is a fact about that file; a guess from a version or a
/// commit would break on the next build.
pub fn router_takes_admin_token(ringfence: &Path) -> Result<bool> {
    let out = Command::new(ringfence)
        .args(["router", "--help"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} router --help", ringfence.display()))?;
    if !out.status.success() {
        bail!(
            "`{} router --help` failed ({}): {}",
            ringfence.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).contains("--admin-token-file"))
}

/// One headline figure, measured with both binaries.
pub struct Figure {
    pub name: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    pub decimals: usize,
}

impl Figure {
    /// after / before; none when either is missing or the baseline's is not positive (a ratio
    /// to zero or a negative figure says nothing).
    pub fn ratio(&self) -> Option<f64> {
        match (self.after, self.before) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }
    }
}

/// The figures side by side, with after/before.
pub fn table(o: &mut String, baseline: &str, figures: &[Figure]) {
    let _ = writeln!(o, "Before and after, measured in this run (ratio = after / before, of the medians):");
    let _ = writeln!(o, "  before  {baseline} (--baseline)");
    let _ = writeln!(o, "  after   this binary");
    let _ = writeln!(o, "  {:<40} {:>10} {:>10} {:>13}", "figure", "before", "after", "after/before");
    for f in figures {
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.*}", f.decimals));
        let ratio = f.ratio().map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(o, "  {:<40} {:>10} {:>10} {:>13}", f.name, cell(f.before), cell(f.after), ratio);
    }
}

pub fn json(baseline: &str, figures: &[Figure]) -> Value {
    json!({
        "binary": baseline,
        "figures": figures.iter().map(|f| json!({
            "figure": f.name,
            "before": f.before,
            "after": f.after,
            "after_over_before": f.ratio(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(before: Option<f64>, after: Option<f64>) -> Figure {
        Figure { name: "median TTM at 10% (s)".into(), before, after, decimals: 3 }
    }

    #[test]
    fn the_ratio_is_after_over_before_and_missing_figures_show_a_dash() {
        assert_eq!(fig(Some(0.5), Some(0.25)).ratio(), Some(0.5));
        assert_eq!(fig(None, Some(0.25)).ratio(), None);
        assert_eq!(fig(Some(0.0), Some(0.25)).ratio(), None);
        let mut o = String::new();
        table(&mut o, "/old/ringfence", &[fig(Some(0.5), Some(0.25)), fig(None, Some(0.3))]);
        assert!(o.contains("0.500      0.250          0.50"), "{o}");
        assert!(o.lines().last().unwrap().ends_with("-      0.300             -"), "{o}");
    }
}
