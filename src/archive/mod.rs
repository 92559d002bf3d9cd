//! The clinic's imaging archive (PACS), over DICOM: the destination that files every
//! assessment made under an examination context, its judged frame as an image instance and
//! its result as a Structured Report in the same study (docs/integration.md).
//!
//! In three layers, lowest first:
//! - the objects, I/O-free: `filing.rs` (what one assessment files), `uid.rs` (UIDs derived from
//!   the assessment id), `jpeg.rs` (what the frame's JPEG is), `encode.rs` and `modules.rs` (the
//!   attributes), `image.rs` (the image instance), `sr.rs` (the report);
//! - the network: `association.rs` (an association, C-STORE, C-ECHO), `dimse.rs` (the command
//!   sets dicom-ul leaves to us), `status.rs` (DICOM statuses in words), `error.rs` (what went
//!   wrong, in words that never carry patient data), `tls.rs` (DICOM over TLS), `worklist.rs`
//!   (C-FIND on a Modality Worklist);
//! - the destination: `filed.rs` (a spooled assessment read back into a filing) and
//!   `destination.rs` (the task reading the spool through its own cursor).

pub mod association;
mod destination;
mod dimse;
pub mod encode;
mod error;
mod filed;
pub mod filing;
pub mod image;
pub mod jpeg;
mod modules;
pub mod sr;
pub mod status;
mod tls;
pub mod uid;
pub mod worklist;

use std::time::Duration;

pub use association::{NetError, Peer, TlsSettings};
pub use destination::{start, ArchiveHandle, ArchiveMode, ArchiveSetup, DESTINATION};

use crate::config::{DicomConfig, DicomTlsConfig};

fn tls(config: Option<&DicomTlsConfig>) -> Option<TlsSettings> {
    config.map(|t| TlsSettings {
        ca_file: Some(t.ca_file.clone()),
        client_cert: t.client_cert.clone(),
        client_key: t.client_key.clone(),
        server_name: t.server_name.clone(),
    })
}

/// The archive, from `[dicom]`.
pub fn peer(config: &DicomConfig) -> Peer {
    Peer {
        host: config.host.clone(),
        port: config.port,
        calling_ae: config.ae_title.clone(),
        called_ae: config.peer_ae_title.clone(),
        tls: tls(config.tls.as_ref()),
        timeout: Duration::from_secs(config.timeout_secs),
    }
}

/// The worklist provider, from `[dicom.worklist]`, when one is configured.
pub fn worklist_peer(config: &DicomConfig) -> Option<Peer> {
    config.worklist.as_ref().map(|w| Peer {
        host: w.host.clone(),
        port: w.port,
        calling_ae: config.ae_title.clone(),
        called_ae: w.peer_ae_title.clone(),
        tls: tls(w.tls.as_ref()),
        timeout: Duration::from_secs(config.timeout_secs),
    })
}

/// Why an accession number did not give one patient.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("accession_number: no worklist entry has it")]
    NotFound,
    #[error("accession_number: {0} worklist entries have it (ambiguous): give the patient_id")]
    Ambiguous(usize),
    #[error("accession_number: its worklist entry names no patient id")]
    NoPatientId,
    #[error("the worklist: {0}")]
    Net(#[from] NetError),
}

/// The one worklist entry with this accession number.
pub async fn look_up_accession(peer: &Peer, accession: &str) -> Result<worklist::WorklistItem, LookupError> {
    let mut items = worklist::find(peer, &worklist::WorklistQuery { accession_number: accession, modality: None }).await?;
    match items.len() {
        0 => Err(LookupError::NotFound),
        1 if items[0].patient_id.trim().is_empty() => Err(LookupError::NoPatientId),
        1 => Ok(items.remove(0)),
        n => Err(LookupError::Ambiguous(n)),
    }
}
