//! A DICOM association to the archive (we are the service class user): open with the
//! presentation contexts we need, C-ECHO, C-STORE, then release.
//!
//! dicom-ul does the A-ASSOCIATE / P-DATA / A-RELEASE PDUs; the DIMSE messages on top (command
//! set + data set, fragmented into PDVs) are done here and in `super::dimse`.
//!
//! Pitfalls handled here:
//! - dicom-ul's async client has no timeouts unless set. We time every PDU send and receive
//!   ourselves with `Peer::timeout`, and the whole opening (TCP + TLS handshake +
//!   A-ASSOCIATE; dicom-ul does not time the TLS handshake) as one. dicom-ul's own timeouts
//!   are set one second longer, as a backstop only: with the `async-tls` feature, dicom-ul
//!   reports *any* failure to read the A-ASSOCIATE answer (its own timeout included) as
//!   "TLS not supported", so our timer has to be the one that fires.
//! - An association is "accepted" even when some presentation contexts were refused: dicom-ul
//!   keeps only the accepted ones, so `accepted` / `accepts` look there and `store` refuses to
//!   send in a refused (SOP class, transfer syntax) pair instead of letting the archive abort.
//! - dicom-ul's `send_pdata` writer uses `block_in_place`, which panics on a current-thread
//!   runtime; we fragment P-DATA ourselves with plain `send`, so any runtime works.

use std::collections::VecDeque;
use std::time::Duration;

use dicom_ul::association::client::{AsyncClientAssociation, AsyncTlsStream};
use dicom_ul::association::Error as UlError;
use dicom_ul::pdu::{AbortRQSource, PDataValue, PDataValueType, PresentationContextNegotiated};
use dicom_ul::{ClientAssociationOptions, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::dimse::{self, Response};
use super::error::{abort_words, map_established, timed_out, ErrCtx};
pub use super::error::{sop_class_name, transfer_syntax_name, NetError};
use super::status::{self, status_words};
use super::tls::client_config;
pub use super::tls::TlsSettings;

/// Verification SOP class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Where the archive is and who we are to it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    /// Our AE title (this station), as registered on the archive.
    pub calling_ae: String,
    /// The archive's AE title.
    pub called_ae: String,
    pub tls: Option<TlsSettings>,
    /// Applies to connecting, to opening the association as a whole, and to each PDU read or
    /// write afterwards (a large C-STORE is many writes, each with this limit).
    pub timeout: Duration,
}

/// One presentation context: an abstract syntax (SOP class) with the transfer syntaxes we can
/// send it in, in order of preference (the archive picks one, usually the first it supports).
/// Propose a compressed transfer syntax in its own context next to an uncompressed one, so a
/// refusal of the compressed one still leaves a way to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
}

impl Proposal {
    pub fn new(abstract_syntax: &str, transfer_syntaxes: &[&str]) -> Proposal {
        Proposal {
            abstract_syntax: abstract_syntax.to_string(),
            transfer_syntaxes: transfer_syntaxes.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The archive's answer to a C-STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    pub code: u16,
    /// Error Comment (0000,0902), free text from the archive.
    pub comment: Option<String>,
}

impl StoreStatus {
    pub fn is_success(&self) -> bool {
        status::is_success(self.code)
    }
    /// Stored, but the archive changed or dropped something (0xB000, 0xB006, 0xB007, ...).
    pub fn is_warning(&self) -> bool {
        status::is_warning(self.code)
    }
    /// Stored (success or warning).
    pub fn is_stored(&self) -> bool {
        self.is_success() || self.is_warning()
    }
}

impl std::fmt::Display for StoreStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&status_words(self.code))?;
        if let Some(c) = &self.comment {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// The two stream types dicom-ul gives us; one enum so `Association` is not generic (lesiond
/// picks TLS or not from its configuration at run time).
enum Link {
    Plain(Box<AsyncClientAssociation<TcpStream>>),
    Tls(Box<AsyncClientAssociation<AsyncTlsStream>>),
}

impl Link {
    async fn send(&mut self, pdu: &Pdu) -> Result<(), UlError> {
        match self {
            Link::Plain(a) => a.send(pdu).await,
            Link::Tls(a) => a.send(pdu).await,
        }
    }
    async fn receive(&mut self) -> Result<Pdu, UlError> {
        match self {
            Link::Plain(a) => a.receive().await,
            Link::Tls(a) => a.receive().await,
        }
    }
    fn contexts(&self) -> &[PresentationContextNegotiated] {
        match self {
            Link::Plain(a) => a.presentation_contexts(),
            Link::Tls(a) => a.presentation_contexts(),
        }
    }
    fn peer_max_pdu(&self) -> u32 {
        match self {
            Link::Plain(a) => a.acceptor_max_pdu_length(),
            Link::Tls(a) => a.acceptor_max_pdu_length(),
        }
    }
    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Link::Plain(a) => a.inner_stream().shutdown().await,
            Link::Tls(a) => a.inner_stream().shutdown().await,
        }
    }
}

/// How much longer dicom-ul's own timeouts are than ours (see the module comment).
const BACKSTOP: Duration = Duration::from_secs(1);

/// PDV item header inside a P-DATA-TF PDU: item length (4), context ID (1), control (1).
const PDV_HEADER: u32 = 6;
/// Fragment size cap: any size up to the archive's maximum is legal; this bounds the copy
/// made per PDU.
const MAX_FRAGMENT: u32 = 256 * 1024;

/// An open association. Call `release` at the end: dropping it only closes the socket.
pub struct Association {
    link: Link,
    addr: String,
    timeout: Duration,
    next_message_id: u16,
    /// PDVs received but not consumed yet (a PDU may carry the end of the command set and
    /// the start of the data set).
    pending: VecDeque<PDataValue>,
}

impl std::fmt::Debug for Association {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Association")
            .field("addr", &self.addr)
            .field("contexts", &self.link.contexts())
            .finish_non_exhaustive()
    }
}

impl Association {
    /// Connect and negotiate one presentation context per proposal.
    ///
    /// Succeeds when at least one context is accepted; check `accepted` / `accepts` for the
    /// ones you need. Fails with `ContextRefused` when the archive accepted none.
    pub async fn open(peer: &Peer, proposals: &[Proposal]) -> Result<Association, NetError> {
        check_request(peer, proposals)?;
        let addr = format!("{}:{}", peer.host, peer.port);
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(peer.calling_ae.as_str())
            .called_ae_title(peer.called_ae.as_str())
            .read_timeout(peer.timeout + BACKSTOP)
            .write_timeout(peer.timeout + BACKSTOP)
            .connection_timeout(peer.timeout + BACKSTOP);
        for p in proposals {
            options = options.with_presentation_context(
                p.abstract_syntax.as_str(),
                p.transfer_syntaxes.iter().map(String::as_str).collect(),
            );
        }
        let ctx = ErrCtx {
            addr: &addr,
            peer,
            proposals,
            during: "opening the association",
        };
        // TLS files are read before connecting: their errors are configuration errors.
        let tls = match &peer.tls {
            None => None,
            Some(t) => Some((
                client_config(t)?,
                t.server_name.as_deref().unwrap_or(&peer.host),
            )),
        };
        let target = (peer.host.as_str(), peer.port);
        let establish = async {
            match tls {
                None => options
                    .establish_async(target)
                    .await
                    .map(|a| Link::Plain(Box::new(a))),
                Some((config, name)) => options
                    .tls_config(config)
                    .server_name(name)
                    .establish_tls_async(target)
                    .await
                    .map(|a| Link::Tls(Box::new(a))),
            }
        };
        // One limit over the whole opening: dicom-ul does not time the TLS handshake.
        let link = match tokio::time::timeout(peer.timeout, establish).await {
            Err(_) => return Err(timed_out(peer.timeout, "opening the association")),
            Ok(Err(e)) => return Err(ctx.map(e)),
            Ok(Ok(link)) => link,
        };
        let assoc = Association {
            link,
            addr,
            timeout: peer.timeout,
            next_message_id: 1,
            pending: VecDeque::new(),
        };
        for p in proposals {
            match assoc.accepted(&p.abstract_syntax) {
                Some(ts) => tracing::debug!(
                    sop_class = %p.abstract_syntax, transfer_syntax = ts,
                    "presentation context accepted"
                ),
                None => tracing::info!(
                    sop_class = %p.abstract_syntax, proposed = ?p.transfer_syntaxes,
                    "the archive refused this presentation context"
                ),
            }
        }
        Ok(assoc)
    }

    /// The transfer syntax the archive accepted for this abstract syntax (first accepted
    /// context proposing it), `None` if every such context was refused.
    pub fn accepted(&self, abstract_syntax: &str) -> Option<&str> {
        self.link
            .contexts()
            .iter()
            .find(|c| uid_eq(&c.abstract_syntax, abstract_syntax))
            .map(|c| trim_uid(&c.transfer_syntax))
    }

    /// Whether this (abstract syntax, transfer syntax) pair was accepted.
    pub fn accepts(&self, abstract_syntax: &str, transfer_syntax: &str) -> bool {
        self.context_id(abstract_syntax, transfer_syntax).is_some()
    }

    /// All accepted (abstract syntax, transfer syntax) pairs.
    pub fn accepted_contexts(&self) -> Vec<(&str, &str)> {
        self.link
            .contexts()
            .iter()
            .map(|c| (trim_uid(&c.abstract_syntax), trim_uid(&c.transfer_syntax)))
            .collect()
    }

    fn context_id(&self, abstract_syntax: &str, transfer_syntax: &str) -> Option<u8> {
        self.link
            .contexts()
            .iter()
            .find(|c| {
                uid_eq(&c.abstract_syntax, abstract_syntax)
                    && uid_eq(&c.transfer_syntax, transfer_syntax)
            })
            .map(|c| c.id)
    }

    /// C-STORE one instance. `dataset` is the data set already encoded in
    /// `transfer_syntax_uid`, without file meta information (group 0002).
    ///
    /// A refusal by the archive is `Ok` with a failure `StoreStatus` (check `is_stored`);
    /// `Err` is for everything that is not an answer to the request.
    /// After an `Err` other than `ContextRefused` (nothing was sent then) the association's
    /// state is unknown: `abort` it rather than storing more or releasing.
    pub async fn store(
        &mut self,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        transfer_syntax_uid: &str,
        dataset: &[u8],
    ) -> Result<StoreStatus, NetError> {
        let during = "storing an instance";
        let pc_id = self
            .context_id(sop_class_uid, transfer_syntax_uid)
            .ok_or_else(|| {
                NetError::ContextRefused {
                    sop_class: sop_class_name(sop_class_uid),
                    // Name the transfer syntax only when the SOP class itself was accepted in
                    // another one: then the transfer syntax is what to change.
                    transfer_syntax: self.accepted(sop_class_uid).map(|accepted| {
                        format!(
                            "{} (accepted: {})",
                            transfer_syntax_name(transfer_syntax_uid),
                            transfer_syntax_name(accepted)
                        )
                    }),
                }
            })?;
        // A whole Part 10 file (preamble + "DICM" + group 0002) is a common mistake: the
        // archive would fail to parse it, possibly only after reading all of it.
        if dataset.get(128..132) == Some(b"DICM") || dataset.starts_with(&[0x02, 0x00]) {
            return Err(NetError::InvalidRequest(
                "the data set to store carries a file preamble or file meta information \
                 (group 0002); send the data set only"
                    .into(),
            ));
        }
        let message_id = self.message_id();
        let command = dimse::store_rq(message_id, sop_class_uid, sop_instance_uid)?;
        self.send_message(pc_id, &command, Some(dataset), during)
            .await?;
        let (rsp, data) = self.receive_message(during).await?;
        expect_response(&rsp, dimse::C_STORE_RSP, message_id, during)?;
        if data.is_some() {
            tracing::debug!("C-STORE-RSP came with a data set; ignored");
        }
        Ok(StoreStatus {
            code: rsp.status,
            comment: rsp.error_comment,
        })
    }

    /// C-ECHO (needs an accepted Verification context).
    pub async fn echo(&mut self) -> Result<(), NetError> {
        let during = "verifying the connection (C-ECHO)";
        let pc_id = self
            .link
            .contexts()
            .iter()
            .find(|c| uid_eq(&c.abstract_syntax, VERIFICATION))
            .map(|c| c.id)
            .ok_or_else(|| NetError::ContextRefused {
                sop_class: sop_class_name(VERIFICATION),
                transfer_syntax: None,
            })?;
        let message_id = self.message_id();
        let command = dimse::echo_rq(message_id)?;
        self.send_message(pc_id, &command, None, during).await?;
        let (rsp, _) = self.receive_message(during).await?;
        expect_response(&rsp, dimse::C_ECHO_RSP, message_id, during)?;
        if !status::is_success(rsp.status) {
            return Err(NetError::Failed {
                operation: "C-ECHO",
                status: rsp.status,
                comment: rsp.error_comment,
            });
        }
        Ok(())
    }

    /// Release the association (A-RELEASE); abort it when the release fails, so the archive
    /// does not keep a half-open association.
    pub async fn release(mut self) -> Result<(), NetError> {
        let during = "releasing the association";
        // Done by hand rather than with dicom-ul's `release(self)`: that one consumes the
        // association, leaving nothing to abort with when it fails.
        let result = async {
            self.send_pdu(&Pdu::ReleaseRQ, during).await?;
            loop {
                match self.receive_pdu(during).await? {
                    Pdu::ReleaseRP => return Ok(()),
                    // Leftover responses (e.g. after a cancelled operation) may still come.
                    Pdu::PData { .. } => continue,
                    other => return Err(not_expected(other, during)),
                }
            }
        }
        .await;
        if result.is_err() {
            let abort = Pdu::AbortRQ {
                source: AbortRQSource::ServiceUser,
            };
            let _ = self.send_pdu(&abort, during).await;
        }
        let _ = tokio::time::timeout(self.timeout, self.link.shutdown()).await;
        result
    }

    /// Abort the association (A-ABORT), e.g. after a failure mid-operation.
    pub async fn abort(mut self) {
        let abort = Pdu::AbortRQ {
            source: AbortRQSource::ServiceUser,
        };
        let _ = self.send_pdu(&abort, "aborting the association").await;
        let _ = tokio::time::timeout(self.timeout, self.link.shutdown()).await;
    }

    /// One PDU out, under the peer timeout.
    async fn send_pdu(&mut self, pdu: &Pdu, during: &'static str) -> Result<(), NetError> {
        match tokio::time::timeout(self.timeout, self.link.send(pdu)).await {
            Err(_) => Err(timed_out(self.timeout, during)),
            Ok(r) => r.map_err(|e| map_established(e, &self.addr, self.timeout, during)),
        }
    }

    /// One PDU in, under the peer timeout.
    async fn receive_pdu(&mut self, during: &'static str) -> Result<Pdu, NetError> {
        match tokio::time::timeout(self.timeout, self.link.receive()).await {
            Err(_) => Err(timed_out(self.timeout, during)),
            Ok(r) => r.map_err(|e| map_established(e, &self.addr, self.timeout, during)),
        }
    }

    // ---- DIMSE message transport, shared with `super::worklist` ----

    pub(crate) fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Presentation context ID for an abstract syntax (first accepted one) and its transfer
    /// syntax.
    pub(crate) fn context_for(&self, abstract_syntax: &str) -> Option<(u8, String)> {
        self.link
            .contexts()
            .iter()
            .find(|c| uid_eq(&c.abstract_syntax, abstract_syntax))
            .map(|c| (c.id, trim_uid(&c.transfer_syntax).to_string()))
    }

    /// Send a command set and, if given, a data set, each split into PDVs that fit the
    /// archive's maximum PDU length.
    pub(crate) async fn send_message(
        &mut self,
        pc_id: u8,
        command: &[u8],
        data: Option<&[u8]>,
        during: &'static str,
    ) -> Result<(), NetError> {
        self.send_fragments(pc_id, PDataValueType::Command, command, during)
            .await?;
        if let Some(data) = data {
            self.send_fragments(pc_id, PDataValueType::Data, data, during)
                .await?;
        }
        Ok(())
    }

    async fn send_fragments(
        &mut self,
        pc_id: u8,
        kind: PDataValueType,
        bytes: &[u8],
        during: &'static str,
    ) -> Result<(), NetError> {
        let max = self.link.peer_max_pdu().clamp(PDV_HEADER + 2, MAX_FRAGMENT) - PDV_HEADER;
        // Even-sized fragments: PDV values must have even length (PS3.8 9.3.1).
        let chunk = (max & !1) as usize;
        let mut chunks = bytes.chunks(chunk).peekable();
        if chunks.peek().is_none() {
            // An empty data set is still one (last) fragment.
            let pdu = pdata(pc_id, kind, true, Vec::new());
            return self.send_pdu(&pdu, during).await;
        }
        while let Some(part) = chunks.next() {
            let last = chunks.peek().is_none();
            let pdu = pdata(pc_id, kind.clone(), last, part.to_vec());
            self.send_pdu(&pdu, during).await?;
        }
        Ok(())
    }

    /// Receive one DIMSE message: the whole command set, then the data set if the command
    /// says one follows. Each PDU read has the peer timeout.
    pub(crate) async fn receive_message(
        &mut self,
        during: &'static str,
    ) -> Result<(Response, Option<Vec<u8>>), NetError> {
        let command = self
            .receive_fragments(PDataValueType::Command, during)
            .await?;
        let rsp = dimse::parse_response(&command)?;
        let data = if rsp.has_data_set {
            Some(self.receive_fragments(PDataValueType::Data, during).await?)
        } else {
            None
        };
        Ok((rsp, data))
    }

    async fn receive_fragments(
        &mut self,
        kind: PDataValueType,
        during: &'static str,
    ) -> Result<Vec<u8>, NetError> {
        let mut out = Vec::new();
        loop {
            while let Some(pdv) = self.pending.pop_front() {
                if pdv.value_type != kind {
                    return Err(NetError::UnexpectedResponse {
                        during,
                        detail: format!(
                            "a {} fragment arrived where a {} fragment was expected",
                            kind_name(&pdv.value_type),
                            kind_name(&kind)
                        ),
                    });
                }
                out.extend_from_slice(&pdv.data);
                if pdv.is_last {
                    return Ok(out);
                }
            }
            match self.receive_pdu(during).await? {
                Pdu::PData { data } => self.pending.extend(data),
                other => return Err(not_expected(other, during)),
            }
        }
    }
}

fn pdata(pc_id: u8, kind: PDataValueType, is_last: bool, data: Vec<u8>) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: kind,
            is_last,
            data,
        }],
    }
}

fn kind_name(kind: &PDataValueType) -> &'static str {
    match kind {
        PDataValueType::Command => "command",
        PDataValueType::Data => "data",
    }
}

/// A response must be the right kind and answer our request.
pub(crate) fn expect_response(
    rsp: &Response,
    command_field: u16,
    message_id: u16,
    during: &'static str,
) -> Result<(), NetError> {
    if rsp.command_field != command_field {
        return Err(NetError::UnexpectedResponse {
            during,
            detail: format!(
                "command field {:#06x} instead of {:#06x}",
                rsp.command_field, command_field
            ),
        });
    }
    if let Some(id) = rsp.message_id_responded {
        if id != message_id {
            return Err(NetError::UnexpectedResponse {
                during,
                detail: format!("answer to message {id}, expected {message_id}"),
            });
        }
    }
    Ok(())
}

/// UIDs on the wire may carry a trailing NUL pad.
fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

fn uid_eq(a: &str, b: &str) -> bool {
    trim_uid(a) == trim_uid(b)
}

fn check_request(peer: &Peer, proposals: &[Proposal]) -> Result<(), NetError> {
    // AE titles: at most 16 characters of the default repertoire, not all spaces, no
    // backslash or control characters (PS3.5 6.2, AE). The archive would reject or
    // misread them; say so before connecting.
    for (which, ae) in [("calling", &peer.calling_ae), ("called", &peer.called_ae)] {
        let t = ae.trim();
        if t.is_empty()
            || t.len() > 16
            || !t
                .chars()
                .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\')
        {
            return Err(NetError::InvalidRequest(format!(
                "{which} AE title {ae:?} is not valid (1 to 16 ASCII characters, no backslash)"
            )));
        }
    }
    if proposals.is_empty() || proposals.iter().any(|p| p.transfer_syntaxes.is_empty()) {
        return Err(NetError::InvalidRequest(
            "every presentation context needs an abstract syntax and at least one transfer syntax"
                .into(),
        ));
    }
    // Presentation context IDs are odd numbers 1..=255: 128 contexts at most.
    if proposals.len() > 128 {
        return Err(NetError::InvalidRequest(
            "more than 128 presentation contexts".into(),
        ));
    }
    Ok(())
}

/// Open with Verification only, C-ECHO, release: "is the archive there and does it accept
/// us" (used by `lesiond check`).
pub async fn echo_peer(peer: &Peer) -> Result<(), NetError> {
    let mut assoc = Association::open(
        peer,
        &[Proposal::new(
            VERIFICATION,
            &[EXPLICIT_VR_LE, IMPLICIT_VR_LE],
        )],
    )
    .await?;
    if let Err(e) = assoc.echo().await {
        assoc.abort().await;
        return Err(e);
    }
    assoc.release().await
}

/// A PDU that is not the answer awaited: the archive's abort in words, or the kind of what came
/// (only the kind: a PDU's content could be patient data).
fn not_expected(pdu: Pdu, during: &'static str) -> NetError {
    match pdu {
        Pdu::AbortRQ { source } => NetError::Aborted { during, reason: abort_words(&source) },
        other => NetError::UnexpectedResponse { during, detail: other.short_description().to_string() },
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::archive) fn peer() -> Peer {
        Peer {
            host: "127.0.0.1".into(),
            port: 104,
            calling_ae: "LESIOND".into(),
            called_ae: "PACS".into(),
            tls: None,
            timeout: Duration::from_millis(1500),
        }
    }

    #[test]
    fn invalid_ae_titles_are_refused_before_connecting() {
        let mut p = peer();
        p.calling_ae = "A_VERY_LONG_AE_TITLE_X".into();
        let r = check_request(&p, &[Proposal::new(VERIFICATION, &[IMPLICIT_VR_LE])]);
        assert!(matches!(r, Err(NetError::InvalidRequest(_))));
        assert!(check_request(&peer(), &[]).is_err());
    }
}
