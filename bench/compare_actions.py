#!/usr/bin/env python3
"""Compares two `actions` safetensors files: relative L2 error, max abs error, max |reference|.

    python3 bench/compare_actions.py REFERENCE.safetensors OTHER.safetensors [--max-rel-l2 X]

Exits 1 when --max-rel-l2 is given and exceeded, or when OTHER holds a non-finite value.
"""
import argparse
import json
import struct
import sys

import numpy as np


def read_actions(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    e = header["actions"]
    assert e["dtype"] == "F32", f"{path}: actions must be F32"
    a, b = e["data_offsets"]
    return np.frombuffer(data[a:b], dtype=np.float32).reshape(e["shape"]).astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reference")
    ap.add_argument("other")
    ap.add_argument("--max-rel-l2", type=float)
    a = ap.parse_args()
    ref, got = read_actions(a.reference), read_actions(a.other)
    if ref.shape != got.shape:
        sys.exit(f"shapes differ: {ref.shape} vs {got.shape}")
    finite = bool(np.isfinite(got).all())
    rel = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
    print(json.dumps({"rel_l2": rel, "max_abs": float(np.abs(got - ref).max()), "max_abs_ref": float(np.abs(ref).max()),
                      "finite": finite, "shape": list(ref.shape)}))
    if not finite or (a.max_rel_l2 is not None and rel > a.max_rel_l2):
        sys.exit(1)


if __name__ == "__main__":
    main()
