#!/usr/bin/env python3
"""Makes tests/fixtures/seed/: what the REAL generate_layers_metrics.py and get_thresholds.py of
foundation-model-stack/aiu-fms-testing-utils write for models/tiny-granite.

    /work/venv/bin/python scripts/reference/make_seed_fixture.py \
        --aiu-package /tmp/aiu-whl --get-thresholds /tmp/aiu/tests/resources/get_thresholds.py

--aiu-package is a folder that holds the package `aiu_fms_testing_utils` (with its
`_version.py`, e.g. the unpacked PyPI wheel) and its `aiu_fms_testing_utils/scripts/
generate_layers_metrics.py`; --get-thresholds is `tests/resources/get_thresholds.py` of a git
checkout (it is not in the wheel). Neither is committed here. Run from the repository root.

The two scripts run UNMODIFIED (runpy): generate_layers_metrics.py in a fresh child process per
run, get_thresholds.py in this process. This wrapper only patches, at
run time, before the script is executed (1-5: seed_patches.py, shared with scripts/bench/):

1. `aiu_fms_testing_utils.utils.prepare_inputs` -> returns the fixed ids in
   tests/fixtures/seed/input_ids.json (instead of sampling ShareGPT), and no padding kwargs.
2. `aiu_fms_testing_utils.testing.validation.get_default_validation_prefix` -> the readable
   prefix of versions <= 0.2 (`{model_id '/'->'--'}_max-new-tokens-{T}_batch-size-{B}_
   seq-length-{S}_dtype-{dtype}`); newer versions return a sha256 that get_thresholds.py's
   `{model}*` glob cannot match.
3. `fms.models.get_model(device_type="cuda")` -> device_type "cpu" (no GPU here): the test
   side is float16 on CPU instead of CUDA.
4. `torch.Tensor.to("cuda")` -> `.to("cpu", copy=True)`: on a real GPU these calls move the
   CPU reference tensors, so they return copies; the copy keeps the script's in-place
   `tensor_cos_sim` (zeros -> 1e-6) from changing the reference tensor that a later
   `tensor_abs_diff` reads, exactly as on CUDA.
5. Recording only: `metrics_utils.tensor_abs_diff` / `tensor_cos_sim` are wrapped to hash
   their float16 argument (before the in-place edit) to check determinism, and to keep the two
   arguments of each plain-tensor layer's `tensor_abs_diff` call (the float32 CPU side and the
   float16 side) in `tensors-{forward,generate}.safetensors` (`reference:{key}`, `target:{key}`,
   metadata `keys`); values unchanged. A logging handler notes the layer of each call (the script
   logs "Comparing CPU and GPU Layer {key} output" first). With these, tests/seed_fixture.rs checks
   layercheck's metrics and CSV writer byte for byte on the very tensors the Python tool saw, on
   any CPU: float16 kernels (libtorch's and oneDNN's) round differently per instruction set, so a
   float16 run of layercheck reproduces these CSV values only on a machine like the one that made
   them.
6. get_thresholds.py: `glob.glob` returns sorted names (file-system order otherwise; sorted,
   a layer's plain file comes before its `.iter-N` files so the script pools them).

The model is run from `models/` with `--model_path tiny-granite`, so the model id in file names
is `tiny-granite`. The f16 side is run twice (two processes); the CSVs and the f16 tensor
hashes of both runs are compared and the result is written to tests/fixtures/seed/PROVENANCE.md.
"""
import argparse
import glob
import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SEED = os.path.join(REPO, "tests", "fixtures", "seed")
MODELS = os.path.join(REPO, "models")
MODEL = "tiny-granite"
INPUT_IDS = [[0, 0, 322, 380, 103, 25, 354, 11]]
MAX_NEW_TOKENS = 2
RUNS = {  # fixture name -> --mode
    "forward": "model-forward",
    "generate": "generate",
}


def sha256_file(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# --------------------------------------------------------------------------- child process


TUPLE_KEYS = ("attn.in_proj", "model.base_model", "model")  # compared differently by the seed, on purpose


def is_tuple_key(key):
    key = key.split(".iter-")[0]
    return key.endswith("attn.in_proj") or key in TUPLE_KEYS[1:]


def child(aiu_package, mode, out_dir, digest_path, tensors_path):
    from seed_patches import run_generate_layers_metrics

    import logging
    import torch
    from safetensors.torch import save_file

    ids = json.load(open(os.path.join(SEED, "input_ids.json")))
    digests = []
    # The layer each metric call belongs to: the script logs "Comparing CPU and GPU Layer {key}
    # output" before its calls for that layer.
    current = {"layer": None}
    kept, order = {}, []

    class LayerNoter(logging.Handler):
        def emit(self, rec):
            msg = rec.getMessage()
            prefix, suffix = "Comparing CPU and GPU Layer ", " output"
            if msg.startswith(prefix) and msg.endswith(suffix):
                current["layer"] = msg[len(prefix):-len(suffix)].replace("[", "").replace("]", "")

    # The configuration seed_patches.py sets up (the script's own basicConfig is then a no-op).
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), format="%(asctime)s %(message)s")
    logging.getLogger().addHandler(LayerNoter())

    def record(name, a, b):
        for t in (a, b):
            if t.dtype == torch.float16:
                h = hashlib.sha256(t.detach().contiguous().view(torch.int16).numpy().tobytes()).hexdigest()
                digests.append(f"{name} {list(t.shape)} {h}")
        key = current["layer"]
        # A plain-tensor layer makes one tensor_abs_diff(cpu copy f32, device output f16) call.
        if name == "abs_diff" and key is not None and key not in kept and not is_tuple_key(key):
            kept[key] = (a.detach().clone().contiguous(), b.detach().clone().contiguous())
            order.append(key)

    to_calls, errors = run_generate_layers_metrics(aiu_package, MODELS, MODEL, mode, ids, MAX_NEW_TOKENS,
                                                   out_dir, record=record)
    with open(digest_path, "w") as f:
        f.write("\n".join(digests) + "\n")
    tensors = {}
    for key in order:
        tensors[f"reference:{key}"], tensors[f"target:{key}"] = kept[key]
    save_file(tensors, tensors_path, metadata={"keys": json.dumps(order), "mode": mode,
                                                "script": "scripts/reference/make_seed_fixture.py"})
    print(f"child: {len(digests)} f16 tensors hashed, {len(order)} plain-tensor layers kept,"
          f" {to_calls} .to('cuda') calls redirected, {len(errors)} logged errors", file=sys.stderr)
    if errors:
        sys.exit("logged errors (safe_forward swallowed an exception?):\n" + "\n".join(errors[:10]))


# --------------------------------------------------------------------------- parent


def run_child(aiu_package, mode, out_dir, digest_path, tensors_path, log_path):
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)  # the script writes into it but never creates it; it never overwrites
    with open(log_path, "w") as log:
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child", aiu_package, mode, out_dir, digest_path, tensors_path],
                       check=True, stdout=log, stderr=subprocess.STDOUT)


def read_csv_values(path):
    with open(path) as f:
        lines = f.read().splitlines()
    return lines[:3], [float(x) for x in lines[3:]]


def compare(dir1, dir2, dig1, dig2):
    """Returns lines describing whether the two runs agree."""
    out = []
    n1, n2 = sorted(os.listdir(dir1)), sorted(os.listdir(dir2))
    if n1 != n2:
        return [f"file lists differ: {sorted(set(n1) ^ set(n2))}"]
    differ = [n for n in n1 if open(os.path.join(dir1, n), "rb").read() != open(os.path.join(dir2, n), "rb").read()]
    out.append(f"{len(n1)} CSV files, {len(differ)} differ byte-wise between the two runs")
    for n in differ:
        h1, v1 = read_csv_values(os.path.join(dir1, n))
        h2, v2 = read_csv_values(os.path.join(dir2, n))
        if h1 != h2 or len(v1) != len(v2):
            out.append(f"  {n}: headers or lengths differ")
        else:
            out.append(f"  {n}: max |difference| {max(abs(a - b) for a, b in zip(v1, v2))}")
    d1, d2 = open(dig1).read().splitlines(), open(dig2).read().splitlines()
    same = sum(a == b for a, b in zip(d1, d2))
    out.append(f"{len(d1)} float16 tensors hashed per run; {same} identical, "
               f"{max(len(d1), len(d2)) - same} differ")
    return out


def cpu_description():
    """The CPU model and its vector extensions (float16 results depend on them)."""
    model, flags = "?", set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name") and model == "?":
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    vector = sorted(f for f in flags if f.startswith(("avx", "amx", "f16c", "fma")))
    return f"{model}; {' '.join(vector)}"


def run_get_thresholds(aiu_package, get_thresholds, csv_dir, out_dir):
    sys.path.insert(0, aiu_package)
    real_glob = glob.glob
    glob.glob = lambda pattern, *a, **k: sorted(real_glob(pattern, *a, **k))
    sys.argv = [get_thresholds, "--models", MODEL, "--metrics", "abs_diff", "cos_sim_avg", "cos_sim_mean",
                "--file_base", csv_dir, "--layer_io", "--output_path", out_dir]
    runpy.run_path(get_thresholds, run_name="__main__")
    glob.glob = real_glob


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:7])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aiu-package", default="/tmp/aiu-whl")
    p.add_argument("--get-thresholds", default="/tmp/aiu/tests/resources/get_thresholds.py")
    p.add_argument("--commit", default="81502dd6d2477e2f943326e903685a690e8f0bea",
                   help="git commit of the checkout that --get-thresholds comes from (for PROVENANCE.md)")
    a = p.parse_args()
    aiu_package = os.path.abspath(a.aiu_package)
    get_thresholds = os.path.abspath(a.get_thresholds)
    gen_script = os.path.join(aiu_package, "aiu_fms_testing_utils", "scripts", "generate_layers_metrics.py")
    metrics_utils = os.path.join(aiu_package, "aiu_fms_testing_utils", "utils", "metrics_utils.py")
    validation = os.path.join(aiu_package, "aiu_fms_testing_utils", "testing", "validation.py")

    os.makedirs(SEED, exist_ok=True)
    with open(os.path.join(SEED, "input_ids.json"), "w") as f:
        json.dump(INPUT_IDS, f)
        f.write("\n")

    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, mode in RUNS.items():
            final = os.path.join(SEED, f"csv-{name}")
            again = os.path.join(tmp, f"csv-{name}-run2")
            d1, d2 = os.path.join(tmp, f"{name}-1.digests"), os.path.join(tmp, f"{name}-2.digests")
            tensors = (os.path.join(SEED, f"tensors-{name}.safetensors"), os.path.join(tmp, f"tensors-{name}-run2.safetensors"))
            for out, dig, ten, i in ((final, d1, tensors[0], 1), (again, d2, tensors[1], 2)):
                log = os.path.join(tempfile.gettempdir(), f"make_seed_fixture-{name}-{i}.log")
                print(f"running {mode} (run {i}), log {log}", file=sys.stderr)
                run_child(aiu_package, mode, out, dig, ten, log)
            report[name] = compare(final, again, d1, d2)
            for line in report[name]:
                print(f"{name}: {line}", file=sys.stderr)
            tdir = os.path.join(tmp, f"th-{name}")
            os.makedirs(tdir)
            run_get_thresholds(aiu_package, get_thresholds, final, tdir)
            shutil.copy(os.path.join(tdir, f"{MODEL}-thresholds.json"), os.path.join(SEED, f"thresholds-{name}.json"))

    import numpy
    import torch
    import transformers
    import fms
    version = {}
    exec(open(os.path.join(aiu_package, "aiu_fms_testing_utils", "_version.py")).read(), version)
    with open(os.path.join(SEED, "PROVENANCE.md"), "w") as f:
        f.write("# tests/fixtures/seed\n\n")
        f.write("Made by `scripts/reference/make_seed_fixture.py` (see its docstring for the run-time\n")
        f.write("patches: fixed input ids, readable file prefix, float16 test side on CPU instead of CUDA).\n\n")
        f.write(f"- model: `models/{MODEL}`, `--architecture hf_pretrained --model_path {MODEL}`\n")
        f.write(f"- input ids (`input_ids.json`): {INPUT_IDS}; max_new_tokens {MAX_NEW_TOKENS}\n")
        f.write("- `csv-forward/`: `--mode model-forward`; `csv-generate/`: `--mode generate`\n")
        f.write("- `thresholds-{forward,generate}.json`: `get_thresholds.py --models tiny-granite --metrics\n")
        f.write("  abs_diff cos_sim_avg cos_sim_mean --file_base <csv folder> --layer_io` (sorted glob)\n")
        f.write(f"- aiu-fms-testing-utils {version['version']} (PyPI wheel): generate_layers_metrics.py sha256\n")
        f.write(f"  {sha256_file(gen_script)}, metrics_utils.py {sha256_file(metrics_utils)},\n")
        f.write(f"  validation.py {sha256_file(validation)}\n")
        f.write(f"- get_thresholds.py from git {a.commit}: sha256 {sha256_file(get_thresholds)}\n")
        f.write(f"- Python {sys.version.split()[0]}, torch {torch.__version__}, ibm-fms {fms.__version__ if hasattr(fms, '__version__') else '?'}, "
                f"transformers {transformers.__version__}, numpy {numpy.__version__}\n")
        f.write(f"- torch threads: {torch.get_num_threads()} (default)\n")
        f.write(f"- CPU: {cpu_description()}\n")
        f.write("- `tensors-{forward,generate}.safetensors`: the float32 and float16 arguments of each plain-tensor\n"
                "  layer's `tensor_abs_diff` call in run 1, the run whose CSV files are committed\n\n")
        f.write("## Determinism (two runs, two processes, same machine)\n\n")
        for name in RUNS:
            for line in report[name]:
                f.write(f"- {name}: {line}\n" if not line.startswith("  ") else f"  - {line.strip()}\n")


if __name__ == "__main__":
    main()
