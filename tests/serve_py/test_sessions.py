"""openpi's client (WebsocketClientPolicy + ActionChunkBroker) runs a session per robot type against
`pirt serve`; every chunk it receives is checked against openpi's transforms (numpy, pirt_testlib)
applied around `pirt infer` on the model inputs that `pirt policy-infer --dump-inputs` wrote."""

import os
import sys
import tempfile

import pirt_testlib as t
from pirt_testlib import np, msgpack_numpy, action_chunk_broker

SEED = 3
STEPS_PER_CHUNK = 5  # ActionChunkBroker's action_horizon (replan every 5 steps, as LIBERO's example)


def observation(robot, rng, step):
    """A request as openpi's examples send it; odd steps use other image sizes, layouts and dtypes."""
    def img(h, w, chw=False, flt=False):
        a = rng.integers(0, 256, size=(3, h, w) if chw else (h, w, 3), dtype=np.uint8)
        return (a / 255.0).astype(np.float32) if flt else a

    odd = step % 2 == 1
    if robot == "libero":
        return {"observation/image": img(224, 224) if not odd else img(256, 320),
                "observation/wrist_image": img(224, 224, chw=odd),
                "observation/state": rng.random(8), "prompt": "put the black_bowl on the plate\n"}
    if robot == "droid":
        return {"observation/exterior_image_1_left": img(180, 320) if odd else img(224, 224),
                "observation/wrist_image_left": img(224, 224, flt=odd),
                "observation/joint_position": rng.random(7),
                "observation/gripper_position": rng.random(1) if odd else np.float64(rng.random()),
                "prompt": "pick up the fork"}
    if robot == "aloha":
        images = {"cam_high": img(224, 224, chw=True), "cam_low": img(224, 224, chw=True),
                  "cam_left_wrist": img(240, 320, chw=True, flt=odd)}
        if not odd:
            images["cam_right_wrist"] = img(224, 224, chw=True)
        return {"images": images, "state": rng.random(14), "prompt": "fold the towel"}
    raise ValueError(robot)


def session(f, arch, robot, chunks=3):
    rng = np.random.default_rng(7)
    with t.Server(arch, robot, "--same-noise", "--seed", str(SEED), "--quiet") as srv:
        policy = srv.client()
        meta = policy.get_server_metadata()
        want_meta = {"reset_pose": [0, -1.5, 1.5, 0, 0, 0]} if robot == "aloha" else {}
        f.check(meta == want_meta, f"{robot}: metadata {meta}")
        broker = action_chunk_broker.ActionChunkBroker(policy, STEPS_PER_CHUNK)
        queried = []  # (obs, [per-step actions])
        for step in range(chunks * STEPS_PER_CHUNK):
            obs = observation(robot, rng, step // STEPS_PER_CHUNK)
            if step % STEPS_PER_CHUNK == 0:
                queried.append((obs, []))
            out = broker.infer(obs)
            queried[-1][1].append(out["actions"])
            f.check(isinstance(out["policy_timing"]["infer_ms"], float), f"{robot}: policy_timing")

    with tempfile.TemporaryDirectory() as tmp:
        for i, (obs, steps) in enumerate(queried):
            req, inputs, resp, act = (os.path.join(tmp, n) for n in ("req.msgpack", "in.safetensors", "resp.msgpack",
                                                                     "act.safetensors"))
            with open(req, "wb") as fh:
                fh.write(msgpack_numpy.packb(obs))
            common = ["--model", t.model_dir(arch), "--device", "cpu"]
            t.run("policy-infer", *common, "--robot", robot, "--tokenizer", t.TOKENIZER,
                  "--norm-stats", t.norm_stats_path(robot), "--request", req, "--out", resp,
                  "--dump-inputs", inputs, "--same-noise", "--seed", str(SEED))
            t.run("infer", *common, "--inputs", inputs, "--out", act)
            dumped = t.read_safetensors(inputs)
            model_actions = t.read_safetensors(act)["actions"][0]

            # Input side: openpi's transforms give the same model inputs.
            exp = t.expected_model_inputs(robot, arch, obs)
            for k, v in exp.items():
                if k.startswith("image"):
                    got = dumped[k][0]
                    if k.startswith("image_mask"):
                        f.check(bool(got) == v, f"{robot}/{arch} chunk {i}: {k} is {got}, want {v}")
                    else:
                        f.check(np.array_equal(got, v),
                                f"{robot}/{arch} chunk {i}: {k} differs (max {np.max(np.abs(got - v))})")
            f.check(np.allclose(dumped["state"][0], exp["state"].astype(np.float32), rtol=0, atol=1e-6),
                    f"{robot}/{arch} chunk {i}: state {dumped['state'][0][:8]} vs {exp['state'][:8]}")
            L = dumped["tokenized_prompt"].shape[1]
            toks = t.expected_tokens(arch, robot, obs["prompt"], exp["state_unpadded"], L)
            if toks is not None:
                f.check(np.array_equal(dumped["tokenized_prompt"][0], toks),
                        f"{robot}/{arch} chunk {i}: tokens {dumped['tokenized_prompt'][0][:20]} vs {toks[:20]}")
                f.check(np.array_equal(dumped["tokenized_prompt_mask"][0], toks != 0) or toks[-1] != 0,
                        f"{robot}/{arch} chunk {i}: token mask")

            # Output side: the chunk the client got is openpi's post-processing of `pirt infer`.
            want = t.expected_actions(robot, arch, model_actions, exp["state"])
            with open(resp, "rb") as fh:
                offline = msgpack_numpy.unpackb(fh.read())["actions"]
            f.check(offline.dtype == np.float64 and offline.shape == want.shape,
                    f"{robot}/{arch}: policy-infer actions {offline.dtype} {offline.shape} vs {want.shape}")
            f.check(np.allclose(offline, want, rtol=1e-9, atol=1e-9),
                    f"{robot}/{arch} chunk {i}: policy-infer vs openpi transforms, max diff "
                    f"{np.max(np.abs(offline - want))}")
            for s, a in enumerate(steps):
                f.check(np.allclose(a, want[s], rtol=1e-9, atol=1e-9),
                        f"{robot}/{arch} chunk {i} step {s}: served {a[:4]} vs reference {want[s][:4]}")
    print(f"{robot}/{arch}: {len(queried)} chunks checked", flush=True)


def main():
    f = t.Failures()
    cases = [("pi0", "libero"), ("pi05", "libero"), ("pi05", "droid"), ("pi0", "aloha")]
    if len(sys.argv) > 1:
        cases = [c for c in cases if f"{c[1]}/{c[0]}" in sys.argv[1:]]
    for arch, robot in cases:
        session(f, arch, robot)
    f.close("test_sessions")


if __name__ == "__main__":
    main()
