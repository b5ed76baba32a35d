"""The package layout of docs/design.md §2, checked from the code.

* Each package.xml declares exactly what its code imports: every third-party,
  ROS and project import has an ``exec_depend`` (tests: ``test_depend``) with a
  rosdep key that exists, or, where rosdistro has no key at all, is named in the
  package.xml's ``installed with pip:`` comment; nothing is declared that the
  code does not import.
* Dependencies point one way: core <- ros glue <- nodes and sim <- experiment and bringup.
* The learning side never loads rclpy; the station-side nodes never load torch.
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "package.xml").is_file())

#: Project packages and the layer each sits in: a package may import only packages of lower layers.
LAYERS = {
    "recap_core": 0,
    "recap_ros": 1,
    "recap_sim": 2,
    "recap_teleop": 2,
    "recap_bridge": 2,
    "recap_policy_node": 2,
    "recap_value_node": 2,
    "recap_recorder": 2,
    "recap_experiment": 3,
    "recap_bringup": 3,
}

#: Python import name -> rosdep key (rosdistro's rosdep/python.yaml; `-pip` keys where only those exist).
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "yaml": "python3-yaml",
    "torch": "python3-torch",
    "scipy": "python3-scipy",
    "PIL": "python3-pil",
    "matplotlib": "python3-matplotlib",
    "tqdm": "python3-tqdm",
    "pytest": "python3-pytest",
    "hypothesis": "python3-hypothesis",
    "transformers": "python3-transformers-pip",
    "rosbags": "python3-rosbags-pip",
    "mujoco": "python3-mujoco-pip",
    "simplejpeg": "python3-simplejpeg-pip",
    "gymnasium": "python3-gymnasium-pip",
    "msgpack": "python3-msgpack",
    "websockets": "python3-websockets",
}
#: Imports rosdistro has no key for, not even a `-pip` one -> their PyPI names, which the package.xml's
#: `installed with pip:` comment lists (and requirements.txt installs).
NO_ROSDEP_KEY = {
    "pyarrow": "pyarrow",
    "safetensors": "safetensors",
    "mcap": "mcap",
    "tokenizers": "tokenizers",
    "gym_aloha": "gym-aloha",
    "dm_control": "dm-control",
    "lz4": "lz4",
    "zstandard": "zstandard",
    "av": "av",
}
#: ROS packages: the import name is the key.
ROS_PACKAGES = {
    "rclpy",
    "rcl_interfaces",
    "builtin_interfaces",
    "sensor_msgs",
    "std_msgs",
    "std_srvs",
    "diagnostic_msgs",
    "geometry_msgs",
    "trajectory_msgs",
    "visualization_msgs",
    "rosgraph_msgs",
    "launch",
    "launch_ros",
    "ament_index_python",
}


#: test/ folders whose scripts run in their own venvs (LeRobot's references and sample writers), never the package's.
OTHER_VENVS = {("test", "reference"), ("test", "data")}


def package_files(package: str, tests: bool) -> list[pathlib.Path]:
    root = SRC / package
    files = [
        p
        for p in root.rglob("*.py")
        if ("test" in p.relative_to(root).parts[:1]) == tests
        and p.name != "setup.py"
        and p.relative_to(root).parts[:2] not in OTHER_VENVS
    ]
    return sorted(files)


def imports_of(files) -> set[str]:
    """Top-level names of every absolute import in ``files`` (also those inside functions)."""
    names = set()
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


def key_of(name: str) -> str:
    if name in LAYERS or name in ROS_PACKAGES:
        return name
    if name in ROSDEP_KEYS:
        return ROSDEP_KEYS[name]
    if name in NO_ROSDEP_KEY:
        return f"pip:{NO_ROSDEP_KEY[name]}"
    raise AssertionError(
        f"import '{name}' is unknown to this test: add it to ROSDEP_KEYS, NO_ROSDEP_KEY or "
        "ROS_PACKAGES with its rosdep key"
    )


def declared(package: str) -> tuple[set[str], set[str]]:
    """(exec dependencies, test dependencies) of a package.xml, pip-only ones as ``pip:name``."""
    text = (SRC / package / "package.xml").read_text(encoding="utf-8")
    root = ET.fromstring(text)
    run = {e.text.strip() for tag in ("exec_depend", "depend") for e in root.iter(tag)}
    test = {e.text.strip() for e in root.iter("test_depend")}
    for comment in re.findall(r"<!--(.*?)-->", text, flags=re.S):
        match = re.search(r"installed with pip:(.*)", comment, flags=re.S)
        if match:
            kind = test if "(tests)" in match.group(1) else run
            kind.update(f"pip:{n}" for n in re.findall(r"[A-Za-z_][\w-]*", match.group(1).replace("(tests)", "")))
    return run, test


@pytest.mark.parametrize("package", PACKAGES)
def test_package_xml_declares_exactly_what_the_code_imports(package):
    run, test = declared(package)
    code = {key_of(n) for n in imports_of(package_files(package, tests=False))} - {package}
    tests = {key_of(n) for n in imports_of(package_files(package, tests=True))} - {package}
    if package == "recap_bringup":  # the launch files are code too
        code |= {key_of(n) for n in imports_of(sorted((SRC / package / "launch").glob("*.py")))} - {package}
    assert code <= run, f"{package}/package.xml lacks exec_depend on {sorted(code - run)}"
    assert run <= code, f"{package}/package.xml declares {sorted(run - code)}, which its code never imports"
    assert tests <= run | test, f"{package}/package.xml lacks test_depend on {sorted(tests - run - test)}"
    assert test <= tests, f"{package}/package.xml declares test_depend {sorted(test - tests)}, unused by its tests"


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_down_the_layers(package):
    assert package in LAYERS, f"{package} has no layer in this test"
    for tests in (False, True):
        project = imports_of(package_files(package, tests)) & set(LAYERS)
        upward = [
            p
            for p in project
            if LAYERS[p] > LAYERS[package] or (LAYERS[p] == LAYERS[package] and p != package and not tests)
        ]
        assert not upward, (
            f"{package} {'tests' if tests else 'code'} import(s) {upward}: dependencies must point "
            "to lower layers (docs/design.md §2)"
        )


def test_the_core_names_no_package_built_on_it():
    others = [p for p in LAYERS if p != "recap_core"]
    for path in package_files("recap_core", tests=False):
        text = path.read_text(encoding="utf-8")
        named = [p for p in others if p in text]
        assert not named, f"{path.relative_to(SRC)} names {named}"


def _loaded(module: str) -> set[str]:
    code = f"import importlib, sys; importlib.import_module({module!r}); print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module",
    [
        "recap_core",
        "recap_core.station",
        "recap_core.cli",
        "recap_core.rl",
        "recap_core.data",
        "recap_core.models",
        "recap_core.train",
        "recap_core.checkpoint",
        "recap_core.stats",
        "recap_ros.localhost",
        "recap_experiment.evaluate",
    ],
)
def test_learning_side_never_loads_rclpy(module):
    assert "rclpy" not in _loaded(module), f"{module} pulls in rclpy"


@pytest.mark.parametrize(
    "module",
    [
        "recap_sim.station_node",
        "recap_sim.operator_node",
        "recap_teleop.gate_node",
        "recap_teleop.episode_manager_node",
        "recap_teleop.joy_node",
        "recap_teleop.leader_arms_node",
        "recap_recorder.recorder_node",
        "recap_recorder.bag_to_dataset",
        "recap_core.cli",
    ],
)
def test_station_side_never_loads_torch(module):
    assert "torch" not in _loaded(module), f"{module} pulls in torch"
