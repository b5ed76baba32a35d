"""RECAP math as pure numpy functions (paper Sec. IV-V, Appendix F): rewards, returns, value bins, advantages.

Nothing here holds state or imports torch: trainers convert tensors at their boundary. Shapes: ``[T]`` is one
episode's frames, ``[N]`` the frames of many episodes one after another, ``[B]`` value bins. The reward and
normalisation conventions (paper Sec. V-C) are in docs/dataset.md, "Rewards and normalisation".
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

NUM_BINS = 201
VALUE_MIN = -1.0
VALUE_MAX = 0.0
DEFAULT_LOOKAHEAD = 50  # N of the N-step advantage, paper Appendix F
DEFAULT_INDICATOR_DROPOUT = 0.3  # Appendix F: drop the advantage text 30 % of the time


def _as_1d(name: str, values, dtype=np.float64) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional [T], got shape {array.shape}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{name} must be finite; element {bad} is {array[bad]}")
    return array


# --------------------------------------------------------------------------- rewards and returns


def episode_rewards(length: int, success: bool, c_fail: float) -> np.ndarray:
    """Sparse RECAP rewards of one episode: ``[T]`` float64.

    ``-1`` per step, the last step ``0`` if ``success`` else ``-c_fail``.
    """
    if int(length) != length or length < 1:
        raise ValueError(f"episode length must be a positive integer, got {length!r}")
    if not np.isfinite(c_fail) or c_fail < 0:
        raise ValueError(f"c_fail must be a finite number >= 0, got {c_fail!r}")
    rewards = np.full(int(length), -1.0)
    rewards[-1] = 0.0 if success else -float(c_fail)
    return rewards


def returns_to_go(rewards) -> np.ndarray:
    """Undiscounted return from each step to the end: ``R_t = sum_{t'>=t} r_t'``. ``[T] -> [T]``."""
    rewards = _as_1d("rewards", rewards)
    return np.cumsum(rewards[::-1])[::-1].copy()


def return_scale(max_episode_length: int, c_fail: float) -> float:
    """The per-task divisor of :func:`normalise_returns`: ``max_episode_length + c_fail``."""
    if int(max_episode_length) != max_episode_length or max_episode_length < 1:
        raise ValueError(f"max_episode_length must be a positive integer, got {max_episode_length!r}")
    if not np.isfinite(c_fail) or c_fail < 0:
        raise ValueError(f"c_fail must be a finite number >= 0, got {c_fail!r}")
    return float(max_episode_length) + float(c_fail)


def normalise_returns(returns, max_episode_length: int, c_fail: float) -> np.ndarray:
    """Map returns (or rewards) into ``[-1, 0]``: ``max(R / (max_episode_length + c_fail), -1)``.

    ``[...] -> [...]``. Any return of an episode within the task's length limit
    lands in ``(-1, 0]``; the clip at ``-1`` only bites for episodes that ran
    past the limit. Inverse: :func:`denormalise_returns`.
    """
    scale = return_scale(max_episode_length, c_fail)
    returns = np.asarray(returns, dtype=np.float64)
    return np.maximum(returns / scale, VALUE_MIN)


def denormalise_returns(returns_norm, max_episode_length: int, c_fail: float) -> np.ndarray:
    """Inverse of :func:`normalise_returns` (exact for unclipped values): ``R = R_norm * scale``."""
    scale = return_scale(max_episode_length, c_fail)
    return np.asarray(returns_norm, dtype=np.float64) * scale


# --------------------------------------------------------------------------- value bins


def bin_centers(num_bins: int = NUM_BINS) -> np.ndarray:
    """Value of each bin, ``[B]``, evenly spaced from -1 (bin 0) to 0 (bin B-1)."""
    if int(num_bins) != num_bins or num_bins < 2:
        raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    return np.linspace(VALUE_MIN, VALUE_MAX, int(num_bins))


def _bin_position(values, num_bins: int) -> np.ndarray:
    """Fractional bin coordinate in ``[0, B-1]`` of each value (clipped into [-1, 0])."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("values to discretise must be finite")
    clipped = np.clip(values, VALUE_MIN, VALUE_MAX)
    return (clipped - VALUE_MIN) / (VALUE_MAX - VALUE_MIN) * (num_bins - 1)


def discretise(values, num_bins: int = NUM_BINS) -> np.ndarray:
    """Index of the nearest bin for each value: ``[...] float -> [...] int64``.

    Values outside ``[-1, 0]`` go to the end bins.
    """
    bin_centers(num_bins)  # validates num_bins
    return np.rint(_bin_position(values, num_bins)).astype(np.int64)


def two_hot(values, num_bins: int = NUM_BINS) -> np.ndarray:
    """Soft cross-entropy targets: ``[...] -> [..., B]`` float64, rows sum to 1.

    The mass is split between the two bins around each value in proportion to
    closeness, so ``expected_value(two_hot(v)) == v`` for ``v`` in ``[-1, 0]``.
    """
    bin_centers(num_bins)
    position = _bin_position(values, num_bins)
    lower = np.clip(np.floor(position).astype(np.int64), 0, num_bins - 2)
    upper_weight = position - lower
    targets = np.zeros(position.shape + (num_bins,))
    np.put_along_axis(targets, lower[..., None], (1.0 - upper_weight)[..., None], axis=-1)
    np.put_along_axis(targets, (lower + 1)[..., None], upper_weight[..., None], axis=-1)
    return targets


def expected_value(probs) -> np.ndarray:
    """Continuous value ``sum_b p(b) v(b)`` of bin probabilities: ``[..., B] -> [...]``."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim < 1:
        raise ValueError("probs must have a trailing bin axis [..., B]")
    return probs @ bin_centers(probs.shape[-1])


def expected_value_from_logits(logits) -> np.ndarray:
    """:func:`expected_value` of ``softmax(logits)`` over the last axis: ``[..., B] -> [...]``."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=-1, keepdims=True)
    return expected_value(probs)


# --------------------------------------------------------------------------- advantages


def n_step_advantage(rewards_norm, values, n: int = DEFAULT_LOOKAHEAD) -> np.ndarray:
    """N-step advantage of one episode (paper Appendix F): ``[T], [T] -> [T]``.

    ``A_t = sum_{t'=t}^{t+N-1} r_t' + V(o_{t+N}) - V(o_t)``, with the sum cut at
    the episode end and no bootstrap past it (the terminal value is 0).
    ``rewards_norm`` and ``values`` are in normalised units (:func:`normalise_returns`).
    With ``n >= T`` this equals :func:`full_episode_advantage`.
    """
    rewards_norm = _as_1d("rewards_norm", rewards_norm)
    return n_step_advantage_by_episode(rewards_norm, values, np.zeros(len(rewards_norm), np.int64), n)


def _episode_runs(episode_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (exclusive) row of each contiguous episode run; each episode must be one run."""
    if len(episode_index) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(episode_index[1:] != episode_index[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(episode_index)]])
    run_ids = episode_index[starts]
    if len(np.unique(run_ids)) != len(run_ids):
        raise ValueError(
            "frames of each episode must be contiguous and in frame order; "
            "sort the frames by (episode_index, frame_index) first"
        )
    return starts, stops


def n_step_advantage_by_episode(rewards_norm, values, episode_index, n: int = DEFAULT_LOOKAHEAD) -> np.ndarray:
    """:func:`n_step_advantage` for many episodes at once: ``[N], [N], [N] int -> [N]``.

    Frames of one episode must be contiguous and in time order (the order of
    the dataset's ``index`` column).
    """
    rewards_norm = _as_1d("rewards_norm", rewards_norm)
    values = _as_1d("values", values)
    episode_index = np.asarray(episode_index)
    if not (len(rewards_norm) == len(values) == len(episode_index)):
        raise ValueError(
            f"rewards_norm, values and episode_index must have one entry per frame; got "
            f"{len(rewards_norm)}, {len(values)}, {len(episode_index)}"
        )
    if int(n) != n or n < 1:
        raise ValueError(f"lookahead n must be a positive integer, got {n!r}")
    if len(values) == 0:
        return np.zeros(0)
    starts, stops = _episode_runs(episode_index)
    episode_stop = np.repeat(stops, stops - starts)
    rows = np.arange(len(values))
    horizon = np.minimum(rows + int(n), episode_stop)
    cumulative = np.concatenate([[0.0], np.cumsum(rewards_norm)])
    reward_sum = cumulative[horizon] - cumulative[rows]
    inside = horizon < episode_stop
    bootstrap = np.where(inside, values[np.minimum(horizon, len(values) - 1)], 0.0)
    return reward_sum + bootstrap - values


def full_episode_advantage(returns_norm, values) -> np.ndarray:
    """Pretraining advantage ``A_t = R_t - V(o_t)`` (N = T): ``[N], [N] -> [N]``."""
    returns_norm = _as_1d("returns_norm", returns_norm)
    values = _as_1d("values", values)
    if len(returns_norm) != len(values):
        raise ValueError(f"returns_norm has {len(returns_norm)} frames but values has {len(values)}")
    return returns_norm - values


# --------------------------------------------------------------------------- improvement indicator


def advantage_threshold(
    advantages, positive_fraction: float, *, sample_size: int | None = None, rng: np.random.Generator | None = None
) -> float:
    """The epsilon such that ``positive_fraction`` of ``advantages`` are ``> epsilon``.

    ``[N] -> float``. With distinct values exactly ``round(fraction * N)``
    advantages exceed it (the threshold is the midpoint between the two values
    at the cut); ties at the cut count as not positive. ``sample_size``
    estimates it from a random subset, as the paper does with 10k points.
    """
    advantages = _as_1d("advantages", advantages)
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction!r}")
    if len(advantages) == 0:
        raise ValueError("cannot choose an advantage threshold from zero advantages")
    if sample_size is not None and sample_size < len(advantages):
        rng = rng if rng is not None else np.random.default_rng()
        advantages = rng.choice(advantages, size=int(sample_size), replace=False)
    ordered = np.sort(advantages)
    count = len(ordered)
    num_positive = int(round(positive_fraction * count))
    if num_positive <= 0:
        return float(ordered[-1])
    if num_positive >= count:
        return float(np.nextafter(ordered[0], -np.inf))
    below, above = ordered[count - num_positive - 1], ordered[count - num_positive]
    midpoint = below + (above - below) / 2.0
    # Neighbours one float apart have no midpoint strictly between them: keep `above` positive.
    return float(midpoint if midpoint < above else below)


def per_task_thresholds(
    advantages,
    task_index,
    positive_fraction: float | Mapping[int, float],
    *,
    sample_size: int | None = None,
    rng: np.random.Generator | None = None,
) -> dict[int, float]:
    """Per-task epsilon_l: ``[N], [N] int -> {task_index: epsilon}``.

    ``positive_fraction`` is one fraction for every task or a mapping
    ``task_index -> fraction`` that must cover every task present.
    """
    advantages = _as_1d("advantages", advantages)
    task_index = np.asarray(task_index)
    if task_index.shape != advantages.shape:
        raise ValueError(f"task_index has shape {task_index.shape}, advantages {advantages.shape}")
    thresholds: dict[int, float] = {}
    for task in np.unique(task_index):
        task = int(task)
        if isinstance(positive_fraction, Mapping):
            if task not in positive_fraction:
                raise KeyError(f"no positive_fraction for task_index {task}; given for {sorted(positive_fraction)}")
            fraction = positive_fraction[task]
        else:
            fraction = positive_fraction
        thresholds[task] = advantage_threshold(
            advantages[task_index == task], fraction, sample_size=sample_size, rng=rng
        )
    return thresholds


def improvement_indicator(advantages, task_index, thresholds: Mapping[int, float], is_intervention) -> np.ndarray:
    """``I_t = A_t > epsilon_task``, forced True on human interventions: ``[N] -> bool [N]``."""
    advantages = _as_1d("advantages", advantages)
    task_index = np.asarray(task_index)
    is_intervention = np.asarray(is_intervention, dtype=bool)
    if not (advantages.shape == task_index.shape == is_intervention.shape):
        raise ValueError(
            f"advantages {advantages.shape}, task_index {task_index.shape} and "
            f"is_intervention {is_intervention.shape} must have the same shape [N]"
        )
    missing = sorted(set(np.unique(task_index).tolist()) - set(int(k) for k in thresholds))
    if missing:
        raise KeyError(f"no advantage threshold for task_index {missing}; thresholds cover {sorted(thresholds)}")
    epsilon = np.zeros(len(advantages))
    for task, threshold in thresholds.items():
        epsilon[task_index == int(task)] = threshold
    return (advantages > epsilon) | is_intervention


def before_takeover(is_correction, episode_index, window: int) -> np.ndarray:
    """Autonomous frames in the ``window`` steps before a human take-over in the same episode: ``bool [N]``.

    ``is_correction`` marks the human's correction frames of rollouts; a take-over is the first frame of each
    run of them. The operator took over because the policy was going wrong there, which is what
    ``recap label --takeover-negative`` uses (the take-over as a failure signal, as in RLIF).
    """
    is_correction = np.asarray(is_correction, dtype=bool)
    episode_index = np.asarray(episode_index)
    if is_correction.shape != episode_index.shape or is_correction.ndim != 1:
        raise ValueError(
            f"is_correction {is_correction.shape} and episode_index {episode_index.shape} must be the same shape [N]"
        )
    if window < 0:
        raise ValueError(f"window must be >= 0 steps, got {window}")
    marked = np.zeros(len(is_correction), dtype=bool)
    if window == 0:
        return marked
    starts, stops = _episode_runs(episode_index)
    for start, stop in zip(starts, stops):
        flags = is_correction[start:stop]
        takeovers = np.flatnonzero(flags & ~np.r_[False, flags[:-1]])
        for takeover in takeovers:
            marked[start + max(0, takeover - window) : start + takeover] = True
    return marked & ~is_correction


def drop_indicator(
    batch_size: int, dropout: float = DEFAULT_INDICATOR_DROPOUT, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Which samples lose the advantage text this step (True = drop): ``bool [batch_size]``."""
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"indicator dropout must be in [0, 1], got {dropout!r}")
    rng = rng if rng is not None else np.random.default_rng()
    return rng.random(int(batch_size)) < dropout


def awr_weights(advantages, temperature: float, max_weight: float) -> np.ndarray:
    """Advantage-weighted regression weights ``min(exp(A / temperature), max_weight)``: ``[N] -> [N]``."""
    advantages = _as_1d("advantages", advantages)
    if not temperature > 0:
        raise ValueError(f"AWR temperature must be > 0, got {temperature!r}")
    if not max_weight > 0:
        raise ValueError(f"AWR max_weight must be > 0, got {max_weight!r}")
    # Clip the exponent first so huge advantages cannot overflow before the weight cap applies.
    exponent = np.minimum(advantages / temperature, np.log(max_weight))
    return np.exp(exponent)
