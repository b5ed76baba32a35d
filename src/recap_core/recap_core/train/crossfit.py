"""Cross-fitted values: every episode's value comes from a model that never trained on it.

A value model trained on a few dozen episodes learns each one's own return, and the advantages it gives them
shrink to fitting noise. Why, how episodes keep their folds, and the ``folds/`` directory of a value
checkpoint: docs/learning.md §5 ("Cross-fitted values") and §6. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from recap_core.outputs import write_json

FOLDS_DIR = "folds"
MANIFEST = "folds.json"
RULE = (
    "init's held-out folds kept; new episodes in sha256(key) order, each to the fold holding out the fewest "
    "(lowest index on ties); key = bag directory name, else 'episode-<index>@<start_time>'"
)
# manifests of earlier versions: they list the episodes each fold held out, which is all a reader needs
EARLIER_RULES = ("sha256(episode key) mod K; key = bag directory name, else 'episode-<index>@<start_time>'",)
MAX_FOLDS = 20


def check_folds(folds: int) -> int:
    """``folds`` as an int: 0 (no cross-fitting) or 2..MAX_FOLDS; a clear ValueError otherwise."""
    if isinstance(folds, bool) or int(folds) != folds or not (folds == 0 or 2 <= folds <= MAX_FOLDS):
        raise ValueError(f"--folds must be 0 (no cross-fitting) or an integer from 2 to {MAX_FOLDS}, got {folds!r}")
    return int(folds)


def episode_key(episode: Mapping) -> str:
    """A name for one episode that survives re-conversion and appending: its bag directory's name.

    Episodes without a bag (synthetic datasets) fall back to their index and start time.
    """
    bag = str(episode.get("bag_path") or "").rstrip("/\\")
    if bag:
        return pathlib.PurePath(bag.replace("\\", "/")).name
    return f"episode-{int(episode['episode_index'])}@{episode.get('start_time')}"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def assign_folds(keys: Iterable[str], folds: int, previous: Mapping[str, int] | None = None) -> dict[str, int]:
    """Fold (``0..folds-1``) of every episode key: ``previous`` ones keep theirs, new ones balance the folds.

    New keys are taken in sha256 order, each going to the fold that holds out the fewest of ``keys`` so far
    (the lowest index on ties), so the result depends on the set of keys and ``previous`` only.
    """
    folds = check_folds(folds)
    if folds == 0:
        raise ValueError("assign_folds needs folds >= 2")
    keys = set(keys)
    previous = dict(previous or {})
    bad = {k: f for k, f in previous.items() if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < folds}
    if bad:
        raise ValueError(f"previous fold assignment has folds outside 0..{folds - 1}: {dict(sorted(bad.items())[:5])}")
    assigned = {k: previous[k] for k in keys if k in previous}
    counts = np.bincount(np.fromiter(assigned.values(), dtype=np.int64, count=len(assigned)), minlength=folds)
    for key in sorted(keys - assigned.keys(), key=lambda k: (_digest(k), k)):
        fold = int(np.argmin(counts))
        assigned[key] = fold
        counts[fold] += 1
    return assigned


def episode_folds(episodes: Sequence[Mapping], assignment: Mapping[str, int]) -> np.ndarray:
    """Fold of each episode (``load_episodes`` rows) under ``assignment``, -1 where it has none: ``int64 [E]``."""
    return np.array([assignment.get(episode_key(e), -1) for e in episodes], dtype=np.int64)


def training_episodes(episodes: Sequence[Mapping], fold: int, assignment: Mapping[str, int]) -> list[int]:
    """``episode_index`` of every episode a fold's model trains on: those outside ``fold``."""
    assigned = episode_folds(episodes, assignment)
    return [int(e["episode_index"]) for e, f in zip(episodes, assigned) if f != fold]


def fold_dir(checkpoint: str | pathlib.Path, fold: int) -> pathlib.Path:
    return pathlib.Path(checkpoint) / FOLDS_DIR / f"fold_{fold}"


def write_manifest(checkpoint: str | pathlib.Path, folds: int, assignment: Mapping[str, int]) -> None:
    """Record the fold count and which episode keys each fold held out (written last: marks completion)."""
    path = pathlib.Path(checkpoint) / FOLDS_DIR / MANIFEST
    folds = check_folds(folds)
    held_out: dict[int, list[str]] = {i: [] for i in range(folds)}
    for key, fold in assignment.items():
        held_out[fold].append(key)
    record = {"folds": folds, "rule": RULE, "held_out": {str(i): sorted(held_out[i]) for i in range(folds)}}
    write_json(path, record)


def read_folds(checkpoint: str | pathlib.Path) -> int:
    """The fold count of a cross-fitted value checkpoint, 0 when it has none (see :func:`read_assignment`)."""
    return read_assignment(checkpoint)[0]


def read_assignment(checkpoint: str | pathlib.Path) -> tuple[int, dict[str, int]]:
    """``(folds, {episode key: fold that held it out})`` of a cross-fitted value checkpoint; ``(0, {})`` without.

    Raises ValueError when the folds are incomplete or the manifest is not one this version can read.
    """
    root = pathlib.Path(checkpoint) / FOLDS_DIR
    path = root / MANIFEST
    if not path.is_file():
        if root.is_dir() and any(root.iterdir()):
            raise ValueError(
                f"{root} has fold models but no {MANIFEST}: the cross-fitting run did not finish; "
                f"train the value again (or delete {root} to use the model on all episodes alone)"
            )
        return 0, {}
    try:
        record = json.loads(path.read_text())
        folds = check_folds(record["folds"])
        rule = record.get("rule")
        held_out = record["held_out"]
        assignment: dict[str, int] = {}
        for fold in range(folds):
            for key in held_out.get(str(fold), []):
                if not isinstance(key, str) or key in assignment:
                    raise ValueError(f"episode key {key!r} is not a string or is held out by two folds")
                assignment[key] = fold
        beyond = set(held_out) - {str(i) for i in range(folds)}
        if beyond:
            raise ValueError(f"held_out names folds {sorted(beyond)} beyond its {folds}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a valid folds manifest: {exc}") from None
    if folds == 0 or (rule != RULE and rule not in EARLIER_RULES):
        raise ValueError(
            f"{path} records {record.get('folds')!r} folds by rule {rule!r}; "
            f"this version assigns folds by {RULE!r}: train the value again"
        )
    missing = [i for i in range(folds) if not (fold_dir(checkpoint, i) / "provenance.json").is_file()]
    if missing:
        raise ValueError(f"{root}: fold model(s) {missing} of {folds} are missing; train the value again")
    return folds, assignment
