//! [`LayerSummary`]: the per-layer numbers people read, as mergeable f64 sums plus derived values.

/// Sums and extremes of one layer's comparison (or of one batch item of it), accumulated in f64.
///
/// The stored fields are sums, so summaries merge exactly ([`LayerSummary::merge`]); the values
/// people read are methods. `abs_diff` values are the f32 element metric of [`super::abs_diff`].
///
/// The cos fields (`cos_sum`, `cos_sum_finite`, `cos_min`, `cos_argmin`, `cos_nan`) are of the
/// *true* per-row cosine, [`super::true_cos_sim`] (both sides in f64; at most 1 up to f64
/// rounding), not of the seed's [`super::cos_sim`] (f16 side normalised in f16; can exceed 1 by
/// about 1e-4). The seed's cos values travel separately ([`super::Comparison::cos_sim`], seed CSV
/// files, the compact file's `cos_sim` array), and the seed's `cos_sim_avg` reduction is taken
/// from them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerSummary {
    /// Number of elements compared.
    pub elements: u64,
    /// Number of rows (tokens): elements / last dim; one cos value each.
    pub rows: u64,
    /// Sum of `abs_diff²` (NaN if any `abs_diff` is NaN).
    pub abs_diff_sq_sum: f64,
    /// Sum of `abs_diff²` over finite `abs_diff` values only.
    pub abs_diff_sq_sum_finite: f64,
    /// Sum of `abs_diff`.
    pub abs_diff_sum: f64,
    /// Largest `abs_diff` (NaN if any is NaN).
    pub abs_diff_max: f64,
    /// Sum of `reference²`.
    pub reference_sq_sum: f64,
    /// Sum of the per-row true cos values (NaN if any is NaN).
    pub cos_sum: f64,
    /// Sum of the per-row true cos values with NaN counted as 0 (`nan_to_num`).
    pub cos_sum_finite: f64,
    /// Smallest per-row true cos (NaN if any is NaN).
    pub cos_min: f64,
    /// Row-major index of the row of `cos_min` over the leading dims (the first such row; the
    /// first NaN row when there is one). See [`unravel_index`].
    pub cos_argmin: u64,
    /// NaN elements of the reference.
    pub reference_nan: u64,
    /// ±inf elements of the reference.
    pub reference_inf: u64,
    /// NaN elements of the target.
    pub target_nan: u64,
    /// ±inf elements of the target.
    pub target_inf: u64,
    /// NaN elements of `abs_diff` (a NaN on either side, or `inf - inf`).
    pub abs_diff_nan: u64,
    /// +inf elements of `abs_diff`.
    pub abs_diff_inf: u64,
    /// NaN rows of the true cos.
    pub cos_nan: u64,
}

/// Names of [`LayerSummary`]'s stored fields in the order of [`LayerSummary::to_array`], as the
/// compact format stores them.
pub const SUMMARY_FIELDS: [&str; 18] = [
    "elements",
    "rows",
    "abs_diff_sq_sum",
    "abs_diff_sq_sum_finite",
    "abs_diff_sum",
    "abs_diff_max",
    "reference_sq_sum",
    "cos_sum",
    "cos_sum_finite",
    "cos_min",
    "cos_argmin",
    "reference_nan",
    "reference_inf",
    "target_nan",
    "target_inf",
    "abs_diff_nan",
    "abs_diff_inf",
    "cos_nan",
];

impl LayerSummary {
    /// What the suite's verdict sees of this summary: batch item `item` of record `record`.
    pub fn observation(&self, record: &str, item: usize) -> layercheck_suite::verdict::Observation {
        layercheck_suite::verdict::Observation {
            record: record.to_string(),
            item,
            abs_diff_l2: self.abs_diff_l2(),
            abs_diff_max: self.abs_diff_max,
            cos_mean: self.cos_mean(),
            cos_min: self.cos_min,
            worst_token: self.cos_argmin,
            target_nonfinite: self.target_nan + self.target_inf,
            reference_nonfinite: self.reference_nan + self.reference_inf,
        }
    }

    /// The summary of nothing: the identity of [`LayerSummary::merge`].
    pub fn empty() -> Self {
        LayerSummary {
            elements: 0,
            rows: 0,
            abs_diff_sq_sum: 0.0,
            abs_diff_sq_sum_finite: 0.0,
            abs_diff_sum: 0.0,
            abs_diff_max: f64::NEG_INFINITY,
            reference_sq_sum: 0.0,
            cos_sum: 0.0,
            cos_sum_finite: 0.0,
            cos_min: f64::INFINITY,
            cos_argmin: 0,
            reference_nan: 0,
            reference_inf: 0,
            target_nan: 0,
            target_inf: 0,
            abs_diff_nan: 0,
            abs_diff_inf: 0,
            cos_nan: 0,
        }
    }

    /// Appends `other` (the rows that follow this one's): sums add, extremes combine (NaN wins,
    /// then the smaller cos; ties keep the earlier row), `other`'s rows are numbered after ours.
    pub fn merge(&mut self, other: &LayerSummary) {
        let offset = self.rows;
        self.elements += other.elements;
        self.rows += other.rows;
        self.abs_diff_sq_sum += other.abs_diff_sq_sum;
        self.abs_diff_sq_sum_finite += other.abs_diff_sq_sum_finite;
        self.abs_diff_sum += other.abs_diff_sum;
        self.abs_diff_max = max_nan(self.abs_diff_max, other.abs_diff_max);
        self.reference_sq_sum += other.reference_sq_sum;
        self.cos_sum += other.cos_sum;
        self.cos_sum_finite += other.cos_sum_finite;
        if other.rows > 0 && !self.cos_min.is_nan() && (other.cos_min.is_nan() || other.cos_min < self.cos_min) {
            self.cos_min = other.cos_min;
            self.cos_argmin = offset + other.cos_argmin;
        }
        self.reference_nan += other.reference_nan;
        self.reference_inf += other.reference_inf;
        self.target_nan += other.target_nan;
        self.target_inf += other.target_inf;
        self.abs_diff_nan += other.abs_diff_nan;
        self.abs_diff_inf += other.abs_diff_inf;
        self.cos_nan += other.cos_nan;
    }

    /// L2 norm of `abs_diff` over the tensor: `sqrt(sum abs_diff²)`. NaN if any element is NaN,
    /// +inf if any is inf.
    pub fn abs_diff_l2(&self) -> f64 {
        self.abs_diff_sq_sum.sqrt()
    }

    /// Mean of `abs_diff` (NaN if any element is NaN).
    pub fn abs_diff_mean(&self) -> f64 {
        self.abs_diff_sum / self.elements as f64
    }

    /// L2 norm of the reference.
    pub fn reference_l2(&self) -> f64 {
        self.reference_sq_sum.sqrt()
    }

    /// `||reference - target|| / ||reference||`; 0 when both norms are 0, +inf when only the
    /// reference's is. NaN with any NaN.
    pub fn rel_l2(&self) -> f64 {
        let (d, r) = (self.abs_diff_sq_sum, self.reference_sq_sum);
        if d == 0.0 && r == 0.0 { 0.0 } else { (d / r).sqrt() }
    }

    /// Signal to quantisation-noise ratio in dB: `10 log10(sum reference² / sum abs_diff²)`;
    /// +inf when there is no difference (even for a zero reference), -inf for a zero reference
    /// with a difference. NaN with any NaN.
    pub fn sqnr_db(&self) -> f64 {
        let (d, r) = (self.abs_diff_sq_sum, self.reference_sq_sum);
        if d == 0.0 && r == 0.0 { f64::INFINITY } else { 10.0 * (r / d).log10() }
    }

    /// Mean of the per-row true cos (NaN if any row is NaN): at most 1 up to f64 rounding, and
    /// 1 within 1e-15 for identical sides.
    pub fn cos_mean(&self) -> f64 {
        self.cos_sum / self.rows as f64
    }

    /// Whether anything non-finite was seen: NaN or inf on either side, in `abs_diff` or in cos.
    /// The verdict-relevant values are then NaN or infinite and must not pass a threshold.
    pub fn has_nonfinite(&self) -> bool {
        self.reference_nan + self.reference_inf + self.target_nan + self.target_inf + self.abs_diff_nan + self.abs_diff_inf + self.cos_nan > 0
    }

    /// The square of the seed's `abs_diff` threshold reduction of this layer's values,
    /// `np.linalg.norm(np.nan_to_num(values))`: NaN counted as 0 and inf as 1.797e308 (whose
    /// square overflows, so any inf gives +inf). Squares, so that layers' values can be pooled.
    pub fn seed_abs_diff_sq_sum(&self) -> f64 {
        if self.abs_diff_inf > 0 { f64::INFINITY } else { self.abs_diff_sq_sum_finite }
    }

    /// Mean of the per-row true cos with NaN rows counted as 0 (`np.mean(np.nan_to_num(values))`
    /// of the true cos). Not the seed's `cos_sim_avg`, which is of the seed's cos values
    /// ([`super::Comparison::cos_sim`]).
    pub fn cos_mean_nan_as_zero(&self) -> f64 {
        self.cos_sum_finite / self.rows as f64
    }

    /// The stored fields as f64, in [`SUMMARY_FIELDS`] order (counts are exact below 2^53).
    pub fn to_array(&self) -> [f64; 18] {
        [
            self.elements as f64,
            self.rows as f64,
            self.abs_diff_sq_sum,
            self.abs_diff_sq_sum_finite,
            self.abs_diff_sum,
            self.abs_diff_max,
            self.reference_sq_sum,
            self.cos_sum,
            self.cos_sum_finite,
            self.cos_min,
            self.cos_argmin as f64,
            self.reference_nan as f64,
            self.reference_inf as f64,
            self.target_nan as f64,
            self.target_inf as f64,
            self.abs_diff_nan as f64,
            self.abs_diff_inf as f64,
            self.cos_nan as f64,
        ]
    }

    /// The inverse of [`LayerSummary::to_array`].
    pub fn from_array(a: &[f64; 18]) -> Self {
        let n = |x: f64| x as u64;
        LayerSummary {
            elements: n(a[0]),
            rows: n(a[1]),
            abs_diff_sq_sum: a[2],
            abs_diff_sq_sum_finite: a[3],
            abs_diff_sum: a[4],
            abs_diff_max: a[5],
            reference_sq_sum: a[6],
            cos_sum: a[7],
            cos_sum_finite: a[8],
            cos_min: a[9],
            cos_argmin: n(a[10]),
            reference_nan: n(a[11]),
            reference_inf: n(a[12]),
            target_nan: n(a[13]),
            target_inf: n(a[14]),
            abs_diff_nan: n(a[15]),
            abs_diff_inf: n(a[16]),
            cos_nan: n(a[17]),
        }
    }
}

/// The larger of two values, NaN if either is NaN.
fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

/// The multi-index of row-major flat `index` in `shape` (e.g. `cos_argmin` in the cos shape
/// `[B, S]` gives `[b, s]`); `None` when out of range.
pub fn unravel_index(index: u64, shape: &[i64]) -> Option<Vec<i64>> {
    let total: i64 = shape.iter().product();
    if index >= total.max(0) as u64 {
        return None;
    }
    let mut rest = index as i64;
    let mut out = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        out[i] = rest % d;
        rest /= d;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rows: u64, cos_min: f64, cos_argmin: u64) -> LayerSummary {
        LayerSummary { rows, elements: rows * 2, cos_min, cos_argmin, ..LayerSummary::empty() }
    }

    #[test]
    fn merge_numbers_rows_after_ours_and_lets_nan_win() {
        let mut a = summary(3, 0.9, 1);
        a.merge(&summary(4, 0.8, 2));
        assert_eq!((a.rows, a.elements, a.cos_min, a.cos_argmin), (7, 14, 0.8, 5));
        a.merge(&summary(2, 0.8, 0));
        assert_eq!(a.cos_argmin, 5, "a tie keeps the earlier row");
        a.merge(&summary(2, f64::NAN, 1));
        assert!(a.cos_min.is_nan());
        assert_eq!(a.cos_argmin, 10);
        a.merge(&summary(2, f64::NAN, 0));
        assert_eq!(a.cos_argmin, 10, "the first NaN row stays");
        let mut e = LayerSummary::empty();
        e.merge(&summary(3, 0.5, 2));
        assert_eq!((e.cos_min, e.cos_argmin), (0.5, 2));
    }

    #[test]
    fn derived_values_of_degenerate_sums() {
        let zero = LayerSummary { elements: 4, rows: 2, abs_diff_max: 0.0, ..LayerSummary::empty() };
        assert_eq!(zero.rel_l2(), 0.0);
        assert_eq!(zero.sqnr_db(), f64::INFINITY);
        let only_diff = LayerSummary { abs_diff_sq_sum: 4.0, ..zero };
        assert_eq!(only_diff.rel_l2(), f64::INFINITY);
        assert_eq!(only_diff.sqnr_db(), f64::NEG_INFINITY);
        let both = LayerSummary { abs_diff_sq_sum: 1.0, reference_sq_sum: 100.0, ..zero };
        assert!((both.sqnr_db() - 20.0).abs() < 1e-12);
        assert!((both.rel_l2() - 0.1).abs() < 1e-15);
        let inf = LayerSummary { abs_diff_inf: 1, abs_diff_sq_sum_finite: 9.0, ..zero };
        assert_eq!(inf.seed_abs_diff_sq_sum().sqrt(), f64::INFINITY);
        assert!(inf.has_nonfinite());
        assert!(!zero.has_nonfinite());
    }

    #[test]
    fn array_round_trip_and_unravel() {
        let s = LayerSummary { elements: 12, rows: 3, abs_diff_sq_sum: 0.25, cos_min: f64::NAN, cos_argmin: 2, cos_nan: 1, ..LayerSummary::empty() };
        let back = LayerSummary::from_array(&s.to_array());
        assert_eq!(back.to_array().map(f64::to_bits), s.to_array().map(f64::to_bits));
        assert_eq!(unravel_index(5, &[2, 3]), Some(vec![1, 2]));
        assert_eq!(unravel_index(0, &[]), Some(vec![]));
        assert_eq!(unravel_index(6, &[2, 3]), None);
    }
}
