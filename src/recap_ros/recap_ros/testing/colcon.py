"""A plain (non-symlink) ``colcon build`` of the checkout's src/, for tests that run the installed code as a
lab's ROS machine does (``test/test_colcon_install.py``, ``test/test_real_station_launch.py``).

The install space is used with the environment a sourced ``install/setup.bash`` gives (``PYTHONPATH`` of each
package's site-packages ahead of the interpreter's own, ``AMENT_PREFIX_PATH`` for the ament index), on top
of the test DDS environment.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

from recap_ros.testing.procs import test_environment


def source_packages(root: pathlib.Path) -> list[str]:
    return sorted(p.name for p in (root / "src").iterdir() if (p / "package.xml").is_file())


def build_workspace(root: pathlib.Path, ws: pathlib.Path, timeout: float = 900) -> pathlib.Path:
    """``colcon build`` of ``root/src`` into ``ws``; returns the install space. AssertionError with colcon's
    output if the build fails."""
    colcon = pathlib.Path(sys.executable).parent / "colcon"
    if not colcon.exists() and shutil.which("colcon") is None:
        raise AssertionError(
            "colcon is not installed: run scripts/setup.sh (requirements.txt installs colcon-core, "
            "colcon-ros and colcon-python-setup-py)"
        )
    cmd = [
        str(colcon if colcon.exists() else shutil.which("colcon")),
        "--log-base",
        str(ws / "log"),
        "build",
        "--base-paths",
        str(root / "src"),
        "--build-base",
        str(ws / "build"),
        "--install-base",
        str(ws / "install"),
        "--executor",
        "sequential",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ws)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return ws / "install"


def install_environment(install: pathlib.Path, base: dict | None = None) -> dict:
    """The environment of a shell that sourced ``install/setup.bash`` (plus the test DDS settings)."""
    packages = sorted(p.name for p in install.iterdir() if (p / "share" / p.name / "package.xml").is_file())
    site = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    env = test_environment() if base is None else dict(base)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(install / p / site) for p in packages] + [sysconfig.get_paths()["purelib"]]
    )
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(str(install / p) for p in packages)
    return env
