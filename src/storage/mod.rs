//! Object storage for the DICOM bytes: a trait, the local-directory store of the
//! embedded mode and the S3 store of the scale-out mode, chosen by [`open`]. Keys are
//! `studies/{study}/{series}/{sop}.dcm` built from validated UIDs; the stores refuse
//! any other shape of key anyway.

mod fs;
#[cfg(feature = "s3")]
mod s3;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

pub use fs::FsStore;
#[cfg(feature = "s3")]
pub use s3::S3Store;

/// The object store the configuration names: the S3 bucket of `[storage] s3_bucket`
/// (or `TAMIZ_S3_BUCKET`), else the directory `objects/` in the data directory.
pub async fn open(config: &crate::config::Config) -> Result<Arc<dyn ObjectStore>, StoreError> {
    match &config.storage.s3_bucket {
        #[cfg(feature = "s3")]
        Some(bucket) => Ok(Arc::new(
            S3Store::connect(bucket, &config.storage.s3_prefix).await?,
        )),
        #[cfg(not(feature = "s3"))]
        Some(_) => Err(StoreError::Unavailable(
            "an S3 bucket is configured but this build has no S3 support (cargo feature `s3`)"
                .to_string(),
        )),
        None => Ok(Arc::new(FsStore::open(
            config.server.data_dir.join("objects"),
        )?)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object key `{0}` is not allowed")]
    BadKey(String),
    #[error("object `{0}` not found")]
    NotFound(String),
    #[error("object store I/O on `{key}`: {source}")]
    Io { key: String, source: std::io::Error },
    #[error("object store {op} on `{key}`: {message}")]
    Remote {
        op: &'static str,
        key: String,
        message: String,
    },
    /// The store cannot be used at all (missing bucket, refused credentials).
    #[error("object store unavailable: {0}")]
    Unavailable(String),
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// An object already exists under the key; it was left untouched.
    AlreadyExists,
}

/// Where instance bytes live. Writes never overwrite: a second write under a key that
/// exists reports [`PutOutcome::AlreadyExists`], which is what lets ingest refuse a
/// conflicting instance without ever harming the stored one.
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores the file at `src` under `key` unless the key exists. The write is
    /// atomic: readers see the whole object or none. `src` must not change afterwards
    /// (the directory store may link it rather than copy it): callers pass finished
    /// spool files.
    fn put_file_if_absent<'a>(
        &'a self,
        key: &'a str,
        src: &'a Path,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>>;
    /// The whole object in memory: only for objects known to be small.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, StoreError>>;
    /// The object as a stream, for objects of any size.
    fn reader<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectReader, StoreError>>;
    /// At most `len` bytes from `offset` (fewer at the end of the object).
    fn read_range<'a>(
        &'a self,
        key: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes, StoreError>>;
    /// Every object under `prefix` with its size, sorted by key (what a consistency
    /// check compares with the catalog to find orphans, and what the bucket inbox
    /// watches).
    fn list_sized<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, StoreError>>;
    /// Every key under `prefix`, sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        async move {
            Ok(self
                .list_sized(prefix)
                .await?
                .into_iter()
                .map(|o| o.key)
                .collect())
        }
        .boxed()
    }
    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Removes the object under `key`; removing an absent key is not an error. Only
    /// for objects that nothing references (the loser of an upload race).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Whether the store can be reached (for `/readyz`).
    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// One object found by [`ObjectStore::list_sized`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// An object's bytes, read as a stream.
pub type ObjectReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// Hex SHA-256 of an object, read in chunks (an instance may be 256 MiB).
pub async fn sha256(store: &dyn ObjectStore, key: &str) -> Result<String, StoreError> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;
    let mut reader = store.reader(key).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|source| StoreError::Io {
                key: key.to_owned(),
                source,
            })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Characters other than ASCII letters and digits allowed in a key.
const KEY_PUNCTUATION: &[u8] = b"._-/ +()=,@~";

/// `name` with every character a key may not hold replaced by `_` (for naming, in a
/// reason object, a file whose own name cannot be a key).
pub fn sanitize_key_part(name: &str) -> String {
    let s: String = name
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_alphanumeric()
                || (c.is_ascii() && KEY_PUNCTUATION.contains(&(c as u8)) && c != '/')
            {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "_".into()
    } else {
        s
    }
}

/// The key of an instance. Callers pass UIDs that passed [`crate::dicom::is_valid_uid`].
pub fn instance_key(study: &str, series: &str, sop: &str) -> String {
    format!("studies/{study}/{series}/{sop}.dcm")
}

/// Keys are relative paths of safe characters with no `.` or `..` component. Besides
/// the characters of UIDs, the ones people put in file names that mean nothing to a
/// shell path or an S3 URL once encoded (space, `+ ( ) = , @ ~`) are allowed, so that
/// files dropped in the bucket inbox under ordinary names can be read.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || KEY_PUNCTUATION.contains(&b))
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadKey(key.chars().take(100).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key(&instance_key("1.2", "1.3", "1.4")).is_ok());
        assert!(check_key("inbox/clinic-a/IMG 0001 (2).dcm").is_ok());
        for bad in [
            "", "/abs", "a/../b", "a//b", "a/./b", "a\tb", "a\\b", "..", "a/ñ",
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
