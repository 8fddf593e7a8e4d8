//! DICOM: what tamiz reads from an instance (metadata, validation) and how it turns the
//! stored samples into display values (pixels). Writing synthetic instances lives in
//! [`crate::synth`].

pub mod guard;
pub mod meta;
pub mod pixels;

pub use meta::{InstanceMeta, InvalidInstance, Laterality, View};

/// Checks a UID against PS3.5 §9.1: 1–64 characters, digits in dot-separated components,
/// no empty component. UIDs become object-store keys, so this is also what keeps `../`
/// and friends out of paths. Leading zeros (which §9.1 forbids) are tolerated because
/// real archives contain them and they are harmless as keys.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid
            .split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

/// Trims the padding DICOM puts on string values (space for text, NUL for UIDs).
pub fn trim_value(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_rules() {
        assert!(is_valid_uid("1.2.840.10008.5.1.4.1.1.1.2"));
        assert!(is_valid_uid("2.25.1234"));
        assert!(!is_valid_uid(""));
        assert!(!is_valid_uid("1..2"));
        assert!(!is_valid_uid("1.2."));
        assert!(!is_valid_uid("../../etc/passwd"));
        assert!(!is_valid_uid("1.2/3"));
        assert!(!is_valid_uid("1.2.3 "));
        assert!(!is_valid_uid(&"1.".repeat(40)));
    }
}
