//! `ringfence lint`: a failure-mode analysis of a workload's deployment path, from its spec,
//! its plan at its traffic, and its history (releases, last known good, drills). Each finding
//! names the rule, its severity, the field it is about, what is wrong, the fix, and the seed
//! recommendation it serves (the seeds' "perform a failure mode analysis on your CI/CD
//! pipelines to help identify issues that can complicate mitigation efforts").
//!
//! Pure: the server (or the CLI, for a file) gathers what the rules read into [`LintInput`].

use serde::Serialize;

use crate::drill::{Drill, DrillOutcome, TRIGGERS};
use crate::release::MigrationKind;
use crate::spec::{Criticality, ExposureModel, Gate, WorkloadSpec};
use crate::state::WorkloadState;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One rule of the analysis: what it looks for, how it is fixed, and why it matters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub fix: &'static str,
    /// The recommendation of the seeds (docs/drills.md cites them) the rule serves.
    pub seed: &'static str,
}

const DETECTION: &str = "Mitigation strategy, Detection: robust testing and monitoring at each phase of the rollout";
const HEALTH_MODEL: &str = "Safe deployment, Health models: deployments pass health checks before each phase; include usage metrics so a lack of reports does not hide an issue";
const TEST_MITIGATION: &str = "Mitigation strategy: adopt automatic rollback only after you test your pipeline thoroughly and regularly; test your entire mitigation strategy frequently";
const DECISION: &str = "Mitigation strategy, Decision: business-critical workloads are always deployed side by side, so falling back is the preferred mitigation";
const LKG: &str = "Mitigation strategy: the team agrees on the last known good, and the pipeline can deploy it";
const DATA: &str = "Safe deployment, Issue detection: rolling back data changes is complex; have clear instructions for data changes (backups, point-in-time restore)";
const EMERGENCY: &str = "Safe deployment, Emergency protocols: define who can approve acceleration in an emergency";
const COMMUNICATION: &str = "Mitigation strategy, Communication: clearly defined communication responsibilities and a standard cadence of updates";
const WINDOWS: &str =
    "Mitigation strategy, Detection: deploy rollout phases during working hours, with a full support team available";
const STAGING: &str = "Safe deployment: deploy changes to staging environments that mirror production";
const CAPACITY: &str = "Mitigation strategy: the stack falling back takes all the traffic; pay attention to scaling in the last known good deployment";
const SMOKE: &str = "Mitigation strategy, Detection: smoke testing and other quality testing should happen at each phase of the rollout";
const TRUST: &str =
    "Mitigation strategy: trust that automation is triggered only when necessary; design triggers carefully";

pub const RULES: &[Rule] = &[
    Rule {
        id: "phase-without-health-gate",
        severity: Severity::Error,
        title: "A phase exposes users without a health gate",
        fix: "add \"health\" to the phase's `gates`",
        seed: HEALTH_MODEL,
    },
    Rule {
        id: "no-usage-floor",
        severity: Severity::Warning,
        title: "A phase can pass while usage drops",
        fix: "set `health.min_usage_ratio` (e.g. 0.5): the request rate during a phase against the rate before the rollout",
        seed: HEALTH_MODEL,
    },
    Rule {
        id: "bake-shorter-than-detection",
        severity: Severity::Warning,
        title: "A bake is shorter than detection takes at the workload's traffic",
        fix: "lengthen the bake to what `ringfence plan` says the phase needs, or raise its weight",
        seed: DETECTION,
    },
    Rule {
        id: "trigger-never-drilled",
        severity: Severity::Warning,
        title: "Automatic mitigation on a trigger no drill has exercised",
        fix: "run `ringfence drill WORKLOAD --fault F` for the trigger (or schedule it in `[drill] scheduled`)",
        seed: TEST_MITIGATION,
    },
    Rule {
        id: "trigger-drill-failed",
        severity: Severity::Error,
        title: "The last drill of an automatically mitigated trigger failed",
        fix: "fix what the drill report names, then drill again",
        seed: TEST_MITIGATION,
    },
    Rule {
        id: "trigger-drill-stale",
        severity: Severity::Warning,
        title: "The last passed drill of a trigger is older than `[drill] max_age`",
        fix: "drill the trigger again (or schedule it in `[drill] scheduled`)",
        seed: TEST_MITIGATION,
    },
    Rule {
        id: "critical-not-side-by-side",
        severity: Severity::Warning,
        title: "A business-critical workload is not deployed side by side",
        fix: "use `rollout.model = \"canary\"` or `\"blue_green\"`, with a first phase below 100%",
        seed: DECISION,
    },
    Rule {
        id: "no-last-known-good",
        severity: Severity::Warning,
        title: "No last known good to fall back or roll back to",
        fix: "complete a rollout: its release becomes the last known good",
        seed: LKG,
    },
    Rule {
        id: "irreversible-without-way-back",
        severity: Severity::Error,
        title: "A release's irreversible migration has no safe mitigation",
        fix: "set `[data] backup` (a dump or snapshot before the migration), or put the new code paths behind flags (`guarded_by` with `mitigation.bypass_approvers`), or split the migration into expand and contract",
        seed: DATA,
    },
    Rule {
        id: "no-emergency-approvers",
        severity: Severity::Warning,
        title: "An emergency path with nobody who may approve it",
        fix: "create a token with `--role emergency-approver` for the workload (`ringfence token create NAME --role emergency-approver --workload W`)",
        seed: EMERGENCY,
    },
    Rule {
        id: "no-emergency-path",
        severity: Severity::Note,
        title: "A high or critical workload without an emergency path",
        fix: "add `[emergency] severities` so a hotfix can be accelerated with an emergency approver",
        seed: EMERGENCY,
    },
    Rule {
        id: "no-communication-channel",
        severity: Severity::Warning,
        title: "Nobody hears of a failed rollout",
        fix: "add a `[[notify]]` channel (webhook, Slack, email), and `[incident] commander`",
        seed: COMMUNICATION,
    },
    Rule {
        id: "no-deployment-window",
        severity: Severity::Warning,
        title: "Production without a deployment window",
        fix: "add `[schedule] windows` (e.g. `Mon-Fri 09:00-17:00`) in the team's time zone",
        seed: WINDOWS,
    },
    Rule {
        id: "staging-differs",
        severity: Severity::Warning,
        title: "The previous environment differs from this one beyond the version",
        fix: "align the two specs, configurations and flags (`ringfence parity` lists each difference)",
        seed: STAGING,
    },
    Rule {
        id: "stable-too-small",
        severity: Severity::Warning,
        title: "The stable stack is too small to carry all traffic after a fallback",
        fix: "run at least 2 replicas, and enough that the stable version alone serves the workload's traffic with room for its peaks (`executor.replica_capacity` is one replica's requests per second)",
        seed: CAPACITY,
    },
    Rule {
        id: "automatic-fallback-off",
        severity: Severity::Note,
        title: "Unhealthy rollouts wait for a person",
        fix: "turn `mitigation.auto_fallback` on once drills show the triggers are trustworthy",
        seed: TEST_MITIGATION,
    },
    Rule {
        id: "no-margin",
        severity: Severity::Warning,
        title: "Any difference from the stable version fails a release",
        fix: "set `health.analysis.margin` to the smallest difference worth acting on",
        seed: TRUST,
    },
    Rule {
        id: "no-smoke-tests",
        severity: Severity::Note,
        title: "No smoke test runs in each phase",
        fix: "add `[[health.smoke]]` (an HTTP check or a command) that exercises the main paths of the new version",
        seed: SMOKE,
    },
    Rule {
        id: "pin-header-open",
        severity: Severity::Note,
        title: "Any request can choose its version",
        fix: "keep `router.pin_header` only where the edge strips that header from users' requests, or remove it",
        seed: TRUST,
    },
    Rule {
        id: "unknown-holds-unwatched",
        severity: Severity::Note,
        title: "A rollout held on no evidence waits with nobody named to decide",
        fix: "set `[incident] commander` or `escalation`, or `mitigation.fallback_after_max_hold = true`",
        seed: COMMUNICATION,
    },
];

pub fn rule(id: &str) -> &'static Rule {
    RULES.iter().find(|r| r.id == id).expect("every finding names a rule of RULES")
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    /// The spec field it is about (`rollout.phases[0].gates`), empty when it is about the
    /// workload's history.
    pub field: String,
    pub message: String,
}

/// The traffic the bakes are planned at.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanTraffic {
    pub rps: f64,
    pub stable_error_rate: f64,
    /// The stable version's latency histogram (the router's buckets), possibly empty.
    pub stable_latency_us: Vec<(u64, u64)>,
}

/// What the rules read.
pub struct LintInput<'a> {
    pub spec: &'a WorkloadSpec,
    /// The workload as the server knows it; `None` for a spec file linted alone.
    pub state: Option<&'a WorkloadState>,
    /// The previous environment (`[environment] after`), as the server knows it.
    pub previous: Option<&'a WorkloadState>,
    /// How many emergency approvers may approve for this workload; `None` when unknown.
    pub emergency_approvers: Option<usize>,
    pub traffic: Option<PlanTraffic>,
    pub now: Timestamp,
}

/// The share of its capacity the stable stack may need after a fallback: the traffic measured
/// is an average over the router's life, and peaks run above it.
const MAX_LOAD_AFTER_FALLBACK: f64 = 0.7;

/// The analysis: every finding, errors first.
pub fn lint(input: &LintInput<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let spec = input.spec;
    let mut add = |id: &'static str, field: String, message: String| {
        out.push(Finding { rule: id, severity: rule(id).severity, field, message });
    };
    let critical = matches!(spec.workload.criticality, Criticality::High | Criticality::Critical);

    // Health gates and the usage floor.
    for (i, p) in spec.rollout.phases.iter().enumerate() {
        if !p.is_dark() && !p.gates.contains(&Gate::Health) {
            add(
                "phase-without-health-gate",
                format!("rollout.phases[{i}].gates"),
                format!(
                    "phase {:?} exposes {}% of users and passes at the end of its bake whatever their health",
                    p.name, p.weight
                ),
            );
        }
    }
    if spec.health.min_usage_ratio <= 0.0 {
        add(
            "no-usage-floor",
            "health.min_usage_ratio".into(),
            "min_usage_ratio is 0: a phase passes even when users stop coming (a broken page reports no errors)".into(),
        );
    }

    // Bakes against detection at the workload's traffic.
    if let Some(t) = &input.traffic
        && t.rps > 0.0
    {
        let advice = crate::analysis::planner::spec_bakes(spec, t.rps, t.stable_error_rate, &t.stable_latency_us);
        for (i, (p, a)) in spec.rollout.phases.iter().zip(advice).enumerate() {
            if p.is_dark() || p.weight_bp() >= 10_000 {
                continue;
            }
            if let Some(w) = a.warning {
                add(
                    "bake-shorter-than-detection",
                    format!("rollout.phases[{i}].bake"),
                    format!("phase {:?}: {w}", p.name),
                );
            }
        }
    }

    // Exposure model of a business-critical workload.
    if critical {
        let first = spec.rollout.phases.iter().find(|p| !p.is_dark());
        if spec.rollout.model == ExposureModel::Rings {
            add(
                "critical-not-side-by-side",
                "rollout.model".into(),
                format!(
                    "{} is {:?} and updated in place (rings): a fallback must restart the old version where the new one ran",
                    spec.workload.name, spec.workload.criticality
                ),
            );
        } else if spec.rollout.model == ExposureModel::Canary
            && first.is_some_and(|p| p.weight_bp() >= 10_000 && p.segment.is_none())
        {
            add(
                "critical-not-side-by-side",
                "rollout.phases[0].weight".into(),
                format!(
                    "the first phase users reach takes all of them at once{}",
                    spec.rollout.not_side_by_side.as_ref().map_or(String::new(), |why| format!(" (accepted: {why})"))
                ),
            );
        }
    }

    // Capacity of the stable stack: after a fallback it carries every user alone.
    let replicas = spec.executor.replicas;
    let load = match (spec.executor.replica_capacity, &input.traffic) {
        (Some(capacity), Some(t)) if t.rps > 0.0 => Some(t.rps / (capacity * f64::from(replicas))),
        _ => None,
    };
    if let Some(load) = load.filter(|l| *l > MAX_LOAD_AFTER_FALLBACK) {
        let rps = input.traffic.as_ref().map_or(0.0, |t| t.rps);
        add(
            "stable-too-small",
            "executor.replicas".into(),
            format!(
                "at the measured {rps:.0} requests/s, the stable version's {replicas} replica(s) of {:.0} requests/s each would run at {:.0}% of their capacity after a fallback (at most {:.0}%, to leave room for peaks): {} replicas are needed",
                spec.executor.replica_capacity.unwrap_or_default(),
                load * 100.0,
                MAX_LOAD_AFTER_FALLBACK * 100.0,
                (f64::from(replicas) * load / MAX_LOAD_AFTER_FALLBACK).ceil().max(2.0)
            ),
        );
    } else if replicas < 2 {
        add(
            "stable-too-small",
            "executor.replicas".into(),
            format!(
                "{replicas} replica: after a fallback one instance carries every user, and the router has no other replica to retry a failed request on"
            ),
        );
    }

    // Mitigation policy.
    let auto = spec.mitigation.auto_fallback;
    if !auto {
        add(
            "automatic-fallback-off",
            "mitigation.auto_fallback".into(),
            "an unhealthy rollout halts with its users still on the new version until a person acts".into(),
        );
    }
    let m = &spec.health.analysis.margin;
    if m.error_ratio <= 1.0 && m.error_points <= 0.0 && m.latency_ratio <= 1.0 && m.latency.as_ms() == 0 {
        add(
            "no-margin",
            "health.analysis.margin".into(),
            "every margin is zero: a release measurably but harmlessly different (a fraction of a millisecond) is failed"
                .into(),
        );
    }

    if spec.health.smoke.is_empty() {
        add(
            "no-smoke-tests",
            "health.smoke".into(),
            "no [[health.smoke]]: a phase is judged on users' traffic and probes only, and a path few users take is not exercised".into(),
        );
    }
    if let Some(h) = &spec.router.pin_header {
        add(
            "pin-header-open",
            "router.pin_header".into(),
            format!(
                "a request carrying `{h}: VERSION` is sent to that version whatever its bucket, past the plan's exposure"
            ),
        );
    }

    // Communication and the people who decide.
    if spec.notify.is_empty() {
        add(
            "no-communication-channel",
            "notify".into(),
            "no [[notify]] channel: a failed rollout and its incident reach nobody unless they look".into(),
        );
    }
    if !spec.mitigation.fallback_after_max_hold
        && spec.incident.commander.is_empty()
        && spec.incident.escalation.is_empty()
    {
        add(
            "unknown-holds-unwatched",
            "incident.commander".into(),
            format!(
                "a phase held on no evidence escalates after rollout.max_hold ({}) to no one named",
                spec.rollout.max_hold
            ),
        );
    }

    // The emergency path.
    if !spec.emergency.severities.is_empty() {
        if input.emergency_approvers == Some(0) {
            add(
                "no-emergency-approvers",
                "emergency.severities".into(),
                format!(
                    "emergency deployments ({}) wait for an emergency approver of {}, and no token has that role",
                    spec.emergency.severities.join(", "),
                    spec.workload.name
                ),
            );
        }
    } else if critical {
        add(
            "no-emergency-path",
            "emergency".into(),
            "no [emergency] severities: a hotfix during an incident takes the full plan, bakes and approvals".into(),
        );
    }

    // Deployment windows for production.
    let env = spec.environment.name.to_ascii_lowercase();
    let production = matches!(env.as_str(), "production" | "prod" | "prd" | "live");
    if production && spec.schedule.windows.is_empty() {
        add(
            "no-deployment-window",
            "schedule.windows".into(),
            format!(
                "environment {:?} deploys at any hour, including when nobody is there to answer",
                spec.environment.name
            ),
        );
    }

    // What only the history shows.
    let Some(ws) = input.state else { return sorted(out) };
    if ws.stable.is_none() || ws.lkg.is_empty() {
        add(
            "no-last-known-good",
            String::new(),
            format!("{} has no release that completed a rollout: a failed first release can only be stopped", ws.name),
        );
    }
    let active = ws.active_rollout().map(|r| r.release.clone());
    let pending = ws.governance.pending.as_ref().map(|p| p.version.clone());
    let newest = ws.release_order.last().filter(|v| ws.stable.as_deref() != Some(v.as_str())).cloned();
    let mut candidates: Vec<String> = [active, pending, newest].into_iter().flatten().collect();
    candidates.dedup();
    for v in candidates {
        let Some(r) = ws.releases.get(&v) else { continue };
        let Some(mig) = &r.content.migration else { continue };
        if mig.kind() != MigrationKind::Irreversible {
            continue;
        }
        let backup = spec.data.backup.is_some();
        let bypass = !r.content.guarded_by.is_empty() && !spec.mitigation.bypass_approvers.is_empty();
        if !backup && !bypass {
            add(
                "irreversible-without-way-back",
                "data.backup".into(),
                format!(
                    "release {v} carries irreversible migration {:?}: falling back to {} may not work on the migrated data, and there is no backup and no flag to turn its code off",
                    mig.id,
                    ws.stable.as_deref().unwrap_or("the stable version")
                ),
            );
        }
    }
    if let Some(prev) = input.previous {
        let diffs: Vec<String> = crate::governance::parity(prev, ws)
            .into_iter()
            // A previous environment runs fewer replicas by design; everything else is drift.
            .filter(|d| d.key != "executor.replicas")
            .map(|d| format!("{} {}", d.area, d.key))
            .collect();
        if !diffs.is_empty() {
            let shown: Vec<_> = diffs.iter().take(8).cloned().collect();
            add(
                "staging-differs",
                "environment.after".into(),
                format!(
                    "{} differs from {} in {} place(s): {}{}",
                    prev.name,
                    ws.name,
                    diffs.len(),
                    shown.join(", "),
                    if diffs.len() > shown.len() { ", ..." } else { "" }
                ),
            );
        }
    }
    if auto {
        drills(spec, ws, input.now, &mut add);
    }
    sorted(out)
}

/// The drill rules: each trigger automatic mitigation acts on, against its last drill.
fn drills(spec: &WorkloadSpec, ws: &WorkloadState, now: Timestamp, add: &mut impl FnMut(&'static str, String, String)) {
    let trusted = &spec.mitigation.trusted;
    for (trigger, fault) in TRIGGERS {
        // A hold on no evidence is automatic only when it falls back after max_hold; the hold
        // itself is always there and is drilled by `signal-outage` all the same.
        if !crate::drill::automatic(spec, trigger) {
            continue;
        }
        let last: Option<&Drill> =
            ws.drills.iter().rev().map(|d| d.as_ref()).find(|d| d.fault.name() == fault && d.report.is_some());
        let field =
            if trusted.is_empty() { "mitigation.auto_fallback".to_string() } else { "mitigation.trusted".into() };
        let Some(d) = last else {
            add(
                "trigger-never-drilled",
                field,
                format!("automatic mitigation acts on `{trigger}`, and no drill has exercised it (`--fault {fault}`)"),
            );
            continue;
        };
        let report = d.report.as_ref().expect("filtered on report");
        match report.outcome {
            DrillOutcome::Failed => add(
                "trigger-drill-failed",
                field,
                format!("the last drill of `{trigger}` ({}) failed: {}", d.id, report.problems.join("; ")),
            ),
            _ => {
                let passed = ws.drills.iter().rev().find(|x| {
                    x.fault.name() == fault && x.report.as_ref().is_some_and(|r| r.outcome == DrillOutcome::Passed)
                });
                match passed {
                    None => add(
                        "trigger-never-drilled",
                        field,
                        format!("no drill of `{trigger}` has passed yet (the last, {}, was aborted)", d.id),
                    ),
                    Some(p) => {
                        let ended = p.report.as_ref().map_or(p.started_at, |r| r.ended_at);
                        let age = now.since(ended);
                        if age > spec.drill.max_age.as_ms() {
                            add(
                                "trigger-drill-stale",
                                "drill.max_age".into(),
                                format!(
                                    "the last passed drill of `{trigger}` ({}) ended {} ago; drill.max_age is {}",
                                    p.id,
                                    crate::duration::Dur::ms(age),
                                    spec.drill.max_age
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
}

fn sorted(mut out: Vec<Finding>) -> Vec<Finding> {
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// The findings as a SARIF 2.1.0 log, for code-scanning UIs. `file` is the spec file's path
/// (relative to the repository) and `locate` gives a field's line and column in it.
pub fn sarif(findings: &[Finding], file: Option<&str>, locate: &dyn Fn(&str) -> (usize, usize)) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = RULES
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "name": r.id,
                "shortDescription": { "text": r.title },
                "fullDescription": { "text": format!("{} ({})", r.title, r.seed) },
                "help": { "text": format!("Fix: {}", r.fix) },
                "defaultConfiguration": { "level": r.severity.as_str() },
                "properties": { "seed": r.seed },
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            let r = rule(f.rule);
            let mut res = serde_json::json!({
                "ruleId": f.rule,
                "ruleIndex": RULES.iter().position(|x| x.id == f.rule).unwrap_or(0),
                "level": f.severity.as_str(),
                "message": { "text": format!("{} Fix: {}.", f.message, r.fix) },
            });
            if let Some(file) = file {
                let (line, column) = if f.field.is_empty() { (0, 0) } else { locate(&f.field) };
                let mut loc = serde_json::json!({ "physicalLocation": { "artifactLocation": { "uri": file } } });
                if line > 0 {
                    loc["physicalLocation"]["region"] =
                        serde_json::json!({ "startLine": line, "startColumn": column.max(1) });
                }
                res["locations"] = serde_json::json!([loc]);
            }
            res
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "ringfence lint",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{EXAMPLE, parse};

    const PRODUCTION: &str = include_str!("../../../examples/production.toml");

    fn lint_text(text: &str) -> Vec<Finding> {
        let spec = parse("spec.toml", text).unwrap_or_else(|e| panic!("{e:?}"));
        lint(&LintInput {
            spec: &spec,
            state: None,
            previous: None,
            emergency_approvers: None,
            traffic: None,
            now: Timestamp(0),
        })
    }

    fn rules(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.rule).collect()
    }

    /// Lints the production example with one edit, and checks that exactly `rule` is found.
    fn finds(from: &str, to: &str, rule: &str, field: &str) {
        assert!(PRODUCTION.contains(from), "{from}");
        let f = lint_text(&PRODUCTION.replacen(from, to, 1));
        assert_eq!(rules(&f), vec![rule], "{f:#?}");
        assert_eq!(f[0].field, field);
        assert_eq!(f[0].severity, super::rule(rule).severity);
    }

    #[test]
    fn the_production_example_is_clean() {
        assert_eq!(lint_text(PRODUCTION), vec![]);
    }

    #[test]
    fn each_spec_rule_finds_its_failure_mode() {
        finds(
            "weight = 25\nbake = \"5m\"\n",
            "weight = 25\nbake = \"5m\"\ngates = []\n",
            "phase-without-health-gate",
            "rollout.phases[1].gates",
        );
        finds("min_usage_ratio = 0.5", "min_usage_ratio = 0.0", "no-usage-floor", "health.min_usage_ratio");
        finds("replicas = 3", "replicas = 1", "stable-too-small", "executor.replicas");
        finds("[router]\n", "[router]\npin_header = \"x-pin\"\n", "pin-header-open", "router.pin_header");
        let no_smoke = PRODUCTION.split("[[health.smoke]]").next().unwrap().to_string()
            + "[mitigation]"
            + PRODUCTION.split("[mitigation]").nth(1).unwrap();
        assert_eq!(rules(&lint_text(&no_smoke)), vec!["no-smoke-tests"]);
        finds("auto_fallback = true", "auto_fallback = false", "automatic-fallback-off", "mitigation.auto_fallback");
        finds(
            "[environment]",
            "[health.analysis.margin]\nerror_ratio = 1.0\nerror_points = 0.0\nlatency_ratio = 1.0\nlatency = \"0ms\"\n\n[environment]",
            "no-margin",
            "health.analysis.margin",
        );
        finds("windows = [\"Mon-Fri 09:00-17:00\"]", "", "no-deployment-window", "schedule.windows");
        let unwatched = PRODUCTION
            .replacen("fallback_after_max_hold = true", "fallback_after_max_hold = false", 1)
            .replacen("commander = \"payments-oncall\"\n", "", 1);
        assert_eq!(rules(&lint_text(&unwatched)), vec!["unknown-holds-unwatched"]);
        finds("severities = [\"sev1\", \"sev2\"]", "severities = []", "no-emergency-path", "emergency");
        let no_notify = PRODUCTION.split("[[notify]]").next().unwrap().to_string()
            + "[drill]"
            + PRODUCTION.split("[drill]").nth(1).unwrap();
        assert_eq!(rules(&lint_text(&no_notify)), vec!["no-communication-channel"]);
        let rings = PRODUCTION
            .replacen("[rollout]\n", "[rollout]\nmodel = \"rings\"\n", 1)
            .replacen("weight = 5\n", "weight = 33\n", 1)
            .replacen("weight = 25\n", "weight = 66\n", 1);
        let f = lint_text(&rings);
        assert_eq!(rules(&f), vec!["critical-not-side-by-side"], "{f:#?}");
        assert_eq!(f[0].field, "rollout.model");
    }

    #[test]
    fn a_critical_workload_exposing_everyone_at_once_is_found() {
        let text = PRODUCTION
            .replacen("weight = 5\n", "weight = 100\n", 1)
            .replacen("weight = 25\n", "weight = 100\n", 1)
            .replacen("[rollout]\n", "[rollout]\nnot_side_by_side = \"a singleton consumer\"\n", 1);
        let f = lint_text(&text);
        assert_eq!(rules(&f), vec!["critical-not-side-by-side"], "{f:#?}");
        assert!(f[0].message.contains("accepted: a singleton consumer"), "{}", f[0].message);
    }

    #[test]
    fn the_commented_example_says_what_a_demo_spec_lacks() {
        let f = rules(&lint_text(EXAMPLE));
        for r in ["no-communication-channel", "no-emergency-path", "unknown-holds-unwatched"] {
            assert!(f.contains(&r), "{r} in {f:?}");
        }
        assert!(!f.contains(&"phase-without-health-gate"), "{f:?}");
    }

    /// A spec file linted at a measured traffic.
    fn at_traffic(spec: &WorkloadSpec, rps: f64, stable_error_rate: f64) -> Vec<Finding> {
        lint(&LintInput {
            spec,
            state: None,
            previous: None,
            emergency_approvers: None,
            traffic: Some(PlanTraffic { rps, stable_error_rate, stable_latency_us: vec![] }),
            now: Timestamp(0),
        })
    }

    #[test]
    fn a_bake_shorter_than_detection_at_the_measured_traffic_is_found() {
        let spec = parse("spec.toml", &PRODUCTION.replacen("bake = \"5m\"", "bake = \"5s\"", 1)).unwrap();
        let at = |rps: f64| at_traffic(&spec, rps, 0.01);
        let slow = at(5.0);
        assert!(rules(&slow).contains(&"bake-shorter-than-detection"), "{slow:#?}");
        let f = slow.iter().find(|f| f.rule == "bake-shorter-than-detection").unwrap();
        assert_eq!(f.field, "rollout.phases[0].bake");
        assert!(!rules(&at(20_000.0)).contains(&"bake-shorter-than-detection"), "{:#?}", at(20_000.0));
    }

    #[test]
    fn a_stable_stack_that_cannot_carry_the_measured_traffic_is_found() {
        let spec = parse("spec.toml", &PRODUCTION.replacen("replicas = 3", "replicas = 3\nreplica_capacity = 100", 1))
            .unwrap();
        let at = |rps: f64| at_traffic(&spec, rps, 0.0);
        // 3 replicas of 100 requests/s: 150 is half their capacity, 250 is 83%.
        assert!(!rules(&at(150.0)).contains(&"stable-too-small"), "{:#?}", at(150.0));
        let busy = at(250.0);
        let f = busy.iter().find(|f| f.rule == "stable-too-small").expect("found");
        assert_eq!(f.field, "executor.replicas");
        assert!(f.message.contains("3 replica(s) of 100 requests/s each would run at 83%"), "{}", f.message);
        assert!(f.message.contains("4 replicas are needed"), "{}", f.message);
        assert!(
            parse("spec.toml", &PRODUCTION.replacen("replicas = 3", "replicas = 3\nreplica_capacity = 0", 1)).is_err()
        );
    }

    #[test]
    fn sarif_places_each_finding_on_its_line() {
        let text = PRODUCTION.replacen("replicas = 3", "replicas = 1", 1);
        let f = lint_text(&text);
        let log = sarif(&f, Some("deploy/payments.toml"), &|field| crate::spec::locate(&text, field));
        assert_eq!(log["version"], "2.1.0");
        let res = &log["runs"][0]["results"][0];
        assert_eq!(res["ruleId"], "stable-too-small");
        assert_eq!(res["level"], "warning");
        let line = text.lines().position(|l| l.starts_with("replicas = 1")).unwrap() + 1;
        assert_eq!(res["locations"][0]["physicalLocation"]["region"]["startLine"], line);
        assert_eq!(res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "deploy/payments.toml");
        let rules = log["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), RULES.len());
        assert_eq!(rules[res["ruleIndex"].as_u64().unwrap() as usize]["id"], "stable-too-small");
    }
}
