"""The experiment's protocol: which seeds decide, which seeds test, and what makes a run's profile the same.

Every decision the pipeline takes (SFT's step count, AWR's temperature and weight cap) is taken on the
*validation* seeds; the *test* seeds come from a range no earlier evaluation used and are evaluated once per
pipeline run, after the profile is frozen. docs/experiment.md (Protocol) lists every range used so far.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

#: scene seeds of the training episodes move by this much per pipeline seed (demos from ``p * STRIDE``,
#: iteration k's rollouts from ``p * STRIDE + 1000 * k``), so pipeline seed 0 keeps the layout of runs r2-r5
TRAINING_SEED_STRIDE = 10_000
ROLLOUT_SEED_STRIDE = 1_000

#: seed ranges (first, last, where) evaluated or trained on before this protocol; a test range must avoid them.
#: The audit (issue 31) found about 20 profile decisions taken on 100000-100799; the training scenes of
#: pipeline seeds 0-9 are checked separately (:func:`training_seed_ranges`).
USED_SEED_RANGES: tuple[tuple[int, int, str], ...] = (
    (0, 49, "scripted operator's table (recap operator-eval --seeds 50, docs/operator.md)"),
    (0, 35, "demonstrations of runs r2-r5 (pipeline seed 0)"),
    (1000, 1039, "iteration 1 rollouts of runs r2-r5"),
    (2000, 2039, "iteration 2 rollouts of runs r2-r5"),
    (
        100000,
        100799,
        "held-out evaluations and probes before issue 31: 100000-100199 (full profile), 100050-100249, "
        "100200-100499, 100200-100799, 100250-100799, 100400-100799, 100000-100049 (bench/rtc_delay.py), "
        "100000-100002 (--quick until issue 31)",
    ),
)
#: kept for the quick profile's test seeds (CI's tiny, untrained policies; never used for a decision): every
#: other profile's test range must avoid it
QUICK_TEST_RANGE = (300000, 300999, "the quick profile's test seeds (CI)")


class ProtocolError(ValueError):
    """Seed ranges that break the protocol (overlap between what trains, decides and tests)."""


def seed_range(first_count: tuple[int, int]) -> tuple[int, int]:
    """``(first, count)`` -> ``(first, last)``, both inclusive."""
    first, count = first_count
    return int(first), int(first) + int(count) - 1


def training_seed_ranges(profile, pipeline_seed: int) -> list[tuple[int, int, str]]:
    """The scene seeds of the training episodes of one pipeline run: demonstrations, then each iteration's
    rollouts; ``(first, last, what)``, inclusive."""
    base = TRAINING_SEED_STRIDE * int(pipeline_seed)
    demos = sum(n for _, n in profile.demos)
    ranges = [(base, base + demos - 1, "demonstrations")]
    for k in range(1, profile.iterations + 1):
        first = base + ROLLOUT_SEED_STRIDE * k
        ranges.append((first, first + profile.rollouts_per_iteration - 1, f"iteration {k} rollouts"))
    return ranges


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _text(r) -> str:
    return f"{r[0]}-{r[1]}"


def check_seed_ranges(
    validation: tuple[int, int],
    test: tuple[int, int],
    training: list[tuple[int, int, str]],
    used: tuple[tuple[int, int, str], ...] = USED_SEED_RANGES,
    test_may_reuse: bool = False,
) -> None:
    """ProtocolError unless the ranges (inclusive ``(first, last)``) keep training, validation and test apart:
    no two training ranges overlap (a scene trained twice), validation and test overlap neither each other nor
    a training range, and the test range overlaps none of ``used`` (ranges evaluated before: decisions were
    taken on them), unless ``test_may_reuse``."""
    negative = [r for r in (validation, test, *training) if r[0] < 0 or r[1] < r[0]]
    if negative:
        raise ProtocolError(f"seed ranges must be non-empty and >= 0, got {_text(negative[0])}")
    for i, a in enumerate(training):
        for b in training[i + 1 :]:
            if _overlap(a, b):
                raise ProtocolError(f"training seeds overlap: {a[2]} {_text(a)} and {b[2]} {_text(b)}")
    if _overlap(validation, test):
        raise ProtocolError(
            f"validation seeds {_text(validation)} overlap the test seeds {_text(test)}: a decision taken on "
            f"the validation seeds would be tested on the same scenes"
        )
    for name, r in (("validation", validation), ("test", test)):
        for t in training:
            if _overlap(r, t):
                raise ProtocolError(f"{name} seeds {_text(r)} overlap the {t[2]}' seeds {_text(t)}")
    if not test_may_reuse:
        for u in used:
            if _overlap(test, u):
                raise ProtocolError(
                    f"test seeds {_text(test)} overlap seeds used before, {_text(u)} ({u[2]}); take the test "
                    f"seeds from a range never evaluated (docs/experiment.md, Protocol)"
                )


def profile_sha256(profile) -> str:
    """SHA-256 of the resolved profile as canonical JSON (sorted keys, no spaces): two runs with the same
    hash ran the same recipe; the pipeline seed is not part of it."""
    text = json.dumps(dataclasses.asdict(profile), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def protocol_block(profile, pipeline_seed: int) -> dict:
    """``summary.json``'s ``protocol``: both seed ranges, the pipeline seed and the profile's hash."""
    return {
        "validation_seeds": list(seed_range(profile.validation_seeds)),
        "test_seeds": list(seed_range(profile.test_seeds)),
        "pipeline_seed": int(pipeline_seed),
        "profile_sha256": profile_sha256(profile),
        "training_seeds": [list(r) for r in training_seed_ranges(profile, pipeline_seed)],
    }
