//! The catalog: studies, instances, jobs, worklists, readings, centers and targets in
//! SQL (SQLite in the embedded mode). Correctness that matters across processes (one
//! job per study and model, exclusive leases and claims, one worklist item per study)
//! is enforced by constraints and single statements here, and tested here.

mod jobs;
mod worklist;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use jobs::{Job, JobOutcome};
pub use worklist::{
    CenterSummary, ClaimedItem, NewItem, ProgramSummary, Reading, StudyStatus, WorklistItem,
};

use crate::config::Config;
use crate::dicom::InstanceMeta;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("catalog migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the job lease was lost (another worker took the job over)")]
    LeaseLost,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// How an instance insert went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// New instance; `study_ready` when it completed the four screening views.
    Inserted { study_ready: bool },
    /// The same bytes were already catalogued under this SOP Instance UID.
    Duplicate,
    /// Different bytes are catalogued under this SOP Instance UID.
    Conflict { existing_sha256: String },
}

/// How many rows the main tables hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogCounts {
    pub studies: i64,
    pub instances: i64,
    pub jobs: i64,
    pub worklist_items: i64,
}

#[derive(Clone)]
pub struct Catalog {
    pool: SqlitePool,
    salt: String,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Catalog {
    /// Opens (creating if needed) the SQLite catalog at `path` and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Catalog> {
        let opts = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before the client hears "stored" (NORMAL in
            // WAL mode may lose the last commits on power loss).
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        let salt = hex::encode(rand::random::<[u8; 16]>());
        sqlx::query("INSERT INTO settings (key, value) VALUES ('pseudonym_salt', $1) ON CONFLICT (key) DO NOTHING")
            .bind(&salt)
            .execute(&pool)
            .await?;
        let salt: String =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'pseudonym_salt'")
                .fetch_one(&pool)
                .await?;
        Ok(Catalog { pool, salt })
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Row counts of the main tables: what tests and operators check "nothing changed"
    /// or "nothing duplicated" against, without SQL outside the catalog.
    pub async fn counts(&self) -> Result<CatalogCounts> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM studies), (SELECT COUNT(*) FROM instances),
                    (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM worklist_items)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(CatalogCounts {
            studies: row.try_get(0)?,
            instances: row.try_get(1)?,
            jobs: row.try_get(2)?,
            worklist_items: row.try_get(3)?,
        })
    }

    /// Mirrors centers and targets from the configuration (the file is the source of
    /// truth; rows for removed centers stay so old studies keep their references).
    pub async fn sync_config(&self, config: &Config) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for d in &config.diagnosis_centers {
            sqlx::query(
                "INSERT INTO centers (id, kind, name, home_center) VALUES ($1, 'diagnosis', $2, NULL)
                 ON CONFLICT (id) DO UPDATE SET kind = 'diagnosis', name = excluded.name, home_center = NULL",
            )
            .bind(&d.id)
            .bind(&d.name)
            .execute(&mut *tx)
            .await?;
        }
        for c in &config.imaging_centers {
            sqlx::query(
                "INSERT INTO centers (id, kind, name, home_center) VALUES ($1, 'imaging', $2, $3)
                 ON CONFLICT (id) DO UPDATE SET kind = 'imaging', name = excluded.name, home_center = excluded.home_center",
            )
            .bind(&c.id)
            .bind(&c.name)
            .bind(&c.home)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM targets").execute(&mut *tx).await?;
        for t in &config.targets {
            sqlx::query("INSERT INTO targets (year, scope, mammograms) VALUES ($1, $2, $3)")
                .bind(t.year)
                .bind(t.center.as_deref().unwrap_or("program"))
                .bind(t.mammograms as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Pseudonymous patient key: identifiers never reach the database.
    pub fn pseudonym(&self, issuer: &str, patient_id: &str) -> String {
        let mut h = Sha256::new();
        for part in [self.salt.as_str(), issuer, patient_id] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// SHA-256 of the instance catalogued under `sop_uid`, if any.
    pub async fn instance_sha256(&self, sop_uid: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT sha256 FROM instances WHERE sop_uid = $1")
                .bind(sop_uid)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Catalogues an instance whose bytes are already in the object store, creating
    /// its patient and study as needed, and makes the study ready (with its triage job
    /// for `model_version`) when this instance completes the four screening views.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_instance(
        &self,
        meta: &InstanceMeta,
        imaging_center: Option<&str>,
        object_key: &str,
        size_bytes: u64,
        sha256: &str,
        model_version: &str,
        now_ms: i64,
    ) -> Result<InsertOutcome> {
        let pseudo = self.pseudonym(&meta.patient_issuer, &meta.patient_id);
        let mut tx = self.pool.begin().await?;
        // First statement writes, so SQLite takes the write lock (waiting on busy)
        // rather than failing a read-to-write upgrade.
        sqlx::query(
            "INSERT INTO patients (pseudo_key) VALUES ($1) ON CONFLICT (pseudo_key) DO NOTHING",
        )
        .bind(&pseudo)
        .execute(&mut *tx)
        .await?;
        let patient: i64 = sqlx::query_scalar("SELECT id FROM patients WHERE pseudo_key = $1")
            .bind(&pseudo)
            .fetch_one(&mut *tx)
            .await?;
        if let Some(existing) =
            sqlx::query_scalar::<_, String>("SELECT sha256 FROM instances WHERE sop_uid = $1")
                .bind(&meta.sop_instance_uid)
                .fetch_optional(&mut *tx)
                .await?
        {
            tx.rollback().await?;
            return Ok(if existing == sha256 {
                InsertOutcome::Duplicate
            } else {
                InsertOutcome::Conflict {
                    existing_sha256: existing,
                }
            });
        }
        sqlx::query(
            "INSERT INTO studies (study_uid, patient_id, imaging_center, state, first_received_ms, last_received_ms)
             VALUES ($1, $2, $3, 'receiving', $4, $4)
             ON CONFLICT (study_uid) DO UPDATE SET last_received_ms = MAX(last_received_ms, excluded.last_received_ms),
                 imaging_center = COALESCE(imaging_center, excluded.imaging_center)",
        )
        .bind(&meta.study_uid)
        .bind(patient)
        .bind(imaging_center)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO instances (sop_uid, study_uid, series_uid, sop_class_uid, transfer_syntax, laterality, view,
                 rows, columns, size_bytes, sha256, object_key, received_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&meta.sop_instance_uid)
        .bind(&meta.study_uid)
        .bind(&meta.series_uid)
        .bind(&meta.sop_class_uid)
        .bind(&meta.transfer_syntax)
        .bind(meta.laterality.as_str())
        .bind(meta.view.as_str())
        .bind(meta.rows as i64)
        .bind(meta.columns as i64)
        .bind(size_bytes as i64)
        .bind(sha256)
        .bind(object_key)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let views: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT laterality || '-' || view) FROM instances
             WHERE study_uid = $1 AND view IN ('CC', 'MLO')",
        )
        .bind(&meta.study_uid)
        .fetch_one(&mut *tx)
        .await?;
        let study_ready = views == 4
            && mark_ready(
                &mut tx,
                &meta.study_uid,
                "four screening views received",
                model_version,
                now_ms,
            )
            .await?;
        tx.commit().await?;
        Ok(InsertOutcome::Inserted { study_ready })
    }

    /// Makes ready every study still receiving whose last instance arrived at or before
    /// `stable_before_ms`. Returns how many became ready.
    pub async fn mark_stable_studies_ready(
        &self,
        stable_before_ms: i64,
        stable_after_secs: u64,
        model_version: &str,
        now_ms: i64,
    ) -> Result<usize> {
        let candidates: Vec<String> = sqlx::query_scalar(
            "SELECT study_uid FROM studies WHERE state = 'receiving' AND last_received_ms <= $1 ORDER BY first_received_ms",
        )
        .bind(stable_before_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut n = 0;
        for study in candidates {
            let mut tx = self.pool.begin().await?;
            let reason = format!("no new instance for {stable_after_secs} s");
            if mark_ready(&mut tx, &study, &reason, model_version, now_ms).await? {
                n += 1;
            }
            tx.commit().await?;
        }
        Ok(n)
    }
}

/// Moves a receiving study to ready and creates its triage job. The state check in the
/// UPDATE and the UNIQUE (study, model) constraint make this safe to race.
async fn mark_ready(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    study_uid: &str,
    reason: &str,
    model_version: &str,
    now_ms: i64,
) -> Result<bool> {
    let changed = sqlx::query(
        "UPDATE studies SET state = 'ready', ready_ms = $2, ready_reason = $3 WHERE study_uid = $1 AND state = 'receiving'",
    )
    .bind(study_uid)
    .bind(now_ms)
    .bind(reason)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO jobs (study_uid, model_version, state, run_after_ms, created_ms)
         VALUES ($1, $2, 'queued', $3, $3) ON CONFLICT (study_uid, model_version) DO NOTHING",
    )
    .bind(study_uid)
    .bind(model_version)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// One catalogued instance, as the worker needs it.
#[derive(Debug, Clone)]
pub struct StoredInstance {
    pub sop_uid: String,
    pub laterality: String,
    pub view: String,
    pub object_key: String,
    pub received_ms: i64,
}

impl Catalog {
    pub async fn study_instances(&self, study_uid: &str) -> Result<Vec<StoredInstance>> {
        let rows = sqlx::query(
            "SELECT sop_uid, laterality, view, object_key, received_ms FROM instances
             WHERE study_uid = $1 ORDER BY received_ms, sop_uid",
        )
        .bind(study_uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredInstance {
                    sop_uid: r.try_get("sop_uid")?,
                    laterality: r.try_get("laterality")?,
                    view: r.try_get("view")?,
                    object_key: r.try_get("object_key")?,
                    received_ms: r.try_get("received_ms")?,
                })
            })
            .collect()
    }

    /// The study's imaging center and first-received time.
    pub async fn study_origin(&self, study_uid: &str) -> Result<(Option<String>, i64)> {
        let row = sqlx::query(
            "SELECT imaging_center, first_received_ms FROM studies WHERE study_uid = $1",
        )
        .bind(study_uid)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| CatalogError::NotFound(format!("study {study_uid} not found")))?;
        Ok((
            row.try_get("imaging_center")?,
            row.try_get("first_received_ms")?,
        ))
    }
}
