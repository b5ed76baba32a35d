"""Parameters declared with descriptors (description, range), validated before a
node creates any subscription, and either applied at runtime or refused (:func:`declare`, :class:`_Guard`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node

from recap_core.station import StationConfig

#: Station parameters (the ``/**`` section): the robot description, fixed while a node runs.
STATION_PARAMETERS = (
    "station_name",
    "joint_names",
    "gripper_joints",
    "joint_lower_limits",
    "joint_upper_limits",
    "joint_max_velocity",
    "cameras",
    "control_rate_hz",
)


class ParameterError(ValueError):
    """A parameter value a node refuses: a startup error, or a refused runtime change."""


@dataclasses.dataclass
class _Runtime:
    """How one mutable parameter is checked and applied."""

    min_value: float | None
    max_value: float | None
    choices: Sequence[str] | None
    validate: Callable[[Any], None] | None
    on_change: Callable[[Any], None] | None


class _Guard:
    """The one on-set-parameters callback of a node.

    It checks a runtime change against the same range and choices as at startup, applies all changes of one
    request only when every one is valid, and refuses everything else (parameters declared read-only, and
    ``use_sim_time``, so a node's time base never changes while it runs). No change reports success and is
    then ignored.
    """

    def __init__(self, node: Node):
        self.runtime: dict[str, _Runtime] = {}
        self.declaring: set[str] = set()
        node.add_on_set_parameters_callback(self)

    def __call__(self, params) -> SetParametersResult:
        changes = []
        for p in params:
            if p.name in self.declaring:  # the startup value, checked by declare() itself
                continue
            if p.name == "use_sim_time":
                return accept(
                    False,
                    "use_sim_time is fixed while the node runs (its time base must not "
                    "change under it): restart the node with use_sim_time:=true|false",
                )
            spec = self.runtime.get(p.name)
            if spec is None:
                return accept(
                    False,
                    f"parameter '{p.name}' is read-only: it applies at startup only; restart the node to change it",
                )
            try:
                check(p.name, p.value, min_value=spec.min_value, max_value=spec.max_value, choices=spec.choices)
                if spec.validate is not None:
                    spec.validate(p.value)
            except (ParameterError, ValueError, TypeError) as exc:
                return accept(False, str(exc))
            changes.append((spec, p.value))
        for spec, value in changes:  # every change of the request is valid: apply them all
            if spec.on_change is not None:
                spec.on_change(value)
        return accept()


def _guard(node: Node) -> _Guard:
    guard = getattr(node, "_recap_parameter_guard", None)
    if guard is None:
        guard = _Guard(node)
        node._recap_parameter_guard = guard
    return guard


def declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    choices: Sequence[str] | None = None,
    on_change: Callable[[Any], None] | None = None,
    validate: Callable[[Any], None] | None = None,
    mutable: bool = False,
) -> Any:
    """Declare ``name`` with a descriptor, check its range/choices, return its value.

    Read-only unless ``on_change`` is given (called with each accepted new
    value) or ``mutable`` is true (the node reads it with ``get_parameter``
    whenever it uses it). ``validate`` raises ParameterError for a runtime
    value the range and choices do not catch (the startup value is the
    caller's to check: a node may start without a usable value and say so).
    """
    guard = _guard(node)
    runtime = on_change is not None or mutable
    desc = ParameterDescriptor(
        description=description if runtime else f"{description} [read-only]", read_only=not runtime
    )
    if choices:
        desc.additional_constraints = f"one of {list(choices)}"
    if min_value is not None and max_value is not None:
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(min_value), to_value=int(max_value), step=0)]
        elif isinstance(default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(min_value), to_value=float(max_value), step=0.0)
            ]
    guard.declaring.add(name)
    try:
        value = node.declare_parameter(name, default, desc).value
    except Exception as exc:  # InvalidParameterTypeException, InvalidParameterValueException
        raise ParameterError(f"parameter '{name}': {exc}") from exc
    finally:
        guard.declaring.discard(name)
    check(name, value, min_value=min_value, max_value=max_value, choices=choices)
    if runtime:
        guard.runtime[name] = _Runtime(min_value, max_value, choices, validate, on_change)
    return value


def check(name: str, value: Any, *, min_value=None, max_value=None, choices=None) -> None:
    if choices is not None and value not in choices:
        raise ParameterError(f"parameter '{name}' is {value!r}; expected one of {list(choices)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if min_value is not None and value < min_value or max_value is not None and value > max_value:
            raise ParameterError(f"parameter '{name}' is {value}; allowed range [{min_value}, {max_value}]")


def declare_station(node: Node, on_change: dict[str, Callable[[Any], None]] | None = None) -> StationConfig:
    """The robot description every node shares (the ``/**`` section of the station YAML).

    Read-only, except the names in ``on_change`` (a node that can apply a new
    value safely, e.g. the gate's velocity limits, passes its callback). A
    change is checked as a whole station description before it is applied.
    """
    on_change = dict(on_change or {})
    unknown = set(on_change) - set(STATION_PARAMETERS)
    if unknown:
        raise ValueError(f"declare_station: not station parameters: {sorted(unknown)}")
    defaults = StationConfig.sim_aloha()
    values: dict[str, Any] = {}

    def validated(name: str):
        """Check a new value of ``name`` as part of the whole station description."""

        def validate(value):
            try:
                StationConfig.from_params({**values, name: value})
            except ValueError as exc:
                raise ParameterError(f"station parameters: {exc}") from exc

        return validate

    def station(name: str, default: Any, description: str, **kwargs) -> Any:
        callback = on_change.get(name)
        if callback is None:
            values[name] = declare(node, name, default, description, **kwargs)
        else:

            def apply(value, name=name, callback=callback):
                values[name] = value
                callback(value)

            values[name] = declare(
                node, name, default, description, on_change=apply, validate=validated(name), **kwargs
            )
        return values[name]

    station("station_name", defaults.station_name, "station name, goes into bags")
    station("joint_names", list(defaults.joint_names), "the model's joints in order (DESIGN.md §4)")
    values["gripper_joints"] = _declare_names_or_none(
        node, "gripper_joints", list(defaults.gripper_joints), "the gripper joints (0 closed .. 1 open)"
    )
    station("joint_lower_limits", list(defaults.lower), "lower position limit per joint (rad; gripper 0..1)")
    station("joint_upper_limits", list(defaults.upper), "upper position limit per joint (rad; gripper 0..1)")
    station("joint_max_velocity", list(defaults.max_velocity), "velocity limit per joint (rad/s; gripper 1/s)")
    station("cameras", list(defaults.cameras), "camera names (camera/<name>/image_raw)")
    station("control_rate_hz", defaults.control_rate_hz, "control rate", min_value=1.0, max_value=1000.0)
    try:
        return StationConfig.from_params(values)
    except ValueError as exc:
        raise ParameterError(f"station parameters: {exc}") from exc


def _declare_names_or_none(node: Node, name: str, default: list[str], description: str) -> list[str]:
    """A read-only list of names that may be empty: a params file's ``[]`` carries no type, so rcl passes it
    as an unset value (None here), which is the empty list (a station without grippers)."""
    return list(declare(node, name, default, description) or [])


def accept(ok: bool = True, reason: str = "") -> SetParametersResult:
    return SetParametersResult(successful=ok, reason=reason)
