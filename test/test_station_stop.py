"""``recap station`` under signals and wrong checkpoints: a requested stop is clean and quick, and a
station never runs episodes without the model it was given."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest

from recap_ros.testing.procs import test_environment
from recap_recorder.bag_info import read_info

pytestmark = pytest.mark.ros

RECAP = [sys.executable, "-m", "recap_core.cli"]


def wait_for_text(path, text: str, proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_station_and_closes_the_open_bag_as_aborted(tmp_path, sig):
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    cmd = [*RECAP, "station", "--sim", "--episodes", "3", "--image-size", "64", "--record", str(tmp_path / "bags")]
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=test_environment())
        try:
            assert wait_for_text(out, "station: task", proc, timeout=120), err.read_text()
            deadline = time.monotonic() + 30
            while not list((tmp_path / "bags").glob("*/*.mcap")) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # well inside the first episode
            proc.send_signal(sig)
            t0 = time.monotonic()
            code = proc.wait(timeout=30)
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr_text = err.read_text()
    assert code == 0, stderr_text
    assert took <= 2.0, f"took {took:.2f} s to stop"
    assert "Traceback" not in stderr_text and "Exception" not in stderr_text, stderr_text
    assert f"stopped by {signal.Signals(sig).name}" in stderr_text
    (bag,) = [p.parent for p in (tmp_path / "bags").glob("*/metadata.yaml")]
    info = read_info(bag)
    assert info.label == "aborted", info.custom_data


def run_station(*args, timeout: float = 180):
    return subprocess.run(
        [*RECAP, "station", "--sim", "--episodes", "1", "--image-size", "64", *args],
        capture_output=True,
        text=True,
        env=test_environment(),
        timeout=timeout,
    )


def test_a_station_refuses_to_start_with_a_checkpoint_of_the_wrong_kind(tiny_checkpoints, tmp_path):
    result = run_station("--policy", str(tiny_checkpoints["value"]), "--record", str(tmp_path / "bags"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--policy" in lines[0] and "value checkpoint" in lines[0], result.stderr
    assert not (tmp_path / "bags").exists() or not any((tmp_path / "bags").iterdir())
    result = run_station("--value", str(tiny_checkpoints["policy_a"]))
    assert result.returncode != 0 and "--value" in result.stderr and "policy checkpoint" in result.stderr


def test_a_station_refuses_to_start_with_a_policy_whose_weights_do_not_load(tiny_checkpoints, tmp_path):
    broken = shutil.copytree(tiny_checkpoints["policy_a"], tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = run_station("--policy", str(broken), "--record", str(tmp_path / "bags"))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("recap station:")]
    assert len(errors) == 1 and "--policy" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "episode 0" not in result.stdout
