"""The pure episode state machine: transitions, counters, ids, auto-labels."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_teleop.episodes import (
    ABORTED,
    FAILURE,
    IDLE,
    RUNNING,
    STATUS_KEYS,
    SUCCESS,
    TERMINAL,
    EpisodeError,
    EpisodeSettings,
    EpisodeStateMachine,
    auto_label,
)

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
TASK = EpisodeSettings(task="transfer the cube", seed="7")


def test_full_cycle_with_counts_and_status():
    sm = EpisodeStateMachine("sim_aloha")
    assert sm.state == IDLE and sm.status()["state"] == IDLE and sm.status()["episode_id"] == ""
    ep = sm.start(TASK, T0)
    assert ep.episode_id == "sim_aloha-20260301-120000-0001" and sm.state == RUNNING
    for flag in [False, True, True, False, True, False]:  # two rising edges
        sm.on_intervention(flag)
        sm.on_step()
    sm.finish(SUCCESS, T0 + dt.timedelta(seconds=3), reason="operator")
    s = sm.status()
    assert set(s) == set(STATUS_KEYS)
    assert (s["state"], s["label"], s["steps"], s["interventions"], s["intervention_steps"]) == (
        "success",
        "success",
        "6",
        "2",
        "3",
    )
    assert s["task"] == "transfer the cube" and s["seed"] == "7" and s["station"] == "sim_aloha"
    assert s["start_time"].startswith("2026-03-01T12:00:00") and s["stop_time"].startswith("2026-03-01T12:00:03")
    sm.to_idle()
    s = sm.status()
    assert s["state"] == IDLE and s["label"] == "" and s["last_label"] == "success"
    assert s["last_episode_id"] == ep.episode_id


@pytest.mark.parametrize("outcome", TERMINAL)
def test_labels_are_only_valid_while_running(outcome):
    sm = EpisodeStateMachine("s")
    with pytest.raises(EpisodeError, match="no episode is running.*episode/start"):
        sm.finish(outcome, T0)
    sm.start(TASK, T0)
    sm.finish(outcome, T0)
    with pytest.raises(EpisodeError, match="already ended"):
        sm.finish(SUCCESS, T0)
    with pytest.raises(EpisodeError, match="wait until"):
        sm.start(TASK, T0)
    sm.to_idle()
    with pytest.raises(EpisodeError):
        sm.to_idle()


def test_start_while_running_is_refused_and_changes_nothing():
    sm = EpisodeStateMachine("s")
    ep = sm.start(TASK, T0)
    with pytest.raises(EpisodeError, match="still running"):
        sm.start(TASK, T0)
    assert sm.episode is ep and sm.state == RUNNING


def test_settings_are_validated_with_actionable_errors():
    with pytest.raises(EpisodeError, match="`task` parameter"):
        EpisodeSettings(task="  ")
    with pytest.raises(EpisodeError, match="demo"):
        EpisodeSettings(task="t", source="teleop")


def test_an_episode_starting_under_human_control_counts_one_intervention():
    sm = EpisodeStateMachine("s")
    sm.on_intervention(True)  # between episodes: not counted anywhere
    ep = sm.start(TASK, T0)
    assert ep.interventions == 1
    sm.on_intervention(True)  # still held: no new edge
    assert ep.interventions == 1


def test_steps_outside_an_episode_are_not_counted():
    sm = EpisodeStateMachine("s")
    sm.on_step()
    ep = sm.start(TASK, T0)
    sm.on_step()
    sm.finish(ABORTED, T0)
    sm.on_step()
    assert ep.steps == 1


@settings(max_examples=50, deadline=None)
@given(offsets=st.lists(st.integers(0, 5), min_size=2, max_size=30))
def test_property_episode_ids_are_unique_and_sort_in_start_order(offsets):
    sm = EpisodeStateMachine("st")
    ids, t = [], T0
    for seconds in offsets:  # several starts may fall into the same second
        t = t + dt.timedelta(seconds=seconds)
        ids.append(sm.start(TASK, t).episode_id)
        sm.finish(ABORTED, t)
        sm.to_idle()
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_auto_label_success_truncation_time_limit_and_stale_seed():
    sm = EpisodeStateMachine("s")
    ep = sm.start(TASK, T0)  # seed 7
    assert auto_label(ep, 400, {"seed": "7", "step": "12", "success": "False", "truncated": "False"}) is None
    assert auto_label(ep, 400, {"seed": "7", "step": "290", "success": "True", "truncated": "False"})[0] == SUCCESS
    assert auto_label(ep, 400, {"seed": "7", "step": "400", "success": "False", "truncated": "True"})[0] == FAILURE
    # the world before the reset (another seed) says nothing about this episode
    assert auto_label(ep, 400, {"seed": "6", "step": "300", "success": "True"}) is None
    # the time limit by the sim's step counter, or by the episode's own count
    outcome, reason = auto_label(ep, 50, {"seed": "7", "step": "50", "success": "False"})
    assert outcome == FAILURE and "50" in reason
    for _ in range(50):
        sm.on_step()
    assert auto_label(ep, 50)[0] == FAILURE
    assert auto_label(ep, 0) is None, "0 = no time limit"
