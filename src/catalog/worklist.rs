//! Worklists, claims, readings, study status and the coordinator's summary.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{Catalog, CatalogError, Result};
use crate::triage::{Priority, Triage, ViewScore};

/// A worklist item about to be created for a study.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub center: String,
    pub triage: Triage,
    pub view_scores: Vec<ViewScore>,
    pub model_version: Option<String>,
    /// Triage reason and routing reason, for the radiologist and the coordinator.
    pub reason: String,
}

impl NewItem {
    /// Inserts the item unless the study already has one (a study is on exactly one
    /// worklist, whatever retried or raced).
    pub(super) async fn insert(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        study_uid: &str,
        now_ms: i64,
    ) -> Result<()> {
        let t = &self.triage;
        let view_scores = (!self.view_scores.is_empty())
            .then(|| serde_json::to_string(&self.view_scores).unwrap_or_default());
        sqlx::query(
            "INSERT INTO worklist_items (study_uid, center_id, priority, priority_rank, triaged, score, score_left,
                 score_right, view_scores, model_version, due_ms, reason, state, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'queued', $13)
             ON CONFLICT (study_uid) DO NOTHING",
        )
        .bind(study_uid)
        .bind(&self.center)
        .bind(t.priority.as_str())
        .bind(t.priority.rank())
        .bind(t.score.is_some())
        .bind(t.score)
        .bind(t.left)
        .bind(t.right)
        .bind(view_scores)
        .bind(&self.model_version)
        .bind(t.due_ms)
        .bind(&self.reason)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// One row of a radiologist's worklist.
#[derive(Debug, Clone, Serialize)]
pub struct WorklistItem {
    pub id: i64,
    pub study_uid: String,
    pub center: String,
    pub priority: String,
    pub triaged: bool,
    pub score: Option<f64>,
    pub score_left: Option<f64>,
    pub score_right: Option<f64>,
    pub due_ms: i64,
    pub reason: String,
    pub state: String,
    pub claimed_by: Option<String>,
}

/// The item a radiologist just claimed, with what is needed to open the study.
pub type ClaimedItem = WorklistItem;

const ITEM_COLUMNS: &str =
    "id, study_uid, center_id, priority, triaged, score, score_left, score_right, due_ms, reason, state, claimed_by";

fn item(r: &SqliteRow) -> Result<WorklistItem> {
    Ok(WorklistItem {
        id: r.try_get("id")?,
        study_uid: r.try_get("study_uid")?,
        center: r.try_get("center_id")?,
        priority: r.try_get("priority")?,
        triaged: r.try_get("triaged")?,
        score: r.try_get("score")?,
        score_left: r.try_get("score_left")?,
        score_right: r.try_get("score_right")?,
        due_ms: r.try_get("due_ms")?,
        reason: r.try_get("reason")?,
        state: r.try_get("state")?,
        claimed_by: r.try_get("claimed_by")?,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub radiologist: String,
    pub birads: i64,
    pub density: String,
    pub created_ms: i64,
}

/// Everything the status endpoint reports about a study.
#[derive(Debug, Clone, Serialize)]
pub struct StudyStatus {
    pub study_uid: String,
    pub state: String,
    pub imaging_center: Option<String>,
    pub instances: i64,
    pub views: Vec<String>,
    pub first_received_ms: i64,
    pub ready_reason: Option<String>,
    pub job_state: Option<String>,
    pub job_attempts: Option<i64>,
    pub job_error: Option<String>,
    pub worklist: Option<WorklistItem>,
    pub view_scores: Option<serde_json::Value>,
    pub model_version: Option<String>,
    pub reading: Option<Reading>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CenterSummary {
    pub center: String,
    pub name: String,
    pub queued: i64,
    pub claimed: i64,
    pub read: i64,
    pub overdue: i64,
    pub oldest_due_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImagingCenterProgress {
    pub center: String,
    pub studies: i64,
    pub target: Option<i64>,
}

/// The coordinator's view of the program.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramSummary {
    pub year: i32,
    pub studies_by_state: BTreeMap<String, i64>,
    /// Open worklist items (queued or claimed) per priority class.
    pub open_by_priority: BTreeMap<String, i64>,
    pub diagnosis_centers: Vec<CenterSummary>,
    pub imaging_centers: Vec<ImagingCenterProgress>,
    /// Studies first received this year, and the program target for the year.
    pub studies_this_year: i64,
    pub target: Option<i64>,
    /// Share of the target expected by today on a pro-rata plan.
    pub expected_by_now: Option<i64>,
}

impl Catalog {
    /// A center's open worklist (queued and claimed), in reading order.
    pub async fn worklist(&self, center: &str, limit: i64) -> Result<Vec<WorklistItem>> {
        let rows = sqlx::query(&format!(
            "SELECT {ITEM_COLUMNS} FROM worklist_items WHERE center_id = $1 AND state IN ('queued', 'claimed')
             ORDER BY priority_rank, due_ms, id LIMIT $2"
        ))
        .bind(center)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(item).collect()
    }

    /// Atomically claims the first item of `center`'s worklist for `radiologist`: a
    /// queued item, or one whose claim is older than `claim_expired_before_ms`
    /// (abandoned claims return to the queue rather than vanish).
    pub async fn claim_next(
        &self,
        center: &str,
        radiologist: &str,
        now_ms: i64,
        claim_expired_before_ms: i64,
    ) -> Result<Option<ClaimedItem>> {
        let row = sqlx::query(&format!(
            "UPDATE worklist_items SET state = 'claimed', claimed_by = $1, claimed_ms = $2
             WHERE id = (
                 SELECT id FROM worklist_items
                 WHERE center_id = $3
                   AND (state = 'queued' OR (state = 'claimed' AND claimed_ms < $4))
                 ORDER BY priority_rank, due_ms, id LIMIT 1)
             RETURNING {ITEM_COLUMNS}"
        ))
        .bind(radiologist)
        .bind(now_ms)
        .bind(center)
        .bind(claim_expired_before_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(item).transpose()
    }

    /// Records the reading of a claimed item; the item leaves the queue.
    pub async fn record_reading(
        &self,
        item_id: i64,
        radiologist: &str,
        birads: i64,
        density: &str,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE worklist_items SET state = 'read' WHERE id = $1 AND state = 'claimed' AND claimed_by = $2",
        )
        .bind(item_id)
        .bind(radiologist)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            let state: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT state, claimed_by FROM worklist_items WHERE id = $1")
                    .bind(item_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            tx.rollback().await?;
            return Err(match state {
                None => CatalogError::NotFound(format!("worklist item {item_id} not found")),
                Some((s, _)) if s == "read" => {
                    CatalogError::Conflict(format!("worklist item {item_id} is already read"))
                }
                Some((_, Some(other))) if other != radiologist => CatalogError::Conflict(format!(
                    "worklist item {item_id} is claimed by another radiologist"
                )),
                Some(_) => CatalogError::Conflict(format!(
                    "worklist item {item_id} must be claimed before it is read"
                )),
            });
        }
        let study: String =
            sqlx::query_scalar("SELECT study_uid FROM worklist_items WHERE id = $1")
                .bind(item_id)
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO readings (worklist_item_id, study_uid, radiologist, birads, density, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(item_id)
        .bind(&study)
        .bind(radiologist)
        .bind(birads)
        .bind(density)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE studies SET state = 'read' WHERE study_uid = $1")
            .bind(&study)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn study_status(&self, study_uid: &str) -> Result<Option<StudyStatus>> {
        let Some(s) = sqlx::query(
            "SELECT state, imaging_center, first_received_ms, ready_reason FROM studies WHERE study_uid = $1",
        )
        .bind(study_uid)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let views: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT laterality, view, COUNT(*) FROM instances WHERE study_uid = $1 GROUP BY laterality, view ORDER BY laterality, view",
        )
        .bind(study_uid)
        .fetch_all(&self.pool)
        .await?;
        let job = sqlx::query("SELECT state, attempts, last_error FROM jobs WHERE study_uid = $1 ORDER BY id DESC LIMIT 1")
            .bind(study_uid)
            .fetch_optional(&self.pool)
            .await?;
        let item_row = sqlx::query(&format!(
            "SELECT {ITEM_COLUMNS}, view_scores, model_version FROM worklist_items WHERE study_uid = $1"
        ))
        .bind(study_uid)
        .fetch_optional(&self.pool)
        .await?;
        let reading = sqlx::query(
            "SELECT radiologist, birads, density, created_ms FROM readings WHERE study_uid = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(study_uid)
        .fetch_optional(&self.pool)
        .await?;
        let (view_scores, model_version) = match &item_row {
            Some(r) => {
                let vs: Option<String> = r.try_get("view_scores")?;
                (
                    vs.and_then(|s| serde_json::from_str(&s).ok()),
                    r.try_get("model_version")?,
                )
            }
            None => (None, None),
        };
        Ok(Some(StudyStatus {
            study_uid: study_uid.to_owned(),
            state: s.try_get("state")?,
            imaging_center: s.try_get("imaging_center")?,
            instances: views.iter().map(|v| v.2).sum(),
            views: views.iter().map(|(l, v, _)| format!("{l}-{v}")).collect(),
            first_received_ms: s.try_get("first_received_ms")?,
            ready_reason: s.try_get("ready_reason")?,
            job_state: job.as_ref().map(|j| j.try_get("state")).transpose()?,
            job_attempts: job.as_ref().map(|j| j.try_get("attempts")).transpose()?,
            job_error: job
                .as_ref()
                .map(|j| j.try_get("last_error"))
                .transpose()?
                .flatten(),
            worklist: item_row.as_ref().map(item).transpose()?,
            view_scores,
            model_version,
            reading: reading
                .map(|r| -> Result<Reading> {
                    Ok(Reading {
                        radiologist: r.try_get("radiologist")?,
                        birads: r.try_get("birads")?,
                        density: r.try_get("density")?,
                        created_ms: r.try_get("created_ms")?,
                    })
                })
                .transpose()?,
        }))
    }

    /// Program summary for `year` (which starts at `year_start_ms` and ends at
    /// `year_end_ms`), as of `now_ms`.
    pub async fn summary(
        &self,
        year: i32,
        year_start_ms: i64,
        year_end_ms: i64,
        now_ms: i64,
    ) -> Result<ProgramSummary> {
        let by_state: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM studies GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        let by_priority: Vec<(String, i64)> = sqlx::query_as(
            "SELECT priority, COUNT(*) FROM worklist_items WHERE state IN ('queued', 'claimed') GROUP BY priority",
        )
        .fetch_all(&self.pool)
        .await?;
        let centers = sqlx::query(
            "SELECT c.id, c.name,
                 COALESCE(SUM(w.state = 'queued'), 0) AS queued,
                 COALESCE(SUM(w.state = 'claimed'), 0) AS claimed,
                 COALESCE(SUM(w.state = 'read'), 0) AS read,
                 COALESCE(SUM(w.state != 'read' AND w.due_ms < $1), 0) AS overdue,
                 MIN(CASE WHEN w.state != 'read' THEN w.due_ms END) AS oldest_due_ms
             FROM centers c LEFT JOIN worklist_items w ON w.center_id = c.id
             WHERE c.kind = 'diagnosis' GROUP BY c.id, c.name ORDER BY c.id",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        let imaging = sqlx::query(
            "SELECT c.id,
                 (SELECT COUNT(*) FROM studies s WHERE s.imaging_center = c.id
                     AND s.first_received_ms >= $1 AND s.first_received_ms < $2) AS studies,
                 (SELECT mammograms FROM targets t WHERE t.year = $3 AND t.scope = c.id) AS target
             FROM centers c WHERE c.kind = 'imaging' ORDER BY c.id",
        )
        .bind(year_start_ms)
        .bind(year_end_ms)
        .bind(year)
        .fetch_all(&self.pool)
        .await?;
        let studies_this_year: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM studies WHERE first_received_ms >= $1 AND first_received_ms < $2",
        )
        .bind(year_start_ms)
        .bind(year_end_ms)
        .fetch_one(&self.pool)
        .await?;
        let target: Option<i64> = sqlx::query_scalar(
            "SELECT mammograms FROM targets WHERE year = $1 AND scope = 'program'",
        )
        .bind(year)
        .fetch_optional(&self.pool)
        .await?;
        let elapsed = ((now_ms - year_start_ms) as f64 / (year_end_ms - year_start_ms) as f64)
            .clamp(0.0, 1.0);
        let mut open_by_priority: BTreeMap<String, i64> = ["urgent", "routine", "untriaged", "low"]
            .iter()
            .map(|p| (p.to_string(), 0))
            .collect();
        for (p, n) in by_priority {
            debug_assert!(Priority::parse(&p).is_some());
            open_by_priority.insert(p, n);
        }
        Ok(ProgramSummary {
            year,
            studies_by_state: by_state.into_iter().collect(),
            open_by_priority,
            diagnosis_centers: centers
                .iter()
                .map(|r| {
                    Ok(CenterSummary {
                        center: r.try_get("id")?,
                        name: r.try_get("name")?,
                        queued: r.try_get("queued")?,
                        claimed: r.try_get("claimed")?,
                        read: r.try_get("read")?,
                        overdue: r.try_get("overdue")?,
                        oldest_due_ms: r.try_get("oldest_due_ms")?,
                    })
                })
                .collect::<Result<_>>()?,
            imaging_centers: imaging
                .iter()
                .map(|r| {
                    Ok(ImagingCenterProgress {
                        center: r.try_get("id")?,
                        studies: r.try_get("studies")?,
                        target: r.try_get("target")?,
                    })
                })
                .collect::<Result<_>>()?,
            studies_this_year,
            target,
            expected_by_now: target.map(|t| (t as f64 * elapsed).round() as i64),
        })
    }
}
