//! People sign in with a password on the sign-in page and get a session cookie:
//! HttpOnly, SameSite=Strict, ended on the server by sign-out, a disabled user or a new
//! password; every change a session makes carries its CSRF token; failed sign-ins are
//! rate-limited. Over plain HTTP (reqwest, cookies handled by hand, so each one is
//! checked) and in a real browser (Chromium driven by Selenium).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::Value;
use tamiz::catalog::Role;

const PASSWORD: &str = "correct horse battery staple";

/// A client that does not follow redirects (the 303s are what is checked).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// `tamiz users add NAME --role radiologist --center central --password`, the
/// password on stdin, against the test server's catalog while it runs.
fn add_with_password(t: &TestServer, name: &str, password: &str) -> std::process::Output {
    let config = t.dir.path().join("cli.toml");
    std::fs::write(
        &config,
        "default_diagnosis_center = \"central\"\n\
         [[diagnosis_centers]]\nid = \"central\"\nname = \"Central\"\n",
    )
    .unwrap();
    let mut child = t
        .node_command(
            &[
                "users",
                "add",
                name,
                "--role",
                "radiologist",
                "--center",
                "central",
                "--password",
            ],
            &config,
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The sign-in form's token and its cookie, from `GET /signin`.
async fn form_token(t: &TestServer, http: &reqwest::Client) -> (String, String) {
    let resp = http.get(format!("{}/signin", t.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = set_cookie(&resp, "tamiz_signin").expect("the form's cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let html = resp.text().await.unwrap();
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the form's csrf field")
        .to_owned();
    (token, cookie_pair(&cookie))
}

/// The `Set-Cookie` header setting cookie `name`.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// `name=value` of a `Set-Cookie` header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// Signs in; returns the status, the session cookie (`tamiz_session=...`) if one was
/// set, and the page.
async fn sign_in(t: &TestServer, name: &str, password: &str) -> (u16, Option<String>, String) {
    let http = client();
    let (token, form_cookie) = form_token(t, &http).await;
    let resp = http
        .post(format!("{}/signin", t.url))
        .header(COOKIE, form_cookie)
        .form(&[("name", name), ("password", password), ("csrf", &token)])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let session = set_cookie(&resp, "tamiz_session");
    if status == 303 {
        assert_eq!(resp.headers()[LOCATION], "/");
    } else {
        // A refusal is the sign-in page again, as HTML.
        assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    }
    (status, session, resp.text().await.unwrap())
}

async fn get(t: &TestServer, path: &str, cookie: &str) -> (u16, Value) {
    let resp = client()
        .get(format!("{}{path}", t.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_session_works_until_sign_out_and_every_change_needs_its_csrf_token() {
    let t = TestServer::start().await;
    let out = add_with_password(&t, "dr-ana", PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(
        token.trim().starts_with("tz_"),
        "the API token alone on stdout: {token}"
    );

    // A wrong password: one answer, whatever was wrong; nothing echoed.
    for (name, password) in [("dr-ana", "wrong password 123"), ("nobody-here", PASSWORD)] {
        let (status, session, page) = sign_in(&t, name, password).await;
        assert_eq!((status, session), (401, None));
        assert!(
            page.contains("the user name or password is wrong"),
            "{page}"
        );
        assert!(
            !page.contains(password),
            "the password came back in the page"
        );
    }
    // A form without its cookie (a page of another site posting here): refused.
    let resp = client()
        .post(format!("{}/signin", t.url))
        .form(&[("name", "dr-ana"), ("password", PASSWORD), ("csrf", "0123")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(set_cookie(&resp, "tamiz_session").is_none());
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("the sign-in form expired or did not come from this site"));

    let (status, session, _) = sign_in(&t, "dr-ana", PASSWORD).await;
    assert_eq!(status, 303);
    let session = session.expect("a session cookie");
    assert!(session.starts_with("tamiz_session=ts_"), "{session}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(
            session.contains(attribute),
            "{attribute} missing: {session}"
        );
    }
    assert!(
        !session.contains("Secure"),
        "no Secure without TLS: {session}"
    );
    let cookie = cookie_pair(&session);

    // The home page names the user and carries the session's CSRF token.
    let resp = client()
        .get(format!("{}/", t.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let csrf = resp.headers()["x-csrf-token"].to_str().unwrap().to_owned();
    let home = resp.text().await.unwrap();
    assert!(
        home.contains("Signed in as <strong>dr-ana</strong> (radiologist, central)"),
        "{home}"
    );
    assert!(home.contains(&format!("name=\"csrf\" value=\"{csrf}\"")));

    // Reads need only the cookie; changes need the token too.
    assert_eq!(
        get(&t, "/api/v1/centers/central/worklist", &cookie).await.0,
        200
    );
    assert_eq!(
        get(&t, "/api/v1/centers/north/worklist", &cookie).await.0,
        403
    );
    let claim = format!("{}/api/v1/centers/central/worklist/claim", t.url);
    for given in [None, Some("0".repeat(64))] {
        let mut req = client().post(&claim).header(COOKIE, &cookie);
        if let Some(g) = given {
            req = req.header("X-CSRF-Token", g);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 403);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["error"],
            "missing or wrong CSRF token: a signed-in browser sends its session's token \
             (X-CSRF-Token header, or form field csrf) with every change"
        );
    }
    let resp = client()
        .post(&claim)
        .header(COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        204,
        "an empty queue, claimed as dr-ana"
    );

    // Sign-out ends the session on the server: the old cookie no longer works.
    let resp = client()
        .post(format!("{}/signout", t.url))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert!(set_cookie(&resp, "tamiz_session")
        .unwrap()
        .contains("Max-Age=0"));
    let (status, err) = get(&t, "/api/v1/centers/central/worklist", &cookie).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (
            401,
            Some("the session has ended or expired: sign in again at /signin")
        )
    );

    // A new password ends the sessions; so does disabling the user.
    let (_, s2, _) = sign_in(&t, "dr-ana", PASSWORD).await;
    let c2 = cookie_pair(&s2.unwrap());
    assert_eq!(
        get(&t, "/api/v1/centers/central/worklist", &c2).await.0,
        200
    );
    tamiz::auth::set_password(&t.server.catalog, "dr-ana", "another long passphrase")
        .await
        .unwrap();
    assert_eq!(
        get(&t, "/api/v1/centers/central/worklist", &c2).await.0,
        401
    );
    assert_eq!(sign_in(&t, "dr-ana", PASSWORD).await.0, 401);
    let (_, s3, _) = sign_in(&t, "dr-ana", "another long passphrase").await;
    let c3 = cookie_pair(&s3.unwrap());
    assert_eq!(
        get(&t, "/api/v1/centers/central/worklist", &c3).await.0,
        200
    );
    // A session past its expiry is refused like an ended one.
    let key = tamiz::auth::TokenKey::load(&t.server.config).unwrap();
    let stale = format!("ts_{}", "5".repeat(64));
    let record = t
        .server
        .catalog
        .password_record("dr-ana")
        .await
        .unwrap()
        .unwrap();
    let now = tamiz::now_ms();
    t.server
        .catalog
        .create_session(
            record.identity.user_id.unwrap(),
            &key.hash(&stale),
            "csrf",
            now - 7_200_000,
            now - 1,
        )
        .await
        .unwrap();
    let (status, err) = get(
        &t,
        "/api/v1/centers/central/worklist",
        &format!("tamiz_session={stale}"),
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (
            401,
            Some("the session has ended or expired: sign in again at /signin")
        )
    );
    t.server
        .catalog
        .set_user_disabled("dr-ana", true)
        .await
        .unwrap();
    assert_eq!(
        get(&t, "/api/v1/centers/central/worklist", &c3).await.0,
        401
    );
    assert_eq!(
        sign_in(&t, "dr-ana", "another long passphrase").await.0,
        401
    );

    // A short password is refused by the CLI before the user exists.
    let out = add_with_password(&t, "dr-short", "short");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("a password must have at least 12 characters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t
        .server
        .catalog
        .password_record("dr-short")
        .await
        .unwrap()
        .is_none());
    t.stop().await;
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_user_name() {
    let mut t = TestServer::start_with(|c| {
        c.auth.signin_max_failures = 3;
        c.auth.signin_window_secs = 600;
    })
    .await;
    t.add_user("dr-ben", Role::Radiologist, Some("central"))
        .await;
    tamiz::auth::set_password(&t.server.catalog, "dr-ben", PASSWORD)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(sign_in(&t, "dr-ben", "guess guess guess").await.0, 401);
    }
    // Now even the right password waits for the window to pass.
    let http = client();
    let (token, form_cookie) = form_token(&t, &http).await;
    let resp = http
        .post(format!("{}/signin", t.url))
        .header(COOKIE, form_cookie)
        .form(&[("name", "dr-ben"), ("password", PASSWORD), ("csrf", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "600");
    assert!(set_cookie(&resp, "tamiz_session").is_none());
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("too many failed sign-ins; try again in 10 minutes"));
    // Another user is not held back by dr-ben's failures.
    t.add_user("dr-cleo", Role::Radiologist, Some("central"))
        .await;
    tamiz::auth::set_password(&t.server.catalog, "dr-cleo", PASSWORD)
        .await
        .unwrap();
    assert_eq!(sign_in(&t, "dr-cleo", PASSWORD).await.0, 303);
    t.stop().await;
}

/// Chromium and its driver (Debian's), and Selenium in the test venv.
fn browser_tools() -> Option<std::path::PathBuf> {
    let ready =
        Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists();
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but Chromium or chromedriver is missing: run scripts/setup.sh --test"
        );
        eprintln!("skipped: no Chromium (scripts/setup.sh --test installs it)");
        return None;
    }
    Some(venv_python())
}

#[tokio::test]
async fn a_real_browser_signs_in_sees_its_home_and_signs_out() {
    let Some(python) = browser_tools() else {
        return;
    };
    let mut t = TestServer::start().await;
    t.add_user("dr-dana", Role::Radiologist, Some("north"))
        .await;
    tamiz::auth::set_password(&t.server.catalog, "dr-dana", PASSWORD)
        .await
        .unwrap();
    let script = r#"
import sys
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

def find(by, what):
    # Waits (bounded) for the page a click navigated to.
    return WebDriverWait(d, 15).until(lambda d: d.find_element(by, what))

url, name, password = sys.argv[1:4]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]:
    opts.add_argument(a)
d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    d.get(url + "/")
    print("title:", d.title)
    d.find_element(By.ID, "name").send_keys(name)
    d.find_element(By.ID, "password").send_keys("wrong password 123")
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    print("wrong:", find(By.CLASS_NAME, "error").text)
    d.find_element(By.ID, "name").clear()
    d.find_element(By.ID, "name").send_keys(name)
    d.find_element(By.ID, "password").send_keys(password)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    print("who:", find(By.ID, "who").text)
    print("script sees cookie:", "tamiz_session" in d.execute_script("return document.cookie"))
    session = [c for c in d.get_cookies() if c["name"] == "tamiz_session"][0]
    print("httponly:", session["httpOnly"], "samesite:", session.get("sameSite"))
    d.find_element(By.LINK_TEXT, "your diagnosis center's worklist").click()
    WebDriverWait(d, 15).until(lambda d: "/worklist" in d.current_url)
    print("worklist:", find(By.TAG_NAME, "body").text[:40])
    d.get(url + "/")
    d.find_element(By.CSS_SELECTOR, "form[action='/signout'] button").click()
    WebDriverWait(d, 15).until(lambda d: d.current_url.endswith("/signin"))
    print("after sign-out:", d.current_url.replace(url, ""), d.title)
    d.get(url + "/api/v1/centers/north/worklist")
    print("worklist after:", d.find_element(By.TAG_NAME, "body").text[:60])
finally:
    d.quit()
"#;
    let url = t.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", script, &url, "dr-dana", PASSWORD])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = succeeded(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "title: Sign in · tamiz",
            "wrong: the user name or password is wrong",
            "who: Signed in as dr-dana (radiologist, north).",
            "script sees cookie: False",
            "httponly: True samesite: Strict",
            "worklist: {\"center\":\"north\",\"items\":[]}",
            "after sign-out: /signin Sign in · tamiz",
            // The cookie is gone: the browser sends no credentials at all.
            "worklist after: {\"error\":\"missing credentials: send Authorization: Bearer <A",
        ]
    );
    t.stop().await;
}
