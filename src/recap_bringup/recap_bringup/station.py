"""``recap station``: the station's nodes composed in one process (one executor), running N episodes.

The embedded default where ``ros2 launch`` is not installed: it reads the same station YAML as
``launch/station.launch.py`` and starts the same nodes under the same names. docs/nodes.md (Bringup)
lists its options.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import threading

from recap_bringup import station_sim_yaml
from recap_sim.human import RELEASE_RULES, VALUE_DROP_RANGE

OPERATOR_MODES = ("drive", "intervene", "off")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", action="store_true", help="bring up the simulated station (gym-aloha)")
    parser.add_argument(
        "--config",
        type=pathlib.Path,
        default=None,
        help="station parameter YAML (default: recap_bringup/config/station_sim.yaml)",
    )
    parser.add_argument("--episodes", type=int, default=3, help="episodes to run (default 3)")
    parser.add_argument("--policy", type=pathlib.Path, default=None, help="policy checkpoint: run the policy node")
    parser.add_argument("--value", type=pathlib.Path, default=None, help="value checkpoint: run the value node")
    parser.add_argument("--record", type=pathlib.Path, default=None, help="record one bag per episode here")
    parser.add_argument(
        "--operator-mode",
        choices=OPERATOR_MODES,
        default=None,
        help="scripted operator: drive (demos; default without --policy), intervene "
        "(simulated human gating the policy; default with --policy), off",
    )
    parser.add_argument(
        "--source",
        choices=("demo", "rollout", "eval"),
        default=None,
        help="episode source in the metadata (default: demo when the operator drives)",
    )
    parser.add_argument("--quality", type=float, default=None, help="scripted operator quality 0..1")
    parser.add_argument("--beta", type=float, default=None, help="policy CFG beta")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first episode")
    parser.add_argument("--max-steps", type=int, default=None, help="episode time limit in 50 Hz steps")
    parser.add_argument(
        "--real-time-factor", type=float, default=None, help="sim speed vs real time (default from the YAML: 1)"
    )
    parser.add_argument("--task", default=None, help="task prompt of the episodes")
    parser.add_argument(
        "--human-patience",
        type=float,
        default=None,
        help="simulated human: take over after this many seconds without progress",
    )
    parser.add_argument(
        "--human-value-drop",
        type=float,
        default=None,
        help="simulated human: take over when the live value falls this much (normalised, "
        f"{VALUE_DROP_RANGE[0]:g}-{VALUE_DROP_RANGE[1]:g}; 1 turns the trigger off, since "
        "the value spans [-1, 0])",
    )
    parser.add_argument(
        "--human-release",
        choices=RELEASE_RULES,
        default=None,
        help="simulated human: end a correction one stage past where it engaged (next_stage, "
        "the default) or one stage past the best the episode reached (past_best)",
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="square camera images of this size (default from the YAML: 224)"
    )


def ros_arguments(args, operator_mode: str, source: str) -> list[str]:
    """CLI flags as ROS parameter overrides (``-p node:name:=value``) on top of the YAML."""
    p = []

    def put(node: str, name: str, value) -> None:
        p.extend(["-p", f"{node}:{name}:={value}"])

    put("scripted_operator", "mode", operator_mode)
    put("episode_manager", "source", source)
    if args.quality is not None:
        put("scripted_operator", "quality", float(args.quality))
    if args.seed is not None:
        put("sim_station", "seed", int(args.seed))
    if args.max_steps is not None:
        put("sim_station", "max_episode_steps", int(args.max_steps))
        put("episode_manager", "max_episode_steps", int(args.max_steps))
    if args.real_time_factor is not None:
        put("sim_station", "real_time_factor", float(args.real_time_factor))
    if args.task is not None:
        put("episode_manager", "task", args.task)
    if args.human_patience is not None:
        put("scripted_operator", "human_patience_s", float(args.human_patience))
    if args.human_value_drop is not None:
        put("scripted_operator", "human_value_drop", float(args.human_value_drop))
    if args.human_release is not None:
        put("scripted_operator", "human_release", args.human_release)
    if args.image_size is not None:
        put("sim_station", "image_width", int(args.image_size))
        put("sim_station", "image_height", int(args.image_size))
    if args.policy is not None:
        put("policy_node", "checkpoint", str(args.policy.resolve()))
        if args.beta is not None:
            put("policy_node", "beta", float(args.beta))
    if args.value is not None:
        put("value_node", "checkpoint", str(args.value.resolve()))
    if args.record is not None:
        put("recorder", "output_dir", str(args.record.resolve()))
    return p


def _fail(message: str) -> int:
    print(f"recap station: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    """Start the sim station, the scripted operator, the gate and the episode manager (and, when asked, the
    policy node, value node and recorder), then run ``--episodes`` episodes through ``episode/start`` (the
    episode manager labels them from the sim), printing per episode the label, duration, interventions and
    the measured topic rates."""
    if not args.sim:
        return _fail(
            "only --sim is available here; on a real station use "
            "`ros2 launch recap_bringup station.launch.py contract:=<robot contract>` (docs/real_station.md)"
        )
    if args.episodes < 1:
        return _fail(f"--episodes must be >= 1, got {args.episodes}")
    low, high = VALUE_DROP_RANGE
    if args.human_value_drop is not None and not low <= args.human_value_drop <= high:
        return _fail(
            f"--human-value-drop must be in [{low:g}, {high:g}] (normalised value), got {args.human_value_drop}"
        )
    config = args.config or station_sim_yaml()
    if not config.is_file():
        return _fail(f"config {config} does not exist")
    for flag, path, kind in (("--policy", args.policy, "policy"), ("--value", args.value, "value")):
        if path is None:
            continue
        problem = _checkpoint_problem(path, kind, config)
        if problem:
            return _fail(f"{flag}: {problem}")
    operator_mode = args.operator_mode or ("intervene" if args.policy else "drive")
    if args.policy is None and operator_mode != "drive":
        return _fail(f"--operator-mode {operator_mode} without --policy leaves nobody in control")
    source = args.source or ("demo" if operator_mode == "drive" else "rollout")

    from recap_ros.localhost import apply_ros_environment, dds_settings

    apply_ros_environment()  # the simulated station runs on this machine only: localhost DDS settings
    print(f"station: DDS settings: {dds_settings()}", flush=True)
    from recap_ros.node_main import RosSession, make_executor, spin_forever
    from recap_bringup.episode_driver import EpisodeDriver, StopRequested, TopicRateMonitor
    from recap_sim.operator_node import ScriptedOperatorNode
    from recap_sim.station_node import SimStationNode
    from recap_teleop.episode_manager_node import EpisodeManagerNode
    from recap_teleop.gate_node import GateNode

    factories = [SimStationNode, ScriptedOperatorNode, GateNode, EpisodeManagerNode]
    if args.policy is not None:
        from recap_policy_node.policy_node import PolicyNode

        factories.append(PolicyNode)
    if args.value is not None:
        from recap_value_node.value_node import ValueNode

        factories.append(ValueNode)
    if args.record is not None:
        from recap_recorder.recorder_node import RecorderNode

        factories.append(RecorderNode)

    ros_args = [
        "recap_station",
        "--ros-args",
        "--params-file",
        str(config),
        *ros_arguments(args, operator_mode, source),
    ]
    results = []
    with RosSession(ros_args) as session:
        stop, nodes = session.stop, session.nodes
        spin = None
        try:
            try:
                for factory in factories:
                    nodes.append(factory())
            except ValueError as exc:
                return _fail(str(exc))
            unloaded = [
                f"{flag}: {node.model_error}"
                for node in nodes
                for flag, name in (("--policy", "policy_node"), ("--value", "value_node"))
                if node.get_name() == name and node.model_error
            ]
            if unloaded:  # e.g. weights that do not load: never run the episodes without the model asked for
                return _fail("; ".join(unloaded))
            station, operator = nodes[0], nodes[1]
            monitor = TopicRateMonitor(list(station.station.cameras))
            driver = EpisodeDriver(stop.event)
            nodes += [monitor, driver]
            session.executor = make_executor()
            for node in nodes:
                session.executor.add_node(node)
            spin = threading.Thread(target=spin_forever, args=(session.executor, stop.is_set), daemon=True)
            spin.start()
            print(
                f"station: task {station.task_name}, cameras {list(station.station.cameras)}; nodes "
                f"{', '.join(n.get_name() for n in nodes[:-2])}; operator {operator_mode} "
                f"(quality {operator.quality}); {args.episodes} episode(s)",
                flush=True,
            )
            try:
                for i in range(args.episodes):
                    monitor.reset()
                    r = driver.run_episode(i)
                    results.append(r)
                    rates = ", ".join(f"{t} {hz:.1f} Hz" for t, hz in monitor.rates().items())
                    print(
                        f"episode {i}: {r.episode_id} seed {r.seed} {r.label.upper()} after {r.steps} steps "
                        f"({r.wall_seconds:.1f} s), {r.interventions} intervention(s) "
                        f"[{r.intervention_steps} steps] | {rates}",
                        flush=True,
                    )
            except StopRequested:
                print(
                    f"recap station: stopped by {stop.name} after {len(results)} of {args.episodes} episode(s)"
                    + ("; the open episode's bag is closed as aborted" if args.record else ""),
                    file=sys.stderr,
                    flush=True,
                )
            except RuntimeError as exc:
                print(f"recap station: {exc}", file=sys.stderr)
        finally:
            stop.event.set()  # the spin thread leaves its loop before the session closes the nodes
            if spin is not None:
                spin.join(timeout=2.0)
    n_ok = sum(r.success for r in results)
    print(
        f"summary: {n_ok}/{len(results)} successful, {sum(r.interventions for r in results)} intervention(s); "
        f"station rejected {station.commands_rejected} command(s)"
        + (f"; bags in {args.record}" if args.record else ""),
        flush=True,
    )
    if stop.received is not None:
        return 0  # a requested stop
    return 0 if len(results) == args.episodes else 1


def _checkpoint_problem(path: pathlib.Path, kind: str, config: pathlib.Path) -> str:
    """Why checkpoint ``path`` cannot serve as ``kind`` on the station of YAML ``config`` ('' if it can)."""
    from recap_ros.serving import checkpoint_problem
    from recap_core.station import StationConfig

    try:
        station = StationConfig.from_yaml(config)
    except (OSError, ValueError) as exc:
        return f"cannot read the station from {config}: {exc}"
    return checkpoint_problem(str(path), kind, station)
