"""Benchmark: the policy node as a process, fed 50 Hz observations (3 cameras + joints) by another process.

The node runs as a real station runs it, ``inference_process: true`` (the model in a child ``recap serve`` on
loopback, so the control loop never waits for the model's interpreter lock); the same node with the model on an
in-process thread (``inference_process: false``) is measured in the same run as the baseline. The observations
come from a feeder process (``--feeder``), as a station's cameras do; this process only receives.

Figures:
The feeder and this process's receiving threads run SCHED_FIFO 40 where allowed (a station's drivers and
controller manager), the node's control thread SCHED_FIFO 50 (``control_priority``, as station_real.yaml sets it).

- command_hz, command_jitter_ms_p99 (|interval - 20 ms| of policy/joint_command, by arrival time at this
  process's DDS reader, rmw's ``received_timestamp``: what a driver subscribing to it would see; this process's
  receiving threads run SCHED_FIFO 40 where allowed, as a robot's controller manager does, below the node's
  control thread at 50: ``receiver_scheduling`` says what they got);
  send_jitter_ms_p99 the same by the commands' header stamps (the node's own clock: what the node itself adds);
  callback_jitter_ms_p99 by the time this process's Python callback ran (adds this process's executor delay);
- ros_overhead_ms_p99: per chunk, observation -> chunk latency (chunk receive time minus the stamp of the
  observation it was planned from) minus the node's inference time of that very chunk (``latency_ms`` in
  policy/status: with an inference process, the round trip to it); inference_hop_ms_p50 what that round trip
  adds to the model's own time (serialising, loopback); the baseline's bare model latency is measured in this
  run by calling the same checkpoint's PolicyRunner on the same observation with the same threads;
- boundary_jerk_ratio: the jerk a chunk switch adds -- mean jerk of the commands
  within 3 ticks of a boundary minus the mean jerk away from boundaries (the
  chunks' own roughness) -- with the crossfade (blend_steps 8) / with naive
  switching (blend_steps 0), two runs of the same checkpoint; raw boundary
  jerks are in the baseline. A ratio <= 0 means the blended switch adds no
  jerk at all (crossfading two plans also averages their roughness); where
  naive switching adds none either (its excess <= 0), the ratio is 0. The
  checkpoint is trained 600 steps so that chunks are plans, not noise
  (150 with ``--quick``, whose ratio is a smoke check only).

Each repeat runs the bare model, the blended, the naive and the in-thread node in turn, ``--repeats`` times
(default 3; 2 quick), the checkpoint trained once; each figure is {"median": x, "worst": y} over the repeats
(worst: the lowest rate, the highest jitter, overhead, latency or ratio; the ratio is taken per repeat from that
repeat's two runs), the baseline likewise. ``--with-training``: the whole run with a policy training on both
cores (bench/_load.py), as a station trains between episodes.

Last line: {"name": "policy_node", "command_hz": {"median", "worst"}, "command_jitter_ms_p99": {...},
"ros_overhead_ms_p99": {...}, "boundary_jerk_ratio": {...}, "baseline": {...}, "met": {...}}
Targets on 2 cores, judged on the worst repeat: jitter <= 1 ms p99 and overhead <= 3 ms p99 idle (<= 2 ms and
<= 5 ms with training on both cores), boundary jerk ratio <= 0.5.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from recap_ros.localhost import apply_ros_environment

apply_ros_environment()
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))

from sensor_msgs.msg import Image, JointState  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from recap_ros.conversions import diagnostic_values, joint_state, stamp_to_seconds  # noqa: E402
from recap_ros.images import numpy_to_image  # noqa: E402
from recap_ros.testing.probe import Probe  # noqa: E402
from recap_ros.testing.procs import NodeProcess, test_environment  # noqa: E402
from recap_policy_node.chunking import jerk  # noqa: E402

from _load import background_training  # noqa: E402
from _spread import HIGH, LOW, add_repeats_argument, met, repeat_count, summarise  # noqa: E402

CAMERAS = ("base", "left_wrist", "right_wrist")
DT = 0.02
CONTROL_PRIORITY = 50  # SCHED_FIFO for the control thread, as station_real.yaml configures it (ros2_control's 50)
TARGETS = {"ros_overhead_ms_p99": 3.0, "command_jitter_ms_p99": 1.0, "boundary_jerk_ratio": 0.5}  # upper bounds
TARGETS_TRAINING = {"ros_overhead_ms_p99": 5.0, "command_jitter_ms_p99": 2.0, "boundary_jerk_ratio": 0.5}


def make_checkpoint(root: str, steps: int = 600) -> str:
    recap = [sys.executable, "-m", "recap_core.cli"]
    # trained long enough that chunks are smooth plans, so boundary jerk measures replanning, not noise
    common = ["--config", "tiny", "--steps", str(steps), "--batch-size", "16", "--no-progress", "--threads", "2"]
    for cmd in (
        [*recap, "dataset", "synth", f"{root}/data", "--kind", "reach", "--episodes", "12"],
        [*recap, "train-policy", f"{root}/data", "--mode", "sft", "--lr", "1e-3", "--out", f"{root}/policy", *common],
    ):
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return f"{root}/policy"


def bare_model_ms(checkpoint: str, image: np.ndarray, n: int) -> np.ndarray:
    import torch

    from recap_core.models import PolicyRunner

    torch.set_num_threads(1)
    runner = PolicyRunner.from_checkpoint(checkpoint)
    obs = {"images": {c: image for c in CAMERAS}, "state": np.zeros(14), "task": "reach"}
    runner.infer(obs, seed=0)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        runner.infer(obs, seed=i)
        times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times)


RECEIVER_PRIORITY = 40  # SCHED_FIFO of this process's receiving threads: a controller's, below the node's control


@contextlib.contextmanager
def receiver_scheduling(log: list):
    """Threads created in the block (the probe's DDS and executor threads) get SCHED_FIFO RECEIVER_PRIORITY, as
    a robot's command consumer (ros2_control's controller manager) runs; this thread is back to normal after.
    Where that is refused, they run with normal scheduling and ``log`` says so."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RECEIVER_PRIORITY))
    except (OSError, AttributeError) as exc:
        log.append(f"other (SCHED_FIFO refused: {exc})")
        yield
        return
    log.append(f"fifo {RECEIVER_PRIORITY}")
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def feed() -> int:
    """``--feeder``: publish the cameras and joint_states at 50 Hz until standard input ends."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node("bench_policy_feeder")
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    cams = [node.create_publisher(Image, f"camera/{c}/image_raw", 10) for c in CAMERAS]
    joints = node.create_publisher(JointState, "joint_states", 10)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.buffer.read(), stop.set()), daemon=True).start()
    next_t = time.monotonic()
    try:
        while not stop.is_set():
            stamp = node.get_clock().now().to_msg()
            for pub in cams:
                pub.publish(numpy_to_image(image, stamp))
            # stamped when it is sent, as a joint driver stamps its reading: the node plans from this stamp, and
            # building and sending the three images first is not the node's overhead
            joints.publish(joint_state(np.zeros(14), stamp=node.get_clock().now().to_msg()))
            next_t += DT
            time.sleep(max(0.0, next_t - time.monotonic()))
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return 0


def run_node(
    probe: Probe, checkpoint: str, seconds: float, blend_steps: int, log_dir: str, inference_process: bool
) -> dict:
    env = test_environment(int(os.environ["ROS_DOMAIN_ID"]))
    with receiver_scheduling([]):
        commands = probe.subscribe(JointState, "policy/joint_command", arrivals=True)
        chunks = probe.subscribe(JointTrajectory, "policy/action_chunk", arrivals=True)
        status = probe.subscribe(DiagnosticStatus, "policy/status")
    feeder = subprocess.Popen([sys.executable, __file__, "--feeder"], stdin=subprocess.PIPE, env=env)
    with contextlib.suppress(OSError):  # the station's drivers run real-time, as the receiver does
        os.sched_setscheduler(feeder.pid, os.SCHED_FIFO, os.sched_param(RECEIVER_PRIORITY))
    params = {"checkpoint": checkpoint, "task": "reach", "inference_threads": 1, "blend_steps": blend_steps}
    try:
        with NodeProcess(
            "recap_policy_node.policy_node",
            log_dir=log_dir,
            env=env,
            params={**params, "inference_process": inference_process, "control_priority": CONTROL_PRIORITY},
        ) as proc:
            if not commands.wait_for(20, timeout=120):
                raise RuntimeError(f"no commands from the policy node:\n{proc.output()}")
            commands.clear()
            chunks.clear()
            time.sleep(seconds)
            cmd_msgs, cmd_t, cmd_arrivals = commands.timed_snapshot()
            chunk_msgs, chunk_t, chunk_arrivals = chunks.timed_snapshot()
            time.sleep(0.3)
            status_msgs, _ = status.snapshot()
    finally:
        feeder.stdin.close()  # the feeder stops at the end of its input
        try:
            feeder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            feeder.kill()
            feeder.wait(timeout=5)
    model_ms, hops = {}, {}
    for m in status_msgs:
        v = diagnostic_values(m)
        model_ms[v.get("chunk_observation_stamp")] = float(v.get("latency_ms", "nan"))
        hops[v.get("chunk_observation_stamp")] = float(v.get("hop_ms", "nan"))
    e2e, overhead = [], []
    for m, r in zip(chunk_msgs, chunk_arrivals):
        obs_t = stamp_to_seconds(m.header.stamp)
        e2e.append((r - obs_t) * 1e3)  # arrival here (system clock) minus the observation's stamp
        if f"{obs_t:.6f}" in model_ms:
            overhead.append(e2e[-1] - model_ms[f"{obs_t:.6f}"])
    intervals = np.diff(cmd_arrivals) * 1e3  # at the middleware: this process's executor does not blur them
    taken = np.diff(cmd_t) * 1e3  # when this process's executor ran the callback
    sent = np.diff([stamp_to_seconds(m.header.stamp) for m in cmd_msgs]) * 1e3
    positions = np.array([m.position for m in cmd_msgs])
    # a boundary is the first command after a chunk arrived
    boundaries = sorted({int(np.searchsorted(cmd_t, t)) for t in chunk_t})
    j = jerk(positions, DT)
    near = sorted({b - 3 + k for b in boundaries for k in range(6 + 8) if 0 <= b - 3 + k < len(j)})
    away = np.setdiff1d(np.arange(len(j)), near)
    return {
        "command_hz": len(cmd_msgs) / seconds,
        "jitter_ms_p99": float(np.percentile(np.abs(intervals - 20), 99)),
        "send_jitter_ms_p99": float(np.percentile(np.abs(sent - 20), 99)),
        "callback_jitter_ms_p99": float(np.percentile(np.abs(taken - 20), 99)),
        "e2e_ms": np.asarray(e2e),
        "hop_ms": np.asarray([h for h in hops.values() if h == h]),
        "overhead_ms": np.asarray(overhead),
        "boundary_jerk": float(np.mean(j[near])) if near else float("nan"),
        "boundary_excess_jerk": float(np.mean(j[near]) - np.mean(j[away])) if near and len(away) else float("nan"),
        "chunks": len(chunk_msgs),
    }


def jerk_ratio(blended: float, naive: float) -> float:
    """Excess boundary jerk blended / naive; where naive switching adds none (<= 0) there is nothing to remove:
    0 if blending adds none either, else infinity."""
    if naive > 0:
        return blended / naive
    return 0.0 if blended <= 0 else float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--with-training", action="store_true", help="measure with a training job on both cores")
    parser.add_argument("--feeder", action="store_true", help=argparse.SUPPRESS)  # the observation source
    add_repeats_argument(parser, "the bare model and the node runs")
    args = parser.parse_args()
    if args.feeder:
        return feed()
    repeats = repeat_count(args)
    seconds = 3.0 if args.quick else 20.0
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    runs, chunks, receiver = [], 0, []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as load:
        # --quick: a shorter training (its boundary jerk ratio is noise anyway: few chunks) keeps the smoke run short
        checkpoint = make_checkpoint(tmp, 150 if args.quick else 600)
        if args.with_training:
            load.enter_context(background_training())
        domain = int(os.environ["ROS_DOMAIN_ID"])
        for repeat in range(repeats):
            bare = bare_model_ms(checkpoint, image, 20 if args.quick else 100)
            node = {}
            for name, blend, process in (("blended", 8, True), ("naive", 0, True), ("thread", 8, False)):
                with receiver_scheduling(receiver):
                    probe = Probe(f"bench_policy_{name}_{repeat}", domain_id=domain)
                with probe:
                    node[name] = run_node(probe, checkpoint, seconds, blend, tmp, process)
            smooth, naive, thread = node["blended"], node["naive"], node["thread"]
            chunks += smooth["chunks"]
            runs.append(
                {
                    "command_hz": smooth["command_hz"],
                    "command_jitter_ms_p99": smooth["jitter_ms_p99"],
                    "send_jitter_ms_p99": smooth["send_jitter_ms_p99"],
                    "callback_jitter_ms_p99": smooth["callback_jitter_ms_p99"],
                    "ros_overhead_ms_p99": float(np.percentile(smooth["overhead_ms"], 99)),
                    "ros_overhead_ms_p50": float(np.percentile(smooth["overhead_ms"], 50)),
                    "boundary_jerk_ratio": jerk_ratio(smooth["boundary_excess_jerk"], naive["boundary_excess_jerk"]),
                    "observation_to_chunk_ms_p99": float(np.percentile(smooth["e2e_ms"], 99)),
                    "inference_hop_ms_p50": float(np.median(smooth["hop_ms"])) if len(smooth["hop_ms"]) else None,
                    "thread_command_jitter_ms_p99": thread["jitter_ms_p99"],
                    "thread_send_jitter_ms_p99": thread["send_jitter_ms_p99"],
                    "thread_ros_overhead_ms_p99": float(np.percentile(thread["overhead_ms"], 99)),
                    "bare_model_ms_p50": float(np.median(bare)),
                    "bare_model_ms_p99": float(np.percentile(bare, 99)),
                    "naive_switching_boundary_jerk": naive["boundary_jerk"],
                    "naive_switching_excess_jerk": naive["boundary_excess_jerk"],
                    "blended_excess_jerk": smooth["boundary_excess_jerk"],
                    "blended_boundary_jerk": smooth["boundary_jerk"],
                }
            )
            print(f"repeat {repeat + 1}/{repeats}: {runs[-1]}", file=sys.stderr)
    figures = summarise(
        runs,
        {
            "command_hz": LOW,
            "command_jitter_ms_p99": HIGH,
            "send_jitter_ms_p99": HIGH,
            "callback_jitter_ms_p99": HIGH,
            "ros_overhead_ms_p99": HIGH,
            "ros_overhead_ms_p50": HIGH,
            "boundary_jerk_ratio": HIGH,
            "observation_to_chunk_ms_p99": HIGH,
            "inference_hop_ms_p50": HIGH,
        },
    )
    baseline = summarise(
        runs,
        {
            "thread_command_jitter_ms_p99": HIGH,
            "thread_send_jitter_ms_p99": HIGH,
            "thread_ros_overhead_ms_p99": HIGH,
            "bare_model_ms_p50": HIGH,
            "bare_model_ms_p99": HIGH,
        },
    )
    jerks = summarise(
        runs,
        dict.fromkeys(
            (
                "naive_switching_boundary_jerk",
                "naive_switching_excess_jerk",
                "blended_excess_jerk",
                "blended_boundary_jerk",
            ),
            HIGH,
        ),
        digits=1,
    )
    targets = TARGETS_TRAINING if args.with_training else TARGETS
    result = {
        "name": "policy_node",
        "load": "training on both cores" if args.with_training else "idle",
        "receiver_scheduling": sorted(set(receiver)),
        **figures,
        "chunks": chunks,
        "repeats": repeats,
        "seconds": seconds,
        "baseline": {
            **baseline,
            **jerks,
            "what": "thread_*: the same node with the model on an in-process thread (inference_process false); "
            "bare_*: the same checkpoint's PolicyRunner.infer in-process on the same observation, 1 thread",
        },
        "target": {key: f"<= {bound:g}" for key, bound in targets.items()},
        "met": {key: met(figures[key], bound, HIGH) for key, bound in targets.items()},
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
