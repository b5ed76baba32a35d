"""Stopping a child process by its PID: a signal first, SIGKILL if it does not exit in time."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_child(
    proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0, *, resume: bool = False
) -> int | None:
    """Send ``sig`` to the child ``proc`` while it runs (SIGCONT first with ``resume``, in case it is paused),
    SIGKILL after ``timeout`` seconds; returns its exit code."""
    if proc.poll() is None:
        try:
            if resume:
                os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:  # it exited between the poll and the signal
            pass
    return proc.returncode
