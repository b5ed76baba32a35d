"""``recap serve`` as a child process on this machine: the policy node's inference process, tests, benchmarks.

:class:`LocalPolicyServer` starts ``recap serve CHECKPOINT --host 127.0.0.1 --port 0`` and waits until it listens;
:class:`ProcessPolicyRunner` is a :class:`~recap_core.serving.client.RemotePolicyRunner` that owns such a child and
stops it when closed. The child reads its standard input and exits when it ends, so it never outlives the
process that started it, even one killed with SIGKILL. It is stopped by its PID, SIGTERM first.
"""

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

from recap_core.processes import stop_child
from recap_core.serving.client import RemotePolicyRunner

_SERVING = re.compile(r"serving policy (\S+) .* \(ws://([^:]+):(\d+)\)")


class LocalPolicyServer:
    """``recap serve CHECKPOINT --host 127.0.0.1 --port PORT ARGS``; ``url`` once it listens (port 0: any).

    Raises RuntimeError naming the child's last output line when it exits, or does not listen within
    ``timeout`` seconds. ``keep_log``: leave its log file (in ``log_dir``, or the temp directory) after
    :meth:`stop`.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        port: int = 0,
        args: Sequence[str] = ("--threads", "1"),
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        log_dir: str | os.PathLike | None = None,
        keep_log: bool = True,
    ):
        if log_dir is not None:
            pathlib.Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.keep_log = keep_log
        self.log = tempfile.NamedTemporaryFile("w+", prefix="recap_serve_", suffix=".log", dir=log_dir, delete=False)
        cmd = [sys.executable, "-m", "recap_core.cli", "serve", str(checkpoint), "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--exit-on-stdin-eof", *args]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, env=dict(env or os.environ)
        )
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
        running = self.proc.poll() is None
        last = self.last_line()
        self.stop()
        why = f"did not listen within {timeout:.0f} s" if running else f"exited with status {self.proc.returncode}"
        raise RuntimeError(f"recap serve {why}" + (f": {last}" if last else ""))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def exit_status(self) -> int | None:
        """None while the child runs, else its exit status (negative: the signal that ended it)."""
        return self.proc.poll()

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        try:
            return pathlib.Path(self.log.name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def last_line(self) -> str:
        """The child's last non-empty output line ('' if none): its error, when it failed."""
        lines = [line.strip() for line in self.output().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """``sig`` (SIGCONT first, in case it is paused), SIGKILL after ``timeout``; returns the exit code."""
        stop_child(self.proc, sig, timeout, resume=True)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:  # the child is gone: its end of the pipe is closed
                pass
        if not self.log.closed:
            self.log.close()
            if not self.keep_log:
                pathlib.Path(self.log.name).unlink(missing_ok=True)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class ProcessPolicyRunner(RemotePolicyRunner):
    """A runner whose model runs in a child ``recap serve`` on this machine, reached over loopback.

    The caller's threads never share an interpreter lock with the model: what a control loop needs for
    its timing (docs/nodes.md, "Inference process"). ``close()`` stops the child.
    """

    process = True  # what a node asks to tell it from a runner behind a policy server it does not own

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        threads: int = 1,
        seed: int = 0,
        device: str = "cpu",
        nice: int = 0,
        timeout_s: float = 1.0,
        start_timeout_s: float = 120.0,
        env: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike | None = None,
    ):
        args = ("--threads", str(int(threads)), "--seed", str(int(seed)), "--device", device, "--nice", str(int(nice)))
        self.server = LocalPolicyServer(
            checkpoint, args=args, env=env, timeout=start_timeout_s, log_dir=log_dir, keep_log=False
        )
        try:
            super().__init__(self.server.url, timeout_s=timeout_s, connect_timeout_s=max(timeout_s, 5.0))
        except BaseException:
            self.server.stop()
            raise

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def exit_status(self) -> int | None:
        return self.server.exit_status

    def exit_reason(self) -> str:
        """'' while the child runs, else how it ended, with its last output line."""
        status = self.server.exit_status
        if status is None:
            return ""
        how = f"signal {-status}" if status < 0 else f"status {status}"
        last = self.server.last_line()
        return f"the inference process (pid {self.pid}) exited with {how}" + (f": {last}" if last else "")

    def close(self) -> None:
        super().close()
        self.server.stop()
