//! End-to-end tests of ringfence: the real binary as server, router, sample app and CLI, over
//! real HTTP on loopback. Each test starts its own server in its own temporary directory and
//! leaves nothing running (see `harness`).
//!
//! Timings are never asserted; deadlines only keep a broken build from hanging, and a failure
//! prints the workload's timeline and status.

mod audit;
mod bad_input;
mod bad_release;
mod command;
mod crash;
mod data;
mod detect;
mod drill;
mod expose;
mod flags;
mod govern;
mod haproxy;
mod harness;
mod history;
mod incidents;
mod limits;
/// A real PostgreSQL for the tests of the store and of replicas.
#[path = "../../../store/tests/support/pgcluster.rs"]
mod pgcluster;
mod pipelines;
mod replicas;
mod rings;
mod rollout;
mod schema;
mod secure;
mod store;
mod tier;
mod trust;
mod ui;
mod unbroken;
