//! Releases: immutable, versioned bundles. A version is registered once; registering it again
//! with the same content is a no-op, with different content an error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::Timestamp;

/// What a client sends to register a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub version: String,
    #[serde(flatten)]
    pub content: ReleaseContent,
}

/// Everything that defines a release. Its digest is its identity.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReleaseContent {
    /// What runs: an image, a package, a commit-pinned build. Free-form, recorded as given.
    pub artifact: String,
    /// Configuration snapshot; the process executor passes it as environment variables.
    pub config: BTreeMap<String, String>,
    /// Flag keys that guard the new code paths of this release (used to bypass them).
    pub guarded_by: Vec<String>,
    /// The schema migration this release carries, if any.
    pub migration: Option<Migration>,
    /// Schema elements (`table.column`, free-form names) this release's code needs: a
    /// contract migration that removes one is refused while this release is the last known good.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requires_schema: Vec<String>,
    /// The release this one fixes (an announced hotfix): deploying it rolls a halted rollout
    /// of that release forward instead of waiting for it to be mitigated first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotfix_for: Option<String>,
    pub metadata: Metadata,
    /// Flag definitions (flagd's JSON format) that users of this release evaluate over OFREP.
    /// A release that changes only these runs on the processes already there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Migration {
    pub id: String,
    /// Additive, so the previous release still works against the migrated schema. Set from
    /// `kind` when that is given (expand and contract: true; irreversible: false).
    pub backward_compatible: bool,
    /// What the change does to data the last known good may use. Absent: `expand` when
    /// `backward_compatible`, else `irreversible` (releases registered before kinds existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<MigrationKind>,
    /// A contract's removed schema elements (`table.column`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removes: Vec<String>,
    /// A contract's expand: the migration, carried by an earlier completed release, that
    /// added what replaces the removed elements (expand, then contract).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// The expand/contract discipline of schema changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationKind {
    /// Additive: the previous release works on the migrated schema; falling back is safe.
    Expand,
    /// Removes what an earlier expand replaced; refused while the last known good still
    /// needs what it removes, so falling back stays safe.
    Contract,
    /// Changes data so the previous release may not work on it (a rewrite, a lossy type
    /// change): never fallen back from blindly.
    Irreversible,
}

impl MigrationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationKind::Expand => "expand",
            MigrationKind::Contract => "contract",
            MigrationKind::Irreversible => "irreversible",
        }
    }
}

impl Migration {
    pub fn kind(&self) -> MigrationKind {
        self.kind.unwrap_or(if self.backward_compatible { MigrationKind::Expand } else { MigrationKind::Irreversible })
    }

    /// The same migration with `kind` and `backward_compatible` agreeing, or why they cannot.
    pub fn normalized(&self) -> Result<Migration, String> {
        if self.id.trim().is_empty() || self.id.chars().count() > 128 {
            return Err(format!("field `migration.id`: expected 1 to 128 characters, found {:?}", self.id));
        }
        let mut m = self.clone();
        match self.kind {
            None if !self.removes.is_empty() || self.after.is_some() => {
                return Err("field `migration.kind`: `removes` and `after` are for `kind = contract`".into());
            }
            None => {}
            Some(MigrationKind::Irreversible) if self.backward_compatible => {
                return Err("field `migration.kind`: an irreversible migration is not backward compatible".into());
            }
            Some(k) => {
                if k != MigrationKind::Contract && (!self.removes.is_empty() || self.after.is_some()) {
                    return Err(format!(
                        "field `migration.kind`: `removes` and `after` are for a contract, not {}",
                        k.as_str()
                    ));
                }
                if k == MigrationKind::Contract {
                    if self.removes.is_empty() {
                        return Err("field `migration.removes`: a contract names the schema elements it removes".into());
                    }
                    if self.after.as_deref().is_none_or(|a| a.trim().is_empty()) {
                        return Err("field `migration.after`: a contract names the expand migration it completes (expand, then contract)".into());
                    }
                }
                m.backward_compatible = k != MigrationKind::Irreversible;
            }
        }
        Ok(m)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metadata {
    pub commit: String,
    pub author: String,
    pub message: String,
    /// When the change was committed: DORA's lead time runs from here to the completed
    /// deployment (from the release's registration when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<Timestamp>,
    /// How big the change is since the release it follows, as the pipeline measured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<ChangeSize>,
}

/// A change's size: smaller, more frequent changes are easier to judge and to undo.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeSize {
    pub files: u64,
    /// Lines added and removed.
    pub lines: u64,
    pub commits: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub workload: String,
    pub version: String,
    pub content: ReleaseContent,
    /// `sha256:<hex>` of the canonical JSON of `content`.
    pub digest: String,
    pub created_at: Timestamp,
    pub created_by: String,
}

impl ReleaseContent {
    pub fn digest(&self) -> String {
        // Struct fields serialize in declaration order and maps are BTreeMaps, so the JSON is
        // canonical for equal content.
        let json = serde_json::to_vec(self).expect("release content always serializes");
        format!("sha256:{}", hex::encode(Sha256::digest(&json)))
    }

    /// What a promotion compares between environments (the build: artifact, flags and
    /// migration; configuration differs by environment), hashed: the part of a release kept
    /// once `[history]` let the rest go ([`ReleaseStub`]).
    pub fn build(&self) -> u64 {
        let json = serde_json::to_vec(&(&self.artifact, &self.flags, &self.migration))
            .expect("release content always serializes");
        let d = Sha256::digest(&json);
        u64::from_be_bytes(d[..8].try_into().expect("a sha256 has 32 bytes"))
    }
}

/// What the projection keeps of a release `[history]` let go (no kept rollout, pin, warm
/// stack, running instance or pending deployment names it, and it is not the stable version or
/// among the newest registered): enough to refuse its
/// version registered again with other content, to say whether it differs from an upstream
/// environment's, and to find a contract's expand; its content is read back from its
/// `release_created` event when a command needs it (a deploy of it, a rollback to it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseStub {
    /// The sequence number of its `release_created` event.
    pub seq: u64,
    pub digest: String,
    pub created_at: Timestamp,
    pub created_by: String,
    /// [`ReleaseContent::build`].
    pub build: u64,
    /// The id of the migration it carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
}

impl ReleaseStub {
    pub fn of(release: &Release, seq: u64) -> ReleaseStub {
        ReleaseStub {
            seq,
            digest: release.digest.clone(),
            created_at: release.created_at,
            created_by: release.created_by.clone(),
            build: release.content.build(),
            migration: release.content.migration.as_ref().map(|m| m.id.clone()),
        }
    }
}

/// Environment variables that make a process load or run other code than its command: a
/// release's configuration that sets one changes what executes, and needs the `execute`
/// permission like a change of the executor's command.
const CODE_LOADING_ENV: &[&str] = &[
    "PATH",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "PS4",
    "GCONV_PATH",
    "HOSTALIASES",
    "LOCPATH",
];

/// The keys of `config` that change what executes (see [`CODE_LOADING_ENV`]; every `LD_*`
/// and `DYLD_*` too).
pub fn code_loading_keys(config: &BTreeMap<String, String>) -> Vec<&str> {
    config
        .keys()
        .map(String::as_str)
        .filter(|k| {
            let upper = k.to_ascii_uppercase();
            CODE_LOADING_ENV.contains(&upper.as_str()) || upper.starts_with("LD_") || upper.starts_with("DYLD_")
        })
        .collect()
}

pub fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty() || version.len() > 128 {
        return Err(format!("a version has 1 to 128 characters, found {version:?}"));
    }
    if !version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+')) {
        return Err(format!("a version has letters, digits, `.`, `-`, `_` and `+` only, found {version:?}"));
    }
    Ok(())
}

/// Checks that flag definitions load, as flagd loads them (`FlagSet::parse`): refused are only
/// documents that cannot load at all (not a flag document, an unknown bucketing), with every
/// such problem and its JSON path. What flagd loads but cannot evaluate is loaded, and the API
/// returns it as warnings (`FlagSet::parse_lenient`), or refuses it under `[flags] strict`.
pub fn check_flags(flags: &serde_json::Value) -> Result<(), String> {
    ringfence_flags::FlagSet::parse(&flags.to_string())
        .map(|_| ())
        .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
}

pub fn check_config(config: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in config {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("config key {k:?} cannot be an environment variable name"));
        }
        if v.contains('\0') {
            return Err(format!("config value of {k:?} contains a NUL byte"));
        }
        if let Err(m) = crate::secret::check_reference(v) {
            return Err(format!("config value of {k:?}: {m}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_content_only() {
        let mut a = ReleaseContent { artifact: "app:1".into(), ..Default::default() };
        a.config.insert("B".into(), "2".into());
        a.config.insert("A".into(), "1".into());
        let mut b = ReleaseContent { artifact: "app:1".into(), ..Default::default() };
        b.config.insert("A".into(), "1".into());
        b.config.insert("B".into(), "2".into());
        assert_eq!(a.digest(), b.digest());
        b.config.insert("A".into(), "3".into());
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn versions_are_checked() {
        assert!(check_version("v1.2.3-rc.1+build5").is_ok());
        assert!(check_version("").is_err());
        assert!(check_version("v 1").is_err());
        assert!(check_version("../x").is_err());
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;

    fn m(kind: Option<MigrationKind>, compatible: bool, removes: &[&str], after: Option<&str>) -> Migration {
        Migration {
            id: "m7".into(),
            backward_compatible: compatible,
            kind,
            removes: removes.iter().map(|s| s.to_string()).collect(),
            after: after.map(String::from),
        }
    }

    #[test]
    fn a_migration_says_what_it_does_to_data_and_its_fields_agree() {
        // Releases registered before kinds existed keep their meaning.
        assert_eq!(m(None, true, &[], None).kind(), MigrationKind::Expand);
        assert_eq!(m(None, false, &[], None).kind(), MigrationKind::Irreversible);
        // A kind sets backward_compatible.
        let c = m(Some(MigrationKind::Contract), false, &["users.email"], Some("m6")).normalized().unwrap();
        assert!(c.backward_compatible);
        assert!(!m(Some(MigrationKind::Irreversible), false, &[], None).normalized().unwrap().backward_compatible);
        // What contradicts itself is refused, with the field.
        let e = m(Some(MigrationKind::Irreversible), true, &[], None).normalized().unwrap_err();
        assert!(e.contains("not backward compatible"), "{e}");
        let e = m(Some(MigrationKind::Contract), false, &[], Some("m6")).normalized().unwrap_err();
        assert!(e.contains("migration.removes"), "{e}");
        let e = m(Some(MigrationKind::Contract), false, &["users.email"], None).normalized().unwrap_err();
        assert!(e.contains("migration.after") && e.contains("expand, then contract"), "{e}");
        let e = m(Some(MigrationKind::Expand), true, &["users.email"], None).normalized().unwrap_err();
        assert!(e.contains("for a contract"), "{e}");
        assert!(m(None, false, &["x.y"], None).normalized().is_err());
    }
}
