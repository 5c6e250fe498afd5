"""Running a request's forward passes on an fms model.

- model-forward: one call `model(ids, use_cache=True)` (the root `model` is not recorded, as in
  the seed tool, which calls `model.forward`).
- generate: fms's own `fms.utils.generation.generate` with the KV cache, greedy, no EOS stop:
  `max_new_tokens` forward calls, the prefill with the S ids, then one call per new token. With
  `forced_ids`, its `post_iteration_hook` replaces each step's argmax with the forced token, so
  call t + 1 is fed `forced_ids[:, t]` and `output_ids` = input ids + forced ids.

Attention masks (layercheck's `AttentionMask`, src/model/decoder.rs):
- attend-pads: no mask, positions 0..S-1 (fms's default), then S, S + 1, ... from the cache.
- proper: a left pad (an id 0 before a row's first non-zero id) is masked out as a key; a pad
  query attends to itself only (so no row is fully masked); positions start at 0 at the first real
  token (pads get 0). Passed to fms as an additive float mask [B, S, S] and `position_ids`, which
  fms's generate extends per step (last mask row plus the new key; last position + 1).
"""

from __future__ import annotations

import torch

from .request import Request


def padding_kwargs(ids: torch.Tensor, attention_mask: str) -> dict:
    """The fms forward kwargs (`mask`, `position_ids`) of an attention-mask mode."""
    if attention_mask == "attend-pads":
        return {}
    b, s = ids.shape
    real = (ids != 0).to(torch.int64).cumsum(1) > 0
    positions = (real.to(torch.int64).cumsum(1) - 1).clamp_min(0)
    causal = torch.ones(s, s, dtype=torch.bool, device=ids.device).tril()
    eye = torch.eye(s, dtype=torch.bool, device=ids.device)
    allowed = (causal.unsqueeze(0) & real.unsqueeze(1)) | eye.unsqueeze(0)
    mask = torch.zeros(b, s, s, dtype=torch.float32, device=ids.device).masked_fill(~allowed, float("-inf"))
    return {"mask": mask, "position_ids": positions}


def run(model: torch.nn.Module, request: Request, device: torch.device) -> dict[str, torch.Tensor]:
    """Runs `request` on `model` (hooks already registered); returns the capture's non-record
    tensors: `input_ids` and `logits` (model-forward) or `output_ids` (generate)."""
    ids = torch.tensor(request.input_ids, dtype=torch.int64, device=device)
    kwargs = padding_kwargs(ids, request.attention_mask)
    out = {"input_ids": ids}
    with torch.no_grad():
        if request.mode == "model-forward":
            logits, _cache = model(ids, use_cache=True, **kwargs)
            out["logits"] = logits
        else:
            out["output_ids"] = _generate(model, ids, request, kwargs)
    return out


def _generate(model: torch.nn.Module, ids: torch.Tensor, request: Request, kwargs: dict) -> torch.Tensor:
    from fms.utils.generation import generate

    prompt_len = ids.shape[1]
    forced = None if request.forced_ids is None else torch.tensor(request.forced_ids, dtype=torch.int64, device=ids.device)

    def force(token_position, logits, next_val, step_kwargs):
        if forced is not None:
            step = token_position - prompt_len
            next_val = forced[:, step : step + 1]
        return next_val, step_kwargs

    config = getattr(model, "config", None)
    max_seq_len = getattr(config, "max_expected_seq_len", prompt_len + request.max_new_tokens)
    return generate(
        model,
        ids,
        max_seq_len=max(max_seq_len, prompt_len + request.max_new_tokens),
        max_new_tokens=request.max_new_tokens,
        do_sample=False,
        use_cache=True,
        contiguous_cache=True,
        eos_token_id=None,
        post_iteration_hook=force,
        extra_kwargs=kwargs,
    )
