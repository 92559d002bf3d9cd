//! DIMSE command sets (PS3.7 section 9 / annex E): building the requests we send and reading
//! the responses we get, as bytes.
//!
//! dicom-ul only moves PDUs; it has no C-STORE / C-FIND / C-ECHO. A command set is a data set
//! of group 0000 elements, always encoded Implicit VR Little Endian whatever transfer syntax
//! the presentation context negotiated (PS3.7 6.3.1), and it must start with Command Group
//! Length (0000,0000): `InMemDicomObject::command_from_element_iter` computes that for us.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Command Field (0000,0100) values we use.
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_FIND_RQ: u16 = 0x0020;
pub const C_FIND_RSP: u16 = 0x8020;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;

/// Command Data Set Type (0000,0800): 0x0101 means "no data set follows"; any other value
/// means one does (PS3.7 E.1). We send 0x0000 when one follows, as most toolkits do.
pub const NO_DATA_SET: u16 = 0x0101;
pub const DATA_SET_PRESENT: u16 = 0x0000;

/// Priority (0000,0700): medium.
const PRIORITY_MEDIUM: u16 = 0x0000;

#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    #[error("cannot encode the DIMSE command set: {0}")]
    Encode(String),
    #[error("cannot decode the DIMSE command set from the archive: {0}")]
    Decode(String),
    #[error("the archive's response has no {0}")]
    Missing(&'static str),
}

/// A response command set, reduced to what an SCU needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub command_field: u16,
    pub message_id_responded: Option<u16>,
    pub status: u16,
    /// Error Comment (0000,0902): free text from the archive (LO, at most 64 characters).
    pub error_comment: Option<String>,
    pub has_data_set: bool,
}

fn us(tag: dicom_core::Tag, value: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

fn ui(tag: dicom_core::Tag, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(value))
}

fn encode(command: InMemDicomObject) -> Result<Vec<u8>, DimseError> {
    let mut out = Vec::with_capacity(256);
    command
        .write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| DimseError::Encode(e.to_string()))?;
    Ok(out)
}

/// C-ECHO-RQ (PS3.7 9.3.5.1).
pub fn echo_rq(message_id: u16) -> Result<Vec<u8>, DimseError> {
    encode(InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.1.1"),
        us(tags::COMMAND_FIELD, C_ECHO_RQ),
        us(tags::MESSAGE_ID, message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
    ]))
}

/// C-STORE-RQ (PS3.7 9.3.1.1); the data set follows in separate PDVs.
pub fn store_rq(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) -> Result<Vec<u8>, DimseError> {
    encode(InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, sop_class_uid),
        us(tags::COMMAND_FIELD, C_STORE_RQ),
        us(tags::MESSAGE_ID, message_id),
        us(tags::PRIORITY, PRIORITY_MEDIUM),
        us(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance_uid),
    ]))
}

/// C-FIND-RQ (PS3.7 9.3.2.1); the identifier follows in separate PDVs.
pub fn find_rq(message_id: u16, sop_class_uid: &str) -> Result<Vec<u8>, DimseError> {
    encode(InMemDicomObject::command_from_element_iter([
        ui(tags::AFFECTED_SOP_CLASS_UID, sop_class_uid),
        us(tags::COMMAND_FIELD, C_FIND_RQ),
        us(tags::MESSAGE_ID, message_id),
        us(tags::PRIORITY, PRIORITY_MEDIUM),
        us(tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT),
    ]))
}

/// Read a response command set (Implicit VR LE, like every command set).
pub fn parse_response(bytes: &[u8]) -> Result<Response, DimseError> {
    let obj = InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| DimseError::Decode(e.to_string()))?;
    let int = |tag, name| -> Result<Option<u16>, DimseError> {
        match obj.get(tag) {
            None => Ok(None),
            Some(e) => e
                .to_int::<u16>()
                .map(Some)
                .map_err(|_| DimseError::Decode(format!("{name} is not a 16-bit number"))),
        }
    };
    let command_field = int(tags::COMMAND_FIELD, "Command Field")?
        .ok_or(DimseError::Missing("Command Field (0000,0100)"))?;
    let status = int(tags::STATUS, "Status")?.ok_or(DimseError::Missing("Status (0000,0900)"))?;
    let message_id_responded = int(tags::MESSAGE_ID_BEING_RESPONDED_TO, "Message ID")?;
    // Absent Command Data Set Type is a broken response; treat it as "no data set" so that
    // we do not wait for data that never comes (the read timeout would end it anyway).
    let data_set_type = int(tags::COMMAND_DATA_SET_TYPE, "Command Data Set Type")?;
    let error_comment = obj
        .get(tags::ERROR_COMMENT)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches([' ', '\0']).to_string())
        .filter(|s| !s.is_empty());
    Ok(Response {
        command_field,
        message_id_responded,
        status,
        error_comment,
        has_data_set: data_set_type.is_some_and(|t| t != NO_DATA_SET),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_rq_starts_with_group_length_and_is_even() {
        let bytes = store_rq(7, "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4.5").unwrap();
        // (0000,0000) UL, length 4, value = rest of the group.
        assert_eq!(&bytes[0..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
        let group_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!(group_len, bytes.len() - 12);
        assert_eq!(bytes.len() % 2, 0);
    }

    #[test]
    fn response_round_trip() {
        let rsp = encode(InMemDicomObject::command_from_element_iter([
            ui(tags::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.1.1"),
            us(tags::COMMAND_FIELD, C_ECHO_RSP),
            us(tags::MESSAGE_ID_BEING_RESPONDED_TO, 3),
            us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
            us(tags::STATUS, 0xA700),
            DataElement::new(
                tags::ERROR_COMMENT,
                VR::LO,
                PrimitiveValue::from("disk full "),
            ),
        ]))
        .unwrap();
        let r = parse_response(&rsp).unwrap();
        assert_eq!(
            r,
            Response {
                command_field: C_ECHO_RSP,
                message_id_responded: Some(3),
                status: 0xA700,
                error_comment: Some("disk full".into()),
                has_data_set: false,
            }
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_response(&[1, 2, 3]).is_err());
        assert!(parse_response(&[]).is_err());
    }
}
