"""The golden capture of an isolated feed: the `input:{name}` tensor each module must take.

The k-th record of a module key in the golden's `keys` order belongs to that module's k-th call,
as layercheck's `Capture::inputs_by_step` pairs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import keys as keynames
from .errors import BadInput

if TYPE_CHECKING:
    import torch

CAPTURE_FORMAT = "layercheck-capture/1"

# Modules whose input is token ids, never replaced (layercheck feeds them the same ids).
ID_INPUT_MODULES = (keynames.EMBEDDING, keynames.BASE_MODEL, keynames.ROOT)


class GoldenInputs:
    """Golden module inputs by (module key, call index)."""

    def __init__(self, path: Path, by_call: "dict[tuple[str, int], torch.Tensor]"):
        self.path = path
        self.by_call = by_call

    def get(self, key: str, call: int) -> "torch.Tensor | None":
        return self.by_call.get((key, call))


def read_golden(path: Path, expected_keys: list[str], input_ids: list[list[int]]) -> GoldenInputs:
    """Reads the golden capture `path`: its format, its keys (equal to `expected_keys`), its
    `input_ids` (equal to the request's) and an `input:{name}` for every module fed from it."""
    from safetensors import safe_open

    hint = "the golden must be the reference capture of this case, made with capture_inputs (golden_inputs = true in layercheck.toml)"
    try:
        f = safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise BadInput(f"golden {path}: not a safetensors file ({e})\n(hint: {hint})") from e
    with f:
        meta = f.metadata() or {}
        if meta.get("format") != CAPTURE_FORMAT:
            raise BadInput(f"golden {path}: format is {meta.get('format')!r}, not {CAPTURE_FORMAT!r}\n(hint: {hint})")
        try:
            names = json.loads(meta.get("keys", ""))
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("not a list of names")
        except ValueError as e:
            raise BadInput(f'golden {path}: its "keys" metadata is not a JSON list of names ({e})\n(hint: {hint})') from e
        diff = keynames.differences(names, expected_keys)
        if diff is not None:
            raise BadInput(f"golden {path}: its keys are not the request's: {diff}\n(hint: {hint})")
        available = set(f.keys())
        if "input_ids" not in available:
            raise BadInput(f"golden {path}: has no input_ids tensor\n(hint: {hint})")
        if f.get_tensor("input_ids").tolist() != input_ids:
            raise BadInput(f"golden {path}: its input_ids are not the request's: this golden is of other inputs\n(hint: {hint})")
        by_call: "dict[tuple[str, int], torch.Tensor]" = {}
        calls: dict[str, int] = {}
        lacking = []
        for name in names:
            key = keynames.module_key(name)
            call = calls.get(key, 0)
            calls[key] = call + 1
            if key in ID_INPUT_MODULES:
                continue
            tensor_name = keynames.input_name(name)
            if tensor_name not in available:
                lacking.append(tensor_name)
                continue
            t = f.get_tensor(tensor_name)
            if not t.is_floating_point():
                raise BadInput(f"golden {path}: {tensor_name} is {t.dtype}, not a float tensor\n(hint: {hint})")
            by_call[(key, call)] = t
        if lacking:
            shown = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
            raise BadInput(f"golden {path}: has no module inputs for the isolated feed ({shown} missing)\n(hint: {hint})")
    return GoldenInputs(path, by_call)
