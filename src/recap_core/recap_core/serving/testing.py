"""``recap serve`` as a child process for tests and benchmarks (:class:`ServeProcess`), stopped by PID."""

from __future__ import annotations

import os
import signal

from recap_core.serving.local import LocalPolicyServer


class ServeProcess(LocalPolicyServer):
    """A :class:`LocalPolicyServer` whose log is kept, and which a test can pause like a stalled GPU box."""

    def pause(self) -> None:
        """SIGSTOP: the server stops answering (its socket still accepts), as a stalled GPU box would."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def __enter__(self) -> "ServeProcess":
        return self
