//! WADO-RS retrieval (PS3.18 §10.4): a study, a series or one instance as
//! `multipart/related; type="application/dicom"`, each part the stored object exactly
//! as it was received, streamed from the object store in constant memory.
//!
//! Who may retrieve is who may see the study ([`super::worklist::readable_study`]);
//! every retrieval is written to the audit log. Instances are sent in the transfer
//! syntax they were stored in: a request that accepts only another one gets 406
//! (tamiz does not transcode). A request without a `transfer-syntax` parameter gets
//! the stored syntax too, where PS3.18 would have Explicit VR Little Endian; the
//! part's Content-Type names the syntax sent.
//!
//! One instance may be asked for a byte range (`Range: bytes=first-last`, `first-`
//! or `-suffix`): the range is read from the object store as such and sent as the
//! one part of a 206 response with its Content-Range (a viewer reading a large
//! tomosynthesis object in pieces). Several ranges, or a range on a study or series,
//! are ignored (the whole is sent).

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use tokio::io::AsyncReadExt;

use super::access::Caller;
use super::{ApiError, AppState};
use crate::catalog::RetrievableInstance;
use crate::dicom::is_valid_uid;
use crate::storage::ObjectReader;

/// Bytes read from the store per chunk of the response.
const CHUNK: usize = 256 * 1024;

pub async fn retrieve_study(
    State(state): State<AppState>,
    caller: Caller,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Response {
    retrieve(state, caller, &study, None, None, &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn retrieve_series(
    State(state): State<AppState>,
    caller: Caller,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    retrieve(state, caller, &study, Some(&series), None, &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn retrieve_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    retrieve(
        state,
        caller,
        &study,
        Some(&series),
        Some(&instance),
        &headers,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// The instances of a study, series or instance that `caller` may see: 400 for a bad
/// UID, 403 for a study of another center, 404 naming what is not there.
pub(super) async fn lookup(
    state: &AppState,
    caller: &Caller,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
) -> Result<Vec<RetrievableInstance>, ApiError> {
    for uid in series.iter().chain(instance.iter()) {
        if !is_valid_uid(uid) {
            return Err(ApiError::bad_request(format!(
                "`{}` is not a valid UID",
                uid.chars().take(64).collect::<String>()
            )));
        }
    }
    super::worklist::readable_study(state, caller, study).await?;
    let instances = state
        .catalog
        .retrievable_instances(study, series, instance)
        .await?;
    if instances.is_empty() {
        return Err(ApiError::not_found(match (series, instance) {
            (Some(se), Some(i)) => {
                format!("instance {i} of series {se} not found in study {study}")
            }
            (Some(se), None) => format!("series {se} not found in study {study}"),
            _ => format!("study {study} has no instances"),
        }));
    }
    Ok(instances)
}

async fn retrieve(
    state: AppState,
    caller: Caller,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let wanted = accepted_syntaxes(headers)?;
    let instances = lookup(&state, &caller, study, series, instance).await?;
    if let Wanted::Only(list) = &wanted {
        if let Some(i) = instances
            .iter()
            .find(|i| !list.iter().any(|t| t == &i.transfer_syntax))
        {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!(
                    "instance {} is stored in transfer syntax {} and tamiz does not transcode: accept it, or transfer-syntax=*",
                    i.sop_uid, i.transfer_syntax
                ),
            ));
        }
    }
    let audit = caller.audit();
    state
        .catalog
        .record_audit(&audit.entry("wado.retrieve", Some(study), None, None, crate::now_ms()))
        .await?;
    let boundary = format!("tamiz-{:032x}", rand::random::<u128>());
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let range = match (instance, headers.get(header::RANGE)) {
        (Some(_), Some(v)) => v.to_str().ok().and_then(byte_range),
        _ => None,
    };
    let mut response = match range {
        Some(range) => ranged(&state, &instances[0], range, &boundary).await?,
        None => {
            let body = Body::from_stream(parts(state, instances, boundary));
            (StatusCode::OK, body).into_response()
        }
    };
    if response.status().is_success() {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        );
    }
    Ok(response)
}

/// The most bytes one ranged request reads (a larger range is cut, and its
/// Content-Range says what was sent).
const MAX_RANGE: u64 = 64 << 20;

/// A single byte range of a `Range: bytes=...` header (RFC 9110 §14.1.2):
/// `(Some(first), Some(last))`, `(Some(first), None)` to the end, or `(None,
/// Some(n))` for the last n bytes. Anything else (several ranges, other units, bad
/// syntax) is `None`: the header is ignored and the whole instance sent.
type ByteRange = (Option<u64>, Option<u64>);

fn byte_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let num = |s: &str| -> Option<Option<u64>> {
        let s = s.trim();
        if s.is_empty() {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    match (num(a)?, num(b)?) {
        (None, None) => None,
        (Some(first), Some(last)) if last < first => None,
        r => Some(r),
    }
}

/// The bytes of one instance in `range`, read from the object store as a range (206,
/// one part, Content-Range in the part and the response); 416 when the range starts
/// past the end.
async fn ranged(
    state: &AppState,
    inst: &RetrievableInstance,
    range: ByteRange,
    boundary: &str,
) -> Result<Response, ApiError> {
    let size = inst.size_bytes.max(0) as u64;
    let (first, last) = match range {
        (Some(f), Some(l)) => (f, l.min(size.saturating_sub(1))),
        (Some(f), None) => (f, size.saturating_sub(1)),
        (None, Some(n)) => (size.saturating_sub(n), size.saturating_sub(1)),
        (None, None) => (0, size.saturating_sub(1)),
    };
    if first >= size || size == 0 {
        let mut r = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!(
                "the range starts at byte {first}, but instance {} holds {size} bytes",
                inst.sop_uid
            ),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return Ok(r);
    }
    let last = last.min(first + MAX_RANGE - 1);
    let bytes = state
        .ingest
        .store
        .read_range(&inst.object_key, first, last - first + 1)
        .await
        .map_err(super::wado_metadata::store_failed)?;
    let content_range = format!("bytes {first}-{}/{size}", first + bytes.len() as u64 - 1);
    let mut body = format!(
        "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={}\r\nContent-Range: {content_range}\r\nContent-Length: {}\r\n\r\n",
        inst.transfer_syntax,
        bytes.len()
    )
    .into_bytes();
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut r = (StatusCode::PARTIAL_CONTENT, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&content_range) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    Ok(r)
}

/// What the request accepts of the instances' transfer syntaxes.
#[derive(Debug, PartialEq)]
enum Wanted {
    /// Any (no Accept, `transfer-syntax=*`, or no parameter: see the module doc).
    Any,
    /// Only these.
    Only(Vec<String>),
}

/// Reads `Accept`: a range of `multipart/related` whose `type` is `application/dicom`
/// (or absent), `multipart/*` or `*/*`, optionally with `transfer-syntax`; anything
/// else is 406.
fn accepted_syntaxes(headers: &HeaderMap) -> Result<Wanted, ApiError> {
    let Some((ranges, sent)) = super::accept::ranges(headers) else {
        return Ok(Wanted::Any);
    };
    let mut only = Vec::new();
    let mut matched = false;
    for r in ranges.iter().filter(|r| !r.refused) {
        let fits = match r.media.as_str() {
            "*/*" | "multipart/*" => true,
            "multipart/related" => r
                .param("type")
                .is_none_or(|k| k.eq_ignore_ascii_case("application/dicom")),
            _ => false,
        };
        if !fits {
            continue;
        }
        matched = true;
        match r.param("transfer-syntax") {
            None | Some("*") => return Ok(Wanted::Any),
            Some(s) => only.push(s.to_owned()),
        }
    }
    if matched {
        Ok(Wanted::Only(only))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "WADO-RS here answers multipart/related; type=\"application/dicom\" only; the request accepts {sent}"
            ),
        ))
    }
}

/// Where the response stream is.
enum Part {
    /// Before instance `i`'s part header (or the closing delimiter).
    Header(usize),
    /// Inside instance `i`'s bytes.
    Body(usize, ObjectReader),
    Done,
}

/// The multipart body: each instance's part header, its bytes as read from the store,
/// and the closing delimiter. A store failure midway ends the stream with an error, so
/// the client sees a broken response, never a short instance presented as whole.
fn parts(
    state: AppState,
    instances: Vec<RetrievableInstance>,
    boundary: String,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    stream::unfold(Part::Header(0), move |part| {
        let (state, instances, boundary) = (state.clone(), instances.clone(), boundary.clone());
        async move {
            match part {
                Part::Done => None,
                Part::Header(i) => match instances.get(i) {
                    None => Some((
                        Ok(Bytes::from(format!("--{boundary}--\r\n"))),
                        Part::Done,
                    )),
                    Some(inst) => match state.ingest.store.reader(&inst.object_key).await {
                        Ok(reader) => Some((
                            Ok(Bytes::from(format!(
                                "--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={}\r\nContent-Length: {}\r\n\r\n",
                                inst.transfer_syntax, inst.size_bytes
                            ))),
                            Part::Body(i, reader),
                        )),
                        Err(e) => {
                            tracing::error!(error = %e, "WADO-RS: reading a stored instance failed");
                            Some((Err(std::io::Error::other(e.to_string())), Part::Done))
                        }
                    },
                },
                Part::Body(i, mut reader) => {
                    let mut buf = vec![0u8; CHUNK];
                    match reader.read(&mut buf).await {
                        Ok(0) => Some((Ok(Bytes::from_static(b"\r\n")), Part::Header(i + 1))),
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok(Bytes::from(buf)), Part::Body(i, reader)))
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "WADO-RS: reading a stored instance failed");
                            Some((Err(e), Part::Done))
                        }
                    }
                }
            }
        }
    })
}

/// `GET /api/v1/studies/{study}/cad-sr`: the study's Mammography CAD SR
/// ([`crate::cad_sr`]) as `application/dicom`, for whoever may see the study. Its
/// object is found from the catalog alone: the report's UID follows from the study,
/// the model and the scores of the worklist item. 404 when the study was not scored
/// (untriaged, or not yet triaged) or its report was not written. Audited
/// (`cad_sr.retrieve`).
pub async fn retrieve_cad_sr(
    State(state): State<AppState>,
    caller: Caller,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    let s = super::worklist::readable_study(&state, &caller, &study).await?;
    let not_scored =
        || ApiError::not_found(format!("study {study} has no CAD SR: it was not scored"));
    let model = s.model_version.as_deref().ok_or_else(not_scored)?;
    let scores: Vec<(String, f32)> = s
        .view_scores
        .as_ref()
        .and_then(|v| v.as_array())
        .ok_or_else(not_scored)?
        .iter()
        .filter_map(|v| {
            Some((
                v.get("sop_uid")?.as_str()?.to_owned(),
                v.get("score")?.as_f64()? as f32,
            ))
        })
        .collect();
    let uid = crate::cad_sr::report_uid(
        &study,
        model,
        scores.iter().map(|(sop, score)| (sop.as_str(), *score)),
    );
    let key = crate::cad_sr::object_key(&study, &uid);
    let bytes = match state.ingest.store.get(&key).await {
        Ok(b) => b,
        Err(crate::storage::StoreError::NotFound(_)) => {
            return Err(ApiError::not_found(format!(
                "the CAD SR of study {study} was not written (see the worker's log)"
            )))
        }
        Err(e) => {
            tracing::error!(error = %e, "reading a CAD SR failed");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the object store failed or could not be reached (see server log)",
            ));
        }
    };
    let audit = caller.audit();
    state
        .catalog
        .record_audit(&audit.entry("cad_sr.retrieve", Some(&study), None, None, crate::now_ms()))
        .await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/dicom")],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Result<Wanted, u16> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        accepted_syntaxes(&h).map_err(|e| e.status.as_u16())
    }

    #[test]
    fn byte_ranges_are_single_and_well_formed() {
        assert_eq!(byte_range("bytes=0-99"), Some((Some(0), Some(99))));
        assert_eq!(byte_range("bytes=100-"), Some((Some(100), None)));
        assert_eq!(byte_range("bytes=-500"), Some((None, Some(500))));
        for ignored in [
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=9-1",
            "bytes=-",
            "bytes=a-b",
            "0-1",
        ] {
            assert_eq!(byte_range(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn accept_ranges_choose_the_syntaxes() {
        assert_eq!(accept("*/*"), Ok(Wanted::Any));
        assert_eq!(
            accept(r#"multipart/related; type="application/dicom"; transfer-syntax=*"#),
            Ok(Wanted::Any)
        );
        assert_eq!(
            accept(
                r#"multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1, multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.5"#
            ),
            Ok(Wanted::Only(vec![
                "1.2.840.10008.1.2.1".into(),
                "1.2.840.10008.1.2.5".into()
            ]))
        );
        assert_eq!(accept("application/dicom+json"), Err(406));
        assert_eq!(
            accept(r#"multipart/related; type="application/octet-stream""#),
            Err(406)
        );
        assert_eq!(accept("*/*;q=0"), Err(406));
    }
}
