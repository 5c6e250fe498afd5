//! `get_thresholds.py` reimplemented (spec §4), and thresholds per (batch, seq) shape.
//!
//! # What the seed does, and we do
//!
//! For each model (`/` -> `--`) and each metric of `--metrics`:
//! - `--layer_io`: the files `{file_base}/{model}*{metric_name}*.csv`, `metric_name` the first
//!   two `_`-separated words of the metric (`cos_sim_avg` -> `cos_sim`); layer key = file name
//!   after its last `--`, minus `.{metric_name}` and `.csv`, with every `.iter-N` removed (the
//!   values of a layer's calls are pooled); three header lines skipped; NaN -> 0, ±inf ->
//!   ±1.7976931348623157e308 (`np.nan_to_num`). Reduction by the metric's name: containing
//!   `abs_diff` -> `sqrt(sum v²)` (so any inf gives +inf), else containing `avg` or `mean` ->
//!   arithmetic mean (so `cos_sim_avg` == `cos_sim_mean`; no values -> NaN), else no value (an
//!   empty object).
//! - without `--layer_io`: the files `{model}*{metric}*.csv` with one header line (the seed's
//!   whole-model metric files), every value pooled as is, and the 99th percentile (numpy
//!   "linear"); the metric's value is that number.
//! - Output `{output_path}/{model}-thresholds.json`: `{"model_id": model, metric: {...} | number,
//!   ...}` in `--metrics` order, written as `json.dump` writes it ([`ThresholdsFile::to_json`]).
//!
//! Compact files (`{model}*.layercheck.safetensors`, tagged `{prefix}_{tag}` ones too, all
//! pooled) are read too: their `abs_diff` sums give the same norms, their per-token cos (the
//! seed's cos, as in the CSV files) the same means (to summation rounding, far below 1e-12). So
//! the seed's keys (`abs_diff`, `cos_sim_avg`, `cos_sim_mean`) are of the seed's cos whatever the
//! input format, and can exceed 1; the per-shape section is of the true cos where it can be
//! ([`per_shape`]).
//!
//! # Where we differ, on purpose
//!
//! - Files are taken in natural name order (Python: directory order, which varies by file
//!   system), and layers are listed in order of first appearance; JSON readers do not depend on
//!   key order.
//! - Every file of a layer is pooled. Python lets a plain key's file *replace* what was pooled
//!   before it (`layers.update`), so its result depends on directory order, and with several cases
//!   (batch sizes, sequence lengths, new tokens) in one folder keeps only one case's plain values.
//!   With one case per folder and names sorted (plain files sort before their `.iter-N` files),
//!   Python's result equals ours.
//! - A folder holding the same case as CSVs and as a compact file is an error (it would count
//!   twice); the compact file's case is read from its metadata, so a tagged file counts as its
//!   case. Several compact files of one case (tags) are pooled.
//! - Non-layer mode with no value is an error (Python crashes with `IndexError`).
//! - In layer mode we add [`PerShapeThresholds`] under the top-level key `"layercheck"`; see
//!   [`per_shape`] for its definition.

mod bounds;
mod compute;
pub mod false_failures;
mod file;
pub mod logits;
pub mod per_shape;
mod percentile;

use std::path::PathBuf;

pub use bounds::{bounds_for, logits_bounds_for, mirrored_at_one, BoundsOf};
pub use compute::{compute, run, ThresholdsOptions, ThresholdsReport};
pub use file::{MetricThresholds, ThresholdsFile};
pub use logits::LogitsThresholds;
pub use per_shape::{LayerThresholds, PerShapeThresholds, ShapeThresholds};
pub use percentile::percentile_linear;

use layercheck_suite::atomic::AtomicWriteError;
use crate::formats::compact::CompactError;
use crate::formats::metric_files::MetricFilesError;
use crate::formats::py_json::PyJsonError;
use crate::formats::seed_csv::SeedCsvError;

/// Why thresholds could not be computed, read or written.
#[derive(Debug, thiserror::Error)]
pub enum ThresholdsError {
    /// The metric folder could not be listed.
    #[error(transparent)]
    Files(#[from] MetricFilesError),
    /// A seed CSV file could not be read.
    #[error(transparent)]
    Csv(#[from] SeedCsvError),
    /// A compact file could not be read.
    #[error(transparent)]
    Compact(#[from] CompactError),
    /// The thresholds file could not be written.
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    /// A thresholds file could not be read.
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A thresholds file is not JSON.
    #[error("{}{source}\n(hint: thresholds files are JSON as get_thresholds.py writes them; NaN and Infinity are allowed)", path_prefix(.path))]
    Json { path: Option<PathBuf>, source: PyJsonError },
    /// A thresholds file does not have the expected structure.
    #[error("{}{problem}\n(hint: a thresholds file is {{\"model_id\": \"org--name\", \"<metric>\": {{\"<layer key>\": number, ...}}, ...}})", path_prefix(.path))]
    Schema { path: Option<PathBuf>, problem: String },
    /// Whole-model mode found no value for a metric.
    #[error("no values for metric {metric} of model {model}: no file {pattern} in {file_base}, or they are empty\n(hint: check --models, --metrics and --file_base; per-layer CSV files need --layer_io)")]
    NoValues { model: String, metric: String, pattern: String, file_base: PathBuf },
    /// The same case is present as CSV files and as a compact file.
    #[error("case {prefix} is in {file_base} twice, as seed CSV files and as the compact file {compact}; its values would count twice\n(hint: move one of the two formats to another folder)")]
    DuplicateCase { prefix: String, file_base: PathBuf, compact: PathBuf },
    /// A value the verdict would apply cannot be right, or the file is of another model.
    #[error("{}: {field} {problem}\n(hint: thresholds are derived for one model from a healthy baseline (`layercheck generate`, then `layercheck thresholds`, README \"Thresholds\"); re-derive them, or correct the file)", .path.display())]
    Invalid { path: PathBuf, field: String, problem: String },
    /// A case's seed CSV files are not in pairs: a run was cut short.
    #[error("case {prefix} in {file_base} is partial: record {record} has its {has} file but not its {lacks} file (a run cut short?); its thresholds would be of part of a run\n(hint: remove the case's files ({prefix}--*) and generate it again)")]
    PartialCase { prefix: String, file_base: PathBuf, record: String, has: &'static str, lacks: &'static str },
    /// The percentile is out of range.
    #[error("percentile {0} is not in [0, 100]\n(hint: --percentile 99 (the default) or 100 (the largest observation))")]
    BadPercentile(f64),
    /// The false-failure rate asked for is not a rate.
    #[error("--false-failure-rate {0} is not in (0, 1)\n(hint: e.g. --false-failure-rate 0.001, one failing layer test in a thousand)")]
    BadRate(f64),
}

impl ThresholdsError {
    /// Attaches the file a parse error came from.
    pub(crate) fn in_file(self, file: &std::path::Path) -> Self {
        match self {
            ThresholdsError::Json { source, .. } => ThresholdsError::Json { path: Some(file.to_path_buf()), source },
            ThresholdsError::Schema { problem, .. } => ThresholdsError::Schema { path: Some(file.to_path_buf()), problem },
            other => other,
        }
    }
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default()
}

pub use crate::progress::{NoProgress, Progress};
