//! What the viewer shows, as the daemon already has it: the state (the same watch channel the
//! publisher reads), the assessments (handed over by the inference thread as it spools them)
//! and what runs (station and model). Nothing here is computed for the screen.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};

/// How many assessments a page gets when it connects: the station's recent history.
pub const RECENT_ASSESSMENTS: usize = 5;

/// The assessments, serialized exactly as spooled for MQTT: the last few for pages that connect
/// later, and a broadcast for pages already open.
pub struct AssessmentFeed {
    recent: Mutex<VecDeque<Arc<[u8]>>>,
    live: broadcast::Sender<Arc<[u8]>>,
    /// The JPEG of the sharpest frame of recent assessments, by `assessment_id`: only when
    /// `mqtt.publish_frames` lets frames leave the daemon at all.
    previews: Mutex<VecDeque<(String, Arc<[u8]>)>>,
}

impl Default for AssessmentFeed {
    fn default() -> Self {
        // A page that falls this far behind skips ahead (it also has `recent` on reconnect).
        let (live, _) = broadcast::channel(16);
        Self { recent: Mutex::new(VecDeque::with_capacity(RECENT_ASSESSMENTS)), live, previews: Mutex::default() }
    }
}

impl AssessmentFeed {
    /// Called by the inference thread once per assessment (once per lesion): a short lock and a
    /// copy of a few kB, never a wait on a page. No page open is not an error.
    pub fn publish(&self, json: &[u8]) {
        let json: Arc<[u8]> = Arc::from(json);
        {
            // A panic elsewhere while holding this lock leaves a list of byte strings intact.
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_ASSESSMENTS {
                recent.pop_front();
            }
            recent.push_back(json.clone());
        }
        let _ = self.live.send(json);
    }

    /// The last few, oldest first.
    pub fn recent(&self) -> Vec<Arc<[u8]>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[u8]>> {
        self.live.subscribe()
    }

    /// Keeps the preview of an assessment (call before `publish`, so that a page that hears of
    /// the assessment finds its image). The last few only, like the assessments.
    pub fn publish_preview(&self, assessment_id: &str, jpeg: &[u8]) {
        let mut previews = self.previews.lock().unwrap_or_else(|p| p.into_inner());
        if previews.len() == RECENT_ASSESSMENTS {
            previews.pop_front();
        }
        previews.push_back((assessment_id.to_string(), Arc::from(jpeg)));
    }

    pub fn preview(&self, assessment_id: &str) -> Option<Arc<[u8]>> {
        let previews = self.previews.lock().unwrap_or_else(|p| p.into_inner());
        previews.iter().find(|(id, _)| id == assessment_id).map(|(_, jpeg)| jpeg.clone())
    }
}

/// What runs: the station and its model, for the page's header. Set at every pipeline start,
/// so a reload that changes the model changes the page.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct About {
    pub station_id: String,
    pub model_id: String,
    pub model_sha256: String,
    /// `examination.mode` as it runs: `continuous` has no states or assessments to show.
    pub mode: crate::config::ExaminationMode,
    /// The engine as it describes itself (e.g. TF Lite, input type, threads).
    pub engine: String,
    /// Whether the page shows the frame an assessment used: only with `mqtt.publish_frames`
    /// (frames leave the daemon anyway then); otherwise no image ever leaves it.
    pub previews: bool,
    pub disclaimer: &'static str,
}

pub const DISCLAIMER: &str = "Decision support, not a diagnosis.";

/// Everything a page is fed from; cheap to clone (receivers and an `Arc`).
#[derive(Clone)]
pub struct Feeds {
    /// The `state` JSON, the bytes the publisher publishes retained; `None` before the first
    /// (and always in continuous mode).
    pub states: watch::Receiver<Option<Vec<u8>>>,
    pub assessments: Arc<AssessmentFeed>,
    pub about: watch::Receiver<Option<About>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_few_and_broadcasts_each() {
        let feed = AssessmentFeed::default();
        let mut live = feed.subscribe();
        for i in 0..8u8 {
            feed.publish(&[i]);
        }
        let recent: Vec<u8> = feed.recent().iter().map(|a| a[0]).collect();
        assert_eq!(recent, [3, 4, 5, 6, 7]);
        assert_eq!(&*live.try_recv().expect("broadcast"), &[0]);
    }

    #[test]
    fn previews_are_kept_for_the_last_few_assessments() {
        let feed = AssessmentFeed::default();
        for i in 0..7u8 {
            feed.publish_preview(&format!("a{i}"), &[i]);
        }
        assert!(feed.preview("a0").is_none() && feed.preview("a1").is_none());
        assert_eq!(feed.preview("a6").as_deref(), Some(&[6u8][..]));
        assert!(feed.preview("other").is_none());
    }

    #[test]
    fn publishing_without_a_page_is_fine() {
        AssessmentFeed::default().publish(b"{}");
    }
}
