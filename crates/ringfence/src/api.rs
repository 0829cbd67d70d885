//! The wire types of the HTTP API: what the server answers with and what the CLI, the demo,
//! the benchmarks and the tests read, apart from the server that produces them. The client
//! that speaks them is `client.rs`; the CLI depends on these two, not on the server. Nothing
//! here does IO. Some fields are still core types as they are (a rollout, the desired state,
//! a verdict): giving them wire types of their own, converted explicitly, is the next step,
//! so that the core can change without breaking clients.

use ringfence_core::Timestamp;
use ringfence_core::rollout::Rollout;
use ringfence_core::state::{Desired, LkgEntry, Pin, ReplicaRecord, RouterRecord};
use serde::{Deserialize, Serialize};

/// The largest request body the API reads (a spec file, a release with its flags); the CLI
/// checks it before sending, so a refusal is an input error, not a broken connection.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// Everything `ringfence status` shows.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct WorkloadStatus {
    pub workload: String,
    pub criticality: ringfence_core::spec::Criticality,
    pub stable: Option<String>,
    pub last_known_good: Option<LkgEntry>,
    pub pin: Option<Pin>,
    pub router: Option<RouterRecord>,
    pub replicas: Vec<ReplicaRecord>,
    pub desired: Desired,
    pub routes: Option<(u64, Vec<ringfence_core::event::RouteGroup>)>,
    pub rollout: Option<Rollout>,
    /// The controller's latest verdict on the rollout in progress, with the health model.
    pub health: Option<LiveHealth>,
    pub alerts_firing: Vec<ringfence_core::state::FiringAlert>,
    pub now: ringfence_core::Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveHealth {
    pub rollout_id: String,
    pub at: Timestamp,
    pub verdict: ringfence_core::Verdict,
}

#[derive(Serialize, Deserialize)]
pub struct Why {
    pub text: String,
    pub rollout: Option<Rollout>,
}

#[derive(Serialize, Deserialize)]
pub struct ReportAccepted {
    pub user: String,
    pub group: Option<String>,
    pub version: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct PlanAdvice {
    pub rps: f64,
    pub measured: bool,
    pub stable: Option<String>,
    pub stable_error_rate: f64,
    pub target_error_ratio: f64,
    pub target_latency_ratio: f64,
    /// The spec's power requirement; 0 means phases pass without it.
    pub power: f64,
    pub phases: Vec<PhaseAdvice>,
}

#[derive(Serialize, Deserialize)]
pub struct PhaseAdvice {
    pub name: String,
    pub weight: f64,
    pub bake_s: f64,
    /// How the phase decides; the seconds below are finite numbers or null, never infinite
    /// (JSON has no infinity), so this says why `needed_s` is null.
    pub needs: PhaseNeeds,
    /// What the phase needs: the time for a release as good as the stable one to pass (the
    /// figure `status` counts down), or with `power = 0` the time to catch the targets. Set
    /// only when `needs` is `time`.
    pub needed_s: Option<f64>,
    /// The time for a release as good as the stable one to pass (95% of the time); null when
    /// the pass tests are off or no release can pass at this traffic.
    #[serde(default)]
    pub pass_s: Option<f64>,
    /// The time to catch the target regressions (80% of the time, or the spec's power); null
    /// when the phase cannot catch them at this traffic or relies on the guards.
    #[serde(default)]
    pub detect_s: Option<f64>,
    pub warning: Option<String>,
}

/// What a phase of a plan needs to decide.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PhaseNeeds {
    /// A known time: `needed_s`.
    Time,
    /// More traffic (or weight) than it has: at this traffic it cannot decide.
    MoreTraffic,
    /// Nothing to compare with (the 100% phase): only the guards judge it.
    GuardsOnly,
}
