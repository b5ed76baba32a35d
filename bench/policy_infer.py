"""Benchmark: policy chunk latency (10 flow steps, 3 cameras, batch 1, 2 threads), with and without CFG.

Untrained checkpoints of the ``tiny`` and ``small`` configs (latency does not
depend on the weights) are sampled end to end through ``PolicyRunner.infer``:
3 camera images at the station's 224x224 resized to the model size, state
normalisation, tokenisation, the backbone prefix pass (cached K/V), 10 Euler
steps of the action expert, un-normalisation.

* ``chunk_ms_p50``: beta = 1 (conditional prompt only)
* ``cfg_chunk_ms_p50``: beta = 2, conditional + unconditional prompts as one batch of 2
* ``rtc_chunk_ms_p50`` and ``rtc_ratio``: a chunk guided by real-time chunking (``infer(guide=...)``: the
  previous chunk as prefix, inference delay 5 ticks, execution horizon 25), beta = 1, against the plain chunk
* baseline (same run): CFG as two sequential passes (``batch_guidance = False``)

Each measurement (``--iters`` calls of every variant, interleaved) is repeated ``--repeats`` times (default 3;
2 quick); every figure is the median and the worst (highest) of the repeats' p50s, the baseline likewise.
Targets on 2 cores, judged on the worst repeat: small chunk <= 60 ms; batched CFG <= 1.8x the chunk.
Last line: {"name": "policy_infer", "tiny": {"chunk_ms_p50": {"median", "worst"}, ...}, "small": {...},
"baseline": {"small_cfg_sequential_ms_p50": {"median", "worst"}, ...}, "met": {...}, ...}
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

from recap_core.models import PolicyRunner, ValueRunner, get_config
from recap_core.models.untrained import save_untrained_checkpoint

from _spread import HIGH, add_repeats_argument, met, repeat_count, summarise

CAMERA_PX = 224
TASK = "transfer the cube"
SMALL_CHUNK_TARGET_MS = 60.0
CFG_RATIO_TARGET = 1.8


def timed_interleaved(calls: dict, iters: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each variant, taken in turn each round so that load from other
    processes hits every variant alike (their ratios stay fair on a shared machine)."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(iters):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def measure(name: str, root: pathlib.Path, repeats: int, iters: int, warmup: int) -> tuple[dict, dict]:
    save_untrained_checkpoint(root / f"{name}_policy", get_config(name), tasks=[TASK])
    save_untrained_checkpoint(root / f"{name}_value", get_config(name, "value"), tasks=[TASK])
    policy = PolicyRunner.from_checkpoint(root / f"{name}_policy")
    value = ValueRunner.from_checkpoint(root / f"{name}_value")
    rng = np.random.default_rng(0)
    obs = {
        "images": {c: rng.integers(0, 255, (CAMERA_PX, CAMERA_PX, 3), dtype=np.uint8) for c in policy.cameras},
        "state": rng.normal(size=14).astype(np.float32),
        "task": TASK,
    }

    def sequential_cfg():
        policy.batch_guidance = False
        try:
            policy.infer(obs, beta=2.0)
        finally:
            policy.batch_guidance = True

    prefix = np.asarray(policy.infer(obs, beta=1.0)["actions"], dtype=np.float32)
    guide = {"prefix_actions": prefix, "inference_delay": 5, "execution_horizon": 25}
    calls = {
        "chunk": lambda: policy.infer(obs, beta=1.0),
        "rtc": lambda: policy.infer(obs, beta=1.0, guide=guide),
        "cfg": lambda: policy.infer(obs, beta=2.0),
        "sequential": sequential_cfg,
        "value": lambda: value.infer(obs),
    }
    runs = []
    for repeat in range(repeats):
        # the calls of every variant, measurement and baseline, interleaved within each repeat
        times = timed_interleaved(calls, iters, warmup if repeat == 0 else 0)
        p50 = {variant: float(np.percentile(values, 50)) for variant, values in times.items()}
        runs.append(
            {
                "chunk_ms_p50": p50["chunk"],
                "chunk_ms_p90": float(np.percentile(times["chunk"], 90)),
                "cfg_chunk_ms_p50": p50["cfg"],
                "cfg_ratio": p50["cfg"] / p50["chunk"],
                "rtc_chunk_ms_p50": p50["rtc"],
                "rtc_ratio": p50["rtc"] / p50["chunk"],
                "value_ms_p50": p50["value"],
                "sequential_ms_p50": p50["sequential"],
                "sequential_ratio": p50["sequential"] / p50["chunk"],
            }
        )
        print(f"{name} repeat {repeat + 1}/{repeats}: {runs[-1]}", file=sys.stderr)
    figures = {
        "params_m": round(sum(p.numel() for p in policy.model.parameters()) / 1e6, 3),
        "model_image_px": policy.config.backbone.image_size,
        **summarise(
            runs,
            dict.fromkeys(
                ("chunk_ms_p50", "chunk_ms_p90", "cfg_chunk_ms_p50", "rtc_chunk_ms_p50", "value_ms_p50"), HIGH
            ),
            2,
        ),
        **summarise(runs, {"cfg_ratio": HIGH, "rtc_ratio": HIGH}, 3),
    }
    spread = summarise(runs, {"sequential_ms_p50": HIGH}, 2) | summarise(runs, {"sequential_ratio": HIGH}, 3)
    baseline = {
        f"{name}_cfg_sequential_ms_p50": spread["sequential_ms_p50"],
        f"{name}_cfg_sequential_ratio": spread["sequential_ratio"],
    }
    return figures, baseline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=None, help="timed calls of each variant per repeat")
    add_repeats_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = repeat_count(args)
    iters, warmup = (5, 2) if args.quick else (40, 5)
    iters = args.iters or iters
    result = {
        "name": "policy_infer",
        "threads": args.threads,
        "camera_px": CAMERA_PX,
        "flow_steps": 10,
        "cameras": 3,
        "batch": 1,
        "repeats": repeats,
        "iters": iters,
        "baseline": {},
    }
    # no_grad, as PolicyRunner.infer itself: real-time chunking needs autograd, which inference_mode forbids
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for name in ("tiny", "small"):
            figures, baseline = measure(name, pathlib.Path(tmp), repeats, iters, warmup)
            result[name] = figures
            result["baseline"].update(baseline)
            print(f"{name}: {figures}", file=sys.stderr)
    result["targets"] = {"small_chunk_ms_p50": SMALL_CHUNK_TARGET_MS, "cfg_ratio": CFG_RATIO_TARGET}
    result["met"] = {  # on the worst repeat
        "small_chunk": met(result["small"]["chunk_ms_p50"], SMALL_CHUNK_TARGET_MS, HIGH),
        "small_cfg_ratio": met(result["small"]["cfg_ratio"], CFG_RATIO_TARGET, HIGH),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
