//! Which thresholds a (batch size, sequence length) case is held to, as the suite, `layercheck run`
//! and compact reports all choose them: the file's per-shape thresholds when it has the case's
//! shape, else its pooled seed values (`abs_diff`, `cos_sim_avg` or `cos_sim_mean`), which
//! measure other quantities and are looser:
//!
//! - the pooled `abs_diff` is the L2 norm over every value of every prompt and step of the
//!   baseline, so it is at least the norm over any one of them;
//! - the pooled cos is a mean of the seed's cosine (the f16 side normalised in f16, so it can
//!   exceed 1 by about 1e-4). A mean bounds no single prompt and its distance from 1 is mostly
//!   f16 rounding, so it is applied as deepview applies it: the margin `rtol * |th| + atol` is
//!   taken on the cos itself ([`CosRule::Seed`]), which with rtol 0.05 allows about 0.95 th.
//!   (Reading it as a bound on the true cosine fails healthy runs: a value above 1 can never be
//!   met, and a mean's deficit is below that of half the prompts.)
//!
//! Per-shape cos thresholds are of the true cosine (at most 1) when derived from compact files;
//! derived from seed CSV files they are of the seed's cosine mirrored at 1 (see
//! [`super::per_shape`]). A per-shape cos above 1, which older files derived from seed CSV files
//! hold, is read the same way: `1 - (c - 1)`.

use super::{MetricThresholds, ThresholdsFile};
use layercheck_suite::verdict::{Bounds, CosRule};
use layercheck_suite::logits::{LogitsBounds, TEST_DECODERS_DEFAULTS};

/// The bounds of a layer, by file key.
pub type BoundsOf = Box<dyn Fn(&str) -> Bounds>;

/// A seed cosine as a lower bound on a true cosine: its distance from 1, below 1.
pub fn mirrored_at_one(cos: f64) -> f64 {
    1.0 - (1.0 - cos).abs()
}

/// The bounds of each layer of a `batch_size` x `seq_length` case under `file`, and a note saying
/// which were applied; `source` names the file in the note.
pub fn bounds_for(file: &ThresholdsFile, source: &str, batch_size: u64, seq_length: u64) -> (BoundsOf, String) {
    let per_shape = file.per_shape.as_ref().filter(|p| p.shapes.iter().any(|s| s.batch_size == batch_size && s.seq_length == seq_length)).cloned();
    match per_shape {
        Some(p) => {
            let note = format!("thresholds: {source} (per prompt, p{} at batch-size-{batch_size}_seq-length-{seq_length})", p.percentile);
            let f = move |key: &str| {
                let t = p.get(batch_size, seq_length, key).copied().unwrap_or_default();
                Bounds::new(t.abs_diff_l2, t.cos_mean.map(mirrored_at_one))
            };
            (Box::new(f), note)
        }
        None => {
            let note = format!("thresholds: {source} has no per-shape entry for batch {batch_size} x seq {seq_length}; applying its pooled seed values (abs_diff, cos_sim_avg), which are looser: abs_diff is an L2 norm over every prompt and step of the baseline, and the cos margin is taken on the cos itself, as deepview takes it");
            let file = file.clone();
            let f = move |key: &str| Bounds {
                abs_diff_l2: file.layer("abs_diff", key),
                cos_mean: file.layer("cos_sim_avg", key).or_else(|| file.layer("cos_sim_mean", key)),
                cos_rule: CosRule::Seed,
            };
            (Box::new(f), note)
        }
    }
}

/// The logits thresholds of `file` (`source` names it) and the number of reference logits they
/// were derived on: its `"layercheck"` section's, else `test_decoders.py`'s whole-model keys
/// (top-level `ce` and `diff_mean`, as `get_thresholds.py` writes them without `--layer_io`),
/// else `test_decoders.py`'s defaults, as it applies them to a model without thresholds; the
/// source says which.
pub fn logits_bounds_for(file: &ThresholdsFile, source: &str, failure_rate: f64) -> (LogitsBounds, Option<u64>) {
    let scalar = |name: &str| match file.metric(name) {
        Some(MetricThresholds::Scalar(v)) => Some(*v),
        _ => None,
    };
    if let Some(l) = file.per_shape.as_ref().and_then(|p| p.logits) {
        let source = format!("{source} (\"layercheck\" logits: p{} of {} baseline tokens)", file.per_shape.as_ref().map_or(100.0, |p| p.percentile), l.tokens);
        return (LogitsBounds { ce: Some(l.ce), diff_mean: Some(l.diff_mean), kl: Some(l.kl), failure_rate, source }, Some(l.top_k));
    }
    if let (Some(ce), Some(diff_mean)) = (scalar("ce"), scalar("diff_mean")) {
        let source = format!("{source} (whole-model ce and diff_mean, as get_thresholds.py writes them; no kl threshold)");
        return (LogitsBounds { ce: Some(ce), diff_mean: Some(diff_mean), kl: None, failure_rate, source }, None);
    }
    let (ce, diff_mean) = TEST_DECODERS_DEFAULTS;
    let source = format!("test_decoders.py's defaults (ce {ce}, diff_mean {diff_mean}; no kl threshold): {source} has no logits thresholds (hint: re-derive it with `layercheck thresholds` from compact files, see README \"Thresholds\")");
    (LogitsBounds { ce: Some(ce), diff_mean: Some(diff_mean), kl: None, failure_rate, source }, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use layercheck_suite::matrix::Margins;
    use layercheck_suite::verdict::{check, Observation};

    fn pooled(cos: &str) -> ThresholdsFile {
        let text = format!(r#"{{"model_id": "m", "abs_diff": {{"model.head": 0.5}}, "cos_sim_avg": {{"model.head": {cos}}}}}"#);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, text).unwrap();
        ThresholdsFile::read(&path).unwrap()
    }

    fn observed(cos: f64) -> Observation {
        Observation { record: "model.head".into(), item: 0, abs_diff_l2: 0.0, abs_diff_max: 0.0, cos_mean: cos, cos_min: cos, worst_token: 0, target_nonfinite: 0, reference_nonfinite: 0 }
    }

    #[test]
    fn a_pooled_cos_above_one_is_applied_as_deepview_applies_it() {
        let (bounds, note) = bounds_for(&pooled("1.0001220703125"), "t.json", 1, 64);
        assert!(note.contains("t.json has no per-shape entry for batch 1 x seq 64") && note.contains("looser"), "{note}");
        let b = bounds("model.head");
        assert_eq!(b, Bounds { abs_diff_l2: Some(0.5), cos_mean: Some(1.0001220703125), cos_rule: CosRule::Seed });
        // An exact target, and a healthy f16 one (true cos 0.9999984, as the issue observed).
        assert!(check(&observed(1.0), &b, &Margins::default()).is_empty());
        assert!(check(&observed(0.99999844), &b, &Margins::default()).is_empty());
        // A broken one still fails: below 0.95 th - atol.
        assert_eq!(check(&observed(0.9), &b, &Margins::default())[0].quantity, layercheck_suite::verdict::Quantity::CosMean);
        // The value is kept as written; NaN stays NaN (and fails in the verdict).
        assert_eq!(bounds_for(&pooled("0.99"), "t", 1, 64).0("model.head").cos_mean, Some(0.99));
        assert!(bounds_for(&pooled("NaN"), "t", 1, 64).0("model.head").cos_mean.unwrap().is_nan());
    }

    #[test]
    fn a_per_shape_cos_above_one_is_read_mirrored() {
        assert_eq!(mirrored_at_one(1.00003), 1.0 - (1.00003f64 - 1.0));
        assert_eq!(mirrored_at_one(0.99), 0.99);
        let mut file = pooled("0.99");
        file.per_shape = Some(crate::thresholds::PerShapeThresholds {
            percentile: 99.0,
            shapes: vec![crate::thresholds::ShapeThresholds {
                batch_size: 1,
                seq_length: 64,
                layers: vec![("model.head".into(), crate::thresholds::LayerThresholds { abs_diff_l2: Some(0.1), cos_mean: Some(1.00003), ..Default::default() })],
            }],
            logits: None,
            headroom: 1.0,
            false_failures: None,
        });
        let b = bounds_for(&file, "t", 1, 64).0("model.head");
        assert_eq!((b.cos_rule, b.cos_mean), (CosRule::Deficit, Some(mirrored_at_one(1.00003))));
        assert!(check(&observed(0.99999844), &b, &Margins::default()).is_empty());
    }
}
