//! The bucket inbox: an imaging center that cannot speak DICOM networking drops
//! DICOM files under `inbox/{center}/` in the object store (the S3 bucket, or
//! `objects/inbox/` of the embedded store), and every API node scans it.
//!
//! Each file goes through the same validation, storage and catalog path as a STOW-RS
//! upload ([`Ingest::ingest_file`]), with the folder naming the imaging center, then:
//! - stored (or already stored): a receipt `done/{center}/{name}.json` names the
//!   study, series and instance and where the instance is kept, and the dropped file is
//!   removed (its bytes are the stored instance; a second copy under `done/` would
//!   double the storage of every study that came this way);
//! - refused: the file moves to `rejected/{center}/{name}` with the reason object
//!   `rejected/{center}/{name}.reason.json` beside it (the same reason text and DICOM
//!   failure code a STOW-RS client would get);
//! - a server-side problem (catalog or store unreachable, spool full): the file stays
//!   and is tried again at the next scan.
//!
//! A file that cannot be taken at all stays where it is, with a reason object under
//! `rejected/` telling the center why: one larger than `limits.max_instance_bytes`,
//! one not inside a center's folder, or one whose name has characters a key may not
//! hold.
//!
//! Safe with several API nodes: a node claims a file in the catalog before handling
//! it ([`crate::catalog::Catalog::claim_inbox`]), and every step is idempotent, so a node that dies
//! mid-file leaves it to be finished by whoever claims it after the claim expires. A
//! file is handled only once two consecutive scans saw it with the same size, so a
//! file still being copied into the embedded store's folder is never read half-written
//! (S3 objects appear whole, and names starting with `.` are never listed).
//!
//! File names are the centers' and may carry patient names: logs name a file by a
//! short hash of its key, never by the key.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::ingest::{Accepted, Ingest};
use crate::spool::{SpoolError, SpoolFile};
use crate::storage::{check_key, sanitize_key_part, Listed, PutOutcome, StoreError};

/// Where centers drop files.
pub const INBOX_PREFIX: &str = "inbox/";
/// Receipts of files that were stored.
pub const DONE_PREFIX: &str = "done/";
/// Refused files and the reason objects of every file not taken.
pub const REJECTED_PREFIX: &str = "rejected/";

/// How one file was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboxOutcome {
    Stored,
    AlreadyStored,
    /// Refused: moved to `rejected/` with its reason.
    Rejected,
    /// Cannot be taken: left in place, with a reason object under `rejected/`.
    Left,
    /// A server-side problem: tried again at the next scan.
    Retry,
    /// Another node is handling it, or handled it since the listing.
    Skipped,
}

impl InboxOutcome {
    fn as_str(self) -> &'static str {
        match self {
            InboxOutcome::Stored => "stored",
            InboxOutcome::AlreadyStored => "already_stored",
            InboxOutcome::Rejected => "rejected",
            InboxOutcome::Left => "left",
            InboxOutcome::Retry => "retry",
            InboxOutcome::Skipped => "skipped",
        }
    }
}

/// One node's scanner. It remembers what the previous scan saw (for the settle rule)
/// and which files it already explained (so a file left in place is not re-reported
/// at every scan).
pub struct InboxScanner {
    ingest: Ingest,
    owner: String,
    seen: HashMap<String, u64>,
    explained: HashSet<(String, u64)>,
}

impl InboxScanner {
    pub fn new(ingest: Ingest) -> InboxScanner {
        InboxScanner {
            ingest,
            owner: format!(
                "inbox-{}-{}",
                std::process::id(),
                hex::encode(rand::random::<[u8; 4]>())
            ),
            seen: HashMap::new(),
            explained: HashSet::new(),
        }
    }

    /// Lists the inbox and handles every file that has settled, up to
    /// `inbox.concurrency` at once. Returns the outcome of each file handled.
    pub async fn scan(
        &mut self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Vec<InboxOutcome>, StoreError> {
        let listed = self.ingest.store.list_sized(INBOX_PREFIX).await?;
        let previous = std::mem::replace(
            &mut self.seen,
            listed.iter().map(|o| (o.key.clone(), o.size)).collect(),
        );
        let settled: Vec<Listed> = listed
            .into_iter()
            // S3 consoles make "folders" as empty objects named `inbox/x/`.
            .filter(|o| !o.key.ends_with('/'))
            .filter(|o| previous.get(&o.key) == Some(&o.size))
            .filter(|o| !self.explained.contains(&(o.key.clone(), o.size)))
            .collect();
        let limit = self.ingest.config.inbox.concurrency.max(1);
        let this = &*self;
        let results: Vec<(Listed, InboxOutcome)> = futures_util::stream::iter(settled)
            .map(|o| async move {
                if *shutdown.borrow() {
                    return (o, InboxOutcome::Retry);
                }
                let outcome = this.handle(&o).await;
                (o, outcome)
            })
            .buffer_unordered(limit)
            .collect()
            .await;
        let m = crate::metrics::metrics();
        let mut outcomes = Vec::with_capacity(results.len());
        for (o, outcome) in results {
            if outcome == InboxOutcome::Left {
                self.explained.insert((o.key.clone(), o.size));
            }
            m.count_inbox(outcome.as_str());
            outcomes.push(outcome);
        }
        // Forget explanations of files that are gone.
        let seen = &self.seen;
        self.explained.retain(|(k, _)| seen.contains_key(k));
        Ok(outcomes)
    }

    /// Handles one settled file.
    async fn handle(&self, o: &Listed) -> InboxOutcome {
        let file = short_hash(&o.key);
        let rest = &o.key[INBOX_PREFIX.len()..];
        let Some((center, name)) = rest.split_once('/') else {
            return self
                .leave(
                    &o.key,
                    &format!("{REJECTED_PREFIX}{}", sanitize_key_part(rest)),
                    "files must be dropped in a folder named after the imaging center: inbox/{center}/{file}".into(),
                )
                .await;
        };
        let reason_base = format!(
            "{REJECTED_PREFIX}{}/{}",
            sanitize_key_part(center),
            sanitize_key_part(name)
        );
        if check_key(&o.key).is_err() {
            return self
                .leave(
                    &o.key,
                    &reason_base,
                    "the file name has characters tamiz cannot use in an object key (allowed: letters, digits, space and . _ - + ( ) = , @ ~): rename it".into(),
                )
                .await;
        }
        let limits = &self.ingest.config.limits;
        if o.size > limits.max_instance_bytes {
            return self
                .leave(
                    &o.key,
                    &reason_base,
                    format!(
                        "the file is {} bytes, more than the largest accepted instance ({} bytes, limits.max_instance_bytes); it was left in the inbox: remove it",
                        o.size, limits.max_instance_bytes
                    ),
                )
                .await;
        }
        let claim_ms = self.ingest.config.inbox.claim_secs as i64 * 1000;
        match self
            .ingest
            .catalog
            .claim_inbox(&o.key, &self.owner, claim_ms)
            .await
        {
            Ok(true) => {}
            Ok(false) => return InboxOutcome::Skipped,
            Err(e) => {
                tracing::warn!(error = %e, %file, "claiming an inbox file failed");
                return InboxOutcome::Retry;
            }
        }
        let outcome = self.ingest_claimed(o, center, name, &file).await;
        if let Err(e) = self.ingest.catalog.release_inbox(&o.key, &self.owner).await {
            // The claim expires by itself.
            tracing::warn!(error = %e, %file, "releasing an inbox claim failed");
        }
        outcome
    }

    async fn ingest_claimed(
        &self,
        o: &Listed,
        center: &str,
        name: &str,
        file: &str,
    ) -> InboxOutcome {
        let permit = match self.ingest.spool.admit() {
            Ok(p) => p,
            Err(_) => return InboxOutcome::Retry,
        };
        let spooled = match self.download(&o.key).await {
            // Replaced since it was listed: the next scans see the new file settle.
            Ok(s) if s.len() != o.size => return InboxOutcome::Retry,
            Ok(s) => s,
            Err(DownloadError::Gone) => return InboxOutcome::Skipped,
            Err(DownloadError::Failed(e)) => {
                tracing::warn!(error = %scrub(&e, name), %file, "reading an inbox file failed; retrying at the next scan");
                return InboxOutcome::Retry;
            }
        };
        let refusal = if self.ingest.config.imaging_center(center).is_none() {
            Refusal {
                reason: format!(
                    "`{center}` is not a configured imaging center: files must be dropped in inbox/{{center}}/ under the id of their center"
                ),
                code: 0xA900,
            }
        } else {
            match self
                .ingest
                .ingest_file(spooled.path(), None, Some(center), permit)
                .await
            {
                Ok((meta, accepted)) => {
                    let receipt = json!({
                        "file": o.key,
                        "status": match accepted {
                            Accepted::Stored => "stored",
                            Accepted::AlreadyStored => "already stored",
                        },
                        "imaging_center": center,
                        "study_instance_uid": meta.study_uid,
                        "series_instance_uid": meta.series_uid,
                        "sop_instance_uid": meta.sop_instance_uid,
                        "handled_at": crate::api::iso_time(crate::now_ms()),
                    });
                    if let Err(e) = self.put_receipt(center, name, &receipt).await {
                        tracing::warn!(error = %scrub(&e, name), %file, "writing an inbox receipt failed; retrying at the next scan");
                        return InboxOutcome::Retry;
                    }
                    if let Err(e) = self.ingest.store.delete(&o.key).await {
                        tracing::warn!(error = %scrub(&e, name), %file, "removing a handled inbox file failed");
                        return InboxOutcome::Retry;
                    }
                    tracing::info!(%file, center, "inbox file stored");
                    return match accepted {
                        Accepted::Stored => InboxOutcome::Stored,
                        Accepted::AlreadyStored => InboxOutcome::AlreadyStored,
                    };
                }
                Err(e) => match e.failure_reason() {
                    Some(code) => Refusal {
                        reason: e.to_string(),
                        code,
                    },
                    None => {
                        tracing::warn!(error = %scrub(&e, name), %file, "ingesting an inbox file failed on the server's side; retrying at the next scan");
                        return InboxOutcome::Retry;
                    }
                },
            }
        };
        match self.reject(o, center, name, &spooled, &refusal).await {
            Ok(()) => {
                tracing::info!(%file, center, code = refusal.code, "inbox file rejected");
                InboxOutcome::Rejected
            }
            Err(e) => {
                tracing::warn!(error = %scrub(&e, name), %file, "moving a refused inbox file failed; retrying at the next scan");
                InboxOutcome::Retry
            }
        }
    }

    /// Writes the receipt `done/{center}/{name}.json`; when an earlier file of the
    /// same name (scanners reuse names) left one for another instance, this one is
    /// `{name}~{ms}.json`, so a receipt never names the wrong study.
    async fn put_receipt(
        &self,
        center: &str,
        name: &str,
        receipt: &serde_json::Value,
    ) -> Result<(), String> {
        let key = format!("{DONE_PREFIX}{center}/{name}.json");
        if self.put_json(&key, receipt).await? == PutOutcome::Created {
            return Ok(());
        }
        let existing: serde_json::Value = match self.ingest.store.get(&key).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(e) => return Err(e.to_string()),
        };
        let same = ["sop_instance_uid", "status"]
            .iter()
            .all(|f| existing.get(f) == receipt.get(f));
        if same {
            return Ok(());
        }
        let key = format!("{DONE_PREFIX}{center}/{name}~{}.json", crate::now_ms());
        self.put_json(&key, receipt).await.map(|_| ())
    }

    /// Streams object `key` into a new spool file, within the spool's bounds.
    async fn download(&self, key: &str) -> Result<SpoolFile, DownloadError> {
        let mut reader = match self.ingest.store.reader(key).await {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => return Err(DownloadError::Gone),
            Err(e) => return Err(DownloadError::Failed(e.to_string())),
        };
        let mut spooled = self
            .ingest
            .spool
            .create()
            .await
            .map_err(|e| DownloadError::Failed(e.to_string()))?;
        let mut buf = vec![0u8; 1 << 20];
        let max = self.ingest.config.limits.max_instance_bytes;
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| DownloadError::Failed(e.to_string()))?;
            if n == 0 {
                break;
            }
            if spooled.len() + n as u64 > max {
                // Grew since it was listed: the next scan sees its new size.
                return Err(DownloadError::Failed(
                    "the file grew while being read".into(),
                ));
            }
            spooled
                .write(&buf[..n])
                .await
                .map_err(|e: SpoolError| DownloadError::Failed(e.to_string()))?;
        }
        spooled
            .finish()
            .await
            .map_err(|e| DownloadError::Failed(e.to_string()))?;
        Ok(spooled)
    }

    /// Moves a refused file to `rejected/` (under a new name if an earlier, different
    /// file of that name is there) with its reason object, then removes it from the
    /// inbox.
    async fn reject(
        &self,
        o: &Listed,
        center: &str,
        name: &str,
        spooled: &SpoolFile,
        refusal: &Refusal,
    ) -> Result<(), String> {
        let store = &self.ingest.store;
        let mut dest = format!("{REJECTED_PREFIX}{center}/{name}");
        let sha = crate::ingest::sha256_file(spooled.path()).map_err(|e| e.to_string())?;
        for attempt in 0..3 {
            match store.put_file_if_absent(&dest, spooled.path()).await {
                Ok(PutOutcome::Created) => break,
                Ok(PutOutcome::AlreadyExists) => {
                    let existing = crate::storage::sha256(store.as_ref(), &dest)
                        .await
                        .map_err(|e| e.to_string())?;
                    if existing == sha {
                        break;
                    }
                    if attempt == 2 {
                        return Err("no free name under rejected/".into());
                    }
                    dest = format!(
                        "{REJECTED_PREFIX}{center}/{name}~{}",
                        crate::now_ms() + attempt
                    );
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let reason = json!({
            "file": o.key,
            "moved_to": dest,
            "reason": refusal.reason,
            "dicom_failure_reason": format!("{:04X}", refusal.code),
            "rejected_at": crate::api::iso_time(crate::now_ms()),
        });
        self.put_json(&format!("{dest}.reason.json"), &reason)
            .await?;
        store.delete(&o.key).await.map_err(|e| e.to_string())
    }

    /// Leaves a file that cannot be taken where it is, and says why in
    /// `{reason_base}.reason.json` (written once: the object is never overwritten).
    async fn leave(&self, key: &str, reason_base: &str, reason: String) -> InboxOutcome {
        let body = json!({
            "file": key,
            "left_in_inbox": true,
            "reason": reason,
            "noticed_at": crate::api::iso_time(crate::now_ms()),
        });
        match self
            .put_json(&format!("{reason_base}.reason.json"), &body)
            .await
        {
            Ok(_) => {
                tracing::warn!(file = %short_hash(key), "inbox file left in place (see its reason object under rejected/)");
                InboxOutcome::Left
            }
            Err(e) => {
                tracing::warn!(error = %scrub(&e, key), file = %short_hash(key), "writing an inbox reason object failed");
                InboxOutcome::Retry
            }
        }
    }

    /// Writes a small JSON object under `key` unless one is there.
    async fn put_json(&self, key: &str, value: &serde_json::Value) -> Result<PutOutcome, String> {
        let mut f = self
            .ingest
            .spool
            .create()
            .await
            .map_err(|e| e.to_string())?;
        let text = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
        f.write(&text).await.map_err(|e| e.to_string())?;
        f.finish().await.map_err(|e| e.to_string())?;
        self.ingest
            .store
            .put_file_if_absent(key, f.path())
            .await
            .map_err(|e| e.to_string())
    }
}

/// Why a file was refused, as a STOW-RS client would be told.
struct Refusal {
    reason: String,
    code: u16,
}

enum DownloadError {
    /// Removed since it was listed (another node handled it).
    Gone,
    Failed(String),
}

/// An error's text with the file's name (which may carry a patient's name) taken out.
fn scrub(e: &impl std::fmt::Display, name: &str) -> String {
    let text = e.to_string();
    if name.is_empty() {
        text
    } else {
        text.replace(name, "<file name>")
    }
}

/// A short, stable name for a file in logs (its key may carry a patient's name).
fn short_hash(key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(key.as_bytes())[..6])
}

/// Scans the inbox every `inbox.scan_interval_secs` until shutdown.
pub async fn run(ingest: Ingest, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs(ingest.config.inbox.scan_interval_secs.max(1));
    let mut scanner = InboxScanner::new(ingest);
    loop {
        if let Err(e) = scanner.scan(&shutdown).await {
            tracing::warn!(error = %e, "listing the bucket inbox failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
