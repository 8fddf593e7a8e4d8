//! The scale-out object store: an S3 bucket (AWS S3 or an S3-compatible server).
//!
//! Endpoint, region and credentials come from the standard AWS variables
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, or
//! any other source the AWS SDK reads); with an explicit endpoint the store uses
//! path-style addressing, as S3-compatible servers expect. "Never overwrite" is a
//! conditional create (`If-None-Match: *`, 412 when the key exists) on the single PUT
//! and on the completion of a multipart upload; the SDK retries throttling and 5xx
//! with exponential backoff.

use std::path::Path;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{check_key, Listed, ObjectReader, ObjectStore, PutOutcome, StoreError};

/// Objects at least this large go up as a multipart upload, in parts of
/// [`PART_BYTES`] (a 256 MiB instance is 16 parts, each retried on its own).
const MULTIPART_FROM_BYTES: u64 = 64 << 20;
const PART_BYTES: u64 = 16 << 20;
/// S3's smallest part (all but the last).
const MIN_PART_BYTES: u64 = 5 << 20;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Prepended to every key (`TAMIZ_S3_PREFIX`), so one bucket can hold several
    /// installations; ends in `/` when not empty.
    prefix: String,
    multipart_from: u64,
    part_bytes: u64,
}

/// The HTTP status of a failed call, when the server answered.
fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn remote<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    key: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError {
    let status = status(&e);
    let detail = match e.as_service_error() {
        Some(se) => format!(
            "{} ({})",
            se.code().unwrap_or("error"),
            se.message().unwrap_or("no message")
        ),
        None => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
    };
    StoreError::Remote {
        op,
        key: key.to_owned(),
        message: match status {
            Some(s) => format!("HTTP {s}: {detail}"),
            None => detail,
        },
    }
}

/// A response body read whole.
async fn collect(key: &str, body: ByteStream) -> Result<Bytes, StoreError> {
    let body = body.collect().await.map_err(|e| StoreError::Io {
        key: key.to_owned(),
        source: std::io::Error::other(e),
    })?;
    Ok(body.into_bytes())
}

impl S3Store {
    /// Connects to `bucket` with the AWS SDK's standard configuration and checks that
    /// the bucket exists and the credentials may use it: a wrong name or key is an
    /// error at start-up, not at the first upload.
    pub async fn connect(bucket: &str, prefix: &str) -> Result<S3Store, StoreError> {
        use aws_smithy_http_client::tls;
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(https)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
            .load()
            .await;
        let explicit_endpoint = std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(explicit_endpoint)
            .build();
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        if !prefix.is_empty() {
            check_key(prefix.trim_end_matches('/'))?;
        }
        let store = S3Store {
            client: Client::from_conf(config),
            bucket: bucket.to_owned(),
            prefix,
            multipart_from: MULTIPART_FROM_BYTES,
            part_bytes: PART_BYTES,
        };
        store.check().await?;
        Ok(store)
    }

    /// Objects of at least `from` bytes go up in parts of `part` bytes (at least
    /// S3's 5 MiB).
    pub fn with_multipart(mut self, from: u64, part: u64) -> S3Store {
        self.multipart_from = from;
        self.part_bytes = part.max(MIN_PART_BYTES);
        self
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    async fn put_single(
        &self,
        key: &str,
        full: &str,
        src: &Path,
    ) -> Result<PutOutcome, StoreError> {
        let body = ByteStream::from_path(src)
            .await
            .map_err(|e| StoreError::Io {
                key: key.to_owned(),
                source: std::io::Error::other(e),
            })?;
        match self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .if_none_match("*")
            .content_type("application/dicom")
            .body(body)
            .send()
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if status(&e) == Some(412) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(remote("PutObject", key, e)),
        }
    }

    async fn put_multipart(
        &self,
        key: &str,
        full: &str,
        src: &Path,
        size: u64,
    ) -> Result<PutOutcome, StoreError> {
        if self.exists(key).await? {
            return Ok(PutOutcome::AlreadyExists);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .content_type("application/dicom")
            .send()
            .await
            .map_err(|e| remote("CreateMultipartUpload", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = async {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            let mut number = 1i32;
            while offset < size {
                let len = self.part_bytes.min(size - offset);
                let body = ByteStream::read_from()
                    .path(src)
                    .offset(offset)
                    .length(Length::Exact(len))
                    .build()
                    .await
                    .map_err(|e| StoreError::Io {
                        key: key.to_owned(),
                        source: std::io::Error::other(e),
                    })?;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| remote("UploadPart", key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_owned))
                        .build(),
                );
                offset += len;
                number += 1;
            }
            match self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .if_none_match("*")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
            {
                Ok(_) => Ok(PutOutcome::Created),
                Err(e) if status(&e) == Some(412) => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(remote("CompleteMultipartUpload", key, e)),
            }
        }
        .await;
        if !matches!(result, Ok(PutOutcome::Created)) {
            // Parts of an upload that did not complete cost storage until aborted.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

impl ObjectStore for S3Store {
    fn put_file_if_absent<'a>(
        &'a self,
        key: &'a str,
        src: &'a Path,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        async move {
            let full = self.full_key(key)?;
            let size = tokio::fs::metadata(src)
                .await
                .map_err(|source| StoreError::Io {
                    key: key.to_owned(),
                    source,
                })?
                .len();
            if size >= self.multipart_from {
                self.put_multipart(key, &full, src, size).await
            } else {
                self.put_single(key, &full, src).await
            }
        }
        .boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, StoreError>> {
        async move {
            let full = self.full_key(key)?;
            let out = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(o) => o,
                Err(e) if status(&e) == Some(404) => {
                    return Err(StoreError::NotFound(key.to_owned()))
                }
                Err(e) => return Err(remote("GetObject", key, e)),
            };
            collect(key, out.body).await
        }
        .boxed()
    }

    fn reader<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectReader, StoreError>> {
        async move {
            let full = self.full_key(key)?;
            match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(o) => Ok(Box::new(o.body.into_async_read()) as ObjectReader),
                Err(e) if status(&e) == Some(404) => Err(StoreError::NotFound(key.to_owned())),
                Err(e) => Err(remote("GetObject", key, e)),
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
            let full = self.full_key(key)?;
            if len == 0 {
                return Ok(Bytes::new());
            }
            let out = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .range(format!("bytes={offset}-{}", offset + len - 1))
                .send()
                .await
            {
                Ok(o) => o,
                Err(e) if status(&e) == Some(404) => {
                    return Err(StoreError::NotFound(key.to_owned()))
                }
                // Past the end: an empty range, as a file read there gives.
                Err(e) if status(&e) == Some(416) => return Ok(Bytes::new()),
                Err(e) => return Err(remote("GetObject", key, e)),
            };
            collect(key, out.body).await
        }
        .boxed()
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let full = self.full_key(key)?;
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if status(&e) == Some(404) => Ok(false),
                Err(e) => Err(remote("HeadObject", key, e)),
            }
        }
        .boxed()
    }

    fn list_sized<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>, StoreError>> {
        async move {
            let full = format!("{}{prefix}", self.prefix);
            let mut keys = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| remote("ListObjectsV2", prefix, e))?;
                for o in page.contents() {
                    if let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                        keys.push(Listed {
                            key: k.to_owned(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                        });
                    }
                }
            }
            keys.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(keys)
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let full = self.full_key(key)?;
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
                .map_err(|e| remote("DeleteObject", key, e))?;
            Ok(())
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            match self.client.head_bucket().bucket(&self.bucket).send().await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let why = match status(&e) {
                        Some(404) => "the bucket does not exist".to_owned(),
                        Some(401 | 403) => "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the role) and the bucket policy".to_owned(),
                        _ => match remote("HeadBucket", "", e) {
                            StoreError::Remote { message, .. } => message,
                            other => other.to_string(),
                        },
                    };
                    Err(StoreError::Unavailable(format!(
                        "S3 bucket `{}`: {why}",
                        self.bucket
                    )))
                }
            }
        }
        .boxed()
    }
}
