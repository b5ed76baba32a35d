"""Every parameter of every node is either applied at runtime or refused, as docs/design.md's table says.

Each node runs as a real process; the test tries a new value for every one of
its parameters through the standard SetParameters service. A change that is
accepted must be one the table lists (and must read back); one the table does
not list must be refused with a reason and leave the old value. ``use_sim_time``
is refused everywhere.
"""

from __future__ import annotations

import pathlib
import re

import pytest
from rcl_interfaces.msg import ParameterType

from recap_bringup import station_sim_yaml
from station_nodes import EVERY_NODE

pytestmark = pytest.mark.ros

DESIGN = pathlib.Path(__file__).resolve().parents[1] / "docs" / "design.md"
STATION_YAML = station_sim_yaml()

NODES = EVERY_NODE

#: Values a valid change cannot be built from generically: the table's claim for these is tested elsewhere
#: (checkpoint hot reload in the policy and value node tests; policy_server in test_policy_remote.py).
NOT_GENERIC = {"checkpoint", "policy_server"}


def documented_runtime_parameters() -> dict[str, set[str]]:
    text = DESIGN.read_text(encoding="utf-8")
    section = text.split("### Runtime parameters", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        params = set(re.findall(r"`([a-z_]+)`", cells[1]))
        for node in re.findall(r"`([a-z_]+)`", cells[0]):
            table[node] = params
    return table


def test_the_table_names_every_node():
    assert set(documented_runtime_parameters()) == set(NODES)


def another_value(value, descriptor):
    """A value of the same type that differs from ``value`` and is valid by the descriptor where it can be."""
    kind = descriptor.type
    choices = re.findall(r"'([^']*)'", descriptor.additional_constraints or "")
    if kind == ParameterType.PARAMETER_BOOL:
        return not value
    if kind == ParameterType.PARAMETER_INTEGER:
        r = descriptor.integer_range[0] if descriptor.integer_range else None
        return value + 1 if r is None or value + 1 <= r.to_value else value - 1
    if kind == ParameterType.PARAMETER_DOUBLE:
        r = descriptor.floating_point_range[0] if descriptor.floating_point_range else None
        if r is None:
            return value * 0.5 + 0.25
        return (value + r.from_value) / 2 if value > r.from_value else (value + r.to_value) / 2
    if kind == ParameterType.PARAMETER_STRING:
        others = [c for c in choices if c != value]
        return others[0] if others else value + "_changed"
    if kind == ParameterType.PARAMETER_DOUBLE_ARRAY:
        return [v * 0.9 for v in value]
    if kind == ParameterType.PARAMETER_STRING_ARRAY:
        return list(reversed(value)) + ["extra"]
    if kind == ParameterType.PARAMETER_INTEGER_ARRAY:
        return [v + 1 for v in value]
    pytest.skip(f"no generic value for parameter type {kind}")


@pytest.mark.parametrize("node_name", sorted(NODES))
def test_every_parameter_is_applied_or_refused(node_process, probe, tmp_path, node_name):
    module, extra = NODES[node_name]
    if node_name == "recorder":
        extra = {"output_dir": str(tmp_path / "bags")}
    proc = node_process(module, params_files=[STATION_YAML], params=extra)
    runtime = documented_runtime_parameters()[node_name]
    fqn = f"/{node_name}"
    params = None
    for _ in range(60):
        try:
            params = probe.parameters(fqn, timeout=2.0)
            break
        except TimeoutError:
            assert proc.alive(), proc.output()
    assert params, f"{fqn} never offered its parameters: {proc.output()}"
    missing = runtime - set(params)
    assert not missing, f"the table lists parameters {node_name} does not have: {missing}"

    accepted, refused = set(), set()
    for name, (value, descriptor) in sorted(params.items()):
        if name in NOT_GENERIC or name.startswith("qos_overrides."):
            continue
        new = another_value(value, descriptor)
        result = probe.set_parameters(fqn, {name: new})[0]
        now = probe.get_parameter(fqn, name)
        if result.successful:
            accepted.add(name)
            assert now == pytest.approx(new) if isinstance(new, (float, list)) else now == new, name
        else:
            refused.add(name)
            assert result.reason, f"{name}: refused without a reason"
            assert now == (pytest.approx(value) if isinstance(value, (float, list)) else value), (
                f"{name}: refused, but the value changed"
            )
    assert "use_sim_time" in refused
    assert accepted <= runtime, f"{node_name} accepted parameters the table does not list: {accepted - runtime}"
    generic = runtime - NOT_GENERIC
    if node_name == "leader_arms":  # the station YAML engages by the Joy deadman, which refuses `engaged`
        generic.discard("engaged")
    assert generic <= accepted, f"{node_name} refused parameters the table lists as runtime: {generic - accepted}"
    assert proc.alive(), proc.output()
