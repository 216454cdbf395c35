"""Malformed requests get openpi's error behaviour (a text frame with the error, then close 1011)
while the server goes on serving everyone else; GET /healthz; SIGINT/SIGTERM stop it cleanly."""

import signal
import urllib.error
import urllib.request

import pirt_testlib as t
from pirt_testlib import np, msgpack_numpy
import websockets.exceptions
import websockets.sync.client


def good_obs(rng):
    return {"observation/image": rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8),
            "observation/state": rng.random(8), "prompt": "do something"}


def expect_error(f, port, payload, needle):
    """Sends one frame on a raw connection; the answer must be text, then close code 1011."""
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None) as ws:
        meta = msgpack_numpy.unpackb(ws.recv())
        f.check(meta == {}, f"metadata {meta}")
        ws.send(payload)
        reply = ws.recv(timeout=30)
        f.check(isinstance(reply, str) and needle in reply, f"{needle!r}: reply {reply!r:.200}")
        try:
            ws.recv(timeout=10)
            f.check(False, f"{needle!r}: connection not closed")
        except websockets.exceptions.ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
            f.check(code == 1011, f"{needle!r}: close code {code}")


def main():
    f = t.Failures()
    rng = np.random.default_rng(0)
    srv = t.Server("pi0", "libero", "--steps", "1")
    try:
        bystander = srv.client()
        f.check(bystander.infer(good_obs(rng))["actions"].shape == (50, 7), "bystander's first request")

        expect_error(f, srv.port, b"\xc1 this is not msgpack", "not msgpack")
        expect_error(f, srv.port, msgpack_numpy.packb([1, 2, 3]), "expected a dict")
        obs = good_obs(rng)
        del obs["observation/state"]
        expect_error(f, srv.port, msgpack_numpy.packb(obs), "observation/state")
        obs = good_obs(rng)
        obs["observation/state"] = rng.random(5)
        expect_error(f, srv.port, msgpack_numpy.packb(obs), "expected shape (8,)")
        obs = good_obs(rng)
        obs["observation/state"][3] = np.nan
        expect_error(f, srv.port, msgpack_numpy.packb(obs), "NaN")
        obs = good_obs(rng)
        obs["observation/image"] = obs["observation/image"].astype(np.int16)
        expect_error(f, srv.port, msgpack_numpy.packb(obs), "dtype")
        obs = good_obs(rng)
        obs["observation/wrist_image"] = obs["observation/wrist_image"][:, :, :2]
        expect_error(f, srv.port, msgpack_numpy.packb(obs), "3 channels")
        obs = good_obs(rng)
        del obs["prompt"]
        expect_error(f, srv.port, msgpack_numpy.packb(obs), "Prompt is required")

        # openpi's own client raises on the text reply.
        client = srv.client()
        try:
            client.infer({"prompt": "x"})
            f.check(False, "WebsocketClientPolicy did not raise")
        except RuntimeError as e:
            f.check("Error in inference server" in str(e), f"client error: {e}")

        f.check(bystander.infer(good_obs(rng))["actions"].shape == (50, 7), "bystander after the errors")
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz") as r:
            f.check(r.status == 200 and r.read() == b"OK\n", "healthz")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/")
            f.check(False, "plain GET / was answered 200")
        except urllib.error.HTTPError as e:
            f.check(e.code == 426, f"plain GET /: {e.code}")
        f.check("request 1" in srv.log_text() and "failed" in srv.log_text(), "log lines per request")
        code = srv.stop(signal.SIGINT)  # with a client still connected
        f.check(code == 0, f"SIGINT exit code {code}")
    finally:
        srv.stop()

    srv = t.Server("pi0", "libero", "--steps", "1")
    srv.client().infer(good_obs(rng))
    code = srv.stop(signal.SIGTERM)
    f.check(code == 0, f"SIGTERM exit code {code}")
    f.check("stopped after 1 requests" in srv.log_text(), "shutdown log: " + srv.log_text()[-200:])
    f.close("test_errors")


if __name__ == "__main__":
    main()
