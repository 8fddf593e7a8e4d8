//! `tamiz serve`: the API, ingest (STOW-RS, the DICOM listener, the bucket inbox
//! scanner), the completeness sweeper
//! and the in-process workers in one process, on the configured catalog and object
//! store.
//!
//! [`start`] takes a bound listener, so tests and the demo run a real server on port 0;
//! [`RunningServer::stop`] drains: the HTTP server stops accepting, workers finish the
//! job in hand, then everything is awaited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{router, AppState};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::ingest::Ingest;
use crate::model::{Model, ModelCard};
use crate::spool::Spool;
use crate::storage::ObjectStore;
use crate::worker::{self, WorkerContext};

pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where the DICOM listener accepts associations (`dicom.addr`), if it runs.
    pub dicom_addr: Option<SocketAddr>,
    pub catalog: Catalog,
    pub store: Arc<dyn ObjectStore>,
    /// The configuration it runs with (what a worker process joining it needs).
    pub config: Arc<Config>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting requests, lets workers finish their current job, and waits.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// `http://ADDR` of the listener (`https://` under TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.config.server.tls_enabled() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }
}

/// Opens storage and catalog under `config.server.data_dir`, loads the model (if this
/// process runs workers) and starts serving on `listener`.
pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<RunningServer> {
    let config = Arc::new(config);
    let data = &config.server.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating data directory {}", data.display()))?;
    let catalog = Catalog::open(&config)
        .await
        .context("opening the catalog")?;
    catalog
        .sync_config(&config)
        .await
        .context("loading centers and targets")?;
    let store = crate::storage::open(&config)
        .await
        .context("opening the object store")?;
    let token_key = crate::auth::TokenKey::load(&config).context("loading the API token key")?;
    let upload_dir = data.join("uploads");
    let spool = Spool::open(&upload_dir, &config.limits)
        .with_context(|| format!("opening the upload spool {}", upload_dir.display()))?;

    let (card, _) = ModelCard::load_configured(&config.model)?;
    let model_version = card.version_key();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut loaded_model = None;

    if config.worker.concurrency > 0 {
        let cfg = config.model.clone();
        let model = tokio::task::spawn_blocking(move || Model::load_configured(&cfg)).await??;
        tracing::info!(model = %model.card.version_key(), notice = %model.card.notice, "model loaded");
        loaded_model = Some(model.card.version_key());
        let ctx = WorkerContext {
            catalog: catalog.clone(),
            store: store.clone(),
            model,
            config: config.clone(),
            router: Arc::new(crate::routing::Router::new(&config)),
        };
        tasks.extend(worker::spawn_slots(
            &ctx,
            config.worker.concurrency,
            &shutdown_rx,
        ));
    }

    tasks.push(tokio::spawn(sweep_stable_studies(
        catalog.clone(),
        config.clone(),
        model_version.clone(),
        shutdown_rx.clone(),
    )));

    if config.exchange.rebalance_interval_secs > 0 {
        tasks.push(tokio::spawn(rebalance_worklists(
            catalog.clone(),
            config.clone(),
            shutdown_rx.clone(),
        )));
    }

    let store_handle = store.clone();
    let ingest = Ingest {
        catalog: catalog.clone(),
        store,
        config: config.clone(),
        model_version,
        spool,
    };
    let dicom_tls = crate::dimse::tls_config(&config)?;
    let dicom_listener = crate::dimse::bind(&config).await?;
    let dicom_addr = dicom_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(listener) = dicom_listener {
        tasks.push(tokio::spawn(crate::dimse::serve(
            listener,
            ingest.clone(),
            dicom_tls,
            shutdown_rx.clone(),
        )));
    }
    if config.inbox.enabled {
        tasks.push(tokio::spawn(crate::inbox::run(
            ingest.clone(),
            shutdown_rx.clone(),
        )));
    }
    let app = router(AppState {
        ingest,
        catalog: catalog.clone(),
        config: config.clone(),
        model: loaded_model,
        token_key,
        oidc: crate::oidc::OidcVerifier::from_config(&config).map(Arc::new),
    });
    let addr = listener.local_addr()?;
    let tls = match (&config.server.tls_cert_file, &config.server.tls_key_file) {
        (Some(cert), Some(key)) => Some(
            crate::http::tls_acceptor(cert, key)
                .map_err(anyhow::Error::msg)
                .context("setting up TLS for the HTTP listener")?,
        ),
        _ => {
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    %addr,
                    "serving plain HTTP on an address that is not loopback: credentials and \
                     patient data cross the network unencrypted; set server.tls_cert_file and \
                     server.tls_key_file, or put a TLS proxy in front and listen on loopback"
                );
            }
            None
        }
    };
    let (limits, http_shutdown) = (config.limits.clone(), shutdown_rx.clone());
    tasks.push(tokio::spawn(async move {
        crate::http::serve(listener, app, &limits, tls, http_shutdown).await;
    }));
    tracing::info!(%addr, data_dir = %data.display(), "tamiz serving");
    Ok(RunningServer {
        addr,
        dicom_addr,
        catalog,
        store: store_handle,
        config: config.clone(),
        shutdown: shutdown_tx,
        tasks,
    })
}

/// Moves queued items that their center would read too late to a partner center
/// (`routing::rebalance`); safe with several API nodes.
async fn rebalance_worklists(
    catalog: Catalog,
    config: Arc<Config>,
    mut shutdown: watch::Receiver<bool>,
) {
    let router = crate::routing::Router::new(&config);
    let every = Duration::from_secs(config.exchange.rebalance_interval_secs.max(1));
    loop {
        let now = catalog.clock_ms().await.unwrap_or_else(|_| crate::now_ms());
        match crate::routing::rebalance(&router, &catalog, now).await {
            Ok(moved) if moved.is_empty() => {}
            Ok(moved) => tracing::info!(items = moved.len(), "worklist items rebalanced"),
            Err(e) => tracing::warn!(error = %e, "rebalancing failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Makes ready the studies that stopped receiving instances without completing their
/// four views.
async fn sweep_stable_studies(
    catalog: Catalog,
    config: Arc<Config>,
    model_version: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let c = &config.completeness;
    let every = Duration::from_secs(c.sweep_interval_secs.max(1));
    loop {
        let now = crate::now_ms();
        match catalog
            .mark_stable_studies_ready(
                now - c.stable_after_secs as i64 * 1000,
                c.stable_after_secs,
                &model_version,
                now,
            )
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(studies = n, "stable studies made ready"),
            Err(e) => tracing::warn!(error = %e, "stability sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
