//! `/metrics`: what operators watch, in the Prometheus text format (OpenMetrics, from
//! the `prometheus-client` crate). Counters and latency histograms are this process's
//! (ingest on API nodes, stages on workers); the queue gauges are read from the
//! catalog at each scrape, so every node reports the program's one backlog. No
//! patient data, no UIDs: labels are outcomes, stages, centers and priorities.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::catalog::Catalog;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub center: String,
    pub priority: String,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// Instances received, by outcome: stored, already_stored, refused, temporary,
    /// disk_full.
    pub ingest_instances: Family<OutcomeLabel, Counter>,
    /// Bytes of instances newly stored.
    pub ingest_bytes: Counter,
    /// Files of the bucket inbox handled by this process, by outcome: stored,
    /// already_stored, rejected, left, retry, skipped.
    pub inbox_files: Family<OutcomeLabel, Counter>,
    /// C-STORE requests answered by this process's DICOM listener: stored (including
    /// already stored) or refused.
    pub dimse_stores: Family<OutcomeLabel, Counter>,
    pub cad_reports: Family<OutcomeLabel, Counter>,
    /// Job attempts by how they ended: done, dead, retry, lease_lost.
    pub job_attempts: Family<OutcomeLabel, Counter>,
    /// Seconds per worker stage: fetch (a study's views), decode and preprocess (a
    /// view), inference (a study's batch).
    pub stage_seconds: Family<StageLabel, Histogram, fn() -> Histogram>,
    jobs: Family<StateLabel, Gauge>,
    worklist_open: Family<QueueLabel, Gauge>,
    worklist_oldest: Family<QueueLabel, Gauge<f64, AtomicU64>>,
    untriaged: Family<CauseLabel, Gauge>,
    drifting: Family<CenterLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CenterLabel {
    pub center: String,
}

fn stage_histogram() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("tamiz");
    let ingest_instances = Family::default();
    registry.register(
        "ingest_instances",
        "Instances received over STOW-RS, by outcome",
        ingest_instances.clone(),
    );
    let ingest_bytes = Counter::default();
    registry.register(
        "ingest_stored_bytes",
        "Bytes of instances newly stored",
        ingest_bytes.clone(),
    );
    let inbox_files = Family::default();
    registry.register(
        "inbox_files",
        "Files of the bucket inbox handled by this process, by outcome",
        inbox_files.clone(),
    );
    let dimse_stores = Family::default();
    registry.register(
        "dicom_c_store_requests",
        "C-STORE requests answered by the DICOM listener, by outcome",
        dimse_stores.clone(),
    );
    let cad_reports = Family::default();
    registry.register(
        "cad_sr_reports",
        "Mammography CAD SR reports written by this process's workers, by outcome",
        cad_reports.clone(),
    );
    let job_attempts = Family::default();
    registry.register(
        "job_attempts",
        "Triage job attempts run by this process, by how they ended",
        job_attempts.clone(),
    );
    let stage_seconds = Family::new_with_constructor(stage_histogram as fn() -> Histogram);
    registry.register(
        "stage_seconds",
        "Worker stage latency: fetch per study, decode and preprocess per view, inference per study",
        stage_seconds.clone(),
    );
    let jobs = Family::default();
    registry.register("jobs", "Triage jobs in the catalog, by state", jobs.clone());
    let worklist_open = Family::default();
    registry.register(
        "worklist_open_items",
        "Open worklist items (queued or claimed) per diagnosis center and priority",
        worklist_open.clone(),
    );
    let worklist_oldest = Family::default();
    registry.register(
        "worklist_oldest_open_item_age_seconds",
        "Age of the oldest open worklist item per diagnosis center and priority",
        worklist_oldest.clone(),
    );
    let untriaged = Family::default();
    registry.register(
        "untriaged_studies",
        "Studies sent out untriaged (never scored), by cause: view_selection, input_check, unreadable, gave_up",
        untriaged.clone(),
    );
    let drifting = Family::default();
    registry.register(
        "center_drifting",
        "1 when an imaging center's last 7 days differ from the program's (shares of urgent, low, untriaged studies or mean score; see the summary's drift reasons)",
        drifting.clone(),
    );
    Metrics {
        registry,
        ingest_instances,
        ingest_bytes,
        inbox_files,
        dimse_stores,
        cad_reports,
        job_attempts,
        stage_seconds,
        jobs,
        worklist_open,
        worklist_oldest,
        untriaged,
        drifting,
    }
});

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    pub fn count_ingest(&self, outcome: &'static str) {
        self.ingest_instances
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn count_dimse(&self, outcome: &'static str) {
        self.dimse_stores
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn count_cad_sr(&self, outcome: &'static str) {
        self.cad_reports
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn count_inbox(&self, outcome: &'static str) {
        self.inbox_files
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn count_job(&self, outcome: &'static str) {
        self.job_attempts
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn observe_stage(&self, stage: &'static str, seconds: f64) {
        self.stage_seconds
            .get_or_create(&StageLabel { stage })
            .observe(seconds);
    }

    /// The text exposition, with the queue gauges read from the catalog now.
    pub async fn render(
        &self,
        catalog: &Catalog,
        drift: &crate::drift::DriftConfig,
    ) -> Result<String, crate::catalog::CatalogError> {
        let now = catalog.clock_ms().await?;
        let snapshot = catalog.queue_snapshot().await?;
        self.jobs.clear();
        for (state, n) in snapshot.jobs {
            self.jobs.get_or_create(&StateLabel { state }).set(n);
        }
        self.worklist_open.clear();
        self.worklist_oldest.clear();
        for q in snapshot.open {
            let label = QueueLabel {
                center: q.center,
                priority: q.priority,
            };
            self.worklist_open.get_or_create(&label).set(q.count);
            self.worklist_oldest
                .get_or_create(&label)
                .set(((now - q.oldest_created_ms).max(0)) as f64 / 1000.0);
        }
        self.drifting.clear();
        let this_week = crate::drift::DriftConfig {
            weeks: 1,
            ..drift.clone()
        };
        for w in catalog.drift_weeks(now, &this_week).await? {
            self.drifting
                .get_or_create(&CenterLabel { center: w.center })
                .set(i64::from(w.drifting));
        }
        for (cause, n) in snapshot.untriaged {
            self.untriaged.get_or_create(&CauseLabel { cause }).set(n);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).map_err(|e| {
            crate::catalog::CatalogError::NotFound(format!("encoding metrics: {e}"))
        })?;
        Ok(out)
    }
}
