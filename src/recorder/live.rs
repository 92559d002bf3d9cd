//! The live hand-over of assessments to the station screen: the recorder puts each one here as
//! it records it, the viewer's pages read it. In memory only, and never a wait for the recorder.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

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
    /// Called by the recorder once per assessment (once per lesion): a short lock and a
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

