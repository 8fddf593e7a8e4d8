//! The triage job queue, in SQL.
//!
//! A lease is one UPDATE that picks the oldest runnable job of the worker's model
//! (queued and due, or leased with an expired lease), re-checks that it is still
//! runnable, and stamps owner, expiry and a new attempt number; on PostgreSQL the pick
//! skips rows another worker is leasing right now (`FOR UPDATE SKIP LOCKED`), so
//! workers never wait on each other nor take the same job. Every later write names
//! that attempt number, so a worker whose lease expired (crashed, paused,
//! partitioned) can no longer touch the job: its heartbeat, retry or completion
//! affects no row and it learns it lost the lease.

use super::worklist::NewItem;
use super::{Catalog, CatalogError, Db, Result};

/// A fenced write changed exactly one row, or the lease was lost.
fn fenced(rows_affected: u64) -> Result<()> {
    if rows_affected == 1 {
        Ok(())
    } else {
        Err(CatalogError::LeaseLost)
    }
}

/// A leased job. `attempts` is the fencing token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub study_uid: String,
    pub model_version: String,
    /// Leases taken over the job's life: the fencing token of every update.
    pub attempts: i64,
    /// The attempt within the current run (1 first); retries and the dead letter
    /// count this (a late view starts a new run).
    pub attempt: i64,
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

/// Runnable jobs of model `$4` at time `$3`; the two arms match the two partial
/// indexes (`jobs_queued`, `jobs_leased`).
macro_rules! runnable {
    () => {
        "model_version = $4 AND ((state = 'queued' AND run_after_ms <= $3)
             OR (state = 'leased' AND lease_expires_ms < $3))"
    };
}
const LEASE_SQL: &str = concat!(
    "UPDATE jobs SET state = 'leased', attempts = attempts + 1, lease_owner = $1, lease_expires_ms = $2
     WHERE id = (SELECT id FROM jobs WHERE ",
    runnable!(),
    " ORDER BY run_after_ms, id LIMIT 1) AND ",
    runnable!(),
    " RETURNING id, study_uid, model_version, attempts, attempts - attempts_base AS attempt, last_error"
);
const LEASE_SQL_PG: &str = concat!(
    "UPDATE jobs SET state = 'leased', attempts = attempts + 1, lease_owner = $1, lease_expires_ms = $2
     WHERE id = (SELECT id FROM jobs WHERE ",
    runnable!(),
    " ORDER BY run_after_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED) AND ",
    runnable!(),
    " RETURNING id, study_uid, model_version, attempts, attempts - attempts_base AS attempt, last_error"
);

impl Catalog {
    /// Leases the next runnable job of `model_version` (a worker runs only the jobs
    /// of the model it has loaded) for `lease_ms`.
    pub async fn lease_job(
        &self,
        owner: &str,
        model_version: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<Job>> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_as(if pg { LEASE_SQL_PG } else { LEASE_SQL })
                .bind(owner)
                .bind(now_ms + lease_ms)
                .bind(now_ms)
                .bind(model_version)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Extends the lease; [`CatalogError::LeaseLost`] if another attempt owns the job.
    pub async fn heartbeat(&self, job: &Job, now_ms: i64, lease_ms: i64) -> Result<()> {
        let n = on_db!(&self.db, pool, pg => {
            sqlx::query("UPDATE jobs SET lease_expires_ms = $1 WHERE id = $2 AND attempts = $3 AND state = 'leased'")
                .bind(now_ms + lease_ms)
                .bind(job.id)
                .bind(job.attempts)
                .execute(pool)
                .await?
                .rows_affected()
        });
        fenced(n)
    }

    /// Gives the job back unfinished (a worker shutting down): runnable again at
    /// once, without waiting for its lease to expire.
    pub async fn release_job(&self, job: &Job) -> Result<()> {
        let n = on_db!(&self.db, pool, pg => {
            sqlx::query(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_ms = NULL
                 WHERE id = $1 AND attempts = $2 AND state = 'leased'",
            )
            .bind(job.id)
            .bind(job.attempts)
            .execute(pool)
            .await?
            .rows_affected()
        });
        fenced(n)
    }

    /// Puts the job back for another attempt after `run_after_ms`.
    pub async fn retry_job(&self, job: &Job, error: &str, run_after_ms: i64) -> Result<()> {
        let n = on_db!(&self.db, pool, pg => {
            sqlx::query(
                "UPDATE jobs SET state = 'queued', run_after_ms = $1, last_error = $2, lease_owner = NULL, lease_expires_ms = NULL
                 WHERE id = $3 AND attempts = $4 AND state = 'leased'",
            )
            .bind(run_after_ms)
            .bind(error)
            .bind(job.id)
            .bind(job.attempts)
            .execute(pool)
            .await?
            .rows_affected()
        });
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
        on_db!(&self.db, pool, pg => {
            let mut tx = pool.begin().await?;
            // A late view arrived during this run (`rerun`): the job goes back to the
            // queue for a new run, after this one's result is on the worklist.
            let n = sqlx::query(
                "UPDATE jobs SET state = CASE WHEN rerun THEN 'queued' ELSE $1 END,
                     finished_ms = CASE WHEN rerun THEN NULL ELSE CAST($2 AS BIGINT) END,
                     run_after_ms = CASE WHEN rerun THEN CAST($2 AS BIGINT) ELSE run_after_ms END,
                     attempts_base = CASE WHEN rerun THEN attempts ELSE attempts_base END,
                     rerun = FALSE,
                     last_error = COALESCE($3, last_error), lease_owner = NULL, lease_expires_ms = NULL
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
            // The study's item, locked: a radiologist's claim waits for this update.
            let existing: Option<(String, i64, String, String)> = sqlx::query_as(if pg {
                "SELECT state, priority_rank, priority, reason FROM worklist_items WHERE study_uid = $1 FOR UPDATE"
            } else {
                "SELECT state, priority_rank, priority, reason FROM worklist_items WHERE study_uid = $1"
            })
            .bind(&job.study_uid)
            .fetch_optional(&mut *tx)
            .await?;
            match existing {
                None => insert_item!(&mut *tx, item, &job.study_uid, now_ms),
                Some((item_state, rank, priority, reason)) => {
                    let t = &item.triage;
                    let view_scores = (!item.view_scores.is_empty())
                        .then(|| serde_json::to_string(&item.view_scores).unwrap_or_default());
                    match late_update(&item_state, rank, &priority, &reason, item) {
                        LateUpdate::Replace(reason) => {
                            sqlx::query(
                                "UPDATE worklist_items SET priority = $2, priority_rank = $3, triaged = $4,
                                     score = $5, score_left = $6, score_right = $7, view_scores = $8,
                                     model_version = $9, due_ms = $10, reason = $11, untriaged_cause = $12
                                 WHERE study_uid = $1",
                            )
                            .bind(&job.study_uid)
                            .bind(t.priority.as_str())
                            .bind(t.priority.rank())
                            .bind(t.score.is_some())
                            .bind(t.score.map(f64::from))
                            .bind(t.left.map(f64::from))
                            .bind(t.right.map(f64::from))
                            .bind(view_scores)
                            .bind(&item.model_version)
                            .bind(t.due_ms)
                            .bind(reason)
                            .bind(t.cause.map(|c| c.as_str()))
                            .execute(&mut *tx)
                            .await?;
                        }
                        LateUpdate::KeepPriority(reason) => {
                            sqlx::query(
                                "UPDATE worklist_items SET triaged = $2, score = $3, score_left = $4,
                                     score_right = $5, view_scores = $6, model_version = $7, reason = $8
                                 WHERE study_uid = $1",
                            )
                            .bind(&job.study_uid)
                            .bind(t.score.is_some())
                            .bind(t.score.map(f64::from))
                            .bind(t.left.map(f64::from))
                            .bind(t.right.map(f64::from))
                            .bind(view_scores)
                            .bind(&item.model_version)
                            .bind(reason)
                            .execute(&mut *tx)
                            .await?;
                        }
                        LateUpdate::Note(reason) => {
                            sqlx::query("UPDATE worklist_items SET reason = $2 WHERE study_uid = $1")
                                .bind(&job.study_uid)
                                .bind(reason)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
            }
            sqlx::query("UPDATE studies SET state = 'worklisted' WHERE study_uid = $1 AND state IN ('receiving', 'ready')")
                .bind(&job.study_uid)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }
}

/// How a new triage of a study already on a worklist (a late view ran its job again)
/// changes its item, with the reason the item will show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LateUpdate {
    /// Nobody has opened it, or the priority rises: the new triage replaces the old.
    Replace(String),
    /// A radiologist has it open and the priority would fall: the scores are updated,
    /// the priority and due time kept, and the reason says so.
    KeepPriority(String),
    /// Already read: nothing changes but a visible note.
    Note(String),
}

/// The rules for a late triage of an item in `state` with priority `priority` (rank
/// `rank`) and reason `reason`. The study stays on its worklist and at its center.
pub fn late_update(
    state: &str,
    rank: i64,
    priority: &str,
    reason: &str,
    new: &NewItem,
) -> LateUpdate {
    let t = &new.triage;
    let now = match t.score {
        Some(s) => format!("{} (score {s:.3})", t.priority.as_str()),
        None => t.priority.as_str().to_owned(),
    };
    match state {
        "read" => LateUpdate::Note(format!(
            "{reason}; NOTE: a screening view arrived after the reading; triage of all views now: {now}; review the study"
        )),
        "claimed" if t.priority.rank() > rank => {
            LateUpdate::KeepPriority(format!(
                "re-triaged after a late view: {}; priority kept at {priority}: the study was open when the view arrived (the new triage says {now})",
                new.reason
            ))
        }
        "claimed" if t.priority.rank() < rank => LateUpdate::Replace(format!(
            "re-triaged after a late view, raised from {priority} while open: {}",
            new.reason
        )),
        _ => LateUpdate::Replace(format!("re-triaged after a late view: {}", new.reason)),
    }
}

impl Catalog {
    /// Benchmarks only: fills the catalog with `studies` synthetic studies of one
    /// pseudonymous patient, as a year or more of a program leaves it: every study
    /// with its job and its worklist item at diagnosis center `center`; all read and
    /// done except the newest `open_items` items (queued) and the newest `queued_jobs`
    /// jobs (queued, of `model_version`). One statement per table, so a million studies
    /// load in seconds. Study UIDs are `2.25.{n}`.
    #[doc(hidden)]
    pub async fn bulk_load_history(
        &self,
        studies: i64,
        open_items: i64,
        queued_jobs: i64,
        model_version: &str,
        center: &str,
        now_ms: i64,
    ) -> Result<()> {
        // One row per n in 1..=studies: a series function on PostgreSQL, a recursive
        // CTE on SQLite.
        let series = |pg: bool, insert: &str, select: &str| {
            if pg {
                format!("{insert} {select} FROM generate_series(1, $1::BIGINT) AS g(x)")
            } else {
                format!(
                    "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < $1) \
                     {insert} {select} FROM g"
                )
            }
        };
        on_db!(&self.db, pool, pg => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO patients (pseudo_key) VALUES ('bench') ON CONFLICT (pseudo_key) DO NOTHING",
            )
            .execute(&mut *tx)
            .await?;
            let patient: i64 = sqlx::query_scalar("SELECT id FROM patients WHERE pseudo_key = 'bench'")
                .fetch_one(&mut *tx)
                .await?;
            // Study n arrived (studies - n) seconds before now.
            sqlx::query(&series(
                pg,
                "INSERT INTO studies (study_uid, patient_id, imaging_center, state, first_received_ms,
                     last_received_ms, ready_ms, ready_reason)",
                "SELECT '2.25.' || x, $2, NULL, CASE WHEN x > $1 - $3 THEN 'worklisted' ELSE 'read' END,
                     $4 - ($1 - x) * 1000, $4 - ($1 - x) * 1000, $4 - ($1 - x) * 1000, 'bench'",
            ))
            .bind(studies)
            .bind(patient)
            .bind(open_items)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(&series(
                pg,
                "INSERT INTO jobs (study_uid, model_version, state, attempts, run_after_ms, created_ms, finished_ms)",
                "SELECT '2.25.' || x, $2, CASE WHEN x > $1 - $3 THEN 'queued' ELSE 'done' END,
                     CASE WHEN x > $1 - $3 THEN 0 ELSE 1 END, $4 - ($1 - x) * 1000, $4 - ($1 - x) * 1000,
                     CASE WHEN x > $1 - $3 THEN NULL ELSE $4 - ($1 - x) * 1000 END",
            ))
            .bind(studies)
            .bind(model_version)
            .bind(queued_jobs)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            // Priorities cycle urgent, routine, routine, low; due 2 to 7 days on.
            sqlx::query(&series(
                pg,
                "INSERT INTO worklist_items (study_uid, center_id, priority, priority_rank, triaged, score,
                     model_version, due_ms, reason, state, claimed_by, claimed_ms, created_ms)",
                "SELECT '2.25.' || x, $2,
                     CASE x % 4 WHEN 0 THEN 'urgent' WHEN 3 THEN 'low' ELSE 'routine' END,
                     CASE x % 4 WHEN 0 THEN 0 WHEN 3 THEN 3 ELSE 1 END, TRUE, 0.5, $5,
                     $4 - ($1 - x) * 1000 + CASE x % 4 WHEN 0 THEN 172800000 ELSE 604800000 END,
                     'bench', CASE WHEN x > $1 - $3 THEN 'queued' ELSE 'read' END,
                     CASE WHEN x > $1 - $3 THEN NULL ELSE 'bench' END,
                     CASE WHEN x > $1 - $3 THEN NULL ELSE $4 - ($1 - x) * 1000 END,
                     $4 - ($1 - x) * 1000",
            ))
            .bind(studies)
            .bind(center)
            .bind(open_items)
            .bind(now_ms)
            .bind(model_version)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            // What autovacuum does after a load this size on PostgreSQL (SQLite keeps
            // no statistics unless asked, and tamiz does not ask).
            if pg {
                sqlx::query("ANALYZE").execute(pool).await?;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::{Priority, Triage};

    fn item(priority: Priority, score: f32) -> NewItem {
        NewItem {
            home_center: None,
            center: "c".into(),
            triage: Triage {
                priority,
                score: Some(score),
                left: None,
                right: None,
                due_ms: 0,
                reason: "r".into(),
                cause: None,
            },
            view_scores: vec![],
            model_version: None,
            reason: "study score".into(),
        }
    }

    #[test]
    fn a_late_triage_never_silently_lowers_an_open_item_and_only_notes_a_read_one() {
        let low = item(Priority::Low, 0.1);
        let urgent = item(Priority::Urgent, 0.9);
        assert_eq!(
            late_update("queued", 0, "urgent", "old", &low),
            LateUpdate::Replace("re-triaged after a late view: study score".into())
        );
        assert_eq!(
            late_update("claimed", 0, "urgent", "old", &low),
            LateUpdate::KeepPriority("re-triaged after a late view: study score; priority kept at urgent: the study was open when the view arrived (the new triage says low (score 0.100))".into())
        );
        assert_eq!(
            late_update("claimed", 2, "low", "old", &urgent),
            LateUpdate::Replace(
                "re-triaged after a late view, raised from low while open: study score".into()
            )
        );
        // Routine and untriaged share a rank: a change between them is no fall.
        assert!(matches!(
            late_update(
                "claimed",
                1,
                "untriaged",
                "old",
                &item(Priority::Routine, 0.5)
            ),
            LateUpdate::Replace(_)
        ));
        assert_eq!(
            late_update("read", 2, "low", "old", &urgent),
            LateUpdate::Note("old; NOTE: a screening view arrived after the reading; triage of all views now: urgent (score 0.900); review the study".into())
        );
    }
}
