#!/usr/bin/env python3
"""Makes tests/fixtures/logits/logits-metrics.safetensors: fixed logits and the per-token metrics
that aiu-fms-testing-utils computes from them, for tests/logits_metrics.rs.

For each row (token) of a float32 reference and a float16 target ([16, 100]: small and large
noise, a flipped argmax, a flat row, a peaked row, negative logits), the REAL
`aiu_fms_testing_utils.testing.validation.top_k_loss_calculator(20, loss)` picks the reference's
top 20 logits and the target's at the same indices, with `loss` the formulas of
tests/models/test_decoders.py (`_metric_calculator`) and scripts/generate_metrics.py:

    ce        = torch.nn.CrossEntropyLoss()(r, t.softmax(dim=1).to(torch.float32))
    diff_mean = torch.mean(torch.abs(r.softmax(dim=1) - t.softmax(dim=1)))

and, through the same calculator, the KL divergence of PyTorch's own `kl_div`:

    kl        = torch.nn.functional.kl_div(r.log_softmax(1), t.log_softmax(1), reduction="sum", log_target=True)

(that is sum softmax(t) * (log_softmax(t) - log_softmax(r))); top1 compares torch.argmax of both
whole rows. Metrics are float32, as the Python tools compute them.

The package is aiu-fms-testing-utils 0.9.0 from PyPI, unzipped (see README.md):

    pip download --no-deps aiu-fms-testing-utils==0.9.0 -d /tmp/aiu-pypi
    mkdir -p /tmp/aiu-whl && (cd /tmp/aiu-whl && unzip -q /tmp/aiu-pypi/*.whl)
    $(scripts/setup-python) scripts/reference/make_logits_fixture.py --aiu-package /tmp/aiu-whl

Run from the repository root.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture_io import save_sorted  # noqa: E402

OUT = Path("tests/fixtures/logits/logits-metrics.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--aiu-package", required=True, help="folder holding aiu_fms_testing_utils/")
    args = parser.parse_args()
    sys.path.insert(0, args.aiu_package)
    from aiu_fms_testing_utils.testing.validation import top_k_loss_calculator

    def ce_loss(r, t):
        return torch.nn.CrossEntropyLoss()(r, t.softmax(dim=1).to(dtype=torch.float32))

    def diff_loss(r, t):
        return torch.mean(torch.abs(r.softmax(dim=1).to(dtype=torch.float32) - t.softmax(dim=1).to(dtype=torch.float32)))

    def kl_loss(r, t):
        return torch.nn.functional.kl_div(r.log_softmax(dim=1), t.log_softmax(dim=1), reduction="sum", log_target=True)

    g = torch.Generator().manual_seed(20261203)
    n, v = 16, 100
    reference = torch.randn(n, v, generator=g) * 3.0
    noise = torch.randn(n, v, generator=g)
    scale = torch.tensor([0.0, 1e-3, 1e-2, 0.05, 0.1, 0.3, 1.0, 3.0] * 2).unsqueeze(1)
    target = reference + noise * scale
    reference[8] = torch.zeros(v)  # a flat row: every logit equal
    target[8] = torch.randn(v, generator=g) * 1e-3
    reference[9] = reference[9] * 10.0  # a peaked row
    target[9] = reference[9] + noise[9] * 0.5
    reference[10] = reference[10] - 50.0  # negative logits
    target[10] = reference[10] + noise[10] * 0.01
    top = int(reference[11].argmax())  # a flipped argmax: the target prefers the second
    second = int(reference[11].topk(2).indices[1])
    target[11] = reference[11].clone()
    target[11, second] = reference[11, top] + 0.5
    target = target.to(torch.float16)

    ce, diff, kl, top1 = [], [], [], []
    calc = {name: top_k_loss_calculator(20, f) for name, f in [("ce", ce_loss), ("diff", diff_loss), ("kl", kl_loss)]}
    for i in range(n):
        r, t = reference[i : i + 1], target[i : i + 1]
        ce.append(float(calc["ce"](r, t)))
        diff.append(float(calc["diff"](r, t)))
        kl.append(float(calc["kl"](r, t)))
        top1.append(int(r.argmax()) == int(t.float().argmax()))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_sorted(
        {
            "reference": reference.contiguous(),
            "target": target.contiguous(),
            "ce": torch.tensor(ce, dtype=torch.float32),
            "diff_mean": torch.tensor(diff, dtype=torch.float32),
            "kl": torch.tensor(kl, dtype=torch.float32),
            "top1": torch.tensor(top1, dtype=torch.int64),
        },
        OUT,
        {"made_by": "scripts/reference/make_logits_fixture.py", "aiu_fms_testing_utils": "0.9.0", "torch": torch.__version__, "top_k": "20"},
    )
    print(OUT, "top1:", top1, "ce:", [round(x, 4) for x in ce], "kl:", [f"{x:.2e}" for x in kl])


if __name__ == "__main__":
    main()
