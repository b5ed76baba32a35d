"""Shared by the benchmarks (not one itself): a training job on both cores, as a station runs one between episodes.

:func:`background_training` starts ``recap train-policy`` (the tiny config, 2 torch threads, a synthetic
dataset) in a child process, waits until it trains, and stops it by its PID when the block ends, whatever ends it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recap_core.processes import stop_child


@contextlib.contextmanager
def background_training(threads: int = 2):
    """Yield the PID of a policy training on ``threads`` torch threads, busy for as long as the block runs."""
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        recap = [sys.executable, "-m", "recap_core.cli"]
        subprocess.run(
            [*recap, "dataset", "synth", f"{tmp}/data", "--kind", "reach", "--episodes", "8"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        log = open(Path(tmp) / "train.log", "w")
        cmd = [*recap, "train-policy", f"{tmp}/data", "--mode", "sft", "--config", "tiny", "--steps", "1000000"]
        cmd += ["--batch-size", "32"]
        cmd += ["--threads", str(threads), "--out", f"{tmp}/policy", "--no-progress"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            time.sleep(8.0)  # past its imports and dataset load: training from here on
            if proc.poll() is not None:
                log.flush()
                raise RuntimeError(f"the background training exited:\n{(Path(tmp) / 'train.log').read_text()[-2000:]}")
            yield proc.pid
        finally:
            stop_child(proc)
            log.close()
