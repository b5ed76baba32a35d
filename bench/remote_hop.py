"""Benchmark: the latency the network hop to a policy server adds (remote inference, docs/nodes.md).

The same untrained checkpoint (latency does not depend on the weights) is sampled in this process through
``PolicyRunner.infer`` and through ``recap serve`` on localhost with :class:`RemotePolicyRunner` (openpi's
websocket protocol, msgpack-encoded numpy), the calls interleaved so that load from other processes hits both
alike; same observation (3 cameras at the station's 224x224, 14 joints) and seed, so the chunks must agree.

* ``in_process_ms``: ``runner.infer`` here (the baseline, same run)
* ``remote_ms``: the round trip through the server (pack, send, the server's inference, reply, unpack)
* ``hop_ms``: the round trip minus the server's own inference time, per request (what the hop adds)
* ``added_ms_p50``: ``hop_ms`` p50, the latency the hop adds; ``remote_minus_in_process_ms_p50`` compares the two
  processes' medians, which on a loaded machine also measures how the scheduler treats them (a server that sleeps
  between requests gets the cores first), so it can even be negative

Both sides run with the same torch threads on one machine, in turn. The measurement (``--requests`` interleaved
pairs of calls) is repeated ``--repeats`` times (default 3; 2 quick) against the same server; each percentile is
reported as the median and the worst (highest) of the repeats. Last line:
{"name": "remote_hop", "in_process_ms": {"p50": {"median", "worst"}, "p99": {...}}, "remote_ms": {...},
"hop_ms": {...}, "added_ms_p50": {"median", "worst"}, ...}
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
import torch

from recap_core.models import PolicyRunner, get_config
from recap_core.models.untrained import save_untrained_checkpoint
from recap_core.serving import msgpack_numpy
from recap_core.serving.client import RemotePolicyRunner
from recap_core.serving.testing import ServeProcess

from _spread import HIGH, add_repeats_argument, repeat_count, spread

CAMERA_PX = 224
PAUSE_S = 0.02
TASK = "transfer the cube"


def percentiles(values: list[float]) -> dict:
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


def spread_of(runs: list[dict]) -> dict:
    """Median and worst of each percentile over the repeats."""
    return {p: spread([r[p] for r in runs], HIGH) for p in ("p50", "p99")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke check: tiny config, few requests")
    parser.add_argument("--config", default=None, choices=("tiny", "small"), help="model config (default small)")
    parser.add_argument("--requests", type=int, default=None, help="timed requests per repeat (default 200; 10 quick)")
    add_repeats_argument(parser)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    config = args.config or ("tiny" if args.quick else "small")
    requests = args.requests or (10 if args.quick else 200)
    repeats = repeat_count(args)
    warmup = 2 if args.quick else 10
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="recap_remote_hop_") as tmp:
        root = pathlib.Path(tmp)
        save_untrained_checkpoint(root / "policy", get_config(config), tasks=[TASK])
        local = PolicyRunner.from_checkpoint(root / "policy")
        rng = np.random.default_rng(0)
        obs = {
            "images": {c: rng.integers(0, 255, (CAMERA_PX, CAMERA_PX, 3), dtype=np.uint8) for c in local.cameras},
            "state": np.zeros(14, np.float32),
            "task": TASK,
        }
        with ServeProcess(root / "policy", args=("--threads", str(args.threads)), log_dir=root / "logs") as server:
            remote = RemotePolicyRunner(server.url, timeout_s=60)
            try:
                payload = len(msgpack_numpy.packb(remote._request(obs, seed=0)))
                diff = 0.0
                runs: dict[str, list[dict]] = {"in_process": [], "remote": [], "hop": [], "difference": []}
                for repeat in range(repeats):
                    times: dict[str, list[float]] = {"in_process": [], "remote": [], "hop": []}
                    for i in range((warmup if repeat == 0 else 0) + requests):
                        time.sleep(PAUSE_S)  # as a node's inference thread waits for its next plan: both wake alike
                        start = time.perf_counter()
                        want = local.infer(obs, seed=i)
                        local_ms = (time.perf_counter() - start) * 1e3
                        start = time.perf_counter()
                        got = remote.infer(obs, seed=i)
                        remote_ms = (time.perf_counter() - start) * 1e3
                        time.sleep(PAUSE_S)
                        diff = max(diff, float(np.abs(got["actions"] - want["actions"]).max()))
                        if repeat > 0 or i >= warmup:
                            times["in_process"].append(local_ms)
                            times["remote"].append(remote_ms)
                            times["hop"].append(remote_ms - got["server_ms"])
                    for key, values in times.items():
                        runs[key].append(percentiles(values))
                    runs["difference"].append(float(np.median(times["remote"]) - np.median(times["in_process"])))
                    print(f"repeat {repeat + 1}/{repeats}: {[runs[k][-1] for k in times]}", file=sys.stderr)
            finally:
                remote.close()
    hop = spread_of(runs["hop"])
    result = {
        "name": "remote_hop",
        "config": config,
        "camera_px": CAMERA_PX,
        "threads": args.threads,
        "repeats": repeats,
        "requests": requests,
        "request_bytes": payload,
        "in_process_ms": spread_of(runs["in_process"]),
        "remote_ms": spread_of(runs["remote"]),
        "hop_ms": hop,
        "added_ms_p50": hop["p50"],
        "remote_minus_in_process_ms_p50": spread(runs["difference"], HIGH),
        "max_abs_action_diff": diff,
    }
    print(json.dumps(result))
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
