//! Thresholds of the logits-level verdict (`layercheck_suite::logits`): per-token `ce`,
//! `diff_mean` and `kl` of the baseline runs, pooled over every token of every case and prompt,
//! each at the percentile of the per-shape thresholds.
//!
//! JSON, inside the `"layercheck"` section:
//!
//! ```json
//! "logits": {"tokens": 1184, "top_k": 20, "ce": 2.98, "diff_mean": 0.0004, "kl": 2e-6}
//! ```
//!
//! A file without it (the Python tools' own) is read for `test_decoders.py`'s whole-model keys
//! instead: top-level numbers `ce` and `diff_mean`, as `get_thresholds.py` writes them without
//! `--layer_io` from `generate_metrics.py`'s CSV files.

use super::percentile::percentile_linear;
use crate::formats::py_json::PyJson;

/// The logits thresholds of one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitsThresholds {
    /// Tokens they were derived from.
    pub tokens: u64,
    /// The number of reference logits the metrics took.
    pub top_k: u64,
    pub ce: f64,
    pub diff_mean: f64,
    pub kl: f64,
}

/// Per-token values of the baseline, pooled.
#[derive(Debug, Clone, Default)]
pub struct LogitsPool {
    ce: Vec<f64>,
    diff_mean: Vec<f64>,
    kl: Vec<f64>,
    top_k: Option<u64>,
}

impl LogitsPool {
    /// Adds one file's tokens, `(ce, diff_mean, kl)` each, computed on the `top_k` largest logits.
    /// Files of another `top_k` than the first are an error naming both.
    pub fn add(&mut self, tokens: impl IntoIterator<Item = (f64, f64, f64)>, top_k: u64) -> Result<(), String> {
        match self.top_k {
            Some(k) if k != top_k => return Err(format!("logits metrics on the top {top_k} logits cannot pool with others on the top {k}")),
            _ => self.top_k = Some(top_k),
        }
        for (ce, diff, kl) in tokens {
            self.ce.push(ce);
            self.diff_mean.push(diff);
            self.kl.push(kl);
        }
        Ok(())
    }

    /// The thresholds at percentile `p`, or `None` when no token was added.
    pub fn thresholds(&self, p: f64) -> Option<LogitsThresholds> {
        Some(LogitsThresholds {
            tokens: self.ce.len() as u64,
            top_k: self.top_k?,
            ce: percentile_linear(&self.ce, p)?,
            diff_mean: percentile_linear(&self.diff_mean, p)?,
            kl: percentile_linear(&self.kl, p)?,
        })
    }
}

impl LogitsThresholds {
    pub(crate) fn to_py_json(self) -> PyJson {
        PyJson::Object(vec![
            ("tokens".into(), PyJson::Int(self.tokens as i64)),
            ("top_k".into(), PyJson::Int(self.top_k as i64)),
            ("ce".into(), PyJson::Float(self.ce)),
            ("diff_mean".into(), PyJson::Float(self.diff_mean)),
            ("kl".into(), PyJson::Float(self.kl)),
        ])
    }

    pub(crate) fn from_py_json(v: &PyJson) -> Result<Self, String> {
        let num = |k: &str| v.get(k).and_then(PyJson::as_f64).ok_or_else(|| format!("\"logits\" has no \"{k}\" number"));
        let count = |k: &str| num(k).and_then(|x| if x >= 0.0 && x.fract() == 0.0 && x < i64::MAX as f64 { Ok(x as u64) } else { Err(format!("\"logits\": {k} is {x}, not a count")) });
        Ok(LogitsThresholds { tokens: count("tokens")?, top_k: count("top_k")?, ce: num("ce")?, diff_mean: num("diff_mean")?, kl: num("kl")? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_percentiles_round_trip_through_json() {
        let mut pool = LogitsPool::default();
        assert!(pool.thresholds(100.0).is_none());
        pool.add((0..=100).map(|i| (2.0 + i as f64 / 100.0, i as f64 * 1e-5, i as f64 * 1e-6)), 20).unwrap();
        let t = pool.thresholds(99.0).unwrap();
        assert_eq!((t.tokens, t.top_k), (101, 20));
        assert!((t.ce - 2.99).abs() < 1e-12 && (t.diff_mean - 99e-5).abs() < 1e-15 && (t.kl - 99e-6).abs() < 1e-15);
        assert!(pool.add([(1.0, 0.0, 0.0)], 10).unwrap_err().contains("top 10"));
        let back = LogitsThresholds::from_py_json(&PyJson::parse(&t.to_py_json().to_python_json()).unwrap()).unwrap();
        assert_eq!(back, t);
        let bad = PyJson::parse(r#"{"tokens": -1, "top_k": 20, "ce": 1.0, "diff_mean": 0.1, "kl": 0.0}"#).unwrap();
        assert!(LogitsThresholds::from_py_json(&bad).unwrap_err().contains("tokens is -1"));
    }
}
