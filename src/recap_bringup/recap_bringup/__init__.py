"""Station bringup: launch files, station parameter files, the rviz config, and ``recap station``.

Its files are installed to ``share/recap_bringup`` (``launch/``, ``config/``) and
found through the ament index; in a source checkout (editable install) they are
read where they lie.
"""

from __future__ import annotations

import pathlib

PACKAGE = "recap_bringup"


def share_dir() -> pathlib.Path:
    """``share/recap_bringup`` of the install, or the package's source folder in a checkout."""
    source = pathlib.Path(__file__).resolve().parents[1]
    if (source / "config").is_dir() and (source / "launch").is_dir():
        return source
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return pathlib.Path(get_package_share_directory(PACKAGE))
    except PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"{PACKAGE} is not installed: build it with colcon (its share/ holds the "
            "launch and config files) or install the checkout with pip -e"
        ) from exc


def config_dir() -> pathlib.Path:
    return share_dir() / "config"


def launch_dir() -> pathlib.Path:
    return share_dir() / "launch"


def station_sim_yaml() -> pathlib.Path:
    """The simulated ALOHA station's parameter file."""
    return config_dir() / "station_sim.yaml"
