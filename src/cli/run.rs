//! `layercheck run`: the main job. Runs every case of the test matrix (layercheck.toml and its
//! LAYERCHECK_* overrides) once and prints, per case, each layer's worst metrics against its
//! thresholds and the first layer that fails. The per-layer test suite (`cargo test --test
//! layers`) checks the same cases, one test per layer.

use layercheck::harness::evaluate::evaluate;
use layercheck::harness::outcome::CaseOutcome;
use layercheck::harness::update::UpdateMode;
use layercheck::target::TargetRuntime;
use layercheck::harness::matrix::Matrix;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Only these targets (comma list), e.g. cpu-f16,cpu-bf16 (default: the matrix's).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Only these models (comma list; default: the matrix's).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Print every layer, not only failing ones and a summary.
    #[arg(long)]
    verbose: bool,
}

pub fn run(args: RunArgs) -> super::CliResult {
    let root = std::env::current_dir()?;
    let matrix = Matrix::from_env(&root)?;
    let update = UpdateMode::from_env()?;
    let mut failed_cases = 0;
    let mut ran = 0;
    for case in &matrix.cases {
        if (!args.targets.is_empty() && !args.targets.contains(&case.target)) || (!args.models.is_empty() && !args.models.contains(&case.model)) {
            continue;
        }
        if !matrix.target(case).base().is_available() {
            println!("{case}: skipped (target {} is not available here)", case.target);
            continue;
        }
        ran += 1;
        let started = std::time::Instant::now();
        let outcome = evaluate(&matrix, case, None, update);
        if !print_case(&outcome, args.verbose, started.elapsed().as_secs_f64()) {
            failed_cases += 1;
        }
        // Prints where the report went (a warning when it could not be written).
        layercheck::report::write_harness_report(&outcome, &matrix.margins);
    }
    if ran == 0 {
        return Err("no case of the matrix matched --models/--targets".into());
    }
    if failed_cases > 0 {
        return Err(format!("{failed_cases} of {ran} case(s) failed").into());
    }
    Ok(())
}

/// Prints a case; returns whether it passed.
fn print_case(outcome: &CaseOutcome, verbose: bool, seconds: f64) -> bool {
    if let Some(e) = &outcome.setup_error {
        println!("{}: could not be checked: {e}", outcome.case);
        return false;
    }
    let failing = outcome.layers.iter().filter(|l| !l.passed()).count();
    println!("{}: {} layers, {} failing ({seconds:.2} s)", outcome.case, outcome.layers.len(), failing);
    for layer in &outcome.layers {
        if !verbose && layer.passed() {
            continue;
        }
        let worst_abs = layer.observations.iter().map(|o| o.abs_diff_l2).fold(f64::NAN, f64::max);
        let worst_cos = layer.observations.iter().map(|o| o.cos_mean).fold(f64::NAN, f64::min);
        let fmt = |t: Option<f64>| t.map_or("-".into(), |v| format!("{v:.3e}"));
        println!(
            "  {:<4} {:<52} abs_diff_l2 {worst_abs:.3e} (th {})  cos_mean {worst_cos:.7} (th {})",
            if layer.passed() { "ok" } else { "FAIL" },
            layer.key,
            fmt(layer.bounds.abs_diff_l2),
            layer.bounds.cos_mean.map_or("-".into(), |v| format!("{v:.7}")),
        );
    }
    if let Some(first) = outcome.first_failure() {
        println!("  first failing layer: {}", first.key);
    }
    failing == 0
}
