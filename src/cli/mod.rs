//! Subcommands of the `layercheck` binary, one file each.

mod capture;
mod compare;
mod env;
mod generate;
mod margins;
mod progress;
mod report;
mod run;
mod suite;
mod thresholds;

use clap::{Parser, Subcommand};

/// Finds where inside a neural network an accelerator's numbers drift from the CPU's.
#[derive(Debug, Parser)]
#[command(name = "layercheck", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the libtorch version and location, the thread count and whether CUDA is available.
    Env(env::EnvArgs),
    /// The main job: check every case of the test matrix (layercheck.toml) layer by layer
    /// against its golden reference and thresholds, and say where the target first diverges.
    Run(run::RunArgs),
    /// Run a model with hooks on every module and write every output, and the logits, to a
    /// safetensors capture file.
    Capture(capture::CaptureArgs),
    /// Per-layer metrics of a target against a reference, as generate_layers_metrics.py writes
    /// them (seed CSV files) or as one compact file per case.
    Generate(generate::GenerateArgs),
    /// Per-layer thresholds from a folder of metric files (seed CSVs or compact files), as
    /// get_thresholds.py computes them, plus per-(batch, seq) thresholds over prompts.
    Thresholds(thresholds::ThresholdsArgs),
    /// Per-layer verdicts and the case report of a target capture against a reference capture
    /// (e.g. a device dump from another host); the first failing layer on stdout; exit 0 when
    /// every layer passes, 1 when one fails, 2 on bad input.
    Compare(compare::CompareArgs),
    /// Rebuild a case's report (report.md, report.html, plot.png, plot.svg) from its stored
    /// results.jsonl, or write one from a compact metrics file, without running a model.
    Report(report::ReportArgs),
    /// (Internal) compute one case of the test matrix for the per-layer test processes.
    #[command(hide = true)]
    SuiteCase(suite::SuiteCaseArgs),
    /// (Internal) print whether libtorch sees a CUDA device, for the per-layer test processes.
    #[command(hide = true)]
    SuiteCuda,
}

/// A clap value parser for counts that must be at least 1 (sizes, lengths, tokens).
pub fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1\n(hint: sizes, lengths and token counts are whole numbers from 1)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("\"{s}\" is not a whole number\n(hint: sizes, lengths and token counts are whole numbers from 1)")),
    }
}

/// Any error a subcommand reports; `main` prints it after `error: `.
pub type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Runs the parsed command line: exit status 0, or 1 with the error printed (`compare` has its own).
pub fn run(cli: Cli) -> std::process::ExitCode {
    let result = match cli.command {
        Command::Compare(args) => return compare::run(args),
        Command::Env(args) => env::run(args),
        Command::Run(args) => run::run(args),
        Command::Capture(args) => capture::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Thresholds(args) => thresholds::run(args),
        Command::Report(args) => report::run(args),
        Command::SuiteCase(args) => suite::run_case(args),
        Command::SuiteCuda => suite::run_cuda(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
