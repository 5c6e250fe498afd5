"""A deterministic perturbation of one module's output, exactly as layercheck's fault targets make
it (src/compute/target_listener.rs): `out + amplitude * rms(out) * sin(arange(numel)).view(shape)`,
computed in float32 and cast back, at every forward call of the module."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BadInput

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Fault:
    module: str
    amplitude: float

    def apply(self, output: "torch.Tensor") -> "torch.Tensor":
        """`output` with the fault added, in `output`'s dtype."""
        import torch

        x = output.to(torch.float32)
        rms = x.square().mean().sqrt()
        pattern = torch.arange(x.numel(), dtype=torch.float32, device=x.device).sin().view(x.shape)
        return (x + pattern * rms * self.amplitude).to(output.dtype)


def parse_fault(text: str, module_keys: list[str]) -> Fault:
    """Parses `KEY:AMPLITUDE`; KEY must be one of the model's recorded module keys."""
    key, sep, amp = text.rpartition(":")
    if not sep or not key:
        raise BadInput(f"--fault {text!r} is not KEY:AMPLITUDE\n(hint: e.g. --fault model.base_model.layers1.attn.dense:0.5)")
    try:
        amplitude = float(amp)
    except ValueError:
        raise BadInput(f"--fault {text!r}: amplitude {amp!r} is not a number\n(hint: e.g. --fault {key}:0.5)") from None
    if not math.isfinite(amplitude) or amplitude == 0.0:
        raise BadInput(f"--fault {text!r}: amplitude {amp!r} must be a finite non-zero number\n(hint: e.g. --fault {key}:0.5)")
    if key not in module_keys:
        raise BadInput(
            f"--fault {text!r}: {key!r} is not a module this model records\n(hint: a key without .iter-N, e.g. {module_keys[min(6, len(module_keys) - 1)]})"
        )
    return Fault(module=key, amplitude=amplitude)
