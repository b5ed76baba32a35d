"""Fault injection against the value node as a real process: future stamps, runtime parameters,
checkpoints that do not fit the station, stopping."""

from __future__ import annotations

import json
import shutil
import signal
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from std_msgs.msg import Float32

from recap_ros.conversions import diagnostic_values
from recap_ros.testing.probe import latest_diagnostic as latest_status
from recap_ros.qos import SENSOR

pytestmark = pytest.mark.ros

MAX_AGE_S = 0.5  # the node's default max_observation_age_ms


def start_value(node_process, checkpoint, **params):
    proc = node_process(
        "recap_value_node.value_node", params={"checkpoint": str(checkpoint), "task": "reach", **params}
    )
    assert proc.wait_for_output("loaded value checkpoint", timeout=60), proc.output()
    return proc


@pytest.mark.parametrize("lead_s", [1.0, 3600.0])
def test_a_future_stamp_does_not_keep_a_stopped_station_fresh(node_process, probe, feeder, tiny_checkpoints, lead_s):
    node = start_value(node_process, tiny_checkpoints["value"])
    estimates = probe.subscribe(Float32, "value/estimate", SENSOR)
    status = probe.subscribe(DiagnosticStatus, "value/status", probe.LATCHED)
    assert estimates.wait_for(5, timeout=60), node.output()
    feeder.running.clear()
    time.sleep(0.05)
    feeder.publish_once(stamp_offset_s=lead_s)
    stopped_at = time.monotonic()
    time.sleep(MAX_AGE_S + 1.5)
    _, received = estimates.snapshot()
    last = max(received) - stopped_at
    assert last <= MAX_AGE_S + 0.2, f"published a value {last:.2f} s after the station stopped"
    values = latest_status(status, timeout=3)
    assert int(values["future_stamps"]) >= 1 and int(values["skipped_stale"]) >= 1, values


def test_rate_changes_at_runtime(node_process, probe, feeder, tiny_checkpoints):
    node = start_value(node_process, tiny_checkpoints["value"])
    estimates = probe.subscribe(Float32, "value/estimate", SENSOR)
    assert estimates.wait_for(5, timeout=60), node.output()

    def rate(window: float = 2.0) -> float:
        estimates.clear()
        time.sleep(window)
        return len(estimates) / window

    assert rate() > 6.0  # 10 Hz by default
    assert probe.set_parameters("/value_node", {"rate_hz": 2.0})[0].successful
    time.sleep(0.5)
    assert 1.0 <= rate(3.0) <= 3.0
    assert not probe.set_parameters("/value_node", {"rate_hz": 0.0})[0].successful
    assert probe.get_parameter("/value_node", "rate_hz") == 2.0


def test_a_checkpoint_for_other_cameras_is_refused_and_the_old_one_keeps_running(
    node_process, probe, feeder, tiny_checkpoints, tmp_path
):
    node = start_value(node_process, tiny_checkpoints["value"])
    estimates = probe.subscribe(Float32, "value/estimate", SENSOR)
    status = probe.subscribe(DiagnosticStatus, "value/status", probe.LATCHED)
    assert estimates.wait_for(5, timeout=60), node.output()
    other = shutil.copytree(tiny_checkpoints["value"], tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["model"]["cameras"] = ["top"]
    (other / "config.json").write_text(json.dumps(config))
    result = probe.set_parameters("/value_node", {"checkpoint": str(other)})[0]
    assert not result.successful and "'top'" in result.reason, result.reason
    result = probe.set_parameters("/value_node", {"checkpoint": str(tiny_checkpoints["policy_a"])})[0]
    assert not result.successful and "policy checkpoint" in result.reason, result.reason
    values = latest_status(status, predicate=lambda m: "refused" in diagnostic_values(m).get("error", ""))
    assert values["level"] == 2
    estimates.clear()
    assert estimates.wait_for(5, timeout=5), "the old value model must keep publishing"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_is_clean(node_process, probe, feeder, tiny_checkpoints, sig):
    node = start_value(node_process, tiny_checkpoints["value"])
    estimates = probe.subscribe(Float32, "value/estimate", SENSOR)
    assert estimates.wait_for(3, timeout=60), node.output()
    node.proc.send_signal(sig)
    t0 = time.monotonic()
    code = node.proc.wait(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert code == 0 and "Traceback" not in node.output(), node.output()
