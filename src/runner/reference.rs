//! A model's CPU float32 reference made by an external command (`reference = { command = [...] }`
//! in the matrix): the golden file of a model that layercheck has no Rust decoder for (Mistral in
//! fms, say), made by fms on CPU at float32 through the Python bridge. The command answers a
//! [`super::reference_request`] like any command target; what it returns is checked, then kept as
//! the case's golden file (src/compute/golden.rs), which verified runs read without running it.

use tch::Kind;

use super::check::{check_capture, CheckError};
use super::command::{shell_words, CommandError, CommandRunner};
use super::request::Request;
use crate::capture::{Capture, Mode};
use crate::target::Target;

/// What the golden file records of the command that made it.
pub const REFERENCE_COMMAND: &str = "reference_command";

/// The producer's own `target` entry, kept under this name (the golden file's `target` is
/// `cpu-f32`, what the case compares against).
pub const REFERENCE_PRODUCER_TARGET: &str = "reference_producer_target";

/// Why a reference command gave no usable reference.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("the reference command: {0}")]
    Command(#[from] CommandError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("the reference command's capture holds {name} as {kind:?}: a reference is float32\n(hint: run the reference at float32, e.g. `python -m layercheck_fms --device cpu --dtype float32`)")]
    NotFloat32 { name: String, kind: Kind },
    #[error("the reference command's capture has no {what}\n(hint: a capture holds `logits` [B, S, V] in model-forward mode and `output_ids` [B, S + max_new_tokens] in generate mode; see README \"Capture files\")")]
    Missing { what: &'static str },
    #[error("the reference command's capture: {0}")]
    Shape(String),
    #[error("the reference command's capture has no module inputs for {count} of its records (e.g. {example}), and the model's golden_inputs = true keeps them\n(hint: the command must honour the request's capture_inputs and write `input:{{name}}` tensors)")]
    NoInputs { count: usize, example: String },
}

/// Runs `runner` on `request` (from [`super::reference_request`]) and returns the checked capture,
/// its metadata that of a golden file: `target` `cpu-f32`, the request's mode, new tokens and
/// mask, and the command line under [`REFERENCE_COMMAND`].
pub fn make_reference(runner: &CommandRunner, request: &Request) -> Result<Capture, ReferenceError> {
    let mut capture = runner.run(request)?;
    check_reference(&capture, request)?;
    let producer = capture.metadata.remove("target").unwrap_or_else(|| "(none)".into());
    capture.metadata.insert(REFERENCE_PRODUCER_TARGET.into(), producer);
    capture.metadata.insert(REFERENCE_COMMAND.into(), shell_words(&runner.argv));
    capture.metadata.insert("target".into(), Target::REFERENCE.to_string());
    capture.metadata.insert("mode".into(), request.mode.clone());
    capture.metadata.insert("max_new_tokens".into(), request.max_new_tokens.to_string());
    capture.metadata.insert("attention_mask".into(), request.attention_mask.clone());
    Ok(capture)
}

/// A reference must answer its request (mode, records, inputs), be float32 throughout, hold the
/// logits or output ids the suite compares, and keep module inputs when asked.
fn check_reference(capture: &Capture, request: &Request) -> Result<(), ReferenceError> {
    check_capture(capture, request, "the reference command's capture")?;
    let mut names: Vec<&String> = capture.tensors.keys().collect();
    names.sort();
    if let Some(name) = names.iter().find(|n| capture.tensors[n.as_str()].is_floating_point() && capture.tensors[n.as_str()].kind() != Kind::Float) {
        return Err(ReferenceError::NotFloat32 { name: name.to_string(), kind: capture.tensors[name.as_str()].kind() });
    }
    let (b, s) = (request.input_ids.len() as i64, request.input_ids.first().map_or(0, Vec::len) as i64);
    match request.mode.parse::<Mode>() {
        Ok(Mode::ModelForward) => {
            let logits = capture.tensors.get("logits").ok_or(ReferenceError::Missing { what: "logits" })?;
            let size = logits.size();
            if size.len() != 3 || size[..2] != [b, s] {
                return Err(ReferenceError::Shape(format!("logits is {size:?}, not [{b}, {s}, vocabulary]")));
            }
        }
        Ok(Mode::Generate) => {
            let ids = capture.tensors.get("output_ids").ok_or(ReferenceError::Missing { what: "output_ids" })?;
            let total = s + request.max_new_tokens as i64;
            if ids.size() != [b, total] || !matches!(ids.kind(), Kind::Int64 | Kind::Int) {
                return Err(ReferenceError::Shape(format!("output_ids is {:?} {:?}, not int64 [{b}, {total}]", ids.kind(), ids.size())));
            }
            let prefix: Vec<i64> = Vec::<i64>::try_from(ids.narrow(1, 0, s).to_kind(Kind::Int64).flatten(0, -1)).map_err(|e| ReferenceError::Shape(e.to_string()))?;
            let expected: Vec<i64> = request.input_ids.iter().flatten().copied().collect();
            if prefix != expected {
                return Err(ReferenceError::Shape("output_ids does not begin with the request's input_ids".into()));
            }
        }
        Err(_) => {}
    }
    if request.capture_inputs {
        let missing: Vec<&String> = capture.keys.iter().filter(|k| !capture.tensors.contains_key(&crate::capture::input_name(k))).collect();
        if let Some(first) = missing.first() {
            return Err(ReferenceError::NoInputs { count: missing.len(), example: first.to_string() });
        }
    }
    Ok(())
}
