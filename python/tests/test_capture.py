"""The capture file: written atomically, with layercheck's metadata; the request-less mode (a dump
to carry to another host) writes logits in model-forward mode and decodes greedily in generate
mode; module names follow layercheck's key rules."""

from __future__ import annotations

import json

import pytest
from conftest import MODELS, TINY_MODELS, bridge_main, builtin_capture, capture_keys, input_ids, need_torch, read_capture, rel_l2, run_bridge, write_json


def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    need_torch()
    import torch

    from layercheck_fms.capture import write_capture

    out = tmp_path / "c.safetensors"
    out.write_bytes(b"the previous capture")
    shared = torch.zeros(4)
    with pytest.raises(RuntimeError, match="share memory"):  # safetensors refuses aliased tensors
        write_capture(out, {"a": shared, "b": shared}, {}, ["a", "b"])
    assert out.read_bytes() == b"the previous capture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"], "no temporary file left"
    write_capture(out, {"a": torch.ones(2)}, {"mode": "model-forward"}, ["a"])
    meta, tensors = read_capture(out)
    assert meta["format"] == "layercheck-capture/1" and json.loads(meta["keys"]) == ["a"] and tensors["a"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]


@pytest.mark.parametrize("model", TINY_MODELS)
def test_without_a_request_forward_writes_logits_and_generate_decodes_greedily(layercheck_bin, tmp_path, model):
    need_torch()
    ids = write_json(tmp_path / "ids.json", input_ids(9, seq=10, pads=2))
    for mode, flags in (("model-forward", []), ("generate", ["--max-new-tokens", "4"])):
        ref = builtin_capture(layercheck_bin, tmp_path / f"ref-{mode}.safetensors", model, ids, mode, new_tokens=4)
        out = tmp_path / f"dump-{mode}.safetensors"
        assert bridge_main("--model-path", MODELS / model, "--input-ids", ids, "--mode", mode, *flags, "--out", out) == 0
        meta, got = read_capture(out)
        _, want = read_capture(ref)
        assert capture_keys(out) == capture_keys(ref)
        for key in (
            "format",
            "mode",
            "keys",
            "model",
            "target",
            "max_new_tokens",
            "attention_mask",
            "model_path",
            "config_sha256",
            "producer",
            "torch_version",
            "fms_version",
            "fms_loader",
        ):
            assert key in meta, key
        assert meta["producer"].startswith("layercheck_fms ") and meta["target"] == "fms-cpu-float32" and meta["model"] == model
        if mode == "generate":
            assert got["output_ids"].equal(want["output_ids"]), "greedy decoding of the same logits gives the same tokens"
            assert meta["max_new_tokens"] == "4"
        else:
            assert "output_ids" not in got and rel_l2(got["logits"], want["logits"]) <= 1e-5
        if model == "tiny-llama":
            assert "Granite emulating LlamaForCausalLM" in meta["fms_loader"], meta["fms_loader"]
        else:
            assert meta["fms_loader"].startswith("fms.models.get_model(architecture='hf_pretrained'"), meta["fms_loader"]


def test_inputs_are_captured_as_the_fms_modules_take_them(layercheck_bin, tmp_path):
    """input:{name} is each module's first positional input, as the builtin writes it; one
    documented difference: fms's base_model takes the token ids, where layercheck's decoder
    records the embedding output after embedding_multiplier. (Also the end-to-end
    `python -m layercheck_fms` run in a fresh process.)"""
    need_torch()
    ids = write_json(tmp_path / "ids.json", input_ids(4))
    ref = builtin_capture(layercheck_bin, tmp_path / "ref.safetensors", "tiny-granite", ids, "generate", new_tokens=2, inputs=True)
    out = tmp_path / "dump.safetensors"
    done = run_bridge(
        "--model-path", MODELS / "tiny-granite", "--input-ids", ids, "--mode", "generate", "--max-new-tokens", "2", "--capture-inputs", "--out", out
    )
    assert done.returncode == 0, done.stderr
    _, got = read_capture(out)
    _, want = read_capture(ref)
    assert sorted(got) == sorted(want)
    differ = [k for k in want if k.startswith("input:") and not (got[k].dtype == want[k].dtype and got[k].equal(want[k]))]
    assert differ == ["input:model.base_model", "input:model.base_model.iter-80"], differ
    assert got["input:model.base_model"].equal(got["input_ids"])


def test_module_names_follow_layercheck_key_rules():
    need_torch()
    from layercheck_fms import keys as keynames
    from layercheck_fms.loader import load
    from layercheck_fms.model_info import read_model_info

    for model in TINY_MODELS:
        loaded = load(read_model_info(MODELS / model), "cpu", "float32")
        names = set(keynames.module_names(loaded.model).values())
        assert set(keynames.forward_keys(3, root=True)) <= names, model
        assert not any("[" in n or "layers.0" in n for n in names), "list items join without a dot or brackets"
        # modules fms calls with keywords only exist but are not records
        assert {"model.base_model.layers0", "model.base_model.layers0.attn"} <= names
