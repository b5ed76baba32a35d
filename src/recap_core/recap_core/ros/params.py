"""Parameters declared with descriptors (description, range) and validated
before a node creates any subscription: a bad value is a clear startup error."""
from __future__ import annotations

from typing import Any, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node

from recap_core.station import StationConfig


class ParameterError(ValueError):
    """A parameter value a node refuses; raised at startup, before any subscription."""


def declare(node: Node, name: str, default: Any, description: str, *,
            min_value: float | None = None, max_value: float | None = None,
            choices: Sequence[str] | None = None, read_only: bool = False) -> Any:
    """Declare ``name`` with a descriptor, check its range/choices, return its value."""
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if choices:
        desc.additional_constraints = f"one of {list(choices)}"
    if min_value is not None and max_value is not None:
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(min_value), to_value=int(max_value), step=0)]
        elif isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(min_value),
                                                            to_value=float(max_value), step=0.0)]
    try:
        value = node.declare_parameter(name, default, desc).value
    except Exception as exc:  # InvalidParameterTypeException, InvalidParameterValueException
        raise ParameterError(f"parameter '{name}': {exc}") from exc
    check(name, value, min_value=min_value, max_value=max_value, choices=choices)
    return value


def check(name: str, value: Any, *, min_value=None, max_value=None, choices=None) -> None:
    if choices is not None and value not in choices:
        raise ParameterError(f"parameter '{name}' is {value!r}; expected one of {list(choices)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if min_value is not None and value < min_value or max_value is not None and value > max_value:
            raise ParameterError(f"parameter '{name}' is {value}; allowed range [{min_value}, {max_value}]")


def declare_station(node: Node) -> StationConfig:
    """The robot description every node shares (the ``/**`` section of the station YAML)."""
    defaults = StationConfig.from_yaml()
    values = {
        "station_name": declare(node, "station_name", defaults.station_name, "station name, goes into bags"),
        "joint_names": declare(node, "joint_names", list(defaults.joint_names), "14 joints, DESIGN.md §4 order"),
        "joint_lower_limits": declare(node, "joint_lower_limits", list(defaults.lower),
                                      "lower position limit per joint (rad; gripper 0..1)"),
        "joint_upper_limits": declare(node, "joint_upper_limits", list(defaults.upper),
                                      "upper position limit per joint (rad; gripper 0..1)"),
        "joint_max_velocity": declare(node, "joint_max_velocity", list(defaults.max_velocity),
                                      "velocity limit per joint (rad/s; gripper 1/s)"),
        "cameras": declare(node, "cameras", list(defaults.cameras), "camera names (camera/<name>/image_raw)"),
        "control_rate_hz": declare(node, "control_rate_hz", defaults.control_rate_hz, "control rate",
                                   min_value=1.0, max_value=1000.0),
    }
    try:
        return StationConfig.from_params(values)
    except ValueError as exc:
        raise ParameterError(f"station parameters: {exc}") from exc


def accept(ok: bool = True, reason: str = "") -> SetParametersResult:
    return SetParametersResult(successful=ok, reason=reason)
