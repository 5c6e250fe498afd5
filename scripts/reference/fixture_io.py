"""Write safetensors files whose bytes depend only on their content.

safetensors keeps the metadata in a hash map, so the order of the
`__metadata__` entries in the header (and so the file's bytes) changes from
run to run. This rewrites the header with the metadata sorted by key, same
length, so a rerun of a reference script gives an identical file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import save


def save_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    data = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert len(text) <= n, (len(text), n)
    text += b" " * (n - len(text))
    tmp = Path(str(path) + ".tmp")
    tmp.write_bytes(data[:8] + text + data[8 + n :])
    tmp.replace(path)
