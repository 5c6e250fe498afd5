//! Files layercheck shares with IBM's Python tools, and its own compact metrics file.
//!
//! - [`case`]: the seed's readable file-name prefix of a run (model, new tokens, batch, sequence).
//! - [`seed_csv`]: `generate_layers_metrics.py`'s per-layer CSV files (`abs_diff`, `cos_sim`).
//! - [`compact`]: layercheck's one-file-per-run metrics format (summaries and per-token cos).
//! - [`metric_files`]: finding and reading a run folder's metric files in either format.
//! - [`py_float`]: Python's `repr(float)` and `float(str)`, the number syntax of both seed files.
//! - [`py_json`]: Python's `json.dump` output (NaN, Infinity, repr floats) and a tolerant reader.
//! - [`atomic`]: write to a temporary file, then rename into place, never over an existing file.
//! - [`safetensors_offsets`]: tensor offsets checked against the file's length before the
//!   `safetensors` crate reads a file.

pub mod case;
pub mod compact;
pub mod metric_files;
pub mod py_float;
pub mod py_json;
pub mod safetensors_offsets;
pub mod seed_csv;
