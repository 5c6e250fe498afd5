#!/usr/bin/env python3
"""Makes tests/fixtures/sharegpt/: a small ShareGPT-format file and the prompts and padded ids
that the seed's REAL sampling code picks from it.

1. Writes tests/fixtures/sharegpt/sharegpt.json: 150 conversations of random words drawn by
   random.Random(11) (some with a single turn, which the seed skips; first turns from "human"
   or "gpt"; a few non-ASCII words).
2. Loads `prepare_inputs`, `sample_sharegpt_requests`, `__sample_requests` and the helpers they
   call from aiu_fms_testing_utils/utils/__init__.py, unmodified (the functions' source is taken
   with `ast`, because importing the module pulls in torch, fms and transformers), and runs
   `prepare_inputs(B, S, tokenizer, path)` (seed 0) for a few (B, S). The tokenizer is
   models/tiny-granite/tokenizer.json through the `tokenizers` package, wrapped to answer
   `encode(text, return_tensors="pt")` like transformers' fast tokenizers (special tokens added,
   no padding or truncation). fms's `pad_input_ids` is replaced by its documented behaviour
   (left-pad with 0 to max(min_pad_length, longest)); its mask and position ids are unused.
3. Writes tests/fixtures/sharegpt/expected.json: per (B, S) the chosen texts and the padded ids.

Usage, from the repository root (plain Python with `tokenizers`; no torch):

    git show <commit>:aiu_fms_testing_utils/utils/__init__.py > /tmp/aiu/utils_init.py
    /work/venv-light/bin/python scripts/reference/make_sharegpt_fixture.py /tmp/aiu/utils_init.py <commit>
"""
import ast
import bisect
import hashlib
import json
import math
import os
import random
import sys
import warnings
from typing import Any, List, Optional, Tuple

import tokenizers

ROOT = os.path.join("tests", "fixtures", "sharegpt")
DATA = os.path.join(ROOT, "sharegpt.json")
TOKENIZER = os.path.join("models", "tiny-granite", "tokenizer.json")
CASES = [(1, 16), (3, 16), (2, 32), (4, 12), (2, 64)]
NEEDED = {"get_pad_size", "_merge_enforce_keep_heterogeneous", "_get_truncation_size",
          "_remove_list_from_list", "__sample_requests", "sample_sharegpt_requests", "prepare_inputs"}


def make_data():
    rng = random.Random(11)
    words = ("the a an of to in is it you that he was for on are with as his they be at one have this from or "
             "had by word but what some we can out other were all there when up use your how said each she which "
             "do their time if will way about many then them write would like so these her long make thing see him "
             "two has look more day could go come did number sound no most people my over know water than call "
             "first who may down side been now find café naïve über").split()
    data = []
    for i in range(150):
        n = rng.randint(1, 20)
        text = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.2:
            text = text.capitalize() + "?"
        turns = [{"from": "human" if i % 3 else "gpt", "value": text}]
        if rng.random() < 0.85:
            turns.append({"from": "gpt", "value": "ok"})
        data.append({"id": f"c{i}", "conversations": turns})
    os.makedirs(ROOT, exist_ok=True)
    with open(DATA, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)


class Ids(list):
    def squeeze(self, dim):
        return self


class Tokenizer:
    """transformers' fast-tokenizer `encode`, on the `tokenizers` package."""

    def __init__(self, path):
        self.tok = tokenizers.Tokenizer.from_file(path)
        self.tok.no_padding()
        self.tok.no_truncation()

    def encode(self, text, return_tensors=None, add_special_tokens=True):
        return Ids(self.tok.encode(text, add_special_tokens=add_special_tokens).ids)


def pad_input_ids(input_ids_list, min_pad_length=0):
    max_len = max([min_pad_length] + [len(ids) for ids in input_ids_list])
    return [[0] * (max_len - len(ids)) + list(ids) for ids in input_ids_list], {}


def load_seed_functions(path):
    tree = ast.parse(open(path).read())
    body = [n for n in tree.body
            if (isinstance(n, ast.FunctionDef) and n.name in NEEDED)
            or (isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__cached_encoded_datasets" for t in n.targets))]
    found = {n.name for n in body if isinstance(n, ast.FunctionDef)}
    assert found == NEEDED, NEEDED - found
    ns = {"json": json, "os": os, "random": random, "warnings": warnings, "bisect": bisect, "math": math,
          "Optional": Optional, "List": List, "Tuple": Tuple, "Any": Any, "PreTrainedTokenizerBase": object,
          "pad_input_ids": pad_input_ids}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), ns)
    return ns


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    utils_init, commit = sys.argv[1:]
    make_data()
    seed = load_seed_functions(utils_init)
    tok = Tokenizer(TOKENIZER)
    cases = []
    for b, s in CASES:
        chosen = seed["sample_sharegpt_requests"](DATA, b, tok, int(s / 2), s, 0)
        ids, _ = seed["prepare_inputs"](b, s, tok, DATA)
        cases.append({"batch_size": b, "seq_length": s, "texts": [p for p, _ in chosen], "ids": ids})
    with open(os.path.join(ROOT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump({"made_by": "scripts/reference/make_sharegpt_fixture.py",
                   "aiu_fms_testing_utils_commit": commit,
                   "utils_init_sha256": hashlib.sha256(open(utils_init, "rb").read()).hexdigest(),
                   "tokenizers": tokenizers.__version__,
                   "python": sys.version.split()[0],
                   "cases": cases}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
