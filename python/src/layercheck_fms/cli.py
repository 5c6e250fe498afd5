"""`python -m layercheck_fms`: answer a layercheck request, or make a capture without one.

    python -m layercheck_fms --device cpu --dtype float16 --request REQ.json --out OUT.safetensors
    python -m layercheck_fms --model-path DIR --input-ids ids.json [--mode generate --max-new-tokens N] --out OUT

Exit status: 0 written; 2 bad input (request, flags, files: nothing run); 1 the run failed (e.g. a
hook that did not fire inside a compiled graph). Messages go to stderr after `error: `.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from . import keys as keynames
from .capture import check_out_path
from .errors import BadInput, BridgeError
from .fault import Fault, parse_fault
from .golden import GoldenInputs, read_golden
from .model_info import ModelInfo, read_model_info
from .request import MASKS, MODES, Request, read_request, request_from_flags

DEVICES = ("cpu", "cuda", "aiu")
DTYPES = ("float32", "float16", "bfloat16")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m layercheck_fms",
        description="Run an IBM fms model with forward hooks on every module and write a layercheck capture (layercheck-capture/1).",
    )
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where to run (aiu: load on CPU, compile with sendnn); default cpu")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="the model's precision; default float32")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--request", type=Path, help="a layercheck-request/1 JSON file (what layercheck's command targets pass)")
    src.add_argument("--model-path", type=Path, help="without a request: the HF model folder")
    p.add_argument("--input-ids", type=Path, help="without a request: JSON file of B lists of S token ids")
    p.add_argument("--mode", choices=MODES, default="model-forward", help="without a request: default model-forward")
    p.add_argument("--max-new-tokens", type=int, default=8, help="without a request, generate mode: new tokens (greedy); default 8")
    p.add_argument("--attention-mask", choices=MASKS, default="attend-pads", help="without a request: default attend-pads")
    p.add_argument("--capture-inputs", action="store_true", help="without a request: also write input:{name} tensors")
    p.add_argument("--out", type=Path, required=True, help="the capture file to write (atomically)")
    p.add_argument("--compile", metavar="BACKEND", help="model.compile(backend=BACKEND) before running: sendnn (AIU), inductor (CPU/GPU)")
    p.add_argument("--compile-dynamic", action="store_true", help="with --compile sendnn: options {'sendnn.dynamic': True}")
    p.add_argument("--fault", metavar="KEY:AMPLITUDE", help="perturb module KEY's output as layercheck's faults do")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except BridgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


@dataclass
class Plan:
    """What a validated command line asks for; nothing loaded yet."""

    request: Request
    info: ModelInfo
    fault: Fault | None
    golden: GoldenInputs | None


def prepare(args: argparse.Namespace) -> Plan:
    """Validates the flags, the request, the model folder's config, the fault and the golden file
    (BadInput on any problem) without importing torch's model code or loading weights."""
    if args.request is None and args.input_ids is None:
        raise BadInput("--model-path needs --input-ids\n(hint: a JSON file of B lists of S token ids, e.g. [[0, 0, 12, 99]])")
    if args.request is not None:
        given = [f for f, v in (("--input-ids", args.input_ids), ("--capture-inputs", args.capture_inputs)) if v]
        given += [f"--{f.replace('_', '-')}" for f in ("mode", "max_new_tokens", "attention_mask") if getattr(args, f) != parser().get_default(f)]
        if given:
            raise BadInput(f"{', '.join(given)} cannot be used with --request\n(hint: the request says the mode, ids, mask and inputs)")
    if args.compile_dynamic and args.compile != "sendnn":
        raise BadInput("--compile-dynamic is a sendnn option\n(hint: use it with --compile sendnn)")
    if args.device == "aiu":
        if args.compile is None:
            args.compile = "sendnn"
        elif args.compile != "sendnn":
            raise BadInput(f"--device aiu with --compile {args.compile}\n(hint: the AIU is reached through the sendnn compile backend: --compile sendnn)")
    check_out_path(args.out)

    if args.request is not None:
        request = read_request(args.request)
        info = read_model_info(request.model_path)
    else:
        info = read_model_info(args.model_path)
        request = request_from_flags(
            model_path=args.model_path,
            input_ids_path=args.input_ids,
            mode=args.mode,
            max_new_tokens=args.max_new_tokens,
            max_new_tokens_given=args.max_new_tokens != parser().get_default("max_new_tokens"),
            attention_mask=args.attention_mask,
            capture_inputs=args.capture_inputs,
            info=info,
            target=f"fms-{args.device}-{args.dtype}",
        )
    request.check_model(info)
    fault = None
    if args.fault is not None:
        fault = parse_fault(args.fault, keynames.forward_keys(info.num_layers, root=request.mode == "generate"))
    golden = read_golden(request.golden, request.keys, request.input_ids) if request.golden is not None else None
    return Plan(request=request, info=info, fault=fault, golden=golden)


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    plan = prepare(args)
    request, info = plan.request, plan.info

    from .capture import capture_tensors, write_capture
    from .hooks import Recorder, check_records
    from .loader import load
    from .runner import run

    if args.compile == "sendnn":
        try:
            import torch_sendnn  # noqa: F401  (registers the sendnn backend)
        except ImportError as e:
            raise BadInput(f"--compile sendnn: torch_sendnn cannot be imported ({e})\n(hint: run on an AIU host with IBM's torch_sendnn installed)") from e
    import fms.models  # noqa: F401  (imports torch and transformers: most of a small run's time)

    imported_at = time.perf_counter()
    loaded = load(info, args.device, args.dtype)
    loaded_at = time.perf_counter()
    model = loaded.model
    if args.compile is not None:
        options = {"sendnn.dynamic": True} if args.compile_dynamic else None
        try:
            model.compile(backend=args.compile, **({"options": options} if options else {}))
        except Exception as e:  # torch raises InvalidBackendError and others for an unknown backend
            raise BadInput(
                f"--compile {args.compile}: {str(e).strip().splitlines()[0]}\n(hint: a torch.compile backend this torch knows, e.g. inductor)"
            ) from e

    # Hooks before the first (compiling) call, so that the compiled graph contains them.
    recorder = Recorder(model, record_root=request.mode == "generate", capture_inputs=request.capture_inputs, golden=plan.golden, fault=plan.fault)
    try:
        extra = run(model, request, loaded.device)
    finally:
        recorder.remove()
    ran_at = time.perf_counter()
    check_records(recorder.names(), request.keys, args.compile)

    tensors = capture_tensors(recorder.records, extra)
    metadata = _metadata(args, request, info, loaded.how, plan.fault)
    write_capture(args.out, tensors, metadata, recorder.names())
    b, s = len(request.input_ids), len(request.input_ids[0])
    print(
        f"layercheck_fms: captured {len(recorder.records)} module outputs of {info.path} on {args.device} {args.dtype}"
        f"{f' (compiled with {args.compile})' if args.compile else ''} ({request.mode}, batch {b} x {s} tokens) to {args.out}; "
        f"imports {imported_at - started:.2f} s, load {loaded_at - imported_at:.2f} s, run {ran_at - loaded_at:.2f} s, "
        f"total {time.perf_counter() - started:.2f} s",
        file=sys.stderr,
    )
    return 0


def _metadata(args, request, info, how: str, fault) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        fms_version = version("ibm-fms")
    except PackageNotFoundError:
        fms_version = "unknown"
    return {
        "mode": request.mode,
        "model": request.model,
        "target": request.target,
        "max_new_tokens": str(request.max_new_tokens),
        "attention_mask": request.attention_mask,
        "feed": request.feed,
        "model_path": str(Path(os.path.abspath(info.path))),
        "config_sha256": info.config_sha256,
        "producer": f"layercheck_fms {__version__}",
        "torch_version": torch.__version__,
        "fms_version": fms_version,
        "device": args.device,
        "dtype": args.dtype,
        "compile": args.compile or "none",
        "fault": "none" if fault is None else f"{fault.module}:{fault.amplitude!r}",
        "fms_loader": how,
    }


if __name__ == "__main__":
    sys.exit(main())
