"""What the two launch files share: the station's nodes with their parameters resolved in Python.

Parameters are handed to each node as a dictionary, never as a parameter file: a file's sections are keyed
by node name, and under a namespace (``/station1/gate``) a section ``gate`` would match nothing and every
per-node parameter would be dropped without a word. The dictionary is the node's section merged over the
file's ``/**`` section and, on a real station, over the robot contract's station parameters (which always
win: the robot description has one source). Launch arguments arrive as strings and stay strings
(``bag_dir:=2026-12-04`` is a directory, not a date).
"""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from recap_bringup import share_dir
from recap_core.robot_contract import load_contract

OPERATOR_DEVICES = ("none", "joy", "leader_arms")


def read_parameter_file(path: str | pathlib.Path) -> dict:
    doc = yaml.safe_load(pathlib.Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a ROS 2 parameter file is a mapping of node names to ros__parameters")
    return doc


def node_parameters(config: str | pathlib.Path | dict, node: str, namespace: str = "") -> dict[str, Any]:
    """``/**`` merged with the node's section: ``node``, then the fully qualified ``/<namespace>/<node>``.
    ``config`` is the parameter file, or its content already read (:func:`read_parameter_file`)."""
    doc = config if isinstance(config, dict) else read_parameter_file(config)
    params: dict[str, Any] = {}
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    for key in ("/**", node, node.lstrip("/"), f"{ns}/{node}", f"{ns}/{node}".lstrip("/")):
        section = doc.get(key) or {}
        params.update(section.get("ros__parameters", {}) if isinstance(section, dict) else {})
    return params


def rviz_config(cameras, out_dir: str | pathlib.Path) -> pathlib.Path:
    """recap.rviz with one image display per station camera (the template shows the sim's three)."""
    template = share_dir() / "launch" / "recap.rviz"
    doc = yaml.safe_load(template.read_text(encoding="utf-8"))
    displays = doc["Visualization Manager"]["Displays"]
    is_camera = lambda d: str(d.get("Topic", {}).get("Value", "")).startswith("camera/")  # noqa: E731
    camera = next(d for d in displays if is_camera(d))
    at = displays.index(camera)
    rest = [d for d in displays if not is_camera(d)]
    views = []
    for name in cameras:
        view = yaml.safe_load(yaml.safe_dump(camera))
        view["Name"] = name
        view["Topic"]["Value"] = f"camera/{name}/image_raw"
        views.append(view)
    doc["Visualization Manager"]["Displays"] = rest[:at] + views + rest[at:]
    path = pathlib.Path(out_dir) / "recap.rviz"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"launch argument {name}:={value} is not a boolean (true/false)")


def station_actions(context, sim: bool) -> list:
    """Every action of one station (launch's OpaqueFunction calls this with the resolved arguments)."""
    from launch.actions import SetEnvironmentVariable
    from launch_ros.actions import Node

    arg = lambda name: str(context.launch_configurations.get(name, ""))  # noqa: E731
    namespace = arg("namespace").strip("/")
    config = read_parameter_file(arg("config"))  # once, for every node
    actions: list = []
    station: dict[str, Any] = {}
    if sim:
        if _flag(arg("localhost"), "localhost"):
            from recap_ros.localhost import localhost_environment

            # the simulated station runs on this machine only: localhost discovery and the shared-memory profile
            actions += [SetEnvironmentVariable(k, v) for k, v in localhost_environment().items()]
    else:
        contract_path = arg("contract")
        if not contract_path:
            raise ValueError("station.launch.py: contract:=<robot contract YAML> is required (docs/real_station.md)")
        station = load_contract(contract_path).station_params()

    def node(package: str, executable: str, name: str, extra: dict | None = None, **kwargs) -> Node:
        params = {**node_parameters(config, name, namespace), **station, **(extra or {})}
        return Node(
            package=package,
            executable=executable,
            name=name,
            namespace=namespace,
            parameters=[params],
            output="screen",
            emulate_tty=True,
            **kwargs,
        )

    checkpoints = {"policy": arg("policy_checkpoint"), "value": arg("value_checkpoint")}
    bag_dir = arg("bag_dir")
    nodes = []
    if sim:
        nodes.append(node("recap_sim", "sim_station", "sim_station"))
        if _flag(arg("operator"), "operator"):
            nodes.append(node("recap_sim", "scripted_operator", "scripted_operator"))
    else:
        nodes.append(node("recap_bridge", "robot_bridge", "robot_bridge", {"contract": arg("contract")}))
        device = arg("operator_device")
        if device not in OPERATOR_DEVICES:
            raise ValueError(f"operator_device:={device} is not one of {list(OPERATOR_DEVICES)}")
        if device == "joy":
            nodes.append(node("recap_teleop", "joy_teleop", "joy_teleop"))
        elif device == "leader_arms":
            nodes.append(node("recap_teleop", "leader_arms", "leader_arms"))
        if device != "none" and _flag(arg("joy_driver"), "joy_driver"):
            # the lab's joystick driver (ros-<distro>-joy); the deadman of both devices is a Joy button
            nodes.append(Node(package="joy", executable="joy_node", name="joy", namespace=namespace, output="screen"))
    nodes += [
        node("recap_teleop", "gate", "gate"),
        node("recap_teleop", "episode_manager", "episode_manager"),
        node("recap_policy_node", "policy_node", "policy_node", {"checkpoint": checkpoints["policy"]}),
        node("recap_value_node", "value_node", "value_node", {"checkpoint": checkpoints["value"]}),
        node("recap_recorder", "recorder", "recorder", {"output_dir": bag_dir} if bag_dir else {}),
    ]
    if _flag(arg("rviz"), "rviz"):
        import tempfile

        cameras = station.get("cameras") or node_parameters(config, "rviz", namespace).get("cameras")
        cameras = cameras or ["base", "left_wrist", "right_wrist"]
        rviz_file = str(rviz_config(cameras, tempfile.mkdtemp(prefix="recap_rviz_")))
        nodes.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz",
                namespace=namespace,
                arguments=["-d", rviz_file],
                output="screen",
            )
        )
    return actions + nodes
