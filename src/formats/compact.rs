//! layercheck's compact metrics file: one per run instead of two CSV files per layer.
//!
//! The seed writes every `abs_diff` element as a line of text (about 170M lines for an 8B model).
//! What its consumers use is the per-layer reductions and the per-token cos; the compact file
//! keeps exactly those, as binary f64, in one safetensors file per case (readable from Python
//! with `safetensors.safe_open` and `json.loads` of the metadata).
//!
//! # Format `layercheck-compact/1`
//!
//! File `{output_path}/{prefix}.layercheck.safetensors`, `prefix` the case's seed prefix
//! ([`SeedCase::prefix`]), so that the seed's glob `{model}*` finds it too (but not `*.csv`).
//!
//! Tensors (little-endian F64):
//! - `summaries` `[R, 18]`: row r is record r's whole-tensor [`LayerSummary`], fields in the order
//!   of the metadata entry `summary_fields` ([`SUMMARY_FIELDS`]).
//! - `item_summaries` `[I, 18]`: the per-batch-item summaries of all records, concatenated.
//! - `cos_sim` `[C]`: the per-token cos values of all records, concatenated, each record's
//!   row-major (f32 values when the comparison ran in f32, stored exactly).
//!
//! Metadata (strings):
//! - `format`: `layercheck-compact/1`.
//! - `case`: JSON `{"model", "max_new_tokens", "batch_size", "seq_length", "dtype"}`.
//! - `summary_fields`: JSON list of the 18 field names.
//! - `records`: JSON list, in capture order, of `{"key", "reference_shape", "target_shape",
//!   "cos_shape", "items": [offset, count], "cos": [offset, count]}`; `key` is the file key (no
//!   brackets, `.iter-N` kept), offsets index rows of `item_summaries` and elements of `cos_sim`.
//! - any further provenance entries the writer was given ([`CompactWriter::with_metadata`]).
//!
//! What can be recomputed from it: every [`LayerSummary`] value, per record and per batch item;
//! the seed's threshold reductions exactly (`abs_diff` norm from `abs_diff_sq_sum_finite` and
//! `abs_diff_inf`, cos means from the cos values); per-token cos. What cannot: individual
//! `abs_diff` elements (so no percentile over them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use super::atomic::{write_file, AtomicWriteError, Replace};
use super::case::{file_key, SeedCase};
use crate::metrics::{Comparison, LayerSummary, SUMMARY_FIELDS};

/// The `format` metadata value.
pub const FORMAT: &str = "layercheck-compact/1";
/// The file-name suffix after the case prefix.
pub const SUFFIX: &str = ".layercheck.safetensors";
const RESERVED: [&str; 4] = ["format", "case", "summary_fields", "records"];

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
    /// The whole tensor's summary.
    pub summary: LayerSummary,
    /// Per batch item summaries.
    pub items: Vec<LayerSummary>,
    /// Per-token cos, row-major.
    pub cos_sim: Vec<f64>,
}

impl CompactRecord {
    /// The record of one [`Comparison`] of `key` (brackets are dropped from the key).
    pub fn from_comparison(key: &str, reference_shape: &[i64], target_shape: &[i64], comparison: &Comparison) -> Result<Self, CompactError> {
        let torch = |source| CompactError::Torch { key: key.to_string(), source };
        let cos = comparison.cos_sim.f_to_device(Device::Cpu).map_err(torch)?.f_to_kind(Kind::Double).map_err(torch)?;
        let cos = cos.f_contiguous().map_err(torch)?.f_reshape([-1]).map_err(torch)?;
        let n = cos.numel();
        let mut values = vec![0f64; n];
        cos.f_copy_data(&mut values, n).map_err(torch)?;
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
        CompactWriter { case, metadata: BTreeMap::new(), records: Vec::new() }
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
        if self.records.iter().any(|r| r.key == record.key) {
            return Err(CompactError::DuplicateKey { key: record.key });
        }
        self.records.push(record);
        Ok(())
    }

    /// The records so far.
    pub fn records(&self) -> &[CompactRecord] {
        &self.records
    }

    /// The path this case's file has under `output_path`.
    pub fn path(&self, output_path: &Path) -> PathBuf {
        compact_path(output_path, &self.case)
    }

    /// Writes the file under `output_path` (never over an existing one); returns its path.
    pub fn write(&self, output_path: &Path) -> Result<PathBuf, CompactError> {
        let path = self.path(output_path);
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
        let views = vec![
            ("summaries", TensorView::new(Dtype::F64, vec![self.records.len(), k], &sb).map_err(invalid)?),
            ("item_summaries", TensorView::new(Dtype::F64, vec![items.len() / k, k], &ib).map_err(invalid)?),
            ("cos_sim", TensorView::new(Dtype::F64, vec![cos.len()], &cb).map_err(invalid)?),
        ];
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

/// `output_path` joined with [`compact_file_name`].
pub fn compact_path(output_path: &Path, case: &SeedCase) -> PathBuf {
    output_path.join(compact_file_name(case))
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
}

impl CompactFile {
    /// Reads and checks a compact file.
    pub fn read(path: &Path) -> Result<CompactFile, CompactError> {
        let bytes = std::fs::read(path).map_err(|source| CompactError::Read { path: path.to_path_buf(), source })?;
        let invalid = |problem: String| CompactError::Invalid { path: path.to_path_buf(), problem };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(e.to_string()))?;
        let mut metadata: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        let take = |m: &mut BTreeMap<String, String>, key: &str| m.remove(key).ok_or_else(|| invalid(format!("no `{key}` metadata")));
        let format = take(&mut metadata, "format")?;
        if format != FORMAT {
            return Err(invalid(format!("format is {format:?}, this layercheck reads {FORMAT:?}")));
        }
        let case: CaseJson = serde_json::from_str(&take(&mut metadata, "case")?).map_err(|e| invalid(format!("case: {e}")))?;
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
        let summary_at = |v: &[f64], i: usize| -> Option<LayerSummary> {
            let row: &[f64; 18] = v.get(i * k..(i + 1) * k)?.try_into().ok()?;
            Some(LayerSummary::from_array(row))
        };
        let mut out = Vec::with_capacity(records.len());
        for (i, r) in records.into_iter().enumerate() {
            let bad = |what: &str| invalid(format!("record {i} ({}): {what} out of range", r.key));
            let summary = summary_at(&summaries, i).ok_or_else(|| bad("summary"))?;
            let item_list = (r.items[0]..r.items[0] + r.items[1]).map(|j| summary_at(&items, j)).collect::<Option<Vec<_>>>().ok_or_else(|| bad("items"))?;
            let cos_values = cos.get(r.cos[0]..r.cos[0] + r.cos[1]).ok_or_else(|| bad("cos"))?.to_vec();
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
        Ok(CompactFile {
            case: SeedCase {
                model: case.model,
                max_new_tokens: case.max_new_tokens,
                batch_size: case.batch_size,
                seq_length: case.seq_length,
                dtype: case.dtype,
            },
            metadata,
            records: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::compare;
    use tch::Tensor;

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
        assert!(back.records[1].summary.abs_diff_sq_sum.is_nan());
        assert_eq!(back.records[1].summary.reference_nan, 1);
        assert!(matches!(w.write(dir.path()), Err(CompactError::Write(AtomicWriteError::Exists { .. }))));
    }

    #[test]
    fn other_safetensors_files_are_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let data = safetensors::serialize(Vec::<(&str, TensorView)>::new(), None).unwrap();
        std::fs::write(&path, data).unwrap();
        let err = CompactFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("not a layercheck compact metrics file") && err.contains("hint"), "{err}");
    }
}
