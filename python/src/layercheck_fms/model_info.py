"""What the bridge needs from a model folder's config.json before loading any weights."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput


@dataclass(frozen=True)
class ModelInfo:
    """A model folder and the config.json fields the bridge checks requests against."""

    path: Path
    architecture: str
    model_type: str
    vocab_size: int
    num_layers: int
    hidden_size: int
    num_heads: int
    head_dim: int
    config_sha256: str

    @property
    def explicit_head_dim(self) -> bool:
        """Whether head_dim differs from hidden_size / num_attention_heads."""
        return self.head_dim * self.num_heads != self.hidden_size


def read_model_info(path: Path) -> ModelInfo:
    """Reads `path`/config.json; a folder that is not an HF model folder is a BadInput."""
    config = path / "config.json"
    if not path.is_dir():
        raise BadInput(
            f"model folder {path} does not exist or is not a folder\n(hint: model_path must be an HF model folder with config.json and *.safetensors)"
        )
    try:
        raw = config.read_bytes()
    except OSError as e:
        raise BadInput(f"{config}: cannot be read ({e.strerror})\n(hint: model_path must be an HF model folder with config.json and *.safetensors)") from e
    try:
        cfg = json.loads(raw)
    except ValueError as e:
        raise BadInput(f"{config}: not valid JSON ({e})\n(hint: it must be the model's HF config.json)") from e
    if not isinstance(cfg, dict):
        raise BadInput(f"{config}: not a JSON object\n(hint: it must be the model's HF config.json)")

    def field(name: str) -> int:
        v = cfg.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise BadInput(f'{config}: field "{name}" is {v!r}, not a positive integer\n(hint: it must be the model\'s HF config.json)')
        return v

    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else ""
    hidden, heads = field("hidden_size"), field("num_attention_heads")
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        head_dim = hidden // heads
    elif isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0:
        raise BadInput(f'{config}: field "head_dim" is {head_dim!r}, not a positive integer\n(hint: it must be the model\'s HF config.json)')
    vocab, layers = field("vocab_size"), field("num_hidden_layers")
    if not any(path.glob("*.safetensors")):
        raise BadInput(f"model folder {path} has no *.safetensors file\n(hint: model_path must be an HF model folder with config.json and *.safetensors)")
    return ModelInfo(
        path=path,
        architecture=arch,
        model_type=str(cfg.get("model_type", "")),
        vocab_size=vocab,
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        head_dim=head_dim,
        config_sha256=hashlib.sha256(raw).hexdigest(),
    )
