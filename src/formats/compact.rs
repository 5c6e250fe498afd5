//! layercheck's compact metrics file: one per run instead of two CSV files per layer.
//!
//! The seed writes every `abs_diff` element as a line of text (about 170M lines for an 8B model).
//! What its consumers use is the per-layer reductions and the per-token cos; the compact file
//! keeps exactly those, as binary f64, in one safetensors file per case (readable from Python
//! with `safetensors.safe_open` and `json.loads` of the metadata).
//!
//! # Format `layercheck-compact/2`
//!
//! File `{output_path}/{prefix}.layercheck.safetensors` ([`CompactWriter::write`]), or
//! `{output_path}/{prefix}_{tag}.layercheck.safetensors` ([`CompactWriter::write_tagged`]: further
//! files of the same case, e.g. `_prompts-1` for a second batch of prompts; a tag is
//! `[a-z0-9.-]+`, not starting with `.`, so it holds no `_`). `prefix` is the case's seed prefix
//! ([`SeedCase::prefix`]), so that the seed's glob `{model}*` and
//! [`super::metric_files::compact_files`] find both forms (the seed's `*.csv` globs find
//! neither). A file is never overwritten. The case itself is in the metadata, not taken from the
//! name.
//!
//! Tensors (little-endian F64):
//! - `summaries` `[R, 18]`: row r is record r's whole-tensor [`LayerSummary`], fields in the order
//!   of the metadata entry `summary_fields` ([`SUMMARY_FIELDS`]). Its cos fields (`cos_sum`,
//!   `cos_sum_finite`, `cos_min`, `cos_argmin`, `cos_nan`) are of the **true** cosine
//!   ([`crate::metrics::true_cos_sim`]: both sides in f64, at most 1 up to f64 rounding).
//! - `item_summaries` `[I, 18]`: the per-batch-item summaries of all records, concatenated (same
//!   fields, same true cosine).
//! - `cos_sim` `[C]`: the per-token cos values of all records, concatenated, each record's
//!   row-major: the **seed's** cos ([`crate::metrics::cos_sim`], f16 side normalised in f16, can
//!   exceed 1), exactly the values a seed CSV file of the same comparison holds (f32 values when
//!   the comparison ran in f32, stored exactly). The seed's `cos_sim_avg` / `cos_sim_mean`
//!   thresholds are computed from these, so they match the seed's.
//!
//! - `logits` `[N, 6]` (optional): one row per token of the case's logits-level comparison
//!   (`layercheck_suite::logits`), columns `prompt`, `position` (generate: the step), `ce`,
//!   `diff_mean`, `kl`, `top1` (1 or 0); with the metadata entry `logits_top_k`. Files without it
//!   (older ones, or a run without logits) read as having no logits.
//!
//! Metadata (strings):
//! - `format`: `layercheck-compact/2`.
//! - `case`: JSON `{"model", "max_new_tokens", "batch_size", "seq_length", "dtype"}`.
//! - `summary_fields`: JSON list of the 18 field names.
//! - `records`: JSON list, in capture order, of `{"key", "reference_shape", "target_shape",
//!   "cos_shape", "items": [offset, count], "cos": [offset, count]}`; `key` is the file key (no
//!   brackets, `.iter-N` kept), offsets index rows of `item_summaries` and elements of `cos_sim`.
//! - any further provenance entries the writer was given ([`CompactWriter::with_metadata`]).
//!
//! What can be recomputed from it: every [`LayerSummary`] value, per record and per batch item;
//! the seed's threshold reductions exactly (`abs_diff` norm from `abs_diff_sq_sum_finite` and
//! `abs_diff_inf`, cos means from the seed's per-token cos); the seed's per-token cos. What
//! cannot: individual `abs_diff` elements (so no percentile over them), the true cos of one token
//! (only its per-item sum, minimum and argmin).
//!
//! # Versions
//!
//! - `layercheck-compact/1`: same layout, but the summaries' cos fields were of the seed's cos.
//!   Read as version 2, its per-prompt cos thresholds would again be percentiles of a cos that
//!   exceeds 1, so it is refused (with the hint to regenerate); no tool reads it any more.
//! - `layercheck-compact/2`: the summaries' cos fields are of the true cosine.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use layercheck_suite::atomic::{write_file, AtomicWriteError, Replace};
use super::case::{file_key, SeedCase};
use crate::metrics::{Comparison, LayerSummary, SUMMARY_FIELDS};
use layercheck_suite::logits::TokenLogits;

/// The `format` metadata value.
pub const FORMAT: &str = "layercheck-compact/2";
/// The file-name suffix after the case prefix.
pub const SUFFIX: &str = ".layercheck.safetensors";
const RESERVED: [&str; 5] = ["format", "case", "summary_fields", "records", "logits_top_k"];
/// Columns of the `logits` tensor.
const LOGITS_COLUMNS: usize = 6;
/// The summary fields that are counts (u64 in [`LayerSummary`]), and the largest one read.
const COUNT_FIELDS: [&str; 10] = ["elements", "rows", "cos_argmin", "reference_nan", "reference_inf", "target_nan", "target_inf", "abs_diff_nan", "abs_diff_inf", "cos_nan"];
const MAX_COUNT: f64 = (1u64 << 53) as f64;
/// The largest header [`CompactFile::read_case`] accepts (safetensors' own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Why a compact file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Writing failed (or the file exists).
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    /// Reading failed.
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not a compact file of this version.
    #[error("{path} is not a layercheck compact metrics file ({problem})\n(hint: regenerate it with `layercheck generate --format compact`)")]
    Invalid { path: PathBuf, problem: String },
    /// A key was pushed twice.
    #[error("layer key {key} was recorded twice in one compact file")]
    DuplicateKey { key: String },
    /// A metadata key clashes with the format's own.
    #[error("metadata key {key} is reserved by the compact format")]
    ReservedMetadata { key: String },
    /// The cos tensor could not be read.
    #[error("could not read the cos values of {key}: {source}")]
    Torch { key: String, source: tch::TchError },
    /// A file tag is not of the form `[a-z0-9.-]+` (not starting with `.`).
    #[error("compact file tag {tag:?} is not allowed\n(hint: a tag is lowercase letters, digits, `-` and `.`, not starting with `.`, e.g. `prompts-1`)")]
    BadTag { tag: String },
}

/// One layer's entry in a compact file.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactRecord {
    /// File key (no brackets; `.iter-N` kept).
    pub key: String,
    /// The reference tensor's shape.
    pub reference_shape: Vec<i64>,
    /// The target tensor's shape.
    pub target_shape: Vec<i64>,
    /// The cos tensor's shape (leading dims).
    pub cos_shape: Vec<i64>,
    /// The whole tensor's summary (cos fields: the true cosine).
    pub summary: LayerSummary,
    /// Per batch item summaries (cos fields: the true cosine).
    pub items: Vec<LayerSummary>,
    /// The seed's per-token cos ([`Comparison::cos_sim`]), row-major.
    pub cos_sim: Vec<f64>,
}

impl CompactRecord {
    /// The record of one [`Comparison`] of `key` (brackets are dropped from the key).
    pub fn from_comparison(key: &str, reference_shape: &[i64], target_shape: &[i64], comparison: &Comparison) -> Result<Self, CompactError> {
        let torch = |source| CompactError::Torch { key: key.to_string(), source };
        let values = crate::metrics::to_f64_vec(&comparison.cos_sim).map_err(torch)?;
        Ok(CompactRecord {
            key: file_key(key),
            reference_shape: reference_shape.to_vec(),
            target_shape: target_shape.to_vec(),
            cos_shape: comparison.cos_sim.size(),
            summary: comparison.summary,
            items: comparison.items.clone(),
            cos_sim: values,
        })
    }
}

/// Collects the records of one case and writes them as one compact file.
#[derive(Debug, Clone)]
pub struct CompactWriter {
    case: SeedCase,
    metadata: BTreeMap<String, String>,
    records: Vec<CompactRecord>,
    logits: Option<CompactLogits>,
    /// The keys of `records`, so that adding one stays O(1) (a generate case has ~10^5).
    keys: HashSet<String>,
}

#[derive(Serialize, Deserialize)]
struct CaseJson {
    model: String,
    max_new_tokens: u64,
    batch_size: u64,
    seq_length: u64,
    dtype: String,
}

#[derive(Serialize, Deserialize)]
struct RecordJson {
    key: String,
    reference_shape: Vec<i64>,
    target_shape: Vec<i64>,
    cos_shape: Vec<i64>,
    items: [usize; 2],
    cos: [usize; 2],
}

impl CompactWriter {
    /// An empty file for `case`.
    pub fn new(case: SeedCase) -> Self {
        CompactWriter { case, metadata: BTreeMap::new(), records: Vec::new(), logits: None, keys: HashSet::new() }
    }

    /// Adds a provenance metadata entry (e.g. `mode`, `target`, `layercheck_version`).
    pub fn with_metadata(mut self, key: &str, value: &str) -> Result<Self, CompactError> {
        if RESERVED.contains(&key) {
            return Err(CompactError::ReservedMetadata { key: key.to_string() });
        }
        self.metadata.insert(key.to_string(), value.to_string());
        Ok(self)
    }

    /// Adds one layer's comparison (in capture order).
    pub fn push(&mut self, key: &str, reference_shape: &[i64], target_shape: &[i64], comparison: &Comparison) -> Result<(), CompactError> {
        self.push_record(CompactRecord::from_comparison(key, reference_shape, target_shape, comparison)?)
    }

    /// Adds a ready record.
    pub fn push_record(&mut self, record: CompactRecord) -> Result<(), CompactError> {
        if !self.keys.insert(record.key.clone()) {
            return Err(CompactError::DuplicateKey { key: record.key });
        }
        self.records.push(record);
        Ok(())
    }

    /// Sets the case's per-token logits metrics.
    pub fn set_logits(&mut self, logits: CompactLogits) {
        self.logits = Some(logits);
    }

    /// What the written file reads back as, without reading it.
    pub fn into_file(self) -> CompactFile {
        CompactFile { case: self.case, metadata: self.metadata, records: self.records, logits: self.logits }
    }

    /// Writes the file `{prefix}.layercheck.safetensors` under `output_path` (never over an
    /// existing one); returns its path. Same as [`CompactWriter::write_tagged`] without a tag.
    pub fn write(&self, output_path: &Path) -> Result<PathBuf, CompactError> {
        self.write_tagged(output_path, None)
    }

    /// Writes the file under `output_path` as `{prefix}_{tag}.layercheck.safetensors`
    /// (`{prefix}.layercheck.safetensors` for `None`), never over an existing one; returns its
    /// path. Tags tell apart several files of one case (e.g. `prompts-1`, `prompts-2` for further
    /// batches of prompts), which `layercheck thresholds` pools. [`CompactError::BadTag`] unless
    /// the tag is `[a-z0-9.-]+` not starting with `.`.
    pub fn write_tagged(&self, output_path: &Path, tag: Option<&str>) -> Result<PathBuf, CompactError> {
        let path = output_path.join(compact_file_name_tagged(&self.case, tag)?);
        let (mut summaries, mut items, mut cos) = (Vec::new(), Vec::new(), Vec::new());
        let mut records = Vec::with_capacity(self.records.len());
        for r in &self.records {
            summaries.extend(r.summary.to_array());
            let item_offset = items.len() / SUMMARY_FIELDS.len();
            for item in &r.items {
                items.extend(item.to_array());
            }
            let cos_offset = cos.len();
            cos.extend_from_slice(&r.cos_sim);
            records.push(RecordJson {
                key: r.key.clone(),
                reference_shape: r.reference_shape.clone(),
                target_shape: r.target_shape.clone(),
                cos_shape: r.cos_shape.clone(),
                items: [item_offset, r.items.len()],
                cos: [cos_offset, r.cos_sim.len()],
            });
        }
        let case = CaseJson {
            model: self.case.model.clone(),
            max_new_tokens: self.case.max_new_tokens,
            batch_size: self.case.batch_size,
            seq_length: self.case.seq_length,
            dtype: self.case.dtype.clone(),
        };
        let mut metadata: std::collections::HashMap<String, String> = self.metadata.clone().into_iter().collect();
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("case".into(), to_json(&case));
        metadata.insert("summary_fields".into(), to_json(&SUMMARY_FIELDS));
        metadata.insert("records".into(), to_json(&records));
        let bytes = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (sb, ib, cb) = (bytes(&summaries), bytes(&items), bytes(&cos));
        let k = SUMMARY_FIELDS.len();
        let invalid = |e: safetensors::SafeTensorError| CompactError::Invalid { path: path.clone(), problem: e.to_string() };
        let logits: Vec<f64> = self.logits.iter().flat_map(|l| &l.tokens).flat_map(|t| [t.prompt as f64, t.position as f64, t.ce, t.diff_mean, t.kl, f64::from(u8::from(t.top1))]).collect();
        let lb = bytes(&logits);
        let mut views = vec![
            ("summaries", TensorView::new(Dtype::F64, vec![self.records.len(), k], &sb).map_err(invalid)?),
            ("item_summaries", TensorView::new(Dtype::F64, vec![items.len() / k, k], &ib).map_err(invalid)?),
            ("cos_sim", TensorView::new(Dtype::F64, vec![cos.len()], &cb).map_err(invalid)?),
        ];
        if let Some(l) = &self.logits {
            metadata.insert("logits_top_k".into(), l.top_k.to_string());
            views.push(("logits", TensorView::new(Dtype::F64, vec![l.tokens.len(), LOGITS_COLUMNS], &lb).map_err(invalid)?));
        }
        let data = safetensors::serialize(views, Some(metadata)).map_err(invalid)?;
        write_file(&path, Replace::Never, |w| w.write_all(&data))?;
        Ok(path)
    }
}

/// Metadata JSON of plain structs (strings, integers, lists), which serde_json always serialises.
fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The compact file name of `case`: `{prefix}.layercheck.safetensors`.
pub fn compact_file_name(case: &SeedCase) -> String {
    format!("{}{SUFFIX}", case.prefix())
}

/// The compact file name of `case` under `tag`: `{prefix}_{tag}.layercheck.safetensors`, or
/// [`compact_file_name`] for `None`. [`CompactError::BadTag`] unless the tag is `[a-z0-9.-]+` not
/// starting with `.` (no `_`, no path separator).
pub fn compact_file_name_tagged(case: &SeedCase, tag: Option<&str>) -> Result<String, CompactError> {
    let Some(tag) = tag else { return Ok(compact_file_name(case)) };
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if tag.is_empty() || tag.starts_with('.') || !tag.chars().all(allowed) {
        return Err(CompactError::BadTag { tag: tag.to_string() });
    }
    Ok(format!("{}_{tag}{SUFFIX}", case.prefix()))
}

/// A compact file as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactFile {
    /// The case the file belongs to.
    pub case: SeedCase,
    /// Provenance metadata entries (the format's own entries removed).
    pub metadata: BTreeMap<String, String>,
    /// Records in capture order.
    pub records: Vec<CompactRecord>,
    /// The case's per-token logits metrics, when the file has them.
    pub logits: Option<CompactLogits>,
}

/// A case's per-token logits metrics in a compact file.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactLogits {
    /// The number of reference logits they were computed on.
    pub top_k: u64,
    pub tokens: Vec<TokenLogits>,
}

/// Removes the metadata entry `key`.
fn take(metadata: &mut BTreeMap<String, String>, key: &str, path: &Path) -> Result<String, CompactError> {
    metadata.remove(key).ok_or_else(|| CompactError::Invalid { path: path.to_path_buf(), problem: format!("no `{key}` metadata") })
}

/// Checks the `format` entry and parses the `case` entry (both removed from `metadata`).
fn check_format_and_case(metadata: &mut BTreeMap<String, String>, path: &Path) -> Result<SeedCase, CompactError> {
    let invalid = |problem: String| CompactError::Invalid { path: path.to_path_buf(), problem };
    let format = take(metadata, "format", path)?;
    if format == "layercheck-compact/1" {
        return Err(invalid(format!("format {format:?} is from an older layercheck whose summaries hold the seed's cos, not the true cos of {FORMAT:?}")));
    }
    if format != FORMAT {
        return Err(invalid(format!("format is {format:?}, this layercheck reads {FORMAT:?}")));
    }
    let case: CaseJson = serde_json::from_str(&take(metadata, "case", path)?).map_err(|e| invalid(format!("case: {e}")))?;
    Ok(SeedCase { model: case.model, max_new_tokens: case.max_new_tokens, batch_size: case.batch_size, seq_length: case.seq_length, dtype: case.dtype })
}

impl CompactFile {
    /// The case of a compact file, from its header alone (the tensors are not read), with the
    /// same checks of `format` and `case` as [`CompactFile::read`].
    pub fn read_case(path: &Path) -> Result<SeedCase, CompactError> {
        use std::io::Read;
        #[derive(Deserialize)]
        struct Header {
            #[serde(rename = "__metadata__")]
            metadata: Option<BTreeMap<String, String>>,
        }
        let invalid = |problem: String| CompactError::Invalid { path: path.to_path_buf(), problem };
        let io = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                invalid("the file ends inside its header".into())
            } else {
                CompactError::Read { path: path.to_path_buf(), source }
            }
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(io)?;
        let len = u64::from_le_bytes(len);
        if len > MAX_HEADER_BYTES {
            return Err(invalid(format!("a header of {len} bytes")));
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let header: Header = serde_json::from_slice(&header).map_err(|e| invalid(format!("header: {e}")))?;
        check_format_and_case(&mut header.metadata.unwrap_or_default(), path)
    }

    /// Reads and checks a compact file.
    pub fn read(path: &Path) -> Result<CompactFile, CompactError> {
        let bytes = std::fs::read(path).map_err(|source| CompactError::Read { path: path.to_path_buf(), source })?;
        let invalid = |problem: String| CompactError::Invalid { path: path.to_path_buf(), problem };
        super::safetensors_offsets::check_data_offsets(&bytes).map_err(invalid)?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(e.to_string()))?;
        let mut metadata: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        let case = check_format_and_case(&mut metadata, path)?;
        let take = |m: &mut BTreeMap<String, String>, key: &str| take(m, key, path);
        let fields: Vec<String> = serde_json::from_str(&take(&mut metadata, "summary_fields")?).map_err(|e| invalid(format!("summary_fields: {e}")))?;
        if fields != SUMMARY_FIELDS {
            return Err(invalid(format!("summary fields {fields:?} differ from {SUMMARY_FIELDS:?}")));
        }
        let records: Vec<RecordJson> = serde_json::from_str(&take(&mut metadata, "records")?).map_err(|e| invalid(format!("records: {e}")))?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| invalid(e.to_string()))?;
        let f64s = |name: &str| -> Result<Vec<f64>, CompactError> {
            let view = tensors.tensor(name).map_err(|e| invalid(format!("tensor {name}: {e}")))?;
            if view.dtype() != Dtype::F64 {
                return Err(invalid(format!("tensor {name} is {:?}, not F64", view.dtype())));
            }
            Ok(view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default())).collect())
        };
        let (summaries, items, cos) = (f64s("summaries")?, f64s("item_summaries")?, f64s("cos_sim")?);
        let k = SUMMARY_FIELDS.len();
        let summary_at = |v: &[f64], i: usize| -> Result<LayerSummary, String> {
            let row = i.checked_mul(k).and_then(|start| v.get(start..start.checked_add(k)?)).and_then(|r| <&[f64; 18]>::try_from(r).ok());
            let row = row.ok_or_else(|| format!("row {i} out of range"))?;
            // Counts are written exactly (below 2^53); anything else (a flipped bit, a negative,
            // a fraction) would saturate into a count that overflows where counts are added.
            let not_count = |(field, x): &(&&str, &f64)| COUNT_FIELDS.contains(field) && !(x.fract() == 0.0 && (0.0..=MAX_COUNT).contains(*x));
            match SUMMARY_FIELDS.iter().zip(row).find(not_count) {
                Some((field, x)) => Err(format!("row {i}: {field} = {x} is not a count")),
                None => Ok(LayerSummary::from_array(row)),
            }
        };
        // Offsets come from the file: checked, and each record's ranges must start where the
        // previous record's end, as the writer lays them out (so that no two records share rows,
        // which would let a small file expand into a huge one).
        let (mut next_item, mut next_cos) = (0usize, 0usize);
        let mut out = Vec::with_capacity(records.len());
        for (i, r) in records.into_iter().enumerate() {
            let bad = |what: &str| invalid(format!("record {i} ({}): {what} out of range", r.key));
            let range = |[offset, count]: [usize; 2], next: usize| Some(offset..offset.checked_add(count)?).filter(|r| r.start == next);
            let summary = summary_at(&summaries, i).map_err(|p| invalid(format!("record {i} ({}): summaries {p}", r.key)))?;
            let item_rows = range(r.items, next_item).ok_or_else(|| bad("items"))?;
            next_item = item_rows.end;
            let item_list = item_rows.map(|j| summary_at(&items, j)).collect::<Result<Vec<_>, _>>().map_err(|p| invalid(format!("record {i} ({}): item_summaries {p}", r.key)))?;
            let cos_range = range(r.cos, next_cos).ok_or_else(|| bad("cos"))?;
            next_cos = cos_range.end;
            let cos_values = cos.get(cos_range).ok_or_else(|| bad("cos"))?.to_vec();
            out.push(CompactRecord {
                key: r.key,
                reference_shape: r.reference_shape,
                target_shape: r.target_shape,
                cos_shape: r.cos_shape,
                summary,
                items: item_list,
                cos_sim: cos_values,
            });
        }
        let logits = match metadata.remove("logits_top_k") {
            None => None,
            Some(k) => {
                let top_k: u64 = k.parse().ok().filter(|&k| k > 0).ok_or_else(|| invalid(format!("logits_top_k {k:?} is not a positive count")))?;
                let values = f64s("logits")?;
                if !values.len().is_multiple_of(LOGITS_COLUMNS) {
                    return Err(invalid(format!("tensor logits has {} values, not rows of {LOGITS_COLUMNS}", values.len())));
                }
                let index = |x: f64, what: &str| if x.fract() == 0.0 && (0.0..=MAX_COUNT).contains(&x) { Ok(x as usize) } else { Err(invalid(format!("tensor logits: {what} {x} is not an index"))) };
                let tokens = values
                    .chunks_exact(LOGITS_COLUMNS)
                    .map(|r| Ok(TokenLogits { prompt: index(r[0], "prompt")?, position: index(r[1], "position")?, ce: r[2], diff_mean: r[3], kl: r[4], top1: r[5] == 1.0 }))
                    .collect::<Result<Vec<_>, CompactError>>()?;
                Some(CompactLogits { top_k, tokens })
            }
        };
        Ok(CompactFile { case, metadata, records: out, logits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::compare;
    use tch::{Kind, Tensor};

    #[test]
    fn round_trips_records_in_capture_order() {
        let dir = tempfile::tempdir().unwrap();
        let case = SeedCase::new("org/model", 4, 2, 3);
        let mut w = CompactWriter::new(case.clone()).with_metadata("mode", "generate").unwrap();
        let r = Tensor::from_slice(&[1.0f32, 0.0, -2.0, 3.0, 0.5, 0.25, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3, 2]);
        let t = (&r + 0.125).to_kind(Kind::Half);
        let c = compare(&r, &t).unwrap();
        w.push("model.base_model.layers[0].ln", &[2, 3, 2], &[2, 3, 2], &c).unwrap();
        let r2 = Tensor::from_slice(&[f32::NAN, 1.0]).view([1, 1, 2]);
        let c2 = compare(&r2, &r2.ones_like()).unwrap();
        w.push("model.head.iter-3", &[1, 1, 2], &[1, 1, 2], &c2).unwrap();
        assert!(matches!(w.push("model.head.iter-3", &[1, 1, 2], &[1, 1, 2], &c2), Err(CompactError::DuplicateKey { .. })));
        assert!(w.clone().with_metadata("records", "x").is_err());
        let path = w.write(dir.path()).unwrap();
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), "org--model_max-new-tokens-4_batch-size-2_seq-length-3_dtype-float16.layercheck.safetensors");
        let back = CompactFile::read(&path).unwrap();
        assert_eq!(back.case, case);
        assert_eq!(back.metadata.get("mode").map(String::as_str), Some("generate"));
        assert_eq!(back.records.len(), 2);
        assert_eq!(back.records[0].key, "model.base_model.layers0.ln");
        assert_eq!(back.records[0].items.len(), 2);
        assert_eq!(back.records[0].cos_shape, vec![2, 3]);
        assert_eq!(back.records[0].summary.to_array().map(f64::to_bits), c.summary.to_array().map(f64::to_bits));
        assert_eq!(back.records[0].cos_sim.len(), 6);
        // The cos_sim array is the seed's cos bit for bit; the summaries hold the true cos.
        let seed: Vec<f64> = {
            let t = c.cos_sim.to_kind(Kind::Double).view([-1]);
            let mut v = vec![0.0; 6];
            t.copy_data(&mut v, 6);
            v
        };
        assert_eq!(back.records[0].cos_sim.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), seed.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        let true_sum: f64 = {
            let t = crate::metrics::true_cos_sim(&r, &t).unwrap().view([-1]);
            let mut v = vec![0.0; 6];
            t.copy_data(&mut v, 6);
            v.iter().sum()
        };
        assert!((back.records[0].summary.cos_sum - true_sum).abs() <= 1e-15 && back.records[0].summary.cos_sum != seed.iter().sum::<f64>());
        assert!(back.records[1].summary.abs_diff_sq_sum.is_nan());
        assert_eq!(back.records[1].summary.reference_nan, 1);
        assert!(matches!(w.write(dir.path()), Err(CompactError::Write(AtomicWriteError::Exists { .. }))));
    }

    fn writer(case: &SeedCase) -> CompactWriter {
        let mut w = CompactWriter::new(case.clone());
        let r = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 2, 2]);
        w.push("model.head", &[1, 2, 2], &[1, 2, 2], &compare(&r, &r.to_kind(Kind::Half)).unwrap()).unwrap();
        w
    }

    #[test]
    fn tagged_files_are_named_after_the_case_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let case = SeedCase::new("org/model", 4, 1, 2);
        let w = writer(&case);
        let plain = w.write(dir.path()).unwrap();
        let tagged = w.write_tagged(dir.path(), Some("prompts-1")).unwrap();
        assert_eq!(w.write_tagged(dir.path(), None).unwrap_err().to_string(), AtomicWriteError::Exists { path: plain.clone() }.to_string());
        assert_eq!(tagged, dir.path().join("org--model_max-new-tokens-4_batch-size-1_seq-length-2_dtype-float16_prompts-1.layercheck.safetensors"));
        assert!(matches!(w.write_tagged(dir.path(), Some("prompts-1")), Err(CompactError::Write(AtomicWriteError::Exists { .. }))));
        for bad in ["", "a_b", "a/b", "..", ".x", "A", "é"] {
            let err = w.write_tagged(dir.path(), Some(bad)).unwrap_err();
            assert!(matches!(err, CompactError::BadTag { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("hint"), "{err}");
        }
        // Both are found as the model's compact files, and both read back as the case.
        let found = crate::formats::metric_files::compact_files(dir.path(), "org--model").unwrap();
        assert_eq!(found, vec![plain.clone(), tagged.clone()]);
        for path in [&plain, &tagged] {
            assert_eq!(CompactFile::read(path).unwrap().case, case);
            assert_eq!(CompactFile::read_case(path).unwrap(), case);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary or extra file");
    }

    #[test]
    fn version_1_files_are_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.layercheck.safetensors");
        let metadata = std::collections::HashMap::from([("format".to_string(), "layercheck-compact/1".to_string())]);
        let data = safetensors::serialize(Vec::<(&str, TensorView)>::new(), Some(metadata)).unwrap();
        std::fs::write(&path, data).unwrap();
        for err in [CompactFile::read(&path).unwrap_err(), CompactFile::read_case(&path).unwrap_err()] {
            let err = err.to_string();
            assert!(err.contains("seed's cos") && err.contains("layercheck generate --format compact"), "{err}");
        }
        std::fs::write(&path, b"\x10\0\0\0\0\0\0\0{").unwrap();
        assert!(matches!(CompactFile::read_case(&path), Err(CompactError::Invalid { .. })));
    }

    #[test]
    fn count_fields_are_summary_fields() {
        assert!(COUNT_FIELDS.iter().all(|f| SUMMARY_FIELDS.contains(f)), "{COUNT_FIELDS:?}");
    }

    #[test]
    fn other_safetensors_files_are_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let data = safetensors::serialize(Vec::<(&str, TensorView)>::new(), None).unwrap();
        std::fs::write(&path, data).unwrap();
        let err = CompactFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("not a layercheck compact metrics file") && err.contains("hint"), "{err}");
        let err = CompactFile::read_case(&path).unwrap_err().to_string();
        assert!(err.contains("no `format` metadata"), "{err}");
    }
}
