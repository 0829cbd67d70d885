//! Running counts of a workload's history, kept by the fold as events arrive: deployments by
//! outcome, mitigations by action, halts, the time to detect and to mitigate, open incidents
//! by severity, and notification deliveries by channel.
//!
//! A Prometheus scrape reads these (a few numbers per workload) instead of walking every
//! rollout, incident and delivery of the history under each scrape, and they are the figures
//! that stay right once old history leaves the projection. An event changes at most one
//! rollout with its incident and one delivery, so the fold takes what those added to the
//! counts before the event, what they add after it, and moves the counts by the difference:
//! the counts are always what a walk over the history finds ([`Totals::walk`]), which the
//! property tests check after every event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::state::WorkloadState;

/// Upper bounds (seconds) of the detection and mitigation histograms' buckets: a fallback is
/// expected in well under a second, a detection within a phase's bake. A last bucket, above
/// every bound, takes the rest.
pub const BOUNDS_S: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 1800.0];

/// Durations counted per bucket, not cumulative (bucket `i` holds those above bound `i - 1`
/// and at most bound `i`; the last, those above every bound).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    pub buckets: [u64; BOUNDS_S.len() + 1],
    pub sum_ms: u64,
    pub count: u64,
}

impl Histogram {
    fn bucket(ms: u64) -> usize {
        let s = ms as f64 / 1000.0;
        BOUNDS_S.iter().position(|b| s <= *b).unwrap_or(BOUNDS_S.len())
    }

    fn add(&mut self, ms: u64) {
        self.buckets[Self::bucket(ms)] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }

    fn remove(&mut self, ms: u64) {
        let b = &mut self.buckets[Self::bucket(ms)];
        *b = b.saturating_sub(1);
        self.sum_ms = self.sum_ms.saturating_sub(ms);
        self.count = self.count.saturating_sub(1);
    }
}

/// The counts of one workload. Keys with a count of zero are left out, as a walk leaves them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Rollouts that ended, by status (drills apart: they are rehearsals).
    pub outcomes: BTreeMap<String, u64>,
    /// Decisions on halted rollouts, by action (`fallback`, `rollback`, `hold`, ...).
    pub actions: BTreeMap<String, u64>,
    /// Rollouts halted, each with its incident.
    pub halts: u64,
    /// From a failed rollout's start to its halt.
    pub detect: Histogram,
    /// From a halt to its verified mitigation.
    pub mitigate: Histogram,
    /// Incidents not resolved, by severity (`sev1` ...).
    pub open: BTreeMap<String, u64>,
    /// Incident updates and follow-ups sent, by channel: (delivered, failed tries).
    pub deliveries: BTreeMap<String, (u64, u64)>,
}

/// What one rollout and its incident add to the counts.
#[derive(Debug, Default, PartialEq)]
struct RolloutPart {
    outcome: Option<&'static str>,
    action: Option<String>,
    halt: bool,
    detect_ms: Option<u64>,
    mitigate_ms: Option<u64>,
    open: Option<String>,
}

impl RolloutPart {
    fn of(ws: &WorkloadState, id: &str) -> RolloutPart {
        let counted = ws.rollout(id).filter(|r| !crate::drill::is_drill(r));
        let incident = ws.incidents.get(id);
        RolloutPart {
            outcome: counted.filter(|r| r.ended_at.is_some()).map(|r| r.status.as_str()),
            action: counted.and_then(|r| r.decision.as_ref()).map(|d| action_name(d.action)),
            halt: incident.is_some(),
            detect_ms: incident.and_then(|i| ws.rollout(&i.rollout_id).map(|r| i.detected_at.since(r.started_at))),
            mitigate_ms: incident.and_then(|i| i.mitigated_at.map(|m| m.since(i.detected_at))),
            open: incident.filter(|i| i.is_open()).map(|i| i.severity_name()),
        }
    }
}

/// A delivery's key in `WorkloadState::deliveries`: (channel, subject, message).
type DeliveryKey = (String, String, usize);

/// What an event may change: one rollout (and the incident of the same id), one delivery.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    rollout: Option<String>,
    delivery: Option<DeliveryKey>,
}

/// The counts the touched parts add, taken before and after the fold changes them.
#[derive(Debug, Default)]
pub(crate) struct Parts {
    rollout: Option<RolloutPart>,
    delivery: Option<(String, (u64, u64))>,
}

impl Touched {
    pub(crate) fn by(kind: &EventKind) -> Touched {
        use EventKind::*;
        let incident = match kind {
            IncidentAcknowledged { incident }
            | IncidentUpdated { incident, .. }
            | IncidentResolved { incident }
            | NotificationDelivered { incident, .. }
            | NotificationFailed { incident, .. } => Some(incident.clone()),
            _ => None,
        };
        let delivery = match kind {
            NotificationDelivered { channel, incident, update, .. }
            | NotificationFailed { channel, incident, update, .. } => {
                Some((channel.clone(), incident.clone(), *update))
            }
            FollowUpSent { id, channel, message, .. } | FollowUpSendFailed { id, channel, message, .. } => {
                Some((channel.clone(), crate::incident::follow_up_subject(id), *message))
            }
            _ => None,
        };
        Touched { rollout: kind.rollout_id().map(String::from).or(incident), delivery }
    }

    pub(crate) fn parts(&self, ws: &WorkloadState) -> Parts {
        Parts {
            rollout: self.rollout.as_deref().map(|id| RolloutPart::of(ws, id)),
            delivery: self.delivery.as_ref().map(|k| (k.0.clone(), delivery_part(ws.deliveries.get(k)))),
        }
    }
}

fn action_name(action: crate::decision::MitigationAction) -> String {
    format!("{action:?}").to_lowercase()
}

fn delivery_part(d: Option<&crate::incident::Delivery>) -> (u64, u64) {
    d.map_or((0, 0), |d| {
        let delivered = u64::from(d.delivered_at.is_some());
        (delivered, u64::from(d.attempts).saturating_sub(delivered))
    })
}

fn add(map: &mut BTreeMap<String, u64>, key: Option<&str>) {
    if let Some(k) = key {
        *map.entry(k.to_string()).or_default() += 1;
    }
}

fn remove(map: &mut BTreeMap<String, u64>, key: Option<&str>) {
    if let Some(k) = key
        && let Some(n) = map.get_mut(k)
    {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(k);
        }
    }
}

impl Totals {
    /// Moves the counts from what the touched parts added before an event to what they add
    /// after it.
    pub(crate) fn shift(&mut self, before: Parts, after: Parts) {
        if let (Some(b), Some(a)) = (before.rollout, after.rollout)
            && b != a
        {
            remove(&mut self.outcomes, b.outcome);
            add(&mut self.outcomes, a.outcome);
            remove(&mut self.actions, b.action.as_deref());
            add(&mut self.actions, a.action.as_deref());
            self.halts = (self.halts + u64::from(a.halt)).saturating_sub(u64::from(b.halt));
            b.detect_ms.inspect(|ms| self.detect.remove(*ms));
            a.detect_ms.inspect(|ms| self.detect.add(*ms));
            b.mitigate_ms.inspect(|ms| self.mitigate.remove(*ms));
            a.mitigate_ms.inspect(|ms| self.mitigate.add(*ms));
            remove(&mut self.open, b.open.as_deref());
            add(&mut self.open, a.open.as_deref());
        }
        if let (Some((channel, b)), Some((_, a))) = (before.delivery, after.delivery)
            && b != a
        {
            let e = self.deliveries.entry(channel.clone()).or_default();
            e.0 = (e.0 + a.0).saturating_sub(b.0);
            e.1 = (e.1 + a.1).saturating_sub(b.1);
            if *e == (0, 0) {
                self.deliveries.remove(&channel);
            }
        }
    }

    /// Adds what rollout `id` of `ws` and its incident count for: the part of a rollout the
    /// projection lets go (`[history]`), which the running counts keep counting.
    pub(crate) fn count_rollout(&mut self, ws: &WorkloadState, id: &str) {
        let part = RolloutPart::of(ws, id);
        add(&mut self.outcomes, part.outcome);
        add(&mut self.actions, part.action.as_deref());
        if part.halt {
            self.halts += 1;
            part.detect_ms.inspect(|ms| self.detect.add(*ms));
            part.mitigate_ms.inspect(|ms| self.mitigate.add(*ms));
            add(&mut self.open, part.open.as_deref());
        }
    }

    /// Adds what a delivery to `channel` counts for.
    pub(crate) fn count_delivery(&mut self, channel: &str, d: &crate::incident::Delivery) {
        let (ok, failed) = delivery_part(Some(d));
        if ok + failed > 0 {
            let e = self.deliveries.entry(channel.to_string()).or_default();
            e.0 += ok;
            e.1 += failed;
        }
    }

    /// Both counts together.
    pub fn plus(&self, other: &Totals) -> Totals {
        let mut t = self.clone();
        for (k, n) in &other.outcomes {
            *t.outcomes.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.actions {
            *t.actions.entry(k.clone()).or_default() += n;
        }
        t.halts += other.halts;
        for (mine, theirs) in [(&mut t.detect, &other.detect), (&mut t.mitigate, &other.mitigate)] {
            for (b, o) in mine.buckets.iter_mut().zip(theirs.buckets) {
                *b += o;
            }
            mine.sum_ms += theirs.sum_ms;
            mine.count += theirs.count;
        }
        for (k, n) in &other.open {
            *t.open.entry(k.clone()).or_default() += n;
        }
        for (k, (ok, failed)) in &other.deliveries {
            let e = t.deliveries.entry(k.clone()).or_default();
            e.0 += ok;
            e.1 += failed;
        }
        t
    }

    /// The counts from a walk over the history the projection holds: what the fold's running
    /// counts must always equal, with what it let go (`WorkloadState::forgotten`) added.
    pub fn walk(ws: &WorkloadState) -> Totals {
        let mut t = Totals::default();
        for r in ws.rollouts.iter() {
            let part = RolloutPart::of(ws, &r.id);
            add(&mut t.outcomes, part.outcome);
            add(&mut t.actions, part.action.as_deref());
        }
        for i in ws.incidents.values() {
            let part = RolloutPart::of(ws, &i.rollout_id);
            t.halts += 1;
            part.detect_ms.inspect(|ms| t.detect.add(*ms));
            part.mitigate_ms.inspect(|ms| t.mitigate.add(*ms));
            add(&mut t.open, part.open.as_deref());
        }
        for ((channel, _, _), d) in ws.deliveries.iter() {
            t.count_delivery(channel, d);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_falls_in_the_first_bucket_whose_bound_it_does_not_pass() {
        assert_eq!(Histogram::bucket(0), 0);
        assert_eq!(Histogram::bucket(100), 0, "a bound is inclusive");
        assert_eq!(Histogram::bucket(101), 1);
        assert_eq!(Histogram::bucket(1_800_000), BOUNDS_S.len() - 1);
        assert_eq!(Histogram::bucket(1_800_001), BOUNDS_S.len(), "above every bound");
        let mut h = Histogram::default();
        h.add(300);
        h.add(70_000);
        h.remove(300);
        assert_eq!((h.count, h.sum_ms), (1, 70_000));
        assert_eq!(h.buckets.iter().sum::<u64>(), 1);
    }

    #[test]
    fn a_count_that_falls_to_zero_leaves_the_map_as_a_walk_would() {
        let mut m = BTreeMap::new();
        add(&mut m, Some("completed"));
        add(&mut m, Some("completed"));
        remove(&mut m, Some("completed"));
        assert_eq!(m.get("completed"), Some(&1));
        remove(&mut m, Some("completed"));
        assert!(m.is_empty());
        remove(&mut m, Some("completed"));
        assert!(m.is_empty(), "never below zero");
    }
}
