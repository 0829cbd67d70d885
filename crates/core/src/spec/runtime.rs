//! `[executor]` and `[router]`: how the workload's instances run and how users reach them.

use super::*;

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
