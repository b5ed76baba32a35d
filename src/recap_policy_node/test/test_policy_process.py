"""The policy node with its model in a child process (``inference_process``) and a real-time control thread
(``control_priority``): real nodes, real topics, the child a real ``recap serve``."""

from __future__ import annotations

import os
import signal
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState

from recap_ros.conversions import diagnostic_values
from recap_ros.testing.probe import latest_diagnostic as latest_status

pytestmark = pytest.mark.ros


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone too
        return f.read().split(") ", 1)[1][0] != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def thread_scheduling(pid: int, tid: int) -> tuple[int, int]:
    """(policy, rt_priority) of one thread, from /proc (fields 41 and 40 of its stat)."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().split(") ", 1)[1].split()
    return int(fields[38]), int(fields[37])


def thread_name(pid: int, tid: int) -> str:
    with open(f"/proc/{pid}/task/{tid}/comm") as f:
        return f.read().strip()


def fifo_allowed() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def test_the_model_runs_in_a_child_that_is_restarted_when_it_dies_and_stopped_with_the_node(
    node_process, probe, feeder, tiny_checkpoints
):
    policy = node_process(
        "recap_policy_node.policy_node",
        params={
            "checkpoint": str(tiny_checkpoints["policy_a"]),
            "inference_process": True,
            "control_priority": 50,
            "task": "reach",
            "inference_threads": 1,
        },
    )
    commands = probe.subscribe(JointState, "policy/joint_command")
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    assert commands.wait_for(20, timeout=60), policy.output()
    values = latest_status(status, timeout=10, predicate=lambda m: diagnostic_values(m)["inference_process_pid"])
    child = int(values["inference_process_pid"])
    assert child != policy.pid and alive(child), values
    with open(f"/proc/{child}/stat") as f:  # the node's child, niced below it (inference_nice 10)
        fields = f.read().split(") ", 1)[1].split()
    assert int(fields[1]) == policy.pid and int(fields[16]) == 10, fields
    assert float(values["hop_ms"]) >= 0 and values["policy_server"] == "", values
    expected = "fifo 50" if fifo_allowed() else "other (SCHED_FIFO 50 refused"
    assert values["control_scheduling"].startswith(expected), values
    if fifo_allowed():
        # the inference thread and the connection's threads (the reply is parsed on one) one below the control
        # thread: the kernel's own record, for each thread the node names
        values = latest_status(status, timeout=10, predicate=lambda m: diagnostic_values(m)["inference_scheduling"])
        assert values["inference_scheduling"].startswith("fifo 49 (threads "), values
        threads = values["inference_scheduling"].split("threads ")[1].rstrip(")").split(",")
        assert len(threads) >= 2, values  # the inference thread and at least the receiving thread
        for tid in threads:
            assert thread_scheduling(policy.pid, int(tid)) == (1, 49), (tid, values)  # SCHED_FIFO 49
        # the middleware's receiving threads too (Fast DDS here: dds.udp.<port>, dds.shm.<port>)
        assert values["middleware_scheduling"].startswith("fifo 49 (threads "), values
        raised = values["middleware_scheduling"].split("threads ")[1].rstrip(")").split(",")
        names = {thread_name(policy.pid, int(tid)) for tid in raised}
        assert any(n.startswith("dds.udp.") for n in names) and any(n.startswith("dds.shm.") for n in names), names
        for tid in raised:
            assert thread_scheduling(policy.pid, int(tid)) == (1, 49), (tid, values)

    # the child dies: the node holds, says why, and starts a new one
    os.kill(child, signal.SIGKILL)
    held = latest_status(status, timeout=10, predicate=lambda m: "inference process" in diagnostic_values(m)["reason"])
    assert held["state"] == "holding" and f"pid {child}" in held["reason"], held
    values = latest_status(
        status,
        timeout=60,
        predicate=lambda m: (
            diagnostic_values(m)["inference_process_pid"] not in ("", str(child))
            and diagnostic_values(m)["state"] == "running"
        ),
    )
    assert int(values["inference_process_restarts"]) >= 1, values
    replacement = int(values["inference_process_pid"])
    commands.clear()
    assert commands.wait_for(20, timeout=20), policy.output()

    # back in-process at runtime: the child is stopped
    probe.set_parameters("/policy_node", {"inference_process": False})
    values = latest_status(status, timeout=30, predicate=lambda m: diagnostic_values(m)["inference_process_pid"] == "")
    assert wait_gone(replacement, 10), "the inference process outlived the switch to in-process inference"
    commands.clear()
    assert commands.wait_for(20, timeout=20), policy.output()

    # and out again; stopping the node stops its child
    probe.set_parameters("/policy_node", {"inference_process": True})
    values = latest_status(status, timeout=60, predicate=lambda m: diagnostic_values(m)["inference_process_pid"])
    last = int(values["inference_process_pid"])
    assert policy.stop() == 0, policy.output()
    assert wait_gone(last, 15), "the inference process outlived the node"


def test_an_inference_process_that_cannot_load_leaves_the_node_up_with_the_error(
    node_process, probe, feeder, tiny_checkpoints
):
    policy = node_process(
        "recap_policy_node.policy_node",
        params={"checkpoint": str(tiny_checkpoints["value"]), "inference_process": True, "task": "reach"},
    )
    status = probe.subscribe(DiagnosticStatus, "policy/status", probe.LATCHED)
    values = latest_status(status, timeout=60, predicate=lambda m: diagnostic_values(m)["reason"])
    assert values["level"] == 2 and "value checkpoint" in values["reason"], values
    assert policy.alive(), policy.output()
