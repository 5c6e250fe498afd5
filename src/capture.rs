//! Capturing a run: a [`Recorder`] listener keeps each module's output (and input, when asked),
//! and a [`Capture`] is written to, or read from, one safetensors file.
//!
//! # The capture file format (`layercheck-capture/1`)
//!
//! One safetensors file. This is also how a real accelerator's run, captured elsewhere (e.g. by
//! fms with forward hooks), is handed to layercheck.
//! - Tensor `{key}` for each module output, `key` the fms file key (`model.base_model.layers7.ln`);
//!   in generate mode the first forward call keeps the plain key and call `n >= 1` is `{key}.iter-{n}`.
//!   Tuple outputs hold what their name says: `attn.in_proj` is q, k, v concatenated on the last
//!   dimension; `model.base_model` the final hidden states; `model` (generate mode) the logits.
//! - Tensor `input:{key}` (same suffix rule): the module's input, when inputs were captured.
//! - Tensor `input_ids` `[B, S]` int64; `logits` `[B, S, V]` the final logits of the first call;
//!   in generate mode `output_ids` `[B, S + max_new_tokens]`.
//! - Any dtype (f32, f16, bf16); shapes `[B, S, D]` (`[B, 1, D]` for cached generate steps).
//! - Metadata (all strings): `format` = `layercheck-capture/1`, `model`, `target`, `mode`
//!   (`model-forward` | `generate`), `max_new_tokens`, `attention_mask` (`attend-pads` | `proper`),
//!   `keys` (a JSON list of the output tensor names in the order they were recorded), and
//!   provenance: `model_path`, `config_sha256`, `layercheck_version`, `libtorch_version`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tch::Tensor;

use crate::hooks::{Listener, ModuleKey};
use crate::tensor_file::{self, TensorFile, TensorFileError};

/// The value of the `format` metadata entry of capture files.
pub const FORMAT: &str = "layercheck-capture/1";

/// Run mode, as in the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// One `forward` over the prompt.
    ModelForward,
    /// Greedy decoding with a KV cache, one forward call per new token.
    Generate,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::ModelForward => "model-forward",
            Mode::Generate => "generate",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "model-forward" => Ok(Mode::ModelForward),
            "generate" => Ok(Mode::Generate),
            other => Err(format!("unknown mode \"{other}\" (expected model-forward or generate)")),
        }
    }
}

/// The tensor name of a module output recorded at forward call `step`.
pub fn record_name(key: ModuleKey, step: usize) -> String {
    if step == 0 {
        key.to_string()
    } else {
        format!("{key}.iter-{step}")
    }
}

/// The tensor name of a module input recorded at forward call `step`.
pub fn input_name(key: ModuleKey, step: usize) -> String {
    format!("input:{}", record_name(key, step))
}

/// One recorded module call.
pub struct Record {
    pub key: ModuleKey,
    pub step: usize,
    pub output: Tensor,
    pub input: Option<Tensor>,
}

/// A listener that keeps module outputs (all, or a selection) and optionally inputs; with a
/// selection in model-forward mode it stops the forward after the last selected module.
#[derive(Default)]
pub struct Recorder {
    selection: Option<HashSet<ModuleKey>>,
    capture_inputs: bool,
    stop_after: Option<ModuleKey>,
    step: usize,
    pub records: Vec<Record>,
}

impl Recorder {
    /// Records every module's output.
    pub fn all() -> Self {
        Recorder::default()
    }

    /// Also records each recorded module's input.
    pub fn with_inputs(mut self) -> Self {
        self.capture_inputs = true;
        self
    }

    /// Records only `keys`; stops the forward after `stop_after` has been recorded.
    pub fn only(keys: impl IntoIterator<Item = ModuleKey>, stop_after: Option<ModuleKey>) -> Self {
        Recorder { selection: Some(keys.into_iter().collect()), stop_after, ..Recorder::default() }
    }

    fn selected(&self, key: ModuleKey) -> bool {
        self.selection.as_ref().is_none_or(|s| s.contains(&key))
    }
}

impl Listener for Recorder {
    fn begin_step(&mut self, step: usize) {
        self.step = step;
    }

    fn wants_input(&self, key: ModuleKey) -> bool {
        self.capture_inputs && self.selected(key)
    }

    fn on_output(&mut self, key: ModuleKey, input: Option<&Tensor>, output: &mut Tensor) -> ControlFlow<()> {
        if self.selected(key) {
            self.records.push(Record {
                key,
                step: self.step,
                output: output.shallow_clone(),
                input: input.map(Tensor::shallow_clone),
            });
        }
        if self.stop_after == Some(key) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Why a capture file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    File(#[from] TensorFileError),
    #[error("{path} is not a layercheck capture: {problem}\n(hint: see the capture file format in README \"Capture files\")")]
    Format { path: PathBuf, problem: String },
}

/// A captured run: named tensors and the metadata that says what made them.
pub struct Capture {
    pub metadata: HashMap<String, String>,
    /// Output names in recorded order.
    pub keys: Vec<String>,
    pub tensors: HashMap<String, Tensor>,
}

impl Capture {
    /// Builds a capture from a recorder's records plus the run's other tensors.
    pub fn from_records(records: &[Record], extra: Vec<(String, Tensor)>, mut metadata: HashMap<String, String>) -> Self {
        let mut keys = Vec::with_capacity(records.len());
        let mut tensors = HashMap::new();
        for r in records {
            let name = record_name(r.key, r.step);
            if let Some(input) = &r.input {
                tensors.insert(input_name(r.key, r.step), input.shallow_clone());
            }
            tensors.insert(name.clone(), r.output.shallow_clone());
            keys.push(name);
        }
        tensors.extend(extra);
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("keys".into(), serde_json::to_string(&keys).expect("strings serialise"));
        Capture { metadata, keys, tensors }
    }

    /// Writes the capture atomically to `path`.
    pub fn write(&self, path: &Path) -> Result<(), CaptureError> {
        let mut named: Vec<(String, Tensor)> = self.tensors.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        tensor_file::write_atomic(path, &named, self.metadata.clone())?;
        Ok(())
    }

    /// Reads a capture file, checking its format entry and that every listed key is present.
    pub fn read(path: &Path) -> Result<Self, CaptureError> {
        let file = TensorFile::read(path)?;
        let format_err = |problem: String| CaptureError::Format { path: path.to_path_buf(), problem };
        match file.metadata.get("format") {
            Some(f) if f == FORMAT => {}
            Some(f) => return Err(format_err(format!("its format is \"{f}\", this layercheck reads \"{FORMAT}\""))),
            None => return Err(format_err("its metadata has no \"format\" entry".into())),
        }
        let keys: Vec<String> = file
            .metadata
            .get("keys")
            .ok_or_else(|| format_err("its metadata has no \"keys\" entry".into()))
            .and_then(|k| serde_json::from_str(k).map_err(|e| format_err(format!("its \"keys\" entry is not a JSON list of names ({e})"))))?;
        let tensors: HashMap<String, Tensor> = file.tensors.into_iter().collect();
        if let Some(missing) = keys.iter().find(|k| !tensors.contains_key(*k)) {
            return Err(format_err(format!("key {missing} is listed but has no tensor")));
        }
        Ok(Capture { metadata: file.metadata, keys, tensors })
    }
}
