"""What commands write: strict JSON files, and the directories and files named with ``--out``.

Every JSON file the project writes goes through :func:`dumps` / :func:`write_json` (no NaN or infinity); a
command refuses an ``--out`` that already holds something unless asked (:func:`refuse_non_empty`,
:func:`clear_directory`). Imports neither torch nor numpy.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from recap_core.errors import UserError

# ---------------------------------------------------------------------------- strict JSON


def jsonable(value: Any) -> Any:
    """``value`` with NaN and infinities as None, numpy scalars and arrays as Python values, tuples as lists."""
    if isinstance(value, float):  # numpy's float64 too
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return value


def dumps(value: Any, *, indent: int | None = 2, sort_keys: bool = False, ensure_ascii: bool = True) -> str:
    """Strict JSON text of ``value`` (see :func:`jsonable`); ValueError if a non-finite number remains.

    JSON has no NaN or infinity (Python's ``json`` writes them as bare ``NaN`` / ``Infinity``, which other
    parsers reject): a missing or undefined number becomes ``null``, and ``allow_nan=False`` makes any value
    that slips past the conversion fail loudly instead of writing invalid JSON.
    """
    return json.dumps(jsonable(value), indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=False)


def write_json(
    path: str | os.PathLike, value: Any, *, indent: int | None = 2, sort_keys: bool = False, ensure_ascii: bool = True
) -> pathlib.Path:
    """Write ``value`` as strict JSON (and a final newline) to ``path``, atomically: readers never see half."""
    path = pathlib.Path(path)
    text = dumps(value, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
    os.replace(handle.name, path)
    return path


# ---------------------------------------------------------------------------- output directories


def entries(directory: str | os.PathLike) -> list[str]:
    """Names in ``directory`` (sorted; empty when it does not exist); UserError when it is not a directory."""
    directory = pathlib.Path(directory)
    if not directory.exists() and not directory.is_symlink():
        return []
    if not directory.is_dir():
        raise UserError(f"{directory} exists and is not a directory; give a directory path")
    return sorted(path.name for path in directory.iterdir())


def describe(directory: str | os.PathLike) -> str:
    """What a non-empty directory holds, in words: a checkpoint (its kind and step), a dataset, a run, or files."""
    directory = pathlib.Path(directory)
    names = entries(directory)
    config = directory / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text())
            kind = data["kind"]
            step = (data.get("training") or {}).get("steps_done")
            return f"a {kind} checkpoint" + (f" (step {step})" if step is not None else "")
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if (directory / "meta" / "info.json").is_file():
        return "a RECAP dataset"
    if (directory / "profile.json").is_file() or (directory / "logs").is_dir():
        return "a recap experiment run"
    if (directory / "iteration.json").is_file() or {"value", "policy"} <= set(names):
        return "the output of a recap iterate run"
    if "metrics.jsonl" in names:
        return "an unfinished training run (metrics.jsonl, no complete checkpoint)"
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"{len(names)} other entr{'y' if len(names) == 1 else 'ies'} ({shown})"


def refuse_non_empty(directory: str | os.PathLike, *, option: str = "--out", hint: str = "") -> None:
    """UserError naming what ``directory`` holds, unless it is missing or empty.

    ``hint`` is what to do instead (default: choose another directory or give ``--overwrite``, with which
    the command empties it first: :func:`clear_directory`).
    """
    if not entries(directory):
        return
    what = describe(directory)
    raise UserError(
        f"{option} {directory} already holds {what}; "
        + (hint or f"choose another {option}, or give --overwrite to delete what is there")
    )


def clear_directory(directory: str | os.PathLike) -> None:
    """Delete everything in ``directory`` (kept itself); refuses the root, the home directory and any
    directory holding the current working directory, which no ``--out`` should name."""
    directory = pathlib.Path(directory)
    if not entries(directory):
        return
    resolved = directory.resolve()
    guarded = {pathlib.Path(resolved.anchor), pathlib.Path.home().resolve()}
    cwd = pathlib.Path.cwd().resolve()
    if resolved in guarded or resolved == cwd or resolved in cwd.parents:
        raise UserError(
            f"--overwrite would delete everything in {resolved}, which holds the current directory "
            f"or is the home or root directory; give a dedicated --out directory"
        )
    for path in directory.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def refuse_clearing_inputs(directory: str | os.PathLike, inputs: dict[str, Any]) -> None:
    """UserError when ``--overwrite`` would empty a ``directory`` that is or holds one of the run's ``inputs``
    (option -> path or paths): the run would delete what it is about to read."""
    target = pathlib.Path(directory).resolve()
    for option, paths in inputs.items():
        for path in paths if isinstance(paths, (list, tuple)) else [paths]:
            if path is None:
                continue
            resolved = pathlib.Path(path).resolve()
            if resolved == target or target in resolved.parents:
                raise UserError(
                    f"--overwrite would delete {path} ({option}), which this run reads: it is in "
                    f"--out {directory}; give another --out"
                )


# ---------------------------------------------------------------------------- output files


def check_output_file(
    path: str | os.PathLike, *, overwrite: bool, what: str, accepts: Callable[[Any], bool], option: str = "--out"
) -> None:
    """Refuse to write a ``what`` file over a directory, or over a file that is not an earlier ``what``
    (``accepts`` tells from its parsed JSON), unless ``overwrite``."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory; give a file name, e.g. {path / 'report.json'}")
    if not path.exists() or overwrite:
        return
    try:
        ours = accepts(json.loads(path.read_text()))
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise UserError(
            f"{option} {path} exists and is not {what}; choose another file, or give --overwrite to replace it"
        )
