"""The pure gate: source selection, handover, watchdog, limits (no ROS)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_core.station import NUM_JOINTS, StationConfig
from recap_teleop.gate import HOLD, POLICY, TELEOP, Gate, GateConfig, OutputClock

STATION = StationConfig.sim_aloha()
PERIOD = 1.0 / STATION.control_rate_hz
HOME = (STATION.lower_array + STATION.upper_array) / 2


def make_gate(stale_timeout_s: float = 0.2, velocity_scale: float = 1.0) -> Gate:
    return Gate(GateConfig.from_station(STATION, stale_timeout_s=stale_timeout_s, velocity_scale=velocity_scale))


def started_gate(**kwargs) -> Gate:
    gate = make_gate(**kwargs)
    gate.on_joint_state(HOME, 0.0)
    return gate


def test_no_output_without_a_reference_then_holds_the_measured_position():
    gate = make_gate()
    gate.on_policy(HOME + 0.1, 0.0)
    assert gate.tick(0.0) is None, "must not command the robot before knowing where it is"
    measured = HOME + 0.05
    gate.on_joint_state(measured, 0.01)
    gate2 = make_gate()
    gate2.on_joint_state(measured, 0.0)
    out = gate2.tick(0.02)
    assert out.source == HOLD and out.intervention is False
    np.testing.assert_allclose(out.command, measured)
    assert gate2.hold_reason == "no_command_yet"


def test_policy_is_followed_within_the_velocity_limit():
    gate = started_gate()
    target = HOME + 0.5
    t = 0.0
    outputs = []
    for _ in range(200):
        t += PERIOD
        gate.on_policy(target, t)
        outputs.append(gate.tick(t))
    assert all(o.source == POLICY and not o.intervention for o in outputs)
    steps = np.abs(np.diff(np.stack([HOME] + [o.command for o in outputs]), axis=0))
    assert np.all(steps <= STATION.max_step + 1e-12)
    np.testing.assert_allclose(steps[0], STATION.max_step)  # far target: full speed from the first step
    np.testing.assert_allclose(outputs[-1].command, target)


def test_engage_hands_over_to_teleop_with_a_ramp_and_flags_the_intervention():
    gate = started_gate()
    t = PERIOD
    gate.on_policy(HOME, t)
    assert gate.tick(t).source == POLICY
    teleop_target = HOME.copy()
    teleop_target[0] += 1.0  # far away: must ramp, not jump
    assert gate.on_engage(True, t) is False
    prev = gate.last_output
    ramp = []
    for _ in range(30):
        t += PERIOD
        gate.on_policy(HOME, t)
        gate.on_teleop(teleop_target, t)
        out = gate.tick(t)
        ramp.append(out)
        assert out.source == TELEOP and out.intervention is True
        assert abs(out.command[0] - prev[0]) <= STATION.max_step[0] + 1e-12
        prev = out.command
    assert ramp[-1].command[0] == pytest.approx(teleop_target[0])
    assert gate.counters["engages"] == 1


def test_release_holds_until_a_policy_command_newer_than_the_release():
    gate = started_gate()
    t = PERIOD
    gate.on_policy(HOME + 0.01, t)
    gate.on_engage(True, t)
    gate.on_teleop(HOME, t)
    gate.tick(t)
    t += PERIOD
    assert gate.on_engage(False, t) is True, "a release must ask the policy to replan"
    held = gate.last_output
    # The policy command received before the release is still fresh by age, but belongs to the old plan.
    for _ in range(3):
        t += PERIOD
        out = gate.tick(t)
        assert out.source == HOLD and out.intervention is False
        assert gate.hold_reason == "awaiting_policy_after_release"
        np.testing.assert_array_equal(out.command, held)
    gate.on_policy(HOME + 0.02, t)
    t += PERIOD
    assert gate.tick(t).source == POLICY
    assert gate.counters["releases"] == 1


def test_restart_re_anchors_on_the_arm_after_an_episode_reset():
    gate = started_gate()
    t = 0.0
    end_of_episode = HOME + 0.3
    for _ in range(100):  # the last episode drove the arm away from home
        t += PERIOD
        gate.on_policy(end_of_episode, t)
        gate.on_engage(True, t), gate.on_teleop(end_of_episode, t)
        gate.tick(t)
    np.testing.assert_allclose(gate.last_output, end_of_episode)
    # the world resets the arm to home, then the new episode starts with the deadman still held
    gate.restart(t)
    assert gate.counters["restarts"] == 1 and gate.engaged  # the deadman is the device's state, not the gate's
    assert gate.tick(t + PERIOD) is None, "no output until the arm is measured after the reset"
    gate.on_joint_state(HOME, t + PERIOD)
    out = gate.tick(t + 2 * PERIOD)
    assert out.source == HOLD and out.intervention is True  # the old teleop command is not replayed
    np.testing.assert_allclose(out.command, HOME)  # holds where the arm is, not where the last episode ended
    gate.on_engage(False, t + 2 * PERIOD)
    # a fresh policy command is followed from there, within the velocity limit
    gate.on_policy(HOME + 0.5, t + 3 * PERIOD)
    out = gate.tick(t + 3 * PERIOD)
    assert out.source == POLICY
    np.testing.assert_allclose(np.abs(out.command - HOME), STATION.max_step)


def test_engaged_without_teleop_holds_as_an_intervention():
    gate = started_gate()
    gate.on_policy(HOME, 0.0)
    gate.tick(0.0)
    gate.on_engage(True, 0.01)
    out = gate.tick(0.02)
    assert out.source == HOLD and out.intervention is True
    assert gate.hold_reason == "engaged_without_teleop"


@pytest.mark.parametrize("engaged", [False, True])
def test_watchdog_holds_when_the_active_source_goes_stale(engaged):
    gate = started_gate(stale_timeout_s=0.1)
    gate.on_engage(engaged, 0.0)
    feed = gate.on_teleop if engaged else gate.on_policy
    t = 0.0
    for _ in range(5):
        t += PERIOD
        feed(HOME + 0.05, t)
        assert gate.tick(t).source == (TELEOP if engaged else POLICY)
    held = gate.last_output
    for _ in range(10):  # 0.2 s of silence
        t += PERIOD
        out = gate.tick(t)
    assert out.source == HOLD and gate.hold_reason == "stale"
    np.testing.assert_array_equal(out.command, held)
    assert gate.counters["stale_events"] == 1, "one stale episode is one event, not one per tick"
    feed(HOME + 0.05, t)
    assert gate.tick(t + PERIOD).source == (TELEOP if engaged else POLICY)


@pytest.mark.parametrize(
    "bad",
    [
        [math.nan] + [0.0] * (NUM_JOINTS - 1),
        [0.0] * (NUM_JOINTS - 1),
        [0.0] * (NUM_JOINTS + 1),
        [math.inf] * NUM_JOINTS,
        "not numbers",
    ],
)
def test_malformed_commands_are_rejected_and_counted(bad):
    gate = started_gate()
    gate.on_policy(HOME, 0.0)
    gate.tick(0.0)
    before = gate.last_output
    assert gate.on_policy(bad, 0.01) is False
    assert gate.on_teleop(bad, 0.01) is False
    assert gate.on_joint_state(bad, 0.01) is False
    assert gate.counters["rejected_policy"] == 1
    assert gate.counters["rejected_teleop"] == 1
    assert gate.counters["rejected_joint_states"] == 1
    out = gate.tick(0.02)
    assert np.all(np.isfinite(out.command))
    np.testing.assert_array_equal(out.command, before)


def test_commands_outside_the_limits_are_clipped_and_counted():
    gate = started_gate()
    beyond = STATION.upper_array + 1.0
    t = 0.0
    for _ in range(400):
        t += PERIOD
        gate.on_policy(beyond, t)
        out = gate.tick(t)
    np.testing.assert_allclose(out.command, STATION.upper_array)
    assert gate.counters["position_clamps"] > 0


def test_two_outputs_close_together_share_one_period_of_motion():
    gate = started_gate()
    far = HOME + 1.0
    gate.on_policy(far, 0.0)
    a = gate.tick(0.0)
    b = gate.tick(0.002)  # 2 ms later: at most 10 % of one period's step
    assert np.all(np.abs(b.command - a.command) <= 0.1 * STATION.max_step + 1e-12)
    assert gate.counters["velocity_clamps"] == 2


def test_velocity_scale_slows_every_step():
    gate = started_gate(velocity_scale=0.25)
    gate.on_policy(HOME + 1.0, 0.0)
    out = gate.tick(0.0)
    np.testing.assert_allclose(np.abs(out.command - HOME), 0.25 * STATION.max_step)


def test_config_errors_say_what_to_do():
    with pytest.raises(ValueError, match="stale_timeout_s"):
        GateConfig.from_station(STATION, stale_timeout_s=0.0)
    with pytest.raises(ValueError, match="velocity_scale"):
        GateConfig.from_station(STATION, velocity_scale=1.5)


# -- property: random operator/policy sequences never break the limits ----------------------------

_vector = st.lists(st.floats(-4.0, 4.0), min_size=NUM_JOINTS, max_size=NUM_JOINTS)
_event = st.one_of(
    st.tuples(st.just("policy"), _vector),
    st.tuples(st.just("teleop"), _vector),
    st.tuples(st.just("engage"), st.booleans()),
    st.tuples(st.just("bad"), st.sampled_from(["policy", "teleop"])),
    st.tuples(st.just("wait"), st.one_of(st.floats(0.0, 0.05), st.floats(0.05, 2.0), st.floats(-0.5, 0.0))),
    st.tuples(st.just("tick"), st.just(None)),
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(_event, min_size=1, max_size=120), scale=st.sampled_from([1.0, 0.5]))
def test_property_outputs_respect_limits_and_attribution(events, scale):
    gate = make_gate(stale_timeout_s=0.1, velocity_scale=scale)
    max_step = STATION.max_step * scale
    lower, upper = STATION.lower_array, STATION.upper_array
    t = 0.0
    gate.on_joint_state(HOME, t)
    prev, prev_t = None, None
    policy_target = None
    for kind, arg in events:
        if kind == "policy":
            gate.on_policy(arg, t)
            policy_target = np.asarray(arg)
        elif kind == "teleop":
            gate.on_teleop(arg, t)
        elif kind == "engage":
            gate.on_engage(arg, t)
        elif kind == "bad":
            bad = [math.nan] * NUM_JOINTS
            assert (gate.on_policy if arg == "policy" else gate.on_teleop)(bad, t) is False
        elif kind == "wait":
            t += arg  # negative: the clock jumped backwards
        else:
            out = gate.tick(t)
            assert out is not None
            cmd = out.command
            assert cmd.shape == (NUM_JOINTS,) and np.all(np.isfinite(cmd))
            assert np.all(cmd >= lower - 1e-12) and np.all(cmd <= upper + 1e-12)
            reference = HOME if prev is None else prev
            elapsed = PERIOD if prev_t is None else min(max(t - prev_t, 0.0), PERIOD)
            assert np.all(np.abs(cmd - reference) <= max_step * elapsed / PERIOD + 1e-9)
            assert out.intervention == gate.engaged
            if out.source == TELEOP:
                assert gate.engaged
            if out.source == POLICY:
                assert not gate.engaged
                # Moves toward the (clipped) policy target, never away from it.
                goal = np.clip(policy_target, lower, upper)
                assert np.all(np.abs(cmd - goal) <= np.abs(reference - goal) + 1e-9)
            if out.source == HOLD and prev is not None:
                np.testing.assert_array_equal(cmd, prev)
            prev, prev_t = cmd, t


# -- the output clock --------------------------------------------------------------------------------


def test_clock_forwards_arrivals_at_once_and_fills_when_the_source_is_silent():
    clock = OutputClock(0.02)
    assert clock.on_arrival(0.0) is True
    clock.on_output(0.0, on_arrival=True)
    assert clock.due == pytest.approx(0.025)  # a slightly late command is not pre-empted
    assert clock.on_arrival(0.0199) is True
    clock.on_output(0.0199, on_arrival=True)
    # silent source: the first fill after 1.25 periods, then one per period
    clock.on_output(clock.due, on_arrival=False)
    assert clock.due == pytest.approx(0.0199 + 0.025 + 0.02)


def test_clock_caps_a_fast_device_and_recovers_its_phase():
    clock = OutputClock(0.02)
    clock.on_output(0.100, on_arrival=False)  # a fill
    assert clock.on_arrival(0.105) is False  # too soon after it: deferred ...
    assert clock.due == pytest.approx(0.115)  # ... by at most 0.75 periods
    clock.on_output(0.115, on_arrival=False)
    # the next arrival, one source period later, goes straight out again
    assert clock.on_arrival(0.125 + 0.005) is True


def test_clock_retries_when_there_is_nothing_to_publish():
    clock = OutputClock(0.02)
    assert clock.due == -math.inf
    clock.on_nothing_to_publish(1.0)
    assert clock.due == pytest.approx(1.02)


def test_pure_modules_import_without_ros_or_torch():
    import subprocess
    import sys

    code = (
        "import sys, recap_teleop.gate, recap_teleop.episodes, recap_teleop.joy_mapping; "
        "bad = [m for m in ('rclpy', 'torch') if m in sys.modules]; assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
