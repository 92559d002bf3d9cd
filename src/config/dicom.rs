//! `[context]` and `[dicom]` as written: the examination context's lifetime, and the clinic's
//! imaging archive (docs/integration.md).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// A context ends this long after it was set or after the last assessment made under it,
    /// whichever is later; 0 = only when replaced or cleared.
    pub idle_timeout_secs: u64,
    /// Where the context in force is kept (patient data: 0700). Default: `context` beside the
    /// spool directory.
    pub dir: Option<PathBuf>,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self { idle_timeout_secs: 1800, dir: None }
    }
}

/// Which storage SOP class the judged image is filed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DicomSopClass {
    /// Dermoscopic Photography Image Storage (1.2.840.10008.5.1.4.1.1.77.1.7).
    Dermoscopic,
    /// VL Photographic Image Storage (1.2.840.10008.5.1.4.1.1.77.1.4), for archives that do not
    /// know the dermoscopic class.
    VlPhotographic,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomConfig {
    pub enabled: bool,
    /// This station's (calling) AE title.
    pub ae_title: String,
    /// The archive's (called) AE title.
    pub peer_ae_title: String,
    pub host: String,
    pub port: u16,
    pub sop_class: DicomSopClass,
    /// Also file assessments made with no context set (under a placeholder patient): off, so
    /// that nothing unassigned lands in a patient archive by default.
    pub send_unassigned: bool,
    /// Seconds for connecting, each answer, and each C-STORE.
    pub timeout_secs: u64,
    /// Longest wait between retries while the archive is down or refuses.
    pub retry_max_secs: u64,
    pub tls: Option<DicomTlsConfig>,
    /// A Modality Worklist to complete a context that gives only an accession number.
    pub worklist: Option<WorklistConfig>,
}

impl Default for DicomConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ae_title: "LESIOND".into(),
            peer_ae_title: String::new(),
            host: String::new(),
            port: 104,
            sop_class: DicomSopClass::Dermoscopic,
            send_unassigned: false,
            timeout_secs: 30,
            retry_max_secs: 300,
            tls: None,
            worklist: None,
        }
    }
}

/// DICOM over TLS (PS3.15 Annex B): the archive's certificate is checked against `ca_file`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomTlsConfig {
    /// PEM file of the certificate authorities trusted for the archive.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, where the archive authenticates its clients.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name in the archive's certificate, when it is not `host`.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorklistConfig {
    pub host: String,
    pub port: u16,
    /// The worklist provider's (called) AE title.
    pub peer_ae_title: String,
    pub tls: Option<DicomTlsConfig>,
}
