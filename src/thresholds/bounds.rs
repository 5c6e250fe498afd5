//! Which thresholds a (batch size, sequence length) case is held to, as the suite, `layercheck run`
//! and compact reports all choose them: the file's per-shape thresholds when it has the case's
//! shape, else its pooled seed values (`abs_diff`, `cos_sim_avg` or `cos_sim_mean`), which
//! measure another quantity and are looser.
//!
//! A pooled cos threshold above 1 (the seed's f16 `cos_sim` exceeds 1 by about 1e-4, and a
//! reduction can keep that) is read as 1: the verdict's cosine is a true one, at most 1, so such
//! a threshold would fail a target identical to the reference.

use super::ThresholdsFile;
use crate::harness::verdict::Bounds;

/// The bounds of a layer, by file key.
pub type BoundsOf = Box<dyn Fn(&str) -> Bounds>;

/// The bounds of each layer of a `batch_size` x `seq_length` case under `file`, and a note saying
/// which were applied; `source` names the file in the note.
pub fn bounds_for(file: &ThresholdsFile, source: &str, batch_size: u64, seq_length: u64) -> (BoundsOf, String) {
    let per_shape = file.per_shape.as_ref().filter(|p| p.shapes.iter().any(|s| s.batch_size == batch_size && s.seq_length == seq_length)).cloned();
    match per_shape {
        Some(p) => {
            let note = format!("thresholds: {source} (per prompt, p{} at batch-size-{batch_size}_seq-length-{seq_length})", p.percentile);
            let f = move |key: &str| {
                let t = p.get(batch_size, seq_length, key).copied().unwrap_or_default();
                Bounds { abs_diff_l2: t.abs_diff_l2, cos_mean: t.cos_mean }
            };
            (Box::new(f), note)
        }
        None => {
            let note = format!("thresholds: {source} has no per-shape entry for batch {batch_size} x seq {seq_length}; applying its pooled seed values (abs_diff, cos_sim_avg), which are looser; cos thresholds above 1 are read as 1");
            let file = file.clone();
            let f = move |key: &str| Bounds {
                abs_diff_l2: file.layer("abs_diff", key),
                cos_mean: file.layer("cos_sim_avg", key).or_else(|| file.layer("cos_sim_mean", key)).map(|c| if c > 1.0 { 1.0 } else { c }),
            };
            (Box::new(f), note)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::matrix::Margins;
    use crate::harness::verdict::{check, Observation};

    fn pooled(cos: &str) -> ThresholdsFile {
        let text = format!(r#"{{"model_id": "m", "abs_diff": {{"model.head": 0.5}}, "cos_sim_avg": {{"model.head": {cos}}}}}"#);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, text).unwrap();
        ThresholdsFile::read(&path).unwrap()
    }

    #[test]
    fn a_pooled_cos_above_one_lets_an_exact_target_pass() {
        let (bounds, note) = bounds_for(&pooled("1.0001220703125"), "t.json", 1, 64);
        assert!(note.contains("t.json has no per-shape entry for batch 1 x seq 64"), "{note}");
        let b = bounds("model.head");
        assert_eq!(b, Bounds { abs_diff_l2: Some(0.5), cos_mean: Some(1.0) });
        let exact = Observation { record: "model.head".into(), item: 0, abs_diff_l2: 0.0, abs_diff_max: 0.0, cos_mean: 1.0, cos_min: 1.0, worst_token: 0, target_nonfinite: 0, reference_nonfinite: 0 };
        assert!(check(&exact, &b, &Margins::default()).is_empty());
        // Below 1 the threshold is kept as written; NaN stays NaN (and fails in the verdict).
        assert_eq!(bounds_for(&pooled("0.99"), "t", 1, 64).0("model.head").cos_mean, Some(0.99));
        assert!(bounds_for(&pooled("NaN"), "t", 1, 64).0("model.head").cos_mean.unwrap().is_nan());
    }
}
