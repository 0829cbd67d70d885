//! Which `fractional` bucketing a flag set uses, and where that choice is recorded.
//!
//! flagd changed how `fractional` maps a user to a variant twice. Each change moves users
//! between variants, so a flag set keeps the bucketing it was created with: the choice is
//! recorded in the document itself, as `"$ringfence": {"fractional": "v3"}`, and a document
//! that records none uses [`Bucketing::V2`], the only bucketing ringfence had before it
//! recorded one. The server records [`Bucketing::CURRENT`] in every new release
//! ([`record_bucketing`]), so upgrading ringfence never moves a user of an existing release.

use std::fmt;

use serde_json::{Map, Value};

/// The top-level property of a flag document that holds ringfence's own settings.
pub const SETTINGS_KEY: &str = "$ringfence";
/// The setting, inside [`SETTINGS_KEY`], that names the bucketing.
pub const FRACTIONAL_KEY: &str = "fractional";

/// A `fractional` bucketing, as the flagd-testbed tags name them (`@fractional-v1`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucketing {
    /// flagd core before v0.15 (flagd-testbed `@fractional-v1`): `|int32(murmur3(value))| / i32::MAX * 100`,
    /// compared with cumulative percentages (floats). For teams whose users must keep the
    /// assignments an older flagd gave them.
    V1,
    /// High-precision integer bucketing (flagd ADR "High-Precision Fractional Bucketing"):
    /// `(murmur3(UTF-8 bytes) * totalWeight) >> 32`. The bucketing value is a string; the
    /// default one is `$flagd.flagKey` immediately followed by `targetingKey`.
    V2,
    /// v2's arithmetic over the deterministic CBOR encoding of the bucketing value, which may
    /// be any JSON value but `null` (flagd ADR "Harden Hashing Consistency And Add Support For
    /// Non-string Attributes in Fractional Evaluation", accepted). The default value is the
    /// array `[$flagd.flagKey, targetingKey]`.
    V3,
}

impl Bucketing {
    /// What flagd does today, and what new releases record.
    pub const CURRENT: Bucketing = Bucketing::V3;
    /// What a document that records no bucketing uses: the bucketing of every release created
    /// before ringfence recorded one.
    pub const UNRECORDED: Bucketing = Bucketing::V2;

    pub fn as_str(self) -> &'static str {
        match self {
            Bucketing::V1 => "v1",
            Bucketing::V2 => "v2",
            Bucketing::V3 => "v3",
        }
    }

    pub fn parse(s: &str) -> Option<Bucketing> {
        match s {
            "v1" => Some(Bucketing::V1),
            "v2" => Some(Bucketing::V2),
            "v3" => Some(Bucketing::V3),
            _ => None,
        }
    }
}

impl fmt::Display for Bucketing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Records [`Bucketing::CURRENT`] in a flag document that records no bucketing, and returns
/// the bucketing the document now records. A document that already records one keeps it. Does
/// nothing to a value that is not an object (loading it will fail anyway).
pub fn record_bucketing(doc: &mut Value) -> Option<Bucketing> {
    let Value::Object(root) = doc else { return None };
    let settings = root.entry(SETTINGS_KEY).or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(settings) = settings else { return None };
    let v = settings.entry(FRACTIONAL_KEY).or_insert_with(|| Value::String(Bucketing::CURRENT.as_str().to_owned()));
    v.as_str().and_then(Bucketing::parse)
}
