"""Writing a `layercheck-capture/1` file (layercheck's src/capture.rs), atomically: a temporary
file in the output's folder, renamed over the output only once it is complete."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from . import keys as keynames
from .errors import BadInput, RunFailed
from .golden import CAPTURE_FORMAT

if TYPE_CHECKING:
    import torch

    from .hooks import Record


def capture_tensors(records: "list[Record]", extra: "dict[str, torch.Tensor]") -> "dict[str, torch.Tensor]":
    """The file's tensors: every record, its input when kept, and `extra` (ids, logits), on CPU."""
    import torch

    tensors: "dict[str, torch.Tensor]" = {}
    for r in records:
        tensors[r.name] = r.output
        if r.input is not None:
            tensors[keynames.input_name(r.name)] = r.input
    for name, t in extra.items():
        tensors[name] = t.to(torch.int64) if name in ("input_ids", "output_ids") else t
    # A copy each: a compiled graph may hand back one buffer for two records (ff_sub_layer and
    # ff_sub_layer.w2 are the same values), and safetensors refuses tensors that share memory.
    return {n: t.detach().to("cpu", copy=True).contiguous() for n, t in tensors.items()}


def check_out_path(out: Path) -> None:
    """The output's folder must exist and the output must not be a folder."""
    if out.is_dir():
        raise BadInput(f"--out {out} is a folder\n(hint: the path of the .safetensors file to write)")
    if not out.parent.is_dir():
        raise BadInput(f"--out {out}: folder {out.parent} does not exist\n(hint: create it first; the capture is written there atomically)")


def write_capture(out: Path, tensors: "dict[str, torch.Tensor]", metadata: dict[str, str], record_names: list[str]) -> None:
    """Writes the capture to `out` atomically; on any failure no file is left at `out` or beside it."""
    from safetensors.torch import save_file

    meta = dict(metadata)
    meta["format"] = CAPTURE_FORMAT
    meta["keys"] = json.dumps(record_names)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise RunFailed(f"cannot create a temporary file beside {out}: {e}\n(hint: check the folder's permissions)") from e
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, out)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise RunFailed(f"cannot write the capture {out}: {e}\n(hint: check the folder's free space and permissions)") from e
        raise
