"""openpi's own client against a running ``recap serve``: run with the Python of a venv holding ``openpi-client``.

openpi-client pins numpy < 2, so it lives in its own venv, never the project's (see docs/nodes.md, "Remote
inference")::

    python3 -m venv .venv-openpi-client
    .venv-openpi-client/bin/pip install openpi-client typing-extensions  # 0.1.2 omits typing-extensions
    .venv-openpi-client/bin/python test/interop/openpi_client_check.py ws://127.0.0.1:8000

It checks the server's metadata, sends observations the way openpi's examples do (nested ``images`` with CHW
images as in ALOHA, flat ``observation/images/<cam>`` HWC keys as in DROID/LIBERO), checks each reply's actions
(``[action_horizon, action_dim]`` float32) and ``server_timing``, that a bad observation raises openpi's
``RuntimeError`` with one line and that the next request is served, and (``--cross DIR``) that arrays packed by
openpi's ``msgpack_numpy`` and by the project's read back bit-exactly on the other side. The last line printed
is one JSON object; exit status 0 when every check passed. test/test_openpi_interop.py runs it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time


def samples():
    """The arrays both sides pack for the cross check (numpy only: runs under numpy 1 and 2)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 255, (3, 4, 3), dtype=np.uint8),
        "state": rng.normal(size=14).astype(np.float32),
        "f64": np.linspace(0, 1, 5),
        "big_endian": np.arange(4, dtype=">i4"),
        "half": np.ones((2, 2), np.float16),
        "empty": np.zeros((0, 14), np.float32),
        "flags": np.array([True, False]),
        "scalar": np.float32(1.5),
        "int_scalar": np.int64(-3),
        "nested": {"list": [np.arange(3, dtype=np.int16), "text", 1, None]},
    }


def same(a, b) -> bool:
    import numpy as np

    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (np.ndarray, np.generic)):
        return type(a) is type(b) and a.dtype == b.dtype and np.shape(a) == np.shape(b) and a.tobytes() == b.tobytes()
    return a == b


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server, ws://HOST:PORT")
    parser.add_argument("--cross", type=pathlib.Path, help="directory for the msgpack cross check files")
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np
    from openpi_client import msgpack_numpy
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    checks: dict[str, bool] = {}
    report: dict = {"numpy": np.__version__}
    if args.cross is not None:
        args.cross.mkdir(parents=True, exist_ok=True)
        (args.cross / "openpi.msgpack").write_bytes(msgpack_numpy.packb(samples()))
        theirs = args.cross / "recap.msgpack"
        if theirs.exists():
            checks["reads_recap_packing"] = same(samples(), msgpack_numpy.unpackb(theirs.read_bytes()))

    policy = WebsocketClientPolicy(host=args.url)
    meta = policy.get_server_metadata()
    cameras = list(meta.get("cameras") or [])
    horizon, dims = meta.get("action_horizon"), meta.get("action_dim")
    report["metadata"] = {k: meta.get(k) for k in ("checkpoint_id", "family", "cameras", "action_horizon")}
    checks["metadata"] = bool(cameras) and isinstance(horizon, int) and dims == meta.get("state_dim") == 14
    checks["metadata_joint_names"] = meta.get("joint_names") is None or len(meta["joint_names"]) == dims

    rng = np.random.default_rng(1)
    state = (rng.normal(size=dims) * 0.1).astype(np.float32)
    aloha = {
        "images": {c: rng.integers(0, 255, (3, 48, 64), dtype=np.uint8) for c in cameras},  # CHW, as openpi ALOHA
        "state": state,
        "prompt": "reach",
    }
    droid = {f"observation/images/{c}": rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for c in cameras}
    droid.update({"observation/state": state, "prompt": "reach", "recap/seed": 3})
    latencies = []
    ok = True
    for i in range(args.requests):
        obs = aloha if i % 2 == 0 else droid
        start = time.perf_counter()
        out = policy.infer(obs)
        latencies.append((time.perf_counter() - start) * 1e3)
        actions = out.get("actions")
        ok &= isinstance(actions, np.ndarray) and actions.shape == (horizon, dims) and actions.dtype == np.float32
        ok &= bool(np.all(np.isfinite(actions))) and "infer_ms" in out.get("server_timing", {})
    checks["actions"] = bool(ok)
    same_seed = [policy.infer(droid)["actions"] for _ in range(2)]
    checks["seeded_requests_repeat"] = bool(np.array_equal(same_seed[0], same_seed[1]))

    try:
        policy.infer({"state": state, "prompt": "reach"})
        checks["bad_observation_error"] = False
    except RuntimeError as exc:
        message = str(exc).split("\n", 1)[1] if "\n" in str(exc) else str(exc)
        report["bad_observation_error"] = message
        checks["bad_observation_error"] = "lacks camera" in message and "\n" not in message
    checks["served_after_error"] = policy.infer(aloha)["actions"].shape == (horizon, dims)
    report["round_trip_ms_median"] = float(np.median(latencies))
    report["checks"] = checks
    report["ok"] = all(checks.values())
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
