"""Import a native LeRobot v3.0 dataset as RECAP demonstrations (``recap dataset import-lerobot``).

What is read (LeRobot 0.4's writer, ``lerobot.datasets.lerobot_dataset``, is the reference):

* ``meta/info.json``: ``codebase_version`` "v3.0", ``fps``, ``features``, ``data_path``, ``video_path``. A camera is
  any feature of dtype ``video`` (frames in mp4 files) or ``image`` (PNG/JPEG bytes embedded in the data files,
  struct {bytes, path}); its name is the feature key without ``observation.images.``. ``observation.state`` and
  ``action`` name their joints in ``names`` (a list, or a dict holding one list, as older conversions wrote).
* ``meta/tasks.parquet``: the prompts, written by pandas with the prompt as the index (column
  ``__index_level_0__``, or ``task``) and ``task_index``.
* ``meta/episodes/chunk-*/file-*.parquet``: one row per episode; for each video feature ``videos/<key>/chunk_index``,
  ``file_index`` and ``from_timestamp``: several episodes are concatenated in one mp4, an episode's frame at
  ``timestamp`` t is the video frame at ``from_timestamp + t``.
* ``data/chunk-*/file-*.parquet``: one row per frame (``episode_index``, ``frame_index``, ``timestamp``,
  ``task_index``, the features).

Each imported episode becomes one RECAP episode (source ``demo``, no interventions) written by
:class:`~recap_core.data.writer.DatasetWriter`, so rewards and returns follow its success label. The success label
comes from a column (a frame column: the episode succeeded if any of its frames is true; or a column of the
episodes metadata), from a JSON file (``{"<episode_index>": true, ...}``), or from one flag for all. Cameras and
joints are mapped onto the station's names: ``{"src": "station"}``, ``"-"`` drops a source camera or joint;
anything unmapped, mapped twice or missing from the station is refused. Video is decoded with PyAV (``av``; its
wheels decode AV1, LeRobot's default codec, through libdav1d, and h264/hevc). Every problem is a one-line
:class:`LeRobotImportError`; an import either writes all its episodes or nothing (one writer session).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recap_core.data import schema
from recap_core.data.meta import first_line
from recap_core.errors import UserError
from recap_core.layout import StationLayout
from recap_core.station import StationConfig

LEROBOT_VERSION = "v3.0"
DROP = "-"  # map target that leaves a source camera or joint out
IMAGES_PREFIX = "observation.images."
CAMERA_DTYPES = ("video", "image")
DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
SUCCESS_FLAGS = {"all": True, "none": False}


class LeRobotImportError(UserError, ValueError):
    """The source dataset or the import's options are unusable; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    """What an import wrote."""

    out: Path
    episodes: int
    frames: int
    successes: int
    layout: StationLayout
    image_shape: tuple[int, int]
    #: source episode index -> RECAP episode index
    episode_indices: Mapping[int, int]
    #: one line per station joint whose imported values leave the station's limits (only with a station)
    limit_warnings: tuple[str, ...] = ()


# --------------------------------------------------------------------------- option parsing


def parse_map(text: str | Mapping[str, str] | None, what: str) -> dict[str, str] | None:
    """``"a=base,b=left_wrist"`` (or a mapping) as ``{"a": "base", "b": "left_wrist"}``; ``None`` stays None.

    Each source once; a target once, except ``-`` (drop)."""
    if text is None:
        return None
    if isinstance(text, Mapping):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in text.items()]
    else:
        pairs = []
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            source, sep, target = part.partition("=")
            if not sep or not source.strip() or not target.strip():
                raise LeRobotImportError(f"{what} {text!r}: {part!r} is not SOURCE=STATION_NAME (or SOURCE=-)")
            pairs.append((source.strip(), target.strip()))
    if not pairs:
        raise LeRobotImportError(f"{what} {text!r} maps nothing; give SOURCE=STATION_NAME pairs")
    sources = [s for s, _ in pairs]
    twice = sorted({s for s in sources if sources.count(s) > 1})
    if twice:
        raise LeRobotImportError(f"{what}: {twice} mapped more than once; map each source once")
    targets = [t for _, t in pairs if t != DROP]
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise LeRobotImportError(f"{what}: several sources map to {twice}; each station name takes one source")
    return dict(pairs)


def parse_image_size(text: str | int | Sequence[int] | None) -> tuple[int, int] | None:
    """``96`` / ``"96"`` -> (96, 96); ``"48x64"`` / (48, 64) -> (height, width)."""
    if text is None:
        return None
    try:
        if isinstance(text, (int, np.integer)):
            shape = (int(text), int(text))
        elif isinstance(text, str):
            parts = text.lower().split("x")
            shape = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else ()
        else:
            shape = tuple(int(v) for v in text)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 2 or min(shape) < 1:
        raise LeRobotImportError(f"image size {text!r} is not PX or HEIGHTxWIDTH with positive integers")
    return shape


def load_success_file(path: str | os.PathLike) -> dict[int, bool]:
    """A JSON object ``{"<episode_index>": true|false}`` as ``{index: bool}``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise LeRobotImportError(f"success file {path}: {exc.strerror or first_line(exc)}") from None
    except ValueError as exc:
        raise LeRobotImportError(f"success file {path}: not JSON ({first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise LeRobotImportError(f'success file {path}: expected an object {{"<episode_index>": true|false, ...}}')
    labels: dict[int, bool] = {}
    for key, value in raw.items():
        try:
            index = int(key)
        except ValueError:
            index = -1
        if index < 0 or str(index) != str(key).strip():
            raise LeRobotImportError(f"success file {path}: key {key!r} is not an episode index")
        if not isinstance(value, bool):
            raise LeRobotImportError(f"success file {path}: episode {key} is {value!r}, not true or false")
        labels[index] = value
    return labels


# --------------------------------------------------------------------------- the source dataset


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise LeRobotImportError(f"{path.parent.parent} is not a LeRobot dataset: {path} is missing")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LeRobotImportError(f"{path}: not readable JSON ({first_line(exc)})") from None
    if not isinstance(info, dict):
        raise LeRobotImportError(f"{path}: not a JSON object")
    return info


def _read_parquet(path: Path, what: str, columns: Sequence[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise LeRobotImportError(f"{path}: missing ({what}); the LeRobot dataset is incomplete")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise LeRobotImportError(f"{path}: not a readable parquet file ({first_line(exc)})") from None
    missing = [c for c in columns or () if c not in table.column_names]
    if missing:
        raise LeRobotImportError(f"{path}: has no column(s) {missing} ({what})")
    return table


def feature_names(feature: Mapping[str, Any]) -> list[str] | None:
    """A vector feature's element names: ``names`` as a list, or a dict holding one list; None when unnamed."""
    names = feature.get("names")
    if isinstance(names, Mapping) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and names and all(isinstance(n, str) and n for n in names):
        return list(names)
    return None


def _camera_shape(feature: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) of an image/video feature (``names`` says the axis order; HWC when it does not)."""
    shape = [int(v) for v in feature.get("shape") or ()]
    names = feature.get("names")
    if len(shape) == 3 and isinstance(names, list) and "height" in names and "width" in names:
        return shape[names.index("height")], shape[names.index("width")]
    if len(shape) == 3:
        return (shape[1], shape[2]) if shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4) else (shape[0], shape[1])
    return (0, 0)


class LeRobotSource:
    """A native LeRobot v3.0 dataset's metadata: info, tasks and episodes, checked."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise LeRobotImportError(f"{self.root}: no such directory")
        self.info = _read_json(self.root / "meta" / "info.json")
        version = self.info.get("codebase_version")
        if isinstance(self.info.get("recap"), dict):
            raise LeRobotImportError(f"{self.root} is a RECAP dataset already; train on it directly")
        if version != LEROBOT_VERSION:
            raise LeRobotImportError(
                f"{self.root} is a LeRobot {version!r} dataset; only {LEROBOT_VERSION} is imported (convert it "
                "with LeRobot's convert_dataset_v21_to_v30 first)"
            )
        features = self.info.get("features")
        fps = self.info.get("fps")
        if not isinstance(features, dict) or not isinstance(fps, (int, float)) or not fps > 0:
            raise LeRobotImportError(f"{self.root / 'meta/info.json'}: lacks a features table or a positive fps")
        if float(fps) != int(fps):
            raise LeRobotImportError(f"{self.root}: fps {fps} is not a whole number; RECAP datasets need one")
        self.fps = int(fps)
        self.features: dict[str, dict] = features
        for key in (schema.STATE, schema.ACTION):
            feature = features.get(key)
            if not isinstance(feature, dict) or len(feature.get("shape") or ()) != 1:
                raise LeRobotImportError(f"{self.root}: has no vector feature {key!r}; RECAP needs state and action")
        self.state_dim = int(features[schema.STATE]["shape"][0])
        self.action_dim = int(features[schema.ACTION]["shape"][0])
        self.state_names = feature_names(features[schema.STATE])
        self.action_names = feature_names(features[schema.ACTION])
        self.camera_keys = [k for k, f in features.items() if isinstance(f, dict) and f.get("dtype") in CAMERA_DTYPES]
        self.data_path = str(self.info.get("data_path") or schema.DATA_PATH)
        self.video_path = str(self.info.get("video_path") or DEFAULT_VIDEO_PATH)
        self.tasks = self._load_tasks()
        self.episodes = self._load_episodes()

    def _load_tasks(self) -> list[str]:
        path = self.root / schema.TASKS_PATH
        table = _read_parquet(path, "the task prompts", ["task_index"])
        column = "task" if "task" in table.column_names else None
        if column is None:
            pandas = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}") or b"{}")
            index = [c for c in pandas.get("index_columns", []) if isinstance(c, str) and c in table.column_names]
            column = index[0] if len(index) == 1 else None
        if column is None:
            raise LeRobotImportError(f"{path}: has no task column (neither 'task' nor a pandas index of prompts)")
        indices, prompts = table["task_index"].to_pylist(), table[column].to_pylist()
        tasks: dict[int, str] = {}
        for index, prompt in zip(indices, prompts):
            if not isinstance(index, int) or index in tasks or not isinstance(prompt, str) or not prompt.strip():
                raise LeRobotImportError(f"{path}: task {index!r} -> {prompt!r} is a duplicate or empty task")
            tasks[index] = prompt
        if sorted(tasks) != list(range(len(tasks))):
            raise LeRobotImportError(f"{path}: task_index is not 0..{len(tasks) - 1}")
        return [tasks[i] for i in range(len(tasks))]

    def _load_episodes(self) -> dict[int, dict]:
        files = sorted((self.root / schema.EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotImportError(f"{self.root / schema.EPISODES_DIR}: no episodes metadata files")
        needed = ["episode_index", "length", "data/chunk_index", "data/file_index"]
        episodes: dict[int, dict] = {}
        for path in files:
            table = _read_parquet(path, "episodes metadata", needed)
            table = table.select([c for c in table.column_names if not c.startswith("stats/")])
            for row in table.to_pylist():
                index = row["episode_index"]
                if not isinstance(index, int) or index in episodes or not (row["length"] or 0) >= 1:
                    raise LeRobotImportError(f"{path}: episode {index!r} is listed twice or has no frames")
                episodes[index] = row
        total = self.info.get("total_episodes")
        if isinstance(total, int) and total != len(episodes):
            raise LeRobotImportError(
                f"{self.root / schema.EPISODES_DIR}: lists {len(episodes)} episodes, meta/info.json {total}"
            )
        return dict(sorted(episodes.items()))

    # ------------------------------------------------------------------ names

    def camera_name(self, key: str) -> str:
        return key[len(IMAGES_PREFIX) :] if key.startswith(IMAGES_PREFIX) else key

    def camera_key(self, name: str) -> str:
        """The feature key of a source camera given by its name or its key."""
        matches = {k for k in self.camera_keys if name in (k, self.camera_name(k))}
        if len(matches) != 1:
            names = [self.camera_name(k) for k in self.camera_keys]
            if not matches:
                raise LeRobotImportError(f"--cameras: the LeRobot dataset has no camera {name!r}; it has {names}")
            raise LeRobotImportError(f"--cameras: {name!r} names several cameras {sorted(matches)}; use the key")
        return matches.pop()

    def joint_index(self, key: str) -> int:
        """Index in ``observation.state`` of a source joint given by name, or by index when the state is unnamed
        or has no joint of that name."""
        names = self.state_names or []
        if key in names:
            return names.index(key)
        if key.isdigit() and int(key) < self.state_dim:
            return int(key)
        listed = f"joints {names}" if names else f"{self.state_dim} unnamed joints (map them by index)"
        raise LeRobotImportError(f"--joints: observation.state has no joint {key!r}; it has {listed}")

    def source_joint(self, index: int) -> str:
        return self.state_names[index] if self.state_names else str(index)


# --------------------------------------------------------------------------- the mapping


@dataclasses.dataclass(frozen=True)
class _Plan:
    layout: StationLayout
    camera_keys: tuple[str, ...]  # source feature key of each station camera, in the layout's order
    state_indices: np.ndarray  # source state index of each station joint
    action_indices: np.ndarray  # source action index of each station joint


def _plan(
    source: LeRobotSource,
    cameras: Mapping[str, str] | None,
    joints: Mapping[str, str] | None,
    station: StationConfig | None,
    gripper_joints: Sequence[str] | None,
) -> _Plan:
    if not source.camera_keys:
        raise LeRobotImportError(f"{source.root}: has no image or video feature; RECAP models need a camera")
    if cameras is None:
        if station is not None:
            cameras = {c: c for c in station.cameras}
        else:
            names = [source.camera_name(k) for k in source.camera_keys]
            raise LeRobotImportError(
                f"map the LeRobot cameras {names} to the station's: --cameras {names[0]}=base,... ({DROP} drops one)"
            )
    mapped = {source.camera_key(name): target for name, target in cameras.items()}
    unmapped = [source.camera_name(k) for k in source.camera_keys if k not in mapped]
    if unmapped:
        raise LeRobotImportError(f"--cameras leaves LeRobot camera(s) {unmapped} unmapped; map each, or drop it: =-")
    targets = {target: key for key, target in mapped.items() if target != DROP}
    if not targets:
        raise LeRobotImportError("--cameras drops every camera; map at least one")
    camera_order = list(station.cameras) if station is not None else list(targets)
    if station is not None and set(targets) != set(station.cameras):
        raise LeRobotImportError(
            f"--cameras gives station cameras {sorted(targets)}, the station has {list(station.cameras)}; "
            "map one LeRobot camera to each"
        )

    if joints is None:
        if source.state_names is None:
            raise LeRobotImportError(
                f"observation.state's {source.state_dim} joints are unnamed; name them: --joints 0=NAME,1=NAME,..."
            )
        joints = {n: n for n in source.state_names}
        if station is not None:
            missing = [j for j in station.joint_names if j not in joints]
            if missing:
                raise LeRobotImportError(
                    f"the station's joints {missing} are not LeRobot joints {source.state_names}; map them: "
                    f"--joints {source.state_names[0]}=STATION_JOINT,..."
                )
            joints = {n: (n if n in station.joint_names else DROP) for n in source.state_names}
    by_index: dict[int, str] = {}
    for key, target in joints.items():
        index = source.joint_index(key)
        if index in by_index:
            raise LeRobotImportError(f"--joints maps LeRobot joint {source.source_joint(index)!r} twice")
        by_index[index] = target
    unmapped = [source.source_joint(i) for i in range(source.state_dim) if i not in by_index]
    if unmapped:
        raise LeRobotImportError(f"--joints leaves LeRobot joint(s) {unmapped} unmapped; map each, or drop it: =-")
    targets_j = {target: index for index, target in by_index.items() if target != DROP}
    if not targets_j:
        raise LeRobotImportError("--joints drops every joint; map at least one")
    if station is not None:
        if set(targets_j) != set(station.joint_names):
            raise LeRobotImportError(
                f"--joints gives station joints {sorted(targets_j)}, the station has {list(station.joint_names)}; "
                "map one LeRobot joint to each"
            )
        joint_order = list(station.joint_names)
        grippers = list(station.gripper_joints) if gripper_joints is None else list(gripper_joints)
    else:
        joint_order = list(targets_j)  # the map's order
        grippers = [] if gripper_joints is None else list(gripper_joints)
    state_indices = np.array([targets_j[j] for j in joint_order], np.int64)
    action_indices = _action_indices(source, [source.source_joint(i) for i in state_indices], state_indices)
    try:
        layout = StationLayout(tuple(joint_order), tuple(grippers), tuple(camera_order))
    except ValueError as exc:
        raise LeRobotImportError(f"the imported station layout is not valid: {exc}") from None
    return _Plan(layout, tuple(targets[c] for c in camera_order), state_indices, action_indices)


def _action_indices(source: LeRobotSource, joints: list[str], state_indices: np.ndarray) -> np.ndarray:
    """Where each chosen state joint is in ``action``: by name when both are named, else at the state's index."""
    if source.state_names and source.action_names:
        missing = [j for j in joints if j not in source.action_names]
        if missing:
            raise LeRobotImportError(
                f"action has no joint(s) {missing} (its joints: {source.action_names}); RECAP commands the state's "
                "joints"
            )
        return np.array([source.action_names.index(j) for j in joints], np.int64)
    if source.action_dim != source.state_dim:
        raise LeRobotImportError(
            f"action ({source.action_dim}) and observation.state ({source.state_dim}) differ in size and are not "
            "both named, so the action's joints are unknown"
        )
    return state_indices.copy()


# --------------------------------------------------------------------------- success labels


def _success_labels(
    source: LeRobotSource,
    episodes: Sequence[int],
    frames: Mapping[int, pa.Table] | None,
    *,
    success: bool | None,
    success_column: str | None,
    success_file: str | os.PathLike | None,
) -> dict[int, bool]:
    options = {"--success": success, "--success-column": success_column, "--success-file": success_file}
    given = [name for name, value in options.items() if value is not None]
    if len(given) != 1:
        raise LeRobotImportError(
            "say where each episode's success comes from: exactly one of --success all|none, "
            f"--success-column NAME or --success-file FILE (got {given or 'none'})"
        )
    if success is not None:
        return dict.fromkeys(episodes, bool(success))
    if success_file is not None:
        labels = load_success_file(success_file)
        missing = [e for e in episodes if e not in labels]
        unknown = sorted(set(labels) - set(source.episodes))
        if missing or unknown:
            raise LeRobotImportError(
                f"success file {success_file}: "
                + (f"has no label for episode(s) {missing}" if missing else f"names episode(s) {unknown}")
                + f" of a dataset with episodes 0..{len(source.episodes) - 1}"
            )
        return {e: labels[e] for e in episodes}
    return {e: _column_success(source, e, success_column, frames) for e in episodes}


def _as_flags(values: list, where: str, column: str) -> list[bool]:
    flags = []
    for value in values:
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, (bool, np.bool_)):
            flags.append(bool(value))
        elif isinstance(value, (int, float)) and value in (0, 1):
            flags.append(bool(value))
        else:
            raise LeRobotImportError(
                f"success column {column!r} holds {value!r} in {where}; it must be true/false or 0/1"
            )
    return flags


def _column_success(source: LeRobotSource, episode: int, column: str, frames: Mapping[int, pa.Table] | None) -> bool:
    if column in source.episodes[episode]:
        return _as_flags([source.episodes[episode][column]], f"episode {episode}'s metadata", column)[0]
    if frames is not None and column in frames[episode].column_names:
        return any(_as_flags(frames[episode][column].to_pylist(), f"episode {episode}", column))
    frame_columns = [k for k, f in source.features.items() if f.get("dtype") not in CAMERA_DTYPES]
    episode_columns = [c for c in source.episodes[episode] if not c.startswith(("videos/", "data/", "meta/"))]
    raise LeRobotImportError(
        f"success column {column!r} is neither a frame feature {frame_columns} nor an episodes metadata column "
        f"{episode_columns}"
    )


# --------------------------------------------------------------------------- frames


def _data_file(source: LeRobotSource, episode: int) -> Path:
    chunk, file = source.episodes[episode]["data/chunk_index"], source.episodes[episode]["data/file_index"]
    return source.root / source.data_path.format(chunk_index=chunk, file_index=file)


def _read_columns(path: Path, columns: Sequence[str], episodes: Sequence[int]) -> pa.Table:
    if not path.is_file():
        raise LeRobotImportError(f"{path}: missing (frames of episode(s) {list(episodes)})")
    try:
        handle = pq.ParquetFile(path)
        missing = [c for c in columns if c not in handle.schema_arrow.names]
        if missing:
            raise LeRobotImportError(f"{path}: has no column(s) {missing}")
        return handle.read(columns=list(columns))
    except (pa.ArrowException, OSError) as exc:
        raise LeRobotImportError(f"{path}: not a readable parquet file ({first_line(exc)})") from None


def _episode_rows(table: pa.Table, source: LeRobotSource, episode: int, path: Path) -> pa.Table:
    """An episode's rows of a data file, by frame_index, checked against its metadata."""
    rows = table.filter(pc.equal(table["episode_index"], episode))
    rows = rows.take(pc.sort_indices(rows["frame_index"]))
    length = source.episodes[episode]["length"]
    if rows["frame_index"].to_pylist() != list(range(length)):
        raise LeRobotImportError(
            f"{path}: episode {episode} has {rows.num_rows} frames (frame_index not 0..{length - 1}), its metadata "
            f"{length}; the LeRobot dataset is damaged"
        )
    return rows


def _load_frames(source: LeRobotSource, episodes: Sequence[int], columns: Sequence[str]) -> dict[int, pa.Table]:
    """Each episode's rows (``columns``: no images, so every episode fits in memory), by frame_index."""
    by_file: dict[Path, list[int]] = {}
    for e in episodes:
        by_file.setdefault(_data_file(source, e), []).append(e)
    frames: dict[int, pa.Table] = {}
    for path, members in sorted(by_file.items()):
        table = _read_columns(path, list(dict.fromkeys(["episode_index", "frame_index", *columns])), members)
        for e in members:
            frames[e] = _episode_rows(table, source, e, path)
    return frames


class _EmbeddedImages:
    """The ``image`` features' cells, read one data file at a time (a LeRobot data file holds up to
    ``data_files_size_in_mb``, 100 MB by default, of episodes)."""

    def __init__(self, source: LeRobotSource, keys: Sequence[str]):
        self.source, self.keys = source, list(keys)
        self._path: Path | None = None
        self._table: pa.Table | None = None

    def frames(self, key: str, episode: int, shape: tuple[int, int]) -> Iterator[np.ndarray]:
        path = _data_file(self.source, episode)
        if path != self._path:
            self._table = None  # let the previous file go before reading the next
            self._table = _read_columns(path, ["episode_index", "frame_index", *self.keys], [episode])
            self._path = path
        rows = _episode_rows(self._table, self.source, episode, path)
        return _image_frames(rows, key, shape, episode)


def _vectors(rows: pa.Table, key: str, dim: int, episode: int) -> np.ndarray:
    """A ``[T, dim]`` float64 array of a vector column (LeRobot stores them as fixed-size lists)."""
    column = rows[key].combine_chunks()
    if pa.types.is_fixed_size_list(column.type) and column.type.list_size == dim and column.null_count == 0:
        array = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, dim)
    else:
        try:
            array = np.asarray(column.to_pylist(), dtype=np.float64)
        except (TypeError, ValueError):
            array = np.zeros((0,))
    if array.shape != (rows.num_rows, dim):
        raise LeRobotImportError(f"episode {episode}: {key} is not {dim} numbers per frame")
    if not np.all(np.isfinite(array)):
        frame = int(np.argwhere(~np.isfinite(array))[0][0])
        raise LeRobotImportError(f"episode {episode}: {key} is not finite at frame {frame}")
    return array


def _resize(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if frame.shape[:2] == shape:
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((shape[1], shape[0]), Image.BILINEAR))


def _image_frames(rows: pa.Table, key: str, shape: tuple[int, int], episode: int) -> Iterator[np.ndarray]:
    """Decode an ``image`` feature's embedded cells (PNG/JPEG bytes) as RGB frames of ``shape``."""
    from PIL import Image, UnidentifiedImageError

    for number, cell in enumerate(rows[key].to_pylist()):
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if not data:
            raise LeRobotImportError(
                f"episode {episode} frame {number}: {key} holds no embedded image bytes (path {cell!r}); "
                "LeRobot v3 embeds images in the data files"
            )
        try:
            with Image.open(io.BytesIO(data)) as image:
                frame = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise LeRobotImportError(f"episode {episode} frame {number}: {key} is not an image ({exc})") from None
        yield _resize(frame, shape)


class _VideoFile:
    """Frames of one mp4 by presentation time, decoded in order (LeRobot's files hold episodes one after the
    other, so an import decodes each file once); going back or far ahead seeks."""

    SEEK_AHEAD_S = 10.0

    def __init__(self, path: Path):
        import av

        self.path = path
        self._av = av
        try:
            self._container = av.open(str(path))
            self._stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError) as exc:
            raise LeRobotImportError(f"{path}: not a readable video ({first_line(exc)})") from None
        self._frames = self._decode()
        self._last: tuple[float, Any] | None = None

    def _decode(self) -> Iterator[tuple[float, Any]]:
        try:
            for frame in self._container.decode(self._stream):
                if frame.pts is not None:
                    yield float(frame.pts * frame.time_base), frame
        except self._av.error.FFmpegError as exc:
            raise LeRobotImportError(f"{self.path}: cannot decode ({first_line(exc)})") from None

    def _seek(self, seconds: float) -> None:
        offset = max(0, int(seconds / float(self._stream.time_base)))
        self._container.seek(offset, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._decode()
        self._last = None

    def frame_at(self, seconds: float, tolerance: float) -> np.ndarray:
        """The RGB frame presented nearest ``seconds``, at most ``tolerance`` away."""
        if self._last is not None and (
            seconds < self._last[0] - tolerance or seconds > self._last[0] + self.SEEK_AHEAD_S
        ):
            self._seek(seconds - 1.0)
        best: tuple[float, Any] | None = None
        while True:
            if self._last is not None:
                gap = abs(self._last[0] - seconds)
                if gap <= tolerance and (best is None or gap < best[0]):
                    best = (gap, self._last[1])
                if self._last[0] > seconds + tolerance:
                    break
            following = next(self._frames, None)
            if following is None:
                break
            self._last = following
        if best is None:
            raise LeRobotImportError(
                f"{self.path}: no frame within {tolerance * 1000:.0f} ms of {seconds:.3f} s; the video is shorter "
                "than its episodes metadata says or frames are missing"
            )
        return best[1].to_ndarray(format="rgb24")

    def close(self) -> None:
        self._container.close()


class _Videos:
    """The open mp4 files of the import, one per (camera, chunk, file)."""

    def __init__(self, source: LeRobotSource):
        self.source = source
        self._open: dict[str, tuple[Path, _VideoFile]] = {}

    def frames(self, key: str, episode: int, times: np.ndarray, shape: tuple[int, int]) -> Iterator[np.ndarray]:
        meta = self.source.episodes[episode]
        try:
            chunk, file = meta[f"videos/{key}/chunk_index"], meta[f"videos/{key}/file_index"]
            start = float(meta[f"videos/{key}/from_timestamp"])
        except (KeyError, TypeError, ValueError):
            raise LeRobotImportError(
                f"{self.source.root / schema.EPISODES_DIR}: episode {episode} lacks videos/{key}/chunk_index, "
                "file_index or from_timestamp"
            ) from None
        path = self.source.root / self.source.video_path.format(video_key=key, chunk_index=chunk, file_index=file)
        if key not in self._open or self._open[key][0] != path:
            if key in self._open:
                self._open[key][1].close()
            if not path.is_file():
                raise LeRobotImportError(f"{path}: missing (video of episode {episode})")
            self._open[key] = (path, _VideoFile(path))
        video = self._open[key][1]
        tolerance = 0.5 / self.source.fps
        for t in times:
            yield _resize(video.frame_at(start + float(t), tolerance), shape)

    def close(self) -> None:
        for _, video in self._open.values():
            video.close()
        self._open.clear()


# --------------------------------------------------------------------------- the import


def _check_pyav(source: LeRobotSource, keys: Sequence[str]) -> None:
    videos = [source.camera_name(k) for k in keys if source.features[k]["dtype"] == "video"]
    if not videos:
        return
    try:
        import av  # noqa: F401
    except ImportError:
        raise LeRobotImportError(
            f"camera(s) {videos} are stored as video; decoding them needs PyAV: pip install av"
        ) from None


def _image_shape(source: LeRobotSource, keys: Sequence[str], out: Path) -> tuple[int, int]:
    if (out / schema.INFO_PATH).is_file():
        try:
            return schema.info_image_shape(schema.load_info(out))
        except (KeyError, TypeError, ValueError, FileNotFoundError):
            pass  # the writer says what is wrong with it
    shapes = {source.camera_name(k): _camera_shape(source.features[k]) for k in keys}
    if len(set(shapes.values())) != 1 or (0, 0) in shapes.values():
        raise LeRobotImportError(
            f"the cameras' images differ in size or are unsized ({shapes}); choose one: --image-size PX or HxW"
        )
    return next(iter(shapes.values()))


def import_lerobot(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    cameras: Mapping[str, str] | str | None = None,
    joints: Mapping[str, str] | str | None = None,
    station: StationConfig | str | os.PathLike | None = None,
    gripper_joints: Sequence[str] | None = None,
    success: bool | str | None = None,
    success_column: str | None = None,
    success_file: str | os.PathLike | None = None,
    episodes: Sequence[int] | None = None,
    image_size: int | str | Sequence[int] | None = None,
    image_format: str = schema.DEFAULT_IMAGE_FORMAT,
    robot: str | None = None,
    max_episode_length: int | None = None,
    c_fail: float | None = None,
) -> ImportSummary:
    """Write the LeRobot v3.0 dataset at ``src`` into the RECAP dataset ``out`` (created, or appended to) as
    demonstrations.

    ``cameras``: LeRobot camera (name or feature key) -> station camera, ``"-"`` to drop one (default with a
    station: the station's camera names). ``joints``: LeRobot joint (a name of ``observation.state``, or its index)
    -> station joint, ``"-"`` to drop one (default: the LeRobot names). ``station``: a station parameter file or
    config: then the dataset takes its joint order, gripper joints and cameras, and each must be mapped; without
    one the joints keep the map's order and the cameras the camera map's, with ``gripper_joints`` (default none).
    Exactly one of ``success`` (True/False, or "all"/"none"), ``success_column`` and ``success_file``.
    ``episodes``: the LeRobot episode indices to import (default all), in that order. ``image_size``: PX or
    (H, W) every camera is resized to (default: the cameras' own size, which must agree; an existing ``out``'s).
    ``robot`` defaults to the LeRobot ``robot_type``. ``max_episode_length`` / ``c_fail`` as for
    :class:`~recap_core.data.writer.DatasetWriter`.
    """
    from recap_core.data.writer import DatasetWriter

    source = LeRobotSource(src)
    out = Path(out)
    if isinstance(station, (str, os.PathLike)):
        try:
            station = StationConfig.from_yaml(station)
        except OSError as exc:
            raise LeRobotImportError(f"--station {station}: {exc.strerror or first_line(exc)}") from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise LeRobotImportError(f"--station {station}: {first_line(exc)}") from None
    if isinstance(success, str):
        if success not in SUCCESS_FLAGS:
            raise LeRobotImportError(f"--success {success!r}: give 'all' or 'none'")
        success = SUCCESS_FLAGS[success]
    plan = _plan(source, parse_map(cameras, "--cameras"), parse_map(joints, "--joints"), station, gripper_joints)
    chosen = list(source.episodes) if episodes is None else [int(e) for e in episodes]
    unknown = [e for e in chosen if e not in source.episodes]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise LeRobotImportError(
            f"--episodes {list(chosen)}: give distinct indices of the dataset's episodes 0..{len(source.episodes) - 1}"
        )
    shape = parse_image_size(image_size) or _image_shape(source, plan.camera_keys, out)
    _check_pyav(source, plan.camera_keys)

    image_keys = [k for k in plan.camera_keys if source.features[k]["dtype"] == "image"]
    column = [success_column] if success_column and success_column in source.features else []
    columns = ["timestamp", "task_index", schema.STATE, schema.ACTION]
    frames = _load_frames(source, chosen, list(dict.fromkeys(columns + column)))
    labels = _success_labels(
        source, chosen, frames, success=success, success_column=success_column, success_file=success_file
    )
    tasks = {}
    for e in chosen:
        indices = sorted(set(frames[e]["task_index"].to_pylist()))
        if len(indices) != 1 or not (isinstance(indices[0], int) and 0 <= indices[0] < len(source.tasks)):
            raise LeRobotImportError(
                f"episode {e} has task_index {indices} ({len(source.tasks)} tasks); a RECAP episode has one task"
            )
        tasks[e] = source.tasks[indices[0]]

    existing_robot = None
    if (out / schema.INFO_PATH).is_file():
        try:
            existing_robot = schema.load_info(out).get("robot_type")
        except (ValueError, FileNotFoundError):
            pass  # the writer says what is wrong with it
    robot = robot or existing_robot or source.info.get("robot_type") or "lerobot"
    existed = out.exists()
    fresh = not existed or (out.is_dir() and not any(out.iterdir()))  # a failed import then leaves no dataset
    low = np.full(plan.layout.num_joints, np.inf)
    high = np.full(plan.layout.num_joints, -np.inf)
    written: dict[int, int] = {}
    videos = _Videos(source)
    embedded = _EmbeddedImages(source, image_keys)
    try:
        writer = DatasetWriter(
            out,
            fps=source.fps,
            cameras=plan.layout.cameras,
            joint_names=plan.layout.joint_names,
            gripper_joints=plan.layout.gripper_joints,
            image_shape=shape,
            robot=str(robot),
            image_format=image_format,
            c_fail=c_fail,
            max_episode_length=max_episode_length,
        )
    except ValueError as exc:
        if fresh:
            _discard(out, existed)
        raise LeRobotImportError(first_line(exc)) from None
    try:
        for e in chosen:
            rows = frames[e]
            states = _vectors(rows, schema.STATE, source.state_dim, e)[:, plan.state_indices]
            actions = _vectors(rows, schema.ACTION, source.action_dim, e)[:, plan.action_indices]
            times = np.asarray(rows["timestamp"].to_pylist(), dtype=np.float64)
            if not np.all(np.isfinite(times)) or (len(times) > 1 and np.any(np.diff(times) < 0)):
                raise LeRobotImportError(f"episode {e}: timestamps are not finite and non-decreasing")
            images = {
                station_camera: (
                    embedded.frames(key, e, shape)
                    if source.features[key]["dtype"] == "image"
                    else videos.frames(key, e, times, shape)
                )
                for station_camera, key in zip(plan.layout.cameras, plan.camera_keys)
            }
            written[e] = writer.add_episode(
                states=states,
                actions=actions,
                images=images,
                is_intervention=np.zeros(len(states), bool),
                success=labels[e],
                task=tasks[e],
                receive_times=times - times[0],
                metadata={
                    "source": "demo",
                    "station": station.station_name if station is not None else "",
                    "lerobot_dataset": str(source.root.resolve()),
                    "lerobot_episode_index": e,
                },
            )
            low, high = np.minimum(low, states.min(0)), np.maximum(high, states.max(0))
    except BaseException as exc:
        writer._broken = f"the import stopped: {first_line(exc)}"  # close() then keeps nothing of this session
        try:
            writer.close()
        except RuntimeError:
            pass
        if fresh:
            _discard(out, existed)
        if isinstance(exc, ValueError) and not isinstance(exc, UserError):
            raise LeRobotImportError(first_line(exc)) from None
        raise
    finally:
        videos.close()
    writer.close()
    warnings = _limit_warnings(station, plan.layout, low, high)
    return ImportSummary(
        out=out,
        episodes=len(written),
        frames=sum(source.episodes[e]["length"] for e in chosen),
        successes=sum(labels[e] for e in chosen),
        layout=plan.layout,
        image_shape=shape,
        episode_indices=written,
        limit_warnings=tuple(warnings),
    )


def _discard(out: Path, keep_directory: bool) -> None:
    """Remove what a failed import created in a new (or empty) ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    if keep_directory:
        out.mkdir(exist_ok=True)


def _limit_warnings(
    station: StationConfig | None, layout: StationLayout, low: np.ndarray, high: np.ndarray
) -> list[str]:
    """Joints whose imported states leave the station's limits: most likely other units (degrees, percent)."""
    if station is None:
        return []
    lines = []
    for i, joint in enumerate(layout.joint_names):
        lower, upper = station.lower[station.joint_names.index(joint)], station.upper[station.joint_names.index(joint)]
        if low[i] < lower or high[i] > upper:
            lines.append(
                f"joint {joint}: imported states span [{low[i]:.4g}, {high[i]:.4g}], the station's limits are "
                f"[{lower:.4g}, {upper:.4g}]; are the LeRobot values in other units?"
            )
    return lines


__all__ = [
    "DROP",
    "ImportSummary",
    "LeRobotImportError",
    "LeRobotSource",
    "feature_names",
    "import_lerobot",
    "load_success_file",
    "parse_image_size",
    "parse_map",
]
