"""openpi's own ``WebsocketClientPolicy`` (openpi-client from PyPI, in its own venv: it pins numpy < 2) against
``recap serve`` with a tiny checkpoint, and openpi's ``msgpack_numpy`` against the project's, both ways.

The venv is ``$OPENPI_CLIENT_VENV`` (default ``.venv-openpi-client``, which scripts/setup.sh makes); without it the
test skips, saying how to make it (docs/nodes.md, "Remote inference").
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess

import pytest

from recap_core.serving import msgpack_numpy
from recap_core.serving.testing import ServeProcess

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "test" / "interop" / "openpi_client_check.py"
VENV = pathlib.Path(os.environ.get("OPENPI_CLIENT_VENV", ROOT / ".venv-openpi-client"))
PYTHON = VENV / "bin" / "python"


def _check_module():
    spec = importlib.util.spec_from_file_location("openpi_client_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not PYTHON.exists(),
    reason=f"no openpi-client venv at {VENV}: python3 -m venv {VENV} && "
    f"{VENV}/bin/pip install openpi-client typing-extensions (or set OPENPI_CLIENT_VENV)",
)
def test_openpi_client_against_recap_serve(tiny_checkpoints, tmp_path):
    check = _check_module()
    cross = tmp_path / "cross"
    cross.mkdir()
    (cross / "recap.msgpack").write_bytes(msgpack_numpy.packb(check.samples()))
    with ServeProcess(tiny_checkpoints["policy_a"], log_dir=tmp_path / "serve") as server:
        out = subprocess.run(
            [str(PYTHON), str(SCRIPT), server.url, "--cross", str(cross)],
            capture_output=True,
            text=True,
            timeout=300,
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        )
        log = server.output()
    assert out.stdout.strip(), f"{out.stderr}\n{log}"
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["numpy"].startswith("1."), report  # really openpi's numpy-1 world
    assert report["ok"] and out.returncode == 0, f"{report}\n{out.stderr}\n{log}"
    assert report["metadata"]["checkpoint_id"] == server.checkpoint_id
    assert check.same(check.samples(), msgpack_numpy.unpackb((cross / "openpi.msgpack").read_bytes()))
