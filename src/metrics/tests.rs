//! Metric tests. Expected values come from plain f64/f32 loops over the same data written here
//! (not from the code under test), or from invariants.

use half::f16;
use proptest::prelude::*;
use tch::{Kind, Tensor};

use super::*;

fn t32(v: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from_slice(v).view(shape)
}

fn values(t: &Tensor) -> Vec<f64> {
    let t = t.to_kind(Kind::Double).contiguous().view([-1]);
    let n = t.numel();
    let mut out = vec![0.0; n];
    t.copy_data(&mut out, n);
    out
}

/// The seed's abs_diff of an f32 reference and an f16 target, element by element in f32.
fn expected_abs_diff(r: &[f32], t: &[f16]) -> Vec<f64> {
    r.iter().zip(t).map(|(&a, &b)| (a - b.to_f32()).abs() as f64).collect()
}

/// cos per row in f64 after the seed's zero replacement (1e-6 in each side's dtype given by
/// `zero_r`, `zero_t`).
fn expected_cos(r: &[f64], t: &[f64], d: usize, zero_r: f64, zero_t: f64) -> Vec<f64> {
    r.chunks(d)
        .zip(t.chunks(d))
        .map(|(x, y)| {
            let x: Vec<f64> = x.iter().map(|&v| if v == 0.0 { zero_r } else { v }).collect();
            let y: Vec<f64> = y.iter().map(|&v| if v == 0.0 { zero_t } else { v }).collect();
            let nx = x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-8);
            let ny = y.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-8);
            x.iter().zip(&y).map(|(a, b)| a / nx * (b / ny)).sum()
        })
        .collect()
}

/// The true cos per row, in f64, written out: the seed's zero replacement (`zero_r`, `zero_t`:
/// 1e-6 in each side's dtype), then `sum(x*y) / (max(||x||, 1e-8) * max(||y||, 1e-8))`.
fn expected_true_cos(r: &[f64], t: &[f64], d: usize, zero_r: f64, zero_t: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for (x, y) in r.chunks(d).zip(t.chunks(d)) {
        let (mut dot, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for (&a, &b) in x.iter().zip(y) {
            let a = if a == 0.0 { zero_r } else { a };
            let b = if b == 0.0 { zero_t } else { b };
            dot += a * b;
            xx += a * a;
            yy += b * b;
        }
        out.push(dot / (xx.sqrt().max(1e-8) * yy.sqrt().max(1e-8)));
    }
    out
}

/// 1e-6 as each dtype holds it (the seed's zero replacement).
const ZERO_F32: f64 = 1e-6f32 as f64;
fn zero_f16() -> f64 {
    f16::from_f64(1e-6).to_f64()
}

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    a == b || (a - b).abs() <= tol * a.abs().max(b.abs())
}

#[test]
fn abs_diff_is_the_f32_difference_of_the_f16_value() {
    let r = [0.1f32, -3.3, 1e-7, 65000.0, 0.0, 2.5];
    let t16: Vec<f16> = [0.1f32, -3.0, 0.0, 65504.0, -0.0, 2.5].iter().map(|&v| f16::from_f32(v)).collect();
    let target = Tensor::from_slice(&t16).view([1, 2, 3]);
    let d = abs_diff(&t32(&r, &[1, 2, 3]), &target).unwrap();
    assert_eq!(d.kind(), Kind::Float);
    assert_eq!(d.size(), vec![1, 2, 3]);
    assert_eq!(values(&d), expected_abs_diff(&r, &t16));
}

#[test]
fn cos_sim_matches_an_independent_loop_and_replaces_zeros() {
    let r = [1.0f32, 2.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 3.0, 3.0, 0.5, 3.0];
    let t = [1.1f32, 1.9, 0.0, -0.9, 0.0, 0.0, 0.0, 0.0, -3.0, 3.0, 0.0, 3.0];
    let c = cos_sim(&t32(&r, &[3, 4]), &t32(&t, &[3, 4])).unwrap();
    assert_eq!(c.size(), vec![3]);
    let rv: Vec<f64> = r.iter().map(|&v| v as f64).collect();
    let tv: Vec<f64> = t.iter().map(|&v| v as f64).collect();
    let z = 1e-6f32 as f64;
    let want = expected_cos(&rv, &tv, 4, z, z);
    for (got, want) in values(&c).iter().zip(&want) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    // Row 2 is all zeros on both sides: both become 1e-6 constants, so cos is 1.
    assert!((values(&c)[1] - 1.0).abs() < 1e-6);
}

/// The f16 side is normalised in f16 (norm rounded to f16, each quotient rounded to f16), the
/// product and sum in f32: an emulation with the `half` crate agrees, and the result can exceed 1.
#[test]
fn cos_sim_normalises_the_f16_side_in_f16() {
    let r: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin() + 0.01).collect();
    let t16: Vec<f16> = r.iter().map(|&v| f16::from_f32(v)).collect();
    let got = values(&cos_sim(&t32(&r, &[1, 64]), &Tensor::from_slice(&t16).view([1, 64])).unwrap())[0];
    let norm_r = r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt() as f32;
    let norm_t = f16::from_f32(t16.iter().map(|v| (v.to_f32() as f64).powi(2)).sum::<f64>().sqrt() as f32);
    let emulated: f64 = r
        .iter()
        .zip(&t16)
        .map(|(&a, &b)| ((a / norm_r) * f16::from_f32(b.to_f32() / norm_t.to_f32()).to_f32()) as f64)
        .sum();
    assert!((got - emulated).abs() < 1e-6, "{got} vs emulated {emulated}");
    let exact = expected_cos(&r.iter().map(|&v| v as f64).collect::<Vec<_>>(), &t16.iter().map(|v| v.to_f64()).collect::<Vec<_>>(), 64, 0.0, 0.0)[0];
    assert!((got - exact).abs() > 1e-5, "f16 normalisation should be visible: {got} vs {exact}");
}

#[test]
fn f16_zero_replacement_uses_the_f16_value_of_1e_6() {
    // Row: reference [0, 1], target [0, 1] in f16. The zeros become 1e-6 (f32) and 1.0133e-6 (f16).
    let r = t32(&[0.0, 1.0], &[1, 2]);
    let t = t32(&[0.0, 1.0], &[1, 2]).to_kind(Kind::Half);
    let got = values(&cos_sim(&r, &t).unwrap())[0];
    let want = expected_cos(&[0.0, 1.0], &[0.0, 1.0], 2, 1e-6f32 as f64, f16::from_f64(1e-6).to_f64())[0];
    assert!((got - want).abs() < 1e-7, "{got} vs {want}");
    assert_eq!(f16::from_f64(1e-6).to_f64(), 1.0132789611816406e-06);
}

/// The summaries' cos is the true cos of the same (zero-replaced) vectors: an independent f64 loop
/// agrees to f64 rounding, zeros and all, for f32 against f16 and bf16 targets.
#[test]
fn true_cos_matches_an_independent_f64_loop() {
    let r = [1.0f32, 2.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 3.0, 3.0, 0.5, 3.0, 0.1, -0.2, 0.3, 1e-3];
    let t = [1.1f32, 1.9, 0.0, -0.9, 0.0, 0.0, 0.0, 0.0, -3.0, 3.0, 0.0, 3.0, 0.1, -0.2, 0.3, 2e-3];
    let rv: Vec<f64> = r.iter().map(|&v| v as f64).collect();
    let t16: Vec<f16> = t.iter().map(|&v| f16::from_f32(v)).collect();
    let got = true_cos_sim(&t32(&r, &[2, 2, 4]), &Tensor::from_slice(&t16).view([2, 2, 4])).unwrap();
    assert_eq!((got.size(), got.kind()), (vec![2, 2], Kind::Double));
    let want = expected_true_cos(&rv, &t16.iter().map(|v| v.to_f64()).collect::<Vec<_>>(), 4, ZERO_F32, zero_f16());
    for (g, w) in values(&got).iter().zip(&want) {
        assert!((g - w).abs() <= 1e-15, "{g} vs {w}");
    }
    // The all-zero row: 1e-6 (f32) against 1.0133e-6 (f16) constants, parallel.
    assert!((values(&got)[1] - 1.0).abs() <= 1e-15);
    let tb: Vec<half::bf16> = t.iter().map(|&v| half::bf16::from_f32(v)).collect();
    // (tch's from_slice of half::bf16 does not give bf16 values; libtorch rounds f32 the same way.)
    let target = t32(&t, &[4, 4]).to_kind(Kind::BFloat16);
    assert_eq!(values(&target), tb.iter().map(|v| v.to_f64()).collect::<Vec<_>>());
    let got = values(&true_cos_sim(&t32(&r, &[4, 4]), &target).unwrap());
    let want = expected_true_cos(&rv, &tb.iter().map(|v| v.to_f64()).collect::<Vec<_>>(), 4, ZERO_F32, half::bf16::from_f64(1e-6).to_f64());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-15, "bf16: {g} vs {w}");
    }
    assert_eq!(half::bf16::from_f64(1e-6).to_f64(), 9.98377799987793e-07);
}

/// Identical values on both sides: the seed's cos is off 1 by up to ~1e-3 (f16 normalisation,
/// f16 result when both sides are f16) and exceeds it, so a percentile of it can be a threshold
/// above 1; the summaries' true cos is 1 within 1e-15.
#[test]
fn identical_f16_values_give_true_cos_one_while_the_seed_cos_exceeds_one() {
    let x: Vec<f16> = (0..64 * 64).map(|i| f16::from_f32(((i as f32) * 0.37).sin() * 3.0 + 0.01)).collect();
    let t = Tensor::from_slice(&x).view([4, 16, 64]);
    let r = t.to_kind(Kind::Float);
    for (name, reference) in [("f32 reference", &r), ("f16 reference", &t)] {
        let c = compare(reference, &t).unwrap();
        let seed = values(&c.cos_sim);
        let seed_max = seed.iter().cloned().fold(f64::MIN, f64::max);
        assert!(seed_max > 1.0 + 1e-4, "{name}: the seed's cos peaks at {seed_max}");
        assert!(seed.iter().sum::<f64>() / seed.len() as f64 != 1.0, "{name}");
        assert_eq!(c.summary.abs_diff_l2(), 0.0, "{name}");
        for s in c.items.iter().chain([&c.summary]) {
            assert!((s.cos_mean() - 1.0).abs() <= 1e-15, "{name}: true cos mean {}", s.cos_mean());
            assert!((s.cos_min - 1.0).abs() <= 1e-15, "{name}: true cos min {}", s.cos_min);
        }
        for v in values(&true_cos_sim(reference, &t).unwrap()) {
            assert!((v - 1.0).abs() <= 1e-15, "{name}: true cos {v}");
        }
    }
}

/// A finite f16 row whose norm overflows f16 (4 x 60000: 120000 > 65504): the seed divides by an
/// inf norm and gets 0; the true cos is 1.
#[test]
fn a_finite_f16_row_whose_norm_overflows_f16() {
    let t = Tensor::full([1, 4], 60000.0, (Kind::Half, tch::Device::Cpu));
    let r = t.to_kind(Kind::Float);
    assert_eq!(values(&cos_sim(&r, &t).unwrap()), vec![0.0]);
    let s = summarize(&r, &t).unwrap();
    assert_eq!((s.cos_mean(), s.cos_min, s.cos_nan), (1.0, 1.0, 0));
    assert!(!s.has_nonfinite());
}

#[test]
fn inputs_are_not_modified() {
    let r = t32(&[0.0, 1.0, 0.0, 2.0], &[2, 2]);
    let t = r.copy();
    let _ = compare(&r, &t).unwrap();
    assert_eq!(values(&r), vec![0.0, 1.0, 0.0, 2.0]);
    assert_eq!(values(&t), vec![0.0, 1.0, 0.0, 2.0]);
}

#[test]
fn summary_matches_independent_f64_loops_per_item_and_whole() {
    let (b, s, d) = (2usize, 3usize, 4usize);
    let r: Vec<f32> = (0..b * s * d).map(|i| ((i as f32) * 0.731).cos() * 3.0).collect();
    let t16: Vec<f16> = r.iter().enumerate().map(|(i, &v)| f16::from_f32(v * (1.0 + 0.01 * ((i % 5) as f32)))).collect();
    let c = compare(&t32(&r, &[2, 3, 4]), &Tensor::from_slice(&t16).view([2, 3, 4])).unwrap();
    let diffs = expected_abs_diff(&r, &t16);
    let rv: Vec<f64> = r.iter().map(|&v| v as f64).collect();
    let tv: Vec<f64> = t16.iter().map(|v| v.to_f64()).collect();
    let cos = expected_true_cos(&rv, &tv, d, ZERO_F32, zero_f16());
    assert_eq!(c.items.len(), b);
    for (item, summary) in c.items.iter().chain([&c.summary]).enumerate() {
        let range = if item < b { item * s * d..(item + 1) * s * d } else { 0..b * s * d };
        let rows = if item < b { item * s..(item + 1) * s } else { 0..b * s };
        let dd = &diffs[range.clone()];
        let l2 = dd.iter().map(|x| x * x).sum::<f64>().sqrt();
        let ref_l2 = r[range].iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(rel_close(summary.abs_diff_l2(), l2, 1e-12), "{} vs {l2}", summary.abs_diff_l2());
        assert_eq!(summary.abs_diff_max, dd.iter().cloned().fold(0.0, f64::max));
        assert!(rel_close(summary.abs_diff_mean(), dd.iter().sum::<f64>() / dd.len() as f64, 1e-12));
        assert!(rel_close(summary.reference_l2(), ref_l2, 1e-12));
        assert!(rel_close(summary.rel_l2(), l2 / ref_l2, 1e-12));
        assert!(rel_close(summary.sqnr_db(), 20.0 * (ref_l2 / l2).log10(), 1e-12));
        let cr = &cos[rows];
        assert!((summary.cos_mean() - cr.iter().sum::<f64>() / cr.len() as f64).abs() <= 1e-15, "{} vs {cr:?}", summary.cos_mean());
        let (mut min, mut argmin) = (f64::INFINITY, 0);
        for (j, &v) in cr.iter().enumerate() {
            if v < min {
                min = v;
                argmin = j;
            }
        }
        assert!((summary.cos_min - min).abs() <= 1e-15, "{} vs {min}", summary.cos_min);
        assert_eq!(summary.cos_argmin, argmin as u64);
        assert!(summary.cos_sum_finite == summary.cos_sum && summary.cos_nan == 0);
        assert_eq!(summary.elements as usize, dd.len());
        assert!(!summary.has_nonfinite());
    }
    assert_eq!(unravel_index(c.summary.cos_argmin, &c.cos_sim.size()).unwrap().len(), 2);
}

#[test]
fn all_zeros_agree_perfectly() {
    let z = Tensor::zeros([1, 3, 4], (Kind::Float, tch::Device::Cpu));
    let s = summarize(&z, &z.to_kind(Kind::Half)).unwrap();
    assert_eq!((s.abs_diff_l2(), s.abs_diff_max, s.rel_l2(), s.sqnr_db()), (0.0, 0.0, 0.0, f64::INFINITY));
    // Constant rows of 1e-6 (f32) against 1.0133e-6 (f16): parallel, so the true cos is 1.
    assert!((s.cos_mean() - 1.0).abs() <= 1e-15 && (s.cos_min - 1.0).abs() <= 1e-15, "{s:?}");
}

#[test]
fn constants_give_cos_one_or_minus_one() {
    let a = Tensor::full([2, 5], 7.0, (Kind::Float, tch::Device::Cpu));
    let s = summarize(&a, &(&a * 0.001)).unwrap();
    assert!((s.cos_mean() - 1.0).abs() <= 1e-15, "{}", s.cos_mean());
    let s = summarize(&a, &(-&a)).unwrap();
    assert!((s.cos_mean() + 1.0).abs() <= 1e-15);
    assert!(rel_close(s.rel_l2(), 2.0, 1e-12));
}

#[test]
fn one_element_and_scalars() {
    let s = summarize(&t32(&[2.0], &[1]), &t32(&[-3.0], &[1])).unwrap();
    assert_eq!((s.elements, s.rows, s.abs_diff_l2(), s.cos_min), (1, 1, 5.0, -1.0));
    let c = compare(&Tensor::from(4.0f32), &Tensor::from(4.0f32)).unwrap();
    assert_eq!((c.summary.rows, c.summary.abs_diff_l2(), c.summary.cos_mean()), (1, 0.0, 1.0));
}

#[test]
fn nan_never_looks_like_agreement() {
    let r = t32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[1, 2, 3]);
    let t = t32(&[1.0, f32::NAN, 3.0, 4.0, 5.0, 6.0], &[1, 2, 3]);
    let s = summarize(&r, &t).unwrap();
    for (name, v) in [
        ("abs_diff_l2", s.abs_diff_l2()),
        ("abs_diff_max", s.abs_diff_max),
        ("abs_diff_mean", s.abs_diff_mean()),
        ("rel_l2", s.rel_l2()),
        ("sqnr_db", s.sqnr_db()),
        ("cos_mean", s.cos_mean()),
        ("cos_min", s.cos_min),
    ] {
        assert!(v.is_nan(), "{name} = {v}");
    }
    assert_eq!((s.target_nan, s.reference_nan, s.abs_diff_nan, s.cos_nan, s.cos_argmin), (1, 0, 1, 1, 0));
    assert!(s.has_nonfinite());
    // The seed's reductions count the NaN as 0: what get_thresholds.py would report.
    assert!(rel_close(s.seed_abs_diff_sq_sum().sqrt(), 0.0, 0.0));
    assert!((s.cos_mean_nan_as_zero() - 0.5).abs() < 1e-15);
    // NaN in the reference too.
    let s = summarize(&t, &r).unwrap();
    assert!(s.abs_diff_l2().is_nan() && s.reference_nan == 1 && s.reference_l2().is_nan());
}

#[test]
fn fp16_overflow_is_infinite_disagreement() {
    let r = t32(&[70000.0, 1.0, 2.0, 3.0], &[1, 2, 2]);
    let t = r.to_kind(Kind::Half);
    let s = summarize(&r, &t).unwrap();
    assert_eq!((s.target_inf, s.abs_diff_inf), (1, 1));
    assert_eq!((s.abs_diff_l2(), s.abs_diff_max, s.rel_l2(), s.sqnr_db()), (f64::INFINITY, f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY));
    assert!(s.cos_min.is_nan() && s.cos_argmin == 0 && s.cos_mean().is_nan());
    assert_eq!(s.seed_abs_diff_sq_sum().sqrt(), f64::INFINITY);
    // inf on both sides: inf - inf is NaN.
    let both = t32(&[f32::INFINITY, 1.0], &[1, 2]);
    let s = summarize(&both, &both).unwrap();
    assert!(s.abs_diff_l2().is_nan() && s.abs_diff_nan == 1);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let err = compare(&t32(&[1.0; 6], &[2, 3]), &t32(&[1.0; 6], &[3, 2])).unwrap_err();
    assert!(matches!(err, MetricsError::ShapeMismatch { .. }));
    let msg = err.to_string();
    assert!(msg.contains("[2, 3]") && msg.contains("[3, 2]") && msg.contains("hint"), "{msg}");
    let empty = Tensor::zeros([2, 0], (Kind::Float, tch::Device::Cpu));
    assert!(matches!(compare(&empty, &empty), Err(MetricsError::Empty { .. })));
    let ints = Tensor::from_slice(&[1i64, 2]);
    assert!(matches!(compare(&ints, &ints), Err(MetricsError::NotFloat { side: "reference", .. })));
}

#[test]
fn bf16_and_f64_inputs() {
    let r = t32(&[1.0, 2.0, 3.0, 4.0], &[2, 2]).to_kind(Kind::Double);
    let t = r.to_kind(Kind::BFloat16);
    let c = compare(&r, &t).unwrap();
    assert_eq!(c.abs_diff.kind(), Kind::Double);
    assert_eq!(c.summary.abs_diff_l2(), 0.0);
    let c = compare(&r.to_kind(Kind::BFloat16), &r.to_kind(Kind::Half)).unwrap();
    assert_eq!(c.abs_diff.kind(), Kind::Float);
}

fn shaped() -> impl Strategy<Value = (Vec<i64>, Vec<f32>, Vec<f32>)> {
    (1i64..3, 1i64..5, 1i64..9).prop_flat_map(|(b, s, d)| {
        let n = (b * s * d) as usize;
        (
            Just(vec![b, s, d]),
            prop::collection::vec(-100.0f32..100.0, n),
            prop::collection::vec(-100.0f32..100.0, n),
        )
    })
}

proptest! {
    #[test]
    fn identical_inputs_have_zero_difference_and_cos_one((shape, a, _b) in shaped()) {
        let x = t32(&a, &shape);
        let c = compare(&x, &x).unwrap();
        prop_assert_eq!(c.summary.abs_diff_l2(), 0.0);
        prop_assert_eq!(c.summary.abs_diff_max, 0.0);
        prop_assert_eq!(c.summary.sqnr_db(), f64::INFINITY);
        for v in values(&c.cos_sim) {
            prop_assert!((v - 1.0).abs() <= 1e-6, "cos {}", v);
        }
        prop_assert!((c.summary.cos_mean() - 1.0).abs() <= 1e-15, "true cos mean {}", c.summary.cos_mean());
        prop_assert!((c.summary.cos_min - 1.0).abs() <= 1e-15, "true cos min {}", c.summary.cos_min);
    }

    #[test]
    fn true_cos_is_at_most_one_and_matches_a_loop((shape, a, b) in shaped()) {
        let x = t32(&a, &shape);
        let y16: Vec<f16> = b.iter().map(|&v| f16::from_f32(v)).collect();
        let y = Tensor::from_slice(&y16).view(shape.as_slice());
        let got = values(&true_cos_sim(&x, &y).unwrap());
        let d = *shape.last().unwrap() as usize;
        let want = expected_true_cos(&a.iter().map(|&v| v as f64).collect::<Vec<_>>(), &y16.iter().map(|v| v.to_f64()).collect::<Vec<_>>(), d, ZERO_F32, zero_f16());
        let seed = values(&cos_sim(&x, &y).unwrap());
        let c = compare(&x, &y).unwrap();
        prop_assert_eq!(values(&c.cos_sim), seed.clone());
        for ((g, w), s) in got.iter().zip(&want).zip(&seed) {
            prop_assert!((g - w).abs() <= 1e-15, "{} vs loop {}", g, w);
            prop_assert!(g.abs() <= 1.0 + 1e-15, "{}", g);
            prop_assert!((g - s).abs() <= 5e-3, "true {} vs seed {}", g, s);
        }
        prop_assert!(c.summary.cos_mean() <= 1.0 + 1e-15 && c.summary.cos_min <= c.summary.cos_mean() + 1e-15);
    }

    #[test]
    fn abs_diff_and_cos_are_symmetric((shape, a, b) in shaped()) {
        let (x, y) = (t32(&a, &shape), t32(&b, &shape));
        prop_assert_eq!(values(&abs_diff(&x, &y).unwrap()), values(&abs_diff(&y, &x).unwrap()));
        prop_assert_eq!(values(&cos_sim(&x, &y).unwrap()), values(&cos_sim(&y, &x).unwrap()));
    }

    #[test]
    fn cos_is_scale_invariant((shape, a, b) in shaped(), k in 0.01f32..100.0) {
        let (x, y) = (t32(&a, &shape), t32(&b, &shape));
        let scaled: Vec<f32> = b.iter().map(|v| v * k).collect();
        let c1 = values(&cos_sim(&x, &y).unwrap());
        let c2 = values(&cos_sim(&x, &t32(&scaled, &shape)).unwrap());
        for (p, q) in c1.iter().zip(&c2) {
            prop_assert!((p - q).abs() <= 1e-5, "{} vs {}", p, q);
        }
    }

    #[test]
    fn rel_l2_of_x_against_2x_is_one((shape, a, _b) in shaped()) {
        prop_assume!(a.iter().any(|&v| v != 0.0));
        let x = t32(&a, &shape);
        let s = summarize(&x, &(&x * 2.0)).unwrap();
        prop_assert!((s.rel_l2() - 1.0).abs() <= 1e-12, "{}", s.rel_l2());
        prop_assert!(s.sqnr_db().abs() <= 1e-9);
    }

    #[test]
    fn l2_matches_a_plain_loop_and_bounds_hold((shape, a, b) in shaped()) {
        let s = summarize(&t32(&a, &shape), &t32(&b, &shape)).unwrap();
        let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (x - y).abs() as f64).collect();
        let l2 = d.iter().map(|v| v * v).sum::<f64>().sqrt();
        prop_assert!(rel_close(s.abs_diff_l2(), l2, 1e-12), "{} vs {}", s.abs_diff_l2(), l2);
        prop_assert!(s.abs_diff_l2() >= s.abs_diff_max && s.abs_diff_max >= s.abs_diff_mean());
        prop_assert!(s.cos_min <= s.cos_mean() + 1e-12);
        prop_assert_eq!(s.elements as usize, a.len());
    }
}

/// `cargo test --lib metrics_speed -- --ignored --nocapture`: compare() throughput.
#[test]
#[ignore]
fn metrics_speed() {
    for shape in [[1i64, 64, 4096], [1, 64, 49152], [4, 512, 4096]] {
        tch::manual_seed(0);
        let r = Tensor::randn(shape, (Kind::Float, tch::Device::Cpu));
        let t = (&r + Tensor::randn(shape, (Kind::Float, tch::Device::Cpu)) * 1e-3).to_kind(Kind::Half);
        let start = std::time::Instant::now();
        let c = compare(&r, &t).unwrap();
        let s = start.elapsed().as_secs_f64();
        println!("{shape:?}: {:.1} ms, {:.0} M elements/s (l2 {:.4})", s * 1e3, r.numel() as f64 / s / 1e6, c.summary.abs_diff_l2());
    }
}

