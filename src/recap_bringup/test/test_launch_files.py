"""The launch files, rviz config and parameter files agree with the code (read as source, so these run
without launch installed; test/test_real_station_launch.py runs the launch files themselves).

Every node the launch module starts must name a console script its package really installs under the
node name that script declares, and every topic rviz shows must be one a node of ours publishes
(docs/design.md §3), relative so a namespaced station shows its own.
"""

from __future__ import annotations

import ast
import pathlib
import re

import yaml

from recap_bringup.station_launch import node_parameters, rviz_config

BRINGUP = pathlib.Path(__file__).resolve().parents[1]
SRC = BRINGUP.parent
SUPPORT = BRINGUP / "recap_bringup" / "station_launch.py"
RVIZ = BRINGUP / "launch" / "recap.rviz"
CONFIG = BRINGUP / "config" / "station_sim.yaml"
REAL = BRINGUP / "config" / "station_real.yaml"


def launched_nodes() -> list[tuple[str, str, str]]:
    """(package, executable, name) of every ``node(...)`` the launch module starts."""
    tree = ast.parse(SUPPORT.read_text())
    out = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "node":
            args = [a.value for a in call.args[:3] if isinstance(a, ast.Constant)]
            if len(args) == 3:
                out.append(tuple(args))
    return out


def console_scripts(package: str) -> dict[str, str]:
    tree = ast.parse((SRC / package / "setup.py").read_text())
    scripts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = " in node.value and ":" in node.value:
            name, target = (s.strip() for s in node.value.split("=", 1))
            scripts[name] = target
    return scripts


def test_every_launched_executable_exists_under_its_node_name():
    nodes = launched_nodes()
    assert len(nodes) >= 10
    for package, executable, name in nodes:
        scripts = console_scripts(package)
        assert executable in scripts, f"{package} does not install {executable}"
        module = scripts[executable].split(":")[0]
        path = SRC / package / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{executable} -> {path} does not exist"
        assert f'super().__init__("{name}"' in path.read_text(), f"node name {name} differs from {path.name}'s"


def test_parameter_file_sections_name_launched_nodes():
    names = {name for _, _, name in launched_nodes()}
    for path in (CONFIG, REAL):
        sections = set(yaml.safe_load(path.read_text())) - {"/**"}
        assert sections <= names, f"{path.name} has sections for nodes nobody launches: {sorted(sections - names)}"


def test_node_parameters_merge_shared_own_and_fully_qualified_sections(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"a": 1, "b": 1}},
                "gate": {"ros__parameters": {"b": 2, "c": "x"}},
                "/station1/gate": {"ros__parameters": {"c": "station1"}},
            }
        )
    )
    assert node_parameters(f, "gate") == {"a": 1, "b": 2, "c": "x"}
    assert node_parameters(f, "gate", "station1") == {"a": 1, "b": 2, "c": "station1"}
    assert node_parameters(f, "gate", "/station2") == {"a": 1, "b": 2, "c": "x"}
    assert node_parameters(f, "recorder", "station1") == {"a": 1, "b": 1}


def test_rviz_topics_are_relative_and_published_by_our_nodes():
    rviz = yaml.safe_load(RVIZ.read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    topics = [d["Topic"]["Value"] for d in displays if "Topic" in d]
    assert {"value/plot", "value/markers", "camera/base/image_raw"} <= set(topics)
    sources = "\n".join(p.read_text() for p in SRC.glob("*/*/*.py"))
    for topic in topics:
        assert not topic.startswith("/"), f"{topic} is absolute: a namespaced rviz would not see its station"
        if topic.startswith("camera/"):
            cam = topic.split("/")[1]
            assert cam in CONFIG.read_text(), f"camera {cam} is not a station camera"
            assert 'f"camera/{cam.name}/image_raw"' in sources or 'f"camera/{cam}/image_raw"' in sources
        else:
            assert re.search(rf'create_publisher\([^)]*"{re.escape(topic)}"', sources), f"nobody publishes {topic}"
    for d in displays:  # camera drivers often publish best effort; a best-effort subscription takes both
        if d["Class"] == "rviz_default_plugins/Image":
            assert d["Topic"]["Reliability Policy"] == "Best Effort", d["Name"]


def test_the_rviz_copy_for_a_station_shows_its_own_cameras(tmp_path):
    path = rviz_config(["overhead", "wrist"], tmp_path)
    displays = yaml.safe_load(path.read_text())["Visualization Manager"]["Displays"]
    topics = [d["Topic"]["Value"] for d in displays if "Topic" in d]
    assert [t for t in topics if t.startswith("camera/")] == ["camera/overhead/image_raw", "camera/wrist/image_raw"]
    assert {"value/plot", "value/markers"} <= set(topics)
