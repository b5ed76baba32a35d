"""Data-mixture sampling by kind of frame (``recap train-policy --mix``); numpy only, no torch.

A frame is a ``demo`` (a demonstration episode), a ``correction`` (a rollout
frame the human drove) or ``autonomous`` (a rollout frame the policy drove);
:func:`recap_core.train.data.frame_kinds` types the frames of a training set.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: what a training frame is, for data-mixture sampling
FRAME_KINDS = ("demo", "correction", "autonomous")


def parse_mix(items: Sequence[str]) -> dict[str, float]:
    """``["demo=0.5", "autonomous=0.2"]`` (or comma-separated) -> ``{kind: share}``; ValueError if malformed."""
    shares: dict[str, float] = {}
    for item in (part for text in items for part in str(text).split(",") if part.strip()):
        kind, separator, value = item.partition("=")
        kind = kind.strip()
        if not separator or kind not in FRAME_KINDS:
            raise ValueError(f"--mix takes KIND=SHARE with KIND one of {list(FRAME_KINDS)}, got {item!r}")
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"--mix {item!r}: the share must be a number in [0, 1]") from None
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"--mix {item!r}: the share must be in [0, 1]")
        if kind in shares:
            raise ValueError(f"--mix names {kind!r} twice")
        shares[kind] = share
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ValueError(f"--mix shares add up to {sum(shares.values()):.3g} > 1: {shares}")
    return shares


def mixture_weights(kinds: np.ndarray, shares: dict[str, float]) -> tuple[np.ndarray, dict[str, float]]:
    """Per-frame sampling weights giving each named kind its share of the samples.

    Kinds not named share what is left in proportion to their frame counts (so
    ``{}`` is uniform over frames). Kinds with no frames in the data drop out
    and the shares of the rest are scaled to add up to 1. Returns the weights
    (summing to 1) and the share of samples each present kind gets.
    """
    counts = {kind: int(np.sum(kinds == kind)) for kind in FRAME_KINDS}
    present = [kind for kind in FRAME_KINDS if counts[kind]]
    named = [kind for kind in present if kind in shares]
    unnamed = [kind for kind in present if kind not in shares]
    rest = max(0.0, 1.0 - sum(shares[kind] for kind in named))
    unnamed_frames = sum(counts[kind] for kind in unnamed)
    raw = {kind: shares[kind] for kind in named}
    raw.update({kind: rest * counts[kind] / unnamed_frames for kind in unnamed})
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"--mix {shares} leaves nothing to sample: the data has {counts} frames by kind")
    effective = {kind: raw[kind] / total for kind in present}
    weights = np.zeros(len(kinds), dtype=np.float64)
    for kind in present:
        weights[kinds == kind] = effective[kind] / counts[kind]
    return weights, effective
