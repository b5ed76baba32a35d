"""recap_ros.testing.shm: Fast DDS segments of dead processes are removed, those of live ones kept."""

from __future__ import annotations

import fcntl
import os

from recap_ros.testing.shm import remove_stale_segments


def touch(path, size=0):
    path.write_bytes(b"\0" * size)
    return path


def test_only_segments_whose_lock_nobody_holds_are_removed(tmp_path):
    stale = [touch(tmp_path / "fastdds_0123abcd", 4096), touch(tmp_path / "fastdds_0123abcd_el")]
    port = [
        touch(tmp_path / "fastdds_port7411", 512),
        touch(tmp_path / "fastdds_port7411_el"),
        touch(tmp_path / "sem.fastdds_port7411_mutex"),
    ]
    jazzy = [touch(tmp_path / "fastrtps_00ff00ff00ff00ff", 4096), touch(tmp_path / "fastrtps_00ff00ff00ff00ff_el")]
    live = [touch(tmp_path / "fastdds_feedbeef", 4096), touch(tmp_path / "fastdds_feedbeef_el")]
    other = touch(tmp_path / "not_fastdds_el")
    holder = os.open(live[1], os.O_RDWR)  # a live participant holds its lock file
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        removed = remove_stale_segments(tmp_path)
    finally:
        os.close(holder)
    assert sorted(removed) == sorted(p.name for p in stale + port + jazzy)
    assert not any(p.exists() for p in stale + port + jazzy)
    assert all(p.exists() for p in live) and other.exists()
    assert remove_stale_segments(tmp_path / "missing") == []  # no /dev/shm: nothing to do
