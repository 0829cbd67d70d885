//! The pure core of ringfence.
//!
//! Everything in this crate is a function of its inputs: it does no IO, spawns nothing and
//! never reads the wall clock. Time comes in as a [`Timestamp`] argument, so the rollout state
//! machine, the gates and the health analysis run hours of simulated bake time in
//! milliseconds in tests. The adapters (store, executor, router, HTTP API) live in other
//! crates and call into this one.

pub mod access;
pub mod analysis;
pub mod chart;
pub mod command;
pub mod decision;
pub mod dora;
pub mod drill;
pub mod duration;
pub mod event;
pub mod explain;
pub mod governance;
pub mod health;
pub mod incident;
pub mod lint;
pub mod model;
pub mod postmortem;
pub mod release;
pub mod rollout;
pub mod schedule;
pub mod secret;
pub mod signals;
pub mod spec;
pub mod state;
pub mod time;
pub mod totals;

pub use decision::{Decision, MitigationAction};
pub use event::{Event, EventKind, NewEvent};
pub use health::{Health, Observation, Verdict};
pub use release::{Release, ReleaseRequest};
pub use rollout::{Rollout, RolloutKind, RolloutStatus, Stage};
pub use spec::WorkloadSpec;
pub use state::{WorkloadState, World};
pub use time::Timestamp;
