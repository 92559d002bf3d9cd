//! The examination's decisions on made-up frames and clocks.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::checks::{Check, FrameChecks, LesionFigures, Signature};

const FRAME: Duration = Duration::from_nanos(66_666_667); // 15 fps

fn frame_checks(failed: Vec<Check>, focus: f32) -> FrameChecks {
    FrameChecks { exposure: 0.7, clipped: 0.0, glare: 0.0, focus, motion_px: Some(1.0), lesion: LesionFigures::default(), failed, signature: Default::default() }
}

struct Clip {
    exam: Examination,
    t0: Instant,
    n: u64,
    states: Vec<StationState>,
    assessments: Vec<Assessment>,
    classified: u32,
    /// Every n-th classified frame is out of distribution (0: none).
    strange_every: u32,
    /// The first this many classified frames are typical of a lesion to the model; the rest
    /// are not (0, the default: the model finds the views the check calls plain skin atypical,
    /// as it does plain skin).
    typical_for: u32,
    /// Classified frames that had failed the lesion check (the model was asked about them).
    asked: u32,
    /// What the frames' view looks like.
    view: Signature,
}

impl Clip {
    fn new(config: ExaminationSettings) -> Self {
        Self::with_model(config, true)
    }
    /// `scores_views`: the model has an out-of-distribution score (it can vouch for a view).
    fn with_model(config: ExaminationSettings, scores_views: bool) -> Self {
        Clip {
            exam: Examination::new(config, scores_views),
            t0: Instant::now(),
            n: 0,
            states: Vec::new(),
            assessments: Vec::new(),
            classified: 0,
            strange_every: 0,
            typical_for: 0,
            asked: 0,
            view: Signature::default(),
        }
    }
    fn auto() -> Self {
        Self::new(ExaminationSettings::default())
    }
    /// Feeds `count` frames with these checks; classified frames get `probabilities`.
    fn frames(&mut self, count: u32, failed: &[Check], focus: f32, probabilities: &[f32]) {
        for _ in 0..count {
            self.n += 1;
            let f = Observed {
                seq: self.n,
                at: self.t0 + FRAME * self.n as u32,
                captured_at: SystemTime::now(),
                origin: crate::frame::FrameOrigin { kind: "directory", name: format!("f{:06}.jpg", self.n) },
                checks: FrameChecks { signature: self.view, ..frame_checks(failed.to_vec(), focus) },
                lesion_seen_by_model: false,
            };
            if self.exam.observe(&f) == Step::Classify {
                self.classified += 1;
                if failed.contains(&Check::NoLesion) {
                    self.asked += 1;
                }
                let strange = self.strange_every > 0 && self.classified % self.strange_every == 0;
                let typical = self.classified <= self.typical_for && !strange;
                self.exam.classified(&f, ModelView { probabilities: probabilities.to_vec(), out_of_distribution: strange, typical });
            }
            if let Some(a) = self.exam.take_assessment() {
                self.assessments.push(a);
            }
            if let Some(s) = self.exam.take_state_change() {
                self.states.push(s.clone());
            }
        }
    }
    fn names(&self) -> Vec<StateName> {
        let mut v: Vec<StateName> = self.states.iter().map(|s| s.state).collect();
        v.dedup();
        v
    }
}

const NEVUS: [f32; 7] = [0.01, 0.02, 0.05, 0.01, 0.11, 0.79, 0.01];

#[test]
fn a_visit_gives_one_assessment_and_the_states_in_order() {
    let mut c = Clip::auto();
    c.frames(20, &[Check::NoLesion], 0.0, &NEVUS);
    c.frames(8, &[Check::Moving], 3.0, &NEVUS);
    c.frames(45, &[], 5.0, &NEVUS); // a 3 s hold
    c.frames(20, &[Check::TooDark], 0.0, &NEVUS);
    assert_eq!(c.assessments.len(), 1);
    let a = &c.assessments[0];
    assert!(a.abstain.is_none());
    assert!(a.frames.len() >= 5);
    let span = a.frames.last().map(|l| l.at).expect("frames") - a.frames[0].at;
    assert!(span >= Duration::from_millis(500), "{span:?}");
    let p = a.probabilities().expect("probabilities");
    assert!((p[5] - 0.79).abs() < 1e-5);
    assert_eq!(
        c.names(),
        [StateName::Idle, StateName::HoldSteady, StateName::Assessing, StateName::Assessed, StateName::Idle]
    );
    let steady = c.states.iter().find(|s| s.state == StateName::HoldSteady).expect("hold steady");
    assert_eq!(steady.check, Some(Check::Moving));
    let assessed = c.states.iter().find(|s| s.state == StateName::Assessed).expect("assessed");
    assert_eq!(assessed.assessment_id.as_deref(), Some(a.id.as_str()));
    // Only the frames the assessment needed were classified, not the whole hold.
    assert!(c.classified < 15, "classified {}", c.classified);
}

#[test]
fn idle_scenes_never_make_an_assessment() {
    // A model without an out-of-distribution score: the checks alone decide.
    let mut c = Clip::with_model(ExaminationSettings::default(), false);
    for check in [Check::NoLesion, Check::TooDark, Check::TooBright, Check::NotSkin] {
        c.frames(200, &[check], 9.0, &NEVUS);
    }
    // Single-frame flickers of "lesion" among idle frames do not start an examination.
    for _ in 0..50 {
        c.frames(1, &[], 5.0, &NEVUS);
        c.frames(3, &[Check::NoLesion], 5.0, &NEVUS);
    }
    assert!(c.assessments.is_empty());
    assert_eq!(c.classified, 0);
    assert_eq!(c.names(), [StateName::Idle]);
}

#[test]
fn a_view_the_model_finds_out_of_distribution_abstains_and_a_few_strange_frames_do_not() {
    let mut c = Clip::auto();
    c.strange_every = 1; // every good frame above the threshold
    c.frames(10, &[Check::NoLesion], 0.0, &NEVUS);
    c.frames(45, &[], 5.0, &NEVUS);
    assert_eq!(c.assessments.len(), 1);
    let a = &c.assessments[0];
    assert_eq!(a.abstain.as_deref(), Some(&["out_of_distribution".to_string()][..]));
    assert!(a.probabilities().is_some(), "the frames' probabilities stay, for the record");

    let mut c = Clip::auto();
    c.strange_every = 3; // one in three: the majority looks like a lesion
    c.frames(10, &[Check::NoLesion], 0.0, &NEVUS);
    c.frames(45, &[], 5.0, &NEVUS);
    assert_eq!(c.assessments.len(), 1);
    assert!(c.assessments[0].abstain.is_none(), "{:?}", c.assessments[0].abstain);
}

#[test]
fn a_lesion_that_never_gets_sharp_abstains_once_at_the_timeout() {
    let mut c = Clip::auto();
    c.frames(10, &[Check::NoLesion], 0.0, &NEVUS);
    c.frames(15 * 12, &[Check::OutOfFocus], 1.0, &NEVUS); // 12 s > timeout_secs
    assert_eq!(c.assessments.len(), 1);
    let a = &c.assessments[0];
    assert_eq!(a.abstain.as_deref(), Some(&["poor_quality:out_of_focus".to_string()][..]));
    assert!(a.probabilities().is_none());
    assert_eq!(c.states.last().map(|s| (s.state, s.abstained)), Some((StateName::Assessed, Some(true))));
}

#[test]
fn soft_frames_from_the_approach_are_not_used_once_sharper_ones_come() {
    let mut c = Clip::auto();
    c.frames(3, &[], 2.0, &NEVUS); // enter + soft but passing frames
    c.frames(4, &[], 2.5, &NEVUS);
    c.frames(40, &[], 6.0, &NEVUS);
    assert_eq!(c.assessments.len(), 1);
    let a = &c.assessments[0];
    assert!(a.frames.iter().all(|f| f.checks.focus >= 0.65 * 6.0), "{:?}", a.frames.iter().map(|f| f.checks.focus).collect::<Vec<_>>());
}

#[test]
fn a_glimpse_is_not_an_examination_and_leaves_no_assessment() {
    let mut c = Clip::auto();
    c.frames(5, &[], 5.0, &NEVUS); // 0.33 s: too short for min_span
    c.frames(30, &[Check::NoLesion], 0.0, &NEVUS);
    assert!(c.assessments.is_empty());
    assert_eq!(c.states.last().map(|s| s.state), Some(StateName::Idle));
}

#[test]
fn capture_assesses_the_same_lesion_again_and_manual_mode_waits_for_it() {
    let mut c = Clip::auto();
    c.frames(60, &[], 5.0, &NEVUS);
    assert_eq!(c.assessments.len(), 1);
    c.frames(60, &[], 5.0, &NEVUS);
    assert_eq!(c.assessments.len(), 1, "one assessment per lesion");
    c.exam.request_capture(c.t0 + FRAME * c.n as u32);
    c.frames(30, &[], 5.0, &NEVUS);
    assert_eq!(c.assessments.len(), 2);
    assert_eq!(c.assessments[1].trigger, Trigger::Capture);

    let mut m = Clip::new(ExaminationSettings { mode: ExaminationMode::Manual, ..ExaminationSettings::default() });
    m.frames(100, &[], 5.0, &NEVUS);
    assert!(m.assessments.is_empty(), "manual mode assesses only on capture");
    m.exam.request_capture(m.t0 + FRAME * m.n as u32);
    m.frames(30, &[], 5.0, &NEVUS);
    assert_eq!(m.assessments.len(), 1);
}

#[test]
fn the_assessment_weights_sharper_frames_more() {
    let mut c = Clip::auto();
    c.frames(3, &[], 10.0, &[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    c.frames(40, &[], 7.0, &NEVUS);
    let a = &c.assessments[0];
    let sharp = a.frames.iter().filter(|f| f.checks.focus == 10.0).count();
    assert!(sharp > 0 && sharp < a.frames.len());
    let p = a.probabilities().expect("p");
    let unweighted = a.frames.iter().map(|f| f.probabilities[4]).sum::<f32>() / a.frames.len() as f32;
    assert!(p[4] > unweighted, "weighted {} vs plain mean {unweighted}", p[4]);
}

#[test]
fn an_approach_that_is_still_coming_into_focus_is_named_out_of_focus() {
    let mut c = Clip::auto();
    c.frames(10, &[Check::TooDark], 0.0, &NEVUS);
    for step in 0..10 {
        c.frames(1, &[], 2.0 + 0.4 * step as f32, &NEVUS); // sharpening by ~15 % a frame
    }
    let before_hold = c.classified;
    c.frames(40, &[], 6.0, &NEVUS);
    assert_eq!(before_hold, 0, "frames still coming into focus are not classified");
    assert_eq!(c.assessments.len(), 1);
    assert!(
        c.states.iter().any(|s| s.state == StateName::HoldSteady && s.check == Some(Check::OutOfFocus)),
        "{:?}",
        c.names()
    );
    assert_eq!(c.names(), [StateName::Idle, StateName::HoldSteady, StateName::Assessing, StateName::Assessed]);
}

#[test]
fn a_faint_lesion_the_lesion_check_misses_is_assessed_once_when_the_model_vouches_for_it() {
    let mut c = Clip::auto();
    c.typical_for = u32::MAX;
    c.frames(20, &[Check::TooDark], 0.0, &NEVUS);
    c.view = Signature::uniform(1.0);
    c.frames(60, &[Check::NoLesion], 5.0, &NEVUS); // a 4 s hold the check calls plain skin
    c.view = Signature::default();
    c.frames(20, &[Check::TooDark], 0.0, &NEVUS);
    assert_eq!(c.assessments.len(), 1, "{:?}", c.names());
    let a = &c.assessments[0];
    assert!(a.abstain.is_none(), "{:?}", a.abstain);
    assert!(a.frames.len() >= 5);
    assert!(a.frames.iter().all(|f| f.lesion_seen_by_model));
    // The model was asked once (that frame starts the streak), then classified the frames used.
    assert_eq!(c.classified, 1 + a.frames.len() as u32);
    assert_eq!(c.names(), [StateName::Idle, StateName::Searching, StateName::Assessing, StateName::Assessed, StateName::Idle]);
}

#[test]
fn plain_skin_the_model_finds_atypical_is_shown_to_it_rarely_and_never_assessed() {
    let mut c = Clip::auto();
    c.frames(15 * 10, &[Check::NoLesion], 5.0, &NEVUS); // 10 s of plain skin
    assert!(c.assessments.is_empty());
    assert_eq!(c.names(), [StateName::Idle]);
    // At most every ask_model_every_secs (0.5 s): 20 or 21 in 10 s, not 150.
    assert!((19..=21).contains(&c.asked), "asked {} times", c.asked);

    let mut off = Clip::new(ExaminationSettings { ask_model_every_secs: 0.0, ..ExaminationSettings::default() });
    off.frames(15 * 10, &[Check::NoLesion], 5.0, &NEVUS);
    assert_eq!(off.asked, 0, "0 turns asking off");
}

#[test]
fn a_vouch_ends_when_a_classified_frame_is_no_longer_typical_and_that_frame_is_not_used() {
    let mut c = Clip::auto();
    c.typical_for = 1; // the first answer vouches, every later one does not
    c.frames(15 * 12, &[Check::NoLesion], 5.0, &NEVUS); // 12 s, past timeout_secs
    assert!(c.assessments.is_empty(), "not even an abstaining one: {:?}", c.assessments.iter().map(|a| &a.abstain).collect::<Vec<_>>());
    assert_eq!(c.states.last().map(|s| s.state), Some(StateName::Idle));
}

#[test]
fn a_vouch_covers_only_the_view_it_was_given_for() {
    let mut c = Clip::auto();
    c.typical_for = u32::MAX;
    c.view = Signature::uniform(1.0);
    c.frames(60, &[Check::NoLesion], 5.0, &NEVUS);
    assert_eq!(c.assessments.len(), 1);
    // The scope slides onto plain skin, which the model finds atypical: the lesion has left.
    c.typical_for = c.classified;
    c.view = Signature::uniform(1.2);
    c.frames(30, &[Check::NoLesion], 5.0, &NEVUS);
    assert_eq!(c.states.last().map(|s| s.state), Some(StateName::Idle));
    assert_eq!(c.assessments.len(), 1);
}

#[test]
fn a_lesion_the_check_calls_off_centre_is_assessed_when_the_model_vouches_for_it() {
    // The lesion check took the dark rim of the field for the lesion.
    let mut c = Clip::auto();
    c.typical_for = u32::MAX;
    c.frames(20, &[Check::TooDark], 0.0, &NEVUS);
    c.frames(60, &[Check::LesionOffCentre], 5.0, &NEVUS);
    assert_eq!(c.assessments.len(), 1, "{:?}", c.names());
    assert!(c.assessments[0].abstain.is_none());
    assert!(c.assessments[0].frames.iter().all(|f| f.lesion_seen_by_model));

    // Without the model's word it stays an instruction: no frame is classified, and only the
    // timeout gives an (abstaining) assessment.
    let mut c = Clip::auto();
    c.frames(20, &[Check::TooDark], 0.0, &NEVUS);
    c.frames(15 * 9, &[Check::LesionOffCentre], 5.0, &NEVUS);
    assert_eq!(c.assessments.len(), 1);
    assert_eq!(c.assessments[0].abstain.as_deref(), Some(&["poor_quality:lesion_off_centre".to_string()][..]));
}
