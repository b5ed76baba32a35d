"""Which human steps `recap label` forces positive."""

from __future__ import annotations

import numpy as np

from recap_core.data import DatasetWriter, load_frames_table
from recap_core.train.labelling import corrections


def _episode(writer, length, intervention, source):
    rng = np.random.default_rng(length)
    writer.add_episode(
        states=rng.normal(size=(length, 14)).astype(np.float32),
        actions=rng.normal(size=(length, 14)).astype(np.float32),
        images={c: np.zeros((length, 8, 8, 3), np.uint8) for c in writer.cameras},
        is_intervention=intervention,
        success=True,
        task="t",
        metadata={"source": source},
    )


def test_only_corrections_in_autonomous_episodes_are_forced(tmp_path):
    with DatasetWriter(tmp_path / "d", image_shape=(8, 8)) as writer:
        _episode(writer, 6, np.ones(6, bool), "demo")  # teleoperated demo: all human
        rollout = np.array([False, False, True, True, False])
        _episode(writer, 5, rollout, "rollout")  # a correction in the middle
    table = load_frames_table(tmp_path / "d")
    forced = corrections(tmp_path / "d", table)
    np.testing.assert_array_equal(forced, np.concatenate([np.zeros(6, bool), rollout]))
