//! `plot.png` and `plot.svg`: two panels against forward order, `abs_diff_l2` and `1 - cos_mean`
//! (each layer's worst record), log scale, with threshold + margin dashed, failing layers ringed in
//! red, the first divergent layer a red dashed vertical, NaN/inf as red triangles on the top edge,
//! and sub-module groups told apart by colour and marker.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (`font/`, a subset, licence beside it),
//! through plotters' `ab_glyph` feature: no system font, fontconfig or freetype is needed.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use super::layers::{case_verdict, first_divergent, short_label, CaseVerdict, LayerView, Verdict};
use super::submodule::Submodule;
use super::results::CaseResults;
use super::ReportError;
use layercheck_suite::verdict::Quantity;

/// Width and height of both plots, in pixels.
pub const PLOT_SIZE: (u32, u32) = (1200, 900);

/// DejaVu Sans 2.37, subset to ASCII and a few symbols (see `font/LICENSE`).
static FONT: &[u8] = include_bytes!("font/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok()) {
        Ok(())
    } else {
        Err(ReportError::Plot { what: "text", message: "the embedded font could not be loaded".into() })
    }
}

/// The plot as an SVG document.
pub fn render_svg(results: &CaseResults, views: &[LayerView]) -> Result<String, ReportError> {
    ensure_font()?;
    let data = PlotData::new(results, views);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        draw(&root, &data).map_err(|e| ReportError::Plot { what: "plot.svg", message: e.to_string() })?;
        root.present().map_err(|e| ReportError::Plot { what: "plot.svg", message: e.to_string() })?;
    }
    Ok(svg)
}

/// The plot as PNG bytes (8-bit RGB, [`PLOT_SIZE`]).
pub fn render_png(results: &CaseResults, views: &[LayerView]) -> Result<Vec<u8>, ReportError> {
    ensure_font()?;
    let data = PlotData::new(results, views);
    let (w, h) = PLOT_SIZE;
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, PLOT_SIZE).into_drawing_area();
        draw(&root, &data).map_err(|e| ReportError::Plot { what: "plot.png", message: e.to_string() })?;
        root.present().map_err(|e| ReportError::Plot { what: "plot.png", message: e.to_string() })?;
    }
    let png_err = |e: png::EncodingError| ReportError::Plot { what: "plot.png", message: e.to_string() };
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(png_err)?;
        writer.write_image_data(&rgb).map_err(png_err)?;
        writer.finish().map_err(png_err)?;
    }
    Ok(out)
}

/// One point of a panel.
struct Point {
    x: i32,
    /// `None`: NaN or infinite (drawn on the top edge).
    y: Option<f64>,
    group: Submodule,
    /// This panel's quantity failed (or the target had NaN/inf).
    failing: bool,
    /// The layer introduces error (it fails when fed its golden input too).
    introduced: bool,
}

/// One panel: a quantity against forward order.
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    points: Vec<Point>,
    /// (x, threshold + margin).
    limits: Vec<(i32, f64)>,
    /// The y range (log scale).
    range: (f64, f64),
}

impl Panel {
    fn new(title: &'static str, y_desc: &'static str, points: Vec<Point>, limits: Vec<(i32, f64)>) -> Self {
        let finite = points.iter().filter_map(|p| p.y).chain(limits.iter().map(|l| l.1)).filter(|v| v.is_finite() && *v > 0.0);
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let range = if lo.is_finite() && hi.is_finite() {
            // Values read from a file can be anywhere in f64. plotters' log axis counts its
            // decades as top / bottom, and steps through them for as long as that takes: a top
            // of inf, or a ratio that overflows, makes it loop (practically) forever. So the axis
            // keeps to [1e-150, 1e150] (points beyond are drawn on its edge).
            let (lo, hi) = (lo.clamp(1e-150, 1e150), hi.clamp(1e-150, 1e150));
            // A decade of room above (for the legend) and a factor below.
            (lo / 4.0, if hi / lo < 10.0 { hi * 10.0 } else { hi * 6.0 })
        } else {
            (1e-9, 1.0)
        };
        Panel { title, y_desc, points, limits, range }
    }

    /// A value's place on the y axis: clamped into the range (0 on the bottom edge).
    fn clamp(&self, y: f64) -> f64 {
        y.clamp(self.range.0, self.range.1)
    }
}

struct PlotData {
    title: String,
    labels: Vec<String>,
    panels: [Panel; 2],
    first: Option<i32>,
    checked: bool,
}

impl PlotData {
    fn new(results: &CaseResults, views: &[LayerView]) -> Self {
        let failed = |order: usize, quantity: Quantity| {
            results.layers.get(order).is_some_and(|l| l.records.iter().flat_map(|r| &r.failures).any(|f| f.quantity == quantity || f.quantity == Quantity::NonFinite))
        };
        let introduced = |order: usize| results.layers.get(order).is_some_and(|l| l.attribution == Some(layercheck_suite::attribution::Attribution::Introduced));
        let mut abs = Vec::new();
        let mut cos = Vec::new();
        let (mut abs_limits, mut cos_limits) = (Vec::new(), Vec::new());
        for v in views {
            let x = v.order as i32;
            if let Some(a) = v.abs_diff_l2 {
                abs.push(Point { x, y: Some(a).filter(|a| a.is_finite()), group: v.submodule, failing: failed(v.order, Quantity::AbsDiffL2), introduced: introduced(v.order) });
            }
            if let Some(c) = v.cos_mean {
                cos.push(Point { x, y: Some(1.0 - c).filter(|d| d.is_finite()), group: v.submodule, failing: failed(v.order, Quantity::CosMean), introduced: introduced(v.order) });
            }
            if let Some(allowed) = v.allowed {
                abs_limits.extend(allowed.abs_diff_l2.map(|a| (x, a)));
                cos_limits.extend(allowed.cos_mean.map(|c| (x, 1.0 - c)));
            }
        }
        let verdict = match case_verdict(results, views) {
            CaseVerdict::SetupError => "ERROR: not computed".to_string(),
            CaseVerdict::NothingRecorded => "nothing recorded".to_string(),
            CaseVerdict::Unchecked => "no thresholds".to_string(),
            CaseVerdict::Pass => "PASS".to_string(),
            CaseVerdict::Fail { failing, errors: 0, .. } => format!("FAIL: {failing} of {} layers", views.len()),
            CaseVerdict::Fail { failing, errors, .. } => format!("FAIL: {failing} of {} layers, {errors} not compared", views.len()),
        };
        PlotData {
            title: format!("{}  ({verdict})", results.case),
            labels: views.iter().map(|v| short_label(&v.key)).collect(),
            panels: [
                Panel::new("abs_diff_l2: L2 norm of |target - reference| per prompt (worst record)", "abs_diff_l2", abs, abs_limits),
                Panel::new("1 - cos_mean: 1 - mean per-token cosine per prompt (worst record)", "1 - cos_mean", cos, cos_limits),
            ],
            first: first_divergent(views).map(|v| v.order as i32),
            checked: views.iter().any(|v| v.verdict != Verdict::Unchecked),
        }
    }
}

fn group_color(g: Submodule) -> RGBColor {
    match g {
        Submodule::Embedding => RGBColor(117, 64, 160),
        Submodule::Ln => RGBColor(0, 114, 178),
        Submodule::Attn => RGBColor(230, 140, 0),
        Submodule::Ff => RGBColor(0, 158, 115),
        Submodule::Output => RGBColor(40, 40, 40),
        Submodule::Other => RGBColor(204, 121, 167),
    }
}

/// Runs `$body` with `$data` (a marker at a data point) and `$legend` (the same marker at a
/// legend position) bound to the marker of group `$g`: colour and shape both differ, so groups
/// read apart in grey too. (A macro: each shape is its own element type.)
macro_rules! with_marker {
    ($db:ty, $g:expr, $data:ident, $legend:ident, $body:expr) => {{
        let color = group_color($g);
        match $g {
            Submodule::Ln => {
                let $data = move |c: (i32, f64)| Circle::new(c, 4, color.filled());
                let $legend = move |c: (i32, i32)| Circle::new(c, 4, color.filled());
                $body
            }
            Submodule::Attn => {
                let $data = move |c: (i32, f64)| TriangleMarker::new(c, 5, color.filled());
                let $legend = move |c: (i32, i32)| TriangleMarker::new(c, 5, color.filled());
                $body
            }
            Submodule::Ff => {
                let $data = move |c: (i32, f64)| EmptyElement::<_, $db>::at(c) + Rectangle::new([(-4, -4), (4, 4)], color.filled());
                let $legend = move |c: (i32, i32)| EmptyElement::<_, $db>::at(c) + Rectangle::new([(-4, -4), (4, 4)], color.filled());
                $body
            }
            Submodule::Output => {
                let $data = move |c: (i32, f64)| Circle::new(c, 5, color.stroke_width(2));
                let $legend = move |c: (i32, i32)| Circle::new(c, 5, color.stroke_width(2));
                $body
            }
            Submodule::Embedding | Submodule::Other => {
                let $data = move |c: (i32, f64)| Cross::new(c, 5, color.stroke_width(2));
                let $legend = move |c: (i32, i32)| Cross::new(c, 5, color.stroke_width(2));
                $body
            }
        }
    }};
}

const NONFINITE: RGBColor = RGBColor(200, 0, 0);

/// Width of the legend column on the right, in pixels (outside the panels, so it hides no data).
const LEGEND_WIDTH: i32 = 200;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, data: &PlotData) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let root = root.titled(&data.title, (FAMILY, 22))?;
    let (width, _) = root.dim_in_pixel();
    let (plots, legend) = root.split_horizontally(width as i32 - LEGEND_WIDTH);
    let areas = plots.split_evenly((2, 1));
    let n = data.labels.len().max(1) as i32;
    for (area, panel) in areas.iter().zip(&data.panels) {
        let (lo, hi) = panel.range;
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .caption(panel.title, (FAMILY, 16))
            .x_label_area_size(38)
            .y_label_area_size(78)
            .build_cartesian_2d(-1i32..n, (lo..hi).log_scale())?;
        let labels = &data.labels;
        let x_fmt = |x: &i32| usize::try_from(*x).ok().and_then(|i| labels.get(i).cloned()).unwrap_or_default();
        let y_fmt = |y: &f64| format!("{y:.0e}");
        chart
            .configure_mesh()
            .x_labels(24.min(labels.len().max(1)))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .x_desc("module, in forward order (Ln: decoder layer n)")
            .y_desc(panel.y_desc)
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()?;

        // Growth with depth: a light line through every finite point.
        let line: Vec<(i32, f64)> = panel.points.iter().filter_map(|p| p.y.map(|y| (p.x, panel.clamp(y)))).collect();
        chart.draw_series(LineSeries::new(line, RGBColor(190, 190, 190)))?;
        if !panel.limits.is_empty() {
            let limits: Vec<(i32, f64)> = panel.limits.iter().map(|&(x, y)| (x, panel.clamp(y))).collect();
            chart.draw_series(DashedLineSeries::new(limits, 6, 4, BLACK.stroke_width(1)))?;
        }
        if let Some(first) = data.first {
            chart.draw_series(DashedLineSeries::new(vec![(first, lo), (first, hi)], 5, 5, NONFINITE.stroke_width(1)))?;
        }
        for g in Submodule::ALL {
            let points: Vec<(i32, f64)> = panel.points.iter().filter(|p| p.group == g).filter_map(|p| p.y.map(|y| (p.x, panel.clamp(y)))).collect();
            with_marker!(DB, g, data, _legend, {
                chart.draw_series(points.into_iter().map(data))?;
            });
        }
        let rings = panel.points.iter().filter(|p| p.failing).filter_map(|p| p.y.map(|y| (p.x, panel.clamp(y))));
        chart.draw_series(rings.map(|c| Circle::new(c, 9, NONFINITE.stroke_width(2))))?;
        let squares = panel.points.iter().filter(|p| p.introduced).filter_map(|p| p.y.map(|y| (p.x, panel.clamp(y))));
        chart.draw_series(squares.map(|c| EmptyElement::at(c) + Rectangle::new([(-13, -13), (13, 13)], BLACK.stroke_width(3))))?;
        let top = panel.points.iter().filter(|p| p.y.is_none()).map(|p| (p.x, hi));
        chart.draw_series(top.map(|c| TriangleMarker::new(c, 7, NONFINITE.filled())))?;
    }
    draw_legend(&legend, data)
}

/// The legend column: one entry per thing drawn.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, data: &PlotData) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let points = || data.panels.iter().flat_map(|p| &p.points);
    let style = TextStyle::from((FAMILY, 14).into_font()).color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    let (x, mut y) = (14, 60);
    let step = 24;
    area.draw_text("legend", &TextStyle::from((FAMILY, 15).into_font()).color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center)), (x, y))?;
    y += step + 4;
    let entry = |area: &DrawingArea<DB, Shift>, label: &str, y: &mut i32| -> Result<(i32, i32), DrawingAreaErrorKind<DB::ErrorType>> {
        area.draw_text(label, &style, (x + 36, *y))?;
        let at = (x + 14, *y);
        *y += step;
        Ok(at)
    };
    if data.panels.iter().any(|p| !p.limits.is_empty()) {
        let (cx, cy) = entry(area, "threshold + margin", &mut y)?;
        area.draw(&PathElement::new(vec![(cx - 13, cy), (cx - 3, cy)], BLACK.stroke_width(1)))?;
        area.draw(&PathElement::new(vec![(cx + 2, cy), (cx + 12, cy)], BLACK.stroke_width(1)))?;
    }
    if data.first.is_some() {
        let (cx, cy) = entry(area, "first divergent layer", &mut y)?;
        area.draw(&PathElement::new(vec![(cx, cy - 8), (cx, cy - 3)], NONFINITE.stroke_width(1)))?;
        area.draw(&PathElement::new(vec![(cx, cy + 2), (cx, cy + 7)], NONFINITE.stroke_width(1)))?;
    }
    for g in Submodule::ALL {
        if points().any(|p| p.group == g) {
            let at = entry(area, g.name(), &mut y)?;
            with_marker!(DB, g, _data, legend, {
                area.draw(&legend(at))?;
            });
        }
    }
    if data.checked {
        let at = entry(area, "failing", &mut y)?;
        area.draw(&Circle::new(at, 8, NONFINITE.stroke_width(2)))?;
    }
    if points().any(|p| p.introduced) {
        let at = entry(area, "introduces error", &mut y)?;
        area.draw(&(EmptyElement::at(at) + Rectangle::new([(-9, -9), (9, 9)], BLACK.stroke_width(3))))?;
    }
    if points().any(|p| p.y.is_none()) {
        let at = entry(area, "NaN / inf (top edge)", &mut y)?;
        area.draw(&TriangleMarker::new(at, 6, NONFINITE.filled()))?;
    }
    area.draw(&Rectangle::new([(x - 6, 44), (LEGEND_WIDTH - 8, y - step / 2 + 6)], RGBColor(170, 170, 170).stroke_width(1)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use layercheck_suite::matrix::Margins;
    use layercheck_suite::outcome::CaseOutcome;
    use crate::report::layers::layer_views;

    /// A case that could not be computed has no layers; its plot must not say PASS.
    #[test]
    fn the_title_of_a_case_that_was_not_computed_says_so() {
        let outcome = CaseOutcome::failed("m::cpu-f16::fwd::b1::s8", "golden file missing".into());
        let results = CaseResults::from_outcome(&outcome, &Margins::default());
        let data = PlotData::new(&results, &layer_views(&results));
        assert_eq!(data.title, "m::cpu-f16::fwd::b1::s8  (ERROR: not computed)");
    }
}
