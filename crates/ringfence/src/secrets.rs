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
        Ok(_) => read_private_file(&file).map_err(|e| format!("secret {name}: {e}")),
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
/// A file of secret text, refused when other users may read it; trailing newlines trimmed.
pub fn read_private_file(file: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} may be read by other users (mode {:o}); chmod 600 it",
            file.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

pub fn resolve_all(data_dir: &Path, map: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String> {
    map.iter().map(|(k, v)| resolve(data_dir, v).map(|v| (k.clone(), v))).collect()
}

/// The values the secret references among `maps` resolve to (those that resolve), so that
/// output which may echo them (a hook's, a replica's last log lines) can be cleaned of them.
pub fn values(data_dir: &Path, maps: &[&BTreeMap<String, String>]) -> Vec<String> {
    maps.iter()
        .flat_map(|m| m.values())
        .filter(|v| secret::reference(v).is_some())
        .filter_map(|v| resolve(data_dir, v).ok())
        .filter(|v| !v.is_empty())
        .collect()
}

/// `text` with every one of `values` replaced by `<redacted>`.
pub fn redact(text: &str, values: &[String]) -> String {
    values.iter().fold(text.to_string(), |t, v| t.replace(v.as_str(), "<redacted>"))
}

/// The digest a router compares an OFREP token with. A `secret://` token that cannot be
/// resolved gets a digest no token has (all zeros): OFREP stays closed, never open.
pub fn token_digest(data_dir: &Path, workload: &str, token: &str) -> String {
    match resolve(data_dir, token) {
        Ok(value) => ringfence_core::secret::token_digest(&value),
        Err(e) => {
            tracing::warn!(workload, error = %e, "an OFREP token cannot be resolved; no client can use it");
            "0".repeat(64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cleaned_of_the_values_of_references_only() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir(data.path())).unwrap();
        let f = dir(data.path()).join("db");
        std::fs::write(&f, "hunter2").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = BTreeMap::from([("DB".to_string(), "secret://db".to_string()), ("MODE".into(), "fast".into())]);
        let found = values(data.path(), &[&env]);
        assert_eq!(found, vec!["hunter2".to_string()]);
        assert_eq!(redact("password=hunter2 mode=fast", &found), "password=<redacted> mode=fast");
    }

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
