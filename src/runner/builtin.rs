//! The builtin runner answering a request: today's tch decoders and targets, with the request's
//! forced tokens, feed and optional fault. `layercheck capture --request` is this, so that the
//! `command` protocol can be tested end to end with layercheck itself as the external program.

use tch::Tensor;

use super::request::{Request, RequestKinds};
use crate::capture::{Capture, CaptureError, Recorder};
use crate::capture_reader::CaptureReader;
use crate::compute::target_listener::{Fault, ListenerError, GoldenInputs, TargetListener};
use layercheck_suite::test_name::Feed;
use crate::inputs::TokenBatch;
use crate::model::{DecoderModel, ModelError};
use crate::run::{self, RunSpec};
use crate::target::Target;

/// Why a builtin run could not answer.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the request's golden file: {0}")]
    Golden(#[from] CaptureError),
    #[error("the request's input_ids: {0}")]
    Inputs(String),
    #[error("--fault {0}: the run has no such module, so the fault would change nothing\n(hint: name one of the model's modules, e.g. model.base_model.layers1.attn.dense)")]
    NoSuchModule(String),
    #[error("the golden file {0} has no module inputs, which the isolated feed needs\n(hint: set golden_inputs = true for the model in the matrix and regenerate its golden files)")]
    NoInputs(String),
    #[error("{0}\n(hint: the golden file named in the request may be damaged; regenerate it)")]
    GoldenInput(#[source] ListenerError),
    #[error(transparent)]
    Fault(ListenerError),
}

/// Runs `request` on `target` (with `fault`, if any) and returns the capture.
pub fn answer(request: &Request, kinds: RequestKinds, target: Target, fault: Option<Fault>) -> Result<Capture, BuiltinError> {
    let batch = TokenBatch::from_rows(request.input_ids.clone()).map_err(BuiltinError::Inputs)?;
    let golden = match (kinds.feed, &request.golden) {
        (Feed::Isolated, Some(path)) => Some((CaptureReader::open(path)?, path)),
        _ => None,
    };
    let golden_inputs = match &golden {
        Some((reader, path)) => Some(GoldenInputs::of(reader).ok_or_else(|| BuiltinError::NoInputs(path.display().to_string()))?),
        None => None,
    };
    let model = DecoderModel::load(&request.model_path, target)?;
    let spec = RunSpec { mode: kinds.mode, max_new_tokens: request.max_new_tokens, mask: kinds.mask };
    let forced = request.forced_ids.as_ref().map(|rows| {
        let flat: Vec<i64> = rows.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, request.max_new_tokens as i64])
    });
    let recorder = if request.capture_inputs { Recorder::all().with_inputs() } else { Recorder::all() };
    let mut listener = TargetListener::new(recorder, golden_inputs, fault);
    let extra = run::execute(&model, &batch, &spec, forced.as_ref(), &mut listener)?;
    match listener.take_input_error() {
        Some(e @ ListenerError::Fault { .. }) => return Err(BuiltinError::Fault(e)),
        Some(e) => return Err(BuiltinError::GoldenInput(e)),
        None => {}
    }
    if let Some(f) = fault.filter(|f| !listener.recorder.records.iter().any(|r| r.key == f.module)) {
        return Err(BuiltinError::NoSuchModule(f.module.to_string()));
    }
    let metadata = run::provenance(&model, &request.model_path, &spec)?;
    Ok(Capture::from_records(&listener.recorder.records, extra, metadata))
}
