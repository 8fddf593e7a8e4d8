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
    run: Arc<RunDir>,
    uploads: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_uploads: usize,
    max_bytes: u64,
}

/// Held for the whole of one upload request, and by the blocking work it starts
/// (cloned into it), so that a client that goes away does not free its slot while its
/// last instance is still being parsed.
#[derive(Clone)]
pub struct UploadPermit {
    _permit: Arc<OwnedSemaphorePermit>,
}

impl Spool {
    /// Opens (creating) the spool directory and removes what dead processes left.
    pub fn open(dir: impl Into<PathBuf>, limits: &Limits) -> std::io::Result<Spool> {
        let dir = dir.into();
        let (run, removed) = RunDir::open(&dir, "upload-")?;
        if removed > 0 {
            tracing::info!(files = removed, dir = %dir.display(), "removed stale upload files");
        }
        // A tokio semaphore holds at most usize::MAX >> 3 permits.
        let max_bytes = limits
            .max_upload_bytes_in_flight
            .min(usize::MAX as u64 >> 3);
        Ok(Spool {
            run: Arc::new(run),
            uploads: Arc::new(Semaphore::new(limits.max_concurrent_uploads)),
            bytes: Arc::new(Semaphore::new(max_bytes as usize)),
            max_uploads: limits.max_concurrent_uploads,
            max_bytes,
        })
    }

    pub fn dir(&self) -> &Path {
        self.run.dir()
    }

    /// Admits one upload request, or refuses it when `max_concurrent_uploads` are
    /// already in progress.
    pub fn admit(&self) -> Result<UploadPermit, SpoolError> {
        match self.uploads.clone().try_acquire_owned() {
            Ok(p) => Ok(UploadPermit {
                _permit: Arc::new(p),
            }),
            Err(_) => Err(SpoolError::Busy(format!(
                "{} uploads are in progress (limits.max_concurrent_uploads)",
                self.max_uploads
            ))),
        }
    }

    /// A new, empty spool file.
    pub async fn create(&self) -> Result<SpoolFile, SpoolError> {
        let path = self.run.new_path(".dcm");
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

/// This process's claim on a folder of temporary files (the spool, the object
/// store's temp folder). Its files are named `{prefix}{run}-…`, with a random run id,
/// and it holds an exclusive `flock` on `.run-{run}.lock` for as long as it lives. The
/// kernel releases that lock when the process dies, however it dies, so a lock that can
/// be taken marks a dead run; pids would not do (in a container every server is pid 1).
#[derive(Debug)]
pub struct RunDir {
    dir: PathBuf,
    prefix: &'static str,
    run: String,
    _lock: std::fs::File,
}

const LOCK_PREFIX: &str = ".run-";
const LOCK_SUFFIX: &str = ".lock";

impl RunDir {
    /// Creates `dir` if needed, takes a new run's lock, then removes the files of runs
    /// that are gone (and of files named by no run's lock). Returns how many it removed.
    pub fn open(dir: &Path, prefix: &'static str) -> std::io::Result<(RunDir, usize)> {
        std::fs::create_dir_all(dir)?;
        let run = format!("{:016x}", rand::random::<u64>());
        let lock_path = dir.join(format!("{LOCK_PREFIX}{run}{LOCK_SUFFIX}"));
        let lock = std::fs::File::create(&lock_path)?;
        lock.try_lock()
            .map_err(|e| std::io::Error::other(format!("locking {}: {e}", lock_path.display())))?;
        let this = RunDir {
            dir: dir.to_owned(),
            prefix,
            run,
            _lock: lock,
        };
        let removed = this.remove_stale()?;
        Ok((this, removed))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh file name of this run inside the folder.
    pub fn new_path(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!(
            "{}{}-{:016x}{suffix}",
            self.prefix,
            self.run,
            rand::random::<u64>()
        ))
    }

    fn remove_stale(&self) -> std::io::Result<usize> {
        // Dead runs: their lock can be taken. Held until their files are gone, so that
        // another process cleaning at the same time skips them.
        let mut dead = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(run) = name
                .to_str()
                .and_then(|n| n.strip_prefix(LOCK_PREFIX))
                .and_then(|n| n.strip_suffix(LOCK_SUFFIX))
            else {
                continue;
            };
            if run == self.run {
                continue;
            }
            let Ok(file) = std::fs::File::open(entry.path()) else {
                continue;
            };
            if file.try_lock().is_ok() {
                dead.push((run.to_owned(), entry.path(), file));
            }
        }
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(rest) = name
                .to_str()
                .filter(|n| !n.starts_with(LOCK_PREFIX))
                .and_then(|n| n.strip_prefix(self.prefix))
            else {
                continue;
            };
            let run = rest.split('-').next().unwrap_or_default();
            if run == self.run || !entry.file_type()?.is_file() {
                continue;
            }
            // A live run's lock file exists before its first file does; a file whose
            // run has no lock file was left by a run that is gone (or by an older
            // version, which named files by pid).
            let is_dead = dead.iter().any(|(d, _, _)| d == run)
                || !self
                    .dir
                    .join(format!("{LOCK_PREFIX}{run}{LOCK_SUFFIX}"))
                    .exists();
            if is_dead {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for (_, path, _lock) in dead {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
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

    /// Review finding: stale files were matched by pid, and in a container every
    /// server is pid 1. A run's lock, not its pid, tells whether it is alive.
    #[test]
    fn stale_files_of_dead_runs_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (live, removed) = RunDir::open(dir.path(), "upload-").unwrap();
        assert_eq!(removed, 0);
        let mine = live.new_path(".dcm");
        // a run that died: its lock file is there, unlocked
        std::fs::write(dir.path().join(".run-00000000deadbeef.lock"), b"").unwrap();
        let dead = dir.path().join("upload-00000000deadbeef-1.dcm");
        // an older version's pid-named file, and an unrelated file
        let legacy = dir.path().join("upload-1-2.dcm");
        let other = dir.path().join("keep.txt");
        for p in [&mine, &dead, &legacy, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let (second, removed) = RunDir::open(dir.path(), "upload-").unwrap();
        assert_eq!(removed, 2);
        assert!(mine.exists(), "a live run's file is kept");
        assert!(other.exists() && !dead.exists() && !legacy.exists());
        assert!(!dir.path().join(".run-00000000deadbeef.lock").exists());
        // once the first run is gone, the next one removes its file
        drop(live);
        drop(second);
        let (_third, removed) = RunDir::open(dir.path(), "upload-").unwrap();
        assert_eq!(removed, 1);
        assert!(!mine.exists());
        let locks = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".run-")
            })
            .count();
        assert_eq!(locks, 1, "only the live run's lock remains");
    }
}
