"""Reading several bags at once for ``recap convert --workers N``: each bag is read in a worker process while
the converting process writes the episodes before it, in the order given.

A worker does everything :func:`~recap_recorder.bag_to_dataset.load_episode` does (CRC check, timeline,
metadata) and reads every frame the dataset will hold, checking each as the converter does. What it hands
back is small: a recorded image stored as it is comes back as where its bytes lie in the bag
(:class:`~recap_recorder.bag_to_dataset.FileFrame`, read by the converting process, one read per image), an
image it had to decode, resize or encode comes back encoded in the dataset's format, except on the frames the
writer samples for image statistics, which come back as pixels (the writer takes those statistics from the
pixels it is given). The converting process hands all of it to the same ``DatasetWriter.add_episode`` call as
a serial run, so the dataset is the same, byte for byte.

Where the worker read a bag with a different joint-layout fallback or image size than the dataset turned out
to need (a new dataset takes both from its first converted bag), the bag is read again in the converting
process: :meth:`Prefetch.take` returns None and the serial path reads it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import concurrent.futures.process
import dataclasses
import multiprocessing
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from recap_core.data.schema import EncodedImage, encode_image
from recap_core.layout import StationLayout
from recap_recorder.bag_files import BagError
from recap_recorder.bag_info import BagInfo
from recap_recorder.bag_to_dataset import FileFrame, SkipBag, Timeline, episode_layout, load_episode
from recap_recorder.indexed_mcap import CorruptBag


#: fewer bags than this are read in the converting process by default: starting the workers (a fork server
#: that imports the converter, ~0.3 s on a busy 2-core machine) costs more than it saves on a few bags
MIN_BAGS_FOR_WORKERS = 4
#: fewer cores than this and no workers by default: the converting process keeps one core busy writing and the
#: writer's image threads and the CRC check use the second; on the 2-core development VM (an experiment
#: running) one worker measured no faster than none (docs/benchmarks.md, convert)
MIN_CORES_FOR_WORKERS = 4


def default_workers(bags: int, cores: int | None = None) -> int:
    """Worker processes for ``bags`` bags on ``cores`` cores (default: this machine's): one per core but the one
    the converting process writes on, never more than there are bags; none for fewer than
    :data:`MIN_BAGS_FOR_WORKERS` bags or :data:`MIN_CORES_FOR_WORKERS` cores."""
    cores = (os.cpu_count() or 1) if cores is None else cores
    if bags < MIN_BAGS_FOR_WORKERS or cores < MIN_CORES_FOR_WORKERS:
        return 0
    return min(bags, cores - 1)


@dataclasses.dataclass
class PreparedEpisode:
    """A bag read by a worker: what :class:`~recap_recorder.bag_to_dataset.BagEpisode` gives the converter."""

    info: BagInfo
    timeline: Timeline
    layout: StationLayout
    image_shape: tuple[int, int]
    task: str
    success: bool
    metadata: dict
    storage: Path  # the MCAP file the FileFrames point into
    shape: tuple[int, int]  # the size its frames were read at
    items: dict[str, list]  # camera -> one FileFrame, EncodedImage or [H, W, 3] array per tick
    errors: dict[str, tuple[bool, str]]  # camera -> (an OSError, not a BagError; text) where reading stopped
    message_names: tuple[str, ...] = ()
    _fd: int | None = None

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.layout.cameras

    def frames(self, camera: str, shape: tuple[int, int] | None = None) -> Iterator[np.ndarray | EncodedImage]:
        """What ``BagEpisode.frames(camera, shape)`` yields, an error where it raised included."""
        if shape is not None and tuple(shape) != self.shape:
            raise ValueError(f"{camera} frames were read at {self.shape}, not {tuple(shape)}")
        if self._fd is None:  # here, not in the generator: the writer's threads may go on with it
            self._fd = os.open(self.storage, os.O_RDONLY)
        return self._frames(camera)

    def _frames(self, camera: str) -> Iterator[np.ndarray | EncodedImage]:
        last, frame = None, None
        for item in self.items[camera]:
            if item is not last:
                last, frame = item, self._read(item) if isinstance(item, FileFrame) else item
            yield frame
        if camera in self.errors:
            is_os_error, text = self.errors[camera]
            raise OSError(text) if is_os_error else BagError(text)

    def _read(self, item: FileFrame) -> EncodedImage:
        data = os.pread(self._fd, item.size, item.position)
        if len(data) != item.size:
            raise BagError(
                f"{self.storage}: an image's bytes are cut off ({len(data)} of {item.size} at byte "
                f"{item.position}); was the bag changed while it was converted?"
            )
        return EncodedImage(data, item.kind, item.shape)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "PreparedEpisode":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class Unusable:
    """A bag a worker did not read to the end: ``status`` skipped, corrupt or failed, as ``convert_bags`` says."""

    status: str
    reason: str


def stats_sample(length: int) -> set[int]:
    """The frames ``DatasetWriter`` takes image statistics from (recap_core.data.writer.add_episode)."""
    from recap_core.data.image_cells import stats_sample as sample

    return set(sample(length).tolist())


def prepare_episode(
    path: Path,
    *,
    include_aborted: bool,
    station: StationLayout | None,
    fallback: StationLayout | None,
    image_format: str,
    shape: tuple[int, int] | None,
) -> PreparedEpisode | Unusable:
    """Read one bag in a worker: ``load_episode`` and every frame at ``shape`` (None: the bag's own)."""
    try:
        episode = load_episode(path, include_aborted=include_aborted, station=station, fallback=fallback)
    except SkipBag as exc:
        return Unusable("skipped", str(exc))
    except BagError as exc:
        return Unusable("corrupt" if isinstance(exc, CorruptBag) else "failed", str(exc))
    with episode:
        want = tuple(shape) if shape is not None else episode.image_shape
        sampled = stats_sample(len(episode.timeline.tick_ns))
        items, errors = {}, {}
        for camera in episode.cameras:
            out = items[camera] = []
            last, encoded = None, None
            try:
                for number, frame in enumerate(episode._frames(camera, want, in_file=True)):
                    if isinstance(frame, np.ndarray) and number not in sampled:
                        if frame is not last:
                            data = encode_image(frame, image_format)
                            last, encoded = frame, EncodedImage(data, image_format, tuple(frame.shape[:2]))
                        frame = encoded
                    out.append(frame)
            except (BagError, OSError) as exc:
                errors[camera] = (not isinstance(exc, BagError), str(exc))
        return PreparedEpisode(
            info=episode.info,
            timeline=episode.timeline,
            layout=episode.layout,
            image_shape=episode.image_shape,
            task=episode.task,
            success=episode.success,
            metadata=episode.metadata,
            storage=episode.mcap.path,
            shape=want,
            items=items,
            errors=errors,
            message_names=episode.message_names,
        )


class Prefetch:
    """Bags read ahead by ``workers`` processes, taken in the order given (at most ``workers + 1`` ahead)."""

    def __init__(
        self,
        bags: Sequence[Path],
        workers: int,
        *,
        include_aborted: bool,
        station: StationLayout | None,
        fallback: StationLayout | None,
        image_format: str,
        shape: tuple[int, int] | None,
    ):
        context = multiprocessing.get_context("forkserver")  # no fork of a process with the writer's threads
        context.set_forkserver_preload(["recap_recorder.convert_workers"])
        self._pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
        self._ahead = workers + 1
        self._options = dict(
            include_aborted=include_aborted, station=station, fallback=fallback, image_format=image_format, shape=shape
        )
        self.fallback, self.shape = fallback, shape
        self._waiting = collections.deque(bags)
        self._broken = False
        self._running: collections.OrderedDict[Path, concurrent.futures.Future] = collections.OrderedDict()
        self._fill()

    def _fill(self) -> None:
        while self._waiting and len(self._running) < self._ahead and not self._broken:
            path = self._waiting.popleft()
            if path not in self._running:
                try:
                    self._running[path] = self._submit(path)
                except concurrent.futures.process.BrokenProcessPool:
                    # a worker died (out of memory, say): the converting process reads this bag and the rest
                    self._broken = True

    def _submit(self, path: Path) -> concurrent.futures.Future:
        return self._pool.submit(prepare_episode, path, **self._options)

    def take(
        self, path: Path, fallback: StationLayout | None, shape: tuple[int, int] | None, station=None
    ) -> PreparedEpisode | Unusable | None:
        """What a worker read of ``path``; None where the converting process must read it itself: it was not
        submitted, or was read with another joint-layout ``fallback`` than the converter now uses and the
        layout comes out different (or the bag was not usable: its error may be the fallback's), or at another
        image size than ``shape`` (the dataset's; None while there is none yet)."""
        future = self._running.pop(path, None)
        self._fill()
        if future is None:
            return None
        try:
            result = future.result()  # an error no outcome covers is raised here, as the serial path raises it
        except concurrent.futures.process.BrokenProcessPool:  # a worker died: no verdict on the bag
            return None
        if fallback != self.fallback:
            if isinstance(result, Unusable):
                return None
            try:
                layout = episode_layout(
                    path,
                    result.info.custom_data,
                    result.cameras,
                    result.message_names,
                    station=station,
                    fallback=fallback,
                )
            except BagError:
                return None
            if layout != result.layout:
                return None
        if isinstance(result, PreparedEpisode) and (shape or result.image_shape) != result.shape:
            return None
        return result

    def close(self) -> None:
        for future in self._running.values():
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
