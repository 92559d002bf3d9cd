//! The archive as a destination of the spool: a tokio task that reads assessments through its
//! own delivery cursor and files each one (its judged frame as an image instance, its result as
//! a Structured Report) in one association, then acknowledges it. An archive that is down or
//! refuses is retried with backoff up to `dicom.retry_max_secs`, on the same assessment: the
//! MQTT publisher reads its own cursor meanwhile, and nothing is skipped or lost. The UIDs come
//! from the assessment id, so a resend after a crash stores the same instances again, never a
//! second copy.
//!
//! Never logged: anything of the patient. The log names the assessment id, the archive, the
//! SOP class and the DICOM status in words.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::association::{Association, NetError, Proposal, EXPLICIT_VR_LE};
use super::encode::{Instance, ObjectError, JPEG_BASELINE};
use super::filed::{context_or_unassigned, FiledError, FilingParts, Spooled};
use super::image::{image_instance, Pixels, SopClass};
use super::sr::{report_instance, COMPREHENSIVE_SR};
use super::{jpeg, peer};
use crate::config::{DicomConfig, DicomSopClass};
use crate::labels::Labels;
use crate::spool::{Delivery, Destination, EntryKind, Spool, SpooledResult};
use crate::stats::Stats;

/// The archive's name in the spool (its file of acknowledgements: keep it across versions) and
/// what it takes: assessments only, never per-frame classifications.
pub const DESTINATION: Destination = Destination { name: "dicom", kinds: &[EntryKind::Assessment] };

/// How the task goes on: running, draining (a finished replay: file everything, then end),
/// or stopping (a signal: end after the assessment in hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveMode {
    Run,
    Drain,
    Stop,
}

pub struct ArchiveHandle {
    pub task: JoinHandle<()>,
    mode: watch::Sender<ArchiveMode>,
}

impl ArchiveHandle {
    pub fn set_mode(&self, mode: ArchiveMode) {
        self.mode.send_replace(mode);
    }
}

/// What the task needs: its configuration, the labels (class names for the report), and the
/// spool with its cursor.
pub struct ArchiveSetup {
    pub config: DicomConfig,
    pub labels: Arc<Labels>,
    pub spool: Arc<Spool>,
    pub delivery: Delivery,
    pub stats: Arc<Stats>,
}

pub fn start(setup: ArchiveSetup) -> ArchiveHandle {
    let (mode, mode_rx) = watch::channel(ArchiveMode::Run);
    let task = tokio::spawn(run(setup, mode_rx));
    ArchiveHandle { task, mode }
}

/// Why one assessment was not filed this time.
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("the archive refused the {what}: {status}")]
    Refused { what: &'static str, status: String },
    #[error("the archive accepts neither JPEG Baseline nor Explicit VR Little Endian for {sop_class}: check dicom.sop_class (vl-photographic for archives without the dermoscopic class)")]
    NoTransferSyntax { sop_class: &'static str },
    #[error("the archive does not accept Comprehensive SR: the assessment's report cannot be filed")]
    NoReport,
    #[error("the judged frame cannot be decoded: {0}")]
    Decode(String),
}

/// What became of one assessment.
enum Filed {
    Stored { uncompressed: bool },
    /// Not for the archive, by rule; acknowledged.
    Skipped(&'static str),
}

async fn run(setup: ArchiveSetup, mut mode: watch::Receiver<ArchiveMode>) {
    let ArchiveSetup { config, labels, spool, delivery, stats } = setup;
    let peer = peer(&config);
    let first_backoff = Duration::from_secs(1);
    let max_backoff = Duration::from_secs(config.retry_max_secs.max(1));
    let mut backoff = first_backoff;
    let mut down_since: Option<std::time::Instant> = None;
    tracing::info!(archive = %format!("{}@{}:{}", config.peer_ae_title, config.host, config.port), "archive: filing assessments (dicom)");
    loop {
        stats.archive_pending.store(spool.pending(delivery), std::sync::atomic::Ordering::Relaxed);
        if *mode.borrow() == ArchiveMode::Stop {
            break;
        }
        let reader = spool.clone();
        let entry = match tokio::task::spawn_blocking(move || reader.next_after(delivery, None)).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!("archive: reading the spool failed: {e}");
                None
            }
        };
        let Some(entry) = entry else {
            if *mode.borrow() == ArchiveMode::Drain {
                break;
            }
            // Woken by the next assessment spooled, a change of mode, or a periodic look.
            tokio::select! {
                _ = spool.appended(delivery).notified() => {}
                _ = mode.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        match file(&peer, &config, &labels, &entry).await {
            Ok(filed) => {
                if let Some(since) = down_since.take() {
                    tracing::info!(after_s = since.elapsed().as_secs(), "archive: filing again");
                }
                backoff = first_backoff;
                match filed {
                    Filed::Stored { uncompressed } => {
                        Stats::inc(&stats.archive_stored);
                        tracing::info!(entry = entry.number, uncompressed, "archive: assessment filed (image and report stored)");
                    }
                    Filed::Skipped(why) => {
                        Stats::inc(&stats.archive_skipped);
                        tracing::info!(entry = entry.number, "archive: assessment not filed: {why}");
                    }
                }
                let acked = spool.clone();
                let number = entry.number;
                let _ = tokio::task::spawn_blocking(move || acked.remove(delivery, number)).await;
            }
            Err(e) => {
                Stats::inc(&stats.archive_failed);
                down_since.get_or_insert_with(std::time::Instant::now);
                tracing::warn!(entry = entry.number, retry_in_s = backoff.as_secs(), "archive: {e}; the assessment waits in the spool and is sent again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = async { while mode.changed().await.is_ok() && *mode.borrow() != ArchiveMode::Stop {} } => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
    stats.archive_pending.store(spool.pending(delivery), std::sync::atomic::Ordering::Relaxed);
}

fn sop_class(config: &DicomConfig) -> SopClass {
    match config.sop_class {
        DicomSopClass::Dermoscopic => SopClass::Dermoscopic,
        DicomSopClass::VlPhotographic => SopClass::VlPhotographic,
    }
}

/// Files one assessment: the image (JPEG as it is when the archive takes JPEG Baseline,
/// otherwise decoded to uncompressed RGB), then the report, in one association.
async fn file(peer: &super::Peer, config: &DicomConfig, labels: &Labels, entry: &SpooledResult) -> Result<Filed, FileError> {
    let spooled = match Spooled::parse(&entry.json) {
        Ok(s) => s,
        Err(FiledError::Unreadable(why)) => {
            // Never fileable, by this version: said, and not retried for ever.
            tracing::error!(entry = entry.number, "archive: {why}");
            return Ok(Filed::Skipped("unreadable assessment"));
        }
    };
    if spooled.context.is_none() && !config.send_unassigned {
        return Ok(Filed::Skipped("no examination context was set (dicom.send_unassigned is off)"));
    }
    let Some(frame) = entry.image.as_deref() else { return Ok(Filed::Skipped("no judged frame was kept")) };
    let context = context_or_unassigned(&spooled);
    let parts = match FilingParts::new(&spooled, &context, labels) {
        Ok(p) => p,
        Err(FiledError::Unreadable(why)) => {
            tracing::error!(entry = entry.number, "archive: {why}");
            return Ok(Filed::Skipped("unreadable assessment"));
        }
    };
    let sop = sop_class(config);
    let proposals = [
        // JPEG in a context of its own: an archive that takes it cannot pick uncompressed for
        // it instead, and one that refuses it still accepts the other context.
        Proposal::new(sop.uid(), &[JPEG_BASELINE]),
        Proposal::new(sop.uid(), &[EXPLICIT_VR_LE]),
        Proposal::new(COMPREHENSIVE_SR, &[EXPLICIT_VR_LE]),
    ];
    let mut association = Association::open(peer, &proposals).await?;
    let outcome = store_both(&mut association, sop, &parts, frame).await;
    match outcome {
        Ok(uncompressed) => {
            if let Err(e) = association.release().await {
                tracing::debug!("archive: release: {e}");
            }
            Ok(Filed::Stored { uncompressed })
        }
        Err(e) => {
            association.abort().await;
            Err(e)
        }
    }
}

/// The image, then the report; returns whether the image went uncompressed.
async fn store_both(association: &mut Association, sop: SopClass, parts: &FilingParts<'_>, frame: &[u8]) -> Result<bool, FileError> {
    let takes_jpeg = association.accepts(sop.uid(), JPEG_BASELINE);
    let takes_uncompressed = association.accepts(sop.uid(), EXPLICIT_VR_LE);
    if !association.accepts(COMPREHENSIVE_SR, EXPLICIT_VR_LE) {
        return Err(FileError::NoReport);
    }
    // The JPEG as it is, when the archive takes JPEG Baseline and the frame is one it may
    // carry (baseline, chroma subsampled: what MJPEG cameras send).
    let as_is = match (takes_jpeg, jpeg::inspect(frame)) {
        (true, Ok(info)) => match image_instance(&parts.filing(frame, info.width, info.height), sop, Pixels::Jpeg(frame)) {
            Ok(image) => Some((image, (info.width, info.height))),
            Err(ObjectError::NotBaselineJpeg(_) | ObjectError::JpegNotStorable(_)) => None,
            Err(e) => return Err(e.into()),
        },
        _ => None,
    };
    let (image, (w, h)): (Instance, (u16, u16)) = match as_is {
        Some(found) => found,
        None if takes_uncompressed => {
            // Refused JPEG, or a JPEG the archive could not take as it is: its decoded pixels,
            // losslessly.
            let owned = frame.to_vec();
            let rgb = tokio::task::spawn_blocking(move || crate::source::decode::decode_jpeg(&owned))
                .await
                .map_err(|e| FileError::Decode(e.to_string()))?
                .map_err(|e| FileError::Decode(e.to_string()))?;
            let (w, h) = match (u16::try_from(rgb.width()), u16::try_from(rgb.height())) {
                (Ok(w), Ok(h)) => (w, h),
                _ => return Err(FileError::Decode(format!("{}x{} pixels is more than DICOM rows and columns can say", rgb.width(), rgb.height()))),
            };
            (image_instance(&parts.filing(frame, w, h), sop, Pixels::Rgb { pixels: rgb.as_raw(), width: w, height: h })?, (w, h))
        }
        None => return Err(FileError::NoTransferSyntax { sop_class: sop.uid() }),
    };
    let uncompressed = image.transfer_syntax_uid != JPEG_BASELINE;
    let report = report_instance(&parts.filing(frame, w, h), &image)?;
    let status = association.store(&image.sop_class_uid, &image.sop_instance_uid, &image.transfer_syntax_uid, &image.dataset).await?;
    if !status.is_stored() {
        return Err(FileError::Refused { what: "image", status: status.to_string() });
    }
    if status.is_warning() {
        tracing::warn!("archive: image stored with a warning: {status}");
    }
    let status = association.store(&report.sop_class_uid, &report.sop_instance_uid, &report.transfer_syntax_uid, &report.dataset).await?;
    if !status.is_stored() {
        return Err(FileError::Refused { what: "report", status: status.to_string() });
    }
    if status.is_warning() {
        tracing::warn!("archive: report stored with a warning: {status}");
    }
    Ok(uncompressed)
}
