"""The policy/teleop gate as plain Python: which command reaches the robot, and how fast.

No ROS here: time is passed in explicitly (seconds, any clock that does not run backwards under normal
operation), so every rule of :class:`Gate` is tested without a middleware (``test/test_gate.py``);
``gate_node.py`` only converts messages. The rules are also in docs/teleop.md, "The gate".
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import numpy as np

from recap_core.station import StationConfig

POLICY, TELEOP, HOLD = "policy", "teleop", "hold"
SOURCES = (POLICY, TELEOP, HOLD)

#: Why the gate holds (``Gate.hold_reason``), for the status diagnostic.
HOLD_REASONS = ("none", "no_command_yet", "stale", "awaiting_policy_after_release", "engaged_without_teleop")

#: Seconds over which a wider velocity limit is ramped in (a tighter one applies at once).
WIDEN_RAMP_S = 1.0


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """Joint limits and timing of one gate. Arrays are ``[J]`` in station joint order, any J >= 1."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_velocity: tuple[float, ...]
    control_period_s: float = 0.02
    stale_timeout_s: float = 0.2
    velocity_scale: float = 1.0

    def __post_init__(self):
        joints = len(self.lower)
        if joints < 1:
            raise ValueError("GateConfig needs the limits of at least one joint")
        for name in ("lower", "upper", "max_velocity"):
            values = getattr(self, name)
            if len(values) != joints or not all(math.isfinite(v) for v in values):
                raise ValueError(
                    f"GateConfig.{name} must be {joints} finite values (one per joint), got {list(values)}"
                )
        if not all(lo < hi for lo, hi in zip(self.lower, self.upper)):
            raise ValueError("GateConfig: every lower limit must be below its upper limit")
        if not all(v > 0 for v in self.max_velocity):
            raise ValueError(f"GateConfig.max_velocity must be > 0, got {list(self.max_velocity)}")
        if not self.control_period_s > 0:
            raise ValueError(f"GateConfig.control_period_s must be > 0, got {self.control_period_s}")
        if not self.stale_timeout_s > 0:
            raise ValueError(
                f"GateConfig.stale_timeout_s must be > 0, got {self.stale_timeout_s}; use e.g. 0.2 (10 control periods)"
            )
        if not 0 < self.velocity_scale <= 1:
            raise ValueError(f"GateConfig.velocity_scale must be in (0, 1], got {self.velocity_scale}")

    @classmethod
    def from_station(
        cls, station: StationConfig, stale_timeout_s: float = 0.2, velocity_scale: float = 1.0
    ) -> "GateConfig":
        return cls(
            lower=station.lower,
            upper=station.upper,
            max_velocity=station.max_velocity,
            control_period_s=1.0 / station.control_rate_hz,
            stale_timeout_s=stale_timeout_s,
            velocity_scale=velocity_scale,
        )

    @property
    def num_joints(self) -> int:
        return len(self.lower)

    @property
    def max_step(self) -> np.ndarray:
        """``[J]`` largest change of one output per control period (velocity scale applied)."""
        return np.asarray(self.max_velocity) * self.control_period_s * self.velocity_scale


class GateOutput(NamedTuple):
    command: np.ndarray  # [J] joint position targets, within limits
    source: str  # policy | teleop | hold
    intervention: bool  # the deadman is held: a human owns this step


class Gate:
    """Policy/teleop multiplexer with deadman, watchdog, joint and velocity limits.

    Rules, in order of priority:

    * Source: while the deadman is held (``on_engage(True)``) the teleop command drives the robot and every
      step is an intervention; otherwise the policy does. After a release the gate holds until a policy
      command arrives that was received *after* the release (the policy is told to replan; anything queued
      before that belongs to the old plan).
    * Watchdog: an active source whose newest command is older than ``stale_timeout_s`` is not used; the gate
      holds.
    * Hold: the previous output, or the measured joint position before any output. Without a measured
      position the gate has no safe reference and outputs nothing.
    * Episode start (``restart``): the world was reset (sim) or the robot was brought home between episodes,
      so the previous output no longer describes the arm. The gate forgets it and every command of the
      previous episode, and outputs nothing until a joint state measured after the restart arrives; it then
      holds that position until a source sends a fresh command. Holding the old output instead would drive the
      arm back to where the last episode ended. Only a joint state stamped at or after the restart
      (``not_before``) counts: one measured before it shows the arm before the reset.
    * Limits: every output is clipped to the joint limits, then its change from the previous output is clipped
      to ``max_velocity * elapsed`` (elapsed capped at one control period), so a handover ramps instead of
      jumping and two outputs close together cannot add up to more than the velocity limit.
    * Runtime limit changes (``set_velocity_limits``, ``set_stale_timeout``): a tighter velocity limit applies
      from the next output on; a wider one is reached by a linear ramp over ``WIDEN_RAMP_S``, so raising the
      limit never lets a moving arm jump to the new speed.
    """

    def __init__(self, config: GateConfig):
        self.config = config
        self._lower = np.asarray(config.lower, dtype=np.float64)
        self._upper = np.asarray(config.upper, dtype=np.float64)
        self._max_step = config.max_step
        self._ramp: tuple[np.ndarray, float] | None = None  # (step limit when a widening began, its time)
        self._state_not_before: float | None = None  # joint states stamped earlier predate the restart
        self._policy: np.ndarray | None = None
        self._policy_time = -math.inf
        self._policy_seq = 0
        self._teleop: np.ndarray | None = None
        self._teleop_time = -math.inf
        self._measured: np.ndarray | None = None
        self._engaged = False
        self._policy_seq_at_release: int | None = None  # set while waiting for a fresh policy command
        self._last_output: np.ndarray | None = None
        self._last_output_time: float | None = None
        self._was_stale = False
        self.hold_reason = "no_command_yet"
        self.counters: dict[str, int] = {
            k: 0
            for k in (
                "outputs",
                "outputs_policy",
                "outputs_teleop",
                "outputs_hold",
                "rejected_policy",
                "rejected_teleop",
                "rejected_joint_states",
                "position_clamps",
                "velocity_clamps",
                "stale_events",
                "engages",
                "releases",
                "restarts",
                "joint_states_before_restart",
                "limit_changes",
            )
        }

    # -- runtime limits ---------------------------------------------------------------------
    def set_velocity_limits(
        self, now: float, *, max_velocity: Sequence[float] | None = None, velocity_scale: float | None = None
    ) -> None:
        """New velocity limits (validated as a whole; ValueError leaves the old ones).

        Per joint, a tighter limit applies from the next output on; a wider one
        ramps in linearly over ``WIDEN_RAMP_S`` from the limit in force now.
        """
        changes = {}
        if max_velocity is not None:
            changes["max_velocity"] = tuple(float(v) for v in max_velocity)
        if velocity_scale is not None:
            changes["velocity_scale"] = float(velocity_scale)
        config = dataclasses.replace(self.config, **changes)  # __post_init__ validates
        current = self.step_limit(now)
        self.config = config
        self._max_step = config.max_step
        start = np.minimum(current, self._max_step)
        self._ramp = None if np.array_equal(start, self._max_step) else (start, now)
        self.counters["limit_changes"] += 1

    def set_stale_timeout(self, stale_timeout_s: float) -> None:
        """A new watchdog timeout, used from the next selection on (ValueError if not > 0)."""
        self.config = dataclasses.replace(self.config, stale_timeout_s=float(stale_timeout_s))
        self.counters["limit_changes"] += 1

    def step_limit(self, now: float) -> np.ndarray:
        """``[J]`` largest change of one output per control period at time ``now``."""
        if self._ramp is None:
            return self._max_step
        start, t0 = self._ramp
        fraction = (now - t0) / WIDEN_RAMP_S
        if fraction >= 1.0:
            self._ramp = None
            return self._max_step
        return start + (self._max_step - start) * max(fraction, 0.0)

    # -- inputs -----------------------------------------------------------------------------
    def on_policy(self, command: Sequence[float], now: float) -> bool:
        """A policy command ``[J]``; False (and counted) if it is malformed."""
        cmd = self._valid(command, "rejected_policy")
        if cmd is None:
            return False
        self._policy, self._policy_time = cmd, now
        self._policy_seq += 1
        return True

    def on_teleop(self, command: Sequence[float], now: float) -> bool:
        """A teleop command ``[J]``; False (and counted) if it is malformed."""
        cmd = self._valid(command, "rejected_teleop")
        if cmd is None:
            return False
        self._teleop, self._teleop_time = cmd, now
        return True

    def on_joint_state(self, positions: Sequence[float], now: float, stamp: float | None = None) -> bool:
        """The measured joint positions ``[J]`` (the hold reference before any output).

        ``stamp``: when they were measured, in the time base of the restart's
        ``not_before``. After a restart a state measured before it (or without
        a stamp) is refused and counted: it shows the arm before the reset.
        """
        q = self._valid(positions, "rejected_joint_states")
        if q is None:
            return False
        if self._state_not_before is not None and (stamp is None or stamp < self._state_not_before):
            self.counters["joint_states_before_restart"] += 1
            return False
        self._measured = q
        return True

    def on_engage(self, engaged: bool, now: float) -> bool:
        """Deadman state. Returns True on a release: the caller must ask the policy to replan."""
        engaged = bool(engaged)
        if engaged == self._engaged:
            return False
        self._engaged = engaged
        if engaged:
            self.counters["engages"] += 1
            self._policy_seq_at_release = None
            return False
        self.counters["releases"] += 1
        self._policy_seq_at_release = self._policy_seq
        return True

    def restart(self, now: float, not_before: float | None = None) -> None:
        """A new episode begins: drop the output reference, the measured state and all held commands.

        With ``not_before`` (the episode's start, in the joint states' stamp
        time base) only a joint state stamped at or after it becomes the new
        anchor.
        """
        self._state_not_before = not_before
        self._policy, self._policy_time = None, -math.inf
        self._teleop, self._teleop_time = None, -math.inf
        self._policy_seq_at_release = None
        self._measured = None
        self._last_output, self._last_output_time = None, None
        self._was_stale = False
        self.hold_reason = "no_command_yet"
        self.counters["restarts"] += 1

    def reject(self, source: str) -> None:
        """Count a message the caller could not even convert (wrong names, wrong length)."""
        key = {"policy": "rejected_policy", "teleop": "rejected_teleop", "joint_states": "rejected_joint_states"}[
            source
        ]
        self.counters[key] += 1

    # -- state ------------------------------------------------------------------------------
    @property
    def engaged(self) -> bool:
        return self._engaged

    @property
    def last_output(self) -> np.ndarray | None:
        return None if self._last_output is None else self._last_output.copy()

    def active_source(self, now: float) -> str:
        """The source the next output would come from (policy | teleop | hold)."""
        return self._select(now)[0]

    # -- output -----------------------------------------------------------------------------
    def tick(self, now: float) -> GateOutput | None:
        """The command for this step, or None while there is no safe reference (no joint state yet)."""
        source, target, reason = self._select(now)
        reference = self._last_output if self._last_output is not None else self._measured
        if reference is None:
            return None
        if target is None:
            target = reference
        clipped = np.clip(target, self._lower, self._upper)
        if not np.array_equal(clipped, target):
            self.counters["position_clamps"] += 1
        elapsed = self.config.control_period_s
        if self._last_output_time is not None:
            elapsed = min(max(now - self._last_output_time, 0.0), self.config.control_period_s)
        allowed = self.step_limit(now) * (elapsed / self.config.control_period_s)
        step = clipped - reference
        limited = np.clip(step, -allowed, allowed)
        if not np.array_equal(limited, step):
            self.counters["velocity_clamps"] += 1
        # The reference may itself lie outside the limits (a measured position): clip again.
        command = np.clip(reference + limited, self._lower, self._upper)
        stale = reason == "stale"
        if stale and not self._was_stale:
            self.counters["stale_events"] += 1
        self._was_stale = stale
        self.hold_reason = reason
        self._last_output, self._last_output_time = command, now
        self.counters["outputs"] += 1
        self.counters[f"outputs_{source}"] += 1
        return GateOutput(command.copy(), source, self._engaged)

    def _select(self, now: float) -> tuple[str, np.ndarray | None, str]:
        """(source, target or None for hold, hold reason)."""
        if self._engaged:
            if self._teleop is None:
                return HOLD, None, "engaged_without_teleop"
            if self._is_stale(self._teleop_time, now):
                return HOLD, None, "stale"
            return TELEOP, self._teleop, "none"
        # Sequence numbers only grow, so once a fresh command exists this stays false.
        if self._policy_seq_at_release is not None and self._policy_seq <= self._policy_seq_at_release:
            return HOLD, None, "awaiting_policy_after_release"
        if self._policy is None:
            return HOLD, None, "no_command_yet"
        if self._is_stale(self._policy_time, now):
            return HOLD, None, "stale"
        return POLICY, self._policy, "none"

    def _is_stale(self, received: float, now: float) -> bool:
        age = now - received
        # A clock that jumped backwards makes the age negative: treat a large one as stale too.
        return abs(age) > self.config.stale_timeout_s

    def _valid(self, values: Sequence[float], counter: str) -> np.ndarray | None:
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape != (self.config.num_joints,) or not np.all(np.isfinite(arr)):
            self.counters[counter] += 1
            return None
        return arr


class OutputClock:
    """When the gate publishes: at once when the active source delivers, else on its own clock.

    Forwarding on arrival keeps the gate's added latency near zero; the clock
    fills in when the source is silent (hold, watchdog, a slower device) so the
    robot still gets one command per period. Arrivals closer than
    ``min_interval_ratio`` periods to the previous output wait until that much
    time has passed, which caps the output rate of a fast device; the first fill
    after an arrival waits ``fill_delay_ratio`` periods, so a source that is a
    little late does not get a duplicate step in front of it.
    """

    def __init__(self, period_s: float, min_interval_ratio: float = 0.75, fill_delay_ratio: float = 1.25):
        if not period_s > 0:
            raise ValueError(f"OutputClock period must be > 0, got {period_s}")
        if not 0 < min_interval_ratio <= 1 <= fill_delay_ratio:
            raise ValueError(
                "OutputClock needs 0 < min_interval_ratio <= 1 <= fill_delay_ratio, got "
                f"{min_interval_ratio}, {fill_delay_ratio}"
            )
        self.period = period_s
        self.min_interval = period_s * min_interval_ratio
        self.fill_delay = period_s * fill_delay_ratio
        self._last: float | None = None
        self._due = -math.inf  # output as soon as possible

    @property
    def due(self) -> float:
        """Time of the next clock output."""
        return self._due

    def on_arrival(self, now: float) -> bool:
        """A command of the active source arrived: True = publish it now, False = the clock will."""
        if self._last is None or now - self._last >= self.min_interval or now < self._last:
            return True
        self._due = min(self._due, self._last + self.min_interval)
        return False

    def on_output(self, now: float, on_arrival: bool) -> None:
        self._last = now
        self._due = now + (self.fill_delay if on_arrival else self.period)

    def on_nothing_to_publish(self, now: float) -> None:
        """The clock fired but there was no output (no reference yet): try again in one period."""
        self._due = now + self.period
