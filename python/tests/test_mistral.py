"""A model layercheck has no Rust decoder for (models/tiny-mistral, MistralForCausalLM): the bridge's
float32 run through fms is checked against an independent implementation, Hugging Face
transformers' MistralForCausalLM, since no builtin capture exists to compare with. Logits in
model-forward mode, and greedy generate's new tokens and final logits, to 1e-5 relative L2."""

from __future__ import annotations

from conftest import MEASURED, MODELS, bridge_main, input_ids, need_torch, read_capture, rel_l2, write_json

TOLERANCE = 1e-5
MODEL = MODELS / "tiny-mistral"


def _transformers_model():
    import torch
    from transformers import MistralForCausalLM

    return MistralForCausalLM.from_pretrained(str(MODEL), dtype=torch.float32).eval()


def test_fms_float32_equals_transformers_in_model_forward(tmp_path):
    need_torch()
    import torch

    rows = input_ids(21, batch=2, seq=12, pads=0)
    ids = write_json(tmp_path / "ids.json", rows)
    out = tmp_path / "fms.safetensors"
    assert bridge_main("--model-path", MODEL, "--input-ids", ids, "--dtype", "float32", "--out", out) == 0
    meta, tensors = read_capture(out)
    assert "get_model" in meta["fms_loader"], meta["fms_loader"]
    with torch.no_grad():
        expected = _transformers_model()(torch.tensor(rows)).logits
    err = rel_l2(tensors["logits"], expected)
    MEASURED.append(f"tiny-mistral model-forward: fms float32 logits vs transformers, relative L2 {err:.2e}")
    assert err <= TOLERANCE, err


def test_fms_float32_greedy_generate_equals_transformers(tmp_path):
    need_torch()
    import torch

    rows = input_ids(22, batch=1, seq=12, pads=0)
    ids = write_json(tmp_path / "ids.json", rows)
    out = tmp_path / "fms.safetensors"
    assert bridge_main("--model-path", MODEL, "--input-ids", ids, "--dtype", "float32", "--mode", "generate", "--max-new-tokens", "4", "--out", out) == 0
    meta, tensors = read_capture(out)
    model = _transformers_model()
    with torch.no_grad():
        expected = model.generate(torch.tensor(rows), max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert tensors["output_ids"].tolist() == expected.sequences.tolist()
    last = tensors["model.iter-164"]  # the 4th call's logits: [1, 1, V]
    err = rel_l2(last[:, -1, :], expected.logits[-1])
    MEASURED.append(f"tiny-mistral generate: fms float32 last-step logits vs transformers, relative L2 {err:.2e}")
    assert err <= TOLERANCE, err
