//! The upload spool: what an upload holds on the server while it is received and
//! checked, and the bounds on it.
//!
//! Every upload path (STOW-RS today) is admitted here first: at most
//! `limits.max_concurrent_uploads` at once, and at most
//! `limits.max_upload_bytes_in_flight` bytes spooled across all of them, reserved
//! before each chunk is written. Beyond either bound the upload is refused as
//! [`SpoolError::Busy`] (HTTP 503 with Retry-After) instead of queueing without limit.
//! A spooled file is removed when its [`SpoolFile`] is dropped, so a request that is
//! cancelled halfway (the client went away) leaves nothing behind; files left by a
//! process that died are removed when the next one opens the spool.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A bound was reached; the upload may be retried later.
    #[error("server busy: {0}")]
    Busy(String),
    #[error("the server's disk is full: {0}")]
    DiskFull(std::io::Error),
    #[error("spool I/O: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for SpoolError {
    fn from(e: std::io::Error) -> Self {
        if crate::ingest::is_disk_full(&e) {
            SpoolError::DiskFull(e)
        } else {
            SpoolError::Io(e)
        }
    }
}

#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
    uploads: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_uploads: usize,
    max_bytes: u64,
}

/// Held for the whole of one upload request.
pub struct UploadPermit {
    _permit: OwnedSemaphorePermit,
}

impl Spool {
    /// Opens (creating) the spool directory and removes what dead processes left.
    pub fn open(dir: impl Into<PathBuf>, limits: &Limits) -> std::io::Result<Spool> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let removed = remove_stale(&dir, "upload-")?;
        if removed > 0 {
            tracing::info!(files = removed, dir = %dir.display(), "removed stale upload files");
        }
        // A tokio semaphore holds at most usize::MAX >> 3 permits.
        let max_bytes = limits
            .max_upload_bytes_in_flight
            .min(usize::MAX as u64 >> 3);
        Ok(Spool {
            dir,
            uploads: Arc::new(Semaphore::new(limits.max_concurrent_uploads)),
            bytes: Arc::new(Semaphore::new(max_bytes as usize)),
            max_uploads: limits.max_concurrent_uploads,
            max_bytes,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Admits one upload request, or refuses it when `max_concurrent_uploads` are
    /// already in progress.
    pub fn admit(&self) -> Result<UploadPermit, SpoolError> {
        match self.uploads.clone().try_acquire_owned() {
            Ok(p) => Ok(UploadPermit { _permit: p }),
            Err(_) => Err(SpoolError::Busy(format!(
                "{} uploads are in progress (limits.max_concurrent_uploads)",
                self.max_uploads
            ))),
        }
    }

    /// A new, empty spool file.
    pub async fn create(&self) -> Result<SpoolFile, SpoolError> {
        let path = self.dir.join(format!(
            "upload-{}-{:016x}.dcm",
            std::process::id(),
            rand::random::<u64>()
        ));
        let file = tokio::fs::File::create(&path).await?;
        Ok(SpoolFile {
            path,
            file: Some(file),
            reserved: None,
            bytes: self.bytes.clone(),
            max_bytes: self.max_bytes,
            len: 0,
        })
    }
}

/// One instance being spooled. Removed from disk (and its bytes released from the
/// in-flight budget) when dropped.
pub struct SpoolFile {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    reserved: Option<OwnedSemaphorePermit>,
    bytes: Arc<Semaphore>,
    max_bytes: u64,
    len: u64,
}

impl SpoolFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reserves `chunk.len()` bytes of the in-flight budget, then appends the chunk.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        let n = u32::try_from(chunk.len())
            .map_err(|_| SpoolError::Io(std::io::Error::other("chunk larger than 4 GiB")))?;
        let permit = self.bytes.clone().try_acquire_many_owned(n).map_err(|_| {
            SpoolError::Busy(format!(
                "more than {} bytes of uploads are being received (limits.max_upload_bytes_in_flight)",
                self.max_bytes
            ))
        })?;
        match &mut self.reserved {
            Some(r) => r.merge(permit),
            None => self.reserved = Some(permit),
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| SpoolError::Io(std::io::Error::other("spool file already closed")))?;
        file.write_all(chunk).await?;
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Flushes and closes the file so that it can be read back whole.
    pub async fn finish(&mut self) -> Result<(), SpoolError> {
        if let Some(mut f) = self.file.take() {
            f.flush().await?;
        }
        Ok(())
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(error = %e, path = %self.path.display(), "removing a spool file failed");
            }
        }
    }
}

/// Removes the files in `dir` named `{prefix}{pid}-...` whose process is gone (so a
/// second process on the same directory never loses a file in use). Returns how many.
pub fn remove_stale(dir: &Path, prefix: &str) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| p == std::process::id() || process_alive(p));
        if !alive && entry.file_type()?.is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(uploads: usize, bytes: u64) -> Limits {
        Limits {
            max_concurrent_uploads: uploads,
            max_upload_bytes_in_flight: bytes,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn bounds_refuse_instead_of_queueing_and_files_go_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("spool"), &limits(1, 10)).unwrap();
        let permit = spool.admit().unwrap();
        let busy = spool.admit().err().unwrap().to_string();
        assert!(busy.contains("1 uploads are in progress"), "{busy}");
        drop(permit);
        spool.admit().unwrap();

        let mut a = spool.create().await.unwrap();
        a.write(b"123456").await.unwrap();
        let mut b = spool.create().await.unwrap();
        let over = b.write(b"12345").await.err().unwrap().to_string();
        assert!(over.contains("more than 10 bytes"), "{over}");
        let path = a.path().to_owned();
        assert!(path.exists());
        drop(a);
        assert!(!path.exists(), "a dropped spool file is removed");
        b.write(b"12345").await.unwrap();
    }

    #[test]
    fn stale_files_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir
            .path()
            .join(format!("upload-{}-1.dcm", std::process::id()));
        // pid 0x7FFFFFFE is above pid_max on Linux: never a live process.
        let dead = dir.path().join("upload-2147483646-2.dcm");
        let other = dir.path().join("keep.txt");
        for p in [&mine, &dead, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove_stale(dir.path(), "upload-").unwrap(), 1);
        assert!(mine.exists() && other.exists() && !dead.exists());
    }
}
