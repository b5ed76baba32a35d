"""Benchmark: the recorder process under 3 cameras 224x224 rgb8 + joint_states from another process.

The station's byte rate (3 x 150 528 B images + one JointState, 50 Hz: ~22.6
MB/s) and then higher multiples of it (``--factors``, default 2, 4, 9, 12, 16, 20
and 24x: the same messages at up to 1,200 Hz, 542 MB/s) are published from this
process into a recorder node process, one episode per rate, raising the rate
until a level drops: ``max_dropfree_mb_s`` is the highest level without a drop,
``first_drop_mb_s`` the level above it (null when none dropped). The recorder
runs with its default settings (images stored JPEG-compressed in its writer
thread; ``--image-compression none`` records them as received).
Drops = published messages missing from the bag (every message carries a
sequence number in its header stamp; an image counts on its raw or
``/compressed`` topic). CPU = the recorder process's CPU time
over the publishing window, in % of one core, at the base rate.
Baseline, same run: a subscriber process with the same raw subscriptions that
only counts (no queue, no disk): the cost of receiving alone.

The baseline and the recorder's three levels are repeated in turn ``--repeats`` times
(default 3; 2 quick), a fresh subscriber and recorder process each repeat; each figure is
{"median": x, "worst": y} over the repeats (worst: the most drops, the highest CPU, the
lowest drop-free rate), the baseline likewise.

Last line: {"name": "record", "drops_at_base_rate": {"median", "worst"}, "max_dropfree_mb_s": {...},
"cpu_percent": {...}, "levels": [{"repeat", "factor", ...}, ...], "baseline": {...}, "met": {...}}
Targets on 2 cores, judged on the worst repeat: 0 drops at the base rate, >= 200 MB/s drop-free.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recap_ros.localhost import apply_ros_environment

apply_ros_environment()
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 50))

from _spread import HIGH, LOW, add_repeats_argument, met, repeat_count, summarise  # noqa: E402

CAMERAS = ("base", "left_wrist", "right_wrist")
BASE_HZ = 50.0
IMAGE_SHAPE = (224, 224, 3)
FACTORS = (1, 2, 4, 9, 12, 16, 20, 24)  # x the base rate: 22.6 ... 542 MB/s; raised until a level drops
QUICK_FACTORS = (1, 2, 4)
DROPFREE_TARGET_MB_S = 200.0


def count_subscriber(seconds: float) -> None:
    """Child process for the baseline: raw subscriptions that only count, for ``seconds``."""
    import rclpy
    from sensor_msgs.msg import Image, JointState

    from recap_ros import qos
    from recap_ros.node_main import make_executor, spin_forever

    counts = {}
    last_message = [0.0]

    def counter(topic):
        def count(data):
            counts[topic].add(stamp_of(data))
            last_message[0] = time.monotonic()

        return count

    rclpy.init()  # not `with rclpy.init()`, which Jazzy's rclpy lacks
    try:
        node = rclpy.create_node("count_subscriber")
        topics = [(Image, f"camera/{c}/image_raw") for c in CAMERAS] + [(JointState, "joint_states")]
        for msg_type, topic in topics:
            counts[topic] = set()
            node.create_subscription(msg_type, topic, counter(topic), qos.SENSOR, raw=True)
        executor = make_executor()
        executor.add_node(node)
        print("subscriber up", flush=True)
        deadline = time.monotonic() + seconds

        def done() -> bool:  # the publisher went quiet, or time is up
            now = time.monotonic()
            return now > deadline or (last_message[0] and now - last_message[0] > 0.5)

        spin_forever(executor, until=done)
        print(json.dumps({t: sorted(v) for t, v in counts.items()}), flush=True)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown()


def stamp_of(cdr: bytes) -> tuple[int, int]:
    """(sec, nanosec) of a message whose first field is a std_msgs/Header."""
    return struct.unpack_from("<iI", cdr, 4)


class Publisher:
    def __init__(self, probe):
        import numpy as np
        from sensor_msgs.msg import Image, JointState

        from recap_ros import qos
        from recap_ros.images import numpy_to_image

        self.probe = probe
        self.images = {c: probe.publisher(Image, f"camera/{c}/image_raw", qos.SENSOR) for c in CAMERAS}
        self.joints = probe.publisher(JointState, "joint_states", qos.SENSOR)
        from diagnostic_msgs.msg import DiagnosticStatus

        self.status = probe.publisher(DiagnosticStatus, "episode/status", qos.LATCHED)
        rng = np.random.default_rng(0)
        self.frame_msgs = [numpy_to_image(rng.integers(0, 255, IMAGE_SHAPE, dtype=np.uint8)) for _ in CAMERAS]
        self.joint_msg = JointState(name=[f"j{i}" for i in range(14)], position=[0.0] * 14)
        self.message_bytes = sum(len(m.data) for m in self.frame_msgs) + 14 * 8 + 200

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        for pub in [*self.images.values(), self.joints]:
            if not self.probe.wait_for_subscribers(pub, count, timeout):
                raise RuntimeError(f"nobody subscribed to {pub.topic_name} within {timeout} s")

    def episode(self, episode_id: str, state: str) -> None:
        from recap_ros.conversions import diagnostic

        self.status.publish(
            diagnostic(
                "episode_manager",
                {
                    "episode_id": episode_id,
                    "state": state,
                    "task": "benchmark",
                    "source": "demo",
                    "label": state if state != "running" else "",
                    "steps": "0",
                },
            )
        )

    def stream(self, rate_hz: float, seconds: float, tag: int) -> dict:
        """Publish at ``rate_hz`` for ``seconds``; stamps are (tag, sequence). Returns what was sent."""
        from builtin_interfaces.msg import Time

        period = 1.0 / rate_hz
        sent, errors = 0, 0
        start = time.perf_counter()
        next_tick = start
        while time.perf_counter() - start < seconds:
            stamp = Time(sec=tag, nanosec=sent)
            for msg, pub in zip(self.frame_msgs, self.images.values()):
                msg.header.stamp = stamp
                try:
                    pub.publish(msg)
                except Exception:  # ENVIRONMENT.md: flooding a reliable publisher can raise; count it
                    errors += 1
            self.joint_msg.header.stamp = stamp
            self.joints.publish(self.joint_msg)
            sent += 1
            next_tick += period
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        wall = time.perf_counter() - start
        return {
            "sent_per_topic": sent,
            "publish_errors": errors,
            "wall_s": wall,
            "achieved_hz": sent / wall,
            "mb_s": sent * self.message_bytes / wall / 1e6,
        }


def recorded_stamps(bag: Path, tag: int):
    """Sequence numbers (header nanosec) of this level's messages per topic in the bag, and its info."""
    from recap_recorder.bag_info import open_bag, read_info

    info = read_info(bag)
    _, mcap = open_bag(bag)
    found: dict[str, set] = {}
    with mcap:
        for topic in mcap.topics:
            if topic.endswith(("image_raw", "image_raw/compressed", "joint_states")):
                index = mcap.index(topic)
                for i in range(len(index)):
                    sec, nanosec = stamp_of(mcap.read(index, i, limit=16)[0])
                    if sec == tag:
                        found.setdefault(topic.removesuffix("/compressed"), set()).add(nanosec)
    return found, info


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def wait_unsubscribed(publisher: Publisher, timeout: float = 30.0) -> None:
    """Until the previous subscriber process has gone, so that the next one is the only one counted."""
    deadline = time.monotonic() + timeout
    while any(pub.get_subscription_count() for pub in publisher.images.values()) and time.monotonic() < deadline:
        time.sleep(0.05)


def measure_baseline(publisher: Publisher, env: dict, seconds: float) -> dict:
    """Receiving only: a counting subscriber process at the base rate."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--count-subscriber", str(seconds + 30)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    child.stdout.readline()
    publisher.wait_for(1)
    time.sleep(0.5)
    cpu0 = cpu_seconds(child.pid)
    sent = publisher.stream(BASE_HZ, seconds, tag=1)
    cpu = (cpu_seconds(child.pid) - cpu0) / sent["wall_s"] * 100
    counts = json.loads(child.stdout.readline())
    child.wait(30)
    wait_unsubscribed(publisher)
    drops = sum(sent["sent_per_topic"] - len([s for s in v if s[0] == 1]) for v in counts.values())
    return {"cpu_percent": cpu, "drops": drops}


def measure_recorder(publisher: Publisher, env: dict, work: Path, args, seconds: float, repeat: int) -> list[dict]:
    """One recorder process, one episode per rate level: each level's figures."""
    from recap_ros.testing.procs import NodeProcess

    levels = []
    with NodeProcess(
        "recap_recorder.recorder_node",
        log_dir=work / "logs",
        env=env,
        params={
            "output_dir": str(work / "bags"),
            "min_free_disk_mb": 100.0,
            "image_compression": args.image_compression,
        },
    ) as recorder:
        if not recorder.wait_for_output("recorder up", timeout=60):
            raise RuntimeError(f"recorder did not start:\n{recorder.output()}")
        publisher.wait_for(1)
        for tag, factor in enumerate(args.factors, start=10):
            episode_id = f"bench-r{repeat}-{factor}x"
            publisher.episode(episode_id, "running")
            time.sleep(0.3)
            cpu0 = cpu_seconds(recorder.pid)
            sent = publisher.stream(BASE_HZ * factor, seconds, tag)
            cpu = (cpu_seconds(recorder.pid) - cpu0) / sent["wall_s"] * 100
            time.sleep(0.5)
            publisher.episode(episode_id, "success")
            bag = work / "bags" / episode_id
            deadline = time.monotonic() + 60
            while not (bag / "metadata.yaml").is_file() and time.monotonic() < deadline:
                time.sleep(0.1)
            found, info = recorded_stamps(bag, tag)
            drops = sum(
                sent["sent_per_topic"] - len(found.get(info.namespace.rstrip("/") + "/" + t, ()))
                for t in [f"camera/{c}/image_raw" for c in CAMERAS] + ["joint_states"]
            )
            levels.append(
                {
                    "repeat": repeat,
                    "factor": factor,
                    "target_mb_s": round(publisher.message_bytes * BASE_HZ * factor / 1e6, 1),
                    "achieved_mb_s": round(sent["mb_s"], 1),
                    "achieved_hz": round(sent["achieved_hz"], 1),
                    "drops": drops,
                    "queue_overflows": int(info.custom_data.get("recorder_dropped", 0)),
                    "publish_errors": sent["publish_errors"],
                    "cpu_percent": round(cpu, 1),
                }
            )
            print(f"{factor}x: {levels[-1]}", flush=True)
            shutil.rmtree(bag, ignore_errors=True)
            publisher.episode("", "idle")  # (a snapshot from the previous level has another tag)
            time.sleep(0.2)
            if drops and factor != args.factors[0]:
                break  # the drop-free ceiling is below this level: higher ones would only drop more
    wait_unsubscribed(publisher)
    return levels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~30 s smoke run (1.5 s per level, 2 repeats)")
    parser.add_argument("--seconds", type=float, default=None, help="publishing time per level")
    parser.add_argument(
        "--image-compression",
        choices=("jpeg", "none"),
        default="jpeg",
        help="the recorder's image_compression parameter",
    )
    parser.add_argument(
        "--factors",
        type=lambda text: tuple(float(f) for f in text.split(",")),
        default=None,
        help=f"rate levels, multiples of the base rate (default {','.join(map(str, FACTORS))}; quick "
        f"{','.join(map(str, QUICK_FACTORS))})",
    )
    add_repeats_argument(parser, "the baseline and the recorder's levels")
    parser.add_argument("--count-subscriber", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_subscriber is not None:
        count_subscriber(args.count_subscriber)
        return 0
    seconds = args.seconds or (1.5 if args.quick else 10.0)
    args.factors = args.factors or (QUICK_FACTORS if args.quick else FACTORS)
    repeats = repeat_count(args)

    from recap_ros.testing.probe import Probe
    from recap_ros.testing.procs import test_environment

    work = Path(tempfile.mkdtemp(prefix="recap_bench_record_"))
    env = test_environment(int(os.environ["ROS_DOMAIN_ID"]))
    probe = Probe("bench_record_publisher", domain_id=int(os.environ["ROS_DOMAIN_ID"]))
    levels, runs, baselines = [], [], []
    try:
        publisher = Publisher(probe)
        for repeat in range(repeats):
            baselines.append(measure_baseline(publisher, env, seconds))
            print(f"repeat {repeat + 1}/{repeats} baseline: {baselines[-1]}", flush=True)
            these = measure_recorder(publisher, env, work, args, seconds, repeat)
            levels += these
            dropfree = [lv["achieved_mb_s"] for lv in these if lv["drops"] == 0]
            dropping = [lv["achieved_mb_s"] for lv in these if lv["drops"]]
            runs.append(
                {
                    "drops_at_base_rate": these[0]["drops"],
                    "max_dropfree_mb_s": max(dropfree) if dropfree else 0.0,
                    "first_drop_mb_s": min(dropping) if dropping else None,
                    "cpu_percent": these[0]["cpu_percent"],
                }
            )
    finally:
        probe.close()
        shutil.rmtree(work, ignore_errors=True)
    figures = summarise(runs, {"drops_at_base_rate": HIGH, "max_dropfree_mb_s": LOW, "cpu_percent": HIGH}, 1)
    found = [r["first_drop_mb_s"] for r in runs if r["first_drop_mb_s"] is not None]
    figures["first_drop_mb_s"] = (
        {"median": None, "worst": None} if not found else summarise([{"v": v} for v in found], {"v": LOW}, 1)["v"]
    )
    print(
        json.dumps(
            {
                "name": "record",
                **figures,
                "levels": levels,
                "repeats": repeats,
                "seconds_per_level": seconds,
                "image_compression": args.image_compression,
                "baseline": {
                    "what": "raw subscriber that only counts, base rate",
                    **summarise(baselines, {"cpu_percent": HIGH, "drops": HIGH}, 1),
                },
                "target": {"drops_at_base_rate": "0", "max_dropfree_mb_s": f">= {DROPFREE_TARGET_MB_S:g}"},
                "met": {
                    "drops_at_base_rate": met(figures["drops_at_base_rate"], 0, HIGH),
                    "max_dropfree_mb_s": met(figures["max_dropfree_mb_s"], DROPFREE_TARGET_MB_S, LOW),
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
