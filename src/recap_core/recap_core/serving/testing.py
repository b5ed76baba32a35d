"""``recap serve`` as a child process for tests and benchmarks (:class:`ServeProcess`), stopped by PID."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Mapping, Sequence

_SERVING = re.compile(r"serving policy (\S+) .* \(ws://([^:]+):(\d+)\)")


class ServeProcess:
    """``recap serve CHECKPOINT --host 127.0.0.1 --port PORT ...``; ``url`` once it listens (port 0: any)."""

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        port: int = 0,
        args: Sequence[str] = ("--threads", "1"),
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        log_dir: str | os.PathLike | None = None,
    ):
        if log_dir is not None:
            pathlib.Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.log = tempfile.NamedTemporaryFile("w+", prefix="recap_serve_", suffix=".log", dir=log_dir, delete=False)
        cmd = [sys.executable, "-m", "recap_core.cli", "serve", str(checkpoint), "--host", "127.0.0.1"]
        cmd += ["--port", str(port), *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=dict(env or os.environ))
        self.checkpoint_id = ""
        self.port = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _SERVING.search(self.output())
            if match:
                self.checkpoint_id, self.port = match.group(1), int(match.group(3))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"recap serve did not start listening:\n{self.output()}")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return pathlib.Path(self.log.name).read_text(encoding="utf-8", errors="replace")

    def pause(self) -> None:
        """SIGSTOP: the server stops answering (its socket still accepts), as a stalled GPU box would."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """``sig`` (SIGCONT first, in case it is paused), SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.log.close()
        return self.proc.returncode

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
