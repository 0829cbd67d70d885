//! Secret values in specs and releases: referenced, never written down.
//!
//! A value `secret://NAME` is a reference: the log and the API keep the reference, and the
//! server resolves it only when it needs the value (starting a replica, configuring a router),
//! from `<data-dir>/secrets/NAME` or the server's environment variable `RINGFENCE_SECRET_NAME`.
//! Fields that are secret by nature (the OFREP tokens of `[flags]`) are kept only as SHA-256
//! digests when given in the clear ([`seal_token`]).

use sha2::{Digest, Sha256};

pub const PREFIX: &str = "secret://";

/// The name a value refers to, if it is a reference.
pub fn reference(value: &str) -> Option<&str> {
    value.strip_prefix(PREFIX)
}

/// Checks a reference's name: 1 to 128 letters, digits, `_`, `-` and `.`, not starting with `.`.
pub fn check_reference(value: &str) -> Result<(), String> {
    let Some(name) = reference(value) else { return Ok(()) };
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected `secret://NAME` with NAME of letters, digits, `_`, `-` and `.` (not first), found {value:?}"
        ))
    }
}

/// The environment variable a reference may be resolved from: `RINGFENCE_SECRET_` and the
/// name in upper case, `-` and `.` as `_`.
pub fn env_name(name: &str) -> String {
    let mut out = String::from("RINGFENCE_SECRET_");
    out.extend(name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }));
    out
}

/// An OFREP token as it is kept: a `secret://` reference or a digest (`sha256:<hex>`) stay as
/// they are; a token in the clear becomes its digest, so the log never holds it.
pub fn seal_token(token: &str) -> String {
    let t = token.trim();
    if reference(t).is_some() || is_sealed(t) {
        return t.to_string();
    }
    format!("sha256:{}", hex::encode(Sha256::digest(t.as_bytes())))
}

pub fn is_sealed(token: &str) -> bool {
    token.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The hex SHA-256 the router compares presented tokens with, from a sealed token or a
/// resolved secret value.
pub fn token_digest(sealed_or_value: &str) -> String {
    match sealed_or_value.strip_prefix("sha256:").filter(|_| is_sealed(sealed_or_value)) {
        Some(h) => h.to_ascii_lowercase(),
        None => hex::encode(Sha256::digest(sealed_or_value.trim().as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_checked_and_named_for_the_environment() {
        assert!(check_reference("secret://db-password").is_ok());
        assert!(check_reference("plain value").is_ok());
        assert!(check_reference("secret://").is_err());
        assert!(check_reference("secret://../etc/shadow").is_err());
        assert!(check_reference("secret://a/b").is_err());
        assert_eq!(env_name("db-password.v2"), "RINGFENCE_SECRET_DB_PASSWORD_V2");
    }

    #[test]
    fn a_token_in_the_clear_is_kept_as_its_digest_and_digests_match() {
        let sealed = seal_token(" s3cret ");
        assert!(is_sealed(&sealed) && !sealed.contains("s3cret"), "{sealed}");
        assert_eq!(seal_token(&sealed), sealed, "sealing is idempotent");
        assert_eq!(seal_token("secret://ofrep"), "secret://ofrep");
        assert_eq!(token_digest(&sealed), token_digest("s3cret"));
    }
}
