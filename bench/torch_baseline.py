#!/usr/bin/env python3
"""Times the PyTorch reference (tests/reference/pi0_reference.py) in bf16 under torch.compile: the
stand-in for openpi's own PyTorch model, measured in the same device call as `pirt bench`.

    python3 bench/torch_baseline.py --model DIR --inputs FILE [--mode reduce-overhead] [--iters 20]

--mode: a torch.compile mode ("reduce-overhead" captures CUDA graphs; "max-autotune" is openpi's
default and compiles for many minutes), or "eager". Prints the same last line as `pirt bench`.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import pi0_reference as R  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--mode", default="reduce-overhead")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_float32_matmul_precision("high")  # as openpi's PyTorch model sets it
    t0 = time.perf_counter()
    model = R.Pi0Reference.load(a.model, device="cuda", dtype=torch.bfloat16)
    inputs = {k: v.cuda() for k, v in R.load_inputs(a.inputs).items()}
    noise = inputs.pop("noise")
    load_s = time.perf_counter() - t0
    fn = model.sample_actions if a.mode == "eager" else torch.compile(model.sample_actions, mode=a.mode)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(a.warmup):
            fn(inputs, noise, a.steps)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        ms = []
        for _ in range(a.iters):
            t = time.perf_counter()
            fn(inputs, noise, a.steps)
            torch.cuda.synchronize()
            ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    mean = statistics.mean(ms)
    p = lambda q: ms[min(len(ms) - 1, int(round(q * (len(ms) - 1))))]  # noqa: E731
    print(f"torch {torch.__version__} {a.mode} on {torch.cuda.get_device_name()}: load {load_s:.1f} s, "
          f"warm-up/compile {compile_s:.1f} s, peak {torch.cuda.max_memory_allocated() / 1e9:.2f} GB")
    print(f"mean {mean:.3f} ms  p50 {p(0.5):.3f}  p90 {p(0.9):.3f}  p99 {p(0.99):.3f}  ({1000 / mean:.1f} Hz)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"mode": a.mode, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
                       "mean_ms": mean, "p50_ms": p(0.5), "p90_ms": p(0.9), "compile_s": compile_s}, f, indent=2)


if __name__ == "__main__":
    main()
