//! `report.md`: the verdict, the first divergent layer, the worst layers and the per-layer table
//! in forward order. Pure text from [`CaseResults`], so it snapshots exactly.

use std::fmt::Write;

use super::attribution::{attribution_sentence, failing_lines, first_introduced};
use super::logits::logits_lines;
use super::layers::{case_verdict, first_divergent, worst_layers, CaseVerdict, LayerView, Verdict};
use super::results::CaseResults;
use super::{HTML_FILE, PNG_FILE, RESULTS_FILE, SVG_FILE};
pub(super) use layercheck_suite::number::{cos, sci};
use layercheck_suite::number::{or_dash, setting};

/// How many failures of the first divergent layer are listed.
pub(super) const FIRST_FAILURES_SHOWN: usize = 5;
/// How many worst layers are listed.
pub(super) const WORST_SHOWN: usize = 5;

/// The markdown report.
pub fn render_markdown(results: &CaseResults, views: &[LayerView]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# layercheck report: `{}`\n", results.case);
    let _ = writeln!(md, "{}\n", headline(results, views));
    if let Some(e) = &results.setup_error {
        let _ = writeln!(md, "```text\n{}\n```\n", e.trim_end());
    }
    let _ = writeln!(md, "Source: {}. {}\n", results.source, margins_sentence(results));
    if !views.is_empty() {
        let _ = writeln!(md, "![abs_diff_l2 and 1 - cos_mean per layer]({SVG_FILE})\n");
        let _ = writeln!(md, "{PLOT_LEGEND}\n");
    }

    if let Some(first) = first_divergent(views) {
        let _ = writeln!(md, "## First divergent layer\n");
        let _ = writeln!(md, "{}\n", first_sentence(first));
        for line in first_failures(results, first) {
            let _ = writeln!(md, "- {}", line.replace('\n', " "));
        }
        md.push('\n');
    }

    let failing = failing_lines(results);
    if !failing.is_empty() {
        let _ = writeln!(md, "## Introduced or inherited error, and where\n");
        if let Some(s) = attribution_sentence(results) {
            let _ = writeln!(md, "{s}\n");
        }
        for line in failing {
            let _ = writeln!(md, "- {line}");
        }
        md.push('\n');
    }

    if let Some((lead, lines)) = logits_lines(results) {
        let _ = writeln!(md, "## Logits\n\n{lead}\n");
        for line in lines {
            let _ = writeln!(md, "- {line}");
        }
        md.push('\n');
    }

    let worst = worst_layers(views, WORST_SHOWN);
    if !worst.is_empty() {
        let _ = writeln!(md, "## Worst layers\n");
        if results.margins.is_some() {
            let _ = writeln!(md, "{WORST_CHECKED}\n");
            let _ = writeln!(md, "| rank | # | layer | quantity | used | verdict |\n|--:|--:|---|---|--:|---|");
            for (rank, v) in worst.iter().enumerate() {
                let quantity = v.used.map_or("-", |(_, q)| q.name());
                let _ = writeln!(md, "| {} | {} | `{}` | {} | {} | {} |", rank + 1, v.order, v.key, quantity, used(v), verdict_md(v.verdict));
            }
        } else {
            let _ = writeln!(md, "{WORST_UNCHECKED}\n");
            let _ = writeln!(md, "| rank | # | layer | 1 - cos_mean | abs_diff_l2 |\n|--:|--:|---|--:|--:|");
            for (rank, v) in worst.iter().enumerate() {
                let _ = writeln!(md, "| {} | {} | `{}` | {} | {} |", rank + 1, v.order, v.key, one_minus(v.cos_mean), sci_opt(v.abs_diff_l2));
            }
        }
        md.push('\n');
    }

    if !views.is_empty() {
        let _ = writeln!(md, "## Layers\n");
        let _ = writeln!(md, "{TABLE_INTRO}\n");
        let names: Vec<&str> = LAYER_COLUMNS.iter().map(|c| c.0).collect();
        let rules: Vec<&str> = LAYER_COLUMNS.iter().map(|c| if c.1 { "--:" } else { "---" }).collect();
        let _ = writeln!(md, "| {} |\n|{}|", names.join(" | "), rules.join("|"));
        for v in views {
            let mut cells = layer_cells(v);
            cells[1] = format!("`{}`", cells[1]);
            cells[8] = verdict_md(v.verdict);
            let _ = writeln!(md, "| {} |", cells.join(" | "));
        }
        md.push('\n');
    }

    let errors = errors(results);
    if !errors.is_empty() {
        let _ = writeln!(md, "## Layers not compared\n");
        for (key, e) in errors {
            let _ = writeln!(md, "- `{key}`: {}", e.replace('\n', " "));
        }
        md.push('\n');
    }

    if !results.notes.is_empty() {
        let _ = writeln!(md, "## Notes\n");
        for n in &results.notes {
            let _ = writeln!(md, "- {}", n.replace('\n', " "));
        }
        md.push('\n');
    }
    let _ = writeln!(md, "---\n\n{}", footer(results));
    md
}

pub(super) const PLOT_LEGEND: &str = "Plot: the worst record of each layer in forward order, log scale; colours and markers tell sub-modules apart; the dashed line is threshold + margin; red rings mark failing layers, black squares the layers that introduce error (they fail when fed their golden input too); red triangles on the top edge are NaN/inf, and values of 0 sit on the bottom edge.";
pub(super) const WORST_CHECKED: &str = "Ranked by `used`: the worst observation as a share of what is allowed (threshold + margin; for the cosine, on `1 - cos_mean`). Over 100% fails.";
pub(super) const WORST_UNCHECKED: &str = "Ranked by `1 - cos_mean` (no thresholds, so no verdicts).";
pub(super) const TABLE_INTRO: &str = "Worst over every record (forward call) and prompt: the largest `abs_diff_l2` (L2 norm of `abs_diff` over one prompt) and the smallest `cos_mean` (mean per-token cosine over one prompt). `used`: the largest share of threshold + margin used (over 100% fails).";

/// One sentence: the case's verdict.
pub(super) fn headline(results: &CaseResults, views: &[LayerView]) -> String {
    match case_verdict(results, views) {
        CaseVerdict::SetupError => "**ERROR**: the case could not be computed, so no layer was compared:".into(),
        CaseVerdict::NothingRecorded => "No layer was recorded.".into(),
        CaseVerdict::Unchecked => format!("{} layers, no thresholds given: metrics only, no verdicts.", views.len()),
        CaseVerdict::Pass => format!("**PASS**: all {} layers are within their thresholds.", views.len()),
        CaseVerdict::Fail { failing, errors, first } => {
            let errors = if errors > 0 { format!(", {errors} could not be compared") } else { String::new() };
            let introduced = first_introduced(results).map(|(k, i)| format!(" First layer that introduces error: `{k}` (#{i})."));
            format!("**FAIL**: {failing} of {} layers fail{errors}.{} First divergent layer: `{}` (#{}).", views.len(), introduced.unwrap_or_default(), first.key, first.order)
        }
    }
}

pub(super) fn margins_sentence(results: &CaseResults) -> String {
    match results.margins {
        Some(m) => format!("Margins: rtol {}, atol {}; a quantity fails past threshold + rtol * |threshold| + atol (for `cos_mean`, on `1 - cos_mean`).", setting(m.rtol), setting(m.atol)),
        None => "No thresholds.".into(),
    }
}

pub(super) fn first_sentence(v: &LayerView) -> String {
    match v.verdict {
        Verdict::Error => format!("`{}` (#{}, {}) could not be compared.", v.key, v.order, v.submodule.name()),
        _ => format!("`{}` (#{}, {}): {} of {} records fail.", v.key, v.order, v.submodule.name(), v.failing_records, v.records),
    }
}

/// The failures of the first divergent layer, one line each (at most [`FIRST_FAILURES_SHOWN`]).
pub(super) fn first_failures(results: &CaseResults, v: &LayerView) -> Vec<String> {
    let Some(layer) = results.layers.get(v.order) else { return Vec::new() };
    if let Some(e) = &layer.error {
        return vec![e.clone()];
    }
    let mut lines: Vec<String> = Vec::new();
    let total: usize = layer.records.iter().map(|r| r.failures.len()).sum();
    for r in &layer.records {
        for f in &r.failures {
            if lines.len() < FIRST_FAILURES_SHOWN {
                let o = &r.observation;
                lines.push(format!("{} (record `{}`, prompt {}, worst token {})", f.reason, o.record, o.item, o.worst_token));
            }
        }
    }
    if total > lines.len() {
        lines.push(format!("... and {} more failure(s) of this layer in `{RESULTS_FILE}`", total - lines.len()));
    }
    lines
}

/// The layers that could not be compared, with why.
pub(super) fn errors(results: &CaseResults) -> Vec<(&str, &str)> {
    results.layers.iter().filter_map(|l| l.error.as_deref().map(|e| (l.key.as_str(), e))).collect()
}

pub(super) fn footer(results: &CaseResults) -> String {
    let mut s = format!("Files: `{RESULTS_FILE}` (every record, for machines), `{HTML_FILE}`, `{PNG_FILE}`, `{SVG_FILE}`. Rebuild them: `layercheck report --results <this folder>`.");
    if results.source == "harness" && !results.case.is_empty() {
        let _ = write!(s, " Re-run the case: `cargo test --test layers -- '{}::'`.", results.case);
    }
    s
}

/// The per-layer table's columns, markdown's and HTML's alike: name, and whether it is a number
/// (right-aligned).
pub(super) const LAYER_COLUMNS: [(&str, bool); 9] =
    [("#", true), ("layer", false), ("group", false), ("abs_diff_l2", true), ("threshold", true), ("cos_mean", true), ("threshold", true), ("used", true), ("verdict", false)];

/// A layer's row of the per-layer table as plain text, in [`LAYER_COLUMNS`] order (each format
/// marks up the key and the verdict its own way).
pub(super) fn layer_cells(v: &LayerView) -> [String; 9] {
    let (abs_th, cos_th) = thresholds(v);
    [v.order.to_string(), v.key.clone(), v.submodule.name().to_string(), sci_opt(v.abs_diff_l2), abs_th, cos_opt(v.cos_mean), cos_th, used(v), v.verdict.name().to_string()]
}

pub(super) fn thresholds(v: &LayerView) -> (String, String) {
    match v.bounds {
        None => ("-".into(), "-".into()),
        Some(b) => (b.abs_diff_l2.map(sci).unwrap_or_else(|| "none".into()), b.cos_mean.map(cos).unwrap_or_else(|| "none".into())),
    }
}

fn verdict_md(v: Verdict) -> String {
    match v {
        Verdict::Fail => "**FAIL**".into(),
        other => other.name().into(),
    }
}

pub(super) fn sci_opt(v: Option<f64>) -> String {
    or_dash(v, sci)
}

pub(super) fn cos_opt(v: Option<f64>) -> String {
    or_dash(v, cos)
}

pub(super) fn one_minus(v: Option<f64>) -> String {
    v.map(|c| sci(1.0 - c)).unwrap_or_else(|| "-".into())
}

/// The share used, as a percentage; `inf` for NaN observations; `-` without thresholds.
pub(super) fn used(v: &LayerView) -> String {
    match v.used {
        None => "-".into(),
        Some((u, _)) if !u.is_finite() => "inf".into(),
        Some((u, _)) if u >= 100.0 => format!("{:.0}%", u * 100.0),
        Some((u, _)) => format!("{:.1}%", u * 100.0),
    }
}

