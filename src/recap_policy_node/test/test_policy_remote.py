"""The policy node inferring on a policy server (``policy_server``): a real ``recap serve`` process on a real
localhost socket drives its commands; a stalled server makes it hold, a restarted one is reconnected."""

from __future__ import annotations

import json
import math
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState

from recap_core.serving.testing import ServeProcess
from recap_ros.conversions import diagnostic_values
from recap_ros.testing.probe import latest_diagnostic as latest_status

pytestmark = pytest.mark.ros

CHUNK_S = 50 * 0.02  # a tiny checkpoint's chunk: 50 ticks at 50 Hz


def checkpoint_id(path) -> str:
    return json.loads((path / "provenance.json").read_text())["checkpoint_id"]


def stamp_s(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def test_a_policy_server_drives_the_node_and_a_stall_makes_it_hold(
    node_process, probe, feeder, tiny_checkpoints, tmp_path
):
    logs = tmp_path / "serve"
    server = ServeProcess(tiny_checkpoints["policy_b"], log_dir=logs)
    restarted = None
    try:
        policy = node_process(
            "recap_policy_node.policy_node",
            params={
                "checkpoint": str(tiny_checkpoints["policy_a"]),  # kept for when policy_server is cleared
                "policy_server": f"127.0.0.1:{server.port}",
                "policy_server_timeout_ms": 400.0,
                "task": "reach",
                "inference_threads": 1,
            },
        )
        commands = probe.subscribe(JointState, "policy/joint_command")
        status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
        assert commands.wait_for(20, timeout=60), policy.output() + server.output()
        values = latest_status(
            status, timeout=10, predicate=lambda m: math.isfinite(float(diagnostic_values(m)["hop_ms"]))
        )
        assert values["policy_server"] == server.url and values["policy_server_state"] == "connected", values
        assert values["checkpoint_id"] == checkpoint_id(tiny_checkpoints["policy_b"]), values
        assert 0 <= float(values["hop_ms"]) < float(values["latency_ms"]), values

        # a stalled server: past the current chunk nothing is commanded (the gate and the station hold)
        server.pause()
        paused_at = time.time()  # the node clock is wall time: command stamps say when it decided
        time.sleep(CHUNK_S + 1.5)
        msgs, _ = commands.snapshot()
        last = max(stamp_s(m) for m in msgs) - paused_at
        assert last <= CHUNK_S + 0.15, f"commanded {last:.2f} s into the stall, beyond the current chunk"
        values = latest_status(status)
        assert int(values["inference_errors"]) >= 1 and int(values["policy_server_timeouts"]) >= 1, values
        assert values["policy_server_state"].startswith("disconnected"), values
        assert values["state"] == "holding" and "the last inference failed" in values["reason"], values
        assert values["level"] == 1, values  # a warning on /diagnostics, not "waiting for a chunk"
        commands.clear()
        time.sleep(0.5)
        assert len(commands) == 0, "commanded while the server stalled"

        server.resume()  # reconnects by itself
        assert commands.wait_for(10, timeout=20), policy.output()

        # a restarted server (same port, same checkpoint) is reconnected
        port = server.port
        server.stop()
        restarted = ServeProcess(tiny_checkpoints["policy_b"], port=port, log_dir=logs)
        commands.clear()
        assert commands.wait_for(10, timeout=30), policy.output() + restarted.output()
        values = latest_status(status)
        assert int(values["policy_server_connects"]) >= 3, values

        # runtime: a malformed address is refused; empty goes back to the checkpoint in-process
        refused = probe.set_parameters("/policy_node", {"policy_server": "http://gpu-box:8000"})[0]
        assert not refused.successful and "websocket" in refused.reason
        assert probe.set_parameters("/policy_node", {"policy_server": ""})[0].successful
        local_id = checkpoint_id(tiny_checkpoints["policy_a"])
        latest_status(
            status,
            timeout=60,
            predicate=lambda m: (
                diagnostic_values(m)["checkpoint_id"] == local_id and diagnostic_values(m)["policy_server"] == ""
            ),
        )
        commands.clear()
        assert commands.wait_for(10, timeout=30), policy.output()
        assert policy.alive()
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()


def test_an_unreachable_server_at_startup_is_waited_for(node_process, probe, feeder, tiny_checkpoints, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = node_process(
        "recap_policy_node.policy_node",
        params={"policy_server": f"ws://127.0.0.1:{port}", "task": "reach", "inference_threads": 1},
    )
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    commands = probe.subscribe(JointState, "policy/joint_command")
    values = latest_status(status, timeout=30, predicate=lambda m: diagnostic_values(m)["state"] == "no_checkpoint")
    assert "cannot connect" in values["reason"] and values["level"] == 2, values
    with ServeProcess(tiny_checkpoints["policy_a"], port=port, log_dir=tmp_path / "serve") as server:
        assert commands.wait_for(10, timeout=60), policy.output() + server.output()
    assert policy.alive()
