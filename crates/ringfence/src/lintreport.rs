//! A failure-mode analysis as the API answers it: shared by the server (`GET .../lint`) and
//! the CLI (`ringfence lint FILE`, which lints a spec file without a server), so both say the
//! same thing the same way.

use ringfence_api as api;

pub fn lint_report(workload: &str, rps: Option<f64>, findings: &[ringfence_core::lint::Finding]) -> api::LintReport {
    use ringfence_core::lint::Severity;
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count() as u32;
    api::LintReport {
        workload: workload.into(),
        rps,
        findings: findings
            .iter()
            .map(|f| {
                let rule = ringfence_core::lint::rule(f.rule);
                api::LintFinding {
                    rule: f.rule.into(),
                    severity: f.severity.as_str().into(),
                    field: f.field.clone(),
                    message: f.message.clone(),
                    fix: rule.fix.into(),
                    seed: rule.seed.into(),
                }
            })
            .collect(),
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        notes: count(Severity::Note),
    }
}
