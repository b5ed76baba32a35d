"""A dataset's metadata (tasks, episodes, stats) read and checked; pyarrow only, no torch.

Every defect (a metadata file missing, unreadable or disagreeing with ``meta/info.json``) raises
:class:`DatasetError` naming the file and what to do, never a pyarrow traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recap_core.data import schema
from recap_core.data.schema import DAMAGED, DatasetError

# columns an episodes file must have for anything here to read it
EPISODE_COLUMNS = (
    "episode_index",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
    "task_index",
)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (pyarrow's may run over several)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def read_parquet(path: Path, *, columns: Sequence[str] | None = None) -> pa.Table:
    """One parquet file of a dataset; DatasetError naming it when it is missing, unreadable or lacks ``columns``."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing; {DAMAGED}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable parquet file ({first_line(exc)}); {DAMAGED}") from None
    if columns is not None:
        missing = [name for name in columns if name not in table.column_names]
        if missing:
            raise DatasetError(f"{path}: has no column(s) {missing}; {DAMAGED}")
        table = table.select(list(columns))
    return table


def load_tasks(root: str | Path, info: Mapping | None = None) -> list[str]:
    """Task prompts ordered by ``task_index`` (none in a dataset that has no episodes yet)."""
    root = Path(root)
    info = schema.load_info(root) if info is None else info
    path = root / schema.TASKS_PATH
    if not path.is_file():
        if int(info.get("total_tasks") or 0) or int(info.get("total_episodes") or 0):
            raise DatasetError(
                f"{path}: missing, but info.json lists {info.get('total_tasks')} task(s) and "
                f"{info.get('total_episodes')} episode(s); {DAMAGED}"
            )
        return []
    table = read_parquet(path, columns=["task_index", "task"]).sort_by("task_index")
    indices, tasks = table["task_index"].to_pylist(), table["task"].to_pylist()
    if indices != list(range(len(tasks))) or not all(isinstance(t, str) and t for t in tasks):
        raise DatasetError(f"{path}: task_index is not 0..{len(tasks) - 1} or a task is empty; {DAMAGED}")
    return tasks


def load_episodes(root: str | Path, info: Mapping | None = None) -> list[dict]:
    """One dict per episode, ordered by ``episode_index`` (LeRobot columns + RECAP metadata, no stats)."""
    root = Path(root)
    info = schema.load_info(root) if info is None else info
    expected = int(info.get("total_episodes") or 0)
    files = sorted((root / schema.EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files and expected:
        raise DatasetError(
            f"{root / schema.EPISODES_DIR}: no episodes metadata, but info.json lists {expected} episode(s); {DAMAGED}"
        )
    rows: list[dict] = []
    for path in files:
        table = read_parquet(path)
        missing = [name for name in EPISODE_COLUMNS if name not in table.column_names]
        if missing:
            raise DatasetError(f"{path}: has no column(s) {missing}; {DAMAGED}")
        keep = [name for name in table.column_names if not name.startswith("stats/")]
        rows.extend(table.select(keep).to_pylist())
    rows.sort(key=lambda row: (row["episode_index"] is None, row["episode_index"] or 0))
    for row in rows:
        try:
            row["extra"] = json.loads(row["extra"]) if row.get("extra") else {}
        except ValueError:
            raise DatasetError(
                f"{root / schema.EPISODES_DIR}: episode {row['episode_index']}'s extra metadata is not JSON; {DAMAGED}"
            ) from None
    if [row["episode_index"] for row in rows] != list(range(len(rows))):
        raise DatasetError(f"{root / schema.EPISODES_DIR}: episode indices are not 0..{len(rows) - 1}; {DAMAGED}")
    if len(rows) != expected:
        raise DatasetError(
            f"{root / schema.EPISODES_DIR}: lists {len(rows)} episode(s), info.json {expected}; {DAMAGED}"
        )
    return rows


def load_stats(root: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """stats.json as ``feature -> {min, max, mean, std, count} -> np.ndarray`` (null entries read as NaN)."""
    path = Path(root) / schema.STATS_PATH
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {
            feature: {name: np.asarray(value, dtype=np.float64) for name, value in stats.items()}
            for feature, stats in raw.items()
        }
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: not valid dataset statistics ({first_line(exc)}); {DAMAGED}") from None


def data_files(root: Path, episodes: Sequence[Mapping]) -> list[tuple[Path, list[Mapping]]]:
    """Data files referenced by the episodes metadata, in frame order, with their episodes."""
    by_file: dict[tuple[int, int], list[Mapping]] = {}
    for episode in episodes:
        by_file.setdefault((episode["data/chunk_index"], episode["data/file_index"]), []).append(episode)
    return [(root / schema.DATA_PATH.format(chunk_index=c, file_index=f), by_file[(c, f)]) for c, f in sorted(by_file)]


def check_dataset(root: str | Path) -> dict:
    """Check a dataset without reading its frames; returns its info.json.

    info.json, tasks, episodes and stats must be readable and agree (episode indices, frame ranges and totals,
    task indices), and every data file an episode names must exist with as many rows as its episodes have.
    FileNotFoundError when ``root`` is no dataset at all, DatasetError for anything damaged. No frame is read,
    so a writer (``DatasetWriter``, ``recap convert``) checks first and refuses to append to a damaged dataset
    instead of building on it.
    """
    root = Path(root)
    info = schema.load_info(root)
    try:
        total_frames = int(info["total_frames"])
        schema.info_layout(info)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{root / schema.INFO_PATH}: lacks or garbles {first_line(exc)}; {DAMAGED}") from None
    tasks = load_tasks(root, info)
    episodes = load_episodes(root, info)
    load_stats(root)
    start = 0
    for episode in episodes:
        if (
            episode["dataset_from_index"] != start
            or episode["length"] is None
            or episode["length"] < 1
            or episode["dataset_to_index"] != start + episode["length"]
        ):
            raise DatasetError(
                f"{root / schema.EPISODES_DIR}: episode {episode['episode_index']} covers frames "
                f"{episode['dataset_from_index']}..{episode['dataset_to_index']}, expected to start "
                f"at {start} and hold {episode['length']}; {DAMAGED}"
            )
        if not 0 <= (episode["task_index"] if episode["task_index"] is not None else -1) < len(tasks):
            raise DatasetError(
                f"{root / schema.EPISODES_DIR}: episode {episode['episode_index']} has task_index "
                f"{episode['task_index']}, the dataset {len(tasks)} task(s); {DAMAGED}"
            )
        start += episode["length"]
    if start != total_frames:
        raise DatasetError(
            f"{root / schema.EPISODES_DIR}: episodes hold {start} frames, info.json lists {total_frames}; {DAMAGED}"
        )
    for path, file_episodes in data_files(root, episodes):
        if not path.is_file():
            raise DatasetError(f"{path}: missing; {DAMAGED}")
        try:
            rows = pq.read_metadata(path).num_rows
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"{path}: not a readable parquet file ({first_line(exc)}); {DAMAGED}") from None
        expected = sum(e["length"] for e in file_episodes)
        if rows != expected:
            raise DatasetError(f"{path}: has {rows} frames, the episodes metadata lists {expected}; {DAMAGED}")
    return info
