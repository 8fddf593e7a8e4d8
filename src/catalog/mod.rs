//! The catalog: studies, instances, jobs, worklists, readings, centers and targets in
//! SQL, on SQLite (embedded mode, the default) or PostgreSQL (scale-out), chosen by
//! `[catalog] url`. Nothing outside this module knows which backend runs.
//!
//! Correctness that matters across processes (one job per study and model, exclusive
//! leases and claims, one worklist item per study, one "stored" per instance, one
//! completeness decision per study) is enforced by constraints, row locks and single
//! statements here, and holds on both backends: PostgreSQL runs many writers at once,
//! so every claim re-checks its state and skips locked rows, and nothing relies on
//! SQLite's one writer.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// The database behind the catalog.
#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the pool of the backend that runs and `$pg` to
/// whether it is PostgreSQL. The body is compiled once per backend, so the same query
/// code is type-checked against both drivers; where their SQL differs, the body picks
/// the text by `$pg`.
macro_rules! on_db {
    ($db:expr, $pool:ident, $pg:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => {
                #[allow(unused_variables)]
                let $pg = false;
                $body
            }
            Db::Postgres($pool) => {
                #[allow(unused_variables)]
                let $pg = true;
                $body
            }
        }
    };
}

/// Moves a receiving study to ready and creates its triage job, in the caller's
/// transaction; evaluates to whether this call made it ready. The state check in the
/// UPDATE and the UNIQUE (study, model) constraint make it safe to race.
macro_rules! mark_ready {
    ($conn:expr, $study_uid:expr, $reason:expr, $model_version:expr, $now_ms:expr) => {{
        let changed = sqlx::query(
            "UPDATE studies SET state = 'ready', ready_ms = $2, ready_reason = $3
             WHERE study_uid = $1 AND state = 'receiving'",
        )
        .bind($study_uid)
        .bind($now_ms)
        .bind($reason)
        .execute($conn)
        .await?
        .rows_affected();
        if changed == 1 {
            sqlx::query(
                "INSERT INTO jobs (study_uid, model_version, state, run_after_ms, created_ms)
                 VALUES ($1, $2, 'queued', $3, $3) ON CONFLICT (study_uid, model_version) DO NOTHING",
            )
            .bind($study_uid)
            .bind($model_version)
            .bind($now_ms)
            .execute($conn)
            .await?;
        }
        changed == 1
    }};
}

/// Inserts worklist item `$item` (a [`NewItem`]) for `$study_uid` in the caller's
/// transaction, unless the study already has one (a study is on exactly one
/// worklist, whatever retried or raced).
macro_rules! insert_item {
    ($conn:expr, $item:expr, $study_uid:expr, $now_ms:expr) => {{
        let item: &NewItem = $item;
        let t = &item.triage;
        let view_scores = (!item.view_scores.is_empty())
            .then(|| serde_json::to_string(&item.view_scores).unwrap_or_default());
        sqlx::query(
            "INSERT INTO worklist_items (study_uid, center_id, priority, priority_rank, triaged, score, score_left,
                 score_right, view_scores, model_version, due_ms, reason, state, created_ms, untriaged_cause,
                 home_center_id, routed_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'queued', $13, $14, $15, $13)
             ON CONFLICT (study_uid) DO NOTHING",
        )
        .bind($study_uid)
        .bind(&item.center)
        .bind(t.priority.as_str())
        .bind(t.priority.rank())
        .bind(t.score.is_some())
        .bind(t.score.map(f64::from))
        .bind(t.left.map(f64::from))
        .bind(t.right.map(f64::from))
        .bind(view_scores)
        .bind(&item.model_version)
        .bind(t.due_ms)
        .bind(&item.reason)
        .bind($now_ms)
        .bind(t.cause.map(|c| c.as_str()))
        .bind(item.home_center.as_deref().unwrap_or(&item.center))
        .execute($conn)
        .await?;
    }};
}

#[macro_use]
mod audit;
mod exchange;
mod inbox;
mod jobs;
mod sessions;
mod users;
mod worklist;

pub use audit::{AuditContext, AuditEntry, AuditQuery, AuditRow};
pub use exchange::{CenterPairCount, ItemMove, OpenItem, SimulatedStudy};
pub use jobs::{Job, JobOutcome};
pub use sessions::{PasswordRecord, SessionIdentity};
pub use users::{Identity, Role, RoleText, User};
pub use worklist::{
    CenterSummary, ClaimedItem, ImagingCenterProgress, NewItem, OpenItems, ProgramSummary,
    QueueSnapshot, Reading, StudyStatus, WorklistItem,
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
    /// The pseudonym salt file is missing, unreadable or not what it must be.
    #[error("pseudonym salt: {0}")]
    Salt(String),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// How an instance insert went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// New instance; `study_ready` when it completed the four screening views;
    /// `retriage` when it is a screening view of a study already triaged, whose job
    /// runs again.
    Inserted { study_ready: bool, retriage: bool },
    /// The same bytes were already catalogued under this SOP Instance UID.
    Duplicate,
    /// Different bytes are catalogued under this SOP Instance UID.
    Conflict { existing_sha256: String },
    /// The instance names another woman or another imaging center than the study it
    /// belongs to already has: merging it would mix two patients' images.
    StudyMismatch { reason: String },
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
    db: Db,
    salt: String,
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The database clock in epoch milliseconds (leases and claims expire by one clock,
/// whatever the clocks of the machines running workers say).
const SQLITE_NOW_MS: &str = "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
const POSTGRES_NOW_MS: &str = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

impl Catalog {
    /// Opens the catalog the configuration names (`[catalog] url`, else the SQLite
    /// file in the data directory), migrates it and loads the pseudonym salt.
    pub async fn open(config: &Config) -> Result<Catalog> {
        let c = &config.catalog;
        let data = &config.server.data_dir;
        let db = match c.url.as_deref() {
            Some(url) if url.starts_with("postgres") => {
                let opts = PgConnectOptions::from_str(url)?;
                let pool = PgPoolOptions::new()
                    .max_connections(if c.max_connections == 0 {
                        16
                    } else {
                        c.max_connections
                    })
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts)
                    .await?;
                POSTGRES_MIGRATOR.run(&pool).await?;
                Db::Postgres(pool)
            }
            url => {
                let opts = match url {
                    Some(url) => SqliteConnectOptions::from_str(url)?,
                    None => {
                        std::fs::create_dir_all(data).map_err(|e| {
                            CatalogError::Salt(format!("creating {}: {e}", data.display()))
                        })?;
                        SqliteConnectOptions::new().filename(data.join("catalog.sqlite"))
                    }
                };
                let opts = opts
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a commit is on disk before the client hears "stored"
                    // (NORMAL in WAL mode may lose the last commits on power loss).
                    .synchronous(if c.scratch {
                        SqliteSynchronous::Off
                    } else {
                        SqliteSynchronous::Full
                    })
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(30));
                // A scratch catalog is read all over at every step: 256 MiB of cache.
                let opts = if c.scratch {
                    opts.pragma("cache_size", "-262144")
                } else {
                    opts
                };
                // A connection to a local file does not drop like a network one:
                // no ping (a round trip to SQLite's thread) before each use.
                let pool = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(if c.max_connections == 0 {
                        8
                    } else {
                        c.max_connections
                    })
                    .connect_with(opts)
                    .await?;
                SQLITE_MIGRATOR.run(&pool).await?;
                Db::Sqlite(pool)
            }
        };
        let salt_file = c
            .salt_file
            .clone()
            .unwrap_or_else(|| default_salt_file(data));
        let salt = load_salt(&db, &salt_file).await?;
        Ok(Catalog { db, salt })
    }

    /// "sqlite" or "postgres", for logs.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        on_db!(&self.db, pool, pg => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// The database's clock, epoch milliseconds: what every process stamps leases
    /// and claims with, so that one machine's clock drift cannot steal a live lease.
    pub async fn clock_ms(&self) -> Result<i64> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_scalar(if pg { POSTGRES_NOW_MS } else { SQLITE_NOW_MS })
                .fetch_one(pool)
                .await?
        }))
    }

    /// Row counts of the main tables: what tests and operators check "nothing changed"
    /// or "nothing duplicated" against, without SQL outside the catalog.
    pub async fn counts(&self) -> Result<CatalogCounts> {
        let (studies, instances, jobs, worklist_items) = on_db!(&self.db, pool, pg => {
            sqlx::query_as::<_, (i64, i64, i64, i64)>(
                "SELECT (SELECT COUNT(*) FROM studies), (SELECT COUNT(*) FROM instances),
                        (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM worklist_items)",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(CatalogCounts {
            studies,
            instances,
            jobs,
            worklist_items,
        })
    }

    /// Mirrors centers and targets from the configuration (the file is the source of
    /// truth; rows for removed centers stay so old studies keep their references).
    /// Several nodes starting at once take turns (an advisory lock on PostgreSQL).
    pub async fn sync_config(&self, config: &Config) -> Result<()> {
        on_db!(&self.db, pool, pg => {
            let mut tx = pool.begin().await?;
            if pg {
                sqlx::query("SELECT pg_advisory_xact_lock(7461697)")
                    .execute(&mut *tx)
                    .await?;
            }
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
                    .bind(i64::from(t.year))
                    .bind(t.center.as_deref().unwrap_or("program"))
                    .bind(t.mammograms as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
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
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_scalar("SELECT sha256 FROM instances WHERE sop_uid = $1")
                .bind(sop_uid)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Catalogues an instance whose bytes are already in the object store, creating
    /// its patient and study as needed, and makes the study ready (with its triage job
    /// for `model_version`) when this instance completes the four screening views.
    ///
    /// Race-free on both backends: the study row is written first, which locks it
    /// until commit, so two instances of one study are catalogued one after the
    /// other and exactly one of them sees the fourth view; the instance insert is one
    /// `ON CONFLICT DO NOTHING`, so two sends of one instance give one "inserted" and
    /// one "duplicate" (or "conflict"), never an error.
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
        on_db!(&self.db, pool, pg => {
            let mut tx = pool.begin().await?;
            // The first statement writes, so SQLite takes the write lock (waiting on
            // busy) rather than failing a read-to-write upgrade.
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
            // The study row: created, or updated (and so locked) with the latest
            // arrival. RETURNING gives the study's patient and center as they stand.
            let (study_patient, study_center, study_state): (i64, Option<String>, String) = sqlx::query_as(
                "INSERT INTO studies (study_uid, patient_id, imaging_center, state, first_received_ms, last_received_ms)
                 VALUES ($1, $2, $3, 'receiving', $4, $4)
                 ON CONFLICT (study_uid) DO UPDATE SET
                     last_received_ms = CASE WHEN excluded.last_received_ms > studies.last_received_ms
                         THEN excluded.last_received_ms ELSE studies.last_received_ms END,
                     imaging_center = COALESCE(studies.imaging_center, excluded.imaging_center)
                 RETURNING patient_id, imaging_center, state",
            )
            .bind(&meta.study_uid)
            .bind(patient)
            .bind(imaging_center)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await?;
            let mismatch = if study_patient != patient {
                Some("its Patient ID (or Issuer of Patient ID) differs from the one of the study's instances already stored".to_owned())
            } else {
                match (imaging_center, study_center.as_deref()) {
                    (Some(ours), Some(theirs)) if ours != theirs => Some(format!(
                        "it comes from imaging center `{ours}` but the study's instances already stored came from `{theirs}`"
                    )),
                    _ => None,
                }
            };
            if let Some(reason) = mismatch {
                tx.rollback().await?;
                return Ok(InsertOutcome::StudyMismatch { reason });
            }
            let inserted = sqlx::query(
                "INSERT INTO instances (sop_uid, study_uid, series_uid, sop_class_uid, transfer_syntax, laterality, view,
                     rows, columns, size_bytes, sha256, object_key, received_ms, intent, modifiers, implant, acquired)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                 ON CONFLICT (sop_uid) DO NOTHING",
            )
            .bind(&meta.sop_instance_uid)
            .bind(&meta.study_uid)
            .bind(&meta.series_uid)
            .bind(&meta.sop_class_uid)
            .bind(&meta.transfer_syntax)
            .bind(meta.laterality.as_str())
            .bind(meta.view.as_str())
            .bind(i64::from(meta.rows))
            .bind(i64::from(meta.columns))
            .bind(size_bytes as i64)
            .bind(sha256)
            .bind(object_key)
            .bind(now_ms)
            .bind(meta.acquisition.intent.as_str())
            .bind(meta.acquisition.modifiers.join(", "))
            .bind(meta.acquisition.implant.as_str())
            .bind(&meta.acquisition.acquired)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                let existing: String =
                    sqlx::query_scalar("SELECT sha256 FROM instances WHERE sop_uid = $1")
                        .bind(&meta.sop_instance_uid)
                        .fetch_one(&mut *tx)
                        .await?;
                tx.rollback().await?;
                return Ok(if existing == sha256 {
                    InsertOutcome::Duplicate
                } else {
                    InsertOutcome::Conflict {
                        existing_sha256: existing,
                    }
                });
            }
            // The views a screening read needs (src/views.rs): For Presentation, no
            // work-up modifier, and in an implant exam the implant-displaced ones.
            let views: i64 = sqlx::query_scalar(
                "SELECT COUNT(DISTINCT laterality || '-' || view) FROM instances i
                 WHERE study_uid = $1 AND view IN ('CC', 'MLO')
                   AND intent = 'presentation' AND modifiers = ''
                   AND (implant = 'displaced' OR NOT EXISTS (
                       SELECT 1 FROM instances j WHERE j.study_uid = i.study_uid AND j.implant <> ''))",
            )
            .bind(&meta.study_uid)
            .fetch_one(&mut *tx)
            .await?;
            let study_ready = views == 4
                && mark_ready!(
                    &mut *tx,
                    &meta.study_uid,
                    "four screening views received",
                    model_version,
                    now_ms
                );
            // A screening view of a study already triaged: its job runs again (now if
            // it finished, after the run in progress if it is leased).
            let a = &meta.acquisition;
            let counts = meta.view.is_screening()
                && a.intent == crate::dicom::Intent::Presentation
                && a.modifiers.is_empty();
            let mut retriage = false;
            if counts && study_state != "receiving" {
                let requeued = sqlx::query(
                    "UPDATE jobs SET state = 'queued', run_after_ms = $3, attempts_base = attempts,
                         rerun = FALSE, finished_ms = NULL
                     WHERE study_uid = $1 AND model_version = $2 AND state IN ('done', 'dead')",
                )
                .bind(&meta.study_uid)
                .bind(model_version)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let flagged = sqlx::query(
                    "UPDATE jobs SET rerun = TRUE
                     WHERE study_uid = $1 AND model_version = $2 AND state = 'leased'",
                )
                .bind(&meta.study_uid)
                .bind(model_version)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                retriage = requeued + flagged > 0;
            }
            tx.commit().await?;
            Ok(InsertOutcome::Inserted { study_ready, retriage })
        })
    }

    /// Makes ready every study still receiving whose last instance arrived at or before
    /// `stable_before_ms`. Returns how many became ready (safe with several API nodes
    /// sweeping at once: each study becomes ready, and gets its job, once).
    pub async fn mark_stable_studies_ready(
        &self,
        stable_before_ms: i64,
        stable_after_secs: u64,
        model_version: &str,
        now_ms: i64,
    ) -> Result<usize> {
        on_db!(&self.db, pool, pg => {
            let candidates: Vec<String> = sqlx::query_scalar(
                "SELECT study_uid FROM studies WHERE state = 'receiving' AND last_received_ms <= $1
                 ORDER BY first_received_ms LIMIT 1000",
            )
            .bind(stable_before_ms)
            .fetch_all(pool)
            .await?;
            let mut n = 0;
            let reason = format!("no new instance for {stable_after_secs} s");
            for study in candidates {
                let mut tx = pool.begin().await?;
                if mark_ready!(&mut *tx, &study, &reason, model_version, now_ms) {
                    n += 1;
                }
                tx.commit().await?;
            }
            Ok(n)
        })
    }
}

/// What a QIDO-RS study search matches, and whose studies it may see.
#[derive(Debug, Clone, Default)]
pub struct StudySearch {
    /// Any of these Study Instance UIDs (empty: any).
    pub study_uids: Vec<String>,
    /// The patient's pseudonym ([`Catalog::pseudonym`]).
    pub patient: Option<String>,
    /// Only studies uploaded by this imaging center.
    pub imaging_center: Option<String>,
    /// Only studies on this diagnosis center's worklist.
    pub diagnosis_center: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// One study found by a QIDO-RS search.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StudyMatch {
    pub study_uid: String,
    pub first_received_ms: i64,
    pub series: i64,
    pub instances: i64,
}

/// One catalogued instance, as WADO-RS retrieves it and QIDO-RS lists it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RetrievableInstance {
    pub sop_uid: String,
    pub series_uid: String,
    pub sop_class_uid: String,
    pub laterality: String,
    pub view: String,
    pub rows: i64,
    pub columns: i64,
    pub transfer_syntax: String,
    pub object_key: String,
    pub size_bytes: i64,
}

/// One catalogued instance, as the worker needs it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredInstance {
    pub sop_uid: String,
    pub laterality: String,
    pub view: String,
    pub object_key: String,
    pub received_ms: i64,
    /// "presentation" or "processing".
    pub intent: String,
    /// Work-up view modifiers, comma-separated; empty for a standard view.
    pub modifiers: String,
    /// "", "present" or "displaced".
    pub implant: String,
    /// Acquisition date-time digits; empty when unknown.
    pub acquired: String,
}

impl StoredInstance {
    /// The catalog's record of an instance read from `object_key` (for `tamiz
    /// evaluate`, which scores files without a catalog).
    pub fn from_meta(meta: &InstanceMeta, object_key: String, received_ms: i64) -> StoredInstance {
        let a = &meta.acquisition;
        StoredInstance {
            sop_uid: meta.sop_instance_uid.clone(),
            laterality: meta.laterality.as_str().into(),
            view: meta.view.as_str().into(),
            object_key,
            received_ms,
            intent: a.intent.as_str().into(),
            modifiers: a.modifiers.join(", "),
            implant: a.implant.as_str().into(),
            acquired: a.acquired.clone(),
        }
    }
}

impl Catalog {
    pub async fn study_instances(&self, study_uid: &str) -> Result<Vec<StoredInstance>> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT sop_uid, laterality, view, object_key, received_ms, intent, modifiers, implant, acquired
                 FROM instances
                 WHERE study_uid = $1 ORDER BY received_ms, sop_uid",
            )
            .bind(study_uid)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The instances of a study, of one of its series, or one instance (by SOP
    /// Instance UID within the study and series), in series then arrival order.
    pub async fn retrievable_instances(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
        sop_uid: Option<&str>,
    ) -> Result<Vec<RetrievableInstance>> {
        Ok(on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT sop_uid, series_uid, sop_class_uid, laterality, view, rows, columns,
                        transfer_syntax, object_key, size_bytes
                 FROM instances
                 WHERE study_uid = $1
                   AND ($2 IS NULL OR series_uid = $2)
                   AND ($3 IS NULL OR sop_uid = $3)
                 ORDER BY series_uid, received_ms, sop_uid",
            )
            .bind(study_uid)
            .bind(series_uid)
            .bind(sop_uid)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Studies matching `q`, oldest first, with their series and instance counts.
    pub async fn search_studies(&self, q: &StudySearch) -> Result<Vec<StudyMatch>> {
        let uids = serde_json::to_string(&q.study_uids).unwrap_or_else(|_| "[]".into());
        Ok(on_db!(&self.db, pool, pg => {
            let uid_filter = if pg {
                "s.study_uid IN (SELECT jsonb_array_elements_text($1::jsonb))"
            } else {
                "s.study_uid IN (SELECT value FROM json_each($1))"
            };
            let sql = format!(
                "SELECT s.study_uid, s.first_received_ms,
                        (SELECT COUNT(DISTINCT i.series_uid) FROM instances i WHERE i.study_uid = s.study_uid) AS series,
                        (SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid) AS instances
                 FROM studies s
                 LEFT JOIN worklist_items w ON w.study_uid = s.study_uid
                 WHERE ($2 OR {uid_filter})
                   AND ($3 IS NULL OR s.patient_id = (SELECT id FROM patients WHERE pseudo_key = $3))
                   AND ($4 IS NULL OR s.imaging_center = $4)
                   AND ($5 IS NULL OR w.center_id = $5)
                 ORDER BY s.first_received_ms, s.study_uid
                 LIMIT $6 OFFSET $7"
            );
            sqlx::query_as(&sql)
                .bind(&uids)
                .bind(q.study_uids.is_empty())
                .bind(&q.patient)
                .bind(&q.imaging_center)
                .bind(&q.diagnosis_center)
                .bind(q.limit)
                .bind(q.offset)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The study's imaging center and first-received time.
    pub async fn study_origin(&self, study_uid: &str) -> Result<(Option<String>, i64)> {
        let row: Option<(Option<String>, i64)> = on_db!(&self.db, pool, pg => {
            sqlx::query_as(
                "SELECT imaging_center, first_received_ms FROM studies WHERE study_uid = $1",
            )
            .bind(study_uid)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or_else(|| CatalogError::NotFound(format!("study {study_uid} not found")))
    }
}

/// Reads the pseudonym salt from its file. A salt from an older SQLite catalog (kept
/// in its `settings` table) moves to the file once; with SQLite a missing file is
/// created with a new random salt, with PostgreSQL it is an error, since every node
/// must hash with the same salt and two nodes must not each invent one.
async fn load_salt(db: &Db, file: &Path) -> Result<String> {
    let legacy: Option<String> = on_db!(db, pool, pg => {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'pseudonym_salt'")
            .fetch_optional(pool)
            .await?
    });
    let salt = match std::fs::read_to_string(file) {
        Ok(text) => {
            let salt = text.trim().to_owned();
            if salt.len() < 32 || !salt.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CatalogError::Salt(format!(
                    "{} must hold at least 32 hex digits",
                    file.display()
                )));
            }
            if legacy.as_ref().is_some_and(|l| *l != salt) {
                return Err(CatalogError::Salt(format!(
                    "{} differs from the salt this catalog was made with (settings.pseudonym_salt); \
                     pseudonyms would change: remove the file to move the catalog's salt there",
                    file.display()
                )));
            }
            salt
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let salt = match (&legacy, db) {
                (Some(l), _) => l.clone(),
                (None, Db::Sqlite(_)) => hex::encode(rand::random::<[u8; 32]>()),
                (None, Db::Postgres(_)) => {
                    return Err(CatalogError::Salt(format!(
                        "{} does not exist; with PostgreSQL every node must use the same salt: \
                         create it once (`openssl rand -hex 32 > FILE`), give it to every node \
                         and name it in [catalog] salt_file or TAMIZ_PSEUDONYM_SALT_FILE",
                        file.display()
                    )))
                }
            };
            write_new_secret(file, &salt)
                .map_err(|e| CatalogError::Salt(format!("writing {}: {e}", file.display())))?;
            tracing::info!(file = %file.display(), "pseudonym salt file created");
            salt
        }
        Err(e) => {
            return Err(CatalogError::Salt(format!(
                "reading {}: {e}",
                file.display()
            )))
        }
    };
    if legacy.is_some() {
        on_db!(db, pool, pg => {
            sqlx::query("DELETE FROM settings WHERE key = 'pseudonym_salt'")
                .execute(pool)
                .await?;
        });
    }
    Ok(salt)
}

/// Writes a new file readable by its owner only, durably, failing if it exists.
pub(crate) fn write_new_secret(file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The default location of the salt file, for messages and the set-up of tests.
pub fn default_salt_file(data_dir: &Path) -> PathBuf {
    data_dir.join("pseudonym.salt")
}
