//! A STOW-RS request body through the real router: admission, multipart framing and
//! bounds, spooling, ingest checks, the object store and the SQLite catalog in a
//! temporary directory. The first input byte picks how the body is chunked (framing
//! across chunk borders is where delimiter bugs hide). Any body must get one of the
//! documented answers; a 5xx (nothing here is a server-side failure) or a panic is
//! a bug.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const CONTENT_TYPE: &str = "multipart/related; type=\"application/dicom\"; boundary=fuzzb";

struct App {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    /// `Bearer` and an admin's API token: the body is what is fuzzed, not the sign-in.
    authorization: String,
    _dir: tempfile::TempDir,
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = tamiz::config::Config::default();
        config.server.data_dir = dir.path().to_owned();
        config.limits.max_instance_bytes = 1 << 20;
        config.limits.max_request_bytes = 4 << 20;
        config.limits.max_multipart_header_bytes = 4096;
        let config = std::sync::Arc::new(config);
        let (router, authorization) = rt.block_on(async {
            let catalog = tamiz::catalog::Catalog::open(&config)
                .await
                .expect("catalog");
            catalog.sync_config(&config).await.expect("config");
            let store = std::sync::Arc::new(
                tamiz::storage::FsStore::open(dir.path().join("objects")).expect("store"),
            );
            let spool = tamiz::spool::Spool::open(dir.path().join("uploads"), &config.limits)
                .expect("spool");
            let token_key = tamiz::auth::TokenKey::load(&config).expect("token key");
            let token = tamiz::auth::add_user(
                &catalog,
                &token_key,
                &config,
                "fuzz",
                tamiz::catalog::Role::Admin,
                None,
            )
            .await
            .expect("user");
            let router = tamiz::api::router(tamiz::api::AppState {
                ingest: tamiz::ingest::Ingest {
                    catalog: catalog.clone(),
                    store,
                    config: config.clone(),
                    model_version: "fuzz@0".into(),
                    spool,
                },
                catalog,
                config,
                model: None,
                token_key,
                oidc: None,
            });
            (router, format!("Bearer {token}"))
        });
        App {
            rt,
            router,
            authorization,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let app = app();
    let size = split as usize % 97 + 1;
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .chunks(size)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let request = Request::post("/dicomweb/studies")
        .header("content-type", CONTENT_TYPE)
        .header("authorization", &app.authorization)
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request");
    let response = app
        .rt
        .block_on(app.router.clone().oneshot(request))
        .expect("infallible");
    let status = response.status().as_u16();
    assert!(
        matches!(status, 200 | 202 | 400 | 409 | 413),
        "undocumented answer {status} to a request body"
    );
});
