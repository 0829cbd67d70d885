//! The health model: components (the service itself, its dependencies), each with signals and a
//! criticality, rolled up to one level for the workload: healthy, degraded, unhealthy or unknown.
//!
//! A signal owned only by components of low or medium criticality does not halt a rollout: it
//! makes the workload degraded, visible in `status` and `why`. Signals of high or critical
//! components, and signals no component claims, gate as usual.

use serde::{Deserialize, Serialize};

use crate::health::{Health, Verdict, rollup};
use crate::spec::{ComponentSpec, Criticality};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Healthy,
    Degraded,
    Unhealthy,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentHealth {
    pub name: String,
    pub criticality: Criticality,
    pub health: Health,
    pub signals: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthModel {
    pub level: Level,
    pub components: Vec<ComponentHealth>,
}

fn gating(c: Criticality) -> bool {
    matches!(c, Criticality::High | Criticality::Critical)
}

fn owns(c: &ComponentSpec, signal: &str) -> bool {
    c.signals.iter().any(|s| s == signal || (s == "latency" && signal.starts_with("latency")))
}

/// Rolls a verdict up through the components, and returns the verdict's health once the
/// signals owned only by non-gating components are set aside.
pub fn apply(verdict: &Verdict, components: &[ComponentSpec]) -> (Health, HealthModel) {
    if components.is_empty() {
        let level = match verdict.health {
            Health::Healthy => Level::Healthy,
            Health::Unhealthy => Level::Unhealthy,
            Health::Unknown => Level::Unknown,
        };
        return (verdict.health, HealthModel { level, components: vec![] });
    }
    let comps: Vec<ComponentHealth> = components
        .iter()
        .map(|c| {
            let mine: Vec<_> = verdict.signals.iter().filter(|s| owns(c, &s.signal)).collect();
            ComponentHealth {
                name: c.name.clone(),
                criticality: c.criticality,
                health: if mine.is_empty() { Health::Unknown } else { rollup(mine.iter().map(|s| s.health)) },
                signals: mine.iter().map(|s| format!("{}: {}", s.signal, s.health)).collect(),
            }
        })
        .collect();
    let gating_health = rollup(verdict.signals.iter().filter_map(|s| {
        let owners: Vec<_> = components.iter().filter(|c| owns(c, &s.signal)).collect();
        (owners.is_empty() || owners.iter().any(|c| gating(c.criticality))).then_some(s.health)
    }));
    let degraded = comps.iter().any(|c| !gating(c.criticality) && c.health == Health::Unhealthy);
    let level = match gating_health {
        Health::Unhealthy => Level::Unhealthy,
        Health::Unknown => Level::Unknown,
        Health::Healthy if degraded => Level::Degraded,
        Health::Healthy => Level::Healthy,
    };
    (gating_health, HealthModel { level, components: comps })
}
