//! DIMSE status codes (PS3.7 annex C, PS3.4 B.2.3 / C.4 / K.4) in words a person can act on.
//!
//! Only the words live here; deciding whether a status is a success, a warning or a
//! failure for an operation is done by the callers (`StoreStatus`, the C-FIND loop), because
//! the same code range means different things per service (0xB000 is a warning for C-STORE
//! but unused for C-FIND, for example).

/// The status code in hex followed by what it means, e.g. `"0xA700 refused: out of resources"`.
///
/// Always includes the hex code, so that an unknown or vendor-specific code can still be
/// looked up in the archive's conformance statement.
pub fn status_words(code: u16) -> String {
    format!("0x{:04X} {}", code, meaning(code))
}

/// Whether the code is a success (0x0000).
pub fn is_success(code: u16) -> bool {
    code == 0x0000
}

/// Whether the code is a warning (0x0001, 0x0107, 0x0116, 0xBxxx).
pub fn is_warning(code: u16) -> bool {
    matches!(code, 0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF)
}

/// Whether the code means "more responses follow" (C-FIND / C-MOVE / C-GET pending).
pub fn is_pending(code: u16) -> bool {
    matches!(code, 0xFF00 | 0xFF01)
}

fn meaning(code: u16) -> &'static str {
    exact(code).unwrap_or_else(|| by_range(code))
}

/// Codes with a meaning of their own.
fn exact(code: u16) -> Option<&'static str> {
    Some(match code {
        0x0000 => "success",
        // Warnings (PS3.7 C.4 and the storage service, PS3.4 B.2.3).
        0x0001 => "warning: requested optional attributes are not supported",
        0x0107 => "warning: attribute list error",
        0x0116 => "warning: attribute value out of range",
        0xB000 => "warning: coercion of data elements",
        0xB006 => "warning: elements discarded",
        0xB007 => "warning: data set does not match SOP class",
        // Cancel / pending.
        0xFE00 => "cancelled",
        0xFF00 => "pending",
        0xFF01 => "pending: optional keys not supported",
        // General failures (PS3.7 C.5).
        0x0105 => "error: no such attribute",
        0x0106 => "error: invalid attribute value",
        0x0110 => "error: processing failure",
        0x0111 => "error: duplicate SOP instance",
        0x0112 => "error: no such SOP instance",
        0x0113 => "error: no such event type",
        0x0114 => "error: no such argument",
        0x0115 => "error: invalid argument value",
        0x0117 => "error: invalid object instance",
        0x0118 => "error: no such SOP class",
        0x0119 => "error: class-instance conflict",
        0x0120 => "error: missing attribute",
        0x0121 => "error: missing attribute value",
        0x0122 => "refused: SOP class not supported",
        0x0123 => "error: no such action",
        0x0124 => "refused: not authorized",
        0x0210 => "error: duplicate invocation",
        0x0211 => "error: unrecognized operation",
        0x0212 => "error: mistyped argument",
        0x0213 => "error: resource limitation",
        // Service-specific failures (storage, query/retrieve, worklist).
        0xA700 => "refused: out of resources",
        0xA701 => "refused: out of resources (unable to calculate number of matches)",
        0xA702 => "refused: out of resources (unable to perform sub-operations)",
        0xA801 => "refused: move destination unknown",
        0xA900 => "error: data set does not match SOP class",
        _ => return None,
    })
}

/// Service-specific ranges (PS3.4 B.2.3, C.4.1.1.4, K.4.1.1.4).
fn by_range(code: u16) -> &'static str {
    match code {
        0xA700..=0xA7FF => "refused: out of resources",
        0xA900..=0xA9FF => "error: data set or identifier does not match SOP class",
        0xA000..=0xA6FF | 0xA800..=0xA8FF | 0xAA00..=0xAFFF => "failure",
        0xB000..=0xBFFF => "warning",
        0xC000..=0xCFFF => "error: cannot understand",
        _ => "unknown status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_always_carry_the_hex_code() {
        assert_eq!(status_words(0x0000), "0x0000 success");
        assert_eq!(status_words(0xA700), "0xA700 refused: out of resources");
        assert_eq!(
            status_words(0xA900),
            "0xA900 error: data set does not match SOP class"
        );
        assert_eq!(status_words(0xC123), "0xC123 error: cannot understand");
        assert_eq!(
            status_words(0x0122),
            "0x0122 refused: SOP class not supported"
        );
        assert_eq!(status_words(0x0211), "0x0211 error: unrecognized operation");
        assert_eq!(
            status_words(0xB007),
            "0xB007 warning: data set does not match SOP class"
        );
        assert_eq!(status_words(0xFE00), "0xFE00 cancelled");
        assert_eq!(
            status_words(0xFF01),
            "0xFF01 pending: optional keys not supported"
        );
        assert_eq!(status_words(0x1234), "0x1234 unknown status");
    }

    #[test]
    fn classes() {
        assert!(is_success(0));
        assert!(is_warning(0xB000) && is_warning(0xB006) && !is_warning(0xA700));
        assert!(is_pending(0xFF00) && is_pending(0xFF01) && !is_pending(0xFE00));
    }
}
