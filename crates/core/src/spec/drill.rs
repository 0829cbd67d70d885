//! `[drill]`: how the workload's mitigation is rehearsed with injected faults
//! (`ringfence drill`, docs/drills.md), and how recent a rehearsal must be for `lint` to
//! trust an automatic mitigation.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillSpec {
    /// The largest share of users (percent) a drill release may reach. A drill runs one phase
    /// of the plan at this weight at most, whatever the plan says.
    pub max_weight: f64,
    /// How soon after the fault is injected the rollout must halt (or hold, for a signal
    /// outage). Unset: the drilled phase's bake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detect_within: Option<Dur>,
    /// How soon after detection the users must be back on the stable version.
    pub mitigate_within: Dur,
    /// A trusted trigger whose last passed drill is older than this is reported by `lint`.
    pub max_age: Dur,
    /// Automatic mitigation acts on a drillable trigger (`error_rate`, `latency`, `crash`,
    /// `probe`) only once its last drill passed within `max_age`; until then a verdict made
    /// unhealthy by it alone halts with exposure frozen, as an untrusted one does.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub trust_only_drilled: bool,
    /// Drills the server starts by itself, each when `every` has passed since that fault's
    /// last drill, inside a deployment window, while no rollout runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scheduled: Vec<ScheduledDrill>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledDrill {
    /// The fault, as `ringfence drill --fault` takes it (`error-rate`, `latency=300ms`, ...).
    pub fault: String,
    pub every: Dur,
}

impl Default for DrillSpec {
    fn default() -> Self {
        DrillSpec {
            max_weight: 10.0,
            detect_within: None,
            mitigate_within: Dur::secs(30),
            max_age: Dur::secs(30 * 24 * 3600),
            trust_only_drilled: false,
            scheduled: Vec::new(),
        }
    }
}

impl DrillSpec {
    pub(super) fn is_default(&self) -> bool {
        *self == DrillSpec::default()
    }

    pub fn max_weight_bp(&self) -> u32 {
        (self.max_weight * 100.0).round().clamp(0.0, 10_000.0) as u32
    }
}

pub(super) fn validate(d: &DrillSpec, bad: &mut impl FnMut(&str, String)) {
    if !(d.max_weight.is_finite() && d.max_weight > 0.0 && d.max_weight <= 50.0) {
        bad(
            "drill.max_weight",
            format!(
                "expected a share above 0 and at most 50 (percent): a drill must leave most users alone, found {}",
                d.max_weight
            ),
        );
    }
    if d.mitigate_within.as_ms() == 0 {
        bad("drill.mitigate_within", "expected a duration above 0".into());
    }
    if d.detect_within.is_some_and(|x| x.as_ms() == 0) {
        bad("drill.detect_within", "expected a duration above 0".into());
    }
    for (i, s) in d.scheduled.iter().enumerate() {
        if let Err(e) = crate::drill::Fault::parse(&s.fault) {
            bad(&format!("drill.scheduled[{i}].fault"), e);
        }
        if s.every.as_ms() < 3600 * 1000 {
            bad(&format!("drill.scheduled[{i}].every"), format!("expected at least 1h, found {}", s.every));
        }
    }
}
