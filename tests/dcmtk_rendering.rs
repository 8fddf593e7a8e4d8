//! tamiz renders an image as dcmtk's `dcmj2pnm` does with the same VOI, within one
//! grey level of 8 bits: the modality LUT (rescale), the first of several windows
//! (LINEAR and SIGMOID), a VOI LUT Sequence, MONOCHROME1. The files are written by
//! pydicom from one array and re-encoded by dcmtk (JPEG Lossless, JPEG-LS) and GDCM
//! (RLE), so the comparison also covers each decoder.

mod common;

use std::path::Path;

use common::*;
use tamiz::dicom::pixels::decode_display;

/// Writes `{variant}.dcm`: a 12-bit 256 x 208 MG image with the variant's VOI.
const WRITE: &str = r#"
import sys
from pydicom.dataset import Dataset as Item
from pydicom.sequence import Sequence
from mg_array import breast, mammogram
out, variant = sys.argv[1], sys.argv[2]
bits = 12
arr = breast(256, 208, bits, level=0.85, amplitude=0.1, texture=(5.0, 9.0), floor=0.02)
ds = mammogram(arr, bits, "RENDER-1", laterality="R", view="MLO")
# Two windows: the first is the one both renderers use.
ds.WindowCenter, ds.WindowWidth = [2100, 1800], [1500, 3600]
if variant == "sigmoid":
    ds.VOILUTFunction = "SIGMOID"
elif variant == "monochrome1":
    ds.PhotometricInterpretation = "MONOCHROME1"
elif variant == "rescale":
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 2, -1000, "US"
    ds.WindowCenter, ds.WindowWidth = [3200, 2600], [3000, 7000]
elif variant == "voi_lut":
    del ds.WindowCenter, ds.WindowWidth
    lut = Item()
    n = 4096
    lut.LUTDescriptor = [n, 0, 16]
    lut.LUTData = [int(65535 * (i / (n - 1)) ** 0.6) for i in range(n)]
    lut["LUTData"].VR = "US"
    lut.LUTExplanation = "gamma 0.6"
    ds.VOILUTSequence = Sequence([lut])
ds.save_as(f"{out}/{variant}.dcm", enforce_file_format=True)
"#;

/// An 8-bit binary PGM (P5) as written by dcmj2pnm: width, height, samples.
fn read_pgm(path: &Path) -> (usize, usize, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i] == b'#' {
            while b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        while !b[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&b[start..i]).into_owned());
    }
    assert_eq!(fields[0], "P5", "{}", path.display());
    assert_eq!(fields[3], "255");
    let (w, h) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    (w, h, b[i + 1..].to_vec())
}

#[test]
fn renderings_match_dcmj2pnm_within_one_grey_level() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut checked = 0;
    for variant in ["linear", "sigmoid", "monochrome1", "rescale", "voi_lut"] {
        python(WRITE, &[d.to_str().unwrap(), variant]);
        let src = d.join(format!("{variant}.dcm"));
        let s = src.to_str().unwrap().to_owned();
        let encoded = |name: &str| d.join(format!("{variant}-{name}.dcm"));
        let e = |name: &str| encoded(name).to_str().unwrap().to_owned();
        tool("dcmcjpeg", &["+e1", &s, &e("jpeg")]);
        tool("dcmcjpls", &["+el", &s, &e("jls")]);
        tool("gdcmconv", &["--rle", &s, &e("rle")]);
        let voi = if variant == "voi_lut" {
            ["+Wl", "1"]
        } else {
            ["+Wi", "1"]
        };
        // dcmtk renders JPEG-LS with dcml2pnm, the same renderer with CharLS.
        for (encoder, path, renderer) in [
            ("pydicom", src.clone(), "dcmj2pnm"),
            ("dcmtk JPEG Lossless", encoded("jpeg"), "dcmj2pnm"),
            ("dcmtk JPEG-LS", encoded("jls"), "dcml2pnm"),
            ("GDCM RLE", encoded("rle"), "dcmj2pnm"),
        ] {
            let what = format!("{variant} from {encoder}");
            let pgm = d.join("out.pgm");
            tool(
                renderer,
                &[
                    voi[0],
                    voi[1],
                    "+op",
                    path.to_str().unwrap(),
                    pgm.to_str().unwrap(),
                ],
            );
            let (w, h, reference) = read_pgm(&pgm);
            let obj = dicom_object::open_file(&path).unwrap();
            let img = decode_display(&obj).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!((img.width, img.height), (w, h), "{what}");
            let ours: Vec<u8> = img.data.iter().map(|v| (v * 255.0).round() as u8).collect();
            let (worst, at) = ours
                .iter()
                .zip(&reference)
                .enumerate()
                .map(|(i, (a, b))| ((*a as i32 - *b as i32).abs(), i))
                .max()
                .unwrap();
            assert!(
                worst <= 1,
                "{what}: pixel {at} is {} here and {} in dcmj2pnm",
                ours[at],
                reference[at]
            );
            // The image is not flat: the comparison covers the whole grey range.
            let (lo, hi) = (ours.iter().min().unwrap(), ours.iter().max().unwrap());
            assert!(*hi as i32 - *lo as i32 > 200, "{what}: {lo}..{hi}");
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
}
