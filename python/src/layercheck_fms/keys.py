"""Record names as layercheck's capture format defines them (src/capture.rs, src/hooks.rs).

Module keys are fms's module names from a root called `model`, with list items joined without a
dot and without brackets (`model.base_model.layers7.attn.dense`). In generate mode the first
forward call keeps the plain key and each later record is `{key}.iter-{n}`, `n` the 1-based index
of the record among all records of the run.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# The per-layer modules in fms's post-hook order (the order the records are made in).
LAYER_MODULES = (
    "ln",
    "attn.in_proj.query",
    "attn.in_proj.key",
    "attn.in_proj.value",
    "attn.in_proj",
    "attn.dense",
    "ff_ln",
    "ff_sub_layer.wg",
    "ff_sub_layer.a",
    "ff_sub_layer.w1",
    "ff_sub_layer.w2",
    "ff_sub_layer",
)

EMBEDDING = "model.base_model.embedding"
BASE_MODEL = "model.base_model"
ROOT = "model"

_ITER = re.compile(r"^(?P<key>.+)\.iter-(?P<n>[1-9][0-9]*)$")


def forward_keys(nlayers: int, *, root: bool) -> list[str]:
    """The module keys one forward call records, in order; `root` adds `model` (generate mode)."""
    keys = [EMBEDDING]
    for i in range(nlayers):
        keys += [f"model.base_model.layers{i}.{m}" for m in LAYER_MODULES]
    keys += ["model.base_model.dec_norm", BASE_MODEL, "model.head"]
    if root:
        keys.append(ROOT)
    return keys


def run_keys(nlayers: int, mode: str, max_new_tokens: int) -> list[str]:
    """The record names of a whole run: one forward (model-forward) or `max_new_tokens` calls."""
    if mode == "model-forward":
        return forward_keys(nlayers, root=False)
    per_call = forward_keys(nlayers, root=True)
    names = list(per_call)
    index = len(per_call)
    for _ in range(1, max_new_tokens):
        for key in per_call:
            index += 1
            names.append(record_name(key, first_call=False, index=index))
    return names


def record_name(key: str, *, first_call: bool, index: int) -> str:
    """The name of record number `index` (1-based, all records counted) of module `key`."""
    return key if first_call else f"{key}.iter-{index}"


def input_name(name: str) -> str:
    """The tensor name of the input recorded with output `name`."""
    return f"input:{name}"


def module_key(name: str) -> str:
    """The module key of a record name (`.iter-N` dropped)."""
    m = _ITER.match(name)
    return m.group("key") if m else name


def module_names(model: "torch.nn.Module") -> "dict[torch.nn.Module, str]":
    """Every module of `model` with its file key: the root is `model`, children are joined with
    `.`, the items of a list (all child names digits) without a dot (`layers0`)."""
    names: dict[torch.nn.Module, str] = {}

    def walk(module: "torch.nn.Module", name: str) -> None:
        if module in names:  # a shared module keeps its first name
            return
        names[module] = name
        children = module._modules
        is_list = len(children) > 0 and all(k.isdigit() for k in children)
        for k, child in children.items():
            if child is not None:
                walk(child, f"{name}{k}" if is_list else f"{name}.{k}")

    walk(model, ROOT)
    return names


def differences(got: list[str], expected: list[str]) -> str | None:
    """None when `got` equals `expected`; otherwise which names are missing, unexpected or out of order."""
    if got == expected:
        return None
    got_set, expected_set = set(got), set(expected)
    missing = [k for k in expected if k not in got_set]
    unexpected = [k for k in got if k not in expected_set]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {_some(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: {_some(unexpected)}")
    if not parts:
        first = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
        parts.append(f"same names in another order (first difference at record {first + 1}: {got[first]} where {expected[first]} was expected)")
    return "; ".join(parts)


def _some(names: list[str], shown: int = 12) -> str:
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
