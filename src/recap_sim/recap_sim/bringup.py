"""``recap station``: the station's nodes composed in one process (one EventsExecutor).

The embedded default where ``ros2 launch`` is not installed. It reads the same
station YAML as ``launch/station.launch.py``. With ``--sim`` it brings up the
simulated station and the scripted expert, runs N episodes and prints, per
episode, success and duration, and the measured topic rates.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import threading
import time

from recap_core.station import default_config_dir, load_node_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", action="store_true", help="bring up the simulated station (gym-aloha)")
    parser.add_argument("--config", type=pathlib.Path, default=None,
                        help="station parameter YAML (default: config/station_sim.yaml)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes to run (default 3)")
    parser.add_argument("--quality", type=float, default=None, help="scripted expert quality 0..1")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first episode")
    parser.add_argument("--max-steps", type=int, default=None, help="episode time limit in 50 Hz steps")
    parser.add_argument("--real-time-factor", type=float, default=None,
                        help="sim speed vs real time (0 = as fast as possible)")
    parser.add_argument("--task", default=None, help="transfer_cube | insertion")


@dataclasses.dataclass
class EpisodeResult:
    index: int
    seed: int
    success: bool
    steps: int
    sim_seconds: float
    wall_seconds: float


def _overrides(args) -> list[str]:
    """CLI flags as ROS parameter overrides (``-p node:name:=value``)."""
    out = []
    if args.quality is not None:
        out += ["-p", f"scripted_expert:quality:={float(args.quality)}"]
    if args.seed is not None:
        out += ["-p", f"sim_station:seed:={int(args.seed)}"]
    if args.max_steps is not None:
        out += ["-p", f"sim_station:max_episode_steps:={int(args.max_steps)}"]
    if args.real_time_factor is not None:
        out += ["-p", f"sim_station:real_time_factor:={float(args.real_time_factor)}"]
    if args.task is not None:
        out += ["-p", f"sim_station:task_name:={args.task}", "-p", f"scripted_expert:task_name:={args.task}"]
    return out


def run(args) -> int:
    if not args.sim:
        print("recap station: only --sim is available on this machine; on a real station use "
              "`ros2 launch launch/station.launch.py` with your robot driver", file=sys.stderr)
        return 2
    if args.episodes < 1:
        print(f"recap station: --episodes must be >= 1, got {args.episodes}", file=sys.stderr)
        return 2
    config = args.config or default_config_dir() / "station_sim.yaml"
    if not config.is_file():
        print(f"recap station: config {config} does not exist", file=sys.stderr)
        return 2

    from recap_core.rosenv import apply_ros_environment

    apply_ros_environment()
    import rclpy
    from rclpy.experimental import EventsExecutor

    from recap_core.ros.node_main import spin_forever
    from recap_sim.episode_driver import SimEpisodeDriver, TopicRateMonitor
    from recap_sim.expert_node import ScriptedExpertNode
    from recap_sim.station_node import SimStationNode

    # Without the gate in the process, the expert drives the robot directly.
    ros_args = ["recap_station", "--ros-args", "--params-file", str(config), *_overrides(args),
                "-r", "scripted_expert:teleop/joint_command:=joint_command"]
    with rclpy.init(args=ros_args):
        try:
            station = SimStationNode()
            expert = ScriptedExpertNode()
        except ValueError as exc:
            print(f"recap station: {exc}", file=sys.stderr)
            return 2
        cameras = list(station.station.cameras)
        monitor = TopicRateMonitor(cameras)
        driver = SimEpisodeDriver()
        nodes = [station, expert, monitor, driver]
        executor = EventsExecutor()
        for node in nodes:
            executor.add_node(node)
        stop = threading.Event()
        spin = threading.Thread(target=spin_forever, args=(executor, stop.is_set), daemon=True)
        spin.start()
        max_steps = int(station.get_parameter("max_episode_steps").value)
        print(f"station: task {station.task_name}, cameras {cameras}, expert quality {expert.quality}, "
              f"{args.episodes} episode(s) of at most {max_steps} steps", flush=True)
        results = []
        try:
            for i in range(args.episodes):
                monitor.reset()
                r = driver.run_episode(i, max_steps=max_steps)
                rates = monitor.rates()
                results.append(r)
                print(f"episode {i}: seed {r.seed} {'SUCCESS' if r.success else 'failure'} "
                      f"after {r.steps} steps ({r.sim_seconds:.1f} s sim, {r.wall_seconds:.1f} s wall) | "
                      + ", ".join(f"{t} {hz:.1f} Hz" for t, hz in rates.items()), flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            spin.join(timeout=2.0)
            executor.shutdown()
            for node in nodes:
                getattr(node, "close", lambda: None)()
                node.destroy_node()
    n_ok = sum(r.success for r in results)
    print(f"summary: {n_ok}/{len(results)} successful; rejected commands {station.commands_rejected}", flush=True)
    return 0
