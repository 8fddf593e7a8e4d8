//! `tamiz upload`: the imaging center's client. Walks files and folders, sends DICOM
//! files in batches over STOW-RS, prints one line per file, and fails (non-zero exit)
//! if any file failed. Re-running is safe: instances already stored are reported as
//! stored and nothing is duplicated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable as _};
use serde_json::Value;

/// Largest batch, in files and in bytes.
const BATCH_FILES: usize = 16;
const BATCH_BYTES: u64 = 64 << 20;
/// Retries of one batch before its files are reported as failed.
const RETRIES: usize = 6;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// What happened to one file.
#[derive(Debug, Clone)]
pub struct FileResult {
    pub path: PathBuf,
    pub outcome: Result<String, String>,
}

#[derive(Debug, Default)]
pub struct UploadReport {
    pub results: Vec<FileResult>,
}

impl UploadReport {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_err()).count()
    }
    pub fn stored(&self) -> usize {
        self.results.len() - self.failed()
    }
}

/// All regular files under `paths`, sorted, folders walked recursively.
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let md = std::fs::metadata(p).with_context(|| format!("{}: cannot read", p.display()))?;
        if md.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .with_context(|| format!("{}: cannot list", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out)?;
            }
        } else if md.is_file() {
            out.push(p.to_owned());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out)?;
    }
    Ok(out)
}

/// The SOP Instance UID of a file, read from its header only, after the same
/// structural checks the server makes (a hostile file is reported, never parsed).
fn sop_uid(path: &Path) -> Result<String, String> {
    match crate::dicom::read_header_uids(path) {
        Ok((_, Some(uid))) => Ok(uid),
        Ok((_, None)) => Err("no valid SOP Instance UID (0008,0018)".into()),
        Err(crate::dicom::InvalidInstance::NotDicom(m)) => {
            Err(format!("not a readable DICOM file: {m}"))
        }
        Err(e) => Err(format!("not a readable DICOM file: {e}")),
    }
}

/// Uploads every file under `paths` to the STOW-RS endpoint of `base_url`, signed in
/// with API `token` (an imaging-center user's, whose center the server stores the
/// files for). `center` is sent as the `X-Tamiz-Center` header, which the server
/// honours only for an admin token acting as a gateway. `print` writes a line per file.
pub async fn upload(
    base_url: &str,
    token: &str,
    center: Option<&str>,
    paths: &[PathBuf],
    print: bool,
) -> anyhow::Result<UploadReport> {
    upload_with(base_url, token, center, None, paths, print).await
}

/// [`upload`], trusting also the CA certificate(s) in PEM file `ca_cert` (a server
/// whose certificate a private CA signed).
pub async fn upload_with(
    base_url: &str,
    token: &str,
    center: Option<&str>,
    ca_cert: Option<&std::path::Path>,
    paths: &[PathBuf],
    print: bool,
) -> anyhow::Result<UploadReport> {
    let files = collect_files(paths)?;
    let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| anyhow::anyhow!("the API token holds characters a header cannot carry"))?;
    auth.set_sensitive(true);
    let mut client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .default_headers(
            [(reqwest::header::AUTHORIZATION, auth)]
                .into_iter()
                .collect(),
        );
    if let Some(file) = ca_cert {
        let pem = std::fs::read(file)
            .with_context(|| format!("reading the CA certificate {}", file.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} is not a PEM certificate", file.display()))?
        {
            client = client.add_root_certificate(cert);
        }
    }
    let client = client.build().context("building the HTTP client")?;
    let url = format!("{}/dicomweb/studies", base_url.trim_end_matches('/'));
    let mut report = UploadReport::default();
    let emit = |r: FileResult, report: &mut UploadReport| {
        if print {
            match &r.outcome {
                // "WARNING: text": stored, with a warning the sender should read.
                Ok(s) => match s.split_once(": ") {
                    Some((status, detail)) => {
                        println!("{status:<8} {}: {detail}", r.path.display())
                    }
                    None => println!("{s:<8} {}", r.path.display()),
                },
                Err(e) => println!("FAILED   {}: {e}", r.path.display()),
            }
        }
        report.results.push(r);
    };

    let mut batch: Vec<(PathBuf, String, u64)> = Vec::new();
    let mut batch_bytes = 0u64;
    for path in &files {
        let uid = match sop_uid(path) {
            Ok(uid) => uid,
            Err(e) => {
                let r = FileResult {
                    path: path.clone(),
                    outcome: Err(e),
                };
                emit(r, &mut report);
                continue;
            }
        };
        // The server's answer names instances by SOP Instance UID, so a batch never
        // holds two files with the same one.
        let full = batch.len() >= BATCH_FILES
            || batch_bytes >= BATCH_BYTES
            || batch.iter().any(|b| b.1 == uid);
        if full {
            for r in send_batch(&client, &url, center, &batch).await {
                emit(r, &mut report);
            }
            batch.clear();
            batch_bytes = 0;
        }
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        batch_bytes += size;
        batch.push((path.clone(), uid, size));
    }
    if !batch.is_empty() {
        for r in send_batch(&client, &url, center, &batch).await {
            emit(r, &mut report);
        }
    }
    if print {
        println!(
            "{} file(s): {} stored, {} failed",
            report.results.len(),
            report.stored(),
            report.failed()
        );
    }
    Ok(report)
}

/// Sends one batch (retrying transport errors, 408 and 5xx with exponential backoff
/// or the server's Retry-After, which is safe because the server treats a resent
/// instance as already stored) and maps the response back to files by SOP Instance
/// UID.
///
/// A batch larger than the server's request limit (413) is split in halves and sent
/// again, down to single files, so the client needs no knowledge of that limit.
fn send_batch<'a>(
    client: &'a reqwest::Client,
    url: &'a str,
    center: Option<&'a str>,
    batch: &'a [(PathBuf, String, u64)],
) -> futures_util::future::BoxFuture<'a, Vec<FileResult>> {
    Box::pin(send_batch_once(client, url, center, batch))
}

async fn send_batch_once(
    client: &reqwest::Client,
    url: &str,
    center: Option<&str>,
    batch: &[(PathBuf, String, u64)],
) -> Vec<FileResult> {
    let boundary = format!("tamiz-{:032x}", rand::random::<u128>());
    let mut body = Vec::with_capacity(batch.iter().map(|b| b.2 as usize + 128).sum());
    for (path, _, _) in batch {
        match std::fs::read(path) {
            Ok(bytes) => {
                body.extend_from_slice(
                    format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
                );
                body.extend_from_slice(&bytes);
                body.extend_from_slice(b"\r\n");
            }
            Err(e) => {
                return batch
                    .iter()
                    .map(|(p, _, _)| FileResult {
                        path: p.clone(),
                        outcome: Err(format!("reading {}: {e}", path.display())),
                    })
                    .collect()
            }
        }
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");

    let send = || async {
        let mut req = client
            .post(url)
            .header("Content-Type", &content_type)
            .body(body.clone());
        if let Some(c) = center {
            req = req.header(crate::api::CENTER_HEADER, c);
        }
        let resp = req.send().await.map_err(|e| Retryable {
            message: format!("sending to {url}: {}", error_chain(&e)),
            retry_after: None,
            response: None,
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        if status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT {
            return Err(Retryable {
                message: format!(
                    "server answered {status}: {}",
                    text.chars().take(300).collect::<String>()
                ),
                retry_after,
                response: Some((status, text)),
            });
        }
        Ok((status, text))
    };
    let result = send
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(MAX_RETRY_DELAY)
                .with_max_times(RETRIES)
                .with_jitter(),
        )
        // The server's Retry-After (503 busy, 507 disk full) wins over our backoff.
        .adjust(|e: &Retryable, backoff| {
            backoff.map(|b| e.retry_after.map_or(b, |r| r.min(MAX_RETRY_DELAY)))
        })
        .notify(|e: &Retryable, wait| {
            tracing::warn!(error = %e.message, ?wait, "batch not stored yet; retrying")
        })
        .await;
    match result {
        Ok((reqwest::StatusCode::PAYLOAD_TOO_LARGE, _)) if batch.len() > 1 => {
            let (a, b) = batch.split_at(batch.len() / 2);
            let mut results = send_batch(client, url, center, a).await;
            results.extend(send_batch(client, url, center, b).await);
            results
        }
        Ok((status, text)) => map_response(status, &text, batch),
        // Gave up: what the last answer says per file (some may have been stored).
        Err(Retryable {
            response: Some((status, text)),
            ..
        }) if text.trim_start().starts_with('{') => map_response(status, &text, batch)
            .into_iter()
            .map(|mut r| {
                if let Err(e) = &mut r.outcome {
                    e.push_str(&format!(" (gave up after {} retries)", RETRIES));
                }
                r
            })
            .collect(),
        Err(e) => batch
            .iter()
            .map(|(p, _, _)| FileResult {
                path: p.clone(),
                outcome: Err(format!("{} (gave up after {} retries)", e.message, RETRIES)),
            })
            .collect(),
    }
}

/// A batch that may succeed if sent again: a transport error, a 5xx or a 408.
struct Retryable {
    message: String,
    retry_after: Option<Duration>,
    response: Option<(reqwest::StatusCode, String)>,
}

fn map_response(
    status: reqwest::StatusCode,
    text: &str,
    batch: &[(PathBuf, String, u64)],
) -> Vec<FileResult> {
    let json: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    if let Some(err) = json.get("error").and_then(Value::as_str) {
        return batch
            .iter()
            .map(|(p, _, _)| FileResult {
                path: p.clone(),
                outcome: Err(format!("request refused ({status}): {err}")),
            })
            .collect();
    }
    let sq = |tag: &str| {
        json.get(tag)
            .and_then(|v| v.get("Value"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let first_str = |item: &Value, tag: &str| {
        item.get(tag)
            .and_then(|v| v.get("Value"))
            .and_then(|v| v.get(0))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    };
    // Each stored instance, with its warning (tamiz's whole text, else the Error
    // Comment) when it has a Warning Reason.
    let stored: HashMap<String, Option<String>> = sq("00081199")
        .iter()
        .filter_map(|i| {
            let warning = first_str(i, "00081196").map(|_| {
                first_str(i, crate::api::FULL_REASON)
                    .or_else(|| first_str(i, "00000902"))
                    .unwrap_or_else(|| "stored with a warning".into())
            });
            Some((first_str(i, "00081155")?, warning))
        })
        .collect();
    let mut failed: HashMap<String, String> = HashMap::new();
    let mut anonymous: Vec<String> = Vec::new();
    for item in sq("00081198") {
        let reason = first_str(&item, "00081197")
            .and_then(|r| r.parse::<u16>().ok())
            .unwrap_or(0);
        // The whole reason (tamiz's private UT), else the 64-character Error Comment.
        let comment = first_str(&item, crate::api::FULL_REASON)
            .or_else(|| first_str(&item, "00000902"))
            .unwrap_or_default();
        let msg = format!("{comment} (failure reason {reason:04X}H)");
        match first_str(&item, "00081155") {
            Some(uid) => {
                failed.insert(uid, msg);
            }
            None => anonymous.push(msg),
        }
    }
    batch
        .iter()
        .map(|(p, uid, _)| {
            let outcome = if let Some(warning) = stored.get(uid) {
                Ok(match warning {
                    Some(w) => format!("WARNING: {w}"),
                    None => "stored".to_string(),
                })
            } else if let Some(m) = failed.get(uid) {
                Err(m.clone())
            } else if anonymous.len() == 1 {
                Err(anonymous[0].clone())
            } else if !anonymous.is_empty() {
                Err(format!(
                    "refused; the server reported: {}",
                    anonymous.join(" | ")
                ))
            } else {
                Err(format!("not in the server's response (status {status})"))
            };
            FileResult {
                path: p.clone(),
                outcome,
            }
        })
        .collect()
}

/// An error and its causes, `: `-joined (reqwest's own text hides why a request could
/// not be sent, such as a certificate the client does not trust).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
