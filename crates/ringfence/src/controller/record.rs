//! Record: the router's traffic per version over short intervals, while a rollout runs and
//! for a few minutes after a failed one's mitigation, so its charts and its postmortem can
//! draw the new version against the stable one. Samples are kept here and appended in
//! batches (`SignalsRecorded`), every 30 s and whenever the rollout changes state (a halt, the
//! end of a mitigation): the log grows by a couple of events a minute of a rollout, and a
//! crash loses at most the batch in hand.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringfence_core::EventKind;
use ringfence_core::health::{SignalSample, Traffic};
use ringfence_core::state::WorkloadState;
use ringfence_router::StatsSnapshot;

use super::observe::to_traffic;

/// One sample per version this often.
const EVERY: Duration = Duration::from_secs(1);
/// Samples appended together at most (two versions: two minutes at one a second) ...
const BATCH: usize = 240;
/// ... and at least this often, so what is drawn is never older.
const APPEND_EVERY: Duration = Duration::from_secs(30);
/// How long after a failed rollout's mitigation its traffic is still recorded: how the stable
/// version carried everyone again belongs in its postmortem.
const AFTER_MITIGATION_MS: u64 = 5 * 60_000;

pub(super) struct Recorder {
    rollout_id: String,
    versions: Vec<String>,
    /// What the rollout was doing at the last look: a change (a halt, the mitigation's end)
    /// closes the interval and appends what is in hand, so the charts are current when people
    /// look.
    state: String,
    /// The router process the counters came from: a restart resets them.
    instance: String,
    last: BTreeMap<String, Traffic>,
    last_at: Instant,
    appended_at: Instant,
    pending: Vec<SignalSample>,
}

/// The rollout whose traffic is recorded now, its versions (new, then stable) and what it is
/// doing.
fn target(ws: &WorkloadState, now: ringfence_core::Timestamp) -> Option<(String, Vec<String>, String)> {
    if let Some(r) = ws.active_rollout() {
        let versions = std::iter::once(r.release.clone()).chain(r.from.clone()).collect();
        return Some((r.id.clone(), versions, r.status.as_str().to_string()));
    }
    let i = ws.incidents.values().filter(|i| i.is_open()).max_by_key(|i| i.detected_at)?;
    let since = i.mitigated_at.unwrap_or(i.detected_at);
    (now.since(since) < AFTER_MITIGATION_MS).then(|| {
        let versions = std::iter::once(i.release.clone()).chain(i.stable.clone()).collect();
        (i.rollout_id.clone(), versions, "after".to_string())
    })
}

impl Recorder {
    /// One sample per version over the interval since the last, when it is not empty.
    fn sample(&mut self, snap: &StatsSnapshot, now: ringfence_core::Timestamp) {
        let span = self.last_at.elapsed().as_millis() as u64;
        if span == 0 || snap.instance_id != self.instance {
            return;
        }
        self.last_at = Instant::now();
        for v in &self.versions {
            let counters = snap.versions.get(v).map(to_traffic).unwrap_or_default();
            let delta = self.last.get(v).map_or_else(|| counters.clone(), |before| counters.since(before));
            // An interval without a request says nothing to draw: an idle rollout adds nothing
            // to the log.
            if delta.requests > 0 {
                let mut sample = SignalSample::of(v, now, span, &delta);
                sample.users = snap.versions.get(v).map(|s| s.users).filter(|u| *u > 0);
                self.pending.push(sample);
            }
            self.last.insert(v.clone(), counters);
        }
    }

    fn append(&mut self) -> Option<EventKind> {
        self.appended_at = Instant::now();
        (!self.pending.is_empty()).then(|| EventKind::SignalsRecorded {
            rollout_id: self.rollout_id.clone(),
            samples: std::mem::take(&mut self.pending),
        })
    }
}

/// Takes the router's latest counters; returns the batches to append now.
pub(super) fn observe(slot: &mut Option<Recorder>, ws: &WorkloadState, snap: &StatsSnapshot) -> Vec<EventKind> {
    let now = crate::state::now();
    let target = target(ws, now);
    let mut out = Vec::new();
    if let Some(mut done) = slot.take_if(|r| target.as_ref().is_none_or(|(id, _, _)| *id != r.rollout_id)) {
        done.sample(snap, now);
        out.extend(done.append());
    }
    let Some((id, versions, state)) = target else { return out };
    let rec = slot.get_or_insert_with(|| Recorder {
        rollout_id: id,
        versions: Vec::new(),
        state: String::new(),
        instance: String::new(),
        last: BTreeMap::new(),
        last_at: Instant::now(),
        appended_at: Instant::now(),
        pending: Vec::new(),
    });
    if rec.instance != snap.instance_id || rec.versions != versions {
        // A new rollout, or a router restarted (its counters start again): a new baseline.
        let counters = |v: &str| snap.versions.get(v).map(to_traffic).unwrap_or_default();
        rec.instance = snap.instance_id.clone();
        rec.last = versions.iter().map(|v| (v.clone(), counters(v))).collect();
        rec.versions = versions;
        rec.state = state;
        rec.last_at = Instant::now();
        return out;
    }
    let changed = rec.state != state;
    if changed || rec.last_at.elapsed() >= EVERY {
        rec.sample(snap, now);
    }
    if changed || rec.pending.len() >= BATCH || rec.appended_at.elapsed() >= APPEND_EVERY {
        rec.state = state;
        out.extend(rec.append());
    }
    out
}
