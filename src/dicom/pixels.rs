//! From stored samples to display values, in tamiz's own code.
//!
//! dicom-rs decodes the transfer syntax; everything after that is done here because
//! dicom-rs ignores the VOI LUT Sequence, exposes only the first window, and never
//! inverts MONOCHROME1. The chain is the grayscale pipeline of PS3.3 C.11:
//! stored value → Modality LUT (rescale) → VOI LUT (table, or window LINEAR /
//! LINEAR_EXACT / SIGMOID) → presentation (MONOCHROME1 inverted), giving values in
//! [0, 1] where 1 is brightest (densest tissue).

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{DecodedPixelData, PixelDecoder, PixelRepresentation, VoiLutFunction};

/// A single-channel image of display values in [0, 1], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl GrayImage {
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> GrayImage {
        assert_eq!(
            width * height,
            data.len(),
            "image buffer does not match its size"
        );
        GrayImage {
            width,
            height,
            data,
        }
    }
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    #[error("pixel data could not be decoded: {0}")]
    Decode(String),
    #[error("the pixel decoder crashed on this instance (corrupt or truncated pixel data)")]
    DecoderPanic,
    #[error("unsupported pixel layout: {0}")]
    Unsupported(String),
}

/// How stored values map to [0, 1] before presentation.
#[derive(Debug, Clone, PartialEq)]
pub enum Voi {
    /// VOI LUT Sequence (0028,3010): first input value, output bit depth, table.
    Table {
        first: i32,
        bits: u8,
        data: Vec<u16>,
    },
    Window {
        center: f64,
        width: f64,
        function: WindowFunction,
    },
    /// No VOI in the file: stretch the actual value range.
    MinMax,
    /// The model card's canonical rendering, whatever VOI the file carries: see
    /// [`canonical_lut`].
    Canonical,
}

/// How a model wants its views rendered (`[preprocess] rendering` of its card).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rendering {
    /// As the file says: its VOI LUT or window, else the value range.
    #[default]
    File,
    /// The same for every vendor's convention: the file's VOI is ignored and the
    /// modality values are stretched between the background and the brightest tissue
    /// ([`canonical_lut`]), so LINEAR, SIGMOID, a VOI LUT Sequence, no window at all
    /// and MONOCHROME1 give the same picture.
    Canonical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

/// Everything needed to turn stored values into display values.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayscalePipeline {
    pub bits_stored: u16,
    pub signed: bool,
    pub slope: f64,
    pub intercept: f64,
    pub voi: Voi,
    pub monochrome1: bool,
}

impl GrayscalePipeline {
    /// Display value for one modality-LUT output value `x`.
    fn voi(&self, x: f64, lo: f64, hi: f64) -> f64 {
        match &self.voi {
            Voi::Table { first, bits, data } => {
                let i = (x.round() as i64 - *first as i64).clamp(0, data.len() as i64 - 1) as usize;
                let max = ((1u32 << (*bits).min(16)) - 1) as f64;
                data[i] as f64 / max
            }
            Voi::Window {
                center,
                width,
                function,
            } => window(x, *center, *width, *function),
            // Canonical renderings come from the histogram, in `apply_with`.
            Voi::MinMax | Voi::Canonical => {
                if hi > lo {
                    (x - lo) / (hi - lo)
                } else {
                    0.0
                }
            }
        }
    }

    /// Display value for one stored value; `lo`/`hi` are the image's modality-value
    /// range (used only for [`Voi::MinMax`]).
    pub fn display(&self, stored: i32, lo: f64, hi: f64) -> f32 {
        let x = stored as f64 * self.slope + self.intercept;
        let y = self.voi(x, lo, hi).clamp(0.0, 1.0);
        (if self.monochrome1 { 1.0 - y } else { y }) as f32
    }

    /// Applies the pipeline to stored values through a lookup table over the stored
    /// range (at most 2^16 entries), so a 13-megapixel image costs one table read per
    /// pixel.
    pub fn apply(&self, stored: &[i32], width: usize, height: usize) -> GrayImage {
        self.apply_with(stored.len(), width, height, |i| stored[i])
    }

    /// [`GrayscalePipeline::apply`] over `n` stored values read by `value` (no
    /// intermediate buffer of stored values).
    pub fn apply_with(
        &self,
        n: usize,
        width: usize,
        height: usize,
        value: impl Fn(usize) -> i32,
    ) -> GrayImage {
        if n == 0 {
            return GrayImage::new(width, height, Vec::new());
        }
        let (smin, smax) = (0..n).fold((i32::MAX, i32::MIN), |(a, b), i| {
            let v = value(i);
            (a.min(v), b.max(v))
        });
        let lut: Vec<f32> = if self.voi == Voi::Canonical {
            let mut counts = vec![0u64; (smax - smin) as usize + 1];
            for i in 0..n {
                counts[(value(i) - smin) as usize] += 1;
            }
            canonical_lut(&counts, (self.slope >= 0.0) != self.monochrome1)
        } else {
            let m = |s: i32| s as f64 * self.slope + self.intercept;
            let (lo, hi) = (m(smin).min(m(smax)), m(smin).max(m(smax)));
            (smin..=smax).map(|s| self.display(s, lo, hi)).collect()
        };
        let data = (0..n).map(|i| lut[(value(i) - smin) as usize]).collect();
        GrayImage::new(width, height, data)
    }
}

/// The canonical rendering of an image from the histogram of its stored values
/// (`counts[i]`: pixels with the i-th value of the stored range; `brighter_up`: whether
/// a greater stored value is brighter after the rescale slope and MONOCHROME1). Otsu's
/// threshold splits background from breast; the background's median renders 0 and the
/// breast's 99.5th percentile renders 1, linearly in between. An affine change of the
/// stored values (bit depth, pedestal, rescale, MONOCHROME1) leaves the picture as it
/// is, and no VOI is read. Returns the display value of each stored value.
pub fn canonical_lut(counts: &[u64], brighter_up: bool) -> Vec<f32> {
    let n = counts.len();
    // Pixels at the k-th value in brightness order. The brightest value present is
    // left out of the statistics: burned-in markers and labels sit there, and would
    // otherwise set the top of the range and flatten the breast.
    let top = (0..n)
        .rev()
        .find(|&k| counts[if brighter_up { k } else { n - 1 - k }] > 0);
    let count = |k: usize| {
        if Some(k) == top {
            0
        } else {
            counts[if brighter_up { k } else { n - 1 - k }]
        }
    };
    let total: u64 = (0..n).map(count).sum();
    if n < 2 || total == 0 {
        return vec![0.0; n];
    }
    // Otsu: the split k (dark = positions < k) with the largest between-class variance.
    let sum_all: f64 = (0..n).map(|k| k as f64 * count(k) as f64).sum();
    let (mut w0, mut sum0) = (0f64, 0f64);
    let (mut best, mut split) = (-1f64, 1usize);
    for k in 1..n {
        let c = count(k - 1) as f64;
        w0 += c;
        sum0 += (k - 1) as f64 * c;
        let w1 = total as f64 - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let d = sum0 / w0 - (sum_all - sum0) / w1;
        let between = w0 * w1 * d * d;
        if between > best {
            best = between;
            split = k;
        }
    }
    // The position where the running count over [from, to) reaches `q` of its pixels.
    let quantile = |from: usize, to: usize, q: f64| -> usize {
        let class: u64 = (from..to).map(count).sum();
        let target = (q * class as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for k in from..to {
            seen += count(k);
            if seen >= target {
                return k;
            }
        }
        to - 1
    };
    let lo = quantile(0, split, 0.5) as f64;
    let hi = (quantile(split, n, 0.995) as f64).max(lo + 1.0);
    (0..n)
        .map(|i| {
            let k = if brighter_up { i } else { n - 1 - i };
            ((k as f64 - lo) / (hi - lo)).clamp(0.0, 1.0) as f32
        })
        .collect()
}

/// The VOI window functions of PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT) and
/// C.11.2.1.3.1 (SIGMOID), scaled to an output range of [0, 1].
pub fn window(x: f64, center: f64, width: f64, function: WindowFunction) -> f64 {
    match function {
        WindowFunction::Linear => {
            let w = width.max(1.0);
            if x <= center - 0.5 - (w - 1.0) / 2.0 {
                0.0
            } else if x > center - 0.5 + (w - 1.0) / 2.0 {
                1.0
            } else {
                (x - (center - 0.5)) / (w - 1.0).max(f64::MIN_POSITIVE) + 0.5
            }
        }
        WindowFunction::LinearExact => {
            let w = width.max(f64::MIN_POSITIVE);
            if x <= center - w / 2.0 {
                0.0
            } else if x > center + w / 2.0 {
                1.0
            } else {
                (x - center) / w + 0.5
            }
        }
        WindowFunction::Sigmoid => {
            1.0 / (1.0 + (-4.0 * (x - center) / width.max(f64::MIN_POSITIVE)).exp())
        }
    }
}

/// JPEG Lossless, process 14 (selection value 1, and any), and RLE Lossless: decoded
/// by tamiz's own decoders (`tamiz-codecs`), faster than dicom-rs's on one core
/// (`docs/DICOM.md`); JPEG Extended too, which dicom-rs cannot decode at 12 bits.
const LOSSLESS_JPEG: [&str; 2] = ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57"];
/// JPEG Extended (processes 2 and 4): 12-bit DCT, which dicom-rs's decoder refuses.
const EXTENDED_JPEG: &str = "1.2.840.10008.1.2.4.51";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// For a JPEG Lossless, JPEG Extended or RLE Lossless image, a copy of the object whose Pixel Data
/// is the image decoded by `tamiz-codecs`, stored native, so that dicom-pixeldata
/// reads it without decoding again. `None` for every other transfer syntax, and for
/// a stream those decoders leave to dicom-rs (several components, restart intervals).
pub fn predecode(obj: &DefaultDicomObject) -> Result<Option<DefaultDicomObject>, PixelError> {
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0');
    let lossless = LOSSLESS_JPEG.contains(&ts);
    let jpeg = lossless || ts == EXTENDED_JPEG;
    if !jpeg && ts != RLE_LOSSLESS {
        return Ok(None);
    }
    let number = |tag| -> Option<usize> {
        obj.element(tag)
            .ok()?
            .to_int::<u32>()
            .ok()
            .map(|v| v as usize)
    };
    let (Some(rows), Some(columns), Some(bits_allocated)) = (
        number(tags::ROWS),
        number(tags::COLUMNS),
        number(tags::BITS_ALLOCATED),
    ) else {
        return Ok(None);
    };
    let Some(fragments) = obj
        .element(tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.value().fragments())
    else {
        return Ok(None);
    };
    let stream: Cow<'_, [u8]> = match fragments {
        [one] => Cow::Borrowed(one),
        many => Cow::Owned(many.concat()),
    };
    let value = if jpeg {
        let decoded = if lossless {
            tamiz_codecs::ljpeg::decode(&stream, rows * columns)
        } else {
            tamiz_codecs::jpeg12::decode(&stream, rows * columns)
        };
        let frame = match decoded {
            Ok(f) => f,
            Err(tamiz_codecs::ljpeg::LjpegError::Unsupported(_)) => return Ok(None),
            Err(e) => return Err(PixelError::Decode(e.to_string())),
        };
        if (frame.rows, frame.columns) != (rows, columns) {
            return Err(PixelError::Decode(format!(
                "the JPEG frame is {} x {}, Rows x Columns {rows} x {columns}",
                frame.rows, frame.columns
            )));
        }
        match bits_allocated {
            8 if frame.precision <= 8 => {
                PrimitiveValue::U8(frame.samples.iter().map(|&v| v as u8).collect())
            }
            16 => PrimitiveValue::U16(frame.samples.into()),
            _ => return Ok(None),
        }
    } else {
        if fragments.len() != 1 {
            return Ok(None);
        }
        match tamiz_codecs::rle::decode(&stream, rows, columns, bits_allocated as u16) {
            // Little-endian sample bytes, as native data holds them.
            Ok(bytes) => PrimitiveValue::U8(bytes.into()),
            Err(tamiz_codecs::rle::RleError::Unsupported(_)) => return Ok(None),
            Err(e) => return Err(PixelError::Decode(e.to_string())),
        }
    };
    // Every element but the compressed Pixel Data (no copy of the fragments).
    let mut meta = obj.meta().clone();
    meta.transfer_syntax = EXPLICIT_VR_LE.to_owned();
    let mut native = DefaultDicomObject::new_empty_with_meta(meta);
    for e in obj.iter().filter(|e| e.header().tag != tags::PIXEL_DATA) {
        native.put(e.clone());
    }
    native.put(DataElement::new(tags::PIXEL_DATA, VR::OW, value));
    Ok(Some(native))
}

/// Decodes the first frame and applies the file's grayscale pipeline.
pub fn decode_display(obj: &DefaultDicomObject) -> Result<GrayImage, PixelError> {
    decode(obj, Rendering::File).map(|(img, _)| img)
}

/// Decodes the first frame and renders it as `rendering` says; returns the image and
/// the file's own pipeline (what the input checks read). A panic inside the decoder
/// (dicom-rs's RLE reader panics on truncated data) becomes an error.
pub fn decode(
    obj: &DefaultDicomObject,
    rendering: Rendering,
) -> Result<(GrayImage, GrayscalePipeline), PixelError> {
    catch_unwind(AssertUnwindSafe(|| {
        let native = predecode(obj)?;
        let obj = native.as_ref().unwrap_or(obj);
        let decoded = obj
            .decode_pixel_data()
            .map_err(|e| PixelError::Decode(e.to_string()))?;
        let (file_pipeline, width, height) = read_pipeline(&decoded)?;
        let pipeline = match rendering {
            Rendering::File => file_pipeline.clone(),
            Rendering::Canonical => GrayscalePipeline {
                voi: Voi::Canonical,
                ..file_pipeline.clone()
            },
        };
        let n = width * height;
        let data = decoded.data();
        let bits = pipeline.bits_stored;
        let mask: u32 = (1u32 << bits) - 1;
        let sign_bit: u32 = 1u32 << (bits - 1);
        let signed = pipeline.signed;
        // Stored value: masked to Bits Stored, sign-extended when signed.
        let to_value = move |raw: u32| -> i32 {
            let v = raw & mask;
            if signed && v & sign_bit != 0 {
                v as i32 - (1i32 << bits)
            } else {
                v as i32
            }
        };
        let bytes_per = if decoded.bits_allocated() == 8 { 1 } else { 2 };
        if data.len() < n * bytes_per {
            return Err(PixelError::Decode(format!(
                "pixel data holds {} bytes, {width}x{height} needs {}",
                data.len(),
                n * bytes_per
            )));
        }
        let img = if bytes_per == 1 {
            pipeline.apply_with(n, width, height, |i| to_value(data[i] as u32))
        } else {
            pipeline.apply_with(n, width, height, |i| {
                to_value(u16::from_le_bytes([data[2 * i], data[2 * i + 1]]) as u32)
            })
        };
        Ok((img, file_pipeline))
    }))
    .map_err(|_| PixelError::DecoderPanic)?
}

/// Reads the layout checks and the attributes of the grayscale pipeline.
fn read_pipeline(
    decoded: &DecodedPixelData<'_>,
) -> Result<(GrayscalePipeline, usize, usize), PixelError> {
    if decoded.samples_per_pixel() != 1 {
        return Err(PixelError::Unsupported(format!(
            "{} samples per pixel",
            decoded.samples_per_pixel()
        )));
    }
    match decoded.bits_allocated() {
        8 | 16 => {}
        b => return Err(PixelError::Unsupported(format!("Bits Allocated {b}"))),
    }
    let bits_stored = decoded.bits_stored().clamp(1, decoded.bits_allocated());
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let (slope, intercept) = match decoded.rescale() {
        Ok(r) if !r.is_empty() => (r[0].slope, r[0].intercept),
        _ => (1.0, 0.0),
    };
    let voi = if let Ok(Some(luts)) = decoded.voi_lut_sequence() {
        match luts.first() {
            Some(l) if !l.data.is_empty() => Voi::Table {
                first: l.min_pixel_value,
                bits: l.bits_stored,
                data: l.data.clone(),
            },
            _ => Voi::MinMax,
        }
    } else if let Ok(Some(windows)) = decoded.window() {
        match windows.first() {
            Some(w) if w.width > 0.0 => {
                let function = match decoded.voi_lut_function() {
                    Ok(Some(f)) => match f.first() {
                        Some(VoiLutFunction::Sigmoid) => WindowFunction::Sigmoid,
                        Some(VoiLutFunction::LinearExact) => WindowFunction::LinearExact,
                        _ => WindowFunction::Linear,
                    },
                    _ => WindowFunction::Linear,
                };
                Voi::Window {
                    center: w.center,
                    width: w.width,
                    function,
                }
            }
            _ => Voi::MinMax,
        }
    } else {
        Voi::MinMax
    };
    let monochrome1 = decoded.photometric_interpretation().as_str() == "MONOCHROME1";
    Ok((
        GrayscalePipeline {
            bits_stored,
            signed,
            slope,
            intercept,
            voi,
            monochrome1,
        },
        decoded.columns() as usize,
        decoded.rows() as usize,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(voi: Voi, monochrome1: bool) -> GrayscalePipeline {
        GrayscalePipeline {
            bits_stored: 12,
            signed: false,
            slope: 1.0,
            intercept: 0.0,
            voi,
            monochrome1,
        }
    }

    #[test]
    fn linear_window_matches_ps3_3_formula() {
        // center 100, width 11: values <= 94.5 -> 0, > 104.5 -> 1, 99.5 -> 0.5
        let f = WindowFunction::Linear;
        assert_eq!(window(94.0, 100.0, 11.0, f), 0.0);
        assert_eq!(window(105.0, 100.0, 11.0, f), 1.0);
        assert!((window(99.5, 100.0, 11.0, f) - 0.5).abs() < 1e-12);
        assert!((window(102.0, 100.0, 11.0, f) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn linear_exact_and_sigmoid() {
        assert!((window(100.0, 100.0, 10.0, WindowFunction::LinearExact) - 0.5).abs() < 1e-12);
        assert_eq!(window(95.0, 100.0, 10.0, WindowFunction::LinearExact), 0.0);
        assert!((window(100.0, 100.0, 10.0, WindowFunction::Sigmoid) - 0.5).abs() < 1e-12);
        // one width above the center: 1 / (1 + e^-4)
        let y = window(110.0, 100.0, 10.0, WindowFunction::Sigmoid);
        assert!((y - 1.0 / (1.0 + (-4.0f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn monochrome1_is_inverted() {
        let p = pipeline(
            Voi::Window {
                center: 50.0,
                width: 100.0,
                function: WindowFunction::LinearExact,
            },
            true,
        );
        let img = p.apply(&[0, 50, 100], 3, 1);
        assert_eq!(img.data, vec![1.0, 0.5, 0.0]);
        let p2 = GrayscalePipeline {
            monochrome1: false,
            ..p
        };
        assert_eq!(p2.apply(&[0, 50, 100], 3, 1).data, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn rescale_then_minmax() {
        let p = GrayscalePipeline {
            slope: 2.0,
            intercept: -10.0,
            ..pipeline(Voi::MinMax, false)
        };
        // modality values -10, 0, 10 -> 0, 0.5, 1
        assert_eq!(p.apply(&[0, 5, 10], 3, 1).data, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn the_canonical_rendering_ignores_the_voi_and_affine_changes_of_the_values() {
        // Background around 100, tissue 1000-2000, a few bright specks above it.
        let mut stored: Vec<i32> = (0..600).map(|i| 100 + i % 7).collect();
        stored.extend((0..380).map(|i| 1000 + (i * 1000) / 380));
        stored.extend((0..20).map(|i| 2100 + 10 * i));
        let canonical = |p: GrayscalePipeline, values: &[i32]| {
            GrayscalePipeline {
                voi: Voi::Canonical,
                ..p
            }
            .apply(values, values.len(), 1)
            .data
        };
        let base = canonical(pipeline(Voi::MinMax, false), &stored);
        assert_eq!(base[0], 0.0, "background median renders 0");
        assert_eq!(base[999], 1.0, "the brightest specks saturate");
        assert!(base[700] > 0.5 && base[700] < 0.7, "{}", base[700]);
        // Another window function, 2 more bits and a pedestal, or MONOCHROME1 storage:
        // the same picture.
        let sigmoid = Voi::Window {
            center: 1500.0,
            width: 300.0,
            function: WindowFunction::Sigmoid,
        };
        let same = |other: Vec<f32>| {
            let worst = other
                .iter()
                .zip(&base)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-6, "differs by {worst}");
        };
        same(canonical(pipeline(sigmoid, false), &stored));
        let shifted: Vec<i32> = stored.iter().map(|v| v * 4 + 500).collect();
        same(canonical(pipeline(Voi::MinMax, false), &shifted));
        let inverted: Vec<i32> = stored.iter().map(|v| 4095 - v).collect();
        same(canonical(pipeline(Voi::MinMax, true), &inverted));
        // Burned-in markers at the stored maximum (here 5 % of the image) do not set
        // the top of the range.
        let mut marked = stored.clone();
        marked.extend([4095; 50]);
        let with_markers = canonical(pipeline(Voi::MinMax, false), &marked);
        let worst = with_markers[..1000]
            .iter()
            .zip(&base)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 0.02, "markers change the picture by {worst}");
        assert_eq!(with_markers[1000], 1.0);
    }

    #[test]
    fn voi_lut_table_is_looked_up_and_clamped() {
        let p = pipeline(
            Voi::Table {
                first: 10,
                bits: 8,
                data: vec![0, 51, 255],
            },
            false,
        );
        let img = p.apply(&[5, 10, 11, 12, 40], 5, 1);
        assert_eq!(img.data, vec![0.0, 0.0, 0.2, 1.0, 1.0]);
    }
}
