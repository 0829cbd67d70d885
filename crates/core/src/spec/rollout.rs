//! `[rollout]`: the plan of phases, their weights, bakes and gates.

use super::*;

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
    /// A ring of chosen users (staff, testers) on the new version whatever their bucket, on
    /// top of `weight`; with `weight = 0`, only they see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<ringfence_traffic::Segment>,
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
