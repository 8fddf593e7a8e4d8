//! Synthetic data sets on disk: `tamiz synth` (DICOM files + `labels.csv`, for the
//! demo and `tamiz evaluate`) and `tamiz dataset` (preprocessed training tensors as
//! `.npy`, made by the pipeline's own decode and preprocessing code).

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::model::ModelCard;
use crate::parallel::{parallel_map, threads};
use crate::synth::{
    assign_variants, plan_studies, random_uid, study_objects, write_study, Finding, StudyPlan,
    Variant,
};
use crate::worker::prepare_object;

/// Synthetic matrix for demo, training and evaluation: half the detector resolution of
/// a 4096×3328 system (0.117 mm pixels over 240 mm).
pub const SYNTH_ROWS: usize = 2048;
pub const SYNTH_COLUMNS: usize = 1664;

fn finding_name(p: &StudyPlan) -> &'static str {
    match p.finding() {
        Finding::Normal => "normal",
        Finding::Mass { spiculated: false } => "mass",
        Finding::Mass { spiculated: true } => "spiculated-mass",
        Finding::Calcifications => "calcifications",
    }
}

/// Writes `n` synthetic studies as DICOM files under `out/{study_uid}/` and
/// `out/labels.csv` (`study_uid,label,finding,breast,variant`); with `variants`, each
/// study is written once in every vendor convention of [`Variant`] (a paired design:
/// the same breasts in each, under new study UIDs), so per-variant results differ
/// only by how the images are stored.
pub fn write_synthetic(
    out: &Path,
    n: usize,
    seed: u64,
    cancer_fraction: f64,
    variants: bool,
) -> anyhow::Result<Vec<StudyPlan>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut plans = plan_studies(
        n,
        seed,
        cancer_fraction,
        SYNTH_ROWS,
        SYNTH_COLUMNS,
        &["SYNTHETIC"],
    );
    if variants {
        plans = in_every_variant(&plans, seed);
    }
    write_labelled(out, &plans)?;
    Ok(plans)
}

/// Each plan once per [`Variant`], the copies under new study UIDs.
pub fn in_every_variant(plans: &[StudyPlan], seed: u64) -> Vec<StudyPlan> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x07A2_1A27);
    plans
        .iter()
        .flat_map(|p| {
            Variant::ALL.into_iter().map(|variant| StudyPlan {
                variant,
                ..p.clone()
            })
        })
        .map(|mut p| {
            p.study_uid = random_uid(&mut rng);
            p
        })
        .collect()
}

/// Writes `plans` as DICOM files under `out/{study_uid}/` and their `labels.csv`.
pub fn write_labelled(out: &Path, plans: &[StudyPlan]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for r in parallel_map(plans, threads(), |p| write_study(p, out)) {
        r?;
    }
    let mut csv = String::from("study_uid,label,finding,breast,variant\n");
    for p in plans {
        let breast = p.lesion.map(|(l, _)| l.as_str()).unwrap_or("");
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            p.study_uid,
            p.label(),
            finding_name(p),
            breast,
            p.variant.as_str()
        ));
    }
    std::fs::write(out.join("labels.csv"), csv)?;
    Ok(())
}

/// Header of a NumPy `.npy` v1.0 file (little-endian, C order).
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - total % 64) % 64));
    dict.push('\n');
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h
}

/// Writes `x.npy` ([views,1,H,W] float32), `y.npy` ([views] float32, lesion visible in
/// the view) and `study.npy` ([views] int64) for `n` synthetic studies.
/// With `variants`, the studies take every For Presentation convention in turn.
pub fn write_training_set(
    out: &Path,
    n: usize,
    seed: u64,
    card: &ModelCard,
    variants: bool,
) -> anyhow::Result<()> {
    let spec = &card.preprocess;
    std::fs::create_dir_all(out)?;
    let mut plans = plan_studies(n, seed, 0.5, SYNTH_ROWS, SYNTH_COLUMNS, &["SYNTHETIC"]);
    if variants {
        assign_variants(&mut plans, false);
    }
    let views = n * 4;
    let mut x = BufWriter::new(std::fs::File::create(out.join("x.npy"))?);
    x.write_all(&npy_header("<f4", &[views, 1, spec.height, spec.width]))?;
    let mut y = Vec::with_capacity(views);
    let mut study = Vec::with_capacity(views);
    // Bounded memory: render a few studies at a time on all cores, then stream out.
    for (ci, chunk) in plans.chunks(threads() * 2).enumerate() {
        let tensors = parallel_map(
            chunk,
            threads(),
            |p| -> anyhow::Result<Vec<(u8, Vec<f32>)>> {
                study_objects(p)
                    .into_iter()
                    .map(|(lat, view, obj)| {
                        // A training view the checks refuse is a generator bug: the
                        // model must train only on what it will be shown.
                        let tensor = prepare_object(&obj, card).map_err(|e| {
                            anyhow::anyhow!("{}-{} {e}", lat.as_str(), view.as_str())
                        })?;
                        Ok((p.view_label(lat), tensor))
                    })
                    .collect()
            },
        );
        for (si, t) in tensors.into_iter().enumerate() {
            for (label, tensor) in t? {
                for v in tensor {
                    x.write_all(&v.to_le_bytes())?;
                }
                y.push(label as f32);
                study.push((ci * threads() * 2 + si) as i64);
            }
        }
    }
    x.flush()?;
    let mut yf = npy_header("<f4", &[views]);
    yf.extend(y.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(out.join("y.npy"), yf)?;
    let mut sf = npy_header("<i8", &[views]);
    sf.extend(study.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(out.join("study.npy"), sf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_readable() {
        let h = npy_header("<f4", &[3, 1, 4, 5]);
        assert_eq!(h.len() % 64, 0);
        let text = String::from_utf8_lossy(&h[10..]);
        assert!(text.contains("'shape': (3, 1, 4, 5)"), "{text}");
        assert!(npy_header("<i8", &[7]).windows(4).any(|w| w == b"(7,)"));
    }
}
