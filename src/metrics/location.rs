//! Where in a tensor the error of a pair sits: the squared error summed per row (token) and per
//! hidden channel (last dim), in f64. A few vectors of the tensor's rows and channels, small next
//! to the tensor itself.

use tch::{Kind, Tensor};

use super::MetricsError;

/// The squared error of one record, summed per row and per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorSums {
    /// One per batch item (dim 0 of a tensor with at least 3 dims, else one): per row within the
    /// item (the token), `sum over the last dim of (reference - target)^2`.
    pub per_token: Vec<Vec<f64>>,
    /// Per channel (index in the last dim), `sum over every row of (reference - target)^2`.
    pub per_channel: Vec<f64>,
}

/// The [`ErrorSums`] of an `abs_diff` tensor (see [`super::abs_diff`]); items as
/// [`super::compare`] splits them.
pub fn error_sums(abs_diff: &Tensor) -> Result<ErrorSums, MetricsError> {
    let d = abs_diff.f_to_kind(Kind::Double)?;
    let d = if d.dim() == 0 { d.f_reshape([1])? } else { d };
    let size = d.size();
    let channels = *size.last().unwrap_or(&1);
    let items = if size.len() >= 3 { size[0] } else { 1 };
    let sq = d.f_square()?.f_reshape([items, -1, channels])?;
    let rows = sq.f_sum_dim_intlist(Some(&[-1i64][..]), false, Kind::Double)?;
    let per_channel = sq.f_sum_dim_intlist(Some(&[0i64, 1][..]), false, Kind::Double)?;
    let per_token = (0..items).map(|i| -> Result<Vec<f64>, MetricsError> { Ok(Vec::<f64>::try_from(rows.f_get(i)?.f_contiguous()?)?) }).collect::<Result<_, _>>()?;
    Ok(ErrorSums { per_token, per_channel: Vec::<f64>::try_from(per_channel.f_contiguous()?)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_per_item_token_and_channel() {
        // [2 items, 2 tokens, 3 channels]; differences chosen so every sum is distinct.
        let r = Tensor::from_slice(&[0.0f32; 12]).reshape([2, 2, 3]);
        let t = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 1.0, 1.0, 0.0]).reshape([2, 2, 3]);
        let s = error_sums(&super::super::abs_diff(&r, &t).unwrap()).unwrap();
        assert_eq!(s.per_token, vec![vec![1.0, 4.0], vec![9.0, 2.0]]);
        assert_eq!(s.per_channel, vec![2.0, 5.0, 9.0]);
        // A 2-d tensor is one item of rows; a 0-d one is one row of one channel.
        let s = error_sums(&Tensor::from_slice(&[3.0f32, 4.0]).reshape([1, 2])).unwrap();
        assert_eq!((s.per_token, s.per_channel), (vec![vec![25.0]], vec![9.0, 16.0]));
        let s = error_sums(&Tensor::from(2.0f32)).unwrap();
        assert_eq!((s.per_token, s.per_channel), (vec![vec![4.0]], vec![4.0]));
    }
}
