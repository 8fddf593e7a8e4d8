//! Synthetic screening mammograms: real DICOM files with known ground truth, for the
//! demo, the tests and training the shipped model. Synthetic data only.
//!
//! A view is rendered in breast coordinates (`u`: 0 at the chest wall to 1 at the
//! nipple; `v`: -1..1 across), so a lesion placed once appears in both the CC and MLO
//! views of its breast. The image holds a half-ellipse breast outline thinning towards
//! the skin line, fibroglandular texture from power-law noise (power spectrum 1/f^β,
//! β = 3, as measured on real mammograms), for MLO a pectoral muscle, and optionally a
//! mass (round or spiculated) and/or a cluster of microcalcifications; then quantum
//! noise, and 12-bit quantization in a 16-bit container.

use std::path::{Path, PathBuf};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use crate::dicom::{Laterality, View};

/// Digital Mammography X-Ray Image Storage – For Presentation.
pub const MG_FOR_PRESENTATION: &str = "1.2.840.10008.5.1.4.1.1.1.2";
pub const MG_FOR_PROCESSING: &str = "1.2.840.10008.5.1.4.1.1.1.2.1";
const STORED_BITS: u16 = 12;
/// Display value `d` in [0,1] is stored as `OFFSET + d * SCALE`.
const OFFSET: f32 = 200.0;
const SCALE: f32 = 3600.0;

/// What a study shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    Normal,
    Mass { spiculated: bool },
    Calcifications,
}

/// One lesion, in breast coordinates, with its size in millimetres.
#[derive(Debug, Clone, Copy)]
pub struct Lesion {
    pub finding: Finding,
    pub u: f32,
    pub v: f32,
    pub size_mm: f32,
    pub contrast: f32,
}

/// One synthetic woman's screening exam: four views with a shared ground truth.
#[derive(Debug, Clone)]
pub struct StudyPlan {
    pub seed: u64,
    pub rows: usize,
    pub columns: usize,
    pub spacing_mm: f32,
    pub patient_id: String,
    pub institution: String,
    pub study_uid: String,
    /// Fraction of fibroglandular tissue (0 fatty .. 1 extremely dense).
    pub density: f32,
    pub lesion: Option<(Laterality, Lesion)>,
    /// Store as MONOCHROME1 (inverted), as some modalities do.
    pub monochrome1: bool,
    /// How the views are stored and presented (vendors' conventions).
    pub variant: Variant,
}

/// The storage and presentation conventions real fleets differ in, applied to a
/// study's stored values and attributes. The breast is the same in every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// 12 bits, MONOCHROME2, a LINEAR window (the generator's base form).
    #[default]
    Linear,
    /// The same window with VOI LUT Function SIGMOID.
    Sigmoid,
    /// A VOI LUT Sequence (a gamma curve, 16-bit entries) instead of a window.
    VoiLut,
    /// No window and no VOI LUT at all.
    NoWindow,
    /// A window half as wide (more of the breast at full brightness).
    NarrowWindow,
    /// Stored inverted as MONOCHROME1.
    Monochrome1,
    /// 10 stored bits (the window scaled with them).
    Bits10,
    /// A detector pedestal: the background is stored well above zero.
    BrightBackground,
    /// Burned-in laterality marker and label blocks at the image edge.
    Markers,
    /// A VOI LUT Sequence whose descriptor says 16 bits while its entries are 12-bit.
    VoiLut16BitQuirk,
    /// Raw detector data (For Processing): inverted, no window, For Processing SOP
    /// class and intent. The model is not made for it.
    ForProcessing,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::Linear,
        Variant::Sigmoid,
        Variant::VoiLut,
        Variant::NoWindow,
        Variant::NarrowWindow,
        Variant::Monochrome1,
        Variant::Bits10,
        Variant::BrightBackground,
        Variant::Markers,
        Variant::VoiLut16BitQuirk,
        Variant::ForProcessing,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Linear => "linear",
            Variant::Sigmoid => "sigmoid",
            Variant::VoiLut => "voi-lut",
            Variant::NoWindow => "no-window",
            Variant::NarrowWindow => "narrow-window",
            Variant::Monochrome1 => "monochrome1",
            Variant::Bits10 => "10-bit",
            Variant::BrightBackground => "bright-background",
            Variant::Markers => "markers",
            Variant::VoiLut16BitQuirk => "voi-lut-16-bit-quirk",
            Variant::ForProcessing => "for-processing",
        }
    }
    /// For Presentation variants: what a model may be trained and scored on.
    pub fn for_presentation(self) -> bool {
        self != Variant::ForProcessing
    }
}

/// Gives `plans` the variants in turn (`with_raw`: For Processing among them).
pub fn assign_variants(plans: &mut [StudyPlan], with_raw: bool) {
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| with_raw || v.for_presentation())
        .collect();
    for (i, p) in plans.iter_mut().enumerate() {
        p.variant = variants[i % variants.len()];
    }
}

impl StudyPlan {
    /// 1 when the study contains a lesion (the "cancer" label of `labels.csv`).
    pub fn label(&self) -> u8 {
        u8::from(self.lesion.is_some())
    }
    /// Whether the lesion is visible in the given view's breast.
    pub fn view_label(&self, lat: Laterality) -> u8 {
        u8::from(matches!(self.lesion, Some((l, _)) if l == lat))
    }
    pub fn finding(&self) -> Finding {
        self.lesion.map_or(Finding::Normal, |(_, l)| l.finding)
    }
}

/// A random DICOM UID under the UUID-derived root 2.25 (PS3.5 §B.2).
pub fn random_uid(rng: &mut impl Rng) -> String {
    format!("2.25.{}", rng.random::<u128>() >> 1)
}

/// Plans `n` studies: `cancer_fraction` of them with a lesion (half masses, a quarter
/// spiculated masses, a quarter calcification clusters).
pub fn plan_studies(
    n: usize,
    seed: u64,
    cancer_fraction: f64,
    rows: usize,
    columns: usize,
    institutions: &[&str],
) -> Vec<StudyPlan> {
    let mut rng = SmallRng::seed_from_u64(seed);
    // 240 mm of detector height whatever the matrix, so lesion sizes stay physical.
    let spacing_mm = 240.0 / rows as f32;
    (0..n)
        .map(|i| {
            let lesion = rng.random_bool(cancer_fraction).then(|| {
                let lat = if rng.random_bool(0.5) {
                    Laterality::L
                } else {
                    Laterality::R
                };
                let finding = match rng.random_range(0..4) {
                    0 | 1 => Finding::Mass { spiculated: false },
                    2 => Finding::Mass { spiculated: true },
                    _ => Finding::Calcifications,
                };
                let (size_mm, contrast) = match finding {
                    Finding::Calcifications => {
                        (rng.random_range(4.0..10.0), rng.random_range(0.25..0.5))
                    }
                    _ => (rng.random_range(5.0..14.0), rng.random_range(0.07..0.2)),
                };
                let lesion = Lesion {
                    finding,
                    u: rng.random_range(0.2..0.75),
                    v: rng.random_range(-0.5..0.5),
                    size_mm,
                    contrast,
                };
                (lat, lesion)
            });
            StudyPlan {
                seed: rng.random(),
                rows,
                columns,
                spacing_mm,
                patient_id: format!(
                    "SYN{:06}",
                    seed.wrapping_mul(1000).wrapping_add(i as u64) % 1_000_000
                ),
                institution: institutions[i % institutions.len().max(1)].to_owned(),
                study_uid: random_uid(&mut rng),
                density: rng.random_range(0.1..0.9),
                lesion,
                monochrome1: false,
                variant: Variant::Linear,
            }
        })
        .collect()
}

/// Unit-variance noise with power spectrum 1/f^β on an `n`×`n` periodic grid.
fn power_law_noise(n: usize, beta: f32, rng: &mut SmallRng) -> Vec<f32> {
    let mut buf: Vec<Complex<f32>> = Vec::with_capacity(n * n);
    for y in 0..n {
        for x in 0..n {
            let fx = if x <= n / 2 {
                x as f32
            } else {
                x as f32 - n as f32
            };
            let fy = if y <= n / 2 {
                y as f32
            } else {
                y as f32 - n as f32
            };
            let f = (fx * fx + fy * fy).sqrt();
            let amp = if f == 0.0 { 0.0 } else { f.powf(-beta / 2.0) };
            let phase = rng.random_range(0.0..std::f32::consts::TAU);
            buf.push(Complex::from_polar(amp, phase));
        }
    }
    let mut planner = FftPlanner::<f32>::new();
    let fft = planner.plan_fft_inverse(n);
    for row in buf.chunks_exact_mut(n) {
        fft.process(row);
    }
    // columns: transpose, transform rows, (leave transposed: the noise is isotropic)
    let mut t = vec![Complex::new(0.0, 0.0); n * n];
    for y in 0..n {
        for x in 0..n {
            t[x * n + y] = buf[y * n + x];
        }
    }
    for row in t.chunks_exact_mut(n) {
        fft.process(row);
    }
    let re: Vec<f32> = t.iter().map(|c| c.re).collect();
    let mean = re.iter().sum::<f32>() / re.len() as f32;
    let var = re.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / re.len() as f32;
    let sd = var.sqrt().max(1e-12);
    re.into_iter().map(|v| (v - mean) / sd).collect()
}

fn bilinear(grid: &[f32], n: usize, gx: f32, gy: f32) -> f32 {
    let x0 = gx.floor();
    let y0 = gy.floor();
    let (fx, fy) = (gx - x0, gy - y0);
    let xi = (x0 as isize).rem_euclid(n as isize) as usize;
    let yi = (y0 as isize).rem_euclid(n as isize) as usize;
    let (xj, yj) = ((xi + 1) % n, (yi + 1) % n);
    let a = grid[yi * n + xi] * (1.0 - fx) + grid[yi * n + xj] * fx;
    let b = grid[yj * n + xi] * (1.0 - fx) + grid[yj * n + xj] * fx;
    a * (1.0 - fy) + b * fy
}

/// Approximately standard-normal noise, cheap enough for every pixel.
fn gauss(rng: &mut SmallRng) -> f32 {
    let s: f32 = (0..4).map(|_| rng.random::<f32>()).sum();
    (s - 2.0) * 1.732_050_8
}

/// Geometry of one view in image pixels.
struct Geometry {
    chest_left: bool,
    depth_px: f32,
    half_height_px: f32,
    center_y: f32,
    columns: usize,
}

impl Geometry {
    fn new(plan: &StudyPlan, lat: Laterality, view: &View, rng: &mut SmallRng) -> Geometry {
        let (w, h) = (plan.columns as f32, plan.rows as f32);
        let mlo = *view == View::Mlo;
        Geometry {
            // Left breasts are stored with the chest wall on the image's left edge,
            // right breasts on the right (the usual back-to-back hanging).
            chest_left: lat == Laterality::L,
            depth_px: w * rng.random_range(0.55..0.8),
            half_height_px: h * if mlo {
                rng.random_range(0.42..0.48)
            } else {
                rng.random_range(0.33..0.42)
            },
            center_y: h * if mlo { 0.45 } else { 0.5 },
            columns: plan.columns,
        }
    }
    /// Pixel → breast coordinates (u from the chest wall, v across).
    fn uv(&self, x: usize, y: usize) -> (f32, f32) {
        let dx = if self.chest_left {
            x as f32
        } else {
            (self.columns - 1 - x) as f32
        };
        (
            dx / self.depth_px,
            (y as f32 - self.center_y) / self.half_height_px,
        )
    }
    /// Breast coordinates → pixel.
    fn xy(&self, u: f32, v: f32) -> (f32, f32) {
        let dx = u * self.depth_px;
        let x = if self.chest_left {
            dx
        } else {
            (self.columns - 1) as f32 - dx
        };
        (x, self.center_y + v * self.half_height_px)
    }
}

/// Renders one view as stored values (12 bits in u16, MONOCHROME2 unless the plan says
/// MONOCHROME1).
pub fn render_view(plan: &StudyPlan, lat: Laterality, view: &View) -> Vec<u16> {
    let view_index = match (lat, view) {
        (Laterality::L, View::Cc) => 0u64,
        (Laterality::L, _) => 1,
        (Laterality::R, View::Cc) => 2,
        (Laterality::R, _) => 3,
    };
    let mut rng =
        SmallRng::seed_from_u64(plan.seed ^ (view_index.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let (w, h) = (plan.columns, plan.rows);
    let geo = Geometry::new(plan, lat, view, &mut rng);
    let n = 256;
    let texture = power_law_noise(n, 3.0, &mut rng);
    let fine = power_law_noise(n, 2.0, &mut rng);
    // texture grid spans ~ the breast: one cell ≈ 1 mm
    let cell_px = (1.0 / plan.spacing_mm).max(1.0);
    let threshold = 0.9 - 1.8 * plan.density; // higher density → more tissue above threshold
    let mlo = *view == View::Mlo;
    let mut img = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let (u, v) = geo.uv(x, y);
            let r2 = u * u + v * v;
            let p = &mut img[y * w + x];
            if u < 0.0 || r2 > 1.0 {
                *p = 0.03;
                continue;
            }
            let thickness = (1.0 - r2).sqrt();
            let mut d = 0.22 + 0.18 * thickness.sqrt();
            let t = bilinear(
                &texture,
                n,
                x as f32 / (cell_px * 4.0),
                y as f32 / (cell_px * 4.0),
            ) + 0.35 * bilinear(&fine, n, x as f32 / cell_px, y as f32 / cell_px);
            let gland = 1.0 / (1.0 + (-(t - threshold) * 3.0).exp());
            let envelope = (1.0 - u).max(0.0).sqrt() * thickness;
            d += 0.32 * gland * envelope;
            if mlo {
                // pectoral muscle: a bright triangle in the upper chest-wall corner
                let py = y as f32 / h as f32;
                if u < 0.35 * (1.0 - py / 0.55) {
                    d = d.max(0.62 + 0.04 * t);
                }
            }
            *p = d;
        }
    }
    if let Some((l, lesion)) = plan.lesion {
        if l == lat {
            draw_lesion(
                &mut img,
                w,
                h,
                &geo,
                &lesion,
                plan.spacing_mm,
                mlo,
                &mut rng,
            );
        }
    }
    let max = (1u32 << STORED_BITS) as f32 - 1.0;
    img.into_iter()
        .map(|d| {
            let d = d + 0.008 * gauss(&mut rng);
            let inverted = plan.monochrome1
                || matches!(plan.variant, Variant::Monochrome1 | Variant::ForProcessing);
            let d = if inverted { 1.0 - d } else { d };
            (OFFSET + d * SCALE).round().clamp(0.0, max) as u16
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn draw_lesion(
    img: &mut [f32],
    w: usize,
    h: usize,
    geo: &Geometry,
    lesion: &Lesion,
    spacing: f32,
    mlo: bool,
    rng: &mut SmallRng,
) {
    // The MLO projection moves the lesion a little relative to CC.
    let v = if mlo { lesion.v * 0.8 - 0.1 } else { lesion.v };
    let (cx, cy) = geo.xy(lesion.u, v);
    let r = lesion.size_mm / 2.0 / spacing;
    let mut add = |x: isize, y: isize, amount: f32| {
        if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
            img[y as usize * w + x as usize] += amount;
        }
    };
    match lesion.finding {
        Finding::Normal => {}
        Finding::Mass { spiculated } => {
            let reach = if spiculated { 3.0 * r } else { 1.6 * r };
            let spicules: Vec<f32> = if spiculated {
                (0..rng.random_range(8..16))
                    .map(|_| rng.random_range(0.0..std::f32::consts::TAU))
                    .collect()
            } else {
                Vec::new()
            };
            let spicule_w = (0.4 / spacing).max(1.0);
            let (x0, x1) = ((cx - reach) as isize, (cx + reach) as isize);
            let (y0, y1) = ((cy - reach) as isize, (cy + reach) as isize);
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                    let dist = (dx * dx + dy * dy).sqrt();
                    let mut a = lesion.contrast / (1.0 + ((dist / r - 1.0) * 6.0).exp());
                    for &theta in &spicules {
                        let along = dx * theta.cos() + dy * theta.sin();
                        let across = -dx * theta.sin() + dy * theta.cos();
                        if along > 0.0 && along < 3.0 * r {
                            a += 0.6
                                * lesion.contrast
                                * (-(across / spicule_w).powi(2)).exp()
                                * (1.0 - along / (3.0 * r));
                        }
                    }
                    add(x, y, a);
                }
            }
        }
        Finding::Calcifications => {
            let count = rng.random_range(6..16);
            for _ in 0..count {
                let ang = rng.random_range(0.0..std::f32::consts::TAU);
                let rad = r * rng.random::<f32>().sqrt();
                let (sx, sy) = (cx + rad * ang.cos(), cy + rad * ang.sin());
                let sr = (rng.random_range(0.2..0.5) / spacing).max(1.0);
                let ext = (sr * 2.0).ceil() as isize;
                for y in (sy as isize - ext)..=(sy as isize + ext) {
                    for x in (sx as isize - ext)..=(sx as isize + ext) {
                        let (dx, dy) = (x as f32 - sx, y as f32 - sy);
                        let q = (dx * dx + dy * dy) / (sr * sr);
                        add(x, y, lesion.contrast * (-q).exp());
                    }
                }
            }
        }
    }
}

fn el(
    tag: dicom_core::Tag,
    vr: VR,
    value: impl Into<PrimitiveValue>,
) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value.into())
}

/// Builds the DICOM object of one view (MG For Presentation, Explicit VR Little Endian).
pub fn view_object(
    plan: &StudyPlan,
    lat: Laterality,
    view: &View,
    series_uid: &str,
    sop_uid: &str,
    pixels: Vec<u16>,
) -> DefaultDicomObject {
    let photometric = if plan.monochrome1 || plan.variant == Variant::Monochrome1 {
        "MONOCHROME1"
    } else {
        "MONOCHROME2"
    };
    let spacing = format!("{:.4}\\{:.4}", plan.spacing_mm, plan.spacing_mm);
    let center = OFFSET + 0.5 * SCALE;
    let obj = InMemDicomObject::from_element_iter([
        el(tags::SOP_CLASS_UID, VR::UI, MG_FOR_PRESENTATION),
        el(tags::SOP_INSTANCE_UID, VR::UI, sop_uid),
        el(tags::STUDY_DATE, VR::DA, "20261123"),
        el(tags::MODALITY, VR::CS, "MG"),
        el(tags::INSTITUTION_NAME, VR::LO, plan.institution.as_str()),
        el(tags::PATIENT_NAME, VR::PN, "SYNTHETIC^PHANTOM"),
        el(tags::PATIENT_ID, VR::LO, plan.patient_id.as_str()),
        el(tags::BODY_PART_EXAMINED, VR::CS, "BREAST"),
        el(tags::VIEW_POSITION, VR::CS, view.as_str()),
        el(tags::STUDY_INSTANCE_UID, VR::UI, plan.study_uid.as_str()),
        el(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
        el(tags::IMAGE_LATERALITY, VR::CS, lat.as_str()),
        el(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric),
        el(tags::ROWS, VR::US, PrimitiveValue::from(plan.rows as u16)),
        el(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(plan.columns as u16),
        ),
        el(tags::PIXEL_SPACING, VR::DS, spacing.as_str()),
        el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
        el(tags::BITS_STORED, VR::US, PrimitiveValue::from(STORED_BITS)),
        el(
            tags::HIGH_BIT,
            VR::US,
            PrimitiveValue::from(STORED_BITS - 1),
        ),
        el(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        el(tags::WINDOW_CENTER, VR::DS, format!("{center:.0}").as_str()),
        el(tags::WINDOW_WIDTH, VR::DS, format!("{SCALE:.0}").as_str()),
        el(tags::VOILUT_FUNCTION, VR::CS, "LINEAR"),
        el(tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PRESENTATION"),
        el(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
    ]);
    let mut obj = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .expect("synthetic objects carry SOP class and instance UIDs");
    apply_variant(&mut obj, plan.variant, lat, plan.columns, plan.rows);
    obj
}

/// Rewrites a view's stored values and VOI attributes into `variant`'s convention.
fn apply_variant(
    obj: &mut DefaultDicomObject,
    variant: Variant,
    lat: Laterality,
    w: usize,
    h: usize,
) {
    let max = (1u32 << STORED_BITS) - 1;
    let map_pixels = |obj: &mut DefaultDicomObject, f: &dyn Fn(usize, u16) -> u16| {
        let pixels: Vec<u16> = obj
            .element(tags::PIXEL_DATA)
            .ok()
            .and_then(|e| e.value().to_multi_int::<u16>().ok())
            .unwrap_or_default();
        let mapped: Vec<u16> = pixels.iter().enumerate().map(|(i, &v)| f(i, v)).collect();
        obj.put(el(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(mapped.into()),
        ));
    };
    let no_window = |obj: &mut DefaultDicomObject| {
        obj.remove_element(tags::WINDOW_CENTER);
        obj.remove_element(tags::WINDOW_WIDTH);
        obj.remove_element(tags::VOILUT_FUNCTION);
    };
    // A VOI LUT Sequence over the 12-bit stored range, `bits` in its descriptor.
    let voi_lut = |obj: &mut DefaultDicomObject, bits: u16, table: Vec<u16>| {
        let item = InMemDicomObject::from_element_iter([
            el(
                tags::LUT_DESCRIPTOR,
                VR::US,
                PrimitiveValue::U16(vec![table.len() as u16, 0, bits].into()),
            ),
            el(tags::LUT_DATA, VR::OW, PrimitiveValue::U16(table.into())),
        ]);
        obj.put(DataElement::new(
            tags::VOILUT_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![item]),
        ));
    };
    let ramp = |x: u32| ((x as f32 - OFFSET) / SCALE).clamp(0.0, 1.0);
    match variant {
        Variant::Linear | Variant::Monochrome1 => {}
        Variant::Sigmoid => {
            obj.put(el(tags::VOILUT_FUNCTION, VR::CS, "SIGMOID"));
        }
        Variant::VoiLut => {
            no_window(obj);
            let table = (0..=max)
                .map(|x| (65535.0 * ramp(x).powf(0.8)) as u16)
                .collect();
            voi_lut(obj, 16, table);
        }
        Variant::VoiLut16BitQuirk => {
            no_window(obj);
            let table = (0..=max)
                .map(|x| (4095.0 * ramp(x)).round() as u16)
                .collect();
            voi_lut(obj, 16, table);
        }
        Variant::NoWindow => no_window(obj),
        Variant::NarrowWindow => {
            obj.put(el(
                tags::WINDOW_WIDTH,
                VR::DS,
                format!("{:.0}", SCALE / 2.0).as_str(),
            ));
        }
        Variant::Bits10 => {
            map_pixels(obj, &|_, v| v >> 2);
            obj.put(el(tags::BITS_STORED, VR::US, PrimitiveValue::from(10u16)));
            obj.put(el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(9u16)));
            let center = (OFFSET + 0.5 * SCALE) / 4.0;
            obj.put(el(
                tags::WINDOW_CENTER,
                VR::DS,
                format!("{center:.0}").as_str(),
            ));
            obj.put(el(
                tags::WINDOW_WIDTH,
                VR::DS,
                format!("{:.0}", SCALE / 4.0).as_str(),
            ));
        }
        Variant::BrightBackground => {
            // 1200 added below a compressed range: the background renders mid-gray
            // through the unchanged window.
            let pedestal = 1200.0;
            let k = (max as f32 - pedestal) / max as f32;
            map_pixels(obj, &|_, v| (pedestal + v as f32 * k).round() as u16);
        }
        Variant::Markers => {
            // Marker and label blocks in the two corners away from the chest wall.
            let background_right = lat == Laterality::L;
            let (bw, bh) = ((w / 12).max(2), (h / 25).max(2));
            let x0 = if background_right {
                w - w / 40 - bw
            } else {
                w / 40
            };
            let in_block = |x: usize, y: usize| {
                let top = y >= h / 40 && y < h / 40 + bh;
                let bottom = y >= h - h / 40 - bh && y < h - h / 40;
                x >= x0 && x < x0 + bw && (top || bottom)
            };
            map_pixels(obj, &|i, v| {
                if in_block(i % w, i / w) {
                    max as u16
                } else {
                    v
                }
            });
        }
        Variant::ForProcessing => {
            no_window(obj);
            obj.put(el(tags::SOP_CLASS_UID, VR::UI, MG_FOR_PROCESSING));
            obj.meta_mut().media_storage_sop_class_uid = MG_FOR_PROCESSING.into();
            obj.meta_mut().update_information_group_length();
            obj.put(el(tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PROCESSING"));
        }
    }
}

/// The four screening views in reading order.
pub const SCREENING_VIEWS: [(Laterality, View); 4] = [
    (Laterality::R, View::Cc),
    (Laterality::L, View::Cc),
    (Laterality::R, View::Mlo),
    (Laterality::L, View::Mlo),
];

/// Renders all four views of a study as DICOM objects.
pub fn study_objects(plan: &StudyPlan) -> Vec<(Laterality, View, DefaultDicomObject)> {
    let mut rng = SmallRng::seed_from_u64(plan.seed ^ 0x5EED);
    let series_uid = random_uid(&mut rng);
    SCREENING_VIEWS
        .iter()
        .map(|(lat, view)| {
            let sop = random_uid(&mut rng);
            let pixels = render_view(plan, *lat, view);
            (
                *lat,
                view.clone(),
                view_object(plan, *lat, view, &series_uid, &sop, pixels),
            )
        })
        .collect()
}

/// Writes a study's four views under `dir/{study_uid}/` and returns the file paths.
pub fn write_study(plan: &StudyPlan, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let study_dir = dir.join(&plan.study_uid);
    std::fs::create_dir_all(&study_dir)?;
    study_objects(plan)
        .into_iter()
        .map(|(lat, view, obj)| {
            let path = study_dir.join(format!("{}-{}.dcm", lat.as_str(), view.as_str()));
            obj.write_to_file(&path)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_normalized() {
        let mut rng = SmallRng::seed_from_u64(1);
        let n = power_law_noise(64, 3.0, &mut rng);
        let mean = n.iter().sum::<f32>() / n.len() as f32;
        let var = n.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n.len() as f32;
        assert!(
            mean.abs() < 1e-3 && (var - 1.0).abs() < 1e-3,
            "mean {mean} var {var}"
        );
    }

    #[test]
    fn lesion_raises_intensity_only_in_its_breast() {
        let mut plans = plan_studies(40, 7, 1.0, 256, 208, &["X"]);
        let plan = plans
            .iter_mut()
            .find(|p| matches!(p.finding(), Finding::Mass { .. }))
            .expect("some planned mass");
        let (lat, _) = plan.lesion.unwrap();
        let with = render_view(plan, lat, &View::Cc);
        let saved = plan.lesion.take();
        let without = render_view(plan, lat, &View::Cc);
        let diff: i64 = with
            .iter()
            .zip(&without)
            .map(|(a, b)| *a as i64 - *b as i64)
            .sum();
        assert!(diff > 0, "the mass adds intensity");
        plan.lesion = saved;
        let other = if lat == Laterality::L {
            Laterality::R
        } else {
            Laterality::L
        };
        assert_eq!(plan.view_label(other), 0);
        assert_eq!(plan.view_label(lat), 1);
    }

    #[test]
    fn chest_wall_side_follows_laterality() {
        let plan = &plan_studies(1, 3, 0.0, 128, 104, &["X"])[0];
        let l = render_view(plan, Laterality::L, &View::Cc);
        let mean_col =
            |img: &[u16], x: usize| (0..128).map(|y| img[y * 104 + x] as f64).sum::<f64>();
        assert!(mean_col(&l, 1) > mean_col(&l, 102));
        let r = render_view(plan, Laterality::R, &View::Cc);
        assert!(mean_col(&r, 102) > mean_col(&r, 1));
    }
}
