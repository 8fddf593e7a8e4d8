//! What an upload may make the server spend is bounded: uploads in progress, bytes in
//! flight, connections, slow headers and stalled bodies; temporary failures answer
//! 503/507 with Retry-After; nothing is left behind by a cancelled upload, a crash or
//! a lost race. Clients here are raw TCP sockets where a real client would not
//! misbehave on purpose.

mod common;

use std::time::Duration;

use common::corpus;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A STOW-RS request whose chunked body is sent piece by piece.
struct SlowUpload {
    s: TcpStream,
}

impl SlowUpload {
    /// As the admin gateway of test server `t`.
    async fn open(t: &TestServer) -> SlowUpload {
        let mut s = TcpStream::connect(t.addr()).await.expect("connect");
        let head = format!(
            "POST /dicomweb/studies HTTP/1.1\r\nHost: test\r\nAuthorization: {}\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            t.bearer("admin"),
            corpus::content_type()
        );
        s.write_all(head.as_bytes()).await.expect("send head");
        SlowUpload { s }
    }

    async fn send(&mut self, data: &[u8]) {
        self.s
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .await
            .expect("chunk size");
        self.s.write_all(data).await.expect("chunk");
        self.s.write_all(b"\r\n").await.expect("chunk end");
    }

    /// Ends the body and reads the answer.
    async fn finish(mut self) -> (u16, Option<String>, Value) {
        self.s.write_all(b"0\r\n\r\n").await.expect("last chunk");
        read_response(&mut self.s).await
    }
}

/// Reads one HTTP/1.1 response (Content-Length bodies): status, Retry-After, JSON.
async fn read_response(s: &mut TcpStream) -> (u16, Option<String>, Value) {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let len: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let n = s.read(&mut chunk).await.expect("read body");
                    assert!(n > 0, "connection closed inside the body");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let status = head[9..12].parse().expect("status code");
                let body = &buf[end + 4..end + 4 + len];
                return (
                    status,
                    header("retry-after"),
                    serde_json::from_slice(body).unwrap_or(Value::Null),
                );
            }
            let n = s.read(&mut chunk).await.expect("read head");
            assert!(n > 0, "connection closed before a response");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("a response within 20 s")
}

/// The first bytes of a part carrying `instance`, then the rest and the close.
fn split_part(instance: &[u8], at: usize) -> (Vec<u8>, Vec<u8>) {
    let mut first = format!(
        "--{}\r\nContent-Type: application/dicom\r\n\r\n",
        corpus::BOUNDARY
    )
    .into_bytes();
    first.extend_from_slice(&instance[..at]);
    let mut rest = instance[at..].to_vec();
    rest.extend_from_slice(format!("\r\n--{}--\r\n", corpus::BOUNDARY).as_bytes());
    (first, rest)
}

fn error(body: &Value) -> &str {
    body.get("error").and_then(Value::as_str).unwrap_or("")
}

#[tokio::test]
async fn uploads_beyond_max_concurrent_uploads_get_503_with_retry_after() {
    let t = TestServer::start_with(|c| c.limits.max_concurrent_uploads = 1).await;
    let base = corpus::base_instance();
    let (first, rest) = split_part(&base, 100);
    let mut held = SlowUpload::open(&t).await;
    held.send(&first).await;
    eventually(10, "the first upload is being spooled", || {
        !t.spooled().is_empty()
    })
    .await;

    let resp = t
        .http
        .post(format!("{}/dicomweb/studies", t.url))
        .header("Authorization", t.bearer("admin"))
        .header("Content-Type", corpus::content_type())
        .body(corpus::multipart_raw(
            &[b"Content-Type: application/dicom\r\n\r\nx"],
            true,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        error(&body),
        "server busy: 1 uploads are in progress (limits.max_concurrent_uploads)"
    );

    held.send(&rest).await;
    let (status, _, body) = held.finish().await;
    assert_eq!(status, 200, "the admitted upload completes: {body}");
    // its slot is free again
    let (status, body) = t.stow("/dicomweb/studies", &[base], None).await;
    assert_eq!(status, 200, "{body}");
    t.stop().await;
}

#[tokio::test]
async fn bytes_beyond_max_upload_bytes_in_flight_get_503_and_nothing_is_kept() {
    let t = TestServer::start_with(|c| {
        c.limits.max_instance_bytes = 1 << 20;
        c.limits.max_upload_bytes_in_flight = 1 << 20;
    })
    .await;
    let big = vec![0x55u8; 900 << 10];
    let (first, _) = split_part(&big, big.len());
    let mut held = SlowUpload::open(&t).await;
    held.send(&first).await;
    eventually(10, "900 KiB are spooled", || {
        t.spooled().iter().any(|(_, n)| *n >= 900 << 10)
    })
    .await;

    let (status, body) = t
        .stow("/dicomweb/studies", &[vec![0x66u8; 200 << 10]], None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        error(&body),
        "server busy: more than 1048576 bytes of uploads are being received (limits.max_upload_bytes_in_flight) (after 0 part(s), 0 stored; resending them is safe)"
    );
    assert_eq!(
        t.spooled().len(),
        1,
        "the refused upload left no spool file"
    );
    drop(held);
    eventually(10, "the dropped upload's spool file is removed", || {
        t.spooled().is_empty()
    })
    .await;
    // with the budget free again, the same request passes the spool (and is then
    // refused as the garbage it is)
    let (status, body) = t
        .stow("/dicomweb/studies", &[vec![0x66u8; 200 << 10]], None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(t.stored_objects().await.is_empty());
    t.stop().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_its_spool_file_is_removed() {
    let t = TestServer::start_with(|c| c.limits.body_idle_timeout_secs = 1).await;
    let base = corpus::base_instance();
    let (first, _) = split_part(&base, 100);
    let mut up = SlowUpload::open(&t).await;
    up.send(&first).await;
    let (status, _, body) = read_response(&mut up.s).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(
        error(&body),
        "the client sent nothing for 1s (limits.body_idle_timeout_secs) (after 0 part(s), 0 stored; resending them is safe)"
    );
    eventually(5, "no spool file is left", || t.spooled().is_empty()).await;
    assert!(t.stored_objects().await.is_empty());
    assert_eq!(t.healthz().await, 200);
    t.stop().await;
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let t = TestServer::start_with(|c| c.limits.header_timeout_secs = 1).await;
    // headers that never end
    let mut s = TcpStream::connect(t.addr()).await.unwrap();
    s.write_all(b"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "the server closed the connection of a client that never finished its headers"
    );
    // a keep-alive connection left idle after a request
    let mut s = TcpStream::connect(t.addr()).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, _, _) = read_response(&mut s).await;
    assert_eq!(status, 200);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection is closed");
    t.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let t = TestServer::start_with(|c| c.limits.max_connections = 4).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(t.addr()).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.0, 200);
        open.push(s); // kept alive, holding its slot
    }
    let mut fifth = TcpStream::connect(t.addr()).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), fifth.read_to_end(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the fifth connection is closed without an answer: {r:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    drop(open.pop());
    // the freed slot serves again (the server notices the close asynchronously)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(t.addr()).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
        if buf.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a freed slot never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.stop().await;
}

#[tokio::test]
async fn start_up_removes_temp_files_that_dead_processes_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("uploads")).unwrap();
    std::fs::create_dir_all(data.join("objects/.tmp")).unwrap();
    // pid 2147483646 is above Linux's pid_max: never a live process
    let stale_upload = data.join("uploads/upload-2147483646-00ff.dcm");
    let stale_object = data.join("objects/.tmp/2147483646-1234");
    std::fs::write(&stale_upload, vec![0u8; 4096]).unwrap();
    std::fs::write(&stale_object, vec![0u8; 4096]).unwrap();
    let t = TestServer::start_in(dir, |_| {}).await;
    assert!(!stale_upload.exists(), "stale spool file removed");
    if !common::backends::scaled() {
        // The directory store's own temp folder (the S3 store has none).
        assert!(!stale_object.exists(), "stale object temp file removed");
    }
    t.stop().await;
}

#[tokio::test]
async fn a_cancelled_upload_leaves_nothing_behind() {
    let t = TestServer::start().await;
    let base = corpus::base_instance();
    let (first, _) = split_part(&base, base.len() / 2);
    let mut up = SlowUpload::open(&t).await;
    up.send(&first).await;
    eventually(10, "the upload is being spooled", || {
        !t.spooled().is_empty()
    })
    .await;
    drop(up); // the client goes away mid-part
    eventually(10, "its spool file is removed", || t.spooled().is_empty()).await;
    assert!(t.stored_objects().await.is_empty());
    t.stop().await;
}

#[tokio::test]
async fn a_failing_object_store_answers_503_retry_later_and_the_resend_succeeds() {
    if common::backends::scaled() {
        // Failure injection into the directory store; tests/s3_outage.rs stops a
        // real S3 server under a running tamiz for the same answer.
        return;
    }
    let t = TestServer::start().await;
    let base = corpus::base_instance();
    // The store cannot create `studies/...`: a plain file stands where its folder goes.
    let blocker = t.dir.path().join("data/objects/studies");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let (status, body) = t
        .stow("/dicomweb/studies", std::slice::from_ref(&base), None)
        .await;
    assert_eq!(status, 503, "{body}");
    let failed = seq(&body, "00081198");
    assert_eq!(failed.len(), 1, "{body}");
    assert_eq!(first(failed[0], "00081197"), 0x0110);
    assert_eq!(
        failure_text(failed[0]),
        "the object store failed or could not be reached (see server log); retry later"
    );
    assert_eq!(first(failed[0], "00081155"), corpus::SOP_UID);
    std::fs::remove_file(&blocker).unwrap();
    let (status, body) = t.stow("/dicomweb/studies", &[base], None).await;
    assert_eq!(status, 200, "the resend is stored: {body}");
    t.stop().await;
}

#[tokio::test]
async fn concurrent_sends_of_one_sop_uid_under_two_studies_store_one_object() {
    let t = TestServer::start().await;
    let base = corpus::base_instance();
    for round in 0..20 {
        let sop = format!("1.2.826.0.1.{round}");
        let variant = |study: &str| {
            corpus::mutate(&base, |o| {
                for (tag, v) in [
                    (dicom_dictionary_std::tags::SOP_INSTANCE_UID, sop.as_str()),
                    (dicom_dictionary_std::tags::STUDY_INSTANCE_UID, study),
                ] {
                    o.put(dicom_core::DataElement::new(
                        tag,
                        dicom_core::VR::UI,
                        dicom_core::value::PrimitiveValue::from(v),
                    ));
                }
            })
        };
        let (a, b) = (
            variant(&format!("1.2.9.{round}.1")),
            variant(&format!("1.2.9.{round}.2")),
        );
        let (ra, rb) = tokio::join!(
            t.stow("/dicomweb/studies", std::slice::from_ref(&a), None),
            t.stow("/dicomweb/studies", std::slice::from_ref(&b), None)
        );
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {} {}", ra.1, rb.1);
        let refused = if ra.0 == 409 { &ra.1 } else { &rb.1 };
        let failed = seq(refused, "00081198");
        assert_eq!(
            first(failed[0], "00081197"),
            0x0111,
            "round {round}: {refused}"
        );
        assert!(failure_text(failed[0])
            .as_str()
            .unwrap()
            .contains("is already stored with different content"));
    }
    assert_eq!(
        t.stored_objects().await.len(),
        20,
        "one object per SOP Instance UID: the loser of each race left no orphan"
    );
    t.stop().await;
}

/// A tmpfs mounted for one test (needs root), unmounted and removed on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, bytes: u64) -> Option<Tmpfs> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(path.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_with_retry_after_and_the_resend_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let Some(disk) = Tmpfs::mount(&data, 8 << 20) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: mounting a tmpfs for the disk-full test must work"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let t = TestServer::start_in(dir, |_| {}).await;
    let base = corpus::base_instance();
    // Fill the disk to the last block.
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 4096]).is_ok() {}
    }
    let (status, retry, body) = {
        let resp = t
            .http
            .post(format!("{}/dicomweb/studies", t.url))
            .header("Authorization", t.bearer("admin"))
            .header("Content-Type", corpus::content_type())
            .body(multipart(std::slice::from_ref(&base)).1)
            .send()
            .await
            .unwrap();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (
            resp.status().as_u16(),
            retry,
            resp.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 507, "{body}");
    assert_eq!(retry.as_deref(), Some("60"));
    assert_eq!(
        error(&body),
        "the server's disk is full; nothing was lost, retry later (after 0 part(s), 0 stored; resending them is safe)"
    );
    assert!(t.spooled().is_empty(), "the partial spool file is removed");
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = t.stow("/dicomweb/studies", &[base], None).await;
    assert_eq!(status, 200, "{body}");
    t.stop().await;
    drop(disk);
}
