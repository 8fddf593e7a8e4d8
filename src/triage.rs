//! Scores → priority class and due time.
//!
//! Per view the model gives a suspicion score; a breast is as suspicious as its most
//! suspicious view, a study as its most suspicious breast. The model card's operating
//! points turn the study score into a class; `pipeline.toml` gives each class its due
//! time. The AI only orders the queue: every class, untriaged included, has a due time
//! and stays on the worklist.

use serde::Serialize;

use crate::config::TriageConfig;
use crate::dicom::Laterality;
use crate::model::OperatingPoints;

pub const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Urgent,
    Routine,
    /// The model could not score the study; read like routine.
    Untriaged,
    Low,
}

impl Priority {
    /// Worklist order: lower is read first. Untriaged studies sit with routine ones
    /// and are ordered by due time, never behind low-suspicion studies.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Urgent => 0,
            Priority::Routine | Priority::Untriaged => 1,
            Priority::Low => 2,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::Routine => "routine",
            Priority::Untriaged => "untriaged",
            Priority::Low => "low",
        }
    }
    pub fn parse(s: &str) -> Option<Priority> {
        Some(match s {
            "urgent" => Priority::Urgent,
            "routine" => Priority::Routine,
            "untriaged" => Priority::Untriaged,
            "low" => Priority::Low,
            _ => return None,
        })
    }
    /// When a study of this class received at `received_ms` must be read by.
    pub fn due_ms(self, cfg: &TriageConfig, received_ms: i64) -> i64 {
        received_ms + self.days(cfg) as i64 * DAY_MS
    }
    fn days(self, cfg: &TriageConfig) -> u32 {
        match self {
            Priority::Urgent => cfg.urgent_days,
            Priority::Routine | Priority::Untriaged => cfg.routine_days,
            Priority::Low => cfg.low_days,
        }
    }
}

/// Why a study went out untriaged, for the counts in the summary and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UntriagedCause {
    /// View selection found no image the model may score (For Processing only,
    /// implant without displaced views, no screening view).
    ViewSelection,
    /// A view failed the model card's input checks.
    InputCheck,
    /// A view could not be decoded.
    Unreadable,
    /// Storage, catalog or model trouble outlasted the retries.
    GaveUp,
}

impl UntriagedCause {
    pub const ALL: [UntriagedCause; 4] = [
        UntriagedCause::ViewSelection,
        UntriagedCause::InputCheck,
        UntriagedCause::Unreadable,
        UntriagedCause::GaveUp,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            UntriagedCause::ViewSelection => "view_selection",
            UntriagedCause::InputCheck => "input_check",
            UntriagedCause::Unreadable => "unreadable",
            UntriagedCause::GaveUp => "gave_up",
        }
    }
}

/// One scored view.
#[derive(Debug, Clone, Serialize)]
pub struct ViewScore {
    pub laterality: String,
    pub view: String,
    /// The image scored (view selection picks one per view).
    pub sop_uid: String,
    pub score: f32,
}

/// The outcome of triage for one study.
#[derive(Debug, Clone, PartialEq)]
pub struct Triage {
    pub priority: Priority,
    pub score: Option<f32>,
    pub left: Option<f32>,
    pub right: Option<f32>,
    pub due_ms: i64,
    pub reason: String,
    /// Set when the study is untriaged.
    pub cause: Option<UntriagedCause>,
}

fn breast_score(scores: &[ViewScore], lat: Laterality) -> Option<f32> {
    scores
        .iter()
        .filter(|s| s.laterality == lat.as_str())
        .map(|s| s.score)
        .reduce(f32::max)
}

/// Classifies a scored study. `missing` names the screening views that were absent:
/// a study read on fewer views is never classed low, since a missing view could hide
/// the finding.
pub fn classify(
    scores: &[ViewScore],
    missing: &[String],
    ops: &OperatingPoints,
    cfg: &TriageConfig,
    received_ms: i64,
) -> Triage {
    let left = breast_score(scores, Laterality::L);
    let right = breast_score(scores, Laterality::R);
    let Some(score) = left.into_iter().chain(right).reduce(f32::max) else {
        return untriaged(
            UntriagedCause::ViewSelection,
            "no view could be scored".into(),
            cfg,
            received_ms,
        );
    };
    let mut priority = if score >= ops.urgent {
        Priority::Urgent
    } else if score < ops.low {
        Priority::Low
    } else {
        Priority::Routine
    };
    let mut reason = format!(
        "study score {score:.3} ({} at urgent >= {}, low < {})",
        priority.as_str(),
        ops.urgent,
        ops.low
    );
    if !missing.is_empty() {
        reason.push_str(&format!(
            "; incomplete study, missing {}",
            missing.join(", ")
        ));
        if priority == Priority::Low {
            priority = Priority::Routine;
            reason.push_str("; raised to routine");
        }
    }
    Triage {
        priority,
        score: Some(score),
        left,
        right,
        due_ms: received_ms + priority.days(cfg) as i64 * DAY_MS,
        reason,
        cause: None,
    }
}

/// A study the model could not score: routine due time, visible reason.
pub fn untriaged(
    cause: UntriagedCause,
    reason: String,
    cfg: &TriageConfig,
    received_ms: i64,
) -> Triage {
    Triage {
        priority: Priority::Untriaged,
        score: None,
        left: None,
        right: None,
        due_ms: received_ms + Priority::Untriaged.days(cfg) as i64 * DAY_MS,
        reason: format!("untriaged: {reason}"),
        cause: Some(cause),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(l: &str, v: &str, s: f32) -> ViewScore {
        ViewScore {
            laterality: l.into(),
            view: v.into(),
            sop_uid: format!("{l}-{v}"),
            score: s,
        }
    }
    const OPS: OperatingPoints = OperatingPoints {
        urgent: 0.6,
        low: 0.1,
    };

    #[test]
    fn study_score_is_max_of_breasts() {
        let cfg = TriageConfig::default();
        let s = [
            vs("L", "CC", 0.2),
            vs("L", "MLO", 0.7),
            vs("R", "CC", 0.05),
            vs("R", "MLO", 0.01),
        ];
        let t = classify(&s, &[], &OPS, &cfg, 0);
        assert_eq!(t.priority, Priority::Urgent);
        assert_eq!(
            (t.left, t.right, t.score),
            (Some(0.7), Some(0.05), Some(0.7))
        );
        assert_eq!(t.due_ms, 2 * DAY_MS);
    }

    #[test]
    fn classes_and_due_times() {
        let cfg = TriageConfig {
            urgent_days: 2,
            routine_days: 7,
            low_days: 10,
        };
        let low = classify(&[vs("R", "CC", 0.05)], &[], &OPS, &cfg, 1000);
        assert_eq!(
            (low.priority, low.due_ms),
            (Priority::Low, 1000 + 10 * DAY_MS)
        );
        let routine = classify(&[vs("R", "CC", 0.3)], &[], &OPS, &cfg, 0);
        assert_eq!(routine.priority, Priority::Routine);
    }

    #[test]
    fn incomplete_study_is_never_low() {
        let cfg = TriageConfig::default();
        let t = classify(&[vs("R", "CC", 0.01)], &["L-CC".into()], &OPS, &cfg, 0);
        assert_eq!(t.priority, Priority::Routine);
        assert!(t.reason.contains("missing L-CC"), "{}", t.reason);
    }

    #[test]
    fn untriaged_keeps_a_routine_due_time() {
        let cfg = TriageConfig::default();
        let t = untriaged(UntriagedCause::Unreadable, "decode failed".into(), &cfg, 0);
        assert_eq!(t.priority.rank(), Priority::Routine.rank());
        assert_eq!(t.due_ms, 7 * DAY_MS);
        assert!(t.reason.starts_with("untriaged: decode failed"));
    }
}
