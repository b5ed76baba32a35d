"""Training data: open one or more RECAP datasets, pool their statistics, build frame batches.

A collated :class:`recap_core.data.RecapDataset` batch becomes a processor
*frame batch* (``recap_core.models.processor``) with
:func:`frames_from_batch`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np
import torch

from recap_core.models.processor import ACTION_KEY, RELATIVE_ACTION_KEY, STATE_KEY, relative_action_stats

# Decoded images are cached in memory below this size (bytes); above it they are decoded per item.
IMAGE_CACHE_LIMIT = 2 << 30


@dataclasses.dataclass
class TrainingData:
    """The datasets of one run, concatenated, with what the checkpoint needs from them."""

    roots: list[pathlib.Path]
    datasets: list  # RecapDataset per root
    dataset: torch.utils.data.Dataset
    tasks: list[str]
    labelled: bool

    def __len__(self) -> int:
        return len(self.dataset)


def open_datasets(
    roots: Sequence[str | pathlib.Path],
    *,
    cameras: Sequence[str],
    image_size: int,
    chunk_size: int,
    need_labels: bool = False,
    load_images: bool = True,
    episodes: Sequence[Sequence[int]] | None = None,
) -> TrainingData:
    """Open every dataset with the model's cameras, image size and chunk length.

    ``episodes``, one list per root, keeps only those episode indices (a cross-fitting fold's training set).
    """
    from recap_core.data import RecapDataset

    if not roots:
        raise ValueError("give at least one dataset directory")
    if episodes is not None and len(episodes) != len(roots):
        raise ValueError(f"episodes needs one list per dataset: {len(episodes)} lists for {len(roots)} datasets")
    datasets = []
    for number, root in enumerate(roots):
        root = pathlib.Path(root)
        if not (root / "meta" / "info.json").is_file():
            raise FileNotFoundError(
                f"{root} is not a RECAP dataset (no meta/info.json); create one with `recap convert` or `recap dataset`"
            )
        dataset = RecapDataset(
            root,
            chunk_size=chunk_size,
            image_size=image_size,
            cameras=cameras,
            load_images=load_images,
            episodes=None if episodes is None else episodes[number],
        )
        if len(dataset) == 0:
            raise ValueError(f"{root} holds no frames" + ("" if episodes is None else " in the chosen episodes"))
        if need_labels and not dataset.labelled:
            raise ValueError(
                f"{root} has no value/advantage/indicator labels; run `recap label {root} --value VALUE_CKPT` first"
            )
        frame_bytes = len(dataset) * len(cameras) * image_size * image_size * 3
        if load_images and frame_bytes < IMAGE_CACHE_LIMIT:
            dataset.cache_images = True
        datasets.append(dataset)
    tasks = sorted({task for dataset in datasets for task in dataset.tasks})
    concatenated = datasets[0] if len(datasets) == 1 else torch.utils.data.ConcatDataset(datasets)
    return TrainingData(
        [pathlib.Path(r) for r in roots], datasets, concatenated, tasks, all(d.labelled for d in datasets)
    )


def pooled_stats(datasets: Sequence, feature: str) -> dict[str, list[float]]:
    """Count-weighted mean/std (pooled variance) and overall min/max of ``feature`` over datasets."""
    entries = []
    for dataset in datasets:
        stats = dataset.stats.get(feature)
        if stats is None:
            raise ValueError(
                f"{dataset.root} has no statistics for {feature!r} (meta/stats.json); "
                f"the dataset writer should have written them"
            )
        entries.append(stats)
    counts = np.array([float(np.asarray(s.get("count", [1])).reshape(-1)[0]) for s in entries])
    means = np.stack([np.asarray(s["mean"], dtype=np.float64).reshape(-1) for s in entries])
    stds = np.stack([np.asarray(s["std"], dtype=np.float64).reshape(-1) for s in entries])
    weights = counts / counts.sum()
    mean = (weights[:, None] * means).sum(axis=0)
    variance = (weights[:, None] * (stds**2 + (means - mean) ** 2)).sum(axis=0)
    return {
        "mean": mean.tolist(),
        "std": np.sqrt(variance).tolist(),
        "min": np.min([np.asarray(s["min"]).reshape(-1) for s in entries], axis=0).tolist(),
        "max": np.max([np.asarray(s["max"]).reshape(-1) for s in entries], axis=0).tolist(),
    }


def normalization_for(data: TrainingData, *, horizon: int, relative_mask: Sequence[bool] | None) -> dict:
    """``normalization.json`` content: state and action stats, and chunk-relative action stats if used."""
    stats = {STATE_KEY: pooled_stats(data.datasets, STATE_KEY), ACTION_KEY: pooled_stats(data.datasets, ACTION_KEY)}
    if relative_mask is not None and any(relative_mask):
        from recap_core.data import load_frames_table

        states, actions, episodes = [], [], []
        for number, dataset in enumerate(data.datasets):
            table = load_frames_table(dataset.root)
            states.append(_vectors(table, STATE_KEY))
            actions.append(_vectors(table, ACTION_KEY))
            # distinct ids across datasets so chunks never cross from one dataset into the next
            episodes.append(table["episode_index"].to_numpy() + number * 10_000_000)
        stats[RELATIVE_ACTION_KEY] = relative_action_stats(
            np.concatenate(states), np.concatenate(actions), np.concatenate(episodes), horizon, relative_mask
        )
    return stats


def family_data_stats(data: TrainingData) -> dict:
    """State and action statistics of the training data for a pretrained family fine-tuned on a new robot
    (``--normalization data``): mean, std, min, max, and the 1st / 99th percentiles pi0.5 normalises by."""
    from recap_core.data import load_frames_table

    stats = {}
    for key in (STATE_KEY, ACTION_KEY):
        values = np.concatenate([_vectors(load_frames_table(dataset.root), key) for dataset in data.datasets])
        stats[key] = {
            "mean": values.mean(axis=0).tolist(),
            "std": values.std(axis=0).tolist(),
            "min": values.min(axis=0).tolist(),
            "max": values.max(axis=0).tolist(),
            "q01": np.quantile(values, 0.01, axis=0).tolist(),
            "q99": np.quantile(values, 0.99, axis=0).tolist(),
        }
    return stats


def _vectors(table, name: str) -> np.ndarray:
    column = table[name].combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1).astype(np.float64)


def frames_from_batch(
    batch: dict, cameras: Sequence[str], with_actions: bool, *, shift: int = 0, generator: torch.Generator | None = None
) -> dict:
    """A collated dataset batch -> a processor frame batch (``images``, ``state``, ``task``, ``actions``).

    ``shift`` > 0 applies :func:`random_shift` to the images with ``generator`` (training augmentation).
    """
    images = {camera: batch[f"observation.images.{camera}"] for camera in cameras}
    frames = {
        "images": random_shift(images, shift, generator),
        "state": batch["observation.state"].float(),
        "task": list(batch["task"]),
    }
    if with_actions:
        frames["actions"] = batch["action"].float()
    return frames


def random_shift(images: dict[str, torch.Tensor], max_shift: int, generator: torch.Generator) -> dict:
    """Random-shift augmentation (DrQ): pad each image by ``max_shift`` with its edge pixels, crop back at a
    random offset. ``images``: camera -> uint8 ``[B, 3, h, w]``; every image of every camera gets its own
    offset (from ``generator``, so a step's augmentation is reproducible). ``max_shift`` 0 returns them as is.
    """
    if max_shift <= 0:
        return images
    shifted = {}
    for camera, batch in images.items():
        size, _, height, width = batch.shape
        padded = torch.nn.functional.pad(batch.float(), (max_shift,) * 4, mode="replicate").to(batch.dtype)
        offsets = torch.randint(0, 2 * max_shift + 1, (size, 2), generator=generator).tolist()
        shifted[camera] = torch.stack(
            [padded[i, :, dy : dy + height, dx : dx + width] for i, (dy, dx) in enumerate(offsets)]
        )
    return shifted


def frames_to_device(frames: dict, device: str | torch.device) -> dict:
    """Move a frame batch's tensors (including the per-camera images) to ``device``."""
    moved = {}
    for key, value in frames.items():
        if key == "images":
            moved[key] = {camera: image.to(device) for camera, image in value.items()}
        elif torch.is_tensor(value):
            moved[key] = value.to(device)
        else:
            moved[key] = value
    return moved


def dataset_tasks(roots: Sequence[str | pathlib.Path]) -> list[str]:
    """Task prompts of every dataset (from meta/tasks.parquet only: cheap)."""
    from recap_core.data import load_tasks

    return sorted({task for root in roots for task in load_tasks(root)})


def frame_kinds(data: TrainingData) -> np.ndarray:
    """Per item of ``data.dataset``: ``demo`` (a demonstration episode), ``correction`` (a human-driven frame
    of a rollout) or ``autonomous`` (a rollout frame the policy drove)."""
    from recap_core.data import schema

    kinds = []
    for dataset in data.datasets:
        # the same rule as ``recap label`` (labelling.demo_frames): an episode whose source is "demo"
        demo_episodes = [int(e["episode_index"]) for e in dataset.episodes if e.get("source") == "demo"]
        demo = np.isin(dataset.column(schema.EPISODE_INDEX), demo_episodes)
        intervention = dataset.column(schema.IS_INTERVENTION).astype(bool)
        kinds.append(np.where(demo, "demo", np.where(intervention, "correction", "autonomous")))
    return np.concatenate(kinds) if kinds else np.zeros(0, dtype="<U10")
