"""Benchmark: the sim station with 3 cameras at 224x224 into a subscriber in another process.

Runs the station node as a separate process twice: (1) as fast as possible
(real_time_factor 0) -> the achievable real-time factor with every camera
published and received; (2) paced at real time -> camera rate and
publish->receive latency. Baseline, same run: the bare simulator (physics +
rendering of the same cameras, no ROS) in this process.

The three measurements are repeated in turn ``--repeats`` times (default 3;
2 quick); each figure is {"median": x, "worst": y} over the repeats (worst:
the lowest rate, the highest latency or drop count), the baseline likewise.

Last line: {"name": "station", "real_time_factor": {"median", "worst"},
"camera_hz": {...}, "latency_ms_p50": {...}, "latency_ms_p99": {...},
"drops": {...}, "baseline": {"bare_sim_real_time_factor": {...}}, "met": {...}}
The station draws its cameras on its default ``render_threads`` (one per core, at most one per camera); the
baseline draws them on one thread. Drops are counted per step: a step of the window whose joint state arrived
and whose image of a camera did not (each step's messages share one stamp).
Target on 2 cores, judged on the worst repeat: real_time_factor >= 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from recap_ros.localhost import apply_ros_environment

apply_ros_environment()
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402

from recap_ros.conversions import diagnostic_values, stamp_to_seconds  # noqa: E402
from recap_ros.testing.probe import Probe  # noqa: E402
from recap_ros.testing.procs import NodeProcess, test_environment  # noqa: E402

from _spread import HIGH, LOW, add_repeats_argument, met, repeat_count, spread, summarise  # noqa: E402

CAMERAS = ("base", "left_wrist", "right_wrist")
DT = 0.02
RTF_TARGET = 3.0


def bare_sim_steps_per_s(seconds: float) -> float:
    from recap_sim.sim import AlohaSim

    sim = AlohaSim("transfer_cube", width=224, height=224)
    sim.reset(0)
    action = sim.joint_positions()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sim.step(action)
        sim.render()
        n += 1
    return n / (time.perf_counter() - t0)


def measure(probe: Probe, rtf: float, seconds: float, log_dir: str) -> dict:
    env = test_environment(int(os.environ["ROS_DOMAIN_ID"]))
    with NodeProcess("recap_sim.station_node", params={"real_time_factor": rtf}, log_dir=log_dir, env=env) as proc:
        if not proc.wait_for_output("sim station up", timeout=90):
            raise RuntimeError(f"station did not start:\n{proc.output()}")
        cams = {c: probe.subscribe(Image, f"camera/{c}/image_raw") for c in CAMERAS}
        joints = probe.subscribe(JointState, "joint_states")
        status = probe.subscribe(DiagnosticStatus, "sim/status")
        if not joints.wait_for(10, timeout=30):
            raise RuntimeError("no joint_states")
        time.sleep(1.0)
        for c in [*cams.values(), joints, status]:
            c.clear()
        step0 = None
        while step0 is None:
            m = status.last()
            step0 = int(diagnostic_values(m)["step"]) if m else None
            time.sleep(0.01)
        t0, t0_wall = time.monotonic(), time.time()
        time.sleep(seconds)
        elapsed, t1_wall = time.monotonic() - t0, time.time()
        step1 = int(diagnostic_values(status.last())["step"])
        time.sleep(0.3)  # let in-flight messages arrive
        published = step1 - step0
        # Each step's images and joint state carry the same stamp: a step of the window whose joint state
        # arrived and whose image did not is a drop; rates count only messages stamped within the window.
        steps = {stamp_to_seconds(m.header.stamp) for m in joints.snapshot()[0]}
        steps = {t for t in steps if t0_wall <= t <= t1_wall}
        cam_stamps = {c: {stamp_to_seconds(m.header.stamp) for m in col.snapshot()[0]} for c, col in cams.items()}
        received = {c: len({t for t in cam_stamps[c] if t0_wall <= t <= t1_wall}) for c in CAMERAS}
        latencies = []
        for col in cams.values():
            msgs, stamps = col.snapshot()
            latencies += [(r - stamp_to_seconds(m.header.stamp)) * 1e3 for m, r in zip(msgs, stamps)]
        # probe stamps are monotonic; header stamps are wall clock: convert the offset once.
        offset = (time.time() - time.monotonic()) * 1e3
        latencies = np.asarray(latencies) + offset
    return {
        "steps_per_s": published / elapsed,
        "camera_hz": float(np.mean([received[c] for c in CAMERAS])) / elapsed,
        "drops": int(sum(len(steps - cam_stamps[c]) for c in CAMERAS)),
        "published_steps": published,
        "latency_ms_p50": float(np.percentile(latencies, 50)),
        "latency_ms_p99": float(np.percentile(latencies, 99)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows (smoke check)")
    add_repeats_argument(parser, "the baseline and both station runs")
    args = parser.parse_args()
    repeats = repeat_count(args)
    seconds = 3.0 if args.quick else 15.0
    log_dir = "/tmp/recap_bench_station"
    domain = int(os.environ["ROS_DOMAIN_ID"])
    runs, baseline = [], []
    for repeat in range(repeats):
        baseline.append(bare_sim_steps_per_s(1.5 if args.quick else 8.0) * DT)
        with Probe(f"bench_station_{repeat}", domain_id=domain) as probe:
            fast = measure(probe, 0.0, seconds, log_dir)
        with Probe(f"bench_station_rt_{repeat}", domain_id=domain) as probe:
            paced = measure(probe, 1.0, seconds, log_dir)
        runs.append(
            {
                "real_time_factor": fast["steps_per_s"] * DT,
                "camera_hz": paced["camera_hz"],
                "latency_ms_p50": paced["latency_ms_p50"],
                "latency_ms_p99": paced["latency_ms_p99"],
                "drops": fast["drops"] + paced["drops"],
            }
        )
        print(f"repeat {repeat + 1}/{repeats}: {runs[-1]}, bare sim rtf {baseline[-1]:.3f}", file=sys.stderr)
    figures = summarise(
        runs,
        {"real_time_factor": LOW, "camera_hz": LOW, "latency_ms_p50": HIGH, "latency_ms_p99": HIGH, "drops": HIGH},
    )
    result = {
        "name": "station",
        **figures,
        "repeats": repeats,
        "seconds": seconds,
        "cameras": len(CAMERAS),
        "image": "224x224 rgb8",
        "baseline": {
            "bare_sim_real_time_factor": spread(baseline, LOW),
            "what": "AlohaSim step + render of the same cameras, no ROS, in-process",
        },
        "target": {"real_time_factor": f">= {RTF_TARGET}"},
        "met": {"real_time_factor": met(figures["real_time_factor"], RTF_TARGET, LOW)},
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
