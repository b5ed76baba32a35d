"""Gamepad -> operator intents: deadman, episode buttons, joint jogging (no ROS).

The mapping lives in YAML (``joy_default.yaml`` next to this module; button and axis indices
as the ROS ``joy`` driver reports them). :class:`JoyMapping` reads a Joy
message's ``axes``/``buttons`` lists; :class:`JointJogger` integrates the jog
velocities from the measured joint position at engage time.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Mapping, Sequence

import numpy as np
import yaml

from recap_core.station import StationConfig

#: The gamepad mapping the joy node uses unless given another (shipped with this package).
DEFAULT_MAPPING_FILE = pathlib.Path(__file__).resolve().parent / "joy_default.yaml"

#: Buttons that call the episode services (``episode/<action>``) on a press.
ACTIONS = ("start", "success", "failure", "abort")


@dataclasses.dataclass(frozen=True)
class JogBinding:
    """One axis or button moving one joint at ``speed`` (joint units/s at full deflection; sign = direction)."""

    joint: str
    speed: float
    axis: int | None = None
    button: int | None = None

    def __post_init__(self):
        if (self.axis is None) == (self.button is None):
            raise ValueError(f"jog binding for '{self.joint}' needs exactly one of `axis` or `button`")
        index = self.axis if self.axis is not None else self.button
        if not isinstance(index, int) or index < 0:
            raise ValueError(f"jog binding for '{self.joint}': index must be an integer >= 0, got {index!r}")
        if not -10.0 <= float(self.speed) <= 10.0 or self.speed == 0:
            raise ValueError(
                f"jog binding for '{self.joint}': speed {self.speed} must be non-zero and within [-10, 10] units/s"
            )


def _sim_joint_names() -> tuple[str, ...]:
    """The simulated station's joints, which ``joy_default.yaml`` jogs (the joy node passes its own)."""
    return StationConfig.sim_aloha().joint_names


@dataclasses.dataclass(frozen=True)
class JoyMapping:
    """Buttons and jog bindings of one gamepad for a station with ``joint_names``."""

    deadman_button: int
    actions: tuple[tuple[str, int], ...] = ()  # (action, button)
    jog: tuple[JogBinding, ...] = ()
    shift_button: int | None = None  # while held, `shifted_jog` replaces `jog`
    shifted_jog: tuple[JogBinding, ...] = ()
    deadzone: float = 0.1
    joint_names: tuple[str, ...] = dataclasses.field(default_factory=_sim_joint_names)

    def __post_init__(self):
        buttons = {"deadman": self.deadman_button, **dict(self.actions)}
        if self.shift_button is not None:
            buttons["shift"] = self.shift_button
        for name, b in buttons.items():
            if not isinstance(b, int) or b < 0:
                raise ValueError(f"joy mapping: button for '{name}' must be an integer >= 0, got {b!r}")
        used: dict[int, str] = {}
        for name, b in buttons.items():
            if b in used:
                raise ValueError(f"joy mapping: button {b} is used for both '{used[b]}' and '{name}'")
            used[b] = name
        unknown = [a for a, _ in self.actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"joy mapping: unknown actions {unknown}; known: {list(ACTIONS)}")
        for binding in self.jog + self.shifted_jog:
            if binding.joint not in self.joint_names:
                raise ValueError(
                    f"joy mapping: joint '{binding.joint}' is not a station joint {list(self.joint_names)}; "
                    "give a mapping_file that jogs this station's joints"
                )
            if binding.button is not None and binding.button in used:
                raise ValueError(f"joy mapping: jog button {binding.button} is already '{used[binding.button]}'")
        if self.shifted_jog and self.shift_button is None:
            raise ValueError("joy mapping: `shifted_jog` needs a `shift_button`")
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"joy mapping: deadzone must be in [0, 1), got {self.deadzone}")

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: Mapping, joint_names: Sequence[str] | None = None) -> "JoyMapping":
        """From a mapping document, for the station's ``joint_names`` (the simulated station's if None)."""
        known = {"deadman_button", "actions", "jog", "shift_button", "shifted_jog", "deadzone"}
        extra = sorted(set(doc) - known)
        if extra:
            raise ValueError(f"joy mapping: unknown keys {extra}; known: {sorted(known)}")
        if "deadman_button" not in doc:
            raise ValueError("joy mapping: `deadman_button` is required (the button that must be held to move)")

        def bindings(key):
            try:
                return tuple(JogBinding(**b) for b in doc.get(key) or ())
            except TypeError as exc:
                raise ValueError(f"joy mapping: bad entry in `{key}`: {exc}") from exc

        return cls(
            deadman_button=doc["deadman_button"],
            actions=tuple((str(a), b) for a, b in (doc.get("actions") or {}).items()),
            jog=bindings("jog"),
            shift_button=doc.get("shift_button"),
            shifted_jog=bindings("shifted_jog"),
            deadzone=float(doc.get("deadzone", 0.1)),
            joint_names=tuple(_sim_joint_names() if joint_names is None else joint_names),
        )

    @classmethod
    def from_yaml(cls, path: str | pathlib.Path, joint_names: Sequence[str] | None = None) -> "JoyMapping":
        path = pathlib.Path(path)
        if not path.is_file():
            raise ValueError(f"joy mapping file {path} does not exist (see {DEFAULT_MAPPING_FILE})")
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        try:
            return cls.from_dict(doc, joint_names)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    # -- reading a Joy message ------------------------------------------------------------------
    @property
    def max_button(self) -> int:
        return max(
            [
                self.deadman_button,
                *(b for _, b in self.actions),
                self.shift_button or 0,
                *(j.button for j in self.jog + self.shifted_jog if j.button is not None),
            ]
        )

    @property
    def max_axis(self) -> int:
        return max([-1, *(j.axis for j in self.jog + self.shifted_jog if j.axis is not None)])

    def deadman_held(self, buttons: Sequence[int]) -> bool:
        return _pressed(buttons, self.deadman_button)

    def pressed_actions(self, previous: Sequence[int], buttons: Sequence[int]) -> list[str]:
        """Actions whose button went down between two Joy messages (rising edges)."""
        return [a for a, b in self.actions if _pressed(buttons, b) and not _pressed(previous, b)]

    def joint_velocity(self, axes: Sequence[float], buttons: Sequence[int]) -> np.ndarray:
        """``[J]`` jog velocity in station joint order (units/s)."""
        shifted = self.shift_button is not None and _pressed(buttons, self.shift_button)
        velocity = np.zeros(len(self.joint_names))
        for binding in self.shifted_jog if shifted else self.jog:
            if binding.axis is not None:
                raw = float(axes[binding.axis]) if binding.axis < len(axes) else 0.0
                deflection = self._deadzoned(raw)
            else:
                deflection = 1.0 if _pressed(buttons, binding.button) else 0.0
            velocity[self.joint_names.index(binding.joint)] += binding.speed * deflection
        return velocity

    def _deadzoned(self, raw: float) -> float:
        raw = max(-1.0, min(1.0, raw))
        if abs(raw) <= self.deadzone:
            return 0.0
        # Rescale so motion starts from zero at the deadzone edge instead of jumping.
        return float(np.sign(raw)) * (abs(raw) - self.deadzone) / (1.0 - self.deadzone)


def _pressed(buttons: Sequence[int], index: int) -> bool:
    return index < len(buttons) and bool(buttons[index])


class JointJogger:
    """Integrates jog velocities into a joint target ``[J]`` that starts at the measured position."""

    def __init__(self, lower: Sequence[float], upper: Sequence[float]):
        self._lower = np.asarray(lower, dtype=np.float64)
        self._upper = np.asarray(upper, dtype=np.float64)
        self.target: np.ndarray | None = None

    @property
    def active(self) -> bool:
        return self.target is not None

    def engage(self, measured: Sequence[float]) -> np.ndarray:
        self.target = np.clip(np.asarray(measured, dtype=np.float64), self._lower, self._upper)
        return self.target.copy()

    def release(self) -> None:
        self.target = None

    def step(self, velocity: np.ndarray, dt: float) -> np.ndarray:
        if self.target is None:
            raise RuntimeError("JointJogger.step before engage(): engage from the measured position first")
        self.target = np.clip(self.target + np.asarray(velocity) * max(dt, 0.0), self._lower, self._upper)
        return self.target.copy()
