//! Who may use the admin API: whoever presents the router's secret as
//! `Authorization: Bearer <secret>`. The secret lives in a file only the router's user can
//! read (`--admin-token-file`); without one the router serves its admin API to anyone only
//! when told so (`--insecure-admin`, for experiments by hand).

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use hyper::header::HeaderValue;
use sha2::{Digest as _, Sha256};

/// The admin API's shared secret. Its `Debug` does not show it, so it cannot reach a log line
/// through a `{:?}` of a config.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A new secret: 32 bytes from the operating system's random source, hex-encoded.
    pub fn generate() -> anyhow::Result<AdminToken> {
        use rand::TryRngCore as _;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes).context("cannot read random bytes for the admin token")?;
        Ok(AdminToken(hex::encode(bytes)))
    }

    /// Takes `secret` as the token after trimming surrounding whitespace; refuses an empty one
    /// or one that cannot travel in an HTTP header (only visible ASCII characters can).
    pub fn new(secret: &str) -> anyhow::Result<AdminToken> {
        let secret = secret.trim();
        if secret.is_empty() {
            bail!("the admin token is empty");
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("the admin token has characters other than visible ASCII, which cannot be sent in a header");
        }
        Ok(AdminToken(secret.to_owned()))
    }

    /// Reads the token from `path` (surrounding whitespace trimmed). Refuses a missing or empty
    /// file, and one that group or others may access (`mode & 0o077 != 0`): a secret others can
    /// read is no secret. The error names the file and, for the last case, its mode.
    pub fn read(path: &Path) -> anyhow::Result<AdminToken> {
        let shown = path.display();
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot open the admin token file {shown}"))?;
        // The mode of the file opened, not of whatever is at `path` a moment later.
        let meta = file.metadata().with_context(|| format!("cannot read the mode of the admin token file {shown}"))?;
        if !meta.is_file() {
            bail!("the admin token file {shown} is not a regular file");
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            bail!(
                "the admin token file {shown} has mode {mode:04o}: group or others may access it, so the secret \
                 is not secret; make it private to this user (chmod 600 {shown}) or write a new one"
            );
        }
        let mut text = String::new();
        file.read_to_string(&mut text).with_context(|| format!("cannot read the admin token file {shown}"))?;
        if text.trim().is_empty() {
            bail!("the admin token file {shown} is empty");
        }
        AdminToken::new(&text).with_context(|| format!("the admin token file {shown} holds no usable token"))
    }

    /// The secret itself, to send or to write; never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ
    /// (nor on the length of either: both are hashed first).
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(&Sha256::digest(self.0.as_bytes()), &Sha256::digest(presented))
    }
}

/// Who may call the admin API.
#[derive(Debug, Clone)]
pub enum AdminAuth {
    /// Every admin request except `GET /metrics` must carry `Authorization: Bearer <token>`.
    Token(AdminToken),
    /// Anyone who can connect may call it (`--insecure-admin`): for a router run by hand for an
    /// experiment, never for one that serves users.
    Insecure,
}

impl AdminAuth {
    /// From the router's command-line options: the token file if given; no authentication only
    /// if asked for explicitly; otherwise an error that says what to pass.
    pub fn from_options(token_file: Option<&Path>, insecure: bool) -> anyhow::Result<AdminAuth> {
        match (token_file, insecure) {
            (Some(_), true) => bail!("--admin-token-file and --insecure-admin exclude each other"),
            (Some(path), false) => Ok(AdminAuth::Token(AdminToken::read(path)?)),
            (None, true) => Ok(AdminAuth::Insecure),
            (None, false) => bail!(
                "the router's admin API needs a secret: pass --admin-token-file PATH (a file only this user can \
                 read, holding the secret callers send as `Authorization: Bearer <secret>`), or --insecure-admin \
                 to let anyone who can connect change the routing table (experiments by hand only)"
            ),
        }
    }
}

/// The credentials of a request's `Authorization: Bearer <credentials>` header (the scheme is
/// case-insensitive); `None` without the header or with another scheme.
pub(crate) fn bearer(value: Option<&HeaderValue>) -> Option<&[u8]> {
    let value = value?.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Equal slices, in time that depends only on their length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, content: &str, mode: u32) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ringfence-auth-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn tokens_match_only_themselves() {
        let token = AdminToken::new(" s3cret\n").unwrap();
        assert_eq!(token.expose(), "s3cret");
        assert!(token.matches(b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret ", b"S3cret", b"s3cret-and-more"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
        assert!(!format!("{:?}", AdminAuth::Token(token)).contains("s3cret"));
    }

    #[test]
    fn generated_tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (AdminToken::generate().unwrap(), AdminToken::generate().unwrap());
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn bearer_credentials_are_read_from_the_header() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(Some(&h("Bearer abc"))), Some(&b"abc"[..]));
        assert_eq!(bearer(Some(&h("bearer   abc"))), Some(&b"abc"[..]));
        assert_eq!(bearer(Some(&h("Basic abc"))), None);
        assert_eq!(bearer(Some(&h("Bearerabc"))), None);
        assert_eq!(bearer(Some(&h("abc"))), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn token_files_must_exist_hold_a_token_and_be_private() {
        let good = temp_file("good", "abc123\n", 0o600);
        assert_eq!(AdminToken::read(&good).unwrap().expose(), "abc123");
        let owner_only = temp_file("owner-only", "abc123", 0o400);
        assert!(AdminToken::read(&owner_only).is_ok());

        let open = temp_file("open", "abc123", 0o640);
        let e = format!("{:#}", AdminToken::read(&open).unwrap_err());
        assert!(e.contains(&open.display().to_string()) && e.contains("mode 0640"), "{e}");
        let writable = temp_file("writable", "abc123", 0o602);
        assert!(format!("{:#}", AdminToken::read(&writable).unwrap_err()).contains("mode 0602"));

        let empty = temp_file("empty", " \n", 0o600);
        let e = format!("{:#}", AdminToken::read(&empty).unwrap_err());
        assert!(e.contains(&empty.display().to_string()) && e.contains("empty"), "{e}");

        let missing = good.with_file_name("missing");
        let e = format!("{:#}", AdminToken::read(&missing).unwrap_err());
        assert!(e.contains(&missing.display().to_string()) && e.contains("No such file"), "{e}");

        for p in [good, owner_only, open, writable, empty] {
            std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
        }
    }

    #[test]
    fn no_option_means_no_start() {
        let e = AdminAuth::from_options(None, false).unwrap_err().to_string();
        assert!(e.contains("--admin-token-file") && e.contains("--insecure-admin"), "{e}");
        assert!(matches!(AdminAuth::from_options(None, true), Ok(AdminAuth::Insecure)));
        assert!(AdminAuth::from_options(Some(Path::new("/nonexistent")), true).is_err());
    }
}
