//! Metrics on one layer's (reference, target) pair of outputs.
//!
//! # The seed's element metrics (spec §3, `metrics_utils.py`)
//!
//! - [`abs_diff`]: `|reference - target|` element-wise. The seed computes `torch.abs(cpu_f32 -
//!   gpu_f16)`, which PyTorch promotes to float32: the f16 value converts exactly, the subtraction
//!   rounds once in f32. Ours: the promoted dtype, at least float32 (f32 for any f32/f16/bf16
//!   mix, f64 if either side is f64; the seed would stay in f16 when both sides are f16).
//! - [`cos_sim`]: one value per row along the last dim, `torch.nn.CosineSimilarity(dim=-1,
//!   eps=1e-8)` after replacing exact zeros (`== 0.0`, so `-0.0` too) in each input by `1e-6`
//!   *in that input's dtype* (f16: 1.0133e-6). PyTorch's formula (ATen `cosine_similarity`) is
//!   `sum(x / max(||x||, eps) * y / max(||y||, eps))`: each norm is computed and each division is
//!   rounded in the input's own dtype (so the f16 side is normalised in f16, which is why the
//!   seed's cos can exceed 1), the product and the sum in the promoted dtype (f32 for f32 vs
//!   f16). We call that same libtorch function, on the target's device like the seed (which moves
//!   the CPU tensor to the GPU). Unlike the seed, the zero replacement never writes into the
//!   caller's tensors (the seed's in-place `tensor[tensor == 0] = 1e-6` leaks into later keys
//!   that alias the same tensor, e.g. `ff_sub_layer` after `ff_sub_layer.w2`).
//!
//! [`cos_sim`] is what seed CSV files and the compact file's `cos_sim` array hold, bit for bit
//! what the seed computes, so the seed's `cos_sim_avg` / `cos_sim_mean` thresholds come out the
//! same. It is *not* what our summaries hold.
//!
//! # The true cosine ([`true_cos_sim`])
//!
//! The seed's f16 normalisation makes its cos exceed 1 by up to ~1e-4 for an f16 target (even
//! for identical inputs), so a percentile of it can be a threshold above 1 that a perfect target
//! fails. The summaries therefore hold the cosine of the same vectors computed exactly enough to
//! respect `|cos| <= 1`:
//!
//! 1. the seed's zero replacement, unchanged: exact zeros (`== 0.0`, `-0.0` too) of each side
//!    become `1e-6` rounded to that side's dtype (f32: 9.9999999748e-7, f16: 1.0133e-6, bf16:
//!    9.9838e-7; f64: 1e-6), so both cosines are of the same vectors;
//! 2. both sides upcast (exactly) to f64;
//! 3. per row along the last dim, in f64: `dot = sum(x*y)`, `||x|| = sqrt(sum x²)`,
//!    `||y|| = sqrt(sum y²)` (libtorch's f64 sums), and
//!    `cos = dot / (max(||x||, 1e-8) * max(||y||, 1e-8))`: the eps of the seed's
//!    `CosineSimilarity`, clamping each norm separately as ATen does.
//!
//! By Cauchy-Schwarz it never exceeds 1 beyond f64 rounding (a few units of 1e-16); identical
//! sides give 1 within 1e-15 whatever their dtype. f32/f16/bf16 products and squares are exact in
//! f64, so only the sums round. Limits: f64 inputs beyond ~1e154 overflow the squares (cos NaN)
//! and below ~1e-162 underflow them (the norm clamps at eps).
//!
//! # Summaries ([`LayerSummary`])
//!
//! Sums are accumulated in f64 (libtorch's cascade sums per chunk of at most 2^22 elements,
//! compensated sums across chunks) from the f32 `abs_diff` values, so that the seed's `abs_diff`
//! threshold reduction can be reproduced from a summary. The cos fields are of the true cosine
//! (above), accumulated in f64 (compensated sums). Items: a tensor with at least 3 dims `[B, ..]`
//! is also summarised per batch item (dim 0), one [`LayerSummary`] each; the whole-tensor summary
//! is the merge of the items.
//!
//! # Degenerate inputs (all tested)
//!
//! What is said of cos holds for both cosines, except where noted.
//!
//! - Shapes must be equal ([`MetricsError::ShapeMismatch`] names both); a 0-d tensor is treated as
//!   `[1]`; a tensor with no element is an error ([`MetricsError::Empty`]); non-float dtypes are an
//!   error ([`MetricsError::NotFloat`]).
//! - All zeros on both sides: abs 0, `rel_l2` 0, `sqnr_db` +inf, cos 1 (zeros become 1e-6, so both
//!   rows are equal constants). A zero reference with a non-zero difference: `rel_l2` +inf,
//!   `sqnr_db` -inf.
//! - Constants: cos 1 (or -1 for opposite signs), whatever the magnitude.
//! - One element per row: cos is the product of the signs, ±1.
//! - NaN never looks like agreement: a NaN on either side makes that element's `abs_diff` NaN and
//!   that row's cos NaN, and then `abs_diff_l2`, `abs_diff_max`, `abs_diff_mean`, `rel_l2`,
//!   `sqnr_db`, `cos_mean` and `cos_min` are all NaN (`cos_argmin` is the first NaN row), and
//!   [`LayerSummary::has_nonfinite`] is true. Counts of NaN and ±inf are kept per side.
//! - fp16 overflow (target `inf` where the reference is finite): `abs_diff` is `inf` there, so
//!   `abs_diff_l2`, `abs_diff_max`, `rel_l2` are +inf and `sqnr_db` -inf; that row's cos is NaN
//!   (`inf / inf`), so `cos_mean`/`cos_min` are NaN. A finite f16 row whose *norm* overflows f16
//!   (above 65504) gets the seed's cos 0 (divided by an inf norm) but its true cos.
//! - `inf` on both sides with the same sign gives a NaN `abs_diff` (`inf - inf`).

mod compare;
mod compensated;
mod location;
pub mod logits;
mod summary;

pub use compare::{abs_diff, compare, compare_in_slices, cos_sim, Rows, summarize, true_cos_sim, Comparison};
pub(crate) use compare::to_f64_vec;
pub use compensated::CompensatedSum;
pub use location::{error_sums, ErrorSums};
pub use summary::{unravel_index, LayerSummary, SUMMARY_FIELDS};

/// Why two tensors could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The reference and the target have different shapes.
    #[error("cannot compare a reference of shape {reference:?} with a target of shape {target:?}\n(hint: both sides must capture the same module on the same inputs; check batch size, sequence length and the module key)")]
    ShapeMismatch { reference: Vec<i64>, target: Vec<i64> },
    /// A side is not a floating-point tensor.
    #[error("the {side} tensor has dtype {kind}; metrics need f32, f64, f16 or bf16")]
    NotFloat { side: &'static str, kind: String },
    /// The tensors have no element.
    #[error("cannot compare tensors of shape {shape:?}: they have no element")]
    Empty { shape: Vec<i64> },
    /// The reference's slice could not be read (a golden file read one slice at a time).
    #[error("the reference could not be read: {0}")]
    Read(#[source] crate::capture::RecordError),
    /// libtorch failed.
    #[error("libtorch failed while computing metrics: {0}")]
    Torch(#[from] tch::TchError),
}

#[cfg(test)]
mod tests;
