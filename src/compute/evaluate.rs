//! Computes one case: the target's run compared, layer by layer, with the case's golden
//! reference and thresholds. The result is plain data ([`CaseOutcome`]), shared by every test of
//! the case.

use std::path::Path;
use std::time::Duration;

use tch::Tensor;

use layercheck_suite::file_lock::{lock_path, FileLock};
use super::golden::{GoldenStore, Provenance};
use super::judge::{Judge, JudgingListener};
use layercheck_suite::matrix::{Matrix, ModelEntry, ReferenceKind, TargetSpec};
use layercheck_suite::outcome::{CaseOutcome, LayerOutcome};
use super::target_listener::{Fault, GoldenInputs, TargetListener};
use layercheck_suite::test_name::{CaseId, Feed};
use layercheck_suite::update::{regenerate_command, run_id, UpdateMode};
use super::attribution::attribute;
use crate::capture::{parse_record_name, Capture, Mode, RecordSource, Recorder};
use crate::capture_reader::CaptureReader;
use crate::hooks::ModuleKey;
use crate::inputs::{read_prompts, CountedPrompts, TokenBatch, Tokenizer};
use crate::model::{weights_sha256, AttentionMask, DecoderModel};
use crate::run::{self, RunSpec};
use crate::runner::check::check_capture;
use crate::runner::command::CommandRunner;
use crate::runner::request::Request;
use crate::runner::reference::make_reference;
use crate::runner::{capture_path, reference_request, request_for};
use layercheck_suite::model_folder::num_hidden_layers;
use crate::target::Target;
use crate::thresholds::{bounds_for, logits_bounds_for, ThresholdsFile};
use layercheck_suite::logits::{LogitsOutcome, DEFAULT_FAILURE_RATE, DEFAULT_TOP_K};

/// Why a case could not be computed; becomes [`CaseOutcome::setup_error`].
type SetupResult<T> = Result<T, String>;

/// Computes `case` (stopping the target's forward after `stop_after` when given).
pub fn evaluate(matrix: &Matrix, case: &CaseId, stop_after: Option<ModuleKey>, update: UpdateMode) -> CaseOutcome {
    let (mut notes, mut attribution_unavailable, mut logits) = (Vec::new(), None, None);
    match evaluate_inner(matrix, case, stop_after, update, &mut notes, &mut attribution_unavailable, &mut logits) {
        Ok(layers) => CaseOutcome { case: case.to_string(), setup_error: None, layers, notes, attribution_unavailable, logits },
        Err(e) => CaseOutcome { case: case.to_string(), setup_error: Some(e), layers: Vec::new(), notes, attribution_unavailable, logits: None },
    }
}

/// The first `batch_size` prompts of the model's prompt file that fit `seq_len` tokens,
/// left-padded with id 0 to `seq_len`.
pub fn case_batch(model_dir: &Path, prompts_file: &Path, batch_size: usize, seq_len: usize) -> SetupResult<TokenBatch> {
    let tokenizer = Tokenizer::load(model_dir).map_err(|e| e.to_string())?;
    let prompts = read_prompts(prompts_file).map_err(|e| e.to_string())?;
    let counted = CountedPrompts::count(prompts, &tokenizer).map_err(|e| e.to_string())?;
    let chosen = counted.batch(batch_size, seq_len, 0).map_err(|fitting| {
        format!("{}: only {fitting} prompt(s) fit in {seq_len} tokens, the case needs {batch_size}\n(hint: add shorter prompts or use a longer sequence length)", prompts_file.display())
    })?;
    TokenBatch::from_prompts(&chosen, &tokenizer, Some(seq_len), prompts_file).map_err(|e| e.to_string())
}

fn evaluate_inner(
    matrix: &Matrix,
    case: &CaseId,
    stop_after: Option<ModuleKey>,
    update: UpdateMode,
    notes: &mut Vec<String>,
    attribution_unavailable: &mut Option<String>,
    logits: &mut Option<LogitsOutcome>,
) -> SetupResult<Vec<LayerOutcome>> {
    let entry: &ModelEntry = matrix.model(case);
    let model_dir = matrix.resolve(&entry.path);
    if !model_dir.join("config.json").exists() {
        return Err(format!("model folder {} has no config.json\n(hint: the matrix entry [models.{}] points there; see README \"Supported models\")", model_dir.display(), case.model));
    }
    let batch = case_batch(&model_dir, &matrix.resolve(&entry.prompts), case.batch_size, case.seq_len)?;
    let ids = batch.to_tensor();
    let spec = RunSpec { mode: case.mode, max_new_tokens: case.max_new_tokens.unwrap_or(0), mask: AttentionMask::AttendPads };
    // What a golden file must have been made from (a live reference needs no hash of the weights).
    let provenance = || -> SetupResult<Provenance> {
        Ok(Provenance {
            config_sha256: run::config_sha256(&model_dir).map_err(|e| e.to_string())?,
            weights_sha256: weights_sha256(&model_dir).map_err(|e| e.to_string())?,
            input_ids_sha256: Provenance::ids_sha256(&ids),
        })
    };
    let store = GoldenStore::reviewed(matrix.golden_dir.clone(), matrix.manifest_dir.clone());
    let fix = regenerate_command(case);
    // Thresholds before any model run, so that a missing or broken file costs none.
    let thresholds_path = matrix.resolve(&entry.thresholds);
    let thresholds = read_thresholds(&thresholds_path, &model_dir, case)?;
    // The reference: a golden file, opened and read one record at a time, or a live run held in
    // memory (which a command target in the isolated feed reads from a temporary file, removed
    // with the computation).
    let mut live_file = None;
    let golden: Box<dyn RecordSource> = match (matrix.reference(case), update) {
        (ReferenceKind::Live, _) => {
            notes.push("reference: cpu-f32 run live in this computation (reference = \"live\"), no golden file".into());
            let live = live_reference(case, &model_dir, entry, &batch, &spec)?;
            if let TargetSpec::Command { .. } = matrix.target(case) {
                let dir = tempfile::Builder::new().prefix("layercheck-live-").tempdir().map_err(|e| format!("a temporary folder for the live reference: {e}"))?;
                let path = dir.path().join("reference.safetensors");
                live.write(&path).map_err(|e| e.to_string())?;
                live_file = Some((dir, path));
            }
            Box::new(live)
        }
        (ReferenceKind::Golden, UpdateMode::Update) => {
            let produce = || builtin_reference(&model_dir, entry, &batch, &spec);
            Box::new(regenerate_golden(&store, case, &provenance()?, produce)?)
        }
        (ReferenceKind::Command { argv, timeout_s }, UpdateMode::Update) => {
            let produce = || {
                let num_layers = num_hidden_layers(&model_dir).map_err(|e| e.to_string())?;
                let request = reference_request(case, &model_dir, &batch, num_layers, entry.golden_inputs);
                let runner = CommandRunner { argv: argv.clone(), timeout: Duration::from_secs(*timeout_s), root: matrix.root.clone() };
                make_reference(&runner, &request).map_err(|e| format!("model {}'s reference = {{ command }}: {e}", case.model))
            };
            Box::new(regenerate_golden(&store, case, &provenance()?, produce)?)
        }
        (ReferenceKind::Golden | ReferenceKind::Command { .. }, UpdateMode::Verify) => Box::new(store.load(case, &provenance()?, &fix).map_err(|e| e.to_string())?),
    };
    let golden = golden.as_ref();
    let golden_path = live_file.as_ref().map_or_else(|| store.path(case), |(_, p)| p.clone());

    let (bounds, note) = bounds_for(&thresholds, &thresholds_path.display().to_string(), case.batch_size as u64, case.seq_len as u64);
    notes.push(note);

    // The target's run of `case` (the case itself, or its isolated twin for attribution), judged
    // record by record as it is produced.
    let run_for = |case: &CaseId, notes: &mut Vec<String>| -> SetupResult<TargetRun> {
        let judge = Judge::new(golden, &bounds, &matrix.margins, &golden_path, &fix);
        Ok(match matrix.target(case) {
            TargetSpec::Plain(t) => builtin_run(matrix, case, &model_dir, &store, golden, judge, &batch, &spec, stop_after, *t, None, &fix)?,
            TargetSpec::Fault { base, module, amplitude } => {
                let fault = Fault { module: *module, amplitude: *amplitude };
                builtin_run(matrix, case, &model_dir, &store, golden, judge, &batch, &spec, stop_after, *base, Some(fault), &fix)?
            }
            TargetSpec::Command { argv, timeout_s } => {
                let request = request_for(case, &model_dir, &batch, spec.mask, golden, &golden_path)?;
                let runner = CommandRunner { argv: argv.clone(), timeout: Duration::from_secs(*timeout_s), root: matrix.root.clone() };
                let capture = runner.run(&request).map_err(|e| format!("target {}: {e}", case.target))?;
                check_capture(&capture, &request, &format!("the capture of target {}'s command", case.target)).map_err(|e| e.to_string())?;
                if case.feed == Feed::Cumulative {
                    save_capture(&capture, case, notes)?;
                }
                external_run(capture, &request, judge)?
            }
            TargetSpec::Captures { dir } => {
                if case.feed == Feed::Isolated {
                    return Err(format!("target {} is a folder of pre-recorded captures, one run per case: it cannot be fed golden inputs\n(hint: use the cumulative feed for it, or a command target that feeds inputs)", case.target));
                }
                let path = capture_path(dir, case);
                if !path.is_file() {
                    return Err(format!("target {}: no pre-recorded capture {} for this case\n(hint: record it on the device host, e.g. `python -m layercheck_fms --model-path ... --input-ids ... --out {}`, see README \"Testing your accelerator\")", case.target, path.display(), path.display()));
                }
                let request = request_for(case, &model_dir, &batch, spec.mask, golden, &golden_path)?;
                let capture = Capture::read(&path).map_err(|e| e.to_string())?;
                check_capture(&capture, &request, &path.display().to_string()).map_err(|e| e.to_string())?;
                external_run(capture, &request, judge)?
            }
        })
    };
    let run = run_for(case, notes)?;
    *logits = compare_logits(case, golden, &run, &ids, &thresholds, &thresholds_path, stop_after.is_some());
    let mut layers = run.layers;
    let rerun = |iso: &CaseId| run_for(iso, &mut Vec::new()).map(|r| r.layers);
    *attribution_unavailable = attribute(case, matrix.target(case), golden, &mut layers, rerun, &fix);
    Ok(layers)
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
                Err(e) => (Vec::new(), Some(e)),
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
                    Err(e) => return failed(&format!("the golden file's record {name} cannot be read: {e}")),
                }
            }
            (reference, run.model_records.iter().collect())
        }
    };
    let reference: Vec<&Tensor> = reference.iter().collect();
    let (tokens, error) = match crate::metrics::logits::case_tokens(case.mode, &reference, &target, ids, top_k) {
        Ok(tokens) => (tokens, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Some(LogitsOutcome { top_k, steps, tokens, bounds, error })
}

/// The last position of each prompt of the `[B, s, V]` record `name`, as `[B, 1, V]`.
fn last_positions(golden: &dyn RecordSource, name: &str) -> Result<Tensor, String> {
    let (_, shape) = golden.info(name).ok_or_else(|| format!("no record {name}"))?;
    let &[prompts, positions, vocabulary] = shape.as_slice() else {
        return Err(format!("record {name} has shape {shape:?}, not [batch, positions, vocabulary]"));
    };
    let rows = (0..prompts).map(|b| golden.elements(name, (b * positions + positions - 1) * vocabulary, vocabulary)).collect::<Result<Vec<_>, _>>()?;
    Tensor::f_stack(&rows, 0).and_then(|t| t.f_view([prompts, 1, vocabulary])).map_err(|e| e.to_string())
}

/// The model-forward logits tokens, one prompt at a time: the reference's `[S, V]` logits of a
/// prompt are read from the golden file only when that prompt is compared (a batch of 4 at 256
/// tokens holds 200 MB of float32 logits).
fn forward_tokens(golden: &dyn RecordSource, shape: &[i64], target: &Tensor, ids: &Tensor, top_k: usize) -> Result<Vec<layercheck_suite::logits::TokenLogits>, String> {
    if shape.len() != 3 || shape != target.size().as_slice() {
        return Err(crate::metrics::logits::LogitsError::Shape { reference: shape.to_vec(), target: target.size() }.to_string());
    }
    let (prompts, positions, vocabulary) = (shape[0], shape[1], shape[2]);
    let mut tokens = Vec::new();
    for b in 0..prompts {
        let per_prompt = positions * vocabulary;
        let reference = golden.elements("logits", b * per_prompt, per_prompt).and_then(|r| r.f_reshape([1, positions, vocabulary]).map_err(|e| e.to_string()))?;
        let narrow = |t: &Tensor| t.f_narrow(0, b, 1).map_err(|e| e.to_string());
        let prompt = crate::metrics::logits::case_tokens(Mode::ModelForward, &[&reference], &[&narrow(target)?], &narrow(ids)?, top_k).map_err(|e| e.to_string())?;
        tokens.extend(prompt.into_iter().map(|t| layercheck_suite::logits::TokenLogits { prompt: b as usize, ..t }));
    }
    Ok(tokens)
}

/// Runs the builtin target (tch decoders in this process), with the case's feed and fault, each
/// record judged as it is produced.
#[allow(clippy::too_many_arguments)]
fn builtin_run(
    matrix: &Matrix,
    case: &CaseId,
    model_dir: &Path,
    store: &GoldenStore,
    golden: &dyn RecordSource,
    judge: Judge<'_>,
    batch: &TokenBatch,
    spec: &RunSpec,
    stop_after: Option<ModuleKey>,
    base: Target,
    fault: Option<Fault>,
    fix: &str,
) -> SetupResult<TargetRun> {
    let golden_inputs = match case.feed {
        Feed::Cumulative => None,
        Feed::Isolated => Some(GoldenInputs::of(golden).ok_or_else(|| {
            format!(
                "isolated feeding needs module inputs in the golden file {}, and it has none\n(hint: set golden_inputs = true under [models.{}] in the matrix and run `{fix}`)",
                store.path(case).display(),
                case.model
            )
        })?),
    };
    let model = DecoderModel::load(model_dir, base).map_err(|e| e.to_string())?;
    let keys = ModuleKey::forward_order(model.config.num_layers, case.mode == Mode::Generate);
    check_fault(matrix, case, fault.as_ref(), &keys)?;
    let recorder = match stop_after {
        Some(last) => Recorder::only(keys.clone(), Some(last)),
        None => Recorder::all(),
    };
    let forced = match case.mode {
        Mode::ModelForward => None,
        Mode::Generate => {
            let all = golden.tensor("output_ids").map_err(|e| format!("golden file {}: {e}", store.path(case).display()))?;
            let all = all.ok_or_else(|| format!("golden file {} has no output_ids for generate mode\n(hint: `{fix}`)", store.path(case).display()))?;
            Some(all.narrow(1, case.seq_len as i64, spec.max_new_tokens as i64))
        }
    };
    let mut listener = JudgingListener { target: TargetListener::new(recorder, golden_inputs, fault), judge };
    let extra = run::execute(&model, batch, spec, forced.as_ref(), &mut listener).map_err(|e| e.to_string())?;
    if let Some(e) = listener.target.input_error() {
        return Err(format!("the isolated feed could not be fed: {e}\n(hint: `{fix}`)"));
    }
    let logits = extra.into_iter().find(|(name, _)| name == "logits").map(|(_, t)| t);
    let (layers, model_records) = listener.judge.finish();
    Ok(TargetRun { layers, model_records, logits })
}

/// With `LAYERCHECK_SAVE_CAPTURES=DIR`, keeps a command target's checked capture in `DIR` in the
/// golden layout (what a `captures` target reads): record a device's runs once, replay them where
/// there is no device.
fn save_capture(capture: &Capture, case: &CaseId, notes: &mut Vec<String>) -> SetupResult<()> {
    let Some(dir) = std::env::var_os(SAVE_CAPTURES_VAR).filter(|d| !d.is_empty()) else { return Ok(()) };
    let path = capture_path(Path::new(&dir), case);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{SAVE_CAPTURES_VAR}: cannot make {}: {e}", parent.display()))?;
    }
    capture.write(&path).map_err(|e| format!("{SAVE_CAPTURES_VAR}: {e}"))?;
    notes.push(format!("capture saved to {}", path.display()));
    eprintln!("layercheck: saved the capture of {case} to {}", path.display());
    Ok(())
}

/// The variable that names where command targets' captures are kept.
pub const SAVE_CAPTURES_VAR: &str = "LAYERCHECK_SAVE_CAPTURES";

/// An external runner's capture (checked against `request` already) judged record by record, in
/// the reference's order, each record dropped once judged; and its final logits (model-forward).
fn external_run(mut capture: Capture, request: &Request, mut judge: Judge<'_>) -> SetupResult<TargetRun> {
    let logits = capture.tensors.remove("logits");
    for name in &request.keys {
        let Some((key, _)) = parse_record_name(name) else {
            return Err(format!("the golden file lists a record {name} that is not a module key"));
        };
        let tensor = capture.tensors.remove(name).ok_or_else(|| format!("the capture has no record {name}"));
        judge.push(name, key, tensor);
    }
    let (layers, model_records) = judge.finish();
    Ok(TargetRun { layers, model_records, logits })
}

/// The cpu-f32 reference of a case run here and now (`reference = "live"`), with every module's
/// input when the isolated feed or the model's `golden_inputs` asks for them.
fn live_reference(case: &CaseId, model_dir: &Path, entry: &ModelEntry, batch: &TokenBatch, spec: &RunSpec) -> SetupResult<Capture> {
    let model = DecoderModel::load(model_dir, Target::REFERENCE).map_err(|e| e.to_string())?;
    let recorder = if entry.golden_inputs || case.feed == Feed::Isolated { Recorder::all().with_inputs() } else { Recorder::all() };
    run::capture(&model, model_dir, batch, spec, recorder).map_err(|e| e.to_string())
}

/// The cpu-f32 reference of a case from layercheck's own decoder, for its golden file.
fn builtin_reference(model_dir: &Path, entry: &ModelEntry, batch: &TokenBatch, spec: &RunSpec) -> SetupResult<Capture> {
    let model = DecoderModel::load(model_dir, Target::REFERENCE).map_err(|e| e.to_string())?;
    let recorder = if entry.golden_inputs { Recorder::all().with_inputs() } else { Recorder::all() };
    run::capture(&model, model_dir, batch, spec, recorder).map_err(|e| e.to_string())
}

/// Makes the reference (`produce`: the builtin decoder, or the model's reference command) and
/// writes the golden file, once per update run (several cases share a golden file, and the
/// processes of a run compute them in parallel): under a lock, beside which a stamp (outside the
/// repository) names the run that last wrote the file.
fn regenerate_golden(store: &GoldenStore, case: &CaseId, provenance: &Provenance, produce: impl FnOnce() -> SetupResult<Capture>) -> SetupResult<CaptureReader> {
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
    store.write(case, capture, provenance).map_err(|e| e.to_string())?;
    let written = store.unreviewed().load(case, provenance, "").map_err(|e| e.to_string())?;
    // Without the stamp, the next case of this run regenerates the file again: slower, not wrong.
    let _ = std::fs::write(&stamp, run_id());
    eprintln!("layercheck: wrote golden file {}", path.display());
    Ok(written)
}

/// The case's thresholds file, read and checked: values the verdict can apply, and of this
/// model (its `model_id` and layer count).
fn read_thresholds(path: &Path, model_dir: &Path, case: &CaseId) -> SetupResult<ThresholdsFile> {
    let hint = "\n(hint: derive thresholds with `layercheck generate` and `layercheck thresholds`, see README \"Thresholds\")";
    let file = ThresholdsFile::read(path).map_err(|e| format!("{e}{hint}"))?;
    file.validate(path).map_err(|e| e.to_string())?;
    let num_layers = num_hidden_layers(model_dir).map_err(|e| e.to_string())?;
    let folder = model_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    file.check_model(path, &[folder.as_str(), case.model.as_str()], num_layers).map_err(|e| e.to_string())?;
    Ok(file)
}

/// A fault on a module this case never records would perturb nothing, and every test would
/// pass: the check that proves the suite catches faults would test nothing.
fn check_fault(matrix: &Matrix, case: &CaseId, fault: Option<&Fault>, keys: &[ModuleKey]) -> SetupResult<()> {
    match fault {
        Some(f) if !keys.contains(&f.module) => Err(format!(
            "fault target {}: module {} does not exist in this case's run ({} mode of a model with {} layer(s)), so the fault would change nothing and every test would pass\n(hint: point [faults.{}] module at one of the model's modules, e.g. {}; see {})",
            case.target,
            f.module,
            case.mode,
            keys.iter().filter_map(|k| match k { ModuleKey::Layer(i, _) => Some(*i + 1), _ => None }).max().unwrap_or(0),
            case.target,
            keys.get(keys.len() / 2).map_or("model.head".to_string(), |k| k.to_string()),
            std::env::var("LAYERCHECK_MATRIX").unwrap_or_else(|_| matrix.root.join(layercheck_suite::matrix::MATRIX_FILE).display().to_string()),
        )),
        _ => Ok(()),
    }
}
