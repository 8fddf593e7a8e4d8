//! The triage worker: lease a job → fetch the study's views → decode and preprocess
//! (off the async runtime) → infer in one batch → triage → route → finish the job.
//!
//! Failures are sorted once, here: a study whose pixels cannot be read will not
//! improve with retries and goes out *untriaged* at once; storage, catalog or model
//! trouble is retried with exponential backoff, and after the last attempt the job is
//! dead-lettered and the study still goes out untriaged. Either way it reaches a
//! worklist.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::catalog::{Catalog, CatalogError, Job, JobOutcome, StoredInstance};
use crate::config::Config;
use crate::dicom::pixels::decode;
use crate::model::{Model, ModelCard};
use crate::preprocess::{preprocess_oriented, Orientation};
use crate::storage::ObjectStore;
use crate::triage::{classify, untriaged, UntriagedCause, ViewScore};

pub use crate::catalog::NewItem;

/// The model's scores for a study, the screening views it lacked and what view
/// selection did (for the reason).
#[derive(Debug, Clone)]
pub struct Scored {
    pub view_scores: Vec<ViewScore>,
    pub missing: Vec<String>,
    pub notes: Vec<String>,
    /// What the CAD SR needs of the scored images: each one's SOP class and series,
    /// and the attributes (up to Pixel Data) of the first, for patient and study.
    pub sources: Vec<(String, String)>,
    pub header: Option<dicom_object::InMemDicomObject>,
}

/// Why triage of a study did not produce scores.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// Retrying cannot help (no view to score, a view unfit for the model, unreadable
    /// pixels).
    #[error("{reason}")]
    Permanent {
        cause: UntriagedCause,
        reason: String,
    },
    /// Might work next time (storage, catalog, model thread).
    #[error("{0}")]
    Transient(String),
}

/// Shared by all workers of a process.
#[derive(Clone)]
pub struct WorkerContext {
    pub catalog: Catalog,
    pub store: Arc<dyn ObjectStore>,
    pub model: Model,
    pub config: Arc<Config>,
    /// Home center, or another by projected completion (`src/routing/`).
    pub router: Arc<crate::routing::Router>,
}

/// Aborts the task when dropped, so a heartbeat never outlives its job (an early
/// return or a panic would otherwise leave it extending a dead lease).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `n` worker slots sharing `ctx`; each stops once `shutdown` turns true, after
/// finishing the job in hand.
pub fn spawn_slots(
    ctx: &WorkerContext,
    n: usize,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let name = format!("worker-{}-{}-{i}", hostname(), std::process::id());
            tokio::spawn(run(ctx.clone(), name, shutdown.clone()))
        })
        .collect()
}

/// The machine's name, for lease owners (several machines share one catalog).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}

/// The worker slots of a `tamiz worker` process.
pub struct RunningWorkers {
    pub model_version: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningWorkers {
    /// Lets every slot finish its job in hand, then returns.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// `tamiz worker`: opens the catalog and object store the configuration names, loads
/// the model and runs `worker.concurrency` slots (at least one) that only lease and
/// run triage jobs; no HTTP, no ingest. Any number of such processes, on any machines,
/// share one catalog and one store.
pub async fn start(config: Config) -> anyhow::Result<RunningWorkers> {
    use anyhow::Context;
    let config = Arc::new(config);
    let catalog = Catalog::open(&config)
        .await
        .context("opening the catalog")?;
    let store = crate::storage::open(&config)
        .await
        .context("opening the object store")?;
    let cfg = config.model.clone();
    let model = tokio::task::spawn_blocking(move || Model::load_configured(&cfg)).await??;
    let model_version = model.card.version_key();
    tracing::info!(model = %model_version, catalog = catalog.backend(), "worker process started");
    let ctx = WorkerContext {
        catalog,
        store,
        model,
        config: config.clone(),
        router: Arc::new(crate::routing::Router::new(&config)),
    };
    let (shutdown, rx) = watch::channel(false);
    let tasks = spawn_slots(&ctx, config.worker.concurrency.max(1), &rx);
    Ok(RunningWorkers {
        model_version,
        shutdown,
        tasks,
    })
}

/// Runs one worker until `shutdown` turns true; a job in progress is finished first.
pub async fn run(ctx: WorkerContext, name: String, mut shutdown: watch::Receiver<bool>) {
    let poll = Duration::from_millis(ctx.config.worker.poll_interval_ms);
    let lease_ms = ctx.config.worker.lease_secs as i64 * 1000;
    // Only the jobs of the model this worker has loaded.
    let model_version = ctx.model.card.version_key();
    while !*shutdown.borrow() {
        // Leases are stamped with the database's clock, shared by every process.
        let leased = match ctx.catalog.clock_ms().await {
            Ok(now) => {
                ctx.catalog
                    .lease_job(&name, &model_version, now, lease_ms)
                    .await
            }
            Err(e) => Err(e),
        };
        match leased {
            Ok(Some(job)) => process_job(&ctx, job).await,
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(worker = %name, error = %e, "leasing a job failed");
                tokio::time::sleep(poll).await;
            }
        }
    }
}

/// Processes one leased job to its end (finished, retried or lease lost).
pub async fn process_job(ctx: &WorkerContext, job: Job) {
    let span =
        tracing::info_span!("job", id = job.id, study = %job.study_uid, attempt = job.attempt);
    run_job(ctx, job).instrument(span).await
}

async fn run_job(ctx: &WorkerContext, job: Job) {
    let cfg = &ctx.config.worker;
    let lease_ms = cfg.lease_secs as i64 * 1000;
    let result = if job.attempt > cfg.max_attempts as i64 {
        // Leased again after its last attempt's lease expired (worker crash).
        Err(StudyError::Transient(format!(
            "no attempt finished (last error: {})",
            job.last_error.as_deref().unwrap_or("worker stopped")
        )))
    } else {
        let heartbeat = {
            let (catalog, job) = (ctx.catalog.clone(), job.clone());
            let every = Duration::from_secs(cfg.heartbeat_secs);
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let beat = match catalog.clock_ms().await {
                        Ok(now) => catalog.heartbeat(&job, now, lease_ms).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = beat {
                        tracing::warn!(error = %e, "heartbeat failed");
                        if matches!(e, CatalogError::LeaseLost) {
                            return;
                        }
                    }
                }
            }))
        };
        let r = triage_study(ctx, &job).await;
        drop(heartbeat);
        r
    };
    let (origin, received_ms) = match ctx.catalog.study_origin(&job.study_uid).await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "reading the study failed; the lease will expire and the job run again");
            return;
        }
    };
    let untriaged_item = |cause: UntriagedCause, reason: String| NewItem {
        center: String::new(),
        home_center: None,
        triage: untriaged(cause, reason, &ctx.config.triage, received_ms),
        view_scores: Vec::new(),
        model_version: None,
        reason: String::new(),
    };
    let (outcome, mut item, error) = match result {
        Ok(scored) => {
            let card = &ctx.model.card;
            let mut triage = classify(
                &scored.view_scores,
                &scored.missing,
                &card.operating_points,
                &ctx.config.triage,
                received_ms,
            );
            for note in &scored.notes {
                triage.reason.push_str("; ");
                triage.reason.push_str(note);
            }
            store_report(
                ctx,
                &job.study_uid,
                &scored,
                triage.priority == crate::triage::Priority::Urgent,
            )
            .await;
            let item = NewItem {
                center: String::new(),
                home_center: None,
                triage,
                view_scores: scored.view_scores,
                model_version: Some(card.version_key()),
                reason: String::new(),
            };
            (JobOutcome::Done, item, None)
        }
        Err(StudyError::Permanent { cause, reason }) => (
            JobOutcome::Done,
            untriaged_item(cause, reason.clone()),
            Some(reason),
        ),
        Err(StudyError::Transient(reason)) => {
            if job.attempt < cfg.max_attempts as i64 {
                let backoff =
                    cfg.backoff_base_secs as i64 * 1000 * (1i64 << (job.attempt - 1).clamp(0, 16));
                tracing::warn!(error = %reason, backoff_ms = backoff, "attempt failed; will retry");
                let now = ctx
                    .catalog
                    .clock_ms()
                    .await
                    .unwrap_or_else(|_| crate::now_ms());
                match ctx.catalog.retry_job(&job, &reason, now + backoff).await {
                    Ok(()) => crate::metrics::metrics().count_job("retry"),
                    Err(e) => {
                        if matches!(e, CatalogError::LeaseLost) {
                            crate::metrics::metrics().count_job("lease_lost");
                        }
                        tracing::warn!(error = %e, "could not schedule the retry");
                    }
                }
                return;
            }
            let why = format!("gave up after {} attempts: {reason}", cfg.max_attempts);
            (
                JobOutcome::Dead,
                untriaged_item(UntriagedCause::GaveUp, why.clone()),
                Some(why),
            )
        }
    };
    let now = crate::now_ms();
    let routed = match ctx
        .router
        .route(
            &ctx.catalog,
            origin.as_deref(),
            item.triage.priority,
            item.triage.due_ms,
            now,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "routing the study failed; the lease will expire and the job run again");
            return;
        }
    };
    item.reason = format!(
        "{}; routed to {}: {}",
        item.triage.reason, routed.center, routed.reason
    );
    item.center = routed.center;
    item.home_center = Some(routed.home);
    match ctx
        .catalog
        .finish_job(&job, outcome, &item, error.as_deref(), now)
        .await
    {
        Ok(()) => {
            crate::metrics::metrics().count_job(match outcome {
                JobOutcome::Done => "done",
                JobOutcome::Dead => "dead",
            });
            tracing::info!(priority = item.triage.priority.as_str(), center = %item.center, "study on worklist")
        }
        Err(e) => {
            if matches!(e, CatalogError::LeaseLost) {
                crate::metrics::metrics().count_job("lease_lost");
            }
            tracing::warn!(error = %e, "finishing the job failed; it will run again")
        }
    }
}

/// Why one view could not be prepared for the model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ViewError {
    #[error("could not be decoded: {0}")]
    Unreadable(String),
    #[error("is not an image the model was made for: {0}")]
    Unfit(String),
}

/// Checks, decodes, renders and preprocesses one parsed image as the card says: the
/// attributes against the card's intended input, the rendering against its image
/// statistics, then orientation, crop and resize. Training (`tamiz dataset`),
/// evaluation and the worker all come through here.
pub fn prepare_object(
    obj: &dicom_object::DefaultDicomObject,
    card: &ModelCard,
) -> Result<Vec<f32>, ViewError> {
    let spec = &card.preprocess;
    let checks = &card.input.checks;
    crate::input_check::check_attributes(obj, checks).map_err(ViewError::Unfit)?;
    let t0 = std::time::Instant::now();
    let (img, pipeline) =
        decode(obj, spec.rendering).map_err(|e| ViewError::Unreadable(e.to_string()))?;
    let t1 = std::time::Instant::now();
    crate::input_check::check_rendering(
        &img,
        &pipeline,
        spec.rendering,
        spec.crop_threshold,
        checks,
    )
    .map_err(ViewError::Unfit)?;
    let out = preprocess_oriented(img, spec, Orientation::of(obj));
    let m = crate::metrics::metrics();
    m.observe_stage("decode", (t1 - t0).as_secs_f64());
    m.observe_stage("preprocess", t1.elapsed().as_secs_f64());
    Ok(out)
}

/// [`prepare_object`] of a stored instance's bytes. Panics in the decoder are caught
/// (dicom-rs's RLE reader panics on truncated data).
pub fn prepare_view(bytes: &[u8], card: &ModelCard) -> Result<Vec<f32>, ViewError> {
    catch_unwind(AssertUnwindSafe(|| {
        let obj = dicom_object::OpenFileOptions::new()
            .from_reader(bytes)
            .or_else(|_| {
                dicom_object::OpenFileOptions::new()
                    .read_preamble(dicom_object::file::ReadPreamble::Always)
                    .from_reader(bytes)
            })
            .map_err(|e| ViewError::Unreadable(format!("cannot parse: {e}")))?;
        prepare_object(&obj, card)
    }))
    .unwrap_or_else(|_| {
        Err(ViewError::Unreadable(
            "the decoder crashed on corrupt pixel data".into(),
        ))
    })
}

/// Decodes and preprocesses a study's views into one batch, in order. An error names
/// the view that failed and why. Views are decoded on up to `threads` threads: a
/// 13-megapixel view is ~100 ms of one core.
pub fn prepare_batch<B: AsRef<[u8]> + Sync>(
    views: &[(StoredInstance, B)],
    card: &ModelCard,
    threads: usize,
) -> Result<Vec<f32>, StudyError> {
    let tensors = crate::parallel::parallel_map(views, threads, |(v, bytes)| {
        prepare_view(bytes.as_ref(), card).map_err(|e| {
            let cause = match e {
                ViewError::Unreadable(_) => UntriagedCause::Unreadable,
                ViewError::Unfit(_) => UntriagedCause::InputCheck,
            };
            StudyError::Permanent {
                cause,
                reason: format!("{}-{} {e}", v.laterality, v.view),
            }
        })
    });
    let spec = &card.preprocess;
    let mut batch = Vec::with_capacity(views.len() * spec.height * spec.width);
    for t in tensors {
        batch.extend_from_slice(&t?);
    }
    Ok(batch)
}

/// Pairs the model's scores with the images they belong to.
pub fn name_scores(views: &[StoredInstance], scores: Vec<f32>) -> Vec<ViewScore> {
    views
        .iter()
        .zip(scores)
        .map(|(v, score)| ViewScore {
            laterality: v.laterality.clone(),
            view: v.view.clone(),
            sop_uid: v.sop_uid.clone(),
            score,
        })
        .collect()
}

/// Fetches, decodes, preprocesses and scores a study's screening views.
async fn triage_study(ctx: &WorkerContext, job: &Job) -> Result<Scored, StudyError> {
    let instances = ctx
        .catalog
        .study_instances(&job.study_uid)
        .await
        .map_err(|e| StudyError::Transient(e.to_string()))?;
    let selection = crate::views::select(&instances, &ctx.model.card.input);
    if let Some(why) = selection.refusal {
        return Err(StudyError::Permanent {
            cause: UntriagedCause::ViewSelection,
            reason: why,
        });
    }
    let views = selection.scored;
    let started = std::time::Instant::now();
    // All views are fetched concurrently: object-store latency overlaps.
    let fetched = futures_util::future::try_join_all(views.iter().map(|v| async move {
        let bytes = ctx.store.get(&v.object_key).await.map_err(|e| {
            StudyError::Transient(format!("fetching {}-{}: {e}", v.laterality, v.view))
        })?;
        Ok::<_, StudyError>((v.clone(), bytes))
    }))
    .await?;
    let fetched_at = started.elapsed();
    let (sources, header) = report_sources(&fetched);
    let m = crate::metrics::metrics();
    m.observe_stage("fetch", fetched_at.as_secs_f64());
    let card = ctx.model.card.clone();
    let n = fetched.len();
    let threads = match ctx.config.worker.decode_threads {
        0 => crate::parallel::threads(),
        t => t,
    };
    let batch = tokio::task::spawn_blocking(move || prepare_batch(&fetched, &card, threads))
        .await
        .map_err(|e| StudyError::Transient(format!("preprocessing task failed: {e}")))??;
    let prepared_at = started.elapsed();
    let scores = ctx
        .model
        .infer(batch, n)
        .await
        .map_err(|e| StudyError::Transient(e.to_string()))?;
    m.observe_stage("inference", (started.elapsed() - prepared_at).as_secs_f64());
    tracing::debug!(
        fetch_ms = fetched_at.as_millis() as u64,
        prepare_ms = (prepared_at - fetched_at).as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        views = n,
        "study scored"
    );
    Ok(Scored {
        view_scores: name_scores(&views, scores),
        missing: selection.missing,
        notes: selection.notes,
        sources,
        header,
    })
}

/// Each fetched image's SOP Class and Series Instance UIDs, and the first one's
/// attributes up to the Pixel Data (the images were checked at ingest; one that does
/// not parse here leaves its UIDs empty and the report is not written).
fn report_sources(
    fetched: &[(StoredInstance, bytes::Bytes)],
) -> (
    Vec<(String, String)>,
    Option<dicom_object::InMemDicomObject>,
) {
    use dicom_dictionary_std::tags;
    let mut header = None;
    let sources = fetched
        .iter()
        .map(|(_, bytes)| {
            let parsed = dicom_object::OpenFileOptions::new()
                .read_preamble(dicom_object::file::ReadPreamble::Auto)
                .read_until(tags::PIXEL_DATA)
                .from_reader(&bytes[..]);
            match parsed {
                Ok(obj) => {
                    let uid = |t| {
                        obj.get(t)
                            .and_then(|e| e.to_str().ok())
                            .map(|v| v.trim_end_matches(['\0', ' ']).to_owned())
                            .unwrap_or_default()
                    };
                    let ids = (uid(tags::SOP_CLASS_UID), uid(tags::SERIES_INSTANCE_UID));
                    if header.is_none() {
                        header = Some(obj.into_inner());
                    }
                    ids
                }
                Err(_) => (String::new(), String::new()),
            }
        })
        .collect();
    (sources, header)
}

/// Writes the study's Mammography CAD SR beside it in the object store
/// ([`crate::cad_sr`]). Best effort: the worklist item is what the program runs on,
/// so a report that cannot be written is logged and counted, never a failed triage.
async fn store_report(ctx: &WorkerContext, study_uid: &str, scored: &Scored, urgent: bool) {
    let outcome = write_report(ctx, study_uid, scored, urgent).await;
    let m = crate::metrics::metrics();
    match outcome {
        Ok(()) => m.count_cad_sr("stored"),
        Err(e) => {
            m.count_cad_sr("failed");
            tracing::warn!(error = %e, "the CAD SR was not written");
        }
    }
}

async fn write_report(
    ctx: &WorkerContext,
    study_uid: &str,
    scored: &Scored,
    urgent: bool,
) -> Result<(), String> {
    let header = scored
        .header
        .as_ref()
        .ok_or("no scored image could be read for the patient and study")?;
    let images: Vec<crate::cad_sr::ScoredImage> = scored
        .view_scores
        .iter()
        .zip(&scored.sources)
        .map(|(v, (class, series))| crate::cad_sr::ScoredImage {
            sop_class_uid: class.clone(),
            sop_uid: v.sop_uid.clone(),
            series_uid: series.clone(),
            laterality: v.laterality.clone(),
            view: v.view.clone(),
            score: v.score,
        })
        .collect();
    if images.iter().any(|i| {
        !crate::dicom::is_valid_uid(&i.sop_class_uid) || !crate::dicom::is_valid_uid(&i.series_uid)
    }) {
        return Err("a scored image's SOP class or series could not be read".into());
    }
    let now = chrono::Utc::now();
    let (date, time) = (
        now.format("%Y%m%d").to_string(),
        now.format("%H%M%S").to_string(),
    );
    let obj = crate::cad_sr::build(
        study_uid,
        header,
        &images,
        &ctx.model.card,
        urgent,
        (&date, &time),
    )?;
    let bytes = crate::cad_sr::to_bytes(&obj)?;
    let key = crate::cad_sr::object_key(study_uid, obj.meta().media_storage_sop_instance_uid());
    let dir = &ctx.config.server.data_dir;
    let file = tempfile::NamedTempFile::new_in(dir)
        .or_else(|_| tempfile::NamedTempFile::new())
        .map_err(|e| format!("a scratch file for the CAD SR: {e}"))?;
    std::fs::write(file.path(), &bytes).map_err(|e| format!("writing the CAD SR: {e}"))?;
    ctx.store
        .put_file_if_absent(&key, file.path())
        .await
        .map_err(|e| format!("storing the CAD SR: {e}"))?;
    Ok(())
}
