"""Forward hooks on every fms module: record outputs (and inputs) under layercheck's record names,
feed golden inputs (isolated feed) and inject a fault.

As the seed tool's hooks do, a module call is recorded only when the module got at least one
positional argument (fms calls its blocks and attention modules with keywords only, so
`layers{i}` and `layers{i}.attn` are never records), and every record bumps one counter: the
first forward call's records keep the plain key, later ones are `{key}.iter-{counter}`.

Tuple outputs are stored as layercheck documents: `attn.in_proj` as cat([q, k, v], -1),
`model.base_model` and `model` as their first element (hidden states, logits). A fault on a tuple
output perturbs that tensor and flows on (q, k, v split back).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import keys as keynames
from .errors import RunFailed
from .fault import Fault
from .golden import GoldenInputs


@dataclass
class Record:
    name: str
    output: torch.Tensor
    input: torch.Tensor | None


class Recorder:
    """Hooks on `model`; `records` fills as the model runs. Call `remove()` when done."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        record_root: bool,
        capture_inputs: bool = False,
        golden: GoldenInputs | None = None,
        fault: Fault | None = None,
    ):
        self.capture_inputs = capture_inputs
        self.golden = golden
        self.fault = fault
        self.records: list[Record] = []
        self.seen: set[str] = set()
        self.counter = 0
        self.calls: dict[str, int] = {}
        self.handles = []
        for module, key in keynames.module_names(model).items():
            if key == keynames.ROOT and not record_root:
                continue
            if golden is not None:
                self.handles.append(module.register_forward_pre_hook(self._pre_hook(key)))
            self.handles.append(module.register_forward_hook(self._post_hook(key)))

    def _pre_hook(self, key: str):
        def pre(module, args):
            if len(args) == 0:
                return None
            call = self.calls.get(key, 0)
            self.calls[key] = call + 1
            x = args[0]
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                return None  # token ids: the same on both sides
            golden = self.golden.get(key, call)
            if golden is None:
                raise RunFailed(
                    f"golden {self.golden.path} has no input for call {call + 1} of {key}"
                    "\n(hint: the golden must be this case's reference capture, made with capture_inputs)"
                )
            if tuple(golden.shape) != tuple(x.shape):
                raise RunFailed(
                    f"golden input of {key} (call {call + 1}) is {list(golden.shape)}, the module's input is {list(x.shape)}"
                    "\n(hint: the golden must be this case's reference capture: same batch, sequence length and mode)"
                )
            return (golden.to(device=x.device, dtype=x.dtype),) + tuple(args[1:])

        return pre

    def _post_hook(self, key: str):
        def post(module, args, output):
            if len(args) == 0:
                return None
            self.counter += 1
            name = keynames.record_name(key, first_call=key not in self.seen, index=self.counter)
            self.seen.add(key)
            tensor = _as_tensor(key, output)
            replaced = None
            if self.fault is not None and self.fault.module == key:
                tensor = self.fault.apply(tensor)
                replaced = _with_tensor(key, output, tensor)
            x = args[0] if self.capture_inputs and isinstance(args[0], torch.Tensor) else None
            self.records.append(Record(name, tensor.detach().clone(), None if x is None else x.detach().clone()))
            return replaced

        return post

    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def check_records(recorded: list[str], expected: list[str], compiled_with: str | None) -> None:
    """RunFailed naming the missing and unexpected records unless `recorded` equals `expected`:
    a hook that did not fire (inside a compiled graph, say) is an error, never a silent gap."""
    diff = keynames.differences(recorded, expected)
    if diff is None:
        return
    if compiled_with:
        raise RunFailed(
            f"with --compile {compiled_with}, not every forward hook fired inside the compiled graph: {diff}"
            "\n(hint: hooks must be registered before the model's first compiled call; run without --compile to capture every module)"
        )
    raise RunFailed(f"the model's hooks did not record what the request expects: {diff}\n(hint: is model_path the model the request was made for?)")


def _as_tensor(key: str, output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if key.endswith(".attn.in_proj") and isinstance(output, (tuple, list)) and len(output) == 3:
        return torch.cat(list(output), dim=-1)
    if key in (keynames.BASE_MODEL, keynames.ROOT) and isinstance(output, (tuple, list)) and isinstance(output[0], torch.Tensor):
        return output[0]
    raise RunFailed(
        f"module {key} returned {type(output).__name__}, which layercheck's capture format does not define"
        "\n(hint: only attn.in_proj (q, k, v), model.base_model and model may return tuples)"
    )


def _with_tensor(key: str, output, tensor: torch.Tensor):
    """`output` with its recorded tensor replaced by `tensor` (tuples rebuilt)."""
    if isinstance(output, torch.Tensor):
        return tensor
    if key.endswith(".attn.in_proj"):
        return tuple(torch.split(tensor, [t.shape[-1] for t in output], dim=-1))
    return (tensor, *output[1:])
