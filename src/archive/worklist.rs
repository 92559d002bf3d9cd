//! Modality Worklist query (C-FIND, Modality Worklist Information Model - FIND, PS3.4 K.6):
//! look up the scheduled procedure an examination belongs to by its accession number.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::association::{
    expect_response, sop_class_name, Association, NetError, Peer, Proposal, EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
};
use super::dimse;
use super::status;

/// Modality Worklist Information Model - FIND.
pub const MWL_FIND: &str = "1.2.840.10008.5.1.4.31";

#[derive(Debug, Clone, Copy)]
pub struct WorklistQuery<'a> {
    pub accession_number: &'a str,
    /// Scheduled Procedure Step Modality to match, e.g. `Some("XC")` (external-camera
    /// photography); `None` matches any (sent as an empty, universal key).
    pub modality: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorklistItem {
    /// Empty when the worklist entry has none (a broken entry; the caller should not file
    /// images against it).
    pub patient_id: String,
    /// DICOM PN as sent, e.g. "Doe^Jane".
    pub patient_name: Option<String>,
    /// YYYYMMDD.
    pub birth_date: Option<String>,
    /// "M", "F" or "O".
    pub sex: Option<String>,
    pub accession_number: String,
    pub study_instance_uid: Option<String>,
    /// Requested Procedure Description (0032,1060).
    pub requested_procedure: Option<String>,
}

/// C-FIND on the worklist by accession number. Several items for one accession number are
/// all returned (the caller decides what ambiguity means); none is an empty vector.
pub async fn find(peer: &Peer, query: &WorklistQuery<'_>) -> Result<Vec<WorklistItem>, NetError> {
    let mut assoc = Association::open(
        peer,
        &[Proposal::new(MWL_FIND, &[EXPLICIT_VR_LE, IMPLICIT_VR_LE])],
    )
    .await?;
    match find_on(&mut assoc, query).await {
        Ok(items) => {
            assoc.release().await?;
            Ok(items)
        }
        Err(e) => {
            // Mid-operation failure: the association state is unknown, do not try to release.
            assoc.abort().await;
            Err(e)
        }
    }
}

async fn find_on(
    assoc: &mut Association,
    query: &WorklistQuery<'_>,
) -> Result<Vec<WorklistItem>, NetError> {
    let during = "querying the worklist (C-FIND)";
    let (pc_id, ts_uid) = assoc
        .context_for(MWL_FIND)
        .ok_or_else(|| NetError::ContextRefused {
            sop_class: sop_class_name(MWL_FIND),
            transfer_syntax: None,
        })?;
    let ts = TransferSyntaxRegistry
        .get(&ts_uid)
        .ok_or_else(|| NetError::UnexpectedResponse {
            during,
            detail: format!("the archive chose transfer syntax {ts_uid}, which we did not propose"),
        })?;

    let mut identifier = Vec::new();
    request_identifier(query)
        .write_dataset_with_ts(&mut identifier, ts)
        .map_err(|e| dimse::DimseError::Encode(e.to_string()))?;
    let message_id = assoc.message_id();
    let command = dimse::find_rq(message_id, MWL_FIND)?;
    assoc
        .send_message(pc_id, &command, Some(&identifier), during)
        .await?;

    let mut items = Vec::new();
    loop {
        let (rsp, data) = assoc.receive_message(during).await?;
        expect_response(&rsp, dimse::C_FIND_RSP, message_id, during)?;
        if status::is_pending(rsp.status) {
            let Some(data) = data else {
                return Err(NetError::UnexpectedResponse {
                    during,
                    detail: "a pending C-FIND response without an identifier".into(),
                });
            };
            let obj = InMemDicomObject::read_dataset_with_ts(data.as_slice(), ts).map_err(|e| {
                NetError::UnexpectedResponse {
                    during,
                    // The decoder's message, never the content.
                    detail: format!("cannot decode a worklist item: {e}"),
                }
            })?;
            items.push(item_from(&obj, query.accession_number));
        } else if status::is_success(rsp.status) {
            return Ok(items);
        } else {
            return Err(NetError::Failed {
                operation: "worklist C-FIND",
                status: rsp.status,
                comment: rsp.error_comment,
            });
        }
    }
}

fn elem(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    if value.is_empty() {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    } else {
        DataElement::new(tag, vr, PrimitiveValue::from(value))
    }
}

/// The identifier: the accession number to match, and empty return keys for what we want
/// back (PS3.4 K.6.1.2.2). The Scheduled Procedure Step Sequence must be present with one
/// item: worklist SCPs (dcmtk's wlmscpfs among them) refuse a query without it.
fn request_identifier(query: &WorklistQuery<'_>) -> InMemDicomObject {
    let step = InMemDicomObject::from_element_iter([
        elem(tags::MODALITY, VR::CS, query.modality.unwrap_or("")),
        elem(tags::SCHEDULED_STATION_AE_TITLE, VR::AE, ""),
        elem(tags::SCHEDULED_PROCEDURE_STEP_START_DATE, VR::DA, ""),
        elem(tags::SCHEDULED_PROCEDURE_STEP_START_TIME, VR::TM, ""),
    ]);
    InMemDicomObject::from_element_iter([
        // Asked for so that names in other character sets decode right.
        elem(tags::SPECIFIC_CHARACTER_SET, VR::CS, ""),
        elem(tags::ACCESSION_NUMBER, VR::SH, query.accession_number),
        elem(tags::PATIENT_NAME, VR::PN, ""),
        elem(tags::PATIENT_ID, VR::LO, ""),
        elem(tags::PATIENT_BIRTH_DATE, VR::DA, ""),
        elem(tags::PATIENT_SEX, VR::CS, ""),
        elem(tags::STUDY_INSTANCE_UID, VR::UI, ""),
        elem(tags::REQUESTED_PROCEDURE_DESCRIPTION, VR::LO, ""),
        DataElement::new(
            tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![step]),
        ),
    ])
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?;
    let s = s.trim_matches([' ', '\0']);
    (!s.is_empty()).then(|| s.to_string())
}

fn item_from(obj: &InMemDicomObject, queried_accession: &str) -> WorklistItem {
    WorklistItem {
        patient_id: text(obj, tags::PATIENT_ID).unwrap_or_default(),
        patient_name: text(obj, tags::PATIENT_NAME),
        birth_date: text(obj, tags::PATIENT_BIRTH_DATE),
        sex: text(obj, tags::PATIENT_SEX),
        // An SCP should echo the matched key; fall back to what we asked for.
        accession_number: text(obj, tags::ACCESSION_NUMBER)
            .unwrap_or_else(|| queried_accession.to_string()),
        study_instance_uid: text(obj, tags::STUDY_INSTANCE_UID),
        requested_procedure: text(obj, tags::REQUESTED_PROCEDURE_DESCRIPTION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

    #[test]
    fn identifier_round_trips() {
        let q = WorklistQuery {
            accession_number: "ACC1",
            modality: Some("XC"),
        };
        let mut bytes = Vec::new();
        request_identifier(&q)
            .write_dataset_with_ts(&mut bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        let obj = InMemDicomObject::read_dataset_with_ts(
            bytes.as_slice(),
            &EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        let item = item_from(&obj, "ACC1");
        assert_eq!(item.accession_number, "ACC1");
        assert_eq!(item.patient_name, None);
        let seq = obj
            .get(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        assert_eq!(text(&seq[0], tags::MODALITY).as_deref(), Some("XC"));
    }
}
