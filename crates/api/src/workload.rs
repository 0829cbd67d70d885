//! Workloads: applying a spec, the list, one workload's status.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;
use crate::rollout::{Rollout, Verdict};

/// `POST /v1/workloads`: a spec file's text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplySpec {
    /// The spec file's text (TOML, docs/spec.md).
    pub spec: String,
    /// The file's name, for error messages.
    #[serde(default = "default_file")]
    pub file: String,
}

fn default_file() -> String {
    "spec.toml".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Applied {
    pub workload: String,
    /// False when the spec was already in force.
    pub changed: bool,
    /// Bakes too short for the workload's measured traffic (see `GET .../plan`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkloadSummary {
    pub name: String,
    pub stable: Option<String>,
    /// The rollout in progress, or the last one.
    pub rollout: Option<RolloutSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolloutSummary {
    pub id: String,
    pub release: String,
    /// `progressing`, `paused`, `completed`, `halted`, `mitigating`, `mitigated`, `aborted`.
    pub status: String,
    /// The phase it is in, from 1 (as people count).
    pub phase: usize,
    /// How many phases its plan has.
    pub phases: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

/// Everything `ringfence status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkloadStatus {
    pub workload: String,
    pub criticality: Criticality,
    pub stable: Option<String>,
    pub last_known_good: Option<LastKnownGood>,
    pub pin: Option<Pin>,
    pub router: Option<RouterInfo>,
    pub replicas: Vec<Replica>,
    pub desired: Desired,
    /// The routing table in force: its generation and groups.
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    pub routes: Option<(u64, Vec<RouteGroup>)>,
    /// The rollout in progress, or the last one.
    pub rollout: Option<Rollout>,
    /// The controller's latest verdict on the rollout in progress, with the health model.
    pub health: Option<LiveHealth>,
    pub alerts_firing: Vec<FiringAlert>,
    /// Blue-green: the old stack, still running after the switch until it is retired.
    #[serde(default)]
    pub warm: Option<WarmStack>,
    /// Approvals, the queued deployment, windows, the line, the gates owed out of band.
    #[serde(default)]
    pub governance: crate::GovernanceStatus,
    /// Incident updates not delivered to a channel yet (being retried, or given up).
    #[serde(default)]
    pub notifications_failing: Vec<String>,
    /// With replicas: the one whose controller runs this workload, and its lease's fencing
    /// token. Absent for a server running alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<Leader>,
    /// The router tier's routers that reported this workload's traffic to this server,
    /// freshest first (`[router] kind = "tier"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tier_routers: Vec<TierRouter>,
    /// The last ended drill of each fault, newest first, and the one running if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drills: Vec<crate::Drill>,
    /// The server's clock when it answered.
    pub now: Timestamp,
}

/// The old stack of a blue-green switch, kept running so that a rollback is a switch back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WarmStack {
    pub version: String,
    /// The rollout whose switch left it warm.
    pub rollout_id: String,
    /// When it is retired, unless a rollout to another version retires it first.
    pub until: Timestamp,
}

/// The last release that was healthy, with the spec in force then.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LastKnownGood {
    pub version: String,
    pub rollout_id: String,
    pub at: Timestamp,
    pub spec_digest: String,
}

/// Why the workload runs what it runs when that is not the newest release.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pin {
    pub version: String,
    pub rollout_id: String,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RouterInfo {
    /// `builtin` (a `ringfence router` process), `haproxy` (one the team runs) or `tier`
    /// (the shared routers of the router tier; `admin` then says which host and path).
    pub kind: String,
    /// The router process (built-in only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Where users connect, `host:port`.
    pub listen: String,
    /// The built-in router's admin address (its API needs the server's secret), or
    /// `unix:PATH` of HAProxy's runtime API.
    pub admin: String,
    /// The HAProxy backend whose servers ringfence keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// One running instance of a release.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Replica {
    pub version: String,
    pub replica: u32,
    /// The executor's id of the instance.
    pub instance: String,
    /// Where it serves, `host:port`.
    pub endpoint: String,
    pub started_at: Timestamp,
}

/// What the controller converges to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Desired {
    /// `[version, replicas]`, stable first.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub versions: Vec<(String, u32)>,
    /// Canary first.
    pub routes: Vec<RouteGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RouteGroup {
    /// `canary` or `stable`.
    pub name: String,
    pub version: String,
    /// The group's share of users in basis points (1/100 of a percent).
    pub weight_bp: u32,
    /// The version whose instances serve this group (a flag-only release runs on its
    /// predecessor's).
    #[serde(default)]
    pub runs_on: String,
    /// Users the group takes whatever their bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<crate::rollout::Segment>,
    /// Share of requests copied to the group (shadow traffic), in basis points.
    #[serde(default)]
    pub shadow_bp: u32,
    /// A drill's fault the router carries out on the group's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<GroupFault>,
}

/// What a drill does to a group's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupFault {
    /// Share of requests the router answers with 503, in basis points.
    pub error_bp: u32,
    /// Added to each request before it is forwarded.
    pub delay_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LiveHealth {
    pub rollout_id: String,
    pub at: Timestamp,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FiringAlert {
    pub alertname: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub summary: String,
    pub since: Timestamp,
}

/// A router of the tier, as its last report of a workload's traffic showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TierRouter {
    /// Its `--name`.
    pub name: String,
    /// Random per router start.
    pub instance_id: String,
    /// How long ago it last reported.
    pub reported_ms_ago: u64,
    /// The generation of the workload's table it served then.
    pub generation: u64,
}

/// The replica leading a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Leader {
    pub replica: String,
    pub token: i64,
}
