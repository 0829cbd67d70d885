//! Releases: immutable, versioned bundles of what runs and how it is configured.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// `POST .../releases`: a version and its content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// 1 to 128 letters, digits, `.`, `-`, `_` and `+`.
    #[schema(max_length = 128, pattern = r"^[A-Za-z0-9._+-]+$")]
    pub version: String,
    #[serde(flatten)]
    pub content: ReleaseContent,
}

/// Everything that defines a release; its digest is its identity.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReleaseContent {
    /// What runs: an image, a package, a commit-pinned build. Free-form, recorded as given.
    pub artifact: String,
    /// Configuration; the process executor passes it as environment variables. A value
    /// `secret://NAME` is resolved when the replica starts and never stored or shown.
    pub config: BTreeMap<String, String>,
    /// Flag keys that guard the new code paths of this release.
    pub guarded_by: Vec<String>,
    /// The schema migration this release carries, if any.
    pub migration: Option<Migration>,
    /// Schema elements (`table.column`) this release's code needs: a contract migration that
    /// removes one is refused while this release is the last known good.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requires_schema: Vec<String>,
    /// The release this one fixes (an announced hotfix): deploying it rolls a halted rollout
    /// of that release forward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotfix_for: Option<String>,
    pub metadata: Metadata,
    /// Flag definitions in flagd's JSON format, evaluated by this release's users over OFREP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Migration {
    pub id: String,
    /// Additive, so the previous release still works against the migrated schema. Set from
    /// `kind` when that is given.
    pub backward_compatible: bool,
    /// `expand` (additive), `contract` (removes what an earlier expand replaced) or
    /// `irreversible` (never fallen back from blindly). Absent: `expand` when
    /// `backward_compatible`, else `irreversible`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A contract's removed schema elements (`table.column`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removes: Vec<String>,
    /// A contract's expand: the migration of an earlier completed release it completes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Metadata {
    pub commit: String,
    pub author: String,
    pub message: String,
    /// When the change was committed, RFC 3339 (`git log -1 --format=%cI`): DORA's lead time
    /// runs from here to the completed deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<String>,
    /// The change's size since the release it follows, as the pipeline measured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<ChangeSize>,
}

/// A change's size: files, lines added and removed, commits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeSize {
    pub files: u64,
    pub lines: u64,
    pub commits: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Release {
    pub workload: String,
    pub version: String,
    pub content: ReleaseContent,
    /// `sha256:<hex>` of the canonical JSON of `content`.
    pub digest: String,
    pub created_at: Timestamp,
    pub created_by: String,
    /// Set when a mitigation put the release on hold: `deploy` refuses it until a person clears
    /// the hold (`POST .../clear-hold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<ReleaseHold>,
    /// Set when a person revoked the release: it never runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseHold {
    /// The rollout whose mitigation put it on hold.
    pub rollout_id: String,
    pub reason: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Revocation {
    pub actor: String,
    pub reason: String,
    pub at: Timestamp,
}

/// The answer to `POST .../releases`: 201 when registered, 200 when the same content was.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseCreated {
    pub created: bool,
    pub release: Release,
    /// Problems in the release's flags that flagd loads too, each with its JSON path and what
    /// it does (docs/flags.md); `[flags] strict = true` in the spec refuses them instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
