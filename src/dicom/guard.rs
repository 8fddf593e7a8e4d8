//! A structural pre-check of an uploaded file, run before dicom-rs parses any of it.
//!
//! dicom-rs trusts the file: it zero-fills a buffer of an element's declared length
//! before reading it (a few hundred bytes declaring 2 GiB cost seconds and gigabytes),
//! it recurses once per nested sequence (about 1,800 levels overflow a thread's stack
//! and abort the whole process, which no `catch_unwind` can stop), and it inflates a
//! Deflated data set without a cap. This walk reads element headers only (PS3.5 §7.1)
//! from a stream, with constant memory and no recursion, and refuses:
//! - a declared length beyond the bytes that remain (or, Deflated, beyond the inflated
//!   size cap), an unknown VR, an undefined length where PS3.5 §7.1.3 allows none;
//! - sequences nested deeper than the configured depth;
//! - a Deflated data set (PS3.5 §10) that inflates past the instance limit: it is
//!   inflated as a stream and counted, never held in memory;
//! - delimiters and items out of place, and encapsulated Pixel Data (PS3.5 §A.4) whose
//!   fragment table is not a Basic Offset Table followed by fragments.
//!
//! What it learns about the top-level Pixel Data is returned in [`Structure`] so that
//! ingest can check it against Rows × Columns × Bits once the attributes are read.

use std::io::{self, BufRead, Read};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::InvalidInstance;

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
/// The transfer syntaxes a mammogram may come in (PS3.5 §10 and Annex A), and the
/// only ones accepted: dicom-rs also reads others (JPIP Referenced Deflate, for one,
/// which it inflates without this walk's cap), so every other one is refused before
/// it runs.
pub const ACCEPTED_TRANSFER_SYNTAXES: &[&str] = &[
    IMPLICIT_VR_LE,
    "1.2.840.10008.1.2.1",
    DEFLATED,
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
    RLE_LOSSLESS,
];
/// What one element header costs in dicom-rs's in-memory tree beyond its value bytes
/// (tag, VR, length, value enum, map entry), and what one item costs (a whole nested
/// data set object: about 1 KB measured). Charged against `max_header_bytes`, so a
/// file of many empty elements or items cannot grow a tree far larger than itself.
pub const ELEMENT_COST: u64 = 128;
pub const ITEM_COST: u64 = 1024;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const TRANSFER_SYNTAX: Tag = Tag(0x0002, 0x0010);
/// More fragments than any single-frame image is stored in; the fragment and offset
/// lists are kept, so their length is bounded too.
pub const MAX_FRAGMENTS: usize = 1 << 16;
/// Bytes of the first fragment kept for codec header checks (the RLE header is 64;
/// a JPEG frame header follows its tables).
const FRAGMENT_HEAD: usize = super::codestream::HEAD_BYTES;

/// How deep nesting, how large an inflated data set may be.
#[derive(Debug, Clone, Copy)]
pub struct GuardLimits {
    /// Most sequences open at once (a sequence inside an item of a sequence is 2).
    pub max_depth: usize,
    /// Largest data set after inflating a Deflated transfer syntax.
    pub max_inflated: u64,
    /// Most value bytes in the elements before the top-level Pixel Data: what the
    /// header parse holds in memory at ingest.
    pub max_header_bytes: u64,
}

/// Most bytes of text values in one instance. A mammogram's text attributes hold a few
/// KB; dicom-rs splits text at each backslash into its own `String`, so a value of
/// backslashes costs about 24 bytes of memory per byte of file.
pub const MAX_TEXT_BYTES: u64 = 1 << 20;

/// Text VRs (PS3.5 §6.2), whose values dicom-rs decodes into strings.
fn text_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"ST"
            | b"TM"
            | b"UC"
            | b"UI"
            | b"UR"
            | b"UT"
    )
}

/// What the walk found, for checks that need attribute values.
#[derive(Debug, Clone, PartialEq)]
pub struct Structure {
    pub transfer_syntax: String,
    /// Deepest sequence nesting seen.
    pub depth: usize,
    /// The top-level Pixel Data (7FE0,0010), if the data set has one.
    pub pixel_data: Option<PixelLayout>,
}

/// How the top-level Pixel Data is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum PixelLayout {
    /// Native: the value length in bytes.
    Native { bytes: u64 },
    /// Encapsulated (PS3.5 §A.4): the Basic Offset Table, the fragment lengths, and
    /// the first bytes of the first fragment (codec headers live there).
    Encapsulated {
        offsets: Vec<u32>,
        fragments: Vec<u64>,
        head: Vec<u8>,
    },
}

fn bad(msg: String) -> InvalidInstance {
    InvalidInstance::NotDicom(msg)
}

fn tag_name(tag: Tag) -> String {
    format!("({:04X},{:04X})", tag.0, tag.1)
}

/// VRs whose explicit header has 2 reserved bytes and a 32-bit length (PS3.5 §7.1.2).
fn long_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

/// Every VR of PS3.5 §6.2. Parsers disagree on how to read an unknown one, so the
/// file is refused instead.
fn known_vr(vr: [u8; 2]) -> bool {
    long_vr(vr)
        || matches!(
            &vr,
            b"AE"
                | b"AS"
                | b"AT"
                | b"CS"
                | b"DA"
                | b"DS"
                | b"DT"
                | b"FL"
                | b"FD"
                | b"IS"
                | b"LO"
                | b"LT"
                | b"PN"
                | b"SH"
                | b"SL"
                | b"SS"
                | b"ST"
                | b"TM"
                | b"UI"
                | b"UL"
                | b"US"
        )
}

/// The size of one value of a fixed-size binary VR (PS3.5 §6.2). dicom-rs reads
/// `length / size` values and then moves on by `length`: a length that is not a
/// multiple leaves its reader out of step with the file (found by fuzzing: a UL of
/// length 2 shifted the parse into a 1.3 GB allocation).
fn value_size(vr: [u8; 2]) -> Option<u64> {
    match &vr {
        b"US" | b"SS" | b"OW" => Some(2),
        b"UL" | b"SL" | b"FL" | b"OF" | b"OL" | b"AT" => Some(4),
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => Some(8),
        _ => None,
    }
}

/// The VR dicom-rs gives an element: the explicit one, or in Implicit VR the
/// dictionary's (relaxed: US or SS reads as US, OB or OW as OW), OW for Pixel Data and
/// Overlay Data, UN for an unknown tag.
fn resolved_vr(h: &Header, dict: &StandardDataDictionary) -> [u8; 2] {
    if let Some(vr) = h.vr {
        return vr;
    }
    let vr = if h.tag == PIXEL_DATA || (h.tag.0 >> 8 == 0x60 && h.tag.1 == 0x3000) {
        VR::OW
    } else {
        dict.by_tag(h.tag)
            .map(|e| e.vr().relaxed())
            .unwrap_or(VR::UN)
    };
    let b = vr.to_string().as_bytes();
    [b[0], b[1]]
}

/// A byte stream with its position, the bytes known to remain (a file) or a cap on
/// how many may be read (an inflating stream), and cheap skipping.
struct Input<R> {
    r: R,
    pos: u64,
    /// Total length when known up front (a file); `None` for an inflating stream.
    total: Option<u64>,
    /// Most bytes the stream may produce (inflated-size cap).
    cap: u64,
    inflated: bool,
}

impl<R: BufRead> Input<R> {
    fn remaining(&self) -> Option<u64> {
        self.total.map(|t| t.saturating_sub(self.pos))
    }

    fn io(&self, e: io::Error) -> InvalidInstance {
        if self.inflated {
            bad(format!("Deflated data set does not inflate: {e}"))
        } else {
            bad(format!("reading the file: {e}"))
        }
    }

    /// Reads up to `buf.len()` bytes; fewer only at the end of the data.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, InvalidInstance> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        self.pos += n as u64;
        self.check_cap()?;
        Ok(n)
    }

    fn check_cap(&self) -> Result<(), InvalidInstance> {
        if self.pos > self.cap {
            return Err(bad(format!(
                "Deflated data set inflates beyond {} bytes (the instance size limit)",
                self.cap
            )));
        }
        Ok(())
    }

    /// Skips the value of `tag`, `len` bytes, refusing a length beyond the data.
    fn skip(&mut self, tag: Tag, len: u64) -> Result<(), InvalidInstance> {
        if let Some(rem) = self.remaining() {
            if len > rem {
                return Err(declares_too_much(tag, len, rem));
            }
        }
        let start = self.pos;
        // Never read past the cap (+1 to detect it), whatever the declared length.
        let budget = len.min(self.cap.saturating_sub(self.pos).saturating_add(1));
        let copied =
            io::copy(&mut (&mut self.r).take(budget), &mut io::sink()).map_err(|e| self.io(e))?;
        self.pos += copied;
        self.check_cap()?;
        if copied < len {
            return Err(declares_too_much(tag, len, self.pos - start));
        }
        Ok(())
    }
}

fn declares_too_much(tag: Tag, len: u64, remain: u64) -> InvalidInstance {
    bad(format!(
        "element {} declares {len} bytes but only {remain} remain (truncated or corrupt file)",
        tag_name(tag)
    ))
}

/// One element header.
struct Header {
    tag: Tag,
    /// The explicit VR, when the encoding has one (items and delimiters have none).
    vr: Option<[u8; 2]>,
    len: u32,
}

/// Reads the next header; `Ok(None)` at the clean end of the data.
fn read_header<R: BufRead>(
    input: &mut Input<R>,
    explicit: bool,
) -> Result<Option<Header>, InvalidInstance> {
    let mut h = [0u8; 8];
    let n = input.read_some(&mut h)?;
    if n == 0 {
        return Ok(None);
    }
    if n < 8 {
        return Err(bad(format!(
            "{n} stray bytes after the last element (truncated file)"
        )));
    }
    let tag = Tag(
        u16::from_le_bytes([h[0], h[1]]),
        u16::from_le_bytes([h[2], h[3]]),
    );
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if tag.0 == 0xFFFE || !explicit {
        return Ok(Some(Header {
            tag,
            vr: None,
            len: u32_at(&h, 4),
        }));
    }
    let vr = [h[4], h[5]];
    if !known_vr(vr) {
        return Err(bad(format!(
            "element {} has an unknown VR `{}`",
            tag_name(tag),
            String::from_utf8_lossy(&vr).escape_default()
        )));
    }
    if long_vr(vr) {
        let mut l = [0u8; 4];
        if input.read_some(&mut l)? < 4 {
            return Err(bad(format!(
                "element {} header is cut off (truncated file)",
                tag_name(tag)
            )));
        }
        Ok(Some(Header {
            tag,
            vr: Some(vr),
            len: u32::from_le_bytes(l),
        }))
    } else {
        Ok(Some(Header {
            tag,
            vr: Some(vr),
            len: u16::from_le_bytes([h[6], h[7]]) as u32,
        }))
    }
}

/// Checks a whole file: preamble, file meta group, then the data set (inflated as a
/// stream if Deflated). `total` is the file's length when known.
pub fn check<R: BufRead>(
    mut r: R,
    total: Option<u64>,
    limits: GuardLimits,
) -> Result<Structure, InvalidInstance> {
    let mut preamble = [0u8; 132];
    let mut input = Input {
        r: &mut r,
        pos: 0,
        total,
        cap: u64::MAX,
        inflated: false,
    };
    if input.read_some(&mut preamble)? < 132 || &preamble[128..] != b"DICM" {
        return Err(bad(
            "no DICOM preamble and \"DICM\" marker (PS3.10 §7.1)".into()
        ));
    }
    let ts = read_file_meta(&mut input)?;
    let after_meta = input.pos;
    match ts.as_str() {
        "" => Err(bad(
            "file meta group has no Transfer Syntax UID (0002,0010)".into(),
        )),
        EXPLICIT_VR_BE => Err(InvalidInstance::UnsupportedTransferSyntax(
            "Explicit VR Big Endian (1.2.840.10008.1.2.2) is retired and not accepted".into(),
        )),
        other if !ACCEPTED_TRANSFER_SYNTAXES.contains(&other) => {
            Err(InvalidInstance::UnsupportedTransferSyntax(format!(
                "transfer syntax `{}` is not accepted (accepted: Implicit and Explicit VR Little Endian, Deflated, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE Lossless)",
                other.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect::<String>()
            )))
        }
        DEFLATED => {
            let inflater =
                io::BufReader::with_capacity(1 << 16, flate2::bufread::DeflateDecoder::new(&mut r));
            let mut input = Input {
                r: inflater,
                pos: 0,
                total: None,
                cap: limits.max_inflated,
                inflated: true,
            };
            walk(&mut input, true, ts, limits)
        }
        _ => {
            let explicit = ts != IMPLICIT_VR_LE;
            let mut input = Input {
                r: &mut r,
                pos: after_meta,
                total,
                cap: u64::MAX,
                inflated: false,
            };
            walk(&mut input, explicit, ts, limits)
        }
    }
}

/// [`check`] of a file in memory (the upload client, fuzzing, tests).
pub fn check_bytes(bytes: &[u8], limits: GuardLimits) -> Result<Structure, InvalidInstance> {
    check(bytes, Some(bytes.len() as u64), limits)
}

/// Reads the file meta group (explicit VR little endian, group 0002; PS3.10 §7.1) and
/// returns its Transfer Syntax UID.
///
/// The group must open with its length, File Meta Information Group Length
/// (0002,0000), and end exactly there: dicom-rs starts the data set where the group
/// length says, so a walk that started anywhere else would check other element
/// boundaries than the parser then reads (found by fuzzing: a stray element inside the
/// group shifted dicom-rs into the middle of a value and a 2 GB allocation).
fn read_file_meta<R: BufRead>(input: &mut Input<R>) -> Result<String, InvalidInstance> {
    let group_length =
        match read_header(input, true)? {
            Some(Header {
                tag: Tag(0x0002, 0x0000),
                len: 4,
                ..
            }) => {
                let mut v = [0u8; 4];
                let got = input.read_some(&mut v)?;
                if got < 4 {
                    return Err(declares_too_much(Tag(0x0002, 0x0000), 4, got as u64));
                }
                u32::from_le_bytes(v) as u64
            }
            _ => return Err(bad(
                "the file meta group does not open with its group length (0002,0000) (PS3.10 §7.1)"
                    .into(),
            )),
        };
    let end = input.pos + group_length;
    let mut ts = String::new();
    while input.pos < end {
        let Some(h) = read_header(input, true)? else {
            return Err(bad(format!(
                "the file ends inside the file meta group, which declares {group_length} bytes (truncated file)"
            )));
        };
        if h.tag.0 != 0x0002 {
            return Err(bad(format!(
                "element {} stands inside the file meta group, which holds only group 0002",
                tag_name(h.tag)
            )));
        }
        if h.len == UNDEFINED || h.vr == Some(*b"SQ") || h.vr.is_none() {
            return Err(bad(format!(
                "file meta element {} has an undefined length or is a sequence (PS3.10 §7.1 allows neither)",
                tag_name(h.tag)
            )));
        }
        if input.pos + h.len as u64 > end {
            return Err(bad(format!(
                "file meta element {} runs past the end of the group declared by (0002,0000)",
                tag_name(h.tag)
            )));
        }
        if h.tag == TRANSFER_SYNTAX {
            if h.len > 64 {
                return Err(bad(format!(
                    "Transfer Syntax UID (0002,0010) is {} bytes long (at most 64)",
                    h.len
                )));
            }
            let mut v = vec![0u8; h.len as usize];
            let got = input.read_some(&mut v)?;
            if got < v.len() {
                return Err(declares_too_much(h.tag, h.len as u64, got as u64));
            }
            ts = String::from_utf8_lossy(&v)
                .trim_end_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_owned();
        } else {
            input.skip(h.tag, h.len as u64)?;
        }
    }
    Ok(ts)
}

/// An open container while walking.
enum Open {
    /// A sequence; `end` is its end offset when its length is defined.
    Sequence {
        end: Option<u64>,
    },
    Item {
        end: Option<u64>,
    },
    /// Encapsulated top-level Pixel Data (its items are fragments).
    Fragments {
        top_level: bool,
    },
}

impl Open {
    fn end(&self) -> Option<u64> {
        match self {
            Open::Sequence { end } | Open::Item { end } => *end,
            Open::Fragments { .. } => None,
        }
    }
}

/// A defined-length item or sequence must end within the container holding it.
fn check_inside(stack: &[Open], end: Option<u64>) -> Result<(), InvalidInstance> {
    let parent = stack.iter().rev().find_map(Open::end);
    match (end, parent) {
        (Some(end), Some(parent)) if end > parent => Err(bad(format!(
            "an item or sequence ends at byte {end}, past the end of the one holding it (byte {parent})"
        ))),
        _ => Ok(()),
    }
}

/// Walks a data set's element headers with an explicit stack instead of recursion.
fn walk<R: BufRead>(
    input: &mut Input<R>,
    explicit: bool,
    transfer_syntax: String,
    limits: GuardLimits,
) -> Result<Structure, InvalidInstance> {
    let dict = StandardDataDictionary;
    let mut stack: Vec<Open> = Vec::new();
    let mut depth = 0usize;
    let mut max_depth_seen = 0usize;
    let mut pixel_data = None;
    // Fragments of the top-level encapsulated Pixel Data, as they are read.
    let mut offsets: Option<Vec<u32>> = None;
    let mut fragments: Vec<u64> = Vec::new();
    let mut head: Vec<u8> = Vec::new();
    // What dicom-rs's tree would hold (value bytes before the top-level Pixel Data,
    // node costs anywhere), and text bytes anywhere.
    let (mut tree_bytes, mut text_bytes) = (0u64, 0u64);
    let max_tree = limits.max_header_bytes;
    let charge = |total: &mut u64, n: u64, tag: Tag| -> Result<(), InvalidInstance> {
        *total += n;
        if *total > max_tree {
            return Err(bad(format!(
                "the attributes hold more than {max_tree} bytes of data set (at element {}; limits.max_header_bytes counts value bytes before Pixel Data, {ELEMENT_COST} per element and {ITEM_COST} per item)",
                tag_name(tag)
            )));
        }
        Ok(())
    };
    loop {
        // Close every defined-length container that ends here.
        while let Some(end) = stack.last().and_then(Open::end) {
            if input.pos < end {
                break;
            }
            if input.pos > end {
                return Err(bad(format!(
                    "an item or sequence ends at byte {end} but its contents run to byte {}",
                    input.pos
                )));
            }
            if matches!(stack.pop(), Some(Open::Sequence { .. })) {
                depth -= 1;
            }
        }
        let Some(h) = read_header(input, explicit)? else {
            if stack.is_empty() {
                break;
            }
            return Err(bad(
                "the data set ends inside a sequence, item or Pixel Data (truncated file)".into(),
            ));
        };
        let defined = h.len != UNDEFINED;
        let end_of = |input: &Input<R>| defined.then(|| input.pos + h.len as u64);
        if let (Some(rem), true) = (input.remaining(), defined) {
            if h.len as u64 > rem {
                return Err(declares_too_much(h.tag, h.len as u64, rem));
            }
        }
        match (h.tag, stack.last()) {
            (ITEM, Some(Open::Fragments { top_level })) => {
                let top_level = *top_level;
                if !defined {
                    return Err(bad(
                        "a Pixel Data fragment has an undefined length (PS3.5 §A.4)".into(),
                    ));
                }
                if !top_level {
                    // An icon image's fragments: dicom-rs loads them with the header.
                    charge(&mut tree_bytes, ITEM_COST + h.len as u64, h.tag)?;
                    input.skip(h.tag, h.len as u64)?;
                    continue;
                }
                if offsets.is_none() {
                    if h.len % 4 != 0 {
                        return Err(bad(format!(
                            "the Basic Offset Table of Pixel Data is {} bytes, not a multiple of 4 (PS3.5 §A.4)",
                            h.len
                        )));
                    }
                    let n = h.len as usize / 4;
                    if n > MAX_FRAGMENTS {
                        return Err(bad(format!(
                            "the Basic Offset Table of Pixel Data lists {n} frames (at most {MAX_FRAGMENTS})"
                        )));
                    }
                    let mut table = vec![0u8; n * 4];
                    let got = input.read_some(&mut table)?;
                    if got < table.len() {
                        return Err(declares_too_much(h.tag, h.len as u64, got as u64));
                    }
                    offsets = Some(
                        table
                            .chunks_exact(4)
                            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    );
                } else {
                    if fragments.len() >= MAX_FRAGMENTS {
                        return Err(bad(format!(
                            "Pixel Data has more than {MAX_FRAGMENTS} fragments"
                        )));
                    }
                    let mut rest = h.len as u64;
                    if fragments.is_empty() {
                        head = vec![0u8; (h.len as usize).min(FRAGMENT_HEAD)];
                        let got = input.read_some(&mut head)?;
                        if got < head.len() {
                            return Err(declares_too_much(h.tag, h.len as u64, got as u64));
                        }
                        rest -= head.len() as u64;
                    }
                    input.skip(h.tag, rest)?;
                    fragments.push(h.len as u64);
                }
            }
            (SEQUENCE_END, Some(Open::Fragments { top_level })) => {
                if *top_level {
                    let Some(offsets) = offsets.take() else {
                        return Err(bad(
                            "encapsulated Pixel Data has no Basic Offset Table item (PS3.5 §A.4)"
                                .into(),
                        ));
                    };
                    pixel_data = Some(PixelLayout::Encapsulated {
                        offsets,
                        fragments: std::mem::take(&mut fragments),
                        head: std::mem::take(&mut head),
                    });
                }
                stack.pop();
            }
            (_, Some(Open::Fragments { .. })) => {
                return Err(bad(format!(
                    "encapsulated Pixel Data holds element {} where only fragment items may stand (PS3.5 §A.4)",
                    tag_name(h.tag)
                )));
            }
            (ITEM, Some(Open::Sequence { .. })) => {
                charge(&mut tree_bytes, ITEM_COST, h.tag)?;
                let end = end_of(input);
                check_inside(&stack, end)?;
                stack.push(Open::Item { end });
            }
            (ITEM, _) => {
                return Err(bad("an item (FFFE,E000) outside any sequence".into()));
            }
            (ITEM_END, Some(Open::Item { end: None })) => {
                stack.pop();
            }
            (SEQUENCE_END, Some(Open::Sequence { end: None })) => {
                stack.pop();
                depth -= 1;
            }
            (ITEM_END | SEQUENCE_END, _) => {
                return Err(bad(format!(
                    "delimiter {} without an open undefined-length item or sequence",
                    tag_name(h.tag)
                )));
            }
            (Tag(0xFFFE, _), _) => {
                return Err(bad(format!(
                    "element {} is not a valid item or delimiter tag",
                    tag_name(h.tag)
                )));
            }
            _ => {
                charge(&mut tree_bytes, ELEMENT_COST, h.tag)?;
                let is_sequence = match h.vr {
                    Some(vr) => &vr == b"SQ",
                    // Implicit VR: the dictionary says, and an unknown (private) element
                    // with an undefined length can only be a sequence (PS3.5 §7.5).
                    None => {
                        h.tag != PIXEL_DATA
                            && match dict.by_tag(h.tag) {
                                Some(e) => e.vr().exact() == Some(VR::SQ),
                                None => !defined,
                            }
                    }
                };
                if is_sequence {
                    depth += 1;
                    if depth > limits.max_depth {
                        return Err(bad(format!(
                            "sequences are nested deeper than {} levels (at element {})",
                            limits.max_depth,
                            tag_name(h.tag)
                        )));
                    }
                    max_depth_seen = max_depth_seen.max(depth);
                    let end = end_of(input);
                    check_inside(&stack, end)?;
                    stack.push(Open::Sequence { end });
                    continue;
                }
                if !defined {
                    // Only Pixel Data may be encapsulated. dicom-rs reads any other
                    // OB/OW element of undefined length as a 4 GiB value (found by the
                    // `ingest_file` fuzz target: 2.3 GB allocated for a 2.8 KB file).
                    if h.tag != PIXEL_DATA {
                        return Err(bad(format!(
                            "element {} has an undefined length, which only sequences, items and Pixel Data may have (PS3.5 §7.1)",
                            tag_name(h.tag)
                        )));
                    }
                    let top_level = stack.is_empty();
                    if top_level && pixel_data.is_some() {
                        return Err(bad("the data set holds Pixel Data twice".into()));
                    }
                    stack.push(Open::Fragments { top_level });
                    continue;
                }
                let vr = resolved_vr(&h, &dict);
                if let Some(size) = value_size(vr) {
                    if !(h.len as u64).is_multiple_of(size) {
                        return Err(bad(format!(
                            "element {} has VR {} of {size}-byte values but a length of {} bytes (PS3.5 §6.2)",
                            tag_name(h.tag),
                            String::from_utf8_lossy(&vr),
                            h.len
                        )));
                    }
                }
                if stack.is_empty() && h.tag == PIXEL_DATA {
                    if pixel_data.is_some() {
                        return Err(bad("the data set holds Pixel Data twice".into()));
                    }
                    pixel_data = Some(PixelLayout::Native {
                        bytes: h.len as u64,
                    });
                } else {
                    if pixel_data.is_none() {
                        charge(&mut tree_bytes, h.len as u64, h.tag)?;
                    }
                    if text_vr(vr) {
                        text_bytes += h.len as u64;
                        if text_bytes > MAX_TEXT_BYTES {
                            return Err(bad(format!(
                                "text attributes hold more than {MAX_TEXT_BYTES} bytes (at element {}; a mammogram's hold a few KB)",
                                tag_name(h.tag)
                            )));
                        }
                    }
                }
                input.skip(h.tag, h.len as u64)?;
            }
        }
    }
    Ok(Structure {
        transfer_syntax,
        depth: max_depth_seen,
        pixel_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GuardLimits = GuardLimits {
        max_depth: 8,
        max_inflated: 1 << 20,
        max_header_bytes: 1 << 16,
    };

    /// Preamble, marker, a meta group of its length and `meta` elements, the data set.
    fn file_with_meta(meta: &[u8], body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        f.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        f.extend_from_slice(meta);
        f.extend_from_slice(body);
        f
    }

    fn file(ts: &str, body: &[u8]) -> Vec<u8> {
        let mut v = ts.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        file_with_meta(&explicit((0x0002, 0x0010), b"UI", &v), body)
    }

    fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&tag.0.to_le_bytes());
        e.extend_from_slice(&tag.1.to_le_bytes());
        e.extend_from_slice(vr);
        if long_vr(*vr) {
            e.extend_from_slice(&[0, 0]);
            e.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            e.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        e.extend_from_slice(value);
        e
    }

    fn err(bytes: &[u8]) -> String {
        check_bytes(bytes, LIMITS).unwrap_err().to_string()
    }

    /// `levels` undefined-length sequences, each inside an item of the one above.
    fn nested(levels: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for _ in 0..levels {
            b.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
            b.extend_from_slice(&UNDEFINED.to_le_bytes());
            b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        for _ in 0..levels {
            b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
            b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        }
        b
    }

    #[test]
    fn well_formed_explicit_and_implicit_pass() {
        let body = [
            explicit((0x0008, 0x0060), b"CS", b"MG"),
            explicit((0x7FE0, 0x0010), b"OW", &[0; 8]),
        ]
        .concat();
        let s = check_bytes(&file("1.2.840.10008.1.2.1", &body), LIMITS).unwrap();
        assert_eq!(s.pixel_data, Some(PixelLayout::Native { bytes: 8 }));
        let mut implicit = vec![0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0];
        implicit.extend_from_slice(b"MG");
        let s = check_bytes(&file(IMPLICIT_VR_LE, &implicit), LIMITS).unwrap();
        assert_eq!(s.pixel_data, None);
    }

    #[test]
    fn a_length_beyond_the_file_is_refused() {
        let mut body = explicit((0x0008, 0x0060), b"CS", b"MG");
        body.extend_from_slice(&[
            0x10, 0x00, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2,
        ]);
        let e = err(&file("1.2.840.10008.1.2.1", &body));
        assert!(
            e.contains("(0010,0010) declares 2147483647 bytes but only 2 remain"),
            "{e}"
        );
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_beyond_is_refused() {
        let ok = check_bytes(&file("1.2.840.10008.1.2.1", &nested(8)), LIMITS).unwrap();
        assert_eq!(ok.depth, 8);
        let e = err(&file("1.2.840.10008.1.2.1", &nested(9)));
        assert!(
            e.contains("sequences are nested deeper than 8 levels (at element (0008,1115))"),
            "{e}"
        );
        // 100,000 levels: refused without recursion (this would overflow dicom-rs).
        let e = err(&file("1.2.840.10008.1.2.1", &nested(100_000)));
        assert!(e.contains("nested deeper than 8 levels"), "{e}");
    }

    #[test]
    fn meta_element_with_undefined_length_is_refused_not_a_panic() {
        let meta = [
            0x02, 0x00, 0x01, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        let e = err(&file_with_meta(&meta, &[]));
        assert!(
            e.contains("file meta element (0002,0001) has an undefined length"),
            "{e}"
        );
    }

    /// Regression (fuzz, `ingest_file`): the walk took the data set to start at the
    /// first element outside group 0002, dicom-rs where the group length says.
    #[test]
    fn the_meta_group_is_bounded_by_its_group_length() {
        let ts = explicit((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2.1\0");
        let stray = [ts.clone(), explicit((0xE302, 0x0012), b"UI", b"1.2\0")].concat();
        let e = err(&file_with_meta(&stray, &[]));
        assert!(
            e.contains("element (E302,0012) stands inside the file meta group"),
            "{e}"
        );
        let mut short = file_with_meta(&ts, &explicit((0x0008, 0x0060), b"CS", b"MG"));
        short[140] -= 2; // the group length now ends inside the transfer syntax
        let e = err(&short);
        assert!(
            e.contains("(0002,0010) runs past the end of the group"),
            "{e}"
        );
        let mut no_length = file("1.2.840.10008.1.2.1", &[]);
        no_length.drain(132..144);
        let e = err(&no_length);
        assert!(e.contains("does not open with its group length"), "{e}");
    }

    #[test]
    fn encapsulated_fragments_are_recorded_not_parsed() {
        // Pixel Data, undefined length: empty offset table item, one fragment whose
        // bytes look like a huge element header, sequence delimiter.
        let mut body = vec![
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        body.extend_from_slice(&[
            0xFE, 0xFF, 0x00, 0xE0, 8, 0, 0, 0, 0x10, 0, 0x10, 0, b'O', b'B', 0xFF, 0xFF,
        ]);
        body.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let s = check_bytes(&file(RLE_LOSSLESS, &body), LIMITS).unwrap();
        let Some(PixelLayout::Encapsulated {
            offsets,
            fragments,
            head,
        }) = s.pixel_data
        else {
            panic!("{s:?}")
        };
        assert!(offsets.is_empty());
        assert_eq!(fragments, vec![8]);
        assert_eq!(head.len(), 8);
        // without its delimiter the stream is truncated
        let cut = &body[..body.len() - 8];
        assert!(err(&file(RLE_LOSSLESS, cut)).contains("ends inside"));
    }

    #[test]
    fn element_inside_fragments_and_stray_delimiters_are_refused() {
        let mut body = vec![
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        body.extend(explicit((0x0008, 0x0060), b"CS", b"MG"));
        assert!(err(&file(RLE_LOSSLESS, &body)).contains("only fragment items may stand"));
        let stray = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
        assert!(err(&file("1.2.840.10008.1.2.1", &stray)).contains("delimiter (FFFE,E0DD)"));
    }

    #[test]
    fn undefined_length_on_a_plain_element_is_refused() {
        // a short VR cannot hold 0xFFFFFFFF: a long-VR text element
        let mut b = vec![0x08, 0x00, 0x19, 0x01, b'U', b'T', 0, 0];
        b.extend_from_slice(&UNDEFINED.to_le_bytes());
        let e = err(&file("1.2.840.10008.1.2.1", &b));
        assert!(e.contains("(0008,0119) has an undefined length"), "{e}");
    }

    #[test]
    fn deflate_bomb_is_refused_at_the_cap_without_holding_it() {
        use std::io::Write;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut dataset = explicit((0x0008, 0x0060), b"CS", b"MG");
        dataset.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
        dataset.extend_from_slice(&(8u32 << 20).to_le_bytes());
        enc.write_all(&dataset).unwrap();
        enc.write_all(&vec![0u8; 8 << 20]).unwrap();
        let bomb = file(DEFLATED, &enc.finish().unwrap());
        assert!(bomb.len() < 64 << 10);
        let e = err(&bomb);
        assert!(
            e.contains("Deflated data set inflates beyond 1048576 bytes"),
            "{e}"
        );
        let roomy = GuardLimits {
            max_inflated: 16 << 20,
            max_header_bytes: 16 << 20,
            ..LIMITS
        };
        check_bytes(&bomb, roomy).unwrap();
    }

    /// Regression (fuzz, `ingest_file`): an OB element of undefined length that is not
    /// Pixel Data passed the walk as "fragments", and dicom-rs then allocated 4 GiB.
    #[test]
    fn undefined_length_ob_outside_pixel_data_is_refused() {
        let mut body = vec![0x60, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0];
        body.extend_from_slice(&UNDEFINED.to_le_bytes());
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        body.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let e = err(&file(RLE_LOSSLESS, &body));
        assert!(
            e.contains("element (7F60,0010) has an undefined length, which only sequences, items and Pixel Data may have"),
            "{e}"
        );
    }

    #[test]
    fn header_bytes_and_text_bytes_are_bounded() {
        let blob = explicit((0x0009, 0x1010), b"OB", &vec![0u8; (1 << 16) + 2]);
        let e = err(&file("1.2.840.10008.1.2.1", &blob));
        assert!(
            e.contains(
                "the attributes hold more than 65536 bytes of data set (at element (0009,1010)"
            ),
            "{e}"
        );
        // text: 1 MiB + 2 of backslashes (would become ~half a million strings)
        let roomy = GuardLimits {
            max_header_bytes: 4 << 20,
            ..LIMITS
        };
        let text = explicit((0x0028, 0x0030), b"UT", &vec![b'\\'; (1 << 20) + 2]);
        let e = check_bytes(&file("1.2.840.10008.1.2.1", &text), roomy)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("text attributes hold more than 1048576 bytes"),
            "{e}"
        );
        // after Pixel Data, binary trailing data does not count as header
        let mut after = explicit((0x7FE0, 0x0010), b"OW", &[0; 8]);
        after.extend(explicit((0xFFFC, 0xFFFC), b"OB", &vec![0u8; (1 << 16) + 2]));
        check_bytes(&file("1.2.840.10008.1.2.1", &after), LIMITS).unwrap();
    }

    /// Review finding: dicom-rs trims any trailing whitespace from the transfer syntax;
    /// a walk that kept the tab read Explicit VR where dicom-rs reads Implicit VR.
    #[test]
    fn the_transfer_syntax_is_trimmed_as_dicom_rs_trims_it() {
        // implicit VR: (0009,0010) with a length whose bytes spell "OB" in explicit VR
        let body = [0x09, 0x00, 0x10, 0x00, b'O', b'B', 0xFF, 0xFF, 0, 0, 0, 0];
        let e = err(&file("1.2.840.10008.1.2\t", &body));
        assert!(
            e.contains("(0009,0010) declares"),
            "walked as implicit VR: {e}"
        );
    }

    /// Regression (fuzz, `ingest_file`, `fuzz/regressions/ingest_file/oom-13f5…`): a
    /// UL of length 2 left dicom-rs two bytes out of step with the file; it then read
    /// pixel values as a header and allocated 1.3 GB for a 7 KB file.
    #[test]
    fn a_binary_value_length_must_be_a_multiple_of_its_size() {
        let body = explicit((0x0028, 0x0002), b"UL", &[1, 0]);
        let e = err(&file("1.2.840.10008.1.2.1", &body));
        assert!(
            e.contains("(0028,0002) has VR UL of 4-byte values but a length of 2 bytes"),
            "{e}"
        );
        // implicit VR: the dictionary's VR (Rows is US) and OW for Pixel Data
        let mut implicit = vec![0x28, 0x00, 0x10, 0x00, 3, 0, 0, 0, 1, 2, 3];
        implicit.push(0);
        let e = err(&file(IMPLICIT_VR_LE, &implicit[..11]));
        assert!(
            e.contains("(0028,0010) has VR US of 2-byte values but a length of 3"),
            "{e}"
        );
        let pixels = [0xE0, 0x7F, 0x10, 0x00, 3, 0, 0, 0, 1, 2, 3];
        let e = err(&file(IMPLICIT_VR_LE, &pixels));
        assert!(e.contains("(7FE0,0010) has VR OW of 2-byte values"), "{e}");
        let fuzzed = include_bytes!(
            "../../fuzz/regressions/ingest_file/oom-13f55430e826602f6d6567f68e9cb5429b7fe016"
        );
        let e = err(fuzzed);
        assert!(
            e.contains("has VR UL of 4-byte values but a length of 2"),
            "{e}"
        );
    }

    #[test]
    fn empty_items_and_icon_fragments_are_charged() {
        // 64 KiB / 1 KiB per item: the 65th empty item is refused
        let mut b = vec![0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0];
        b.extend_from_slice(&UNDEFINED.to_le_bytes());
        for _ in 0..70 {
            b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        }
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let e = err(&file("1.2.840.10008.1.2.1", &b));
        assert!(
            e.contains("more than 65536 bytes of data set (at element (FFFE,E000)"),
            "{e}"
        );
        // 60 items pass
        let mut ok = vec![0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0];
        ok.extend_from_slice(&UNDEFINED.to_le_bytes());
        for _ in 0..60 {
            ok.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        }
        ok.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        check_bytes(&file("1.2.840.10008.1.2.1", &ok), LIMITS).unwrap();
        // an icon's encapsulated fragments count as header bytes
        let mut icon = vec![0x88, 0x00, 0x00, 0x02, b'S', b'Q', 0, 0];
        icon.extend_from_slice(&UNDEFINED.to_le_bytes());
        icon.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        icon.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        icon.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        icon.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        icon.extend_from_slice(&(70_000u32).to_le_bytes());
        icon.extend(std::iter::repeat_n(0u8, 70_000));
        let e = err(&file("1.2.840.10008.1.2.1", &icon));
        assert!(
            e.contains("more than 65536 bytes of data set (at element (FFFE,E000)"),
            "{e}"
        );
    }

    /// Review finding: dicom-rs inflates JPIP Referenced Deflate itself, uncapped.
    #[test]
    fn only_listed_transfer_syntaxes_pass() {
        for ts in ["1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205", "1.2.3"] {
            let e = check_bytes(&file(ts, &[]), LIMITS).unwrap_err();
            assert_eq!(e.failure_reason(), 0xC122, "{ts}");
            assert!(
                e.to_string().contains(&format!("`{ts}` is not accepted")),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_vr_is_refused() {
        let body = explicit((0x0018, 0x0015), b"C[", b"BREAST");
        let e = err(&file("1.2.840.10008.1.2.1", &body));
        assert!(e.contains("(0018,0015) has an unknown VR `C[`"), "{e}");
    }

    #[test]
    fn no_marker_and_big_endian_are_refused() {
        assert!(err(b"hello").contains("DICM"));
        assert!(err(&file(EXPLICIT_VR_BE, &[])).contains("Big Endian"));
    }
}
