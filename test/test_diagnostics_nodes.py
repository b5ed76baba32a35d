"""Every node publishes its entry on the absolute /diagnostics topic, as real processes under a namespace."""

from __future__ import annotations

import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from recap_bringup import station_sim_yaml
from station_nodes import EVERY_NODE
from recap_ros.conversions import diagnostic_values

pytestmark = pytest.mark.ros

NAMESPACE = "/station_diag"
NODES = EVERY_NODE


def entries(arrays, name: str) -> list:
    return [s for a in arrays for s in a.status if s.name == name]


def test_every_node_reports_on_the_absolute_topic_under_its_fully_qualified_name(node_process, probe, tmp_path):
    arrays = probe.subscribe(DiagnosticArray, "/diagnostics")
    gate_status = probe.subscribe(DiagnosticStatus, f"{NAMESPACE}/gate/status")
    procs = {}
    for name, (module, params) in NODES.items():
        if name == "recorder":
            params = {"output_dir": str(tmp_path / "bags")}
        procs[name] = node_process(module, params_files=[station_sim_yaml()], params=params, namespace=NAMESPACE)
    expected = {f"{NAMESPACE}/{name}: status": name for name in NODES}
    deadline = time.monotonic() + 90.0
    while time.monotonic() < deadline:
        snapshot = arrays.snapshot()[0]
        seen = {s.name for a in snapshot for s in a.status}
        # every node has reported, and with values (a station still rendering its first step says only
        # "no status published yet")
        if set(expected) <= seen and all(diagnostic_values(entries(snapshot, e)[-1]) for e in expected):
            break
        dead = [n for n, p in procs.items() if not p.alive()]
        assert not dead, f"{dead} exited: " + "\n".join(procs[n].output()[-2000:] for n in dead)
        time.sleep(0.2)
    received = arrays.snapshot()[0]
    missing = [n for e, n in expected.items() if not entries(received, e)]
    assert not missing, f"no /diagnostics entry from {missing}: " + "\n".join(
        f"--- {n}\n{procs[n].output()[-1500:]}" for n in missing
    )
    for entry_name in expected:
        latest = entries(received, entry_name)[-1]
        assert latest.hardware_id == "sim_aloha", (entry_name, latest.hardware_id)
        assert diagnostic_values(latest), f"{entry_name} reports no values"

    joy = entries(received, f"{NAMESPACE}/joy_teleop: status")[-1]  # nodes without a status topic report health
    assert int.from_bytes(joy.level, "little") == 1 and "no Joy message" in joy.message, joy.message

    # The gate's entry is its own gate/status; it arrives about once a second (diagnostic_updater's default).
    assert gate_status.wait_for(1, timeout=10.0)
    gate_name = f"{NAMESPACE}/gate: status"
    assert set(diagnostic_values(entries(received, gate_name)[-1])) == set(diagnostic_values(gate_status.last()))
    arrays.clear()
    assert arrays.wait_for(3, timeout=6.0, predicate=lambda a: any(s.name == gate_name for s in a.status))
    stamps = [s for m, s in zip(*arrays.snapshot()) if any(x.name == gate_name for x in m.status)]
    period = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    assert 0.6 < period < 1.6, f"gate /diagnostics every {period:.2f} s, expected about 1 s"
