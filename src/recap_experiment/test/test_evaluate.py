"""recap eval: metrics and a real (tiny) evaluation run."""

from __future__ import annotations

import numpy as np
import pytest

from recap_experiment.evaluate import (
    AS_TRAINED,
    EpisodeOutcome,
    EvalArm,
    evaluate,
    parse_arm,
    parse_seeds,
    scene_conditioning,
    summarise,
)


def test_throughput_is_successes_per_robot_hour():
    outcomes = [EpisodeOutcome(0, True, 100, 4), EpisodeOutcome(1, False, 400, 2), EpisodeOutcome(2, True, 300, 4)]
    s = summarise(outcomes)
    robot_seconds = (100 + 400 + 300) * 0.02
    assert s["throughput_per_hour"] == pytest.approx(2 / robot_seconds * 3600)
    assert s["mean_time_to_success_s"] == pytest.approx((100 + 300) * 0.02 / 2)
    assert s["success_rate"] == pytest.approx(2 / 3)
    lo, hi = s["throughput_ci95"]
    assert lo <= s["throughput_per_hour"] <= hi


def test_parsing():
    arm = parse_arm("recap=/tmp/x:beta=2:advantage=positive")
    assert arm == EvalArm("recap", arm.checkpoint, 2.0, "positive") and str(arm.checkpoint) == "/tmp/x"
    assert parse_arm("u=/tmp/y:advantage=none").advantage is None
    assert parse_arm("d=/tmp/z").advantage == AS_TRAINED  # the checkpoint's own condition, read when it loads
    assert parse_seeds("5-7") == [5, 6, 7] and parse_seeds("1,9") == [1, 9]


class _Scenes:
    """A stand-in simulator: the scene of seed s is an image filled with s; the joints never differ."""

    def reset(self, seed):
        self.seed = seed

    def render(self):
        return {"base": np.full((8, 8, 3), self.seed, dtype=np.uint8)}

    def joint_positions(self):
        return np.zeros(14)


class _Policy:
    """First chunk = scene_gain * image mean + noise_gain * N(0, 1) from the noise seed."""

    def __init__(self, scene_gain, noise_gain):
        self.scene_gain, self.noise_gain = scene_gain, noise_gain

    def reset(self):
        pass

    def infer(self, obs, beta, advantage, seed):
        noise = np.random.default_rng(seed).standard_normal(14)
        target = self.scene_gain * obs["images"]["base"].mean() + self.noise_gain * noise
        return {"actions": np.tile(target, (5, 1))}


def test_scene_conditioning_tells_a_policy_that_reads_the_scene_from_one_that_samples_blindly():
    arm = EvalArm("x", None)
    reads = scene_conditioning(_Scenes(), _Policy(0.01, 0.001), arm, list(range(10)), task="t")
    blind = scene_conditioning(_Scenes(), _Policy(0.0, 0.1), arm, list(range(10)), task="t")
    assert reads["ratio"] > 10 and blind["ratio"] < 0.01
    assert reads["scene_spread_rad"] == pytest.approx(0.01 * np.arange(10).std(), rel=1e-6)
    assert blind["scene_spread_rad"] < 1e-12 and blind["noise_spread_rad"] > 0.05
    with pytest.raises(ValueError, match="at least 2 seeds"):
        scene_conditioning(_Scenes(), _Policy(0.0, 0.1), arm, [1], task="t")


def test_evaluates_a_tiny_checkpoint_on_the_same_seeds(tiny_checkpoints):
    arms = [EvalArm("a", tiny_checkpoints["policy_a"]), EvalArm("a_cfg", tiny_checkpoints["policy_a"], beta=2.0)]
    report = evaluate(arms, [3, 4], task="reach", max_steps=30, image_size=48, threads=1, progress=False)
    for name in ("a", "a_cfg"):
        arm = report["arms"][name]
        assert [o["seed"] for o in arm["outcomes"]] == [3, 4]
        assert arm["episodes"] == 2 and all(o["steps"] <= 30 for o in arm["outcomes"])
        assert np.isfinite(arm["throughput_per_hour"])
        conditioning = arm["scene_conditioning"]
        assert conditioning["seeds"] == 2 and np.isfinite(conditioning["ratio"])
        assert arm["advantage"] == "positive"  # an SFT checkpoint's condition, resolved when it loaded


def test_workers_share_the_seeds_and_give_what_one_process_gives(tiny_checkpoints):
    """Two processes of one thread each: every seed once, in order; the same outcomes as one process with
    one thread (episodes depend only on the seed), and the diagnostic on the same first seeds."""
    arms = [EvalArm("a", tiny_checkpoints["policy_a"], beta=2.0)]
    seeds = [3, 4, 5, 6, 7]
    kwargs = dict(task="reach", max_steps=20, image_size=48, progress=False, conditioning_seeds=2)
    single = evaluate(arms, seeds, threads=1, **kwargs)["arms"]["a"]
    shared = evaluate(arms, seeds, threads=2, workers=2, **kwargs)
    assert shared["workers"] == 2 and [o["seed"] for o in shared["arms"]["a"]["outcomes"]] == seeds
    assert shared["arms"]["a"]["outcomes"] == single["outcomes"]
    assert shared["arms"]["a"]["scene_conditioning"] == pytest.approx(single["scene_conditioning"])
