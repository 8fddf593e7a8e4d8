//! The DICOM listener: modalities and PACS push studies with C-STORE over DICOM
//! networking (PS3.7, PS3.8), and check the link with C-ECHO.
//!
//! Associations are negotiated by dicom-ul (async); the calling AE title must be one
//! of an imaging center's `ae_titles` and the called AE title this node's, or the
//! association is rejected. Each instance's data set is streamed into the upload spool
//! behind a Part 10 header built from the presentation context, then goes through the
//! same [`Ingest`] path as STOW-RS: same validation, storage, catalog and completeness,
//! and the outcome is the C-STORE status (PS3.4 Annex B.2.3) with an Error Comment
//! naming the problem.
//!
//! Bounds: at most `dicom.max_associations` at once (beyond that a request gets a
//! transient rejection, "local limit exceeded", so the sender retries); PDUs of at most
//! `dicom.max_pdu_length`; an association idle for `dicom.idle_timeout_secs` is
//! aborted; an instance counts against the spool's limits like an upload.

mod association;
pub mod command;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use dicom_ul::ServerAssociationOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::ingest::Ingest;

/// Verification SOP Class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// This implementation's class UID and version name (PS3.7 §D.3.3.2), written in the
/// file meta of each received instance.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.207151381052843411530627476452302157357";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("TAMIZ_", env!("CARGO_PKG_VERSION"));

/// The storage SOP classes negotiated: the mammography classes, and CR, DX and
/// Secondary Capture, which carry mammograms when their Modality is MG.
pub fn storage_sop_classes() -> impl Iterator<Item = &'static str> {
    crate::dicom::MAMMOGRAPHY_SOP_CLASSES
        .iter()
        .chain(crate::dicom::GENERIC_IMAGE_SOP_CLASSES)
        .copied()
}

/// Accepts a calling AE title that belongs to an imaging center, called with this
/// node's AE title.
struct CenterAeTitles {
    config: Arc<Config>,
}

impl AccessControl for CenterAeTitles {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            tracing::warn!(called = %called_ae_title.trim(), "association for another AE title rejected");
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if self.config.center_of_ae_title(calling_ae_title).is_none() {
            tracing::warn!(calling = %calling_ae_title.trim(), "association from an unknown AE title rejected");
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// What every association needs.
pub(crate) struct Listener {
    options: ServerAssociationOptions<
        'static,
        CenterAeTitles,
        dicom_ul::association::server::DefaultNegotiation,
    >,
    ingest: Ingest,
    config: Arc<Config>,
    /// Associations speak TLS (`dicom.tls_cert_file` and `tls_key_file`).
    tls: bool,
}

/// Binds `dicom.addr`; `None` when no DICOM listener is configured.
pub async fn bind(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = &config.dicom.addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the DICOM listener to {addr}: {e}"))?;
    Ok(Some(listener))
}

/// The TLS configuration of the DICOM listener, if it speaks TLS: read at start-up so
/// that a bad certificate stops the server with the reason.
pub fn tls_config(
    config: &Config,
) -> anyhow::Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>> {
    match (&config.dicom.tls_cert_file, &config.dicom.tls_key_file) {
        (Some(cert), Some(key)) => crate::http::tls_server_config(cert, key)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("setting up TLS for the DICOM listener: {e}")),
        _ => Ok(None),
    }
}

/// Serves associations on `listener` until `shutdown`; then stops accepting and waits
/// for the associations in progress (each ends at its sender's release, or its idle
/// timeout).
pub async fn serve(
    listener: TcpListener,
    ingest: Ingest,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = ingest.config.clone();
    let d = &config.dicom;
    if tls.is_none() {
        if let Ok(addr) = listener.local_addr() {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "DICOM listener without TLS on an address that is not loopback: images cross the network unencrypted; set dicom.tls_cert_file and dicom.tls_key_file, or use a VPN between sites");
            }
        }
    }
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(CenterAeTitles {
            config: config.clone(),
        })
        .ae_title(d.ae_title.clone())
        .max_pdu_length(d.max_pdu_length)
        .read_timeout(Duration::from_secs(d.idle_timeout_secs))
        .write_timeout(Duration::from_secs(d.idle_timeout_secs))
        .with_abstract_syntax(VERIFICATION);
    for class in storage_sop_classes() {
        options = options.with_abstract_syntax(class);
    }
    for ts in crate::dicom::ACCEPTED_TRANSFER_SYNTAXES {
        options = options.with_transfer_syntax(*ts);
    }
    let is_tls = tls.is_some();
    if let Some(tls) = tls {
        options = options.tls_config(tls);
    }
    let shared = Arc::new(Listener {
        options,
        ingest,
        config: config.clone(),
        tls: is_tls,
    });
    let slots = Arc::new(Semaphore::new(d.max_associations));
    let mut running = tokio::task::JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, ae_title = %d.ae_title, tls = is_tls, "DICOM listener");
    }
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => Some(r),
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let (socket, peer) = match accepted {
            None => break,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "accepting a DICOM connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Reap finished associations so the set does not grow.
        while running.try_join_next().is_some() {}
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                running.spawn(async move {
                    association::run(&shared, socket, peer).await;
                    drop(permit);
                });
            }
            Err(_) => {
                running.spawn(reject_busy(socket, peer, d.max_associations));
            }
        }
    }
    while running.join_next().await.is_some() {}
}

/// A-ASSOCIATE-RJ, transient, service provider (presentation), local limit exceeded
/// (PS3.8 §9.3.4): written by hand, after reading what the requester sent, because
/// the request is not negotiated at all.
async fn reject_busy(mut socket: TcpStream, peer: SocketAddr, max: usize) {
    tracing::warn!(%peer, max_associations = max, "DICOM association rejected: too many at once");
    let mut buf = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf)).await;
    let rj = [0x03, 0, 0, 0, 0, 4, 0, 2, 3, 2];
    let _ = socket.write_all(&rj).await;
    let _ = socket.shutdown().await;
}

impl Listener {
    fn center_of(&self, calling_ae_title: &str) -> Option<String> {
        self.config
            .center_of_ae_title(calling_ae_title)
            .map(|c| c.id.clone())
    }
}
