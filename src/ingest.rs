//! Ingest: one uploaded instance (already streamed to a temporary file) is validated,
//! written to the object store and catalogued, whatever protocol brought it.
//!
//! Order matters for "no study lost" and "bad input changes nothing": validate fully
//! before anything is written; write the object before the catalog row (so every
//! catalogued instance has its bytes); never overwrite an object (a crash between the
//! two steps leaves an uncatalogued object, which the next identical upload adopts).

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, CatalogError, InsertOutcome};
use crate::config::Config;
use crate::dicom::{InstanceMeta, InvalidInstance};
use crate::routing::identify_imaging_center;
use crate::spool::Spool;
use crate::storage::{instance_key, ObjectStore, PutOutcome, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Invalid(#[from] InvalidInstance),
    #[error(
        "instance {sop_uid} is already stored with different content; the stored instance was kept"
    )]
    Conflict {
        sop_uid: String,
        sop_class_uid: String,
    },
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
    #[error("catalog error: {0}")]
    Catalog(#[from] CatalogError),
    #[error("reading the upload: {0}")]
    Io(#[from] std::io::Error),
}

impl IngestError {
    /// The sender did nothing wrong: the same bytes may succeed later (storage,
    /// catalog or local I/O trouble on the server's side).
    pub fn is_temporary(&self) -> bool {
        !matches!(self, IngestError::Invalid(_) | IngestError::Conflict { .. })
    }

    /// The DICOM failure reason for an error that is the sender's (the instance must
    /// be fixed); `None` for a server-side problem worth retrying.
    pub fn failure_reason(&self) -> Option<u16> {
        match self {
            IngestError::Invalid(inv) => Some(inv.failure_reason()),
            // PS3.4 Table GG.4-1 / PS3.18: the SOP Instance UID is stored with other content.
            IngestError::Conflict { .. } => Some(0x0111),
            _ => None,
        }
    }

    /// The server's disk (or quota) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            IngestError::Io(e) | IngestError::Store(StoreError::Io { source: e, .. }) => {
                is_disk_full(e)
            }
            _ => false,
        }
    }
}

/// ENOSPC or EDQUOT.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28) | Some(122))
}

/// What happened to an accepted instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    Stored,
    /// The identical instance was already stored: nothing changed.
    AlreadyStored,
}

/// Everything ingest needs, shared by every upload path.
#[derive(Clone)]
pub struct Ingest {
    pub catalog: Catalog,
    pub store: Arc<dyn ObjectStore>,
    pub config: Arc<Config>,
    /// Model card `name@version`: ready studies get one job for it.
    pub model_version: String,
    /// Where uploads are streamed before validation, and the bounds on them.
    pub spool: Spool,
}

impl Ingest {
    /// Validates and stores one instance from `path`. `expected_study` is the study
    /// named in the request URL, if any; `declared_center` the imaging center the
    /// uploader says it is.
    ///
    /// `hold` (the upload's admission permit and spool file) moves into the blocking
    /// parse and is dropped when the parse ends: if the client goes away and this
    /// future is dropped, the parse still runs to its end, and the bounds it counts
    /// against stay taken until then.
    pub async fn ingest_file<H: Send + 'static>(
        &self,
        path: &Path,
        expected_study: Option<&str>,
        declared_center: Option<&str>,
        hold: H,
    ) -> Result<(InstanceMeta, Accepted), IngestError> {
        let limits = self.config.limits.clone();
        let p = path.to_owned();
        let parse = move || {
            let r = parse_and_hash(&p, &limits);
            drop(hold);
            r
        };
        let (meta, sha256, size) = match tokio::task::spawn_blocking(parse).await {
            Ok(r) => r?,
            // A panic while reading the file is a parser bug that these bytes trigger:
            // retrying them cannot help, so it is a refusal, not "retry later".
            Err(e) if e.is_panic() => {
                tracing::error!(study = ?expected_study, "parsing an upload panicked");
                return Err(InvalidInstance::NotDicom(
                    "the file could not be parsed (internal parser failure, logged)".into(),
                )
                .into());
            }
            Err(e) => return Err(IngestError::Io(std::io::Error::other(e))),
        };
        if let Some(expected) = expected_study {
            if expected != meta.study_uid {
                return Err(InvalidInstance::WrongStudy {
                    expected: expected.chars().take(64).collect(),
                    found: meta.study_uid.clone(),
                }
                .into());
            }
        }
        let conflict = || IngestError::Conflict {
            sop_uid: meta.sop_instance_uid.clone(),
            sop_class_uid: meta.sop_class_uid.clone(),
        };
        // Fast path for resends: nothing is written.
        match self.catalog.instance_sha256(&meta.sop_instance_uid).await? {
            Some(existing) if existing == sha256 => {
                crate::metrics::metrics().count_ingest("already_stored");
                return Ok((meta, Accepted::AlreadyStored));
            }
            Some(_) => return Err(conflict()),
            None => {}
        }
        let key = instance_key(&meta.study_uid, &meta.series_uid, &meta.sop_instance_uid);
        let mut attempts = 0;
        let created = loop {
            attempts += 1;
            if self.store.put_file_if_absent(&key, path).await? == PutOutcome::Created {
                break true;
            }
            // An uncatalogued object: left by a crash after the write (adopt it if it
            // is the same bytes) or by a concurrent upload of different bytes.
            match crate::storage::sha256(self.store.as_ref(), &key).await {
                Ok(existing) if existing == sha256 => break false,
                Ok(_) => return Err(conflict()),
                // Gone since: a concurrent upload made it, was refused by the catalog
                // and removed it. Write it ourselves.
                Err(StoreError::NotFound(_)) if attempts < 3 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let center = identify_imaging_center(
            &self.config,
            declared_center,
            meta.institution_name.as_deref(),
        );
        let outcome = self
            .catalog
            .insert_instance(
                &meta,
                center.as_deref(),
                &key,
                size,
                &sha256,
                &self.model_version,
                crate::now_ms(),
            )
            .await?;
        match outcome {
            InsertOutcome::Inserted {
                study_ready,
                retriage,
            } => {
                let m = crate::metrics::metrics();
                m.count_ingest("stored");
                m.ingest_bytes.inc_by(size);
                tracing::info!(study = %meta.study_uid, sop = %meta.sop_instance_uid, study_ready, retriage, "instance stored");
                Ok((meta, Accepted::Stored))
            }
            InsertOutcome::Duplicate => {
                crate::metrics::metrics().count_ingest("already_stored");
                Ok((meta, Accepted::AlreadyStored))
            }
            InsertOutcome::Conflict { .. } => {
                // A concurrent upload catalogued this SOP Instance UID first (under
                // another study, or with other bytes) after our check above. The object
                // we just created is referenced by nothing: remove it, never leave an
                // orphan. An object we adopted was not ours to remove.
                if created {
                    self.remove_uncatalogued(&key, &meta).await;
                }
                Err(conflict())
            }
            InsertOutcome::StudyMismatch { reason } => {
                if created {
                    self.remove_uncatalogued(&key, &meta).await;
                }
                Err(InvalidInstance::StudyMismatch {
                    study: meta.study_uid.clone(),
                    reason,
                }
                .into())
            }
        }
    }

    /// Removes an object this ingest created but could not catalogue.
    async fn remove_uncatalogued(&self, key: &str, meta: &InstanceMeta) {
        if let Err(e) = self.store.delete(key).await {
            tracing::warn!(error = %e, study = %meta.study_uid, sop = %meta.sop_instance_uid, "removing an uncatalogued object failed");
        }
    }
}

/// Checks the file as a stream ([`crate::dicom::inspect`]: structure, attributes,
/// Pixel Data layout; memory stays constant whatever the file declares), then hashes
/// its bytes.
fn parse_and_hash(
    path: &Path,
    limits: &crate::config::Limits,
) -> Result<(InstanceMeta, String, u64), IngestError> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let meta = crate::dicom::inspect(
        std::io::BufReader::with_capacity(1 << 16, file),
        size,
        limits,
    )?;
    Ok((meta, sha256_file(path)?, size))
}

/// Hex SHA-256 of a file, read in chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
