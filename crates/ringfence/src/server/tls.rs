//! TLS for the API (rustls): `--tls-cert` and `--tls-key`, PEM files. With them the server may
//! listen on a non-loopback address; without, it listens on loopback only (docs/security.md).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server's TLS configuration from a certificate chain and its private key, both PEM.
/// Errors name the file and what is wrong with it.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("cannot read the TLS certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("the TLS certificate {} is not PEM: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "the TLS certificate {} holds no certificate (expected PEM `CERTIFICATE` blocks)",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        anyhow::anyhow!("cannot read a private key from {}: {e} (expected a PEM private key)", key.display())
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| anyhow::anyhow!("{} and {} do not make a TLS identity: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_and_its_key_load_and_bad_files_say_which() {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
        server_config(&cert, &key).expect("a valid pair");
        let err = server_config(&key, &key).unwrap_err().to_string();
        assert!(err.contains("holds no certificate") && err.contains("key.pem"), "{err}");
        let err = server_config(&cert, &cert).unwrap_err().to_string();
        assert!(err.contains("cert.pem"), "{err}");
        let err = server_config(&dir.path().join("nope.pem"), &key).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
    }
}
