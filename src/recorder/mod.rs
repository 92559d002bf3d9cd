//! The one way out for every result. The inference side hands the recorder typed outcomes (a
//! frame's classification, an examination's assessment with the frame it judged, a change of
//! the station's state); the recorder serializes each once and sends it everywhere it goes:
//!
//! - **the spool**, with its kind, for the durable destinations (the MQTT publisher; next, an
//!   imaging archive): each reads the spool through its own delivery cursor and acknowledges
//!   what it delivered (`spool/`), so one destination down neither blocks nor loses another's
//!   results. A destination is a task the daemon starts with its `spool::Delivery`; adding one
//!   is its own module, its config section and its line in the daemon's list of destinations,
//!   never a change here or in the pipeline;
//! - **the station screen** (`live.rs`): each assessment and its preview, in memory;
//! - **the latest state**, a watch channel the publisher (retained `state`) and the screen read;
//! - **thumbnails**, best effort, to the publisher (QoS 0);
//! - **the log and the counters**: a result is logged once it is spooled, so a logged result
//!   is one that will reach its destinations.
//!
//! It runs on the inference thread and never waits on a destination: a spool write that fails
//! for want of a resource is retried through the caller's `wait` (the pipeline beats its
//! heartbeat there and cuts the wait short at shutdown); a result finally lost is counted.

mod live;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

pub use live::{AssessmentFeed, RECENT_ASSESSMENTS};

use crate::report::assessment::AssessmentPayload;
use crate::report::classification::ClassificationPayload;
use crate::report::state::StatePayload;
use crate::report::thumbnail::Thumbnail;
use crate::context::ContextStore;
use crate::spool::{EntryKind, Spool};
use crate::stats::Stats;

/// What the inference side concluded, for the recorder to send on.
pub enum Outcome<'a> {
    /// A frame's classification (continuous mode, or `examination.publish_frame_results`),
    /// with its thumbnail when `mqtt.publish_frames` made one.
    Classification { message: ClassificationPayload<'a>, thumbnail: Option<Vec<u8>> },
    /// An examination's assessment, with its judged frame (the sharpest it used) as the camera
    /// delivered it, spooled with it for the archive; and the screen's small preview of that
    /// frame when `mqtt.publish_frames` made one.
    Assessment { message: AssessmentPayload<'a>, image: Option<&'a [u8]>, preview: Option<&'a [u8]> },
    /// The station's state changed.
    State(StatePayload<'a>),
    /// No station state (continuous mode): clears a state a previous examination mode left.
    NoState,
}

/// Where the recorder sends things; built by the daemon, owned by the inference thread.
pub struct Recorder {
    pub spool: Arc<Spool>,
    pub stats: Arc<Stats>,
    /// To the publisher, when `mqtt.publish_frames` is on.
    pub thumbnails: Option<mpsc::Sender<Thumbnail>>,
    /// The newest serialized state (`Some(empty)`: none; the publisher clears the retained one).
    pub states: watch::Sender<Option<Vec<u8>>>,
    pub assessments: Arc<AssessmentFeed>,
    /// The examination context in force: every assessment carries it.
    pub contexts: Arc<ContextStore>,
    /// `viewer.show_patient`: the screen shows the patient's identity with the lesion.
    pub show_patient: bool,
}

impl Recorder {
    /// Records an outcome. `wait(d)` is called between retries of a spool write that failed for
    /// want of a resource; it says whether to go on (see `Spool::append_waiting`).
    pub fn record(&self, outcome: Outcome<'_>, wait: &dyn Fn(Duration) -> bool) {
        match outcome {
            Outcome::Classification { message, thumbnail } => self.classification(message, thumbnail, wait),
            Outcome::Assessment { message, image, preview } => self.assessment(message, image, preview, wait),
            Outcome::State(state) => match serde_json::to_vec(&state) {
                Ok(json) => {
                    tracing::debug!(state = state.state.state.as_str(), check = ?state.state.check.map(|c| c.as_str()), "station state");
                    self.states.send_replace(Some(json));
                }
                Err(e) => tracing::error!("cannot serialize the state: {e}"),
            },
            Outcome::NoState => {
                self.states.send_replace(Some(Vec::new()));
            }
        }
    }

    fn classification(&self, message: ClassificationPayload<'_>, thumbnail: Option<Vec<u8>>, wait: &dyn Fn(Duration) -> bool) {
        let json = match serde_json::to_vec(&message) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!("cannot serialize result: {e}");
                return;
            }
        };
        // Into the spool before anything else: from here the result survives a dead broker, a
        // restart and a power cut; it leaves once every destination has acknowledged it.
        if let Err(e) = self.spool.append_waiting(EntryKind::Classification, &json, None, wait) {
            Stats::inc(&self.stats.spool_failed);
            tracing::error!(seq = message.seq, "result lost: {e}");
            return;
        }
        if let Some(top) = message.top.first() {
            tracing::info!(
                seq = message.seq,
                source = %message.source.name,
                top = %top.code,
                p = format!("{:.3}", top.probability),
                ms = message.latency_ms.total,
                result_id = %message.result_id,
                "classified"
            );
        }
        if let (Some(thumbnails), Some(jpeg)) = (&self.thumbnails, thumbnail) {
            // Thumbnails are best effort (QoS 0): never wait for them, but count what is dropped.
            if thumbnails.try_send(Thumbnail { result_id: message.result_id, jpeg }).is_err() {
                Stats::inc(&self.stats.thumbnails_dropped);
            }
        }
    }

    /// The assessment as the screen gets it: its context cut down to what the screen may show
    /// (the lesion and the body site; the patient only with `viewer.show_patient`).
    fn for_screen(&self, message: &AssessmentPayload<'_>, json: &[u8]) -> Vec<u8> {
        let Some(context) = &message.context else { return json.to_vec() };
        let screen = serde_json::to_value(message).and_then(|mut v| {
            v["context"] = serde_json::to_value(context.for_screen(self.show_patient))?;
            serde_json::to_vec(&v)
        });
        match screen {
            Ok(screen) => screen,
            Err(e) => {
                tracing::error!("cannot serialize an assessment for the screen: {e}");
                Vec::new()
            }
        }
    }

    fn assessment(&self, mut message: AssessmentPayload<'_>, image: Option<&[u8]>, preview: Option<&[u8]>, wait: &dyn Fn(Duration) -> bool) {
        // The context in force when the assessment is made is the one it is filed under; using
        // it keeps it alive (`context.idle_timeout_secs` counts from the last assessment).
        message.context = self.contexts.current();
        if message.context.is_some() {
            self.contexts.used();
        }
        let json = match serde_json::to_vec(&message) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!("cannot serialize an assessment: {e}");
                return;
            }
        };
        // The screen shows it even when the spool cannot keep it: the clinician is looking at
        // this lesion now, and the state names this assessment either way. Its preview first,
        // so that a page that hears of the assessment finds the image.
        if let Some(jpeg) = preview {
            self.assessments.publish_preview(message.assessment_id, jpeg);
        }
        let screen = self.for_screen(&message, &json);
        if !screen.is_empty() {
            self.assessments.publish(&screen);
        }
        if let Err(e) = self.spool.append_waiting(EntryKind::Assessment, &json, image, wait) {
            Stats::inc(&self.stats.spool_failed);
            tracing::error!(assessment_id = %message.assessment_id, "assessment lost: {e}");
            return;
        }
        Stats::inc(&self.stats.assessments);
        if let Some(abstain) = &message.abstain {
            Stats::inc(&self.stats.assessments_abstained);
            tracing::info!(assessment_id = %message.assessment_id, frames = message.frames.len(), reasons = ?abstain.reasons, "assessment: abstained");
        } else if let Some(top) = message.top.first() {
            tracing::info!(assessment_id = %message.assessment_id, frames = message.frames.len(), top = %top.code, p = format!("{:.3}", top.probability), "assessment");
        }
    }
}
