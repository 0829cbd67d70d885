//! What the control plane and the data plane agree on, in one place: the routing table the
//! controller pushes and the router serves ([`table`]), the sticky bucket of a user, and the
//! latency histogram grid the router counts in and the analysis reasons about ([`grid`]).
//!
//! Pure: no IO, so both the router (which may not depend on the control plane) and the core
//! (which may do no IO) can depend on it.

pub mod grid;
pub mod table;

pub use table::{BUCKETS, BreakerConfig, Group, RouteTable, Segment, TableError, bucket, group_index_for_bucket};
