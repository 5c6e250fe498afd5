//! Llama and Granite decoders in libtorch, loaded from HF model folders, with fms's hook points.

mod config;
mod decoder;
mod rope;
mod weights;

use std::path::PathBuf;

pub use config::{Family, Llama3Scaling, ModelConfig, Rope, MAX_POSITIONS};
pub use decoder::{AttentionMask, DecoderModel, Generation};
pub use weights::{weights_sha256, Checkpoint};

use crate::target::TargetError;

/// The hint of a libtorch failure while a model runs: what usually causes one, and what to try.
pub const DEVICE_FAILURE_HINT: &str = "(hint: out of memory or a device error; try a smaller batch size or sequence length)";

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}\n(hint: {hint})")]
    Io { path: PathBuf, source: std::io::Error, hint: &'static str },
    #[error("{path} is not valid JSON: {problem}\n(hint: an HF model folder's config.json is a JSON object of the model's settings)")]
    ConfigJson { path: PathBuf, problem: String },
    #[error("{path} is missing\n(hint: {hint})")]
    MissingFile { path: PathBuf, hint: &'static str },
    #[error("{path}: field \"{field}\" {problem}\n(hint: layercheck refuses a config it cannot honour rather than run a different model; see README \"Supported models\")")]
    Config { path: PathBuf, field: String, problem: String },
    #[error("{path} {problem}")]
    Checkpoint { path: PathBuf, problem: String },
    #[error("weight {name} is missing from {path}\n(hint: is this a Llama/Granite checkpoint with HF weight names, and does config.json match it?)")]
    MissingWeight { name: String, path: PathBuf },
    #[error("weight {name} in {path} has shape {found:?}, config.json implies {expected:?}\n(hint: config.json and the weights disagree; were they taken from different models?)")]
    WeightShape { name: String, path: PathBuf, expected: Vec<i64>, found: Vec<i64> },
    #[error("{path} holds weights the model does not use: {names}\n(hint: they may belong to a feature layercheck does not implement, such as biases; refused rather than ignored)")]
    UnusedWeights { path: PathBuf, names: String },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("bad input: {0}")]
    Input(String),
    #[error("the run needs {needed} positions ({what}), more than config.json's field \"max_position_embeddings\" = {max}\n(hint: use a shorter sequence length or fewer new tokens; the model has rotary angles for positions 0 to {max} - 1 only)")]
    TooLong { what: String, needed: i64, max: i64 },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("the {target} forward failed at {module}: {source}\n{DEVICE_FAILURE_HINT}")]
    Forward { target: String, module: String, #[source] source: tch::TchError },
}
