//! The workload spec: a TOML file that says how a workload runs, how it rolls out, how its
//! health is judged and how it is mitigated. Parsing reports every problem it can find with
//! file, line, column and field, and nothing is applied unless the whole file is valid.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::duration::Dur;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub workload: WorkloadMeta,
    pub executor: ExecutorSpec,
    #[serde(default)]
    pub router: RouterSpec,
    pub rollout: RolloutSpec,
    #[serde(default)]
    pub health: HealthSpec,
    #[serde(default)]
    pub mitigation: MitigationSpec,
    #[serde(default)]
    pub flags: FlagsSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlagsSpec {
    /// Tokens OFREP clients must present (`Authorization: Bearer T` or `X-API-Key: T`). Empty:
    /// the router's OFREP endpoints are open to anyone who can reach them.
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadMeta {
    /// Unique name: letters, digits, `-` and `_`, at most 63 characters.
    pub name: String,
    #[serde(default)]
    pub criticality: Criticality,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    #[serde(default)]
    pub kind: ExecutorKind,
    /// Program and arguments. `{version}`, `{port}`, `{replica}`, `{workload}` and
    /// `{ringfence}` (the path of the running ringfence binary) are substituted.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default)]
    pub readiness: ReadinessSpec,
    /// Time a replica gets to exit after SIGTERM before SIGKILL.
    #[serde(default = "default_stop_grace")]
    pub stop_grace: Dur,
}

fn default_replicas() -> u32 {
    1
}

fn default_stop_grace() -> Dur {
    Dur::secs(5)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    #[default]
    Process,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessSpec {
    /// HTTP path that answers 2xx once the replica can take traffic.
    pub path: String,
    /// How long a replica may take to become ready before the start counts as failed.
    pub timeout: Dur,
    pub interval: Dur,
}

impl Default for ReadinessSpec {
    fn default() -> Self {
        ReadinessSpec { path: "/healthz".into(), timeout: Dur::secs(10), interval: Dur::ms(50) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSpec {
    /// Where users send traffic. Port 0 picks a free port on first start and keeps it.
    pub listen: String,
    /// Header that carries the user key for sticky routing.
    pub sticky_header: String,
    /// Cookie that carries the user key when the header is absent; set by the router if missing.
    pub sticky_cookie: String,
    pub breaker: BreakerSpec,
}

impl Default for RouterSpec {
    fn default() -> Self {
        RouterSpec {
            listen: "127.0.0.1:0".into(),
            sticky_header: "x-user-id".into(),
            sticky_cookie: "rf_user".into(),
            breaker: BreakerSpec::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSpec {
    /// Trip after this many failures in a row.
    pub consecutive_failures: u32,
    /// Rolling window of outcomes for the success-rate rule.
    pub window: u32,
    /// Trip when the full window's success rate falls below this.
    pub min_success_rate: f64,
    /// How long a tripped breaker stays open before a probe request; doubles per re-trip.
    pub open_for: Dur,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec { consecutive_failures: 5, window: 20, min_success_rate: 0.5, open_for: Dur::secs(2) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub phases: Vec<PhaseSpec>,
    /// When a phase's bake is over but its verdict is still unknown (too little traffic, no
    /// data), the rollout holds; after this long it escalates. It never promotes on unknown.
    #[serde(default = "default_max_hold")]
    pub max_hold: Dur,
}

fn default_max_hold() -> Dur {
    Dur::secs(600)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    pub name: String,
    /// Percent of users on the new version during this phase, 0 < weight <= 100.
    pub weight: f64,
    /// How long the phase must stay healthy before it passes.
    pub bake: Dur,
    #[serde(default = "default_gates")]
    pub gates: Vec<Gate>,
}

fn default_gates() -> Vec<Gate> {
    vec![Gate::Health]
}

impl PhaseSpec {
    /// The weight in basis points (1/100 of a percent), as the router takes it.
    pub fn weight_bp(&self) -> u32 {
        (self.weight * 100.0).round().clamp(0.0, 10_000.0) as u32
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// The health verdict must be healthy at the end of the bake (it is watched throughout).
    Health,
    /// A person must run `ringfence promote` after the bake.
    Approval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSpec {
    /// Highest acceptable fraction of failed requests (HTTP 5xx or transport errors), 0..1.
    pub max_error_rate: f64,
    /// Highest acceptable 99th-percentile latency.
    pub max_p99_latency: Option<Dur>,
    /// Requests the new version must have served in a phase before its verdict is known.
    pub min_requests: u64,
    pub probe: ProbeSpec,
    /// User reports against the new version within one phase that make it unhealthy.
    pub max_user_reports: u32,
    /// Usage: the total request rate through the router during a phase may not fall below
    /// this fraction of the rate before the rollout began (a drop in usage hides problems).
    pub min_usage_ratio: f64,
    /// Smoke tests run against the newly exposed version at the start of every phase.
    pub smoke: Vec<SmokeSpec>,
    /// PromQL signals, judged per version.
    pub prometheus: Option<PrometheusSpec>,
    /// Which Alertmanager alerts concern this workload.
    pub alerts: AlertsSpec,
    /// The health model: components with signals and criticality, rolled up to one verdict.
    pub components: Vec<ComponentSpec>,
    /// How the new version's traffic is judged against the stable version's.
    pub analysis: AnalysisSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisMethod {
    /// Always-valid sequential tests against the stable version (the default).
    #[default]
    Sequential,
    /// Fixed limits on the new version alone, with a minimum sample.
    Threshold,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSpec {
    pub method: AnalysisMethod,
    /// Probability of a false rollback of a release no worse than the stable one, over the
    /// whole rollout (sequential method).
    pub alpha: f64,
    /// A phase passes only on evidence that the new version is better than the target
    /// regression, at level `1 - power`; until then it is pending (the bake extends, then
    /// holds). 0 turns the pass tests off: no rejection by the end of the bake passes.
    pub power: f64,
    /// Target regression: the new version's error rate this many times the stable version's.
    pub target_error_ratio: f64,
    /// Target regression: every latency quantile this many times the stable version's.
    pub target_latency_ratio: f64,
    /// The smallest regression worth acting on: a difference from the stable version smaller
    /// than this never fails a release, however much traffic shows it.
    pub margin: MarginSpec,
}

/// A regression is worth acting on only when it exceeds the relative *and* the absolute
/// margin: twice as many errors means little at 0.01%, 0.3 ms more means nothing at 1 ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarginSpec {
    /// The new version's error rate must be above this many times the stable's ...
    pub error_ratio: f64,
    /// ... and above the stable's plus this many percentage points (0.1 = 0.1%).
    pub error_points: f64,
    /// Its latency, at some quantile, above this many times the stable's ...
    pub latency_ratio: f64,
    /// ... and above the stable's plus this much.
    pub latency: Dur,
}

impl Default for MarginSpec {
    fn default() -> Self {
        MarginSpec { error_ratio: 1.0, error_points: 0.02, latency_ratio: 1.1, latency: Dur::ms(2) }
    }
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            method: AnalysisMethod::Sequential,
            alpha: 0.05,
            power: 0.8,
            target_error_ratio: 4.0,
            target_latency_ratio: 1.5,
            margin: MarginSpec::default(),
        }
    }
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            max_error_rate: 0.05,
            max_p99_latency: None,
            min_requests: 20,
            probe: ProbeSpec::default(),
            max_user_reports: 3,
            min_usage_ratio: 0.5,
            smoke: Vec::new(),
            prometheus: None,
            alerts: AlertsSpec::default(),
            components: Vec::new(),
            analysis: AnalysisSpec::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeSpec {
    pub name: String,
    /// HTTP check: GET this path on every replica of the new version.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    /// The body must contain this text.
    #[serde(default)]
    pub contains: Option<String>,
    /// Command check: run it once per replica with TARGET_URL set; exit status 0 passes.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default = "default_smoke_timeout")]
    pub timeout: Dur,
}

fn default_expect_status() -> u16 {
    200
}

fn default_smoke_timeout() -> Dur {
    Dur::secs(10)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSpec {
    /// Base URL of the Prometheus HTTP API, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    #[serde(default = "default_prom_interval")]
    pub interval: Dur,
    #[serde(default = "default_prom_timeout")]
    pub timeout: Dur,
    /// Results older than this count as no data.
    #[serde(default = "default_prom_stale")]
    pub max_staleness: Dur,
    pub queries: Vec<PromQuery>,
}

fn default_prom_interval() -> Dur {
    Dur::secs(5)
}

fn default_prom_timeout() -> Dur {
    Dur::secs(2)
}

fn default_prom_stale() -> Dur {
    Dur::secs(60)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromQuery {
    pub name: String,
    /// PromQL; `{version}` is replaced by the version judged, `{workload}` by the workload.
    pub query: String,
    /// Unhealthy above this value.
    #[serde(default)]
    pub max: Option<f64>,
    /// Unhealthy below this value.
    #[serde(default)]
    pub min: Option<f64>,
    /// Unhealthy when the new version's value exceeds the stable version's by this factor.
    #[serde(default)]
    pub max_ratio_to_baseline: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSpec {
    /// Labels a firing alert must carry to concern this workload. Empty: `workload = <name>`.
    #[serde(rename = "match")]
    pub matchers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    pub name: String,
    #[serde(default)]
    pub criticality: Criticality,
    /// Signal names (`error_rate`, `latency_p99`, `probe`, `crash`, `smoke`, `alert`,
    /// `user_reports`, `usage`, `prometheus:<query name>`, ...). A critical or high component
    /// that is unhealthy makes the workload unhealthy; a lower one makes it degraded.
    pub signals: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeSpec {
    /// HTTP path probed on every replica of the new version.
    pub path: String,
    pub interval: Dur,
    /// Consecutive failed probes that make a replica unhealthy.
    pub failure_threshold: u32,
    pub timeout: Dur,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec { path: "/healthz".into(), interval: Dur::secs(1), failure_threshold: 3, timeout: Dur::secs(1) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MitigationSpec {
    /// On an unhealthy verdict, send all traffic back to the stable version and stop the new
    /// one. When false the rollout halts with exposure frozen and waits for a person.
    pub auto_fallback: bool,
    /// A phase held on an unknown verdict (no data, a blind signal, no evidence either way)
    /// for `rollout.max_hold` falls back instead of waiting for a person. Off by default:
    /// unknown is not unhealthy, but a release that cannot show it is good in that long
    /// should not keep serving users where nobody watches.
    #[serde(default)]
    pub fallback_after_max_hold: bool,
}

impl Default for MitigationSpec {
    fn default() -> Self {
        MitigationSpec { auto_fallback: true, fallback_after_max_hold: false }
    }
}

/// One problem in a spec file, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecError {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (a missing table).
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `rollout.phases[1].weight`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Parses and validates a spec. `file` names the source in error messages.
pub fn parse(file: &str, text: &str) -> Result<WorkloadSpec, Vec<SpecError>> {
    let locator = Locator::new(text);
    let spec: WorkloadSpec = match toml::from_str(text) {
        Ok(spec) => spec,
        Err(err) => {
            let span = err.span();
            let field = span.as_ref().and_then(|s| locator.path_at(s.start)).unwrap_or_default();
            let (line, column) = span.map(|s| locator.line_col(s.start)).unwrap_or((0, 0));
            let message = err.message().trim().to_string();
            return Err(vec![SpecError { file: file.into(), line, column, field, message }]);
        }
    };
    let problems = validate(&spec);
    if problems.is_empty() {
        return Ok(spec);
    }
    Err(problems
        .into_iter()
        .map(|(field, message)| {
            let (line, column) = locator.locate(&field);
            SpecError { file: file.into(), line, column, field, message }
        })
        .collect())
}

/// Checks the rules a type cannot express. Returns (field path, what was expected) pairs.
pub fn validate(spec: &WorkloadSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |field: &str, msg: String| out.push((field.to_string(), msg));

    if let Err(msg) = check_name(&spec.workload.name) {
        bad("workload.name", msg);
    }
    let ex = &spec.executor;
    if ex.command.is_empty() || ex.command[0].trim().is_empty() {
        bad("executor.command", "expected a non-empty list: the program, then its arguments".into());
    }
    if !ex.command.iter().any(|a| a.contains("{port}")) {
        bad(
            "executor.command",
            "expected `{port}` in some argument: each replica listens on a port ringfence picks".into(),
        );
    }
    for arg in &ex.command {
        if let Some(unknown) = unknown_placeholder(arg) {
            bad(
                "executor.command",
                format!(
                    "unknown placeholder `{{{unknown}}}` in {arg:?}; known: {{version}}, {{port}}, {{replica}}, {{workload}}, {{ringfence}}"
                ),
            );
        }
    }
    if ex.replicas == 0 || ex.replicas > 64 {
        bad("executor.replicas", format!("expected 1 to 64 replicas, found {}", ex.replicas));
    }
    for key in ex.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            bad(&format!("executor.env.{key}"), format!("invalid environment variable name {key:?}"));
        }
    }
    if !ex.readiness.path.starts_with('/') {
        bad("executor.readiness.path", format!("expected a path starting with `/`, found {:?}", ex.readiness.path));
    }
    if ex.readiness.timeout.as_ms() == 0 {
        bad("executor.readiness.timeout", "expected a timeout above zero".into());
    }
    if ex.readiness.interval.as_ms() == 0 {
        bad("executor.readiness.interval", "expected an interval above zero".into());
    }

    let r = &spec.router;
    if r.listen.parse::<std::net::SocketAddr>().is_err() {
        bad("router.listen", format!("expected an address like \"127.0.0.1:8080\", found {:?}", r.listen));
    }
    if !is_token(&r.sticky_header) {
        bad("router.sticky_header", format!("expected an HTTP header name, found {:?}", r.sticky_header));
    }
    if !is_token(&r.sticky_cookie) {
        bad("router.sticky_cookie", format!("expected a cookie name, found {:?}", r.sticky_cookie));
    }
    let b = &r.breaker;
    if b.consecutive_failures == 0 {
        bad("router.breaker.consecutive_failures", "expected at least 1".into());
    }
    if b.window == 0 {
        bad("router.breaker.window", "expected at least 1".into());
    }
    if !(0.0..=1.0).contains(&b.min_success_rate) {
        bad(
            "router.breaker.min_success_rate",
            format!("expected a fraction from 0 to 1, found {}", b.min_success_rate),
        );
    }

    let phases = &spec.rollout.phases;
    if phases.is_empty() {
        bad("rollout.phases", "expected at least one phase; the last must have weight 100".into());
    }
    let mut names = std::collections::BTreeSet::new();
    let mut prev = 0.0;
    for (i, p) in phases.iter().enumerate() {
        let at = |f: &str| format!("rollout.phases[{i}].{f}");
        if check_name(&p.name).is_err() {
            bad(&at("name"), format!("expected letters, digits, `-` or `_`, found {:?}", p.name));
        } else if !names.insert(p.name.clone()) {
            bad(&at("name"), format!("phase name {:?} is used twice", p.name));
        }
        if !(p.weight > 0.0 && p.weight <= 100.0) {
            bad(&at("weight"), format!("expected a percentage above 0 and at most 100, found {}", p.weight));
        } else if p.weight < prev {
            bad(&at("weight"), format!("expected weights that never decrease; {} follows {}", p.weight, prev));
        }
        prev = p.weight.max(prev);
        let mut seen = Vec::new();
        for g in &p.gates {
            if seen.contains(g) {
                bad(&at("gates"), format!("gate {g:?} is listed twice"));
            }
            seen.push(*g);
        }
    }
    if let Some(last) = phases.last()
        && last.weight != 100.0
    {
        bad(
            &format!("rollout.phases[{}].weight", phases.len() - 1),
            format!("expected the last phase to send 100% of traffic to the new version, found {}", last.weight),
        );
    }

    let h = &spec.health;
    if !(0.0..=1.0).contains(&h.max_error_rate) {
        bad(
            "health.max_error_rate",
            format!("expected a fraction from 0 to 1 (0.05 is 5%), found {}", h.max_error_rate),
        );
    }
    if h.min_requests == 0 {
        bad("health.min_requests", "expected at least 1: a verdict from no traffic is unknown, never healthy".into());
    }
    if !h.probe.path.starts_with('/') {
        bad("health.probe.path", format!("expected a path starting with `/`, found {:?}", h.probe.path));
    }
    if h.probe.failure_threshold == 0 {
        bad("health.probe.failure_threshold", "expected at least 1".into());
    }
    if h.probe.interval.as_ms() == 0 {
        bad("health.probe.interval", "expected an interval above zero".into());
    }
    let a = &h.analysis;
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        bad("health.analysis.alpha", format!("expected a probability between 0 and 1 (e.g. 0.005), found {}", a.alpha));
    }
    if !(0.0..1.0).contains(&a.power) {
        bad(
            "health.analysis.power",
            format!("expected a probability from 0 up to (not including) 1, found {}", a.power),
        );
    }
    if a.target_error_ratio <= 1.0 {
        bad("health.analysis.target_error_ratio", format!("expected a ratio above 1, found {}", a.target_error_ratio));
    }
    if a.target_latency_ratio <= 1.0 {
        bad(
            "health.analysis.target_latency_ratio",
            format!("expected a ratio above 1, found {}", a.target_latency_ratio),
        );
    }
    let m = &a.margin;
    if !(1.0..=100.0).contains(&m.error_ratio) {
        bad("health.analysis.margin.error_ratio", format!("expected a ratio from 1 to 100, found {}", m.error_ratio));
    }
    if !(0.0..=100.0).contains(&m.error_points) {
        bad(
            "health.analysis.margin.error_points",
            format!("expected percentage points from 0 to 100 (0.1 is 0.1%), found {}", m.error_points),
        );
    }
    if !(1.0..=100.0).contains(&m.latency_ratio) {
        bad(
            "health.analysis.margin.latency_ratio",
            format!("expected a ratio from 1 to 100, found {}", m.latency_ratio),
        );
    }
    if m.latency.as_ms() > 60_000 {
        bad("health.analysis.margin.latency", format!("expected at most 60s, found {}", m.latency));
    }
    if a.target_error_ratio < m.error_ratio || a.target_latency_ratio < m.latency_ratio {
        bad(
            "health.analysis.margin",
            format!(
                "expected a margin no larger than the target (errors x{} vs target x{}, latency x{} vs target x{}): a phase must be able to pass on a release within the margin",
                m.error_ratio, a.target_error_ratio, m.latency_ratio, a.target_latency_ratio
            ),
        );
    }
    if !(0.0..=1.0).contains(&h.min_usage_ratio) {
        bad("health.min_usage_ratio", format!("expected a fraction from 0 to 1, found {}", h.min_usage_ratio));
    }
    for (i, t) in h.smoke.iter().enumerate() {
        let at = |f: &str| format!("health.smoke[{i}].{f}");
        if check_name(&t.name).is_err() {
            bad(&at("name"), format!("expected letters, digits, `-` or `_`, found {:?}", t.name));
        }
        match (&t.path, &t.command) {
            (Some(_), Some(_)) => bad(&at("command"), "expected either `path` or `command`, not both".into()),
            (None, None) => bad(&at("path"), "expected `path` (an HTTP check) or `command`".into()),
            (Some(p), None) if !p.starts_with('/') => {
                bad(&at("path"), format!("expected a path starting with `/`, found {p:?}"))
            }
            (None, Some(c)) if c.is_empty() => bad(&at("command"), "expected a non-empty command".into()),
            _ => {}
        }
    }
    if let Some(p) = &h.prometheus {
        if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
            bad("health.prometheus.url", format!("expected an http:// URL, found {:?}", p.url));
        }
        for (i, q) in p.queries.iter().enumerate() {
            let at = |f: &str| format!("health.prometheus.queries[{i}].{f}");
            if check_name(&q.name).is_err() {
                bad(&at("name"), format!("expected letters, digits, `-` or `_`, found {:?}", q.name));
            }
            if q.query.trim().is_empty() {
                bad(&at("query"), "expected a PromQL expression".into());
            }
            if q.max.is_none() && q.min.is_none() && q.max_ratio_to_baseline.is_none() {
                bad(&at("max"), "expected a limit: `max`, `min` or `max_ratio_to_baseline`".into());
            }
        }
    }
    const KNOWN: [&str; 12] = [
        "error_rate",
        "latency_p99",
        "probe",
        "crash",
        "start",
        "breaker",
        "traffic",
        "smoke",
        "alert",
        "user_reports",
        "usage",
        "sample_ratio",
    ];
    for (i, c) in h.components.iter().enumerate() {
        if c.signals.is_empty() {
            bad(&format!("health.components[{i}].signals"), "expected at least one signal".into());
        }
        for sig in &c.signals {
            let prom = sig.strip_prefix("prometheus:");
            let ok = KNOWN.contains(&sig.as_str())
                || sig.starts_with("latency")
                || prom.is_some_and(|n| h.prometheus.as_ref().is_some_and(|p| p.queries.iter().any(|q| q.name == n)));
            if !ok {
                bad(
                    &format!("health.components[{i}].signals"),
                    format!("unknown signal {sig:?}; known: {}, prometheus:<query name>", KNOWN.join(", ")),
                );
            }
        }
    }
    out
}

pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("expected 1 to 63 characters, found {:?}", name));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("expected letters, digits, `-` or `_` only, found {name:?}"));
    }
    Ok(())
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn unknown_placeholder(arg: &str) -> Option<String> {
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after.find('}')?;
        let name = &after[..end];
        if !matches!(name, "version" | "port" | "replica" | "workload" | "ringfence") {
            return Some(name.to_string());
        }
        rest = &after[end + 1..];
    }
    None
}

/// Maps field paths to places in the source text and back.
struct Locator<'a> {
    text: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Locator<'a> {
        Locator { text, doc: toml_edit::Document::parse(text).ok() }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }

    /// Finds the place of `path` (e.g. `rollout.phases[1].weight`), or of its nearest
    /// existing parent when the field itself is absent.
    fn locate(&self, path: &str) -> (usize, usize) {
        let Some(doc) = &self.doc else { return (0, 0) };
        let mut best = None;
        let mut item: &toml_edit::Item = doc.as_item();
        for seg in split_path(path) {
            let next = match seg {
                Seg::Key(k) => {
                    let found = item.get(k);
                    if let (Some(table), Some(_)) = (item.as_table_like(), found)
                        && let Some((key, _)) = table.get_key_value(k)
                        && let Some(span) = key.span()
                    {
                        best = Some(span.start);
                    }
                    found
                }
                Seg::Index(i) => item.get(i),
            };
            match next {
                Some(n) => {
                    if let Some(span) = n.span() {
                        best = Some(span.start);
                    } else if let Some(span) = n.as_value().and_then(|v| v.span()) {
                        best = Some(span.start);
                    }
                    item = n;
                }
                None => break,
            }
        }
        best.map(|o| self.line_col(o)).unwrap_or((0, 0))
    }

    /// The field at `offset`: the key or value that starts last at or before it.
    fn path_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut places = Vec::new();
        collect_places(doc.as_item(), "", &mut places);
        places.into_iter().filter(|(start, _)| *start <= offset).max_by_key(|(start, _)| *start).map(|(_, p)| p)
    }
}

/// Every key, value and table header of the document with where it starts.
fn collect_places(item: &toml_edit::Item, path: &str, out: &mut Vec<(usize, String)>) {
    let join = |key: &str| {
        if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
    };
    if let Some(table) = item.as_table_like() {
        for (key, child) in table.iter() {
            let child_path = join(key);
            if let Some(span) = table.get_key_value(key).and_then(|(k, _)| k.span()) {
                out.push((span.start, child_path.clone()));
            }
            if let Some(span) = child.span().or_else(|| child.as_value().and_then(|v| v.span())) {
                out.push((span.start, child_path.clone()));
            }
            collect_places(child, &child_path, out);
        }
    } else if let Some(arr) = item.as_array_of_tables() {
        for (i, t) in arr.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if let Some(span) = t.span() {
                out.push((span.start, p.clone()));
            }
            collect_places(&toml_edit::Item::Table(t.clone()), &p, out);
        }
    } else if let Some(arr) = item.as_array() {
        for (i, v) in arr.iter().enumerate() {
            if let Some(span) = v.span() {
                out.push((span.start, format!("{path}[{i}]")));
            }
        }
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            out.push(Seg::Key(&rest[..b]));
            rest = &rest[b..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let end = stripped.find(']').unwrap_or(stripped.len());
                if let Ok(i) = stripped[..end].parse() {
                    out.push(Seg::Index(i));
                }
                rest = stripped.get(end + 1..).unwrap_or("");
            }
        } else if !rest.is_empty() {
            out.push(Seg::Key(rest));
        }
    }
    out
}

/// A complete, commented example spec: the reference for every field.
pub const EXAMPLE: &str = include_str!("../../../examples/checkout.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<SpecError> {
        parse("spec.toml", text).expect_err("spec should be refused")
    }

    #[test]
    fn example_is_valid() {
        let spec = parse("checkout.toml", EXAMPLE).unwrap();
        assert_eq!(spec.workload.name, "checkout");
        assert_eq!(spec.rollout.phases.last().unwrap().weight_bp(), 10_000);
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let errs = errors("[workload]\nname = \"a\"\ncriticality = \n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 3, "{errs:?}");
        assert!(errs[0].column > 1);
    }

    #[test]
    fn type_error_names_field() {
        let text = EXAMPLE.replace("replicas = 2", "replicas = \"two\"");
        let errs = errors(&text);
        assert_eq!(errs[0].field, "executor.replicas", "{errs:?}");
        let line = text.lines().position(|l| l.starts_with("replicas = \"two\"")).unwrap() + 1;
        assert_eq!(errs[0].line, line);
        assert!(errs[0].message.contains("expected"), "{}", errs[0].message);
    }

    #[test]
    fn unknown_field_is_refused_with_its_place() {
        let text = EXAMPLE.replace("[health]\n", "[health]\nmax_eror_rate = 0.1\n");
        let errs = errors(&text);
        assert!(errs[0].message.contains("max_eror_rate"), "{errs:?}");
        assert_eq!(errs[0].field, "health.max_eror_rate");
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_place() {
        let text = EXAMPLE
            .replace("name = \"checkout\"", "name = \"check out\"")
            .replace("weight = 50", "weight = 5")
            .replace("max_error_rate = 0.05", "max_error_rate = 5.0");
        let errs = errors(&text);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"workload.name"), "{fields:?}");
        assert!(fields.contains(&"rollout.phases[2].weight"), "{fields:?}");
        assert!(fields.contains(&"health.max_error_rate"), "{fields:?}");
        for e in &errs {
            assert!(e.line > 0, "{e}");
        }
        let weight = errs.iter().find(|e| e.field == "rollout.phases[2].weight").unwrap();
        let line = text.lines().position(|l| l.trim() == "weight = 5").unwrap() + 1;
        assert_eq!(weight.line, line, "{weight}");
    }

    #[test]
    fn last_phase_must_be_full() {
        let text = EXAMPLE.replace("weight = 100", "weight = 90");
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.message.contains("100%")), "{errs:?}");
    }

    #[test]
    fn command_needs_port() {
        let text = EXAMPLE.replace("\"127.0.0.1:{port}\"", "\"127.0.0.1:9000\"");
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.field == "executor.command"), "{errs:?}");
    }

    #[test]
    fn unknown_placeholder_is_named() {
        let text = EXAMPLE.replace("{version}", "{verison}");
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.message.contains("{verison}")), "{errs:?}");
    }

    #[test]
    fn display_reads_like_a_compiler() {
        let e = SpecError { file: "a.toml".into(), line: 3, column: 7, field: "x.y".into(), message: "bad".into() };
        assert_eq!(e.to_string(), "a.toml:3:7: field `x.y`: bad");
    }
}
