//! `tamiz evaluate DIR`: the pipeline's own preprocessing and inference over a
//! labelled folder (DICOM files under DIR and `DIR/labels.csv` with at least the
//! columns `study_uid,label`, label 1 = cancer), reporting AUC and, per priority
//! class, the share of studies and of cancers it receives. The AUC in the model card
//! comes from here.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::catalog::StoredInstance;
use crate::config::{Limits, TriageConfig};
use crate::dicom::meta::extract;
use crate::model::Model;
use crate::triage::{classify, Priority};
use crate::views::select;
use crate::worker::{name_scores, prepare_batch};

/// Per-study result of an evaluation.
#[derive(Debug, Clone)]
pub struct StudyScore {
    pub study_uid: String,
    pub label: u8,
    pub score: f32,
    pub priority: Priority,
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    pub studies: Vec<StudyScore>,
    pub auc: f64,
    pub views: usize,
    pub ms_per_view: f64,
}

/// Area under the ROC curve by the Mann–Whitney statistic (ties count one half).
pub fn auc(scores: &[(f32, u8)]) -> f64 {
    let pos: Vec<f32> = scores.iter().filter(|s| s.1 == 1).map(|s| s.0).collect();
    let neg: Vec<f32> = scores.iter().filter(|s| s.1 == 0).map(|s| s.0).collect();
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut wins = 0.0f64;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

/// Reads `labels.csv`: a header naming `study_uid` and `label`; other columns ignored.
pub fn read_labels(path: &Path) -> anyhow::Result<HashMap<String, u8>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let (Some(si), Some(li)) = (
        header.iter().position(|h| *h == "study_uid"),
        header.iter().position(|h| *h == "label"),
    ) else {
        bail!(
            "{}: the header must name the columns study_uid and label",
            path.display()
        );
    };
    let mut labels = HashMap::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let (Some(uid), Some(label)) = (cols.get(si), cols.get(li)) else {
            bail!("{}:{}: missing study_uid or label", path.display(), n + 2);
        };
        let label = match *label {
            "0" => 0,
            "1" => 1,
            other => bail!(
                "{}:{}: label must be 0 or 1, got `{other}`",
                path.display(),
                n + 2
            ),
        };
        labels.insert(uid.to_string(), label);
    }
    Ok(labels)
}

/// Scores every labelled study found under `dir`.
pub fn evaluate(
    dir: &Path,
    model: &Model,
    triage_cfg: &TriageConfig,
) -> anyhow::Result<Evaluation> {
    let labels = read_labels(&dir.join("labels.csv"))?;
    let files = crate::upload::collect_files(&[dir.to_owned()])?;
    let limits = Limits {
        max_rows: 16384,
        max_columns: 16384,
        ..Limits::default()
    };
    let mut by_study: BTreeMap<String, Vec<StoredInstance>> = BTreeMap::new();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "dcm"))
    {
        let obj =
            dicom_object::open_file(f).with_context(|| format!("{}: not readable", f.display()))?;
        let meta = extract(&obj, &limits).with_context(|| format!("{}", f.display()))?;
        if !labels.contains_key(&meta.study_uid) {
            continue;
        }
        by_study
            .entry(meta.study_uid.clone())
            .or_default()
            .push(StoredInstance::from_meta(&meta, f.display().to_string(), 0));
    }
    if by_study.is_empty() {
        bail!(
            "no DICOM file under {} belongs to a study in labels.csv",
            dir.display()
        );
    }
    let spec = model.card.preprocess.clone();
    let mut studies = Vec::new();
    let (mut views, mut infer_time) = (0usize, 0f64);
    for (uid, instances) in by_study {
        let selection = select(&instances, &model.card.input);
        if let Some(why) = selection.refusal {
            bail!("study {uid} cannot be scored: {why}");
        }
        let picked = selection.scored;
        let views_bytes = picked
            .iter()
            .map(|v| Ok((v.clone(), std::fs::read(&v.object_key)?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let batch = prepare_batch(&views_bytes, &spec, crate::parallel::threads())
            .map_err(|e| anyhow::anyhow!("study {uid}: {e}"))?;
        let t0 = Instant::now();
        let scores = model.infer_blocking(batch, picked.len())?;
        infer_time += t0.elapsed().as_secs_f64();
        views += picked.len();
        let vs = name_scores(&picked, scores);
        let t = classify(
            &vs,
            &selection.missing,
            &model.card.operating_points,
            triage_cfg,
            0,
        );
        studies.push(StudyScore {
            label: labels[&uid],
            study_uid: uid,
            score: t.score.unwrap_or(0.0),
            priority: t.priority,
        });
    }
    let pairs: Vec<(f32, u8)> = studies.iter().map(|s| (s.score, s.label)).collect();
    Ok(Evaluation {
        auc: auc(&pairs),
        ms_per_view: infer_time * 1000.0 / views.max(1) as f64,
        views,
        studies,
    })
}

/// The report printed by `tamiz evaluate`.
pub fn report(e: &Evaluation, model: &Model) -> String {
    let n = e.studies.len();
    let cancers = e.studies.iter().filter(|s| s.label == 1).count();
    let ops = model.card.operating_points;
    let mut out = format!(
        "model {} ({})\n{n} studies ({cancers} with cancer), {} views, inference {:.1} ms per view\nAUC (study level): {:.3}\n\n",
        model.card.version_key(),
        model.card.notice,
        e.views,
        e.ms_per_view,
        e.auc
    );
    out.push_str(&format!(
        "operating points: urgent >= {}, low < {}\n",
        ops.urgent, ops.low
    ));
    out.push_str(&format!(
        "{:<10} {:>8} {:>9} {:>8} {:>12}\n",
        "class", "studies", "share", "cancers", "sensitivity"
    ));
    for p in [Priority::Urgent, Priority::Routine, Priority::Low] {
        let in_class: Vec<&StudyScore> = e.studies.iter().filter(|s| s.priority == p).collect();
        let c = in_class.iter().filter(|s| s.label == 1).count();
        out.push_str(&format!(
            "{:<10} {:>8} {:>8.1}% {:>8} {:>11.1}%\n",
            p.as_str(),
            in_class.len(),
            100.0 * in_class.len() as f64 / n.max(1) as f64,
            c,
            100.0 * c as f64 / cancers.max(1) as f64
        ));
    }
    let at_least_routine = e
        .studies
        .iter()
        .filter(|s| s.label == 1 && s.priority != Priority::Low)
        .count();
    out.push_str(&format!(
        "sensitivity at the low operating point (cancers not classed low): {:.1}%\n",
        100.0 * at_least_routine as f64 / cancers.max(1) as f64
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand() {
        assert_eq!(auc(&[(0.9, 1), (0.1, 0)]), 1.0);
        assert_eq!(auc(&[(0.1, 1), (0.9, 0)]), 0.0);
        assert_eq!(auc(&[(0.5, 1), (0.5, 0)]), 0.5);
        // 2 pos x 2 neg: pairs won 3 of 4
        assert_eq!(auc(&[(0.8, 1), (0.4, 1), (0.5, 0), (0.1, 0)]), 0.75);
    }

    #[test]
    fn labels_csv_with_extra_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.csv");
        std::fs::write(&p, "finding,study_uid,label\nmass,1.2.3,1\nnone,1.2.4,0\n").unwrap();
        let l = read_labels(&p).unwrap();
        assert_eq!((l["1.2.3"], l["1.2.4"]), (1, 0));
        std::fs::write(&p, "uid,label\n1,1\n").unwrap();
        assert!(read_labels(&p)
            .unwrap_err()
            .to_string()
            .contains("study_uid"));
    }
}
