//! `[rollout]`: the plan of phases, their weights, bakes and gates.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// How the new version is exposed: shares of users beside the stable version (`canary`),
    /// or a full second stack switched to at once (`blue_green`).
    #[serde(default, skip_serializing_if = "ExposureModel::is_default")]
    pub model: ExposureModel,
    pub phases: Vec<PhaseSpec>,
    /// When a phase's bake is over but its verdict is still unknown (too little traffic, no
    /// data), the rollout holds; after this long it escalates. It never promotes on unknown.
    #[serde(default = "default_max_hold")]
    pub max_hold: Dur,
    /// Blue-green: how long the old stack keeps running after the switch completed, so that a
    /// rollback is a switch back rather than a redeploy.
    #[serde(default = "default_keep_old_for", skip_serializing_if = "is_default_keep")]
    pub keep_old_for: Dur,
}

fn default_max_hold() -> Dur {
    Dur::secs(600)
}

fn default_keep_old_for() -> Dur {
    Dur::secs(600)
}

// Left out of a spec's canonical form when at its default, so the digests of specs written
// before it existed do not change.
fn is_default_keep(d: &Dur) -> bool {
    *d == default_keep_old_for()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExposureModel {
    /// Phases expose growing shares of users (and rings of chosen users) beside the stable
    /// version.
    #[default]
    Canary,
    /// The new version runs as a full second stack, previewed at 0% (probes, smoke tests,
    /// chosen users), then takes all traffic at once; the old stack is kept warm for
    /// `keep_old_for` after the switch.
    BlueGreen,
}

impl ExposureModel {
    fn is_default(&self) -> bool {
        *self == ExposureModel::Canary
    }
}

impl PhaseSpec {
    /// A phase no user reaches: the new version runs and is judged on its health checks only
    /// (a blue-green preview).
    pub fn is_dark(&self) -> bool {
        self.weight_bp() == 0 && self.segment.is_none() && self.shadow.is_none()
    }

    /// The share of requests copied to the new version, in basis points.
    pub fn shadow_bp(&self) -> u32 {
        self.shadow.map_or(0, |s| (s * 100.0).round().clamp(0.0, 10_000.0) as u32)
    }

    /// Whether the new version's share of traffic is something other than its weight (a ring
    /// of chosen users, copies of requests): the analysis takes the share it observes.
    pub fn share_is_observed(&self) -> bool {
        self.weight_bp() < 10_000 && (self.segment.is_some() || self.shadow.is_some())
    }
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
    /// A ring of chosen users (staff, testers) on the new version whatever their bucket, on
    /// top of `weight`; with `weight = 0`, only they see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<ringfence_traffic::Segment>,
    /// Shadow traffic: percent of requests (0 < s <= 100) of which the new version gets a
    /// copy, its answers discarded and judged against the stable version's; only at weight 0,
    /// before any user is exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<f64>,
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
