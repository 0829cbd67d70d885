//! API tokens: create (the secret is shown once), list, revoke; and the first admin token a
//! new server writes to its data directory.

use std::path::PathBuf;

use rand::TryRngCore;
use ringfence_core::EventKind;
use ringfence_core::access::{Grant, Role, TokenRecord, hash_secret};

use super::prelude::*;

/// The file a server writes its first admin token to, in its data directory.
pub fn admin_token_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("admin.token")
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The kernel's generator; it does not fail on Linux once booted, and a token made of
    // anything less random must never be issued.
    rand::rngs::OsRng.try_fill_bytes(&mut buf).expect("the operating system's random source");
    hex::encode(buf)
}

/// A new token's record and the whole token (`rf1.<id>.<secret>`), which is never stored.
fn mint(
    name: &str,
    grants: Vec<Grant>,
    by: &str,
    expires_at: Option<ringfence_core::Timestamp>,
) -> (TokenRecord, String) {
    let id = random_hex(6);
    let secret = random_hex(32);
    let salt = random_hex(16);
    let record = TokenRecord {
        hash: hash_secret(&salt, &secret),
        id: id.clone(),
        name: name.into(),
        grants,
        salt,
        created_at: now(),
        created_by: by.into(),
        expires_at,
        revoked_at: None,
    };
    (record, format!("rf1.{id}.{secret}"))
}

/// On a server's first start (no token in the log), creates the admin token and writes it to
/// [`admin_token_path`] (mode 0600). Returns where, when it did.
pub async fn bootstrap(shared: &Shared) -> anyhow::Result<Option<PathBuf>> {
    if !shared.world(|w| w.access.tokens.is_empty()) {
        return Ok(None);
    }
    let (record, token) =
        mint("admin", vec![Grant { role: Role::Admin, workloads: vec!["*".into()] }], "ringfence", None);
    let path = admin_token_path(&shared.data_dir);
    // The file first: a token in the log that nobody can read would lock everyone out.
    ringfence_router::write_secret_file(&path, format!("{token}\n").as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write the admin token to {}: {e}", path.display()))?;
    shared
        .command("", "ringfence", "first start: the admin token", |_| {
            Ok(vec![EventKind::TokenCreated { token: record.clone() }])
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot record the admin token: {e}"))?;
    Ok(Some(path))
}

pub(super) async fn create_token(
    State(sh): St,
    Actor(who): Actor,
    Body(b): Body<api::CreateToken>,
) -> Result<(StatusCode, Json<api::CreatedToken>), ApiError> {
    let name = b.name.trim();
    if name.is_empty() || b.name.chars().count() > 64 || name.chars().any(|c| c.is_control()) {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            format!("name: 1 to 64 printable characters, found {:?}", b.name),
        ));
    }
    // The actors ringfence itself acts as: a token named so would pass for the controller
    // (which records the checks it runs) or for a signed webhook.
    if name == "controller" || name.starts_with("webhook:") {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            format!("name: {name:?} is reserved for ringfence's own actions; choose another"),
        ));
    }
    if b.grants.is_empty() {
        return Err(ApiError::new(ErrorKind::Invalid, "grants: at least one role, e.g. [\"deployer:checkout\"]"));
    }
    let grants = b
        .grants
        .iter()
        .map(|g| Grant::parse(g))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::new(ErrorKind::Invalid, format!("grants: {e}")))?;
    let expires_at = match &b.expires_in {
        None => None,
        Some(d) => {
            let d = ringfence_core::duration::parse(d)
                .map_err(|e| ApiError::new(ErrorKind::Invalid, format!("expires_in: {e}")))?;
            Some(now().plus_ms(d.as_ms()))
        }
    };
    let (record, token) = mint(name, grants, &who, expires_at);
    let view = wire::token(&record);
    sh.command("", &who, "token created", |_| Ok(vec![EventKind::TokenCreated { token: record.clone() }])).await?;
    Ok((StatusCode::CREATED, Json(api::CreatedToken { view, token })))
}

pub(super) async fn list_tokens(State(sh): St) -> Json<Vec<api::Token>> {
    Json(sh.world(|w| w.access.tokens.values().map(wire::token).collect()))
}

pub(super) async fn revoke_token(
    State(sh): St,
    Actor(who): Actor,
    Path(id): Path<String>,
) -> Result<Json<api::Token>, ApiError> {
    let mut view = None;
    sh.command("", &who, "token revoked", |w| {
        let t = w.access.tokens.get(&id).ok_or_else(|| CommandError {
            code: ErrorCode::NotFound,
            message: format!("no token {id:?}; `ringfence token list` shows them"),
        })?;
        view = Some(wire::token(t));
        Ok(if t.revoked_at.is_some() { vec![] } else { vec![EventKind::TokenRevoked { id: id.clone() }] })
    })
    .await?;
    let view = sh.world(|w| w.access.tokens.get(&id).map(wire::token)).or(view).expect("found above");
    Ok(Json(view))
}
