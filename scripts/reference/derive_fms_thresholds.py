#!/usr/bin/env python3
"""Thresholds for a model layercheck has no Rust decoder for (models/tiny-mistral), from IBM fms
through the Python bridge: what scripts/derive-thresholds does with layercheck's own decoders.

For each prompt of the baseline file that fits the sequence length (left-padded with id 0, as the
suite's cases are), one prompt per run:
  1. the reference: fms on CPU at float32, generate mode, greedy (`python -m layercheck_fms`);
  2. the target: fms on CPU at float16, fed the reference's new tokens (a layercheck-request/1
     with forced_ids), so that every step compares like with like;
  3. `layercheck compare --metrics-out DIR --tag prompt-N`: the per-layer metrics as a compact file;
then `layercheck thresholds` (get_thresholds.py's reductions, per-shape percentiles, the widening to
a false-failure rate) into thresholds/{model}-thresholds.json.

The bridge runs in this process (layercheck_fms.cli.main), so torch and fms are imported once.

Run from the repository root with the venv of scripts/setup-python and a built layercheck:
    HF_HUB_OFFLINE=1 $(scripts/setup-python) scripts/reference/derive_fms_thresholds.py tiny-mistral
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python" / "src"))

from layercheck_fms.cli import main as bridge  # noqa: E402


def padded_ids(tokenizer_json: Path, prompts: list[str], seq: int) -> list[list[int]]:
    """Each prompt that fits `seq` tokens, left-padded with id 0 (layercheck's TokenBatch rule)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    rows = []
    for p in prompts:
        ids = tok.encode(p).ids
        if len(ids) <= seq:
            rows.append([0] * (seq - len(ids)) + ids)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a folder under models/, e.g. tiny-mistral")
    ap.add_argument("--seq-length", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=4)
    ap.add_argument("--prompts", type=Path, default=REPO / "thresholds/prompts/tiny-baseline.txt")
    ap.add_argument("--layercheck", type=Path, default=REPO / "target/debug/layercheck")
    ap.add_argument("--false-failure-rate", default="0.001")
    ap.add_argument("--output-path", type=Path, default=REPO / "thresholds")
    args = ap.parse_args()
    model_dir = REPO / "models" / args.model
    prompts = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    rows = padded_ids(model_dir / "tokenizer.json", prompts, args.seq_length)
    print(f"{len(rows)} of {len(prompts)} prompts fit {args.seq_length} tokens", file=sys.stderr)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="layercheck-fms-baseline-") as work:
        work = Path(work)
        metrics = work / "metrics"
        for n, row in enumerate(rows, 1):
            ids, ref, tgt = work / f"ids-{n}.json", work / f"ref-{n}.safetensors", work / f"tgt-{n}.safetensors"
            ids.write_text(json.dumps([row]))
            common = ["--device", "cpu", "--mode", "generate", "--max-new-tokens", str(args.max_new_tokens)]
            if bridge(["--model-path", str(model_dir), "--input-ids", str(ids), "--dtype", "float32", *common, "--out", str(ref)]) != 0:
                return 1
            from safetensors import safe_open

            with safe_open(str(ref), "pt") as f:
                keys = json.loads(f.metadata()["keys"])
                new = f.get_tensor("output_ids")[:, args.seq_length :].tolist()
            request = {
                "format": "layercheck-request/1",
                "model": args.model,
                "model_path": str(model_dir),
                "target": "fms-cpu-f16",
                "mode": "generate",
                "input_ids": [row],
                "max_new_tokens": args.max_new_tokens,
                "forced_ids": new,
                "attention_mask": "attend-pads",
                "feed": "cumulative",
                "golden": None,
                "keys": keys,
                "capture_inputs": False,
            }
            req = work / f"request-{n}.json"
            req.write_text(json.dumps(request))
            if bridge(["--request", str(req), "--device", "cpu", "--dtype", "float16", "--out", str(tgt)]) != 0:
                return 1
            subprocess.run(
                [str(args.layercheck), "compare", "--reference", str(ref), "--target", str(tgt), "--metrics-out", str(metrics), "--tag", f"prompt-{n}"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        subprocess.run(
            [
                str(args.layercheck), "thresholds", "--models", args.model, "--metrics", "abs_diff", "cos_sim_avg", "cos_sim_mean",
                "--file_base", str(metrics), "--layer_io", "--percentile", "100", "--false-failure-rate", args.false_failure_rate,
                "--output_path", str(args.output_path),
            ],
            check=True,
        )
    print(f"{len(rows)} prompts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
