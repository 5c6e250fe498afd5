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

use tch::Kind;

use crate::capture::{record_name, Mode, RecordSource};
use crate::hooks::ModuleKey;
use crate::target::Target;
use crate::compute::golden::GoldenStore;
use layercheck_suite::test_name::{CaseId, Feed};
use crate::inputs::TokenBatch;
use crate::model::AttentionMask;
use request::{Request, REQUEST_FORMAT};

/// The request for `case`'s target run: its inputs and attention mask, the golden's new tokens (generate mode) and
/// record names, and for the isolated feed the golden file itself.
pub fn request_for(case: &CaseId, model_dir: &Path, batch: &TokenBatch, mask: AttentionMask, golden: &dyn RecordSource, golden_path: &Path) -> Result<Request, String> {
    let forced_ids = match case.mode {
        Mode::ModelForward => None,
        Mode::Generate => {
            let all = golden.tensor("output_ids").map_err(|e| format!("golden file {}: {e}", golden_path.display()))?;
            let all = all.ok_or_else(|| format!("golden file {} has no output_ids for generate mode", golden_path.display()))?;
            let t = case.max_new_tokens.unwrap_or(0) as i64;
            let new = all.narrow(1, case.seq_len as i64, t).to_kind(Kind::Int64);
            let flat: Vec<i64> = Vec::<i64>::try_from(new.flatten(0, -1)).map_err(|e| e.to_string())?;
            Some(flat.chunks(t.max(1) as usize).map(<[i64]>::to_vec).collect())
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
