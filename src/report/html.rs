//! `report.html`: the markdown report's content as one self-contained page: inline CSS, the plot
//! as inline SVG, no script, and a Content-Security-Policy that forbids loading anything, so the
//! page shows the same offline, attached to a CI run or opened from disk.

use std::fmt::Write;

use super::attribution::{attribution_sentence, failing_lines, heat_svg};
use super::logits::logits_lines;
use super::layers::{case_verdict, first_divergent, worst_layers, CaseVerdict, LayerView, Verdict};
use super::markdown::{
    errors, first_failures, first_sentence, layer_cells, footer, headline, margins_sentence, one_minus, sci_opt, used, LAYER_COLUMNS, PLOT_LEGEND, TABLE_INTRO, WORST_CHECKED, WORST_SHOWN, WORST_UNCHECKED,
};
use super::results::CaseResults;

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1250px;padding:0 1em;color:#1a1a1a}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}code{font-family:ui-monospace,monospace;font-size:.92em}\
table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ccc;padding:.2em .5em}th{background:#f2f2f2}\
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.fail td{background:#fde8e8}tr.error td{background:#fff3cd}\
tr.first td{font-weight:bold}.verdict-fail{color:#b00020;font-weight:bold}.verdict-error{color:#8a6d00;font-weight:bold}\
.verdict-pass{color:#1b7f3b;font-weight:bold}figure{margin:1em 0}figure svg{max-width:100%;height:auto;border:1px solid #ddd}\
pre{background:#f6f6f6;padding:.8em;overflow-x:auto}#errors li{white-space:pre-wrap}.small{color:#555;font-size:.9em}";

/// The HTML page; `svg` is the plot (`plot.svg`'s text), embedded inline.
pub fn render_html(results: &CaseResults, views: &[LayerView], svg: &str) -> String {
    let mut h = String::new();
    let title = format!("layercheck report: {}", results.case);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc(&title)
    );
    let _ = writeln!(h, "<h1>layercheck report: <code>{}</code></h1>", esc(&results.case));
    let _ = writeln!(h, "<p id=\"headline\" class=\"{}\">{}</p>", headline_class(results, views), inline_md(&headline(results, views)));
    if let Some(e) = &results.setup_error {
        let _ = writeln!(h, "<pre id=\"setup-error\">{}</pre>", esc(e.trim_end()));
    }
    let _ = writeln!(h, "<p class=\"small\">Source: {}. {}</p>", esc(&results.source), inline_md(&margins_sentence(results)));
    if !views.is_empty() {
        let _ = writeln!(h, "<figure id=\"plot\">\n{}\n<figcaption class=\"small\">{}</figcaption>\n</figure>", inline_svg(svg), esc(PLOT_LEGEND));
    }

    if let Some(first) = first_divergent(views) {
        let _ = writeln!(h, "<h2>First divergent layer</h2>\n<p id=\"first-divergent\">{}</p>\n<ul>", inline_md(&first_sentence(first)));
        for line in first_failures(results, first) {
            let _ = writeln!(h, "<li>{}</li>", inline_md(&line));
        }
        let _ = writeln!(h, "</ul>");
    }

    let failing = failing_lines(results);
    if !failing.is_empty() {
        let _ = writeln!(h, "<h2>Introduced or inherited error, and where</h2>");
        if let Some(s) = attribution_sentence(results) {
            let _ = writeln!(h, "<p id=\"attribution\">{}</p>", inline_md(&s));
        }
        let _ = writeln!(h, "<ul id=\"failing\">");
        for line in failing {
            let _ = writeln!(h, "<li>{}</li>", inline_md(&line));
        }
        let _ = writeln!(h, "</ul>");
    }
    if let Some(heat) = heat_svg(results) {
        let _ = writeln!(h, "<h2>Error per layer and token</h2>\n<figure id=\"heat\">\n{heat}</figure>");
    }
    if let Some((lead, lines)) = logits_lines(results) {
        let _ = writeln!(h, "<h2>Logits</h2>\n<p id=\"logits\">{}</p>\n<ul>", inline_md(&lead));
        for line in lines {
            let _ = writeln!(h, "<li>{}</li>", inline_md(&line));
        }
        let _ = writeln!(h, "</ul>");
    }

    let worst = worst_layers(views, WORST_SHOWN);
    if !worst.is_empty() {
        let _ = writeln!(h, "<h2>Worst layers</h2>");
        if results.margins.is_some() {
            let _ = writeln!(h, "<p class=\"small\">{}</p>\n<table id=\"worst\">\n<tr><th>rank</th><th>#</th><th>layer</th><th>quantity</th><th>used</th><th>verdict</th></tr>", inline_md(WORST_CHECKED));
            for (rank, v) in worst.iter().enumerate() {
                let quantity = v.used.map_or("-", |(_, q)| q.name());
                let _ = writeln!(
                    h,
                    "<tr class=\"{}\"><td class=\"n\">{}</td><td class=\"n\">{}</td><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    row_class(v, None),
                    rank + 1,
                    v.order,
                    esc(&v.key),
                    quantity,
                    used(v),
                    verdict_html(v.verdict)
                );
            }
        } else {
            let _ = writeln!(h, "<p class=\"small\">{}</p>\n<table id=\"worst\">\n<tr><th>rank</th><th>#</th><th>layer</th><th>1 - cos_mean</th><th>abs_diff_l2</th></tr>", inline_md(WORST_UNCHECKED));
            for (rank, v) in worst.iter().enumerate() {
                let _ = writeln!(h, "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>", rank + 1, v.order, esc(&v.key), one_minus(v.cos_mean), sci_opt(v.abs_diff_l2));
            }
        }
        let _ = writeln!(h, "</table>");
    }

    if !views.is_empty() {
        let first = first_divergent(views).map(|v| v.order);
        let _ = writeln!(h, "<h2>Layers</h2>\n<p class=\"small\">{}</p>", inline_md(TABLE_INTRO));
        let header: String = LAYER_COLUMNS.iter().map(|c| format!("<th>{}</th>", c.0)).collect();
        let _ = writeln!(h, "<table id=\"layers\">\n<tr>{header}</tr>");
        for v in views {
            let mut cells = layer_cells(v).map(|c| esc(&c));
            cells[1] = format!("<code>{}</code>", cells[1]);
            cells[8] = verdict_html(v.verdict);
            let row: String = cells.iter().zip(LAYER_COLUMNS).map(|(c, (_, number))| if number { format!("<td class=\"n\">{c}</td>") } else { format!("<td>{c}</td>") }).collect();
            let title = v.why.as_deref().map(|w| format!(" title=\"{}\"", esc(w))).unwrap_or_default();
            let _ = writeln!(h, "<tr class=\"{}\"{title}>{row}</tr>", row_class(v, first));
        }
        let _ = writeln!(h, "</table>");
    }

    let errors = errors(results);
    if !errors.is_empty() {
        let _ = writeln!(h, "<h2>Layers not compared</h2>\n<ul id=\"errors\">");
        for (key, e) in errors {
            let _ = writeln!(h, "<li><code>{}</code>: {}</li>", esc(key), esc(e));
        }
        let _ = writeln!(h, "</ul>");
    }

    if !results.notes.is_empty() {
        let _ = writeln!(h, "<h2>Notes</h2>\n<ul>");
        for n in &results.notes {
            let _ = writeln!(h, "<li>{}</li>", esc(n));
        }
        let _ = writeln!(h, "</ul>");
    }
    let _ = writeln!(h, "<hr>\n<p class=\"small\">{}</p>\n</body>\n</html>", inline_md(&footer(results)));
    h
}

fn headline_class(results: &CaseResults, views: &[LayerView]) -> &'static str {
    match case_verdict(results, views) {
        CaseVerdict::SetupError => "verdict-error",
        CaseVerdict::NothingRecorded | CaseVerdict::Unchecked => "",
        CaseVerdict::Pass => "verdict-pass",
        CaseVerdict::Fail { .. } => "verdict-fail",
    }
}

fn row_class(v: &LayerView, first: Option<usize>) -> String {
    let mut c = match v.verdict {
        Verdict::Fail => "fail",
        Verdict::Error => "error",
        _ => "ok",
    }
    .to_string();
    if first == Some(v.order) {
        c.push_str(" first");
    }
    c
}

fn verdict_html(v: Verdict) -> String {
    let class = match v {
        Verdict::Pass => "verdict-pass",
        Verdict::Fail => "verdict-fail",
        Verdict::Error => "verdict-error",
        Verdict::Unchecked => "",
    };
    format!("<span class=\"{class}\">{}</span>", v.name())
}

/// The SVG document without anything before its `<svg` element (an XML declaration may not
/// appear inside HTML).
fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map(|i| &svg[i..]).unwrap_or("")
}

/// HTML-escapes text.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text and turns the markdown of our own sentences (`code`, **bold**) into HTML.
fn inline_md(s: &str) -> String {
    let escaped = esc(s);
    let mut out = String::with_capacity(escaped.len());
    let (mut code, mut bold) = (false, false);
    let mut rest = escaped.as_str();
    while let Some(c) = rest.chars().next() {
        if !code && rest.starts_with("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = &rest[2..];
            continue;
        }
        if c == '`' {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markdown_is_escaped_then_formatted() {
        assert_eq!(inline_md("**FAIL**: `a<b` & c"), "<strong>FAIL</strong>: <code>a&lt;b</code> &amp; c");
        assert_eq!(inline_md("`open"), "<code>open</code>");
        assert_eq!(inline_svg("<?xml version=\"1.0\"?>\n<svg a>x</svg>"), "<svg a>x</svg>");
    }
}
