//! Rotary position embeddings as fms applies them: on adjacent pairs of (permuted) q/k rows,
//! computed in float32 whatever the model's precision.

use tch::{Device, Kind, TchError, Tensor};

use super::config::{Llama3Scaling, Rope};

/// Precomputed cos/sin tables, `[max_positions, head_dim/2]` each, float32.
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

impl RopeTables {
    /// Tables for positions `0..max_positions`.
    /// Fails when libtorch cannot hold them (out of memory on the device).
    pub fn new(rope: &Rope, head_dim: i64, max_positions: i64, device: Device) -> Result<Self, TchError> {
        let exponents = Tensor::f_arange_start_step(0, head_dim, 2, (Kind::Int64, Device::Cpu))?.f_to_kind(Kind::Float)?.f_div_scalar(head_dim as f64)?;
        let mut inv_freq = Tensor::from(rope.theta as f32).f_pow(&exponents)?.f_reciprocal()?;
        if let Some(scaling) = &rope.llama3 {
            inv_freq = llama3_scale(&inv_freq, scaling)?;
        }
        let positions = Tensor::f_arange(max_positions, (Kind::Float, Device::Cpu))?;
        let angles = positions.f_outer(&inv_freq)?;
        Ok(RopeTables { cos: angles.f_cos()?.f_to_device(device)?, sin: angles.f_sin()?.f_to_device(device)? })
    }

    /// The angles of `positions` `[B, S]`: gathered once per forward call, used by every layer.
    pub fn at(&self, positions: &Tensor) -> Result<RopeAngles, TchError> {
        let (b, s) = positions.size2()?;
        let flat = positions.f_flatten(0, -1)?;
        Ok(RopeAngles { cos: self.cos.f_index_select(0, &flat)?.f_view([b, s, 1, -1])?, sin: self.sin.f_index_select(0, &flat)?.f_view([b, s, 1, -1])? })
    }
}

/// The cos/sin of one forward call's positions, `[B, S, 1, head_dim/2]` each, float32.
pub struct RopeAngles {
    cos: Tensor,
    sin: Tensor,
}

impl RopeAngles {
    /// Rotates `x` `[B, S, H, D]` (rows in fms's interleaved order).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let (b, s, h, d) = x.size4()?;
        let pairs = x.f_to_kind(Kind::Float)?.f_view([b, s, h, d / 2, 2])?;
        let x0 = pairs.f_select(-1, 0)?;
        let x1 = pairs.f_select(-1, 1)?;
        let out0 = x0.f_mul(&self.cos)?.f_sub(&x1.f_mul(&self.sin)?)?;
        let out1 = x0.f_mul(&self.sin)?.f_add(&x1.f_mul(&self.cos)?)?;
        Tensor::f_stack(&[out0, out1], -1)?.f_view([b, s, h, d])?.f_to_kind(x.kind())
    }
}

/// Llama 3.1's frequency scaling of the inverse frequencies.
fn llama3_scale(inv_freq: &Tensor, s: &Llama3Scaling) -> Result<Tensor, TchError> {
    let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    let values: Vec<f32> = Vec::<f32>::try_from(inv_freq)?;
    let scaled: Vec<f32> = values
        .iter()
        .map(|&f| {
            let f = f as f64;
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let out = if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / s.factor
            } else {
                let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * f / s.factor + smooth * f
            };
            out as f32
        })
        .collect();
    Ok(Tensor::from_slice(&scaled))
}
