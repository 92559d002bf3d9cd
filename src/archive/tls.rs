//! DICOM TLS (PS3.15 B.1) client configuration: rustls with the ring provider, as lesiond
//! builds rustls (no aws-lc); the process-wide default provider is not relied on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::NetError;

/// DICOM TLS (PS3.15 B.1). `ca_file` is required: the station runs offline with no system
/// trust store we could rely on, and clinic archives use private CAs anyway.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) that signed the archive's certificate. Required.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for archives that require client authentication.
    /// Both or neither of `client_cert` / `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Name to verify the archive's certificate against; `Peer::host` when `None`
    /// (an IP address host is checked against the certificate's IP SANs).
    pub server_name: Option<String>,
}

/// rustls client configuration with the ring provider (lesiond builds rustls without
/// aws-lc; the process-wide default provider is not relied on).
pub(crate) fn client_config(tls: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, NetError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let ca_file = tls.ca_file.as_deref().ok_or_else(|| {
        NetError::TlsSettings(
            "ca_file is required: the CA certificate (PEM) that signed the archive's certificate"
                .into(),
        )
    })?;
    let load_certs =
        |what: &'static str, path: &Path| -> Result<Vec<CertificateDer<'static>>, NetError> {
            let err = |reason: String| NetError::TlsConfig {
                what,
                path: path.to_path_buf(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no PEM certificate in it".into()));
            }
            Ok(certs)
        };

    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs("CA file", ca_file)? {
        roots.add(cert).map_err(|e| NetError::TlsConfig {
            what: "CA file",
            path: ca_file.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::TlsSettings(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = load_certs("client certificate", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| NetError::TlsConfig {
                what: "client key",
                path: key.clone(),
                reason: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| NetError::TlsConfig {
                    what: "client certificate",
                    path: cert.clone(),
                    reason: e.to_string(),
                })?
        }
        _ => {
            return Err(NetError::TlsSettings(
                "client_cert and client_key go together: set both or neither".into(),
            ))
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_without_ca_file_is_a_settings_error() {
        let r = client_config(&TlsSettings {
            ca_file: None,
            client_cert: None,
            client_key: None,
            server_name: None,
        });
        assert!(matches!(r, Err(NetError::TlsSettings(_))));
    }

    #[test]
    fn cert_without_key_is_a_settings_error() {
        let dir = std::env::temp_dir();
        let r = client_config(&TlsSettings {
            ca_file: Some(dir.join("missing-ca.pem")),
            client_cert: Some(dir.join("c.pem")),
            client_key: None,
            server_name: None,
        });
        // The CA file is read first; either way it is a configuration error, not a panic.
        assert!(matches!(
            r,
            Err(NetError::TlsConfig { .. } | NetError::TlsSettings(_))
        ));
    }
}
