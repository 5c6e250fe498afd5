"""Runs the REAL generate_layers_metrics.py of aiu-fms-testing-utils, unmodified (runpy), in the
current process, with the run-time patches that make it runnable here. Shared by
make_seed_fixture.py (the seed fixture) and scripts/bench/seed_generate.py (the benchmark).

Patches (applied before the script executes; see make_seed_fixture.py's docstring for why):

1. `aiu_fms_testing_utils.utils.prepare_inputs` returns the given fixed ids (no ShareGPT).
2. `validation.get_default_validation_prefix` returns the readable prefix of versions <= 0.2.
3. `fms.models.get_model(device_type="cuda")` loads on CPU: the test side is float16 on CPU.
4. `torch.Tensor.to("cuda")` becomes `.to("cpu", copy=True)` (a copy, as a real device move).
5. Optional: `record(name, a, b)` is called with the arguments of every
   `tensor_abs_diff` / `tensor_cos_sim` call before the call (values unchanged).

Call `run_generate_layers_metrics` once per process: the patches stay installed.
"""
import logging
import os
import runpy
import sys


def run_generate_layers_metrics(aiu_package, models_dir, model, mode, ids, max_new_tokens, out_dir, record=None):
    """Runs generate_layers_metrics.py from `models_dir` on `--model_path model` (so the model id
    in file names is `model`), inputs `ids` (B lists of S ids), writing into `out_dir` (which must
    exist). Returns (number of redirected .to("cuda") calls, list of logged error messages)."""
    sys.path.insert(0, aiu_package)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import fms.models
    import aiu_fms_testing_utils.utils as aiu_utils
    import aiu_fms_testing_utils.testing.validation as aiu_validation
    import aiu_fms_testing_utils.utils.metrics_utils as aiu_metrics

    def prepare_inputs(batch_size, seq_length, tokenizer, ds_path, seed=0, ds_type="sharegpt"):
        t = torch.tensor(ids, dtype=torch.long)
        assert tuple(t.shape) == (batch_size, seq_length), (t.shape, batch_size, seq_length)
        return t, {}

    aiu_utils.prepare_inputs = prepare_inputs

    def readable_prefix(model_id, max_new_tokens, batch_size, seq_length, dtype, **_):
        return (f"{model_id.replace('/', '--')}_max-new-tokens-{max_new_tokens}"
                f"_batch-size-{batch_size}_seq-length-{seq_length}_dtype-{dtype}")

    aiu_validation.get_default_validation_prefix = readable_prefix

    real_get_model = fms.models.get_model

    def get_model(*args, device_type="cpu", **kwargs):
        return real_get_model(*args, device_type="cpu" if device_type == "cuda" else device_type, **kwargs)

    fms.models.get_model = get_model

    real_to = torch.Tensor.to
    to_calls = [0]

    def is_cuda(d):
        return (isinstance(d, str) and d.startswith("cuda")) or (isinstance(d, torch.device) and d.type == "cuda")

    def fake_to(self, *args, **kwargs):
        if args and is_cuda(args[0]):
            to_calls[0] += 1
            kwargs["copy"] = True
            return real_to(self, "cpu", *args[1:], **kwargs)
        if is_cuda(kwargs.get("device")):
            to_calls[0] += 1
            kwargs["device"] = "cpu"
            kwargs["copy"] = True
        return real_to(self, *args, **kwargs)

    torch.Tensor.to = fake_to

    if record is not None:
        real_abs, real_cos = aiu_metrics.tensor_abs_diff, aiu_metrics.tensor_cos_sim

        def tensor_abs_diff(a, b):
            record("abs_diff", a, b)
            return real_abs(a, b)

        def tensor_cos_sim(a, b):
            record("cos_sim", a, b)
            return real_cos(a, b)

        aiu_metrics.tensor_abs_diff, aiu_metrics.tensor_cos_sim = tensor_abs_diff, tensor_cos_sim

    errors = []

    class ErrorCounter(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.ERROR:
                errors.append(record.getMessage())

    # The script's own logging.basicConfig is a no-op once the root logger has a handler: set up
    # the same configuration first, then add the counter.
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), format="%(asctime)s %(message)s")
    logging.getLogger().addHandler(ErrorCounter())

    script = os.path.join(aiu_package, "aiu_fms_testing_utils", "scripts", "generate_layers_metrics.py")
    os.chdir(models_dir)
    sys.argv = [script, "--architecture", "hf_pretrained", "--model_path", model, "--mode", mode,
                "--batch_sizes", str(len(ids)), "--seq_lengths", str(len(ids[0])),
                "--max_new_tokens", str(max_new_tokens), "--output_path", out_dir]
    runpy.run_path(script, run_name="__main__")
    return to_calls[0], errors
