//! Deterministic UIDs: the same filing always yields the same UIDs, so a
//! resend after a crash stores the same instance again, never a second one.

use sha2::{Digest, Sha256};

use super::filing::Filing;

/// The UIDs of the two instances one assessment files, and their series and study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uids {
    pub study: String,
    pub image_series: String,
    pub report_series: String,
    pub image_instance: String,
    pub report_instance: String,
    /// Frame of Reference of the image (the Dermoscopic IOD requires one).
    pub image_frame_of_reference: String,
}

/// Role tags keep the five UIDs of one assessment distinct although they hash
/// the same id; the "lesiond/" prefix keeps them apart from other hashes of it.
const STUDY: &str = "lesiond/study";
const IMAGE_SERIES: &str = "lesiond/image-series";
const REPORT_SERIES: &str = "lesiond/report-series";
const IMAGE_INSTANCE: &str = "lesiond/image-instance";
const REPORT_INSTANCE: &str = "lesiond/report-instance";
const FRAME_OF_REFERENCE: &str = "lesiond/image-frame-of-reference";
const DEVICE: &str = "lesiond/device";

pub fn uids(filing: &Filing) -> Uids {
    let assessment = filing.assessment_id;
    // A worklist's Study Instance UID wins: the PACS already knows that study.
    let study = match filing.visit.study_instance_uid {
        Some(uid) => uid.to_owned(),
        None => derived_uid(STUDY, filing.visit.context_id),
    };
    Uids {
        study,
        image_series: derived_uid(IMAGE_SERIES, assessment),
        report_series: derived_uid(REPORT_SERIES, assessment),
        image_instance: derived_uid(IMAGE_INSTANCE, assessment),
        report_instance: derived_uid(REPORT_INSTANCE, assessment),
        image_frame_of_reference: derived_uid(FRAME_OF_REFERENCE, assessment),
    }
}

/// UID of the station as an SR device observer (Device Observer UID).
pub fn device_uid(station_id: &str) -> String {
    derived_uid(DEVICE, station_id)
}

/// `2.25.<decimal u128>` per PS3.5 B.2 (UUID-derived UIDs): the first 128 bits
/// of SHA-256(role NUL id). At most 39 digits, so at most 44 characters, and
/// decimal formatting never gives a leading zero (0 itself prints as "0").
fn derived_uid(role: &str, id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(role.as_bytes());
    hasher.update([0u8]); // separator: ("ab","c") and ("a","bc") must differ
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    format!("2.25.{}", u128::from_be_bytes(first))
}

/// True when `uid` is a syntactically valid DICOM UID (PS3.5 9.1).
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uids_are_valid_and_stable() {
        let a = derived_uid(IMAGE_INSTANCE, "0b7e5c1a-0000-4000-8000-000000000002");
        let b = derived_uid(IMAGE_INSTANCE, "0b7e5c1a-0000-4000-8000-000000000002");
        assert_eq!(a, b);
        assert!(a.starts_with("2.25."));
        assert!(is_valid_uid(&a), "{a}");
        assert!(a.len() <= 64);
    }

    #[test]
    fn roles_and_ids_give_distinct_uids() {
        let id = "0b7e5c1a-0000-4000-8000-000000000002";
        let all = [
            STUDY,
            IMAGE_SERIES,
            REPORT_SERIES,
            IMAGE_INSTANCE,
            REPORT_INSTANCE,
            FRAME_OF_REFERENCE,
            DEVICE,
        ]
        .map(|role| derived_uid(role, id));
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_ne!(derived_uid("ab", "c"), derived_uid("a", "bc"));
        assert_ne!(derived_uid(STUDY, "x"), derived_uid(STUDY, "y"));
    }

    #[test]
    fn uid_validity_rules() {
        assert!(is_valid_uid("1.2.840.10008.1.2.1"));
        assert!(is_valid_uid("2.25.0"));
        assert!(!is_valid_uid("1.02.3"));
        assert!(!is_valid_uid("1..3"));
        assert!(!is_valid_uid("1.2."));
        assert!(!is_valid_uid(&format!("2.25.{}", "1".repeat(61))));
    }

    #[test]
    fn many_derived_uids_are_valid() {
        for i in 0..2000 {
            let u = derived_uid(STUDY, &format!("ctx-{i}"));
            assert!(is_valid_uid(&u), "{u}");
        }
    }
}
