"""Shared helpers for the tests that run openpi's client against `pirt serve`.

Each test is a script: exit 0 on success, 1 on failure, SKIP (77) when openpi-client is missing.
The reference side re-implements openpi's policy transforms with numpy (transforms.py,
libero_policy.py, droid_policy.py, aloha_policy.py, tokenizer.py at openpi 15a9616), so a test
checks pirt's policy layer against openpi's rules, not against itself.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

SKIP = 77

try:
    import numpy as np
    from openpi_client import image_tools, msgpack_numpy, websocket_client_policy  # noqa: F401
    from openpi_client import action_chunk_broker  # noqa: F401
except ImportError as e:  # pragma: no cover
    print(f"SKIP: openpi-client is not installed ({e}); `python3 -m pip install openpi-client`")
    sys.exit(SKIP)

PIRT = os.environ.get("PIRT_BINARY", "")
DATA = os.environ.get("PIRT_TEST_DATA", os.path.join(os.path.dirname(__file__), "..", "data"))
TOKENIZER = os.path.join(DATA, "tokenizer", "tiny_paligemma.model")


def norm_stats_path(robot):
    return os.path.join(DATA, "norm_stats", robot, "norm_stats.json")


def model_dir(arch):
    d = os.path.join(DATA, f"tiny_{arch}")
    if not os.path.isfile(os.path.join(d, "model.safetensors")):
        print(f"SKIP: no tiny checkpoint at {d}")
        sys.exit(SKIP)
    return d


def check_binary():
    if not PIRT or not os.access(PIRT, os.X_OK):
        print(f"SKIP: no pirt binary (PIRT_BINARY={PIRT!r})")
        sys.exit(SKIP)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`pirt serve` in a subprocess on a free port of the loopback interface."""

    def __init__(self, arch, robot, *extra):
        check_binary()
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="pirt_serve_", suffix=".log", delete=False)
        self.args = [PIRT, "serve", "--model", model_dir(arch), "--robot", robot, "--tokenizer", TOKENIZER,
                     "--norm-stats", norm_stats_path(robot), "--device", "cpu", "--host", "127.0.0.1",
                     "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pirt serve exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                    if r.status == 200 and r.read() == b"OK\n":
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("pirt serve did not come up:\n" + self.log_text())
            time.sleep(0.1)

    def client(self):
        return websocket_client_policy.WebsocketClientPolicy("127.0.0.1", self.port)

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def log_text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the server and returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("pirt serve did not stop on a signal:\n" + self.log_text())
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        code = self.stop()
        if exc[0] is None and code != 0:
            raise RuntimeError(f"pirt serve exited with {code}:\n{self.log_text()}")


def run(*args):
    check_binary()
    p = subprocess.run([PIRT, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"pirt {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    dtypes = {"F32": np.float32, "I32": np.int32, "BOOL": np.bool_, "F64": np.float64, "I64": np.int64,
              "U8": np.uint8}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


# ---- openpi's transforms, with numpy (the reference) -------------------------------------------

def load_norm_stats(robot):
    with open(norm_stats_path(robot)) as f:
        raw = json.load(f)["norm_stats"]
    return {k: {s: (np.asarray(v[s]) if v.get(s) is not None else None) for s in ("mean", "std", "q01", "q99")}
            for k, v in raw.items()}


def normalize(x, st, quantile):
    if quantile:
        q01, q99 = st["q01"][..., : x.shape[-1]], st["q99"][..., : x.shape[-1]]
        return (x - q01) / (q99 - q01 + 1e-6) * 2.0 - 1.0
    mean, std = st["mean"][..., : x.shape[-1]], st["std"][..., : x.shape[-1]]
    return (x - mean) / (std + 1e-6)


def pad_to_dim(x, dim, value=0.0):
    if x.shape[-1] < dim:
        w = [(0, 0)] * x.ndim
        w[-1] = (0, dim - x.shape[-1])
        return np.pad(x, w, constant_values=value)
    return x


def unnormalize(x, st, quantile):
    if quantile:
        q01, q99 = st["q01"], st["q99"]
        d = q01.shape[-1]
        if d < x.shape[-1]:
            return np.concatenate([(x[..., :d] + 1.0) / 2.0 * (q99 - q01 + 1e-6) + q01, x[..., d:]], axis=-1)
        return (x + 1.0) / 2.0 * (q99 - q01 + 1e-6) + q01
    mean = pad_to_dim(st["mean"], x.shape[-1], 0.0)
    std = pad_to_dim(st["std"], x.shape[-1], 1.0)
    return x * (std + 1e-6) + mean


def parse_image(image):
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.floating):
        image = (255 * image).astype(np.uint8)
    if image.shape[0] == 3:
        image = np.transpose(image, (1, 2, 0))
    return image


FLIP = np.array([1, -1, -1, 1, 1, 1, 1, 1, -1, -1, 1, 1, 1, 1])


def gripper_to_angular(v):
    v = v * (0.05800 - 0.01844) + 0.01844
    v = np.arcsin(np.clip((0.022**2 + v**2 - 0.036**2) / (2 * 0.022 * v), -1.0, 1.0))
    return (v - 0.5476) / (1.6296 - 0.5476)


def gripper_from_angular(v):
    return (v + 0.5476 - -0.6213) / (1.4910 - -0.6213)


def robot_inputs(robot, obs):
    """Returns (images[3] HWC uint8 or None, state) as the openpi robot transforms make them."""
    if robot == "libero":
        base, wrist = parse_image(obs["observation/image"]), parse_image(obs["observation/wrist_image"])
        return [base, wrist, None], np.asarray(obs["observation/state"])
    if robot == "droid":
        g = np.asarray(obs["observation/gripper_position"])
        g = g[np.newaxis] if g.ndim == 0 else g
        state = np.concatenate([obs["observation/joint_position"], g])
        return [parse_image(obs["observation/exterior_image_1_left"]), parse_image(obs["observation/wrist_image_left"]),
                None], state
    if robot == "aloha":
        state = FLIP * np.asarray(obs["state"])
        state[[6, 13]] = gripper_to_angular(state[[6, 13]])
        ims = {k: np.transpose((255 * v).astype(np.uint8) if np.issubdtype(v.dtype, np.floating) else v, (1, 2, 0))
               for k, v in obs["images"].items()}
        return [ims["cam_high"], ims.get("cam_left_wrist"), ims.get("cam_right_wrist")], state
    raise ValueError(robot)


DELTA = {("libero", "pi0"): [True] * 6 + [False], ("aloha", "pi0"): ([True] * 6 + [False]) * 2,
         ("aloha", "pi05"): ([True] * 6 + [False]) * 2}
OUT_DIMS = {"libero": 7, "droid": 8, "aloha": 14}


def expected_model_inputs(robot, arch, obs):
    """The images, masks and padded normalized state that openpi hands to sample_actions."""
    quantile = arch == "pi05"
    stats = load_norm_stats(robot)
    images, state = robot_inputs(robot, obs)
    state = normalize(state, stats["state"], quantile)
    out = {}
    for name, im in zip(("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"), images):
        mask = im is not None
        im = image_tools.resize_with_pad(im, 224, 224) if mask else np.zeros((224, 224, 3), np.uint8)
        out[f"image.{name}"] = im.astype(np.float32) / 255.0 * 2.0 - 1.0
        out[f"image_mask.{name}"] = mask
    out["state_unpadded"] = state
    out["state"] = pad_to_dim(state, 32)
    return out


def expected_actions(robot, arch, model_actions, state_padded):
    """Unnormalize -> AbsoluteActions -> robot outputs, from the model's [H, 32] actions."""
    quantile = arch == "pi05"
    stats = load_norm_stats(robot)
    actions = unnormalize(np.asarray(model_actions, np.float32), stats["actions"], quantile)
    state = unnormalize(state_padded, stats["state"], quantile)
    mask = DELTA.get((robot, arch))
    if mask is not None:
        m = np.asarray(mask)
        actions[..., : len(m)] += np.expand_dims(np.where(m, state[..., : len(m)], 0), axis=-2)
    actions = actions[:, : OUT_DIMS[robot]]
    if robot == "aloha":
        actions = FLIP * actions
        actions[:, [6, 13]] = gripper_from_angular(actions[:, [6, 13]])
    return actions


def expected_tokens(arch, robot, prompt, state_unpadded, max_len):
    """tokenizer.py's PaligemmaTokenizer, when the sentencepiece module is installed (else None)."""
    try:
        import sentencepiece
    except ImportError:
        return None
    sp = sentencepiece.SentencePieceProcessor(model_file=TOKENIZER)
    cleaned = prompt.strip().replace("_", " ").replace("\n", " ")
    if arch == "pi05" and robot != "libero":
        s = np.digitize(state_unpadded, bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1
        tokens = sp.encode(f"Task: {cleaned}, State: {' '.join(map(str, s))};\nAction: ", add_bos=True)
    else:
        tokens = sp.encode(cleaned, add_bos=True) + sp.encode("\n")
    tokens = tokens[:max_len]
    return np.asarray(tokens + [0] * (max_len - len(tokens)))


class Failures:
    def __init__(self):
        self.n = 0
        self.checks = 0

    def check(self, cond, what):
        self.checks += 1
        if not cond:
            self.n += 1
            print(f"FAIL: {what}", flush=True)

    def close(self, name):
        if self.n:
            print(f"{name}: {self.n} of {self.checks} checks failed")
            sys.exit(1)
        print(f"{name}: ok ({self.checks} checks)")
        sys.exit(0)
