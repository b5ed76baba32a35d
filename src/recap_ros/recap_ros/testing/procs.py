"""Start ROS 2 nodes as processes (launch_testing is not installable here).

Every process gets the project's DDS environment (localhost discovery, the Fast
DDS profile) and a private ``ROS_DOMAIN_ID``, writes its output to a log file,
and is stopped by PID: SIGINT first (a clean rclpy shutdown), SIGKILL if it
does not exit in time.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

import yaml

from recap_core.processes import stop_child
from recap_ros.localhost import ros_environment


def session_domain_id() -> int:
    """A DDS domain per test session so concurrent sessions on one machine never meet."""
    if "RECAP_TEST_DOMAIN_ID" in os.environ:
        return int(os.environ["RECAP_TEST_DOMAIN_ID"])
    return 1 + os.getpid() % 100


def test_environment(domain_id: int | None = None) -> dict:
    env = ros_environment()
    env["ROS_DOMAIN_ID"] = str(session_domain_id() if domain_id is None else domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


test_environment.__test__ = False  # a helper, not a test, when a test module imports it


def run_recap(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """``recap ARGS...`` as a child process in the test environment (for commands that start ROS nodes, or
    run beside them); its output is captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "recap_core.cli", *map(str, args)],
        env=test_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class NodeProcess:
    """One node running as a child process; use as a context manager."""

    def __init__(
        self,
        module: str,
        *,
        node_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        params_files: Sequence[str] = (),
        namespace: str | None = None,
        remaps: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        log_dir: str | os.PathLike = ".",
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ):
        self.module = module
        self.name = node_name or module.rsplit(".", 1)[-1]
        log_dir = pathlib.Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.{os.getpid()}.{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", module, *args, "--ros-args"]
        for f in params_files:
            cmd += ["--params-file", str(f)]
        if params:
            pfile = self.log_path.with_suffix(".params.yaml")
            with open(pfile, "w", encoding="utf-8") as f:
                yaml.safe_dump({"/**": {"ros__parameters": dict(params)}}, f)
            cmd += ["--params-file", str(pfile)]
        if namespace:
            cmd += ["-r", f"__ns:={namespace}"]
        for src, dst in (remaps or {}).items():
            cmd += ["-r", f"{src}:={dst}"]
        cmd += list(extra_args)
        self.cmd = cmd
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env or test_environment()),
            start_new_session=False,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_output(self, text: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if not self.alive():
                return text in self.output()
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 8.0) -> int:
        """SIGINT, then SIGKILL after ``timeout``; returns the exit code."""
        stop_child(self.proc, signal.SIGINT, timeout)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NodeProcess({self.module}, pid={self.proc.pid}, log={self.log_path})"
