//! Every transfer syntax a mammography archive sends decodes in tamiz: one array,
//! written by pydicom, encoded by dcmtk, GDCM and pydicom's plugins (CharLS,
//! OpenJPEG) in each syntax at 12 and 16 bits. Lossless files decode bit-exactly to
//! the array and give the model the same input; near-lossless JPEG-LS stays within
//! its NEAR bound; lossy JPEG 2000 stays close. Broken codestreams are errors.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dicom_pixeldata::PixelDecoder;
use tamiz::model::ModelCard;
use tamiz::worker::prepare_view;

/// Writes `ref.dcm` (Explicit VR Little Endian, MG For Presentation, 512 × 416,
/// `bits` stored bits using the whole range) and pydicom's own encodings of it.
const WRITE_ARRAY: &str = r#"
import sys
from pydicom import uid
from mg_array import breast, mammogram
out, bits = sys.argv[1], int(sys.argv[2])
arr = breast(512, 416, bits, noise=0.01, seed=bits)
top = (1 << bits) - 1
arr[0, 0], arr[-1, -1] = 0, top
ds = mammogram(arr, bits, "CODEC-1")
ds.WindowCenter, ds.WindowWidth = top // 2, top
ds.save_as(f"{out}/ref.dcm", enforce_file_format=True)
for name, syntax, kw in [
    ("pydicom-rle", uid.RLELossless, {}),
    ("pydicom-jls", uid.JPEGLSLossless, {}),
    ("pydicom-jls-near", uid.JPEGLSNearLossless, {"jls_error": 3}),
    ("pydicom-j2k", uid.JPEG2000Lossless, {}),
    ("pydicom-j2k-lossy", uid.JPEG2000, {"j2k_psnr": [70.0]}),
]:
    c = ds.copy()
    c.compress(syntax, arr, **kw)
    c.save_as(f"{out}/{name}.dcm", enforce_file_format=True)
"#;

/// An encoded file: who made it, its syntax, and how far it may be from the array
/// (0: bit-exact).
struct Encoded {
    name: &'static str,
    path: PathBuf,
    syntax: &'static str,
    max_error: u32,
}

fn encode_all(dir: &Path, bits: u32) -> (PathBuf, Vec<Encoded>) {
    python(WRITE_ARRAY, &[dir.to_str().unwrap(), &bits.to_string()]);
    let src = dir.join("ref.dcm");
    let s = src.to_str().unwrap();
    let out = |name: &str| dir.join(format!("{name}.dcm"));
    let o = |name: &str| out(name).to_str().unwrap().to_owned();
    tool("dcmcjpeg", &["+e1", s, &o("dcmtk-jpeg-sv1")]);
    tool("dcmcjpeg", &["+el", "+sv", "6", s, &o("dcmtk-jpeg-sv6")]);
    tool("dcmcjpls", &["+el", s, &o("dcmtk-jls")]);
    tool("dcmcjpls", &["+en", "+md", "2", s, &o("dcmtk-jls-near")]);
    tool("gdcmconv", &["--jpeg", s, &o("gdcm-jpeg")]);
    tool("gdcmconv", &["--jpegls", s, &o("gdcm-jls")]);
    tool("gdcmconv", &["--j2k", s, &o("gdcm-j2k")]);
    tool("gdcmconv", &["--rle", s, &o("gdcm-rle")]);
    tool("dcmconv", &["+td", s, &o("dcmtk-deflated")]);
    let e = |name: &'static str, syntax: &'static str, max_error: u32| Encoded {
        name,
        path: out(name),
        syntax,
        max_error,
    };
    // Lossy JPEG 2000 at 70 dB PSNR: an RMS error of about 0.03 % of the range; the
    // worst pixel is allowed 1 %.
    let j2k_lossy = (1u32 << bits) / 100;
    let files = vec![
        e("dcmtk-jpeg-sv1", "1.2.840.10008.1.2.4.70", 0),
        e("dcmtk-jpeg-sv6", "1.2.840.10008.1.2.4.57", 0),
        e("gdcm-jpeg", "1.2.840.10008.1.2.4.70", 0),
        e("dcmtk-jls", "1.2.840.10008.1.2.4.80", 0),
        e("gdcm-jls", "1.2.840.10008.1.2.4.80", 0),
        e("pydicom-jls", "1.2.840.10008.1.2.4.80", 0),
        e("dcmtk-jls-near", "1.2.840.10008.1.2.4.81", 2),
        e("pydicom-jls-near", "1.2.840.10008.1.2.4.81", 3),
        e("gdcm-j2k", "1.2.840.10008.1.2.4.90", 0),
        e("pydicom-j2k", "1.2.840.10008.1.2.4.90", 0),
        e("pydicom-j2k-lossy", "1.2.840.10008.1.2.4.91", j2k_lossy),
        e("gdcm-rle", "1.2.840.10008.1.2.5", 0),
        e("pydicom-rle", "1.2.840.10008.1.2.5", 0),
        e("dcmtk-deflated", "1.2.840.10008.1.2.1.99", 0),
    ];
    (src, files)
}

fn open(path: &Path) -> dicom_object::DefaultDicomObject {
    dicom_object::open_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The decoded samples of an instance as tamiz's decoder sees them.
fn samples(obj: &dicom_object::DefaultDicomObject) -> Vec<u16> {
    let decoded = obj.decode_pixel_data().expect("decode");
    if decoded.bits_allocated() == 8 {
        return decoded.data().iter().map(|&v| v as u16).collect();
    }
    decoded
        .data()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn open_bytes(b: &[u8]) -> dicom_object::DefaultDicomObject {
    dicom_object::OpenFileOptions::new()
        .from_reader(&b[128..])
        .unwrap()
}

fn card() -> ModelCard {
    ModelCard::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/triage.toml"))
        .unwrap()
        .0
}

#[test]
fn every_codec_decodes_what_dcmtk_gdcm_and_pydicom_encoded() {
    let card = card();
    for bits in [12u32, 16] {
        let dir = tempfile::tempdir().unwrap();
        let (src, files) = encode_all(dir.path(), bits);
        let reference = open(&src);
        let expected = samples(&reference);
        assert_eq!(expected.len(), 512 * 416);
        assert_eq!(
            expected.iter().max().copied(),
            Some(((1u32 << bits) - 1) as u16),
            "the array uses all {bits} bits"
        );
        let model_input = prepare_view(&std::fs::read(&src).unwrap(), &card).unwrap();
        let limits = tamiz::config::Limits::default();
        for f in &files {
            let what = format!("{} at {bits} bits", f.name);
            let bytes = std::fs::read(&f.path).unwrap();
            let obj = open(&f.path);
            assert_eq!(
                obj.meta().transfer_syntax().trim_end_matches('\0'),
                f.syntax,
                "{what}: the encoder wrote the syntax under test"
            );
            // Ingest accepts it: the codestream's frame header matches the attributes.
            tamiz::dicom::inspect_bytes(&bytes, &limits)
                .unwrap_or_else(|e| panic!("{what} is refused at ingest: {e}"));
            let got = samples(&obj);
            assert_eq!(got.len(), expected.len(), "{what}: sample count");
            let worst = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| (*a as i32 - *b as i32).unsigned_abs())
                .max()
                .unwrap();
            assert!(
                worst <= f.max_error,
                "{what}: a sample is {worst} away from the array (at most {} allowed)",
                f.max_error
            );
            if f.max_error == 0 {
                assert_eq!(
                    prepare_view(&bytes, &card).unwrap(),
                    model_input,
                    "{what}: the model gets the same input as from the uncompressed file"
                );
            } else {
                assert!(worst > 0, "{what}: a lossy encoding that changed nothing");
                prepare_view(&bytes, &card).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
        }
    }
}

/// Replaces the first fragment's bytes from `at` on with `fill` (the file keeps its
/// length and structure: only the codestream is damaged).
fn damage_codestream(bytes: &mut [u8], at: usize, fill: u8) {
    // The first fragment follows the Basic Offset Table item: (FFFE,E000) twice.
    let item = [0xFE, 0xFF, 0x00, 0xE0];
    let bot = bytes.windows(4).rposition(|w| w == item).unwrap();
    let bot_len = u32::from_le_bytes(bytes[bot + 4..bot + 8].try_into().unwrap()) as usize;
    let first = bot + 8 + bot_len; // the first fragment's item header, when the BOT is the item before
    let start = if bytes[first..first + 4] == item {
        first + 8
    } else {
        bot + 8
    };
    let len = u32::from_le_bytes(bytes[start - 4..start].try_into().unwrap()) as usize;
    for b in &mut bytes[start + at..start + len] {
        *b = fill;
    }
}

#[test]
fn broken_jpeg_ls_and_jpeg_2000_codestreams_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (_, files) = encode_all(dir.path(), 16);
    let card = card();
    let limits = tamiz::config::Limits::default();
    // (JPEG Lossless, decoded by tamiz's own decoder: the test after the next.)
    for name in ["dcmtk-jls", "gdcm-j2k", "pydicom-j2k-lossy"] {
        let f = files.iter().find(|f| f.name == name).unwrap();
        let good = std::fs::read(&f.path).unwrap();
        // The scan data zeroed after the headers, and the codestream cut to its
        // first 64 bytes (the rest 0xFF fill): the headers still pass ingest, and
        // the decoder reports an error the worker names (the view goes out
        // untriaged as unreadable), without a panic.
        for (how, at, fill) in [("zeroed", 200, 0u8), ("cut", 64, 0xFF)] {
            let mut bad = good.clone();
            damage_codestream(&mut bad, at, fill);
            tamiz::dicom::inspect_bytes(&bad, &limits)
                .unwrap_or_else(|e| panic!("{name} {how}: refused at ingest: {e}"));
            let decoded =
                std::panic::catch_unwind(|| open_bytes(&bad).decode_pixel_data().map(|_| ()));
            assert!(
                matches!(decoded, Ok(Err(_))),
                "{name} {how}: dicom-rs gives an error, not pixels or a panic"
            );
            let err = prepare_view(&bad, &card).expect_err(name).to_string();
            assert!(
                err.starts_with("could not be decoded: pixel data could not be decoded: "),
                "{name} {how}: {err}"
            );
        }
    }
}

/// tamiz's own lossless JPEG decoder (`tamiz-codecs`, used for .57 and .70) against
/// the array and against dicom-rs's decoder, on dcmtk's streams with each of the
/// seven predictors, with and without a point transform, at 12 and 16 bits.
#[test]
fn tamiz_lossless_jpeg_decoder_is_bit_exact_for_every_predictor() {
    for bits in [12u32, 16] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        python(WRITE_ARRAY, &[d.to_str().unwrap(), &bits.to_string()]);
        let src = d.join("ref.dcm");
        let expected = samples(&open(&src));
        for sv in 1..=7 {
            for pt in [0u32, 2] {
                let what = format!("selection value {sv}, point transform {pt}, {bits} bits");
                let out = d.join(format!("sv{sv}-pt{pt}.dcm"));
                tool(
                    "dcmcjpeg",
                    &[
                        "+el",
                        "+sv",
                        &sv.to_string(),
                        "+pt",
                        &pt.to_string(),
                        src.to_str().unwrap(),
                        out.to_str().unwrap(),
                    ],
                );
                let obj = open(&out);
                let native = tamiz::dicom::pixels::predecode(&obj)
                    .unwrap_or_else(|e| panic!("{what}: {e}"))
                    .unwrap_or_else(|| panic!("{what}: left to dicom-rs"));
                let ours = samples(&native);
                let want: Vec<u16> = expected.iter().map(|v| (v >> pt) << pt).collect();
                assert!(ours == want, "{what}: differs from the array");
                if pt == 0 {
                    assert!(ours == samples(&obj), "{what}: differs from dicom-rs");
                }
            }
        }
    }
}

/// A JPEG Lossless stream damaged after its headers is an error of tamiz's decoder
/// naming the problem, or pixels; never a panic.
#[test]
fn damaged_lossless_jpeg_streams_are_errors_of_tamiz_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let (_, files) = encode_all(dir.path(), 16);
    let f = files.iter().find(|f| f.name == "dcmtk-jpeg-sv1").unwrap();
    let good = std::fs::read(&f.path).unwrap();
    // 0xFF fill reads as a marker: the scan ends early.
    let mut filled = good.clone();
    damage_codestream(&mut filled, 200, 0xFF);
    let err = tamiz::dicom::pixels::predecode(&open_bytes(&filled))
        .expect_err("a stream of 0xFF fill")
        .to_string();
    assert!(
        err.starts_with("pixel data could not be decoded: corrupt JPEG stream: the scan's data ends before its last sample ("),
        "{err}"
    );
    // Zeroed data after the headers: zero bits read as the table's first codes,
    // which here take more bits per sample than the scan holds.
    let mut zeroed = good.clone();
    damage_codestream(&mut zeroed, 200, 0);
    let err = tamiz::dicom::pixels::predecode(&open_bytes(&zeroed))
        .expect_err("zeroed scan data")
        .to_string();
    assert!(
        err.starts_with("pixel data could not be decoded: corrupt JPEG stream: "),
        "{err}"
    );
    // Every cut of the first 300 bytes of the stream: an error or pixels.
    for at in (0..300).step_by(7) {
        let mut cut = good.clone();
        damage_codestream(&mut cut, at, 0);
        let result = std::panic::catch_unwind(|| {
            tamiz::dicom::pixels::predecode(&open_bytes(&cut)).map(|n| n.is_some())
        });
        assert!(result.is_ok(), "cut at {at}: a panic");
    }
}

/// The decoded samples of an instance as the worker sees them: tamiz's own decoders
/// first (`predecode`), dicom-rs otherwise.
fn tamiz_samples(obj: &dicom_object::DefaultDicomObject) -> Vec<u16> {
    match tamiz::dicom::pixels::predecode(obj).expect("decode") {
        Some(native) => samples(&native),
        None => samples(obj),
    }
}

#[test]
fn jpeg_extended_12_bit_decodes_as_dcmtk_decodes_it() {
    let card = card();
    for bits in [12u32, 8] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        python(WRITE_ARRAY, &[d.to_str().unwrap(), &bits.to_string()]);
        let src = d.join("ref.dcm");
        let (jpeg, back) = (d.join("extended.dcm"), d.join("dcmtk-decoded.dcm"));
        // dcmtk: extended sequential (process 4 at 12 bits, 2 at 8), quality 90; then
        // its own decoding of that file.
        tool(
            "dcmcjpeg",
            &["+ee", src.to_str().unwrap(), jpeg.to_str().unwrap()],
        );
        tool(
            "dcmdjpeg",
            &[jpeg.to_str().unwrap(), back.to_str().unwrap()],
        );
        let what = format!("JPEG extended at {bits} bits");
        let obj = open(&jpeg);
        assert_eq!(
            obj.meta().transfer_syntax().trim_end_matches('\0'),
            "1.2.840.10008.1.2.4.51",
            "{what}"
        );
        let bytes = std::fs::read(&jpeg).unwrap();
        tamiz::dicom::inspect_bytes(&bytes, &tamiz::config::Limits::default())
            .unwrap_or_else(|e| panic!("{what} is refused at ingest: {e}"));
        let ours = tamiz_samples(&obj);
        let dcmtk = samples(&open(&back));
        let original = samples(&open(&src));
        assert_eq!(ours.len(), original.len(), "{what}");
        let worst = |a: &[u16], b: &[u16]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (*x as i32 - *y as i32).unsigned_abs())
                .max()
                .unwrap()
        };
        // The same lossy image as dcmtk's decoder, to the last bit but one (an integer
        // inverse DCT against tamiz's float one).
        assert!(
            worst(&ours, &dcmtk) <= 1,
            "{what}: {} from dcmtk's decoding",
            worst(&ours, &dcmtk)
        );
        // Lossy at quality 90: near the original, and not identical to it.
        let range = (1u32 << bits) - 1;
        let w = worst(&ours, &original);
        assert!(w > 0 && w <= range / 10, "{what}: {w} from the original");
        // The worker scores it.
        prepare_view(&bytes, &card).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

#[test]
fn damaged_jpeg_extended_streams_are_errors_of_tamiz_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    python(WRITE_ARRAY, &[d.to_str().unwrap(), "12"]);
    let (src, jpeg) = (d.join("ref.dcm"), d.join("extended.dcm"));
    tool(
        "dcmcjpeg",
        &["+ee", src.to_str().unwrap(), jpeg.to_str().unwrap()],
    );
    let good = std::fs::read(&jpeg).unwrap();
    // 0xFF fill reads as a marker: the scan ends early.
    let mut filled = good.clone();
    damage_codestream(&mut filled, 2000, 0xFF);
    let err = tamiz::dicom::pixels::predecode(&open_bytes(&filled))
        .expect_err("a stream of 0xFF fill")
        .to_string();
    assert_eq!(
        err,
        "pixel data could not be decoded: corrupt JPEG stream: the scan's data ends before its last block"
    );
    // Every damage of the first 1000 bytes (its tables and scan header): an error or
    // pixels, never a panic.
    for (at, fill) in (0..1000).step_by(13).flat_map(|a| [(a, 0u8), (a, 0x5A)]) {
        let mut cut = good.clone();
        damage_codestream(&mut cut, at, fill);
        let result = std::panic::catch_unwind(|| {
            tamiz::dicom::pixels::predecode(&open_bytes(&cut)).map(|n| n.is_some())
        });
        assert!(result.is_ok(), "damage at {at} with {fill:#x}: a panic");
    }
}

/// Writes `htj2k-201.dcm` and `htj2k-203.dcm`: the reference array as one reversible
/// HTJ2K codestream (imagecodecs, through OpenJPH), under HTJ2K Lossless (.201) and
/// HTJ2K (.203, which allows lossless streams).
const WRITE_HTJ2K: &str = r#"
import sys
import imagecodecs
from pydicom import dcmread, uid
from pydicom.encaps import encapsulate
d = sys.argv[1]
ds = dcmread(f"{d}/ref.dcm")
stream = imagecodecs.htj2k_encode(ds.pixel_array, reversible=True)
assert stream[:4] == b"\xff\x4f\xff\x51", "a raw J2K codestream"
for name, ts in [("htj2k-201", uid.HTJ2KLossless), ("htj2k-203", uid.HTJ2K)]:
    c = dcmread(f"{d}/ref.dcm")
    c.file_meta.TransferSyntaxUID = ts
    c.PixelData = encapsulate([stream])
    c["PixelData"].VR = "OB"
    c["PixelData"].is_undefined_length = True
    c.save_as(f"{d}/{name}.dcm", enforce_file_format=True)
"#;

#[test]
fn htj2k_from_openjph_decodes_bit_exactly() {
    let card = card();
    for bits in [12u32, 16] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        python(WRITE_ARRAY, &[d.to_str().unwrap(), &bits.to_string()]);
        python(WRITE_HTJ2K, &[d.to_str().unwrap()]);
        let src = d.join("ref.dcm");
        let expected = samples(&open(&src));
        let model_input = prepare_view(&std::fs::read(&src).unwrap(), &card).unwrap();
        for (name, ts) in [
            ("htj2k-201", "1.2.840.10008.1.2.4.201"),
            ("htj2k-203", "1.2.840.10008.1.2.4.203"),
        ] {
            let what = format!("{name} at {bits} bits");
            let path = d.join(format!("{name}.dcm"));
            let bytes = std::fs::read(&path).unwrap();
            let obj = open(&path);
            assert_eq!(
                obj.meta().transfer_syntax().trim_end_matches('\0'),
                ts,
                "{what}"
            );
            tamiz::dicom::inspect_bytes(&bytes, &tamiz::config::Limits::default())
                .unwrap_or_else(|e| panic!("{what} is refused at ingest: {e}"));
            assert!(tamiz_samples(&obj) == expected, "{what}: not bit-exact");
            assert_eq!(
                prepare_view(&bytes, &card).unwrap(),
                model_input,
                "{what}: the model gets the same input as from the uncompressed file"
            );
        }
    }
}
