//! TLS on the HTTP listener (rustls), checked with Python's ssl client against a
//! certificate made by openssl for the test; plain HTTP on a non-loopback address
//! warns at start-up.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

#[tokio::test]
async fn the_listener_speaks_tls_with_the_configured_certificate_and_cookies_are_secure() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, chain, key) = certs::certificate(certs.path());
    let (c, k) = (chain, key);
    let t = TestServer::start_with(move |c_| {
        c_.server.tls_cert_file = Some(c);
        c_.server.tls_key_file = Some(k);
    })
    .await;
    assert!(t.url.starts_with("https://"), "{}", t.url);
    let script = r#"
import ssl, sys, urllib.request
url, cafile, token = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=cafile)
with urllib.request.urlopen(url + "/healthz", context=ctx) as r:
    print("healthz", r.status, r.read().decode())
with urllib.request.urlopen(url + "/signin", context=ctx) as r:
    print("signin cookie secure", "Secure" in r.headers["Set-Cookie"])
req = urllib.request.Request(url + "/api/v1/summary", headers={"Authorization": "Bearer " + token})
with urllib.request.urlopen(req, context=ctx) as r:
    print("summary", r.status)
print("tls version", ctx.wrap_socket(__import__("socket").create_connection((url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1]))), server_hostname="localhost").version())
"#;
    let url = t.url.replace("127.0.0.1", "localhost");
    let (u, ca, token) = (
        url.clone(),
        cert.display().to_string(),
        t.token("coordinator").to_owned(),
    );
    let out = tokio::task::spawn_blocking(move || python(script, &[&u, &ca, &token]))
        .await
        .unwrap();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "healthz 200 ok",
            "signin cookie secure True",
            "summary 200",
            "tls version TLSv1.3",
        ]
    );
    // A client speaking plain HTTP to the TLS port gets no HTTP answer.
    let plain = t
        .http
        .get(format!("{}/healthz", t.url.replace("https://", "http://")))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // The server still serves TLS clients after that.
    let u = url.clone();
    let ca = cert.display().to_string();
    let again = tokio::task::spawn_blocking(move || {
        python(
            "import ssl,sys,urllib.request\nprint(urllib.request.urlopen(sys.argv[1] + '/healthz', context=ssl.create_default_context(cafile=sys.argv[2])).status)",
            &[&u, &ca],
        )
    })
    .await
    .unwrap();
    assert_eq!(again.trim(), "200");

    // `tamiz upload` over HTTPS, trusting the test's CA.
    let p = plan(61, false);
    let dir = t.dir.path().join("in");
    assert_eq!(study_files(&dir, &p).len(), 4);
    let token = t.token("uploader-clinic-b").to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tamiz"))
            .args(["upload", "--url", &url, "--ca-cert"])
            .arg(&cert)
            .arg(&dir)
            .env("TAMIZ_TOKEN", token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = succeeded(&out);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("stored")).count(),
        4,
        "{stdout}"
    );
    t.stop().await;
}

/// Starts `tamiz serve --no-workers` with `config`; its stderr once it has served (or
/// exited).
fn serve_stderr(t: &TestServer, config: &Path, addr: &str) -> (Option<i32>, String) {
    let mut child = t
        .node_command(&["serve", "--no-workers"], config)
        .env("TAMIZ_HTTP_ADDR", addr)
        .env("TAMIZ_LOG", "warn,tamiz=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        let port = addr.rsplit(':').next().unwrap();
        // Up once /healthz answers: start-up (and its warnings) is over. The port
        // accepts connections earlier, while the server is still starting.
        if healthz_ok(&format!("127.0.0.1:{port}")) {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let out = child.wait_with_output().unwrap();
            return (None, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tamiz serve did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether plain-HTTP `GET /healthz` at `addr` answers 200.
fn healthz_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_beyond_loopback_warns_and_a_bad_certificate_stops_start_up() {
    let t = TestServer::start_with(|c| c.worker.concurrency = 0).await;
    let config = t.dir.path().join("node.toml");
    std::fs::write(&config, "[worker]\nconcurrency = 0\n").unwrap();
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let warning = "serving plain HTTP on an address that is not loopback";
    let (_, log) =
        tokio::task::block_in_place(|| serve_stderr(&t, &config, &format!("0.0.0.0:{}", port())));
    assert!(log.contains(warning), "{log}");
    let (_, log) =
        tokio::task::block_in_place(|| serve_stderr(&t, &config, &format!("127.0.0.1:{}", port())));
    assert!(!log.contains(warning), "{log}");

    // A certificate file that is not there: start-up fails, naming it.
    let bad = t.dir.path().join("tls.toml");
    std::fs::write(
        &bad,
        "[worker]\nconcurrency = 0\n[server]\ntls_cert_file = \"missing.pem\"\ntls_key_file = \"missing-key.pem\"\n",
    )
    .unwrap();
    let (code, log) =
        tokio::task::block_in_place(|| serve_stderr(&t, &bad, &format!("127.0.0.1:{}", port())));
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("setting up TLS for the HTTP listener"),
        "{log}"
    );
    assert!(log.contains("missing.pem"), "{log}");
    t.stop().await;
}
