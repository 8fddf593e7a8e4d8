//! The triage model: its card (TOML) and an ONNX Runtime session owned by one thread.
//!
//! ONNX Runtime is loaded at run time from the shared library of the PyPI `onnxruntime`
//! wheel (`ort`'s `load-dynamic`), found by [`find_onnxruntime`]. The session is loaded
//! and checked once; callers send whole studies on a bounded channel and await a
//! oneshot reply, so inference never blocks the async runtime and a burst of studies
//! queues instead of piling up threads.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::preprocess::PreprocessSpec;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model card {path}: {reason}")]
    Card { path: PathBuf, reason: String },
    #[error(
        "ONNX Runtime library not found (looked in: {looked}). Install it with `scripts/setup.sh` \
         (or `make setup`), or point ORT_DYLIB_PATH at libonnxruntime.so"
    )]
    RuntimeMissing { looked: String },
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("model {path} does not match its card: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error("the model thread has stopped")]
    Stopped,
}

impl From<ort::Error> for ModelError {
    fn from(e: ort::Error) -> Self {
        ModelError::Runtime(e.to_string())
    }
}

/// A model card: what the model is, what it expects and how its scores are used.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub version: String,
    /// Must say what the model may be used for ("synthetic data only, ...").
    pub notice: String,
    /// The `.onnx` file, relative to the card.
    pub onnx: PathBuf,
    pub io: IoSpec,
    /// The images the model was made for; view selection and the input checks
    /// hold every view to it.
    #[serde(default)]
    pub input: InputSpec,
    pub preprocess: PreprocessSpec,
    pub operating_points: OperatingPoints,
    /// How the model was trained and evaluated (free-form, shown by `tamiz evaluate`).
    #[serde(default)]
    pub training: toml::Table,
    #[serde(default)]
    pub evaluation: toml::Table,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoSpec {
    /// Input tensor name; shape `[views, 1, height, width]`, float32.
    pub input: String,
    /// Output tensor name; shape `[views]`, one score per view.
    pub output: String,
    /// `probability` (already in [0,1]) or `logit` (sigmoid applied here).
    pub output_kind: OutputKind,
}

/// The model's intended input, as its card states it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The Presentation Intents it scores: `["presentation"]` unless it was trained on
    /// raw detector data too.
    pub intent: Vec<crate::dicom::Intent>,
    /// The projections it scores (View Position values), `["CC", "MLO"]`.
    #[serde(default = "screening_views")]
    pub views: Vec<String>,
    /// Whether it was trained on breasts with an implant in view. When not, an implant
    /// exam is scored on its implant-displaced views only.
    pub implants: bool,
    /// What each view's attributes and rendering must pass (`[input.checks]`).
    #[serde(default)]
    pub checks: crate::input_check::ViewChecks,
}

fn screening_views() -> Vec<String> {
    vec!["CC".into(), "MLO".into()]
}

impl Default for InputSpec {
    fn default() -> Self {
        InputSpec {
            intent: vec![crate::dicom::Intent::Presentation],
            views: screening_views(),
            implants: false,
            checks: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Probability,
    Logit,
}

/// Study-score thresholds: `>= urgent` is urgent, `< low` is low suspicion.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperatingPoints {
    pub urgent: f32,
    pub low: f32,
}

/// The shipped model, built into the binary: `tamiz` runs from any directory (and
/// from `cargo install`) without the source tree. A configured card replaces it.
const EMBEDDED_CARD: &str = include_str!("../models/triage.toml");
const EMBEDDED_ONNX: &[u8] = include_bytes!("../models/triage.onnx");
/// How the embedded model is named in messages.
const EMBEDDED_NAME: &str = "<built-in models/triage.toml>";

/// Where a model's ONNX bytes come from.
#[derive(Debug, Clone)]
pub enum OnnxSource {
    File(PathBuf),
    Embedded,
}

impl OnnxSource {
    fn display(&self) -> PathBuf {
        match self {
            OnnxSource::File(p) => p.clone(),
            OnnxSource::Embedded => PathBuf::from("<built-in models/triage.onnx>"),
        }
    }
}

impl ModelCard {
    /// The configured card (`[model] card`), or the built-in one when none is set.
    pub fn load_configured(
        cfg: &crate::config::ModelConfig,
    ) -> Result<(ModelCard, OnnxSource), ModelError> {
        match &cfg.card {
            Some(path) => {
                let (card, onnx) = ModelCard::load(path)?;
                Ok((card, OnnxSource::File(onnx)))
            }
            None => Ok((
                ModelCard::parse(EMBEDDED_CARD, Path::new(EMBEDDED_NAME))?,
                OnnxSource::Embedded,
            )),
        }
    }

    pub fn load(path: &Path) -> Result<(ModelCard, PathBuf), ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Card {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let card = ModelCard::parse(&text, path)?;
        let onnx = path.parent().unwrap_or(Path::new(".")).join(&card.onnx);
        Ok((card, onnx))
    }

    fn parse(text: &str, path: &Path) -> Result<ModelCard, ModelError> {
        let err = |reason: String| ModelError::Card {
            path: path.to_owned(),
            reason,
        };
        let card: ModelCard = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if !(0.0..=1.0).contains(&card.operating_points.low)
            || !(0.0..=1.0).contains(&card.operating_points.urgent)
            || card.operating_points.low > card.operating_points.urgent
        {
            return Err(err(
                "operating points must satisfy 0 <= low <= urgent <= 1".into()
            ));
        }
        if card.preprocess.height == 0 || card.preprocess.width == 0 || card.preprocess.std <= 0.0 {
            return Err(err("preprocess height/width must be > 0 and std > 0".into()));
        }
        Ok(card)
    }

    /// `name@version`, the key under which triage jobs are made unique.
    pub fn version_key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Where the ONNX Runtime shared library is looked for, in order: `ORT_DYLIB_PATH`
/// (an explicit choice wins, e.g. a GPU build), then `.ort/` in the source tree this
/// binary was built from (where `scripts/setup.sh` puts it), then `.ort/` in the working
/// directory and beside the executable.
pub fn find_onnxruntime() -> Result<PathBuf, ModelError> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        candidates.push(PathBuf::from(p));
    }
    let name = "libonnxruntime.so";
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".ort")
            .join(name),
    );
    candidates.push(PathBuf::from(".ort").join(name));
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(".ort").join(name));
            candidates.push(dir.join(name));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| ModelError::RuntimeMissing {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The process-wide ONNX Runtime environment (loading the library twice is an error).
fn environment() -> Result<&'static ort::environment::Environment, ModelError> {
    static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let path = find_onnxruntime()?;
    let env = ort::init_from(&path)
        .map_err(|e| ModelError::Runtime(format!("loading {}: {e}", path.display())))?
        .with_name("tamiz")
        .build()?;
    Ok(ENV.get_or_init(|| env))
}

struct Request {
    input: Vec<f32>,
    views: usize,
    reply: oneshot::Sender<Result<Vec<f32>, ModelError>>,
}

/// Handle to the model thread. Cheap to clone.
#[derive(Clone)]
pub struct Model {
    pub card: std::sync::Arc<ModelCard>,
    tx: mpsc::Sender<Request>,
}

impl Model {
    /// Loads the card and the session, checks the session against the card with one
    /// inference on a blank view, and starts the model thread.
    pub fn load(card_path: &Path, intra_threads: usize) -> Result<Model, ModelError> {
        let (card, onnx) = ModelCard::load(card_path)?;
        Model::start(card, OnnxSource::File(onnx), intra_threads)
    }

    /// The configured model (`[model] card`), or the built-in one.
    pub fn load_configured(cfg: &crate::config::ModelConfig) -> Result<Model, ModelError> {
        let (card, onnx) = ModelCard::load_configured(cfg)?;
        Model::start(card, onnx, cfg.intra_threads)
    }

    fn start(
        card: ModelCard,
        source: OnnxSource,
        intra_threads: usize,
    ) -> Result<Model, ModelError> {
        let onnx = source.display();
        let env = environment()?;
        let mut builder = Session::builder(env)?;
        if intra_threads > 0 {
            builder = builder
                .with_intra_threads(intra_threads)
                .map_err(ort::Error::from)?;
        }
        let mut session = match &source {
            OnnxSource::File(path) => builder.commit_from_file(path),
            OnnxSource::Embedded => builder.commit_from_memory(EMBEDDED_ONNX),
        }
        .map_err(|e| ModelError::Runtime(format!("loading {}: {e}", onnx.display())))?;
        let mismatch = |reason: String| ModelError::Mismatch {
            path: onnx.clone(),
            reason,
        };
        if !session.inputs().iter().any(|i| i.name() == card.io.input) {
            return Err(mismatch(format!("no input named `{}`", card.io.input)));
        }
        if !session.outputs().iter().any(|o| o.name() == card.io.output) {
            return Err(mismatch(format!("no output named `{}`", card.io.output)));
        }
        let blank = vec![0.0f32; card.preprocess.height * card.preprocess.width];
        run(&mut session, &card, blank, 1)
            .map_err(|e| mismatch(format!("test inference failed: {e}")))?;

        let (tx, mut rx) = mpsc::channel::<Request>(32);
        let thread_card = card.clone();
        std::thread::Builder::new()
            .name("tamiz-model".into())
            .spawn(move || {
                while let Some(req) = rx.blocking_recv() {
                    let out = run(&mut session, &thread_card, req.input, req.views);
                    let _ = req.reply.send(out);
                }
            })
            .map_err(|e| ModelError::Runtime(format!("starting the model thread: {e}")))?;
        Ok(Model {
            card: std::sync::Arc::new(card),
            tx,
        })
    }

    /// Scores `views` preprocessed views (concatenated) in one batch.
    pub async fn infer(&self, input: Vec<f32>, views: usize) -> Result<Vec<f32>, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                input,
                views,
                reply,
            })
            .await
            .map_err(|_| ModelError::Stopped)?;
        rx.await.map_err(|_| ModelError::Stopped)?
    }

    /// [`Model::infer`] for callers outside the async runtime (evaluation, benches).
    pub fn infer_blocking(&self, input: Vec<f32>, views: usize) -> Result<Vec<f32>, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(Request {
                input,
                views,
                reply,
            })
            .map_err(|_| ModelError::Stopped)?;
        rx.blocking_recv().map_err(|_| ModelError::Stopped)?
    }
}

fn run(
    session: &mut Session,
    card: &ModelCard,
    input: Vec<f32>,
    views: usize,
) -> Result<Vec<f32>, ModelError> {
    let (h, w) = (card.preprocess.height, card.preprocess.width);
    if input.len() != views * h * w {
        return Err(ModelError::Runtime(format!(
            "input holds {} values, {views} views of {h}x{w} need {}",
            input.len(),
            views * h * w
        )));
    }
    let tensor = Tensor::from_array(([views, 1, h, w], input))?;
    let outputs = session.run(ort::inputs![card.io.input.as_str() => tensor])?;
    let (_, scores) = outputs[card.io.output.as_str()].try_extract_tensor::<f32>()?;
    if scores.len() != views {
        return Err(ModelError::Runtime(format!(
            "model returned {} scores for {views} views",
            scores.len()
        )));
    }
    Ok(scores
        .iter()
        .map(|&s| match card.io.output_kind {
            OutputKind::Probability => s,
            OutputKind::Logit => 1.0 / (1.0 + (-s).exp()),
        })
        .collect())
}
