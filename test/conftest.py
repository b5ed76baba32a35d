"""Fixtures of the integration tests under test/ (the shared ones are in the root conftest.py)."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory) -> pathlib.Path:
    """One plain ``colcon build`` of src/ per test session: its install space."""
    from recap_ros.testing.colcon import build_workspace

    return build_workspace(ROOT, tmp_path_factory.mktemp("colcon_ws"))
