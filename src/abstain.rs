//! Why a result gives no answer. One place for the reasons, whatever gives them: the per-frame
//! checks (`checks/`, the same ones the examination runs: `no_lesion`, `not_skin`,
//! `poor_quality:<check>`) and the out-of-distribution score (`ood.rs`:
//! `out_of_distribution`). A result that abstains still carries its probabilities, for the
//! record, with this message saying they are not to be relied on, and no refer flag.

use serde::Serialize;

use crate::checks::{Check, FrameChecks};
use crate::ood::OodScore;

pub const OUT_OF_DISTRIBUTION: &str = "out_of_distribution";

pub const MESSAGE: &str = "No answer: the image is not one the model can judge (see the reasons). \
     Its probabilities are not to be relied on.";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Abstain {
    pub reasons: Vec<String>,
    pub message: &'static str,
}

/// The reason a failed check gives.
pub fn reason(check: Check) -> String {
    match check {
        Check::NoLesion => "no_lesion".to_string(),
        Check::NotSkin => "not_skin".to_string(),
        other => format!("poor_quality:{other}"),
    }
}

/// Whether a failed check means no answer for an image judged on its own.
///
/// - Exposure and image quality (too dark, too bright, glare, out of focus): always; nothing
///   can be judged on such an image.
/// - The scene checks (no lesion, not skin) are cheap heuristics made to keep a live camera idle
///   between lesions; on a stored image they also reject about 3 % of real dermoscopic images
///   (hairy lesions, grey-blue dermatoscopes). So they count when the model's own features agree
///   that the view is atypical (`OodScore::atypical`, above the validation median), or when
///   there is no score to ask.
/// - Off centre and moving are instructions for a live examination, not reasons to refuse an
///   image someone framed and stored.
fn counts(check: Check, ood: Option<&OodScore>) -> bool {
    match check {
        Check::TooDark | Check::TooBright | Check::Glare | Check::OutOfFocus => true,
        Check::NoLesion | Check::NotSkin => ood.is_none_or(|o| o.atypical),
        Check::LesionOffCentre | Check::Moving => false,
    }
}

/// One image's answer or abstention: its failed checks (when it was checked) and its
/// out-of-distribution score (when the model has one). `None`: it is answered.
pub fn of_image(checks: Option<&FrameChecks>, ood: Option<&OodScore>) -> Option<Abstain> {
    let mut reasons: Vec<String> = checks
        .map(|c| c.failed.iter().filter(|&&check| counts(check, ood)).map(|&c| reason(c)).collect())
        .unwrap_or_default();
    if ood.is_some_and(|o| o.out_of_distribution) {
        reasons.push(OUT_OF_DISTRIBUTION.to_string());
    }
    (!reasons.is_empty()).then_some(Abstain { reasons, message: MESSAGE })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ood(out: bool) -> OodScore {
        OodScore { score: 0.0, mahalanobis: 0.0, energy: 0.0, out_of_distribution: out, atypical: out }
    }

    fn checked(failed: Vec<Check>) -> FrameChecks {
        FrameChecks {
            exposure: 0.5,
            clipped: 0.0,
            glare: 0.0,
            focus: 5.0,
            motion_px: None,
            lesion: Default::default(),
            failed,
            signature: Default::default(),
        }
    }

    #[test]
    fn a_scene_check_counts_when_the_features_agree_and_quality_always() {
        let typical = OodScore { atypical: false, ..ood(false) };
        let atypical = OodScore { atypical: true, ..ood(false) };
        let not_skin = checked(vec![Check::NotSkin]);
        assert_eq!(of_image(Some(&not_skin), Some(&typical)), None, "the model's features overrule the heuristic");
        assert_eq!(of_image(Some(&not_skin), Some(&atypical)).map(|a| a.reasons), Some(vec!["not_skin".to_string()]));
        assert_eq!(of_image(Some(&not_skin), None).map(|a| a.reasons), Some(vec!["not_skin".to_string()]), "no score: the check");
        let dark = checked(vec![Check::TooDark, Check::OutOfFocus]);
        assert_eq!(
            of_image(Some(&dark), Some(&typical)).map(|a| a.reasons),
            Some(vec!["poor_quality:too_dark".to_string(), "poor_quality:out_of_focus".to_string()])
        );
        assert_eq!(of_image(Some(&checked(vec![Check::LesionOffCentre, Check::Moving])), Some(&typical)), None);
    }

    #[test]
    fn reasons_name_the_check_or_the_score() {
        assert_eq!(reason(Check::NoLesion), "no_lesion");
        assert_eq!(reason(Check::OutOfFocus), "poor_quality:out_of_focus");
        assert_eq!(of_image(None, Some(&ood(false))), None);
        assert_eq!(of_image(None, None), None);
        let a = of_image(None, Some(&ood(true))).expect("abstains");
        assert_eq!(a.reasons, vec!["out_of_distribution"]);
    }
}
