"""The simulated human of human-gated DAgger: when the scripted operator takes over from the policy, and
when it gives back.

The scripted operator provides *what* to command; :class:`SimulatedHuman` decides *when*, from what an
operator watching the station would notice. Pure Python; time is passed in explicitly, so it is tested
without ROS.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np


#: what the station accepts for the value-drop trigger (``human_value_drop``, ``recap station --human-value-drop``):
#: normalised value, so 1 is a drop no value in [-1, 0] can make (the trigger off)
VALUE_DROP_RANGE = (0.01, 1.0)
#: where a correction ends (``HumanConfig.release``; see :class:`SimulatedHuman`)
RELEASE_RULES = ("next_stage", "past_best")


@dataclasses.dataclass(frozen=True)
class HumanConfig:
    patience_s: float = 3.0
    regress_s: float = 0.3
    value_drop: float = 0.2
    value_window_s: float = 1.5
    value_settle_s: float = 1.0
    attention: float = 1.0
    min_correction_s: float = 1.0
    max_correction_s: float = 6.0
    cooldown_s: float = 2.0
    max_interventions: int = 3
    release: str = "next_stage"

    def __post_init__(self):
        for name in ("patience_s", "value_window_s", "min_correction_s", "max_correction_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 s, got {getattr(self, name)}")
        for name in ("cooldown_s", "regress_s", "value_settle_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 s, got {getattr(self, name)}")
        if not 0.0 <= self.attention <= 1.0:
            raise ValueError(f"attention is a probability in [0, 1], got {self.attention}")
        if not 0.0 < self.value_drop <= 1.0:
            raise ValueError(f"value_drop must be in (0, 1] (normalised value), got {self.value_drop}")
        if self.max_correction_s < self.min_correction_s:
            raise ValueError(f"max_correction_s ({self.max_correction_s}) < min_correction_s ({self.min_correction_s})")
        if self.release not in RELEASE_RULES:
            raise ValueError(f"release must be one of {RELEASE_RULES}, got {self.release!r}")
        if self.max_interventions < 0:
            raise ValueError(f"max_interventions must be >= 0, got {self.max_interventions}")


class SimulatedHuman:
    """Decides, every tick, whether the operator holds the deadman.

    It takes over on one of three triggers:

    - no progress: the task reward has not increased for ``patience_s`` while the policy is in control
      (the cube is not moving toward the goal);
    - regress: the reward stayed below its best for ``regress_s`` (the cube was dropped). The sim's
      staged reward flickers when a finger loses contact for a step or two while the cube stays in the
      hand (in 15 episodes of an SFT policy, 50 falls below the best reward, most back within 2-4
      steps); an operator does not grab the arm for that, and corrections started there interrupt a
      policy that was doing well;
    - value drop: the live value estimate fell by more than ``value_drop`` within ``value_window_s``
      (what an operator watching rviz sees), once the episode has run ``value_settle_s``: right after a
      reset the value stream still carries estimates of the episode before (the value node was
      mid-inference, or had not seen the new episode yet), and the fall from its last one (near 0, a
      success) to the first of the new episode would otherwise make the operator take over 0.1 s into
      the episode, before the policy did anything.

    On a trigger it engages with probability ``attention`` (an inattentive operator misses some),
    corrects for at least ``min_correction_s`` and until the reward reaches the stage its ``release``
    rule names (or ``max_correction_s`` passed), then releases and leaves the policy alone for
    ``cooldown_s``. ``max_interventions`` bounds corrections per episode. Where a correction ends:

    - ``next_stage``: at the first stage past where it engaged (or past the best the episode reached,
      whichever comes first). After a dropped handover that is the re-grasp on the table: the policy
      gets the cube back before the step it failed.
    - ``past_best``: only once the task went one stage past the best the episode had reached: the
      operator fixes the mistake *and* does the step the policy failed (the handover it dropped), as an
      operator does who has seen that step go wrong. The corrections then show the scripted operator's
      own handovers from the states the policy reaches; with ``next_stage`` nearly every handover in
      the rollouts is the policy's.
    """

    def __init__(self, config: HumanConfig = HumanConfig(), seed: int = 0):
        self.config = config
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.engaged = False
        self.interventions = 0
        self.reason = ""
        self._best_reward = -np.inf
        self._below_best_since: float | None = None
        self._last_progress_t: float | None = None
        self._engaged_at = 0.0
        self._release_reward = 0.0
        self._released_at = -np.inf
        self._started_at: float | None = None
        self._values: collections.deque[tuple[float, float]] = collections.deque()

    def _trigger(self, t: float, reward: float) -> str:
        c = self.config
        if self._below_best_since is not None and t - self._below_best_since >= c.regress_s - 1e-9:
            return f"regress: reward fell from {self._best_reward:g} to {reward:g}"
        if self._last_progress_t is not None and t - self._last_progress_t > c.patience_s:
            return f"no progress for {t - self._last_progress_t:.1f} s"
        if len(self._values) >= 2:
            recent = [v for s, v in self._values if s >= t - c.value_window_s]
            drop = max(recent) - self._values[-1][1]
            if drop > c.value_drop:
                return f"value dropped by {drop:.2f}"
        return ""

    def update(self, t: float, reward: float, value: float | None = None) -> bool:
        """Observe the station at time ``t``; returns whether the deadman is held now."""
        c = self.config
        if self._last_progress_t is None:
            self._last_progress_t = t
        if self._started_at is None:
            self._started_at = t
        if reward >= self._best_reward - 1e-9:
            self._below_best_since = None
        elif self._below_best_since is None:
            self._below_best_since = t
        if value is not None and np.isfinite(value) and t - self._started_at >= c.value_settle_s - 1e-9:
            self._values.append((t, float(value)))
            while self._values and self._values[0][0] < t - c.value_window_s:
                self._values.popleft()
        if self.engaged:
            corrected = reward >= self._release_reward - 1e-9
            held = t - self._engaged_at
            if held >= c.max_correction_s or (held >= c.min_correction_s and corrected):
                self.engaged = False
                self._released_at = t
                self._last_progress_t = t
                self._values.clear()
                self.reason = "released: " + ("corrected" if corrected else "correction time up")
        else:
            why = self._trigger(t, reward)
            can_engage = why and self.interventions < c.max_interventions and t - self._released_at >= c.cooldown_s
            if can_engage:
                if self._rng.random() < c.attention:
                    self.engaged = True
                    self.interventions += 1
                    self._engaged_at = t
                    past_best = self._best_reward + 1.0
                    self._release_reward = past_best if c.release == "past_best" else min(reward + 1.0, past_best)
                    self.reason = why
                else:  # missed it: look again after another patience period
                    self._last_progress_t = t
                    self._best_reward = min(self._best_reward, reward)
        if reward > self._best_reward + 1e-9:
            self._best_reward = reward
            self._last_progress_t = t
        return self.engaged
