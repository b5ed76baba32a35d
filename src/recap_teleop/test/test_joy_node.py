"""The joy node as a process: buttons label episodes (with the real episode manager), deadman jogs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool

from recap_ros.conversions import diagnostic_values, joint_positions, joint_state
from recap_core.station import JOINT_NAMES
from recap_teleop.joy_mapping import DEFAULT_MAPPING_FILE, JoyMapping

pytestmark = pytest.mark.ros

MAPPING = JoyMapping.from_yaml(DEFAULT_MAPPING_FILE)
BUTTON = dict(MAPPING.actions)


class Pad:
    """A gamepad as the joy driver publishes it: repeating the current state at 20 Hz."""

    def __init__(self, probe):
        self.pub = probe.publisher(Joy, "joy")
        self.buttons = [0] * 11
        self.axes = [0.0] * 8
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            with self._lock:
                msg = Joy(axes=list(self.axes), buttons=list(self.buttons))
            self.pub.publish(msg)
            time.sleep(0.05)

    def set(self, button=None, pressed=True, axis=None, value=0.0):
        with self._lock:
            if button is not None:
                self.buttons[button] = int(pressed)
            if axis is not None:
                self.axes[axis] = value

    def press(self, button, hold_s=0.2):
        self.set(button, True)
        time.sleep(hold_s)
        self.set(button, False)
        time.sleep(0.15)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)


def wait_status(collector, timeout=8.0, **expected):
    ok = collector.wait_for(
        1, timeout=timeout, predicate=lambda m: all(diagnostic_values(m).get(k) == v for k, v in expected.items())
    )
    last = collector.last()
    assert ok, f"no episode/status with {expected}; last {diagnostic_values(last) if last else None}"


def test_buttons_start_and_label_episodes(node_process, probe):
    status = probe.subscribe(DiagnosticStatus, "episode/status", probe.LATCHED)
    manager = node_process("recap_teleop.episode_manager_node", params={"task": "transfer the cube"})
    joy = node_process("recap_teleop.joy_node")
    assert manager.wait_for_output("episode manager up", 30), manager.output()
    assert joy.wait_for_output("joy teleop up", 30), joy.output()
    pad = Pad(probe)
    try:
        assert probe.wait_for_subscribers(pad.pub)
        wait_status(status, state="idle")
        time.sleep(0.5)  # the joy node discovers the episode services
        pad.press(BUTTON["start"])
        wait_status(status, state="running")
        pad.press(BUTTON["success"])
        wait_status(status, state="success", label="success")
        wait_status(status, state="idle", last_label="success")
        pad.press(BUTTON["start"])
        wait_status(status, state="running", last_label="success")
        pad.press(BUTTON["abort"])
        wait_status(status, state="aborted", label="aborted")
    finally:
        pad.stop()
    assert joy.wait_for_output("episode/success: episode", timeout=2), joy.output()


def test_deadman_engages_and_jogs_from_the_measured_position(node_process, probe):
    engage = probe.subscribe(Bool, "teleop/engage")
    commands = probe.subscribe(JointState, "teleop/joint_command")
    states = probe.publisher(JointState, "joint_states")
    joy = node_process("recap_teleop.joy_node", params={"joy_timeout_s": 0.5})
    assert joy.wait_for_output("joy teleop up", 30), joy.output()
    measured = np.zeros(14)
    measured[6] = measured[13] = 0.5
    pad = Pad(probe)
    try:
        assert probe.wait_for_subscribers(states) and probe.wait_for_subscribers(pad.pub)
        for _ in range(5):
            states.publish(joint_state(measured))
            time.sleep(0.02)
        pad.set(MAPPING.deadman_button, True)
        assert engage.wait_for(1, timeout=5, predicate=lambda m: m.data is True), joy.output()
        assert commands.wait_for(5, timeout=5)
        np.testing.assert_allclose(joint_positions(commands.snapshot()[0][0]), measured)
        right_waist = JOINT_NAMES.index("right_waist")
        pad.set(axis=0, value=1.0)  # full deflection: right_waist at 0.8 rad/s
        time.sleep(0.5)
        pad.set(axis=0, value=0.0)
        time.sleep(0.1)
        moved = joint_positions(commands.last())[right_waist] - measured[right_waist]
        assert 0.2 < moved < 0.6, f"right_waist moved {moved:.3f} rad in ~0.5 s at 0.8 rad/s"
        n = len(commands)
        assert commands.wait_for(n + 10, timeout=2), "commands stream at the control rate while held"
        pad.set(MAPPING.deadman_button, False)
        assert engage.wait_for(1, timeout=5, predicate=lambda m: m.data is False)
        time.sleep(0.2)
        n = len(commands)
        time.sleep(0.3)
        assert len(commands) == n, "no teleop commands after the release"
        # The pad disappearing while held releases after joy_timeout_s.
        n_true, n_false = (sum(m.data is v for m in engage.snapshot()[0]) for v in (True, False))
        pad.set(MAPPING.deadman_button, True)
        assert engage.wait_for(n_true + 1, timeout=5, predicate=lambda m: m.data is True)
        pad.stop()
        assert engage.wait_for(n_false + 1, timeout=3, predicate=lambda m: m.data is False), joy.output()
        assert joy.wait_for_output("no Joy message", timeout=2)
    finally:
        pad.stop()
