//! Computes one case: the target's run compared, layer by layer, with the case's golden
//! reference and thresholds. The result is plain data ([`CaseOutcome`]), shared by every test of
//! the case.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tch::Tensor;

use layercheck_suite::file_lock::{lock_path, FileLock};
use layercheck_suite::logits::{LogitsOutcome, TokenLogits, DEFAULT_FAILURE_RATE, DEFAULT_TOP_K};
use layercheck_suite::matrix::{Matrix, ModelEntry, ReferenceKind, TargetSpec};
use layercheck_suite::model_folder::num_hidden_layers;
use layercheck_suite::outcome::{CaseOutcome, LayerOutcome};
use layercheck_suite::test_name::{CaseId, Feed};
use layercheck_suite::update::{regenerate_command, run_id, UpdateMode};

use super::attribution::attribute;
use super::golden::{GoldenStore, Provenance};
use super::judge::{Judge, JudgingListener};
use super::setup_error::SetupError;
use super::target_listener::{Fault, GoldenInputs, ListenerError, TargetListener};
use crate::capture::{parse_record_name, Capture, Mode, RecordError, RecordSource, Recorder};
use crate::capture_reader::CaptureReader;
use crate::hooks::ModuleKey;
use crate::inputs::{read_prompts, CountedPrompts, TokenBatch, Tokenizer};
use crate::metrics::logits::{case_tokens, LogitsError};
use crate::model::{weights_sha256, AttentionMask, DecoderModel};
use crate::run::{self, RunSpec};
use crate::runner::check::check_capture;
use crate::runner::command::CommandRunner;
use crate::runner::reference::make_reference;
use crate::runner::request::Request;
use crate::runner::{capture_path, forced_ids, reference_request, request_for};
use crate::target::Target;
use crate::thresholds::{bounds_for, logits_bounds_for, ThresholdsFile};

/// Computes `case` (stopping the target's forward after `stop_after` when given).
pub fn evaluate(matrix: &Matrix, case: &CaseId, stop_after: Option<ModuleKey>, update: UpdateMode) -> CaseOutcome {
    let (mut notes, mut attribution_unavailable, mut logits) = (Vec::new(), None, None);
    match evaluate_inner(matrix, case, stop_after, update, &mut notes, &mut attribution_unavailable, &mut logits) {
        Ok(layers) => CaseOutcome { case: case.to_string(), setup_error: None, layers, notes, attribution_unavailable, logits },
        Err(e) => CaseOutcome { case: case.to_string(), setup_error: Some(e.to_string()), layers: Vec::new(), notes, attribution_unavailable, logits: None },
    }
}

/// The first `batch_size` prompts of the model's prompt file that fit `seq_len` tokens,
/// left-padded with id 0 to `seq_len`.
pub fn case_batch(model_dir: &Path, prompts_file: &Path, batch_size: usize, seq_len: usize) -> Result<TokenBatch, SetupError> {
    let tokenizer = Tokenizer::load(model_dir)?;
    let counted = CountedPrompts::count(read_prompts(prompts_file)?, &tokenizer)?;
    let chosen = counted
        .batch(batch_size, seq_len, 0)
        .map_err(|fitting| SetupError::TooFewPrompts { file: prompts_file.to_path_buf(), fitting, seq_len, batch_size })?;
    Ok(TokenBatch::from_prompts(&chosen, &tokenizer, Some(seq_len), prompts_file)?)
}

fn evaluate_inner(
    matrix: &Matrix,
    case: &CaseId,
    stop_after: Option<ModuleKey>,
    update: UpdateMode,
    notes: &mut Vec<String>,
    attribution_unavailable: &mut Option<String>,
    logits: &mut Option<LogitsOutcome>,
) -> Result<Vec<LayerOutcome>, SetupError> {
    let setup = CaseSetup::new(matrix, case)?;
    // Thresholds before any model run, so that a missing or broken file costs none.
    let thresholds_path = matrix.resolve(&setup.entry.thresholds);
    let thresholds = read_thresholds(&thresholds_path, &setup.model_dir, case)?;
    let reference = open_reference(&setup, case, update, notes)?;
    let golden = reference.source.as_ref();
    let (bounds, note) = bounds_for(&thresholds, &thresholds_path.display().to_string(), case.batch_size as u64, case.seq_len as u64);
    notes.push(note);
    // The target's run of `case` (the case itself, or its isolated twin for attribution), judged
    // record by record as it is produced.
    let run_for = |case: &CaseId, notes: &mut Vec<String>| {
        let judge = Judge::new(golden, &bounds, &matrix.margins, &reference.path, &setup.fix);
        target_run(&setup, case, golden, &reference.path, judge, stop_after, notes)
    };
    let run = run_for(case, notes)?;
    *logits = compare_logits(case, golden, &run, &setup.ids, &thresholds, &thresholds_path, stop_after.is_some());
    let mut layers = run.layers;
    let rerun = |iso: &CaseId| run_for(iso, &mut Vec::new()).map(|r| r.layers);
    *attribution_unavailable = attribute(case, matrix.target(case), golden, &mut layers, rerun, &setup.fix);
    Ok(layers)
}

/// What every run of a case shares: its model, inputs and run settings, where its golden file
/// lives and the command that regenerates it.
struct CaseSetup<'a> {
    matrix: &'a Matrix,
    entry: &'a ModelEntry,
    model_dir: PathBuf,
    batch: TokenBatch,
    ids: Tensor,
    spec: RunSpec,
    store: GoldenStore,
    fix: String,
}

impl<'a> CaseSetup<'a> {
    fn new(matrix: &'a Matrix, case: &CaseId) -> Result<Self, SetupError> {
        let entry: &ModelEntry = matrix.model(case);
        let model_dir = matrix.resolve(&entry.path);
        if !model_dir.join("config.json").exists() {
            return Err(SetupError::NoConfig { dir: model_dir, model: case.model.clone() });
        }
        let batch = case_batch(&model_dir, &matrix.resolve(&entry.prompts), case.batch_size, case.seq_len)?;
        let ids = batch.to_tensor();
        let spec = RunSpec { mode: case.mode, max_new_tokens: case.max_new_tokens.unwrap_or(0), mask: AttentionMask::AttendPads };
        let store = GoldenStore::reviewed(matrix.golden_dir.clone(), matrix.manifest_dir.clone());
        Ok(CaseSetup { matrix, entry, model_dir, batch, ids, spec, store, fix: regenerate_command(case) })
    }

    /// What a golden file must have been made from (a live reference needs no hash of the
    /// weights, so this is computed only for golden files).
    fn provenance(&self) -> Result<Provenance, SetupError> {
        Ok(Provenance {
            config_sha256: run::config_sha256(&self.model_dir)?,
            weights_sha256: weights_sha256(&self.model_dir)?,
            input_ids_sha256: Provenance::ids_sha256(&self.ids),
        })
    }
}

/// A case's reference, read one record at a time, and the file a runner reads it from.
struct Reference {
    source: Box<dyn RecordSource>,
    path: PathBuf,
    /// A live reference's temporary folder (a command target in the isolated feed reads the
    /// reference from a file), removed with the computation.
    _live_folder: Option<tempfile::TempDir>,
}

/// The case's reference: its golden file (regenerated first in an update run), or a live
/// cpu-f32 run held in memory.
fn open_reference(setup: &CaseSetup, case: &CaseId, update: UpdateMode, notes: &mut Vec<String>) -> Result<Reference, SetupError> {
    let (matrix, store) = (setup.matrix, &setup.store);
    let golden = |source: Box<dyn RecordSource>| Reference { source, path: store.path(case), _live_folder: None };
    Ok(match (matrix.reference(case), update) {
        (ReferenceKind::Live, _) => {
            notes.push("reference: cpu-f32 run live in this computation (reference = \"live\"), no golden file".into());
            let live = live_reference(setup, case)?;
            match matrix.target(case) {
                TargetSpec::Command { .. } => {
                    let folder = tempfile::Builder::new().prefix("layercheck-live-").tempdir().map_err(SetupError::LiveFolder)?;
                    let path = folder.path().join("reference.safetensors");
                    live.write(&path).map_err(SetupError::LiveFile)?;
                    Reference { source: Box::new(live), path, _live_folder: Some(folder) }
                }
                _ => golden(Box::new(live)),
            }
        }
        (ReferenceKind::Golden, UpdateMode::Update) => {
            let produce = || builtin_reference(setup);
            golden(Box::new(regenerate_golden(store, case, &setup.provenance()?, produce)?))
        }
        (ReferenceKind::Command { argv, timeout_s }, UpdateMode::Update) => {
            let produce = || {
                let num_layers = num_hidden_layers(&setup.model_dir)?;
                let request = reference_request(case, &setup.model_dir, &setup.batch, num_layers, setup.entry.golden_inputs);
                let runner = CommandRunner { argv: argv.clone(), timeout: Duration::from_secs(*timeout_s), root: matrix.root.clone() };
                make_reference(&runner, &request).map_err(|source| SetupError::ReferenceCommand { model: case.model.clone(), source })
            };
            golden(Box::new(regenerate_golden(store, case, &setup.provenance()?, produce)?))
        }
        (ReferenceKind::Golden | ReferenceKind::Command { .. }, UpdateMode::Verify) => golden(Box::new(store.load(case, &setup.provenance()?, &setup.fix)?)),
    })
}

/// The target's run of `case`, each record judged by `judge` as it is produced (the builtin
/// target) or as it is read from the runner's capture.
fn target_run(setup: &CaseSetup, case: &CaseId, golden: &dyn RecordSource, golden_path: &Path, judge: Judge<'_>, stop_after: Option<ModuleKey>, notes: &mut Vec<String>) -> Result<TargetRun, SetupError> {
    let matrix = setup.matrix;
    let request = || request_for(case, &setup.model_dir, &setup.batch, setup.spec.mask, golden, golden_path).map_err(|source| SetupError::ForcedIds { source, fix: setup.fix.clone() });
    match matrix.target(case) {
        TargetSpec::Plain(t) => builtin_run(setup, case, golden, golden_path, judge, stop_after, *t, None),
        TargetSpec::Fault { base, module, amplitude } => {
            let fault = Fault { module: *module, amplitude: *amplitude };
            builtin_run(setup, case, golden, golden_path, judge, stop_after, *base, Some(fault))
        }
        TargetSpec::Command { argv, timeout_s } => {
            let request = request()?;
            let runner = CommandRunner { argv: argv.clone(), timeout: Duration::from_secs(*timeout_s), root: matrix.root.clone() };
            let capture = runner.run(&request).map_err(|source| SetupError::TargetCommand { target: case.target.clone(), source })?;
            check_capture(&capture, &request, &format!("the capture of target {}'s command", case.target))?;
            if case.feed == Feed::Cumulative {
                save_capture(&capture, case, notes)?;
            }
            external_run(capture, &request, judge)
        }
        TargetSpec::Captures { dir } => {
            if case.feed == Feed::Isolated {
                return Err(SetupError::CapturesIsolated { target: case.target.clone() });
            }
            let path = capture_path(dir, case);
            if !path.is_file() {
                return Err(SetupError::NoCapture { target: case.target.clone(), path });
            }
            let request = request()?;
            let capture = Capture::read(&path).map_err(SetupError::CaptureUnreadable)?;
            check_capture(&capture, &request, &path.display().to_string())?;
            external_run(capture, &request, judge)
        }
    }
}

/// What a target run gave: its judged layers, its `model` records (generate mode's logits, one
/// per step) and, in model-forward mode, its final logits (absent when the forward was stopped
/// early).
struct TargetRun {
    layers: Vec<LayerOutcome>,
    model_records: Vec<Tensor>,
    logits: Option<Tensor>,
}

/// The case's logits compared token by token (the `::logits` test), or `None` when the forward
/// was stopped before them. Model-forward: the final `logits`; generate: the `model` records,
/// one per step.
fn compare_logits(case: &CaseId, golden: &dyn RecordSource, run: &TargetRun, ids: &Tensor, thresholds: &ThresholdsFile, thresholds_path: &Path, stopped: bool) -> Option<LogitsOutcome> {
    let (bounds, top_k) = logits_bounds_for(thresholds, &thresholds_path.display().to_string(), DEFAULT_FAILURE_RATE);
    let top_k = top_k.map_or(DEFAULT_TOP_K, |k| k as usize);
    if stopped {
        return None;
    }
    let steps = case.mode == Mode::Generate;
    let failed = |error: &str| Some(LogitsOutcome { top_k, steps, tokens: Vec::new(), bounds: bounds.clone(), error: Some(error.to_string()) });
    let (reference, target): (Vec<Tensor>, Vec<&Tensor>) = match case.mode {
        Mode::ModelForward => {
            let Some(target) = run.logits.as_ref() else {
                return failed("the target's run has no logits (a capture must hold the tensor `logits` in model-forward mode, see src/capture.rs)");
            };
            let Some((_, shape)) = golden.info("logits") else {
                return failed("the golden file has no logits (hint: regenerate it, see README \"Golden files\")");
            };
            let (tokens, error) = match forward_tokens(golden, &shape, target, ids, top_k) {
                Ok(tokens) => (tokens, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
            return Some(LogitsOutcome { top_k, steps, tokens, bounds, error });
        }
        Mode::Generate => {
            let is_model = |name: &str| parse_record_name(name).is_some_and(|(k, _)| k == ModuleKey::Model);
            let mut reference = Vec::new();
            // Each call's last position only (`[B, 1, V]`), read row by row: the prefill's logits
            // of every position are never read.
            for name in golden.keys().iter().filter(|n| is_model(n)) {
                match last_positions(golden, name) {
                    Ok(r) => reference.push(r),
                    Err(e) => return failed(&e.to_string()),
                }
            }
            (reference, run.model_records.iter().collect())
        }
    };
    let reference: Vec<&Tensor> = reference.iter().collect();
    let (tokens, error) = match case_tokens(case.mode, &reference, &target, ids, top_k) {
        Ok(tokens) => (tokens, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Some(LogitsOutcome { top_k, steps, tokens, bounds, error })
}

/// The last position of each prompt of the `[B, s, V]` record `name`, as `[B, 1, V]`.
fn last_positions(golden: &dyn RecordSource, name: &str) -> Result<Tensor, LogitsError> {
    let unreadable = |source| LogitsError::Unreadable { name: name.to_string(), source };
    let (_, shape) = golden.info(name).ok_or_else(|| unreadable(RecordError::Missing(name.to_string())))?;
    let &[prompts, positions, vocabulary] = shape.as_slice() else {
        return Err(LogitsError::RecordShape { name: name.to_string(), shape });
    };
    if positions < 1 {
        return Err(LogitsError::RecordShape { name: name.to_string(), shape });
    }
    let rows = (0..prompts).map(|b| golden.elements(name, (b * positions + positions - 1) * vocabulary, vocabulary)).collect::<Result<Vec<_>, _>>().map_err(unreadable)?;
    Ok(Tensor::f_stack(&rows, 0).and_then(|t| t.f_view([prompts, 1, vocabulary]))?)
}

/// The model-forward logits tokens, one prompt at a time: the reference's `[S, V]` logits of a
/// prompt are read from the golden file only when that prompt is compared (a batch of 4 at 256
/// tokens holds 200 MB of float32 logits).
fn forward_tokens(golden: &dyn RecordSource, shape: &[i64], target: &Tensor, ids: &Tensor, top_k: usize) -> Result<Vec<TokenLogits>, LogitsError> {
    if shape.len() != 3 || shape != target.size().as_slice() {
        return Err(LogitsError::Shape { reference: shape.to_vec(), target: target.size() });
    }
    let (prompts, positions, vocabulary) = (shape[0], shape[1], shape[2]);
    let mut tokens = Vec::new();
    for b in 0..prompts {
        let per_prompt = positions * vocabulary;
        let reference = golden.elements("logits", b * per_prompt, per_prompt).map_err(|source| LogitsError::Unreadable { name: "logits".into(), source })?;
        let reference = reference.f_reshape([1, positions, vocabulary])?;
        let prompt = case_tokens(Mode::ModelForward, &[&reference], &[&target.f_narrow(0, b, 1)?], &ids.f_narrow(0, b, 1)?, top_k)?;
        tokens.extend(prompt.into_iter().map(|t| TokenLogits { prompt: b as usize, ..t }));
    }
    Ok(tokens)
}

/// Runs the builtin target (tch decoders in this process), with the case's feed and fault, each
/// record judged as it is produced.
#[allow(clippy::too_many_arguments)]
fn builtin_run(setup: &CaseSetup, case: &CaseId, golden: &dyn RecordSource, golden_path: &Path, judge: Judge<'_>, stop_after: Option<ModuleKey>, base: Target, fault: Option<Fault>) -> Result<TargetRun, SetupError> {
    let fix = &setup.fix;
    let golden_inputs = match case.feed {
        Feed::Cumulative => None,
        Feed::Isolated => {
            let none = || SetupError::NoGoldenInputs { path: golden_path.to_path_buf(), model: case.model.clone(), fix: fix.clone() };
            Some(GoldenInputs::of(golden).ok_or_else(none)?)
        }
    };
    let model = DecoderModel::load(&setup.model_dir, base)?;
    let keys = ModuleKey::forward_order(model.config.num_layers, case.mode == Mode::Generate);
    check_fault(setup.matrix, case, fault.as_ref(), &keys)?;
    let recorder = match stop_after {
        Some(last) => Recorder::only(keys.clone(), Some(last)),
        None => Recorder::all(),
    };
    let forced = match case.mode {
        Mode::ModelForward => None,
        Mode::Generate => Some(forced_ids(case, golden, golden_path).map_err(|source| SetupError::ForcedIds { source, fix: fix.clone() })?),
    };
    let mut listener = JudgingListener { target: TargetListener::new(recorder, golden_inputs, fault), judge };
    let extra = run::execute(&model, &setup.batch, &setup.spec, forced.as_ref(), &mut listener)?;
    match listener.target.take_input_error() {
        Some(e @ ListenerError::Fault { .. }) => return Err(SetupError::Fault(e)),
        Some(source) => return Err(SetupError::Feed { source, fix: fix.clone() }),
        None => {}
    }
    let logits = extra.into_iter().find(|(name, _)| name == "logits").map(|(_, t)| t);
    let (layers, model_records) = listener.judge.finish();
    Ok(TargetRun { layers, model_records, logits })
}

/// With `LAYERCHECK_SAVE_CAPTURES=DIR`, keeps a command target's checked capture in `DIR` in the
/// golden layout (what a `captures` target reads): record a device's runs once, replay them where
/// there is no device.
fn save_capture(capture: &Capture, case: &CaseId, notes: &mut Vec<String>) -> Result<(), SetupError> {
    let Some(dir) = std::env::var_os(SAVE_CAPTURES_VAR).filter(|d| !d.is_empty()) else { return Ok(()) };
    let path = capture_path(Path::new(&dir), case);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| SetupError::SaveCapturesFolder { dir: parent.to_path_buf(), source })?;
    }
    capture.write(&path).map_err(SetupError::SaveCapture)?;
    notes.push(format!("capture saved to {}", path.display()));
    eprintln!("layercheck: saved the capture of {case} to {}", path.display());
    Ok(())
}

/// The variable that names where command targets' captures are kept.
pub const SAVE_CAPTURES_VAR: &str = "LAYERCHECK_SAVE_CAPTURES";

/// An external runner's capture (checked against `request` already) judged record by record, in
/// the reference's order, each record dropped once judged; and its final logits (model-forward).
fn external_run(mut capture: Capture, request: &Request, mut judge: Judge<'_>) -> Result<TargetRun, SetupError> {
    let logits = capture.tensors.remove("logits");
    for name in &request.keys {
        let Some((key, _)) = parse_record_name(name) else {
            return Err(SetupError::NotAModuleKey(name.clone()));
        };
        let tensor = capture.tensors.remove(name).ok_or_else(|| format!("the capture has no record {name}"));
        judge.push(name, key, tensor);
    }
    let (layers, model_records) = judge.finish();
    Ok(TargetRun { layers, model_records, logits })
}

/// The cpu-f32 reference of a case run here and now (`reference = "live"`), with every module's
/// input when the isolated feed or the model's `golden_inputs` asks for them.
fn live_reference(setup: &CaseSetup, case: &CaseId) -> Result<Capture, SetupError> {
    let model = DecoderModel::load(&setup.model_dir, Target::REFERENCE)?;
    let recorder = if setup.entry.golden_inputs || case.feed == Feed::Isolated { Recorder::all().with_inputs() } else { Recorder::all() };
    Ok(run::capture(&model, &setup.model_dir, &setup.batch, &setup.spec, recorder)?)
}

/// The cpu-f32 reference of a case from layercheck's own decoder, for its golden file.
fn builtin_reference(setup: &CaseSetup) -> Result<Capture, SetupError> {
    let model = DecoderModel::load(&setup.model_dir, Target::REFERENCE)?;
    let recorder = if setup.entry.golden_inputs { Recorder::all().with_inputs() } else { Recorder::all() };
    Ok(run::capture(&model, &setup.model_dir, &setup.batch, &setup.spec, recorder)?)
}

/// Makes the reference (`produce`: the builtin decoder, or the model's reference command) and
/// writes the golden file, once per update run (several cases share a golden file, and the
/// processes of a run compute them in parallel): under a lock, beside which a stamp (outside the
/// repository) names the run that last wrote the file.
fn regenerate_golden(store: &GoldenStore, case: &CaseId, provenance: &Provenance, produce: impl FnOnce() -> Result<Capture, SetupError>) -> Result<CaptureReader, SetupError> {
    let path = store.path(case);
    let lock = lock_path(&path);
    let _lock = FileLock::acquire(&lock)?;
    let stamp = lock.with_extension("run");
    if std::fs::read_to_string(&stamp).is_ok_and(|r| r == run_id()) {
        if let Ok(capture) = store.unreviewed().load(case, provenance, "") {
            return Ok(capture);
        }
    }
    let capture = produce()?;
    store.write(case, capture, provenance)?;
    let written = store.unreviewed().load(case, provenance, "")?;
    // Without the stamp, the next case of this run regenerates the file again: slower, not wrong.
    let _ = std::fs::write(&stamp, run_id());
    eprintln!("layercheck: wrote golden file {}", path.display());
    Ok(written)
}

/// The case's thresholds file, read and checked: values the verdict can apply, and of this
/// model (its `model_id` and layer count).
fn read_thresholds(path: &Path, model_dir: &Path, case: &CaseId) -> Result<ThresholdsFile, SetupError> {
    let file = ThresholdsFile::read(path).map_err(|source| SetupError::ThresholdsUnreadable { source })?;
    file.validate(path)?;
    let num_layers = num_hidden_layers(model_dir)?;
    let folder = model_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    file.check_model(path, &[folder.as_str(), case.model.as_str()], num_layers)?;
    Ok(file)
}

/// A fault on a module this case never records would perturb nothing, and every test would
/// pass: the check that proves the suite catches faults would test nothing.
fn check_fault(matrix: &Matrix, case: &CaseId, fault: Option<&Fault>, keys: &[ModuleKey]) -> Result<(), SetupError> {
    match fault {
        Some(f) if !keys.contains(&f.module) => Err(SetupError::FaultOnAbsentModule {
            target: case.target.clone(),
            module: f.module,
            mode: case.mode.to_string(),
            layers: keys.iter().filter_map(|k| match k { ModuleKey::Layer(i, _) => Some(*i + 1), _ => None }).max().unwrap_or(0),
            example: keys.get(keys.len() / 2).map_or("model.head".to_string(), |k| k.to_string()),
            matrix_file: std::env::var("LAYERCHECK_MATRIX").unwrap_or_else(|_| matrix.root.join(layercheck_suite::matrix::MATRIX_FILE).display().to_string()),
        }),
        _ => Ok(()),
    }
}
