//! Projections: the current state of every workload, folded from the event log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{Action, Event, EventKind, RouteGroup};
use crate::release::{Release, ReleaseStub};
use crate::rollout::{self, Rollout, RolloutKind, RolloutStatus};
use crate::spec::WorkloadSpec;
use crate::time::Timestamp;

/// Ended rollouts per workload whose whole detail the projection keeps (the newest): what the
/// controller, `why` and the pages people watch read without the log.
pub const DETAILED_ROLLOUTS: usize = 20;

/// How many rollouts back the fold looks for the same phases to share (see `Rollout::phases`).
const SHARED_PLAN_LOOKBACK: usize = 4;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct World {
    /// Shared, copied on write: a reader (a controller's tick, an API answer) takes a
    /// snapshot by cloning the `Arc`, whatever the size of the workload's history, and the
    /// fold copies a workload only when it changes while a snapshot of it is held.
    pub workloads: BTreeMap<String, std::sync::Arc<WorkloadState>>,
    /// The API's tokens (from events of no workload).
    pub access: crate::access::Access,
    /// Sequence number of the last event applied.
    pub last_seq: u64,
    /// Stop the line: every workload's rollouts paused and none started, until lifted.
    #[serde(default)]
    pub line: Option<crate::governance::LineStop>,
    /// Counts the events that changed what a router of the tier could be served: a workload
    /// added, deleted or brought back, its spec or its published table changed. Most events
    /// change none of it, and a reader of the routes skips the rest.
    #[serde(default, skip)]
    pub routes_changed: u64,
    /// A world folded again from the log to read what a projection let go
    /// ([`World::keeping_everything`]): its workloads keep every rollout, whatever their
    /// `[history]`.
    #[serde(default, skip)]
    pub keeps_everything: bool,
}

/// A part of a workload's state that grows with its history, shared between the projection
/// and the snapshots readers hold: the fold copies a workload when it changes one while a
/// snapshot is held (see [`World::workloads`]), and that copy then costs a pointer per part,
/// not the history; only the part an event changes is copied (`Arc::make_mut`), and most
/// events change none.
pub type History<T> = std::sync::Arc<T>;

/// What a workload's projection let go under `[history]`: ended rollouts older than the newest
/// `rollouts`, with their incidents, deliveries and backups. The log
/// keeps all of it, and a reader who needs it folds the log again
/// ([`World::keeping_everything`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Forgotten {
    /// Rollouts let go.
    pub rollouts: u64,
    /// The latest end among them: a window reaching back before it is not all in memory.
    pub until: Option<Timestamp>,
    /// What they counted for in the running counts (`WorkloadState::totals`), which keep
    /// counting them: the counts are a walk over what is kept plus these.
    pub totals: crate::totals::Totals,
    /// Rollouts older than the newest `rollouts` that the last pass kept (something still
    /// needed them): the next pass waits for a tenth more beyond these too, so a few kept for
    /// good do not make every rollout's end a pass.
    #[serde(default)]
    pub held_back: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    pub version: String,
    pub replica: u32,
    /// The executor's id of the running instance (see `EventKind::ReplicaStarted`).
    pub instance: String,
    /// Where it serves, `host:port`.
    pub endpoint: String,
    pub started_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterRecord {
    pub pid: u32,
    pub listen: String,
    pub admin: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LkgEntry {
    pub version: String,
    pub rollout_id: String,
    pub at: Timestamp,
    /// Spec (scale, executor, health) in force when it was judged good.
    pub spec_digest: String,
    /// For a rollback: the version it left. Kept here, not only on the rollback rollout, so a
    /// later rollback with no target still walks past it once `[history]` lets that rollout go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<String>,
}

/// Why the workload runs what it runs when that is not the newest release: after a
/// mitigation or a rollback, the desired state is pinned to the last known good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub version: String,
    pub rollout_id: String,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadState {
    pub name: String,
    pub spec: WorkloadSpec,
    pub spec_digest: String,
    /// Shared, so the controller's copy of a workload each round does not copy past
    /// releases' content (flag files, configuration).
    pub releases: History<BTreeMap<String, std::sync::Arc<Release>>>,
    /// Release order, oldest first: every version registered, those let go too.
    pub release_order: History<Vec<String>>,
    /// The sequence number of each release's `release_created` event, by version: where its
    /// content is read back from once `[history]` lets it go.
    #[serde(default)]
    pub release_seqs: History<BTreeMap<String, u64>>,
    /// Releases `[history]` let go, by version: what is kept of each (see
    /// [`WorkloadState::forget_old_releases`]); the log keeps the rest.
    #[serde(default)]
    pub releases_let_go: History<BTreeMap<String, ReleaseStub>>,
    /// The version serving users outside any canary.
    pub stable: Option<String>,
    /// Shared like `rollouts`: one entry per completed rollout.
    pub lkg: History<Vec<std::sync::Arc<LkgEntry>>>,
    pub pin: Option<Pin>,
    /// Each shared, so copying the workload (when the fold changes it while a tick holds a
    /// snapshot) copies pointers, not the history.
    pub rollouts: Vec<std::sync::Arc<Rollout>>,
    pub replicas: BTreeMap<(String, u32), ReplicaRecord>,
    pub router: Option<RouterRecord>,
    /// The table last published to the router tier (`kind = "tier"`).
    pub published: Option<std::sync::Arc<ringfence_traffic::table::RouteTable>>,
    pub routes: Option<(u64, Vec<RouteGroup>)>,
    /// Intended actions with no recorded outcome yet: redone (idempotently) after a crash.
    pub open_intents: BTreeMap<String, Action>,
    pub intents_total: u64,
    /// Replica exits nobody asked for, newest last (kept for the health of the rollout).
    pub crashes: Vec<Crash>,
    /// Versions that could not be started, with why; cleared when one of their replicas starts.
    pub start_failures: BTreeMap<String, String>,
    /// Alerts concerning the workload that are firing now, by fingerprint.
    #[serde(default)]
    pub alerts: BTreeMap<String, FiringAlert>,
    /// Recent user reports, newest last.
    #[serde(default)]
    pub reports: Vec<UserReport>,
    /// Flags turned off by the kill switch, with who did it and why.
    #[serde(default)]
    pub killed_flags: BTreeMap<String, KilledFlag>,
    /// Blue-green: the old stack, still running after the switch so that a rollback is a
    /// switch back, until it is retired.
    #[serde(default)]
    pub warm: Option<WarmStack>,
    /// Backups taken before rollouts' migrations: rollout id -> what the hook recorded.
    #[serde(default)]
    pub backups: History<BTreeMap<String, String>>,
    /// Instances to replace with fresh ones (a redeploy), by slot: each leaves the routing
    /// table, stops, and its slot starts again.
    #[serde(default)]
    pub recycle: std::collections::BTreeSet<(String, u32)>,
    /// Rollouts whose bypass ran degraded past `mitigation.max_degraded` and was escalated.
    #[serde(default)]
    pub degraded_escalated: std::collections::BTreeSet<String>,
    /// Releases that were mitigated, by version: not deployed again until a person clears the
    /// hold with a reason (no flapping back into a release that failed).
    #[serde(default)]
    pub held: History<BTreeMap<String, ReleaseHold>>,
    /// Releases a person revoked, by version: they never run again.
    #[serde(default)]
    pub revoked: History<BTreeMap<String, Revocation>>,
    /// Mitigation drills, oldest first (`crate::drill`).
    #[serde(default)]
    pub drills: History<Vec<std::sync::Arc<crate::drill::Drill>>>,
    /// Deleted: nothing of it runs (instances, routes, router), its history is kept; applying
    /// its spec again brings it back.
    #[serde(default)]
    pub deleted: bool,
    /// Every spec applied, by digest: a rollback restores the one in force when its target
    /// was last known good (scale, executor, health), not only the release.
    #[serde(default)]
    pub specs: History<BTreeMap<String, std::sync::Arc<WorkloadSpec>>>,
    /// Attestations, the deployment waiting to start, and the gates an emergency skipped.
    #[serde(default)]
    pub governance: crate::governance::Governance,
    /// One incident per failed rollout, by the rollout's id.
    #[serde(default)]
    pub incidents: History<BTreeMap<String, std::sync::Arc<crate::incident::Incident>>>,
    /// Follow-up items of the postmortems, by id.
    #[serde(default)]
    pub follow_ups: History<BTreeMap<String, crate::incident::FollowUp>>,
    /// Deliveries of incident updates to the `[[notify]]` channels, by (channel, incident,
    /// update).
    #[serde(default)]
    pub deliveries: History<BTreeMap<(String, String, usize), crate::incident::Delivery>>,
    /// The incidents a tick still has work for (`incident::astir`): open, owing an update, or
    /// with an update not yet delivered (or given up on) to a channel. Kept by the fold, so a
    /// tick looks at these rather than at every incident of the history; derived, so not
    /// serialized.
    #[serde(skip)]
    pub incidents_astir: std::collections::BTreeSet<String>,
    /// The follow-ups not closed: the only ones a tick sends or reminds about.
    #[serde(skip)]
    pub follow_ups_open: std::collections::BTreeSet<String>,
    /// What the fold derives from the releases once (`ReleaseIndex`); derived, so not
    /// serialized.
    #[serde(skip)]
    pub release_index: History<ReleaseIndex>,
    /// Running counts of the history for `/metrics` (`totals::Totals`), kept by the fold.
    #[serde(default)]
    pub totals: crate::totals::Totals,
    /// Rollouts ever started: the last one's number (ids are `<workload>-<n>`).
    #[serde(default)]
    pub rollouts_started: u64,
    /// What the projection let go of the workload's past (`[history]`); the log keeps it.
    #[serde(default)]
    pub forgotten: Forgotten,
}

/// What the fold works out about each release when it is created, so that the questions the
/// controller asks many times a tick (which processes serve a release, which hotfix was
/// announced for it) are a look at one place, not a walk over every release of the history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReleaseIndex {
    /// Releases that run on an earlier release's processes (the same artifact and
    /// configuration, other flags), with that release's version.
    runs_on: std::collections::HashMap<String, String>,
    /// The first release of each artifact and configuration, by a hash of the two (more than
    /// one where hashes collide).
    first_of: std::collections::HashMap<u64, Vec<String>>,
    /// The newest release announced as a hotfix of each release, by the version it fixes.
    hotfixes: std::collections::HashMap<String, String>,
}

impl ReleaseIndex {
    /// Adds `r`, registered (or, `restored`, read back after `[history]` let it go) when
    /// `releases` were there. What other releases run on never changes: a release read back
    /// runs on a kept one with its processes, or on its own; it is the newest hotfix of what it
    /// fixes only when no other is.
    fn add(&mut self, releases: &BTreeMap<String, std::sync::Arc<Release>>, r: &Release, restored: bool) {
        use std::hash::{Hash, Hasher};
        let same_processes =
            |a: &Release| a.content.artifact == r.content.artifact && a.content.config == r.content.config;
        let mut h = std::hash::DefaultHasher::new();
        (&r.content.artifact, &r.content.config).hash(&mut h);
        let firsts = self.first_of.entry(h.finish()).or_default();
        match firsts.iter().find(|v| releases.get(*v).is_some_and(|f| same_processes(f))) {
            Some(first) => {
                self.runs_on.insert(r.version.clone(), first.clone());
            }
            None => firsts.push(r.version.clone()),
        }
        if let Some(fixed) = &r.content.hotfix_for {
            if restored {
                self.hotfixes.entry(fixed.clone()).or_insert_with(|| r.version.clone());
            } else {
                self.hotfixes.insert(fixed.clone(), r.version.clone());
            }
        }
    }

    /// Drops what concerns releases `[history]` let go. None that a kept release runs on or
    /// is the newest hotfix of is among them (`WorkloadState::forget_old_releases`), so the
    /// kept releases' entries stay as they were.
    fn forget(&mut self, gone: &std::collections::BTreeSet<String>) {
        self.runs_on.retain(|v, first| !gone.contains(v) && !gone.contains(first));
        for firsts in self.first_of.values_mut() {
            firsts.retain(|v| !gone.contains(v));
        }
        self.first_of.retain(|_, firsts| !firsts.is_empty());
        self.hotfixes.retain(|fixed, hotfix| !gone.contains(fixed) && !gone.contains(hotfix));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub actor: String,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseHold {
    /// The rollout whose mitigation put it on hold.
    pub rollout_id: String,
    /// What went wrong, as the decision said it.
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmStack {
    pub version: String,
    /// The rollout whose switch left it warm.
    pub rollout_id: String,
    /// When its time runs out.
    pub until: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KilledFlag {
    pub actor: String,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiringAlert {
    pub alertname: String,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserReport {
    pub user: String,
    pub group: Option<String>,
    pub version: Option<String>,
    pub message: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crash {
    pub version: String,
    pub replica: u32,
    pub instance: String,
    pub status: String,
    pub at: Timestamp,
}

impl WorkloadState {
    pub fn active_rollout(&self) -> Option<&Rollout> {
        self.rollouts.last().map(|r| &**r).filter(|r| r.status.is_active())
    }

    pub fn rollout(&self, id: &str) -> Option<&Rollout> {
        self.rollout_index(id).map(|i| &*self.rollouts[i])
    }

    /// Where rollout `id` is in `rollouts`. Ids are `<workload>-<n>`, the n-th rollout
    /// ([`WorkloadState::next_rollout_id`]), kept in order, so this is a look at one place
    /// (where it is when every older one was let go, or all kept), else a binary search, not a
    /// scan of the history: the fold and the readers of old rollouts (an incident's, a
    /// postmortem's) cost the same after ten rollouts and after ten thousand. An id of another
    /// shape (none is written today) is still found, by a scan.
    pub fn rollout_index(&self, id: &str) -> Option<usize> {
        let Some(n) = self.rollout_number(id) else {
            return self.rollouts.iter().rposition(|r| r.id == id);
        };
        let at = |i: usize| self.rollouts.get(i).is_some_and(|r| r.id == id);
        let direct = [n.checked_sub(1), n.checked_sub(1 + self.forgotten.rollouts)]
            .into_iter()
            .flatten()
            .filter_map(|i| usize::try_from(i).ok())
            .find(|&i| at(i));
        direct.or_else(|| {
            self.rollouts.binary_search_by_key(&Some(n), |r| self.rollout_number(&r.id)).ok().filter(|&i| at(i))
        })
    }

    /// `n` of an id `<workload>-<n>`.
    fn rollout_number(&self, id: &str) -> Option<u64> {
        id.strip_prefix(self.name.as_str())?.strip_prefix('-')?.parse().ok()
    }

    /// Whether rollout `id` was started and then let go under `[history]`: the log has it, the
    /// projection no longer does.
    pub fn forgot_rollout(&self, id: &str) -> bool {
        self.forgotten.rollouts > 0
            && self.rollout_number(id).is_some_and(|n| n >= 1 && n <= self.rollouts_started)
            && self.rollout_index(id).is_none()
    }

    fn rollout_mut(&mut self, id: &str) -> Option<&mut Rollout> {
        let i = self.rollout_index(id)?;
        Some(std::sync::Arc::make_mut(&mut self.rollouts[i]))
    }

    pub fn latest_rollout(&self) -> Option<&Rollout> {
        self.rollouts.last().map(|r| &**r)
    }

    /// Whether `version` was registered: kept whole, or let go under `[history]`.
    pub fn has_release(&self, version: &str) -> bool {
        self.releases.contains_key(version) || self.releases_let_go.contains_key(version)
    }

    /// The id of the migration `version` carries, whether the release is kept or let go.
    pub fn migration_of(&self, version: &str) -> Option<&str> {
        match self.releases.get(version) {
            Some(r) => r.content.migration.as_ref().map(|m| m.id.as_str()),
            None => self.releases_let_go.get(version)?.migration.as_deref(),
        }
    }

    pub fn lkg(&self) -> Option<&LkgEntry> {
        self.lkg.last().map(|e| &**e)
    }

    /// Drops the detail of every ended rollout but the newest [`DETAILED_ROLLOUTS`]
    /// ([`Rollout::drop_detail`]): the projection's size follows the number of rollouts, not
    /// the size of their evidence. Deterministic in the log, so a restart folds the same state.
    fn drop_old_detail(&mut self) {
        let mut kept = 0;
        for r in self.rollouts.iter_mut().rev().filter(|r| r.ended_at.is_some()) {
            if kept < DETAILED_ROLLOUTS {
                kept += 1;
            } else if r.detail_dropped {
                break; // Older ones were dropped before.
            } else {
                std::sync::Arc::make_mut(r).drop_detail();
            }
        }
    }

    pub fn next_rollout_id(&self) -> String {
        format!("{}-{}", self.name, self.rollouts_started + 1)
    }

    /// Lets go of the ended rollouts older than the newest `[history] rollouts`, with their
    /// incidents, deliveries and backups, once a tenth more than that have ended beyond those held back (so the work
    /// is done once per batch, not at every rollout's end). Kept whatever their age, while
    /// something still needs them: a rollout whose incident is open, still has work for a tick
    /// (an update owed, a delivery not settled) or an open follow-up item (exported and
    /// reminded about with the incident's details), or is drawn on a day of the public status
    /// page (not resolved before its window); one an emergency still owes a gate for (the approval is checked against
    /// its starter); a bypass whose flags are still off, until it is escalated; a drill's
    /// not yet assessed; the one the stable version came from, and those the pin or the warm
    /// stack name. Last-known-good entries all stay (a small record each): promotion, a
    /// contract migration's expand and `rollback --to` ask whether a version was ever last
    /// known good. What they counted for stays in the running counts (`forgotten.totals`).
    /// `at` is the time of the event folded; deterministic in the log, so a restart folds the
    /// same projection.
    fn forget_old_rollouts(&mut self, at: Timestamp) {
        let keep = self.spec.history.rollouts as usize;
        if self.rollouts.len() <= keep + keep / 10 + self.forgotten.held_back {
            return;
        }
        let stable_from = self.lkg.last().map(|e| e.rollout_id.as_str());
        let status_from = at.minus_ms(u64::from(crate::incident::STATUS_PAGE_DAYS) * 86_400_000);
        // The page draws an incident on every day from its detection to its resolution.
        let on_status_page = |i: &crate::incident::Incident| {
            self.spec.status_page.public && i.resolved_at.is_none_or(|r| r >= status_from)
        };
        let needed = |r: &Rollout| {
            let id = r.id.as_str();
            Some(id) == stable_from
                || self.pin.as_ref().is_some_and(|p| p.rollout_id == id)
                || self.warm.as_ref().is_some_and(|w| w.rollout_id == id)
                // Asked of the incident itself, not of the tick's index: an incident whose
                // updates went stale while the server was down stays in the index until an
                // event touches it, but nothing is owed for it any more.
                || self.incidents.get(id).is_some_and(|i| on_status_page(i) || crate::incident::astir(self, i, at))
                || self.follow_ups_open.iter().any(|f| self.follow_ups.get(f).is_some_and(|f| f.incident == id))
                || self.governance.owed.iter().any(|o| o.is_open() && o.rollout_id == id)
                // Until it is escalated (`command::degraded_too_long`): nothing is owed after.
                || (r.bypass.as_ref().is_some_and(|b| b.flags.iter().any(|f| self.killed_flags.contains_key(f)))
                    && !self.degraded_escalated.contains(id))
                || self.drills.iter().any(|d| d.report.is_none() && d.rollout_id == id)
        };
        let cut = self.rollouts.len() - keep;
        let gone: std::collections::BTreeSet<String> =
            self.rollouts[..cut].iter().filter(|r| r.ended_at.is_some() && !needed(r)).map(|r| r.id.clone()).collect();
        self.forgotten.held_back = cut - gone.len();
        if gone.is_empty() {
            return;
        }
        let mut counted = std::mem::take(&mut self.forgotten.totals);
        for id in &gone {
            counted.count_rollout(self, id);
        }
        let had_incidents = gone.iter().any(|id| self.incidents.contains_key(id));
        if had_incidents {
            for ((channel, subject, _), d) in self.deliveries.iter() {
                if gone.contains(subject) {
                    counted.count_delivery(channel, d);
                }
            }
            std::sync::Arc::make_mut(&mut self.deliveries).retain(|(_, subject, _), _| !gone.contains(subject));
            let incidents = std::sync::Arc::make_mut(&mut self.incidents);
            for id in &gone {
                incidents.remove(id);
                self.incidents_astir.remove(id);
            }
        }
        self.forgotten.totals = counted;
        let until = self.rollouts.iter().filter(|r| gone.contains(&r.id)).filter_map(|r| r.ended_at).max();
        self.forgotten.until = self.forgotten.until.max(until);
        self.forgotten.rollouts += gone.len() as u64;
        self.rollouts.retain(|r| !gone.contains(&r.id));
        if gone.iter().any(|id| self.backups.contains_key(id)) {
            std::sync::Arc::make_mut(&mut self.backups).retain(|id, _| !gone.contains(id));
        }
        self.degraded_escalated.retain(|id| !gone.contains(id));
        self.forget_old_releases();
    }

    /// Lets go of the content of releases nothing kept names, after the rollouts that named
    /// them were let go (`forget_old_rollouts`): a [`ReleaseStub`] stays of each. Kept: the
    /// newest `[history] rollouts` releases registered, those a kept rollout deploys or
    /// replaces, the stable version, the pin's and the warm
    /// stack's, those running or being started, the deployment waiting to start and the
    /// releases an emergency still owes a gate for, and what these run on or are announced
    /// fixes of. A command that needs one let go (a deploy of it, a rollback to it) reads it
    /// back from the log at the server's door (`EventKind::ReleaseRestored`).
    fn forget_old_releases(&mut self) {
        let keep = self.spec.history.rollouts as usize;
        let mut needed: std::collections::BTreeSet<&str> =
            self.release_order.iter().rev().take(keep).map(String::as_str).collect();
        for r in &self.rollouts {
            needed.insert(&r.release);
            needed.extend(r.from.as_deref());
        }
        needed.extend(self.stable.as_deref());
        needed.extend(self.pin.as_ref().map(|p| p.version.as_str()));
        needed.extend(self.warm.as_ref().map(|w| w.version.as_str()));
        needed.extend(self.replicas.keys().map(|(v, _)| v.as_str()));
        needed.extend(self.recycle.iter().map(|(v, _)| v.as_str()));
        needed.extend(self.open_intents.values().filter_map(|a| match a {
            Action::StartReplica { version, .. } => Some(version.as_str()),
            _ => None,
        }));
        needed.extend(self.governance.pending.as_ref().map(|p| p.version.as_str()));
        needed.extend(self.governance.owed.iter().filter(|o| o.is_open()).map(|o| o.version.as_str()));
        // What these run on and their newest hotfixes, and what those run on, and so on.
        let index = &self.release_index;
        loop {
            let derived: Vec<&str> = needed
                .iter()
                .flat_map(|v| [index.runs_on.get(*v), index.hotfixes.get(*v)])
                .flatten()
                .map(String::as_str)
                .filter(|v| !needed.contains(v))
                .collect();
            if derived.is_empty() {
                break;
            }
            needed.extend(derived);
        }
        let gone: Vec<String> = self.releases.keys().filter(|v| !needed.contains(v.as_str())).cloned().collect();
        if gone.is_empty() {
            return;
        }
        let releases = std::sync::Arc::make_mut(&mut self.releases);
        let seqs = std::sync::Arc::make_mut(&mut self.release_seqs);
        let stubs = std::sync::Arc::make_mut(&mut self.releases_let_go);
        let mut let_go = std::collections::BTreeSet::new();
        for v in gone {
            if let Some(seq) = seqs.remove(&v)
                && let Some(r) = releases.remove(&v)
            {
                stubs.insert(v.clone(), ReleaseStub::of(&r, seq));
                let_go.insert(v);
            }
        }
        std::sync::Arc::make_mut(&mut self.release_index).forget(&let_go);
    }

    /// Flag definitions users of `version` evaluate: the release's, with killed flags disabled.
    pub fn flags_for(&self, version: &str) -> Option<serde_json::Value> {
        let mut doc = self.releases.get(version)?.content.flags.clone()?;
        if let Some(flags) = doc.get_mut("flags").and_then(|f| f.as_object_mut()) {
            for (key, def) in flags.iter_mut() {
                if self.killed_flags.contains_key(key)
                    && let Some(obj) = def.as_object_mut()
                {
                    obj.insert("state".into(), serde_json::Value::String("DISABLED".into()));
                }
            }
        }
        Some(doc)
    }

    /// Every flag key defined by the releases users are on now.
    pub fn live_flag_keys(&self) -> std::collections::BTreeSet<String> {
        let mut versions: Vec<&str> = self.stable.iter().map(String::as_str).collect();
        if let Some(r) = self.active_rollout() {
            versions.push(&r.release);
        }
        versions
            .iter()
            .filter_map(|v| self.releases.get(*v)?.content.flags.as_ref()?.get("flags")?.as_object())
            .flat_map(|m| m.keys().cloned())
            .collect()
    }

    /// The world this workload should have now: which versions run and how traffic splits.
    /// The release whose processes serve `version`: the first release with the same artifact
    /// and configuration. A release that changes only flags runs on the processes already
    /// there, so a flag rollout starts nothing and stops nothing.
    pub fn runtime_of(&self, version: &str) -> String {
        self.release_index.runs_on.get(version).cloned().unwrap_or_else(|| version.to_string())
    }

    /// The newest release announced as a hotfix of `version` (its `hotfix_for`).
    pub fn hotfix_of(&self, version: &str) -> Option<&str> {
        self.release_index.hotfixes.get(version).map(String::as_str)
    }

    /// The world this workload should have now: which versions run and how traffic splits.
    /// The instance a redeploy replaces now: one at a time, and only while every other slot it
    /// replaces runs (a fresh instance that is still starting holds the next one back).
    pub fn replacing(&self) -> Option<&(String, u32)> {
        if self.recycle.iter().any(|k| !self.replicas.contains_key(k)) {
            return None;
        }
        self.recycle.iter().next()
    }

    /// The active rollout's migration, while the backup hook has yet to run for it: nothing of
    /// that release starts before the data is backed up.
    pub fn awaiting_backup(&self) -> Option<(&str, &str)> {
        self.spec.data.backup.as_ref()?;
        let r = self.active_rollout()?;
        if r.kind == RolloutKind::Rollback || r.status != RolloutStatus::Progressing || self.backups.contains_key(&r.id)
        {
            return None;
        }
        let m = self.releases.get(&r.release)?.content.migration.as_ref()?;
        Some((r.id.as_str(), m.id.as_str()))
    }

    /// The running drill a rollout is the rollout of, if it is.
    pub fn drill_of(&self, rollout_id: &str) -> Option<&crate::drill::Drill> {
        self.drills.iter().rev().find(|d| d.rollout_id == rollout_id && d.is_running()).map(|d| d.as_ref())
    }

    pub fn desired(&self) -> Desired {
        if self.deleted {
            return Desired::default();
        }
        let awaiting_backup = self.awaiting_backup().is_some();
        let replicas = self.spec.executor.replicas;
        let group = |name: &str, version: &str, weight_bp: u32| RouteGroup {
            name: name.into(),
            version: version.into(),
            weight_bp,
            runs_on: self.runtime_of(version),
            segment: None,
            shadow_bp: 0,
            fault: None,
        };
        let mut d = Desired::default();
        match self.active_rollout() {
            Some(r)
                if !awaiting_backup
                    && matches!(
                        r.status,
                        RolloutStatus::Progressing | RolloutStatus::Paused | RolloutStatus::Halted
                    ) =>
            {
                let w = r.target_weight_bp();
                d.routes.push(RouteGroup {
                    segment: r.current_phase().segment.clone(),
                    shadow_bp: r.current_phase().shadow_bp(),
                    fault: self.drill_of(&r.id).and_then(|d| d.fault.route_fault()),
                    ..group("canary", &r.release, w)
                });
                match &r.from {
                    Some(from) if from != &r.release => d.routes.push(group("stable", from, 10_000 - w)),
                    _ => d.routes[0].weight_bp = 10_000,
                }
            }
            Some(r) if r.status == RolloutStatus::Mitigating => {
                if let Some(from) = &r.from {
                    d.routes.push(group("stable", from, 10_000));
                }
            }
            _ => {
                if let Some(v) = &self.stable {
                    d.routes.push(group("stable", v, 10_000));
                }
            }
        }
        // Stable's processes first; each runtime once.
        for g in d.routes.iter().rev() {
            if !d.versions.iter().any(|(v, _)| *v == g.runs_on) {
                d.versions.push((g.runs_on.clone(), replicas));
            }
        }
        // Rings: the phase's ring runs the new version in place of as many stable instances,
        // so the fleet keeps its size and exposure is the share of instances updated.
        if self.spec.rollout.model == crate::spec::ExposureModel::Rings
            && let [canary, stable] = &d.routes[..]
            && canary.name == "canary"
            && canary.runs_on != stable.runs_on
        {
            let updated = ((canary.weight_bp as u64 * replicas as u64).div_ceil(10_000) as u32).clamp(1, replicas);
            for (v, n) in &mut d.versions {
                *n = if *v == canary.runs_on { updated } else { replicas - updated };
            }
        }
        // The old stack of a blue-green switch runs on, with no traffic, until retired (or
        // while a rollback to it is under way, when it is the rollout's own target).
        if let Some(w) = &self.warm
            && !d.routes.iter().any(|g| g.runs_on == w.version)
        {
            d.versions.push((w.version.clone(), replicas));
        }
        d
    }
}

/// The target world of a workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// (version, replicas), stable first.
    pub versions: Vec<(String, u32)>,
    /// Canary first, so raising its weight never moves a user out of it.
    pub routes: Vec<RouteGroup>,
}

impl World {
    /// A world whose workloads let nothing go, to fold the log again for what a projection
    /// no longer holds (an old rollout, incident, or a DORA window reaching back past it).
    pub fn keeping_everything() -> World {
        World { keeps_everything: true, ..World::default() }
    }

    /// Workload `name` as `events` (its whole log, in order) fold with every rollout kept:
    /// what its projection let go under `[history]`, read back.
    pub fn whole(name: &str, events: &[Event]) -> Option<std::sync::Arc<WorkloadState>> {
        let mut world = World::keeping_everything();
        for e in events.iter().filter(|e| e.workload == name) {
            world.apply(e);
        }
        world.snapshot(name)
    }

    pub fn workload(&self, name: &str) -> Option<&WorkloadState> {
        self.workloads.get(name).map(|ws| &**ws)
    }

    /// A snapshot of one workload, as cheap to take as an `Arc` clone.
    pub fn snapshot(&self, name: &str) -> Option<std::sync::Arc<WorkloadState>> {
        self.workloads.get(name).cloned()
    }

    /// Folds one event into the projections. Events must come in log order.
    pub fn apply(&mut self, e: &Event) {
        type Served = (Option<*const ringfence_traffic::table::RouteTable>, bool, String);
        let served = |w: &World| -> Option<Served> {
            let ws = w.workloads.get(&e.workload)?;
            Some((ws.published.as_ref().map(std::sync::Arc::as_ptr), ws.deleted, ws.spec_digest.clone()))
        };
        let before = served(self);
        self.fold(e);
        if served(self) != before {
            self.routes_changed += 1;
        }
    }

    fn fold(&mut self, e: &Event) {
        self.last_seq = e.seq;
        match &e.kind {
            EventKind::TokenCreated { token } => {
                self.access.tokens.insert(token.id.clone(), token.clone());
                return;
            }
            EventKind::TokenRevoked { id } => {
                if let Some(t) = self.access.tokens.get_mut(id) {
                    t.revoked_at.get_or_insert(e.at);
                }
                return;
            }
            EventKind::LineStopped { paused } => {
                self.line = Some(crate::governance::LineStop {
                    by: e.actor.clone(),
                    reason: e.reason.clone(),
                    at: e.at,
                    paused: paused.clone(),
                });
                return;
            }
            EventKind::LineRestarted => {
                self.line = None;
                return;
            }
            _ => {}
        }
        if let EventKind::SpecApplied { spec, digest } = &e.kind {
            match self.workloads.get_mut(&e.workload).map(std::sync::Arc::make_mut) {
                Some(ws) => {
                    ws.spec = (**spec).clone();
                    ws.spec_digest = digest.clone();
                    ws.deleted = false;
                    if !ws.specs.contains_key(digest) {
                        std::sync::Arc::make_mut(&mut ws.specs)
                            .insert(digest.clone(), std::sync::Arc::new((**spec).clone()));
                    }
                    // The channels may have changed: which updates are owed a delivery too.
                    crate::incident::refresh_all(ws, e.at);
                }
                None => {
                    self.workloads.insert(
                        e.workload.clone(),
                        std::sync::Arc::new(WorkloadState {
                            name: e.workload.clone(),
                            spec: (**spec).clone(),
                            spec_digest: digest.clone(),
                            releases: Default::default(),
                            release_order: Default::default(),
                            release_seqs: Default::default(),
                            releases_let_go: Default::default(),
                            stable: None,
                            lkg: Default::default(),
                            pin: None,
                            rollouts: Vec::new(),
                            replicas: BTreeMap::new(),
                            router: None,
                            published: None,
                            routes: None,
                            open_intents: BTreeMap::new(),
                            intents_total: 0,
                            crashes: Vec::new(),
                            start_failures: BTreeMap::new(),
                            alerts: BTreeMap::new(),
                            reports: Vec::new(),
                            killed_flags: BTreeMap::new(),
                            warm: None,
                            backups: Default::default(),
                            degraded_escalated: Default::default(),
                            recycle: Default::default(),
                            held: Default::default(),
                            revoked: Default::default(),
                            drills: Default::default(),
                            deleted: false,
                            specs: std::sync::Arc::new(BTreeMap::from([(
                                digest.clone(),
                                std::sync::Arc::new((**spec).clone()),
                            )])),
                            governance: Default::default(),
                            incidents: Default::default(),
                            follow_ups: Default::default(),
                            deliveries: Default::default(),
                            incidents_astir: Default::default(),
                            follow_ups_open: Default::default(),
                            release_index: Default::default(),
                            totals: Default::default(),
                            rollouts_started: 0,
                            forgotten: Default::default(),
                        }),
                    );
                }
            }
            return;
        }
        let keeps_everything = self.keeps_everything;
        let Some(ws) = self.workloads.get_mut(&e.workload).map(std::sync::Arc::make_mut) else {
            return;
        };
        let touched = crate::totals::Touched::by(&e.kind);
        let before = touched.parts(ws);
        if let Some(id) = e.kind.rollout_id()
            && let Some(r) = ws.rollout_mut(id)
        {
            r.last_seq = e.seq;
        }
        match &e.kind {
            EventKind::SpecApplied { .. } => unreachable!("handled above"),
            EventKind::ReleaseCreated { release } => {
                std::sync::Arc::make_mut(&mut ws.release_index).add(&ws.releases, release, false);
                std::sync::Arc::make_mut(&mut ws.release_order).push(release.version.clone());
                std::sync::Arc::make_mut(&mut ws.release_seqs).insert(release.version.clone(), e.seq);
                std::sync::Arc::make_mut(&mut ws.releases)
                    .insert(release.version.clone(), std::sync::Arc::new((**release).clone()));
            }
            EventKind::ReleaseRestored { release } => {
                let kept = ws.releases_let_go.get(&release.version).filter(|s| s.digest == release.digest);
                if let Some(seq) = kept.map(|s| s.seq) {
                    std::sync::Arc::make_mut(&mut ws.releases_let_go).remove(&release.version);
                    std::sync::Arc::make_mut(&mut ws.release_seqs).insert(release.version.clone(), seq);
                    std::sync::Arc::make_mut(&mut ws.release_index).add(&ws.releases, release, true);
                    std::sync::Arc::make_mut(&mut ws.releases)
                        .insert(release.version.clone(), std::sync::Arc::new((**release).clone()));
                }
            }
            EventKind::RolloutStarted { rollout_id, kind, release, from, phases, spec_digest } => {
                ws.rollouts_started += 1;
                ws.rollouts.push(std::sync::Arc::new(rollout::started(
                    rollout_id,
                    &e.workload,
                    *kind,
                    release,
                    from.as_deref(),
                    phases,
                    spec_digest,
                    e.at,
                )));
                let starter =
                    if *kind == RolloutKind::Rollback { None } else { crate::governance::starter(ws, release) };
                // The plan of one of the last few rollouts (a rollback's phases may come between
                // two deploys'), shared rather than copied.
                let n = ws.rollouts.len();
                let shared_plan = ws.rollouts[n.saturating_sub(SHARED_PLAN_LOOKBACK + 1)..n - 1]
                    .iter()
                    .rev()
                    .map(|r| &r.phases)
                    .find(|p| ***p == **phases)
                    .cloned();
                if let Some(r) = ws.rollouts.last_mut().map(std::sync::Arc::make_mut) {
                    if let Some(plan) = shared_plan {
                        r.phases = plan;
                    }
                    r.started_by = starter.unwrap_or_else(|| e.actor.clone());
                    r.reason = e.reason.clone();
                    (r.first_seq, r.last_seq) = (e.seq, e.seq);
                }
            }
            EventKind::LkgUpdated { version, rollout_id } => {
                let digest = ws.rollout(rollout_id).map(|r| r.spec_digest.clone()).unwrap_or_default();
                ws.stable = Some(version.clone());
                // Switched back to the warm stack: it is the stable one now, not a spare.
                if ws.warm.as_ref().is_some_and(|w| w.version == *version) {
                    ws.warm = None;
                }
                let rollback = ws.rollout(rollout_id).filter(|r| r.kind == RolloutKind::Rollback);
                let left = rollback.and_then(|r| r.from.clone());
                // A rollback pins the version it returned to, with the person's reason (not the
                // controller's, which only completed it).
                ws.pin = rollback.map(|r| Pin {
                    version: version.clone(),
                    rollout_id: rollout_id.clone(),
                    reason: format!("rolled back by {}: {}", r.started_by, r.reason),
                    at: e.at,
                });
                std::sync::Arc::make_mut(&mut ws.lkg).push(std::sync::Arc::new(LkgEntry {
                    version: version.clone(),
                    rollout_id: rollout_id.clone(),
                    at: e.at,
                    spec_digest: digest,
                    left,
                }));
            }
            EventKind::ActionIntended { op_id, action } => {
                ws.open_intents.insert(op_id.clone(), action.clone());
                ws.intents_total += 1;
            }
            EventKind::ActionSucceeded { op_id, .. } | EventKind::ActionFailed { op_id, .. } => {
                match (&e.kind, ws.open_intents.remove(op_id)) {
                    (EventKind::ActionSucceeded { .. }, Some(Action::ApplyRoutes { generation, groups })) => {
                        ws.routes = Some((generation, groups));
                    }
                    (EventKind::ActionFailed { error, .. }, Some(Action::StartReplica { version, .. })) => {
                        ws.start_failures.insert(version, error.clone());
                    }
                    _ => {}
                }
            }
            EventKind::ReplicaStarted { version, replica, instance, endpoint, adopted } => {
                ws.start_failures.remove(version);
                if !adopted {
                    ws.recycle.remove(&(version.clone(), *replica));
                }
                ws.replicas.insert(
                    (version.clone(), *replica),
                    ReplicaRecord {
                        version: version.clone(),
                        replica: *replica,
                        instance: instance.clone(),
                        endpoint: endpoint.clone(),
                        started_at: e.at,
                    },
                );
            }
            EventKind::ReplicaStopped { version, replica, instance }
            | EventKind::ReplicaExited { version, replica, instance, .. } => {
                if let EventKind::ReplicaExited { status, .. } = &e.kind {
                    ws.crashes.push(Crash {
                        version: version.clone(),
                        replica: *replica,
                        instance: instance.clone(),
                        status: status.clone(),
                        at: e.at,
                    });
                    if ws.crashes.len() > 100 {
                        ws.crashes.remove(0);
                    }
                }
                if ws.replicas.get(&(version.clone(), *replica)).is_some_and(|r| r.instance == *instance) {
                    ws.replicas.remove(&(version.clone(), *replica));
                }
            }
            EventKind::FlagKilled { flag } => {
                ws.killed_flags
                    .insert(flag.clone(), KilledFlag { actor: e.actor.clone(), reason: e.reason.clone(), at: e.at });
            }
            EventKind::FlagRestored { flag } => {
                ws.killed_flags.remove(flag);
            }
            EventKind::AlertReceived { fingerprint, alertname, status, labels, summary } => {
                if status == "firing" {
                    let since = ws.alerts.get(fingerprint).map(|a| a.since).unwrap_or(e.at);
                    ws.alerts.insert(
                        fingerprint.clone(),
                        FiringAlert {
                            alertname: alertname.clone(),
                            labels: labels.clone(),
                            summary: summary.clone(),
                            since,
                        },
                    );
                } else {
                    ws.alerts.remove(fingerprint);
                }
            }
            EventKind::UserReported { user, group, version, message } => {
                ws.reports.push(UserReport {
                    user: user.clone(),
                    group: group.clone(),
                    version: version.clone(),
                    message: message.clone(),
                    at: e.at,
                });
                if ws.reports.len() > 1000 {
                    ws.reports.remove(0);
                }
            }
            EventKind::WorkloadDeleted => ws.deleted = true,
            EventKind::RouterStopped { pid } => {
                if ws.router.as_ref().is_some_and(|r| r.pid == *pid) {
                    ws.router = None;
                }
            }
            EventKind::ReleaseRevoked { version } => {
                std::sync::Arc::make_mut(&mut ws.revoked)
                    .insert(version.clone(), Revocation { actor: e.actor.clone(), reason: e.reason.clone(), at: e.at });
                std::sync::Arc::make_mut(&mut ws.held).remove(version);
            }
            EventKind::ReleaseHoldCleared { version } => {
                std::sync::Arc::make_mut(&mut ws.held).remove(version);
            }
            EventKind::StackRetired { version, .. } => {
                if ws.warm.as_ref().is_some_and(|w| w.version == *version) {
                    ws.warm = None;
                }
            }
            EventKind::RedeployRequested { version } => {
                let runtime = ws.runtime_of(version);
                let slots: Vec<(String, u32)> = ws.replicas.keys().filter(|(v, _)| *v == runtime).cloned().collect();
                ws.recycle.extend(slots);
            }
            EventKind::DegradedTooLong { rollout_id, .. } => {
                ws.degraded_escalated.insert(rollout_id.clone());
            }
            EventKind::BackupTaken { rollout_id, reference, .. } => {
                std::sync::Arc::make_mut(&mut ws.backups).insert(rollout_id.clone(), reference.clone());
            }
            EventKind::RouterStarted { pid, listen, admin, .. } => {
                ws.router = Some(RouterRecord { pid: *pid, listen: listen.clone(), admin: admin.clone() });
            }
            EventKind::RoutesPublished { table } => ws.published = Some(std::sync::Arc::new(table.clone())),
            kind => {
                if let Some(id) = kind.rollout_id()
                    && let Some(i) = ws.rollout_index(id)
                {
                    let r = std::sync::Arc::make_mut(&mut ws.rollouts[i]);
                    rollout::apply(r, kind, e.at);
                    // A blue-green switch, or a canary with a watch window, leaves the old stack
                    // warm for a while.
                    if let EventKind::RolloutCompleted { .. } = kind
                        && ws.spec.rollout.warm_for().as_ms() > 0
                        && r.kind == RolloutKind::Deploy
                        && let Some(from) = r.from.clone().filter(|f| *f != r.release)
                    {
                        ws.warm = Some(WarmStack {
                            version: from,
                            rollout_id: id.to_string(),
                            until: e.at.plus_ms(ws.spec.rollout.warm_for().as_ms()),
                        });
                    }
                    // A drill release is never deployed again anyway: no hold to clear.
                    if let EventKind::MitigationCompleted { .. } = kind
                        && r.kind != RolloutKind::Drill
                        && r.decision.as_ref().is_some_and(|d| d.verdict.is_some())
                    {
                        std::sync::Arc::make_mut(&mut ws.held).insert(
                            r.release.clone(),
                            ReleaseHold {
                                rollout_id: id.to_string(),
                                reason: r.decision.as_ref().map(|d| d.summary.clone()).unwrap_or_default(),
                                at: e.at,
                            },
                        );
                    }
                    if let EventKind::MitigationCompleted { .. } = kind
                        && let Some(from) = r.from.clone()
                    {
                        ws.pin = Some(Pin {
                            version: from,
                            rollout_id: id.to_string(),
                            reason: r.decision.as_ref().map(|d| d.summary.clone()).unwrap_or_default(),
                            at: e.at,
                        });
                    }
                    // An abort returns to the stable version too: the pin says so, not an
                    // older failure's reason.
                    if let EventKind::RolloutAborted { .. } = kind
                        && let Some(from) = r.from.clone()
                    {
                        ws.pin = Some(Pin {
                            version: from,
                            rollout_id: id.to_string(),
                            reason: format!("rollout {id} aborted by {}: {}", e.actor, e.reason),
                            at: e.at,
                        });
                    }
                }
            }
        }
        crate::governance::apply(ws, &e.actor, &e.reason, &e.kind, e.at);
        crate::incident::apply(ws, &e.actor, &e.reason, &e.kind, e.at);
        crate::drill::apply(ws, &e.kind, e.at);
        if matches!(
            e.kind,
            EventKind::RolloutCompleted { .. }
                | EventKind::MitigationCompleted { .. }
                | EventKind::RolloutAborted { .. }
        ) {
            ws.drop_old_detail();
            if !keeps_everything {
                ws.forget_old_rollouts(e.at);
            }
        }
        let after = touched.parts(ws);
        ws.totals.shift(before, after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;

    fn ev(seq: u64, kind: EventKind) -> Event {
        NewEvent { at: Timestamp(seq as i64), actor: "t".into(), reason: String::new(), workload: "w".into(), kind }
            .numbered(seq)
    }

    fn world() -> World {
        let spec = crate::spec::parse("x.toml", crate::spec::EXAMPLE).expect("example parses");
        let mut w = World::default();
        w.apply(&ev(1, EventKind::SpecApplied { spec: Box::new(spec), digest: "d".into() }));
        w
    }

    #[test]
    fn only_what_the_router_tier_serves_counts_as_a_change_of_the_routes() {
        let mut w = world();
        assert_eq!(w.routes_changed, 1, "a workload added");
        let started = EventKind::ReplicaStarted {
            version: "v1".into(),
            replica: 0,
            instance: "i".into(),
            endpoint: "127.0.0.1:1".into(),
            adopted: false,
        };
        w.apply(&ev(2, started));
        assert_eq!(w.routes_changed, 1, "a replica is not a route until a table names it");
        let table: ringfence_traffic::table::RouteTable =
            serde_json::from_value(serde_json::json!({"workload": "w", "generation": 1})).unwrap();
        w.apply(&ev(3, EventKind::RoutesPublished { table: table.clone() }));
        assert_eq!(w.routes_changed, 2, "a table published");
        w.apply(&ev(4, EventKind::RoutesPublished { table }));
        assert_eq!(w.routes_changed, 3, "published again: another event, counted (the pass finds it equal)");
        let spec = crate::spec::parse("x.toml", crate::spec::EXAMPLE).expect("example parses");
        w.apply(&ev(5, EventKind::SpecApplied { spec: Box::new(spec.clone()), digest: "d".into() }));
        assert_eq!(w.routes_changed, 3, "the same spec again");
        w.apply(&ev(6, EventKind::SpecApplied { spec: Box::new(spec), digest: "e".into() }));
        assert_eq!(w.routes_changed, 4, "another spec");
        w.apply(&ev(7, EventKind::WorkloadDeleted));
        assert_eq!(w.routes_changed, 5, "deleted");
    }

    #[test]
    fn a_failed_start_is_remembered_until_a_replica_of_that_version_starts() {
        let mut w = world();
        let start = Action::StartReplica { version: "v2".into(), replica: 0 };
        w.apply(&ev(2, EventKind::ActionIntended { op_id: "o1".into(), action: start }));
        w.apply(&ev(3, EventKind::ActionFailed { op_id: "o1".into(), error: "exit status 3".into() }));
        let ws = w.workload("w").unwrap();
        assert_eq!(ws.start_failures.get("v2").map(String::as_str), Some("exit status 3"));
        assert!(ws.open_intents.is_empty());
        w.apply(&ev(
            4,
            EventKind::ReplicaStarted {
                version: "v2".into(),
                replica: 0,
                instance: "proc:7:1".into(),
                endpoint: "127.0.0.1:9".into(),
                adopted: false,
            },
        ));
        assert!(w.workload("w").unwrap().start_failures.is_empty());
    }

    #[test]
    fn an_unasked_exit_is_a_crash_and_a_stop_is_not() {
        let mut w = world();
        for (seq, replica) in [(2, 0), (3, 1)] {
            w.apply(&ev(
                seq,
                EventKind::ReplicaStarted {
                    version: "v2".into(),
                    replica,
                    instance: format!("proc:{}:1", 7 + replica),
                    endpoint: "127.0.0.1:9".into(),
                    adopted: false,
                },
            ));
        }
        let exited = |replica: u32, instance: &str| EventKind::ReplicaExited {
            version: "v2".into(),
            replica,
            instance: instance.into(),
            status: "exit 4".into(),
        };
        // An exit of an instance that no longer holds the slot changes nothing.
        w.apply(&ev(4, exited(0, "proc:99:1")));
        assert_eq!(w.workload("w").unwrap().replicas.len(), 2);
        w.apply(&ev(5, exited(0, "proc:7:1")));
        w.apply(&ev(6, EventKind::ReplicaStopped { version: "v2".into(), replica: 1, instance: "proc:8:1".into() }));
        let ws = w.workload("w").unwrap();
        assert_eq!(ws.crashes.len(), 2);
        assert_eq!((ws.crashes[1].instance.as_str(), ws.crashes[1].status.as_str()), ("proc:7:1", "exit 4"));
        assert!(ws.replicas.is_empty());
    }

    #[test]
    fn a_blue_green_switch_keeps_the_old_stack_running_until_it_is_retired() {
        let text = crate::spec::EXAMPLE.replacen(
            "[rollout]\n",
            "[rollout]\nmodel = \"blue_green\"\nkeep_old_for = \"5m\"\n",
            1,
        );
        let phases = "[[rollout.phases]]\nname = \"preview\"\nweight = 0\nbake = \"1m\"\n\n[[rollout.phases]]\nname = \"switch\"\nweight = 100\nbake = \"5m\"\n";
        let start = text.find("[[rollout.phases]]").unwrap();
        let end = text.find("[health]").unwrap();
        let text = format!("{}{phases}\n{}", &text[..start], &text[end..]);
        let spec = crate::spec::parse("bg.toml", &text).expect("a blue-green spec");
        assert!(spec.rollout.phases[0].is_dark());
        let mut w = World::default();
        w.apply(&ev(1, EventKind::SpecApplied { spec: Box::new(spec.clone()), digest: "d".into() }));
        let started = |seq, id: &str, release: &str, from: Option<&str>| {
            ev(
                seq,
                EventKind::RolloutStarted {
                    rollout_id: id.into(),
                    kind: if from.is_some() { RolloutKind::Deploy } else { RolloutKind::Initial },
                    release: release.into(),
                    from: from.map(String::from),
                    phases: spec.rollout.phases.clone(),
                    spec_digest: "d".into(),
                },
            )
        };
        w.apply(&started(2, "w-1", "v1", None));
        w.apply(&ev(3, EventKind::RolloutCompleted { rollout_id: "w-1".into() }));
        w.apply(&ev(4, EventKind::LkgUpdated { version: "v1".into(), rollout_id: "w-1".into() }));
        assert_eq!(w.workload("w").unwrap().warm, None, "a first deploy leaves nothing warm");
        w.apply(&started(5, "w-2", "v2", Some("v1")));
        w.apply(&ev(6, EventKind::RolloutCompleted { rollout_id: "w-2".into() }));
        w.apply(&ev(7, EventKind::LkgUpdated { version: "v2".into(), rollout_id: "w-2".into() }));
        let ws = w.workload("w").unwrap();
        let warm = ws.warm.clone().expect("v1 kept warm");
        assert_eq!((warm.version.as_str(), warm.until), ("v1", Timestamp(6 + 300_000)));
        let d = ws.desired();
        assert_eq!(d.versions, vec![("v2".to_string(), 2), ("v1".to_string(), 2)], "v1 runs on");
        assert!(d.routes.iter().all(|g| g.version == "v2"), "with no traffic: {d:?}");
        w.apply(&ev(8, EventKind::StackRetired { version: "v1".into(), rollout_id: "w-2".into() }));
        let ws = w.workload("w").unwrap();
        assert_eq!((ws.warm.clone(), ws.desired().versions.len()), (None, 1));
    }
    #[test]
    fn rings_update_instances_in_place_and_the_fleet_keeps_its_size() {
        let text = crate::spec::EXAMPLE.replacen("[rollout]\n", "[rollout]\nmodel = \"rings\"\n", 1).replacen(
            "replicas = 2",
            "replicas = 4",
            1,
        );
        let phases = "[[rollout.phases]]\nname = \"ring0\"\nweight = 10\nbake = \"1m\"\n\n[[rollout.phases]]\nname = \"ring1\"\nweight = 50\nbake = \"1m\"\n\n[[rollout.phases]]\nname = \"ring2\"\nweight = 100\nbake = \"1m\"\n";
        let start = text.find("[[rollout.phases]]").unwrap();
        let end = text.find("[health]").unwrap();
        let text = format!("{}{phases}\n{}", &text[..start], &text[end..]);
        let spec = crate::spec::parse("rings.toml", &text).expect("a rings spec");
        // 10% of 4 instances is one instance: the phase carries 25%, what one instance serves.
        let phases = spec.rollout.phases_for(4);
        assert_eq!(phases.iter().map(|p| p.weight_bp()).collect::<Vec<_>>(), [2500, 5000, 10_000]);
        let mut w = World::default();
        w.apply(&ev(1, EventKind::SpecApplied { spec: Box::new(spec.clone()), digest: "d".into() }));
        w.apply(&ev(
            2,
            EventKind::RolloutStarted {
                rollout_id: "w-1".into(),
                kind: RolloutKind::Initial,
                release: "v1".into(),
                from: None,
                phases: vec![spec.rollout.phases[2].clone()],
                spec_digest: "d".into(),
            },
        ));
        w.apply(&ev(3, EventKind::RolloutCompleted { rollout_id: "w-1".into() }));
        w.apply(&ev(3, EventKind::LkgUpdated { version: "v1".into(), rollout_id: "w-1".into() }));
        assert_eq!(w.workload("w").unwrap().desired().versions, vec![("v1".to_string(), 4)]);
        w.apply(&ev(
            4,
            EventKind::RolloutStarted {
                rollout_id: "w-2".into(),
                kind: RolloutKind::Deploy,
                release: "v2".into(),
                from: Some("v1".into()),
                phases,
                spec_digest: "d".into(),
            },
        ));
        let d = w.workload("w").unwrap().desired();
        assert_eq!(d.versions, vec![("v1".to_string(), 3), ("v2".to_string(), 1)], "one instance updated");
        assert_eq!(d.routes.iter().map(|g| g.weight_bp).collect::<Vec<_>>(), [2500, 7500]);
        w.apply(&ev(5, EventKind::PhaseStarted { rollout_id: "w-2".into(), phase: 1 }));
        let d = w.workload("w").unwrap().desired();
        assert_eq!(d.versions, vec![("v1".to_string(), 2), ("v2".to_string(), 2)]);
        w.apply(&ev(6, EventKind::PhaseStarted { rollout_id: "w-2".into(), phase: 2 }));
        let d = w.workload("w").unwrap().desired();
        assert_eq!(d.versions, vec![("v1".to_string(), 0), ("v2".to_string(), 4)], "every instance updated");
        w.apply(&ev(7, EventKind::RolloutCompleted { rollout_id: "w-2".into() }));
        w.apply(&ev(8, EventKind::LkgUpdated { version: "v2".into(), rollout_id: "w-2".into() }));
        assert_eq!(w.workload("w").unwrap().desired().versions, vec![("v2".to_string(), 4)]);
    }

    /// The index answers what a walk over every release in order answers: the first release
    /// with the same artifact and configuration, and the newest hotfix announced.
    #[test]
    fn a_releases_processes_and_hotfix_are_what_a_walk_over_the_releases_finds() {
        let mut w = world();
        let mut made: Vec<Release> = Vec::new();
        for (i, (artifact, config, flags, fixes)) in [
            ("app@1", "", false, None),
            ("app@1", "", true, None),
            ("app@2", "", false, Some("v1")),
            ("app@1", "LEVEL=debug", false, None),
            ("app@2", "", true, Some("v3")),
            ("app@1", "LEVEL=debug", true, Some("v1")),
            ("app@1", "", true, None),
        ]
        .into_iter()
        .enumerate()
        {
            let mut content = crate::release::ReleaseContent { artifact: artifact.into(), ..Default::default() };
            if let Some((k, v)) = config.split_once('=') {
                content.config.insert(k.into(), v.into());
            }
            content.flags = flags.then(|| serde_json::json!({"flags": {format!("f{i}"): {}}}));
            content.hotfix_for = fixes.map(String::from);
            let release = Release {
                workload: "w".into(),
                version: format!("v{}", i + 1),
                digest: content.digest(),
                content,
                created_at: Timestamp(0),
                created_by: "t".into(),
            };
            w.apply(&ev(10 + i as u64, EventKind::ReleaseCreated { release: Box::new(release.clone()) }));
            made.push(release);
        }
        let ws = w.workload("w").unwrap();
        for r in &made {
            let first = made
                .iter()
                .find(|f| f.content.artifact == r.content.artifact && f.content.config == r.content.config)
                .unwrap();
            assert_eq!(ws.runtime_of(&r.version), first.version, "the processes of {}", r.version);
            let newest_fix = made.iter().rev().find(|f| f.content.hotfix_for.as_deref() == Some(r.version.as_str()));
            assert_eq!(ws.hotfix_of(&r.version), newest_fix.map(|f| f.version.as_str()), "the hotfix of {}", r.version);
        }
        assert_eq!(ws.runtime_of("v7"), "v1", "flags only: on the first release's processes");
        assert_eq!(ws.hotfix_of("v1"), Some("v6"), "the newest of two hotfixes");
        assert_eq!(ws.runtime_of("v9"), "v9", "not a release: its own");
    }
}
