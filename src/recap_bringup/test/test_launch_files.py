"""The launch file, rviz config and station YAML agree with the code.

launch/launch_ros are not installable here, so the launch file is read as
Python source: every Node() it starts must name a console script its package
really installs, have a section in the station YAML, and every topic rviz shows
must be one a node of ours publishes (docs/design.md §3).
"""

from __future__ import annotations

import ast
import pathlib
import re

import yaml

BRINGUP = pathlib.Path(__file__).resolve().parents[1]
SRC = BRINGUP.parent
LAUNCH = BRINGUP / "launch" / "station.launch.py"
RVIZ = BRINGUP / "launch" / "recap.rviz"
CONFIG = BRINGUP / "config" / "station_sim.yaml"


def launched_nodes() -> list[dict]:
    tree = ast.parse(LAUNCH.read_text())
    nodes = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Node":
            kw = {k.arg: k.value for k in call.keywords if k.arg}
            nodes.append({k: v.value for k, v in kw.items() if isinstance(v, ast.Constant)})
    return nodes


def console_scripts(package: str) -> dict[str, str]:
    tree = ast.parse((SRC / package / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = " in node.value and ":" in node.value:
            name, target = (s.strip() for s in node.value.split("=", 1))
            scripts[name] = target
    return scripts


def test_every_launched_executable_exists_and_has_parameters():
    config = yaml.safe_load(CONFIG.read_text())
    nodes = launched_nodes()
    assert len(nodes) >= 7
    for node in nodes:
        scripts = console_scripts(node["package"])
        assert node["executable"] in scripts, f"{node['package']} does not install {node['executable']}"
        module = scripts[node["executable"]].split(":")[0]
        path = SRC / node["package"] / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{node['executable']} -> {path} does not exist"
        assert node["name"] in config or node["name"] in (
            "gate",
            "episode_manager",
            "policy_node",
            "value_node",
            "recorder",
        ), node["name"]
        assert f'super().__init__("{node["name"]}"' in path.read_text(), (
            f"node name {node['name']} differs from the one {path.name} declares"
        )


def test_default_config_path_exists():
    assert 'os.path.join(HERE, "..", "config", "station_sim.yaml")' in LAUNCH.read_text() and CONFIG.is_file()


def test_rviz_topics_are_published_by_our_nodes():
    rviz = yaml.safe_load(RVIZ.read_text())
    topics = [d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d]
    assert {"/value/plot", "/value/markers", "/camera/base/image_raw"} <= set(topics)
    sources = "\n".join(p.read_text() for p in SRC.glob("*/*/*.py"))
    for topic in topics:
        rel = topic.lstrip("/")
        if rel.startswith("camera/"):
            cam = rel.split("/")[1]
            assert cam in CONFIG.read_text(), f"camera {cam} is not a station camera"
            assert 'f"camera/{cam}/image_raw"' in sources
        else:
            assert re.search(rf'create_publisher\([^)]*"{re.escape(rel)}"', sources), f"nobody publishes {rel}"
