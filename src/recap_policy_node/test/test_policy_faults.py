"""Fault injection against the policy node as a real process: future stamps, runtime parameters,
checkpoints that do not fit the station, stopping before the first plan."""

from __future__ import annotations

import json
import shutil
import signal
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import JointState

from recap_ros.conversions import diagnostic_values
from recap_ros.testing.probe import latest_diagnostic as latest_status

pytestmark = pytest.mark.ros

MAX_AGE_S = 0.25  # the node's default max_observation_age_ms


def checkpoint_id(path) -> str:
    return json.loads((path / "provenance.json").read_text())["checkpoint_id"]


def start_policy(node_process, checkpoint, **params):
    proc = node_process(
        "recap_policy_node.policy_node",
        params={"checkpoint": str(checkpoint), "task": "reach", "inference_threads": 1, **params},
    )
    assert proc.wait_for_output("loaded policy checkpoint", timeout=60), proc.output()
    return proc


@pytest.mark.parametrize("lead_s", [1.0, 3600.0])
def test_a_future_stamp_does_not_keep_a_stopped_station_fresh(node_process, probe, feeder, tiny_checkpoints, lead_s):
    policy = start_policy(node_process, tiny_checkpoints["policy_a"])
    commands = probe.subscribe(JointState, "policy/joint_command")
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    assert commands.wait_for(20, timeout=60), policy.output()
    feeder.running.clear()
    time.sleep(0.05)
    stopped_at = time.time()  # the node clock is wall time: its command stamps say when it decided
    feeder.publish_once(stamp_offset_s=lead_s)  # one observation from the future, then every stream stops
    time.sleep(MAX_AGE_S + 1.5)
    msgs, _ = commands.snapshot()
    last = max(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in msgs) - stopped_at
    assert last <= MAX_AGE_S + 0.1, f"commanded {last:.2f} s after the station stopped"
    values = latest_status(status)
    assert int(values["future_stamps"]) >= 1 and values["state"] == "holding", values
    assert policy.alive()


def test_max_observation_age_changes_at_runtime(node_process, probe, feeder, tiny_checkpoints):
    policy = start_policy(node_process, tiny_checkpoints["policy_a"])
    commands = probe.subscribe(JointState, "policy/joint_command")
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    feeder.stamp_offset_s = -0.15  # every observation is 150 ms old when it arrives
    assert commands.wait_for(20, timeout=60), policy.output()
    result = probe.set_parameters("/policy_node", {"max_observation_age_ms": 100.0})[0]
    assert result.successful, result.reason
    values = latest_status(
        status,
        predicate=lambda m: (
            diagnostic_values(m).get("state") == "holding"
            and float(diagnostic_values(m)["max_observation_age_ms"]) == 100.0
        ),
    )
    assert "stale observation" in values["reason"]
    time.sleep(0.3)
    commands.clear()
    time.sleep(0.5)
    assert len(commands) == 0, "commanded from observations older than the new limit"
    assert probe.set_parameters("/policy_node", {"max_observation_age_ms": 250.0})[0].successful
    assert commands.wait_for(10, timeout=30), "the wider limit should let the node command again"


def edited_checkpoint(source, destination, **model_changes):
    shutil.copytree(source, destination)
    config = json.loads((destination / "config.json").read_text())
    config["model"].update(model_changes)
    (destination / "config.json").write_text(json.dumps(config))
    return destination


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"cameras": ["base", "left_wrist", "top"]}, "'top'"),
        ({"state_dim": 7}, "state of 7 joints"),
        ({"action_dim": 16}, "commands 16 joints"),
    ],
)
def test_a_checkpoint_that_does_not_fit_the_station_is_refused_and_the_old_one_keeps_running(
    node_process, probe, feeder, tiny_checkpoints, tmp_path, changes, reason
):
    policy = start_policy(node_process, tiny_checkpoints["policy_a"])
    commands = probe.subscribe(JointState, "policy/joint_command")
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    assert commands.wait_for(20, timeout=60), policy.output()
    other = edited_checkpoint(tiny_checkpoints["policy_b"], tmp_path / "other", **changes)
    result = probe.set_parameters("/policy_node", {"checkpoint": str(other)})[0]
    assert not result.successful and reason in result.reason, result.reason
    assert probe.get_parameter("/policy_node", "checkpoint") == str(tiny_checkpoints["policy_a"])
    values = latest_status(status, predicate=lambda m: "refused" in diagnostic_values(m).get("reason", ""))
    assert values["level"] == 2 and reason in values["reason"]
    assert values["checkpoint_id"] == checkpoint_id(tiny_checkpoints["policy_a"])
    commands.clear()
    assert commands.wait_for(20, timeout=10), "the old policy must keep commanding"


def test_a_value_checkpoint_is_refused_as_the_policy(node_process, probe, tiny_checkpoints):
    start_policy(node_process, tiny_checkpoints["policy_a"])
    result = probe.set_parameters("/policy_node", {"checkpoint": str(tiny_checkpoints["value"])})[0]
    assert not result.successful and "value checkpoint" in result.reason


def test_weights_that_fail_to_load_leave_the_old_policy_running_with_an_error(
    node_process, probe, feeder, tiny_checkpoints, tmp_path
):
    policy = start_policy(node_process, tiny_checkpoints["policy_a"])
    commands = probe.subscribe(JointState, "policy/joint_command")
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    assert commands.wait_for(20, timeout=60), policy.output()
    broken = shutil.copytree(tiny_checkpoints["policy_b"], tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert probe.set_parameters("/policy_node", {"checkpoint": str(broken)})[0].successful  # config.json is fine
    values = latest_status(
        status, timeout=30, predicate=lambda m: "cannot load" in diagnostic_values(m).get("reason", "")
    )
    assert values["level"] == 2 and values["checkpoint_id"] == checkpoint_id(tiny_checkpoints["policy_a"])
    commands.clear()
    assert commands.wait_for(20, timeout=10), "the old policy must keep commanding"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_before_the_first_plan_is_clean(node_process, tiny_checkpoints, sig):
    policy = start_policy(node_process, tiny_checkpoints["policy_a"])
    policy.proc.send_signal(sig)
    t0 = time.monotonic()
    code = policy.proc.wait(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert code == 0 and "Traceback" not in policy.output(), policy.output()


@st.composite
def hostile_image(draw):
    from sensor_msgs.msg import Image

    msg = Image(
        height=draw(st.integers(0, 8)),
        width=draw(st.integers(0, 8)),
        encoding=draw(st.sampled_from(["rgb8", "bgr8", "mono8", "rgba8", "", "16UC1"])),
        step=draw(st.integers(0, 40)),
    )
    msg.data = bytes(draw(st.integers(0, 255)) for _ in range(draw(st.integers(0, 200))))
    return msg


def valid_image(msg) -> bool:
    from recap_ros.images import MessageError, image_to_rgb

    try:
        image_to_rgb(msg)
    except MessageError:
        return False
    return True


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images=st.lists(hostile_image(), min_size=20, max_size=40))
def test_malformed_images_are_rejected_counted_and_the_node_keeps_commanding(
    node_process, probe, feeder, tiny_checkpoints, images
):
    from sensor_msgs.msg import Image

    state = getattr(probe, "_policy_fault_state", None)
    if state is None:  # one node for every example: starting it is the slow part
        policy = start_policy(node_process, tiny_checkpoints["policy_a"])
        state = probe._policy_fault_state = {
            "policy": policy,
            "commands": probe.subscribe(JointState, "policy/joint_command"),
            "status": probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED),
            "camera": probe.publisher(Image, "camera/base/image_raw"),
        }
        assert state["commands"].wait_for(20, timeout=60), policy.output()
    state["status"].clear()
    before = int(latest_status(state["status"])["rejected_images"])
    bad = 0
    for msg in images:
        msg.header.stamp = probe.node.get_clock().now().to_msg()
        state["camera"].publish(msg)
        bad += not valid_image(msg)
        time.sleep(0.02)  # sensor subscriptions are best effort, depth 10: a burst beyond that may drop
    time.sleep(0.3)
    state["status"].clear()
    after = int(latest_status(state["status"])["rejected_images"])  # the status goes out at 2 Hz
    assert after - before == bad
    assert state["policy"].alive(), state["policy"].output()
    state["commands"].clear()
    assert state["commands"].wait_for(10, timeout=10), "valid observations must still drive the policy"
