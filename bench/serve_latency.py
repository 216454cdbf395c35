"""Round-trip latency of `pirt serve` as a robot sees it, through openpi's own client.

Connects openpi_client's WebsocketClientPolicy to a running server, sends `--requests` observations
of the robot's shape (random uint8 camera images, a random state, a prompt) one after another, as a
control loop does, and prints the client's round-trip time (pack, send, server, receive, unpack)
beside the server's own figures from each response: `server_timing.infer_ms` (request decoded to
response packed) and `policy_timing.infer_ms` (the model call alone).

    pirt serve --model DIR --robot libero --device cuda --port 8000 --quiet &
    python3 bench/serve_latency.py --port 8000 --robot libero --requests 200 [--json FILE]

Needs numpy and openpi-client (`python3 -m pip install openpi-client`).
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np

try:
    from openpi_client import websocket_client_policy
except ImportError as e:  # pragma: no cover
    sys.exit(f"serve_latency: openpi-client is not installed ({e}); `python3 -m pip install openpi-client`")


def observation(robot, rng, prompt):
    """One request in the keys of openpi's example clients (examples/<robot>/main.py)."""
    img = lambda: rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)  # noqa: E731
    if robot == "libero":
        return {"observation/image": img(), "observation/wrist_image": img(),
                "observation/state": rng.random(8).astype(np.float32), "prompt": prompt}
    if robot == "droid":
        return {"observation/exterior_image_1_left": img(), "observation/wrist_image_left": img(),
                "observation/joint_position": rng.random(7).astype(np.float32),
                "observation/gripper_position": rng.random(1).astype(np.float32), "prompt": prompt}
    if robot == "aloha":
        chw = lambda: rng.integers(0, 256, size=(3, 224, 224), dtype=np.uint8)  # noqa: E731
        return {"images": {"cam_high": chw(), "cam_left_wrist": chw(), "cam_right_wrist": chw()},
                "state": rng.random(14).astype(np.float32), "prompt": prompt}
    raise ValueError(f"unknown robot {robot!r}")


def summary(xs):
    s = sorted(xs)
    q = lambda p: s[min(len(s) - 1, int(p * len(s)))]  # noqa: E731
    return {"mean": statistics.fmean(s), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": s[-1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--robot", default="libero", choices=["libero", "droid", "aloha"])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--prompt", default="pick up the black bowl and place it on the plate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    if a.requests < 1 or a.warmup < 0:
        sys.exit("serve_latency: --requests must be >= 1 and --warmup >= 0")

    rng = np.random.default_rng(a.seed)
    policy = websocket_client_policy.WebsocketClientPolicy(a.host, a.port)
    rt, server, model = [], [], []
    shape = None
    for i in range(a.warmup + a.requests):
        obs = observation(a.robot, rng, a.prompt)
        t0 = time.perf_counter()
        out = policy.infer(obs)
        dt = (time.perf_counter() - t0) * 1e3
        if "actions" not in out:
            sys.exit(f"serve_latency: response {i} has no actions: {sorted(out)}")
        shape = tuple(np.asarray(out["actions"]).shape)
        if i < a.warmup:
            continue
        rt.append(dt)
        server.append(float(out.get("server_timing", {}).get("infer_ms", float("nan"))))
        model.append(float(out.get("policy_timing", {}).get("infer_ms", float("nan"))))

    res = {"robot": a.robot, "requests": a.requests, "actions_shape": list(shape),
           "round_trip_ms": summary(rt), "server_ms": summary(server), "model_ms": summary(model)}
    for name in ("round_trip_ms", "server_ms", "model_ms"):
        r = res[name]
        print(f"{name:14s} mean {r['mean']:.3f}  p50 {r['p50']:.3f}  p90 {r['p90']:.3f}  p99 {r['p99']:.3f}  "
              f"max {r['max']:.3f}")
    print(f"actions {shape}, {a.requests} requests after {a.warmup} warm-ups")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
