"""scripts/scene_probe.py: the supervised scene-reading probe runs and reports what it measured."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[3] / "scripts" / "scene_probe.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("scene_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scene_probe_reports_errors_against_the_blind_baseline(probe, capsys):
    assert (
        probe.main(
            [
                "--config",
                "tiny",
                "--vision-stem",
                "conv",
                "--image-conditioning",
                "on",
                "--scenes",
                "4",
                "--held-out",
                "3",
                "--steps",
                "3",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["vision_stem"] == "conv" and result["image_conditioning"] is True and result["scenes"] == 4
    for split in ("train", "held_out"):
        figures = [
            result[f"{split}_{name}"] for name in ("error", "baseline_mean_chunk", "sample_spread", "target_spread")
        ]
        assert all(math.isfinite(f) and f >= 0 for f in figures)
        # the operator's first chunk depends on where the cube is, so the blind baseline is not zero
        assert result[f"{split}_baseline_mean_chunk"] > 0.05 and result[f"{split}_target_spread"] > 0.05


def test_scene_probe_collects_the_operator_chunk_from_the_start_pose(probe):
    from recap_sim.sim import AlohaSim

    sim = AlohaSim("transfer_cube", width=32, height=32)
    try:
        data = probe.collect(sim, [3, 4], horizon=5)
    finally:
        sim.close()
    assert data["actions"].shape == (2, 5, 14) and data["state"].shape == (2, 14)
    assert set(data["images"]) == set(sim.camera_names) and data["images"]["base"].shape == (2, 3, 32, 32)
    # same start pose, different cubes: the states agree, the operator's commands do not
    assert float((data["state"][0] - data["state"][1]).abs().max()) < 1e-9
    assert float((data["actions"][0, -1] - data["actions"][1, -1]).abs().max()) > 1e-3
