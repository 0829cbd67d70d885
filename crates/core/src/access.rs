//! Who may do what: API tokens, their roles and the workloads they are scoped to.
//!
//! A token is `rf1.<id>.<secret>`: the id finds its record, the secret proves it. Only a
//! salted SHA-256 of the secret is kept (in the event log, so creating and revoking a token is
//! audited like any change; the API redacts even the hash). A secret is 32 random bytes, so a
//! fast hash is enough: nobody guesses 256 bits, and a slow password hash would only slow
//! every call.
//!
//! Roles are sets of permissions ([`Role::grants`]); a grant is a role on some workloads (`*`
//! for all). The policy lives here, in the pure core; the server asks [`Access::check`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::Timestamp;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Perm {
    /// Read state, events, plans and explanations.
    Read,
    /// Register releases, apply specs, deploy, pause, resume, abort and roll back.
    Deploy,
    /// Approve or reject a deployment or a phase's gate (`approve`, `reject`, `promote`).
    Approve,
    /// Approve an emergency deployment (a hotfix during an incident, on the accelerated path).
    Emergency,
    /// Kill and restore flags.
    Flags,
    /// Send health signals: alerts (Alertmanager's webhook) and user reports.
    Report,
    /// Serve traffic in the router tier: read the workloads' routing tables and report their
    /// traffic counters.
    Route,
    /// Change what a workload executes (its executor command and environment, smoke-test
    /// commands): code that runs as the server's user.
    Execute,
    /// Change how deployments are governed: environments, required attestations,
    /// approvals, the emergency path, deployment windows; stop and restart the line.
    Govern,
    /// Manage tokens.
    Admin,
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Perm::Read => "read",
            Perm::Deploy => "deploy",
            Perm::Approve => "approve",
            Perm::Emergency => "approve an emergency deployment",
            Perm::Govern => "change how deployments are governed",
            Perm::Flags => "manage flags",
            Perm::Report => "report signals",
            Perm::Route => "serve traffic as a router of the tier",
            Perm::Execute => "change what a workload executes",
            Perm::Admin => "manage tokens",
        })
    }
}

/// A named set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Read everything in scope.
    Viewer,
    /// Read, release and deploy, and stop or undo a rollout.
    Deployer,
    /// Read, and approve or reject deployments and approval gates.
    Approver,
    /// Read, and approve the emergency deployments the spec's criteria allow (and ordinary
    /// approvals).
    EmergencyApprover,
    /// Read, and kill or restore flags.
    FlagAdmin,
    /// Only send signals (for Alertmanager and support tools).
    Reporter,
    /// Only fetch routing tables and report traffic counters (for the router tier's
    /// `ringfence router --control-plane`).
    Router,
    /// Everything, including what a workload executes and the tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 8] = [
        Role::Viewer,
        Role::Deployer,
        Role::Approver,
        Role::EmergencyApprover,
        Role::FlagAdmin,
        Role::Reporter,
        Role::Router,
        Role::Admin,
    ];

    pub fn grants(self, perm: Perm) -> bool {
        match self {
            Role::Admin => true,
            Role::Viewer => perm == Perm::Read,
            Role::Deployer => matches!(perm, Perm::Read | Perm::Deploy),
            Role::Approver => matches!(perm, Perm::Read | Perm::Approve),
            Role::EmergencyApprover => matches!(perm, Perm::Read | Perm::Approve | Perm::Emergency),
            Role::FlagAdmin => matches!(perm, Perm::Read | Perm::Flags),
            Role::Reporter => perm == Perm::Report,
            Role::Router => perm == Perm::Route,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::EmergencyApprover => "emergency-approver",
            Role::FlagAdmin => "flag-admin",
            Role::Reporter => "reporter",
            Role::Router => "router",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            format!(
                "unknown role {s:?}; expected one of {}",
                Role::ALL.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// A role on some workloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    /// Workload names, or `*` for every workload (and for what belongs to none, such as tokens).
    pub workloads: Vec<String>,
}

impl Grant {
    fn covers(&self, workload: Option<&str>) -> bool {
        self.workloads.iter().any(|w| w == "*" || workload == Some(w.as_str()))
    }

    /// `role` or `role:workload,workload`.
    pub fn parse(s: &str) -> Result<Grant, String> {
        let (role, scope) = s.split_once(':').unwrap_or((s, "*"));
        let workloads: Vec<String> =
            scope.split(',').map(str::trim).filter(|w| !w.is_empty()).map(String::from).collect();
        if workloads.is_empty() {
            return Err(format!("{s:?}: no workload after `:`; write `{role}` for every workload"));
        }
        for w in &workloads {
            if w != "*" {
                crate::spec::check_name(w).map_err(|e| format!("{s:?}: workload {w:?}: {e}"))?;
            }
        }
        Ok(Grant { role: Role::parse(role.trim())?, workloads })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.workloads == ["*"] {
            write!(f, "{}", self.role.name())
        } else {
            write!(f, "{}:{}", self.role.name(), self.workloads.join(","))
        }
    }
}

/// A token as the log keeps it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// Who or what holds it (a person, a pipeline); the actor of what it does.
    pub name: String,
    pub grants: Vec<Grant>,
    pub salt: String,
    /// Hex SHA-256 of the salt's bytes then the secret's.
    pub hash: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// The tokens, folded from the log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Access {
    pub tokens: BTreeMap<String, TokenRecord>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No valid token: 401.
    Unauthenticated(String),
    /// A valid token without the permission: 403.
    Forbidden(String),
}

/// The salted hash a token's record keeps.
pub fn hash_secret(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The parts of a presented token, `rf1.<id>.<secret>`.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("rf1.")?;
    let (id, secret) = rest.split_once('.')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

impl Access {
    /// The record of a presented token, if it is valid now.
    pub fn authenticate(&self, presented: &str, now: Timestamp) -> Result<&TokenRecord, Denied> {
        let bad = || Denied::Unauthenticated("the token is not valid (unknown, mistyped or revoked)".into());
        let (id, secret) = split_token(presented.trim()).ok_or_else(bad)?;
        let record = self.tokens.get(id).ok_or_else(bad)?;
        if !constant_time_eq(hash_secret(&record.salt, secret).as_bytes(), record.hash.as_bytes()) {
            return Err(bad());
        }
        if record.revoked_at.is_some() {
            return Err(bad());
        }
        if record.expires_at.is_some_and(|t| t <= now) {
            return Err(Denied::Unauthenticated(format!("the token {:?} has expired", record.name)));
        }
        Ok(record)
    }

    /// Whether `token` may do `perm` on `workload` (`None`: on what belongs to no workload).
    pub fn check(token: &TokenRecord, perm: Perm, workload: Option<&str>) -> Result<(), Denied> {
        if token.grants.iter().any(|g| g.role.grants(perm) && g.covers(workload)) {
            return Ok(());
        }
        Err(Denied::Forbidden(format!(
            "the token {:?} ({}) may not {perm}{}",
            token.name,
            token.grants.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(" "),
            workload.map(|w| format!(" on {w}")).unwrap_or_default()
        )))
    }

    pub fn live(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values().filter(|t| t.revoked_at.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(grants: &[&str]) -> TokenRecord {
        TokenRecord {
            id: "abc".into(),
            name: "ci".into(),
            grants: grants.iter().map(|g| Grant::parse(g).unwrap()).collect(),
            salt: "s".into(),
            hash: hash_secret("s", "secret"),
            created_at: Timestamp(0),
            created_by: "admin".into(),
            expires_at: Some(Timestamp(100)),
            revoked_at: None,
        }
    }

    #[test]
    fn a_token_is_valid_only_whole_unrevoked_and_unexpired() {
        let mut access = Access::default();
        access.tokens.insert("abc".into(), token(&["viewer"]));
        assert!(access.authenticate("rf1.abc.secret", Timestamp(5)).is_ok());
        for bad in ["rf1.abc.secreT", "rf1.abc.", "rf1.xyz.secret", "abc.secret", ""] {
            assert!(matches!(access.authenticate(bad, Timestamp(5)), Err(Denied::Unauthenticated(_))), "{bad}");
        }
        assert!(
            matches!(access.authenticate("rf1.abc.secret", Timestamp(100)), Err(Denied::Unauthenticated(m)) if m.contains("expired"))
        );
        access.tokens.get_mut("abc").unwrap().revoked_at = Some(Timestamp(6));
        assert!(access.authenticate("rf1.abc.secret", Timestamp(7)).is_err());
    }

    #[test]
    fn roles_grant_their_permissions_on_their_workloads_only() {
        let t = token(&["deployer:checkout,search", "viewer"]);
        assert!(Access::check(&t, Perm::Deploy, Some("checkout")).is_ok());
        assert!(Access::check(&t, Perm::Read, Some("billing")).is_ok());
        let Err(Denied::Forbidden(why)) = Access::check(&t, Perm::Deploy, Some("billing")) else { panic!() };
        assert!(why.contains("may not deploy on billing"), "{why}");
        assert!(Access::check(&t, Perm::Execute, Some("checkout")).is_err());
        assert!(Access::check(&t, Perm::Admin, None).is_err());
        assert!(Access::check(&token(&["admin"]), Perm::Admin, None).is_ok());
        // Scoped grants never reach what belongs to no workload.
        assert!(Access::check(&token(&["admin:checkout"]), Perm::Admin, None).is_err());
        assert!(Access::check(&token(&["reporter"]), Perm::Read, Some("checkout")).is_err());
    }

    #[test]
    fn grants_parse_with_clear_errors() {
        assert_eq!(Grant::parse("flag-admin:a,b").unwrap().to_string(), "flag-admin:a,b");
        assert_eq!(Grant::parse("viewer").unwrap().to_string(), "viewer");
        assert!(Grant::parse("root").unwrap_err().contains("expected one of viewer, deployer"));
        assert!(Grant::parse("viewer:").unwrap_err().contains("no workload"));
        assert!(Grant::parse("viewer:a/b").is_err());
    }
}
