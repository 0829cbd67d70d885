//! The executor seam: how the controller runs the instances of a release.
//!
//! [`Executor`] is everything the controller needs of the machinery that runs code: make sure
//! the instance of a slot (workload, version, replica) runs and is ready, adopting one an
//! earlier server left running; say whether an instance still runs or how it ended; stop it;
//! probe it. Instances are named in the executor's own terms, opaque to the rest of
//! ringfence: an id unique across workloads and over time, and an endpoint (`host:port`)
//! where it serves. Events and projections carry only those two.
//!
//! Adapters: [`process::ProcessExecutor`] (local processes, the first); a command executor
//! (hooks that deploy, stop and check through the team's own scripts), blue-green stacks and
//! host groups reached over ssh or behind HAProxy follow, each behind this same trait.

pub mod process;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ringfence_core::spec::ExecutorSpec;

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

    /// Whether the instance still runs. Cheap: called for every instance on every tick.
    fn status(&self, instance: &str) -> InstanceStatus;

    /// Stops the instance and everything it started: gracefully, then forcibly after
    /// `grace`. Stopping an instance that is gone is fine.
    fn stop<'a>(&'a self, slot: Slot<'a>, instance: &'a str, grace: Duration) -> ExecFuture<'a, ()>;

    /// Probes an instance once: `Ok` on a 2xx answer to `GET path`, the reason otherwise.
    fn probe<'a>(&'a self, endpoint: &'a str, path: &'a str, timeout: Duration) -> ExecFuture<'a, Result<(), String>>;
}
