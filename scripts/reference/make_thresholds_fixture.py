#!/usr/bin/env python3
"""Makes tests/fixtures/thresholds/: seed-format CSV files and what the REAL get_thresholds.py
computes from them.

1. Writes tests/fixtures/thresholds/csv/: the per-layer CSV files generate_layers_metrics.py
   would write for model "test-org/tiny-model", max_new_tokens 4, batch size 2, seq length 3
   (3 header lines, one Python float repr per line, f32 values as tensor.tolist() gives them):
   plain layers, a tuple-style layer (stacked per-item tensors), a generate-mode layer with
   `.iter-N` files, a layer with only `.iter-N` files, a header-only file, and NaN / inf / -inf
   values.
2. Runs get_thresholds.py, unmodified, on that folder with `--layer_io`, writing
   tests/fixtures/thresholds/test-org--tiny-model-thresholds.json.

get_thresholds.py and aiu_fms_testing_utils/utils/metrics_utils.py are not committed; pass them:

    git show <commit>:tests/resources/get_thresholds.py > /tmp/aiu/get_thresholds.py
    git show <commit>:aiu_fms_testing_utils/utils/metrics_utils.py > /tmp/aiu/metrics_utils.py
    /work/venv-light/bin/python scripts/reference/make_thresholds_fixture.py \
        /tmp/aiu/get_thresholds.py /tmp/aiu/metrics_utils.py <commit>

(foundation-model-stack/aiu-fms-testing-utils; plain Python with numpy, no torch.)
metrics_utils.py imports torch at the top but its two reductions (abs_diff_linalg_norm = numpy's
linalg.norm, list_mean = np.mean) use numpy only: an empty stand-in `torch` module is put on the
path so that the real file imports. get_thresholds.py lists files with glob.glob, whose order is
the file system's; it is wrapped to return them sorted, so the result does not depend on the
machine (with sorted names a layer's plain file comes before its .iter-N files, so the script
pools them all). Run from the repository root.
"""
import glob
import hashlib
import os
import random
import runpy
import shutil
import struct
import sys
import tempfile

ROOT = os.path.join("tests", "fixtures", "thresholds")
CSV = os.path.join(ROOT, "csv")
MODEL = "test-org/tiny-model"
PREFIX = "test-org--tiny-model_max-new-tokens-4_batch-size-2_seq-length-3_dtype-float16"


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def size(shape):
    return "torch.Size([" + ", ".join(str(d) for d in shape) + "])"


def write(key, metric, gpu_shape, metric_shape, values):
    path = os.path.join(CSV, f"{PREFIX}--{key}.{metric}.csv")
    with open(path, "w") as f:
        f.write(f"{metric}\n")
        f.write(f"GPU shape {size(gpu_shape)} CPU shape {size(gpu_shape)}\n")
        f.write(f"Metric shape {size(metric_shape)}\n")
        for t in values:
            f.write(f"{t}\n")


def layer(rng, key, shape, abs_scale, cos_spread, stacked=1, abs_edits=(), cos_edits=()):
    n_abs = stacked * eval("*".join(str(d) for d in shape))
    n_cos = n_abs // shape[-1]
    abs_values = [f32(abs(rng.gauss(0.0, abs_scale))) for _ in range(n_abs)]
    cos_values = [f32(1.0 - abs(rng.gauss(0.0, cos_spread))) for _ in range(n_cos)]
    for i, v in abs_edits:
        abs_values[i] = v
    for i, v in cos_edits:
        cos_values[i] = v
    write(key, "abs_diff", shape, shape, abs_values)
    write(key, "cos_sim", shape, shape[:-1], cos_values)


def make_csvs():
    shutil.rmtree(CSV, ignore_errors=True)
    os.makedirs(CSV)
    rng = random.Random(7)
    nan, inf = float("nan"), float("inf")
    layer(rng, "model.base_model.embedding", [2, 3, 8], 1e-7, 1e-9)
    layer(rng, "model.base_model.layers0.ln", [2, 3, 8], 1e-2, 1e-5, abs_edits=[(5, nan)])
    layer(rng, "model.base_model.layers0.attn.in_proj.value", [2, 3, 4], 1e-3, 1e-5)
    # The seed's tuple path: per batch item tensors [S, H] stacked, header shape of one item.
    layer(rng, "model.base_model.layers0.attn.in_proj", [3, 4], 1e-3, 1e-5, stacked=2)
    layer(rng, "model.base_model.layers0.attn.dense", [2, 3, 8], 1e-3, 1e-5, abs_edits=[(0, inf)], cos_edits=[(2, nan)])
    layer(rng, "model.base_model.layers0.ff_sub_layer.w2", [2, 3, 8], 2e-3, 1e-4, cos_edits=[(1, inf)])
    layer(rng, "model.base_model.dec_norm", [2, 3, 8], 5e-2, 1e-5, cos_edits=[(4, -inf)])
    # Generate mode: first call plain, later calls .iter-N (cached steps have sequence length 1).
    layer(rng, "model.head", [2, 3, 16], 1e-2, 1e-6)
    layer(rng, "model.head.iter-11", [2, 1, 16], 1e-2, 1e-6)
    layer(rng, "model.head.iter-23", [2, 1, 16], 1e-2, 1e-6)
    # A layer seen only in later calls.
    layer(rng, "model.base_model.layers0.ff_ln.iter-5", [2, 1, 8], 1e-3, 1e-6)
    layer(rng, "model.base_model.layers0.ff_ln.iter-17", [2, 1, 8], 1e-3, 1e-6)
    # Header only: no values (norm 0.0, mean NaN in the seed).
    write("model.base_model.layers0.ff_sub_layer.a", "abs_diff", [2, 3, 8], [2, 3, 8], [])
    write("model.base_model.layers0.ff_sub_layer.a", "cos_sim", [2, 3, 8], [2, 3], [])


def run_get_thresholds(get_thresholds, metrics_utils):
    with tempfile.TemporaryDirectory() as tmp:
        pkg = os.path.join(tmp, "aiu_fms_testing_utils", "utils")
        os.makedirs(pkg)
        for d in (os.path.dirname(pkg), pkg):
            open(os.path.join(d, "__init__.py"), "w").close()
        shutil.copy(metrics_utils, os.path.join(pkg, "metrics_utils.py"))
        torch = os.path.join(tmp, "torch")
        os.makedirs(os.path.join(torch, "nn"))
        open(os.path.join(torch, "__init__.py"), "w").write("from . import nn\n")
        open(os.path.join(torch, "nn", "__init__.py"), "w").close()
        sys.path.insert(0, tmp)
        real_glob = glob.glob
        glob.glob = lambda pattern, *a, **k: sorted(real_glob(pattern, *a, **k))
        sys.argv = [get_thresholds, "--models", MODEL, "--metrics", "abs_diff", "cos_sim_avg", "cos_sim_mean",
                    "--file_base", CSV, "--layer_io", "--output_path", ROOT]
        runpy.run_path(get_thresholds, run_name="__main__")
        glob.glob = real_glob


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    get_thresholds, metrics_utils, commit = sys.argv[1:]
    make_csvs()
    import numpy
    with open(os.path.join(ROOT, "PROVENANCE.md"), "w") as f:
        f.write("# tests/fixtures/thresholds\n\n")
        f.write("Made by `scripts/reference/make_thresholds_fixture.py` (see its docstring).\n\n")
        f.write("- `csv/`: seed-format per-layer CSV files written by that script.\n")
        f.write("- `test-org--tiny-model-thresholds.json`: written by the unmodified `get_thresholds.py` of\n")
        f.write(f"  foundation-model-stack/aiu-fms-testing-utils at commit {commit}, run with\n")
        f.write("  `--models test-org/tiny-model --metrics abs_diff cos_sim_avg cos_sim_mean --layer_io`.\n")
        f.write(f"- get_thresholds.py sha256 {sha256(get_thresholds)}\n")
        f.write(f"- metrics_utils.py sha256 {sha256(metrics_utils)}\n")
        f.write(f"- Python {sys.version.split()[0]}, numpy {numpy.__version__}\n")
    run_get_thresholds(get_thresholds, metrics_utils)


if __name__ == "__main__":
    main()
