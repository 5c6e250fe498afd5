//! Capturing a run: a [`Recorder`] listener keeps each module's output (and input, when asked),
//! and a [`Capture`] is written to, or read from, one safetensors file.
//!
//! # The capture file format (`layercheck-capture/1`)
//!
//! One safetensors file. This is also how a real accelerator's run, captured elsewhere (e.g. by
//! fms with forward hooks), is handed to layercheck.
//! - Tensor `{key}` for each module output, `key` the fms file key (`model.base_model.layers7.ln`);
//!   in generate mode the first forward call keeps the plain key, and each later record is
//!   `{key}.iter-{n}` with `n` the 1-based index of the record among all records of the run, as
//!   the seed's hooks number them (3 layers, 2 steps: the prefill's 41 records are plain, the second
//!   step's run from `model.base_model.embedding.iter-42` to `model.iter-82`).
//!   Tuple outputs hold what their name says: `attn.in_proj` is q, k, v concatenated on the last
//!   dimension; `model.base_model` the final hidden states; `model` (generate mode) the logits.
//! - Tensor `input:{key}` (same suffix rule): the module's input, when inputs were captured.
//! - Tensor `input_ids` `[B, S]` int64; in model-forward mode `logits` `[B, S, V]` (the final
//!   logits); in generate mode `output_ids` `[B, S + max_new_tokens]` (the logits are the `model`
//!   records).
//! - Any dtype (f32, f16, bf16); shapes `[B, S, D]` (`[B, 1, D]` for cached generate steps).
//! - Metadata (all strings): `format` = `layercheck-capture/1`, `model`, `target`, `mode`
//!   (`model-forward` | `generate`), `max_new_tokens`, `attention_mask` (`attend-pads` | `proper`),
//!   `keys` (a JSON list of the output tensor names in the order they were recorded), and
//!   provenance: `model_path`, `config_sha256`, `layercheck_version`, `libtorch_version`.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use tch::Tensor;

use layercheck_suite::atomic::Replace;
use crate::hooks::{Listener, ModuleKey};
use crate::tensor_file::{self, TensorFile, TensorFileError};

/// The value of the `format` metadata entry of capture files.
pub const FORMAT: &str = "layercheck-capture/1";

pub use layercheck_suite::mode::Mode;

/// The tensor name of the `index`-th record of a run (1-based, all modules counted) made at
/// forward call `step`: the plain key in the first call, `{key}.iter-{index}` after.
pub fn record_name(key: ModuleKey, step: usize, index: usize) -> String {
    if step == 0 {
        key.to_string()
    } else {
        format!("{key}.iter-{index}")
    }
}

/// The tensor name of a module input recorded under output name `name`.
pub fn input_name(name: &str) -> String {
    format!("input:{name}")
}

/// Splits a record name into its module key and `.iter-N` index, if any.
pub fn parse_record_name(name: &str) -> Option<(ModuleKey, Option<usize>)> {
    if let Some((key, n)) = name.rsplit_once(".iter-") {
        let n: usize = n.parse().ok()?;
        return Some((key.parse().ok()?, Some(n)));
    }
    Some((name.parse().ok()?, None))
}

/// One recorded module call.
pub struct Record {
    pub key: ModuleKey,
    /// The tensor name (see [`record_name`]).
    pub name: String,
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
    /// Hook calls so far, recorded or not: the seed's `.iter-N` counter.
    calls: usize,
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

    /// The forward call being recorded (0: the prompt; then one per new token).
    pub fn step(&self) -> usize {
        self.step
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
        self.calls += 1;
        if self.selected(key) {
            self.records.push(Record {
                key,
                name: record_name(key, self.step, self.calls),
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

/// Why a record of a [`RecordSource`] could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no tensor {0}")]
    Missing(String),
    #[error("tensor {name}: elements {first}..{first}+{count} asked for, it has {has}")]
    Range { name: String, first: i64, count: i64, has: i64 },
    #[error(transparent)]
    File(#[from] TensorFileError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
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
            let name = r.name.clone();
            if let Some(input) = &r.input {
                tensors.insert(input_name(&name), input.shallow_clone());
            }
            tensors.insert(name.clone(), r.output.shallow_clone());
            keys.push(name);
        }
        tensors.extend(extra);
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("keys".into(), serde_json::to_string(&keys).expect("strings serialise"));
        Capture { metadata, keys, tensors }
    }

    /// Writes the capture atomically to `path`, replacing it.
    pub fn write(&self, path: &Path) -> Result<(), CaptureError> {
        self.write_with(path, Replace::Allowed)
    }

    /// Writes the capture atomically to `path`, replacing an existing file only when `replace`
    /// allows it.
    pub fn write_with(&self, path: &Path, replace: Replace) -> Result<(), CaptureError> {
        let mut named: Vec<(String, Tensor)> = self.tensors.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        tensor_file::write_atomic_with(path, &named, self.metadata.clone(), replace)?;
        Ok(())
    }

    /// The sha256 of the capture's tensors ([`tensor_file::tensors_sha256`]).
    pub fn tensors_sha256(&self) -> Result<String, tch::TchError> {
        tensor_file::tensors_sha256(self.tensors.iter().map(|(n, t)| (n.as_str(), t)))
    }

    /// Module inputs by (key, forward call), when the capture has them: the k-th record of a key
    /// (in recorded order) belongs to call k.
    pub fn inputs_by_step(&self) -> HashMap<(ModuleKey, usize), Tensor> {
        self.input_names_by_step().into_iter().filter_map(|(at, name)| Some((at, self.tensors.get(&name)?.shallow_clone()))).collect()
    }

    /// Reads a capture file, checking its format entry and that every listed key is present.
    pub fn read(path: &Path) -> Result<Self, CaptureError> {
        let file = TensorFile::read(path)?;
        let keys = listed_keys(path, &file.metadata)?;
        let tensors: HashMap<String, Tensor> = file.tensors.into_iter().collect();
        check_listed(path, &keys, |k| tensors.contains_key(k))?;
        Ok(Capture { metadata: file.metadata, keys, tensors })
    }
}

/// The output names a capture file's metadata lists, after checking its format entry.
pub(crate) fn listed_keys(path: &Path, metadata: &HashMap<String, String>) -> Result<Vec<String>, CaptureError> {
    let format_err = |problem: String| CaptureError::Format { path: path.to_path_buf(), problem };
    match metadata.get("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => return Err(format_err(format!("its format is \"{f}\", this layercheck reads \"{FORMAT}\""))),
        None => return Err(format_err("its metadata has no \"format\" entry".into())),
    }
    metadata
        .get("keys")
        .ok_or_else(|| format_err("its metadata has no \"keys\" entry".into()))
        .and_then(|k| serde_json::from_str(k).map_err(|e| format_err(format!("its \"keys\" entry is not a JSON list of names ({e})"))))
}

/// Checks that every listed output name has a tensor.
pub(crate) fn check_listed(path: &Path, keys: &[String], has: impl Fn(&str) -> bool) -> Result<(), CaptureError> {
    match keys.iter().find(|k| !has(k)) {
        Some(missing) => Err(CaptureError::Format { path: path.to_path_buf(), problem: format!("key {missing} is listed but has no tensor") }),
        None => Ok(()),
    }
}

/// The records of a run, wherever they are kept: a [`Capture`] in memory, or a capture file read
/// one tensor at a time ([`crate::capture_reader::CaptureReader`]).
pub trait RecordSource {
    /// The metadata entries (see the format above).
    fn metadata(&self) -> &HashMap<String, String>;
    /// Output names in recorded order.
    fn keys(&self) -> &[String];
    /// Whether there is a tensor called `name`.
    fn contains(&self, name: &str) -> bool;
    /// The tensor called `name` (`None` when there is none), or why it cannot be read.
    fn tensor(&self, name: &str) -> Result<Option<Tensor>, RecordError>;
    /// The dtype and shape of the tensor called `name`, if there is one.
    fn info(&self, name: &str) -> Option<(tch::Kind, Vec<i64>)>;
    /// Elements `first..first + count` of the tensor called `name`, flattened row-major, as a
    /// 1-d tensor (what [`crate::metrics::Rows`] slices are made of).
    fn elements(&self, name: &str, first: i64, count: i64) -> Result<Tensor, RecordError>;

    /// The names of the module inputs by (key, forward call), when there are any: the k-th
    /// record of a key (in recorded order) belongs to call k.
    fn input_names_by_step(&self) -> HashMap<(ModuleKey, usize), String> {
        let mut seen: HashMap<ModuleKey, usize> = HashMap::new();
        let mut out = HashMap::new();
        for name in self.keys() {
            let Some((key, _)) = parse_record_name(name) else { continue };
            let step = seen.entry(key).or_insert(0);
            let input = input_name(name);
            if self.contains(&input) {
                out.insert((key, *step), input);
            }
            *step += 1;
        }
        out
    }
}

impl RecordSource for Capture {
    fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    fn keys(&self) -> &[String] {
        &self.keys
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<Option<Tensor>, RecordError> {
        Ok(self.tensors.get(name).map(Tensor::shallow_clone))
    }

    fn info(&self, name: &str) -> Option<(tch::Kind, Vec<i64>)> {
        self.tensors.get(name).map(|t| (t.kind(), t.size()))
    }

    fn elements(&self, name: &str, first: i64, count: i64) -> Result<Tensor, RecordError> {
        let t = self.tensors.get(name).ok_or_else(|| RecordError::Missing(name.to_string()))?;
        // narrow counts a negative start from the end: refused, as the file reader refuses it.
        let has = t.numel() as i64;
        if first < 0 || count < 0 || first.saturating_add(count) > has {
            return Err(RecordError::Range { name: name.to_string(), first, count, has });
        }
        Ok(t.f_reshape([-1]).and_then(|f| f.f_narrow(0, first, count))?)
    }
}
