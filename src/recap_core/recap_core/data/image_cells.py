"""One camera's image cells for ``DatasetWriter.add_episode``: frames taken a slice at a time, checked, encoded
where they must be, and the frames sampled for the image statistics."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable
from typing import Any

import numpy as np

from recap_core.data import schema

IMAGE_STATS_FRAMES = 16  # frames per episode and camera sampled for image stats, as LeRobot samples
_VALUES = np.arange(256, dtype=np.float64) / 255.0


def stats_sample(length: int) -> np.ndarray:
    """The frame numbers of a ``length``-frame episode whose pixels give its image statistics."""
    return np.unique(np.linspace(0, length - 1, min(IMAGE_STATS_FRAMES, length)).astype(int))


class CameraCells:
    """``frames`` (an ``[T, H, W, 3]`` array or an iterable of frames / :class:`schema.EncodedImage`) of one camera
    as the bytes of its cells, :meth:`take` a slice at a time.

    A frame already encoded in the dataset's format is stored as it is (``passes_through`` when the first is):
    such a camera is read on the writer's calling thread, where reading costs less than handing the GIL
    between threads. The sampled frames' pixels are kept for :meth:`stats`; an encoded one is decoded on
    ``pool`` (the decoder releases the GIL) when there is one.
    """

    def __init__(
        self,
        camera: str,
        frames: np.ndarray | Iterable[Any],
        length: int,
        image_shape: tuple[int, int],
        image_format: str,
        sampled: np.ndarray,
        pool: concurrent.futures.Executor | None = None,
    ):
        if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[0] != length):
            raise ValueError(f"images[{camera!r}] must be [T={length}, H, W, 3], got shape {frames.shape}")
        self.camera, self.length, self.image_format, self.pool = camera, length, image_format, pool
        self.expected = (*image_shape, 3)
        self.wanted = set(sampled.tolist())
        self.samples: list = []  # [H, W, 3] arrays or futures of them, in frame order
        self.number = 0  # frames taken so far
        self._frames = iter(frames)
        self._first = next(self._frames, _END)
        first = self._first
        self.passes_through = (
            isinstance(first, schema.EncodedImage)
            and first.image_format == image_format
            and tuple(first.shape) == self.expected[:2]
        )

    def take(self, count: int) -> list:
        """The cells (bytes) of the next ``count`` frames; ValueError where the camera has fewer."""
        cells = []
        for _ in range(count):
            if self._first is not _END:
                frame, self._first = self._first, _END
            else:
                frame = next(self._frames, _END)
            if frame is _END:
                raise ValueError(
                    f"images[{self.camera!r}] has {self.number} frames but states has {self.length}; one per frame"
                )
            cells.append(self._cell(frame))
            self.number += 1
        return cells

    def finish(self) -> None:
        """ValueError if frames are left over after the episode's last."""
        if self._first is not _END or next(self._frames, _END) is not _END:
            raise ValueError(f"images[{self.camera!r}] has more frames than states ({self.length})")

    def stats(self) -> dict[str, np.ndarray]:
        return image_stats(np.stack([s.result() if hasattr(s, "result") else s for s in self.samples]))

    def _cell(self, frame):
        number = self.number
        if isinstance(frame, schema.EncodedImage):
            if tuple(frame.shape) != self.expected[:2]:
                raise ValueError(
                    f"images[{self.camera!r}] frame {number} is {tuple(frame.shape)}, not the "
                    f"dataset's image_shape {self.expected[:2]}; resize before writing"
                )
            if frame.image_format == self.image_format:  # stored as it came: no decode, no re-encode
                if number in self.wanted:
                    self.samples.append(self.pool.submit(_pixels, frame) if self.pool else _pixels(frame))
                return frame.data
            frame = frame.decode()
        frame = np.asarray(frame)
        if frame.shape != self.expected or frame.dtype != np.uint8:
            raise ValueError(
                f"images[{self.camera!r}] frame {number} must be {self.expected} uint8 (the dataset's "
                f"image_shape), got {frame.shape} {frame.dtype}; resize before writing"
            )
        if number in self.wanted:
            self.samples.append(frame)
        return schema.encode_image(frame, self.image_format)


_END = object()


def _pixels(frame: schema.EncodedImage) -> np.ndarray:
    """``frame.decode()``; a JPEG in half the time through libjpeg-turbo's own binding (the same decoder and
    settings as Pillow's, so the same pixels)."""
    if frame.image_format == "jpeg":
        import simplejpeg

        pixels = simplejpeg.decode_jpeg(frame.data, colorspace="RGB")
        if pixels.shape[:2] == tuple(frame.shape):
            return pixels
    return frame.decode()


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel stats ``[3, 1, 1]`` of sampled ``[K, H, W, 3]`` uint8 frames, scaled to [0, 1] as LeRobot.

    Every 4th pixel of each row and column is plenty; min, max, mean and (population) std are exact over
    those pixels, taken from each channel's histogram of 256 values.
    """
    pixels = np.ascontiguousarray(frames[:, ::4, ::4]).reshape(-1, 3)
    stats: dict[str, list] = {"min": [], "max": [], "mean": [], "std": []}
    for channel in range(3):
        counts = np.bincount(pixels[:, channel], minlength=256).astype(np.float64)
        present = np.flatnonzero(counts)
        mean = counts @ _VALUES / len(pixels)
        stats["min"].append(_VALUES[present[0]])
        stats["max"].append(_VALUES[present[-1]])
        stats["mean"].append(mean)
        stats["std"].append(np.sqrt(counts @ (_VALUES - mean) ** 2 / len(pixels)))
    result = {name: np.array(values).reshape(3, 1, 1) for name, values in stats.items()}
    result["count"] = np.array([len(frames)])
    return result
