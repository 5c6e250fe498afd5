//! numpy's `np.percentile(values, q)` with its default method `"linear"`, bit for bit.

/// `np.percentile(values, q)` (method `"linear"`, Hyndman & Fan 7): the virtual index
/// `(n - 1) * (q / 100)` between the sorted neighbours `a`, `b` with weight `g`, interpolated as
/// numpy's `_lerp` does (`a + (b - a) * g`, or `b - (b - a) * (1 - g)` when `g >= 0.5`). NaN when
/// any value is NaN (numpy's rule); `None` for no values (numpy raises `IndexError`). Infinite
/// neighbours interpolate to NaN or ±inf as in numpy.
pub fn percentile_linear(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    if values.iter().any(|v| v.is_nan()) {
        return Some(f64::NAN);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let virtual_index = (n - 1) as f64 * (q / 100.0);
    if virtual_index >= (n - 1) as f64 {
        return Some(sorted[n - 1]);
    }
    if virtual_index < 0.0 {
        return Some(sorted[0]);
    }
    let previous = virtual_index.floor();
    let gamma = virtual_index - previous;
    let (a, b) = (sorted[previous as usize], sorted[previous as usize + 1]);
    let diff = b - a;
    Some(if gamma >= 0.5 { b - diff * (1.0 - gamma) } else { a + diff * gamma })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy() {
        // Expected values printed by numpy 2.4: np.percentile(v, q) for each case.
        let v = [3.0, 1.0, 2.0, 10.0, 7.5];
        assert_eq!(percentile_linear(&v, 99.0), Some(9.9));
        assert_eq!(percentile_linear(&v, 50.0), Some(3.0));
        assert_eq!(percentile_linear(&v, 1.0), Some(1.04));
        assert_eq!(percentile_linear(&v, 0.0), Some(1.0));
        assert_eq!(percentile_linear(&v, 100.0), Some(10.0));
        assert_eq!(percentile_linear(&[4.0], 99.0), Some(4.0));
        assert_eq!(percentile_linear(&[], 99.0), None);
        assert!(percentile_linear(&[1.0, f64::NAN], 99.0).unwrap().is_nan());
        assert!(percentile_linear(&[1.0, f64::INFINITY, 2.0], 99.0).unwrap().is_nan());
        assert_eq!(percentile_linear(&[1.0, f64::INFINITY, 2.0], 1.0), Some(1.02));
        let many: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64 / 7.0).collect();
        assert_eq!(percentile_linear(&many, 99.0), Some(141.28714285714284));
    }
}
