"""Fast DDS shared-memory segments left in /dev/shm by processes that did not shut down (tests kill some on
purpose: a recorder SIGKILLed mid-episode, a node stopped with SIGKILL after SIGINT and SIGTERM went unheard).

Fast DDS gives each participant a segment ``fastdds_<id>`` (32 MB with the localhost profile) and each port
one, ``fastdds_port<N>`` (``fastrtps_`` in Fast DDS 2, ROS 2 jazzy), each with a lock file ``<name>_el`` that
its users hold (``flock``) while they live.
A segment whose lock nobody holds belongs to no live process, and stays in memory until someone removes it:
this is what ``fastdds shm clean`` does, and what :func:`remove_stale_segments` does at the end of a test
session.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

PREFIXES = ("fastdds_", "fastrtps_")  # Fast DDS 3 (kilted), Fast DDS 2 (jazzy)
LOCK_SUFFIX = "_el"


def remove_stale_segments(root: str | Path = "/dev/shm") -> list[str]:
    """Remove every Fast DDS segment under ``root`` whose lock file no live process holds; the names removed.

    The lock is taken before anything is removed, so a segment whose owner is alive (or comes alive meanwhile)
    is never touched."""
    root = Path(root)
    removed = []
    try:
        locks = sorted(p for p in root.iterdir() if p.name.startswith(PREFIXES) and p.name.endswith(LOCK_SUFFIX))
    except OSError:  # no /dev/shm here
        return removed
    for lock in locks:
        segment = lock.with_name(lock.name[: -len(LOCK_SUFFIX)])
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:  # removed meanwhile, or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: in use
            os.close(fd)
            continue
        try:
            names = [segment, lock]
            if segment.name.startswith(tuple(prefix + "port" for prefix in PREFIXES)):  # and a semaphore
                names.append(root / f"sem.{segment.name}_mutex")
            for path in names:
                try:
                    path.unlink()
                    removed.append(path.name)
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)  # releases the lock
    return removed
