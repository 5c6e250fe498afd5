"""The `layercheck-request/1` file: reading and validating it, or making one from CLI flags.

The format is layercheck's (README "Testing your accelerator" and the lead's protocol note): a JSON
object with exactly the fields of `FIELDS`. Every problem is a BadInput naming the file and the
field, with a hint.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import keys as keynames
from .errors import BadInput
from .model_info import ModelInfo

REQUEST_FORMAT = "layercheck-request/1"
MODES = ("model-forward", "generate")
MASKS = ("attend-pads", "proper")
FEEDS = ("cumulative", "isolated")
FIELDS = (
    "format",
    "model",
    "model_path",
    "target",
    "mode",
    "input_ids",
    "max_new_tokens",
    "forced_ids",
    "attention_mask",
    "feed",
    "golden",
    "keys",
    "capture_inputs",
)


@dataclass
class Request:
    """A validated request (or the same built from flags, `source` then says so)."""

    source: str
    model: str
    model_path: Path
    target: str
    mode: str
    input_ids: list[list[int]]
    max_new_tokens: int
    forced_ids: list[list[int]] | None
    attention_mask: str
    feed: str
    golden: Path | None
    keys: list[str]
    capture_inputs: bool

    def check_model(self, info: ModelInfo) -> None:
        """Checks the ids against the vocabulary and `keys` against the records this model makes."""
        for field, rows in (("input_ids", self.input_ids), ("forced_ids", self.forced_ids or [])):
            for b, row in enumerate(rows):
                for s, v in enumerate(row):
                    if v >= info.vocab_size:
                        raise BadInput(
                            f'{self.source}: field "{field}" [{b}][{s}] is {v}, outside the vocabulary of {info.path} (size {info.vocab_size})'
                            "\n(hint: the ids must come from this model's tokenizer)"
                        )
        expected = keynames.run_keys(info.num_layers, self.mode, self.max_new_tokens)
        diff = keynames.differences(self.keys, expected)
        if diff is not None:
            raise BadInput(
                f'{self.source}: field "keys" is not what {info.path} ({info.num_layers} layers) records in {self.mode} mode'
                f"{'' if self.mode == 'model-forward' else f' with {self.max_new_tokens} new tokens'}: {diff}"
                "\n(hint: layercheck derives the keys from the model's layer count; is model_path the model the request was made for?)"
            )


def _bad(source: str, field: str, problem: str, hint: str) -> BadInput:
    return BadInput(f'{source}: field "{field}" {problem}\n(hint: {hint})')


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _id_rows(source: str, field: str, v: Any, hint: str) -> list[list[int]]:
    if not isinstance(v, list) or not v:
        raise _bad(source, field, f"is {_show(v)}, not a non-empty list of lists of token ids", hint)
    width = None
    for b, row in enumerate(v):
        if not isinstance(row, list) or not row:
            raise _bad(source, field, f"[{b}] is {_show(row)}, not a non-empty list of token ids", hint)
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise _bad(source, field, f"[{b}] has {len(row)} ids, row 0 has {width}: rows must be equally long", "left-pad shorter prompts with id 0")
        for s, t in enumerate(row):
            if not _is_int(t) or t < 0:
                raise _bad(source, field, f"[{b}][{s}] is {_show(t)}, not a token id (an integer >= 0)", hint)
    return v


def _show(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_request(data: Any, source: str) -> Request:
    """Validates a decoded request object; `source` (the file name) prefixes every message."""
    hint_format = f'a request is a JSON object with the fields {", ".join(FIELDS)} (format "{REQUEST_FORMAT}")'
    if not isinstance(data, dict):
        raise BadInput(f"{source}: not a JSON object\n(hint: {hint_format})")
    fmt = data.get("format")
    if fmt != REQUEST_FORMAT:
        what = 'has no "format" entry' if "format" not in data else f"has format {_show(fmt)}"
        raise BadInput(
            f'{source}: {what}; this bridge reads "{REQUEST_FORMAT}"\n(hint: layercheck and layercheck_fms versions must agree on the request format)'
        )
    missing = [f for f in FIELDS if f not in data]
    if missing:
        raise BadInput(f"{source}: missing field(s) {', '.join(missing)}\n(hint: {hint_format}; every field is always present)")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadInput(f"{source}: unknown field(s) {', '.join(unknown)}\n(hint: {hint_format}; a newer request format needs a newer layercheck_fms)")

    for f in ("model", "target"):
        if not isinstance(data[f], str):
            raise _bad(source, f, f"is {_show(data[f])}, not a string", "a matrix name, informational")
    model_path = data["model_path"]
    if not isinstance(model_path, str) or not model_path or not Path(model_path).is_absolute():
        raise _bad(source, "model_path", f"is {_show(model_path)}, not an absolute path", "the HF model folder, as an absolute path")
    mode = data["mode"]
    if mode not in MODES:
        raise _bad(source, "mode", f"is {_show(mode)}", f"one of {', '.join(MODES)}")
    mask = data["attention_mask"]
    if mask not in MASKS:
        raise _bad(source, "attention_mask", f"is {_show(mask)}", f"one of {', '.join(MASKS)}")
    feed = data["feed"]
    if feed not in FEEDS:
        raise _bad(source, "feed", f"is {_show(feed)}", f"one of {', '.join(FEEDS)}")
    if not isinstance(data["capture_inputs"], bool):
        raise _bad(source, "capture_inputs", f"is {_show(data['capture_inputs'])}, not true or false", "a JSON boolean")

    ids = _id_rows(source, "input_ids", data["input_ids"], "B lists of S token ids, left-padded with 0")
    batch, seq = len(ids), len(ids[0])

    n = data["max_new_tokens"]
    if not _is_int(n) or n < 0:
        raise _bad(source, "max_new_tokens", f"is {_show(n)}, not an integer >= 0", "the number of new tokens (0 in model-forward mode)")
    if mode == "model-forward" and n != 0:
        raise _bad(source, "max_new_tokens", f"is {n} in model-forward mode", "model-forward makes no new tokens: 0")
    if mode == "generate" and n < 1:
        raise _bad(source, "max_new_tokens", f"is {n} in generate mode", "generate needs at least 1 new token")

    forced = data["forced_ids"]
    if forced is not None:
        if mode == "model-forward":
            raise _bad(source, "forced_ids", "is set in model-forward mode", "null unless mode is generate")
        forced = _id_rows(source, "forced_ids", forced, "B lists of max_new_tokens ids (the reference's new tokens), or null")
        if len(forced) != batch or len(forced[0]) != n:
            raise _bad(
                source,
                "forced_ids",
                f"is {len(forced)} x {len(forced[0])}, input_ids are {batch} x {seq} with max_new_tokens {n}",
                f"{batch} lists of {n} ids: the reference's new tokens",
            )

    golden = data["golden"]
    if feed == "isolated":
        if not isinstance(golden, str) or not golden or not Path(golden).is_absolute():
            raise _bad(
                source,
                "golden",
                f"is {_show(golden)} with feed isolated",
                "the absolute path of the golden capture whose input:{name} tensors each module takes",
            )
        golden = Path(golden)
        if not golden.is_file():
            raise _bad(
                source, "golden", f"names {golden}, which is not a file", "the golden capture must exist (made with capture_inputs / golden_inputs = true)"
            )
    elif golden is not None:
        raise _bad(source, "golden", f"is {_show(golden)} with feed cumulative", "null unless feed is isolated")

    names = data["keys"]
    if not isinstance(names, list) or not names or not all(isinstance(k, str) for k in names):
        raise _bad(source, "keys", f"is {_show(names)}, not a non-empty list of record names", "the record names expected, in recorded order")
    dups = sorted(k for k, c in Counter(names).items() if c > 1)
    if dups:
        raise _bad(source, "keys", f"lists {', '.join(dups)} more than once", "each record name once, in recorded order")

    return Request(
        source=source,
        model=data["model"],
        model_path=Path(model_path),
        target=data["target"],
        mode=mode,
        input_ids=ids,
        max_new_tokens=n,
        forced_ids=forced,
        attention_mask=mask,
        feed=feed,
        golden=golden,
        keys=list(names),
        capture_inputs=data["capture_inputs"],
    )


def read_request(path: Path) -> Request:
    """Reads and validates the request file `path`."""
    try:
        text = path.read_text()
    except OSError as e:
        raise BadInput(f"request file {path} cannot be read ({e.strerror})\n(hint: layercheck passes the request's absolute path as {{request}})") from e
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BadInput(f'{path}: not valid JSON ({e})\n(hint: the request is a JSON object, format "{REQUEST_FORMAT}")') from e
    return parse_request(data, str(path))


def read_input_ids(path: Path) -> list[list[int]]:
    """Reads a JSON file of B lists of S token ids (the request-less mode's --input-ids)."""
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise BadInput(f"--input-ids file {path} cannot be read ({e.strerror})\n(hint: a JSON file of B lists of S token ids)") from e
    except ValueError as e:
        raise BadInput(f"{path}: not valid JSON ({e})\n(hint: a JSON file of B lists of S token ids, e.g. [[0, 0, 12, 99]])") from e
    return _id_rows(str(path), "(the whole file)", data, "a JSON file of B lists of S token ids, left-padded with 0")


def request_from_flags(
    *,
    model_path: Path,
    input_ids_path: Path,
    mode: str,
    max_new_tokens: int,
    max_new_tokens_given: bool,
    attention_mask: str,
    capture_inputs: bool,
    info: ModelInfo,
    target: str,
) -> Request:
    """A request for a dump without layercheck: keys from the model's layer count, greedy decoding."""
    ids = read_input_ids(input_ids_path)
    if mode == "model-forward" and max_new_tokens_given:
        raise BadInput("--max-new-tokens is for --mode generate\n(hint: add --mode generate, or drop --max-new-tokens)")
    if mode == "generate" and max_new_tokens < 1:
        raise BadInput(f"--max-new-tokens is {max_new_tokens}\n(hint: generate needs at least 1 new token)")
    n = max_new_tokens if mode == "generate" else 0
    return Request(
        source=str(input_ids_path),
        model=model_path.resolve().name,
        model_path=model_path.resolve(),
        target=target,
        mode=mode,
        input_ids=ids,
        max_new_tokens=n,
        forced_ids=None,
        attention_mask=attention_mask,
        feed="cumulative",
        golden=None,
        keys=keynames.run_keys(info.num_layers, mode, n),
        capture_inputs=capture_inputs,
    )
