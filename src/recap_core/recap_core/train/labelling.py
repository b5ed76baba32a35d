"""Advantage labelling (``recap label``): value, N-step advantage and improvement indicator of every frame.

The rules, and the options that are not the paper's, are in docs/learning.md §5 and :func:`label_datasets`.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np
import torch

from recap_core import rl
from recap_core.data.schema import DAMAGED, ROLLOUT_POSITIVES, DatasetError
from recap_core.errors import UserError
from recap_core.train import crossfit


def parse_task_fractions(entries: Sequence[str]) -> dict[str, float]:
    """``--task-positive-fraction`` entries (``TASK=FRACTION``) as task -> fraction; a UserError on a bad one."""
    fractions = {}
    for entry in entries:
        task, sep, value = entry.rpartition("=")
        try:
            fraction = float(value)
        except ValueError:
            fraction = float("nan")
        if not sep or not task or not 0.0 <= fraction <= 1.0:
            raise UserError(f"--task-positive-fraction expects TASK=FRACTION with FRACTION in [0, 1], got {entry!r}")
        fractions[task] = fraction
    return fractions


@torch.no_grad()
def predict_values(
    runner,
    root: pathlib.Path,
    *,
    batch_size: int,
    progress: bool,
    fold_runners: Sequence | None = None,
    assignment: dict[str, int] | None = None,
) -> np.ndarray:
    """``V(o_t)`` of every frame of one dataset, by global frame ``index``: ``[N]`` float64.

    With ``fold_runners`` (a cross-fitted checkpoint's fold models, ``recap_core.train.crossfit``) and
    ``assignment`` (its manifest's episode key -> fold) each episode is predicted by the model of the fold
    that held it out, which never trained on it; an episode no model trained on, by ``runner``.
    """
    from recap_core.data import load_episodes

    total = _total_frames(root)
    values = np.full(total, np.nan)
    if fold_runners:
        episodes = load_episodes(root)
        assigned = crossfit.episode_folds(episodes, assignment or {})
        for fold, fold_runner in [(-1, runner), *enumerate(fold_runners)]:
            chosen = [int(e["episode_index"]) for e, f in zip(episodes, assigned) if f == fold]
            if chosen:
                _predict_into(
                    values,
                    fold_runner,
                    root,
                    chosen,
                    batch_size=batch_size,
                    progress=progress,
                    desc=f"value {root.name} " + (f"fold {fold}" if fold >= 0 else "unseen episodes"),
                )
    else:
        _predict_into(values, runner, root, None, batch_size=batch_size, progress=progress, desc=f"value {root.name}")
    if np.isnan(values).any():
        raise DatasetError(
            f"{root}: {int(np.isnan(values).sum())} frames got no value (its frame index has gaps); {DAMAGED}"
        )
    return values


def _total_frames(root: pathlib.Path) -> int:
    from recap_core.data.schema import load_info

    return int(load_info(root)["total_frames"])


def _predict_into(
    values: np.ndarray, runner, root: pathlib.Path, episodes, *, batch_size: int, progress: bool, desc: str
) -> None:
    from tqdm import tqdm

    from recap_core.data import RecapDataset
    from recap_core.train.data import frames_from_batch

    dataset = RecapDataset(
        root,
        chunk_size=1,
        image_size=runner.config.image_size,
        cameras=runner.config.cameras,
        episodes=episodes,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress):
        predicted, _ = runner.predict_frames(frames_from_batch(batch, runner.config.cameras, with_actions=False))
        values[batch["index"].numpy()] = predicted.double().cpu().numpy()


def label_datasets(
    roots: Sequence[str | pathlib.Path],
    value_checkpoint: str | pathlib.Path,
    *,
    lookahead: int = rl.DEFAULT_LOOKAHEAD,
    positive_fraction: float = 0.4,
    task_fractions: dict[str, float] | None = None,
    rollout_positives: str = "advantage",
    takeover_negative: int = 0,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
    runner=None,
) -> dict:
    """Label every dataset in ``roots``; returns per-task thresholds and positive fractions.

    The value model reads its own cameras, which every dataset must have, and the datasets' joints must be
    the ones it was trained on (a one-line UserError before anything is written). For every frame: ``V(o_t)``
    from the value checkpoint (one trained with ``--folds K`` values each episode
    with the fold model that never trained on it, :mod:`recap_core.train.crossfit`); ``A_t = sum_{t'<t+N} r_t'
    + V(o_{t+N}) - V(o_t)`` (paper Appendix F, N = ``lookahead``, cut at the episode end); a per-task threshold
    ``eps_l`` so that ``positive_fraction`` of that task's frames are positive (``task_fractions`` per task);
    ``I_t = A_t > eps_l``, forced True on the human's corrections (:func:`corrections`). Thresholds are chosen
    over all given datasets together (the paper's D), then each dataset gets its columns through
    ``recap_core.data.write_labels``.

    Not the paper's rules, off by default (docs/experiment.md, Protocol, says which the experiment uses and
    why): ``rollout_positives="interventions"`` labels only demonstrations by advantage (``positive_fraction``
    of their frames) and makes a rollout frame positive only where the human corrected, the policy's own frames
    all negative; ``"unforced"`` labels the corrections by their advantage like every other frame instead of
    forcing them positive, as the AWR baseline weights them; ``takeover_negative`` > 0 makes the policy's own
    frames in that many steps before each take-over negative whatever their advantage.
    """
    from recap_core.data import load_frames_table, normalised_rewards, write_labels
    from recap_core.data.reader import load_tasks
    from recap_core.data.schema import RecapConfig, info_layout, load_info
    from recap_core.layout import model_problem
    from recap_core.models.runner import ValueRunner

    if not 0.0 <= positive_fraction <= 1.0:
        raise UserError(f"--positive-fraction must be in [0, 1], got {positive_fraction}")
    if rollout_positives not in ROLLOUT_POSITIVES:
        raise UserError(f"rollout_positives must be one of {ROLLOUT_POSITIVES}, got {rollout_positives!r}")
    if lookahead < 1:
        raise UserError(f"--lookahead must be >= 1, got {lookahead}")
    if takeover_negative < 0:
        raise UserError(f"--takeover-negative must be >= 0 steps, got {takeover_negative}")
    task_fractions = dict(task_fractions or {})
    if runner is None:
        runner = ValueRunner.from_checkpoint(value_checkpoint, device=device or "cpu")
    folds, assignment = crossfit.read_assignment(runner.checkpoint.path)
    fold_runners = [
        ValueRunner.from_checkpoint(crossfit.fold_dir(runner.checkpoint.path, fold), device=device or "cpu")
        for fold in range(folds)
    ]
    roots = [pathlib.Path(r) for r in roots]
    for root in roots:  # every dataset before any is labelled: the value model must fit its layout
        problem = model_problem(
            "value", runner.config, runner.checkpoint.training_config, info_layout(load_info(root)), "dataset"
        )
        if problem:
            raise UserError(f"{root}: cannot label it with {runner.checkpoint.path}: {problem}")
    per_dataset = []
    all_tasks = sorted({task for root in roots for task in load_tasks(root)})
    unknown = sorted(set(task_fractions) - set(all_tasks))
    if unknown:
        raise UserError(f"--task-positive-fraction names task(s) {unknown} that no dataset holds; tasks: {all_tasks}")
    for root in roots:
        table = load_frames_table(root)
        tasks = load_tasks(root)
        recap = RecapConfig.from_json(load_info(root)["recap"])
        values = predict_values(
            runner, root, batch_size=batch_size, progress=progress, fold_runners=fold_runners, assignment=assignment
        )
        rewards = normalised_rewards(table, recap, tasks)
        episodes = table["episode_index"].to_numpy()
        advantage = rl.n_step_advantage_by_episode(rewards, values, episodes, lookahead)
        global_task = np.array([all_tasks.index(tasks[i]) for i in table["task_index"].to_numpy()], dtype=np.int64)
        in_demo = demo_frames(root, table)
        per_dataset.append(
            (root, tasks, values, advantage, global_task, corrections(root, table, in_demo), in_demo, episodes)
        )
    advantages = np.concatenate([entry[3] for entry in per_dataset])
    task_index = np.concatenate([entry[4] for entry in per_dataset])
    fractions = {i: task_fractions.get(task, positive_fraction) for i, task in enumerate(all_tasks)}
    if rollout_positives == "interventions":
        # Only demonstrations are labelled by advantage; a task without any keeps no frame positive by it.
        by_advantage = np.concatenate([entry[6] for entry in per_dataset])
        thresholds = {int(t): float(advantages[task_index == t].max()) for t in np.unique(task_index)}
        if by_advantage.any():
            thresholds.update(rl.per_task_thresholds(advantages[by_advantage], task_index[by_advantage], fractions))
    else:
        thresholds = rl.per_task_thresholds(advantages, task_index, fractions)
    summary_tasks: dict[str, dict] = {}
    for root, tasks, values, advantage, global_task, intervention, in_demo, episodes in per_dataset:
        forced = np.zeros_like(intervention) if rollout_positives == "unforced" else intervention
        indicator = rl.improvement_indicator(advantage, global_task, thresholds, forced)
        if rollout_positives == "interventions":
            indicator &= in_demo | intervention  # the policy's own frames: negative
        leading = rl.before_takeover(intervention, episodes, takeover_negative)
        indicator &= ~leading
        write_labels(
            root,
            value=values,
            advantage=advantage,
            indicator=indicator,
            thresholds={
                task: thresholds[all_tasks.index(task)] for task in tasks if all_tasks.index(task) in thresholds
            },
            value_checkpoint=f"{runner.checkpoint_id} {runner.checkpoint.path}"
            + (f" (cross-fitted, {folds} folds)" if folds else ""),
        )
        for task in tasks:
            rows = global_task == all_tasks.index(task)
            entry = summary_tasks.setdefault(
                task,
                {
                    "frames": 0,
                    "positive": 0,
                    "interventions": 0,
                    "before_takeover": 0,
                    "threshold": thresholds.get(all_tasks.index(task), 0.0),
                },
            )
            entry["frames"] += int(rows.sum())
            entry["positive"] += int(indicator[rows].sum())
            entry["interventions"] += int(intervention[rows].sum())
            entry["before_takeover"] += int(leading[rows].sum())
    for entry in summary_tasks.values():
        entry["positive_fraction"] = entry["positive"] / max(1, entry["frames"])
    return {
        "datasets": [str(r) for r in roots],
        "value_checkpoint": runner.checkpoint_id,
        "value_folds": folds,
        "lookahead": lookahead,
        "rollout_positives": rollout_positives,
        "takeover_negative": takeover_negative,
        "frames": int(len(advantages)),
        "mean_task_positive_fraction": float(np.mean([e["positive_fraction"] for e in summary_tasks.values()]))
        if summary_tasks
        else 0.0,
        "tasks": summary_tasks,
    }


def corrections(root, table, in_demo: np.ndarray | None = None) -> np.ndarray:
    """Frames whose command was a human correction during an autonomous episode: ``bool [N]``.

    These are forced positive. In a demonstration the operator holds the
    deadman throughout, so every step is a human step; forcing those would make
    every demo frame positive and erase the advantage labels the pretraining
    relies on, so demo episodes are labelled by their advantage alone.
    ``in_demo`` (from :func:`demo_frames`) saves reading the episodes again.
    """
    intervention = table["is_intervention"].to_numpy(zero_copy_only=False).astype(bool)
    return intervention & ~(demo_frames(root, table) if in_demo is None else in_demo)


def demo_frames(root, table) -> np.ndarray:
    """Frames of demonstration episodes: ``bool [N]``."""
    from recap_core.data.reader import load_episodes

    demo_episodes = {int(e["episode_index"]) for e in load_episodes(root) if e.get("source") == "demo"}
    return np.isin(table["episode_index"].to_numpy(), sorted(demo_episodes))
