//! The tensor work: the seed's element metrics, the true cos, and the f64 summaries of a
//! (reference, target) pair.

use tch::{Device, Kind, Tensor};

use super::{CompensatedSum, LayerSummary, MetricsError};

/// Elements per chunk converted to f64 at once while summarising (32 MiB of f64).
const CHUNK_ELEMENTS: i64 = 1 << 22;
/// Elements of each side per slice in [`compare_in_slices`] (1 MiB of f32): its transients (the
/// difference, both sides with zeros replaced, their f64 copies) stay near 10 MiB.
const SLICE_ELEMENTS: i64 = 1 << 18;
/// The seed's replacement of exact zeros before the cos (`tensor[tensor == 0] = 1e-6`).
const ZERO_REPLACEMENT: f64 = 1e-6;
/// The seed's `CosineSimilarity(eps=1e-8)`: the smallest norm a side is divided by.
const COS_EPS: f64 = 1e-8;

/// Everything [`compare`] computes for one layer.
#[derive(Debug)]
pub struct Comparison {
    /// `|reference - target|`, the inputs' shape, f32 (f64 if either input is f64), on the
    /// target's device.
    pub abs_diff: Tensor,
    /// The seed's per-row cosine similarity ([`cos_sim`], f16 side normalised in f16, so it can
    /// exceed 1): the inputs' shape without the last dim, on the target's device. This is what
    /// seed CSV files and the compact file's `cos_sim` array hold; the summaries hold the true
    /// cosine ([`true_cos_sim`]) instead.
    pub cos_sim: Tensor,
    /// The whole tensor's summary (the merge of `items`).
    pub summary: LayerSummary,
    /// One summary per batch item (dim 0) when the inputs have at least 3 dims; otherwise one.
    pub items: Vec<LayerSummary>,
}

/// The seed's `abs_diff`: `|reference - target|` element-wise, in the promoted dtype but at least
/// float32 (see the module doc). Computed on the target's device.
pub fn abs_diff(reference: &Tensor, target: &Tensor) -> Result<Tensor, MetricsError> {
    let (r, t) = prepare(reference, target)?;
    elementwise_abs_diff(&r, &t)
}

/// The seed's `cos_sim`: per-row `CosineSimilarity(dim=-1, eps=1e-8)` after exact zeros become
/// `1e-6` in each input's dtype (see the module doc). Computed on the target's device.
pub fn cos_sim(reference: &Tensor, target: &Tensor) -> Result<Tensor, MetricsError> {
    let (r, t) = prepare(reference, target)?;
    let (r, t) = replace_zeros(&r, &t)?;
    rowwise_cos_sim(&r, &t)
}

/// The true per-row cosine that the summaries hold (see the module doc): the seed's zero
/// replacement, then both sides upcast exactly to f64 and
/// `sum(x*y) / (max(||x||, 1e-8) * max(||y||, 1e-8))` in f64. An f64 tensor of the inputs' shape
/// without the last dim, on the target's device.
pub fn true_cos_sim(reference: &Tensor, target: &Tensor) -> Result<Tensor, MetricsError> {
    let (r, t) = prepare(reference, target)?;
    let (r, t) = replace_zeros(&r, &t)?;
    let rows = rowwise_true_cos(&r, &t)?;
    let shape = &r.size()[..r.dim() - 1];
    Ok(Tensor::f_from_slice(&rows)?.f_reshape(shape)?.f_to_device(r.device())?)
}

/// Both element metrics and the summaries (whole tensor and per batch item).
pub fn compare(reference: &Tensor, target: &Tensor) -> Result<Comparison, MetricsError> {
    let (r, t) = prepare(reference, target)?;
    let abs_diff = elementwise_abs_diff(&r, &t)?;
    let (r_cos, t_cos) = replace_zeros(&r, &t)?;
    let cos_sim = rowwise_cos_sim(&r_cos, &t_cos)?;
    let true_cos = rowwise_true_cos(&r_cos, &t_cos)?;
    drop((r_cos, t_cos));
    let items = summarize_items(&r, &t, &abs_diff, &true_cos)?;
    let mut summary = LayerSummary::empty();
    for item in &items {
        summary.merge(item);
    }
    Ok(Comparison { abs_diff, cos_sim, summary, items })
}

/// What the suite's verdict needs of a pair: the per-item summaries (as [`compare`]'s `items`) and
/// the error sums (as [`super::error_sums`] of its `abs_diff`), computed on one slice of rows at a
/// time (at most [`SLICE_ELEMENTS`] elements, at least one row), so that a comparison costs the
/// memory of a slice, not of the tensor: the logits of a batch of 4 at 256 tokens are 50M
/// elements. Each row is summarised whole; sums over rows are added slice by slice, so they may
/// differ from [`compare`]'s in the last bits of an f64.
pub fn compare_in_slices(reference: &dyn Rows, target: &Tensor) -> Result<(Vec<LayerSummary>, super::ErrorSums), MetricsError> {
    compare_in_slices_of(reference, target, SLICE_ELEMENTS)
}

/// The reference side of [`compare_in_slices`]: its dtype and shape, and any run of its elements
/// (flattened, row-major), so that a reference on disk is read one slice at a time.
pub trait Rows {
    fn kind(&self) -> Kind;
    fn shape(&self) -> Vec<i64>;
    /// Elements `first..first + count`, as a 1-d tensor.
    fn elements(&self, first: i64, count: i64) -> Result<Tensor, MetricsError>;
}

impl Rows for Tensor {
    fn kind(&self) -> Kind {
        Tensor::kind(self)
    }

    fn shape(&self) -> Vec<i64> {
        self.size()
    }

    fn elements(&self, first: i64, count: i64) -> Result<Tensor, MetricsError> {
        Ok(self.f_reshape([-1])?.f_narrow(0, first, count)?)
    }
}

fn compare_in_slices_of(reference: &dyn Rows, target: &Tensor, slice_elements: i64) -> Result<(Vec<LayerSummary>, super::ErrorSums), MetricsError> {
    let rs = check_pair(reference, target)?;
    let device = target.device();
    let shape = if rs.is_empty() { vec![1] } else { rs };
    let items = if shape.len() >= 3 { shape[0] } else { 1 };
    let width = *shape.last().unwrap_or(&1);
    let rows = shape.iter().product::<i64>() / items / width;
    let t = target.f_reshape([items, rows, width])?;
    let step = (slice_elements / width).max(1);
    let mut summaries = Vec::with_capacity(items as usize);
    let mut per_token = Vec::with_capacity(items as usize);
    let mut per_channel = vec![0f64; width as usize];
    for i in 0..items {
        let ti = t.f_narrow(0, i, 1)?;
        let mut summary = LayerSummary::empty();
        let mut tokens = Vec::with_capacity(rows as usize);
        let mut start = 0;
        while start < rows {
            let len = step.min(rows - start);
            let rs = reference.elements((i * rows + start) * width, len * width)?.f_reshape([1, len, width])?.f_to_device(device)?;
            let ts = ti.f_narrow(1, start, len)?;
            let abs_diff = elementwise_abs_diff(&rs, &ts)?;
            let (r_cos, t_cos) = replace_zeros(&rs, &ts)?;
            let true_cos = rowwise_true_cos(&r_cos, &t_cos)?;
            drop((r_cos, t_cos));
            summary.merge(&summarize_items(&rs, &ts, &abs_diff, &true_cos)?[0]);
            let sums = super::error_sums(&abs_diff)?;
            tokens.extend_from_slice(&sums.per_token[0]);
            for (total, part) in per_channel.iter_mut().zip(&sums.per_channel) {
                *total += part;
            }
            start += len;
        }
        summaries.push(summary);
        per_token.push(tokens);
    }
    Ok((summaries, super::ErrorSums { per_token, per_channel }))
}

/// The whole-tensor [`LayerSummary`] of a pair (see [`compare`] for everything).
pub fn summarize(reference: &Tensor, target: &Tensor) -> Result<LayerSummary, MetricsError> {
    Ok(compare(reference, target)?.summary)
}

fn is_float(kind: Kind) -> bool {
    matches!(kind, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

/// What every comparison asks of a pair: both floating point, of one shape, not empty. Returns
/// the shape.
fn check_pair(reference: &dyn Rows, target: &Tensor) -> Result<Vec<i64>, MetricsError> {
    for (side, kind) in [("reference", reference.kind()), ("target", target.kind())] {
        if !is_float(kind) {
            return Err(MetricsError::NotFloat { side, kind: format!("{kind:?}") });
        }
    }
    let (rs, ts) = (reference.shape(), target.size());
    if rs != ts {
        return Err(MetricsError::ShapeMismatch { reference: rs, target: ts });
    }
    if rs.iter().product::<i64>() == 0 {
        return Err(MetricsError::Empty { shape: rs });
    }
    Ok(rs)
}

/// Checks the pair and returns views of both on the target's device, 0-d tensors as `[1]`.
fn prepare(reference: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor), MetricsError> {
    check_pair(reference, target)?;
    let device = target.device();
    let as_rows = |t: &Tensor| -> Result<Tensor, MetricsError> {
        let t = t.f_to_device(device)?;
        Ok(if t.dim() == 0 { t.f_reshape([1])? } else { t })
    };
    Ok((as_rows(reference)?, as_rows(target)?))
}

fn diff_kind(a: Kind, b: Kind) -> Kind {
    if a == Kind::Double || b == Kind::Double { Kind::Double } else { Kind::Float }
}

fn elementwise_abs_diff(r: &Tensor, t: &Tensor) -> Result<Tensor, MetricsError> {
    let kind = diff_kind(r.kind(), t.kind());
    Ok(r.f_to_kind(kind)?.f_sub(&t.f_to_kind(kind)?)?.f_abs()?)
}

/// The seed's zero replacement: exact zeros (`-0.0` too) of each side become `1e-6` rounded to
/// that side's dtype. New tensors; the inputs are never written.
fn replace_zeros(r: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor), MetricsError> {
    let replace = |x: &Tensor| -> Result<Tensor, MetricsError> { Ok(x.f_masked_fill(&x.f_eq(0.0)?, ZERO_REPLACEMENT)?) };
    Ok((replace(r)?, replace(t)?))
}

/// The seed's cos of zero-replaced sides: libtorch's `cosine_similarity` in the inputs' dtypes.
fn rowwise_cos_sim(r: &Tensor, t: &Tensor) -> Result<Tensor, MetricsError> {
    Ok(Tensor::f_cosine_similarity(r, t, -1, COS_EPS)?)
}

/// The true cos of zero-replaced sides, one f64 per row (row-major over the leading dims): both
/// upcast exactly to f64, `sum(x*y) / (max(||x||, eps) * max(||y||, eps))` with the sums in f64
/// (libtorch's cascade sum) and `||x|| = sqrt(sum x²)`. Worked on at most [`CHUNK_ELEMENTS`]
/// elements at a time (at least one row).
fn rowwise_true_cos(r: &Tensor, t: &Tensor) -> Result<Vec<f64>, MetricsError> {
    let d = r.size().last().copied().unwrap_or(1);
    let (r, t) = (r.f_reshape([-1, d])?, t.f_reshape([-1, d])?);
    let rows = r.size()[0];
    let step = (CHUNK_ELEMENTS / d).max(1);
    let mut out = Vec::with_capacity(rows as usize);
    let mut start = 0;
    while start < rows {
        let len = step.min(rows - start);
        let x = r.f_narrow(0, start, len)?.f_to_kind(Kind::Double)?;
        let y = t.f_narrow(0, start, len)?.f_to_kind(Kind::Double)?;
        let sum = |v: &Tensor| -> Result<Tensor, MetricsError> { Ok(v.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?) };
        let dot = sum(&x.f_mul(&y)?)?;
        let nx = sum(&x.f_square()?)?.f_sqrt()?.f_clamp_min(COS_EPS)?;
        let ny = sum(&y.f_square()?)?.f_sqrt()?.f_clamp_min(COS_EPS)?;
        out.extend(to_f64_vec(&dot.f_div(&nx.f_mul(&ny)?)?)?);
        start += len;
    }
    Ok(out)
}

/// Copies a 1-d tensor of any kind to a `Vec<f64>` on the CPU.
/// A tensor's values as f64, row-major, from any device and float kind.
pub(crate) fn to_f64_vec(t: &Tensor) -> Result<Vec<f64>, tch::TchError> {
    let t = t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?.f_reshape([-1])?;
    let n = t.numel();
    let mut out = vec![0f64; n];
    t.f_copy_data(&mut out, n)?;
    Ok(out)
}

fn count_rows(mask: &Tensor) -> Result<Vec<f64>, MetricsError> {
    Ok(to_f64_vec(&mask.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)?)?)
}

/// Summaries per batch item (dim 0 of a tensor of >= 3 dims; the whole tensor otherwise).
/// `cos` is the true cos per row ([`rowwise_true_cos`]), row-major.
fn summarize_items(r: &Tensor, t: &Tensor, d: &Tensor, cos: &[f64]) -> Result<Vec<LayerSummary>, MetricsError> {
    let shape = r.size();
    let items = if shape.len() >= 3 { shape[0] } else { 1 };
    let per_item = r.numel() as i64 / items;
    let (r, t, d) = (r.f_reshape([items, per_item])?, t.f_reshape([items, per_item])?, d.f_reshape([items, per_item])?);
    let n = items as usize;
    let mut diff_sq = vec![CompensatedSum::new(); n];
    let mut diff_sq_finite = vec![CompensatedSum::new(); n];
    let mut diff_sum = vec![CompensatedSum::new(); n];
    let mut ref_sq = vec![CompensatedSum::new(); n];
    let mut diff_max = vec![f64::NEG_INFINITY; n];
    let mut counts = vec![[0u64; 6]; n]; // ref nan, ref inf, target nan, target inf, diff nan, diff inf
    let columns = (CHUNK_ELEMENTS / items).max(1);
    let mut start = 0;
    while start < per_item {
        let len = columns.min(per_item - start);
        let d64 = d.f_narrow(1, start, len)?.f_to_kind(Kind::Double)?;
        let r64 = r.f_narrow(1, start, len)?.f_to_kind(Kind::Double)?;
        let tc = t.f_narrow(1, start, len)?;
        let sq = d64.f_square()?;
        let sum1 = |t: &Tensor| -> Result<Vec<f64>, MetricsError> { Ok(to_f64_vec(&t.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?)?) };
        let diff_sq_part = sum1(&sq)?;
        let ref_sq_part = sum1(&r64.f_square()?)?;
        let diff_sum_part = sum1(&d64)?;
        let maxima = to_f64_vec(&d64.f_amax([1i64].as_slice(), false)?)?;
        // NaN or inf anywhere in the reference, the target or abs_diff shows in these two sums (a
        // finite f32/f16 value squared in f64 cannot overflow); only then are the counts needed.
        let clean = diff_sq_part.iter().chain(&ref_sq_part).all(|v| v.is_finite());
        let (diff_sq_finite_part, c) = if clean {
            (diff_sq_part.clone(), [vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]])
        } else {
            (
                sum1(&sq.f_nan_to_num(0.0, 0.0, 0.0)?)?,
                [
                    count_rows(&r64.f_isnan()?)?,
                    count_rows(&r64.f_isinf()?)?,
                    count_rows(&tc.f_isnan()?)?,
                    count_rows(&tc.f_isinf()?)?,
                    count_rows(&d64.f_isnan()?)?,
                    count_rows(&d64.f_isinf()?)?,
                ],
            )
        };
        let sums = [diff_sq_part, diff_sq_finite_part, diff_sum_part, ref_sq_part];
        for i in 0..n {
            diff_sq[i].add(sums[0][i]);
            diff_sq_finite[i].add(sums[1][i]);
            diff_sum[i].add(sums[2][i]);
            ref_sq[i].add(sums[3][i]);
            diff_max[i] = if diff_max[i].is_nan() || maxima[i].is_nan() { f64::NAN } else { diff_max[i].max(maxima[i]) };
            for (k, column) in c.iter().enumerate() {
                counts[i][k] += column[i] as u64;
            }
        }
        start += len;
    }
    let rows_per_item = cos.len() / n;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let rows = &cos[i * rows_per_item..(i + 1) * rows_per_item];
        let mut cos_sum = CompensatedSum::new();
        let mut cos_sum_finite = CompensatedSum::new();
        let (mut cos_min, mut cos_argmin, mut cos_nan) = (f64::INFINITY, 0u64, 0u64);
        for (j, &v) in rows.iter().enumerate() {
            cos_sum.add(v);
            if v.is_nan() {
                if cos_nan == 0 {
                    cos_min = f64::NAN;
                    cos_argmin = j as u64;
                }
                cos_nan += 1;
            } else {
                cos_sum_finite.add(v);
                if cos_nan == 0 && v < cos_min {
                    cos_min = v;
                    cos_argmin = j as u64;
                }
            }
        }
        out.push(LayerSummary {
            elements: per_item as u64,
            rows: rows.len() as u64,
            abs_diff_sq_sum: diff_sq[i].value(),
            abs_diff_sq_sum_finite: diff_sq_finite[i].value(),
            abs_diff_sum: diff_sum[i].value(),
            abs_diff_max: diff_max[i],
            reference_sq_sum: ref_sq[i].value(),
            cos_sum: cos_sum.value(),
            cos_sum_finite: cos_sum_finite.value(),
            cos_min,
            cos_argmin,
            reference_nan: counts[i][0],
            reference_inf: counts[i][1],
            target_nan: counts[i][2],
            target_inf: counts[i][3],
            abs_diff_nan: counts[i][4],
            abs_diff_inf: counts[i][5],
            cos_nan,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod slice_tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    }

    /// Slicing rows changes nothing but the order of f64 additions across slices: every
    /// quantity of every item, and the error sums, match the whole-tensor comparison.
    #[test]
    fn slices_give_the_whole_tensor_s_items_and_error_sums() {
        tch::manual_seed(7);
        for shape in [vec![3i64, 37, 16], vec![37, 16], vec![16]] {
            let r = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
            let t = (&r + Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)) * 0.01).to_kind(Kind::Half);
            // Exact zeros (replaced before the cos) and a NaN in one row of the target.
            let _ = r.view([-1]).narrow(0, 2, 3).fill_(0.0);
            let _ = t.view([-1]).narrow(0, t.numel() as i64 - 3, 1).fill_(f64::NAN);
            let whole = compare(&r, &t).unwrap();
            let sums = super::super::error_sums(&whole.abs_diff).unwrap();
            let (items, sliced) = compare_in_slices_of(&r, &t, 50).unwrap();
            assert_eq!(items.len(), whole.items.len(), "{shape:?}");
            for (a, b) in items.iter().zip(&whole.items) {
                assert_eq!((a.elements, a.rows, a.cos_argmin, a.target_nan, a.abs_diff_nan, a.cos_nan), (b.elements, b.rows, b.cos_argmin, b.target_nan, b.abs_diff_nan, b.cos_nan), "{shape:?}");
                for (x, y) in [(a.abs_diff_sq_sum, b.abs_diff_sq_sum), (a.abs_diff_sq_sum_finite, b.abs_diff_sq_sum_finite), (a.abs_diff_sum, b.abs_diff_sum), (a.reference_sq_sum, b.reference_sq_sum), (a.cos_sum, b.cos_sum), (a.cos_sum_finite, b.cos_sum_finite), (a.cos_min, b.cos_min), (a.abs_diff_max, b.abs_diff_max)] {
                    assert!(close(x, y), "{shape:?}: {x} vs {y}");
                }
            }
            assert_eq!(sliced.per_token.len(), sums.per_token.len());
            for (a, b) in sliced.per_token.iter().flatten().zip(sums.per_token.iter().flatten()) {
                assert!(close(*a, *b), "{shape:?}: token {a} vs {b}");
            }
            for (a, b) in sliced.per_channel.iter().zip(&sums.per_channel) {
                assert!(close(*a, *b), "{shape:?}: channel {a} vs {b}");
            }
        }
    }
}
