"""recap station --sim records every demonstration to its own labelled bag;
recap convert turns them into a dataset the training reader loads."""

from __future__ import annotations

import re

import pytest
import yaml

from recap_ros.testing.procs import run_recap as recap

pytestmark = pytest.mark.ros


def test_station_records_labelled_bags_that_convert_and_load(tmp_path):
    bags = tmp_path / "bags"
    run = recap("station", "--sim", "--episodes", "2", "--max-steps", "300", "--image-size", "96", "--record", bags)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    printed = re.findall(r"episode \d+: (\S+) seed \d+ (SUCCESS|FAILURE) after (\d+) steps", run.stdout)
    assert len(printed) == 2, run.stdout
    recorded = sorted(p for p in bags.iterdir() if p.is_dir())
    assert [p.name for p in recorded] == sorted(e for e, _, _ in printed)
    for episode_id, label, _ in printed:
        meta = yaml.safe_load((bags / episode_id / "metadata.yaml").read_text())
        custom = meta["rosbag2_bagfile_information"]["custom_data"]
        assert custom["label"] == label.lower() and custom["source"] == "demo"
        assert int(custom["recorder_dropped"]) == 0

    dataset = tmp_path / "dataset"
    conv = recap("convert", *recorded, "--out", dataset, "--no-progress")
    assert conv.returncode == 0, conv.stdout + conv.stderr

    from recap_core.data import RecapDataset, load_episodes

    episodes = load_episodes(dataset)
    assert [bool(e["success"]) for e in episodes] == [label == "SUCCESS" for _, label, _ in printed]
    for e, (_, _, steps) in zip(episodes, printed):
        assert abs(int(e["length"]) - int(steps)) <= 2, (e["length"], steps)  # one frame per command sent
    # every episode starts from the reset pose, not where the previous one ended (the gate re-anchors)
    import numpy as np

    from recap_core.data import load_frames_table
    from recap_sim.sim import AlohaSim

    start = AlohaSim().joint_positions()
    table = load_frames_table(dataset)
    states = np.asarray(table["observation.state"].to_pylist())
    firsts = np.flatnonzero(np.asarray(table["frame_index"]) == 0)
    assert len(firsts) == 2
    for row in firsts:
        arms = np.r_[0:6, 7:13]
        assert np.abs(states[row, arms] - start[arms]).max() < 0.1, (row, states[row], start)
    ds = RecapDataset(dataset, chunk_size=50, image_size=32)
    item = ds[len(ds) - 1]
    assert item["observation.images.base"].shape == (3, 32, 32) and item["action"].shape == (50, 14)
    assert item["action_is_pad"][1:].all()  # the last frame: one real action, then padding
