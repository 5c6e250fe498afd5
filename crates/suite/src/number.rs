//! How numbers are written for people, in every failure message, report and command-line line:
//! one rendering per kind of number, so that a value reads the same wherever it is shown.

/// A metric value or threshold: scientific with 5 significant digits (`5.1000e-1`); `NaN`,
/// `inf`, `-inf`.
pub fn sci(v: f64) -> String {
    if v.is_finite() { format!("{v:.4e}") } else { nonfinite(v) }
}

/// A cosine: 9 decimals (`0.999999123`), which tell apart the cosines of float16 runs near 1.
pub fn cos(v: f64) -> String {
    if v.is_finite() { format!("{v:.9}") } else { nonfinite(v) }
}

/// A setting as written by hand: `0.05`, `1e-6` (margins, percentiles).
pub fn setting(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 { format!("{v:e}") } else { format!("{v}") }
}

/// A share as a percentage with 2 decimals: `0.0125` is `1.25%`.
pub fn percent(share: f64) -> String {
    if share.is_finite() { format!("{:.2}%", 100.0 * share) } else { nonfinite(share) }
}

/// `render(v)`, or `-` when there is no value.
pub fn or_dash(v: Option<f64>, render: fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), render)
}

/// `render(v)`, or `none` when there is no threshold.
pub fn or_none(v: Option<f64>, render: fn(f64) -> String) -> String {
    v.map_or_else(|| "none".into(), render)
}

fn nonfinite(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_number_has_one_rendering() {
        assert_eq!(sci(0.51), "5.1000e-1");
        assert_eq!(sci(1.23456789e-7), "1.2346e-7");
        assert_eq!(cos(0.9999991234567), "0.999999123");
        assert_eq!((setting(0.05), setting(1e-6), setting(0.0)), ("0.05".to_string(), "1e-6".to_string(), "0".to_string()));
        assert_eq!(percent(0.0125), "1.25%");
        for render in [sci, cos, percent] {
            assert_eq!((render(f64::NAN), render(f64::INFINITY), render(f64::NEG_INFINITY)), ("NaN".into(), "inf".into(), "-inf".into()));
        }
        assert_eq!((or_dash(None, sci), or_none(None, sci), or_dash(Some(2.0), sci)), ("-".to_string(), "none".to_string(), "2.0000e0".to_string()));
    }
}
