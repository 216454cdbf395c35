"""8 concurrent openpi clients x 50 requests: no error, no lost reply, each client gets the answer
to its own request. Then a soak: 2000 requests (PIRT_SOAK_REQUESTS) with flat memory."""

import os
import sys
import threading
import time

import pirt_testlib as t
from pirt_testlib import np


def obs_for(i):
    rng = np.random.default_rng(100 + i)
    return {"observation/image": rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8),
            "observation/state": rng.random(8), "prompt": f"task number {i}"}


def hammer(srv, clients, requests, results):
    def worker(c):
        try:
            policy = srv.client()
            obs = obs_for(c)
            for _ in range(requests):
                results[c].append(policy.infer(obs)["actions"])
        except Exception as e:  # noqa: BLE001
            results[c].append(e)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def concurrency(f):
    clients, requests = 8, 50
    with t.Server("pi0", "libero", "--steps", "1", "--same-noise", "--quiet") as srv:
        # Each client's answer alone, for reference (same noise: the answer depends on the request only).
        ref = [srv.client().infer(obs_for(c))["actions"] for c in range(clients)]
        results = [[] for _ in range(clients)]
        t0 = time.time()
        hammer(srv, clients, requests, results)
        dt = time.time() - t0
        for c in range(clients):
            errs = [r for r in results[c] if isinstance(r, Exception)]
            f.check(not errs, f"client {c}: {errs[:1]}")
            f.check(len(results[c]) == requests, f"client {c}: {len(results[c])} replies of {requests}")
            bad = [i for i, a in enumerate(results[c]) if not isinstance(a, Exception) and
                   not np.allclose(a, ref[c], rtol=1e-6, atol=1e-6)]
            f.check(not bad, f"client {c}: replies {bad[:5]} are not its own answer")
        print(f"concurrency: {clients} x {requests} requests in {dt:.1f} s", flush=True)


def soak(f):
    total = int(os.environ.get("PIRT_SOAK_REQUESTS", "2000"))
    clients = 4
    per = total // clients
    with t.Server("pi0", "libero", "--steps", "1", "--quiet") as srv:
        warm = [[] for _ in range(clients)]
        hammer(srv, clients, 25, warm)  # allocator and plans reach their steady state
        rss0 = srv.rss_kb()
        results = [[] for _ in range(clients)]
        t0 = time.time()
        hammer(srv, clients, per, results)
        rss1 = srv.rss_kb()
        n = sum(1 for r in results for a in r if not isinstance(a, Exception))
        f.check(n == clients * per, f"soak: {n} good replies of {clients * per}")
        # Flat memory: growth under 10% of the warm RSS (plus 8 MiB of slack for the allocator).
        limit = rss0 * 0.10 + 8192
        f.check(rss1 - rss0 < limit, f"soak: RSS grew from {rss0} KiB to {rss1} KiB (limit +{limit:.0f})")
        print(f"soak: {n} requests in {time.time() - t0:.0f} s, RSS {rss0} -> {rss1} KiB", flush=True)


def main():
    f = t.Failures()
    which = sys.argv[1:] or ["concurrency", "soak"]
    if "concurrency" in which:
        concurrency(f)
    if "soak" in which:
        soak(f)
    f.close("test_load " + " ".join(which))


if __name__ == "__main__":
    main()
