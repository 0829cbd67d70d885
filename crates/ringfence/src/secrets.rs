//! Resolves `secret://NAME` references (see `ringfence_core::secret`) when a value is needed:
//! from `<data-dir>/secrets/NAME` (a file only the server's user may read), else from the
//! server's environment variable `RINGFENCE_SECRET_NAME`. The value goes where it is needed
//! (a replica's environment, a router's token digests) and nowhere else: not into an event, a
//! log line or an answer of the API.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ringfence_core::secret;

/// The directory secrets are read from.
pub fn dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("secrets")
}

/// `value` itself, or the secret it refers to. The error names the secret and where it was
/// looked for, never a value.
pub fn resolve(data_dir: &Path, value: &str) -> Result<String, String> {
    let Some(name) = secret::reference(value) else { return Ok(value.to_string()) };
    secret::check_reference(value)?;
    let file = dir(data_dir).join(name);
    match std::fs::metadata(&file) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(format!(
                    "secret {name}: {} may be read by other users (mode {:o}); chmod 600 it",
                    file.display(),
                    meta.permissions().mode() & 0o777
                ));
            }
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("secret {name}: cannot read {}: {e}", file.display()))?;
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        }
        Err(_) => std::env::var(secret::env_name(name)).map_err(|_| {
            format!(
                "secret {name} is not set: put it in {} (mode 0600) or in the server's environment as {}",
                file.display(),
                secret::env_name(name)
            )
        }),
    }
}

/// Every value of `map` resolved; the first missing secret is the error.
pub fn resolve_all(data_dir: &Path, map: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    map.iter().map(|(k, v)| resolve(data_dir, v).map(|v| (k.clone(), v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_resolves_from_a_private_file_or_the_environment_and_says_where_it_looked() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir(data.path())).unwrap();
        let f = dir(data.path()).join("db");
        std::fs::write(&f, "hunter2\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(resolve(data.path(), "secret://db").unwrap(), "hunter2");
        assert_eq!(resolve(data.path(), "plain").unwrap(), "plain");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(resolve(data.path(), "secret://db").unwrap_err().contains("chmod 600"));
        let missing = resolve(data.path(), "secret://nope-here").unwrap_err();
        assert!(missing.contains("RINGFENCE_SECRET_NOPE_HERE") && missing.contains("secrets"), "{missing}");
        assert!(resolve(data.path(), "secret://../x").is_err());
    }
}
