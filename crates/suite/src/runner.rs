//! The libtest-mimic glue: lists one trial per (case, layer) plus a summary and a logits test
//! per case, and runs
//! them against shared case outcomes, which the `layercheck` binary computes (`compute.rs`).
//! Listing reads the matrix and each model's config.json only.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};

use crate::case_cache::{CaseCache, Shared};
use crate::compute::Engine;
use crate::matrix::Matrix;
use crate::message;
use crate::mode::Mode;
use crate::model_folder::num_hidden_layers;
use crate::module_key::ModuleKey;
use crate::outcome::CaseOutcome;
use crate::shard::Selection;
use crate::target::DeviceKind;
use crate::test_name::{CaseId, Check, TestName};
use crate::update::UpdateMode;

/// The suite shared by every trial.
struct Suite {
    root: PathBuf,
    matrix: Matrix,
    engine: Engine,
    cache: CaseCache,
}

/// Entry point of the `layers` test target: `engine` computes the cases.
pub fn main(engine: Engine) -> ExitCode {
    let mut args = Arguments::from_args();
    let root = std::env::current_dir().unwrap_or_else(|_| ".".into());
    // The update mode is read (and refused under CI) here, before any test runs, and again by
    // the engine, which inherits this environment.
    // The shard (LAYERCHECK_SHARD) applies here, at listing: under nextest too, which lists, then
    // runs a process per listed test.
    let setup = Matrix::from_env(&root)
        .map_err(|e| e.to_string())
        .and_then(|m| UpdateMode::from_env().map(|_| m).map_err(|e| e.to_string()))
        .and_then(|m| Selection::from_env(&m).map(|s| (m, s)).map_err(|e| e.to_string()));
    let (matrix, selection) = match setup {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(note) = selection.note().filter(|_| !args.list && !args.exact) {
        eprintln!("{note}");
    }
    let suite = Arc::new(Suite { root, matrix, engine, cache: CaseCache::from_env() });
    let names = list(&suite.matrix, &selection.cases, &args);
    // One test (nextest's `--exact NAME`, a process per test): run it on this thread; starting
    // libtest-mimic's pool of threads would cost more than the test (0.8 ms of 2.7 ms measured).
    if names.len() == 1 && args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let trials = trials(&suite, &args, names);
    libtest_mimic::run(&args, trials).exit_code()
}

/// Every test name of the selected `cases`, in order; `--exact NAME` takes a fast path that lists
/// only it.
fn list(matrix: &Matrix, cases: &[CaseId], args: &Arguments) -> Vec<TestName> {
    if let (true, Some(filter)) = (args.exact, &args.filter) {
        if let Ok(name) = filter.parse::<TestName>() {
            if cases.contains(&name.case) {
                return vec![name];
            }
        }
    }
    test_names(matrix, cases)
}

/// The test names of `cases` of `matrix`: per case its layers in forward order, then its summary
/// and its logits test.
pub fn test_names(matrix: &Matrix, cases: &[CaseId]) -> Vec<TestName> {
    let mut names = Vec::new();
    for case in cases {
        for key in layer_keys(matrix, case) {
            names.push(TestName { case: case.clone(), check: Check::Layer(key) });
        }
        names.push(TestName { case: case.clone(), check: Check::Summary });
        names.push(TestName { case: case.clone(), check: Check::Logits });
    }
    names
}

/// The module keys of a case, from the model's config.json (no weights are read, whether the
/// model runs in layercheck or only behind a command). A model whose config cannot be read lists
/// no layer tests; its summary test fails with the reason.
fn layer_keys(matrix: &Matrix, case: &CaseId) -> Vec<ModuleKey> {
    match num_hidden_layers(&matrix.resolve(&matrix.model(case).path)) {
        Ok(n) => ModuleKey::forward_order(n, case.mode == Mode::Generate),
        Err(_) => Vec::new(),
    }
}

fn trials(suite: &Arc<Suite>, args: &Arguments, names: Vec<TestName>) -> Vec<Trial> {
    let selected: Vec<bool> = names.iter().map(|n| !args.is_filtered_out(&Trial::test(n.to_string(), || Ok(())))).collect();
    let stops = stop_points(suite, &names, &selected);
    names
        .into_iter()
        .map(|name| {
            let stop_after = stops.get(&name.case).copied().flatten().filter(|_| name.case.mode == Mode::ModelForward);
            let available = available(suite, &name.case);
            let suite = Arc::clone(suite);
            Trial::test(name.to_string(), move || run_one(&suite, &name, stop_after)).with_ignored_flag(!available)
        })
        .collect()
}

/// Per case, the last selected layer, after which its forward may stop: only in a filtered run
/// whose outcomes are not shared with other processes (which may need later layers), and not
/// when the case's summary or logits test runs (they need the whole forward).
fn stop_points(suite: &Suite, names: &[TestName], selected: &[bool]) -> HashMap<CaseId, Option<ModuleKey>> {
    let mut stops: HashMap<CaseId, Option<ModuleKey>> = HashMap::new();
    if suite.cache.shares_between_processes() || selected.iter().all(|&s| s) {
        return stops;
    }
    let mut full: HashSet<CaseId> = HashSet::new();
    for (name, _) in names.iter().zip(selected).filter(|(_, &s)| s) {
        match name.check {
            Check::Summary | Check::Logits => {
                full.insert(name.case.clone());
            }
            // Names are in forward order, so the last one seen is the last needed.
            Check::Layer(key) => {
                stops.insert(name.case.clone(), Some(key));
            }
        }
    }
    for case in full {
        stops.insert(case, None);
    }
    stops
}

/// Whether the case's target can run here. Unavailable targets are listed and ignored; when
/// CUDA's availability cannot be learnt, the test runs and fails saying why.
fn available(suite: &Suite, case: &CaseId) -> bool {
    match suite.matrix.target(case).device() {
        DeviceKind::Cpu => true,
        DeviceKind::Cuda => suite.cache.cuda_available(|| suite.engine.cuda_available(&suite.root)).unwrap_or(true),
    }
}

fn run_one(suite: &Suite, name: &TestName, stop_after: Option<ModuleKey>) -> Result<(), Failed> {
    // The engine writes the case's report after a complete forward.
    let margins = &suite.matrix.margins;
    let compute = || suite.engine.compute(&suite.root, &name.case, stop_after);
    let outcome: Arc<CaseOutcome> = match suite.cache.get_for(&name.case.to_string(), name.check, margins, compute) {
        Shared::Passes => return Ok(()),
        Shared::Outcome(outcome) => outcome,
    };
    if outcome.passes(name.check, margins) {
        return Ok(());
    }
    if let Some(e) = &outcome.setup_error {
        return Err(message::setup_failure(name, e).into());
    }
    Err(match name.check {
        Check::Summary => message::summary_failure(name, &outcome),
        Check::Logits => match &outcome.logits {
            Some(logits) => message::logits_failure(name, logits, margins),
            None => format!("{}: no logits were compared in this case's run (was the forward stopped early?)", name.case),
        },
        Check::Layer(key) => match outcome.layer(&key.to_string()) {
            Some(layer) => message::layer_failure(name, layer, &outcome, margins),
            None => format!("{key} was not recorded in this case's run (was the forward stopped early?)"),
        },
    }
    .into())
}
