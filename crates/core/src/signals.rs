//! Signals judged from the workload's own state: smoke tests, alerts, user reports and usage.
//! The controller adds them to the observation; the analyzer's verdict absorbs them.

use crate::health::{Health, SignalResult, Traffic};
use crate::rollout::Rollout;
use crate::state::WorkloadState;
use crate::time::Timestamp;

fn signal(name: &str, version: &str, health: Health, rule: String, detail: String) -> SignalResult {
    SignalResult::new(name, version, health, "count", rule, detail)
}

/// The signals from the workload's own state that count for this rollout: all of them for an
/// analysed rollout, only its smoke tests for a first deploy or a rollback
/// ([`Rollout::is_analysed`]).
pub fn for_rollout(ws: &WorkloadState, r: &Rollout) -> Vec<SignalResult> {
    let mut signals = from_state(ws, r);
    if !r.is_analysed() {
        signals.retain(|s| s.signal == "smoke");
    }
    signals
}

/// Smoke tests, alerts and user reports for the rollout's current phase.
pub fn from_state(ws: &WorkloadState, r: &Rollout) -> Vec<SignalResult> {
    let mut out = Vec::new();
    let v = r.release.as_str();

    // Smoke tests of this phase only: a pass in an earlier phase proves nothing here.
    let smoke: Vec<_> = r.smoke.iter().filter(|t| t.phase == r.phase).collect();
    if !smoke.is_empty() {
        let failed: Vec<String> =
            smoke.iter().filter(|t| !t.passed).map(|t| format!("{}: {}", t.name, t.detail)).collect();
        let mut s = signal(
            "smoke",
            v,
            if failed.is_empty() { Health::Healthy } else { Health::Unhealthy },
            "every smoke test of the phase must pass against the new version".into(),
            if failed.is_empty() { format!("{} smoke test(s) passed", smoke.len()) } else { failed.join("; ") },
        );
        s.observed = Some(failed.len() as f64);
        s.threshold = Some(0.0);
        s.sample_size = smoke.len() as u64;
        out.push(s);
    }

    // Alerts: any firing alert that matches the workload's matchers halts its rollout.
    let matchers = &ws.spec.health.alerts.matchers;
    let matching: Vec<String> = ws
        .alerts
        .values()
        .filter(|a| {
            if matchers.is_empty() {
                a.labels.get("workload") == Some(&ws.name)
            } else {
                matchers.iter().all(|(k, val)| a.labels.get(k) == Some(val))
            }
        })
        .map(|a| if a.summary.is_empty() { a.alertname.clone() } else { format!("{} ({})", a.alertname, a.summary) })
        .collect();
    let mut s = signal(
        "alert",
        v,
        if matching.is_empty() { Health::Healthy } else { Health::Unhealthy },
        "no alert for the workload may be firing during the rollout".into(),
        if matching.is_empty() { "no alert firing".into() } else { format!("firing: {}", matching.join(", ")) },
    );
    s.observed = Some(matching.len() as f64);
    s.threshold = Some(0.0);
    out.push(s);

    // User reports, counted per rollout group since the phase began.
    let since = r.phase_started_at;
    let count =
        |version: &str| ws.reports.iter().filter(|p| p.at >= since && p.version.as_deref() == Some(version)).count();
    let on_new = count(v);
    let on_stable = r.from.as_deref().map(count);
    let limit = ws.spec.health.max_user_reports;
    let mut s = signal(
        "user_reports",
        v,
        if on_new as u32 >= limit.max(1) { Health::Unhealthy } else { Health::Healthy },
        format!("fewer than {limit} user reports against the new version in a phase"),
        format!("{on_new} report(s) from users served by {v} this phase"),
    );
    s.observed = Some(on_new as f64);
    s.threshold = Some(limit as f64);
    s.baseline = on_stable.map(|n| n as f64);
    out.push(s);
    out
}

/// Usage: the total request rate in the bake window against the rate before the rollout.
/// A drop means users are going away (or cannot get in), which no error counter shows.
pub fn usage(
    window_ms: u64,
    canary: Option<&Traffic>,
    stable: Option<&Traffic>,
    before_rps: Option<f64>,
    min_ratio: f64,
    version: &str,
) -> Option<SignalResult> {
    // Below one request a second there is no usage to compare with.
    let before = before_rps.filter(|r| *r >= 1.0)?;
    if window_ms < 1000 {
        return None;
    }
    let total = canary.map(|t| t.requests).unwrap_or(0) + stable.map(|t| t.requests).unwrap_or(0);
    let rps = total as f64 / (window_ms as f64 / 1000.0);
    let ratio = rps / before;
    let mut s = signal(
        "usage",
        version,
        if ratio < min_ratio { Health::Unhealthy } else { Health::Healthy },
        format!("request rate at least {:.0}% of the rate before the rollout", min_ratio * 100.0),
        format!("{rps:.1} req/s now vs {before:.1} req/s before ({:.0}%)", ratio * 100.0),
    );
    s.unit = "ratio".into();
    s.observed = Some(ratio);
    s.threshold = Some(min_ratio);
    s.sample_size = total;
    s.baseline = Some(1.0);
    Some(s)
}

/// When a signal was last judged, for freshness in evidence.
pub fn age_ms(now: Timestamp, at: Timestamp) -> u64 {
    now.since(at)
}
