//! WADO-RS metadata, frames and rendered images with a real client
//! (dicomweb-client): what a DICOMweb viewer asks for before and while it shows a
//! study. Frames come back as stored (a JPEG-LS codestream bit for bit) or decoded
//! (equal to the uncompressed original); the rendered JPEG matches tamiz's own
//! rendering; refusals are exact.

mod common;

use std::path::Path;

use common::enhanced;
use common::*;
use serde_json::Value;

/// Prints, for the study / series / instance metadata, each instance's SOP Instance
/// UID, Image Laterality, stored transfer syntax and Pixel Data BulkDataURI.
const METADATA: &str = r#"
import sys
from dicomweb_client.api import DICOMwebClient
url, token, study, series, sop = sys.argv[1:6]
c = DICOMwebClient(url=url, headers={"Authorization": "Bearer " + token})
def show(label, items):
    for m in sorted(items, key=lambda m: m["00080018"]["Value"][0]):
        print(label, m["00080018"]["Value"][0], m["00200062"]["Value"][0],
              m["00020010"]["Value"][0], m["7FE00010"]["BulkDataURI"])
show("study", c.retrieve_study_metadata(study))
show("series", c.retrieve_series_metadata(study, series))
show("instance", [c.retrieve_instance_metadata(study, series, sop)])
"#;

/// Retrieves frames of one instance as `media`, and the rendered image; prints the
/// SHA-256 of each frame, then the rendered JPEG's size and its mean absolute
/// difference to the 8-bit rendering in argv[7] (raw bytes).
const PIXELS: &str = r#"
import hashlib, io, sys
import numpy as np
from PIL import Image
from dicomweb_client.api import DICOMwebClient
url, token, study, series, sop, frames, media = sys.argv[1:8]
c = DICOMwebClient(url=url, headers={"Authorization": "Bearer " + token})
mt = None if media == "-" else ((media.split("|")[0], media.split("|")[1]) if "|" in media else (media,),)
for f in c.retrieve_instance_frames(study, series, sop, [int(n) for n in frames.split(",")], media_types=mt):
    print("frame", hashlib.sha256(f).hexdigest(), len(f))
if len(sys.argv) > 8:
    jpeg = c.retrieve_instance_rendered(study, series, sop, media_types=("image/jpeg",))
    img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float64)
    ours = np.frombuffer(open(sys.argv[8], "rb").read(), dtype=np.uint8).reshape(img.shape)
    print("rendered", img.shape[1], img.shape[0], "%.3f" % np.abs(img - ours).mean())
"#;

fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(b))
}

fn uid_of(path: &Path, tag: dicom_core::Tag) -> String {
    let obj = dicom_object::open_file(path).unwrap();
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_owned()
}

/// Runs `script` on a blocking thread with the server's DICOMweb URL and `user`'s
/// token first.
async fn client(t: &TestServer, user: &str, script: &'static str, args: &[String]) -> String {
    let mut a = vec![format!("{}/dicomweb", t.url), t.token(user).to_owned()];
    a.extend(args.iter().cloned());
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        python(script, &a)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_frames_and_rendered_images_as_a_viewer_asks_for_them() {
    let t = TestServer::start().await;
    let p = plan(4170, true);
    let dir = t.dir.path().join("in");
    let files = study_files(&dir, &p);
    // The first view goes in as JPEG-LS (dcmtk, lossless); the others uncompressed.
    let jls = dir.join("jls.dcm");
    tool(
        "dcmcjpls",
        &["+el", files[0].0.to_str().unwrap(), jls.to_str().unwrap()],
    );
    let mut parts = vec![std::fs::read(&jls).unwrap()];
    parts.extend(files[1..].iter().map(|f| f.1.clone()));
    let (code, body) = t.stow("/dicomweb/studies", &parts, Some("clinic-b")).await;
    assert_eq!(code, 200, "{body}");
    t.wait_worklisted(&p.study_uid).await;

    let series = uid_of(&files[0].0, dicom_dictionary_std::tags::SERIES_INSTANCE_UID);
    let jls_sop = uid_of(&jls, dicom_dictionary_std::tags::SOP_INSTANCE_UID);
    let raw_sop = uid_of(&files[1].0, dicom_dictionary_std::tags::SOP_INSTANCE_UID);

    // Metadata: every instance, with its laterality, stored syntax and pixel link.
    let out = client(
        &t,
        "radiologist-central",
        METADATA,
        &[p.study_uid.clone(), series.clone(), jls_sop.clone()],
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("study ")).count(),
        4,
        "{out}"
    );
    let base = format!(
        "/dicomweb/studies/{}/series/{series}/instances",
        p.study_uid
    );
    for (sop, ts) in [
        (&jls_sop, "1.2.840.10008.1.2.4.80"),
        (&raw_sop, "1.2.840.10008.1.2.1"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("study {sop} ")))
            .unwrap_or_else(|| panic!("{sop} not in {out}"));
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[3], ts, "{line}");
        // dicomweb-client leaves the port out of Host, so only the path is checked
        // here (a deployment sets server.public_url).
        assert!(
            fields[4].ends_with(&format!("{base}/{sop}/frames/1")),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("instance {jls_sop} "))),
        "{out}"
    );

    // The original pixels of the JPEG-LS view, and its codestream as stored.
    let original = dicom_object::open_file(&files[0].0).unwrap();
    let native = original
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .to_vec();
    let stored = dicom_object::open_file(&jls).unwrap();
    let codestream: Vec<u8> = stored
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .value()
        .fragments()
        .unwrap()
        .iter()
        .flatten()
        .copied()
        .collect();

    // As stored: the JPEG-LS codestream, bit for bit.
    let args = |sop: &str, frames: &str, media: &str| {
        vec![
            p.study_uid.clone(),
            series.clone(),
            sop.to_owned(),
            frames.to_owned(),
            media.to_owned(),
        ]
    };
    let out = client(
        &t,
        "radiologist-central",
        PIXELS,
        &args(&jls_sop, "1", "image/jls|1.2.840.10008.1.2.4.80"),
    )
    .await;
    assert_eq!(
        out.trim(),
        format!("frame {} {}", sha256_hex(&codestream), codestream.len())
    );
    // Decoded for a client that takes only uncompressed data: the original pixels.
    let out = client(
        &t,
        "radiologist-central",
        PIXELS,
        &args(&jls_sop, "1", "application/octet-stream"),
    )
    .await;
    assert_eq!(
        out.trim(),
        format!("frame {} {}", sha256_hex(&native), native.len())
    );
    // An uncompressed view's frame, and its rendering against tamiz's own.
    let raw = std::fs::read(&files[1].0).unwrap();
    let raw_obj = dicom_object::from_reader(&raw[128..]).unwrap();
    let raw_pixels = raw_obj
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .to_vec();
    let ours = tamiz::dicom::pixels::decode_display(&raw_obj).unwrap();
    let ours8: Vec<u8> = ours
        .data
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let ours_path = t.dir.path().join("ours.gray");
    std::fs::write(&ours_path, &ours8).unwrap();
    let mut a = args(&raw_sop, "1", "-");
    a.push(ours_path.to_str().unwrap().to_owned());
    let out = client(&t, "radiologist-central", PIXELS, &a).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("frame {} {}", sha256_hex(&raw_pixels), raw_pixels.len())
    );
    let rendered: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(
        (rendered[0], rendered[1], rendered[2]),
        (
            "rendered",
            COLUMNS.to_string().as_str(),
            ROWS.to_string().as_str()
        )
    );
    let mean_diff: f64 = rendered[3].parse().unwrap();
    assert!(
        mean_diff < 2.0,
        "JPEG q90 differs by {mean_diff} grey levels on average"
    );
    t.stop().await;
}

/// `GET path` as the admin with `accept`: status and body as JSON.
async fn get(t: &TestServer, path: &str, accept: &str) -> (u16, Value) {
    let resp = t
        .http
        .get(format!("{}{path}", t.url))
        .header("Authorization", t.bearer("admin"))
        .header("Accept", accept)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tomosynthesis_frames_and_refusals_are_exact() {
    let t = TestServer::start().await;
    let p = plan(4171, false);
    let views = tamiz::synth::study_objects(&p);
    let tomo = enhanced::tomosynthesis(&views[0].2, 3, "9");
    let sop = tomo
        .meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_owned();
    let series = uid_of_obj(&tomo, dicom_dictionary_std::tags::SERIES_INSTANCE_UID);
    let (code, body) = t
        .stow(
            "/dicomweb/studies",
            &[enhanced::bytes(&tomo)],
            Some("clinic-b"),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let slice: Vec<u8> = views[0]
        .2
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap()
        .to_vec();
    // Frames 3 and 1 of the stack: each the slice it was made from.
    let out = client(
        &t,
        "admin",
        PIXELS,
        &[
            p.study_uid.clone(),
            series.clone(),
            sop.clone(),
            "3,1".into(),
            "application/octet-stream".into(),
        ],
    )
    .await;
    let want = format!("frame {} {}", sha256_hex(&slice), slice.len());
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![want.as_str(), want.as_str()]
    );

    let inst = format!(
        "/dicomweb/studies/{}/series/{series}/instances/{sop}",
        p.study_uid
    );
    let octet = "multipart/related; type=\"application/octet-stream\"";
    assert_eq!(
        get(&t, &format!("{inst}/frames/4"), octet).await,
        (
            404,
            serde_json::json!({"error": "frame 4 does not exist: the instance has 3 frame(s)"})
        )
    );
    assert_eq!(
        get(&t, &format!("{inst}/frames/0"), octet).await,
        (
            400,
            serde_json::json!({"error": "frame list `0` is not a comma-separated list of frame numbers from 1"})
        )
    );
    assert_eq!(
        get(
            &t,
            &format!("{inst}/frames/1"),
            "multipart/related; type=\"image/jp2\""
        )
        .await,
        (
            406,
            serde_json::json!({"error": "the frames are stored uncompressed and are sent as application/octet-stream only; Accept was `multipart/related; type=\"image/jp2\"`"})
        )
    );
    assert_eq!(
        get(&t, &format!("{inst}/rendered"), "image/png").await,
        (
            406,
            serde_json::json!({"error": "rendered images are served as image/jpeg only"})
        )
    );
    assert_eq!(
        get(&t, &format!("{inst}/metadata"), "application/dicom+xml").await,
        (
            406,
            serde_json::json!({"error": "metadata is served as application/dicom+json only"})
        )
    );
    let (status, _) = get(&t, &format!("{inst}/rendered"), "image/jpeg").await;
    assert_eq!(status, 200);

    // Byte ranges of the instance, read from the object store as ranges.
    let file = enhanced::bytes(&tomo);
    let size = file.len();
    let ranged = |range: String| {
        let (t, inst) = (&t, &inst);
        async move {
            let resp = t
                .http
                .get(format!("{}{inst}", t.url))
                .header("Authorization", t.bearer("admin"))
                .header("Range", range)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let content_range = resp
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, content_range, resp.bytes().await.unwrap().to_vec())
        }
    };
    /// The one part's body of a multipart response.
    fn part(body: &[u8]) -> &[u8] {
        let head_end = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&body[..head_end]);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        &body[head_end..head_end + len]
    }
    let (status, content_range, body) = ranged("bytes=1000-1999".into()).await;
    assert_eq!(
        (status, content_range.as_str()),
        (206, format!("bytes 1000-1999/{size}").as_str())
    );
    assert_eq!(part(&body), &file[1000..2000]);
    let (status, content_range, body) = ranged("bytes=-100".into()).await;
    assert_eq!(
        (status, content_range.as_str()),
        (
            206,
            format!("bytes {}-{}/{size}", size - 100, size - 1).as_str()
        )
    );
    assert_eq!(part(&body), &file[size - 100..]);
    let (status, content_range, body) = ranged(format!("bytes={size}-")).await;
    assert_eq!((status, content_range), (416, format!("bytes */{size}")));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"],
        format!("the range starts at byte {size}, but instance {sop} holds {size} bytes")
    );
    // Several ranges are ignored: the whole instance.
    let (status, _, body) = ranged("bytes=0-9,20-29".into()).await;
    assert_eq!(status, 200);
    assert_eq!(part(&body), &file[..]);
    t.stop().await;
}

fn uid_of_obj(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_owned()
}
