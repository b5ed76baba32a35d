"""recap eval with chunk modes and a simulated inference delay: the delay semantics on a stand-in sim, the RTC
guide the runner gets, and a real (tiny, untrained) run through the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from recap_core.models import get_config
from recap_core.models.untrained import save_untrained_checkpoint
from recap_core.station import StationConfig
from recap_core.testing import recap, refused
from recap_experiment.eval_pool import PoolError, pool
from recap_experiment.evaluate import EvalArm, delay_ticks, run_episode


@dataclasses.dataclass
class _Result:
    reward: float
    success: bool
    step: int


class _Sim:
    """Joints at 0.5 until commanded; records every command."""

    def __init__(self):
        self.commands = []

    def reset(self, seed):
        self.commands, self.q = [], np.full(14, 0.5)

    def render(self):
        return {"base": np.zeros((8, 8, 3), np.uint8)}

    def joint_positions(self):
        return self.q.copy()

    def step(self, action):
        self.commands.append(np.array(action))
        self.q = np.array(action)
        return _Result(0.0, False, len(self.commands))


class _Runner:
    """Chunk k (k-th call) is the constant 0.01 * (k + 1) + 0.001 * tick-in-chunk; records the calls."""

    def __init__(self):
        self.calls = []

    def reset(self):
        pass

    def infer(self, obs, beta, advantage, seed, **extra):
        self.calls.append({"seed": seed, **extra})
        k = len(self.calls)
        return {"actions": (0.01 * k + 0.001 * np.arange(30))[:, None] * np.ones((1, 14))}


def episode(mode: str, delay_ms: float, steps: int = 40):
    sim, runner = _Sim(), _Runner()
    trace = {}
    run_episode(
        sim, runner, EvalArm("x", None, 1.0, None), 7, task="t", max_steps=steps, replan_steps=10, blend_steps=4,
        sample_seed=7000, limits=StationConfig.sim_aloha(), chunk_mode=mode, inference_delay_ms=delay_ms, trace=trace,
    )  # fmt: skip
    return np.array(sim.commands)[:, 0], runner.calls, trace


def test_delay_ticks_round_up_to_whole_control_ticks():
    assert [delay_ticks(d) for d in (0, 1, 20, 21, 100, 200, 300)] == [0, 1, 1, 2, 5, 10, 15]
    with pytest.raises(ValueError):
        delay_ticks(-5)


def test_a_delayed_chunk_arrives_late_while_the_old_plan_runs():
    commands, calls, trace = episode("naive", 100.0)  # 5 ticks
    # nothing to run before the first chunk arrives: hold where the joints are
    np.testing.assert_allclose(commands[:5], 0.5)
    # the first chunk, planned at tick 0, arrives at 5: its stale first 5 actions are skipped
    np.testing.assert_allclose(commands[5:15], 0.01 + 0.001 * np.arange(5, 15))
    # the second, planned at 10 (replan_steps), takes over at 15 at its own tick 5
    np.testing.assert_allclose(commands[15], 0.02 + 0.001 * 5)
    assert [c["seed"] for c in calls] == [7000, 7010, 7020, 7030]  # one inference per replan, seeds by plan tick
    assert trace["switch_ticks"] == [15, 25, 35] and trace["commands"].shape == (40, 14)
    assert all("guide" not in c for c in calls)


def test_rtc_gives_the_runner_the_plan_it_is_executing():
    commands, calls, _ = episode("rtc", 60.0)  # 3 ticks
    assert "guide" not in calls[0]  # no plan yet: nothing to continue
    guide = calls[1]["guide"]
    assert guide["inference_delay"] == 3 and guide["execution_horizon"] == 10
    assert isinstance(guide["inference_delay"], int) and guide["prefix_actions"].dtype == np.float32
    # planned at tick 10: the first chunk (planned at 0) from its tick 10 to its end
    np.testing.assert_allclose(guide["prefix_actions"][:, 0], 0.01 + 0.001 * np.arange(10, 30), rtol=1e-6)
    np.testing.assert_allclose(commands[13], 0.02 + 0.001 * 3)  # switched at arrival, no crossfade


def test_no_delay_keeps_the_old_episode():
    """Delay 0, crossfade: chunks arrive at the tick they were planned from, as before delays were simulated."""
    commands, calls, trace = episode("crossfade", 0.0)
    assert [c["seed"] for c in calls] == [7000, 7010, 7020, 7030]
    np.testing.assert_allclose(commands[:10], 0.01 + 0.001 * np.arange(10))
    assert trace["switch_ticks"] == [10, 20, 30]


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval_rtc") / "policy"
    return save_untrained_checkpoint(path, get_config("tiny"), tasks=["reach"])


def test_recap_eval_runs_rtc_under_a_delay(untrained, tmp_path, capsys):
    out = tmp_path / "rtc.json"
    code = recap(
        "eval", f"u={untrained}:advantage=none", "--seeds", "3,4", "--max-steps", "45", "--image-size", "48",
        "--threads", "1", "--conditioning-seeds", "0", "--no-progress", "--chunk-mode", "rtc",
        "--inference-delay-ms", "100", "--out", out,
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "chunk mode rtc, inference delay 100 ms (5 ticks)" in printed
    report = json.loads(out.read_text())
    assert (report["chunk_mode"], report["inference_delay_ms"], report["inference_delay_ticks"]) == ("rtc", 100.0, 5)
    arm = report["arms"]["u"]
    assert arm["episodes"] == 2 and len(arm["success_rate_ci95"]) == 2
    jerk = arm["boundary_jerk"]
    assert jerk["switches"] >= 2 and jerk["window"] == 8
    assert jerk["boundary_mean"] > 0 and jerk["boundary_p95"] >= jerk["boundary_mean"] * 0.5
    err = refused(capsys, "eval", f"u={untrained}", "--seeds", "1", "--inference-delay-ms", "-20", "--no-progress")
    assert "--inference-delay-ms" in err


def test_pooling_refuses_parts_under_other_chunk_modes_or_delays():
    def report(**settings):
        base = {"max_steps": 400, "task": "t", "replan_steps": 25, "blend_steps": 8, "arms": {}}
        return {**base, **settings}

    old = report()  # written before chunk modes: crossfade, no delay
    assert pool([old, report(chunk_mode="crossfade", inference_delay_ms=0.0)])["chunk_mode"] == "crossfade"
    with pytest.raises(PoolError, match="chunk_mode"):
        pool([old, report(chunk_mode="rtc", inference_delay_ms=0.0)])
    with pytest.raises(PoolError, match="inference_delay_ms"):
        pool([report(chunk_mode="rtc", inference_delay_ms=0.0), report(chunk_mode="rtc", inference_delay_ms=100.0)])
