"""Request validation: every bad field is named, with a hint, and the CLI exits 2 before any
model work (these tests need neither torch nor the layercheck binary)."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import MODELS, input_ids, run_bridge, write_json

from layercheck_fms import keys as keynames
from layercheck_fms.errors import BadInput
from layercheck_fms.model_info import read_model_info
from layercheck_fms.request import parse_request

GRANITE = MODELS / "tiny-granite"


def good(mode: str = "model-forward", n: int = 0) -> dict:
    ids = input_ids(1)
    return {
        "format": "layercheck-request/1",
        "model": "tiny-granite",
        "model_path": str(GRANITE),
        "target": "fms-cpu-f16",
        "mode": mode,
        "input_ids": ids,
        "max_new_tokens": n,
        "forced_ids": None if mode == "model-forward" else [[5] * n for _ in ids],
        "attention_mask": "attend-pads",
        "feed": "cumulative",
        "golden": None,
        "keys": keynames.run_keys(3, mode, n),
        "capture_inputs": False,
    }


def with_(base: dict, **changes) -> dict:
    r = copy.deepcopy(base)
    for k, v in changes.items():
        if v is KeyError:
            del r[k]
        else:
            r[k] = v
    return r


def test_a_good_request_parses_and_fits_the_model():
    for mode, n in (("model-forward", 0), ("generate", 2)):
        req = parse_request(good(mode, n), "req.json")
        req.check_model(read_model_info(GRANITE))
        assert req.mode == mode and req.max_new_tokens == n and len(req.keys) == (40 if n == 0 else 82)


BAD = [
    # (change, field or phrase named in the message)
    ({"format": "layercheck-request/2"}, '"layercheck-request/2"'),
    ({"format": KeyError}, 'no "format" entry'),
    ({"keys": KeyError}, "missing field(s) keys"),
    ({"extra": 1}, "unknown field(s) extra"),
    ({"model": 3}, 'field "model"'),
    ({"model_path": "models/tiny-granite"}, 'field "model_path"'),
    ({"mode": "forward"}, 'field "mode"'),
    ({"attention_mask": "none"}, 'field "attention_mask"'),
    ({"feed": "both"}, 'field "feed"'),
    ({"capture_inputs": 1}, 'field "capture_inputs"'),
    ({"input_ids": []}, 'field "input_ids"'),
    ({"input_ids": [[1, 2, 3], [1, 2]]}, 'field "input_ids" [1] has 2 ids'),
    ({"input_ids": [[1, -2, 3]]}, 'field "input_ids" [0][1]'),
    ({"input_ids": [[1, True, 3]]}, 'field "input_ids" [0][1]'),
    ({"input_ids": [[1, 2.0, 3]]}, 'field "input_ids" [0][1]'),
    ({"max_new_tokens": 2}, 'field "max_new_tokens" is 2 in model-forward mode'),
    ({"max_new_tokens": -1}, 'field "max_new_tokens"'),
    ({"forced_ids": [[1]]}, 'field "forced_ids" is set in model-forward mode'),
    ({"feed": "isolated"}, 'field "golden"'),
    ({"golden": "/nonexistent/golden.safetensors"}, 'field "golden"'),
    ({"keys": "model.head"}, 'field "keys"'),
    ({"keys": ["model.head", "model.head"]}, 'field "keys" lists model.head more than once'),
]


@pytest.mark.parametrize("change,named", BAD, ids=[n for _, n in BAD])
def test_a_bad_field_is_named_with_a_hint(change, named):
    with pytest.raises(BadInput) as e:
        parse_request(with_(good(), **change), "req.json")
    msg = str(e.value)
    assert msg.startswith("req.json: "), msg
    assert named in msg, msg
    assert "(hint: " in msg, msg


def test_generate_requests_check_their_token_counts():
    g = good("generate", 2)
    for change, named in (
        ({"max_new_tokens": 0}, 'field "max_new_tokens" is 0 in generate mode'),
        ({"forced_ids": [[5, 5]]}, 'field "forced_ids" is 1 x 2'),
        ({"forced_ids": [[5], [5]]}, 'field "forced_ids" is 2 x 1'),
        ({"feed": "isolated", "golden": "relative.safetensors"}, 'field "golden"'),
    ):
        with pytest.raises(BadInput) as e:
            parse_request(with_(g, **change), "req.json")
        assert named in str(e.value) and "(hint: " in str(e.value), str(e.value)
    assert parse_request(with_(g, forced_ids=None), "req.json").forced_ids is None  # greedy


def test_golden_with_a_cumulative_feed_is_refused(tmp_path):
    golden = write_json(tmp_path / "g.safetensors", {})
    with pytest.raises(BadInput, match='field "golden" .* with feed cumulative'):
        parse_request(with_(good(), golden=str(golden)), "req.json")


def test_the_model_checks_ids_and_keys():
    info = read_model_info(GRANITE)
    for change, named in (
        ({"input_ids": [[1, 384, 2]]}, 'field "input_ids" [0][1] is 384, outside the vocabulary'),
        # the request's keys against the model's records: a 2-layer list misses layer 2's records
        ({"keys": keynames.run_keys(2, "model-forward", 0)}, "missing 12: model.base_model.layers2.ln,"),
        ({"keys": keynames.run_keys(4, "model-forward", 0)}, "unexpected 12: model.base_model.layers3.ln,"),
        ({"keys": list(reversed(keynames.run_keys(3, "model-forward", 0)))}, "same names in another order"),
        ({"keys": keynames.run_keys(3, "generate", 2)}, "unexpected 42: model, model.base_model.embedding.iter-42,"),
    ):
        req = parse_request(with_(good(), **change), "req.json")
        with pytest.raises(BadInput) as e:
            req.check_model(info)
        assert named in str(e.value) and "(hint: " in str(e.value), str(e.value)


def test_a_model_folder_is_checked(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        read_model_info(tmp_path / "none")
    with pytest.raises(BadInput, match="config.json: cannot be read"):
        read_model_info(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(BadInput, match="not valid JSON"):
        read_model_info(tmp_path)
    cfg = json.loads((GRANITE / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": "3"}))
    with pytest.raises(BadInput, match='field "num_hidden_layers"'):
        read_model_info(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BadInput, match=r"no \*\.safetensors"):
        read_model_info(tmp_path)


# ------------------------------------------------------------------ the command line


def _fails_with_2(tmp_path, *args, named: str):
    out = tmp_path / "out" / "capture.safetensors"
    out.parent.mkdir(exist_ok=True)
    done = run_bridge(*args, "--out", out)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.startswith("error: ") or "error:" in done.stderr, done.stderr
    assert named in done.stderr, done.stderr
    assert list(out.parent.iterdir()) == [], "nothing written, no temporary file left"
    return done


def test_the_cli_exits_2_on_a_bad_request_without_writing(tmp_path):
    req = write_json(tmp_path / "req.json", with_(good(), mode="fwd"))
    _fails_with_2(tmp_path, "--request", req, named=f'{req}: field "mode"')
    (tmp_path / "bad.json").write_text("{not json")
    _fails_with_2(tmp_path, "--request", tmp_path / "bad.json", named="not valid JSON")
    _fails_with_2(tmp_path, "--request", tmp_path / "missing.json", named="cannot be read")


def test_the_cli_exits_2_on_bad_flags(tmp_path):
    req = write_json(tmp_path / "req.json", good())
    _fails_with_2(tmp_path, "--request", req, "--fault", "model.base_model.layers9.attn.dense:0.5", named="not a module this model records")
    _fails_with_2(tmp_path, "--request", req, "--fault", "model.base_model.layers1.attn.dense", named="not KEY:AMPLITUDE")
    _fails_with_2(tmp_path, "--request", req, "--fault", "model.base_model.layers1.attn.dense:nan", named="finite non-zero")
    _fails_with_2(tmp_path, "--request", req, "--fault", "model.base_model.layers1.attn.dense.iter-60:0.5", named="not a module this model records")
    _fails_with_2(tmp_path, "--request", req, "--mode", "generate", named="--mode cannot be used with --request")
    _fails_with_2(tmp_path, "--request", req, "--device", "tpu", named="--device")
    _fails_with_2(tmp_path, "--request", req, "--device", "aiu", "--compile", "inductor", named="sendnn")
    _fails_with_2(tmp_path, "--request", req, "--compile-dynamic", named="--compile-dynamic is a sendnn option")
    _fails_with_2(tmp_path, "--model-path", GRANITE, named="--model-path needs --input-ids")
    ids = write_json(tmp_path / "ids.json", [[1, 2], [3]])
    _fails_with_2(tmp_path, "--model-path", GRANITE, "--input-ids", ids, named=f'{ids}: field "(the whole file)" [1] has 1 ids')
    ids = write_json(tmp_path / "ids.json", [[1, 2]])
    _fails_with_2(tmp_path, "--model-path", GRANITE, "--input-ids", ids, "--max-new-tokens", "3", named="--max-new-tokens is for --mode generate")
    _fails_with_2(tmp_path, "--model-path", GRANITE, "--input-ids", ids, "--mode", "generate", "--max-new-tokens", "0", named="--max-new-tokens is 0")
    ids = write_json(tmp_path / "ids.json", [[1, 999]])
    _fails_with_2(tmp_path, "--model-path", GRANITE, "--input-ids", ids, named="outside the vocabulary")
    done = run_bridge("--request", req, "--out", tmp_path / "no" / "such" / "dir" / "c.safetensors")
    assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr
    done = run_bridge("--request", req, "--out", tmp_path)
    assert done.returncode == 2 and "is a folder" in done.stderr, done.stderr
