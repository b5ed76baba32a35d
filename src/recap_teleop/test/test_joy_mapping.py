"""The gamepad mapping and the jog integrator (no ROS)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_core.station import JOINT_NAMES, StationConfig
from recap_teleop.joy_mapping import DEFAULT_MAPPING_FILE
from recap_teleop.joy_mapping import JogBinding, JointJogger, JoyMapping

STATION = StationConfig.sim_aloha()
DEFAULT = DEFAULT_MAPPING_FILE


def buttons(*pressed, n=11):
    return [1 if i in pressed else 0 for i in range(n)]


def test_default_mapping_loads_and_has_every_episode_action():
    mapping = JoyMapping.from_yaml(DEFAULT)
    assert dict(mapping.actions).keys() == {"start", "success", "failure", "abort"}
    assert mapping.deadman_held(buttons(mapping.deadman_button))
    assert not mapping.deadman_held(buttons())


def test_actions_fire_on_the_press_only():
    mapping = JoyMapping.from_yaml(DEFAULT)
    success = dict(mapping.actions)["success"]
    assert mapping.pressed_actions(buttons(), buttons(success)) == ["success"]
    assert mapping.pressed_actions(buttons(success), buttons(success)) == [], "holding is not pressing again"
    assert mapping.pressed_actions(buttons(success), buttons()) == []


def test_sticks_jog_the_right_arm_and_shift_moves_the_left():
    mapping = JoyMapping.from_dict(
        {
            "deadman_button": 4,
            "shift_button": 5,
            "deadzone": 0.2,
            "jog": [
                {"joint": "right_waist", "axis": 0, "speed": 1.0},
                {"joint": "right_gripper", "button": 3, "speed": 0.5},
            ],
            "shifted_jog": [{"joint": "left_waist", "axis": 0, "speed": -2.0}],
        }
    )
    axes = [0.6, 0.0]
    v = mapping.joint_velocity(axes, buttons(3))
    i_rw, i_rg, i_lw = (JOINT_NAMES.index(j) for j in ("right_waist", "right_gripper", "left_waist"))
    assert v[i_rw] == pytest.approx((0.6 - 0.2) / 0.8) and v[i_rg] == 0.5 and v[i_lw] == 0.0
    v = mapping.joint_velocity(axes, buttons(5))
    assert v[i_rw] == 0.0 and v[i_lw] == pytest.approx(-2.0 * 0.5)
    assert not mapping.joint_velocity([0.19, 0.0], buttons()).any(), "inside the deadzone"
    assert not mapping.joint_velocity([], []).any(), "a pad with fewer axes reads as centred"


@pytest.mark.parametrize(
    "doc, match",
    [
        ({}, "deadman_button"),
        ({"deadman_button": 4, "actions": {"success": 4}}, "both"),
        ({"deadman_button": 4, "actions": {"celebrate": 1}}, "unknown actions"),
        ({"deadman_button": 4, "jog": [{"joint": "tail", "axis": 0, "speed": 1.0}]}, "not a station joint"),
        ({"deadman_button": 4, "jog": [{"joint": "left_waist", "axis": 0, "button": 1, "speed": 1.0}]}, "exactly one"),
        ({"deadman_button": 4, "jog": [{"joint": "left_waist", "axis": 0, "speed": 0.0}]}, "non-zero"),
        ({"deadman_button": 4, "shifted_jog": [{"joint": "left_waist", "axis": 0, "speed": 1.0}]}, "shift_button"),
        ({"deadman_button": 4, "deadzone": 1.0}, "deadzone"),
        ({"deadman_button": 4, "dead_man": 3}, "unknown keys"),
    ],
)
def test_bad_mappings_are_refused_with_the_reason(doc, match):
    with pytest.raises(ValueError, match=match):
        JoyMapping.from_dict(doc)


def test_missing_mapping_file_names_the_default(tmp_path):
    with pytest.raises(ValueError, match="joy_default.yaml"):
        JoyMapping.from_yaml(tmp_path / "nope.yaml")


def test_jogger_starts_at_the_measured_position_and_integrates():
    jogger = JointJogger(STATION.lower, STATION.upper)
    q0 = np.zeros(14)
    q0[6] = q0[13] = 0.5
    np.testing.assert_array_equal(jogger.engage(q0), q0)
    v = np.zeros(14)
    v[0] = 1.0
    for _ in range(10):
        target = jogger.step(v, 0.02)
    assert target[0] == pytest.approx(0.2)
    jogger.release()
    with pytest.raises(RuntimeError, match="engage"):
        jogger.step(v, 0.02)


@settings(max_examples=100, deadline=None)
@given(
    velocities=st.lists(st.lists(st.floats(-10, 10), min_size=14, max_size=14), min_size=1, max_size=50),
    dt=st.floats(0.0, 0.5),
)
def test_property_jog_targets_stay_within_the_joint_limits(velocities, dt):
    jogger = JointJogger(STATION.lower, STATION.upper)
    jogger.engage((STATION.lower_array + STATION.upper_array) / 2)
    for v in velocities:
        target = jogger.step(np.asarray(v), dt)
        assert np.all(target >= STATION.lower_array) and np.all(target <= STATION.upper_array)


def test_binding_checks_its_index():
    with pytest.raises(ValueError, match=">= 0"):
        JogBinding(joint="left_waist", axis=-1, speed=1.0)
