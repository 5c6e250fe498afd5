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
/// row scaled linearly to its own worst token (which tokens carry a layer's error), failing
/// layers in red, passing ones in grey (their error may be rounding), NaN/inf black. `None` when no layer
/// has per-token error (e.g. a compact file).
pub(super) fn heat_svg(results: &CaseResults) -> Option<String> {
    let rows: Vec<(usize, &str, &[f64], bool, bool)> = results
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let failing = l.records.iter().any(|r| !r.failures.is_empty());
            l.location.as_ref().filter(|loc| !loc.token_sq.is_empty()).map(|loc| (i, l.key.as_str(), loc.token_sq.as_slice(), l.attribution == Some(Attribution::Introduced), failing))
        })
        .collect();
    let tokens = rows.iter().map(|r| r.2.len()).max()?;
    let (label_w, cell_w, cell_h, top) = (330usize, (640 / tokens.max(1)).clamp(4, 24), 13usize, 28usize);
    // Wide enough for the captions, which start at the left edge.
    let width = (label_w + cell_w * tokens + 10).max(880);
    let height = top + cell_h * rows.len() + 30;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n");
    let _ = writeln!(s, "<text x=\"10\" y=\"12\">token position 0 .. {} (squared error summed over prompts; decode steps after the prompt, one position each; each row relative to its own worst token)</text>", tokens - 1);
    for (row, (order, key, values, introduced, failing)) in rows.iter().enumerate() {
        let y = top + row * cell_h;
        let weight = if *introduced { " font-weight=\"bold\" fill=\"#b00020\"" } else { "" };
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\"{weight}>#{order} {}</text>", label_w - 6, y + cell_h - 3, super::html::esc(key));
        let max = values.iter().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::max);
        for (t, v) in values.iter().enumerate() {
            let fill = heat_color(*v, max, *failing);
            let _ = writeln!(s, "<rect x=\"{}\" y=\"{y}\" width=\"{cell_w}\" height=\"{}\" fill=\"{fill}\"><title>{} token {t}: {}</title></rect>", label_w + t * cell_w, cell_h - 1, super::html::esc(key), super::markdown::sci(*v));
        }
    }
    let _ = writeln!(s, "<text x=\"10\" y=\"{}\">white: no error; dark red (failing layer) or dark grey (passing): the row's worst token; black: NaN/inf; red labels: introduce error</text>", height - 8);
    s.push_str("</svg>\n");
    Some(s)
}

/// White (0) to dark red (`max`; dark grey when not `failing`), linear; black for NaN/inf.
fn heat_color(v: f64, max: f64, failing: bool) -> String {
    if !v.is_finite() {
        return "#000000".into();
    }
    let x = if max > 0.0 { (v / max).clamp(0.0, 1.0) } else { 0.0 };
    let lerp = |a: f64, b: f64| (a + (b - a) * x).round() as u8;
    let (r, g, b) = if failing { (140.0, 0.0, 0.0) } else { (90.0, 90.0, 90.0) };
    format!("#{:02x}{:02x}{:02x}", lerp(255.0, r), lerp(255.0, g), lerp(255.0, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_colour_runs_from_white_to_dark_red_or_grey() {
        assert_eq!(heat_color(0.0, 1.0, true), "#ffffff");
        assert_eq!(heat_color(0.0, 0.0, true), "#ffffff");
        assert_eq!(heat_color(1.0, 1.0, true), "#8c0000");
        assert_eq!(heat_color(0.5, 1.0, true), "#c68080");
        assert_eq!(heat_color(1.0, 1.0, false), "#5a5a5a");
        assert_eq!(heat_color(f64::NAN, 1.0, true), "#000000");
        assert_eq!(heat_color(1e-3, 1.0, true), heat_color(2e-3, 2.0, true));
    }
}
