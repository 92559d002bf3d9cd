//! The network layer's errors (`NetError`), and dicom-ul's errors turned into them: words a
//! person can act on (which archive, which SOP class, what to check), never patient data
//! (no PDU or data set content is ever formatted into a message).

use std::path::PathBuf;
use std::time::Duration;

use dicom_core::dictionary::{UidDictionary, UidDictionaryEntry};
use dicom_dictionary_std::StandardSopClassDictionary;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::Error as UlError;
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderASCEReason, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource,
};

use super::association::{Peer, Proposal};
use super::dimse::DimseError;
use super::status::status_words;

/// Errors of the DICOM network layer. Messages name the archive, the SOP class and what to
/// check; they never carry patient data (no data set content is ever formatted into them).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot connect to the archive at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("association rejected by the archive {called_ae} at {addr} ({permanence}): {reason}")]
    Rejected {
        addr: String,
        called_ae: String,
        /// "permanent" or "transient" (a transient rejection may succeed later).
        permanence: &'static str,
        reason: String,
    },
    #[error("the archive refused the presentation context for {sop_class}{}",
        transfer_syntax.as_deref().map(|t| format!(" in {t}")).unwrap_or_default())]
    ContextRefused {
        /// Name and UID of the SOP class, e.g. "VL Photographic Image Storage (1.2.840...)".
        sop_class: String,
        transfer_syntax: Option<String>,
    },
    #[error("timed out after {secs} s while {during}")]
    TimedOut { secs: u64, during: &'static str },
    #[error("the archive aborted the association while {during} ({reason})")]
    Aborted {
        during: &'static str,
        reason: String,
    },
    #[error("the archive closed the connection while {during}")]
    Closed { during: &'static str },
    #[error("connection to the archive failed while {during}: {source}")]
    Io {
        during: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected response from the archive while {during}: {detail}")]
    UnexpectedResponse {
        during: &'static str,
        detail: String,
    },
    #[error("{operation} failed: {}{}", status_words(*status),
        comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Failed {
        operation: &'static str,
        status: u16,
        comment: Option<String>,
    },
    #[error("TLS setup: cannot use {what} {}: {reason}", path.display())]
    TlsConfig {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    TlsSettings(String),
    #[error("the archive at {addr} did not answer the association request: {hint}")]
    NoAnswer { addr: String, hint: &'static str },
    #[error("TLS with the archive at {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("DICOM protocol error while {during}: {detail}")]
    Protocol {
        during: &'static str,
        detail: String,
    },
    #[error(transparent)]
    Dimse(#[from] DimseError),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl NetError {
    /// Whether trying again later could help (network trouble, busy archive), as opposed to
    /// a configuration problem a person must fix first.
    pub fn is_transient(&self) -> bool {
        match self {
            NetError::Connect { .. }
            | NetError::TimedOut { .. }
            | NetError::Aborted { .. }
            | NetError::Closed { .. }
            | NetError::NoAnswer { .. }
            | NetError::Io { .. } => true,
            NetError::Rejected { permanence, .. } => *permanence == "transient",
            _ => false,
        }
    }
}

/// "VL Photographic Image Storage (1.2.840.10008.5.1.4.1.1.77.1.4)", or just the UID.
pub fn sop_class_name(uid: &str) -> String {
    match StandardSopClassDictionary.by_uid(uid) {
        Some(e) => format!("{} ({uid})", e.name()),
        None => uid.to_string(),
    }
}

/// "JPEG Baseline (Process 1) (1.2.840.10008.1.2.4.50)", or just the UID.
pub fn transfer_syntax_name(uid: &str) -> String {
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) => format!("{} ({uid})", ts.name()),
        None => uid.to_string(),
    }
}

pub(crate) fn timed_out(timeout: Duration, during: &'static str) -> NetError {
    // Round up so that a sub-second timeout does not read "after 0 s".
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    NetError::TimedOut { secs, during }
}

pub(crate) struct ErrCtx<'a> {
    pub(crate) addr: &'a str,
    pub(crate) peer: &'a Peer,
    pub(crate) proposals: &'a [Proposal],
    pub(crate) during: &'static str,
}

impl ErrCtx<'_> {
    /// dicom-ul's errors while opening, in words (its `Display` alone often hides the cause,
    /// e.g. "failed to receive pdu").
    pub(crate) fn map(&self, e: UlError) -> NetError {
        match e {
            UlError::Connect { source, .. } | UlError::ToAddress { source, .. } => {
                // dicom-ul's async TLS path reports a failed handshake (bad certificate, ...)
                // as a connect error carrying the rustls error.
                if let Some(tls) = source
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                {
                    return NetError::Tls {
                        addr: self.addr.to_string(),
                        reason: tls_words(tls),
                    };
                }
                NetError::Connect {
                    addr: self.addr.to_string(),
                    source,
                }
            }
            UlError::Rejected { association_rj, .. } => NetError::Rejected {
                addr: self.addr.to_string(),
                called_ae: self.peer.called_ae.clone(),
                permanence: match association_rj.result {
                    AssociationRJResult::Permanent => "permanent",
                    AssociationRJResult::Transient => "transient",
                },
                reason: rejection_words(&association_rj, self.peer),
            },
            UlError::NoAcceptedPresentationContexts { .. } => NetError::ContextRefused {
                sop_class: self
                    .proposals
                    .iter()
                    .map(|p| sop_class_name(&p.abstract_syntax))
                    .collect::<Vec<_>>()
                    .join(", "),
                transfer_syntax: None,
            },
            UlError::TlsHandshake { source, .. } => NetError::Tls {
                addr: self.addr.to_string(),
                reason: format!("handshake failed ({source}); does the archive's port speak TLS?"),
            },
            UlError::TlsConnection { source, .. } => NetError::Tls {
                addr: self.addr.to_string(),
                reason: tls_words(&source),
            },
            UlError::InvalidServerName { .. } => NetError::TlsSettings(
                "server_name (or host) is not a valid DNS name or IP address".into(),
            ),
            // dicom-ul (async-tls) says this for any failure to read the answer to the
            // A-ASSOCIATE-RQ on a plain connection; our timer has already turned timeouts
            // into `TimedOut`, so what is left is a closed connection or a TLS-only port.
            UlError::TlsNotSupported => NetError::NoAnswer {
                addr: self.addr.to_string(),
                hint: if self.peer.tls.is_some() {
                    // TLS 1.3: a refused client certificate only shows after our handshake
                    // "succeeded", as a closed connection on the first read.
                    "it closed the TLS connection; an archive does this when it requires a \
                     client certificate it trusts (check client_cert / client_key)"
                } else {
                    "it closed the connection, or it expects TLS on this port (check the tls \
                     setting)"
                },
            },
            other => map_established(other, self.addr, self.peer.timeout, self.during),
        }
    }
}

/// dicom-ul's errors on an open association.
pub(crate) fn map_established(
    e: UlError,
    addr: &str,
    timeout: Duration,
    during: &'static str,
) -> NetError {
    match e {
        UlError::Timeout { .. } => timed_out(timeout, during),
        UlError::Aborted { .. } => NetError::Aborted {
            during,
            reason: "no reason given".into(),
        },
        UlError::ConnectionClosed { .. } => NetError::Closed { during },
        UlError::WireSend { source, .. } | UlError::WireRead { source, .. } => {
            NetError::Io { during, source }
        }
        UlError::Connect { source, .. } => NetError::Connect {
            addr: addr.to_string(),
            source,
        },
        UlError::UnexpectedPdu { pdu, .. } | UlError::UnknownPdu { pdu, .. } => {
            NetError::UnexpectedResponse {
                during,
                detail: pdu.short_description().to_string(),
            }
        }
        other => NetError::Protocol {
            during,
            detail: error_chain(&other),
        },
    }
}

/// An error and its sources, "a: b: c" (dicom-ul's top-level messages are often generic).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// A-ASSOCIATE-RJ reason (PS3.8 9.3.4) in words, with what to check.
fn rejection_words(rj: &AssociationRJ, peer: &Peer) -> String {
    match &rj.source {
        AssociationRJSource::ServiceUser(r) => match r {
            AssociationRJServiceUserReason::CalledAETitleNotRecognized => format!(
                "called AE title not recognized: the archive is not {:?}; check the archive's \
                 AE title (called_ae)",
                peer.called_ae
            ),
            AssociationRJServiceUserReason::CallingAETitleNotRecognized => format!(
                "calling AE title not recognized: the archive does not know this station as \
                 {:?}; register it on the archive or fix calling_ae",
                peer.calling_ae
            ),
            AssociationRJServiceUserReason::ApplicationContextNameNotSupported => {
                "application context name not supported".into()
            }
            AssociationRJServiceUserReason::NoReasonGiven => {
                "no reason given (by the archive application)".into()
            }
            AssociationRJServiceUserReason::Reserved(c) => {
                format!("reason code {c} (by the archive application)")
            }
        },
        AssociationRJSource::ServiceProviderASCE(r) => match r {
            AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported => {
                "DICOM protocol version not supported".into()
            }
            AssociationRJServiceProviderASCEReason::NoReasonGiven => {
                "no reason given (by the archive's DICOM layer)".into()
            }
        },
        AssociationRJSource::ServiceProviderPresentation(r) => match r {
            AssociationRJServiceProviderPresentationReason::TemporaryCongestion => {
                "the archive is temporarily congested; try again later".into()
            }
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded => {
                "the archive has reached its limit of associations; try again later".into()
            }
            AssociationRJServiceProviderPresentationReason::Reserved(c) => {
                format!("reason code {c} (by the archive's network layer)")
            }
        },
    }
}

fn tls_words(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(_) => {
            format!("{e} (check ca_file, and server_name against the archive's certificate)")
        }
        rustls::Error::AlertReceived(_) => {
            format!("{e} (the archive refused the handshake: check client_cert / client_key)")
        }
        _ => e.to_string(),
    }
}

pub(crate) fn abort_words(source: &AbortRQSource) -> String {
    match source {
        AbortRQSource::ServiceUser => "by the archive application".into(),
        AbortRQSource::ServiceProvider(r) => match r {
            AbortRQServiceProviderReason::ReasonNotSpecified => {
                "by the archive's DICOM layer, no reason given".into()
            }
            other => format!("by the archive's DICOM layer: {other}"),
        },
        AbortRQSource::Reserved => "reserved source".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::association::tests::peer;

    #[test]
    fn rejection_in_words() {
        let rj = AssociationRJ {
            result: AssociationRJResult::Permanent,
            source: AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            ),
        };
        assert!(rejection_words(&rj, &peer()).starts_with("called AE title not recognized"));
    }

    #[test]
    fn timeout_rounds_up() {
        assert_eq!(
            timed_out(Duration::from_millis(1500), "x").to_string(),
            "timed out after 2 s while x"
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            sop_class_name("1.2.840.10008.1.1"),
            "Verification SOP Class (1.2.840.10008.1.1)"
        );
        assert!(transfer_syntax_name("1.2.840.10008.1.2.4.50").starts_with("JPEG Baseline"));
        assert_eq!(sop_class_name("1.2.3"), "1.2.3");
    }

    #[test]
    fn failed_status_in_words() {
        let e = NetError::Failed {
            operation: "C-ECHO",
            status: 0xA700,
            comment: None,
        };
        assert_eq!(
            e.to_string(),
            "C-ECHO failed: 0xA700 refused: out of resources"
        );
    }
}
