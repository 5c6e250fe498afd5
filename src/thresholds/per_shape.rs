//! layercheck's thresholds per (batch size, sequence length), derived by percentiles over prompts.
//!
//! The seed's thresholds pool every value of every prompt and step into one number per layer: an
//! L2 norm over all of them, which is then compared with an L2 norm over one run (spec §5). A
//! threshold means something only when it is applied to the quantity it was derived from, so
//! these are kept per shape and per prompt:
//!
//! - An *observation* is one prompt's share of one record: a record (one forward call of a module:
//!   a plain key or one `.iter-N`) whose tensor has at least 3 dims `[B, ..]` gives one
//!   observation per batch item; one of fewer dims gives one. A seed CSV file that stacks several
//!   tensors (the seed's tuple outputs) gives one per stacked tensor (and per batch item in each).
//! - Observations are grouped by the case's (batch size, sequence length) and by layer key with
//!   `.iter-N` removed, so in generate mode the first call and the decode steps pool, as in the
//!   seed.
//! - Per group, with `p` the percentile (default 99, numpy's linear method): "larger is worse"
//!   quantities get the p-th percentile: `abs_diff_l2` (L2 norm of the prompt's abs_diff),
//!   `abs_diff_max`, `rel_l2`; "smaller is worse" ones the (100 - p)-th: `sqnr_db`, `cos_mean`
//!   (mean of the prompt's per-token cos), `cos_min`. `rel_l2` and `sqnr_db` need the reference's
//!   norm, which only compact files keep; a quantity without observations is left out.
//! - Which cos: from compact files, `cos_mean` and `cos_min` are of the **true** cosine (the
//!   summaries' [`LayerSummary::cos_mean`] and `cos_min`, both sides in f64, see
//!   [`crate::metrics`]): at most 1 up to f64 rounding, and the same quantity the test suite's
//!   verdict observes, so a perfect target never fails them. Seed CSV files hold only the seed's
//!   cos (f16 side normalised in f16: the true cos plus a rounding error of either sign, about
//!   1e-5 to 1e-4, so it can exceed 1), so from them these two are of the seed's cos *mirrored at
//!   1*: each prompt's mean `m` counts as `1 - |1 - m|`, and its min as the min over tokens of
//!   `1 - |1 - c|`. A value above 1 is no lower bound on a cosine that never exceeds 1 (such a
//!   threshold could never be met); its distance from 1 is, for a healthy f16 run, mostly the
//!   seed's rounding, which is far larger than the true deficit (about 1e-7), so the mirrored
//!   thresholds are looser lower bounds on the true cos. Derive tight thresholds for the test
//!   suite from compact files (`layercheck generate --format compact`, as
//!   `scripts/derive-thresholds` does).
//! - A NaN observation makes its threshold NaN (numpy's rule), and `nonfinite_observations`
//!   counts the non-finite ones: a consumer must treat a NaN threshold as "no valid threshold",
//!   never as a pass.
//!
//! JSON, under the top-level key `"layercheck"` (the seed's keys stay as they are, so Python
//! consumers still read the file):
//!
//! ```json
//! "layercheck": {"format": "layercheck-thresholds/1", "percentile": 99.0, "shapes": {
//!   "batch-size-1_seq-length-64": {"batch_size": 1, "seq_length": 64, "layers": {
//!     "model.base_model.layers0.ln": {"observations": 12, "nonfinite_observations": 0,
//!       "abs_diff_l2": 0.41, "abs_diff_max": 0.02, "rel_l2": 0.001, "sqnr_db": 58.1,
//!       "cos_mean": 0.99998, "cos_min": 0.9999}}}}}
//! ```

use super::bounds::mirrored_at_one;
use super::logits::LogitsThresholds;
use super::percentile::percentile_linear;
use crate::formats::py_json::PyJson;
use crate::metrics::LayerSummary;

/// The top-level key of the per-shape section.
pub const PER_SHAPE_KEY: &str = "layercheck";
/// Its `format` value.
pub const PER_SHAPE_FORMAT: &str = "layercheck-thresholds/1";

/// Per-shape thresholds of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct PerShapeThresholds {
    /// The percentile they were derived with (the upper one; lower quantities use 100 - p).
    pub percentile: f64,
    /// One entry per (batch size, sequence length), sorted by batch size, then sequence length.
    pub shapes: Vec<ShapeThresholds>,
    /// The logits-level thresholds, pooled over shapes (`super::logits`).
    pub logits: Option<LogitsThresholds>,
    /// The factor every threshold was widened by (`super::false_failures`; 1 when none).
    pub headroom: f64,
    /// The leave-one-prompt-out estimate of false failures, as written (`"false_failures"`).
    pub false_failures: Option<PyJson>,
}

/// The thresholds of one (batch size, sequence length).
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeThresholds {
    /// Batch size of the runs.
    pub batch_size: u64,
    /// Sequence length of the runs.
    pub seq_length: u64,
    /// Per layer key, in first-seen order.
    pub layers: Vec<(String, LayerThresholds)>,
}

/// One layer's per-prompt thresholds at one shape.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LayerThresholds {
    /// Number of observations (prompts x calls) behind the largest quantity list.
    pub observations: u64,
    /// NaN observations, and infinite differences (of the quantity with the most).
    pub nonfinite_observations: u64,
    /// p-th percentile of per-prompt `abs_diff` L2 norms.
    pub abs_diff_l2: Option<f64>,
    /// p-th percentile of per-prompt max `abs_diff`.
    pub abs_diff_max: Option<f64>,
    /// p-th percentile of per-prompt relative L2 (compact files only).
    pub rel_l2: Option<f64>,
    /// (100-p)-th percentile of per-prompt SQNR in dB (compact files only).
    pub sqnr_db: Option<f64>,
    /// (100-p)-th percentile of per-prompt mean cos (true cos from compact files, the seed's
    /// from CSV files; see the module doc).
    pub cos_mean: Option<f64>,
    /// (100-p)-th percentile of per-prompt min cos (same cos as `cos_mean`).
    pub cos_min: Option<f64>,
}

impl PerShapeThresholds {
    /// The thresholds of `key` at (`batch_size`, `seq_length`).
    pub fn get(&self, batch_size: u64, seq_length: u64, key: &str) -> Option<&LayerThresholds> {
        let shape = self.shapes.iter().find(|s| s.batch_size == batch_size && s.seq_length == seq_length)?;
        shape.layers.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }

    pub(crate) fn to_py_json(&self) -> PyJson {
        let shapes = self
            .shapes
            .iter()
            .map(|s| {
                let layers = s.layers.iter().map(|(k, t)| (k.clone(), t.to_py_json())).collect();
                (
                    shape_key(s.batch_size, s.seq_length),
                    PyJson::Object(vec![
                        ("batch_size".into(), PyJson::Int(s.batch_size as i64)),
                        ("seq_length".into(), PyJson::Int(s.seq_length as i64)),
                        ("layers".into(), PyJson::Object(layers)),
                    ]),
                )
            })
            .collect();
        let mut entries = vec![
            ("format".into(), PyJson::Str(PER_SHAPE_FORMAT.into())),
            ("percentile".into(), PyJson::Float(self.percentile)),
            ("shapes".into(), PyJson::Object(shapes)),
        ];
        if self.headroom != 1.0 {
            entries.push(("headroom".into(), PyJson::Float(self.headroom)));
        }
        if let Some(f) = &self.false_failures {
            entries.push(("false_failures".into(), f.clone()));
        }
        if let Some(l) = self.logits {
            entries.push(("logits".into(), l.to_py_json()));
        }
        PyJson::Object(entries)
    }

    pub(crate) fn from_py_json(v: &PyJson) -> Result<Self, String> {
        let at = |what: &str| format!("\"{PER_SHAPE_KEY}\": {what}");
        let format = v.get("format").and_then(PyJson::as_str).ok_or_else(|| at("no \"format\" string"))?;
        if format != PER_SHAPE_FORMAT {
            return Err(at(&format!("format {format:?}, this layercheck reads {PER_SHAPE_FORMAT:?}")));
        }
        let percentile = v.get("percentile").and_then(PyJson::as_f64).ok_or_else(|| at("no \"percentile\" number"))?;
        let Some(PyJson::Object(shapes)) = v.get("shapes") else { return Err(at("no \"shapes\" object")) };
        let mut out = Vec::new();
        for (name, s) in shapes {
            // Below 2^63: larger ones would saturate here and not be written back as read.
            let int = |k: &str| s.get(k).and_then(PyJson::as_f64).filter(|x| *x >= 0.0 && *x < i64::MAX as f64 && x.fract() == 0.0).map(|x| x as u64);
            let (Some(batch_size), Some(seq_length)) = (int("batch_size"), int("seq_length")) else {
                return Err(at(&format!("shape {name} lacks batch_size / seq_length")));
            };
            let Some(PyJson::Object(layers)) = s.get("layers") else { return Err(at(&format!("shape {name} has no \"layers\" object"))) };
            let layers = layers.iter().map(|(k, t)| (k.clone(), LayerThresholds::from_py_json(t))).collect();
            out.push(ShapeThresholds { batch_size, seq_length, layers });
        }
        let logits = v.get("logits").map(LogitsThresholds::from_py_json).transpose().map_err(|e| at(&e))?;
        let headroom = match v.get("headroom") {
            None => 1.0,
            Some(h) => h.as_f64().filter(|h| h.is_finite() && *h >= 1.0).ok_or_else(|| at("\"headroom\" is not a number at least 1"))?,
        };
        Ok(PerShapeThresholds { percentile, shapes: out, logits, headroom, false_failures: v.get("false_failures").cloned() })
    }
}

/// The key of a shape in the JSON: `batch-size-{B}_seq-length-{S}` (the seed's spelling).
pub fn shape_key(batch_size: u64, seq_length: u64) -> String {
    format!("batch-size-{batch_size}_seq-length-{seq_length}")
}

impl LayerThresholds {
    /// Every threshold widened by `headroom` (see `super::false_failures`).
    pub fn widened(self, headroom: f64) -> Self {
        use super::false_failures::{widen_cos, widen_upper};
        let up = |v: Option<f64>| v.map(|t| widen_upper(t, headroom));
        let cos = |v: Option<f64>| v.map(|t| widen_cos(t, headroom));
        LayerThresholds {
            abs_diff_l2: up(self.abs_diff_l2),
            abs_diff_max: up(self.abs_diff_max),
            rel_l2: up(self.rel_l2),
            sqnr_db: self.sqnr_db.map(|t| t - 20.0 * headroom.log10()),
            cos_mean: cos(self.cos_mean),
            cos_min: cos(self.cos_min),
            ..self
        }
    }

    fn to_py_json(self) -> PyJson {
        let mut e = vec![
            ("observations".to_string(), PyJson::Int(self.observations as i64)),
            ("nonfinite_observations".to_string(), PyJson::Int(self.nonfinite_observations as i64)),
        ];
        for (name, v) in self.quantities() {
            if let Some(v) = v {
                e.push((name.to_string(), PyJson::Float(v)));
            }
        }
        PyJson::Object(e)
    }

    fn from_py_json(v: &PyJson) -> Self {
        let f = |k: &str| v.get(k).and_then(PyJson::as_f64);
        LayerThresholds {
            observations: f("observations").unwrap_or(0.0) as u64,
            nonfinite_observations: f("nonfinite_observations").unwrap_or(0.0) as u64,
            abs_diff_l2: f("abs_diff_l2"),
            abs_diff_max: f("abs_diff_max"),
            rel_l2: f("rel_l2"),
            sqnr_db: f("sqnr_db"),
            cos_mean: f("cos_mean"),
            cos_min: f("cos_min"),
        }
    }

    fn quantities(&self) -> [(&'static str, Option<f64>); 6] {
        [
            ("abs_diff_l2", self.abs_diff_l2),
            ("abs_diff_max", self.abs_diff_max),
            ("rel_l2", self.rel_l2),
            ("sqnr_db", self.sqnr_db),
            ("cos_mean", self.cos_mean),
            ("cos_min", self.cos_min),
        ]
    }
}

/// Per-prompt observations of one layer at one shape, quantity by quantity.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    abs_diff_l2: Vec<f64>,
    abs_diff_max: Vec<f64>,
    rel_l2: Vec<f64>,
    sqnr_db: Vec<f64>,
    cos_mean: Vec<f64>,
    cos_min: Vec<f64>,
}

impl Observations {
    /// One prompt's `abs_diff` values (from a seed CSV file).
    pub fn add_abs_diff_values(&mut self, values: &[f64]) {
        let mut sq = crate::metrics::CompensatedSum::new();
        let mut max = f64::NEG_INFINITY;
        for &v in values {
            sq.add(v * v);
            max = if max.is_nan() || v.is_nan() { f64::NAN } else { max.max(v) };
        }
        self.abs_diff_l2.push(sq.value().sqrt());
        self.abs_diff_max.push(max);
    }

    /// One prompt's per-token cos values (from a seed CSV file: the seed's cos, taken mirrored at
    /// 1, see the module doc).
    pub fn add_cos_values(&mut self, values: &[f64]) {
        let mut sum = crate::metrics::CompensatedSum::new();
        let mut min = f64::INFINITY;
        for &v in values {
            sum.add(v);
            let v = mirrored_at_one(v);
            min = if min.is_nan() || v.is_nan() { f64::NAN } else { min.min(v) };
        }
        self.cos_mean.push(mirrored_at_one(sum.value() / values.len() as f64));
        self.cos_min.push(min);
    }

    /// One prompt's summary (from a compact file: its cos fields are the true cos).
    pub fn add_summary(&mut self, s: &LayerSummary) {
        self.abs_diff_l2.push(s.abs_diff_l2());
        self.abs_diff_max.push(s.abs_diff_max);
        self.rel_l2.push(s.rel_l2());
        self.sqnr_db.push(s.sqnr_db());
        self.cos_mean.push(s.cos_mean());
        self.cos_min.push(s.cos_min);
    }

    /// The most observations of one quantity that are NaN, or infinite where that means an
    /// overflow (the differences). An infinite SQNR is an exact prompt (or a zero reference with a
    /// difference), a real value, not a broken baseline.
    fn nonfinite_observations(&self) -> u64 {
        let overflowing = [&self.abs_diff_l2, &self.abs_diff_max, &self.rel_l2].map(|l| l.iter().filter(|v| !v.is_finite()).count());
        let nan = [&self.sqnr_db, &self.cos_mean, &self.cos_min].map(|l| l.iter().filter(|v| v.is_nan()).count());
        overflowing.into_iter().chain(nan).max().unwrap_or(0) as u64
    }

    /// The thresholds at percentile `p` (see the module doc).
    pub fn thresholds(&self, p: f64) -> LayerThresholds {
        let lists = [&self.abs_diff_l2, &self.abs_diff_max, &self.rel_l2, &self.sqnr_db, &self.cos_mean, &self.cos_min];
        let upper = |v: &Vec<f64>| percentile_linear(v, p);
        let lower = |v: &Vec<f64>| percentile_linear(v, 100.0 - p);
        LayerThresholds {
            observations: lists.iter().map(|l| l.len() as u64).max().unwrap_or(0),
            nonfinite_observations: self.nonfinite_observations(),
            abs_diff_l2: upper(&self.abs_diff_l2),
            abs_diff_max: upper(&self.abs_diff_max),
            rel_l2: upper(&self.rel_l2),
            sqnr_db: lower(&self.sqnr_db),
            cos_mean: lower(&self.cos_mean),
            cos_min: lower(&self.cos_min),
        }
    }
}

/// How a seed CSV file's values divide into per-prompt observations: `(values per observation)`.
///
/// `values_len` values of a file whose header says the metric tensor has `metric_shape` and the
/// captured tensor has `gpu_dims` dims: `values_len / prod(metric_shape)` stacked tensors, each
/// split along its dim 0 when the captured tensor has at least 3 dims. Without a usable header
/// the whole file is one observation.
pub fn observation_len(values_len: usize, metric_shape: Option<&[i64]>, gpu_dims: usize) -> usize {
    let Some(shape) = metric_shape else { return values_len.max(1) };
    // A header is outside input: a product that overflows is as unusable as a negative one.
    let per_tensor = shape.iter().try_fold(1i64, |acc, &d| acc.checked_mul(d)).unwrap_or(0);
    if per_tensor <= 0 || !values_len.is_multiple_of(per_tensor as usize) {
        return values_len.max(1);
    }
    let split = if gpu_dims >= 3 { shape.first().copied().unwrap_or(1).max(1) } else { 1 };
    if per_tensor % split != 0 {
        return per_tensor as usize;
    }
    (per_tensor / split) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    #[test]
    fn observations_split_per_batch_item_and_per_stacked_tensor() {
        assert_eq!(observation_len(2 * 64 * 8, Some(&[2, 64, 8]), 3), 64 * 8);
        assert_eq!(observation_len(2 * 64, Some(&[2, 64]), 3), 64);
        // The seed's attn.in_proj: per batch item tensors [S, H] stacked, header shape [S, H].
        assert_eq!(observation_len(2 * 64 * 8, Some(&[64, 8]), 2), 64 * 8);
        assert_eq!(observation_len(10, None, 0), 10);
        assert_eq!(observation_len(10, Some(&[3]), 1), 10);
    }

    #[test]
    fn percentiles_upper_for_differences_lower_for_similarities() {
        let mut o = Observations::default();
        for i in 0..101 {
            o.add_abs_diff_values(&[i as f64, 0.0]);
            o.add_cos_values(&[1.0 - i as f64 / 1000.0]);
        }
        let t = o.thresholds(99.0);
        assert_eq!(t.observations, 101);
        assert_eq!(t.abs_diff_l2, Some(99.0));
        assert_eq!(t.abs_diff_max, Some(99.0));
        // 101 values 0.900..=1.000: the 1st percentile is the second smallest.
        assert_eq!(t.cos_mean, Some(0.901));
        assert_eq!(t.rel_l2, None);
        o.add_abs_diff_values(&[f64::NAN]);
        let t = o.thresholds(99.0);
        assert!(t.abs_diff_l2.unwrap().is_nan());
        assert_eq!(t.nonfinite_observations, 1);
    }

    #[test]
    fn seed_cos_values_above_one_give_thresholds_at_most_one() {
        // The seed's f16 cos of a healthy layer: around 1, either side (issue 10: thresholds
        // derived from such CSV files had cos_mean above 1 and could never be met).
        let mut o = Observations::default();
        o.add_cos_values(&[1.00004, 1.00002, 1.00003]);
        o.add_cos_values(&[0.99999, 1.00001]);
        let t = o.thresholds(100.0);
        // Prompt means 1.00003 and 1.0: mirrored 0.99997 and 1.0; the lowest is the threshold.
        assert!((t.cos_mean.unwrap() - 0.99997).abs() < 1e-12, "{:?}", t.cos_mean);
        // Token mins: 1 - 4e-5 (mirrored 1.00004) and 0.99999.
        assert!((t.cos_min.unwrap() - 0.99996).abs() < 1e-12, "{:?}", t.cos_min);
        assert!(t.cos_mean.unwrap() <= 1.0 && t.cos_min.unwrap() <= 1.0);
    }

    #[test]
    fn an_exact_prompt_is_not_a_nonfinite_observation() {
        // Identical sides: abs_diff 0 everywhere, so SQNR is +inf, which is a real value.
        let r = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).view([1, 2, 2]);
        let exact = crate::metrics::compare(&r, &r).unwrap();
        assert_eq!(exact.summary.sqnr_db(), f64::INFINITY);
        let mut o = Observations::default();
        o.add_summary(&exact.summary);
        let t = o.thresholds(100.0);
        assert_eq!((t.observations, t.nonfinite_observations, t.abs_diff_l2), (1, 0, Some(0.0)));
        // An overflowing difference still counts.
        let mut big = exact.summary;
        big.abs_diff_inf = 1;
        big.abs_diff_max = f64::INFINITY;
        o.add_summary(&big);
        assert_eq!(o.thresholds(100.0).nonfinite_observations, 1);
    }

    #[test]
    fn json_round_trip() {
        let p = PerShapeThresholds {
            percentile: 99.0,
            shapes: vec![ShapeThresholds {
                batch_size: 1,
                seq_length: 64,
                layers: vec![("model.head".into(), LayerThresholds { observations: 3, abs_diff_l2: Some(0.5), cos_min: Some(f64::NAN), ..Default::default() })],
            }],
            logits: None,
            headroom: 1.0,
            false_failures: None,
        };
        let text = p.to_py_json().to_python_json();
        assert_eq!(
            text,
            r#"{"format": "layercheck-thresholds/1", "percentile": 99.0, "shapes": {"batch-size-1_seq-length-64": {"batch_size": 1, "seq_length": 64, "layers": {"model.head": {"observations": 3, "nonfinite_observations": 0, "abs_diff_l2": 0.5, "cos_min": NaN}}}}}"#
        );
        let back = PerShapeThresholds::from_py_json(&PyJson::parse(&text).unwrap()).unwrap();
        assert_eq!(back.get(1, 64, "model.head").unwrap().abs_diff_l2, Some(0.5));
        assert!(back.get(1, 64, "model.head").unwrap().cos_min.unwrap().is_nan());
        assert!(back.get(2, 64, "model.head").is_none());
    }
}
