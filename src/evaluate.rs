//! `tamiz evaluate DIR`: the pipeline's own preprocessing and inference over a
//! labelled folder (DICOM files under DIR and `DIR/labels.csv` with at least the
//! columns `study_uid,label`, label 1 = cancer), reporting AUC and, per priority
//! class, the share of studies and of cancers it receives. The AUC in the model card
//! comes from here. A study the pipeline would send out untriaged (view selection or
//! input checks refuse it) is counted as such, not scored. `--by COLUMN` breaks the
//! results down by any other column of `labels.csv` (e.g. the synthetic `variant`).

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
use crate::worker::{name_scores, prepare_batch, StudyError};

/// Per-study result of an evaluation.
#[derive(Debug, Clone)]
pub struct StudyScore {
    pub study_uid: String,
    pub label: u8,
    /// `None` when the study went out untriaged.
    pub score: Option<f32>,
    pub priority: Priority,
    /// Its value in the `--by` column.
    pub group: Option<String>,
}

/// The results of one value of the `--by` column.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupResult {
    pub name: String,
    pub studies: usize,
    pub cancers: usize,
    pub untriaged: usize,
    /// Over the scored studies; NaN without both classes.
    pub auc: f64,
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    pub studies: Vec<StudyScore>,
    /// Over the scored studies.
    pub auc: f64,
    pub views: usize,
    pub ms_per_view: f64,
    /// Per value of the `--by` column, in name order (empty without `--by`).
    pub groups: Vec<GroupResult>,
}

/// AUC over the scored studies among `studies`.
fn scored_auc<'a>(studies: impl Iterator<Item = &'a StudyScore>) -> f64 {
    let pairs: Vec<(f32, u8)> = studies
        .filter_map(|s| s.score.map(|v| (v, s.label)))
        .collect();
    auc(&pairs)
}

/// A study's label and its value in the `--by` column.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub label: u8,
    pub group: Option<String>,
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

/// Reads `labels.csv`: a header naming `study_uid` and `label`, and `by` when given;
/// other columns ignored.
pub fn read_labels(path: &Path, by: Option<&str>) -> anyhow::Result<HashMap<String, Label>> {
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
    let gi = match by {
        Some(column) => Some(header.iter().position(|h| *h == column).with_context(|| {
            format!(
                "{}: no column `{column}` to break the results down by (columns: {})",
                path.display(),
                header.join(", ")
            )
        })?),
        None => None,
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
        let group = gi.map(|i| cols.get(i).copied().unwrap_or_default().to_owned());
        labels.insert(uid.to_string(), Label { label, group });
    }
    Ok(labels)
}

/// Scores every labelled study found under `dir`.
pub fn evaluate(
    dir: &Path,
    model: &Model,
    triage_cfg: &TriageConfig,
    by: Option<&str>,
) -> anyhow::Result<Evaluation> {
    let labels = read_labels(&dir.join("labels.csv"), by)?;
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
    let mut studies = Vec::new();
    let (mut views, mut infer_time) = (0usize, 0f64);
    for (uid, instances) in by_study {
        let label = labels[&uid].clone();
        let untriaged = |studies: &mut Vec<StudyScore>| {
            studies.push(StudyScore {
                study_uid: uid.clone(),
                label: label.label,
                score: None,
                priority: Priority::Untriaged,
                group: label.group.clone(),
            })
        };
        let selection = select(&instances, &model.card.input);
        if selection.refusal.is_some() {
            untriaged(&mut studies);
            continue;
        }
        let picked = selection.scored;
        let views_bytes = picked
            .iter()
            .map(|v| Ok((v.clone(), std::fs::read(&v.object_key)?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let batch = match prepare_batch(&views_bytes, &model.card, crate::parallel::threads()) {
            Ok(b) => b,
            Err(StudyError::Permanent { .. }) => {
                untriaged(&mut studies);
                continue;
            }
            Err(e) => bail!("study {uid}: {e}"),
        };
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
            study_uid: uid,
            label: label.label,
            score: t.score,
            priority: t.priority,
            group: label.group,
        });
    }
    let mut by_group: BTreeMap<&str, Vec<&StudyScore>> = BTreeMap::new();
    for s in &studies {
        if let Some(g) = &s.group {
            by_group.entry(g).or_default().push(s);
        }
    }
    let groups = by_group
        .into_iter()
        .map(|(name, members)| GroupResult {
            name: name.to_owned(),
            studies: members.len(),
            cancers: members.iter().filter(|s| s.label == 1).count(),
            untriaged: members.iter().filter(|s| s.score.is_none()).count(),
            auc: scored_auc(members.into_iter()),
        })
        .collect();
    Ok(Evaluation {
        auc: scored_auc(studies.iter()),
        ms_per_view: infer_time * 1000.0 / views.max(1) as f64,
        views,
        studies,
        groups,
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
    let untriaged: Vec<&StudyScore> = e.studies.iter().filter(|s| s.score.is_none()).collect();
    out.push_str(&format!(
        "{:<10} {:>8} {:>8.1}% {:>8}   (not scored: view selection or input checks refused them)\n",
        "untriaged",
        untriaged.len(),
        100.0 * untriaged.len() as f64 / n.max(1) as f64,
        untriaged.iter().filter(|s| s.label == 1).count(),
    ));
    let at_least_routine = e
        .studies
        .iter()
        .filter(|s| s.label == 1 && s.priority != Priority::Low)
        .count();
    out.push_str(&format!(
        "sensitivity at the low operating point (cancers not classed low): {:.1}%\n",
        100.0 * at_least_routine as f64 / cancers.max(1) as f64
    ));
    if !e.groups.is_empty() {
        out.push_str(&format!(
            "\n{:<24} {:>8} {:>8} {:>10} {:>8}\n",
            "group", "studies", "cancers", "untriaged", "AUC"
        ));
        for g in &e.groups {
            out.push_str(&format!(
                "{:<24} {:>8} {:>8} {:>10} {:>8.3}\n",
                g.name, g.studies, g.cancers, g.untriaged, g.auc
            ));
        }
        let worst = e
            .groups
            .iter()
            .filter(|g| !g.auc.is_nan())
            .min_by(|a, b| a.auc.total_cmp(&b.auc));
        if let Some(w) = worst {
            out.push_str(&format!(
                "worst group: {} (AUC {:.3}, {:+.3} from the overall {:.3})\n",
                w.name,
                w.auc,
                w.auc - e.auc,
                e.auc
            ));
        }
    }
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
        let l = read_labels(&p, None).unwrap();
        assert_eq!((l["1.2.3"].label, l["1.2.4"].label), (1, 0));
        let by = read_labels(&p, Some("finding")).unwrap();
        assert_eq!(by["1.2.3"].group.as_deref(), Some("mass"));
        assert_eq!(
            read_labels(&p, Some("variant")).unwrap_err().to_string(),
            format!(
                "{}: no column `variant` to break the results down by (columns: finding, study_uid, label)",
                p.display()
            )
        );
        std::fs::write(&p, "uid,label\n1,1\n").unwrap();
        assert!(read_labels(&p, None)
            .unwrap_err()
            .to_string()
            .contains("study_uid"));
    }
}
