//! The examination: from a stream of checked frames to **one** assessment per lesion.
//!
//! A clinician holds the scope on a lesion for a few seconds. The examination waits until a
//! lesion is in view (`enter_frames` in a row), asks the engine only about frames that passed
//! every check and are sharp next to the sharpest frame seen so far, and once `min_frames`
//! distinct good frames spread over `min_span_secs` are in, makes the assessment (a
//! quality-weighted mean of their calibrated probabilities; `assessment.rs`). Then it waits for
//! the lesion to leave (`leave_secs` with nothing in view) before it can assess again; a
//! `capture` command starts a new one at once (manual mode: only a `capture` starts one). With a
//! lesion in view for `timeout_secs` and no assessment, it publishes an abstaining assessment
//! that says which checks kept failing.
//!
//! The lesion check is a cheap heuristic: it misses some faint lesions (a pale bcc on pale
//! skin) and takes the dark rim of some dermatoscopes' field for a lesion off centre. A frame
//! that fails only that check is shown to the model now and then
//! (`ask_model_every_secs`): when the model's features find the view typical of the lesion
//! images it learnt from (`ModelView::typical`), the model vouches for it, and frames that look
//! the same (the coarse layout of `Signature`) count as a lesion in view. Each such frame that is
//! classified must be found typical again, or the vouch ends and the frame is not used: one
//! lucky score on plain skin does not make an assessment.
//!
//! Pure logic, no I/O: the inference thread feeds it frames and results, and publishes the
//! state changes and assessments it hands back. Time comes from the frames, so tests drive it
//! with made-up clocks.

pub mod assessment;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::checks::{Check, FrameChecks, Signature};
use crate::config::{ExaminationMode, ExaminationSettings};
use crate::frame::FrameOrigin;

pub use assessment::{Assessment, UsedFrame};
pub use crate::report::assessment::Trigger;
pub use crate::report::state::{Progress, StateName, StationState};

/// A frame as the examination sees it: when, what, and what the checks said.
#[derive(Debug, Clone)]
pub struct Observed {
    pub seq: u64,
    pub at: Instant,
    pub captured_at: SystemTime,
    pub origin: FrameOrigin,
    pub checks: FrameChecks,
    /// The lesion check saw no lesion, or one off centre; the model vouched for the view (set by
    /// the examination).
    pub lesion_seen_by_model: bool,
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not worth an inference.
    Skip,
    /// Classify it and hand the result to [`Examination::classified`].
    Classify,
}

/// What the model said of a frame the examination asked about.
#[derive(Debug, Clone)]
pub struct ModelView {
    /// Calibrated, in the model's class order.
    pub probabilities: Vec<f32>,
    /// Above the out-of-distribution threshold (never, when the model has no score).
    pub out_of_distribution: bool,
    /// The features find the view typical of the lesion images the model learnt from (the
    /// score at or below `scene_check_min_score` in models/ood.json; never, when the model has
    /// no score).
    pub typical: bool,
}

struct Exam {
    trigger: Trigger,
    started: Instant,
    started_at: SystemTime,
    last_in_view: Instant,
    /// The sharpest focus among frames that passed every other check.
    max_focus: f32,
    used: Vec<UsedFrame>,
    last_classified: Option<Instant>,
    /// How often each check failed while the lesion was in view (for abstain reasons).
    failures: BTreeMap<Check, u32>,
    frames_in_view: u32,
    /// What the lesion looks like (its first classified frame), and how many usable frames in
    /// a row looked different.
    reference: Option<Signature>,
    changed_in_a_row: u32,
}

/// Usable frames in a row that must look different before the view counts as another lesion.
const CHANGED_FRAMES: u32 = 3;
/// A frame sharper than this times the least sharp of the last few usable frames is still
/// coming into focus (the scope is settling on the skin): wait for the focus to settle, or
/// every frame of an approach would be "the sharpest so far".
const FOCUS_SETTLING: f32 = 1.15;
const SETTLING_FRAMES: usize = 4;

enum Phase {
    Idle { streak: u32 },
    Examining(Box<Exam>),
    Assessed { last_in_view: Instant, reference: Signature, changed_in_a_row: u32 },
}

pub struct Examination {
    config: ExaminationSettings,
    phase: Phase,
    state: StationState,
    state_since: SystemTime,
    /// A `capture` request waiting for a lesion (manual mode), and until when it holds.
    capture_until: Option<Instant>,
    ready: Option<Assessment>,
    state_changed: bool,
    /// Focus of the last few frames that passed every check (to see it settle).
    recent_focus: std::collections::VecDeque<f32>,
    /// Whether frames that fail only the lesion check are shown to the model (it has a score
    /// and `ask_model_every_secs` > 0).
    asks_model: bool,
    /// The frame whose observation waits for the model's view, and when the model was last
    /// asked.
    asked: Option<u64>,
    last_asked: Option<Instant>,
    /// What the view the model last vouched for looks like.
    vouched: Option<Signature>,
}

impl Examination {
    /// `model_scores_views`: the model has an out-of-distribution score to vouch for views the
    /// lesion check calls empty.
    pub fn new(config: ExaminationSettings, model_scores_views: bool) -> Self {
        Examination {
            asks_model: model_scores_views && config.ask_model_every_secs > 0.0,
            asked: None,
            last_asked: None,
            vouched: None,
            config,
            phase: Phase::Idle { streak: 0 },
            state: StationState::idle(None),
            state_since: SystemTime::now(),
            capture_until: None,
            ready: None,
            state_changed: true,
            recent_focus: std::collections::VecDeque::with_capacity(SETTLING_FRAMES),
        }
    }

    /// Whether this usable frame is still coming into focus; remembers its focus.
    fn settling(&mut self, checks: &FrameChecks) -> bool {
        if !checks.passed() {
            self.recent_focus.clear();
            return false;
        }
        let least = self.recent_focus.iter().copied().fold(f32::INFINITY, f32::min);
        if self.recent_focus.len() == SETTLING_FRAMES {
            self.recent_focus.pop_front();
        }
        self.recent_focus.push_back(checks.focus);
        least.is_finite() && checks.focus > FOCUS_SETTLING * least
    }

    pub fn state(&self) -> &StationState {
        &self.state
    }

    pub fn state_since(&self) -> SystemTime {
        self.state_since
    }

    /// The state, if it changed since the last call.
    pub fn take_state_change(&mut self) -> Option<&StationState> {
        std::mem::take(&mut self.state_changed).then_some(&self.state)
    }

    /// An assessment made by the last call, to be published.
    pub fn take_assessment(&mut self) -> Option<Assessment> {
        self.ready.take()
    }

    /// A `capture` command: a new assessment of the lesion in view, even if it has one.
    pub fn request_capture(&mut self, now: Instant) {
        self.capture_until = Some(now + secs(self.config.timeout_secs));
        if let Phase::Assessed { .. } = self.phase {
            self.phase = Phase::Idle { streak: 0 };
        }
    }

    fn set_state(&mut self, state: StationState, at: SystemTime) {
        if state != self.state {
            self.state = state;
            self.state_since = at;
            self.state_changed = true;
        }
    }

    /// No frame for a while (camera gone, source ended): after `leave_secs` the lesion counts as
    /// gone.
    pub fn tick(&mut self, now: Instant, last_frame_at: Option<Instant>) {
        let gone = last_frame_at.is_none_or(|t| now.saturating_duration_since(t) > secs(self.config.leave_secs));
        if gone && !matches!(self.phase, Phase::Idle { .. }) {
            self.phase = Phase::Idle { streak: 0 };
            self.set_state(StationState::idle(None), SystemTime::now());
        }
    }

    /// One frame, in capture order. Returns whether to classify it.
    pub fn observe(&mut self, f: &Observed) -> Step {
        self.asked = None;
        if self.should_ask_model(f) {
            // Observed once the model has answered (`classified`).
            self.asked = Some(f.seq);
            self.last_asked = Some(f.at);
            return Step::Classify;
        }
        self.observe_as_vouched(f).1
    }

    /// Observes a frame as the model's vouch makes it; returns that frame too.
    fn observe_as_vouched<'f>(&mut self, f: &'f Observed) -> (Cow<'f, Observed>, Step) {
        let f = self.as_vouched(f);
        let settling = self.settling(&f.checks);
        let step = self.observe_settling(&f, settling);
        (f, step)
    }

    /// A frame that failed only the lesion check (no lesion, or off centre), in a view the
    /// model has not vouched for, and the model not asked for a while.
    fn should_ask_model(&self, f: &Observed) -> bool {
        self.asks_model
            && f.checks.only_lesion_check_failed()
            && !self.vouches_for(&f.checks)
            && self.last_asked.is_none_or(|t| f.at.saturating_duration_since(t) >= secs(self.config.ask_model_every_secs))
    }

    fn vouches_for(&self, checks: &FrameChecks) -> bool {
        self.vouched.is_some_and(|v| checks.signature.distance(&v) <= self.config.scene_change_above)
    }

    /// The frame as the examination judges it: in a view the model vouched for, the lesion
    /// check's verdict ("no lesion", "off centre") is overruled.
    fn as_vouched<'f>(&self, f: &'f Observed) -> Cow<'f, Observed> {
        if !f.checks.failed.iter().any(|c| c.is_lesion_check()) || !self.vouches_for(&f.checks) {
            return Cow::Borrowed(f);
        }
        let mut vouched = f.clone();
        vouched.checks.failed.retain(|c| !c.is_lesion_check());
        vouched.lesion_seen_by_model = true;
        Cow::Owned(vouched)
    }

    fn observe_settling(&mut self, f: &Observed, settling: bool) -> Step {
        let in_view = f.checks.lesion_in_view();
        let leave = secs(self.config.leave_secs);
        if self.capture_until.is_some_and(|t| f.at > t) {
            self.capture_until = None;
        }
        match &mut self.phase {
            Phase::Idle { streak } => {
                *streak = if in_view { *streak + 1 } else { 0 };
                let may_start = match self.config.mode {
                    ExaminationMode::Manual => self.capture_until.is_some(),
                    _ => true,
                };
                if in_view && may_start && (*streak >= self.config.enter_frames || self.capture_until.is_some()) {
                    let trigger = if self.capture_until.take().is_some() { Trigger::Capture } else { Trigger::Auto };
                    self.phase = Phase::Examining(Box::new(Exam {
                        trigger,
                        started: f.at,
                        started_at: f.captured_at,
                        last_in_view: f.at,
                        max_focus: 0.0,
                        used: Vec::new(),
                        last_classified: None,
                        failures: BTreeMap::new(),
                        frames_in_view: 0,
                        reference: None,
                        changed_in_a_row: 0,
                    }));
                    return self.observe_examining(f, settling);
                }
                if in_view && *streak < 2 {
                    // One frame with a lesion may be a flicker: the state stays as it was.
                    return Step::Skip;
                }
                let state = if in_view {
                    // A lesion coming into view (two frames in a row: one is a flicker): say
                    // what keeps it from being examined.
                    let check = f.checks.first_failed().or(settling.then_some(Check::OutOfFocus));
                    let name = match check {
                        None | Some(Check::LesionOffCentre) => StateName::Searching,
                        Some(_) => StateName::HoldSteady,
                    };
                    StationState { state: name, check, progress: None, assessment_id: None, abstained: None }
                } else {
                    StationState::idle(f.checks.first_failed())
                };
                self.set_state(state, f.captured_at);
                Step::Skip
            }
            Phase::Assessed { last_in_view, reference, changed_in_a_row } => {
                if in_view {
                    *last_in_view = f.at;
                }
                if f.checks.passed() {
                    let different = f.checks.signature.distance(reference) > self.config.scene_change_above;
                    *changed_in_a_row = if different { *changed_in_a_row + 1 } else { 0 };
                }
                if *changed_in_a_row >= CHANGED_FRAMES {
                    // The scope moved on to another lesion without leaving the skin.
                    tracing::info!("another lesion in view");
                    self.phase = Phase::Idle { streak: self.config.enter_frames.saturating_sub(1) };
                    return self.observe_settling(f, settling);
                }
                if !in_view && f.at.saturating_duration_since(*last_in_view) > leave {
                    self.phase = Phase::Idle { streak: 0 };
                    self.set_state(StationState::idle(f.checks.first_failed()), f.captured_at);
                }
                Step::Skip
            }
            Phase::Examining(_) => self.observe_examining(f, settling),
        }
    }

    fn observe_examining(&mut self, f: &Observed, settling: bool) -> Step {
        let Phase::Examining(exam) = &mut self.phase else { return Step::Skip };
        let in_view = f.checks.lesion_in_view();
        if in_view {
            exam.last_in_view = f.at;
            exam.frames_in_view += 1;
        } else if f.at.saturating_duration_since(exam.last_in_view) > secs(self.config.leave_secs) {
            // The scope left before enough good frames: no assessment (a glimpse is not an
            // examination), back to idle.
            tracing::info!(frames_classified = exam.used.len(), "lesion left before an assessment");
            self.phase = Phase::Idle { streak: 0 };
            self.set_state(StationState::idle(f.checks.first_failed()), f.captured_at);
            return Step::Skip;
        }
        if f.at.saturating_duration_since(exam.started) >= secs(self.config.timeout_secs) {
            let reference = exam.reference.unwrap_or(f.checks.signature);
            let exam = match std::mem::replace(&mut self.phase, Phase::Assessed { last_in_view: f.at, reference, changed_in_a_row: 0 }) {
                Phase::Examining(exam) => exam,
                _ => unreachable!("matched above"),
            };
            let assessment = self.abstaining(&exam, f);
            self.finish(assessment, f.captured_at);
            return Step::Skip;
        }
        let needed = self.config.min_frames;
        let progress = Some(Progress { frames: exam.used.len() as u32, needed });
        let examining = |state: StateName, check: Option<Check>| StationState { state, check, progress, assessment_id: None, abstained: None };
        if let Some(check) = f.checks.first_failed() {
            if in_view {
                *exam.failures.entry(check).or_default() += 1;
            }
            let state = if check.means_nothing_in_view() || check == Check::LesionOffCentre { StateName::Searching } else { StateName::HoldSteady };
            self.set_state(examining(state, Some(check)), f.captured_at);
            return Step::Skip;
        }
        if let Some(reference) = &exam.reference {
            if f.checks.signature.distance(reference) > self.config.scene_change_above {
                exam.changed_in_a_row += 1;
                if exam.changed_in_a_row >= CHANGED_FRAMES {
                    // Another lesion (or scene) came into view before this one was assessed:
                    // its frames must not mix with the new one's. Start again on the new view.
                    tracing::info!(frames_classified = exam.used.len(), "the view changed before an assessment; examining the new view");
                    self.phase = Phase::Idle { streak: self.config.enter_frames.saturating_sub(1) };
                    return self.observe_settling(f, settling);
                }
                return Step::Skip;
            }
            exam.changed_in_a_row = 0;
        }
        exam.max_focus = exam.max_focus.max(f.checks.focus);
        if settling || f.checks.focus < self.config.focus_relative_min * exam.max_focus {
            *exam.failures.entry(Check::OutOfFocus).or_default() += 1;
            self.set_state(examining(StateName::HoldSteady, Some(Check::OutOfFocus)), f.captured_at);
            return Step::Skip;
        }
        let distinct = exam.last_classified.is_none_or(|t| f.at.saturating_duration_since(t) >= secs(self.config.min_frame_gap_secs));
        if distinct {
            exam.last_classified = Some(f.at);
        }
        self.set_state(examining(StateName::Assessing, None), f.captured_at);
        if distinct {
            Step::Classify
        } else {
            Step::Skip
        }
    }

    /// The model's view of a frame [`Examination::observe`] asked about.
    pub fn classified(&mut self, f: &Observed, view: ModelView) {
        if self.asked.take() == Some(f.seq) {
            // Asked because only the lesion check failed: the frame is observed now, with the
            // model's word on whether a lesion is in view.
            self.vouched = view.typical.then_some(f.checks.signature);
            tracing::debug!(seq = f.seq, vouched = view.typical, "the lesion check saw no lesion; the model was asked");
            if let (f, Step::Classify) = self.observe_as_vouched(f) {
                self.use_frame(&f, view);
            }
            return;
        }
        let f = self.as_vouched(f);
        if f.lesion_seen_by_model {
            if !view.typical {
                // The model no longer finds this view typical of a lesion: it stops vouching,
                // and the frame is not used.
                self.vouched = None;
                return;
            }
            self.vouched = Some(f.checks.signature);
        }
        self.use_frame(&f, view);
    }

    fn use_frame(&mut self, f: &Observed, view: ModelView) {
        let ModelView { probabilities, out_of_distribution, .. } = view;
        let Phase::Examining(exam) = &mut self.phase else { return };
        exam.reference.get_or_insert(f.checks.signature);
        exam.used.push(UsedFrame {
            seq: f.seq,
            at: f.at,
            captured_at: f.captured_at,
            origin: f.origin.clone(),
            checks: f.checks.clone(),
            probabilities,
            out_of_distribution,
            lesion_seen_by_model: f.lesion_seen_by_model,
        });
        // Frames that were sharp next to what had been seen when they came may be soft next to
        // what came later (the end of an approach): only frames sharp against the examination's
        // sharpest count.
        let floor = self.config.focus_relative_min * exam.max_focus;
        exam.used.retain(|u| u.checks.focus >= floor);
        let span = match (exam.used.first(), exam.used.last()) {
            (Some(a), Some(b)) => b.at.saturating_duration_since(a.at),
            _ => Duration::ZERO,
        };
        let progress = Progress { frames: exam.used.len() as u32, needed: self.config.min_frames };
        if exam.used.len() as u32 >= self.config.min_frames && span >= secs(self.config.min_span_secs) {
            let reference = exam.reference.unwrap_or(f.checks.signature);
            let exam = match std::mem::replace(&mut self.phase, Phase::Assessed { last_in_view: f.at, reference, changed_in_a_row: 0 }) {
                Phase::Examining(exam) => exam,
                _ => unreachable!("matched above"),
            };
            // Most good frames look like nothing the model learnt from (a photo, plain skin, an
            // artefact the checks let through): no answer, like a single image.
            let strange = exam.used.iter().filter(|u| u.out_of_distribution).count();
            let assessment = if 2 * strange > exam.used.len() {
                let reasons = vec![crate::abstain::OUT_OF_DISTRIBUTION.to_string()];
                Assessment::abstained(exam.trigger, exam.started_at, f.captured_at, exam.max_focus, exam.used, reasons)
            } else {
                Assessment::from_frames(exam.trigger, exam.started_at, f.captured_at, exam.max_focus, exam.used)
            };
            self.finish(assessment, f.captured_at);
        } else {
            let state = StationState { state: StateName::Assessing, check: None, progress: Some(progress), assessment_id: None, abstained: None };
            self.set_state(state, f.captured_at);
        }
    }

    fn abstaining(&self, exam: &Exam, f: &Observed) -> Assessment {
        let mut reasons: Vec<(Check, u32)> = exam.failures.iter().map(|(c, n)| (*c, *n)).collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let reasons: Vec<String> = reasons
            .into_iter()
            .filter(|(_, n)| *n * 10 >= exam.frames_in_view.max(1)) // failed on at least a tenth
            .take(3)
            .map(|(c, _)| crate::abstain::reason(c))
            .collect();
        let reasons = if reasons.is_empty() { vec!["too_few_good_frames".to_string()] } else { reasons };
        Assessment::abstained(exam.trigger, exam.started_at, f.captured_at, exam.max_focus, exam.used.clone(), reasons)
    }

    fn finish(&mut self, assessment: Assessment, at: SystemTime) {
        let state = StationState {
            state: StateName::Assessed,
            check: None,
            progress: None,
            assessment_id: Some(assessment.id.clone()),
            abstained: Some(assessment.abstain.is_some()),
        };
        self.ready = Some(assessment);
        self.set_state(state, at);
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

#[cfg(test)]
mod tests;
