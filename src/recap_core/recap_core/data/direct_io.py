"""A write-only file that bypasses the page cache (``O_DIRECT``), for the dataset writer's data files.

A converted dataset is written once and read later, by a training. Written through the page cache, every byte
first takes a page of fresh memory; on a VM whose host reclaims the guest's free memory (free page reporting, a
balloon) that costs more than the disk: 500 MB took 1.0-1.1 s buffered and 0.22 s with ``O_DIRECT`` on the
development VM (docs/benchmarks.md). The first read afterwards comes from the disk instead of the cache.

:class:`DirectFile` gathers writes in a page-aligned buffer. Past a file's first ``direct_after`` bytes
(64 MiB) it writes whole aligned blocks with ``O_DIRECT``; the first bytes and the last partial block go through
an ordinary descriptor. Small files are cheaper in the page cache: the pages a previous file freed are reused
warm, and ``O_DIRECT`` waits for the disk. A 1,000-frame episode (49 MB) converted at 0.9x rosbags' read with
every block direct, against 1.4x buffered in the run before. Where the file system refuses ``O_DIRECT`` (some
network file systems; tmpfs before Linux 6.6) the file is written through the page cache, the same bytes.
Errors raise ``OSError`` like any write.
"""

from __future__ import annotations

import mmap
import os

BLOCK = 4096  # O_DIRECT alignment of offsets, lengths and the buffer's address (a page: enough for any device)
BUFFER = 8 << 20  # bytes gathered before a write
DIRECT_AFTER = 64 << 20  # a file's first bytes go through the page cache: small files are cheaper there


class DirectFile:
    """``open(path, "wb")`` for large sequential writes, without the page cache where the file system allows.

    Has what pyarrow's writers use from a Python file: ``write``, ``tell``, ``flush``, ``close``, ``closed``,
    ``writable`` (wrapped in ``pa.PythonFile``). ``direct`` says whether ``O_DIRECT`` is open for the file,
    ``direct_bytes`` how many bytes it wrote; ``buffer_size`` is what it gathers before a write.
    """

    def __init__(self, path, *, direct: bool = True, buffer_size: int | None = None, direct_after: int | None = None):
        buffer_size = BUFFER if buffer_size is None else int(buffer_size)
        if buffer_size <= 0 or buffer_size % BLOCK:
            raise ValueError(f"buffer_size must be a positive multiple of {BLOCK}, got {buffer_size}")
        self.direct_after = max(0, int(DIRECT_AFTER if direct_after is None else direct_after))
        self.direct_bytes = 0
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.direct = False
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self._direct_fd = os.open(self.path, os.O_WRONLY | os.O_DIRECT)
                self.direct = True
            except OSError:  # EINVAL: this file system has no O_DIRECT
                pass
        self.buffer_size = buffer_size
        self._buffer = mmap.mmap(-1, buffer_size)  # anonymous: page-aligned, and reused for every block
        self._view = memoryview(self._buffer)
        self._used = 0  # bytes gathered in the buffer
        self._written = 0  # bytes already in the file (O_DIRECT only from an aligned offset: _direct_now)
        self.closed = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._written + self._used

    def write(self, data) -> int:
        if self.closed:
            raise ValueError(f"write to closed file {self.path}")
        data = memoryview(data).cast("B")
        size, taken = len(data), 0
        if not self._used and not self._direct_now():
            # the page-cache part: straight from the caller's bytes, up to the first aligned offset past
            # direct_after (the rest is gathered for O_DIRECT)
            taken = size
            if self.direct:
                boundary = -(-max(self.direct_after, self._written) // BLOCK) * BLOCK
                taken = min(size, boundary - self._written)
            if taken:
                self._pwrite_all(self._fd, data[:taken], self._written)
                self._written += taken
        while taken < size:
            n = min(size - taken, len(self._buffer) - self._used)
            self._view[self._used : self._used + n] = data[taken : taken + n]
            self._used += n
            taken += n
            if self._used == len(self._buffer):
                self._write_out(self._used)
        return size

    def flush(self) -> None:
        """Nothing to do before ``close``: whole blocks are written as the buffer fills, the rest at close."""

    def close(self) -> None:
        if self.closed:
            return
        try:
            aligned = self._used - self._used % BLOCK if self._direct_now() else self._used
            if aligned:
                self._write_out(aligned)
            if self._used:  # the last partial block, through the page cache
                self._pwrite_all(self._fd, self._view[: self._used], self._written)
                self._written += self._used
                self._used = 0
        finally:
            self.closed = True
            if self.direct:
                os.close(self._direct_fd)
            os.close(self._fd)
            self._view.release()
            self._buffer.close()

    def __enter__(self) -> DirectFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write_out(self, length: int) -> None:
        """Write the buffer's first ``length`` bytes at the file's end and keep the rest at the buffer's start."""
        if self._direct_now():
            self._write_direct(self._view[:length])
        else:
            self._pwrite_all(self._fd, self._view[:length], self._written)
            self._written += length
        rest = self._used - length
        if rest:
            self._view[:rest] = self._view[length : self._used]
        self._used = rest

    def _write_direct(self, data: memoryview) -> None:
        try:
            self._pwrite_all(self._direct_fd, data, self._written)
        except OSError as exc:
            if exc.errno != 22:  # EINVAL: O_DIRECT refused at the first write after all
                raise
            self.direct = False
            os.close(self._direct_fd)
            self._pwrite_all(self._fd, data, self._written)
        else:
            self.direct_bytes += len(data)
        self._written += len(data)

    def _direct_now(self) -> bool:
        # past direct_after, and at an aligned offset (the buffered writes before were whole buffers)
        return self.direct and self._written >= self.direct_after and self._written % BLOCK == 0

    @staticmethod
    def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
        done = 0
        while done < len(data):
            n = os.pwrite(fd, data[done:], offset + done)
            if n <= 0:
                raise OSError(f"pwrite wrote {n} bytes")
            done += n
