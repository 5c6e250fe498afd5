//! What comes back from an external runner is checked, never trusted: its format (by
//! [`Capture::read`]), its mode, its records against the request's keys, its input ids against
//! the case's, and each record's dtype and shape against the reference's. A producer only has to
//! write `format`, `mode` and `keys` metadata and the tensors; `target`, `model` and provenance
//! entries are its own business.

use std::collections::HashSet;

use tch::{Kind, Tensor};

use super::request::Request;
use crate::capture::Capture;

/// Names shown of a long list of missing or unexpected records.
const SHOWN: usize = 6;

/// Why a capture does not answer its request.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{source_name}: its mode is \"{got}\", the case's is \"{expected}\"")]
    Mode { source_name: String, got: String, expected: String },
    #[error("{source_name}: its records are not the case's: {problems}\n(hint: the runner must record every module the reference records (the request's `keys`), with layercheck's names; see README \"Testing your accelerator\")")]
    Keys { source_name: String, problems: String },
    #[error("{source_name}: this capture is of other inputs: {problem}\n(hint: the runner must run the request's input_ids as given)")]
    Inputs { source_name: String, problem: String },
}

/// What a capture must be: the mode, record names and input ids of a request or a reference.
pub struct Expected<'a> {
    pub mode: &'a str,
    pub keys: &'a [String],
    pub input_ids: Vec<Vec<i64>>,
}

impl<'a> Expected<'a> {
    /// What answers `request`.
    pub fn of_request(request: &'a Request) -> Self {
        Expected { mode: &request.mode, keys: &request.keys, input_ids: request.input_ids.clone() }
    }

    /// What compares with `reference` (a capture of the same run on another target).
    pub fn of_reference(reference: &'a Capture, source_name: &str) -> Result<Self, CheckError> {
        let inputs = |problem: String| CheckError::Inputs { source_name: source_name.to_string(), problem };
        let ids = reference.tensors.get("input_ids").ok_or_else(|| inputs("the reference has no input_ids tensor".into()))?;
        let size = ids.size();
        if size.len() != 2 {
            return Err(inputs(format!("the reference's input_ids is {size:?}, not [B, S]")));
        }
        let flat: Vec<i64> = Vec::<i64>::try_from(ids.to_kind(Kind::Int64).flatten(0, -1)).map_err(|e| inputs(e.to_string()))?;
        let input_ids = flat.chunks(size[1].max(1) as usize).map(<[i64]>::to_vec).collect();
        let mode = reference.metadata.get("mode").map(String::as_str).unwrap_or("(none)");
        Ok(Expected { mode, keys: &reference.keys, input_ids })
    }
}

/// Checks `capture` (named `source_name` in messages) against `request`.
pub fn check_capture(capture: &Capture, request: &Request, source_name: &str) -> Result<(), CheckError> {
    check_against(capture, &Expected::of_request(request), source_name)
}

/// Checks `capture` (named `source_name` in messages) against what is `expected`.
pub fn check_against(capture: &Capture, expected_run: &Expected, source_name: &str) -> Result<(), CheckError> {
    let name = || source_name.to_string();
    match capture.metadata.get("mode") {
        Some(m) if m == expected_run.mode => {}
        other => return Err(CheckError::Mode { source_name: name(), got: other.cloned().unwrap_or_else(|| "(none)".into()), expected: expected_run.mode.to_string() }),
    }
    let got: HashSet<&String> = capture.keys.iter().collect();
    let expected: HashSet<&String> = expected_run.keys.iter().collect();
    let missing: Vec<&String> = expected_run.keys.iter().filter(|k| !got.contains(k)).collect();
    let unexpected: Vec<&String> = capture.keys.iter().filter(|k| !expected.contains(k)).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("{} missing ({})", missing.len(), shown(&missing)));
        }
        if !unexpected.is_empty() {
            problems.push(format!("{} unexpected ({})", unexpected.len(), shown(&unexpected)));
        }
        return Err(CheckError::Keys { source_name: name(), problems: problems.join("; ") });
    }
    let inputs = |problem: String| CheckError::Inputs { source_name: name(), problem };
    let ids = capture.tensors.get("input_ids").ok_or_else(|| inputs("it has no input_ids tensor".into()))?;
    let (b, s) = (expected_run.input_ids.len(), expected_run.input_ids.first().map_or(0, Vec::len));
    if ids.size() != [b as i64, s as i64] || !matches!(ids.kind(), Kind::Int64 | Kind::Int) {
        return Err(inputs(format!("input_ids is {:?} {:?}, the case's are int64 [{b}, {s}]", ids.kind(), ids.size())));
    }
    let rows: Vec<i64> = Vec::<i64>::try_from(ids.to_kind(Kind::Int64).flatten(0, -1)).map_err(|e| inputs(e.to_string()))?;
    let expected_rows: Vec<i64> = expected_run.input_ids.iter().flatten().copied().collect();
    if let Some(i) = rows.iter().zip(&expected_rows).position(|(a, b)| a != b) {
        return Err(inputs(format!("input_ids[{}][{}] is {}, the case's is {}", i / s, i % s, rows[i], expected_rows[i])));
    }
    Ok(())
}

/// Why a record cannot be compared with its reference, if it cannot: not floating point, or
/// another shape.
pub fn record_problem(reference_shape: &[i64], target: &Tensor) -> Option<String> {
    if !matches!(target.kind(), Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double) {
        return Some(format!("the target's record is {:?}, not floating point (f32, f16, bf16)", target.kind()));
    }
    if reference_shape != target.size() {
        return Some(format!("the target's record has shape {:?}, the reference's {:?}", target.size(), reference_shape));
    }
    None
}

fn shown(names: &[&String]) -> String {
    let mut s: Vec<String> = names.iter().take(SHOWN).map(|n| n.to_string()).collect();
    if names.len() > SHOWN {
        s.push(format!("and {} more", names.len() - SHOWN));
    }
    s.join(", ")
}
