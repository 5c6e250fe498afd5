//! `layercheck generate`: generate_layers_metrics.py's command line (flags spelled as it spells
//! them), plus `--target`, `--reference`, `--input-ids` / `--prompts`, `--format` and
//! `--prompt-batches`.

use std::path::PathBuf;

use layercheck::capture::Mode;
use layercheck::metrics_run::{self, InputSource, MetricsFormat, MetricsRunOptions};
use layercheck::target::Target;

use super::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The model architecture, e.g. hf_pretrained (the only one layercheck reads).
    #[arg(long, default_value = "hf_pretrained")]
    architecture: String,
    /// The model id used in file names, e.g. ibm-granite/granite-3.3-8b-instruct (default:
    /// --model_path as given, as the seed takes it; '/' becomes '--' in file names).
    #[arg(long)]
    variant: Option<String>,
    /// The HF model folder (config.json, safetensors, tokenizer.json).
    #[arg(long = "model_path", required = true)]
    model_path: PathBuf,
    /// generate or model-forward.
    #[arg(long, required = true)]
    mode: Mode,
    /// Batch sizes separated by comma, e.g. 1,2.
    #[arg(long = "batch_sizes", value_delimiter = ',', required = true, value_parser = super::positive)]
    batch_sizes: Vec<usize>,
    /// Sequence lengths separated by comma, e.g. 64,2048.
    #[arg(long = "seq_lengths", value_delimiter = ',', required = true, value_parser = super::positive)]
    seq_lengths: Vec<usize>,
    /// Max numbers of new tokens separated by comma, e.g. 64,128.
    #[arg(long = "max_new_tokens", value_delimiter = ',', required = true)]
    max_new_tokens: Vec<usize>,
    /// Where to write the metric files.
    #[arg(long = "output_path", default_value = "/tmp/output")]
    output_path: PathBuf,
    /// ShareGPT JSON to sample prompts from, as the seed does.
    #[arg(long = "sharegpt_path", group = "source")]
    sharegpt_path: Option<PathBuf>,
    /// Token ids instead: a JSON list of B lists of S ids.
    #[arg(long, group = "source")]
    input_ids: Option<PathBuf>,
    /// Prompts instead: a JSON list of strings or one per line; each batch takes the next B that fit.
    #[arg(long, group = "source")]
    prompts: Option<PathBuf>,
    /// The side under test (the seed's is a GPU in float16).
    #[arg(long, default_value = "cpu-f16")]
    target: Target,
    /// The trusted side.
    #[arg(long, default_value = "cpu-f32")]
    reference: Target,
    /// seed-csv (two CSV files per layer, as the seed writes them) or compact (one file per case).
    #[arg(long, default_value = "seed-csv", value_parser = parse_format)]
    format: MetricsFormat,
    /// Batches of prompts per case (compact format with --prompts), for thresholds over many prompts.
    #[arg(long, default_value_t = 1)]
    prompt_batches: usize,
}

fn parse_format(s: &str) -> Result<MetricsFormat, String> {
    match s {
        "seed-csv" => Ok(MetricsFormat::SeedCsv),
        "compact" => Ok(MetricsFormat::Compact),
        other => Err(format!("unknown format \"{other}\"\n(hint: --format seed-csv (the seed's CSV files) or --format compact)")),
    }
}

pub fn run(args: GenerateArgs) -> super::CliResult {
    if args.architecture != "hf_pretrained" {
        return Err(format!("--architecture {} is not supported: layercheck reads HF model folders (hf_pretrained)\n(hint: drop --architecture, or pass --architecture hf_pretrained)", args.architecture).into());
    }
    if args.mode == Mode::Generate && args.max_new_tokens.contains(&0) {
        return Err("--max_new_tokens 0 in generate mode would generate nothing\n(hint: give at least 1 new token, or --mode model-forward)".into());
    }
    let inputs = match (args.sharegpt_path, args.input_ids, args.prompts) {
        (Some(p), _, _) => InputSource::ShareGpt(p),
        (_, Some(p), _) => InputSource::Ids(p),
        (_, _, Some(p)) => InputSource::Prompts(p),
        _ => return Err("no inputs given\n(hint: pass --sharegpt_path (as the seed), --input-ids or --prompts)".into()),
    };
    let model_id = args.variant.clone().unwrap_or_else(|| metrics_run::model_id_of(&args.model_path));
    let opts = MetricsRunOptions {
        model_path: args.model_path,
        model_id,
        mode: args.mode,
        batch_sizes: args.batch_sizes,
        seq_lengths: args.seq_lengths,
        max_new_tokens: args.max_new_tokens,
        output_path: args.output_path.clone(),
        format: args.format,
        reference: args.reference,
        target: args.target,
        inputs,
        prompt_batches: args.prompt_batches,
    };
    let generated = metrics_run::generate(&opts, &Bar::new("cases"))?;
    eprintln!("wrote {} metric file(s) to {}", generated.files.len(), args.output_path.display());
    // A plot and per-layer report per case, under reports/ beside the metric files.
    for (name, summaries) in &generated.cases {
        let dir = args.output_path.join("reports").join(name);
        layercheck::report::write_compact_report(summaries, name, None, &dir)?;
    }
    if let Some((name, _)) = generated.cases.first() {
        eprintln!("reports (plots, per-layer tables): {}", args.output_path.join("reports").join(name).display());
    }
    Ok(())
}
