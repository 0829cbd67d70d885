//! API tokens.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Who or what will hold it: the actor of what it does (1 to 64 printable characters, not
    /// blank).
    #[schema(max_length = 64, pattern = r"[^ \t\n\r\x0b\x0c]")]
    pub name: String,
    /// `role` or `role:workload,workload` (roles: viewer, reporter, flag-admin, deployer,
    /// approver, admin; docs/security.md). At least one.
    #[schema(min_items = 1)]
    pub grants: Vec<String>,
    /// How long it is valid (`30d`, `12h`); forever when absent.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub expires_in: Option<String>,
}

/// A token as listed: never its secret or its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub grants: Vec<String>,
    pub created_at: Timestamp,
    pub created_by: String,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// A new token: the token itself is shown this once and stored nowhere.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: Token,
    /// `rf1.<id>.<secret>`.
    pub token: String,
}
