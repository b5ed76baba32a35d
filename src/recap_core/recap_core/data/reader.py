"""Reading RECAP datasets: metadata, the frame table, labels, and the torch Dataset.

``load_frames_table``, ``load_episodes`` and ``write_labels`` need only pyarrow; ``RecapDataset`` is the
training view (tensors, action chunks, images decoded and resized on the fly, optionally cached). A damaged
dataset raises :class:`DatasetError` naming the file (docs/dataset.md, "Reading").
"""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recap_core.data import schema
from recap_core.data.meta import check_dataset, data_files as _data_files, load_episodes, load_stats, load_tasks
from recap_core.data.meta import first_line as _first_line, read_parquet as _read_parquet
from recap_core.data.schema import DAMAGED, DatasetError
from recap_core.data.writer import DatasetLock

__all__ = [
    "DatasetError",
    "RecapDataset",
    "check_dataset",
    "load_episodes",
    "load_frames_table",
    "load_stats",
    "load_tasks",
    "normalised_rewards",
    "write_labels",
]


def _labels_state(root: Path, info: Mapping, files: Sequence[Path]) -> bool:
    """Whether label columns are valid; raises if a labelling run was interrupted."""
    labels = info["recap"].get("labels")
    if labels is None:
        return False
    for path in files:
        try:
            stored = (pq.read_schema(path).metadata or {}).get(schema.LABELS_ID_KEY, b"").decode()
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(f"{path}: not a readable parquet file ({_first_line(exc)}); {DAMAGED}") from None
        if stored != labels.get("labels_id"):
            raise DatasetError(
                f"{path} does not carry the labels recorded in info.json (labelling was "
                f"interrupted?); run `recap label` on {root} again"
            )
    return True


def load_frames_table(root: str | Path) -> pa.Table:
    """Every non-image column of every frame, ordered by ``index``.

    The label columns ``value``, ``advantage``, ``indicator`` are included only
    when the dataset is labelled (and every episode carries them).
    """
    root = Path(root)
    info = schema.load_info(root)
    episodes = load_episodes(root, info)
    files = _data_files(root, episodes)
    labelled = _labels_state(root, info, [path for path, _ in files])
    image_columns = {schema.camera_key(c) for c in schema.info_cameras(info)}
    columns = [name for name in schema.info_frame_schema(info).names if name not in image_columns]
    if labelled:
        columns += list(schema.LABEL_COLUMNS)
    tables = []
    for path, file_episodes in files:
        table = _read_parquet(path, columns=columns)
        expected = sum(e["length"] for e in file_episodes)
        if table.num_rows != expected:
            raise DatasetError(
                f"{path} has {table.num_rows} frames but the episodes metadata lists {expected}; {DAMAGED}"
            )
        tables.append(table)
    if not tables:
        empty = schema.info_frame_schema(info)
        return pa.table({name: pa.array([], empty.field(name).type) for name in columns if name in empty.names})
    table = pa.concat_tables(tables)
    index = table[schema.INDEX].to_numpy()
    if not np.array_equal(index, np.arange(len(index))):
        raise DatasetError(f"{root}: the index column is not 0..{len(index) - 1} in file order; {DAMAGED}")
    return table


def normalised_rewards(table: pa.Table, recap: schema.RecapConfig, tasks: Sequence[str]) -> np.ndarray:
    """``reward`` of each frame in the normalised units of ``return_normalised``: ``[N]`` float64."""
    scales = np.array([recap.return_scale_for(task) for task in tasks])
    reward = table[schema.REWARD].to_numpy().astype(np.float64)
    return reward / scales[table[schema.TASK_INDEX].to_numpy()] if len(reward) else reward


def write_labels(
    root: str | Path,
    *,
    value: np.ndarray,
    advantage: np.ndarray,
    indicator: np.ndarray,
    thresholds: Mapping[str, float],
    value_checkpoint: str,
) -> None:
    """Add or replace the ``value``, ``advantage`` and ``indicator`` columns: ``[N]`` each, by ``index``.

    Every data file is rewritten with the new columns under a temporary name;
    only when all are written are they renamed into place, and info.json is
    updated last. Each file carries the labelling id, so a run interrupted
    between renames is detected on reading instead of mixing two labellings.
    ``thresholds`` maps task prompt -> epsilon used for the indicator.
    """
    root = Path(root)
    lock = DatasetLock(root)
    try:
        info = schema.load_info(root)
        total = int(info["total_frames"])
        value = _label_array("value", value, total, np.float32)
        advantage = _label_array("advantage", advantage, total, np.float32)
        indicator = np.asarray(indicator)
        if indicator.shape != (total,) or indicator.dtype != bool:
            raise ValueError(
                f"indicator must be [N]={total} booleans, got shape {indicator.shape} dtype {indicator.dtype}"
            )
        tasks = load_tasks(root)
        unknown = sorted(set(thresholds) - set(tasks))
        if unknown:
            raise ValueError(f"thresholds name tasks not in the dataset: {unknown}; tasks are {tasks}")
        labels_id = uuid.uuid4().hex
        written: list[tuple[Path, Path]] = []
        try:
            for path, _ in _data_files(root, load_episodes(root)):
                table = _read_parquet(path)
                table = table.drop_columns([n for n in schema.LABEL_COLUMNS if n in table.column_names])
                rows = table[schema.INDEX].to_numpy()
                table = (
                    table.append_column(schema.VALUE, pa.array(value[rows]))
                    .append_column(schema.ADVANTAGE, pa.array(advantage[rows]))
                    .append_column(schema.INDICATOR, pa.array(indicator[rows]))
                )
                metadata = dict(table.schema.metadata or {})
                metadata[schema.LABELS_ID_KEY] = labels_id.encode()
                temporary = path.with_name(f".{path.name}.labels.tmp")
                pq.write_table(table.replace_schema_metadata(metadata), temporary, compression="snappy")
                written.append((temporary, path))
        except BaseException:
            for temporary, _ in written:
                temporary.unlink(missing_ok=True)
            raise
        for temporary, path in written:
            os.replace(temporary, path)
        info["features"].update(schema.LABEL_FEATURES)
        info["recap"].pop("stale_labels", None)
        info["recap"]["labels"] = {
            "labels_id": labels_id,
            "value_checkpoint": str(value_checkpoint),
            "thresholds": {str(k): float(v) for k, v in thresholds.items()},
            "positive_fraction": float(indicator.mean()) if total else 0.0,
            "labelled_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        schema.write_json_atomic(root / schema.INFO_PATH, info)
    finally:
        lock.release()


def _label_array(name: str, values, total: int, dtype) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (total,):
        raise ValueError(f"{name} must have one entry per frame, [N]={total}; got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite; frame {int(np.flatnonzero(~np.isfinite(array))[0])} is not")
    return array.astype(dtype)


def _vectors(table: pa.Table, name: str, dim: int) -> np.ndarray:
    column = table[name].combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), dim).astype(np.float32)


class RecapDataset(torch.utils.data.Dataset):
    """One item per frame: observation, the action chunk from that frame, RECAP fields.

    Item (after default collation add a leading batch dim ``B``):
    ``observation.images.<cam>`` uint8 ``[3, S, S]``; ``observation.state``
    float32 ``[J]`` (the dataset's J joints, ``layout.joint_names``); ``action`` float32 ``[H, J]`` (frames
    t..t+H-1, padded with the episode's last action); ``action_is_pad`` bool ``[H]``; scalars
    ``is_intervention``, ``task``, ``task_index``, ``episode_index``,
    ``frame_index``, ``index``, ``timestamp``, ``receive_time``, ``episode_length``,
    ``episode_success``, ``reward``, ``return_normalised``; and, on a labelled
    dataset, ``value``, ``advantage``, ``indicator``.

    Encoded images of the selected episodes are held in memory (a few KB per
    frame and camera) and decoded per item; ``cache_images`` keeps decoded,
    resized frames too (``S*S*3`` bytes each). Call :meth:`preload_images`
    before starting DataLoader workers so they share one filled cache.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        chunk_size: int = 50,
        image_size: int | None = None,
        cameras: Sequence[str] | None = None,
        episodes: Sequence[int] | None = None,
        load_images: bool = True,
        cache_images: bool = False,
    ):
        self.root = Path(root)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be >= 1 or None, got {image_size}")
        self.info = schema.load_info(self.root)
        self.recap = schema.RecapConfig.from_json(self.info["recap"])
        self.chunk_size, self.image_size = int(chunk_size), image_size
        self.image_format = self.info["recap"]["image_format"]
        self.stored_image_shape = schema.info_image_shape(self.info)
        self.layout = schema.info_layout(self.info)
        stored_cameras = list(self.layout.cameras)
        self.cameras = tuple(stored_cameras if cameras is None else cameras)
        missing = [c for c in self.cameras if c not in stored_cameras]
        if missing:
            raise ValueError(f"cameras {missing} are not in {self.root}; it has {stored_cameras}")
        self.tasks = load_tasks(self.root)
        self.stats = load_stats(self.root)
        all_episodes = load_episodes(self.root)
        if episodes is None:
            chosen = all_episodes
        else:
            unknown = sorted(set(int(e) for e in episodes) - set(range(len(all_episodes))))
            if unknown:
                raise ValueError(f"episodes {unknown} are not in {self.root} (it has 0..{len(all_episodes) - 1})")
            chosen = [all_episodes[e] for e in sorted(set(int(e) for e in episodes))]
        self.episodes = chosen
        self.num_episodes = len(chosen)

        table = load_frames_table(self.root)
        self.labelled = schema.VALUE in table.column_names
        self.thresholds = dict(self.info["recap"]["labels"]["thresholds"]) if self.labelled else {}
        rows = (
            np.concatenate([np.arange(e["dataset_from_index"], e["dataset_to_index"]) for e in chosen])
            if chosen
            else np.zeros(0, np.int64)
        )
        self._rows = rows  # dataset item -> global frame index
        table = table.take(pa.array(rows))
        self._state = _vectors(table, schema.STATE, self.layout.num_joints)
        self._action = _vectors(table, schema.ACTION, self.layout.num_joints)
        self._scalars = {
            name: table[name].to_numpy(zero_copy_only=False)
            for name in table.column_names
            if name not in (schema.STATE, schema.ACTION)
        }
        # Datasets written before receive_time have the receive times in ``timestamp`` (then not evenly spaced).
        self._receive_time = self._scalars.get(schema.RECEIVE_TIME, self._scalars[schema.TIMESTAMP])
        self.episode_ranges: dict[int, tuple[int, int]] = {}
        start = 0
        for episode in chosen:
            self.episode_ranges[episode["episode_index"]] = (start, start + episode["length"])
            start += episode["length"]
        lengths = np.array([e["length"] for e in chosen], dtype=np.int64)
        self._episode_stop = np.repeat(np.cumsum(lengths), lengths)
        self._episode_length = np.repeat(lengths, lengths)

        self.load_images = load_images
        self._encoded: dict[str, pa.Array] = {}
        if load_images:
            self._load_encoded_images(chosen)
        self._cache: dict[str, np.ndarray] = {}
        self._cached = np.zeros(len(rows), dtype=bool)
        self.cache_images = cache_images

    def _load_encoded_images(self, chosen: Sequence[Mapping]) -> None:
        keys = [schema.camera_key(c) for c in self.cameras]
        parts: dict[str, list[pa.Array]] = {key: [] for key in keys}
        for path, file_episodes in _data_files(self.root, chosen):
            table = _read_parquet(path, columns=keys + [schema.INDEX])
            index = table[schema.INDEX].to_numpy()
            wanted = np.concatenate([np.arange(e["dataset_from_index"], e["dataset_to_index"]) for e in file_episodes])
            positions = np.searchsorted(index, wanted)
            for key in keys:
                cells = table[key].combine_chunks().field("bytes")
                parts[key].append(cells.take(pa.array(positions)))
        self._encoded = {
            key: pa.concat_arrays(chunks) if chunks else pa.array([], pa.binary()) for key, chunks in parts.items()
        }

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def output_image_shape(self) -> tuple[int, int]:
        return (self.image_size, self.image_size) if self.image_size else self.stored_image_shape

    def image(self, item: int, camera: str) -> np.ndarray:
        """Decoded frame ``[S, S, 3]`` uint8 of one camera (from the cache when filled)."""
        if not self.load_images:
            raise RuntimeError("this RecapDataset was opened with load_images=False")
        if self.cache_images and self._cached[item]:
            return self._cache[camera][item]
        key = schema.camera_key(camera)
        frame = schema.decode_image(
            self._encoded[key][item].as_py(), self.image_format, self.stored_image_shape, self.image_size
        )
        if self.cache_images:
            self._store_in_cache(item, camera, frame)
        return frame

    def _store_in_cache(self, item: int, camera: str, frame: np.ndarray) -> None:
        if camera not in self._cache:
            self._cache[camera] = np.zeros((len(self), *self.output_image_shape, 3), dtype=np.uint8)
        self._cache[camera][item] = frame
        if camera == self.cameras[-1]:
            self._cached[item] = True

    def preload_images(self) -> None:
        """Decode every frame into the cache (turns ``cache_images`` on)."""
        self.cache_images = True
        for item in range(len(self)):
            if not self._cached[item]:
                for camera in self.cameras:
                    self.image(item, camera)

    def column(self, name: str) -> np.ndarray:
        """One scalar column (``episode_index``, ``is_intervention``, ...) over the dataset's items."""
        if name not in self._scalars:
            raise KeyError(f"{self.root} has no scalar column {name!r}; it has {sorted(self._scalars)}")
        return self._scalars[name]

    def __getitem__(self, item: int) -> dict:
        if not -len(self) <= item < len(self):
            raise IndexError(f"frame {item} out of range for {len(self)} frames")
        item = int(item) % len(self)
        stop = int(self._episode_stop[item])
        steps = np.arange(item, item + self.chunk_size)
        is_pad = steps >= stop
        steps = np.minimum(steps, stop - 1)
        scalars = self._scalars
        sample = {
            schema.STATE: torch.from_numpy(self._state[item].copy()),
            schema.ACTION: torch.from_numpy(self._action[steps]),
            "action_is_pad": torch.from_numpy(is_pad),
            schema.IS_INTERVENTION: bool(scalars[schema.IS_INTERVENTION][item]),
            "task": self.tasks[int(scalars[schema.TASK_INDEX][item])],
            schema.TASK_INDEX: int(scalars[schema.TASK_INDEX][item]),
            schema.EPISODE_INDEX: int(scalars[schema.EPISODE_INDEX][item]),
            schema.FRAME_INDEX: int(scalars[schema.FRAME_INDEX][item]),
            schema.INDEX: int(scalars[schema.INDEX][item]),
            schema.TIMESTAMP: float(scalars[schema.TIMESTAMP][item]),
            schema.RECEIVE_TIME: float(self._receive_time[item]),
            "episode_length": int(self._episode_length[item]),
            schema.EPISODE_SUCCESS: bool(scalars[schema.EPISODE_SUCCESS][item]),
            schema.REWARD: float(scalars[schema.REWARD][item]),
            schema.RETURN_NORMALISED: float(scalars[schema.RETURN_NORMALISED][item]),
        }
        if self.labelled:
            sample[schema.VALUE] = float(scalars[schema.VALUE][item])
            sample[schema.ADVANTAGE] = float(scalars[schema.ADVANTAGE][item])
            sample[schema.INDICATOR] = bool(scalars[schema.INDICATOR][item])
        if self.load_images:
            for camera in self.cameras:
                frame = self.image(item, camera)
                sample[schema.camera_key(camera)] = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))
        return sample
