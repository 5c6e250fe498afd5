"""--fault perturbs one module as layercheck's faults do; the isolated feed takes every module's
input from the golden file, so a fault shows in that module only; in the cumulative feed it shows
in that module and every later record."""

from __future__ import annotations

import math

import pytest
from conftest import bridge_main, builtin_capture, capture_keys, input_ids, need_torch, read_capture, rel_l2, request_for, write_json

FAULTY = "model.base_model.layers1.attn.dense"
AMPLITUDE = 0.05  # layercheck.toml's fault-l1-dense


@pytest.fixture(scope="module")
def golden(tmp_path_factory, layercheck_bin):
    """Builtin cpu-f32 goldens with module inputs (what an isolated case's golden holds)."""
    folder = tmp_path_factory.mktemp("golden")
    ids = write_json(folder / "ids.json", input_ids(5))
    return {
        mode: builtin_capture(layercheck_bin, folder / f"{mode}.safetensors", "tiny-granite", ids, mode, new_tokens=2, inputs=True)
        for mode in ("model-forward", "generate")
    }


def _bridge(tmp_path, request: dict, *flags: str):
    req = write_json(tmp_path / "req.json", request)
    out = tmp_path / "out.safetensors"
    assert bridge_main("--request", req, "--out", out, *flags) == 0
    return read_capture(out)[1]


def expected_fault(clean, amplitude: float):
    """The fault computed independently, in float64 from the formula in layercheck's Fault::apply."""
    import torch

    x = clean.double()
    rms = math.sqrt(float((x * x).mean()))
    pattern = torch.tensor([math.sin(i) for i in range(x.numel())], dtype=torch.float64).view(x.shape)
    return x + amplitude * rms * pattern


@pytest.mark.parametrize("mode", ["model-forward", "generate"])
def test_a_cumulative_fault_changes_that_module_and_everything_after(golden, tmp_path, mode):
    need_torch()
    ref = golden[mode]
    clean = _bridge(tmp_path, request_for(ref, "tiny-granite"))
    faulty = _bridge(tmp_path, request_for(ref, "tiny-granite"), "--fault", f"{FAULTY}:{AMPLITUDE}")
    names = capture_keys(ref)
    first = names.index(FAULTY)
    assert rel_l2(faulty[FAULTY], expected_fault(clean[FAULTY], AMPLITUDE)) < 1e-6, "the fault is layercheck's formula"
    # its relative size: amplitude x rms(out) x rms(sin) / rms(out), rms(sin(i)) being about 1/sqrt(2)
    assert abs(rel_l2(faulty[FAULTY], clean[FAULTY]) - AMPLITUDE / math.sqrt(2)) < 0.1 * AMPLITUDE
    for name in names[:first]:
        assert faulty[name].equal(clean[name]), f"{name} comes before the fault"
    # In generate mode a later step's records before layer 1's attention output do not depend on
    # it (layer 0, and layer 1's q/k/v of the new token); every other later record does.
    independent = {
        n
        for n in names[first:]
        if ".iter-" in n
        and (
            ".layers0." in n
            or n.split(".iter-")[0]
            in {
                "model.base_model.embedding",
                *(f"model.base_model.layers1.{m}" for m in ("ln", "attn.in_proj.query", "attn.in_proj.key", "attn.in_proj.value", "attn.in_proj")),
            }
        )
    }
    for name in names[first:]:
        if name in independent:
            assert faulty[name].equal(clean[name]), f"{name} does not depend on the fault"
        else:
            assert rel_l2(faulty[name], clean[name]) > 1e-3, f"{name} comes after the fault and must change"


@pytest.mark.parametrize("mode", ["model-forward", "generate"])
def test_isolated_feed_takes_golden_inputs_and_isolates_a_fault(golden, tmp_path, mode):
    need_torch()
    ref = golden[mode]
    _, gold = read_capture(ref)
    names = capture_keys(ref)
    clean = _bridge(tmp_path, request_for(ref, "tiny-granite", feed="isolated", golden=ref))
    for name in names:
        assert rel_l2(clean[name], gold[name]) <= 1e-5, name
    faulty = _bridge(tmp_path, request_for(ref, "tiny-granite", feed="isolated", golden=ref), "--fault", f"{FAULTY}:{AMPLITUDE}")
    changed = [n for n in names if not faulty[n].equal(clean[n])]
    assert changed == [n for n in names if n.split(".iter-")[0] == FAULTY], changed


def test_isolated_feed_really_replaces_inputs(golden, tmp_path):
    """A golden whose inputs are not the model's own changes every fed module's output: the feed is
    not a no-op that happens to agree. (Each input gets half of itself rolled by one element, not
    a scale: RMSNorm would not see a scale.)"""
    need_torch()
    from safetensors.torch import save_file

    meta, gold = read_capture(golden["model-forward"])
    shifted = {k: (v + 0.5 * v.roll(1, -1) if k.startswith("input:") and v.is_floating_point() else v) for k, v in gold.items()}
    other = tmp_path / "shifted.safetensors"
    save_file(shifted, str(other), metadata=meta)
    got = _bridge(tmp_path, request_for(golden["model-forward"], "tiny-granite", feed="isolated", golden=other))
    fed = [n for n in capture_keys(other) if n not in ("model.base_model.embedding", "model.base_model")]
    unchanged = [n for n in fed if rel_l2(got[n], gold[n]) < 1e-3]
    assert not unchanged, f"these modules ignored their golden input: {unchanged}"


def test_a_golden_is_checked(golden, layercheck_bin, tmp_path):
    need_torch()
    from conftest import run_bridge

    ref = golden["model-forward"]
    no_inputs = builtin_capture(
        layercheck_bin, tmp_path / "plain.safetensors", "tiny-granite", write_json(tmp_path / "ids.json", input_ids(5)), "model-forward"
    )
    other_ids = builtin_capture(
        layercheck_bin, tmp_path / "other.safetensors", "tiny-granite", write_json(tmp_path / "ids2.json", input_ids(6)), "model-forward", inputs=True
    )
    for bad, named in (
        (no_inputs, "has no module inputs for the isolated feed"),
        (other_ids, "this golden is of other inputs"),
        (golden["generate"], "its keys are not the request's"),
    ):
        req = write_json(tmp_path / "req.json", request_for(ref, "tiny-granite", feed="isolated", golden=bad))
        done = run_bridge("--request", req, "--out", tmp_path / "out.safetensors")
        assert done.returncode == 2 and named in done.stderr and "(hint: " in done.stderr, done.stderr
        assert not (tmp_path / "out.safetensors").exists()
