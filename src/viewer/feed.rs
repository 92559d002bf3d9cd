//! What the viewer shows, as the daemon already has it: the state (the same watch channel the
//! publisher reads), the assessments (handed over by the inference thread as it spools them)
//! what runs (station and model) and the examination context in force. Nothing here is
//! computed for the screen.

use std::sync::Arc;

use tokio::sync::watch;

use crate::recorder::AssessmentFeed;
use crate::report::context::ExaminationContext;

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


/// Everything a page is fed from; cheap to clone (receivers and an `Arc`).
#[derive(Clone)]
pub struct Feeds {
    /// The `state` JSON, the bytes the publisher publishes retained; `None` before the first
    /// (and always in continuous mode).
    pub states: watch::Receiver<Option<Vec<u8>>>,
    pub assessments: Arc<AssessmentFeed>,
    pub about: watch::Receiver<Option<About>>,
    /// The examination context in force; the screen shows the lesion and the body site, the
    /// patient only with `viewer.show_patient`.
    pub context: watch::Receiver<Option<ExaminationContext>>,
    pub show_patient: bool,
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
