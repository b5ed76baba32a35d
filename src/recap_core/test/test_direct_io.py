"""The dataset writer's page-cache-free data files (recap_core.data.direct_io): the same bytes as a plain write,
with O_DIRECT where the file system has it and without where it has not."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recap_core.data.direct_io import BLOCK, DirectFile


def write_in_pieces(path: Path, data: bytes, sizes, **kwargs) -> DirectFile:
    f = DirectFile(path, **kwargs)
    offset = 0
    for size in sizes:
        assert f.write(data[offset : offset + size]) == len(data[offset : offset + size])
        offset += size
        assert f.tell() == min(offset, len(data))
    f.close()
    return f


@pytest.mark.parametrize("total", [0, 1, BLOCK - 1, BLOCK, 3 * BLOCK + 17, 16 * BLOCK, 16 * BLOCK + 1, 100_003])
def test_every_byte_lands_in_order_whatever_the_write_sizes(tmp_path, total):
    data = np.random.default_rng(total).integers(0, 256, total, dtype=np.uint8).tobytes()
    rng = np.random.default_rng(total + 1)
    sizes = list(rng.integers(1, 3 * BLOCK, 64)) + [total]  # pieces smaller and larger than a block, then the rest
    # a small buffer (many flushes), direct from the first block
    f = write_in_pieces(tmp_path / "out", data, sizes, buffer_size=4 * BLOCK, direct_after=0)
    assert (tmp_path / "out").read_bytes() == data
    assert f.closed
    if total:
        with pytest.raises(ValueError):
            f.write(b"x")


def test_o_direct_is_used_where_the_file_system_has_it(tmp_path):
    try:  # does this file system take O_DIRECT at all?
        os.close(os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
    except OSError:
        pytest.skip(f"{tmp_path} has no O_DIRECT")
    data = os.urandom(5 * BLOCK + 123)
    f = write_in_pieces(tmp_path / "out", data, [1000] * 30, buffer_size=2 * BLOCK, direct_after=0)
    assert f.direct and f.direct_bytes == 5 * BLOCK  # every whole block; the last 123 bytes through the cache
    assert (tmp_path / "out").read_bytes() == data


def test_a_files_first_bytes_go_through_the_page_cache(tmp_path):
    data = os.urandom(20 * BLOCK + 9)
    f = write_in_pieces(tmp_path / "out", data, [3 * BLOCK + 1] * 7, buffer_size=2 * BLOCK, direct_after=5 * BLOCK)
    if f.direct:  # every whole block past the first 5, never one of those
        assert f.direct_bytes == 15 * BLOCK, f.direct_bytes
    assert (tmp_path / "out").read_bytes() == data
    small = write_in_pieces(tmp_path / "small", data[: BLOCK * 3], [BLOCK * 3], direct_after=5 * BLOCK)
    assert small.direct_bytes == 0 and (tmp_path / "small").read_bytes() == data[: BLOCK * 3]


def test_a_file_system_that_refuses_o_direct_gets_plain_writes(tmp_path, monkeypatch):
    """Refused at open (EINVAL from os.open) or at the first write (EINVAL from pwrite): the same bytes, written
    through the page cache. (tmpfs takes O_DIRECT on this kernel, so the refusals are simulated.)"""
    import errno

    from recap_core.data import direct_io

    data = os.urandom(7 * BLOCK + 5)
    real_open, real_pwrite = os.open, os.pwrite

    def refusing_open(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct_io.os, "open", refusing_open)
    f = write_in_pieces(tmp_path / "a", data, [BLOCK + 1] * 8, buffer_size=2 * BLOCK, direct_after=0)
    assert not f.direct and (tmp_path / "a").read_bytes() == data
    monkeypatch.setattr(direct_io.os, "open", real_open)

    direct_fds = set()

    def tracking_open(path, flags, *args):
        fd = real_open(path, flags, *args)
        if flags & os.O_DIRECT:
            direct_fds.add(fd)
        return fd

    def refusing_pwrite(fd, data, offset):
        if fd in direct_fds:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(direct_io.os, "open", tracking_open)
    monkeypatch.setattr(direct_io.os, "pwrite", refusing_pwrite)
    f = write_in_pieces(tmp_path / "b", data, [BLOCK + 1] * 8, buffer_size=2 * BLOCK, direct_after=0)
    assert direct_fds and not f.direct and (tmp_path / "b").read_bytes() == data


def test_a_failing_disk_raises(tmp_path, monkeypatch):
    """Any other write error reaches the caller (the dataset writer then marks its session broken)."""
    import errno

    from recap_core.data import direct_io

    def full_disk(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    f = DirectFile(tmp_path / "out", buffer_size=BLOCK, direct_after=0)
    monkeypatch.setattr(direct_io.os, "pwrite", full_disk)
    with pytest.raises(OSError, match="No space"):
        f.write(os.urandom(2 * BLOCK))
    monkeypatch.undo()
    f.close()
