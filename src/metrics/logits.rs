//! Per-token logits metrics, as the Python tools' end-to-end test (`test_decoders.py`,
//! `generate_metrics.py`) computes them; the quantities and the verdict are defined in
//! `layercheck_suite::logits`.
//!
//! Per token: the reference's `k` largest logits `r` (`torch.topk`), the target's logits `t` at
//! the same vocabulary indices, and from them, in f64, `ce = -sum softmax(t) * log_softmax(r)`,
//! `diff_mean = mean |softmax(r) - softmax(t)|` and `kl = sum softmax(t) * (log_softmax(t) -
//! log_softmax(r))`; `top1` compares the argmax of both sides over the whole vocabulary. The
//! Python tools compute in f32; the values agree with theirs to f32 rounding
//! (`tests/logits_metrics.rs` checks them against PyTorch's own).

use tch::{Kind, Tensor};

use crate::capture::Mode;
use layercheck_suite::logits::TokenLogits;

/// Why logits could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum LogitsError {
    #[error("the reference's logits have shape {reference:?} and the target's {target:?}\n(hint: both must be [batch, positions, vocabulary] of the same run)")]
    Shape { reference: Vec<i64>, target: Vec<i64> },
    #[error("the {side} has no logits ({what})")]
    Missing { side: &'static str, what: String },
    #[error("libtorch failed while comparing logits: {0}")]
    Torch(#[from] tch::TchError),
    #[error("the golden file's record {name} cannot be read: {source}")]
    Unreadable { name: String, #[source] source: crate::capture::RecordError },
    #[error("the golden file's record {name} has shape {shape:?}, not [batch, positions, vocabulary]")]
    RecordShape { name: String, shape: Vec<i64> },
}

/// The metrics of each row of `reference` and `target` (`[N, V]`), on the reference's `top_k`
/// largest logits (all of them when the vocabulary is smaller): `(ce, diff_mean, kl, top1)`.
pub fn row_metrics(reference: &Tensor, target: &Tensor, top_k: usize) -> Result<Vec<(f64, f64, f64, bool)>, LogitsError> {
    let (rs, ts) = (reference.size(), target.size());
    if rs.len() != 2 || rs != ts {
        return Err(LogitsError::Shape { reference: rs, target: ts });
    }
    let k = (top_k as i64).min(rs[1]);
    let reference = reference.f_to_kind(Kind::Float)?;
    let target = target.f_to_kind(Kind::Float)?;
    let (values, indices) = reference.f_topk(k, -1, true, true)?;
    let r = values.f_to_kind(Kind::Double)?;
    let t = target.f_gather(-1, &indices, false)?.f_to_kind(Kind::Double)?;
    let log_r = r.f_log_softmax(-1, Kind::Double)?;
    let log_t = t.f_log_softmax(-1, Kind::Double)?;
    let p_t = log_t.f_exp()?;
    let ce = p_t.f_mul(&log_r)?.f_sum_dim_intlist(-1, false, Kind::Double)?.f_neg()?;
    let diff = log_r.f_exp()?.f_sub(&p_t)?.f_abs()?.f_mean_dim(-1, false, Kind::Double)?;
    let kl = p_t.f_mul(&log_t.f_sub(&log_r)?)?.f_sum_dim_intlist(-1, false, Kind::Double)?;
    let top1 = reference.f_argmax(-1, false)?.f_eq_tensor(&target.f_argmax(-1, false)?)?;
    let (ce, diff, kl) = (f64s(&ce)?, f64s(&diff)?, f64s(&kl)?);
    let top1: Vec<bool> = Vec::<bool>::try_from(&top1)?;
    Ok((0..ce.len()).map(|i| (ce[i], diff[i], kl[i], top1[i])).collect())
}

fn f64s(t: &Tensor) -> Result<Vec<f64>, LogitsError> {
    Ok(Vec::<f64>::try_from(t)?)
}

/// The tokens of a case. Model-forward: `reference` and `target` hold one `[B, S, V]` tensor (the
/// final logits) and every position from the first real token of its prompt on counts (left
/// padding, id 0 before the first other id, does not). Generate: one `[B, s, V]` tensor per forward
/// call in order (the `model` records), and each call's last position is the step's token.
pub fn case_tokens(mode: Mode, reference: &[&Tensor], target: &[&Tensor], input_ids: &Tensor, top_k: usize) -> Result<Vec<TokenLogits>, LogitsError> {
    let mut tokens = Vec::new();
    if reference.len() != target.len() || reference.is_empty() {
        return Err(LogitsError::Missing { side: if reference.is_empty() { "reference" } else { "target" }, what: format!("{} forward call(s) against the reference's {}", target.len(), reference.len()) });
    }
    match mode {
        Mode::ModelForward => {
            let (r, t) = (reference[0], target[0]);
            if r.size() != t.size() || r.dim() != 3 {
                return Err(LogitsError::Shape { reference: r.size(), target: t.size() });
            }
            let first_real = first_real_positions(input_ids)?;
            for (b, first) in first_real.into_iter().enumerate() {
                let s = r.size()[1];
                let (rb, tb) = (r.f_select(0, b as i64)?, t.f_select(0, b as i64)?);
                let rows = row_metrics(&rb.f_narrow(0, first, s - first)?, &tb.f_narrow(0, first, s - first)?, top_k)?;
                for (i, (ce, diff_mean, kl, top1)) in rows.into_iter().enumerate() {
                    tokens.push(TokenLogits { prompt: b, position: first as usize + i, ce, diff_mean, kl, top1 });
                }
            }
        }
        Mode::Generate => {
            for (step, (r, t)) in reference.iter().zip(target).enumerate() {
                if r.size() != t.size() || r.dim() != 3 {
                    return Err(LogitsError::Shape { reference: r.size(), target: t.size() });
                }
                let rows = row_metrics(&r.f_select(1, -1)?, &t.f_select(1, -1)?, top_k)?;
                for (b, (ce, diff_mean, kl, top1)) in rows.into_iter().enumerate() {
                    tokens.push(TokenLogits { prompt: b, position: step, ce, diff_mean, kl, top1 });
                }
            }
            tokens.sort_by_key(|t| (t.prompt, t.position));
        }
    }
    Ok(tokens)
}

/// Per prompt of `[B, S]` ids, the first position that is not left padding (id 0 before the
/// first other id); a prompt of pads only counts from its last position.
fn first_real_positions(ids: &Tensor) -> Result<Vec<i64>, LogitsError> {
    let rows: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(ids)?;
    Ok(rows.iter().map(|row| row.iter().position(|&id| id != 0).unwrap_or(row.len().saturating_sub(1)) as i64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_have_zero_kl_and_diff_but_not_zero_ce() {
        let r = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.5, -1.0, 4.0]).view([2, 3]);
        let m = row_metrics(&r, &r, 2).unwrap();
        for (ce, diff, kl, top1) in m {
            assert!(kl.abs() < 1e-15 && diff.abs() < 1e-15 && top1);
            // The entropy of the top-2 softmax: positive.
            assert!(ce > 0.1, "{ce}");
        }
    }

    #[test]
    fn the_top1_compares_argmaxes_over_the_whole_vocabulary() {
        let r = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]);
        let t = Tensor::from_slice(&[1.0f32, 3.5, 3.0]).view([1, 3]);
        assert!(!row_metrics(&r, &t, 2).unwrap()[0].3);
    }

    #[test]
    fn left_padding_is_not_a_token_and_steps_are_per_prompt() {
        let ids = Tensor::from_slice(&[0i64, 0, 5, 6, 7, 8, 9, 1]).view([2, 4]);
        let r = Tensor::randn([2, 4, 5], (Kind::Float, tch::Device::Cpu));
        let t = &r + 0.01;
        let tokens = case_tokens(Mode::ModelForward, &[&r], &[&t], &ids, 3).unwrap();
        let at: Vec<(usize, usize)> = tokens.iter().map(|t| (t.prompt, t.position)).collect();
        assert_eq!(at, vec![(0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]);
        let steps = [Tensor::randn([2, 4, 5], (Kind::Float, tch::Device::Cpu)), Tensor::randn([2, 1, 5], (Kind::Float, tch::Device::Cpu))];
        let refs: Vec<&Tensor> = steps.iter().collect();
        let tokens = case_tokens(Mode::Generate, &refs, &refs, &ids, 3).unwrap();
        let at: Vec<(usize, usize)> = tokens.iter().map(|t| (t.prompt, t.position)).collect();
        assert_eq!(at, vec![(0, 0), (0, 1), (1, 0), (1, 1)]);
        assert!(case_tokens(Mode::Generate, &refs, &refs[..1], &ids, 3).is_err());
    }
}
