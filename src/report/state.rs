//! What the station is doing, as published (retained) on `<prefix>/<station>/state` and shown
//! on a screen next to the station.

use std::time::SystemTime;

use serde::Serialize;

use crate::checks::{Check, FrameChecks};
use crate::config::ExaminationMode;
use crate::frame::FrameOrigin;
use super::rfc3339;

/// Bump on any change a subscriber (or the station screen) could trip over.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    /// No lesion in view (`check` says what is seen instead: `too_dark`, `not_skin`, ...).
    Idle,
    /// An examination is under way but the lesion is not in view right now, or off centre.
    Searching,
    /// A lesion is in view but the frames are not usable yet (`check`: `out_of_focus`,
    /// `moving`, `glare`, ...).
    HoldSteady,
    /// Good frames are being collected and classified (`progress`).
    Assessing,
    /// This lesion has its assessment (`assessment_id`); the station waits for it to leave.
    Assessed,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Idle => "idle",
            StateName::Searching => "searching",
            StateName::HoldSteady => "hold_steady",
            StateName::Assessing => "assessing",
            StateName::Assessed => "assessed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub frames: u32,
    pub needed: u32,
}

/// The station's state. Two states are "the same" (nothing to publish) when everything but
/// the latest frame's figures is equal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationState {
    pub state: StateName,
    /// The failing check behind `idle`, `searching` and `hold_steady`.
    pub check: Option<Check>,
    pub progress: Option<Progress>,
    /// The assessment of the lesion in view, once `assessed`.
    pub assessment_id: Option<String>,
    /// Whether that assessment abstained.
    pub abstained: Option<bool>,
}

impl StationState {
    pub fn idle(check: Option<Check>) -> Self {
        StationState { state: StateName::Idle, check, progress: None, assessment_id: None, abstained: None }
    }
}

/// The JSON on the `state` topic.
#[derive(Debug, Serialize)]
pub struct StatePayload<'a> {
    pub schema_version: u32,
    pub station_id: &'a str,
    pub mode: ExaminationMode,
    #[serde(flatten)]
    pub state: &'a StationState,
    /// When this state began, RFC 3339 UTC.
    pub since: String,
    /// When this message was made.
    pub at: String,
    /// The latest frame: where it came from and its check figures.
    pub frame: Option<FrameReport<'a>>,
}

#[derive(Debug, Serialize)]
pub struct FrameReport<'a> {
    pub source: &'a FrameOrigin,
    pub checks: &'a FrameChecks,
}

impl<'a> StatePayload<'a> {
    pub fn new(station_id: &'a str, mode: ExaminationMode, state: &'a StationState, since: SystemTime, frame: Option<FrameReport<'a>>) -> Self {
        StatePayload {
            schema_version: SCHEMA_VERSION,
            station_id,
            mode,
            state,
            since: rfc3339(since),
            at: rfc3339(SystemTime::now()),
            frame,
        }
    }
}
