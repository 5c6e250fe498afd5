//! `layercheck thresholds`: get_thresholds.py's command line, flags spelled as it spells them.

use std::path::PathBuf;

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
}

pub fn run(args: ThresholdsArgs) -> super::CliResult {
    let opts = ThresholdsOptions {
        models: args.models,
        metrics: args.metrics,
        file_base: args.file_base,
        layer_io: args.layer_io,
        output_path: args.output_path,
        percentile: args.percentile,
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
