//! The hidden subcommands through which the per-layer test processes (which link no libtorch, see
//! crates/suite/src/compute.rs) have cases computed: `suite-case` and `suite-cuda`.

use std::path::PathBuf;

use layercheck::compute::evaluate::evaluate;
use layercheck_suite::matrix::Matrix;
use layercheck_suite::test_name::CaseId;
use layercheck_suite::update::UpdateMode;
use layercheck::hooks::ModuleKey;

#[derive(Debug, clap::Args)]
pub struct SuiteCaseArgs {
    /// The case, as in test names: e.g. tiny-granite::cpu-f16::fwd::b1::s32.
    #[arg(long)]
    case: CaseId,
    /// Where to write the case's outcome (postcard, written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Stop the target's forward after this module (a filtered run needs no more).
    #[arg(long)]
    stop_after: Option<ModuleKey>,
}

/// Computes one case of the matrix read from the current folder and writes its outcome; after a
/// complete forward also the case's report. A case that cannot be computed is an outcome too (its
/// setup error); only a bad request or an unwritable outcome file is an error here.
pub fn run_case(args: SuiteCaseArgs) -> super::CliResult {
    let root = std::env::current_dir()?;
    let matrix = Matrix::from_env(&root)?;
    let update = UpdateMode::from_env()?;
    let case = args.case;
    if !matrix.cases.contains(&case) {
        return Err(format!("case {case} is not in the test matrix read from {}", root.display()).into());
    }
    let outcome = evaluate(&matrix, &case, args.stop_after, update);
    // Once per case, and only for a complete forward (a filtered run's partial outcome must not
    // replace a full report); a report that cannot be written is a warning, never a failure.
    if args.stop_after.is_none() {
        layercheck::report::write_harness_report(&outcome, &matrix.margins);
    }
    outcome.write(&args.out)?;
    Ok(())
}

/// Prints whether this libtorch sees a CUDA device.
pub fn run_cuda() -> super::CliResult {
    println!("{}", tch::Cuda::is_available());
    Ok(())
}

