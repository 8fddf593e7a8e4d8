//! WADO-RS pixel resources (PS3.18 §10.4.1.1.3 and §10.4.1.1.4): an instance's
//! frames and its rendered image, what a DICOMweb viewer shows.
//!
//! Frames are sent as stored when the request accepts that: the codestream of a
//! compressed frame (`image/jpeg`, `image/jls`, `image/jp2`, `image/jphc`,
//! `image/dicom-rle`, each with its `transfer-syntax`) or the native bytes
//! (`application/octet-stream`, Explicit VR Little Endian). A request that accepts
//! only `application/octet-stream` for a compressed frame gets it decoded (the same
//! decoders the worker uses). The rendered image is the first frame through the
//! file's own grayscale pipeline (Modality LUT, the first VOI, MONOCHROME1), as
//! `image/jpeg` (quality 90); query parameters are not read.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::access::Caller;
use super::wado_metadata::store_failed;
use super::{ApiError, AppState};

const NATIVE: &str = "application/octet-stream";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// JPEG quality of rendered images.
const RENDERED_QUALITY: u8 = 90;

/// The media type of a compressed frame of transfer syntax `ts` (PS3.18 Table
/// 8.7.3-2); `None` for native syntaxes.
fn frame_media(ts: &str) -> Option<&'static str> {
    Some(match ts {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        _ => return None,
    })
}

/// What the frames response may carry: the stored form (compressed media type or
/// native), or the native bytes of a decoded compressed frame.
#[derive(Debug, PartialEq)]
enum FrameForm {
    Stored,
    Decoded,
}

/// Negotiates the frame form from `Accept` (absent: the stored form).
fn frame_form(headers: &HeaderMap, stored_media: &str) -> Result<FrameForm, ApiError> {
    let Some((ranges, sent)) = super::accept::ranges(headers) else {
        return Ok(FrameForm::Stored);
    };
    let ranges: Vec<_> = ranges.into_iter().filter(|r| !r.refused).collect();
    let part_type = |r: &super::accept::MediaRange| match r.media.as_str() {
        "*/*" | "multipart/*" => Some("*".to_owned()),
        "multipart/related" => Some(r.param("type").unwrap_or("*").to_ascii_lowercase()),
        m => Some(m.to_owned()),
    };
    let types: Vec<String> = ranges.iter().filter_map(part_type).collect();
    let covers = |t: &str, media: &str| {
        t == "*"
            || t == "*/*"
            || t == media
            || t.strip_suffix("/*")
                .is_some_and(|top| media.split('/').next() == Some(top))
    };
    if types.iter().any(|t| covers(t, stored_media)) {
        return Ok(FrameForm::Stored);
    }
    if stored_media != NATIVE && types.iter().any(|t| t == NATIVE) {
        return Ok(FrameForm::Decoded);
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        if stored_media == NATIVE {
            format!("the frames are stored uncompressed and are sent as {NATIVE} only; Accept was `{sent}`")
        } else {
            format!("the frames are stored as {stored_media} and can be sent as that or decoded as {NATIVE}; Accept was `{sent}`")
        },
    ))
}

/// Parses a frame list, "1" or "1,3,5".
fn frame_list(text: &str) -> Result<Vec<u32>, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "frame list `{}` is not a comma-separated list of frame numbers from 1",
            text.chars().take(64).collect::<String>()
        ))
    };
    let list: Vec<u32> = text
        .split(',')
        .map(|f| {
            f.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(bad)
        })
        .collect::<Result<_, _>>()?;
    if list.is_empty() || list.len() > 4096 {
        return Err(bad());
    }
    Ok(list)
}

pub async fn instance_frames(
    State(state): State<AppState>,
    caller: Caller,
    Path((study, series, instance, frames)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wanted = frame_list(&frames)?;
    let inst = super::wado::lookup(&state, &caller, &study, Some(&series), Some(&instance))
        .await?
        .remove(0);
    let stored_media = frame_media(&inst.transfer_syntax).unwrap_or(NATIVE);
    let form = frame_form(&headers, stored_media)?;
    let audit = caller.audit();
    state
        .catalog
        .record_audit(&audit.entry("wado.frames", Some(&study), None, None, crate::now_ms()))
        .await?;
    let bytes = state
        .ingest
        .store
        .get(&inst.object_key)
        .await
        .map_err(store_failed)?;
    let ts = inst.transfer_syntax.clone();
    let parts = tokio::task::spawn_blocking(move || frames_of(&bytes, &ts, &wanted, form))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let (media, ts_param) = match (stored_media, &parts.1) {
        (NATIVE, _) | (_, FrameForm::Decoded) => (NATIVE, EXPLICIT_LE.to_owned()),
        (m, FrameForm::Stored) => (m, inst.transfer_syntax.clone()),
    };
    let boundary = format!("tamiz-{:032x}", rand::random::<u128>());
    let mut body = Vec::new();
    for frame in parts.0 {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: {media}; transfer-syntax={ts_param}\r\nContent-Length: {}\r\n\r\n",
                frame.len()
            )
            .as_bytes(),
        );
        body.extend_from_slice(&frame);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type = format!(
        "multipart/related; type=\"{media}\"; transfer-syntax={ts_param}; boundary={boundary}"
    );
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    Ok(response)
}

fn parse(bytes: &[u8]) -> Result<DefaultDicomObject, ApiError> {
    dicom_object::OpenFileOptions::new()
        .from_reader(bytes)
        .map_err(|e| {
            tracing::error!(error = %e, "a stored instance could not be parsed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the stored instance could not be read (see server log)",
            )
        })
}

/// The requested frames' bytes, and the form they are in.
fn frames_of(
    bytes: &[u8],
    ts: &str,
    wanted: &[u32],
    form: FrameForm,
) -> Result<(Vec<Vec<u8>>, FrameForm), ApiError> {
    let obj = parse(bytes)?;
    let count = obj
        .get(tags::NUMBER_OF_FRAMES)
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    if let Some(n) = wanted.iter().find(|n| **n > count) {
        return Err(ApiError::not_found(format!(
            "frame {n} does not exist: the instance has {count} frame(s)"
        )));
    }
    let pixel = obj
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| ApiError::not_found("the instance has no Pixel Data"))?;
    let mut out = Vec::with_capacity(wanted.len());
    if form == FrameForm::Decoded {
        use dicom_pixeldata::PixelDecoder;
        for n in wanted {
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                obj.decode_pixel_data_frame(n - 1)
                    .map(|d| d.data().to_vec())
                    .map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err("the decoder failed".into()))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("frame {n} could not be decoded: {e}"),
                )
            })?;
            out.push(decoded);
        }
        return Ok((out, FrameForm::Decoded));
    }
    match pixel.value() {
        dicom_core::DicomValue::PixelSequence(seq) => {
            let fragments = seq.fragments();
            let offsets = seq.offset_table();
            for n in wanted {
                let i = (*n - 1) as usize;
                let frame: Vec<u8> = if count == 1 {
                    fragments.iter().flatten().copied().collect()
                } else if fragments.len() == count as usize {
                    fragments[i].clone()
                } else if offsets.len() == count as usize {
                    // Fragments from this frame's offset up to the next one's (each
                    // fragment takes 8 bytes of item header and its length).
                    let (start, end) = (
                        offsets[i] as u64,
                        offsets.get(i + 1).map(|o| *o as u64).unwrap_or(u64::MAX),
                    );
                    let mut at = 0u64;
                    let mut bytes = Vec::new();
                    for f in fragments {
                        if at >= start && at < end {
                            bytes.extend_from_slice(f);
                        }
                        at += 8 + f.len() as u64;
                    }
                    bytes
                } else {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            "{} fragments for {count} frames and no offset table: the frames cannot be told apart",
                            fragments.len()
                        ),
                    ));
                };
                out.push(frame);
            }
        }
        dicom_core::DicomValue::Primitive(v) => {
            let data = v.to_bytes();
            let int = |t| {
                obj.get(t)
                    .and_then(|e| e.to_int::<usize>().ok())
                    .unwrap_or(0)
            };
            let frame_len = int(tags::ROWS)
                * int(tags::COLUMNS)
                * int(tags::SAMPLES_PER_PIXEL).max(1)
                * (int(tags::BITS_ALLOCATED) / 8).max(1);
            for n in wanted {
                let start = (*n as usize - 1) * frame_len;
                let frame = data.get(start..start + frame_len).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("frame {n} lies beyond the stored Pixel Data ({ts})"),
                    )
                })?;
                out.push(frame.to_vec());
            }
        }
        dicom_core::DicomValue::Sequence(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Pixel Data is a sequence",
            ))
        }
    }
    Ok((out, FrameForm::Stored))
}

/// Whether `Accept` allows `image/jpeg` (or says nothing).
fn accepts_jpeg(headers: &HeaderMap) -> bool {
    match super::accept::ranges(headers) {
        None => true,
        Some((ranges, _)) => ranges
            .iter()
            .filter(|r| !r.refused)
            .any(|r| matches!(r.media.as_str(), "image/jpeg" | "image/*" | "*/*")),
    }
}

pub async fn instance_rendered(
    State(state): State<AppState>,
    caller: Caller,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let inst = super::wado::lookup(&state, &caller, &study, Some(&series), Some(&instance))
        .await?
        .remove(0);
    if !accepts_jpeg(&headers) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "rendered images are served as image/jpeg only",
        ));
    }
    let audit = caller.audit();
    state
        .catalog
        .record_audit(&audit.entry("wado.rendered", Some(&study), None, None, crate::now_ms()))
        .await?;
    let bytes = state
        .ingest
        .store
        .get(&inst.object_key)
        .await
        .map_err(store_failed)?;
    let jpeg = tokio::task::spawn_blocking(move || render(&bytes))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response())
}

/// The first frame as the file's grayscale pipeline shows it, as a JPEG.
fn render(bytes: &[u8]) -> Result<Vec<u8>, ApiError> {
    let obj = parse(bytes)?;
    let img = crate::dicom::pixels::decode_display(&obj).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the image could not be rendered: {e}"),
        )
    })?;
    let grey: Vec<u8> = img
        .data
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let (w, h) = (
        u16::try_from(img.width).map_err(|_| too_large())?,
        u16::try_from(img.height).map_err(|_| too_large())?,
    );
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, RENDERED_QUALITY)
        .encode(&grey, w, h, jpeg_encoder::ColorType::Luma)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(out)
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "the image is wider or taller than a JPEG can hold (65535)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lists_are_numbers_from_one() {
        assert_eq!(frame_list("1").unwrap(), vec![1]);
        assert_eq!(frame_list("1,3, 5").unwrap(), vec![1, 3, 5]);
        for bad in ["0", "", "a", "1,,2", "-1"] {
            assert!(frame_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_are_sent_as_stored_or_decoded_as_accepted() {
        let h = |accept: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            m
        };
        assert_eq!(
            frame_form(&HeaderMap::new(), "image/jls").unwrap(),
            FrameForm::Stored
        );
        assert_eq!(
            frame_form(&h("multipart/related; type=\"image/jls\""), "image/jls").unwrap(),
            FrameForm::Stored
        );
        assert_eq!(
            frame_form(
                &h("multipart/related; type=\"application/octet-stream\""),
                "image/jls"
            )
            .unwrap(),
            FrameForm::Decoded
        );
        assert_eq!(
            frame_form(
                &h("multipart/related; type=\"application/octet-stream\""),
                NATIVE
            )
            .unwrap(),
            FrameForm::Stored
        );
        assert!(frame_form(&h("multipart/related; type=\"image/jp2\""), "image/jls").is_err());
        // dicomweb-client's default, and a range of image types.
        for any in [
            "multipart/related; type=\"*/*\"",
            "multipart/related; type=\"image/*\"",
        ] {
            assert_eq!(
                frame_form(&h(any), "image/jls").unwrap(),
                FrameForm::Stored,
                "{any}"
            );
        }
    }
}
