//! Reports a person looks at, one folder per case: where the target's numbers start to drift and
//! how the drift grows with depth.
//!
//! Data flows one way: a case's outcome (the harness's [`CaseOutcome`]) or a compact metrics file
//! (`layercheck generate --format compact`) becomes [`CaseResults`], which is written as
//! `results.jsonl` (for machines) and rendered, from that alone, as
//!
//! - `report.md`: the per-layer table in forward order, the first divergent layer, the worst layers;
//! - `report.html`: the same, self-contained (inline CSS and SVG, no script, no external resource;
//!   a Content-Security-Policy forbids any);
//! - `plot.png`, `plot.svg`: `abs_diff_l2` and `1 - cos_mean` against forward order, log scale,
//!   thresholds drawn, failing layers circled, sub-modules told apart by colour and marker.
//!
//! So `layercheck report --results DIR` rebuilds everything but `results.jsonl` from it, without a
//! model. Every file is written atomically (temporary file, then rename).
//!
//! # `results.jsonl` (format `layercheck-results/1`)
//!
//! One JSON object per line. The first line describes the case:
//!
//! ```json
//! {"kind":"case","format":"layercheck-results/1","case":"tiny-granite::cpu-f16::fwd::b1::s32",
//!  "source":"harness","margins":{"rtol":0.05,"atol":1e-6},"setup_error":null,"notes":["..."],
//!  "layercheck_version":"0.1.0"}
//! ```
//!
//! `margins` is null when there are no thresholds (a compact file reported without a thresholds
//! file): then there is no verdict. Every further line is one record of one layer (one forward
//! call, one prompt of the batch), in forward order:
//!
//! ```json
//! {"kind":"record","case":"...","order":6,"layer":"model.base_model.layers0.attn.dense",
//!  "module":"attn","record":"model.base_model.layers0.attn.dense","item":0,
//!  "metrics":{"abs_diff_l2":0.51,"abs_diff_max":0.02,"cos_mean":0.99991,"cos_min":0.9996,
//!             "worst_token":17,"target_nonfinite":0,"reference_nonfinite":0},
//!  "bounds":{"abs_diff_l2":0.42,"cos_mean":0.99995},
//!  "allowed":{"abs_diff_l2":0.441001,"cos_mean":0.9999465},
//!  "verdict":"fail","failures":[{"quantity":"abs_diff_l2","observed":0.51,"threshold":0.42,
//!  "excess":0.069,"reason":"abs_diff L2 ..."}],"error":null,"nonfinite":{}}
//! ```
//!
//! - `order`: the layer's index in forward order; `module`: its sub-module group (`embedding`,
//!   `ln` (every norm), `attn`, `ff`, `output` (`model.base_model`, `model.head`, `model`), `other`).
//! - `metrics`: what was observed (the verdict's quantities: the L2 norm of `abs_diff` and the mean
//!   of the per-token cos over one prompt); compact files add `rel_l2` and `sqnr_db`.
//! - `bounds`: the layer's thresholds (a member is null when the layer has none); `allowed`:
//!   threshold plus margin, the value past which the record fails. Both null without thresholds.
//!   `cos_rule`: `"seed"` when the cos threshold is the seed's pooled value, whose margin is taken
//!   on the cos itself as deepview takes it (`crates/suite/src/verdict.rs`); absent otherwise.
//! - `verdict`: `pass`, `fail`, `error` (the layer could not be compared: `error` says why, and
//!   `record`, `item` and `metrics` are null) or `unchecked` (no thresholds).
//! - `attribution` (harness, failing layers only): `"introduced"` (the layer fails in the isolated
//!   feed too) or `"inherited"` (it passes there); absent when passing, unattributed, or in files
//!   written before attribution. The case line's `attribution_unavailable` says why, when failing
//!   layers could not be attributed.
//! - `location` (harness, on each layer's first line only): `{"tokens":[{"record","item","token",
//!   "sq"}],"channels":[{"channel","share"}],"total_sq","token_sq":[...]}`: the 5 tokens with the
//!   largest squared error, the 5 hidden channels with the largest share of it, the layer's total,
//!   and per token position the squared error summed over prompts and calls (the heat strip).
//! - **Non-finite numbers**: JSON has no NaN or infinity, so every number that is NaN, `inf` or
//!   `-inf` is written as `null` and its path is listed in `nonfinite` with `"NaN"`, `"inf"` or
//!   `"-inf"`, e.g. `"metrics":{"abs_diff_l2":null,...},"nonfinite":{"metrics.abs_diff_l2":"NaN",
//!   "failures.0.excess":"NaN"}`. A null that `nonfinite` does not list means "absent".

mod attribution;
mod compact;
mod harness;
mod html;
mod layers;
mod logits;
mod markdown;
mod plot;
mod results;
mod submodule;

use std::path::{Path, PathBuf};

pub use compact::compact_results;
pub use harness::{case_report_dir, write_harness_report, REPORT_DIR_VAR};
pub use layers::{layer_views, LayerView, Verdict};
pub use submodule::Submodule;
pub use markdown::render_markdown;
pub use html::render_html;
pub use plot::{render_png, render_svg, PLOT_SIZE};
pub use results::{CaseResults, LayerResults, RecordResult, RESULTS_FORMAT};

use layercheck_suite::atomic::{write_file, AtomicWriteError, Replace};
use crate::formats::compact::{CompactError, CompactFile};
use layercheck_suite::outcome::CaseOutcome;
use layercheck_suite::matrix::Margins;
use crate::thresholds::{ThresholdsError, ThresholdsFile};

/// File names inside a case's report folder.
pub const RESULTS_FILE: &str = "results.jsonl";
pub const MARKDOWN_FILE: &str = "report.md";
pub const HTML_FILE: &str = "report.html";
pub const PNG_FILE: &str = "plot.png";
pub const SVG_FILE: &str = "plot.svg";

/// Why a report could not be written or rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A report file could not be written.
    #[error("could not write a report file: {source}\n(hint: check that the folder is writable; the harness writes under target/layercheck-reports/ unless {REPORT_DIR_VAR} names another folder)")]
    Write { path: PathBuf, source: AtomicWriteError },
    /// `results.jsonl` could not be read.
    #[error("{path}: {source}\n(hint: pass the report folder of a case, e.g. target/layercheck-reports/<case>/, which holds {RESULTS_FILE})")]
    Read { path: PathBuf, source: std::io::Error },
    /// `results.jsonl` is not what layercheck writes.
    #[error("{path}:{line}: {problem}\n(hint: {RESULTS_FILE} is written by layercheck ({RESULTS_FORMAT}); re-run the case, or `layercheck report --compact`, to write it again)")]
    Parse { path: PathBuf, line: usize, problem: String },
    /// The plot could not be drawn.
    #[error("could not draw {what}: {message}\n(hint: this is a bug in layercheck's report; results.jsonl and report.md are written, please report it)")]
    Plot { what: &'static str, message: String },
    /// The report folder could not be chosen.
    #[error("{problem}\n(hint: set {REPORT_DIR_VAR} to a writable folder)")]
    Folder { problem: String },
    /// A compact metrics file could not be read.
    #[error(transparent)]
    Compact(#[from] CompactError),
    /// A thresholds file could not be read.
    #[error(transparent)]
    Thresholds(#[from] ThresholdsError),
}

/// Writes the report of one harness case into `dir` (created if needed): `results.jsonl`,
/// `report.md`, `report.html`, `plot.png` and `plot.svg`; returns their paths.
pub fn write_case_report(outcome: &CaseOutcome, margins: &Margins, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    write_report(&CaseResults::from_outcome(outcome, margins), dir)
}

/// Writes the report of a compact metrics file into `dir`, with verdicts when `thresholds` (and
/// the margins to apply) are given, without them otherwise; returns the paths written.
pub fn write_compact_report(file: &CompactFile, source: &str, thresholds: Option<(&ThresholdsFile, &Margins)>, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    write_report(&compact_results(file, source, thresholds), dir)
}

/// Writes every report file of `results` into `dir`, `results.jsonl` first.
pub fn write_report(results: &CaseResults, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let path = dir.join(RESULTS_FILE);
    let text = results.to_jsonl();
    write_text(&path, &text)?;
    let mut written = vec![path];
    written.extend(write_renderings(results, dir)?);
    Ok(written)
}

/// Reads `dir/results.jsonl` (or the file itself when `path` is one) and writes `report.md`,
/// `report.html`, `plot.png` and `plot.svg` into `out` (and a copy of `results.jsonl` when `out`
/// is another folder); returns the paths written.
pub fn rebuild_report(path: &Path, out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let file = if path.is_dir() { path.join(RESULTS_FILE) } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).map_err(|source| ReportError::Read { path: file.clone(), source })?;
    let results = CaseResults::from_jsonl(&text).map_err(|(line, problem)| ReportError::Parse { path: file.clone(), line, problem })?;
    let mut written = Vec::new();
    let copy = out.join(RESULTS_FILE);
    if !same_file(&file, &copy) {
        write_text(&copy, &text)?;
        written.push(copy);
    }
    written.extend(write_renderings(&results, out)?);
    Ok(written)
}

/// `report.md`, `report.html`, `plot.png`, `plot.svg` of `results` in `dir`.
/// The markdown first, so that a plot that cannot be drawn leaves it written.
fn write_renderings(results: &CaseResults, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let views = layer_views(results);
    let markdown = dir.join(MARKDOWN_FILE);
    write_bytes(&markdown, render_markdown(results, &views).as_bytes())?;
    let mut written = vec![markdown];
    let svg = render_svg(results, &views)?;
    let png = render_png(results, &views)?;
    let files = [(HTML_FILE, render_html(results, &views, &svg).into_bytes()), (SVG_FILE, svg.into_bytes()), (PNG_FILE, png)];
    for (name, bytes) in files {
        let path = dir.join(name);
        write_bytes(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

fn write_text(path: &Path, text: &str) -> Result<(), ReportError> {
    write_bytes(path, text.as_bytes())
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let error = |source| ReportError::Write { path: path.to_path_buf(), source };
    write_file(path, Replace::Allowed, |w| w.write_all(bytes)).map_err(error)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), b.parent().and_then(|d| std::fs::canonicalize(d).ok())) {
        (Ok(a), Some(dir)) => b.file_name().is_some_and(|n| a == dir.join(n)),
        _ => false,
    }
}
