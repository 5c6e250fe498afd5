//! Runs a model on a target over a batch, in either mode, and returns what a listener recorded
//! as a [`Capture`] with the metadata that says what made it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::capture::{Capture, Mode, Recorder};
use crate::hooks::{Hooks, Interrupted, Listener};
use crate::inputs::TokenBatch;
use crate::libtorch_env::LIBTORCH_VERSION;
use crate::model::{AttentionMask, DecoderModel, ModelError};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub mode: Mode,
    /// New tokens in generate mode (ignored in model-forward mode).
    pub max_new_tokens: usize,
    pub mask: AttentionMask,
}

/// Runs `model` on `batch` with `recorder` listening; a stopped forward is not an error.
pub fn capture(model: &DecoderModel, model_path: &Path, batch: &TokenBatch, spec: &RunSpec, mut recorder: Recorder) -> Result<Capture, ModelError> {
    let extra = execute(model, batch, spec, None, &mut recorder)?;
    let metadata = provenance(model, model_path, spec)?;
    Ok(Capture::from_records(&recorder.records, extra, metadata))
}

/// Runs `model` on `batch` with any listener; returns `input_ids` and, when the run was not
/// stopped, `logits` (model-forward) or `output_ids` (generate). In generate mode `forced`
/// (`[B, max_new_tokens]`) replaces the greedy choice of each step.
pub fn execute(model: &DecoderModel, batch: &TokenBatch, spec: &RunSpec, forced: Option<&Tensor>, listener: &mut dyn Listener) -> Result<Vec<(String, Tensor)>, ModelError> {
    batch.check_vocab(model.config.vocab_size).map_err(|e| ModelError::Input(e.to_string()))?;
    check_positions(model.config.max_position_embeddings, batch, spec)?;
    if let Some(forced) = forced {
        check_forced(forced, batch.batch_size(), spec.max_new_tokens, model.config.vocab_size)?;
    }
    let ids = batch.to_tensor();
    let mut extra: Vec<(String, Tensor)> = vec![("input_ids".into(), ids.shallow_clone())];
    let mut hooks = Hooks::new(listener);
    let outcome = tch::no_grad(|| match spec.mode {
        Mode::ModelForward => model.forward(&ids, spec.mask, &mut hooks).map(|logits| ("logits", logits)),
        Mode::Generate => model.generate(&ids, spec.max_new_tokens, forced, spec.mask, &mut hooks).map(|g| ("output_ids", g.ids)),
    });
    match outcome {
        Ok((name, tensor)) => extra.push((name.into(), tensor)),
        Err(Interrupted::Stopped) => {}
        Err(Interrupted::Torch { key, source }) => return Err(ModelError::Forward { target: model.target.to_string(), module: key.to_string(), source }),
    }
    Ok(extra)
}

/// Fails, before any tensor work, when forced tokens (a golden file's, a request's) are not
/// `[batch, max_new_tokens]` int64 ids of the model's vocabulary: an id past it would make the
/// embedding fail, and on CUDA leave the device unusable.
pub fn check_forced(forced: &Tensor, batch: usize, max_new_tokens: usize, vocab_size: i64) -> Result<(), ModelError> {
    let expected = [batch as i64, max_new_tokens as i64];
    if forced.size() != expected || forced.kind() != tch::Kind::Int64 {
        return Err(ModelError::Input(format!("the forced tokens are {:?} {:?}, the run needs int64 {expected:?}", forced.kind(), forced.size())));
    }
    if forced.numel() == 0 {
        return Ok(());
    }
    let (low, high) = (forced.f_min()?.f_int64_value(&[])?, forced.f_max()?.f_int64_value(&[])?);
    match (low, high) {
        (low, _) if low < 0 => Err(ModelError::Input(format!("forced token id {low} is negative"))),
        (_, high) if high >= vocab_size => Err(ModelError::Input(format!("forced token id {high} is outside the vocabulary of {vocab_size} ids (was the golden file made with another model?)"))),
        _ => Ok(()),
    }
}

/// Fails, before any tensor work, when the run would feed a position the model has no rotary
/// angle for (libtorch would abort with an index error): the prompt takes positions `0..S`, and in
/// generate mode each new token but the last is fed at the next one.
pub fn check_positions(max_position_embeddings: i64, batch: &TokenBatch, spec: &RunSpec) -> Result<(), ModelError> {
    let s = batch.seq_len() as i64;
    let (needed, what) = match spec.mode {
        Mode::ModelForward => (s, format!("sequence length {s} (model-forward)")),
        Mode::Generate => {
            let t = spec.max_new_tokens;
            // Past i64, the sum is as impossible as any other count beyond the model's positions.
            let needed = i64::try_from(t).ok().and_then(|t| s.checked_add((t - 1).max(0))).unwrap_or(i64::MAX);
            let past = if needed == i64::MAX { ", past the largest count of positions" } else { "" };
            (needed, format!("sequence length {s} + {t} new tokens - 1 (generate){past}"))
        }
    };
    if needed > max_position_embeddings {
        return Err(ModelError::TooLong { what, needed, max: max_position_embeddings });
    }
    Ok(())
}

/// The sha256 of a model folder's `config.json`.
pub fn config_sha256(model_path: &Path) -> Result<String, ModelError> {
    let config = model_path.join("config.json");
    let bytes = std::fs::read(&config).map_err(|source| ModelError::Io { path: config.clone(), source, hint: "config.json could not be read" })?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// The metadata of a capture: what model, target, mode and versions made it.
pub fn provenance(model: &DecoderModel, model_path: &Path, spec: &RunSpec) -> Result<HashMap<String, String>, ModelError> {
    let name = model_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let abs: PathBuf = std::fs::canonicalize(model_path).unwrap_or_else(|_| model_path.to_path_buf());
    Ok(HashMap::from([
        ("model".into(), name),
        ("model_path".into(), abs.display().to_string()),
        ("config_sha256".into(), config_sha256(model_path)?),
        ("target".into(), model.target.to_string()),
        ("mode".into(), spec.mode.to_string()),
        ("max_new_tokens".into(), if spec.mode == Mode::Generate { spec.max_new_tokens } else { 0 }.to_string()),
        ("attention_mask".into(), spec.mask.to_string()),
        ("layercheck_version".into(), env!("CARGO_PKG_VERSION").into()),
        ("libtorch_version".into(), LIBTORCH_VERSION.into()),
    ]))
}

#[cfg(test)]
mod position_tests {
    use super::*;

    #[test]
    fn a_count_of_new_tokens_past_i64_is_too_long_not_an_overflow() {
        let batch = TokenBatch::from_rows(vec![vec![1, 2, 3]]).unwrap();
        for max_new_tokens in [usize::MAX, i64::MAX as usize] {
            let spec = RunSpec { mode: Mode::Generate, max_new_tokens, mask: crate::model::AttentionMask::AttendPads };
            let e = check_positions(256, &batch, &spec).unwrap_err();
            assert!(matches!(e, ModelError::TooLong { needed: i64::MAX, max: 256, .. }), "{e}");
        }
        let spec = RunSpec { mode: Mode::Generate, max_new_tokens: 254, mask: crate::model::AttentionMask::AttendPads };
        assert!(check_positions(256, &batch, &spec).is_ok(), "3 + 254 - 1 = 256 positions fit");
    }

    #[test]
    fn forced_tokens_must_be_ids_of_the_vocabulary_in_the_runs_shape() {
        let ids = |v: &[i64]| Tensor::from_slice(v).view([1, v.len() as i64]);
        assert!(check_forced(&ids(&[0, 5, 9]), 1, 3, 10).is_ok());
        for (forced, batch, new, expected) in [
            (ids(&[0, 5, 10]), 1, 3, "forced token id 10 is outside the vocabulary of 10 ids"),
            (ids(&[-1, 5, 9]), 1, 3, "forced token id -1 is negative"),
            (ids(&[0, 5]), 1, 3, "the run needs int64 [1, 3]"),
            (ids(&[0, 5, 9]), 2, 3, "the run needs int64 [2, 3]"),
            (Tensor::from_slice(&[0.0f32, 1.0, 2.0]).view([1, 3]), 1, 3, "Float"),
        ] {
            let e = check_forced(&forced, batch, new, 10).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
    }
}
