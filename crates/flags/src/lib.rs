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
//! - **Loading** is flagd's: [`FlagSet::parse`] loads whatever flagd loads, and a flag flagd
//!   cannot evaluate answers as flagd answers it (`PARSE_ERROR`, or its default variant);
//!   [`FlagSet::parse_lenient`] also returns every problem with its JSON path and
//!   [`Effect`], and [`FlagSet::parse_strict`] refuses a document with any problem.
//! - **`fractional`** buckets in one of flagd's three ways ([`Bucketing`]), the one the
//!   document records (`"$ringfence": {"fractional": "v3"}`; [`Bucketing::UNRECORDED`], v2,
//!   when it records none): v3, flagd's current bucketing, hashes the deterministic CBOR
//!   encoding of any non-null bucketing value (flagd ADR "Harden Hashing Consistency And Add
//!   Support For Non-string Attributes in Fractional Evaluation"); v2 the UTF-8 bytes of a
//!   string (ADR "High-Precision Fractional Bucketing"); both map
//!   `h = murmur3_x86_32(bytes, seed 0)` to `(h * totalWeight) >> 32`; v1 is flagd's older
//!   percentage bucketing. [`prepare_document`] records [`Bucketing::CURRENT`] in a release's
//!   flags, so a release keeps the bucketing it was created with. Verified against every
//!   flagd-testbed `@fractional-v1`/`-v2`/`-v3` scenario.
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

mod bucketing;
mod cbor;
mod context;
mod flagset;
mod hash;
mod logic;
mod resolution;
mod semver;
mod value;

pub use bucketing::{Bucketing, FRACTIONAL_KEY, SETTINGS_KEY, record_bucketing};
pub use context::{Context, ContextError};
pub use flagset::{Effect, FlagError, FlagSet, prepare_document};
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
