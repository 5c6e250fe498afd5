//! Runners: what produces a case's target run. `builtin` is layercheck's own tch decoders
//! (src/compute/evaluate.rs runs it in process); `command` an external program answering a
//! request file with a capture file; `captures` pre-recorded capture files in the golden layout.
//! Whatever an external runner returns is checked ([`check`]) before any record is compared; a
//! command may also make a model's golden file ([`reference`]).

pub mod builtin;
pub mod check;
pub mod command;
pub mod reference;
pub mod request;

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::capture::{record_name, Mode, RecordError, RecordSource};
use crate::hooks::ModuleKey;
use crate::target::Target;
use crate::compute::golden::GoldenStore;
use layercheck_suite::test_name::{CaseId, Feed};
use crate::inputs::TokenBatch;
use crate::model::AttentionMask;
use request::{Request, REQUEST_FORMAT};

/// Why a generate case's forced tokens could not be taken from its golden file.
#[derive(Debug, thiserror::Error)]
pub enum ForcedIdsError {
    #[error("golden file {}: {source}", path.display())]
    Unreadable { path: PathBuf, #[source] source: RecordError },
    #[error("golden file {} has no output_ids for generate mode", path.display())]
    Missing { path: PathBuf },
    #[error("golden file {}: output_ids has shape {shape:?}, a generate case of {seq_len} prompt tokens and {new_tokens} new ones needs [batch, {}] int64", path.display(), seq_len.saturating_add(*new_tokens))]
    Shape { path: PathBuf, shape: Vec<i64>, seq_len: usize, new_tokens: usize },
}

/// The new tokens of a generate case in its golden file (`output_ids` after the prompt), as
/// `[B, max_new_tokens]` int64: what the target is forced to produce.
pub fn forced_ids(case: &CaseId, golden: &dyn RecordSource, golden_path: &Path) -> Result<Tensor, ForcedIdsError> {
    let path = || golden_path.to_path_buf();
    let all = golden.tensor("output_ids").map_err(|source| ForcedIdsError::Unreadable { path: path(), source })?;
    let all = all.ok_or_else(|| ForcedIdsError::Missing { path: path() })?;
    let (seq_len, new_tokens) = (case.seq_len, case.max_new_tokens.unwrap_or(0));
    let shape = all.size();
    // int32 too: a reference command may write its ids so (runner/reference.rs accepts them).
    let total = seq_len.checked_add(new_tokens);
    let fits = matches!(shape.as_slice(), [_, n] if Some(*n as usize) == total) && matches!(all.kind(), Kind::Int64 | Kind::Int);
    let shape_error = || ForcedIdsError::Shape { path: path(), shape: shape.clone(), seq_len, new_tokens };
    if !fits {
        return Err(shape_error());
    }
    all.f_narrow(1, seq_len as i64, new_tokens as i64).and_then(|t| t.f_to_kind(Kind::Int64)).map_err(|_| shape_error())
}

/// The request for `case`'s target run: its inputs and attention mask, the golden's new tokens (generate mode) and
/// record names, and for the isolated feed the golden file itself.
pub fn request_for(case: &CaseId, model_dir: &Path, batch: &TokenBatch, mask: AttentionMask, golden: &dyn RecordSource, golden_path: &Path) -> Result<Request, ForcedIdsError> {
    let forced_ids = match case.mode {
        Mode::ModelForward => None,
        Mode::Generate => {
            let new = forced_ids(case, golden, golden_path)?;
            let flat = new.f_flatten(0, -1).and_then(Vec::<i64>::try_from);
            let flat = flat.map_err(|e| ForcedIdsError::Unreadable { path: golden_path.to_path_buf(), source: e.into() })?;
            Some(flat.chunks(case.max_new_tokens.unwrap_or(0).max(1)).map(<[i64]>::to_vec).collect())
        }
    };
    let model_path = std::fs::canonicalize(model_dir).unwrap_or_else(|_| model_dir.to_path_buf());
    let golden_abs = std::fs::canonicalize(golden_path).unwrap_or_else(|_| golden_path.to_path_buf());
    Ok(Request {
        format: REQUEST_FORMAT.into(),
        model: case.model.clone(),
        model_path,
        target: case.target.clone(),
        mode: case.mode.to_string(),
        input_ids: batch.rows.clone(),
        max_new_tokens: case.max_new_tokens.unwrap_or(0),
        forced_ids,
        attention_mask: mask.to_string(),
        feed: match case.feed {
            Feed::Cumulative => "cumulative",
            Feed::Isolated => "isolated",
        }
        .into(),
        golden: (case.feed == Feed::Isolated).then_some(golden_abs),
        keys: golden.keys().to_vec(),
        capture_inputs: false,
    })
}

/// The record names a run of `mode` with `num_layers` layers and `max_new_tokens` new tokens
/// makes, in order: every module of each forward call ([`ModuleKey::forward_order`]), plain in the
/// first call and `.iter-N` after (see src/capture.rs).
pub fn expected_record_names(num_layers: usize, mode: Mode, max_new_tokens: usize) -> Vec<String> {
    let per_call = ModuleKey::forward_order(num_layers, mode == Mode::Generate);
    let calls = match mode {
        Mode::ModelForward => 1,
        Mode::Generate => max_new_tokens.max(1),
    };
    let n = per_call.len();
    let per_call = &per_call;
    (0..calls).flat_map(|call| per_call.iter().enumerate().map(move |(j, &key)| record_name(key, call, call * n + j + 1))).collect()
}

/// The request for `case`'s CPU float32 reference, made by a command (`reference = { command }`):
/// the case's inputs, the reference's own greedy tokens (no forced ids), pads attended, the
/// cumulative feed, every module of a `num_layers` decoder, and module inputs when the golden
/// file keeps them.
pub fn reference_request(case: &CaseId, model_dir: &Path, batch: &TokenBatch, num_layers: usize, capture_inputs: bool) -> Request {
    let max_new_tokens = case.max_new_tokens.unwrap_or(0);
    Request {
        format: REQUEST_FORMAT.into(),
        model: case.model.clone(),
        model_path: std::fs::canonicalize(model_dir).unwrap_or_else(|_| model_dir.to_path_buf()),
        target: Target::REFERENCE.to_string(),
        mode: case.mode.to_string(),
        input_ids: batch.rows.clone(),
        max_new_tokens,
        forced_ids: None,
        attention_mask: AttentionMask::AttendPads.to_string(),
        feed: "cumulative".into(),
        golden: None,
        keys: expected_record_names(num_layers, case.mode, max_new_tokens),
        capture_inputs,
    }
}

/// Where a `captures` target keeps the capture of `case`: `DIR/{model}/{fwd|gen}-b{B}-s{S}[-n{T}].safetensors`.
pub fn capture_path(dir: &Path, case: &CaseId) -> PathBuf {
    GoldenStore::new(dir).path(case)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::capture::Capture;

    fn generate_case(seq_len: usize, new_tokens: usize) -> CaseId {
        CaseId { model: "m".into(), target: "t".into(), mode: Mode::Generate, feed: Feed::Cumulative, batch_size: 2, seq_len, max_new_tokens: Some(new_tokens) }
    }

    fn golden_with(ids: Option<Tensor>) -> Capture {
        Capture::from_records(&[], ids.map(|t| ("output_ids".to_string(), t)).into_iter().collect(), HashMap::new())
    }

    #[test]
    fn forced_ids_are_the_tokens_after_the_prompt() {
        let ids = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 7, 8]).view([2, 4]);
        for ids in [ids.shallow_clone(), ids.to_kind(Kind::Int)] {
            let new = forced_ids(&generate_case(3, 1), &golden_with(Some(ids)), Path::new("g")).unwrap();
            assert_eq!(new.kind(), Kind::Int64);
            assert_eq!(Vec::<i64>::try_from(new.flatten(0, -1)).unwrap(), vec![4, 8]);
        }
    }

    #[test]
    fn output_ids_too_short_of_another_kind_or_missing_are_errors_naming_the_file() {
        let path = Path::new("golden/m/gen-b2-s3-n4.safetensors");
        let short = Tensor::from_slice(&[1i64, 2, 3, 4]).view([2, 2]);
        let float = Tensor::from_slice(&[1f32; 14]).view([2, 7]);
        for golden in [golden_with(Some(short)), golden_with(Some(float))] {
            let e = forced_ids(&generate_case(3, 4), &golden, path).unwrap_err();
            assert!(matches!(e, ForcedIdsError::Shape { .. }), "{e}");
            assert!(e.to_string().contains("golden/m/gen-b2-s3-n4.safetensors") && e.to_string().contains("[batch, 7]"), "{e}");
        }
        let e = forced_ids(&generate_case(3, 4), &golden_with(None), path).unwrap_err();
        assert!(matches!(e, ForcedIdsError::Missing { .. }), "{e}");
    }
}
