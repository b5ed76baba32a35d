"""The one writer of RECAP datasets: create a dataset or append episodes to one.

A writer session is one transaction (see :class:`DatasetWriter` and docs/dataset.md, "Writing"). Imports
neither torch nor rclpy, so the bag converter can use it.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recap_core import rl
from recap_core.data import schema
from recap_core.data.direct_io import DirectFile
from recap_core.data.image_cells import IMAGE_STATS_FRAMES, CameraCells, image_stats, stats_sample
from recap_core.data.meta import check_dataset, load_tasks
from recap_core.errors import UserError
from recap_core.layout import StationLayout
from recap_core.outputs import dumps as strict_dumps
from recap_core.station import StationConfig

log = logging.getLogger(__name__)

__all__ = ["IMAGE_STATS_FRAMES", "DatasetBusy", "DatasetLock", "DatasetWriter", "aggregate_stats", "image_stats"]

#: frames per row group of the data files: an episode's frames are written a row group at a time as they arrive
ROW_GROUP_FRAMES = 128


class DatasetBusy(UserError, RuntimeError):
    """Another process is writing the dataset."""


class DatasetLock:
    """``meta/.writer.lock`` holding the writer's pid; a lock left by a dead process is taken over."""

    def __init__(self, root: Path):
        self.path = root / schema.LOCK_PATH
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and _pid_alive(holder):
                    raise DatasetBusy(
                        f"{root} is being written by process {holder} ({self.path}); "
                        f"wait for it to finish, or delete the lock file if that process "
                        f"is not a RECAP writer"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its writer died
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            return
        raise RuntimeError(f"could not take the dataset lock {self.path}")

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._holder() == os.getpid():
            self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _next_chunk_file(paths: Iterable[Path], chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after the highest one among ``.../chunk-CCC/[.]file-FFF.parquet[.partial]``."""
    highest = (-1, -1)
    for path in paths:
        try:
            chunk = int(path.parent.name.split("-")[1])
            file = int(path.name.lstrip(".").split(".")[0].split("-")[1])
        except (IndexError, ValueError):
            continue
        highest = max(highest, (chunk, file))
    if highest == (-1, -1):
        return 0, 0
    chunk, file = highest
    return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)


def _remove_leftovers(root: Path) -> None:
    """Delete partial and temporary files of writers that died (safe: we hold the lock)."""
    for pattern in ("data/chunk-*/.file-*.partial", "data/chunk-*/.file-*.labels.tmp", "meta/**/.*.tmp"):
        for path in root.glob(pattern):
            log.warning("removing %s left by an interrupted writer", path)
            path.unlink(missing_ok=True)


def _intervention_segments(is_intervention: np.ndarray) -> int:
    rising = np.flatnonzero(is_intervention[1:] & ~is_intervention[:-1])
    return int(is_intervention[0]) + len(rising) if len(is_intervention) else 0


class DatasetWriter:
    """Create a RECAP dataset at ``root`` or open an existing one to append episodes (a damaged one is refused
    with a :class:`~recap_core.data.schema.DatasetError`: :func:`~recap_core.data.meta.check_dataset`).

    A session (open -> add_episode... -> close) is one transaction: frames stream into new data files under
    hidden ``.partial`` names (a new ``file-NNN`` after the last one on disk; old data files are never opened
    for writing), a row group of :data:`ROW_GROUP_FRAMES` at a time as they arrive (:meth:`_write_episode`),
    rolling over at ``data_files_size_in_mb`` between episodes; ``close()`` renames them into place, then writes a
    new episodes-metadata file, ``tasks.parquet``, ``stats.json`` and, last, ``info.json``. A crash before
    ``close()`` leaves the dataset as it was; the next writer deletes the dead one's partial files. A lock file
    stops two writers working on one dataset at once.

    ``joint_names``, ``gripper_joints`` and ``cameras`` are the station's layout (a new dataset: the simulated
    station's where not given; an existing one: its own where not given, and given ones must be its own).

    ``c_fail`` and ``max_episode_length`` (one limit, or a mapping task -> limit)
    set the reward normalisation of a new dataset; on an existing one they must
    agree with what is stored (new tasks may be added).

    ``direct_io`` writes the data files without the page cache where the file system allows
    (:class:`~recap_core.data.direct_io.DirectFile`): a dataset is written once and read later, and on a VM
    fresh page-cache memory cost more than the disk.

    ``encode_threads`` > 1 encodes the cameras of an episode concurrently (the
    JPEG encoder releases the GIL): the per-camera iterables given to
    :meth:`add_episode` are then consumed from different threads, so they must
    not share unsynchronised state.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        fps: int = schema.DEFAULT_FPS,
        cameras: Sequence[str] | None = None,
        joint_names: Sequence[str] | None = None,
        gripper_joints: Sequence[str] | None = None,
        image_shape: tuple[int, int] = schema.DEFAULT_IMAGE_SHAPE,
        robot: str = schema.DEFAULT_ROBOT,
        image_format: str = schema.DEFAULT_IMAGE_FORMAT,
        c_fail: float | None = None,
        max_episode_length: int | Mapping[str, int] | None = None,
        data_files_size_in_mb: int = schema.DEFAULT_DATA_FILES_SIZE_IN_MB,
        encode_threads: int = 1,
        direct_io: bool = True,
    ):
        self.root = Path(root)
        self.direct_io = bool(direct_io)
        if not isinstance(encode_threads, int) or encode_threads < 1:
            raise ValueError(f"encode_threads must be an int >= 1, got {encode_threads!r}")
        self.encode_threads = encode_threads
        image_shape = (int(image_shape[0]), int(image_shape[1]))
        info_path = self.root / schema.INFO_PATH
        layout = self._layout(joint_names, gripper_joints, cameras)
        self._check_settings(fps, image_shape, image_format, data_files_size_in_mb)
        if not info_path.is_file() and self.root.exists() and any(self.root.iterdir()):
            raise schema.DatasetError(
                f"{self.root} exists, is not empty and is not a RECAP dataset "
                f"({schema.INFO_PATH} missing); choose an empty or new directory"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = DatasetLock(self.root)
        try:
            _remove_leftovers(self.root)
            if info_path.is_file():
                self.info = self._open_existing(
                    fps, layout, image_shape, robot, image_format, c_fail, max_episode_length
                )
            else:
                self.info = self._create(
                    fps, layout, image_shape, robot, image_format, c_fail, max_episode_length, data_files_size_in_mb
                )
        except BaseException:
            self._lock.release()
            raise
        self.fps, self.layout, self.image_shape, self.image_format = fps, layout, image_shape, image_format
        self.cameras = layout.cameras
        self.state_dim = layout.num_joints
        self.receive_time = schema.info_has_receive_time(self.info)  # datasets written before it lack it
        self.recap = schema.RecapConfig.from_json(self.info["recap"])
        self._tasks = self._load_tasks()
        self._next_episode = int(self.info["total_episodes"])
        self._next_index = int(self.info["total_frames"])
        self._data_file = _next_chunk_file(
            (self.root / schema.DATA_DIR).glob("chunk-*/*file-*"), int(self.info["chunks_size"])
        )
        self._parquet: pq.ParquetWriter | None = None
        self._file: DirectFile | None = None  # the file under self._parquet
        self._sink: pa.BufferedOutputStream | None = None  # pyarrow's buffer in front of it
        self._row_groups = 0  # in the data file being written
        self._episode_file = self._data_file  # where the last episode written went
        # the disk writes, one row group after another, on a thread of their own (pyarrow releases the GIL)
        self._writes = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="recap-write")
        self._partial_files: list[tuple[Path, Path]] = []  # (partial, final)
        self._episode_rows: list[dict] = []
        self._episode_stats: list[dict] = []
        self._broken: str | None = None
        self._closed = False

    # ------------------------------------------------------------------ opening

    def _layout(self, joint_names, gripper_joints, cameras) -> StationLayout:
        """The layout given, completed from the existing dataset's (or, new, the simulated station's)."""
        known = StationConfig.sim_aloha().layout
        if (self.root / schema.INFO_PATH).is_file():
            try:
                known = schema.info_layout(schema.load_info(self.root))
            except (KeyError, TypeError, ValueError):
                pass  # a damaged info.json: check_dataset says what is wrong once the lock is held
        return StationLayout(
            tuple(known.joint_names if joint_names is None else joint_names),
            tuple(known.gripper_joints if gripper_joints is None else gripper_joints),
            tuple(known.cameras if cameras is None else cameras),
        )

    @staticmethod
    def _check_settings(fps, image_shape, image_format, data_files_size_in_mb) -> None:
        if not (isinstance(fps, int) and fps > 0):
            raise ValueError(f"fps must be a positive integer, got {fps!r}")
        if min(image_shape) < 1:
            raise ValueError(f"image_shape must be (height, width) > 0, got {image_shape!r}")
        if image_format not in schema.IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {schema.IMAGE_FORMATS}, got {image_format!r}")
        if data_files_size_in_mb <= 0:
            raise ValueError(f"data_files_size_in_mb must be > 0, got {data_files_size_in_mb!r}")

    def _create(
        self, fps, layout, image_shape, robot, image_format, c_fail, max_episode_length, data_files_size_in_mb
    ) -> dict:
        default_length = schema.DEFAULT_MAX_EPISODE_LENGTH
        lengths: dict[str, int] = {}
        if isinstance(max_episode_length, Mapping):
            lengths = dict(max_episode_length)
        elif max_episode_length is not None:
            default_length = int(max_episode_length)
        recap = schema.RecapConfig(
            c_fail=float(default_length if c_fail is None else c_fail),
            max_episode_length=lengths,
            default_max_episode_length=default_length,
        )
        info = schema.new_info(
            fps=fps,
            layout=layout,
            image_shape=image_shape,
            robot=robot,
            image_format=image_format,
            recap=recap,
            data_files_size_in_mb=data_files_size_in_mb,
        )
        schema.write_json_atomic(self.root / schema.INFO_PATH, info)
        return info

    def _open_existing(self, fps, layout, image_shape, robot, image_format, c_fail, max_episode_length) -> dict:
        info = check_dataset(self.root)  # a damaged dataset is refused, not appended to
        problems = schema.describe_mismatch(
            info, fps=fps, layout=layout, image_shape=image_shape, robot=robot, image_format=image_format
        )
        recap = schema.RecapConfig.from_json(info["recap"])
        if c_fail is not None and float(c_fail) != recap.c_fail:
            problems.append(f"c_fail: dataset has {recap.c_fail!r}, writer was given {c_fail!r}")
        if isinstance(max_episode_length, Mapping):
            for task, length in max_episode_length.items():
                if task in recap.max_episode_length and recap.max_episode_length[task] != length:
                    problems.append(
                        f"max_episode_length[{task!r}]: dataset has "
                        f"{recap.max_episode_length[task]}, writer was given {length}"
                    )
                recap = recap.with_task(task, length)
        elif max_episode_length is not None and int(max_episode_length) != recap.default_max_episode_length:
            problems.append(
                f"default max_episode_length: dataset has {recap.default_max_episode_length}, "
                f"writer was given {max_episode_length}"
            )
        if problems:
            raise ValueError(
                f"cannot append to {self.root}: "
                + "; ".join(problems)
                + ". Open it with the dataset's settings or write a new dataset."
            )
        info["recap"].update(recap.to_json())
        return info

    def _load_tasks(self) -> dict[str, int]:
        return {task: index for index, task in enumerate(load_tasks(self.root, self.info))}

    # ------------------------------------------------------------------ writing

    def add_episode(
        self,
        *,
        states: np.ndarray,
        actions: np.ndarray,
        images: Mapping[str, np.ndarray | Iterable[np.ndarray]],
        is_intervention: np.ndarray,
        success: bool,
        task: str,
        receive_times: np.ndarray | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one episode; returns its ``episode_index``.

        ``states``, ``actions``: ``[T, J]`` (J joints, the dataset's order); ``images``: camera -> ``[T, H, W, 3]``
        uint8 array or an iterable of ``[H, W, 3]`` frames (encoded as they
        come, so memory stays bounded) or :class:`schema.EncodedImage` (stored
        as they are when already in the dataset's format); ``is_intervention``: ``[T]`` bool;
        ``receive_times``: ``[T]`` seconds after the first frame when each frame's tick was received
        (non-decreasing; default ``frame_index / fps``, for data without a clock). The ``timestamp``
        column is always ``frame_index / fps``. Rewards and normalised returns are computed
        with :mod:`recap_core.rl` from the dataset's ``RecapConfig``.
        """
        self._check_open()
        states = self._vectors("states", states)
        length = len(states)
        actions = self._vectors("actions", actions, length)
        flags = np.asarray(is_intervention)
        if flags.shape != (length,) or not (flags.dtype == bool or np.isin(flags, (0, 1)).all()):
            raise ValueError(
                f"is_intervention must be [T]={length} booleans, got shape {flags.shape} dtype {flags.dtype}"
            )
        flags = flags.astype(bool)
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"task must be a non-empty prompt string, got {task!r}")
        received = self._receive_times(receive_times, length)
        times = np.arange(length, dtype=np.float64) / self.fps
        episode_meta = schema.EpisodeMetadata.from_mapping(metadata or {})
        if set(images) != set(self.cameras):
            raise ValueError(
                f"images must have exactly the dataset's cameras {list(self.cameras)}; "
                f"missing {sorted(set(self.cameras) - set(images))}, "
                f"unexpected {sorted(set(images) - set(self.cameras))}"
            )
        recap = self.recap.with_task(task)
        max_length = recap.max_length_for(task)
        if length > max_length:
            log.warning(
                "episode of %d frames exceeds task %r max_episode_length %d; its earliest "
                "normalised returns clip at -1",
                length,
                task,
                max_length,
            )
        rewards = rl.episode_rewards(length, bool(success), recap.c_fail)
        returns_norm = rl.normalise_returns(rl.returns_to_go(rewards), max_length, recap.c_fail)

        episode_index = self._next_episode
        task_index = self._tasks.get(task, len(self._tasks))
        frame_index = np.arange(length, dtype=np.int64)
        columns: dict[str, pa.Array] = {
            schema.STATE: pa.FixedSizeListArray.from_arrays(pa.array(states.reshape(-1)), self.state_dim),
            schema.ACTION: pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), self.state_dim),
            schema.TIMESTAMP: pa.array(times, pa.float32()),
            schema.RECEIVE_TIME: pa.array(received, pa.float64()),
            schema.FRAME_INDEX: pa.array(frame_index),
            schema.EPISODE_INDEX: pa.array(np.full(length, episode_index, np.int64)),
            schema.INDEX: pa.array(self._next_index + frame_index),
            schema.TASK_INDEX: pa.array(np.full(length, task_index, np.int64)),
            schema.IS_INTERVENTION: pa.array(flags),
            schema.EPISODE_SUCCESS: pa.array(np.full(length, bool(success))),
            schema.REWARD: pa.array(rewards.astype(np.float32)),
            schema.RETURN_NORMALISED: pa.array(returns_norm.astype(np.float32)),
        }
        episode_stats = self._write_episode(images, length, columns)  # camera -> image stats
        for name, values in (
            (schema.STATE, states),
            (schema.ACTION, actions),
            (schema.TIMESTAMP, times),
            *([(schema.RECEIVE_TIME, received)] if self.receive_time else []),
            (schema.REWARD, rewards),
            (schema.RETURN_NORMALISED, returns_norm),
        ):
            episode_stats[name] = feature_stats(values)
        chunk, file = self._episode_file
        # Only now, with the frames on disk, does the episode count.
        self.recap = recap
        self._tasks.setdefault(task, task_index)
        self._episode_rows.append(
            {
                "episode_index": episode_index,
                "tasks": [task],
                "length": length,
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": self._next_index,
                "dataset_to_index": self._next_index + length,
                "task_index": task_index,
                "success": bool(success),
                "source": episode_meta.source,
                "policy_checkpoint": episode_meta.policy_checkpoint,
                "beta": episode_meta.beta,
                "station": episode_meta.station,
                "operator": episode_meta.operator,
                "intervention_count": _intervention_segments(flags),
                "intervention_frames": int(flags.sum()),
                "bag_path": episode_meta.bag_path,
                "start_time": episode_meta.start_time,
                "extra": strict_dumps(dict(episode_meta.extra), indent=None, sort_keys=True),
            }
        )
        self._episode_stats.append(episode_stats)
        self._next_episode += 1
        self._next_index += length
        return episode_index

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the writer for {self.root} is closed; open a new DatasetWriter to append")
        if self._broken:
            raise RuntimeError(
                f"the writer for {self.root} failed earlier ({self._broken}); nothing from this session will be kept"
            )

    def _vectors(self, name: str, values, length: int | None = None) -> np.ndarray:
        array = np.asarray(values, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.state_dim or len(array) == 0:
            raise ValueError(
                f"{name} must be [T, {self.state_dim}] (one value per joint of {list(self.layout.joint_names)}) "
                f"with T >= 1, got shape {array.shape}"
            )
        if length is not None and len(array) != length:
            raise ValueError(f"{name} has {len(array)} frames but states has {length}; one per frame")
        if not np.all(np.isfinite(array)):
            row, col = np.argwhere(~np.isfinite(array))[0]
            raise ValueError(f"{name} must be finite; frame {row} joint {col} is {array[row, col]}")
        return np.ascontiguousarray(array)

    def _receive_times(self, receive_times, length: int) -> np.ndarray:
        if receive_times is None:
            return np.arange(length, dtype=np.float64) / self.fps
        times = np.asarray(receive_times, dtype=np.float64)
        if times.shape != (length,):
            raise ValueError(f"receive_times must be [T]={length} seconds, got shape {times.shape}")
        if not np.all(np.isfinite(times)):
            raise ValueError("receive_times must be finite")
        if length > 1 and not np.all(np.diff(times) >= 0):
            bad = int(np.flatnonzero(np.diff(times) < 0)[0])
            raise ValueError(
                f"receive_times must not decrease; frame {bad + 1} ({times[bad + 1]}) is before frame {bad} "
                f"({times[bad]})"
            )
        return times

    def _parquet_options(self, table_schema: pa.Schema) -> dict:
        """Snappy, dictionaries and min/max statistics for the small columns; image cells are stored as they are.

        Encoded frames do not compress, never repeat and have no useful min/max, and
        trying all three costs more than the rest of the write. Raw frames keep snappy.
        """
        images = [f"{schema.camera_key(c)}.{part}" for c in self.cameras for part in ("bytes", "path")]
        others = [name for name in _leaf_columns(table_schema) if name not in images]
        image_codec = "snappy" if self.image_format == "raw" else "none"
        return {
            "compression": {**{name: "snappy" for name in others}, **{name: image_codec for name in images}},
            "use_dictionary": others,
            "write_statistics": others,
        }

    def _write_episode(self, images, length: int, columns: dict[str, pa.Array]) -> dict[str, dict]:
        """Write one episode's frames, a row group of :data:`ROW_GROUP_FRAMES` at a time as its images arrive
        (the disk write of one overlapping the reading of the next); the image stats of each camera.

        The episode goes into one data file (rolled over after it); where a frame fails, the row groups it
        already wrote are taken out again (:meth:`_drop_episode`) and the error raised: the dataset is as if
        the episode had not been given. An error writing the file breaks the session (nothing is kept).
        """
        table_schema = schema.frame_schema(self.cameras, self.state_dim, self.receive_time)
        self._open_data_file(table_schema)
        groups_before = self._row_groups
        pending: list[concurrent.futures.Future] = []
        pool = None  # threads encoding the cameras that are not stored as they come
        try:
            sampled = stats_sample(length)
            # a camera's sampled frames stored as they are are decoded for its stats on the write thread
            cells = {
                c: CameraCells(c, images[c], length, self.image_shape, self.image_format, sampled, self._writes)
                for c in self.cameras
            }
            encoding = [c for c in self.cameras if not cells[c].passes_through]
            if self.encode_threads > 1 and len(self.cameras) > 1 and encoding:
                pool = concurrent.futures.ThreadPoolExecutor(
                    min(self.encode_threads, len(encoding)), thread_name_prefix="recap-encode"
                )
            for start in range(0, length, ROW_GROUP_FRAMES):
                count = min(ROW_GROUP_FRAMES, length - start)
                taken = {
                    c: pool.submit(cells[c].take, count) for c in self.cameras if pool and not cells[c].passes_through
                }
                taken.update({c: cells[c].take(count) for c in self.cameras if c not in taken})
                group = {name: column.slice(start, count) for name, column in columns.items()}
                for camera in self.cameras:
                    encoded = taken[camera]
                    group[schema.camera_key(camera)] = pa.StructArray.from_arrays(
                        [
                            pa.array(encoded if isinstance(encoded, list) else encoded.result(), pa.binary()),
                            pa.nulls(count, pa.string()),
                        ],
                        fields=list(schema.IMAGE_STORAGE),
                    )
                table = pa.table({f.name: group[f.name] for f in table_schema}, schema=table_schema)
                if len(pending) >= 2:  # at most two row groups in memory besides the one being read
                    pending.pop(0).result()
                pending.append(self._writes.submit(self._write_group, table))
            for camera in self.cameras:
                cells[camera].finish()
            stats = {schema.camera_key(c): cells[c].stats() for c in self.cameras}
            for future in pending:
                future.result()
        except BaseException:
            concurrent.futures.wait(pending)
            if self._broken is None:
                self._drop_episode(groups_before)
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._episode_file = self._data_file
        try:
            # bytes written, on disk or in the sink's buffer
            if self._sink is not None and self._sink.tell() >= self.info["data_files_size_in_mb"] * 2**20:
                self._roll_data_file()
        except Exception as exc:
            self._broken = f"writing frames failed: {exc}"
            raise
        return stats

    def _open_data_file(self, table_schema: pa.Schema) -> None:
        if self._parquet is not None:
            return
        try:
            chunk, file = self._data_file
            final = self.root / schema.DATA_PATH.format(chunk_index=chunk, file_index=file)
            partial = final.with_name(f".{final.name}.partial")
            partial.parent.mkdir(parents=True, exist_ok=True)
            self._file = DirectFile(partial, direct=self.direct_io)
            self._partial_files.append((partial, final))
            # pyarrow writes many small pieces (page headers, pages); gathered natively, the Python file is called
            # once per buffer, not for each piece while the converting thread holds the interpreter lock
            self._sink = pa.BufferedOutputStream(
                pa.PythonFile(self._file, mode="w"), buffer_size=self._file.buffer_size
            )
            self._parquet = pq.ParquetWriter(self._sink, table_schema, **self._parquet_options(table_schema))
            self._row_groups = 0
        except Exception as exc:
            self._broken = f"writing frames failed: {exc}"
            raise

    def _write_group(self, table: pa.Table) -> None:
        """On the write thread: one row group."""
        try:
            self._parquet.write_table(table)
            self._row_groups += 1
        except BaseException as exc:
            self._broken = f"writing frames failed: {exc}"
            raise

    def _drop_episode(self, groups_before: int) -> None:
        """Take a failed episode's row groups out of the data file being written: the file is closed with the
        ``groups_before`` row groups of earlier episodes (rewritten without the rest) or, none, deleted."""
        if self._row_groups == groups_before:
            return
        try:
            self._close_data_file()
            partial = self._partial_files[-1][0]
            if groups_before == 0:
                partial.unlink()
                self._partial_files.pop()
                return
            kept = pq.ParquetFile(partial)
            rewritten = partial.with_name(partial.name + ".tmp")
            with pq.ParquetWriter(rewritten, kept.schema_arrow, **self._parquet_options(kept.schema_arrow)) as out:
                for group in range(groups_before):
                    out.write_table(kept.read_row_group(group))
            kept.close()
            os.replace(rewritten, partial)
            chunk, file = self._data_file
            self._data_file = (chunk + 1, 0) if file + 1 >= self.info["chunks_size"] else (chunk, file + 1)
        except BaseException as exc:
            self._broken = f"taking a failed episode's frames out of {self._partial_files[-1][0]} failed: {exc}"
            raise

    def _close_data_file(self) -> None:
        """Close the data file being written: the parquet footer, then the file itself (its last bytes)."""
        parquet, sink, file = self._parquet, self._sink, self._file
        self._parquet = self._sink = self._file = None
        try:
            if parquet is not None:
                parquet.close()
            if sink is not None:
                sink.close()  # its last buffer into the file
        finally:
            if file is not None:
                file.close()

    def _roll_data_file(self) -> None:
        self._close_data_file()
        chunk, file = self._data_file
        self._data_file = (chunk + 1, 0) if file + 1 >= self.info["chunks_size"] else (chunk, file + 1)

    # ------------------------------------------------------------------ committing

    def close(self) -> None:
        """Commit this session: data files into place, then episodes, tasks, stats and info."""
        if self._closed:
            return
        self._closed = True
        self._writes.shutdown(wait=True)
        try:
            self._close_data_file()
            if self._broken:
                for partial, _ in self._partial_files:
                    partial.unlink(missing_ok=True)
                raise RuntimeError(f"nothing from this session was written to {self.root}: {self._broken}")
            if self._episode_rows:
                self._commit()
        finally:
            self._lock.release()

    def _commit(self) -> None:
        for partial, final in self._partial_files:
            os.replace(partial, final)
        chunk, file = _next_chunk_file(
            (self.root / schema.EPISODES_DIR).glob("chunk-*/*file-*"), int(self.info["chunks_size"])
        )
        rows = [
            dict(row, **{"meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file})
            for row in self._episode_rows
        ]
        table = pa.Table.from_pylist(rows, schema=schema.EPISODE_METADATA_SCHEMA)
        for name, column in _flatten_stats(self._episode_stats).items():
            table = table.append_column(name, column)
        episodes_path = self.root / schema.EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        _write_parquet_atomic(table, episodes_path)

        ordered = sorted(self._tasks.items(), key=lambda item: item[1])
        tasks = pa.table(
            {
                "task_index": pa.array([i for _, i in ordered], pa.int64()),
                "task": pa.array([t for t, _ in ordered], pa.string()),
            }
        )
        _write_parquet_atomic(
            tasks.replace_schema_metadata(_pandas_task_index_metadata()), self.root / schema.TASKS_PATH
        )

        stats_path = self.root / schema.STATS_PATH
        previous = [json.loads(stats_path.read_text())] if stats_path.is_file() else []
        schema.write_json_atomic(stats_path, aggregate_stats(previous + self._episode_stats))

        info = self.info
        info["total_episodes"] = self._next_episode
        info["total_frames"] = self._next_index
        info["total_tasks"] = len(self._tasks)
        info["splits"] = {"train": f"0:{self._next_episode}"}
        info["recap"].update(self.recap.to_json())
        labels = info["recap"].pop("labels", None)
        if labels is not None:
            # The new episodes have no labels, so the dataset must be labelled again before use.
            info["recap"]["stale_labels"] = labels
            for name in schema.LABEL_COLUMNS:
                info["features"].pop(name, None)
        schema.write_json_atomic(self.root / schema.INFO_PATH, info)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close()


# --------------------------------------------------------------------------- statistics (stats.json)


def feature_stats(values) -> dict[str, np.ndarray]:
    """min/max/mean/std over frames of ``[T]`` or ``[T, D]`` values; count is ``[1]``."""
    values = np.asarray(values, dtype=np.float64)
    values = values.reshape(len(values), -1)
    return {
        "min": values.min(0),
        "max": values.max(0),
        "mean": values.mean(0),
        "std": values.std(0),
        "count": np.array([len(values)]),
    }


def aggregate_stats(parts: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, list]]:
    """Pool per-part stats (count-weighted mean, pooled variance) into stats.json form."""
    pooled: dict[str, dict[str, list]] = {}
    for feature in dict.fromkeys(name for part in parts for name in part):
        pieces = [
            {k: np.asarray(v, dtype=np.float64) for k, v in part[feature].items()} for part in parts if feature in part
        ]
        counts = np.array([float(p["count"].reshape(-1)[0]) for p in pieces])
        weights = (counts / counts.sum()).reshape((-1,) + (1,) * pieces[0]["mean"].ndim)
        means = np.stack([p["mean"] for p in pieces])
        mean = (weights * means).sum(0)
        variance = (weights * (np.stack([p["std"] for p in pieces]) ** 2 + (means - mean) ** 2)).sum(0)
        pooled[feature] = {
            "min": np.min([p["min"] for p in pieces], axis=0).tolist(),
            "max": np.max([p["max"] for p in pieces], axis=0).tolist(),
            "mean": mean.tolist(),
            "std": np.sqrt(variance).tolist(),
            "count": [int(counts.sum())],
        }
    return pooled


def _flatten_stats(per_episode: list[dict]) -> dict[str, pa.Array]:
    """``stats/<feature>/<stat>`` columns of the episodes file, as LeRobot stores per-episode stats."""
    columns: dict[str, list] = {}
    for stats in per_episode:
        for feature, values in stats.items():
            for stat, value in values.items():
                columns.setdefault(f"stats/{feature}/{stat}", []).append(np.ravel(value).tolist())
    return {
        name: pa.array(values, pa.list_(pa.int64() if name.endswith("/count") else pa.float64()))
        for name, values in columns.items()
    }


def _leaf_columns(table_schema: pa.Schema) -> list[str]:
    """Parquet column paths ("a.b" for a struct field) of ``table_schema``."""

    def walk(field: pa.Field, prefix: str):
        name = f"{prefix}{field.name}"
        if pa.types.is_struct(field.type):
            for child in field.type:
                yield from walk(child, f"{name}.")
        elif pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type):
            yield from walk(field.type.value_field.with_name("element"), f"{name}.list.")
        else:
            yield name

    return [name for field in table_schema for name in walk(field, "")]


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def _pandas_task_index_metadata() -> dict[bytes, bytes]:
    """Schema metadata so ``pandas.read_parquet`` indexes tasks by the task string, as LeRobot expects."""
    columns = [
        {
            "name": "task_index",
            "field_name": "task_index",
            "pandas_type": "int64",
            "numpy_type": "int64",
            "metadata": None,
        },
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
    ]
    meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": columns,
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    return {b"pandas": json.dumps(meta).encode()}
