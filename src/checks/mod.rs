//! Per-frame checks, before inference: is this frame worth classifying?
//!
//! Everything here works on small downscaled copies of the frame (160x120 and 80x60, whatever
//! the camera's size), so a check costs well under a millisecond on this machine (see
//! `docs/examination.md`); a Pi core is a few times slower and still far inside a frame's 66 ms.
//!
//! Each check has a name (what the station screen and the MQTT `state` show), a measured value
//! and a threshold from `[checks]` in the config. The checks are stateless except motion, which
//! compares a frame with the previous one; relative focus (against the sharpest frames of the
//! current examination) is judged by the examination, which knows the examination.

mod analysis;
mod lesion;

use serde::Serialize;

pub use analysis::{Analysis, Signature};
pub use lesion::LesionFigures;

use crate::config::ChecksConfig;

/// A check a frame can fail, by the name published in `state` and in abstain reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The field is too dark to judge (scope lying face down, lamp off, under-exposed).
    TooDark,
    /// The field is washed out (over-exposed, clipped).
    TooBright,
    /// Specular highlights cover too much of the lesion's area (not enough gel, scope tilted).
    Glare,
    /// The scene is not skin: busy with edges, or without colour (a room, a photo, a page).
    NotSkin,
    /// Skin with nothing that stands out from it (plain skin, a painted-out lesion).
    NoLesion,
    /// A lesion is in view but far from the centre of the field.
    LesionOffCentre,
    /// The frame moved too much since the previous one.
    Moving,
    /// Too blurred: below the absolute floor, or much softer than the sharpest frames of this
    /// examination.
    OutOfFocus,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::TooDark => "too_dark",
            Check::TooBright => "too_bright",
            Check::Glare => "glare",
            Check::NotSkin => "not_skin",
            Check::NoLesion => "no_lesion",
            Check::LesionOffCentre => "lesion_off_centre",
            Check::Moving => "moving",
            Check::OutOfFocus => "out_of_focus",
        }
    }

    /// The lesion check's verdicts (`lesion.rs`): no lesion, or a lesion off centre.
    pub fn is_lesion_check(self) -> bool {
        matches!(self, Check::NoLesion | Check::LesionOffCentre)
    }

    /// Whether failing this check means no lesion is in view at all (the station is idle),
    /// rather than a lesion in view that cannot be judged yet.
    pub fn means_nothing_in_view(self) -> bool {
        matches!(self, Check::TooDark | Check::TooBright | Check::NotSkin | Check::NoLesion)
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the checks measured on one frame, and which ones failed (in the order they are judged:
/// exposure, scene, lesion, motion, focus). Values are rounded for publishing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameChecks {
    /// 95th percentile of the brightest channel in the field, 0..1 (the lit skin; a lesion
    /// is darker).
    pub exposure: f32,
    /// Share of the field with a clipped channel.
    pub clipped: f32,
    /// Share of the central field covered by specular highlights.
    pub glare: f32,
    /// Mean absolute Laplacian of the 160-px-wide luminance, in 8-bit levels (higher = sharper).
    pub focus: f32,
    /// Estimated displacement since the previous frame, in pixels of a 640-px-wide frame; `None`
    /// for the first frame.
    pub motion_px: Option<f32>,
    pub lesion: LesionFigures,
    /// The checks this frame failed, most fundamental first (exposure, scene, lesion, then the
    /// quality checks glare, motion, focus, which are always judged). Empty: usable (relative
    /// focus aside, which the examination judges).
    pub failed: Vec<Check>,
    /// What the view looks like (not published): the examination tells one lesion from the
    /// next by it.
    #[serde(skip)]
    pub signature: Signature,
}

impl FrameChecks {
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }
    /// A lesion is in view (whatever the image quality).
    pub fn lesion_in_view(&self) -> bool {
        !self.failed.iter().any(|c| c.means_nothing_in_view())
    }
    /// Only the lesion check failed: a usable view of skin where it saw no lesion, or took
    /// something else for one (the dark rim of a dermatoscope's field, off centre). The
    /// examination may ask the model about such a view.
    pub fn only_lesion_check_failed(&self) -> bool {
        matches!(self.failed.as_slice(), [c] if c.is_lesion_check())
    }
    /// The first failed check, the one to tell the clinician about.
    pub fn first_failed(&self) -> Option<Check> {
        self.failed.first().copied()
    }
}

/// Runs the checks on a stream of frames (motion needs the previous one).
pub struct FrameChecker {
    config: ChecksConfig,
    previous: Option<analysis::MotionThumb>,
}

impl FrameChecker {
    pub fn new(config: ChecksConfig) -> Self {
        Self { config, previous: None }
    }

    /// Forgets the previous frame (after a gap in the stream, so a jump is not read as motion).
    pub fn reset_motion(&mut self) {
        self.previous = None;
    }

    pub fn check(&mut self, image: &image::RgbImage) -> FrameChecks {
        let analysis = Analysis::of(image);
        let motion_px = self.previous.as_ref().map(|prev| analysis.motion.displacement_px(prev));
        let checks = judge(&self.config, &analysis, motion_px);
        self.previous = Some(analysis.motion);
        checks
    }
}

/// One image on its own (no motion): for `lesiond checks` and `lesiond classify`.
pub fn check_image(config: &ChecksConfig, image: &image::RgbImage) -> FrameChecks {
    judge(config, &Analysis::of(image), None)
}

fn judge(c: &ChecksConfig, a: &Analysis, motion_px: Option<f32>) -> FrameChecks {
    let exposure = a.exposure();
    let clipped = a.clipped();
    let glare = a.glare();
    let focus = a.focus();
    let lesion = lesion::measure(a);
    let mut failed = Vec::new();
    if exposure < c.too_dark_below {
        failed.push(Check::TooDark);
    } else if clipped > c.too_bright_clipped_above {
        failed.push(Check::TooBright);
    } else if lesion.texture > c.not_skin_texture_above
        || lesion.saturation < c.not_skin_saturation_below
        || lesion.saturation > c.not_skin_saturation_above
        || lesion.red_share < c.not_skin_red_share_below
    {
        failed.push(Check::NotSkin);
    } else if no_lesion(c, &lesion) {
        failed.push(Check::NoLesion);
    } else if lesion.centre_share < c.lesion_centre_share_min || lesion.area > c.lesion_area_max {
        failed.push(Check::LesionOffCentre);
    }
    // The image-quality checks are judged whatever the scene checks said: the examination
    // only acts on the first failed check, but a single image's abstain reasons
    // (`abstain.rs`) need to know about blur or glare even where a scene check failed.
    if glare > c.glare_above {
        failed.push(Check::Glare);
    }
    if motion_px.is_some_and(|m| m > c.motion_max_px) {
        failed.push(Check::Moving);
    }
    if focus < c.focus_min {
        failed.push(Check::OutOfFocus);
    }
    let r = |v: f32| (v * 1000.0).round() / 1000.0;
    FrameChecks {
        exposure: r(exposure),
        clipped: r(clipped),
        glare: r(glare),
        focus: r(focus),
        motion_px: motion_px.map(r),
        lesion: lesion.rounded(),
        failed,
        signature: a.signature,
    }
}

/// `no_lesion`: the candidate does not stand out from the skin. Contrast alone decides at both
/// ends; in between, the centre's texture must show structure, the more so the fainter the
/// candidate (a light nevus keeps its pigment network; plain or painted-out skin is as smooth
/// in the centre as around it). Thresholds measured in docs/examination.md.
fn no_lesion(c: &ChecksConfig, l: &LesionFigures) -> bool {
    l.contrast < c.lesion_contrast_faint_min
        || (l.contrast < c.lesion_contrast_min && l.centre_texture < c.lesion_centre_texture_faint_min)
        || (l.contrast < c.lesion_contrast_clear && l.centre_texture < c.lesion_centre_texture_min)
}

#[cfg(test)]
mod tests;

/// The median of `v` (reordered); 0 when empty.
pub fn median(v: &mut [f32]) -> f32 {
    analysis::percentile(v, 0.5)
}
