//! # ringfence-flags
//!
//! The feature-flag evaluation engine of ringfence, shared by the server (which
//! serves it over OFREP) and by Rust services that evaluate in process.
//!
//! - **Definitions** are flagd's JSON flag format: `flags` with `state`,
//!   `variants`, `defaultVariant`, `targeting` (JsonLogic) and `metadata`;
//!   shared rules under `$evaluators`, referenced with `{"$ref": "name"}`;
//!   flag-set `metadata`. [`FlagSet::parse`] validates everything up front and
//!   reports every problem with its JSON path.
//! - **Targeting** is JsonLogic plus flagd's `fractional`, `sem_ver`,
//!   `starts_with` and `ends_with`, compiled once into a tree evaluated over
//!   borrowed data: a static flag or a `fractional` split allocates nothing.
//! - **`fractional`** implements the bucketing of flagd's architecture decision
//!   "High-Precision Fractional Bucketing for Sub-Percent Traffic Allocation"
//!   (`docs/architecture-decisions/high-precision-fractional-bucketing.md` in
//!   open-feature/flagd, as amended 2026-01-29, and flagd's
//!   `core/pkg/evaluator/fractional.go`): `h = murmur3_x86_32(bucketing value, seed 0)`
//!   as an unsigned 32-bit integer, `bucket = (h * totalWeight) >> 32`, and the
//!   first variant whose cumulative integer weight exceeds `bucket` wins.
//!   Weights are relative integers (missing weight = 1, negative counts as 0,
//!   sum at most `i32::MAX`); the default bucketing value is
//!   `$flagd.flagKey` immediately followed by `targetingKey` (no separator).
//!   Verified against the flagd-testbed `@fractional-v2` vectors.
//! - **Purity**: no IO, no clock (the caller passes `$flagd.timestamp` in the
//!   [`Context`]), no threads, no global state.
//!
//! ```
//! use ringfence_flags::{Context, FlagSet, Reason};
//!
//! let flags = FlagSet::parse(r#"{
//!   "flags": {
//!     "new-checkout": {
//!       "state": "ENABLED",
//!       "variants": { "on": true, "off": false },
//!       "defaultVariant": "off",
//!       "targeting": { "fractional": [["on", 10], ["off", 90]] }
//!     }
//!   }
//! }"#).unwrap();
//! let ctx = Context::new().with_targeting_key("user-42").with_timestamp(1_700_000_000);
//! let r = flags.evaluate("new-checkout", &ctx);
//! assert_eq!(r.reason, Reason::TargetingMatch);
//! assert!(r.value.is_some_and(|v| v.is_boolean()));
//! ```

mod context;
mod flagset;
mod hash;
mod logic;
mod resolution;
mod semver;
mod value;

pub use context::{Context, ContextError};
pub use flagset::{FlagError, FlagSet};
pub use hash::{bucket, murmur3_x86_32};
pub use resolution::{ErrorCode, Reason, Resolution, ResolutionError, ValueType};

#[cfg(test)]
mod operator_tests;

// A FlagSet is shared between threads behind an Arc.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FlagSet>();
    assert_send_sync::<Context>();
};
