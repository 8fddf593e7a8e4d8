//! The checks every view passes before the model sees it: is this an image the model
//! was made for, rendered the way it was trained on? A view that fails sends its study
//! out untriaged with the reason (read like routine), never scored.
//!
//! Two kinds of check: against the model card's intended input (photometric
//! interpretation, pixel spacing) and against simple statistics of the rendered image,
//! which catch what attributes do not say: a window or VOI LUT that renders the breast
//! near-black or saturated, a background that is not dark (raw data, a wrong
//! photometric interpretation), a crop that would find no breast or no background, and
//! a VOI LUT whose descriptor claims more bits than its entries use (a vendor quirk
//! that dcmtk's `+Mv` detects; read as declared it renders the image almost black).

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use serde::Deserialize;

use crate::dicom::pixels::{GrayImage, GrayscalePipeline, Rendering, Voi};

/// What the card says a view must look like. Every field has the default the shipped
/// model was calibrated with (see `models/triage.toml`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ViewChecks {
    /// Photometric Interpretations the model takes (after MONOCHROME1 is inverted).
    pub photometric: Vec<String>,
    /// Pixel Spacing (or Imager Pixel Spacing) range in mm; an image that states
    /// none is not checked.
    pub pixel_spacing_mm: [f64; 2],
    /// The brightest tissue must reach this display value (99.5th percentile), or the
    /// view renders near-black.
    pub min_bright: f32,
    /// The darkest 5 % must stay below this, or there is no dark background (raw
    /// data, inverted, near-white rendering).
    pub max_dark: f32,
    /// Share of pixels above the crop threshold: below the first the crop finds no
    /// breast, above the second it finds no background.
    pub foreground: [f32; 2],
    /// At most this share of the breast may be at full brightness (a window too narrow
    /// for the data).
    pub max_saturated: f32,
    /// At most this share of the image's outer frame (5 % of each side) may be above
    /// the crop threshold: a mammogram's background lies along its edges, so a bright
    /// frame means a background brighter than the breast (raw or inverted data).
    pub max_bright_border: f32,
}

impl Default for ViewChecks {
    fn default() -> Self {
        ViewChecks {
            photometric: vec!["MONOCHROME1".into(), "MONOCHROME2".into()],
            pixel_spacing_mm: [0.02, 0.5],
            min_bright: 0.3,
            max_dark: 0.3,
            foreground: [0.03, 0.97],
            max_saturated: 0.25,
            max_bright_border: 0.6,
        }
    }
}

/// Display-value statistics of one rendered view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewStats {
    pub p05: f32,
    pub p995: f32,
    /// Share of pixels above the crop threshold.
    pub foreground: f32,
    /// Share of those at full brightness (>= 0.995).
    pub saturated: f32,
    /// Share of the outer frame (5 % of each side) above the crop threshold.
    pub bright_border: f32,
}

const BINS: usize = 1000;

/// One pass over the image: a histogram of display values.
pub fn stats(img: &GrayImage, crop_threshold: f32) -> ViewStats {
    let mut hist = vec![0u64; BINS + 1];
    let (mut fg, mut sat, mut border, mut border_fg) = (0u64, 0u64, 0u64, 0u64);
    let (w, h) = (img.width, img.height);
    let (fx, fy) = ((w / 20).max(1), (h / 20).max(1));
    for (i, &v) in img.data.iter().enumerate() {
        let v = if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        };
        hist[(v * BINS as f32).round() as usize] += 1;
        let (x, y) = (i % w.max(1), i / w.max(1));
        let in_frame = x < fx || x >= w.saturating_sub(fx) || y < fy || y >= h.saturating_sub(fy);
        border += u64::from(in_frame);
        if v > crop_threshold {
            fg += 1;
            border_fg += u64::from(in_frame);
            if v >= 0.995 {
                sat += 1;
            }
        }
    }
    let n = img.data.len().max(1) as u64;
    let quantile = |q: f64| {
        let target = (q * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in hist.iter().enumerate() {
            seen += c;
            if seen >= target {
                return i as f32 / BINS as f32;
            }
        }
        1.0
    };
    ViewStats {
        p05: quantile(0.05),
        p995: quantile(0.995),
        foreground: fg as f32 / n as f32,
        saturated: if fg == 0 { 0.0 } else { sat as f32 / fg as f32 },
        bright_border: if border == 0 {
            0.0
        } else {
            border_fg as f32 / border as f32
        },
    }
}

/// Checks the image's attributes against the card: Photometric Interpretation and
/// pixel spacing. `Err` names the attribute and the value.
pub fn check_attributes(obj: &DefaultDicomObject, checks: &ViewChecks) -> Result<(), String> {
    let text = |tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|v| crate::dicom::trim_value(&v).to_owned())
    };
    let photometric = text(tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if !checks.photometric.contains(&photometric) {
        return Err(format!(
            "Photometric Interpretation `{photometric}` is not one the model takes ({})",
            checks.photometric.join(", ")
        ));
    }
    let spacing = [tags::PIXEL_SPACING, tags::IMAGER_PIXEL_SPACING]
        .into_iter()
        .find_map(|t| {
            obj.element(t)
                .ok()
                .and_then(|e| e.to_multi_float64().ok())
                .filter(|v| !v.is_empty())
        });
    if let Some(spacing) = spacing {
        let [lo, hi] = checks.pixel_spacing_mm;
        if let Some(bad) = spacing.iter().find(|s| !(lo..=hi).contains(*s)) {
            return Err(format!(
                "pixel spacing {bad} mm is outside the model's range {lo}-{hi} mm"
            ));
        }
    }
    Ok(())
}

/// A VOI LUT whose descriptor declares more bits than its entries use: the largest
/// entry stays below a quarter of the declared range. Returns (declared, used) bits.
pub fn voi_lut_depth_mismatch(pipeline: &GrayscalePipeline) -> Option<(u8, u32)> {
    let Voi::Table { bits, data, .. } = &pipeline.voi else {
        return None;
    };
    let max = u32::from(data.iter().copied().max().unwrap_or(0));
    let used = 32 - max.leading_zeros();
    let declared = u32::from(*bits).min(16);
    (declared >= 2 && max < 1u32 << (declared - 2)).then_some((*bits, used))
}

/// Checks the rendered view. `Err` says what is wrong with the numbers that show it.
/// The VOI LUT is checked only when the rendering reads it (`Rendering::File`).
pub fn check_rendering(
    img: &GrayImage,
    pipeline: &GrayscalePipeline,
    rendering: Rendering,
    crop_threshold: f32,
    checks: &ViewChecks,
) -> Result<ViewStats, String> {
    let mismatch = match rendering {
        Rendering::File => voi_lut_depth_mismatch(pipeline),
        Rendering::Canonical => None,
    };
    if let Some((declared, used)) = mismatch {
        return Err(format!(
            "its VOI LUT Descriptor declares {declared}-bit entries but the table uses {used} bits (read as declared, the image renders near-black)"
        ));
    }
    let s = stats(img, crop_threshold);
    if s.p995 < checks.min_bright {
        return Err(format!(
            "renders near-black (99.5th percentile of display values {:.3} < {})",
            s.p995, checks.min_bright
        ));
    }
    if s.p05 > checks.max_dark {
        return Err(format!(
            "has no dark background (5th percentile of display values {:.3} > {}): raw, inverted or near-white rendering",
            s.p05, checks.max_dark
        ));
    }
    let [lo, hi] = checks.foreground;
    if s.foreground < lo {
        return Err(format!(
            "the crop finds no breast ({:.1} % of pixels above the crop threshold {crop_threshold}, at least {:.0} % expected)",
            s.foreground * 100.0,
            lo * 100.0
        ));
    }
    if s.foreground > hi {
        return Err(format!(
            "the crop finds no background ({:.1} % of pixels above the crop threshold {crop_threshold}, at most {:.0} % expected)",
            s.foreground * 100.0,
            hi * 100.0
        ));
    }
    if s.bright_border > checks.max_bright_border {
        return Err(format!(
            "its border is mostly bright ({:.1} % of the outer frame above the crop threshold, at most {:.0} %): a background brighter than the breast (raw For Processing data or an inverted image)",
            s.bright_border * 100.0,
            checks.max_bright_border * 100.0
        ));
    }
    if s.saturated > checks.max_saturated {
        return Err(format!(
            "{:.1} % of the breast renders at full brightness (at most {:.0} %): a window too narrow for the data",
            s.saturated * 100.0,
            checks.max_saturated * 100.0
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::pixels::WindowFunction;

    fn linear() -> GrayscalePipeline {
        GrayscalePipeline {
            bits_stored: 12,
            signed: false,
            slope: 1.0,
            intercept: 0.0,
            voi: Voi::Window {
                center: 2048.0,
                width: 4096.0,
                function: WindowFunction::Linear,
            },
            monochrome1: false,
        }
    }

    /// A 100x100 view: background `bg` on the left `100 - breast` columns, tissue
    /// ramping from `lo` to `hi` on the rest.
    fn view(bg: f32, breast: usize, lo: f32, hi: f32) -> GrayImage {
        let mut data = Vec::with_capacity(100 * 100);
        for y in 0..100 {
            for x in 0..100 {
                data.push(if x < 100 - breast {
                    bg
                } else {
                    lo + (hi - lo) * y as f32 / 99.0
                });
            }
        }
        GrayImage::new(100, 100, data)
    }

    fn check(img: &GrayImage) -> Result<ViewStats, String> {
        check_rendering(img, &linear(), Rendering::File, 0.1, &ViewChecks::default())
    }

    #[test]
    fn a_well_rendered_view_passes() {
        let s = check(&view(0.0, 50, 0.2, 0.9)).unwrap();
        assert_eq!(s.foreground, 0.5);
        assert!((s.p995 - 0.9).abs() < 0.01, "{s:?}");
        assert_eq!(s.p05, 0.0);
    }

    #[test]
    fn near_black_near_white_and_saturated_renderings_fail_with_the_numbers() {
        let e = check(&view(0.0, 50, 0.11, 0.2)).unwrap_err();
        assert_eq!(
            e,
            "renders near-black (99.5th percentile of display values 0.199 < 0.3)"
        );
        let e = check(&view(0.8, 50, 0.85, 1.0)).unwrap_err();
        assert!(
            e.starts_with("has no dark background (5th percentile of display values 0.800 > 0.3)"),
            "{e}"
        );
        // The upper half of the tissue ramp at >= 0.995.
        let e = check(&view(0.0, 50, 0.99, 1.0)).unwrap_err();
        assert_eq!(
            e,
            "50.0 % of the breast renders at full brightness (at most 25 %): a window too narrow for the data"
        );
    }

    #[test]
    fn a_background_brighter_than_the_breast_fails() {
        // Raw detector data: bright background all round, darker breast in the middle.
        let mut data = vec![0.9f32; 100 * 100];
        for y in 10..90 {
            for x in 0..60 {
                data[y * 100 + x] = 0.05;
            }
        }
        let e = check(&GrayImage::new(100, 100, data)).unwrap_err();
        assert!(e.starts_with("its border is mostly bright ("), "{e}");
    }

    #[test]
    fn a_crop_that_finds_nothing_or_everything_fails() {
        let e = check(&view(0.0, 2, 0.5, 0.9)).unwrap_err();
        assert!(
            e.starts_with("the crop finds no breast (2.0 % of pixels"),
            "{e}"
        );
        // Background just below the darkness limit yet above the crop threshold.
        let e = check(&view(0.25, 60, 0.5, 0.9)).unwrap_err();
        assert!(
            e.starts_with("the crop finds no background (100.0 % of pixels"),
            "{e}"
        );
    }

    #[test]
    fn a_voi_lut_using_12_of_16_declared_bits_is_caught() {
        let table = |bits, max: u16| GrayscalePipeline {
            voi: Voi::Table {
                first: 0,
                bits,
                data: (0..=4095u16).map(|v| v * (max / 4095).max(1)).collect(),
            },
            ..linear()
        };
        assert_eq!(voi_lut_depth_mismatch(&table(16, 4095)), Some((16, 12)));
        assert_eq!(voi_lut_depth_mismatch(&table(12, 4095)), None);
        assert_eq!(voi_lut_depth_mismatch(&table(16, 65520)), None);
        assert_eq!(voi_lut_depth_mismatch(&linear()), None);
        let img = view(0.0, 50, 0.2, 0.9);
        let checks = ViewChecks::default();
        let e = check_rendering(&img, &table(16, 4095), Rendering::File, 0.1, &checks).unwrap_err();
        assert!(
            e.starts_with(
                "its VOI LUT Descriptor declares 16-bit entries but the table uses 12 bits"
            ),
            "{e}"
        );
        // The canonical rendering never reads the table.
        assert!(
            check_rendering(&img, &table(16, 4095), Rendering::Canonical, 0.1, &checks).is_ok()
        );
    }
}
