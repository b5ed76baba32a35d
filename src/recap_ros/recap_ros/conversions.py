"""Message <-> numpy conversion without cv_bridge (figures in ENVIRONMENT.md).

Images: read with a zero-copy ``np.frombuffer`` view; fill ``msg.data`` with an
``array.array`` (microseconds) -- never assign a numpy array or list (milliseconds).
"""

from __future__ import annotations

import array
from typing import Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image, JointState

from recap_core.station import JOINT_NAMES, NUM_JOINTS


class MessageError(ValueError):
    """A message that cannot be used; the text says why (it is logged and counted)."""


def numpy_to_image(rgb: np.ndarray, stamp: Time | None = None, frame_id: str = "") -> Image:
    """[H, W, 3] uint8 -> sensor_msgs/Image rgb8."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(rgb).tobytes())
    msg.data = data
    return msg


def image_to_numpy(msg: Image, expect_shape: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8) -> [H, W, 3] uint8 view; MessageError if malformed."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise MessageError(f"image encoding '{msg.encoding}' is not supported (use rgb8)")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0 or step < w * 3:
        raise MessageError(f"image header inconsistent: {h}x{w}, step {step}")
    if len(msg.data) != h * step:
        raise MessageError(f"image has {len(msg.data)} bytes, header says {h}*{step}={h * step}")
    if expect_shape is not None and (h, w) != tuple(expect_shape):
        raise MessageError(f"image is {h}x{w}, expected {expect_shape[0]}x{expect_shape[1]}")
    arr = np.frombuffer(msg.data, np.uint8).reshape(h, step)[:, : w * 3].reshape(h, w, 3)
    if msg.encoding == "bgr8":
        arr = arr[:, :, ::-1]
    return arr


def joint_state(
    positions: Sequence[float],
    velocities: Sequence[float] | None = None,
    stamp: Time | None = None,
    names: Sequence[str] = JOINT_NAMES,
) -> JointState:
    msg = JointState()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(v) for v in positions]
    if velocities is not None:
        msg.velocity = [float(v) for v in velocities]
    return msg


def joint_positions(msg: JointState, names: Sequence[str] = JOINT_NAMES) -> np.ndarray:
    """Positions of a JointState in the station's joint order, validated.

    ``msg.name`` may be empty (positions in station order) or hold exactly the
    station's joints in any order. Raises MessageError for a wrong count, unknown
    or duplicate names, or non-finite values.
    """
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
    pos: np.ndarray, lower: np.ndarray, upper: np.ndarray, names: Sequence[str] = JOINT_NAMES, tolerance: float = 1e-6
) -> None:
    """MessageError naming the joints outside [lower, upper]."""
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
    sec = int(t // 1)
    return Time(sec=sec, nanosec=int(round((t - sec) * 1e9)) % 1_000_000_000)


__all__ = [
    "MessageError",
    "numpy_to_image",
    "image_to_numpy",
    "joint_state",
    "joint_positions",
    "check_limits",
    "diagnostic",
    "diagnostic_values",
    "stamp_to_seconds",
    "seconds_to_stamp",
    "NUM_JOINTS",
]
