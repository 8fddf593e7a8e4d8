//! Drift watch: per imaging center and week, the share of urgent, low and untriaged
//! studies and the mean study score, against the other centers of the program in the
//! same week. A changed modality setting (another VOI, raw data sent for presentation,
//! a new detector) can turn a whole center urgent or untriaged; the coordinator sees
//! it flagged in the summary and in the metrics long before the recall rate shows it.
//!
//! The program's typical week is the median over the centers with at least
//! `min_studies` studies (robust to the one center that drifted, unlike a pooled
//! share). A center of that size is flagged when one of its shares differs from the
//! median by more than `max_share_gap` and by more than three standard errors of a
//! proportion of its size (so small centers are not flagged by chance; the median is
//! pulled off 0 and 1 for the error, so one event among a few studies is no drift), or its mean
//! score by more than `max_score_gap` and three standard errors. With two centers the
//! median cannot tell which one changed, and both are flagged.

use serde::{Deserialize, Serialize};

/// `[drift]` of `pipeline.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Weeks of history in the summary (the first is the last 7 days).
    pub weeks: u32,
    /// A center-week with fewer studies is reported but never flagged.
    pub min_studies: i64,
    pub max_share_gap: f64,
    pub max_score_gap: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            weeks: 4,
            min_studies: 30,
            max_share_gap: 0.15,
            max_score_gap: 0.15,
        }
    }
}

/// One imaging center's worklist items of one week, by priority, with score sums.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub studies: i64,
    pub urgent: i64,
    pub low: i64,
    pub untriaged: i64,
    /// Over the scored studies.
    pub scored: i64,
    pub score_sum: f64,
    pub score_sq_sum: f64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.studies += other.studies;
        self.urgent += other.urgent;
        self.low += other.low;
        self.untriaged += other.untriaged;
        self.scored += other.scored;
        self.score_sum += other.score_sum;
        self.score_sq_sum += other.score_sq_sum;
    }
    fn share(&self, n: i64) -> f64 {
        if self.studies == 0 {
            0.0
        } else {
            n as f64 / self.studies as f64
        }
    }
    fn mean_score(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.score_sum / self.scored as f64)
    }
    fn score_var(&self) -> f64 {
        match self.mean_score() {
            Some(m) => (self.score_sq_sum / self.scored as f64 - m * m).max(0.0),
            None => 0.0,
        }
    }
}

/// One imaging center's week as the summary shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CenterWeek {
    pub center: String,
    /// Start of the week (epoch ms); the first week ends now.
    pub week_start_ms: i64,
    pub studies: i64,
    pub urgent_share: f64,
    pub low_share: f64,
    pub untriaged_share: f64,
    pub mean_score: Option<f64>,
    pub drifting: bool,
    /// What differs, e.g. "untriaged 100% vs 0% at the other centers".
    pub reasons: Vec<String>,
}

/// The program's typical center-week: medians over the centers large enough.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub urgent: f64,
    pub low: f64,
    pub untriaged: f64,
    pub mean_score: Option<f64>,
    /// Pooled variance of the study scores.
    pub score_var: f64,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

impl Baseline {
    /// `None` when no center is large enough.
    pub fn of(tallies: &[&Tally]) -> Option<Baseline> {
        let share = |f: fn(&Tally) -> i64| median(tallies.iter().map(|t| t.share(f(t))).collect());
        let mut pooled = Tally::default();
        for t in tallies {
            pooled.add(t);
        }
        Some(Baseline {
            urgent: share(|t| t.urgent)?,
            low: share(|t| t.low)?,
            untriaged: share(|t| t.untriaged)?,
            mean_score: median(tallies.iter().filter_map(|t| t.mean_score()).collect()),
            score_var: pooled.score_var(),
        })
    }
}

/// One center's week against the program's baseline under `cfg`.
pub fn compare(
    center: &str,
    week_start_ms: i64,
    own: &Tally,
    baseline: Option<&Baseline>,
    cfg: &DriftConfig,
) -> CenterWeek {
    let mut reasons = Vec::new();
    if let (Some(b), true) = (baseline, own.studies >= cfg.min_studies) {
        let n = own.studies as f64;
        for (name, a, q) in [
            ("urgent", own.urgent, b.urgent),
            ("low", own.low, b.low),
            ("untriaged", own.untriaged, b.untriaged),
        ] {
            let p = own.share(a);
            // The binomial standard error at the median, pulled off 0 and 1 (Laplace)
            // so that one event in a few studies is not a drift.
            let q_smooth = (q * n + 1.0) / (n + 2.0);
            let se = (q_smooth * (1.0 - q_smooth) / n).sqrt();
            if (p - q).abs() > cfg.max_share_gap.max(3.0 * se) {
                reasons.push(format!(
                    "{name} {:.0}% vs {:.0}% program median",
                    p * 100.0,
                    q * 100.0
                ));
            }
        }
        if let (Some(m), Some(base)) = (own.mean_score(), b.mean_score) {
            let se = (b.score_var / own.scored.max(1) as f64).sqrt();
            if (m - base).abs() > cfg.max_score_gap.max(3.0 * se) {
                reasons.push(format!("mean score {m:.2} vs {base:.2} program median"));
            }
        }
    }
    CenterWeek {
        center: center.to_owned(),
        week_start_ms,
        studies: own.studies,
        urgent_share: own.share(own.urgent),
        low_share: own.share(own.low),
        untriaged_share: own.share(own.untriaged),
        mean_score: own.mean_score(),
        drifting: !reasons.is_empty(),
        reasons,
    }
}

/// Every center of one week against the program's baseline.
pub fn compare_week(
    week_start_ms: i64,
    tallies: &[(String, Tally)],
    cfg: &DriftConfig,
) -> Vec<CenterWeek> {
    let large: Vec<&Tally> = tallies
        .iter()
        .map(|(_, t)| t)
        .filter(|t| t.studies >= cfg.min_studies)
        .collect();
    let baseline = Baseline::of(&large);
    tallies
        .iter()
        .map(|(center, own)| compare(center, week_start_ms, own, baseline.as_ref(), cfg))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(studies: i64, urgent: i64, low: i64, untriaged: i64, mean: f64) -> Tally {
        let scored = studies - untriaged;
        Tally {
            studies,
            urgent,
            low,
            untriaged,
            scored,
            score_sum: mean * scored as f64,
            score_sq_sum: (mean * mean + 0.01) * scored as f64,
        }
    }

    #[test]
    fn a_center_turned_urgent_is_flagged_and_its_neighbours_are_not() {
        let cfg = DriftConfig::default();
        let week = compare_week(
            0,
            &[
                ("a".into(), tally(200, 30, 100, 2, 0.30)),
                ("b".into(), tally(180, 170, 0, 1, 0.90)),
                ("c".into(), tally(220, 35, 110, 3, 0.31)),
            ],
            &cfg,
        );
        assert!(!week[0].drifting, "{:?}", week[0]);
        assert!(!week[2].drifting, "{:?}", week[2]);
        assert_eq!(
            week[1].reasons,
            [
                "urgent 94% vs 16% program median",
                "low 0% vs 50% program median",
                "mean score 0.90 vs 0.31 program median"
            ]
        );
    }

    #[test]
    fn small_centers_and_small_gaps_are_not_flagged() {
        let cfg = DriftConfig::default();
        let others = tally(400, 60, 200, 4, 0.3);
        let b = Baseline::of(&[&others]);
        // 10 points more urgent: within the gap.
        assert!(!compare("a", 0, &tally(200, 50, 90, 2, 0.33), b.as_ref(), &cfg).drifting);
        // All urgent but only 10 studies: below min_studies.
        assert!(!compare("a", 0, &tally(10, 10, 0, 0, 0.9), b.as_ref(), &cfg).drifting);
        // 19 points more untriaged at 40 studies: flagged (3 SE of 1% is ~5 points).
        let w = compare("a", 0, &tally(40, 6, 16, 8, 0.3), b.as_ref(), &cfg);
        assert_eq!(w.reasons, ["untriaged 20% vs 1% program median"]);
        // No center large enough: nothing to compare with.
        assert!(Baseline::of(&[]).is_none());
    }
}
