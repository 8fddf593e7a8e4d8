//! The triage job queue, in SQL.
//!
//! A lease is one UPDATE that picks the oldest runnable job (queued and due, or leased
//! with an expired lease) and stamps owner, expiry and a new attempt number. Every
//! later write names that attempt number, so a worker whose lease expired (crashed,
//! paused, partitioned) can no longer touch the job: its heartbeat, retry or completion
//! affects no row and it learns it lost the lease.

use sqlx::Row;

use super::worklist::NewItem;
use super::{Catalog, CatalogError, Result};

/// A fenced write changed exactly one row, or the lease was lost.
fn fenced(rows_affected: u64) -> Result<()> {
    if rows_affected == 1 {
        Ok(())
    } else {
        Err(CatalogError::LeaseLost)
    }
}

/// A leased job. `attempts` is the fencing token.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub study_uid: String,
    pub model_version: String,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// How a job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Triage ran (scored, or untriaged for a reason that retrying cannot fix).
    Done,
    /// Gave up after the last attempt; the study still goes to a worklist.
    Dead,
}

impl Catalog {
    /// Leases the next runnable job for `lease_ms`.
    pub async fn lease_job(&self, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Option<Job>> {
        let row = sqlx::query(
            "UPDATE jobs SET state = 'leased', attempts = attempts + 1, lease_owner = $1, lease_expires_ms = $2
             WHERE id = (
                 SELECT id FROM jobs
                 WHERE (state = 'queued' AND run_after_ms <= $3) OR (state = 'leased' AND lease_expires_ms < $3)
                 ORDER BY run_after_ms, id LIMIT 1)
             RETURNING id, study_uid, model_version, attempts, last_error",
        )
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Job {
                id: r.try_get("id")?,
                study_uid: r.try_get("study_uid")?,
                model_version: r.try_get("model_version")?,
                attempts: r.try_get("attempts")?,
                last_error: r.try_get("last_error")?,
            })
        })
        .transpose()
    }

    /// Extends the lease; [`CatalogError::LeaseLost`] if another attempt owns the job.
    pub async fn heartbeat(&self, job: &Job, now_ms: i64, lease_ms: i64) -> Result<()> {
        let n = sqlx::query("UPDATE jobs SET lease_expires_ms = $1 WHERE id = $2 AND attempts = $3 AND state = 'leased'")
            .bind(now_ms + lease_ms)
            .bind(job.id)
            .bind(job.attempts)
            .execute(&self.pool)
            .await?
            .rows_affected();
        fenced(n)
    }

    /// Puts the job back for another attempt after `run_after_ms`.
    pub async fn retry_job(&self, job: &Job, error: &str, run_after_ms: i64) -> Result<()> {
        let n = sqlx::query(
            "UPDATE jobs SET state = 'queued', run_after_ms = $1, last_error = $2, lease_owner = NULL, lease_expires_ms = NULL
             WHERE id = $3 AND attempts = $4 AND state = 'leased'",
        )
        .bind(run_after_ms)
        .bind(error)
        .bind(job.id)
        .bind(job.attempts)
        .execute(&self.pool)
        .await?
        .rows_affected();
        fenced(n)
    }

    /// Ends the job and puts its study on a worklist, atomically: either both happen
    /// or neither (and the job will be leased again).
    pub async fn finish_job(
        &self,
        job: &Job,
        outcome: JobOutcome,
        item: &NewItem,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let state = match outcome {
            JobOutcome::Done => "done",
            JobOutcome::Dead => "dead",
        };
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = $1, finished_ms = $2, last_error = COALESCE($3, last_error),
                 lease_owner = NULL, lease_expires_ms = NULL
             WHERE id = $4 AND attempts = $5 AND state = 'leased'",
        )
        .bind(state)
        .bind(now_ms)
        .bind(error)
        .bind(job.id)
        .bind(job.attempts)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            tx.rollback().await?;
            return Err(CatalogError::LeaseLost);
        }
        item.insert(&mut tx, &job.study_uid, now_ms).await?;
        sqlx::query("UPDATE studies SET state = 'worklisted' WHERE study_uid = $1 AND state IN ('receiving', 'ready')")
            .bind(&job.study_uid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
