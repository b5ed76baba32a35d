"""Benchmark: the policy/teleop gate as a separate process, measured from a probe process.

Phases (same run):
  1. own clock   -- no command, the gate holds joint_states: period jitter of its own clock;
  2. pass-through -- policy commands at 50 Hz, each tagged by a unique value of joint 0:
                     latency publish -> the gate's joint_command carrying it, and period jitter;
  3. handovers   -- random engage/release with a far-away teleop target: largest observed
                     joint velocity (from the gate's stamps) / the station's limit.
Baseline: one direct publisher -> subscriber hop (a separate publisher process -> this
probe, same message type, QoS and rate), measured during the pass-through phase so both
see the same machine load.

The three phases are repeated ``--repeats`` times (default 3; 2 quick) against the same gate
process, the baseline hop running throughout; each figure is {"median": x, "worst": y} over
the repeats (worst: the highest), the baseline's likewise.

Last line: {"name": "gate", "added_latency_ms_p99": {"median", "worst"}, "jitter_ms_p99": {...},
"max_velocity_ratio": {...}, "baseline": {"hop_latency_ms_p99": {...}, ...}, "met": {...}, ...}.
added latency = gate path p99 minus the hop's p99, per repeat. Targets, judged on the worst
repeat: added latency <= 2 ms p99, max_velocity_ratio <= 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

import numpy as np

from recap_ros.localhost import apply_ros_environment

apply_ros_environment()
os.environ.setdefault("ROS_DOMAIN_ID", str(201 + os.getpid() % 30))

import rclpy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from recap_ros.conversions import joint_state  # noqa: E402
from recap_ros.testing.probe import Probe  # noqa: E402
from recap_core.station import StationConfig  # noqa: E402
from recap_ros.testing.procs import NodeProcess, test_environment  # noqa: E402

from _spread import HIGH, add_repeats_argument, met, repeat_count, summarise  # noqa: E402

PERIOD = 0.02
TAG_STEP = 1e-4  # joint 0 advances by this per policy command: 5 mrad/s, far below any limit
STATION = StationConfig.sim_aloha()
HOME = (STATION.lower_array + STATION.upper_array) / 2
ADDED_LATENCY_TARGET_MS = 2.0
VELOCITY_RATIO_TARGET = 1.0


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def paced(seconds: float):
    """Yield once per control period for ``seconds`` (deadline-based, no drift)."""
    next_tick = time.monotonic()
    end = next_tick + seconds
    i = 0
    while next_tick < end:
        yield i
        i += 1
        next_tick += PERIOD
        time.sleep(max(0.0, next_tick - time.monotonic()))


def jitter_ms(stamps) -> np.ndarray:
    return np.abs(np.diff(np.asarray(stamps)) - PERIOD) * 1e3


def hop_publisher(seconds: float) -> int:
    """Child process: publish JointState stamped with wall time at 50 Hz (the baseline hop)."""
    rclpy.init()
    node = rclpy.create_node("bench_hop_publisher")
    from recap_ros import qos

    pub = node.create_publisher(JointState, "bench/hop", qos.COMMAND)
    time.sleep(0.5)  # discovery
    msg = joint_state(HOME)
    for _ in paced(seconds):
        if not rclpy.ok():  # terminated by the bench once its window is over
            break
        t = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 1_000_000_000)
        pub.publish(msg)
    node.destroy_node()
    rclpy.try_shutdown()  # SIGTERM may have shut the context down already
    return 0


class BaselineHop:
    """A publisher process -> this probe, running *while* the gate is measured (same load)."""

    def __init__(self, probe: Probe, seconds: float):
        self.hops = probe.subscribe(JointState, "bench/hop", probe.RELIABLE_10)
        self.child = subprocess.Popen(
            [sys.executable, __file__, "--hop-publisher", str(seconds)],
            env=test_environment(int(os.environ["ROS_DOMAIN_ID"])),
        )

    def latencies_ms(self, t_from: float, t_to: float) -> tuple[np.ndarray, np.ndarray]:
        """(latency, receive time) of the hop messages received in [t_from, t_to] (monotonic)."""
        msgs, received = self.hops.snapshot()
        offset = time.time() - time.monotonic()  # probe stamps are monotonic; the child's are wall time
        rows = [((r + offset) * 1e3 - stamp_ns(m) * 1e-6, r) for m, r in zip(msgs, received) if t_from <= r <= t_to]
        if len(rows) < 10:
            raise RuntimeError(f"baseline hop delivered only {len(rows)} messages in the window")
        lat, times = zip(*rows)
        return np.asarray(lat), np.asarray(times)

    def close(self) -> None:
        if self.child.poll() is None:  # still publishing: its window is over
            self.child.terminate()
        self.child.wait(timeout=10)


def p99(values) -> float:
    return float(np.percentile(values, 99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (smoke check, ~20 s)")
    add_repeats_argument(parser, "the three phases")
    parser.add_argument("--hop-publisher", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hop_publisher is not None:
        return hop_publisher(args.hop_publisher)
    repeats = repeat_count(args)
    seconds = 1.0 if args.quick else 10.0
    log_dir = "/tmp/recap_bench_gate"
    env = test_environment(int(os.environ["ROS_DOMAIN_ID"]))
    rng = random.Random(0)
    runs = []
    handovers, matched = 0, 0

    with Probe("bench_gate", domain_id=int(os.environ["ROS_DOMAIN_ID"])) as probe:
        commands = probe.subscribe(JointState, "joint_command", probe.RELIABLE_10)
        sources = probe.subscribe(String, "command_source", probe.LATCHED)
        states = probe.publisher(JointState, "joint_states")
        policy = probe.publisher(JointState, "policy/joint_command", probe.RELIABLE_10)
        teleop = probe.publisher(JointState, "teleop/joint_command", probe.RELIABLE_10)
        engage = probe.publisher(Bool, "teleop/engage", probe.RELIABLE_10)
        resets = []
        probe.node.create_service(
            Trigger, "policy/reset", lambda rq, rs: (resets.append(1), setattr(rs, "success", True), rs)[-1]
        )
        # The hop runs through all repeats; its latency is taken over each pass-through window.
        baseline = BaselineHop(probe, repeats * (4 * seconds + 2.0) + 20.0)
        with NodeProcess("recap_teleop.gate_node", log_dir=log_dir, env=env) as gate:
            if not gate.wait_for_output("gate up", timeout=60):
                raise RuntimeError(f"gate did not start:\n{gate.output()}")
            for pub in (states, policy, teleop, engage):
                if not probe.wait_for_subscribers(pub, timeout=10):
                    raise RuntimeError("the gate did not subscribe")
            if not baseline.hops.wait_for(5, timeout=60):
                raise RuntimeError("the baseline hop publisher did not start")
            source_counts = dict.fromkeys(("policy", "teleop", "hold"), 0)
            sources.clear()

            for repeat in range(repeats):
                # 1. own clock: hold the measured position (the gate holds: no command since the last repeat).
                states.publish(joint_state(HOME))
                time.sleep(0.5)
                commands.clear()
                time.sleep(seconds)
                own_clock_msgs, own_clock = commands.snapshot()

                # 2. pass-through: tagged policy commands, latency per tag.
                commands.clear()
                pass_through_start = time.monotonic()
                sent: dict[int, float] = {}
                target = HOME.copy()
                for seq in paced(seconds + 0.5):
                    target[0] = HOME[0] + seq * TAG_STEP
                    sent[seq] = time.monotonic()
                    policy.publish(joint_state(target))
                pass_through_end = time.monotonic()
                time.sleep(0.2)
                out_msgs, out_times = commands.snapshot()
                latencies, seen = [], set()
                for m, t in zip(out_msgs, out_times):
                    seq = int(round((m.position[0] - HOME[0]) / TAG_STEP))
                    if seq in sent and seq not in seen and abs(m.position[0] - (HOME[0] + seq * TAG_STEP)) < 1e-9:
                        seen.add(seq)
                        latencies.append((t - sent[seq]) * 1e3)
                latencies = np.asarray(latencies[25:])  # skip the start-up ramp
                if len(latencies) < 10:
                    raise RuntimeError(f"only {len(latencies)} policy commands were matched at the gate output")
                pass_through_times = list(out_times)
                pass_through_msgs = list(out_msgs)

                # 3. random handovers while the policy keeps streaming.
                commands.clear()
                far = HOME.copy()
                far[[0, 1, 2, 7, 8, 9]] += 0.6
                far[[6, 13]] = STATION.upper_array[[6, 13]]
                engaged, next_switch = False, rng.uniform(0.2, 0.6)
                t0 = time.monotonic()
                for seq in paced(seconds * 2):
                    now = time.monotonic() - t0
                    wobble = 0.2 * np.sin(2 * np.pi * 0.5 * now)
                    policy.publish(joint_state(np.clip(HOME + wobble, STATION.lower_array, STATION.upper_array)))
                    teleop.publish(joint_state(np.clip(far - wobble, STATION.lower_array, STATION.upper_array)))
                    if now >= next_switch:
                        engaged = not engaged
                        handovers += 1
                        engage.publish(Bool(data=engaged))
                        next_switch = now + rng.uniform(0.2, 0.8)
                engage.publish(Bool(data=False))
                time.sleep(0.2)
                handover_msgs, handover_times = commands.snapshot()

                hop, hop_times = baseline.latencies_ms(pass_through_start, pass_through_end)
                ratios = []
                for msgs in (pass_through_msgs, handover_msgs):
                    q = np.array([m.position for m in msgs])
                    dt = np.diff(np.array([stamp_ns(m) for m in msgs])) * 1e-9
                    ratios.append(np.max(np.abs(np.diff(q, axis=0)) / (STATION.max_velocity_array * dt[:, None])))
                gate_p50, gate_p99 = np.percentile(latencies, [50, 99])
                hop_p50, hop_p99 = np.percentile(hop, [50, 99])
                matched += len(latencies)
                runs.append(
                    {
                        "added_latency_ms_p99": float(gate_p99 - hop_p99),
                        "jitter_ms_p99": p99(jitter_ms(pass_through_times[25:])),
                        "max_velocity_ratio": float(max(ratios)),
                        "added_latency_ms_p50": float(gate_p50 - hop_p50),
                        "gate_latency_ms_p50": float(gate_p50),
                        "gate_latency_ms_p99": float(gate_p99),
                        "jitter_ms_p99_own_clock": p99(jitter_ms(own_clock)),
                        "jitter_ms_p99_own_clock_send": p99(jitter_ms([stamp_ns(m) * 1e-9 for m in own_clock_msgs])),
                        "jitter_ms_p99_handovers": p99(jitter_ms(handover_times)),
                        "hop_latency_ms_p50": float(hop_p50),
                        "hop_latency_ms_p99": float(hop_p99),
                        "hop_jitter_ms_p99": p99(jitter_ms(hop_times)),
                        "hop_samples": len(hop),
                    }
                )
                print(f"repeat {repeat + 1}/{repeats}: {runs[-1]}", file=sys.stderr)
            for source in source_counts:  # over all repeats
                source_counts[source] = sum(m.data == source for m in sources.snapshot()[0])
            gate_alive = gate.alive()
        baseline.close()

    figures = summarise(runs, dict.fromkeys([k for k in runs[0] if not k.startswith("hop_")], HIGH))
    # exact up to float rounding (~1e-14)
    figures["max_velocity_ratio"] = summarise(runs, {"max_velocity_ratio": HIGH}, 6)["max_velocity_ratio"]
    hop = summarise(runs, {"hop_latency_ms_p50": HIGH, "hop_latency_ms_p99": HIGH, "hop_jitter_ms_p99": HIGH})
    result = {
        "name": "gate",
        **figures,
        "repeats": repeats,
        "matched_commands": matched,
        "handovers": handovers,
        "policy_resets": len(resets),
        "steps_by_source": source_counts,
        "gate_alive": gate_alive,
        "baseline": {
            "hop_latency_ms_p50": hop["hop_latency_ms_p50"],
            "hop_latency_ms_p99": hop["hop_latency_ms_p99"],
            "samples": sum(r["hop_samples"] for r in runs),
            "jitter_ms_p99": hop["hop_jitter_ms_p99"],
            "what": "JointState publisher process -> this probe, 50 Hz, same QoS, during each pass-through phase",
        },
        "target": {"added_latency_ms_p99": f"<= {ADDED_LATENCY_TARGET_MS:g}", "max_velocity_ratio": "<= 1"},
        "met": {
            "added_latency_ms_p99": met(figures["added_latency_ms_p99"], ADDED_LATENCY_TARGET_MS, HIGH),
            "max_velocity_ratio": met(figures["max_velocity_ratio"], VELOCITY_RATIO_TARGET, HIGH),
        },
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
