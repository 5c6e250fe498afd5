//! Seed step 1 (`generate_layers_metrics.py`): run a reference and a target over the same inputs,
//! compare every hooked module, and write the per-layer metric files (seed CSVs or compact).
//!
//! Differences from the seed, on purpose (README "Module keys, and where we differ from the Python tools"): tuple outputs hold what their
//! name says; in generate mode the target decodes the reference's tokens (teacher forcing), so that
//! each step compares like with like instead of two diverging generations.

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::capture::{parse_record_name, Capture, Mode, Recorder};
use crate::hooks::ModuleKey;
use layercheck_suite::logits::DEFAULT_TOP_K;
use crate::formats::case::SeedCase;
use crate::formats::compact::{compact_file_name_tagged, CompactFile, CompactLogits, CompactWriter, SUFFIX as COMPACT_SUFFIX};
use layercheck_suite::atomic::{move_new_files, remove_stale_temporaries, temp_builder, AtomicWriteError};
use crate::formats::seed_csv::{seed_csv_path, write_layer_csvs, SeedMetric};
use crate::formats::compact::CompactError;
use crate::formats::seed_csv::SeedCsvError;
use crate::inputs::{read_prompts, CountedPrompts, InputError, TokenBatch, Tokenizer};
use crate::metrics::logits::LogitsError;
use crate::metrics::MetricsError;
use crate::model::ModelError;
use crate::sharegpt::ShareGptError;
use crate::model::{AttentionMask, DecoderModel};
use crate::run::{self, RunSpec};
use crate::progress::Progress;
use crate::sharegpt::ShareGptPool;
use crate::target::Target;

/// The output format of metric files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    /// Two CSV files per layer, exactly as the seed writes them.
    SeedCsv,
    /// One `layercheck-compact/2` file per case (per batch of prompts).
    Compact,
}

/// Where a case's prompts come from.
#[derive(Debug, Clone)]
pub enum InputSource {
    /// ShareGPT JSON, sampled as the seed samples it.
    ShareGpt(PathBuf),
    /// Prompts (one per line or a JSON list): batch k takes the k-th run of B prompts that fit S.
    Prompts(PathBuf),
    /// Token ids as given (their B and S must be the case's).
    Ids(PathBuf),
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct MetricsRunOptions {
    pub model_path: PathBuf,
    /// The model id of file names (`/` becomes `--`).
    pub model_id: String,
    pub mode: Mode,
    pub batch_sizes: Vec<usize>,
    pub seq_lengths: Vec<usize>,
    pub max_new_tokens: Vec<usize>,
    pub output_path: PathBuf,
    pub format: MetricsFormat,
    pub reference: Target,
    pub target: Target,
    pub inputs: InputSource,
    /// Batches of prompts per case (compact format; prompts input): more observations per shape.
    pub prompt_batches: usize,
}

/// Why metric generation failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsRunError {
    #[error("--prompt-batches above 1 needs --format compact and --prompts (the seed's CSV names hold one batch per case)\n(hint: add --format compact --prompts FILE, or drop --prompt-batches)")]
    PromptBatchesNeedCompact,
    /// The prompts, the token ids or the tokenizer.
    #[error(transparent)]
    Inputs(#[from] InputError),
    #[error(transparent)]
    ShareGpt(#[from] ShareGptError),
    #[error("{0}")]
    Rows(String),
    #[error("{} holds {found_b} x {found_s} ids but the case is batch size {b}, sequence length {s}\n(hint: pass --batch_sizes {found_b} --seq_lengths {found_s})", path.display())]
    IdsShape { path: PathBuf, found_b: usize, found_s: usize, b: usize, s: usize },
    #[error("{}: {fitting} prompt(s) fit in {s} tokens; batch {k} of size {b} needs {}\n(hint: add prompts, lower --prompt-batches or raise --seq_lengths)", path.display(), (k + 1) * b)]
    TooFewPrompts { path: PathBuf, fitting: usize, s: usize, k: usize, b: usize },
    /// Loading or running the reference or the target.
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{}: {source}", path.display())]
    Folder { path: PathBuf, #[source] source: std::io::Error },
    #[error("record {name}: the target did not record it (the reference did)")]
    MissingRecord { name: String },
    #[error("record {name}: {source}")]
    Metrics { name: String, #[source] source: MetricsError },
    #[error("logits: {0}")]
    Logits(#[from] LogitsError),
    #[error(transparent)]
    Compact(#[from] CompactError),
    #[error(transparent)]
    SeedCsv(#[from] SeedCsvError),
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

/// What `generate` produced.
pub struct Generated {
    /// Every metric file written.
    pub files: Vec<PathBuf>,
    /// Per case (and prompt batch): its name (the file-name prefix, tagged for batches after the
    /// first) and its per-layer summaries, whatever the file format, for reports.
    pub cases: Vec<(String, CompactFile)>,
}

/// Runs every case of the product batch sizes x seq lengths x new tokens.
pub fn generate(opts: &MetricsRunOptions, progress: &dyn Progress) -> Result<Generated, MetricsRunError> {
    if opts.prompt_batches > 1 && (opts.format == MetricsFormat::SeedCsv || !matches!(opts.inputs, InputSource::Prompts(_))) {
        return Err(MetricsRunError::PromptBatchesNeedCompact);
    }
    let tokenizer = Tokenizer::load(&opts.model_path)?;
    let reference = DecoderModel::load(&opts.model_path, opts.reference)?;
    // The checkpoint is read once when it can be: the target's weights are the reference's
    // converted, exactly what reading them again as the target's dtype gives.
    let target = match reference.converted(opts.target)? {
        Some(target) => target,
        None => DecoderModel::load(&opts.model_path, opts.target)?,
    };
    std::fs::create_dir_all(&opts.output_path).map_err(|source| MetricsRunError::Folder { path: opts.output_path.clone(), source })?;
    let mut cases = Vec::new();
    for &b in &opts.batch_sizes {
        for &s in &opts.seq_lengths {
            for &t in &opts.max_new_tokens {
                for k in 0..opts.prompt_batches.max(1) {
                    cases.push((b, s, t, k));
                }
            }
        }
    }
    let inputs = LoadedInputs::load(&opts.inputs, &tokenizer)?;
    progress.start(cases.len() as u64);
    let mut generated = Generated { files: Vec::new(), cases: Vec::new() };
    for (b, s, t, k) in cases {
        let batch = inputs.batch(&tokenizer, b, s, k)?;
        let spec = RunSpec { mode: opts.mode, max_new_tokens: t, mask: AttentionMask::AttendPads };
        let ref_capture = run::capture(&reference, &opts.model_path, &batch, &spec, Recorder::all())?;
        let forced = ref_capture.tensors.get("output_ids").map(|ids| ids.f_narrow(1, s as i64, t as i64)).transpose().map_err(ModelError::from)?;
        let mut recorder = Recorder::all();
        let extra = run::execute(&target, &batch, &spec, forced.as_ref(), &mut recorder)?;
        let target_logits: Vec<(String, Tensor)> = extra.into_iter().filter(|(name, _)| name == "logits").collect();
        let target_capture = Capture::from_records(&recorder.records, target_logits, Default::default());
        let logits = case_logits(opts.mode, &ref_capture, &target_capture, &batch.to_tensor())?;
        let case = SeedCase::new(&opts.model_id, t as u64, b as u64, s as u64);
        let (files, summaries) = write_case(opts, &case, k, &ref_capture, &target_capture, logits)?;
        generated.files.extend(files);
        generated.cases.push(summaries);
        progress.step(&case.prefix());
    }
    progress.finish();
    Ok(generated)
}

/// The run's inputs, read and tokenised once for all its cases.
enum LoadedInputs<'a> {
    ShareGpt(ShareGptPool),
    /// The prompts file and its prompts with their token counts.
    Prompts(&'a Path, CountedPrompts),
    Ids(&'a Path),
}

impl<'a> LoadedInputs<'a> {
    fn load(source: &'a InputSource, tokenizer: &Tokenizer) -> Result<Self, MetricsRunError> {
        Ok(match source {
            InputSource::ShareGpt(path) => LoadedInputs::ShareGpt(ShareGptPool::load(path, tokenizer.inner())?),
            InputSource::Prompts(path) => {
                let prompts = read_prompts(path)?;
                LoadedInputs::Prompts(path, CountedPrompts::count(prompts, tokenizer)?)
            }
            InputSource::Ids(path) => LoadedInputs::Ids(path),
        })
    }

    /// The inputs of batch `k` of a case.
    fn batch(&self, tokenizer: &Tokenizer, b: usize, s: usize, k: usize) -> Result<TokenBatch, MetricsRunError> {
        match self {
            LoadedInputs::Ids(path) => {
                let batch = TokenBatch::read_json(path)?;
                if batch.batch_size() != b || batch.seq_len() != s {
                    return Err(MetricsRunError::IdsShape { path: path.to_path_buf(), found_b: batch.batch_size(), found_s: batch.seq_len(), b, s });
                }
                Ok(batch)
            }
            LoadedInputs::ShareGpt(pool) => TokenBatch::from_rows(pool.batch(b, s)?.ids).map_err(MetricsRunError::Rows),
            LoadedInputs::Prompts(path, prompts) => {
                let chosen = prompts.batch(b, s, k).map_err(|fitting| MetricsRunError::TooFewPrompts { path: path.to_path_buf(), fitting, s, k, b })?;
                Ok(TokenBatch::from_prompts(&chosen, tokenizer, Some(s), path)?)
            }
        }
    }
}

/// The case's per-token logits metrics (`crate::metrics::logits`) on the top
/// [`DEFAULT_TOP_K`] logits: model-forward from both sides' `logits`, generate from their `model`
/// records.
fn case_logits(mode: Mode, reference: &Capture, target: &Capture, ids: &Tensor) -> Result<CompactLogits, MetricsRunError> {
    let side = |c: &Capture| -> Vec<Tensor> {
        match mode {
            Mode::ModelForward => c.tensors.get("logits").map(|t| t.shallow_clone()).into_iter().collect(),
            Mode::Generate => c.keys.iter().filter(|n| parse_record_name(n).is_some_and(|(k, _)| k == ModuleKey::Model)).filter_map(|n| c.tensors.get(n).map(|t| t.shallow_clone())).collect(),
        }
    };
    let (r, t) = (side(reference), side(target));
    let tokens = crate::metrics::logits::case_tokens(mode, &r.iter().collect::<Vec<_>>(), &t.iter().collect::<Vec<_>>(), ids, DEFAULT_TOP_K)?;
    Ok(CompactLogits { top_k: DEFAULT_TOP_K as u64, tokens })
}

/// Writes one case's metric files; returns them and the case's name and summaries.
fn write_case(opts: &MetricsRunOptions, case: &SeedCase, k: usize, reference: &Capture, target: &Capture, logits: CompactLogits) -> Result<(Vec<PathBuf>, (String, CompactFile)), MetricsRunError> {
    let mut compact = CompactWriter::new(case.clone())
        .with_metadata("mode", &opts.mode.to_string())
        .and_then(|w| w.with_metadata("reference", &opts.reference.to_string()))
        .and_then(|w| w.with_metadata("target", &opts.target.to_string()))
        .and_then(|w| w.with_metadata("layercheck_version", env!("CARGO_PKG_VERSION")))
        ?;
    compact.set_logits(logits);
    // Seed CSV files go to a temporary folder first and are moved into place together once all
    // are written, so a failure or a kill never leaves part of a case (which would block a rerun
    // and be read by `thresholds` as if complete). A killed run's folder is removed by the next
    // write into `output_path` (see `layercheck_suite::atomic`).
    let staging = match opts.format {
        MetricsFormat::SeedCsv => {
            remove_stale_temporaries(&opts.output_path);
            Some(temp_builder().tempdir_in(&opts.output_path).map_err(|source| MetricsRunError::Folder { path: opts.output_path.clone(), source })?)
        }
        MetricsFormat::Compact => None,
    };
    let mut staged = Vec::new();
    for name in &reference.keys {
        let r: &Tensor = &reference.tensors[name];
        let t = target.tensors.get(name).ok_or_else(|| MetricsRunError::MissingRecord { name: name.clone() })?;
        let comparison = crate::metrics::compare(r, t).map_err(|source| MetricsRunError::Metrics { name: name.clone(), source })?;
        if let Some(dir) = &staging {
            // Fail early, before the work, on a file a previous run left.
            for metric in [SeedMetric::AbsDiff, SeedMetric::CosSim] {
                let final_path = seed_csv_path(&opts.output_path, case, name, metric);
                if final_path.exists() {
                    return Err(AtomicWriteError::Exists { path: final_path }.into());
                }
            }
            staged.extend(write_layer_csvs(dir.path(), case, name, &r.size(), &t.size(), &comparison)?);
        }
        // The summaries are kept in either format: they feed the case's report.
        compact.push(name, &r.size(), &t.size(), &comparison)?;
    }
    let mut written = Vec::new();
    if let Some(dir) = &staging {
        let names: Vec<String> = staged.iter().map(|p| crate::formats::metric_files::file_name(p)).collect();
        written = move_new_files(dir.path(), &opts.output_path, &names)?;
    }
    // Further prompt batches of the same case: same case metadata, their own tagged file.
    let tag = (k > 0).then(|| format!("prompts-{k}"));
    if opts.format == MetricsFormat::Compact {
        written.push(compact.write_tagged(&opts.output_path, tag.as_deref())?);
    }
    let name = compact_file_name_tagged(case, tag.as_deref())?.trim_end_matches(COMPACT_SUFFIX).to_string();
    Ok((written, (name, compact.into_file())))
}

/// The model id of `--model_path`, as the seed takes it: the whole path as given (its file names
/// then replace every `/` by `--`: `models/granite` gives `models--granite_max-new-tokens-...`).
pub fn model_id_of(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_id_is_the_whole_path_as_the_seed_takes_it() {
        let prefix = |p: &str| SeedCase::new(&model_id_of(Path::new(p)), 8, 1, 64).prefix();
        assert_eq!(prefix("models/granite"), "models--granite_max-new-tokens-8_batch-size-1_seq-length-64_dtype-float16");
        assert_eq!(prefix("/data/hf/granite-3.3"), "--data--hf--granite-3.3_max-new-tokens-8_batch-size-1_seq-length-64_dtype-float16");
        assert_eq!(prefix("tiny-granite"), "tiny-granite_max-new-tokens-8_batch-size-1_seq-length-64_dtype-float16");
    }
}
