#!/usr/bin/env python3
"""Write the two tiny random HF models that layercheck's tests embed.

    models/tiny-granite  GraniteForCausalLM, tied head, Granite multipliers,
                         one float32 model.safetensors
    models/tiny-llama    LlamaForCausalLM, explicit head_dim 24 (!= hidden/heads),
                         untied head, float32, sharded into 2+ safetensors files
    models/tiny-mistral  MistralForCausalLM (no Rust decoder in layercheck: its golden
                         files are made by fms through `reference = { command }`),
                         untied head, intermediate_size 256 (fms rounds the MLP width
                         up to a multiple of 256), no sliding window, float32

`--only NAME` writes one of them and leaves the others as they are.

Both share a small byte-level BPE tokenizer trained here on the English text
below (id 0 = <|pad|>, also the unknown token; id 1 = <|endoftext|>, used as
BOS and EOS; no BOS is added when encoding).

Weights are random but deterministic (seeded torch.Generator), sized so that
logits are O(1), and every RMSNorm weight is drawn from U(0.5, 1.5) so that a
wrong norm or a missing scale cannot pass by luck.

Run from the repository root with the venv of requirements.txt:
    HF_HUB_OFFLINE=1 /work/venv/bin/python scripts/reference/make_tiny_models.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")  # deterministic BPE training
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

REPO = Path(__file__).resolve().parents[2]
VOCAB_SIZE = 384
PAD, EOT = "<|pad|>", "<|endoftext|>"

# Training text for the tokenizer, written for this project.
CORPUS = """\
A model is checked one layer at a time. The reference runs on the processor in
full precision, and the device under test runs the same weights in half
precision. For every layer we keep the output of the reference and the output
of the device, and we measure how far apart they are. When the distance grows
past the threshold, the layer fails, and the report names the first layer that
went wrong, the value that was seen, and the value that was allowed.

The embedding turns each token into a vector. Each decoder block normalises
its input, projects it into queries, keys and values, rotates the queries and
keys by their position, and lets every token attend to the tokens before it.
The attention output is projected back, scaled, and added to the residual
stream. Then the block normalises again, passes the stream through a gated
feed forward network, and adds the result to the residual stream once more.
After the last block, a final norm and the output head give one score for
every token in the vocabulary, and the highest score is the next token.

Small models make good tests. They load in a moment, they fit in the
repository, and their numbers can be written down and compared again tomorrow.
A test that passes by luck is worse than no test at all, so the weights are
random, the norms are not all ones, and the scales are not all the same.
The quick brown fox jumps over the lazy dog, and then the dog gets up and
walks home through the green fields, where the sheep are eating the grass and
the farmer is counting them again and again until the sun goes down.
Numbers, names and files: 0 1 2 3 4 5 6 7 8 9, model.safetensors, config.json,
tokenizer.json, layers[0].attn.in_proj.query, ff_sub_layer.w2, dec_norm, head.
"""


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[PAD, EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    assert tok.token_to_id(PAD) == 0 and tok.token_to_id(EOT) == 1
    return tok


def randomise(
    model: torch.nn.Module, seed: int, emb_std: float, qk_gain: float = 1.0, out_gain: float = 1.0
) -> None:
    """Overwrite every parameter deterministically.

    Linear weights ~ N(0, 1/fan_in), times qk_gain for q_proj/k_proj (sharper
    attention) and out_gain for o_proj/down_proj (branches that can outweigh
    the embedding in the residual stream); embedding ~ N(0, emb_std^2);
    RMSNorm weights ~ U(0.5, 1.5).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * emb_std)
            elif p.dim() == 2:
                gain = 1.0
                if "q_proj" in name or "k_proj" in name:
                    gain = qk_gain
                elif "o_proj" in name or "down_proj" in name:
                    gain = out_gain
                p.copy_(torch.randn(p.shape, generator=gen) * (gain / math.sqrt(p.shape[1])))
            else:
                raise ValueError(f"unexpected parameter {name} {tuple(p.shape)}")


def save_tokenizer(tok: Tokenizer, folder: Path) -> None:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=PAD,
        bos_token=EOT,
        eos_token=EOT,
        add_bos_token=False,
        model_max_length=256,
    )
    fast.save_pretrained(folder)


def clean(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def common_kwargs(vocab: int) -> dict:
    return dict(
        vocab_size=vocab,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=256,
        attention_bias=False,
        mlp_bias=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
        initializer_range=0.02,
    )


def make_granite(tok: Tokenizer, out: Path) -> None:
    cfg = GraniteConfig(
        **common_kwargs(tok.get_vocab_size()),
        intermediate_size=96,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        embedding_multiplier=3.5,
        residual_multiplier=0.7,
        attention_multiplier=0.09,
        logits_scaling=2.5,
    )
    torch.manual_seed(0)
    model = GraniteForCausalLM(cfg).to(torch.float32)
    # Tied head + embedding_multiplier 3.5 + attention_multiplier 0.09: with
    # plain N(0, 1/fan_in) weights every position predicted its own input token
    # and greedy decoding repeated one token. These gains give varied greedy
    # output and logits of std ~0.7.
    randomise(model, seed=1234, emb_std=0.2, qk_gain=3.0, out_gain=6.0)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    clean(out)
    model.save_pretrained(out)
    save_tokenizer(tok, out)


def make_llama(tok: Tokenizer, out: Path) -> None:
    cfg = LlamaConfig(
        **common_kwargs(tok.get_vocab_size()),
        head_dim=24,
        intermediate_size=112,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    randomise(model, seed=5678, emb_std=1.0)
    clean(out)
    # about 680 KB of weights: 300KB shards give at least 2 files
    model.save_pretrained(out, max_shard_size="300KB")
    save_tokenizer(tok, out)
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and (out / "model.safetensors.index.json").exists(), shards


def make_mistral(tok: Tokenizer, out: Path) -> None:
    cfg = MistralConfig(
        **common_kwargs(tok.get_vocab_size()),
        intermediate_size=256,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        sliding_window=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = MistralForCausalLM(cfg).to(torch.float32)
    randomise(model, seed=9012, emb_std=1.0)
    clean(out)
    model.save_pretrained(out)
    save_tokenizer(tok, out)


MAKERS = {"tiny-granite": make_granite, "tiny-llama": make_llama, "tiny-mistral": make_mistral}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "models")
    ap.add_argument("--only", choices=sorted(MAKERS), help="write this model only")
    args = ap.parse_args()
    tok = train_tokenizer()
    print(f"tokenizer: vocab {tok.get_vocab_size()}")
    names = [args.only] if args.only else list(MAKERS)
    for name in names:
        MAKERS[name](tok, args.out / name)
    for name in names:
        folder = args.out / name
        total = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{folder}: {sorted(f.name for f in folder.iterdir())} {total} bytes")
        print(json.dumps(json.loads((folder / "config.json").read_text()), indent=1))


if __name__ == "__main__":
    main()
