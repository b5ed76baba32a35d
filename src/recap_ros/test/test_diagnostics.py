"""The /diagnostics helper in-process: diagnostic_updater's names, hardware_id, period and levels."""

from __future__ import annotations

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from recap_ros.conversions import diagnostic, diagnostic_values

pytestmark = pytest.mark.ros


def level(status) -> int:
    return int.from_bytes(status.level, "little")


def entries(arrays, name: str) -> list:
    return [s for a in arrays for s in a.status if s.name == name]


def test_tasks_are_named_after_the_node_and_a_broken_task_is_an_error(probe):
    from recap_ros.diagnostics import ERROR, STALE, WARN, Diagnostics

    arrays = probe.subscribe(DiagnosticArray, "/diagnostics")
    diagnostics = Diagnostics(probe.node, hardware_id="", period_s=0.2)
    own = diagnostics.mirror(probe.publisher(DiagnosticStatus, "probe/status"))
    diagnostics.add("counters", lambda: diagnostic("ignored", {"ticks": 3}, level=WARN, message="slow"))
    diagnostics.add("broken", lambda: 1 / 0)

    assert probe.node.get_parameter("diagnostic_updater.period").value == 0.2
    assert arrays.wait_for(1, timeout=5.0, predicate=lambda a: len(a.status) == 3)
    first = {s.name: s for s in arrays.last().status}
    assert set(first) == {"/test_probe: status", "/test_probe: counters", "/test_probe: broken"}
    assert level(first["/test_probe: status"]) == STALE  # nothing published on probe/status yet
    counters = first["/test_probe: counters"]
    assert (level(counters), counters.message, diagnostic_values(counters)) == (WARN, "slow", {"ticks": "3"})
    assert counters.hardware_id == "none"  # diagnostic_updater's word for "no hardware"
    broken = first["/test_probe: broken"]
    assert level(broken) == ERROR and "division by zero" in broken.message
    assert diagnostics.task_errors >= 1

    own.publish(diagnostic("probe", {"state": "fine"}, message="all good", hardware_id="arm_7"))
    assert arrays.wait_for(
        1,
        timeout=5.0,
        predicate=lambda a: any(s.name == "/test_probe: status" and s.message == "all good" for s in a.status),
    )
    mirrored = entries(arrays.snapshot()[0], "/test_probe: status")[-1]
    assert (level(mirrored), mirrored.message, mirrored.hardware_id) == (0, "all good", "arm_7")
    assert diagnostic_values(mirrored) == {"state": "fine"}
