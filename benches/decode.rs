//! Decode time per 3328 x 4096 mammogram for each codec, tamiz (its own lossless
//! JPEG decoder, dicom-rs with CharLS and OpenJPEG for the rest) beside dcmtk, GDCM and pydicom's fastest plugin, on the same files,
//! on one core (this process and every tool it starts are pinned to CPU 0). Prints
//! a table; asserts nothing.
//!
//! The files: one array (12 or 16 stored bits, `TAMIZ_BENCH_BITS` [16]) written by
//! pydicom, encoded by dcmtk (JPEG Lossless SV1, JPEG-LS lossless and near-lossless,
//! Deflated, and JPEG Extended at 12 bits), GDCM (JPEG 2000 lossless, RLE), pydicom
//! with OpenJPEG (JPEG 2000 lossy) and imagecodecs with OpenJPH (HTJ2K lossless).
//! - tamiz: parsing the file from memory and decoding it (`predecode`, then
//!   `decode_pixel_data`), best of 5 (a Deflated data set is inflated by the parse);
//!   beside it dicom-rs alone (`decode_pixel_data`), which differs for JPEG Lossless
//!   and RLE.
//! - dcmtk and GDCM: the command-line decompressor (`dcmdjpeg`, `dcmdjpls`,
//!   `dcmdrle`, `dcmconv`; `gdcmconv --raw`) minus the same tool's copy of the
//!   uncompressed file (reading and writing 27 MB), best of 5.
//! - pydicom: `dcmread` and `pixel_array` with each installed plugin (gdcm,
//!   pylibjpeg, pyjpegls, pillow, pydicom's own), best of 5 of the fastest; for
//!   native data (uncompressed, Deflated) no plugin runs, whichever is named.
//!
//! `scripts/bench-decode.sh` installs what it needs and runs this.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dicom_pixeldata::PixelDecoder;

const REPEATS: usize = 5;

/// Writes `ref.dcm` (3328 x 4096, `bits` stored) and pydicom's lossy JPEG 2000 of it.
const WRITE_ARRAY: &str = r#"
import sys, numpy as np
from pydicom import uid
from mg_array import breast, mammogram
out, bits = sys.argv[1], int(sys.argv[2])
arr = breast(4096, 3328, bits, noise=0.005, seed=bits, dtype=np.float32)
ds = mammogram(arr, bits, "BENCH-1")
ds.save_as(f"{out}/ref.dcm", enforce_file_format=True)
ds.compress(uid.JPEG2000, arr, j2k_psnr=[70.0])
ds.save_as(f"{out}/j2k-lossy.dcm", enforce_file_format=True)
import imagecodecs
from pydicom import dcmread
from pydicom.encaps import encapsulate
h = dcmread(f"{out}/ref.dcm")
stream = imagecodecs.htj2k_encode(h.pixel_array, reversible=True)
h.file_meta.TransferSyntaxUID = uid.HTJ2KLossless
h.PixelData = encapsulate([stream])
h["PixelData"].VR, h["PixelData"].is_undefined_length = "OB", True
h.save_as(f"{out}/htj2k.dcm", enforce_file_format=True)
"#;

/// Times `pixel_array` with every installed plugin; prints `plugin ms` lines (best of
/// N) for the file.
const PYDICOM_TIMES: &str = r#"
import sys, time
import pydicom
from pydicom.pixels import pixel_array
path, n = sys.argv[1], int(sys.argv[2])
for plugin in ["pydicom", "gdcm", "pylibjpeg", "pyjpegls", "pillow"]:
    best = None
    try:
        for _ in range(n):
            t = time.perf_counter()
            ds = pydicom.dcmread(path)
            pixel_array(ds, decoding_plugin=plugin)
            d = time.perf_counter() - t
            best = d if best is None else min(best, d)
    except Exception:
        continue
    print(plugin, best * 1000)
"#;

struct Codec {
    name: &'static str,
    file: &'static str,
    /// The dcmtk command that makes it from ref.dcm (None: made elsewhere).
    make: Option<(&'static str, &'static [&'static str])>,
    /// dcmtk's decompressor for it.
    dcmtk: &'static str,
    /// The most stored bits the syntax takes (JPEG Extended: 12).
    max_bits: u32,
}

const CODECS: &[Codec] = &[
    Codec {
        name: "uncompressed (Explicit VR LE)",
        file: "ref.dcm",
        make: None,
        dcmtk: "dcmconv",
        max_bits: 16,
    },
    Codec {
        name: "Deflated",
        file: "deflated.dcm",
        make: Some(("dcmconv", &["+td"])),
        dcmtk: "dcmconv",
        max_bits: 16,
    },
    Codec {
        name: "JPEG Lossless SV1 (.70)",
        file: "jpeg.dcm",
        make: Some(("dcmcjpeg", &["+e1"])),
        dcmtk: "dcmdjpeg",
        max_bits: 16,
    },
    Codec {
        name: "JPEG-LS lossless (.80)",
        file: "jls.dcm",
        make: Some(("dcmcjpls", &["+el"])),
        dcmtk: "dcmdjpls",
        max_bits: 16,
    },
    Codec {
        name: "JPEG-LS near-lossless 2 (.81)",
        file: "jls-near.dcm",
        make: Some(("dcmcjpls", &["+en", "+md", "2"])),
        dcmtk: "dcmdjpls",
        max_bits: 16,
    },
    Codec {
        name: "JPEG 2000 lossless (.90)",
        file: "j2k.dcm",
        make: Some(("gdcmconv", &["--j2k"])),
        dcmtk: "",
        max_bits: 16,
    },
    Codec {
        name: "JPEG 2000 lossy 70 dB (.91)",
        file: "j2k-lossy.dcm",
        make: None,
        dcmtk: "",
        max_bits: 16,
    },
    Codec {
        name: "HTJ2K lossless (.201)",
        file: "htj2k.dcm",
        make: None,
        dcmtk: "",
        max_bits: 16,
    },
    Codec {
        name: "JPEG Extended 12-bit (.51)",
        file: "jpeg-extended.dcm",
        make: Some(("dcmcjpeg", &["+ee"])),
        dcmtk: "dcmdjpeg",
        max_bits: 12,
    },
    Codec {
        name: "RLE Lossless",
        file: "rle.dcm",
        make: Some(("gdcmconv", &["--rle"])),
        dcmtk: "dcmdrle",
        max_bits: 16,
    },
];

fn pin_to_one_core() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn best_of(n: usize, mut f: impl FnMut() -> Option<Duration>) -> Option<Duration> {
    (0..n)
        .map(|_| f())
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .min()
}

/// Best wall time of a command over `REPEATS` runs; None if it fails or is missing.
fn time_command(cmd: &str, args: &[&str]) -> Option<Duration> {
    best_of(REPEATS, || {
        let t = Instant::now();
        let ok = Command::new(cmd).args(args).output().ok()?.status.success();
        ok.then(|| t.elapsed())
    })
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{:.0}", d.as_secs_f64() * 1000.0))
}

fn main() -> anyhow::Result<()> {
    pin_to_one_core();
    let bits: u32 = std::env::var("TAMIZ_BENCH_BITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    common::python(WRITE_ARRAY, &[d.to_str().unwrap(), &bits.to_string()]);
    let src = d.join("ref.dcm");
    // TAMIZ_BENCH_ONLY=JPEG-LS: only the codecs whose name holds it (and that take
    // this many bits: JPEG Extended runs with TAMIZ_BENCH_BITS=12).
    let only = std::env::var("TAMIZ_BENCH_ONLY").unwrap_or_default();
    let codecs: Vec<&Codec> = CODECS
        .iter()
        .filter(|c| c.name.contains(&only) && bits <= c.max_bits)
        .collect();
    for c in &codecs {
        if let Some((cmd, args)) = c.make {
            let mut a: Vec<&str> = args.to_vec();
            let out = d.join(c.file);
            a.extend([src.to_str().unwrap(), out.to_str().unwrap()]);
            common::tool(cmd, &a);
        }
    }
    let out = d.join("out.dcm");
    let o = out.to_str().unwrap();
    let s = src.to_str().unwrap();
    // What each tool spends reading and writing the uncompressed file.
    let dcmtk_copy = time_command("dcmconv", &[s, o]);
    let gdcm_copy = time_command("gdcmconv", &[s, o]);
    let minus = |a: Option<Duration>, b: Option<Duration>| Some(a?.saturating_sub(b?));
    println!(
        "Decode time per {}-bit 3328 x 4096 image, ms, best of {REPEATS}, one core (CPU 0); dcmtk and GDCM: the tool's run minus its copy of the uncompressed file ({} / {} ms)\n",
        bits,
        ms(dcmtk_copy),
        ms(gdcm_copy)
    );
    println!("| codec | file MB | tamiz | dicom-rs alone | dcmtk | GDCM | pydicom (fastest plugin) | tamiz vs fastest other |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for c in codecs {
        let path: PathBuf = d.join(c.file);
        let p = path.to_str().unwrap();
        let bytes = std::fs::read(&path)?;
        // dicom-rs alone, for the syntaxes tamiz decodes itself.
        let dicom_rs = best_of(REPEATS, || {
            let t = Instant::now();
            let obj = dicom_object::OpenFileOptions::new()
                .from_reader(&bytes[128..])
                .ok()?;
            let decoded = obj.decode_pixel_data().ok()?;
            std::hint::black_box(decoded.data());
            Some(t.elapsed())
        });
        let tamiz = best_of(REPEATS, || {
            let t = Instant::now();
            let obj = dicom_object::OpenFileOptions::new()
                .from_reader(&bytes[128..])
                .ok()?;
            // tamiz's path: its own JPEG Lossless decoder, dicom-rs for the rest.
            let native = tamiz::dicom::pixels::predecode(&obj).ok()?;
            let decoded = native.as_ref().unwrap_or(&obj).decode_pixel_data().ok()?;
            std::hint::black_box(decoded.data());
            Some(t.elapsed())
        });
        let dcmtk = if c.dcmtk.is_empty() {
            None
        } else {
            let args: &[&str] = if c.dcmtk == "dcmconv" {
                &["+te", p, o]
            } else {
                &[p, o]
            };
            minus(time_command(c.dcmtk, args), dcmtk_copy)
        };
        let gdcm = minus(time_command("gdcmconv", &["--raw", p, o]), gdcm_copy);
        let (plugin, pydicom) = pydicom_best(&path);
        let others = [dcmtk, gdcm, pydicom].into_iter().flatten().min();
        let ratio = match (tamiz, others) {
            // Nothing to decode: the tools' times are what their copy leaves.
            _ if c.make.is_none() && c.file == "ref.dcm" => "–".into(),
            (Some(t), Some(o)) if !o.is_zero() => {
                format!("{:.2}×", t.as_secs_f64() / o.as_secs_f64())
            }
            _ => "–".into(),
        };
        println!(
            "| {} | {:.1} | {} | {} | {} | {} | {} ({plugin}) | {ratio} |",
            c.name,
            bytes.len() as f64 / 1e6,
            ms(tamiz),
            ms(dicom_rs),
            ms(dcmtk),
            ms(gdcm),
            ms(pydicom),
        );
    }
    Ok(())
}

/// pydicom's fastest plugin for the file, and its time.
fn pydicom_best(path: &Path) -> (String, Option<Duration>) {
    let out = common::python(
        PYDICOM_TIMES,
        &[path.to_str().unwrap(), &REPEATS.to_string()],
    );
    out.lines()
        .filter_map(|l| {
            let (name, ms) = l.split_once(' ')?;
            Some((name.to_owned(), ms.parse::<f64>().ok()?))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(("none".into(), None), |(n, ms)| {
            (n, Some(Duration::from_secs_f64(ms / 1000.0)))
        })
}
