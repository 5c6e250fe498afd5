//! `layercheck report`: rebuilds a case's report (markdown, HTML, PNG and SVG plots) from a stored
//! `results.jsonl`, or writes one from a compact metrics file, without running a model.

use std::path::PathBuf;

use layercheck::formats::compact::CompactFile;
use layercheck::report::{rebuild_report, write_compact_report};
use layercheck::thresholds::ThresholdsFile;

use super::margins::MarginArgs;
use super::CliResult;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["results", "compact"]))]
pub struct ReportArgs {
    /// A case's report folder holding results.jsonl (e.g. target/layercheck-reports/<case>/),
    /// or the results.jsonl file itself.
    #[arg(long)]
    results: Option<PathBuf>,
    /// A compact metrics file (`layercheck generate --format compact`).
    #[arg(long, requires = "out")]
    compact: Option<PathBuf>,
    /// A thresholds JSON file (`layercheck thresholds`) to judge a compact file's layers with;
    /// without it the report has metrics only, no verdicts.
    #[arg(long, requires = "compact")]
    thresholds: Option<PathBuf>,
    #[command(flatten)]
    margins: MarginArgs,
    /// Where the report files go (default with --results: the same folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> CliResult {
    let written = match (&args.results, &args.compact) {
        (Some(results), _) => {
            let out = match &args.out {
                Some(out) => out.clone(),
                None if results.is_dir() => results.clone(),
                None => results.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| ".".into(), PathBuf::from),
            };
            rebuild_report(results, &out)?
        }
        (None, Some(compact)) => {
            let file = CompactFile::read(compact)?;
            let thresholds = args.thresholds.as_deref().map(ThresholdsFile::read).transpose()?;
            if let (Some(t), Some(path)) = (&thresholds, &args.thresholds) {
                t.validate(path)?;
            }
            let margins = args.margins.margins()?;
            let name = compact.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            // clap enforces --out with --compact.
            let out = args.out.clone().unwrap_or_else(|| ".".into());
            write_compact_report(&file, &name, thresholds.as_ref().map(|t| (t, &margins)), &out)?
        }
        (None, None) => return Err("give --results DIR or --compact FILE".into()),
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
