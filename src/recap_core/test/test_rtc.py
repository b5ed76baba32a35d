"""Real-time chunking (rtc.py): the soft mask, the clipped guidance weight, the guided velocity, and guided sampling
through ``PolicyRunner.infer(guide=...)`` for a RECAP policy and a pi0 family policy."""

from __future__ import annotations

import math
import pathlib
import shutil

import numpy as np
import pytest
import torch

from recap_core.data.synthetic import make_synthetic_dataset
from recap_core.models import PolicyRunner, get_config
from recap_core.models.rtc import (
    DEFAULT_MAX_GUIDANCE_WEIGHT,
    RTCGuide,
    guidance_weight,
    guide_sampler,
    guided_velocity,
    soft_mask,
)
from recap_core.models.untrained import save_untrained_checkpoint
from recap_core.testing import recap, word_tokenizer

TASK = "transfer the cube"
PI0 = pathlib.Path(__file__).parent / "reference" / "pi0"


# ---------------------------------------------------------------------------- the math


def test_soft_mask_freezes_the_delay_ramps_down_and_ends_before_the_execution_horizon():
    w = soft_mask(10, inference_delay=2, execution_horizon=3).numpy()
    assert w.shape == (10,)
    np.testing.assert_array_equal(w[:2], 1.0)
    np.testing.assert_array_equal(w[7:], 0.0)
    ramp = w[2:7]
    assert np.all(np.diff(ramp) < 0) and 0 < ramp[-1] and ramp[0] < 1
    # paper Eq. 5: c_i = (H - s - i) / (H - s - d + 1), weight c_i (e^c_i - 1) / (e - 1)
    c = (10 - 3 - np.arange(2, 7)) / (10 - 3 - 2 + 1)
    np.testing.assert_allclose(ramp, c * np.expm1(c) / (math.e - 1), rtol=1e-6)
    # no previous action past the prefix: zero there too; a delay beyond the overlap is clamped to it
    assert np.all(soft_mask(10, 2, 0, prefix_length=4).numpy()[4:] == 0)
    np.testing.assert_array_equal(soft_mask(10, 8, 5).numpy(), [1] * 5 + [0] * 5)
    with pytest.raises(ValueError):
        soft_mask(10, -1, 3)


def test_guidance_weight_is_the_paper_formula_clipped():
    assert guidance_weight(0.0) == DEFAULT_MAX_GUIDANCE_WEIGHT == 5.0
    assert guidance_weight(1.0) == 0.0
    for tau in (0.3, 0.5, 0.8, 0.95):
        r2 = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
        assert guidance_weight(tau, 1e9) == pytest.approx((1 - tau) / (tau * r2))
        assert guidance_weight(tau, 2.0) == pytest.approx(min(2.0, (1 - tau) / (tau * r2)))
    taus = np.linspace(0, 0.999, 200)
    assert max(guidance_weight(t, 3.0) for t in taus) == 3.0  # early (noisy) steps are clipped


def _linear_field(seed=0, shape=(1, 6, 3)):
    """v(x) = x @ M + b: its Jacobian is known, so the vector-Jacobian product can be checked by hand."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(shape[-1], shape[-1], generator=g) * 0.3
    b = torch.randn(shape, generator=g)
    return (lambda x: x @ m + b), m, b


@pytest.mark.parametrize("convention", ["eta", "openpi"])
def test_guided_velocity_is_the_clipped_pseudo_inverse_correction(convention):
    velocity, m, _ = _linear_field()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, 3, generator=g)
    target = torch.randn(1, 6, 3, generator=g)
    weights = soft_mask(6, 2, 1)[None, :, None].expand(1, 6, 3).contiguous()
    tau = 0.4
    sign = 1.0 if convention == "eta" else -1.0
    for max_weight in (0.5, 5.0, 100.0):
        guide = RTCGuide(target, weights, max_guidance_weight=max_weight)
        out = guided_velocity(velocity, x, tau, guide, convention=convention)
        estimate = x + sign * (1 - tau) * velocity(x)
        error = (target - estimate) * weights
        # d estimate / d x = I + sign (1 - tau) M (acting on the last axis): its transpose applied to the error
        correction = error + sign * (1 - tau) * error @ m.T
        expected = velocity(x) + sign * guidance_weight(tau, max_weight) * correction
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        # the clip bounds the correction: |v_guided - v| <= max_weight |J^T e|
        assert (out - velocity(x)).norm() <= max_weight * correction.norm() * (1 + 1e-5)
    # no weight anywhere, or a zero clip: the plain velocity
    idle = RTCGuide(target, torch.zeros_like(weights))
    torch.testing.assert_close(guided_velocity(velocity, x, tau, idle, convention=convention), velocity(x))


def test_guided_euler_pulls_the_frozen_steps_onto_the_guide_and_leaves_the_tail_free():
    """On a linear field, the guided sampler ends near the guide where the mask is 1 and at the plain sample where
    it is 0."""
    velocity, _, _ = _linear_field(2)
    target = torch.full((1, 6, 3), 2.0)
    weights = soft_mask(6, 3, 2)[None, :, None].expand(1, 6, 3).contiguous()
    noise = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(3))

    def sample(guide):
        step = guide_sampler(lambda x, eta: velocity(x), guide)
        x = noise
        for k in range(10):
            x = x + 0.1 * step(x, k * 0.1)
        return x

    plain, guided = sample(None), sample(RTCGuide(target, weights))
    assert (guided[:, :3] - 2.0).abs().max() < 0.25 * (plain[:, :3] - 2.0).abs().max()
    assert (guided[:, 4:] - plain[:, 4:]).abs().max() < (guided[:, :3] - plain[:, :3]).abs().max()


# ---------------------------------------------------------------------------- through the runner


def observation(rng: np.random.Generator, cameras, joints: int, task: str = TASK, size=(48, 64)) -> dict:
    return {
        "images": {cam: rng.integers(0, 255, (*size, 3), dtype=np.uint8) for cam in cameras},
        "state": rng.normal(size=joints).astype(np.float32),
        "task": task,
    }


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    path = save_untrained_checkpoint(tmp_path_factory.mktemp("rtc") / "policy", get_config("tiny"), tasks=[TASK])
    return PolicyRunner.from_checkpoint(path)


def frozen_errors(runner, obs, delay: int, execution: int, **knobs) -> tuple[float, float, np.ndarray]:
    """(guided, plain) mean |chunk - prefix| over the first ``delay`` ticks; the guided chunk."""
    previous = runner.infer(obs, seed=11, **knobs)["actions"]
    prefix = previous[execution:]  # the rest of a plan replanned after ``execution`` ticks
    plain = runner.infer(obs, seed=5, **knobs)["actions"]
    guide = {"prefix_actions": prefix, "inference_delay": delay, "execution_horizon": execution}
    guided = runner.infer(obs, seed=5, guide=guide, **knobs)["actions"]
    frozen = slice(0, delay)
    return (
        float(np.abs(guided[frozen] - prefix[frozen]).mean()),
        float(np.abs(plain[frozen] - prefix[frozen]).mean()),
        guided,
    )


def test_rtc_reproduces_the_frozen_prefix_far_better_than_plain_sampling(runner):
    obs = observation(np.random.default_rng(0), runner.cameras, 14)
    guided, plain, chunk = frozen_errors(runner, obs, delay=5, execution=20)
    assert chunk.shape == (50, 14) and np.all(np.isfinite(chunk))
    # the prefix is in absolute joint targets, the model samples relative, normalised actions: the runner maps it
    assert guided < 0.1 * plain, (guided, plain)
    # with classifier-free guidance too (the guidance runs through the CFG velocity)
    guided_cfg, plain_cfg, _ = frozen_errors(runner, obs, delay=5, execution=20, beta=2.0, advantage="positive")
    assert guided_cfg < 0.1 * plain_cfg, (guided_cfg, plain_cfg)


def test_a_guide_under_inference_mode_is_refused_in_one_line_and_works_under_no_grad(runner):
    import torch

    obs = observation(np.random.default_rng(2), runner.cameras, 14)
    prefix = runner.infer(obs, seed=3)["actions"][25:]
    guide = {"prefix_actions": prefix, "inference_delay": 5, "execution_horizon": 20}
    with torch.inference_mode(), pytest.raises(RuntimeError, match="not torch.inference_mode") as err:
        runner.infer(obs, seed=4, guide=guide)
    assert "\n" not in str(err.value)
    with torch.no_grad():
        assert runner.infer(obs, seed=4, guide=guide)["actions"].shape == (50, 14)


def test_a_smaller_guidance_clip_guides_less(runner):
    obs = observation(np.random.default_rng(1), runner.cameras, 14)
    prefix = runner.infer(obs, seed=11)["actions"][25:]
    plain = runner.infer(obs, seed=5)["actions"]

    def error(max_weight):
        guide = {"prefix_actions": prefix, "inference_delay": 4, "execution_horizon": 25}
        chunk = runner.infer(obs, seed=5, guide={**guide, "max_guidance_weight": max_weight})["actions"]
        return float(np.abs(chunk[:4] - prefix[:4]).mean())

    assert error(5.0) < error(0.5) < float(np.abs(plain[:4] - prefix[:4]).mean())
    np.testing.assert_array_equal(runner.infer(obs, seed=5, guide={"prefix_actions": prefix, "inference_delay": 4,
                                  "execution_horizon": 25, "max_guidance_weight": 0.0})["actions"], plain)  # fmt: skip


def test_no_guide_is_bit_identical_to_the_plain_sampler(runner):
    obs = observation(np.random.default_rng(2), runner.cameras, 14)
    plain = runner.infer(obs, seed=3)["actions"]
    np.testing.assert_array_equal(runner.infer(obs, seed=3, guide=None)["actions"], plain)
    empty = {"prefix_actions": np.zeros((0, 14), np.float32), "inference_delay": 3, "execution_horizon": 25}
    np.testing.assert_array_equal(runner.infer(obs, seed=3, guide=empty)["actions"], plain)
    cfg = runner.infer(obs, seed=3, beta=2.0, advantage="positive")["actions"]
    np.testing.assert_array_equal(runner.infer(obs, seed=3, beta=2.0, advantage="positive", guide=None)["actions"], cfg)


def test_bad_guides_are_refused(runner):
    obs = observation(np.random.default_rng(3), runner.cameras, 14)
    good = {"prefix_actions": np.zeros((10, 14), np.float32), "inference_delay": 2, "execution_horizon": 25}
    for bad, match in (
        ({**good, "prefix_actions": np.zeros((10, 7))}, "prefix_actions"),
        ({**good, "prefix_actions": np.full((10, 14), np.nan)}, "prefix_actions"),
        ({**good, "inference_delay": -1}, "inference_delay"),
        ({**good, "execution_horizon": 2.5}, "execution_horizon"),
        ({"prefix_actions": good["prefix_actions"]}, "lacks"),
    ):
        with pytest.raises(ValueError, match=match):
            runner.infer(obs, seed=0, guide=bad)


def test_a_guide_survives_json_lists(runner):
    """The remote protocol may carry the prefix as nested lists and the ticks as plain ints."""
    obs = observation(np.random.default_rng(4), runner.cameras, 14)
    prefix = runner.infer(obs, seed=11)["actions"][20:]
    as_array = {"prefix_actions": prefix, "inference_delay": 3, "execution_horizon": 20}
    as_lists = {**as_array, "prefix_actions": prefix.tolist(), "inference_delay": np.int64(3)}
    np.testing.assert_array_equal(
        runner.infer(obs, seed=1, guide=as_array)["actions"], runner.infer(obs, seed=1, guide=as_lists)["actions"]
    )


# ---------------------------------------------------------------------------- a pretrained family (pi0)


@pytest.fixture(scope="module")
def pi0_runner(tmp_path_factory):
    """The tiny pi0 of test/reference (LeRobot 0.3 layout) fine-tuned 2 steps under RECAP (as test_family_recap)."""
    root = tmp_path_factory.mktemp("pi0_rtc")
    source = shutil.copytree(PI0 / "lerobot033", root / "lerobot")
    shutil.copy(PI0 / "tiny_arch.json", source / "architecture.json")
    make_synthetic_dataset(
        root / "reach", num_episodes=3, cameras=("top",), joint_names=("j0", "j1", "j2", "j3"), gripper_joints=(),
        max_episode_length=12,
    )  # fmt: skip
    word_tokenizer(["reach", "Advantage", ":", "positive", "negative"], root / "tokenizer")
    code = recap(
        "train-policy", root / "reach", "--mode", "sft", "--init", source, "--tokenizer", root / "tokenizer",
        "--out", root / "run", "--steps", "2", "--no-progress", "--batch-size", "2", "--threads", "1",
    )  # fmt: skip
    assert code == 0
    return PolicyRunner.from_checkpoint(root / "run")


def test_rtc_guides_a_family_policy_too(pi0_runner):
    obs = observation(np.random.default_rng(0), pi0_runner.cameras, 4, task="reach", size=(24, 32))
    assert pi0_runner.config.action_horizon == 5
    plain = pi0_runner.infer(obs, seed=5)["actions"]
    np.testing.assert_array_equal(pi0_runner.infer(obs, seed=5, guide=None)["actions"], plain)
    guided, unguided, chunk = frozen_errors(pi0_runner, obs, delay=2, execution=1)
    assert chunk.shape == (5, 4) and np.all(np.isfinite(chunk))
    assert guided < 0.2 * unguided, (guided, unguided)
    guided_cfg, unguided_cfg, _ = frozen_errors(pi0_runner, obs, delay=2, execution=1, beta=2.0, advantage="positive")
    assert guided_cfg < 0.2 * unguided_cfg, (guided_cfg, unguided_cfg)
