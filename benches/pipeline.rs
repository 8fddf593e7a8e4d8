//! Per-stage timings of the worker on a 4-view 3328×4096 16-bit study (uncompressed,
//! synthetic): decode, preprocess, inference, and the whole worker path (lease →
//! fetch from the object store → decode → preprocess → infer → triage → route →
//! finish, on the embedded SQLite catalog). Prints a table and studies per minute.
//!
//! Run: `cargo bench --bench pipeline` (or `make bench`). `TAMIZ_BENCH_STUDIES`
//! sets how many studies the worker path processes (default 6).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use tamiz::catalog::Catalog;
use tamiz::config::Config;
use tamiz::dicom::pixels::decode;
use tamiz::ingest::Ingest;
use tamiz::model::Model;
use tamiz::preprocess::preprocess;
use tamiz::storage::FsStore;
use tamiz::synth::{plan_studies, study_objects};
use tamiz::worker::{process_job, WorkerContext};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    if let Ok(filter) = std::env::var("TAMIZ_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .init();
    }
    let rounds = 5;
    let studies: usize = std::env::var("TAMIZ_BENCH_STUDIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = Config::default();
    config.model.card = Some(root.join("models/triage.toml"));
    let model = Model::load_configured(&config.model)?;
    let spec = model.card.preprocess.clone();

    // One synthetic study at full detector size, encoded as real DICOM files.
    let plan = plan_studies(1, 42, 1.0, 4096, 3328, &["BENCH"]).remove(0);
    let objects = study_objects(&plan);
    let files: Vec<Vec<u8>> = objects
        .iter()
        .map(|(_, _, o)| {
            let mut b = Vec::new();
            o.write_all(&mut b).expect("encode");
            b
        })
        .collect();
    println!(
        "study: 4 views of 3328x4096, 16-bit, {:.1} MB",
        files.iter().map(Vec::len).sum::<usize>() as f64 / 1e6
    );

    let (mut t_decode, mut t_pre, mut t_infer) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t0 = Instant::now();
        let images: Vec<_> = files
            .iter()
            .map(|b| {
                let obj = dicom_object::OpenFileOptions::new()
                    .from_reader(&b[128..])
                    .expect("parse");
                decode(&obj, spec.rendering).expect("decode").0
            })
            .collect();
        t_decode.push(t0.elapsed());
        let t1 = Instant::now();
        let batch: Vec<f32> = images
            .into_iter()
            .flat_map(|i| preprocess(i, &spec))
            .collect();
        t_pre.push(t1.elapsed());
        let t2 = Instant::now();
        model.infer_blocking(batch, 4)?;
        t_infer.push(t2.elapsed());
    }
    let (decode, pre, infer) = (median(t_decode), median(t_pre), median(t_infer));
    // What the worker does: the four views decoded and preprocessed in parallel.
    let mut t_par = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        tamiz::parallel::parallel_map(&files, tamiz::parallel::threads(), |b| {
            let obj = dicom_object::OpenFileOptions::new()
                .from_reader(&b[128..])
                .expect("parse");
            tamiz::worker::prepare_object(&obj, &model.card).expect("prepare")
        });
        t_par.push(t0.elapsed());
    }
    let par = median(t_par);

    // The whole worker path over `studies` copies of the study (new UIDs each).
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let per_study = rt.block_on(async {
        let mut config = config.clone();
        config.server.data_dir = dir.path().to_owned();
        let catalog = Catalog::open(&config).await?;
        catalog.sync_config(&config).await?;
        let store = Arc::new(FsStore::open(dir.path().join("objects"))?);
        let config = Arc::new(config.clone());
        let ingest = Ingest {
            catalog: catalog.clone(),
            store: store.clone(),
            config: config.clone(),
            model_version: model.card.version_key(),
            spool: tamiz::spool::Spool::open(dir.path().join("spool"), &config.limits)?,
        };
        for s in 0..studies {
            for (v, (_, _, obj)) in objects.iter().enumerate() {
                let mut o = obj.clone();
                o.put(DataElement::new(
                    tags::STUDY_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(format!("1.2.3.{s}")),
                ));
                o.put(DataElement::new(
                    tags::SOP_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(format!("1.2.3.{s}.{v}")),
                ));
                let o =
                    o.into_inner()
                        .with_meta(dicom_object::FileMetaTableBuilder::new().transfer_syntax(
                            dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN,
                        ))?;
                let path = dir.path().join(format!("in-{s}-{v}.dcm"));
                o.write_to_file(&path)?;
                ingest.ingest_file(&path, None, None, ()).await?;
            }
        }
        // Fetching a study's four objects alone, for the breakdown.
        let keys: Vec<String> = catalog
            .study_instances("1.2.3.0")
            .await?
            .into_iter()
            .map(|i| i.object_key)
            .collect();
        let mut t_fetch = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            for k in &keys {
                tamiz::storage::ObjectStore::get(&*store, k).await?;
            }
            t_fetch.push(t.elapsed());
        }
        let fetch = median(t_fetch);
        let ctx = WorkerContext {
            catalog: catalog.clone(),
            store,
            model: model.clone(),
            router: std::sync::Arc::new(tamiz::routing::Router::new(&config)),
            config,
        };
        let mut times = Vec::new();
        while let Some(job) = catalog
            .lease_job("bench", &model.card.version_key(), tamiz::now_ms(), 120_000)
            .await?
        {
            let t = Instant::now();
            process_job(&ctx, job).await;
            times.push(t.elapsed());
        }
        anyhow::ensure!(
            times.len() == studies,
            "processed {} of {studies} studies",
            times.len()
        );
        Ok::<_, anyhow::Error>((median(times), fetch))
    })?;
    let (per_study, fetch) = per_study;

    let views = 4.0;
    println!(
        "\n{:<34} {:>12} {:>12}",
        "stage (median)", "per study", "per view"
    );
    for (name, d) in [
        ("decode (parse + pixels + VOI)", decode),
        ("preprocess", pre),
        ("inference (batch of 4)", infer),
    ] {
        println!("{:<34} {:>9.1} ms {:>9.1} ms", name, ms(d), ms(d) / views);
    }
    println!(
        "{:<34} {:>9.1} ms {:>9.1} ms",
        "fetch (object store)",
        ms(fetch),
        ms(fetch) / views
    );
    println!(
        "{:<34} {:>9.1} ms {:>9.1} ms",
        "decode + inference",
        ms(decode + infer),
        ms(decode + infer) / views
    );
    println!(
        "{:<34} {:>9.1} ms {:>9.1} ms",
        format!(
            "decode + input checks + preprocess, {} threads",
            tamiz::parallel::threads()
        ),
        ms(par),
        ms(par) / views
    );
    println!(
        "{:<34} {:>9.1} ms {:>9.1} ms",
        "whole worker path",
        ms(per_study),
        ms(per_study) / views
    );
    println!(
        "\nworker path / (decode + inference) = {:.2}   (aim: <= 1.2)",
        per_study.as_secs_f64() / (decode + infer).as_secs_f64()
    );
    println!(
        "worker path / (parallel decode + preprocess + inference) = {:.2}",
        per_study.as_secs_f64() / (par + infer).as_secs_f64()
    );
    println!(
        "one worker: {:.1} studies per minute",
        60.0 / per_study.as_secs_f64()
    );
    Ok(())
}
