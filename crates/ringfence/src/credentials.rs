//! Where client commands find their API token.
//!
//! In order: the file `--token-file` (or `$RINGFENCE_TOKEN_FILE`) names; `$RINGFENCE_TOKEN`;
//! `~/.config/ringfence/token` (`$XDG_CONFIG_HOME` honoured); and, for a server on this
//! machine (a loopback URL), the admin token the server wrote to its data directory on first
//! start (`$RINGFENCE_DATA_DIR` or the default one). Never a command-line value: other users
//! can read command lines in `ps`.

use std::path::{Path, PathBuf};

use crate::exit::{CliError, ExitCode};

/// Where a token was found, for messages (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub token: String,
    pub source: String,
}

pub fn find_token(server: &str, token_file: Option<&Path>) -> Result<Option<Found>, CliError> {
    if let Some(file) = token_file {
        return read(file).map(Some);
    }
    if let Some(t) = std::env::var("RINGFENCE_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Ok(Some(Found { token: t.trim().to_owned(), source: "$RINGFENCE_TOKEN".into() }));
    }
    for file in candidates(server) {
        if file.is_file() {
            return read(&file).map(Some);
        }
    }
    Ok(None)
}

/// The files looked at when no token is given, in order.
pub fn candidates(server: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = config {
        out.push(c.join("ringfence").join("token"));
    }
    if is_loopback(server) {
        if let Some(d) = std::env::var_os("RINGFENCE_DATA_DIR").filter(|d| !d.is_empty()) {
            out.push(crate::server::admin_token_path(Path::new(&d)));
        }
        out.push(crate::server::admin_token_path(&crate::cli::default_data_dir()));
    }
    out
}

fn read(file: &Path) -> Result<Found, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::new(ExitCode::Denied, format!("cannot read the token file {}: {e}", file.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError::new(ExitCode::Denied, format!("the token file {} is empty", file.display())));
    }
    Ok(Found { token: token.to_owned(), source: file.display().to_string() })
}

fn is_loopback(server: &str) -> bool {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(host, |(h, _)| h);
    matches!(host, "localhost" | "[::1]") || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_on_this_machine_gets_the_local_admin_token() {
        assert!(is_loopback("http://127.0.0.1:7070"));
        assert!(is_loopback("http://localhost:7070/"));
        assert!(is_loopback("http://[::1]:7070"));
        assert!(!is_loopback("https://deploy.example.com"));
        assert!(!is_loopback("http://10.0.0.5:7070"));
    }

    #[test]
    fn a_token_file_is_read_trimmed_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "rf1.ab.cd\n").unwrap();
        assert_eq!(find_token("http://x", Some(&f)).unwrap().unwrap().token, "rf1.ab.cd");
        std::fs::write(&f, "  \n").unwrap();
        assert!(find_token("http://x", Some(&f)).unwrap_err().message.contains("is empty"));
    }
}
