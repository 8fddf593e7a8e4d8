//! DIMSE command sets (PS3.7 §9.3, §E): group 0000 in Implicit VR Little Endian, read
//! from the sender's Command PDVs and written for the responses tamiz sends. Only the
//! elements C-STORE and C-ECHO need are read; everything else in the group is skipped.

/// Command Field values (PS3.7 §E.1).
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type: no data set follows.
pub const NO_DATA_SET: u16 = 0x0101;

/// A command set larger than this is not a C-STORE or C-ECHO request.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// The request elements tamiz acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub has_data_set: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("the command set is truncated at byte {0}")]
    Truncated(usize),
    #[error("the command set has no Command Field (0000,0100)")]
    NoCommandField,
    #[error("element (0000,{0:04X}) has length {1}, expected {2}")]
    BadLength(u16, u32, u32),
}

/// Reads a command set (Implicit VR Little Endian, group 0000 only).
pub fn parse(bytes: &[u8]) -> Result<Command, CommandError> {
    let mut cmd = Command {
        has_data_set: true,
        ..Default::default()
    };
    let mut field = None;
    let mut pos = 0;
    while pos < bytes.len() {
        let header = bytes
            .get(pos..pos + 8)
            .ok_or(CommandError::Truncated(pos))?;
        let element = u16::from_le_bytes([header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = pos + 8;
        let end = start
            .checked_add(len as usize)
            .filter(|&e| e <= bytes.len())
            .ok_or(CommandError::Truncated(pos))?;
        let value = &bytes[start..end];
        let us = |v: &[u8]| -> Result<u16, CommandError> {
            match v {
                [a, b] => Ok(u16::from_le_bytes([*a, *b])),
                _ => Err(CommandError::BadLength(element, len, 2)),
            }
        };
        match element {
            0x0002 => cmd.affected_sop_class_uid = uid(value),
            0x0100 => field = Some(us(value)?),
            0x0110 => cmd.message_id = us(value)?,
            0x0800 => cmd.has_data_set = us(value)? != NO_DATA_SET,
            0x1000 => cmd.affected_sop_instance_uid = uid(value),
            _ => {}
        }
        pos = end;
    }
    cmd.field = field.ok_or(CommandError::NoCommandField)?;
    Ok(cmd)
}

/// A UID value without its padding; characters outside the UID repertoire are kept
/// (validation of the instance reports them), control characters are replaced.
fn uid(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .trim_end_matches(['\0', ' '])
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A response command set: C-STORE-RSP or C-ECHO-RSP to `request`, with `status`
/// and, for a failure, an Error Comment (LO: cut to 64 characters).
pub fn response(request: &Command, field: u16, status: u16, comment: Option<&str>) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    put(
        &mut body,
        0x0002,
        &padded_uid(&request.affected_sop_class_uid),
    );
    put(&mut body, 0x0100, &field.to_le_bytes());
    put(&mut body, 0x0120, &request.message_id.to_le_bytes());
    put(&mut body, 0x0800, &NO_DATA_SET.to_le_bytes());
    put(&mut body, 0x0900, &status.to_le_bytes());
    if let Some(c) = comment {
        put(&mut body, 0x0902, &padded_text(c, 64));
    }
    if field == C_STORE_RSP {
        put(
            &mut body,
            0x1000,
            &padded_uid(&request.affected_sop_instance_uid),
        );
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    put(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn put(out: &mut Vec<u8>, element: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn padded_uid(uid: &str) -> Vec<u8> {
    let mut v = uid.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

/// LO text: at most `max` characters of printable ASCII (others become `?`, and `\`
/// which separates values becomes `/`), padded with a space to even length.
fn padded_text(text: &str, max: usize) -> Vec<u8> {
    let mut v: Vec<u8> = text
        .chars()
        .take(max)
        .map(|c| match c {
            '\\' => b'/',
            c if c.is_ascii() && !c.is_ascii_control() => c as u8,
            _ => b'?',
        })
        .collect();
    if v.len() % 2 == 1 {
        v.push(b' ');
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Command {
        Command {
            field: C_STORE_RQ,
            message_id: 7,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.2".into(),
            affected_sop_instance_uid: "1.2.3.4.5".into(),
            has_data_set: true,
        }
    }

    #[test]
    fn a_response_reads_back_with_its_fields_and_group_length() {
        let rsp = response(&request(), C_STORE_RSP, 0xA900, Some("a comment"));
        let group_length = u32::from_le_bytes([rsp[8], rsp[9], rsp[10], rsp[11]]);
        assert_eq!(group_length as usize, rsp.len() - 12);
        let back = parse(&rsp).unwrap();
        assert_eq!(back.field, C_STORE_RSP);
        assert_eq!(back.affected_sop_class_uid, "1.2.840.10008.5.1.4.1.1.1.2");
        assert_eq!(back.affected_sop_instance_uid, "1.2.3.4.5");
        assert!(!back.has_data_set);
        // the status and the comment, at their tags
        let at = |tag: u16| {
            let mut pos = 0;
            while pos < rsp.len() {
                let el = u16::from_le_bytes([rsp[pos + 2], rsp[pos + 3]]);
                let len =
                    u32::from_le_bytes([rsp[pos + 4], rsp[pos + 5], rsp[pos + 6], rsp[pos + 7]])
                        as usize;
                if el == tag {
                    return rsp[pos + 8..pos + 8 + len].to_vec();
                }
                pos += 8 + len;
            }
            panic!("no element {tag:04X}");
        };
        assert_eq!(at(0x0900), 0xA900u16.to_le_bytes());
        assert_eq!(at(0x0120), 7u16.to_le_bytes());
        assert_eq!(at(0x0902), b"a comment ");
    }

    #[test]
    fn an_error_comment_is_cut_to_64_characters_of_its_repertoire() {
        let long = format!("{}\\é", "x".repeat(62));
        let rsp = response(&request(), C_STORE_RSP, 0xC000, Some(&long));
        let text = padded_text(&long, 64);
        assert_eq!(text.len(), 64);
        assert!(text.ends_with(b"/?"));
        assert!(rsp.windows(64).any(|w| w == text.as_slice()));
    }

    #[test]
    fn truncated_and_malformed_command_sets_are_errors() {
        let rsp = response(&request(), C_STORE_RSP, 0, None);
        assert_eq!(
            parse(&rsp[..rsp.len() - 3]),
            Err(CommandError::Truncated(rsp.len() - 18))
        );
        assert_eq!(parse(&rsp[12..20]).unwrap_err(), CommandError::Truncated(0));
        // a Command Field of 3 bytes
        let mut bad = Vec::new();
        put(&mut bad, 0x0100, &[1, 0, 0]);
        assert_eq!(parse(&bad), Err(CommandError::BadLength(0x0100, 3, 2)));
        assert_eq!(parse(&[]), Err(CommandError::NoCommandField));
    }
}
