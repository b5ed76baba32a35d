"""Fault injection against the gate as a real process: runtime parameter changes, clock games,
stale and future joint states, hostile commands. The invariants: no output outside the joint
limits, no output faster than the velocity limit in wall time, no anchor on a pose measured
before the episode began."""

from __future__ import annotations

import datetime as dt
import math
import threading
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool

from recap_ros.conversions import diagnostic, diagnostic_values, joint_positions, joint_state, seconds_to_stamp
from recap_ros.qos import LATCHED, SENSOR
from recap_core.station import JOINT_NAMES, StationConfig

pytestmark = pytest.mark.ros

STATION = StationConfig.sim_aloha()
LOWER, UPPER = STATION.lower_array, STATION.upper_array
HOME = (LOWER + UPPER) / 2
FAR_LOW = LOWER + 0.1 * (UPPER - LOWER)
FAR_HIGH = UPPER - 0.1 * (UPPER - LOWER)
MAX_STEP = STATION.max_velocity_array / STATION.control_rate_hz  # per 20 ms period


def now_stamp(probe, offset_s: float = 0.0):
    return seconds_to_stamp(probe.node.get_clock().now().nanoseconds * 1e-9 + offset_s)


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def step_ratios(commands, limit_scale: float = 1.0) -> np.ndarray:
    """Per consecutive output pair: max over joints of |dq| / (max_velocity * scale * dt), dt from the stamps."""
    q = np.stack([joint_positions(m) for m in commands])
    t = np.array([stamp_ns(m) for m in commands], dtype=np.int64)
    dt_s = np.diff(t) * 1e-9
    assert np.all(dt_s > 0), "output stamps must increase"
    dq = np.abs(np.diff(q, axis=0))
    return (dq / (STATION.max_velocity_array * limit_scale * dt_s[:, None])).max(axis=1)


def assert_within_limits(commands, limit_scale: float = 1.0) -> None:
    q = np.stack([joint_positions(m) for m in commands])
    assert np.all(q >= LOWER - 1e-9) and np.all(q <= UPPER + 1e-9), "an output left the joint limits"
    if len(commands) > 1:
        worst = step_ratios(commands, limit_scale).max()
        assert worst <= 1.0 + 1e-6, f"an output moved at {worst:.3f}x the velocity limit"


class Driver:
    """joint_states (stamped now) and a policy alternating between two far targets every 0.3 s, at 50 Hz."""

    def __init__(self, probe, policy: bool = True):
        self.probe = probe
        self.states = probe.publisher(JointState, "joint_states")
        self.policy = probe.publisher(JointState, "policy/joint_command")
        self.policy_on = policy
        self.state = HOME.copy()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.states.publish(joint_state(self.state, stamp=now_stamp(self.probe)))
            if self.policy_on:
                target = FAR_HIGH if int((time.monotonic() - t0) / 0.3) % 2 else FAR_LOW
                self.policy.publish(joint_state(target, stamp=now_stamp(self.probe)))
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)


def start_gate(node_process, **params):
    proc = node_process("recap_teleop.gate_node", params=params)
    assert proc.wait_for_output("gate up", timeout=30), proc.output()
    return proc


def gate_status(probe, collector, timeout=5.0) -> dict:
    collector.clear()
    assert collector.wait_for(1, timeout=timeout)
    return diagnostic_values(collector.last())


def wait_count(collector, key: str, at_least: int, timeout=5.0) -> int:
    """The gate's counter `key` once it reaches `at_least` (or its last value after `timeout`):
    the status is periodic, so a count read too early says nothing about messages still in flight."""
    collector.wait_for(1, timeout=timeout, predicate=lambda m: int(diagnostic_values(m)[key]) >= at_least)
    return int(diagnostic_values(collector.last())[key])


def test_use_sim_time_is_refused_at_runtime_and_a_fast_clock_cannot_speed_up_the_arm(node_process, probe):
    gate = start_gate(node_process, status_rate_hz=10.0)
    outputs = probe.subscribe(JointState, "joint_command")
    clock_pub = probe.publisher(Clock, "/clock", SENSOR)
    driver = Driver(probe)
    stop_clock = threading.Event()

    def fast_clock():  # a simulated clock running 10x wall time
        t0 = time.monotonic()
        while not stop_clock.is_set():
            clock_pub.publish(Clock(clock=seconds_to_stamp(1000.0 + 10 * (time.monotonic() - t0))))
            time.sleep(0.002)

    clock_thread = threading.Thread(target=fast_clock, daemon=True)
    clock_thread.start()
    try:
        assert outputs.wait_for(20, timeout=10), gate.output()
        result = probe.set_parameters("/gate", {"use_sim_time": True})[0]
        assert not result.successful and "use_sim_time" in result.reason
        assert probe.get_parameter("/gate", "use_sim_time") is False
        outputs.clear()
        time.sleep(1.5)
        msgs, received = outputs.snapshot()
    finally:
        stop_clock.set()
        clock_thread.join(timeout=2)
        driver.stop()
    rate = (len(msgs) - 1) / (received[-1] - received[0])
    assert rate < STATION.control_rate_hz * 1.2, f"the gate published at {rate:.0f} Hz"
    assert_within_limits(msgs)
    # Wall time as the test measures it: the path covered is bounded by the velocity limit over the window.
    q = np.stack([joint_positions(m) for m in msgs])
    travelled = np.abs(np.diff(q, axis=0)).sum(axis=0)
    window = received[-1] - received[0] + 0.1
    assert np.all(travelled <= STATION.max_velocity_array * window), (travelled / window).tolist()
    assert gate.alive()


def test_velocity_limits_change_at_runtime_tighter_at_once_wider_through_a_ramp(node_process, probe):
    start_gate(node_process)
    outputs = probe.subscribe(JointState, "joint_command")
    driver = Driver(probe)
    try:
        assert outputs.wait_for(30, timeout=10)
        result = probe.set_parameters("/gate", {"velocity_scale": 0.25})[0]
        assert result.successful, result.reason
        changed_at = probe.node.get_clock().now().nanoseconds
        time.sleep(0.8)
        tight = [m for m in outputs.snapshot()[0] if stamp_ns(m) > changed_at]
        assert len(tight) > 20
        assert_within_limits(tight, limit_scale=0.25)
        assert step_ratios(tight, 0.25).max() > 0.9, "the arm should be moving at the new limit"

        result = probe.set_parameters("/gate", {"velocity_scale": 1.0})[0]
        assert result.successful, result.reason
        widened_at = probe.node.get_clock().now().nanoseconds
        time.sleep(1.5)
        wide = [m for m in outputs.snapshot()[0] if stamp_ns(m) > widened_at]
        ratios = step_ratios(wide)
        elapsed = (np.array([stamp_ns(m) for m in wide[1:]]) - widened_at) * 1e-9
        # The limit in force rises linearly from 0.25 to 1 over one second (plus the call's own latency).
        ramp = 0.25 + 0.75 * np.clip((elapsed + 0.05) / 1.0, 0.0, 1.0)
        assert np.all(ratios <= ramp + 1e-6), float((ratios - ramp).max())
        assert ratios[elapsed > 1.1].max() > 0.9, "the wider limit should be reached after the ramp"

        # The station's own velocity limit is one of the gate's runtime parameters too.
        tighter = (STATION.max_velocity_array * 0.5).tolist()
        result = probe.set_parameters("/gate", {"joint_max_velocity": tighter})[0]
        assert result.successful, result.reason
        changed_at = probe.node.get_clock().now().nanoseconds
        time.sleep(0.6)
        half = [m for m in outputs.snapshot()[0] if stamp_ns(m) > changed_at]
        assert_within_limits(half, limit_scale=0.5)
        assert probe.get_parameter("/gate", "joint_max_velocity") == pytest.approx(tighter)
    finally:
        driver.stop()


@pytest.mark.parametrize(
    "name, value",
    [
        ("joint_lower_limits", (LOWER - 0.5).tolist()),
        ("joint_upper_limits", (UPPER + 0.5).tolist()),
        ("control_rate_hz", 500.0),
        ("status_rate_hz", 5.0),
        ("joint_names", list(reversed(JOINT_NAMES))),
    ],
)
def test_parameters_the_gate_cannot_apply_safely_are_refused(node_process, probe, name, value):
    start_gate(node_process)
    before = probe.get_parameter("/gate", name)
    result = probe.set_parameters("/gate", {name: value})[0]
    assert not result.successful and result.reason
    assert probe.get_parameter("/gate", name) == before


def test_invalid_runtime_values_are_refused_and_the_old_limit_stays(node_process, probe):
    start_gate(node_process)
    for params in (
        {"velocity_scale": 0.0},
        {"velocity_scale": 2.0},
        {"stale_timeout_ms": -5.0},
        {"joint_max_velocity": [1.0] * 13},
        {"joint_max_velocity": [0.0] * 14},
    ):
        result = probe.set_parameters("/gate", params)[0]
        assert not result.successful and result.reason, params
    assert probe.get_parameter("/gate", "velocity_scale") == 1.0
    assert probe.get_parameter("/gate", "joint_max_velocity") == pytest.approx(list(STATION.max_velocity))


def test_stale_timeout_changes_at_runtime(node_process, probe):
    gate = start_gate(node_process, status_rate_hz=10.0)
    status = probe.subscribe(DiagnosticStatus, "gate/status")
    states = probe.publisher(JointState, "joint_states")
    policy = probe.publisher(JointState, "policy/joint_command")
    assert probe.set_parameters("/gate", {"stale_timeout_ms": 1000.0})[0].successful
    stop = threading.Event()

    def feed():  # states at 50 Hz, a policy command every 0.5 s: fresh under 1000 ms, stale under 200 ms
        i = 0
        while not stop.is_set():
            states.publish(joint_state(HOME, stamp=now_stamp(probe)))
            if i % 25 == 0:
                policy.publish(joint_state(HOME))
            i += 1
            time.sleep(0.02)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        time.sleep(1.5)
        assert int(gate_status(probe, status)["stale_events"]) == 0, gate.output()
        assert probe.set_parameters("/gate", {"stale_timeout_ms": 200.0})[0].successful
        time.sleep(1.5)
        assert int(gate_status(probe, status)["stale_events"]) >= 2
    finally:
        stop.set()
        thread.join(timeout=2)


def running_status(episode_id: str, start: float) -> DiagnosticStatus:
    start_time = dt.datetime.fromtimestamp(start, dt.timezone.utc).isoformat(timespec="milliseconds")
    return diagnostic("episode_manager", {"state": "running", "episode_id": episode_id, "start_time": start_time})


def test_after_a_restart_the_gate_anchors_only_on_a_pose_measured_after_it(node_process, probe):
    start_gate(node_process, status_rate_hz=10.0)
    outputs = probe.subscribe(JointState, "joint_command")
    status = probe.subscribe(DiagnosticStatus, "gate/status")
    states = probe.publisher(JointState, "joint_states")
    episode = probe.publisher(DiagnosticStatus, "episode/status", LATCHED)
    before_reset = HOME + np.r_[0.8, [0.0] * 13]
    after_reset = HOME - np.r_[0.3, [0.0] * 13]
    for _ in range(25):  # the last episode ended here
        states.publish(joint_state(before_reset, stamp=now_stamp(probe)))
        time.sleep(0.02)
    assert outputs.wait_for(5, timeout=5)
    old_pose_stamp = now_stamp(probe, -0.05)
    start = probe.node.get_clock().now().nanoseconds * 1e-9
    episode.publish(running_status("e-0002", start))
    time.sleep(0.2)
    outputs.clear()
    for _ in range(25):  # a late joint_states measured before the reset
        states.publish(joint_state(before_reset, stamp=old_pose_stamp))
        time.sleep(0.02)
    assert len(outputs) == 0, "the gate commanded from a pose measured before the episode began"
    for _ in range(10):
        states.publish(joint_state(after_reset, stamp=now_stamp(probe)))
        time.sleep(0.02)
    assert outputs.wait_for(3, timeout=3)
    first = joint_positions(outputs.snapshot()[0][0])
    np.testing.assert_allclose(first, after_reset, atol=1e-9)
    assert wait_count(status, "joint_states_before_restart", 20) >= 20


@pytest.mark.parametrize("lead_s", [1.0, 3600.0])
def test_joint_states_from_the_future_are_refused_and_counted(node_process, probe, lead_s):
    start_gate(node_process, status_rate_hz=10.0)
    outputs = probe.subscribe(JointState, "joint_command")
    status = probe.subscribe(DiagnosticStatus, "gate/status")
    states = probe.publisher(JointState, "joint_states")
    assert probe.wait_for_subscribers(states)
    for _ in range(25):
        states.publish(joint_state(HOME, stamp=now_stamp(probe, lead_s)))
        time.sleep(0.02)
    assert wait_count(status, "future_joint_states", 20) >= 20
    assert len(outputs) == 0, "a joint state stamped in the future became the hold reference"


# -- hostile command streams -------------------------------------------------------------------------

finite = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False)
hostile_value = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300]))


@st.composite
def hostile_message(draw):
    n = draw(st.sampled_from([14, 14, 14, 0, 1, 13, 15, 28]))
    positions = draw(st.lists(hostile_value, min_size=n, max_size=n))
    names = draw(st.sampled_from(["station", "empty", "shuffled", "duplicate", "foreign"]))
    if names == "station":
        msg_names = list(JOINT_NAMES[:n]) if n <= 14 else list(JOINT_NAMES) + ["extra"] * (n - 14)
    elif names == "shuffled":
        msg_names = draw(st.permutations(list(JOINT_NAMES)))[:n]
    elif names == "duplicate":
        msg_names = ["left_waist"] * n
    elif names == "foreign":
        msg_names = [f"joint_{i}" for i in range(n)]
    else:
        msg_names = []
    msg = JointState(name=msg_names, position=positions)
    msg.header.stamp = TimeMsg(sec=draw(st.integers(0, 2**31 - 1)), nanosec=draw(st.integers(0, 999_999_999)))
    return msg


@pytest.fixture(scope="module")
def shared_gate(tmp_path_factory):
    from recap_ros.testing.procs import NodeProcess

    proc = NodeProcess("recap_teleop.gate_node", log_dir=tmp_path_factory.mktemp("gate_logs"))
    try:
        assert proc.wait_for_output("gate up", timeout=30), proc.output()
        yield proc
    finally:
        proc.stop()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stream=st.lists(
        st.tuples(st.sampled_from(["policy", "teleop", "engage", "release", "state"]), hostile_message()),
        min_size=10,
        max_size=60,
    )
)
def test_hostile_command_streams_never_break_the_limits(shared_gate, probe, stream):
    outputs = getattr(probe, "_gate_outputs", None)
    if outputs is None:
        outputs = probe._gate_outputs = probe.subscribe(JointState, "joint_command")
        probe._pubs = {k: probe.publisher(JointState, f"{k}/joint_command") for k in ("policy", "teleop")}
        probe._pubs["state"] = probe.publisher(JointState, "joint_states")
        probe._engage = probe.publisher(Bool, "teleop/engage")
        time.sleep(0.5)  # discovery
    outputs.clear()
    probe._pubs["state"].publish(joint_state(HOME, stamp=now_stamp(probe)))
    for i, (kind, msg) in enumerate(stream):
        if kind in ("engage", "release"):
            probe._engage.publish(Bool(data=kind == "engage"))
        else:
            probe._pubs[kind].publish(msg)
        if i % 3 == 0:  # valid far commands between the hostile ones keep the arm moving
            probe._pubs["policy"].publish(joint_state(FAR_HIGH if i % 2 else FAR_LOW))
            probe._pubs["teleop"].publish(joint_state(FAR_LOW if i % 2 else FAR_HIGH))
            probe._pubs["state"].publish(joint_state(HOME, stamp=now_stamp(probe)))
        time.sleep(0.005)
    time.sleep(0.1)
    msgs = outputs.snapshot()[0]
    assert shared_gate.alive(), shared_gate.output()
    if msgs:
        assert_within_limits(msgs)
