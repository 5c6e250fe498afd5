//! The per-token logits metrics against aiu-fms-testing-utils' own: its `top_k_loss_calculator`
//! with `test_decoders.py`'s cross-entropy and mean absolute softmax difference, and PyTorch's
//! `kl_div`, run once on fixed logits by `scripts/reference/make_logits_fixture.py`
//! (`tests/fixtures/logits/logits-metrics.safetensors`).

use layercheck::metrics::logits::row_metrics;
use tch::Tensor;

fn fixture() -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors("tests/fixtures/logits/logits-metrics.safetensors").unwrap().into_iter().collect()
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(tch::Kind::Double)).unwrap()
}

#[test]
fn ce_diff_mean_kl_and_top1_match_the_python_tools() {
    let f = fixture();
    let ours = row_metrics(&f["reference"], &f["target"], 20).unwrap();
    let (ce, diff, kl) = (values(&f["ce"]), values(&f["diff_mean"]), values(&f["kl"]));
    let top1: Vec<i64> = Vec::<i64>::try_from(&f["top1"]).unwrap();
    assert_eq!(ours.len(), 16);
    for (i, (c, d, k, t)) in ours.into_iter().enumerate() {
        // Theirs are computed in float32, ours in float64 from the same float32 top-k values:
        // they differ by float32 rounding of softmaxes and sums, about 1e-7 relative.
        assert!((c - ce[i]).abs() <= 1e-5 * ce[i].abs().max(1.0), "row {i}: ce {c} vs {}", ce[i]);
        assert_eq!(t, top1[i] == 1, "row {i}: top1");
        // Row 8 is flat: its 100 reference logits are equal, so which 20 indices are the "top"
        // is the tie order of topk; ce (ln 20 for any choice) does not depend on it, the others do.
        if i == 8 {
            assert!((c - 20f64.ln()).abs() < 1e-6);
            continue;
        }
        assert!((d - diff[i]).abs() <= 1e-4 * diff[i].abs() + 1e-8, "row {i}: diff_mean {d} vs {}", diff[i]);
        // kl of near-identical rows is a difference of nearly equal float32 sums in theirs.
        assert!((k - kl[i]).abs() <= 1e-4 * kl[i].abs() + 3e-7, "row {i}: kl {k} vs {}", kl[i]);
        assert!(k >= -1e-12, "row {i}: kl is a divergence, never negative: {k}");
    }
}

#[test]
fn identical_rows_have_zero_kl_and_diff_while_their_ce_is_the_top_k_entropy() {
    let f = fixture();
    let r = &f["reference"];
    for (i, (c, d, k, t)) in row_metrics(r, r, 20).unwrap().into_iter().enumerate() {
        assert!(t && d == 0.0 && k.abs() < 1e-12, "row {i}: {d} {k}");
        assert!(c > 0.0 || i == 9, "row {i}: ce {c} is an entropy");
    }
}
