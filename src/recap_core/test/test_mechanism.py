"""The RECAP mechanism on a two-mode task: advantage conditioning and CFG move mass to the good mode.

The data (``make_bimodal_dataset``) has two action modes at every state, towards the goal (good) or away from
it (bad); the labels come from the real RECAP maths with a tabular value, so this isolates the policy side
(the value network's own learning is tested in test_train.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from recap_core import cli, rl
from recap_core.data import load_frames_table, make_bimodal_dataset, write_labels
from recap_core.data.reader import load_tasks, normalised_rewards
from recap_core.data.schema import RecapConfig, load_info
from recap_core.data.synthetic import _tints, bimodal_good_mode, render_line
from recap_core.models import PolicyRunner

TASK = "move to the right end"
SAMPLES = 128
TRAIN = ["--steps", "400", "--batch-size", "16", "--lr", "2e-3", "--no-progress", "--seed", "0"]


def label_with_tabular_value(root, lookahead: int = 10, positive_fraction: float = 0.5) -> None:
    """Label ``root`` with ``recap_core.rl`` (N-step advantage, per-task threshold at ``positive_fraction``)
    from a tabular Monte-Carlo value: the mean return per position bin."""
    table = load_frames_table(root)
    position = np.stack(table["observation.state"].to_numpy(zero_copy_only=False))[:, 0]
    returns = table["return_normalised"].to_numpy()
    bins = np.clip(((position + 1.0) / 2.0 * 20).astype(int), 0, 19)
    mean_return = np.array([returns[bins == b].mean() if (bins == b).any() else 0.0 for b in range(20)])
    value = mean_return[bins]
    rewards = normalised_rewards(table, RecapConfig.from_json(load_info(root)["recap"]), load_tasks(root))
    advantage = rl.n_step_advantage_by_episode(rewards, value, table["episode_index"].to_numpy(), lookahead)
    task_index = table["task_index"].to_numpy()
    thresholds = rl.per_task_thresholds(advantage, task_index, positive_fraction)
    indicator = rl.improvement_indicator(
        advantage, task_index, thresholds, table["is_intervention"].to_numpy(zero_copy_only=False)
    )
    write_labels(
        root,
        value=value,
        advantage=advantage,
        indicator=indicator,
        thresholds={TASK: thresholds[0]},
        value_checkpoint="tabular Monte-Carlo value (test)",
    )


def good_mode(runner: PolicyRunner, positions: np.ndarray, advantage, beta: float) -> np.ndarray:
    """Whether each of the sampled chunks (one per position, fixed noise) follows the good mode."""
    tints = _tints(runner.cameras)
    size = runner.config.backbone.image_size
    images = {
        camera: torch.from_numpy(render_line(positions, size, tints[i]).transpose(0, 3, 1, 2).copy())
        for i, camera in enumerate(runner.cameras)
    }
    state = torch.from_numpy(np.repeat(positions[:, None], 14, axis=1).astype(np.float32))
    count = len(positions)
    batch = runner.processor.preprocess(
        {"images": images, "state": state, "task": [TASK] * count, "advantage": [advantage] * count}
    )
    unconditional = runner.processor.prompt_tokenizer([TASK] * count, [None] * count)
    noise = torch.randn(
        count, runner.config.action_horizon, runner.config.action_dim, generator=torch.Generator().manual_seed(0)
    )
    chunk = runner.model.sample_actions(
        batch["pixels"],
        batch["state_normalised"],
        (batch["prompt_ids"], batch["prompt_mask"]),
        noise,
        unconditional=unconditional if beta != 1.0 else None,
        beta=beta,
    )
    actions = runner.processor.postprocess(chunk, batch).numpy()
    return bimodal_good_mode(state.numpy(), actions[:, :5])


def assert_more_good(better: np.ndarray, worse: np.ndarray, min_gain: float, what: str) -> None:
    """Both arms sampled chunks at the same states with the same noise, so the comparison is paired: a one-sided
    sign test on the samples whose mode flips must reject "no effect" at p < 0.01, on top of ``min_gain``."""
    gained, lost = int((better & ~worse).sum()), int((~better & worse).sum())
    gain = better.mean() - worse.mean()
    p_value = binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue if gained + lost else 1.0
    assert gain >= min_gain and p_value < 0.01, (
        f"{what}: good-mode fraction {better.mean():.2f} vs {worse.mean():.2f} (gain {gain:.2f}, "
        f"{gained} flips to good, {lost} to bad, sign-test p={p_value:.3g})"
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mechanism")
    data = make_bimodal_dataset(
        root / "bimodal", num_episodes=60, seed=0, good_probabilities=(0.3, 0.7), segment_length=10
    )
    label_with_tabular_value(data)
    for mode in ("recap", "sft"):
        assert cli.main(["train-policy", str(data), "--mode", mode, "--out", str(root / mode), *TRAIN]) == 0
    return PolicyRunner.from_checkpoint(root / "recap"), PolicyRunner.from_checkpoint(root / "sft"), data


def test_labels_carry_the_mode_imperfectly(trained):
    """Each episode picks the good mode with probability 0.3 or 0.7, redrawn every 10 steps, and the 10-step
    lookahead can reach into the next, independently drawn segment: the indicator is an imperfect signal (about
    0.8 of "positive" frames are good-mode), leaving room for guidance to sharpen it further."""
    _, _, data = trained
    table = load_frames_table(data)
    states = np.stack(table["observation.state"].to_numpy(zero_copy_only=False))
    actions = np.stack(table["action"].to_numpy(zero_copy_only=False))
    good = bimodal_good_mode(states, actions)
    indicator = table["indicator"].to_numpy(zero_copy_only=False)
    assert 0.7 < good[indicator].mean() < 0.95
    assert good[~indicator].mean() < 0.4


def test_advantage_conditioning_and_guidance_favour_the_good_mode(trained):
    recap_runner, sft_runner, _ = trained
    positions = np.random.default_rng(0).uniform(-0.5, 0.5, SAMPLES)
    with torch.no_grad():
        positive = good_mode(recap_runner, positions, "positive", 1.0)
        negative = good_mode(recap_runner, positions, "negative", 1.0)
        guided = good_mode(recap_runner, positions, "positive", 2.0)
        sft = good_mode(sft_runner, positions, "positive", 1.0)
    assert_more_good(positive, negative, 0.25, "'positive' vs 'negative'")
    assert_more_good(positive, sft, 0.15, "RECAP 'positive' vs SFT")
    assert_more_good(guided, positive, 0.05, "beta=2 vs beta=1")
    assert positive.mean() < 0.97, "beta=1 already saturated: the guidance comparison would be meaningless"
