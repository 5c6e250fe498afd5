//! The decoder: embedding, blocks of (RMSNorm, GQA attention with RoPE, SiLU-gated MLP), final
//! norm and head, computed as fms computes them, with a hook point at every fms module.

use std::path::Path;

use tch::{Device, Kind, TchError, Tensor};

use super::config::ModelConfig;
use super::rope::{RopeAngles, RopeTables};
use super::weights::Checkpoint;
use super::ModelError;
use crate::hooks::{at, Hooks, Interrupted, LayerModule, ModuleKey};
use crate::target::{Target, TargetRuntime};

/// How attention treats the left padding of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionMask {
    /// As the seed tools do: every token, pads included, is attended; positions are 0..S-1.
    #[default]
    AttendPads,
    /// Pads (id 0 on the left) are masked out and positions start at the first real token.
    Proper,
}

impl std::fmt::Display for AttentionMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttentionMask::AttendPads => "attend-pads",
            AttentionMask::Proper => "proper",
        })
    }
}

impl std::str::FromStr for AttentionMask {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "attend-pads" => Ok(AttentionMask::AttendPads),
            "proper" => Ok(AttentionMask::Proper),
            other => Err(format!("unknown attention mask \"{other}\" (expected attend-pads or proper)")),
        }
    }
}

/// A decoder model on one target.
pub struct DecoderModel {
    pub config: ModelConfig,
    pub target: Target,
    device: Device,
    embedding: Tensor,
    blocks: Vec<Block>,
    dec_norm: Tensor,
    head: Tensor,
    rope: RopeTables,
    /// Whether the checkpoint holds float64 weights (see [`DecoderModel::converted`]).
    checkpoint_float64: bool,
}

struct Block {
    ln: Tensor,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    dense: Tensor,
    ff_ln: Tensor,
    wg: Tensor,
    w1: Tensor,
    w2: Tensor,
}

/// Keys and values of one layer, after RoPE, `[B, Hkv, T, D]`.
struct LayerCache {
    keys: Tensor,
    values: Tensor,
}

/// What one forward call is given besides its ids.
struct Step<'c> {
    positions: Tensor,
    /// Boolean `[B, 1, Sq, Sk]` (true = attend), or None for plain causal attention.
    mask: Option<Tensor>,
    cache: Option<&'c mut Vec<LayerCache>>,
}

/// The result of a greedy generation.
pub struct Generation {
    /// The prompt followed by the new tokens, `[B, S + max_new_tokens]`.
    pub ids: Tensor,
}

/// Hands the memory freed while loading (each weight's slices in the file's dtype, converted and
/// dropped) back to the operating system: glibc keeps freed heap memory for reuse, and on
/// SmolLM2-135M at f16 that was 88 MB more resident for the whole run (`cargo bench --bench
/// memory`). Once per load, so it costs nothing measurable.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl DecoderModel {
    /// This model's weights converted to `target` (its device and dtype), as [`DecoderModel::load`]
    /// would have read them from the same checkpoint when this model holds them at float32 or
    /// wider: `generate` reads the checkpoint once for both sides. Tied weights stay tied.
    ///
    /// `None` when that would not be so: this model is narrower than float32, or its checkpoint
    /// holds float64 weights (rounded once to float32 here, converting again would round twice).
    pub fn converted(&self, target: Target) -> Result<Option<Self>, ModelError> {
        if self.target.kind() != tch::Kind::Float || self.checkpoint_float64 {
            return Ok(None);
        }
        let device = target.device()?;
        let kind = target.kind();
        let to = |t: &Tensor| t.f_to_device(device).and_then(|t| t.f_to_kind(kind));
        let block = |b: &Block| -> Result<Block, TchError> {
            Ok(Block { ln: to(&b.ln)?, query: to(&b.query)?, key: to(&b.key)?, value: to(&b.value)?, dense: to(&b.dense)?, ff_ln: to(&b.ff_ln)?, wg: to(&b.wg)?, w1: to(&b.w1)?, w2: to(&b.w2)? })
        };
        let blocks = self.blocks.iter().map(block).collect::<Result<Vec<_>, _>>()?;
        let embedding = to(&self.embedding)?;
        let head = if self.config.tie_word_embeddings { embedding.shallow_clone() } else { to(&self.head)? };
        let c = &self.config;
        let rope = RopeTables::new(&c.rope, c.head_dim, c.max_position_embeddings, device)?;
        Ok(Some(DecoderModel { config: self.config.clone(), target, device, embedding, blocks, dec_norm: to(&self.dec_norm)?, head, rope, checkpoint_float64: false }))
    }

    /// Loads the HF model folder `dir` onto `target`.
    pub fn load(dir: &Path, target: Target) -> Result<Self, ModelError> {
        let config = ModelConfig::load(dir)?;
        let device = target.device()?;
        let mut ckpt = Checkpoint::load(dir)?;
        let checkpoint_float64 = ckpt.has_float64();
        let kind = target.kind();
        let c = &config;
        let mut take = |name: &str, shape: &[i64]| -> Result<Tensor, ModelError> {
            let w = ckpt.take(name, shape, kind)?;
            Ok(w.tensor.f_to_device(device)?)
        };
        let (e, f) = (c.hidden_size, c.intermediate_size);
        let embedding = take("model.embed_tokens.weight", &[c.vocab_size, e])?;
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            blocks.push(Block {
                ln: take(&format!("{p}.input_layernorm.weight"), &[e])?,
                query: to_fms_rows(&take(&format!("{p}.self_attn.q_proj.weight"), &[c.q_width(), e])?, c.num_heads)?,
                key: to_fms_rows(&take(&format!("{p}.self_attn.k_proj.weight"), &[c.kv_width(), e])?, c.num_kv_heads)?,
                value: take(&format!("{p}.self_attn.v_proj.weight"), &[c.kv_width(), e])?,
                dense: take(&format!("{p}.self_attn.o_proj.weight"), &[e, c.q_width()])?,
                ff_ln: take(&format!("{p}.post_attention_layernorm.weight"), &[e])?,
                wg: take(&format!("{p}.mlp.gate_proj.weight"), &[f, e])?,
                w1: take(&format!("{p}.mlp.up_proj.weight"), &[f, e])?,
                w2: take(&format!("{p}.mlp.down_proj.weight"), &[e, f])?,
            });
        }
        let dec_norm = take("model.norm.weight", &[e])?;
        let head = if c.tie_word_embeddings {
            embedding.shallow_clone()
        } else {
            take("lm_head.weight", &[c.vocab_size, e])?
        };
        // A tied checkpoint may still carry a copy of the embedding as lm_head; anything else
        // unused means the checkpoint has a feature this model does not implement.
        let unused: Vec<String> = ckpt
            .remaining()
            .into_iter()
            .filter(|n| {
                let tied_copy = c.tie_word_embeddings && n == "lm_head.weight";
                !tied_copy && !n.ends_with("rotary_emb.inv_freq")
            })
            .collect();
        if !unused.is_empty() {
            return Err(ModelError::UnusedWeights { path: ckpt.source.clone(), names: unused.join(", ") });
        }
        let rope = RopeTables::new(&c.rope, c.head_dim, c.max_position_embeddings, device)?;
        drop(ckpt);
        release_freed_memory();
        Ok(DecoderModel { config, target, device, embedding, blocks, dec_norm, head, rope, checkpoint_float64 })
    }

    /// The libtorch device the model's weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// One forward over `ids` `[B, S]` (model-forward mode); returns the final logits `[B, S, V]`
    /// (after Granite's `logits_scaling`), or why it did not finish: the listener stopped it, or a
    /// libtorch op failed (named by the hook point it happened at).
    pub fn forward(&self, ids: &Tensor, mask: AttentionMask, hooks: &mut Hooks) -> Result<Tensor, Interrupted> {
        let ids = ids.f_to_device(self.device).map_err(at(ModuleKey::Embedding))?;
        let (positions, attn_mask) = self.prompt_positions(&ids, mask).map_err(at(ModuleKey::Embedding))?;
        hooks.begin_step(0);
        self.forward_step(&ids, Step { positions, mask: attn_mask, cache: None }, false, hooks)
    }

    /// Greedy generation of `max_new_tokens` tokens with a KV cache and no EOS stop, one forward
    /// call per new token; hooks see every call (the root `model` key included, as in the seed).
    /// With `forced` (`[B, max_new_tokens]`), those tokens are fed instead of the argmax, so that a
    /// target decodes the reference's tokens and every step compares like with like.
    pub fn generate(&self, ids: &Tensor, max_new_tokens: usize, forced: Option<&Tensor>, mask: AttentionMask, hooks: &mut Hooks) -> Result<Generation, Interrupted> {
        let start = at(ModuleKey::Embedding);
        let next_token = at(ModuleKey::Model);
        let ids = ids.f_to_device(self.device).map_err(&start)?;
        let b = ids.size()[0];
        let (mut positions, mut attn_mask) = self.prompt_positions(&ids, mask).map_err(&start)?;
        let mut cache: Vec<LayerCache> = Vec::new();
        let mut all = ids.shallow_clone();
        let mut next_input = ids.shallow_clone();
        let forced = forced.map(|tokens| tokens.f_to_device(self.device)).transpose().map_err(&start)?;
        for step in 0..max_new_tokens {
            hooks.begin_step(step);
            let logits = self.forward_step(&next_input, Step { positions: positions.shallow_clone(), mask: attn_mask.as_ref().map(|m| m.shallow_clone()), cache: Some(&mut cache) }, true, hooks)?;
            let next = match &forced {
                Some(tokens) => tokens.f_select(1, step as i64).and_then(|t| t.f_view([b, 1])),
                None => logits.f_select(1, -1).and_then(|l| l.f_argmax(-1, false)).and_then(|t| t.f_view([b, 1])),
            }
            .map_err(&next_token)?;
            all = Tensor::f_cat(&[&all, &next], 1).map_err(&next_token)?;
            next_input = next;
            positions = positions.f_select(1, -1).and_then(|p| p.f_view([b, 1])).and_then(|p| p.f_add_scalar(1)).map_err(&next_token)?;
            // The new token attends to every key so far, pads excluded when masking properly.
            attn_mask = attn_mask
                .map(|m| -> Result<Tensor, TchError> {
                    let keys = m.f_select(2, -1)?.f_unsqueeze(2)?;
                    let ones = Tensor::f_ones([b, 1, 1, 1], (Kind::Bool, self.device))?;
                    Tensor::f_cat(&[keys, ones], 3)
                })
                .transpose()
                .map_err(&next_token)?;
        }
        Ok(Generation { ids: all })
    }

    /// Positions and attention mask for a prompt.
    fn prompt_positions(&self, ids: &Tensor, mask: AttentionMask) -> Result<(Tensor, Option<Tensor>), TchError> {
        let (b, s) = ids.size2()?;
        match mask {
            AttentionMask::AttendPads => {
                let positions = Tensor::f_arange(s, (Kind::Int64, self.device))?.f_unsqueeze(0)?.f_expand([b, s], true)?.f_contiguous()?;
                Ok((positions, None))
            }
            AttentionMask::Proper => {
                // Left padding: a token is real from the first non-zero id of its row on.
                let real = ids.f_ne(0)?.f_to_kind(Kind::Int64)?.f_cumsum(1, Kind::Int64)?.f_gt(0)?;
                let positions = real.f_to_kind(Kind::Int64)?.f_cumsum(1, Kind::Int64)?.f_sub_scalar(1)?.f_clamp_min(0)?;
                let causal = Tensor::f_ones([s, s], (Kind::Bool, self.device))?.f_tril(0)?;
                let keys = real.f_view([b, 1, 1, s])?;
                // A pad query attends to itself only, so that no row is fully masked (NaN).
                let eye = Tensor::f_eye(s, (Kind::Bool, self.device))?.f_view([1, 1, s, s])?;
                let m = causal.f_view([1, 1, s, s])?.f_logical_and(&keys)?.f_logical_or(&eye)?;
                Ok((positions, Some(m)))
            }
        }
    }

    fn forward_step(&self, ids: &Tensor, mut step: Step, root: bool, hooks: &mut Hooks) -> Result<Tensor, Interrupted> {
        let c = &self.config;
        let embedded = hooks.call(ModuleKey::Embedding, ids, |ids| Tensor::f_embedding(&self.embedding, ids, -1, false, false))?;
        let mut x = if c.embedding_multiplier != 1.0 { embedded.f_mul_scalar(c.embedding_multiplier).map_err(at(ModuleKey::Embedding))? } else { embedded };
        let base_input = x.shallow_clone();
        let angles = self.rope.at(&step.positions).map_err(at(ModuleKey::Embedding))?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = self.block(i, block, &x, &angles, &mut step, hooks)?;
        }
        let hidden = hooks.call(ModuleKey::DecNorm, &x, |x| rms_norm(x, &self.dec_norm, c.rms_norm_eps))?;
        let hidden = hooks.output(ModuleKey::BaseModel, &base_input, hidden)?;
        let head = hooks.call(ModuleKey::Head, &hidden, |h| h.f_matmul(&self.head.f_tr()?))?;
        let logits = if c.logits_scaling != 1.0 { head.f_div_scalar(c.logits_scaling).map_err(at(ModuleKey::Head))? } else { head };
        if root {
            return hooks.output(ModuleKey::Model, ids, logits);
        }
        Ok(logits)
    }

    fn block(&self, i: usize, w: &Block, x: &Tensor, angles: &RopeAngles, step: &mut Step, hooks: &mut Hooks) -> Result<Tensor, Interrupted> {
        let c = &self.config;
        let key = |m| ModuleKey::Layer(i, m);
        let (b, s, _) = x.size3().map_err(at(key(LayerModule::Ln)))?;
        let (h, kvh, d) = (c.num_heads, c.num_kv_heads, c.head_dim);

        let normed = hooks.call(key(LayerModule::Ln), x, |x| rms_norm(x, &w.ln, c.rms_norm_eps))?;
        let in_proj_input = hooks.input(key(LayerModule::InProj), &normed)?;
        let q = hooks.call(key(LayerModule::Query), &in_proj_input, linear(&w.query))?;
        let k = hooks.call(key(LayerModule::Key), &in_proj_input, linear(&w.key))?;
        let v = hooks.call(key(LayerModule::Value), &in_proj_input, linear(&w.value))?;
        let in_proj = at(key(LayerModule::InProj));
        let (q, k, v) = if hooks.active() {
            // What the name says: the fused projection q, k, v (not the seed's V-only record).
            let fused = Tensor::f_cat(&[&q, &k, &v], -1).map_err(&in_proj)?;
            let qkv = hooks.output(key(LayerModule::InProj), &in_proj_input, fused)?;
            let parts = qkv.f_split_with_sizes([c.q_width(), c.kv_width(), c.kv_width()], -1).map_err(&in_proj)?;
            (parts[0].shallow_clone(), parts[1].shallow_clone(), parts[2].shallow_clone())
        } else {
            (q, k, v)
        };

        // Attention (rotary angles, the KV cache, scaled dot products): errors are the dense's,
        // the next hook point.
        let attention = at(key(LayerModule::Dense));
        let heads = |t: &Tensor, n: i64| t.f_view([b, s, n, d]);
        let q = angles.apply(&heads(&q, h).map_err(&attention)?).and_then(|t| t.f_transpose(1, 2)).map_err(&attention)?;
        let mut k = angles.apply(&heads(&k, kvh).map_err(&attention)?).and_then(|t| t.f_transpose(1, 2)).map_err(&attention)?;
        let mut v = heads(&v, kvh).and_then(|t| t.f_transpose(1, 2)).map_err(&attention)?;
        if let Some(cache) = step.cache.as_deref_mut() {
            if let Some(past) = cache.get_mut(i) {
                k = Tensor::f_cat(&[&past.keys, &k], 2).map_err(&attention)?;
                v = Tensor::f_cat(&[&past.values, &v], 2).map_err(&attention)?;
                past.keys = k.shallow_clone();
                past.values = v.shallow_clone();
            } else {
                cache.push(LayerCache { keys: k.shallow_clone(), values: v.shallow_clone() });
            }
        }
        let group = h / kvh;
        let expand = |t: &Tensor| -> Result<Tensor, TchError> {
            if group == 1 {
                return Ok(t.shallow_clone());
            }
            let (bb, _, t_len, dd) = t.size4()?;
            t.f_unsqueeze(2)?.f_expand([bb, kvh, group, t_len, dd], false)?.f_flatten(1, 2)
        };
        let (ke, ve) = (expand(&k).map_err(&attention)?, expand(&v).map_err(&attention)?);
        let past_len = ke.size()[2] - s;
        let attn = match (&step.mask, past_len) {
            (None, 0) => Tensor::f_scaled_dot_product_attention(&q, &ke, &ve, None::<Tensor>, 0.0, true, c.attention_scale, false),
            (None, _) if s == 1 => Tensor::f_scaled_dot_product_attention(&q, &ke, &ve, None::<Tensor>, 0.0, false, c.attention_scale, false),
            (Some(m), _) => Tensor::f_scaled_dot_product_attention(&q, &ke, &ve, Some(m), 0.0, false, c.attention_scale, false),
            (None, _) => unreachable!("a cached step feeds one token at a time"),
        };
        let attn = attn.and_then(|a| a.f_transpose(1, 2)).and_then(|a| a.f_contiguous()).and_then(|a| a.f_view([b, s, h * d])).map_err(&attention)?;
        let attn_out = hooks.call(key(LayerModule::Dense), &attn, linear(&w.dense))?;
        let x = residual(x, &attn_out, c.residual_multiplier).map_err(at(key(LayerModule::Dense)))?;

        let normed = hooks.call(key(LayerModule::FfLn), &x, |x| rms_norm(x, &w.ff_ln, c.rms_norm_eps))?;
        let ff_input = hooks.input(key(LayerModule::FfSubLayer), &normed)?;
        let gate = hooks.call(key(LayerModule::Wg), &ff_input, linear(&w.wg))?;
        let act = hooks.call(key(LayerModule::A), &gate, |g| g.f_silu())?;
        let up = hooks.call(key(LayerModule::W1), &ff_input, linear(&w.w1))?;
        let gated = act.f_mul(&up).map_err(at(key(LayerModule::W2)))?;
        let down = hooks.call(key(LayerModule::W2), &gated, linear(&w.w2))?;
        let ff_out = hooks.output(key(LayerModule::FfSubLayer), &ff_input, down)?;
        residual(&x, &ff_out, c.residual_multiplier).map_err(at(key(LayerModule::FfSubLayer)))
    }
}

/// A bias-free projection by `w` (`[out, in]`): `x @ w^T`.
fn linear(w: &Tensor) -> impl Fn(&Tensor) -> Result<Tensor, TchError> + '_ {
    move |x| x.f_matmul(&w.f_tr()?)
}

/// `residual + branch * multiplier`, as fms's blocks add a branch back.
fn residual(residual: &Tensor, branch: &Tensor, multiplier: f64) -> Result<Tensor, TchError> {
    if multiplier == 1.0 {
        residual.f_add(branch)
    } else {
        branch.f_mul_scalar(multiplier)?.f_add(residual)
    }
}

/// RMSNorm as fms computes it: statistics in float32, result cast back, then scaled.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor, TchError> {
    let xf = x.f_to_kind(Kind::Float)?;
    let scale = xf.f_pow_tensor_scalar(2)?.f_mean_dim(-1, true, Kind::Float)?.f_add_scalar(eps)?.f_rsqrt()?;
    xf.f_mul(&scale)?.f_to_kind(x.kind())?.f_mul(weight)
}

/// Permutes HF q/k projection rows into fms's order, in which RoPE rotates adjacent pairs:
/// within each head, row `2j` is HF row `j` and row `2j+1` is HF row `j + head_dim/2`.
fn to_fms_rows(w: &Tensor, heads: i64) -> Result<Tensor, TchError> {
    let (rows, cols) = w.size2()?;
    let d = rows / heads;
    w.f_view([heads, 2, d / 2, cols])?.f_transpose(1, 2)?.f_reshape([rows, cols])
}
