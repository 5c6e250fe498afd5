//! Compensated (Neumaier) summation in f64, for sums over many values or many partial sums.

/// A running f64 sum with Neumaier compensation: the error stays near one rounding whatever the
/// number of terms. Non-finite terms propagate as in plain summation (`inf`, `NaN`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    /// An empty sum (0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one term.
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// The sum of the terms added so far.
    pub fn value(&self) -> f64 {
        if self.sum.is_finite() { self.sum + self.compensation } else { self.sum }
    }
}

impl Extend<f64> for CompensatedSum {
    fn extend<I: IntoIterator<Item = f64>>(&mut self, iter: I) {
        for x in iter {
            self.add(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensates_cancellation_and_propagates_non_finite() {
        let mut s = CompensatedSum::new();
        s.extend([1.0, 1e100, 1.0, -1e100]);
        assert_eq!(s.value(), 2.0);
        let mut s = CompensatedSum::new();
        s.extend(std::iter::repeat_n(0.1, 1_000_000));
        assert!((s.value() - 100_000.0).abs() < 1e-9);
        let mut s = CompensatedSum::new();
        s.extend([1.0, f64::INFINITY, 2.0]);
        assert_eq!(s.value(), f64::INFINITY);
        let mut s = CompensatedSum::new();
        s.extend([f64::MAX, f64::MAX]);
        assert_eq!(s.value(), f64::INFINITY);
        let mut s = CompensatedSum::new();
        s.extend([1.0, f64::NAN]);
        assert!(s.value().is_nan());
    }
}
