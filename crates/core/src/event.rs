//! Events: the only record of what happened. Every projection is a fold over them.

use serde::{Deserialize, Serialize};

use crate::decision::Decision;
use crate::health::{PhaseWindow, Traffic, Verdict};
use crate::release::Release;
use crate::rollout::RolloutKind;
use crate::spec::{PhaseSpec, WorkloadSpec};
use crate::time::Timestamp;

/// An event as stored: numbered, timed, attributed and explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    pub at: Timestamp,
    /// Who caused it: a person or token for commands, `controller` for automation.
    pub actor: String,
    /// Why, in words.
    pub reason: String,
    pub workload: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// An event before the log numbers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub at: Timestamp,
    pub actor: String,
    pub reason: String,
    pub workload: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl NewEvent {
    pub fn numbered(self, seq: u64) -> Event {
        Event { seq, at: self.at, actor: self.actor, reason: self.reason, workload: self.workload, kind: self.kind }
    }
}

/// Router counters at the start of a bake, so a restarted controller keeps the same window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BakeBaseline {
    /// The router process whose counters these are; other instances' counters start over.
    pub router_instance: String,
    pub canary: Traffic,
    pub stable: Option<Traffic>,
    /// Total request rate through the router before the rollout began, for the usage signal.
    #[serde(default)]
    pub usage_rps_before: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteGroup {
    /// `canary` or `stable`.
    pub name: String,
    pub version: String,
    pub weight_bp: u32,
    /// The version whose processes serve this group (see `WorkloadState::runtime_of`).
    #[serde(default)]
    pub runs_on: String,
    /// Users the group takes whatever their bucket (the current phase's ring of chosen users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<ringfence_traffic::Segment>,
    /// Share of requests copied to the group (shadow traffic), in basis points.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shadow_bp: u32,
    /// A drill's fault, carried out by the router on this group's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<ringfence_traffic::table::GroupFault>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the controller does to the world. Each is idempotent: doing it again after it is
/// done changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    StartRouter,
    StartReplica {
        version: String,
        replica: u32,
    },
    StopReplica {
        version: String,
        replica: u32,
    },
    /// The command executor's `scale` hook: a version resized to `replicas`.
    Scale {
        version: String,
        replicas: u32,
    },
    /// The `[data] backup` hook, before a rollout's migration.
    Backup {
        rollout_id: String,
        migration: String,
    },
    ApplyRoutes {
        generation: u64,
        groups: Vec<RouteGroup>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    // --- The workload and its releases -------------------------------------------------------
    SpecApplied {
        spec: Box<WorkloadSpec>,
        digest: String,
    },
    ReleaseCreated {
        release: Box<Release>,
    },
    /// A release `[history]` let go, read back from its `release_created` event for a command
    /// that needs its content (a deploy of it, a rollback to it): the projection holds it
    /// again. Checked against what was kept of it (its digest).
    ReleaseRestored {
        release: Box<Release>,
    },
    // --- A rollout moving through its phases (the core's decisions) -------------------------
    RolloutStarted {
        rollout_id: String,
        kind: RolloutKind,
        release: String,
        from: Option<String>,
        phases: Vec<PhaseSpec>,
        spec_digest: String,
    },
    BakeStarted {
        rollout_id: String,
        phase: usize,
        baseline: Option<BakeBaseline>,
    },
    /// The router restarted during a bake (its counters started over): the analysis window
    /// starts again from the new router's counters. The bake time already served counts.
    BaselineReset {
        rollout_id: String,
        phase: usize,
        baseline: BakeBaseline,
    },
    PhasePassed {
        rollout_id: String,
        phase: usize,
        verdict: Box<Verdict>,
        /// Passed on a person's `promote` rather than on its own gates.
        by_hand: bool,
        /// The traffic of both versions the verdict was reached on, when the phase compared
        /// them: later phases of the rollout carry it forward as evidence.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<Box<PhaseWindow>>,
    },
    PhaseStarted {
        rollout_id: String,
        phase: usize,
    },
    PhaseHeld {
        rollout_id: String,
        phase: usize,
        verdict: Option<Box<Verdict>>,
    },
    Escalated {
        rollout_id: String,
        phase: usize,
    },
    RolloutCompleted {
        rollout_id: String,
    },
    LkgUpdated {
        version: String,
        rollout_id: String,
    },
    RolloutHalted {
        rollout_id: String,
        decision: Box<Decision>,
    },
    MitigationCompleted {
        rollout_id: String,
        verified: bool,
        detail: String,
    },
    /// The router's traffic per version over the last intervals of a rollout (and a few
    /// minutes after its mitigation): what its charts and its postmortem's draw. Recorded in
    /// batches, so the log grows by one event every couple of minutes of a rollout.
    SignalsRecorded {
        rollout_id: String,
        samples: Vec<crate::health::SignalSample>,
    },
    // --- People acting on a rollout -------------------------------------------------------------
    RolloutPaused {
        rollout_id: String,
    },
    RolloutResumed {
        rollout_id: String,
    },
    PromoteRequested {
        rollout_id: String,
    },
    RolloutAborted {
        rollout_id: String,
    },
    // --- The controller's intents and their outcomes (every action idempotent) ---------------
    ActionIntended {
        op_id: String,
        #[serde(flatten)]
        action: Action,
    },
    ActionSucceeded {
        op_id: String,
        detail: String,
    },
    ActionFailed {
        op_id: String,
        error: String,
    },
    // --- The processes of the world: replicas and the router ----------------------------------
    /// An instance of a release runs, started now or found running (adopted). `instance` is
    /// the executor's id for it, unique across workloads and over time (the process executor:
    /// `proc:<pid>:<start time>`); `endpoint` is where it serves (`host:port`).
    ReplicaStarted {
        version: String,
        replica: u32,
        instance: String,
        endpoint: String,
        /// Found running at restart rather than started now.
        adopted: bool,
    },
    ReplicaStopped {
        version: String,
        replica: u32,
        instance: String,
    },
    ReplicaExited {
        version: String,
        replica: u32,
        instance: String,
        status: String,
    },
    /// A person deleted the workload: its instances, routes and router are stopped; its history
    /// stays in the log. Applying its spec again brings it back.
    WorkloadDeleted,
    /// The workload's router was stopped on purpose (its workload was deleted).
    RouterStopped {
        pid: u32,
    },
    /// A person revoked a release: it never runs again.
    ReleaseRevoked {
        version: String,
    },
    /// A person cleared the hold a mitigation put on a release (the reason says why it may be
    /// deployed again).
    ReleaseHoldCleared {
        version: String,
    },
    /// Every instance of `version` is replaced by a fresh one, one at a time (the last known
    /// good redeployed onto new instances: for when its instances fail, not its code).
    RedeployRequested {
        version: String,
    },
    /// An approver approved the bypass a halted rollout offered: its guard flags are off (the
    /// `flag_killed` events beside this one) and the rollout goes on from its current phase.
    BypassApproved {
        rollout_id: String,
        approver: String,
        flags: Vec<String>,
        /// Why running without the feature is acceptable (not `reason`: the envelope's).
        justification: String,
    },
    /// A bypass's flags have been off longer than `mitigation.max_degraded`: the release runs
    /// without its feature, and someone must fix it or restore the flags.
    DegradedTooLong {
        rollout_id: String,
        flags: Vec<String>,
    },
    /// The backup hook ran before the rollout's migration: where the backup is, or how to
    /// restore it, as the hook said.
    BackupTaken {
        rollout_id: String,
        migration: String,
        reference: String,
    },
    /// Blue-green: the old stack, kept warm after the switch so a rollback is a switch back,
    /// is retired (its time ran out, or a new rollout began).
    StackRetired {
        version: String,
        rollout_id: String,
    },
    /// The router served another table than the one installed (changed by someone else: a
    /// stolen admin secret, a person by hand): the controller installs the desired one again.
    RoutesDrifted {
        expected_generation: u64,
        found_generation: u64,
        /// What differed, in words.
        detail: String,
    },
    RouterStarted {
        pid: u32,
        listen: String,
        admin: String,
        adopted: bool,
    },
    /// The table the router tier serves for the workload (`kind = "tier"`): the routers fetch
    /// it from the API of any server reading this log. Without the OFREP token digests, which
    /// the serving server adds from the spec's secrets.
    RoutesPublished {
        table: ringfence_traffic::table::RouteTable,
    },
    // --- Signals from outside and the phase's own tests ----------------------------------------
    /// From Alertmanager's webhook: an alert concerning the workload fired or resolved.
    AlertReceived {
        fingerprint: String,
        alertname: String,
        /// `firing` or `resolved`.
        status: String,
        labels: std::collections::BTreeMap<String, String>,
        summary: String,
    },
    /// A user reported a problem; mapped to the rollout group and version that served them.
    UserReported {
        user: String,
        group: Option<String>,
        version: Option<String>,
        message: String,
    },
    /// A smoke test ran against the newly exposed version at the start of a phase.
    SmokeTestRan {
        rollout_id: String,
        phase: usize,
        name: String,
        version: String,
        passed: bool,
        detail: String,
    },
    // --- Feature flags -----------------------------------------------------------------------------
    /// Kill switch: the flag is turned off for every user, at once, whatever release serves them.
    FlagKilled {
        flag: String,
    },
    /// The kill switch is released: the flag follows its release's definition again.
    FlagRestored {
        flag: String,
    },
    // --- Governance ----------------------------------------------------------------------------
    /// A deployment that may not start yet: it waits for approvals or a deployment window
    /// (`waiting_for` says which), and starts by itself once nothing is missing.
    DeployQueued {
        version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emergency: Option<crate::governance::Emergency>,
        /// Approvals it needs before it starts.
        approvals_needed: u32,
        waiting_for: Vec<String>,
    },
    /// A queued deployment that will not start: rejected, void (its approvals expired), or
    /// replaced by another.
    DeployDropped {
        version: String,
        why: String,
    },
    /// A person approved a queued deployment (no `rollout_id`), a rollout's current phase, or,
    /// after an emergency deployment, the approval it skipped (`owed`).
    ApprovalGiven {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollout_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phase: Option<usize>,
        approver: String,
        comment: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        emergency: bool,
    },
    /// A person with the approver role rejected a queued deployment or a rollout's gate: the
    /// gate fails.
    ApprovalRejected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollout_id: Option<String>,
        approver: String,
        comment: String,
    },
    /// The rollout that just started is an emergency deployment: bake times shortened, the
    /// gates it skips owed out of band.
    EmergencyDeclared {
        rollout_id: String,
        emergency: crate::governance::Emergency,
        /// The gates it skipped, which must pass out of band by `due`.
        skipped: Vec<String>,
        due: Timestamp,
    },
    /// A gate an emergency deployment skipped passed or failed out of band, or is overdue.
    OwedGateSettled {
        version: String,
        gate: String,
        outcome: crate::governance::OwedOutcome,
        detail: String,
    },
    /// A predeployment check about a release: code review, security scan, compliance, tests.
    AttestationAdded {
        version: String,
        attestation: crate::governance::Attestation,
    },
    // --- Incidents -------------------------------------------------------------------------------
    /// A person took the incident a failed rollout opened (its id is the rollout's).
    IncidentAcknowledged {
        incident: String,
    },
    /// The incident is over: by a person once its mitigation was verified, or by the controller
    /// when health held for `[incident] confirm_after`.
    IncidentResolved {
        incident: String,
    },
    /// A status update of an incident, for each audience: on every change of its state, then
    /// on the cadence `[incident] update_every` sets for its severity while it is open, each
    /// naming the time of the next.
    IncidentUpdated {
        incident: String,
        state: crate::incident::IncidentState,
        /// For stakeholders: what is known, the evidence, what is done, the next update.
        stakeholders: String,
        /// For users: plain words, no internals.
        users: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_at: Option<Timestamp>,
    },
    /// An incident update was delivered to a channel (`update`: its index in the incident's
    /// updates), after `attempts` tries.
    NotificationDelivered {
        channel: String,
        incident: String,
        update: usize,
        attempts: u32,
    },
    /// A delivery failed; it is tried again after a backoff.
    NotificationFailed {
        channel: String,
        incident: String,
        update: usize,
        error: String,
    },
    /// A follow-up item of an incident's postmortem (an improvement for the backlog).
    FollowUpCreated {
        id: String,
        incident: String,
        title: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        owner: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due: Option<Timestamp>,
    },
    FollowUpAssigned {
        id: String,
        owner: String,
    },
    FollowUpClosed {
        id: String,
    },
    /// An overdue follow-up item brought up again on the stakeholder channels: as soon as it is
    /// overdue, then every `[incident] remind_every` until it is closed.
    FollowUpReminded {
        id: String,
        text: String,
    },
    /// A follow-up's message reached a channel: reminder number `message`, or on an issue
    /// tracker the item itself (`message` 0, `reference` the tracker's link or id for it).
    FollowUpSent {
        id: String,
        channel: String,
        message: usize,
        attempts: u32,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reference: String,
    },
    /// A follow-up's message did not reach a channel; it is tried again after a backoff.
    FollowUpSendFailed {
        id: String,
        channel: String,
        message: usize,
        error: String,
    },
    // --- Stop the line (events of no workload) --------------------------------------------------
    /// Every running rollout paused and no new one started, in every workload, until lifted.
    LineStopped {
        /// (workload, rollout id) of the rollouts it pauses; the restart resumes them.
        paused: Vec<(String, String)>,
    },
    LineRestarted,
    // --- Access (events of no workload: `workload` is empty) ----------------------------------
    /// An API token was created; the record holds a salted hash, never the secret.
    TokenCreated {
        token: crate::access::TokenRecord,
    },
    TokenRevoked {
        id: String,
    },
    // --- Mitigation drills (`crate::drill`) ---------------------------------------------------
    DrillStarted {
        drill: Box<crate::drill::Drill>,
    },
    /// The fault took effect (the drilled phase's bake began): how, in words.
    DrillInjected {
        drill_id: String,
        detail: String,
    },
    DrillEnded {
        drill_id: String,
        report: Box<crate::drill::DrillReport>,
    },
}

impl EventKind {
    pub fn type_name(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        v.get("type").and_then(|t| t.as_str()).unwrap_or("unknown").to_string()
    }

    pub fn rollout_id(&self) -> Option<&str> {
        use EventKind::*;
        match self {
            RolloutStarted { rollout_id, .. }
            | BakeStarted { rollout_id, .. }
            | BaselineReset { rollout_id, .. }
            | PhasePassed { rollout_id, .. }
            | PhaseStarted { rollout_id, .. }
            | PhaseHeld { rollout_id, .. }
            | Escalated { rollout_id, .. }
            | RolloutCompleted { rollout_id }
            | LkgUpdated { rollout_id, .. }
            | RolloutHalted { rollout_id, .. }
            | BypassApproved { rollout_id, .. }
            | MitigationCompleted { rollout_id, .. }
            | RolloutPaused { rollout_id }
            | RolloutResumed { rollout_id }
            | PromoteRequested { rollout_id }
            | RolloutAborted { rollout_id }
            | SmokeTestRan { rollout_id, .. }
            | SignalsRecorded { rollout_id, .. }
            | EmergencyDeclared { rollout_id, .. } => Some(rollout_id),
            ApprovalGiven { rollout_id, .. } | ApprovalRejected { rollout_id, .. } => rollout_id.as_deref(),
            _ => None,
        }
    }
}
