"""Shared fixtures: the repository, the builtin `layercheck` binary, requests and captures.

Tests that need torch and fms skip with a message when they are missing (see README.md: they run
in the venv that scripts/setup-python makes); tests that need the `layercheck` binary skip when it
is not built (LAYERCHECK_BIN, default <repo>/target/debug/layercheck).
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

PYTHON_DIR = Path(__file__).resolve().parents[1]
REPO = PYTHON_DIR.parent
MODELS = REPO / "models"
TINY_MODELS = ("tiny-granite", "tiny-llama")
sys.path.insert(0, str(PYTHON_DIR / "src"))  # the package, installed or not

# What the fidelity tests measured, printed at the end of the run.
MEASURED: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("layercheck_fms measurements")
        for line in MEASURED:
            terminalreporter.write_line(line)


def need_torch():
    """Skips the calling test unless torch, fms and safetensors import."""
    for mod in ("torch", "fms", "safetensors"):
        pytest.importorskip(mod, reason=f"{mod} is not installed: run these tests in the venv of scripts/setup-python (scripts/test-python does)")


@pytest.fixture(scope="session")
def layercheck_bin() -> Path:
    path = Path(os.environ.get("LAYERCHECK_BIN", REPO / "target" / "debug" / "layercheck"))
    if not path.is_file():
        pytest.skip(f"the layercheck binary {path} is not built (hint: cargo build --bin layercheck, or set LAYERCHECK_BIN)")
    return path


def bridge_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PYTHON_DIR / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run_bridge(*args: str | Path) -> subprocess.CompletedProcess:
    """`python -m layercheck_fms ARGS` in a fresh process (this interpreter)."""
    return subprocess.run([sys.executable, "-m", "layercheck_fms", *map(str, args)], env=bridge_env(), capture_output=True, text=True, timeout=900)


def bridge_main(*args: str | Path) -> int:
    """The same in this process (torch and fms imported once: much faster)."""
    from layercheck_fms.cli import main

    os.environ["HF_HUB_OFFLINE"] = "1"
    return main([str(a) for a in args])


def input_ids(seed: int, batch: int = 2, seq: int = 12, pads: int = 3, vocab: int = 384) -> list[list[int]]:
    """Seeded ids in 1..vocab-1, row 0 left-padded with `pads` ids 0."""
    rng = random.Random(seed)
    rows = [[rng.randrange(1, vocab) for _ in range(seq)] for _ in range(batch)]
    rows[0][:pads] = [0] * pads
    return rows


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def header(path: Path) -> dict:
    """A safetensors file's JSON header (tensor entries and `__metadata__`), read without torch."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def capture_keys(path: Path) -> list[str]:
    return json.loads(header(path)["__metadata__"]["keys"])


def read_capture(path: Path):
    """(metadata, {name: tensor}) of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def builtin_capture(
    binary: Path, out: Path, model: str, ids_file: Path, mode: str, *, mask: str = "attend-pads", new_tokens: int = 3, inputs: bool = False
) -> Path:
    """`layercheck capture --target cpu-f32` of a tiny model."""
    cmd = [
        str(binary),
        "capture",
        "--model-path",
        str(MODELS / model),
        "--target",
        "cpu-f32",
        "--input-ids",
        str(ids_file),
        "--mode",
        mode,
        "--attention-mask",
        mask,
        "--out",
        str(out),
    ]
    if mode == "generate":
        cmd += ["--max-new-tokens", str(new_tokens)]
    if inputs:
        cmd.append("--capture-inputs")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr}"
    return out


def request_for(
    reference: Path, model: str, *, feed: str = "cumulative", golden: Path | None = None, capture_inputs: bool = False, target: str = "fms-cpu-f32"
) -> dict:
    """The request layercheck would write for a case whose reference capture is `reference`
    (its keys, ids, mask; generate: its new tokens as forced_ids)."""
    meta = header(reference)["__metadata__"]
    _, tensors = read_capture(reference)
    ids = tensors["input_ids"].tolist()
    mode = meta["mode"]
    forced, n = None, 0
    if mode == "generate":
        out = tensors["output_ids"]
        n = out.shape[1] - len(ids[0])
        forced = out[:, len(ids[0]) :].tolist()
    return {
        "format": "layercheck-request/1",
        "model": model,
        "model_path": str(MODELS / model),
        "target": target,
        "mode": mode,
        "input_ids": ids,
        "max_new_tokens": n,
        "forced_ids": forced,
        "attention_mask": meta["attention_mask"],
        "feed": feed,
        "golden": None if golden is None else str(golden),
        "keys": json.loads(meta["keys"]),
        "capture_inputs": capture_inputs,
    }


def rel_l2(a, b) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are zero)."""
    a, b = a.double(), b.double()
    num, den = (a - b).norm().item(), b.norm().item()
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den
