//! The report's account of a failing case's layers: which introduce error and which inherit it,
//! where in each failing layer's output the error sits, and the heat strip of error per
//! (layer, token). Shared by `report.md` and `report.html`.

use std::fmt::Write;

use layercheck_suite::attribution::Attribution;

use super::results::CaseResults;

/// How many failing layers the section lists.
pub(super) const FAILING_SHOWN: usize = 12;

/// The first layer that introduces error: its key and forward order.
pub(super) fn first_introduced(results: &CaseResults) -> Option<(&str, usize)> {
    results.layers.iter().enumerate().find(|(_, l)| l.attribution == Some(Attribution::Introduced)).map(|(i, l)| (l.key.as_str(), i))
}

/// One sentence on what introduced/inherited means here, or why there is no attribution.
pub(super) fn attribution_sentence(results: &CaseResults) -> Option<String> {
    if let Some(why) = &results.attribution_unavailable {
        return Some(why.replace('\n', " "));
    }
    let failing = results.layers.iter().filter(|l| l.attribution.is_some()).count();
    if failing == 0 {
        return None;
    }
    let introduced = results.layers.iter().filter(|l| l.attribution == Some(Attribution::Introduced)).count();
    Some(format!(
        "{introduced} failing layer(s) **introduce** error (they fail when fed their golden input too, in a second run of the target in the isolated feed), {} **inherit** it (they pass when fed their golden input).",
        failing - introduced
    ))
}

/// One line per failing layer (at most [`FAILING_SHOWN`], introduced ones first): attribution
/// and where the error sits.
pub(super) fn failing_lines(results: &CaseResults) -> Vec<String> {
    let failing: Vec<(usize, &super::results::LayerResults)> = results.layers.iter().enumerate().filter(|(_, l)| l.error.is_some() || l.records.iter().any(|r| !r.failures.is_empty())).collect();
    let mut ordered: Vec<&(usize, &super::results::LayerResults)> = failing.iter().filter(|(_, l)| l.attribution == Some(Attribution::Introduced)).collect();
    ordered.extend(failing.iter().filter(|(_, l)| l.attribution != Some(Attribution::Introduced)));
    let mut lines: Vec<String> = ordered
        .iter()
        .take(FAILING_SHOWN)
        .map(|(i, l)| {
            let a = l.attribution.map_or("not attributed".to_string(), |a| format!("**{a}**"));
            let place = l.location.as_ref().map_or(String::new(), |loc| format!(": {}", loc.describe()));
            format!("`{}` (#{i}) {a}{place}", l.key)
        })
        .collect();
    if failing.len() > FAILING_SHOWN {
        lines.push(format!("... and {} more failing layer(s)", failing.len() - FAILING_SHOWN));
    }
    lines
}

/// The heat strip: one row per layer with per-token error, one column per token position; each
/// row scaled to its own largest value (log scale, 6 decades), NaN black. `None` when no layer
/// has per-token error (e.g. a compact file).
pub(super) fn heat_svg(results: &CaseResults) -> Option<String> {
    let rows: Vec<(usize, &str, &[f64], bool)> = results
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.location.as_ref().filter(|loc| !loc.token_sq.is_empty()).map(|loc| (i, l.key.as_str(), loc.token_sq.as_slice(), l.attribution == Some(Attribution::Introduced))))
        .collect();
    let tokens = rows.iter().map(|r| r.2.len()).max()?;
    let (label_w, cell_w, cell_h, top) = (330usize, (640 / tokens.max(1)).clamp(6, 24), 12usize, 28usize);
    let width = label_w + cell_w * tokens + 10;
    let height = top + cell_h * rows.len() + 30;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"10\">\n");
    let _ = writeln!(s, "<text x=\"{label_w}\" y=\"12\">token position 0 .. {} (squared error summed over prompts and calls; each row relative to its worst token)</text>", tokens - 1);
    for (row, (order, key, values, introduced)) in rows.iter().enumerate() {
        let y = top + row * cell_h;
        let weight = if *introduced { " font-weight=\"bold\" fill=\"#b00020\"" } else { "" };
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\"{weight}>#{order} {}</text>", label_w - 6, y + cell_h - 3, super::html::esc(key));
        let max = values.iter().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::max);
        for (t, v) in values.iter().enumerate() {
            let fill = heat_color(*v, max);
            let _ = writeln!(s, "<rect x=\"{}\" y=\"{y}\" width=\"{cell_w}\" height=\"{}\" fill=\"{fill}\"><title>{} token {t}: {v:.3e}</title></rect>", label_w + t * cell_w, cell_h - 1, super::html::esc(key));
        }
    }
    let _ = writeln!(s, "<text x=\"{label_w}\" y=\"{}\">white: no error or 10^-6 of the row's worst; dark red: the row's worst; black: NaN/inf; red labels: layers that introduce error</text>", height - 8);
    s.push_str("</svg>\n");
    Some(s)
}

/// White (0 or below 1e-6 of `max`) to dark red (`max`), log scale; black for NaN/inf.
fn heat_color(v: f64, max: f64) -> String {
    if !v.is_finite() {
        return "#000000".into();
    }
    let x = if max > 0.0 && v > 0.0 { ((v / max).log10() / 6.0 + 1.0).clamp(0.0, 1.0) } else { 0.0 };
    let lerp = |a: f64, b: f64| (a + (b - a) * x).round() as u8;
    format!("#{:02x}{:02x}{:02x}", lerp(255.0, 140.0), lerp(255.0, 0.0), lerp(255.0, 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_colour_runs_from_white_to_dark_red_over_six_decades() {
        assert_eq!(heat_color(0.0, 1.0), "#ffffff");
        assert_eq!(heat_color(1e-7, 1.0), "#ffffff");
        assert_eq!(heat_color(1.0, 1.0), "#8c0000");
        assert_eq!(heat_color(f64::NAN, 1.0), "#000000");
        assert_eq!(heat_color(1e-3, 1.0), heat_color(2e-3, 2.0));
    }
}
