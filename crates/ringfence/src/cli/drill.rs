//! `lint`, `drill`, `drills` and `gameday`: the failure-mode analysis and the rehearsal of
//! mitigations (docs/drills.md).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringfence_api as api;
use ringfence_core::lint;

use super::{print_json, stdout_failed, time};
use crate::client::ApiClient;
use crate::exit::{CliError, ExitCode};

#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum FailOn {
    Error,
    Warning,
    Never,
}

/// `ringfence lint TARGET`: a spec file alone (no server), or a workload on the server
/// (spec, plan at its traffic, history).
pub async fn lint(
    api: &ApiClient,
    target: &str,
    rps: Option<f64>,
    sarif: Option<&Path>,
    fail_on: FailOn,
    json: bool,
) -> Result<ExitCode, CliError> {
    let as_file = Path::new(target);
    let is_file = as_file.is_file() || target.ends_with(".toml");
    let (report, file, text) = if is_file {
        let text = std::fs::read_to_string(as_file)
            .map_err(|e| CliError::new(ExitCode::Invalid, format!("cannot read spec file {target}: {e}")))?;
        let spec = ringfence_core::spec::parse(target, &text).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            CliError::new(
                ExitCode::Invalid,
                format!("{target} is not a valid spec; `ringfence validate` says why:\n{}", lines.join("\n")),
            )
        })?;
        if let Some(r) = rps.filter(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(CliError::new(ExitCode::Invalid, format!("--rps must be above 0, found {r}")));
        }
        let findings = lint::lint(&lint::LintInput {
            spec: &spec,
            state: None,
            previous: None,
            emergency_approvers: None,
            traffic: rps.map(|rps| lint::PlanTraffic { rps, stable_error_rate: 0.0, stable_latency_us: vec![] }),
            now: ringfence_core::Timestamp(0),
        });
        (crate::lintreport::lint_report(&spec.workload.name, rps, &findings), Some(target.to_string()), Some(text))
    } else {
        let q = rps.map(|r| format!("?rps={r}")).unwrap_or_default();
        let r: api::LintReport = api.get(&format!("/v1/workloads/{target}/lint{q}")).await?;
        (r, None, None)
    };
    if let Some(path) = sarif {
        let findings: Vec<lint::Finding> = report.findings.iter().filter_map(finding).collect();
        let locate = |field: &str| text.as_deref().map_or((0, 0), |t| ringfence_core::spec::locate(t, field));
        let log = lint::sarif(&findings, file.as_deref(), &locate);
        let body = serde_json::to_string_pretty(&log).expect("a JSON value serializes");
        if path == Path::new("-") {
            outln!("{body}");
        } else {
            std::fs::write(path, body + "\n")
                .map_err(|e| CliError::new(ExitCode::Failure, format!("cannot write {}: {e}", path.display())))?;
        }
    }
    if json {
        print_json(&report);
    } else if sarif.is_none_or(|p| p != Path::new("-")) {
        let place = |f: &api::LintFinding| match (&file, &text) {
            (Some(file), Some(text)) if !f.field.is_empty() => {
                let (line, col) = ringfence_core::spec::locate(text, &f.field);
                if line > 0 { format!("{file}:{line}:{col}: ") } else { format!("{file}: ") }
            }
            (Some(file), _) => format!("{file}: "),
            _ => String::new(),
        };
        for f in &report.findings {
            let field = if f.field.is_empty() { String::new() } else { format!(" `{}`", f.field) };
            outln!("{}{}[{}]{field}: {}", place(f), f.severity, f.rule, f.message);
            outln!("    fix: {}", f.fix);
            outln!("    why: {}", f.seed);
        }
        outln!(
            "{}: {} error(s), {} warning(s), {} note(s){}",
            report.workload,
            report.errors,
            report.warnings,
            report.notes,
            match (is_file, report.rps) {
                (true, _) => "; the spec alone (lint the workload on a server for its history and traffic)".to_string(),
                (false, Some(r)) => format!("; bakes checked at {r:.1} req/s"),
                (false, None) => "; no traffic measured: bakes not checked (--rps to give it)".into(),
            }
        );
    }
    let failed = match fail_on {
        FailOn::Error => report.errors > 0,
        FailOn::Warning => report.errors + report.warnings > 0,
        FailOn::Never => false,
    };
    Ok(if failed { ExitCode::Invalid } else { ExitCode::Ok })
}

/// A finding as the server sent it, for the SARIF log; one of a rule this build does not
/// know (a newer server's) is left out.
fn finding(f: &api::LintFinding) -> Option<lint::Finding> {
    let rule = lint::RULES.iter().find(|r| r.id == f.rule)?;
    let severity = match f.severity.as_str() {
        "error" => lint::Severity::Error,
        "warning" => lint::Severity::Warning,
        _ => lint::Severity::Note,
    };
    Some(lint::Finding { rule: rule.id, severity, field: f.field.clone(), message: f.message.clone() })
}

pub struct DrillArgs<'a> {
    pub workload: &'a str,
    pub fault: Option<&'a str>,
    pub weight: Option<f64>,
    pub outside_window: bool,
    pub reason: &'a str,
    pub abort: bool,
    pub wait: bool,
    pub timeout: Duration,
}

/// `ringfence drill WORKLOAD --fault F`: start a drill (and wait for its report), or abort the
/// running one.
pub async fn drill(api: &ApiClient, a: &DrillArgs<'_>, json: bool) -> Result<ExitCode, CliError> {
    let w = a.workload;
    let started: api::DrillStarted = if a.abort {
        api.post(&format!("/v1/workloads/{w}/drills/abort"), &api::Reason { reason: a.reason.into() }).await?
    } else {
        let Some(fault) = a.fault else {
            return Err(CliError::new(
                ExitCode::Usage,
                format!("say which fault to inject: --fault {}", ringfence_core::drill::FAULTS.join("|")),
            ));
        };
        let req = api::StartDrill {
            fault: fault.into(),
            weight: a.weight,
            outside_window: a.outside_window,
            reason: a.reason.into(),
        };
        api.post(&format!("/v1/workloads/{w}/drills"), &req).await?
    };
    let d = started.drill;
    if !a.wait || a.abort {
        if json {
            print_json(&d);
        } else {
            outln!(
                "drill {} {}: {} on {} ({}% of users, rollout {})",
                d.id,
                if a.abort { "aborted" } else { "started" },
                d.fault,
                d.version,
                d.weight,
                d.rollout_id
            );
        }
        return Ok(ExitCode::Ok);
    }
    if !json {
        outln!("drill {}: {} on {} ({}% of users); waiting for its report", d.id, d.fault, d.version, d.weight);
    }
    let start = Instant::now();
    let mut said = String::new();
    loop {
        let all: Vec<api::Drill> = api.get(&format!("/v1/workloads/{w}/drills")).await?;
        let Some(now) = all.into_iter().find(|x| x.id == d.id) else {
            return Err(CliError::new(ExitCode::NotFound, format!("drill {} is no longer listed", d.id)));
        };
        if !json && now.injection != said && !now.injection.is_empty() {
            said = now.injection.clone();
            outln!("  fault in effect: {said}");
        }
        if now.report.is_some() {
            if json {
                print_json(&now);
            } else {
                print_drill(&now);
            }
            return Ok(if now.status == "passed" { ExitCode::Ok } else { ExitCode::RolloutFailed });
        }
        if start.elapsed() > a.timeout {
            return Err(CliError::new(
                ExitCode::WaitTimeout,
                format!("drill {} still runs after {:?}; `ringfence drill {w} --abort` ends it", d.id, a.timeout),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `detect 4.0 s -> 2.1 s, mitigate 1.2 s -> 0.9 s` once two drills passed.
fn trend(c: &api::FaultCoverage) -> String {
    if c.passed < 2 {
        return "-".into();
    }
    format!(
        "detect {} -> {}, mitigate {} -> {}",
        secs(c.first_detect_ms),
        secs(c.latest_detect_ms),
        secs(c.first_mitigate_ms),
        secs(c.latest_mitigate_ms)
    )
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |m| format!("{:.1} s", m as f64 / 1000.0))
}

fn print_drill(d: &api::Drill) {
    let Some(r) = &d.report else {
        outln!("{}  {:<16} running since {}", d.id, d.fault, time(d.started_at));
        return;
    };
    outln!(
        "{}  {:<16} {:<8} detect {:<8} mitigate {:<8} {} of {} requests failed{}",
        d.id,
        d.fault,
        r.outcome.to_uppercase(),
        secs(r.time_to_detect_ms),
        secs(r.time_to_mitigate_ms),
        r.failed_requests,
        r.requests,
        r.mitigation.as_ref().map_or(String::new(), |m| format!(", mitigation {m}"))
    );
    for p in &r.problems {
        outln!("    {p}");
    }
}

/// `ringfence drills WORKLOAD`: every drill, newest first.
pub async fn drills(api: &ApiClient, workload: &str, json: bool) -> Result<ExitCode, CliError> {
    let all: Vec<api::Drill> = api.get(&format!("/v1/workloads/{workload}/drills")).await?;
    if json {
        print_json(&all);
    } else if all.is_empty() {
        outln!("{workload} has no drills yet: `ringfence drill {workload} --fault error-rate` runs one");
    } else {
        for d in &all {
            print_drill(d);
        }
    }
    Ok(ExitCode::Ok)
}

/// `ringfence gameday WORKLOAD`: which failure modes the drills cover, and their trend.
pub async fn gameday(api: &ApiClient, workload: &str, svg: Option<&PathBuf>, json: bool) -> Result<ExitCode, CliError> {
    let g: api::GameDay = api.get(&format!("/v1/workloads/{workload}/gameday")).await?;
    if let Some(path) = svg {
        if g.drills.is_empty() {
            return Err(CliError::new(ExitCode::NotFound, format!("{workload} has no ended drill to draw")));
        }
        let chart = api.get_text(&format!("/v1/workloads/{workload}/gameday.svg")).await?;
        std::fs::write(path, chart)
            .map_err(|e| CliError::new(ExitCode::Failure, format!("cannot write {}: {e}", path.display())))?;
    }
    if json {
        print_json(&g);
        return Ok(ExitCode::Ok);
    }
    outln!(
        "{:<18} {:<11} {:<10} {:<12} {:>6} {:>6} {:>6}  {:<10} {:<10} {}",
        "FAULT",
        "TRIGGER",
        "AUTOMATIC",
        "STATUS",
        "DRILLS",
        "PASSED",
        "FAILED",
        "DETECT",
        "MITIGATE",
        "TREND (FIRST -> LATEST PASSED)"
    );
    for c in &g.coverage {
        outln!(
            "{:<18} {:<11} {:<10} {:<12} {:>6} {:>6} {:>6}  {:<10} {:<10} {}",
            c.fault,
            c.trigger,
            if c.automatic { "yes" } else { "no" },
            c.status.replace('_', " "),
            c.drills,
            c.passed,
            c.failed,
            secs(c.median_detect_ms),
            secs(c.median_mitigate_ms),
            trend(c)
        );
    }
    let uncovered: Vec<&str> =
        g.coverage.iter().filter(|c| c.automatic && c.status != "covered").map(|c| c.fault.as_str()).collect();
    if !uncovered.is_empty() {
        outln!("automatic mitigation not backed by a recent passed drill: {}", uncovered.join(", "));
    }
    if !g.drills.is_empty() {
        outln!("\ndrills, oldest first:");
        for d in &g.drills {
            print_drill(d);
        }
    }
    Ok(ExitCode::Ok)
}
