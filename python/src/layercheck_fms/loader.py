"""Loading a model folder with fms, on a device, in a precision.

The normal path is fms's own: `get_model(architecture="hf_pretrained", model_path=...,
device_type=..., data_type=..., fused_weights=False)` (`fused_weights=False` keeps
`attn.in_proj.query/key/value` as the separate modules layercheck's keys name).

One documented exception: fms 1.9's LLaMA has no `head_dim` (it always uses hidden / heads), so a
Llama checkpoint with an explicit, different head_dim (models/tiny-llama: 24 where 64 / 4 = 16)
fails to load with a shape mismatch. For such a checkpoint, and only while fms's LLaMAConfig has no
`head_dim` field, the model is built as fms's `Granite` module, which honours head_dim, with
embedding/residual/logits multipliers 1 and attention multiplier head_dim**-0.5: that is a Llama
decoder under the same module names (scripts/reference/README.md, "tiny-llama's fms records are
not from fms's LLaMA"). The HF weights are renamed and the q/k rows permuted per head with the
real head_dim. The capture's `fms_loader` metadata says which path was taken.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .errors import BadInput
from .model_info import ModelInfo


@dataclass
class LoadedModel:
    model: torch.nn.Module
    #: where the weights and inputs live (the AIU is reached through the compile backend, from CPU)
    device: torch.device
    dtype: torch.dtype
    #: how the model was built, for the capture's metadata
    how: str


def torch_device(device: str) -> torch.device:
    """The torch device a `--device` value puts tensors on; CUDA must be present."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise BadInput("--device cuda: this torch sees no CUDA device\n(hint: run on a host with a GPU and a CUDA build of torch, or use --device cpu)")
        return torch.device("cuda", 0)
    # aiu: fms loads on CPU and model.compile(backend="sendnn") reaches the device
    return torch.device("cpu")


def load(info: ModelInfo, device: str, dtype: str) -> LoadedModel:
    """Loads `info`'s folder with fms on `device` in `dtype` (float32, float16 or bfloat16), in eval mode."""
    dev = torch_device(device)
    data_type = getattr(torch, dtype)
    if needs_granite_adapter(info):
        model = _load_llama_as_granite(info, dev, data_type)
        how = (
            f"fms.models.granite.Granite emulating LlamaForCausalLM: this fms's LLaMA has no head_dim "
            f"(config.json head_dim {info.head_dim} != hidden_size / num_attention_heads = {info.hidden_size // info.num_heads}); "
            "embedding/residual/logits multipliers 1, attention_multiplier head_dim**-0.5, unfused HF weights renamed, "
            "q/k rows permuted per head with the real head_dim (view(h, 2, d/2, in).transpose(1, 2))"
        )
    else:
        from fms.models import get_model

        try:
            model = get_model(
                architecture="hf_pretrained",
                model_path=str(info.path),
                device_type=dev.type,
                data_type=data_type,
                fused_weights=False,
            )
        except (ValueError, KeyError, RuntimeError) as e:
            raise BadInput(
                f"fms could not load {info.path} ({info.architecture or 'no architectures entry'}): {str(e).strip().splitlines()[0]}"
                '\n(hint: the bridge loads what fms.models.get_model(architecture="hf_pretrained") supports; check the fms version and the checkpoint)'
            ) from e
        how = f"fms.models.get_model(architecture='hf_pretrained', model_path=<folder>, device_type='{dev.type}', data_type=torch.{dtype}, fused_weights=False)"
    model.eval()
    return LoadedModel(model=model, device=dev, dtype=data_type, how=how)


def needs_granite_adapter(info: ModelInfo) -> bool:
    """A Llama checkpoint with an explicit head_dim that this fms's LLaMA cannot represent."""
    if info.architecture != "LlamaForCausalLM" or not info.explicit_head_dim:
        return False
    from fms.models.llama import LLaMAConfig

    return "head_dim" not in {f.name for f in dataclasses.fields(LLaMAConfig)}


_RENAMES = (
    ("lm_head.", "head."),
    ("model.embed_tokens.", "base_model.embedding."),
    ("model.norm.", "base_model.dec_norm."),
    ("model.layers.", "base_model.layers."),
    ("self_attn.q_proj", "attn.in_proj.query"),
    ("self_attn.k_proj", "attn.in_proj.key"),
    ("self_attn.v_proj", "attn.in_proj.value"),
    ("self_attn.o_proj", "attn.dense"),
    ("mlp.gate_proj", "ff_sub_layer.wg"),
    ("mlp.up_proj", "ff_sub_layer.w1"),
    ("mlp.down_proj", "ff_sub_layer.w2"),
    ("input_layernorm", "ln"),
    ("post_attention_layernorm", "ff_ln"),
)


def _to_fms_rows(w: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """HF q/k rows to fms's order (RoPE on adjacent pairs), per head of `head_dim` rows."""
    return w.view(heads, 2, head_dim // 2, w.size(1)).transpose(1, 2).reshape(w.shape)


def _load_llama_as_granite(info: ModelInfo, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    import json

    from fms.models.granite import Granite, GraniteConfig
    from safetensors.torch import load_file

    hf = json.loads((info.path / "config.json").read_text())
    where = f"{info.path / 'config.json'}"
    rope = hf.get("rope_parameters") or {"rope_theta": hf.get("rope_theta", 10000.0), "rope_type": (hf.get("rope_scaling") or {}).get("rope_type", "default")}
    unsupported = []
    if rope.get("rope_type", "default") != "default":
        unsupported.append(f"rope_type {rope.get('rope_type')!r} (only the default RoPE)")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            unsupported.append(f"{flag} true")
    if hf.get("hidden_act", "silu") != "silu":
        unsupported.append(f"hidden_act {hf.get('hidden_act')!r} (only silu)")
    if unsupported:
        raise BadInput(
            f"{where}: this Llama has head_dim {info.head_dim} != hidden/heads, which this fms's LLaMA cannot load, "
            f"and the Granite emulation does not cover: {'; '.join(unsupported)}\n(hint: an fms version whose LLaMA has head_dim)"
        )
    head_dim = info.head_dim
    kvheads = hf.get("num_key_value_heads") or info.num_heads
    cfg = GraniteConfig(
        src_vocab_size=info.vocab_size,
        emb_dim=info.hidden_size,
        norm_eps=hf["rms_norm_eps"],
        nheads=info.num_heads,
        head_dim=head_dim,
        kvheads=kvheads,
        nlayers=info.num_layers,
        pad_id=hf["pad_token_id"] if hf.get("pad_token_id") is not None else -1,
        hidden_grow_factor=hf["intermediate_size"] / info.hidden_size,
        multiple_of=1,
        activation_fn="silu",
        max_expected_seq_len=hf["max_position_embeddings"],
        tie_heads=bool(hf.get("tie_word_embeddings", False)),
        rope_theta=float(rope["rope_theta"]),
        embedding_multiplier=1.0,
        residual_multiplier=1.0,
        logits_scaling=1.0,
        attention_multiplier=head_dim**-0.5,
        fused_weights=False,
    )
    sd: dict[str, torch.Tensor] = {}
    for f in sorted(info.path.glob("*.safetensors")):
        for name, w in load_file(f).items():
            if name.endswith("rotary_emb.inv_freq"):
                continue
            for a, b in _RENAMES:
                name = name.replace(a, b)
            if name.endswith("attn.in_proj.query.weight"):
                w = _to_fms_rows(w, cfg.nheads, head_dim)
            elif name.endswith("attn.in_proj.key.weight"):
                w = _to_fms_rows(w, kvheads, head_dim)
            sd[name] = w.to(dtype=dtype, device=device)
    if cfg.tie_heads:
        sd.setdefault("head.weight", sd.get("base_model.embedding.weight"))
    with torch.device("meta"):
        model = Granite(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise BadInput(
            f"{info.path}: the Llama checkpoint does not fit fms's Granite module: missing {missing}, unexpected {unexpected}"
            "\n(hint: only plain Llama decoders (RMSNorm, GQA, SiLU MLP, default RoPE) are emulated)"
        )
    model.post_init()  # ties the head, computes RoPE tables on the weights' device
    return model
