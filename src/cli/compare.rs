//! `layercheck compare`: the per-layer verdicts and the case report of two capture files (a
//! reference and a target of the same inputs), e.g. a device dump copied from another host.
//! Exit status: 0 when every layer passes (or without thresholds: metrics only), 1 when a layer
//! fails, 2 on bad input.

use std::path::PathBuf;
use std::process::ExitCode;

use layercheck::capture::{parse_record_name, Capture, Mode};
use layercheck::formats::case::SeedCase;
use layercheck::formats::compact::{CompactLogits, CompactWriter};
use layercheck::hooks::ModuleKey;
use layercheck_suite::logits::DEFAULT_TOP_K;
use layercheck::report::{compact_results, layer_views, write_report};
use layercheck::runner::check::{check_against, record_problem, Expected};
use layercheck::thresholds::ThresholdsFile;
use layercheck_suite::number::{cos, or_dash, sci};

use super::margins::MarginArgs;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The reference capture (usually `cpu-f32`: a golden file, or `layercheck capture`).
    #[arg(long)]
    reference: PathBuf,
    /// The target capture: same inputs, mode and records (any float dtype).
    #[arg(long)]
    target: PathBuf,
    /// Thresholds JSON to judge each layer with; without it, metrics only (exit 0).
    #[arg(long)]
    thresholds: Option<PathBuf>,
    #[command(flatten)]
    margins: MarginArgs,
    /// Where the report goes (results.jsonl, report.md, report.html, plot.png, plot.svg).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the per-layer metrics as a compact file (`layercheck generate --format
    /// compact`'s) into this folder, for `layercheck thresholds`: thresholds from captures of a
    /// model or device that layercheck does not run itself.
    #[arg(long = "metrics-out")]
    metrics_out: Option<PathBuf>,
    /// With --metrics-out: the file's tag, telling apart the files of one case (e.g. one per
    /// baseline prompt: prompt-1, prompt-2, ...), which `layercheck thresholds` pools.
    #[arg(long, requires = "metrics_out")]
    tag: Option<String>,
}

/// Why the comparison could not be made (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadInput(String);

/// Compares; `Ok(true)` when every layer passes.
fn compare(args: &CompareArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let margins = args.margins.margins().map_err(BadInput)?;
    let reference = Capture::read(&args.reference)?;
    let target = Capture::read(&args.target)?;
    let target_name = args.target.display().to_string();
    let expected = Expected::of_reference(&reference, &args.reference.display().to_string())?;
    check_against(&target, &expected, &target_name)?;
    let thresholds = args.thresholds.as_deref().map(ThresholdsFile::read).transpose()?;
    if let (Some(t), Some(path)) = (&thresholds, &args.thresholds) {
        t.validate(path)?;
    }
    let (b, s) = (expected.input_ids.len() as u64, expected.input_ids.first().map_or(0, Vec::len) as u64);
    let new_tokens: u64 = reference.metadata.get("max_new_tokens").and_then(|n| n.parse().ok()).unwrap_or(0);
    let model = reference.metadata.get("model").cloned().unwrap_or_else(|| "model".into());
    let mut writer = CompactWriter::new(SeedCase::new(&model, new_tokens, b, s));
    let mut problems = Vec::new();
    for name in &reference.keys {
        if parse_record_name(name).is_none() {
            continue;
        }
        let (r, t) = (&reference.tensors[name], &target.tensors[name]);
        if let Some(p) = record_problem(&r.size(), t) {
            problems.push(format!("record {name}: {p}"));
            continue;
        }
        let comparison = layercheck::metrics::compare(r, t).map_err(|e| format!("record {name}: {e}"))?;
        writer.push(name, &r.size(), &t.size(), &comparison)?;
    }
    if !problems.is_empty() {
        return Err(Box::new(BadInput(format!("{target_name} cannot be compared with {}:\n  {}", args.reference.display(), problems.join("\n  ")))));
    }
    let mode = reference.metadata.get("mode").and_then(|m| m.parse::<Mode>().ok());
    if let Some(mode) = mode {
        writer = writer.with_metadata("mode", &mode.to_string())?;
        if let Some(logits) = capture_logits(mode, &reference, &target)? {
            writer.set_logits(logits);
        }
    }
    if let Some(dir) = &args.metrics_out {
        std::fs::create_dir_all(dir).map_err(|e| BadInput(format!("--metrics-out {}: {e}", dir.display())))?;
        let path = writer.write_tagged(dir, args.tag.as_deref()).map_err(|e| BadInput(format!("--metrics-out {}: {e}", dir.display())))?;
        eprintln!("wrote {}", path.display());
    }
    let file = writer.into_file();
    let mut results = compact_results(&file, &target_name, thresholds.as_ref().map(|t| (t, &margins)));
    results.source = format!("compare {} with {}", target_name, args.reference.display());
    results.notes.retain(|n| !n.starts_with("layercheck_version"));
    let views = layer_views(&results);
    let judged = thresholds.is_some();
    println!("{} layers compared ({}), {}", views.len(), mode.map_or("?".into(), |m| m.to_string()), if judged { "with thresholds" } else { "metrics only (no --thresholds)" });
    for v in &views {
        let verdict = if !judged { "" } else if v.verdict.is_bad() { "FAIL" } else { "ok" };
        println!("  {verdict:<4} {:<52} abs_diff_l2 {}  cos_mean {}", v.key, or_dash(v.abs_diff_l2, sci), or_dash(v.cos_mean, cos));
    }
    let first_bad = views.iter().find(|v| v.verdict.is_bad());
    let logits_pass = match &results.logits {
        Some(l) => {
            let v = l.verdict(&margins);
            println!("  {}", layercheck_suite::message::logits_line(l, &v));
            v.passed
        }
        None => true,
    };
    match (judged, first_bad) {
        (true, Some(v)) => println!("first failing layer: {}", v.key),
        (true, None) => println!("every layer passes"),
        _ => {}
    }
    if let Some(out) = &args.out {
        for path in write_report(&results, out)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(!judged || (first_bad.is_none() && logits_pass))
}

/// A capture's logits tensors: `logits` (model-forward) or its `model` records in order (generate).
fn logits_of(mode: Mode, c: &Capture) -> Vec<&tch::Tensor> {
    match mode {
        Mode::ModelForward => c.tensors.get("logits").into_iter().collect(),
        Mode::Generate => c.keys.iter().filter(|n| parse_record_name(n).is_some_and(|(k, _)| k == ModuleKey::Model)).filter_map(|n| c.tensors.get(n)).collect(),
    }
}

/// Both captures' per-token logits metrics (model-forward: their `logits`; generate: their
/// `model` records), or `None` when the reference has none to compare.
fn capture_logits(mode: Mode, reference: &Capture, target: &Capture) -> Result<Option<CompactLogits>, Box<dyn std::error::Error>> {
    let (r, t) = (logits_of(mode, reference), logits_of(mode, target));
    let Some(ids) = reference.tensors.get("input_ids").filter(|_| !r.is_empty()) else { return Ok(None) };
    if t.len() != r.len() {
        return Err(Box::new(BadInput(format!("the target has {} logits tensor(s) and the reference {}: a capture keeps `logits` (model-forward) or every `model` record (generate)", t.len(), r.len()))));
    }
    let tokens = layercheck::metrics::logits::case_tokens(mode, &r, &t, ids, DEFAULT_TOP_K).map_err(|e| BadInput(format!("logits: {e}")))?;
    Ok(Some(CompactLogits { top_k: DEFAULT_TOP_K as u64, tokens }))
}

pub fn run(args: CompareArgs) -> ExitCode {
    match compare(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
