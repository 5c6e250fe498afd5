//! `layercheck thresholds`: get_thresholds.py's command line, flags spelled as it spells them.

use std::path::PathBuf;

use layercheck_suite::matrix::Margins;
use layercheck::thresholds::{self, ThresholdsOptions};

use super::progress::Bar;

/// The default of get_thresholds.py's `--output_path`.
const DEFAULT_OUTPUT_PATH: &str = "/tmp/aiu-fms-testing-utils/output";

#[derive(Debug, clap::Args)]
pub struct ThresholdsArgs {
    /// Model ids separated by space, e.g. ibm-granite/granite-3.3-8b-instruct ('/' becomes '--').
    #[arg(long, num_args = 1.., required = true)]
    models: Vec<String>,
    /// Metrics separated by space. Layer mode: abs_diff cos_sim_avg cos_sim_mean; whole-model
    /// mode: e.g. diff_mean ce.
    #[arg(long, num_args = 1.., required = true)]
    metrics: Vec<String>,
    /// Folder of the metric files (seed CSVs and/or layercheck compact files).
    #[arg(long = "file_base", required = true)]
    file_base: PathBuf,
    /// Per-layer mode: one threshold per layer (and layercheck's per-shape thresholds).
    #[arg(long = "layer_io")]
    layer_io: bool,
    /// Where {model}-thresholds.json is written.
    #[arg(long = "output_path", default_value = DEFAULT_OUTPUT_PATH)]
    output_path: PathBuf,
    /// Percentile of the per-shape thresholds over prompts (layer mode; similarities use 100 minus
    /// it).
    #[arg(long, default_value_t = 99.0)]
    percentile: f64,
    /// Widen the per-shape thresholds until the leave-one-prompt-out estimate of false failures
    /// per layer test is at most this rate (from compact files of several prompts), e.g. 0.001.
    #[arg(long = "false-failure-rate")]
    false_failure_rate: Option<f64>,
    /// The suite's relative margin, with which the false-failure estimate judges (the matrix's
    /// `margins.rtol`).
    #[arg(long, default_value_t = Margins::default().rtol)]
    rtol: f64,
    /// The suite's absolute margin, likewise (`margins.atol`).
    #[arg(long, default_value_t = Margins::default().atol)]
    atol: f64,
}

pub fn run(args: ThresholdsArgs) -> super::CliResult {
    for (flag, v) in [("--rtol", args.rtol), ("--atol", args.atol)] {
        if !v.is_finite() || v < 0.0 {
            return Err(format!("{flag} {v}: a margin is a finite number at least 0\n(hint: the suite's default margins are --rtol 0.05 --atol 1e-6)").into());
        }
    }
    let opts = ThresholdsOptions {
        models: args.models,
        metrics: args.metrics,
        file_base: args.file_base,
        layer_io: args.layer_io,
        output_path: args.output_path,
        percentile: args.percentile,
        margins: Margins { rtol: args.rtol, atol: args.atol },
        false_failure_rate: args.false_failure_rate,
    };
    let bar = Bar::new("files");
    for (path, report) in thresholds::run(&opts, &bar)? {
        for (metric, files) in &report.files_per_metric {
            let layers = report.layers_per_metric.iter().find(|(m, _)| m == metric).map(|(_, n)| *n);
            match layers {
                Some(n) => eprintln!("{}: {metric}: {files} CSV file(s), {} compact file(s), {n} layer(s)", report.model, report.compact_files),
                None => eprintln!("{}: {metric}: {files} file(s)", report.model),
            }
            if *files == 0 && report.compact_files == 0 {
                eprintln!("warning: no metric file of {} matched {metric} in {}", report.model, opts.file_base.display());
            }
        }
        for (prefix, missing) in &report.incomplete {
            eprintln!(
                "warning: case {prefix} of {} is not a whole forward (no {} ...): a run cut short, or a hand-made subset; its thresholds cover only the modules present",
                report.model,
                missing.join(", ")
            );
        }
        if let Some(e) = &report.false_failures {
            eprintln!(
                "{}: false failures on unseen prompts (leave one of {} prompts out, p{} x headroom {}): {} of {} layer tests ({}), {} of {} prompts ({})",
                report.model,
                e.prompts,
                e.percentile,
                e.headroom,
                e.failing_layer_tests,
                e.layer_tests,
                layercheck_suite::number::percent(e.per_layer_test()),
                e.failing_prompts,
                e.prompts,
                layercheck_suite::number::percent(e.per_prompt())
            );
            if report.target_unmet {
                eprintln!("warning: no headroom up to {} meets --false-failure-rate {} ({}): add baseline prompts, or accept the rate above", layercheck::thresholds::false_failures::HEADROOM_LADDER[layercheck::thresholds::false_failures::HEADROOM_LADDER.len() - 1], args.false_failure_rate.unwrap_or(0.0), layercheck_suite::number::percent(args.false_failure_rate.unwrap_or(0.0)));
            }
        }
        if report.logits_tokens > 0 {
            eprintln!("{}: logits: {} token(s)", report.model, report.logits_tokens);
        }
        if !report.nonfinite.is_empty() {
            eprintln!(
                "warning: {} per-shape threshold(s) of {} saw NaN or inf values (first: {} at batch {} seq {}); those thresholds are NaN or infinite: re-derive them from a clean baseline",
                report.nonfinite.len(),
                report.model,
                report.nonfinite[0].2,
                report.nonfinite[0].0,
                report.nonfinite[0].1
            );
        }
        println!("{}", path.display());
    }
    Ok(())
}
