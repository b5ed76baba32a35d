"""The simulated operator's take-over decisions, without ROS."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_sim.human import HumanConfig, SimulatedHuman

DT = 0.02


def run(human, rewards, values=None):
    out = []
    for i, r in enumerate(rewards):
        out.append(human.update(i * DT, r, None if values is None else values[i]))
    return out


def test_takes_over_after_no_progress_and_gives_back_after_correction():
    h = SimulatedHuman(HumanConfig(patience_s=1.0, min_correction_s=0.5, cooldown_s=0.5))
    rewards = [1.0] * 130 + [2.0] * 40  # stuck, the correction gains a stage, then < patience
    engaged = run(h, rewards)
    first = engaged.index(True)
    assert abs(first * DT - 1.0) < 0.05, first * DT  # after the patience period
    assert engaged[first:130].count(False) == 0  # holds while correcting
    assert not engaged[-1] and h.interventions == 1 and "corrected" in h.reason


def test_a_drop_of_the_cube_triggers_once_it_lasts():
    h = SimulatedHuman(HumanConfig(patience_s=100.0, regress_s=0.3))
    engaged = run(h, [2.0] * 10 + [1.0] * 30)
    assert not any(engaged[:25]) and engaged[25] and "regress: reward fell from 2 to 1" in h.reason  # 15 ticks
    h = SimulatedHuman(HumanConfig(patience_s=100.0, regress_s=0.0))  # the old, instant rule
    assert run(h, [2.0] * 10 + [1.0] * 5)[10]


@pytest.mark.parametrize("release, released_at", [("next_stage", 1.0), ("past_best", 4.0)])
def test_a_correction_after_a_dropped_handover_ends_where_its_release_rule_says(release, released_at):
    """Dropped at the handover (best 3, back to 0): next_stage hands back after the re-grasp (stage 1),
    past_best only once the operator has also done the handover the policy failed (stage 4)."""
    h = SimulatedHuman(
        HumanConfig(patience_s=100.0, regress_s=0.3, min_correction_s=0.5, max_correction_s=60.0, release=release)
    )
    rewards = [3.0] * 10 + [0.0] * 40 + [1.0] * 30 + [2.0] * 30 + [3.0] * 30 + [4.0] * 30
    engaged = run(h, rewards)
    first = engaged.index(True)
    assert first == 25 and h.reason == "released: corrected"  # 0.3 s after the drop
    back = engaged.index(False, first)
    assert rewards[back] == released_at and h.interventions == 1, (back, rewards[back])
    assert all(engaged[first:back]) and not any(engaged[back:])


def test_an_unknown_release_rule_is_refused():
    with pytest.raises(ValueError, match="release must be one of"):
        HumanConfig(release="whenever")


def test_contact_flicker_does_not_trigger():
    """The sim's reward drops for a step or two while the fingers keep the cube: no take-over."""
    h = SimulatedHuman(HumanConfig(patience_s=100.0, regress_s=0.3))
    rewards = ([2.0] * 10 + [0.0] * 3) * 20 + [2.0] * 10  # 20 flickers of 60 ms
    assert not any(run(h, rewards)) and h.interventions == 0


def test_value_drop_triggers():
    h = SimulatedHuman(HumanConfig(patience_s=100.0, value_drop=0.2, value_window_s=1.0))
    values = [-0.3] * 60 + [-0.6] * 5  # the drop 1.2 s into the episode
    engaged = run(h, [1.0] * 65, values)
    assert not any(engaged[:60]) and engaged[60] and "value dropped" in h.reason


def test_the_previous_episodes_value_at_a_reset_does_not_trigger():
    """Right after a reset the stream still carries the last estimate of the episode before (a success: ~0)."""
    values = [-0.01] * 3 + [-0.3] * 100
    h = SimulatedHuman(HumanConfig(patience_s=100.0, value_drop=0.2, value_window_s=1.5))
    assert not any(run(h, [0.0] * 103, values)) and h.interventions == 0
    h = SimulatedHuman(HumanConfig(patience_s=100.0, value_drop=0.2, value_window_s=1.5, value_settle_s=0.0))
    assert run(h, [0.0] * 103, values)[3]  # without the settling time: a take-over right at the reset
    h = SimulatedHuman(HumanConfig(patience_s=100.0, value_drop=0.2, value_window_s=1.5))
    run(h, [0.0] * 100, [-0.3] * 100)
    h.reset()  # a new episode settles again
    assert not any(run(h, [0.0] * 103, values)) and h.interventions == 0


def test_inattentive_operator_never_engages():
    h = SimulatedHuman(HumanConfig(patience_s=0.2, attention=0.0))
    assert not any(run(h, [0.0] * 500))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="attention"):
        HumanConfig(attention=1.5)
    with pytest.raises(ValueError, match="max_correction_s"):
        HumanConfig(min_correction_s=5.0, max_correction_s=1.0)
    with pytest.raises(ValueError, match="regress_s must be >= 0"):
        HumanConfig(regress_s=-0.1)
    with pytest.raises(ValueError, match="value_settle_s must be >= 0"):
        HumanConfig(value_settle_s=-1.0)


@settings(max_examples=60, deadline=None)
@given(
    rewards=st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.0, 4.0]), min_size=1, max_size=800),
    max_interventions=st.integers(0, 4),
    seed=st.integers(0, 100),
)
def test_bounds_hold_for_any_reward_sequence(rewards, max_interventions, seed):
    cfg = HumanConfig(
        patience_s=0.3,
        min_correction_s=0.1,
        max_correction_s=0.5,
        cooldown_s=0.2,
        max_interventions=max_interventions,
        attention=0.7,
    )
    h = SimulatedHuman(cfg, seed=seed)
    engaged = run(h, rewards)
    assert h.interventions <= max_interventions
    # every engagement lasts at most max_correction_s (+1 tick)
    run_length = 0
    for e in engaged:
        run_length = run_length + 1 if e else 0
        assert run_length * DT <= cfg.max_correction_s + DT + 1e-9
    # the number of rising edges equals the counted interventions
    edges = sum(1 for a, b in zip([False] + engaged, engaged) if b and not a)
    assert edges == h.interventions
