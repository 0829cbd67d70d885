//! DORA's five metrics of a workload, computed from its state (itself a fold of the event log)
//! over a window of time: deployment frequency, lead time for changes, change fail rate,
//! failed deployment recovery time and deployment rework rate, with the clusters of the 2024
//! Accelerate State of DevOps report beside them, and the change size of each deployment.

use serde::{Deserialize, Serialize};

use crate::rollout::{RolloutKind, RolloutStatus};
use crate::state::WorkloadState;
use crate::time::Timestamp;

const DAY_MS: u64 = 86_400_000;

/// One deployment as the metrics count it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub rollout_id: String,
    pub version: String,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// completed, mitigated, aborted, halted.
    pub outcome: String,
    /// It failed in production: an incident was opened for it.
    pub failed: bool,
    /// Rework: a rollback, or a hotfix of an earlier release.
    pub rework: bool,
    /// From the change's commit (`metadata.committed_at`) to completion; from the release's
    /// registration when the pipeline did not say when it was committed.
    pub lead_time_ms: Option<u64>,
    /// Where the lead time starts: `commit` or `registration`.
    pub lead_time_from: String,
    pub change_lines: Option<u64>,
}

/// A metric beside the report's clusters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub value: Option<f64>,
    pub unit: &'static str,
    /// The report's cluster the value falls in (`elite`, `high`, `medium`, `low`), when there
    /// is a value and the clusters are ordered for this metric.
    pub band: Option<&'static str>,
    /// The report's figures for each cluster, in words.
    pub reference: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dora {
    pub workload: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub deployment_frequency: Metric,
    pub lead_time: Metric,
    pub change_fail_rate: Metric,
    pub recovery_time: Metric,
    pub rework_rate: Metric,
    pub deployments: Vec<Deployment>,
}

fn median(mut v: Vec<u64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] as f64 } else { (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0 })
}

/// The metrics of `ws` over deployments that ended in `[from, to)`.
pub fn compute(ws: &WorkloadState, from: Timestamp, to: Timestamp) -> Dora {
    let mut deployments = Vec::new();
    for r in &ws.rollouts {
        if crate::drill::is_drill(r) {
            continue;
        }
        let Some(ended) = r.ended_at.filter(|e| *e >= from && *e < to) else { continue };
        let release = ws.releases.get(&r.release);
        let completed = r.status == RolloutStatus::Completed;
        deployments.push(Deployment {
            rollout_id: r.id.clone(),
            version: r.release.clone(),
            started_at: r.started_at,
            ended_at: ended,
            outcome: r.status.as_str().to_string(),
            failed: ws.incidents.contains_key(&r.id),
            rework: r.kind == RolloutKind::Rollback || release.is_some_and(|x| x.content.hotfix_for.is_some()),
            lead_time_ms: release
                .filter(|_| completed)
                .map(|x| ended.since(x.content.metadata.committed_at.unwrap_or(x.created_at))),
            lead_time_from: if release.is_some_and(|x| x.content.metadata.committed_at.is_some()) {
                "commit"
            } else {
                "registration"
            }
            .to_string(),
            change_lines: release.and_then(|x| x.content.metadata.size.as_ref().map(|s| s.lines)),
        });
    }
    let days = (to.since(from) as f64 / DAY_MS as f64).max(1.0 / 24.0);
    let completed = deployments.iter().filter(|d| d.outcome == "completed").count();
    let total = deployments.len();
    let per_day = completed as f64 / days;
    let lead = median(deployments.iter().filter_map(|d| d.lead_time_ms).collect());
    let failed = deployments.iter().filter(|d| d.failed).count();
    let recovery = median(
        ws.incidents
            .values()
            .filter(|i| i.detected_at >= from && i.detected_at < to)
            .filter_map(|i| i.mitigated_at.map(|m| m.since(i.detected_at)))
            .collect(),
    );
    let rework = deployments.iter().filter(|d| d.rework).count();
    let rate = |n: usize| (total > 0).then(|| n as f64 / total as f64);
    let band_by = |value: Option<f64>, limits: [f64; 3], lower_is_better: bool| {
        let v = value?;
        let names = ["elite", "high", "medium"];
        for (name, limit) in names.iter().zip(limits) {
            if (lower_is_better && v <= limit) || (!lower_is_better && v >= limit) {
                return Some(*name);
            }
        }
        Some("low")
    };
    Dora {
        workload: ws.name.clone(),
        from,
        to,
        deployment_frequency: Metric {
            value: Some(per_day),
            unit: "deployments per day",
            band: band_by(Some(per_day), [1.0, 1.0 / 7.0, 1.0 / 30.0], false),
            reference: "elite: on demand (several a day); high: daily to weekly; medium: weekly to monthly; low: monthly to every six months",
        },
        lead_time: Metric {
            value: lead.map(|ms| ms / 3_600_000.0),
            unit: "hours (median, release registered to completed)",
            band: band_by(lead.map(|ms| ms / 3_600_000.0), [24.0, 7.0 * 24.0, 30.0 * 24.0], true),
            reference: "elite: under a day; high: a day to a week; medium: a week to a month; low: a month to six months",
        },
        change_fail_rate: Metric {
            value: rate(failed),
            unit: "share of deployments that failed in production",
            // The 2024 clusters are not ordered on this metric (high 20%, medium 10%).
            band: None,
            reference: "elite 5%, high 20%, medium 10%, low 40%",
        },
        recovery_time: Metric {
            value: recovery.map(|ms| ms / 3_600_000.0),
            unit: "hours (median, detected to mitigated)",
            band: band_by(recovery.map(|ms| ms / 3_600_000.0), [1.0, 24.0, 24.0], true),
            reference: "elite: under an hour; high: under a day; medium: under a day; low: a week to a month",
        },
        rework_rate: Metric {
            value: rate(rework),
            unit: "share of deployments that were rollbacks or hotfixes",
            band: None,
            reference: "new in the 2024 report: no clusters published yet",
        },
        deployments,
    }
}

use crate::chart::esc;

/// The window drawn for people: a bar per day of deployments (completed ones green, failed
/// ones red on top), and each deployment's change size as a dot on a second scale. SVG with a
/// title and a description, so it reads without the picture too.
pub fn svg(d: &Dora) -> String {
    const W: f64 = 720.0;
    const H: f64 = 240.0;
    const PAD: f64 = 40.0;
    let days = ((d.to.since(d.from) as f64) / DAY_MS as f64).ceil().max(1.0) as usize;
    let mut ok = vec![0u32; days];
    let mut failed = vec![0u32; days];
    for x in &d.deployments {
        let i = ((x.ended_at.since(d.from) / DAY_MS) as usize).min(days - 1);
        if x.failed {
            failed[i] += 1;
        } else if x.outcome == "completed" {
            ok[i] += 1;
        }
    }
    let top = ok.iter().zip(&failed).map(|(a, b)| a + b).max().unwrap_or(0).max(1) as f64;
    let max_lines = d.deployments.iter().filter_map(|x| x.change_lines).max().unwrap_or(0).max(1) as f64;
    let bar = (W - 2.0 * PAD) / days as f64;
    let y = |n: f64| H - PAD - n / top * (H - 2.0 * PAD);
    let rate = |m: &Metric, f: &dyn Fn(f64) -> String| m.value.map_or("none".to_string(), f);
    let desc = format!(
        "{} deployments from {} to {}; {} failed. Frequency {}, lead time {}, change fail rate {}, recovery {}.",
        d.deployments.len(),
        d.from,
        d.to,
        d.deployments.iter().filter(|x| x.failed).count(),
        rate(&d.deployment_frequency, &|v| format!("{v:.2} a day")),
        rate(&d.lead_time, &|v| format!("{v:.1} h")),
        rate(&d.change_fail_rate, &|v| format!("{:.0}%", v * 100.0)),
        rate(&d.recovery_time, &|v| format!("{:.1} min", v * 60.0)),
    );
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"t d\">\
<title id=\"t\">Deployments of {} per day</title><desc id=\"d\">{}</desc>\
<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/>\
<text x=\"{PAD}\" y=\"{t}\" font-size=\"12\">{} a day at most; dots: change size (lines, up to {})</text>",
        esc(&d.workload),
        esc(&desc),
        top,
        max_lines,
        b = H - PAD,
        r = W - PAD,
        t = PAD - 12.0,
    );
    for i in 0..days {
        let x = PAD + i as f64 * bar;
        let (g, r) = (f64::from(ok[i]), f64::from(failed[i]));
        if g > 0.0 {
            o.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#1a7f37\"/>",
                y(g),
                (bar - 1.0).max(1.0),
                H - PAD - y(g)
            ));
        }
        if r > 0.0 {
            o.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#b3261e\"/>",
                y(g + r),
                (bar - 1.0).max(1.0),
                y(g) - y(g + r)
            ));
        }
    }
    for x in &d.deployments {
        if let Some(lines) = x.change_lines {
            let cx = PAD + (x.ended_at.since(d.from) as f64 / d.to.since(d.from).max(1) as f64) * (W - 2.0 * PAD);
            let cy = H - PAD - lines as f64 / max_lines * (H - 2.0 * PAD);
            o.push_str(&format!(
                "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\" fill=\"#444\"><title>{} {}: {lines} lines</title></circle>",
                esc(&x.version),
                esc(&x.outcome)
            ));
        }
    }
    o.push_str("</svg>\n");
    o
}
