//! The hostile corpus: uploads an attacker (or a broken modality) could send, each
//! with the exact answer the server must give. Built from one small, valid synthetic
//! MG instance by byte-level and attribute-level edits, so every case is reproducible
//! and its expected reason is computed from the file's own layout.
//!
//! Shared by `tests/hostile_corpus.rs` (every case against a real server) and
//! `benches/hostile.rs` (peak memory while the corpus, bombs included, is sent).
#![allow(dead_code)]

use std::io::Write;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use tamiz::config::Limits;
use tamiz::dicom::{Laterality, View};

pub const EXPLICIT: &str = "1.2.840.10008.1.2.1";
pub const IMPLICIT: &str = "1.2.840.10008.1.2";
pub const BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
pub const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
pub const RLE: &str = "1.2.840.10008.1.2.5";
pub const BOUNDARY: &str = "tamiz-test-boundary-8c1f";
pub const ROWS: u32 = 64;
pub const COLUMNS: u32 = 52;
/// Native Pixel Data of the base instance: 64 × 52 × 2 bytes.
pub const PIXEL_BYTES: u64 = (ROWS * COLUMNS * 2) as u64;
pub const SOP_UID: &str = "1.2.3.1.1";
pub const STUDY_UID_PREFIX: &str = "2.25.";

/// What a case sends.
#[derive(Clone)]
pub enum Send {
    /// One application/dicom part to `POST /dicomweb/studies`.
    Instance(Vec<u8>),
    /// One instance to `POST /dicomweb/studies/{study}`.
    InstanceToStudy(String, Vec<u8>),
    /// Any request.
    Raw {
        method: &'static str,
        path: String,
        content_type: Option<String>,
        body: Vec<u8>,
    },
}

/// The answer a case must get.
#[derive(Clone, Debug)]
pub enum Expect {
    /// 409, one Failed SOP item with this Failure Reason whose Error Comment contains
    /// the text.
    Refused { reason: u16, comment: String },
    /// A request-level error: this status and a JSON `{"error"}` containing the text.
    Error { status: u16, message: String },
}

#[derive(Clone)]
pub struct Case {
    pub name: String,
    pub send: Send,
    pub expect: Expect,
}

fn refused(
    name: impl Into<String>,
    bytes: Vec<u8>,
    reason: u16,
    comment: impl Into<String>,
) -> Case {
    Case {
        name: name.into(),
        send: Send::Instance(bytes),
        expect: Expect::Refused {
            reason,
            comment: comment.into(),
        },
    }
}

/// A structural refusal: reason C000 and the guard's message.
fn unreadable(name: impl Into<String>, bytes: Vec<u8>, comment: impl Into<String>) -> Case {
    refused(
        name,
        bytes,
        0xC000,
        format!("not a DICOM file: {}", comment.into()),
    )
}

fn raw(
    name: &str,
    method: &'static str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    status: u16,
    message: impl Into<String>,
) -> Case {
    Case {
        name: name.into(),
        send: Send::Raw {
            method,
            path: path.into(),
            content_type: content_type.map(str::to_owned),
            body,
        },
        expect: Expect::Error {
            status,
            message: message.into(),
        },
    }
}

/// The valid base: a 64×52 16-bit MG For Presentation L-CC, Explicit VR Little Endian,
/// with SOP Instance UID [`SOP_UID`]; the Pixel Data is its last element.
pub fn base_instance() -> Vec<u8> {
    let plan =
        tamiz::synth::plan_studies(1, 5, 0.0, ROWS as usize, COLUMNS as usize, &["FUZZ"]).remove(0);
    let pixels = tamiz::synth::render_view(&plan, Laterality::L, &View::Cc);
    let obj =
        tamiz::synth::view_object(&plan, Laterality::L, &View::Cc, "1.2.3.1", SOP_UID, pixels);
    encode(&obj)
}

pub fn encode(obj: &DefaultDicomObject) -> Vec<u8> {
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).expect("encode");
    bytes
}

/// Re-encodes a DICOM file after `f` edits it.
pub fn mutate(bytes: &[u8], f: impl FnOnce(&mut DefaultDicomObject)) -> Vec<u8> {
    let mut obj = dicom_object::OpenFileOptions::new()
        .from_reader(&bytes[128..])
        .expect("parse test file");
    f(&mut obj);
    encode(&obj)
}

fn put(obj: &mut DefaultDicomObject, tag: Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

fn put_u16(obj: &mut DefaultDicomObject, tag: Tag, v: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}

/// Where the data set starts: after the file meta group, whose length is in
/// (0002,0000) right after the "DICM" marker.
pub fn dataset_start(b: &[u8]) -> usize {
    assert_eq!(&b[132..136], &[2, 0, 0, 0], "file meta group length first");
    let len = u32::from_le_bytes([b[140], b[141], b[142], b[143]]) as usize;
    144 + len
}

/// Offset of the explicit-VR element header of `tag` with `vr` in the data set.
pub fn element_at(b: &[u8], tag: Tag, vr: &[u8; 2]) -> usize {
    let mut pat = Vec::new();
    pat.extend_from_slice(&tag.0.to_le_bytes());
    pat.extend_from_slice(&tag.1.to_le_bytes());
    pat.extend_from_slice(vr);
    let from = dataset_start(b);
    from + b[from..]
        .windows(pat.len())
        .position(|w| w == pat)
        .unwrap_or_else(|| panic!("element {tag} {vr:?} not in the test file"))
}

/// Offset of the Pixel Data header (OW, long header of 12 bytes).
pub fn pixel_at(b: &[u8]) -> usize {
    element_at(b, tags::PIXEL_DATA, b"OW")
}

/// The file with its Transfer Syntax UID replaced by one of the same padded length.
pub fn with_ts(b: &[u8], ts: &str) -> Vec<u8> {
    let old = format!("{EXPLICIT}\0");
    let mut new = ts.as_bytes().to_vec();
    if new.len() % 2 == 1 {
        new.push(0);
    }
    assert_eq!(new.len(), old.len(), "same-length transfer syntax only");
    let at = b
        .windows(old.len())
        .position(|w| w == old.as_bytes())
        .expect("transfer syntax in the meta group");
    let mut out = b.to_vec();
    out[at..at + new.len()].copy_from_slice(&new);
    out
}

/// The file with its Transfer Syntax UID replaced by any other: the element's
/// length and the meta group length (0002,0000) follow.
pub fn with_any_ts(b: &[u8], ts: &str) -> Vec<u8> {
    let old = format!("{EXPLICIT}\0");
    let mut new = ts.as_bytes().to_vec();
    if new.len() % 2 == 1 {
        new.push(0);
    }
    let at = b
        .windows(old.len())
        .position(|w| w == old.as_bytes())
        .expect("transfer syntax in the meta group");
    let mut out = b[..at].to_vec();
    out[at - 2..at].copy_from_slice(&(new.len() as u16).to_le_bytes());
    out.extend_from_slice(&new);
    out.extend_from_slice(&b[at + old.len()..]);
    // The group length is the UL value right after the marker's element header.
    let group = 128 + 4 + 8;
    let len = u32::from_le_bytes(b[group..group + 4].try_into().unwrap());
    let len = len + new.len() as u32 - old.len() as u32;
    out[group..group + 4].copy_from_slice(&len.to_le_bytes());
    out
}

/// The file with its Pixel Data element replaced by `element` (raw bytes).
pub fn with_pixel_element(b: &[u8], ts: &str, element: &[u8]) -> Vec<u8> {
    let mut out = with_any_ts(&b[..pixel_at(b)], ts);
    out.extend_from_slice(element);
    out
}

/// A minimal file: preamble, marker, a meta group holding only the Transfer Syntax,
/// then `body` (enough for every structural refusal).
pub fn file(ts: &str, body: &[u8]) -> Vec<u8> {
    let mut v = ts.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    file_with_meta(&explicit((0x0002, 0x0010), b"UI", &v), body)
}

/// Preamble, marker, a file meta group of `meta` elements opened by its group length
/// (0002,0000), then `body`.
pub fn file_with_meta(meta: &[u8], body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 128];
    f.extend_from_slice(b"DICM");
    f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    f.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    f.extend_from_slice(meta);
    f.extend_from_slice(body);
    f
}

pub fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let long = matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT" | b"UC" | b"UR");
    let mut e = Vec::new();
    e.extend_from_slice(&tag.0.to_le_bytes());
    e.extend_from_slice(&tag.1.to_le_bytes());
    e.extend_from_slice(vr);
    if long {
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        e.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    e.extend_from_slice(value);
    e
}

const UNDEF: [u8; 4] = [0xFF; 4];
const ITEM: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];
const ITEM_END: [u8; 8] = [0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0];
const SEQ_END: [u8; 8] = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];

/// `levels` nested undefined-length sequences (Referenced Series Sequence).
pub fn nested_undefined(levels: usize, explicit_vr: bool) -> Vec<u8> {
    let mut b = Vec::new();
    for _ in 0..levels {
        b.extend_from_slice(&[0x08, 0x00, 0x15, 0x11]);
        if explicit_vr {
            b.extend_from_slice(&[b'S', b'Q', 0, 0]);
        }
        b.extend_from_slice(&UNDEF);
        b.extend_from_slice(&ITEM);
        b.extend_from_slice(&UNDEF);
    }
    for _ in 0..levels {
        b.extend_from_slice(&ITEM_END);
        b.extend_from_slice(&SEQ_END);
    }
    b
}

/// `levels` nested defined-length sequences.
pub fn nested_defined(levels: usize) -> Vec<u8> {
    let mut inner = Vec::new();
    for _ in 0..levels {
        let mut item = ITEM.to_vec();
        item.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        item.extend_from_slice(&inner);
        inner = explicit((0x0008, 0x1115), b"SQ", &item);
    }
    inner
}

/// A Deflated file whose data set inflates to about `inflated` bytes of zeros inside
/// the Pixel Data (a deflate bomb: zeros compress about 1000:1).
pub fn deflate_bomb(inflated: u64) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut head = explicit((0x0008, 0x0060), b"CS", b"MG");
    head.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    head.extend_from_slice(&(inflated.min(u32::MAX as u64 - 1) as u32 & !1).to_le_bytes());
    enc.write_all(&head).expect("deflate");
    let zeros = vec![0u8; 1 << 20];
    let mut left = inflated;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        enc.write_all(&zeros[..n]).expect("deflate");
        left -= n as u64;
    }
    file(DEFLATED, &enc.finish().expect("deflate"))
}

/// An encapsulated Pixel Data element: an offset table then fragments.
pub fn encapsulated(offsets: &[u32], fragments: &[Vec<u8>]) -> Vec<u8> {
    let mut e = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0];
    e.extend_from_slice(&UNDEF);
    e.extend_from_slice(&ITEM);
    e.extend_from_slice(&((offsets.len() * 4) as u32).to_le_bytes());
    for o in offsets {
        e.extend_from_slice(&o.to_le_bytes());
    }
    for f in fragments {
        e.extend_from_slice(&ITEM);
        e.extend_from_slice(&(f.len() as u32).to_le_bytes());
        e.extend_from_slice(f);
    }
    e.extend_from_slice(&SEQ_END);
    e
}

/// An RLE fragment: header with `offsets` (segment count = offsets.len()), padded.
pub fn rle_fragment(offsets: &[u32], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(64)];
    f[..4].copy_from_slice(&(offsets.len() as u32).to_le_bytes());
    for (i, o) in offsets.iter().enumerate() {
        f[4 + 4 * i..8 + 4 * i].copy_from_slice(&o.to_le_bytes());
    }
    f
}

/// A multipart/related body of raw parts (each already with its header lines).
pub fn multipart_raw(parts: &[&[u8]], close: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    if close {
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    }
    body
}

pub fn content_type() -> String {
    format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}")
}

/// Every case, for a server running with `limits`. The base instance is sent first
/// (and stored) by whoever runs the corpus; no case may change it.
pub fn corpus(limits: &Limits) -> Vec<Case> {
    let base = base_instance();
    let px = pixel_at(&base);
    let px_value = px + 12;
    let depth = limits.max_nesting_depth;
    let max_instance = limits.max_instance_bytes;
    let deep = format!("sequences are nested deeper than {depth} levels (at element (0008,1115))");
    let mut cases = Vec::new();

    // --- not DICOM at all
    cases.push(unreadable(
        "empty file",
        Vec::new(),
        "no DICOM preamble and \"DICM\" marker",
    ));
    cases.push(unreadable(
        "100 bytes of text",
        b"x".repeat(100),
        "no DICOM preamble",
    ));
    let mut no_marker = base.clone();
    no_marker[128..132].copy_from_slice(b"DICN");
    cases.push(unreadable("no DICM marker", no_marker, "no DICOM preamble"));
    cases.push(refused(
        "retired Big Endian",
        with_ts(&base, BIG_ENDIAN),
        0xC122,
        "unsupported transfer syntax: Explicit VR Big Endian (1.2.840.10008.1.2.2) is retired and not accepted",
    ));
    // Review finding: dicom-rs inflates JPIP Referenced Deflate data sets itself,
    // without the walk's inflate cap: only a fixed list of transfer syntaxes passes.
    cases.push(refused(
        "JPIP Referenced Deflate transfer syntax",
        file("1.2.840.10008.1.2.4.95", &base[dataset_start(&base)..]),
        0xC122,
        "unsupported transfer syntax: transfer syntax `1.2.840.10008.1.2.4.95` is not accepted",
    ));
    cases.push(unreadable(
        "meta group without a transfer syntax",
        file_with_meta(
            &explicit((0x0002, 0x0001), b"OB", &[0, 1]),
            &explicit((0x0008, 0x0060), b"CS", b"MG"),
        ),
        "file meta group has no Transfer Syntax UID (0002,0010)",
    ));
    // Found by the `ingest_file` fuzz target: dicom-rs starts the data set where the
    // group length says, the walk started at the stray element (2 GB allocated).
    cases.push(unreadable(
        "regression: element of another group inside the meta group (fuzz OOM)",
        file_with_meta(
            &[
                explicit((0x0002, 0x0010), b"UI", format!("{EXPLICIT}\0").as_bytes()),
                explicit((0xE302, 0x0012), b"UI", b"1.2\0"),
            ]
            .concat(),
            &base[dataset_start(&base)..],
        ),
        "element (E302,0012) stands inside the file meta group, which holds only group 0002",
    ));
    let mut meta_cut = base.clone();
    meta_cut.drain(132..144);
    cases.push(unreadable(
        "meta group without its group length",
        meta_cut,
        "the file meta group does not open with its group length (0002,0000)",
    ));
    cases.push(unreadable(
        "100-byte transfer syntax",
        file(&"1.2".repeat(33), &[]),
        "Transfer Syntax UID (0002,0010) is 100 bytes long (at most 64)",
    ));
    // The structural guard used to slice past the end here and panic ("retry later").
    cases.push(unreadable(
        "meta element with a long VR and undefined length",
        file_with_meta(
            &[
                0x02, 0x00, 0x01, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ],
            &[],
        ),
        "file meta element (0002,0001) has an undefined length or is a sequence",
    ));

    // --- nesting (a ~100 KB file of ~3,000 levels aborted the whole server)
    let at = dataset_start(&base);
    let splice = |extra: &[u8]| {
        let mut f = base[..at].to_vec();
        f.extend_from_slice(extra);
        f.extend_from_slice(&base[at..]);
        f
    };
    cases.push(unreadable(
        "3,000 nested sequences",
        splice(&nested_undefined(3000, true)),
        deep.clone(),
    ));
    cases.push(unreadable(
        "nesting one past the limit",
        splice(&nested_undefined(depth + 1, true)),
        deep.clone(),
    ));
    cases.push(unreadable(
        "3,000 nested defined-length sequences",
        splice(&nested_defined(3000)),
        deep.clone(),
    ));
    cases.push(unreadable(
        "3,000 nested sequences, implicit VR",
        file(IMPLICIT, &nested_undefined(3000, false)),
        deep.clone(),
    ));

    // --- deflate
    cases.push(unreadable(
        "deflate bomb (4x the instance limit)",
        deflate_bomb(max_instance * 4),
        format!("Deflated data set inflates beyond {max_instance} bytes (the instance size limit)"),
    ));
    cases.push(unreadable(
        "corrupt deflate stream",
        file(DEFLATED, &[0xFF; 64]),
        "Deflated data set does not inflate",
    ));

    // --- truncations: inside the meta group, a header, a value and the pixels
    let ts_el = base
        .windows(4)
        .position(|w| w == [0x02, 0x00, 0x10, 0x00])
        .expect("(0002,0010)");
    cases.push(unreadable(
        "cut in the marker",
        base[..130].to_vec(),
        "no DICOM preamble",
    ));
    cases.push(unreadable(
        "cut in a meta header",
        base[..ts_el + 4].to_vec(),
        "4 stray bytes after the last element (truncated file)",
    ));
    let ts_len = u16::from_le_bytes([base[ts_el + 6], base[ts_el + 7]]) as u64;
    cases.push(unreadable(
        "cut in the transfer syntax value",
        base[..ts_el + 8 + 5].to_vec(),
        format!("element (0002,0010) declares {ts_len} bytes but only 5 remain (truncated or corrupt file)"),
    ));
    let study_el = element_at(&base, tags::STUDY_INSTANCE_UID, b"UI");
    let study_len = u16::from_le_bytes([base[study_el + 6], base[study_el + 7]]) as u64;
    cases.push(unreadable(
        "cut in an element header",
        base[..study_el + 3].to_vec(),
        "3 stray bytes after the last element (truncated file)",
    ));
    cases.push(unreadable(
        "cut in the Study UID value",
        base[..study_el + 8 + 10].to_vec(),
        format!("element (0020,000D) declares {study_len} bytes but only 10 remain (truncated or corrupt file)"),
    ));
    cases.push(unreadable(
        "cut in the Pixel Data header",
        base[..px + 10].to_vec(),
        "element (7FE0,0010) header is cut off (truncated file)",
    ));
    for k in 0..16u64 {
        let keep = k * PIXEL_BYTES / 16 + 1;
        cases.push(unreadable(
            format!("cut after {keep} pixel bytes"),
            base[..px_value + keep as usize].to_vec(),
            format!("element (7FE0,0010) declares {PIXEL_BYTES} bytes but only {keep} remain (truncated or corrupt file)"),
        ));
    }

    // --- lying lengths
    let mut lie = base.clone();
    lie[study_el + 6..study_el + 8].copy_from_slice(&0xFFFFu16.to_le_bytes());
    let after_study = (base.len() - (study_el + 8)) as u64;
    cases.push(unreadable(
        "Study UID length 65535",
        lie,
        format!("element (0020,000D) declares 65535 bytes but only {after_study} remain"),
    ));
    let mut lie = base.clone();
    lie[px + 8..px + 12].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
    cases.push(unreadable(
        "Pixel Data length 2 GiB",
        lie,
        format!("element (7FE0,0010) declares 2147483647 bytes but only {PIXEL_BYTES} remain"),
    ));
    let mut item = ITEM.to_vec();
    item.extend_from_slice(&100u32.to_le_bytes());
    item.extend(explicit((0x0008, 0x1150), b"UI", b"1.2\0"));
    let overrun = explicit((0x0008, 0x1115), b"SQ", &item);
    cases.push(unreadable(
        "item longer than its sequence",
        splice(&overrun),
        "an item or sequence ends at byte",
    ));
    cases.push(unreadable(
        "unknown VR",
        splice(&explicit((0x0018, 0x0015), b"C[", b"BREAST")),
        "element (0018,0015) has an unknown VR `C[`",
    ));
    let mut undefined_text = vec![0x08, 0x00, 0x19, 0x01, b'U', b'T', 0, 0];
    undefined_text.extend_from_slice(&UNDEF);
    cases.push(unreadable(
        "undefined length on a text element",
        splice(&undefined_text),
        "element (0008,0119) has an undefined length, which only sequences, items and Pixel Data may have",
    ));
    // Found by the `ingest_file` fuzz target: dicom-rs read this as a 4 GiB value
    // (2.3 GB allocated for a 2.8 KB file).
    let mut encapsulated_overlay = vec![0x60, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0];
    encapsulated_overlay.extend_from_slice(&UNDEF);
    encapsulated_overlay.extend_from_slice(&ITEM);
    encapsulated_overlay.extend_from_slice(&0u32.to_le_bytes());
    encapsulated_overlay.extend_from_slice(&SEQ_END);
    cases.push(unreadable(
        "regression: undefined-length OB outside Pixel Data (fuzz OOM)",
        splice(&encapsulated_overlay),
        "element (7F60,0010) has an undefined length, which only sequences, items and Pixel Data may have",
    ));
    let header_max = limits.max_header_bytes;
    if header_max < 64 << 20 {
        cases.push(unreadable(
            "private blob before Pixel Data over max_header_bytes",
            splice(&explicit((0x0009, 0x1010), b"OB", &vec![0u8; header_max as usize + 2])),
            format!("the attributes hold more than {header_max} bytes of data set (at element (0009,1010); limits.max_header_bytes"),
        ));
        // Review finding: empty items cost nothing in bytes but ~1 KB each in dicom-rs's
        // tree; each is charged.
        let items = header_max as usize / 1024 + 1;
        let mut empty_items = vec![0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0];
        empty_items.extend_from_slice(&UNDEF);
        for _ in 0..items {
            empty_items.extend_from_slice(&ITEM);
            empty_items.extend_from_slice(&0u32.to_le_bytes());
        }
        empty_items.extend_from_slice(&SEQ_END);
        cases.push(unreadable(
            "a sequence of empty items over max_header_bytes",
            splice(&empty_items),
            format!("the attributes hold more than {header_max} bytes of data set (at element (FFFE,E000)"),
        ));
        // Review finding: encapsulated Pixel Data inside a sequence (an icon image) is
        // loaded with the header and was not counted.
        let mut icon = vec![0x88, 0x00, 0x00, 0x02, b'S', b'Q', 0, 0];
        icon.extend_from_slice(&UNDEF);
        icon.extend_from_slice(&ITEM);
        icon.extend_from_slice(&UNDEF);
        icon.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0]);
        icon.extend_from_slice(&UNDEF);
        icon.extend_from_slice(&ITEM);
        icon.extend_from_slice(&0u32.to_le_bytes());
        icon.extend_from_slice(&ITEM);
        icon.extend_from_slice(&(header_max as u32 + 2).to_le_bytes());
        icon.extend(std::iter::repeat_n(0u8, header_max as usize + 2));
        icon.extend_from_slice(&SEQ_END);
        icon.extend_from_slice(&ITEM_END);
        icon.extend_from_slice(&SEQ_END);
        cases.push(unreadable(
            "icon image with encapsulated Pixel Data over max_header_bytes",
            splice(&icon),
            format!("the attributes hold more than {header_max} bytes of data set (at element (FFFE,E000)"),
        ));
    }
    // Found by the `ingest_file` fuzz target: dicom-rs reads `length / 4` values of a
    // UL, then is out of step with the file (a 7 KB file cost 1.3 GB).
    cases.push(unreadable(
        "regression: UL of length 2 (fuzz OOM)",
        splice(&explicit((0x0009, 0x1011), b"UL", &[1, 0])),
        "element (0009,1011) has VR UL of 4-byte values but a length of 2 bytes",
    ));
    cases.push(unreadable(
        "1 MiB of backslashes in a text value",
        splice(&explicit(
            (0x0018, 0x1000),
            b"UT",
            &vec![b'\\'; (1 << 20) + 2],
        )),
        "text attributes hold more than 1048576 bytes (at element (0018,1000)",
    ));
    cases.push(unreadable(
        "stray sequence delimiter",
        splice(&SEQ_END),
        "delimiter (FFFE,E0DD) without an open undefined-length item or sequence",
    ));
    let mut stray_item = ITEM.to_vec();
    stray_item.extend_from_slice(&0u32.to_le_bytes());
    cases.push(unreadable(
        "item outside a sequence",
        splice(&stray_item),
        "an item (FFFE,E000) outside any sequence",
    ));

    // --- native Pixel Data of the wrong length
    let native = |len: usize| {
        let mut e = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0];
        e.extend_from_slice(&(len as u32).to_le_bytes());
        e.extend(std::iter::repeat_n(0x11u8, len));
        with_pixel_element(&base, EXPLICIT, &e)
    };
    let wrong_length = |found: u64| {
        format!("Pixel Data (7FE0,0010) holds {found} bytes but Rows x Columns x Samples per Pixel x Bits Allocated x frames ({ROWS} x {COLUMNS} x 1 x 16 x 1) needs {PIXEL_BYTES} (truncated or corrupt image)")
    };
    cases.push(refused(
        "empty Pixel Data",
        native(0),
        0xA900,
        wrong_length(0),
    ));
    cases.push(refused(
        "short Pixel Data",
        native(PIXEL_BYTES as usize - 2),
        0xA900,
        wrong_length(PIXEL_BYTES - 2),
    ));
    cases.push(refused(
        "long Pixel Data",
        native(PIXEL_BYTES as usize + 100),
        0xA900,
        wrong_length(PIXEL_BYTES + 100),
    ));
    cases.push(refused(
        "no Pixel Data",
        base[..px].to_vec(),
        0xA900,
        "missing required attribute Pixel Data (7FE0,0010)",
    ));

    // --- encapsulated Pixel Data
    let bad_frag = |m: &str| format!("encapsulated Pixel Data is not usable: {m}");
    let good_rle = rle_fragment(&[64, 1000], 2048);
    let enc = |ts: &str, e: Vec<u8>| with_pixel_element(&base, ts, &e);
    let mut no_bot = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0];
    no_bot.extend_from_slice(&UNDEF);
    no_bot.extend_from_slice(&SEQ_END);
    cases.push(unreadable(
        "encapsulated without an offset table",
        enc(RLE, no_bot),
        "encapsulated Pixel Data has no Basic Offset Table item (PS3.5 §A.4)",
    ));
    cases.push(refused(
        "encapsulated without fragments",
        enc(RLE, encapsulated(&[], &[])),
        0xC000,
        bad_frag("no fragment follows the Basic Offset Table"),
    ));
    cases.push(refused(
        "empty fragment",
        enc(RLE, encapsulated(&[], &[Vec::new()])),
        0xC000,
        bad_frag("a fragment is empty"),
    ));
    cases.push(refused(
        "offset table of 3 frames for 1",
        enc(
            RLE,
            encapsulated(&[0, 10, 20], std::slice::from_ref(&good_rle)),
        ),
        0xC000,
        bad_frag("the Basic Offset Table lists 3 offsets for 1 frame(s) (expected none, or one per frame starting at 0)"),
    ));
    let mut odd_bot = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0];
    odd_bot.extend_from_slice(&UNDEF);
    odd_bot.extend_from_slice(&ITEM);
    odd_bot.extend_from_slice(&6u32.to_le_bytes());
    odd_bot.extend_from_slice(&[0; 6]);
    odd_bot.extend_from_slice(&SEQ_END);
    cases.push(unreadable(
        "offset table of 6 bytes",
        enc(RLE, odd_bot),
        "the Basic Offset Table of Pixel Data is 6 bytes, not a multiple of 4",
    ));
    cases.push(refused(
        "RLE header with 1 segment for 16 bits",
        enc(RLE, encapsulated(&[], &[rle_fragment(&[64], 2048)])),
        0xC000,
        bad_frag("the RLE header lists 1 segments, but 16 bits per sample need 2"),
    ));
    cases.push(refused(
        "RLE segment offset beyond its fragment",
        enc(RLE, encapsulated(&[], &[rle_fragment(&[64, 99_999], 2048)])),
        0xC000,
        bad_frag(
            "RLE segment 2 starts at offset 99999, outside the 2048-byte fragment or out of order",
        ),
    ));
    cases.push(refused(
        "RLE segments out of order",
        enc(RLE, encapsulated(&[], &[rle_fragment(&[64, 32], 2048)])),
        0xC000,
        bad_frag("RLE segment 2 starts at offset 32"),
    ));
    cases.push(refused(
        "RLE frame in two fragments",
        enc(
            RLE,
            encapsulated(&[], &[good_rle.clone(), good_rle.clone()]),
        ),
        0xC000,
        bad_frag(
            "RLE Lossless stores each frame in one fragment (PS3.5 §G.2), found 2 for 1 frame(s)",
        ),
    ));
    // A decoder sizes its buffers by the codestream's frame header: one that
    // declares more than Rows x Columns is refused before any worker decodes it.
    let jpeg = |marker: u8, rows: u16, columns: u16| {
        let mut f = vec![0xFF, 0xD8, 0xFF, marker, 0, 11, 16];
        f.extend_from_slice(&rows.to_be_bytes());
        f.extend_from_slice(&columns.to_be_bytes());
        f.extend_from_slice(&[1, 1, 0x11, 0, 0xFF, 0xD9, 0]);
        f
    };
    cases.push(refused(
        "JPEG-LS frame of 65535 x 65535 in a 64 x 52 image",
        enc(
            "1.2.840.10008.1.2.4.80",
            encapsulated(&[], &[jpeg(0xF7, 65535, 65535)]),
        ),
        0xC000,
        bad_frag(
            "the JPEG codestream is 65535 x 65535 (rows x columns), but Rows x Columns is 64 x 52",
        ),
    ));
    cases.push(refused(
        "JPEG Lossless frame of 3 components",
        enc("1.2.840.10008.1.2.4.70", {
            let mut f = jpeg(0xC3, 64, 52);
            f[11] = 3;
            encapsulated(&[], &[f])
        }),
        0xC000,
        bad_frag("the JPEG codestream has 3 components, but Samples per Pixel is 1"),
    ));
    cases.push(refused(
        "JPEG fragment without SOI",
        enc(
            "1.2.840.10008.1.2.4.57",
            encapsulated(&[], &[vec![0x12; 64]]),
        ),
        0xC000,
        bad_frag("the JPEG fragment does not start with SOI (FFD8)"),
    ));
    let mut siz = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 41, 0, 0];
    for v in [60_000u32, 60_000, 0, 0, 60_000, 60_000, 0, 0] {
        siz.extend_from_slice(&v.to_be_bytes());
    }
    siz.extend_from_slice(&[0, 1, 15, 1, 1, 0xFF, 0xD9]);
    cases.push(refused(
        "JPEG 2000 image of 60000 x 60000 in a 64 x 52 image",
        enc("1.2.840.10008.1.2.4.90", encapsulated(&[], &[siz])),
        0xC000,
        bad_frag("the JPEG 2000 codestream is 60000 x 60000 (rows x columns), but Rows x Columns is 64 x 52"),
    ));
    let mut undefined_fragment = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0];
    undefined_fragment.extend_from_slice(&UNDEF);
    undefined_fragment.extend_from_slice(&ITEM);
    undefined_fragment.extend_from_slice(&0u32.to_le_bytes());
    undefined_fragment.extend_from_slice(&ITEM);
    undefined_fragment.extend_from_slice(&UNDEF);
    cases.push(unreadable(
        "fragment of undefined length",
        enc(RLE, undefined_fragment),
        "a Pixel Data fragment has an undefined length (PS3.5 §A.4)",
    ));
    let mut element_in_fragments = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0];
    element_in_fragments.extend_from_slice(&UNDEF);
    element_in_fragments.extend(explicit((0x0008, 0x0060), b"CS", b"MG"));
    cases.push(unreadable(
        "element among the fragments",
        enc(RLE, element_in_fragments),
        "encapsulated Pixel Data holds element (0008,0060) where only fragment items may stand",
    ));
    cases.push(refused(
        "encapsulated Pixel Data in a native transfer syntax",
        enc(EXPLICIT, encapsulated(&[], std::slice::from_ref(&good_rle))),
        0xC000,
        bad_frag(
            "transfer syntax 1.2.840.10008.1.2.1 needs native Pixel Data, but it is encapsulated",
        ),
    ));
    cases.push(refused(
        "native Pixel Data in RLE",
        with_ts(&base, RLE),
        0xC000,
        bad_frag(
            "transfer syntax 1.2.840.10008.1.2.5 needs encapsulated Pixel Data, but it is native",
        ),
    ));

    // --- attributes
    let uid_case = |name: &str, tag: Tag, label: &str, value: &str| {
        refused(
            name,
            mutate(&base, |o| put(o, tag, VR::UI, value)),
            0xA900,
            format!("invalid UID in {label}: `{value}`"),
        )
    };
    let sop = "SOP Instance UID (0008,0018)";
    cases.push(uid_case(
        "path traversal SOP UID",
        tags::SOP_INSTANCE_UID,
        sop,
        "../../etc/passwd",
    ));
    cases.push(uid_case(
        "letters in the Study UID",
        tags::STUDY_INSTANCE_UID,
        "Study Instance UID (0020,000D)",
        "1.2.abc",
    ));
    cases.push(uid_case(
        "65-character Series UID",
        tags::SERIES_INSTANCE_UID,
        "Series Instance UID (0020,000E)",
        &format!("1.{}", "2".repeat(63)),
    ));
    cases.push(uid_case(
        "empty UID component",
        tags::SOP_INSTANCE_UID,
        sop,
        "1..2",
    ));
    cases.push(uid_case(
        "trailing dot",
        tags::SOP_INSTANCE_UID,
        sop,
        "1.2.",
    ));
    // Integrity: a new instance under the stored study that names another woman.
    let base_study = dicom_object::OpenFileOptions::new()
        .from_reader(&base[128..])
        .expect("parse the base instance")
        .element(tags::STUDY_INSTANCE_UID)
        .expect("base has a Study UID")
        .to_str()
        .expect("text")
        .trim_end_matches('\0')
        .to_owned();
    cases.push(refused(
        "another woman's image under a stored study",
        mutate(&base, |o| {
            put(o, tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.1.77");
            o.meta_mut().media_storage_sop_instance_uid = "1.2.3.1.77".into();
            put(o, tags::PATIENT_ID, VR::LO, "ANOTHER-WOMAN");
        }),
        0xA900,
        format!("instance does not match its study {base_study}: its Patient ID (or Issuer of Patient ID) differs from the one of the study's instances already stored"),
    ));
    cases.push(refused(
        "no SOP Instance UID",
        mutate(&base, |o| {
            o.remove_element(tags::SOP_INSTANCE_UID);
        }),
        0xA900,
        "missing required attribute SOP Instance UID (0008,0018)",
    ));
    cases.push(refused(
        "CT image",
        mutate(&base, |o| {
            put(o, tags::MODALITY, VR::CS, "CT");
            put(o, tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2");
        }),
        0x0122,
        "not a mammogram: Modality CT, SOP Class 1.2.840.10008.5.1.4.1.1.2",
    ));
    cases.push(refused(
        "no laterality",
        mutate(&base, |o| {
            o.remove_element(tags::IMAGE_LATERALITY);
        }),
        0xA900,
        "missing laterality",
    ));
    cases.push(refused(
        "no view",
        mutate(&base, |o| {
            o.remove_element(tags::VIEW_POSITION);
        }),
        0xA900,
        "missing view",
    ));
    cases.push(refused(
        "9000 rows",
        mutate(&base, |o| put_u16(o, tags::ROWS, 9000)),
        0xA900,
        format!(
            "image too large: 9000x{COLUMNS} exceeds the limit {}x{}",
            limits.max_rows, limits.max_columns
        ),
    ));
    cases.push(refused(
        "32 bits allocated",
        mutate(&base, |o| put_u16(o, tags::BITS_ALLOCATED, 32)),
        0xC000,
        "unsupported pixel format: Bits Allocated 32, Bits Stored 12",
    ));
    cases.push(refused(
        "three samples per pixel",
        mutate(&base, |o| put_u16(o, tags::SAMPLES_PER_PIXEL, 3)),
        0xC000,
        "unsupported pixel format: 3 samples per pixel",
    ));
    cases.push(refused(
        "two frames",
        mutate(&base, |o| put(o, tags::NUMBER_OF_FRAMES, VR::IS, "2")),
        0xC000,
        "unsupported pixel format: 2 frames",
    ));
    cases.push(Case {
        name: "instance of another study than the URL's".into(),
        send: Send::InstanceToStudy("1.2.999".into(), base.clone()),
        expect: Expect::Refused {
            reason: 0xA900,
            comment: "not to the study 1.2.999 named in the request URL".into(),
        },
    });

    // --- requests that cannot be read
    let stow = "/dicomweb/studies";
    let ct = content_type();
    let part = |ct: &str, body: &[u8]| {
        let mut p = format!("Content-Type: {ct}\r\n\r\n").into_bytes();
        p.extend_from_slice(body);
        p
    };
    let dicom_part = part("application/dicom", &base);
    cases.push(raw(
        "no Content-Type",
        "POST",
        stow,
        None,
        multipart_raw(&[&dicom_part], true),
        415,
        "missing Content-Type",
    ));
    cases.push(raw(
        "JSON body",
        "POST",
        stow,
        Some("application/json"),
        b"{}".to_vec(),
        415,
        "Content-Type application/json is not supported",
    ));
    cases.push(raw(
        "multipart of JSON",
        "POST",
        stow,
        Some(&format!(
            "multipart/related; type=\"application/json\"; boundary={BOUNDARY}"
        )),
        multipart_raw(&[&dicom_part], true),
        415,
        "multipart type `application/json` is not supported",
    ));
    cases.push(raw(
        "no boundary",
        "POST",
        stow,
        Some("multipart/related; type=\"application/dicom\""),
        b"x".to_vec(),
        400,
        "multipart/related Content-Type without a boundary",
    ));
    cases.push(raw(
        "71-character boundary",
        "POST",
        stow,
        Some(&format!("multipart/related; boundary={}", "b".repeat(71))),
        b"x".to_vec(),
        400,
        "multipart boundary is 71 characters long (at most 70, RFC 2046 §5.1.1)",
    ));
    let header_max = limits.max_multipart_header_bytes;
    cases.push(raw(
        "body without its boundary (1 MiB of zeros)",
        "POST",
        stow,
        Some(&ct),
        vec![0u8; 1 << 20],
        400,
        format!(
            "no multipart boundary `--{BOUNDARY}` within the first {header_max} bytes of the body"
        ),
    ));
    let mut endless_headers =
        format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\nX-Pad: ").into_bytes();
    endless_headers.extend(std::iter::repeat_n(b'a', header_max + 10));
    cases.push(raw(
        "part headers that never end",
        "POST",
        stow,
        Some(&ct),
        endless_headers,
        400,
        format!("a part's header block runs past {header_max} bytes without its ending empty line"),
    ));
    cases.push(raw(
        "no parts",
        "POST",
        stow,
        Some(&ct),
        format!("--{BOUNDARY}--\r\n").into_bytes(),
        400,
        "the request holds no instances",
    ));
    cases.push(raw(
        "missing close delimiter",
        "POST",
        stow,
        Some(&ct),
        {
            let mut b = format!("--{BOUNDARY}\r\n").into_bytes();
            b.extend_from_slice(&dicom_part);
            b
        },
        400,
        "malformed multipart body",
    ));
    cases.push(Case {
        name: "part of another type".into(),
        send: Send::Raw {
            method: "POST",
            path: stow.into(),
            content_type: Some(ct.clone()),
            body: multipart_raw(&[&part("application/pdf", b"%PDF-1.4")], true),
        },
        expect: Expect::Refused {
            reason: 0xC000,
            comment: "part has Content-Type application/pdf, expected application/dicom".into(),
        },
    });
    let over = limits.max_instance_bytes as usize + 1;
    cases.push(Case {
        name: "part over the instance limit".into(),
        send: Send::Raw {
            method: "POST",
            path: stow.into(),
            content_type: Some(ct.clone()),
            body: multipart_raw(&[&part("application/dicom", &vec![7u8; over])], true),
        },
        expect: Expect::Refused {
            reason: 0xA700,
            comment: format!(
                "instance exceeds the limit of {max_instance} bytes (limits.max_instance_bytes)"
            ),
        },
    });
    if limits.max_request_bytes < 64 << 20 {
        let n = limits.max_request_bytes as usize / 2 + 1;
        let big = part("application/dicom", &vec![7u8; n]);
        cases.push(raw(
            "body over the request limit",
            "POST",
            stow,
            Some(&ct),
            multipart_raw(&[&big, &big, &big], true),
            413,
            format!(
                "request body exceeds {} bytes (limits.max_request_bytes)",
                limits.max_request_bytes
            ),
        ));
    }
    cases.push(raw(
        "invalid study UID in the URL",
        "POST",
        "/dicomweb/studies/1.2.x",
        Some(&ct),
        multipart_raw(&[&dicom_part], true),
        400,
        "study UID in the URL is not a valid UID",
    ));

    // --- other routes: every error is the documented JSON
    cases.push(raw(
        "unknown route",
        "GET",
        "/nowhere",
        None,
        Vec::new(),
        404,
        "no such route",
    ));
    cases.push(raw(
        "PUT on the STOW route (GET there is QIDO-RS)",
        "PUT",
        stow,
        None,
        Vec::new(),
        405,
        "method not allowed on this route",
    ));
    cases.push(raw(
        "bad query",
        "GET",
        "/api/v1/centers/central/worklist?limit=abc",
        None,
        Vec::new(),
        400,
        "Failed to deserialize query string",
    ));
    cases.push(raw(
        "bad path parameter",
        "POST",
        "/api/v1/worklist/abc/reading",
        Some("application/json"),
        b"{}".to_vec(),
        400,
        "Cannot parse `abc`",
    ));
    cases.push(raw(
        "claim without JSON",
        "POST",
        "/api/v1/centers/central/worklist/claim",
        Some("text/plain"),
        b"x".to_vec(),
        400,
        "Expected request with `Content-Type: application/json`",
    ));
    cases.push(raw(
        "claim with broken JSON",
        "POST",
        "/api/v1/centers/central/worklist/claim",
        Some("application/json"),
        b"{".to_vec(),
        400,
        "Failed to parse the request body as JSON",
    ));
    cases.push(raw(
        "claim naming a radiologist",
        "POST",
        "/api/v1/centers/central/worklist/claim",
        Some("application/json"),
        b"{\"radiologist\": \"someone else\"}".to_vec(),
        400,
        "unknown field `radiologist`",
    ));
    cases
}
