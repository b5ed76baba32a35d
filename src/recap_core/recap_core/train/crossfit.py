"""Cross-fitted values: every episode's value comes from a model that never trained on it.

Why. A value function trained on a few dozen episodes recognises each of them
(in sim every episode has its own cube pose; on a station its own scene) and
learns that episode's own return. Labelled with such a model, ``V(o_t)`` is
close to the episode's realised return-to-go, so the N-step advantage
``sum r + V(o_{t+N}) - V(o_t)`` collapses to fitting noise: a slow, fumbling
demonstration and a clean one both come out at ~0, and the improvement
indicator no longer says which actions were better. The paper's value model
sees far more data than it can memorise; on a lab's few episodes it does not.

How. Episodes are split into ``K`` folds by a hash of a stable episode key
(:func:`episode_key`), so the same episode lands in the same fold in every
dataset, iteration and process, new episodes included. ``recap train-value
--folds K`` trains, besides the model on all episodes, one model per fold on
the episodes *outside* it (``DIR/folds/fold_<i>``); ``recap label`` then
predicts each episode with the model of its own fold. A fold model fine-tuned
``--init`` from a cross-fitted checkpoint starts from that checkpoint's model
of the same fold, so pretraining does not leak the held-out episodes either.

Layout inside a value checkpoint directory::

    folds/folds.json        {"folds": K, "rule": ..., "held_out": {"<i>": [episode keys]}}
    folds/fold_<i>/         a complete value checkpoint (trained without fold i)

Nothing here imports torch.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

FOLDS_DIR = "folds"
MANIFEST = "folds.json"
RULE = "sha256(episode key) mod K; key = bag directory name, else 'episode-<index>@<start_time>'"
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


def episode_fold(key: str, folds: int) -> int:
    """The fold (``0..folds-1``) an episode key belongs to."""
    folds = check_folds(folds)
    if folds == 0:
        raise ValueError("episode_fold needs folds >= 2")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % folds


def episode_folds(episodes: Sequence[Mapping], folds: int) -> np.ndarray:
    """Fold of each episode (``load_episodes`` rows): ``int64 [E]``."""
    return np.array([episode_fold(episode_key(e), folds) for e in episodes], dtype=np.int64)


def training_episodes(episodes: Sequence[Mapping], fold: int, folds: int) -> list[int]:
    """``episode_index`` of every episode a fold's model trains on: those outside ``fold``."""
    assigned = episode_folds(episodes, folds)
    return [int(e["episode_index"]) for e, f in zip(episodes, assigned) if f != fold]


def fold_dir(checkpoint: str | pathlib.Path, fold: int) -> pathlib.Path:
    return pathlib.Path(checkpoint) / FOLDS_DIR / f"fold_{fold}"


def write_manifest(checkpoint: str | pathlib.Path, folds: int, held_out: Mapping[int, Sequence[str]]) -> None:
    """Record the fold count and which episode keys each fold held out (written last: marks completion)."""
    path = pathlib.Path(checkpoint) / FOLDS_DIR / MANIFEST
    record = {"folds": check_folds(folds), "rule": RULE,
              "held_out": {str(i): sorted(held_out.get(i, ())) for i in range(folds)}}
    temporary = path.with_name(f".{MANIFEST}.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(path)


def read_folds(checkpoint: str | pathlib.Path) -> int:
    """The fold count of a cross-fitted value checkpoint, 0 when it has none.

    Raises ValueError when the folds are incomplete or the manifest disagrees with this rule.
    """
    root = pathlib.Path(checkpoint) / FOLDS_DIR
    path = root / MANIFEST
    if not path.is_file():
        if root.is_dir() and any(root.iterdir()):
            raise ValueError(f"{root} has fold models but no {MANIFEST}: the cross-fitting run did not finish; "
                             f"train the value again (or delete {root} to use the model on all episodes alone)")
        return 0
    try:
        record = json.loads(path.read_text())
        folds = check_folds(record["folds"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a valid folds manifest: {exc}") from None
    if folds == 0 or record.get("rule") != RULE:
        raise ValueError(f"{path} records {record.get('folds')!r} folds by rule {record.get('rule')!r}; "
                         f"this version assigns folds by {RULE!r}: train the value again")
    missing = [i for i in range(folds) if not (fold_dir(checkpoint, i) / "provenance.json").is_file()]
    if missing:
        raise ValueError(f"{root}: fold model(s) {missing} of {folds} are missing; train the value again")
    return folds
