#!/usr/bin/env python3
"""Write the reference fixtures of the tiny models for layercheck's Rust tests.

For each model in models/ (tiny-granite, tiny-llama) this writes
tests/fixtures/reference/<model>.safetensors holding:

  input_ids            int64 [2, 12]  seeded ids in 1..V-1; row 0 left-padded
                                      with three 0 ids (pads are attended,
                                      positions 0..S-1, as the seed tools do)
  hf.logits            f32 [2, 12, V] transformers, eager attention, input_ids
                                      only (no mask)
  hf.greedy_ids        int64 [2, 16]  transformers greedy generate, 4 new
                                      tokens, all-ones mask, no EOS stop
  fms.<key>            every module output that the seed tool's hooks record
                                      in model-forward mode
                                      (model.forward(ids, use_cache=True))
  fms.generate.<key>   the records of fms generate (2 new tokens, greedy,
                                      KV cache); later records of a module
                                      carry `.iter-N` (N: global record count)
  fms.generate_ids     int64 [2, 14]  the ids fms generate returned

Keys are the hook names with brackets dropped
(model.base_model.layers[1].ln -> model.base_model.layers1.ln). Tuple outputs:
attn.in_proj is stored as cat([q, k, v], -1); model.base_model and model as
their first element (hidden states, logits).

Metadata (all strings): fms_order / fms_generate_order (JSON lists of the
record names, in record order, without the "fms." / "fms.generate." prefix),
torch / transformers / fms versions, script, fms_loader, input description.

Run from the repository root after make_tiny_models.py:
    HF_HUB_OFFLINE=1 /work/venv/bin/python scripts/reference/make_reference.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from fixture_io import save_sorted  # noqa: E402

import fms  # noqa: E402
from fms.models import get_model  # noqa: E402
from fms.models.granite import Granite, GraniteConfig  # noqa: E402
from fms.utils.generation import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "scripts/reference/make_reference.py"
BATCH, SEQ, PADS = 2, 12, 3
HF_NEW_TOKENS, FMS_NEW_TOKENS = 4, 2
TOL = 1e-5


def fms_version() -> str:
    from importlib.metadata import version

    return version("ibm-fms")


def make_input_ids(vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (BATCH, SEQ), generator=gen, dtype=torch.int64)
    ids[0, :PADS] = 0
    return ids


# ---------------------------------------------------------------- fms loading


def load_fms_hf_pretrained(folder: Path) -> torch.nn.Module:
    return get_model(
        architecture="hf_pretrained",
        model_path=str(folder),
        device_type="cpu",
        data_type=torch.float32,
        fused_weights=False,
    )


def read_hf_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def hf_to_fms_row_order(w: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """fms's hf->fms q/k row permutation, done with the real head_dim."""
    return w.view(heads, 2, head_dim // 2, w.size(1)).transpose(1, 2).reshape(w.shape)


def load_fms_llama_as_granite(folder: Path) -> torch.nn.Module:
    """fms 1.9's LLaMA ignores an explicit head_dim (emb_kq = emb_dim // nheads),
    so get_model(hf_pretrained) fails on tiny-llama with a shape mismatch. fms's
    Granite module does honour head_dim, and with all multipliers 1 and
    attention_multiplier = head_dim**-0.5 it computes a Llama decoder with the
    same module names. Its hf adapter permutes q/k with emb_dim // nheads rows
    per head (wrong here), so the weights are renamed and permuted here."""
    hf = json.loads((folder / "config.json").read_text())
    head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    cfg = GraniteConfig(
        src_vocab_size=hf["vocab_size"],
        emb_dim=hf["hidden_size"],
        norm_eps=hf["rms_norm_eps"],
        nheads=hf["num_attention_heads"],
        head_dim=head_dim,
        kvheads=hf["num_key_value_heads"],
        nlayers=hf["num_hidden_layers"],
        pad_id=hf.get("pad_token_id") if hf.get("pad_token_id") is not None else -1,
        hidden_grow_factor=hf["intermediate_size"] / hf["hidden_size"],
        multiple_of=1,
        activation_fn=hf["hidden_act"],
        max_expected_seq_len=hf["max_position_embeddings"],
        tie_heads=hf["tie_word_embeddings"],
        rope_theta=hf["rope_parameters"]["rope_theta"],
        embedding_multiplier=1.0,
        residual_multiplier=1.0,
        logits_scaling=1.0,
        attention_multiplier=head_dim**-0.5,
        fused_weights=False,
    )
    assert hf["rope_parameters"].get("rope_type", "default") == "default"
    assert not hf.get("attention_bias") and not hf.get("mlp_bias")
    model = Granite(cfg)
    renames = [
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
    ]
    sd = {}
    for name, w in read_hf_state_dict(folder).items():
        for a, b in renames:
            name = name.replace(a, b)
        if name.endswith("attn.in_proj.query.weight"):
            w = hf_to_fms_row_order(w, cfg.nheads, head_dim)
        elif name.endswith("attn.in_proj.key.weight"):
            w = hf_to_fms_row_order(w, cfg.kvheads, head_dim)
        sd[name] = w.to(torch.float32)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("rot_emb.freqs")]
    assert not missing and not unexpected, (missing, unexpected)
    model.eval()
    return model


def load_fms(folder: Path) -> tuple[torch.nn.Module, str]:
    try:
        model = load_fms_hf_pretrained(folder)
        how = "fms.models.get_model(architecture='hf_pretrained', model_path=<folder>, device_type='cpu', data_type=torch.float32, fused_weights=False)"
    except ValueError as e:
        print(f"  fms hf_pretrained load failed ({str(e).splitlines()[0]}); using Granite emulation")
        model = load_fms_llama_as_granite(folder)
        how = (
            "fms 1.9 LLaMA ignores head_dim, so hf_pretrained loading fails; records come from "
            "fms.models.granite.Granite with embedding/residual/logits multipliers 1, "
            "attention_multiplier head_dim**-0.5, unfused weights renamed from HF and q/k rows "
            "permuted per head with the real head_dim (view(h, 2, d/2, in).transpose(1, 2))"
        )
    return model, how


# ---------------------------------------------------------------- hooks


class Recorder:
    """Records module outputs the way the seed tool's hooks do.

    Every module gets a pre-hook and a post-hook. A module called with no
    positional argument is skipped. Each record bumps a global counter; a name
    seen before gets the suffix `.iter-<counter>`. Names: root "model",
    children joined by ".", ModuleList items as "[i]".
    """

    def __init__(self, model: torch.nn.Module):
        self.names: dict[torch.nn.Module, str] = {}
        self._name(model, "model")
        self.records: dict[str, object] = {}
        self.counter = 0
        self.pending: set[int] = set()
        self.handles = []
        for m in model.modules():
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post))

    def _name(self, module: torch.nn.Module, name: str) -> None:
        self.names[module] = name
        children = module._modules
        is_list = all(k.isdigit() for k in children.keys())
        for k, child in children.items():
            self._name(child, f"{name}[{k}]" if is_list else f"{name}.{k}")

    def _pre(self, module, args):
        if len(args) == 0:
            return
        self.pending.add(id(module))

    def _post(self, module, args, output):
        if id(module) not in self.pending:
            return
        self.pending.discard(id(module))
        self.counter += 1
        name = self.names[module]
        if name in self.records:
            name = f"{name}.iter-{self.counter}"
        self.records[name] = output

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def flat_name(name: str) -> str:
    return name.replace("[", "").replace("]", "")


def as_tensor(name: str, out) -> torch.Tensor:
    base = name.split(".iter-")[0]
    if isinstance(out, torch.Tensor):
        return out
    if base.endswith("attn.in_proj"):
        q, k, v = out
        return torch.cat([q, k, v], dim=-1)
    if base in ("model.base_model", "model"):
        return out[0]
    raise TypeError(f"{name}: unexpected output type {type(out)}")


def recorded(records: dict[str, object]) -> tuple[list[str], dict[str, torch.Tensor]]:
    order, tensors = [], {}
    for name, out in records.items():
        t = as_tensor(name, out).detach().to(torch.float32).contiguous().clone()
        order.append(flat_name(name))
        tensors[flat_name(name)] = t
    return order, tensors


def expected_forward_order(nlayers: int) -> list[str]:
    per_layer = [
        "ln", "attn.in_proj.query", "attn.in_proj.key", "attn.in_proj.value",
        "attn.in_proj", "attn.dense", "ff_ln", "ff_sub_layer.wg", "ff_sub_layer.a",
        "ff_sub_layer.w1", "ff_sub_layer.w2", "ff_sub_layer",
    ]  # fmt: skip
    keys = ["model.base_model.embedding"]
    for i in range(nlayers):
        keys += [f"model.base_model.layers{i}.{k}" for k in per_layer]
    keys += ["model.base_model.dec_norm", "model.base_model", "model.head"]
    return keys


# ---------------------------------------------------------------- main work


def hf_reference(folder: Path, ids: torch.Tensor):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
        model.generation_config.eos_token_id = None
        greedy = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=HF_NEW_TOKENS,
            do_sample=False,
            pad_token_id=0,
            output_scores=True,
            return_dict_in_generate=True,
        )
    top2 = torch.stack([s.float().topk(2, dim=-1).values for s in greedy.scores])
    margin = (top2[..., 0] - top2[..., 1]).min().item()
    greedy = greedy.sequences
    assert greedy.shape == (BATCH, SEQ + HF_NEW_TOKENS), greedy.shape
    with torch.no_grad():  # KV-cached generate == argmax over full recomputation
        plain = ids
        for _ in range(HF_NEW_TOKENS):
            plain = torch.cat([plain, model(input_ids=plain).logits[:, -1].argmax(-1, keepdim=True)], dim=-1)
    assert torch.equal(plain, greedy), (plain, greedy)
    print(f"  hf greedy new tokens {greedy[:, SEQ:].tolist()}, smallest top-1/top-2 logit gap {margin:.3g}")
    tensors = {"hf.logits": logits.contiguous(), "hf.greedy_ids": greedy.to(torch.int64).contiguous()}
    return tensors, model, margin


def check_qk_permutation(hf_model, fms_tensors, layer: int = 0) -> str:
    """Compare fms in_proj.query/key outputs with HF's q_proj/k_proj outputs."""
    cfg = hf_model.config
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    ln = fms_tensors[f"model.base_model.layers{layer}.ln"]
    attn = hf_model.model.layers[layer].self_attn
    lines = []
    with torch.no_grad():
        for which, proj, h in (("query", attn.q_proj, heads), ("key", attn.k_proj, kv)):
            hf_out = proj(ln)
            fms_out = fms_tensors[f"model.base_model.layers{layer}.attn.in_proj.{which}"]
            same = (hf_out - fms_out).abs().max().item()
            # fms row (h, 2i + j) == hf row (h, j * d/2 + i)
            perm = hf_out.view(*hf_out.shape[:-1], h, 2, hd // 2).transpose(-1, -2).reshape(hf_out.shape)
            permuted = (perm - fms_out).abs().max().item()
            lines.append(
                f"layer{layer} {which}: max|fms - hf| = {same:.3g} as is, "
                f"{permuted:.3g} after hf[..., h, j*d/2+i] -> fms[..., h, 2i+j]"
            )
    return "\n".join(lines)


def run_model(name: str, models_dir: Path, out_dir: Path, seed: int) -> None:
    folder = models_dir / name
    hf_cfg = json.loads((folder / "config.json").read_text())
    vocab = hf_cfg["vocab_size"]
    ids = make_input_ids(vocab, seed)
    print(f"== {name}: input_ids\n{ids}")

    hf_tensors, hf_model, margin = hf_reference(folder, ids)

    torch.manual_seed(42)
    model, how = load_fms(folder)
    model.eval()

    # model-forward mode: forward() directly, so the root's hooks do not fire
    rec = Recorder(model)
    with torch.no_grad():
        fwd_logits, _cache = model.forward(ids, use_cache=True)
    rec.remove()
    order, fwd = recorded(rec.records)
    expected = expected_forward_order(hf_cfg["num_hidden_layers"])
    assert order == expected, f"fms key order differs:\n{order}\n!=\n{expected}"
    diff = (fwd_logits - hf_tensors["hf.logits"]).abs().max().item()
    print(f"  fms vs hf logits max abs diff: {diff:.3g}")
    assert diff <= TOL, diff
    scaled = fwd["model.head"] / getattr(model.config, "logits_scaling", 1.0)
    assert torch.equal(scaled, fwd_logits), "head record is not the pre-scaling logits"
    print("  " + check_qk_permutation(hf_model, fwd).replace("\n", "\n  "))

    # generate mode: model(...) is called, so the root "model" is recorded too
    rec = Recorder(model)
    with torch.no_grad():
        gen_ids = generate(
            model,
            ids,
            max_new_tokens=FMS_NEW_TOKENS,
            use_cache=True,
            do_sample=False,
            max_seq_len=model.config.max_expected_seq_len,
            eos_token_id=None,
            contiguous_cache=True,
            extra_kwargs={},
        )
    rec.remove()
    gen_order, gen = recorded(rec.records)
    assert gen_ids.shape == (BATCH, SEQ + FMS_NEW_TOKENS)
    hf_prefix = hf_tensors["hf.greedy_ids"][:, : SEQ + FMS_NEW_TOKENS]
    print(f"  fms generate ids == hf greedy prefix: {torch.equal(gen_ids, hf_prefix)}")
    # the first record set must equal the model-forward records
    for k in order:
        assert torch.allclose(gen[k], fwd[k], atol=1e-6, rtol=0), k

    tensors = {"input_ids": ids.contiguous(), **hf_tensors}
    tensors.update({f"fms.{k}": v for k, v in fwd.items()})
    tensors.update({f"fms.generate.{k}": v for k, v in gen.items()})
    tensors["fms.generate_ids"] = gen_ids.to(torch.int64).contiguous()
    metadata = {
        "script": SCRIPT,
        "model": f"models/{name}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "fms": fms_version(),
        "fms_loader": how,
        "fms_order": json.dumps(order),
        "fms_generate_order": json.dumps(gen_order),
        "input": (
            f"torch.Generator().manual_seed({seed}); randint(1, {vocab}, ({BATCH}, {SEQ})); "
            f"row 0 positions 0..{PADS - 1} set to pad id 0; no attention mask, positions 0..{SEQ - 1}"
        ),
        "hf": "AutoModelForCausalLM float32, attn_implementation='eager'; logits: model(input_ids=ids); "
        f"greedy_ids: generate(ids, attention_mask=ones, max_new_tokens={HF_NEW_TOKENS}, do_sample=False, no EOS)",
        "fms_forward": "model.forward(ids, use_cache=True) under torch.no_grad(), hooks on every module",
        "fms_generate": (
            f"fms.utils.generation.generate(model, ids, max_new_tokens={FMS_NEW_TOKENS}, use_cache=True, "
            "do_sample=False, max_seq_len=model.config.max_expected_seq_len, eos_token_id=None, "
            "contiguous_cache=True, extra_kwargs={})"
        ),
        "tuples": "attn.in_proj = cat([q, k, v], -1); model.base_model and model = first element",
        "fms_vs_hf_logits_max_abs_diff": f"{diff:.6g}",
        "hf_greedy_min_top2_gap": f"{margin:.6g}",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    save_sorted(tensors, path, metadata)
    print(f"  wrote {path} ({path.stat().st_size} bytes, {len(tensors)} tensors, "
          f"{len(order)} forward + {len(gen_order)} generate records)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "reference")
    ap.add_argument("--models-dir", type=Path, default=REPO / "models")
    ap.add_argument("models", nargs="*", default=["tiny-granite", "tiny-llama"])
    args = ap.parse_args()
    torch.set_num_threads(1)  # bit-stable across machines with different core counts
    seeds = {"tiny-granite": 11, "tiny-llama": 22}
    for name in args.models:
        run_model(name, args.models_dir, args.out, seeds.get(name, 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
