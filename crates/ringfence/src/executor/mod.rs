//! The executor seam: how the controller runs the instances of a release.
//!
//! [`Executor`] is everything the controller needs of the machinery that runs code: make sure
//! the instance of a slot (workload, version, replica) runs and is ready, adopting one an
//! earlier server left running; say whether an instance still runs or how it ended; stop it;
//! probe it. Instances are named in the executor's own terms, opaque to the rest of
//! ringfence: an id unique across workloads and over time, and an endpoint (`host:port`)
//! where it serves. Events and projections carry only those two.
//!
//! Adapters: [`process::ProcessExecutor`] (local processes ringfence starts) and
//! [`command::CommandExecutor`] (the team's own hooks deploy, stop and check instances
//! wherever they run); [`Executors`] picks one by the spec's `kind` and the instance's id.
//! Blue-green stacks and host groups updated in place follow, behind this same trait.

pub mod command;
pub mod process;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ringfence_core::spec::{ExecutorKind, ExecutorSpec};

pub use command::CommandExecutor;
pub use process::{ExecError, ProcessExecutor, free_port};

/// A future an executor returns; boxed so the controller holds any executor as a trait object.
pub type ExecFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The slot an instance fills: one replica of one version of one workload.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub workload: &'a str,
    pub version: &'a str,
    pub replica: u32,
}

/// The slot an instance fills, and what it runs with.
pub struct Replica<'a> {
    pub workload: &'a str,
    pub version: &'a str,
    pub replica: u32,
    pub spec: &'a ExecutorSpec,
    /// The release's configuration snapshot, passed as environment variables.
    pub config: &'a BTreeMap<String, String>,
    /// The workload's router, where the instance evaluates flags over OFREP.
    pub router: Option<&'a str>,
    /// The values of the secrets among the above, kept out of every error and log line.
    pub secrets: &'a [String],
}

/// An instance that runs and is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The executor's id of the instance, unique across workloads and over time.
    pub instance: String,
    /// Where it serves, `host:port`.
    pub endpoint: String,
    /// Found running (left by an earlier server) rather than started now.
    pub adopted: bool,
}

/// Why an instance is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// No longer needed: replaced, scaled away, or the server shutting down.
    Retire,
    /// Its rollout was mitigated: the deploy is reversed (the command executor's `undo` hook
    /// when the spec has one; a stop otherwise).
    Undo,
}

/// What became of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceStatus {
    Running,
    /// It ended; how, in words (an exit status, a signal, or that it is unknown).
    Exited(String),
}

/// What the controller needs of whatever runs the instances. Every call is bounded in time
/// by the spec's own timeouts (readiness, stop grace, probe timeout).
pub trait Executor: Send + Sync {
    /// Makes sure the slot's instance runs and is ready: adopts one an earlier server left
    /// running (only if it is provably the one that server started), or starts a new one
    /// and waits for its readiness.
    fn ensure<'a>(&'a self, slot: &'a Replica<'a>) -> ExecFuture<'a, Result<Started, ExecError>>;

    /// Whether the instance still runs. Cheap: called for every instance on every tick (an
    /// adapter that must ask something slow answers from what it last learnt).
    fn status(&self, slot: Slot<'_>, instance: &str, spec: &ExecutorSpec) -> InstanceStatus;

    /// Stops the instance and everything it started: gracefully, then forcibly after the
    /// spec's `stop_grace`. Stopping an instance that is gone is fine; an error means it may
    /// still run (the controller tries again).
    fn stop<'a>(
        &'a self,
        slot: Slot<'a>,
        instance: &'a str,
        spec: &'a ExecutorSpec,
        kind: StopKind,
    ) -> ExecFuture<'a, Result<(), ExecError>>;

    /// Probes an instance once: `Ok` on a 2xx answer to `GET path`, the reason otherwise.
    fn probe<'a>(&'a self, endpoint: &'a str, path: &'a str, timeout: Duration) -> ExecFuture<'a, Result<(), String>>;

    /// Breaks a running instance on purpose, for a drill: `crash` ends it at once (no chance
    /// to clean up), `hang` stops it answering while it keeps running. An adapter that cannot
    /// says why; `stop` still works on a hung instance.
    fn inject(&self, instance: &str, fault: InstanceFault) -> Result<(), String> {
        let _ = (instance, fault);
        Err("this executor cannot break its instances on purpose".into())
    }

    /// Runs a workload-level hook that is about no one instance (the `[data] backup` hook) as
    /// the command executor runs its hooks: its own process group, a timeout, its output kept
    /// in the hook log with secrets redacted. Returns the output.
    fn run_hook<'a>(&'a self, call: &'a HookCall<'a>) -> ExecFuture<'a, Result<String, ExecError>> {
        Box::pin(async move {
            Err(ExecError::Hook {
                hook: call.hook,
                version: call.version.into(),
                replica: 0,
                why: "this executor runs no workload hooks".into(),
            })
        })
    }
}

/// What a drill does to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceFault {
    Crash,
    Hang,
}

/// A workload-level hook to run: its name in the log, the program and arguments (placeholders
/// already substituted), extra environment, and its time budget. The workload's executor
/// spec gives the rest of the environment (`[executor] env`, secrets resolved).
pub struct HookCall<'a> {
    pub hook: &'static str,
    pub workload: &'a str,
    pub version: &'a str,
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub spec: &'a ExecutorSpec,
    pub timeout: Duration,
}

/// Every executor, each workload's picked by its spec's `kind` and each instance's by its id
/// (a workload whose kind changed still has instances of the other kind to stop).
pub struct Executors {
    pub process: ProcessExecutor,
    pub command: CommandExecutor,
}

impl Executor for Executors {
    fn ensure<'a>(&'a self, slot: &'a Replica<'a>) -> ExecFuture<'a, Result<Started, ExecError>> {
        match slot.spec.kind {
            ExecutorKind::Process => self.process.ensure(slot),
            ExecutorKind::Command => Box::pin(self.command.ensure(slot)),
        }
    }

    fn status(&self, slot: Slot<'_>, instance: &str, spec: &ExecutorSpec) -> InstanceStatus {
        if instance.starts_with(command::PREFIX) {
            self.command.status(slot, instance, spec)
        } else {
            self.process.status(slot, instance, spec)
        }
    }

    fn stop<'a>(
        &'a self,
        slot: Slot<'a>,
        instance: &'a str,
        spec: &'a ExecutorSpec,
        kind: StopKind,
    ) -> ExecFuture<'a, Result<(), ExecError>> {
        if instance.starts_with(command::PREFIX) {
            Box::pin(self.command.stop(slot, instance, spec, kind))
        } else {
            self.process.stop(slot, instance, spec, kind)
        }
    }

    fn inject(&self, instance: &str, fault: InstanceFault) -> Result<(), String> {
        if instance.starts_with(command::PREFIX) {
            Err("the command executor's instances are the team's own: a drill cannot signal them".into())
        } else {
            self.process.inject(instance, fault)
        }
    }

    fn probe<'a>(&'a self, endpoint: &'a str, path: &'a str, timeout: Duration) -> ExecFuture<'a, Result<(), String>> {
        // Probes are ringfence's own HTTP checks, whatever runs the instance.
        self.process.probe(endpoint, path, timeout)
    }

    fn run_hook<'a>(&'a self, call: &'a HookCall<'a>) -> ExecFuture<'a, Result<String, ExecError>> {
        Box::pin(self.command.run_hook(call))
    }
}
