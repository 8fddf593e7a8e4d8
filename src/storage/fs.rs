//! The embedded object store: one file per object under a root directory.
//!
//! Atomic create-if-absent: the bytes are first complete in a temporary file on the
//! same filesystem, then hard-linked to the final name. `link(2)` fails if the name
//! exists, so two writers can never replace each other's object, and a reader never
//! sees half a file.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{check_key, Listed, ObjectReader, ObjectStore, PutOutcome, StoreError};
use crate::spool::RunDir;

#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    /// The temp folder `.tmp`, claimed for this process's run.
    tmp: Arc<RunDir>,
}

impl FsStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<FsStore, StoreError> {
        let root = root.into();
        let io = |source| StoreError::Io {
            key: root.display().to_string(),
            source,
        };
        // Temp copies of writes interrupted by a crash: never linked, never needed.
        let (tmp, removed) = RunDir::open(&root.join(".tmp"), "").map_err(io)?;
        if removed > 0 {
            tracing::info!(files = removed, "removed stale object-store temp files");
        }
        Ok(FsStore {
            root,
            tmp: Arc::new(tmp),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn put_blocking(&self, key: &str, src: &Path) -> Result<PutOutcome, StoreError> {
        let dest = self.path(key)?;
        let io = |source| StoreError::Io {
            key: key.to_owned(),
            source,
        };
        if dest.exists() {
            return Ok(PutOutcome::AlreadyExists);
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        // Our own temp name for the bytes, fsynced, so the object does not depend on
        // the caller's name (which is removed later). On the same filesystem (the
        // spool in the data directory) it is a second link to the caller's finished
        // file: the bytes are written to disk once, not copied. Across filesystems,
        // a copy.
        let tmp = self.tmp.new_path("");
        let result = (|| {
            if std::fs::hard_link(src, &tmp).is_err() {
                std::fs::copy(src, &tmp)?;
            }
            std::fs::File::open(&tmp)?.sync_all()?;
            match std::fs::hard_link(&tmp, &dest) {
                Ok(()) => {
                    // The new name (and any folder made for it) is durable before the
                    // catalog row that points at it: fsync the folders up to the root.
                    let mut dir = dest.parent();
                    while let Some(d) = dir {
                        std::fs::File::open(d)?.sync_all()?;
                        if d == self.root {
                            break;
                        }
                        dir = d.parent();
                    }
                    Ok(PutOutcome::Created)
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(e),
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        result.map_err(io)
    }
}

impl ObjectStore for FsStore {
    fn put_file_if_absent<'a>(
        &'a self,
        key: &'a str,
        src: &'a Path,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        let this = self.clone();
        let (key_owned, src) = (key.to_owned(), src.to_owned());
        async move {
            tokio::task::spawn_blocking(move || this.put_blocking(&key_owned, &src))
                .await
                .map_err(|e| StoreError::Io {
                    key: key.to_owned(),
                    source: std::io::Error::other(e),
                })?
        }
        .boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, StoreError>> {
        async move {
            let path = self.path(key)?;
            match tokio::fs::read(&path).await {
                Ok(b) => Ok(Bytes::from(b)),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    Err(StoreError::NotFound(key.to_owned()))
                }
                Err(source) => Err(StoreError::Io {
                    key: key.to_owned(),
                    source,
                }),
            }
        }
        .boxed()
    }

    fn reader<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectReader, StoreError>> {
        async move {
            use std::os::unix::fs::OpenOptionsExt;
            let path = self.path(key)?;
            // Objects are regular files, never links (files dropped in the inbox
            // folder are written by others): refuse to follow one.
            let mut opts = std::fs::OpenOptions::new();
            opts.read(true).custom_flags(libc::O_NOFOLLOW);
            let opened = tokio::task::spawn_blocking(move || {
                let f = opts.open(&path)?;
                if !f.metadata()?.is_file() {
                    return Err(std::io::Error::other("not a regular file"));
                }
                Ok(f)
            })
            .await
            .map_err(|e| StoreError::Io {
                key: key.to_owned(),
                source: std::io::Error::other(e),
            })?;
            match opened.map(tokio::fs::File::from_std) {
                Ok(f) => Ok(Box::new(f) as ObjectReader),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    Err(StoreError::NotFound(key.to_owned()))
                }
                Err(source) => Err(StoreError::Io {
                    key: key.to_owned(),
                    source,
                }),
            }
        }
        .boxed()
    }

    fn read_range<'a>(
        &'a self,
        key: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes, StoreError>> {
        async move {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let path = self.path(key)?;
            let io = |source| StoreError::Io {
                key: key.to_owned(),
                source,
            };
            let mut f = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(StoreError::NotFound(key.to_owned()))
                }
                Err(e) => return Err(io(e)),
            };
            f.seek(std::io::SeekFrom::Start(offset)).await.map_err(io)?;
            let mut buf = Vec::new();
            f.take(len).read_to_end(&mut buf).await.map_err(io)?;
            Ok(Bytes::from(buf))
        }
        .boxed()
    }

    fn list_sized<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, StoreError>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        async move {
            tokio::task::spawn_blocking(move || list_under(&root, &prefix))
                .await
                .map_err(|e| StoreError::Io {
                    key: String::new(),
                    source: std::io::Error::other(e),
                })?
        }
        .boxed()
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let path = self.path(key)?;
            tokio::fs::try_exists(&path)
                .await
                .map_err(|source| StoreError::Io {
                    key: key.to_owned(),
                    source,
                })
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let io = |source| StoreError::Io {
                key: self.root.display().to_string(),
                source,
            };
            let md = tokio::fs::metadata(&self.root).await.map_err(io)?;
            if md.is_dir() {
                Ok(())
            } else {
                Err(io(std::io::Error::other("not a directory")))
            }
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let path = self.path(key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StoreError::Io {
                    key: key.to_owned(),
                    source,
                }),
            }
        }
        .boxed()
    }
}

/// The files under `root` whose keys start with `prefix` (the temp folder and other
/// dot-names are not objects: a tool that writes `.name.tmp` and renames it, as rsync
/// does, is never seen half-written).
fn list_under(root: &Path, prefix: &str) -> Result<Vec<Listed>, StoreError> {
    let mut keys = Vec::new();
    // Start at the prefix's folder: listing `inbox/` must not walk `studies/`.
    let start = match prefix.rsplit_once('/') {
        Some((dir, _)) if check_key(dir).is_ok() => root.join(dir),
        _ => root.to_path_buf(),
    };
    let mut dirs = vec![start];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StoreError::Io {
                    key: dir.display().to_string(),
                    source,
                })
            }
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            // Symbolic links are never objects (nor followed): whoever may write a
            // folder here must not make the store read files outside it.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(path);
            } else if !kind.is_file() {
                continue;
            } else if let Ok(rel) = path.strip_prefix(root) {
                let key = rel.to_string_lossy().into_owned();
                if key.starts_with(prefix) {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    keys.push(Listed { key, size });
                }
            }
        }
    }
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_if_absent_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("objects")).unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"first").unwrap();
        std::fs::write(&b, b"second").unwrap();
        let key = "studies/1/2/3.dcm";
        assert_eq!(
            store.put_file_if_absent(key, &a).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            store.put_file_if_absent(key, &b).await.unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(&store.get(key).await.unwrap()[..], b"first");
        let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"first"));
        assert_eq!(super::super::sha256(&store, key).await.unwrap(), expected);
        assert!(store.exists(key).await.unwrap());
        assert!(matches!(
            store.get("studies/9.dcm").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.get("../etc/passwd").await,
            Err(StoreError::BadKey(_))
        ));
        // no temp files left behind (only this run's lock)
        assert_eq!(
            std::fs::read_dir(dir.path().join("objects/.tmp"))
                .unwrap()
                .count(),
            1
        );
    }
}
