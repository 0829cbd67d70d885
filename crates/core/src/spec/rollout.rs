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
    /// Canary: how long the previous stable version keeps running, with no traffic, after a
    /// rollout completes; a regression in that time (a crash, a trusted alert, the error rate
    /// past `health.max_error_rate`) switches back to it at once. 0 (the default): it stops.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub watch: Dur,
    /// A business-critical workload is deployed side by side (the stable version serves until
    /// the new one is proven). A plan that is not (a first phase at 100%, or a blue-green old
    /// stack not kept) is refused unless this says why; the reason is recorded with the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_side_by_side: Option<String>,
}

fn is_zero(d: &Dur) -> bool {
    d.as_ms() == 0
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
    /// The workload's instances are updated in place, one ring (group of instances) per
    /// phase: a phase's weight is the share of instances running the new version, rounded up
    /// to whole instances; the rest keep the stable version and serve beside it.
    Rings,
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

impl RolloutSpec {
    /// How long the previous stack stays warm after a rollout completes: `keep_old_for` for
    /// blue-green, `watch` for a canary, nothing for rings (their old instances were replaced).
    pub fn warm_for(&self) -> Dur {
        match self.model {
            ExposureModel::BlueGreen => self.keep_old_for,
            ExposureModel::Canary => self.watch,
            ExposureModel::Rings => Dur::ms(0),
        }
    }

    /// The phases a rollout follows. With rings, each weight becomes the share of whole
    /// instances it updates (10% of 4 instances is 1 instance, 25%), so what the router
    /// carries and what the analysis expects is what runs.
    pub fn phases_for(&self, replicas: u32) -> Vec<PhaseSpec> {
        let mut phases = self.phases.clone();
        if self.model == ExposureModel::Rings {
            for p in &mut phases {
                p.weight = ring_size(p.weight, replicas) as f64 * 100.0 / replicas.max(1) as f64;
            }
        }
        phases
    }
}

/// Instances a ring at `weight` percent of `replicas` updates: rounded up, at least one.
pub fn ring_size(weight: f64, replicas: u32) -> u32 {
    ((weight / 100.0 * replicas as f64 - 1e-9).ceil().max(1.0) as u32).min(replicas)
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
    /// `[approval] required` people approve (`ringfence approve`; a `promote` is one of them).
    Approval,
}
