//! `[health]`: the signals that judge a new version, the health model and the analysis.

use super::*;

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
