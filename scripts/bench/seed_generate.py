#!/usr/bin/env python3
"""The REAL generate_layers_metrics.py pipeline (aiu-fms-testing-utils) on a model folder, timed,
for benches/generate.rs to compare `layercheck generate` with.

    /work/venv/bin/python scripts/bench/seed_generate.py --model-path models/smollm2-135m-instruct \
        --mode model-forward|generate [--max-new-tokens 8] [--batch 1 --seq 64] \
        [--input-ids ids.json] [--output-dir DIR] [--aiu-package /tmp/aiu-whl]

The script runs unmodified in this process, with the run-time patches of
scripts/reference/seed_patches.py (fixed input ids instead of ShareGPT, readable file prefix, the
"cuda" side loaded on CPU). So the test side is float16 on CPU, NOT CUDA float16 as in the seed.
Inputs: --input-ids (B lists of S ids), else torch.manual_seed(0); torch.randint(1, vocab, [B, S]).
CSVs go to --output-dir (created, must not hold the files already: the script never overwrites)
or to a temporary folder that is removed.

Prints one JSON line: wall_s (from the start of this script, before torch is imported, to the
last CSV written: both model loads, the forward(s), metrics and CSV writing), peak RSS from
getrusage (KiB on Linux, printed in MiB): peak_rss_self_mib (RUSAGE_SELF), peak_rss_children_mib
(RUSAGE_CHILDREN), and peak_rss_mib = the larger of the two, files, and what ran. Logs (the
pipeline's INFO log) go to stderr.

The only child is `ldconfig -p`, which ctypes.util.find_library forks after torch is imported; a
fork's ru_maxrss counts the parent's pages resident at fork time (about 430 MiB), so the sum
self + children (peak_rss_self_plus_children_mib) counts those pages twice: peak_rss_mib takes
the max, as the kernel does for the rusage that wait4(2) and /usr/bin/time report.
"""
import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from seed_patches import run_generate_layers_metrics  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="HF model folder; its name is the model id in file names")
    p.add_argument("--mode", required=True, choices=["model-forward", "generate"])
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--input-ids", help="JSON: B lists of S ids (default: seed 0, ids in 1..vocab)")
    p.add_argument("--output-dir", help="where the CSVs go (default: a temporary folder, removed)")
    p.add_argument("--aiu-package", default="/tmp/aiu-whl",
                   help="folder holding aiu_fms_testing_utils (the unpacked 0.9.0 wheel)")
    a = p.parse_args()

    model_dir = os.path.abspath(a.model_path)
    if a.input_ids:
        ids = json.load(open(a.input_ids))
    else:
        import torch
        vocab = json.load(open(os.path.join(model_dir, "config.json")))["vocab_size"]
        torch.manual_seed(0)
        ids = torch.randint(1, vocab, (a.batch, a.seq)).tolist()
    if (len(ids), len(ids[0])) != (a.batch, a.seq):
        sys.exit(f"input ids are {len(ids)} x {len(ids[0])}, not --batch {a.batch} x --seq {a.seq}")

    tmp = None
    if a.output_dir:
        out_dir = os.path.abspath(a.output_dir)
        os.makedirs(out_dir, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="seed_generate-")
        out_dir = tmp.name

    to_calls, errors = run_generate_layers_metrics(
        os.path.abspath(a.aiu_package), os.path.dirname(model_dir), os.path.basename(model_dir),
        a.mode, ids, a.max_new_tokens, out_dir)
    files = len(os.listdir(out_dir))
    wall = time.perf_counter() - START
    if tmp is not None:
        tmp.cleanup()

    import torch
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({
        "wall_s": wall,
        "peak_rss_mib": max(own, children) / 1024,
        "peak_rss_self_mib": own / 1024,
        "peak_rss_children_mib": children / 1024,
        "peak_rss_self_plus_children_mib": (own + children) / 1024,
        "files": files,
        "logged_errors": len(errors),
        "mode": a.mode,
        "max_new_tokens": a.max_new_tokens,
        "shape": [a.batch, a.seq],
        "model_id": os.path.basename(model_dir),
        "reference": "cpu float32",
        "test_side": "cpu float16 (the seed's is CUDA float16; no GPU here, get_model(cuda) patched to cpu)",
        "redirected_cuda_moves": to_calls,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))
    if errors:
        sys.exit("logged errors (safe_forward swallowed an exception?):\n" + "\n".join(errors[:10]))


if __name__ == "__main__":
    main()
