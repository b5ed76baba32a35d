"""Message <-> numpy conversion (joint states, diagnostics, stamps); images are in :mod:`recap_ros.images`."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import JointState


class MessageError(ValueError):
    """A message that cannot be used; the text says why (it is logged and counted)."""


def joint_state(
    positions: Sequence[float],
    velocities: Sequence[float] | None = None,
    stamp: Time | None = None,
    names: Sequence[str] | None = None,
) -> JointState:
    """A JointState naming ``names`` (the station's joints, in its order); without names the positions are
    in station order, which ``joint_positions`` accepts when their count is the station's."""
    msg = JointState()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.name = list(names or [])
    msg.position = [float(v) for v in positions]
    if velocities is not None:
        msg.velocity = [float(v) for v in velocities]
    return msg


def joint_positions(msg: JointState, names: Sequence[str] | None = None) -> np.ndarray:
    """Positions of a JointState in the order of the station's joints ``names``, validated.

    ``msg.name`` may be empty (positions in station order) or hold exactly the
    station's joints in any order. Raises MessageError for a wrong count, unknown
    or duplicate names, or non-finite values. Without ``names`` the positions are
    taken in the message's order (any count), only checked to be finite.
    """
    if names is None:
        count = len(msg.position)
        names = list(msg.name) if len(msg.name) == count else [f"joint {i}" for i in range(count)]
    n = len(names)
    pos = np.asarray(msg.position, dtype=np.float64)
    if pos.shape != (n,):
        raise MessageError(f"joint command has {pos.size} positions, expected {n}")
    if len(msg.name):
        if len(msg.name) != n or set(msg.name) != set(names):
            unknown = sorted(set(msg.name) - set(names))
            missing = sorted(set(names) - set(msg.name))
            raise MessageError(f"joint names do not match the station (unknown {unknown}, missing {missing})")
        if list(msg.name) != list(names):
            index = {name: i for i, name in enumerate(msg.name)}
            pos = pos[[index[name] for name in names]]
    if not np.all(np.isfinite(pos)):
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(pos))]
        raise MessageError(f"joint command has non-finite values for {bad}")
    return pos


def check_limits(
    pos: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    names: Sequence[str] | None = None,
    tolerance: float = 1e-6,
) -> None:
    """MessageError naming the joints (``names``, the station's; else by index) outside [lower, upper]."""
    names = [f"joint {i}" for i in range(len(pos))] if names is None else names
    out = np.flatnonzero((pos < lower - tolerance) | (pos > upper + tolerance))
    if out.size:
        detail = ", ".join(f"{names[i]}={pos[i]:.3f} not in [{lower[i]:.3f}, {upper[i]:.3f}]" for i in out)
        raise MessageError(f"joint command outside the joint limits: {detail}")


def diagnostic(
    name: str, values: Mapping[str, object], level: int = 0, message: str = "", hardware_id: str = ""
) -> DiagnosticStatus:
    msg = DiagnosticStatus()
    msg.level = bytes([level]) if isinstance(msg.level, bytes) else level
    msg.name = name
    msg.message = message
    msg.hardware_id = hardware_id
    msg.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    return msg


def diagnostic_values(msg: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.values}


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(t: float) -> Time:
    # rounded as one integer of nanoseconds, so 0.9999999999 s carries into the seconds (1 s, 0 ns) instead
    # of wrapping the nanoseconds to 0 and losing a second
    sec, nanosec = divmod(int(round(t * 1e9)), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


__all__ = [
    "MessageError",
    "joint_state",
    "joint_positions",
    "check_limits",
    "diagnostic",
    "diagnostic_values",
    "stamp_to_seconds",
    "seconds_to_stamp",
]
