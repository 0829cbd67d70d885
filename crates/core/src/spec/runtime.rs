//! `[executor]` and `[router]`: how the workload's instances run and how users reach them.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSpec {
    #[serde(default)]
    pub kind: ExecutorKind,
    /// Program and arguments (the process executor). `{version}`, `{port}`, `{replica}`,
    /// `{workload}` and `{ringfence}` (the path of the running ringfence binary) are substituted.
    #[serde(default)]
    pub command: Vec<String>,
    /// The team's own commands (the command executor).
    #[serde(default)]
    pub hooks: Option<HooksSpec>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Requests per second one replica serves at most (measured by the team's load tests):
    /// what `lint` weighs the workload's traffic against, for the stable version alone after
    /// a fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_capacity: Option<f64>,
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
    /// Each replica is a local process ringfence starts (`command`).
    #[default]
    Process,
    /// Each replica is whatever the team's hooks deploy (`[executor.hooks]`): containers,
    /// hosts over ssh, pods, or local processes.
    Command,
}

/// The command executor's hooks. Each is a program and its arguments, with the same
/// placeholders as `command` plus `{instance}` and `{endpoint}` (stop and status), run with a
/// timeout; their output goes to the workload's hook log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSpec {
    /// Makes a replica of a version run and exits 0, printing `endpoint=HOST:PORT` (where it
    /// serves) and optionally `instance=ID` on its standard output. Must be idempotent: a
    /// deploy of a slot that already runs answers with that instance.
    pub deploy: Vec<String>,
    /// Stops an instance and everything it started; stopping one that is gone succeeds.
    pub stop: Vec<String>,
    /// Reverses a deploy of the new version when its rollout is mitigated, for each instance
    /// the rollout deployed, newest first (the way back for a step that `stop` does not undo:
    /// a host updated in place, an applied infrastructure change). Without it, `stop` is the
    /// undo. A failing undo is retried, and the mitigation is not complete until it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Vec<String>>,
    /// Resizes a version's capacity on platforms that scale by count (a Kubernetes Deployment,
    /// an autoscaling group), with `{replicas}` the version's new count: run before ringfence
    /// grows a version (the stack taking traffic back first) and after it shrinks one. `deploy`
    /// still answers for each slot. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Vec<String>>,
    /// Exits 0 while an instance runs, non-zero once it has ended (its output says how).
    /// Without it, instances count as running and their health is judged by probes alone.
    #[serde(default)]
    pub status: Option<Vec<String>>,
    /// How long one run of a hook may take; it is killed past that.
    #[serde(default = "default_hook_timeout")]
    pub timeout: Dur,
    /// How often `status` runs per instance.
    #[serde(default = "default_status_every")]
    pub status_every: Dur,
}

fn default_hook_timeout() -> Dur {
    Dur::secs(60)
}

fn default_status_every() -> Dur {
    Dur::secs(2)
}

impl HooksSpec {
    /// Every hook, with its field name.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &Vec<String>)> {
        [
            ("deploy", Some(&self.deploy)),
            ("stop", Some(&self.stop)),
            ("undo", self.undo.as_ref()),
            ("scale", self.scale.as_ref()),
            ("status", self.status.as_ref()),
        ]
        .into_iter()
        .filter_map(|(n, h)| h.map(|h| (n, h)))
    }
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
    /// Which data plane splits the traffic: ringfence's own router, or an HAProxy the team runs.
    #[serde(skip_serializing_if = "RouterKind::is_builtin")]
    pub kind: RouterKind,
    /// Where users send traffic. Port 0 picks a free port on first start and keeps it. With
    /// HAProxy: its frontend's address, for people and smoke tests (ringfence binds nothing).
    pub listen: String,
    /// Header that carries the user key for sticky routing.
    pub sticky_header: String,
    /// Cookie that carries the user key when the header is absent; set by the router if missing.
    pub sticky_cookie: String,
    /// A request header naming a version that sends the request there (debugging); off when
    /// absent. Only where the edge strips it from public traffic: anyone sending it chooses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_header: Option<String>,
    /// The longest request body the router takes (`"100 MiB"` when absent:
    /// `DEFAULT_MAX_REQUEST_BODY`); a longer one is answered 413 and never reaches a replica.
    /// The built-in router and the tier; an HAProxy keeps its own limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_body: Option<bytesize::ByteSize>,
    pub breaker: BreakerSpec,
    /// The HAProxy that carries the traffic (`kind = "haproxy"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub haproxy: Option<HaproxySpec>,
    /// `kind = "tier"`: the host name (the `Host` header, without a port) whose requests are
    /// this workload's. Absent: any host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `kind = "tier"`: the path prefix (`/shop`, matched at a `/` boundary, passed on
    /// unchanged) whose requests are this workload's. Absent: every path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterKind {
    /// A `ringfence router` process per workload, started and kept running by the server.
    #[default]
    Builtin,
    /// An HAProxy the team runs: weights through its runtime API, counters from `show stat`,
    /// latency from its logs, and its configuration file kept in step.
    Haproxy,
    /// Shared `ringfence router --control-plane` processes, each serving many workloads (by
    /// `host` and `path_prefix`): they fetch their tables from the API and report their
    /// counters to it, and several can serve the same workload.
    Tier,
}

impl RouterKind {
    pub fn is_builtin(&self) -> bool {
        *self == RouterKind::Builtin
    }
}

/// Where ringfence reaches an HAProxy and which part of it is the workload's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxySpec {
    /// Path of the runtime API's Unix socket (`stats socket PATH level admin`).
    pub socket: String,
    /// The backend whose servers are the workload's replicas. It must balance on the sticky
    /// header with `hash-type consistent` (sticky per user, and weights that change live).
    pub backend: String,
    /// The configuration file HAProxy starts from. Between `# ringfence:begin BACKEND` and
    /// `# ringfence:end` in that backend, ringfence writes the servers with their current
    /// weights, so a reload keeps the split; it changes nothing else in the file.
    pub config: String,
    /// Path of the Unix datagram socket ringfence creates (mode 0620) to receive HAProxy's
    /// request logs, its latency samples: `log PATH local0` in the frontend, and
    /// ` rf1 %b %s %Tr %ST` at the end of its `log-format`. `show stat` has counters but only
    /// averages of latency, and a Unix socket, unlike UDP, lets no other local user forge them.
    pub log: String,
    /// What follows address and weight on every server line ringfence adds.
    #[serde(default = "default_server_options")]
    pub server_options: String,
}

fn default_server_options() -> String {
    "check inter 1s".into()
}

impl Default for RouterSpec {
    fn default() -> Self {
        RouterSpec {
            listen: "127.0.0.1:0".into(),
            sticky_header: "x-user-id".into(),
            sticky_cookie: "rf_user".into(),
            pin_header: None,
            max_request_body: None,
            breaker: BreakerSpec::default(),
            kind: RouterKind::Builtin,
            haproxy: None,
            host: None,
            path_prefix: None,
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
