"""The policy node's ``chunk_mode`` (naive | crossfade | rtc) as a real process: RTC-guided chunks with the delay
estimated online, the mode changed at runtime, a bad mode refused."""

from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState

from recap_core.models import get_config
from recap_core.models.untrained import save_untrained_checkpoint
from recap_ros.conversions import diagnostic_values

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    return save_untrained_checkpoint(
        tmp_path_factory.mktemp("rtc_node") / "policy", get_config("tiny"), tasks=["reach"]
    )


def values(collector) -> dict:
    msg = collector.last()
    return diagnostic_values(msg) if msg is not None else {}


def test_rtc_chunks_and_a_runtime_mode_change(node_process, probe, untrained, feeder):
    policy = node_process(
        "recap_policy_node.policy_node",
        params={
            "checkpoint": str(untrained),
            "task": "reach",
            "inference_threads": 1,
            "chunk_mode": "rtc",
            "replan_steps": 5,
        },
    )
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    commands = probe.subscribe(JointState, "policy/joint_command")
    assert commands.wait_for(10, timeout=60), policy.output()
    # every chunk after the first continues the plan: guided, with the delay measured so far
    assert status.wait_for(1, timeout=30, predicate=lambda m: int(diagnostic_values(m)["rtc_guided_chunks"]) >= 3), (
        values(status),
        policy.output(),
    )
    now = values(status)
    assert now["chunk_mode"] == "rtc" and int(now["inference_errors"]) == 0, now
    assert 0 <= int(now["inference_delay_ticks"]) < 50, now

    assert probe.set_parameters("/policy_node", {"chunk_mode": "naive"})[0].successful
    assert status.wait_for(1, timeout=5, predicate=lambda m: diagnostic_values(m)["chunk_mode"] == "naive")
    guided = int(values(status)["rtc_guided_chunks"])
    chunks = int(values(status)["chunks"])
    assert status.wait_for(1, timeout=20, predicate=lambda m: int(diagnostic_values(m)["chunks"]) >= chunks + 3)
    assert int(values(status)["rtc_guided_chunks"]) <= guided + 1  # at most one already in flight was guided

    refused = probe.set_parameters("/policy_node", {"chunk_mode": "smooth"})[0]
    assert not refused.successful and "chunk_mode" in refused.reason
    assert probe.get_parameter("/policy_node", "chunk_mode") == "naive"
    commands.clear()
    assert commands.wait_for(10, timeout=10) and policy.alive()


def test_a_bad_chunk_mode_at_startup_is_a_clear_error(node_process, untrained):
    policy = node_process(
        "recap_policy_node.policy_node", params={"checkpoint": str(untrained), "chunk_mode": "sideways"}
    )
    assert policy.wait_for_output("chunk_mode", timeout=30), policy.output()
    assert "expected one of ['naive', 'crossfade', 'rtc']" in policy.output()
