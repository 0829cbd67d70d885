//! The planner's advice: how long each phase needs at the workload's traffic.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanAdvice {
    /// The request rate the advice is for.
    pub rps: f64,
    /// Measured at the router (true) or given with `?rps=` (false).
    pub measured: bool,
    pub stable: Option<String>,
    /// The stable version's error rate the advice assumes: the lower 95% bound of what the
    /// router counted (a plan on the low side never promises a bake too short).
    pub stable_error_rate: f64,
    pub target_error_ratio: f64,
    pub target_latency_ratio: f64,
    /// The spec's power requirement; 0 means phases pass without it.
    pub power: f64,
    pub phases: Vec<PhaseAdvice>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PhaseNeeds {
    /// A known time: `needed_s`.
    Time,
    /// More traffic (or weight) than it has: at this traffic it cannot decide.
    MoreTraffic,
    /// Nothing to compare with (the 100% phase): only the guards judge it.
    GuardsOnly,
}
