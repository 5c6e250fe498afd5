#!/usr/bin/env python3
"""Writes tests/fixtures/py_float/reprs.txt: Python's repr() of a fixed set of floats.

Each line is `<f64 bits as 16 hex digits> <repr(float)>`. The values are f64 bit patterns, f32
values (as `tensor.tolist()` turns them into Python floats) and f16 values, drawn by
random.Random(20261129), plus edge cases. Plain CPython, no packages. Run from the repository root:

    python3 scripts/reference/make_py_float_fixture.py
"""
import os
import random
import struct
import sys

rng = random.Random(20261129)
values = [0.0, -0.0, 1.0, 1e-6, 1e-5, 1e-4, 1e15, 1e16, 1e22, 1e23, 5e-324, 1.7976931348623157e308,
          2.2250738585072014e-308, float("inf"), float("-inf"), float("nan"), 65504.0, 6e-8]
for _ in range(1500):
    values.append(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0])
for _ in range(1500):
    values.append(struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0])
for _ in range(500):
    values.append(struct.unpack("<e", struct.pack("<H", rng.getrandbits(16)))[0])
for _ in range(500):
    # typical abs_diff / cos_sim magnitudes, rounded to f32
    values.append(struct.unpack("<f", struct.pack("<f", rng.random() * 10 ** rng.randint(-12, 3)))[0])

out = os.path.join("tests", "fixtures", "py_float", "reprs.txt")
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    f.write(f"# made by scripts/reference/make_py_float_fixture.py with Python {sys.version.split()[0]}\n")
    for v in values:
        bits = struct.unpack("<Q", struct.pack("<d", v))[0]
        f.write(f"{bits:016x} {v!r}\n")
