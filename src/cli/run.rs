//! `layercheck run`: the main job. Runs every case of the test matrix (layercheck.toml and its
//! LAYERCHECK_* overrides; with LAYERCHECK_SHARD=k/n, that shard's cases) once and prints, per
//! case, each layer's worst metrics against its thresholds and the first layer that fails. The
//! per-layer test suite (`cargo test --test layers`) checks the same cases, one test per layer.

use layercheck::compute::evaluate::evaluate;
use layercheck_suite::outcome::CaseOutcome;
use layercheck_suite::update::UpdateMode;
use layercheck_suite::matrix::{Margins, Matrix};
use layercheck_suite::number::{cos, or_dash, sci};
use layercheck_suite::verdict::Bounds;
use layercheck::report::{layer_views, CaseResults};

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
    // LAYERCHECK_SHARD=k/n: this machine's whole cases, as in the per-layer suite.
    let selection = layercheck_suite::shard::Selection::from_env(&matrix)?;
    if let Some(note) = selection.note() {
        eprintln!("{note}");
    }
    let mut failed_cases = 0;
    let mut ran = 0;
    for case in &selection.cases {
        if (!args.targets.is_empty() && !args.targets.contains(&case.target)) || (!args.models.is_empty() && !args.models.contains(&case.model)) {
            continue;
        }
        if matrix.target(case).device() == layercheck_suite::target::DeviceKind::Cuda && !tch::Cuda::is_available() {
            println!("{case}: skipped (target {} is not available here)", case.target);
            continue;
        }
        ran += 1;
        let started = std::time::Instant::now();
        let outcome = evaluate(&matrix, case, None, update);
        if !print_case(&outcome, &matrix.margins, args.verbose, started.elapsed().as_secs_f64()) {
            failed_cases += 1;
        }
        // Prints where the report went (a warning when it could not be written).
        layercheck::report::write_harness_report(&outcome, &matrix.margins);
    }
    if ran == 0 {
        let shard = selection.shard.map_or(String::new(), |s| format!(" in shard {s}"));
        return Err(format!("no case of the matrix{shard} matched --models/--targets (or every case's target is unavailable here)\n(hint: --models and --targets take names from the matrix's [matrix] models and targets)").into());
    }
    if failed_cases > 0 {
        return Err(format!("{failed_cases} of {ran} case(s) failed").into());
    }
    Ok(())
}

/// Prints a case; returns whether it passed. The worst values are the report's (a NaN record
/// shows as NaN, never hidden behind a finite one).
fn print_case(outcome: &CaseOutcome, margins: &Margins, verbose: bool, seconds: f64) -> bool {
    if let Some(e) = &outcome.setup_error {
        println!("{}: could not be checked: {e}", outcome.case);
        return false;
    }
    let views = layer_views(&CaseResults::from_outcome(outcome, margins));
    let failing = views.iter().filter(|v| v.verdict.is_bad()).count();
    println!("{}: {} layers, {} failing ({seconds:.2} s)", outcome.case, views.len(), failing);
    for v in &views {
        if !verbose && !v.verdict.is_bad() {
            continue;
        }
        let bounds = v.bounds.unwrap_or(Bounds::new(None, None));
        println!(
            "  {:<4} {:<52} abs_diff_l2 {} (th {})  cos_mean {} (th {})",
            if v.verdict.is_bad() { "FAIL" } else { "ok" },
            v.key,
            or_dash(v.abs_diff_l2, sci),
            or_dash(bounds.abs_diff_l2, sci),
            or_dash(v.cos_mean, cos),
            or_dash(bounds.cos_mean, cos),
        );
    }
    if let Some(first) = outcome.first_failure() {
        println!("  first failing layer: {}", first.key);
    }
    let logits_pass = match &outcome.logits {
        Some(l) => {
            let v = l.verdict(margins);
            println!("  {}", layercheck_suite::message::logits_line(l, &v));
            v.passed
        }
        None => true,
    };
    failing == 0 && logits_pass
}
