"""`recap station` flags become ROS parameter overrides of the right node; bad values are refused before
anything starts."""

import argparse

import pytest

from recap_bringup import station as bringup


def parse(*argv):
    parser = argparse.ArgumentParser()
    bringup.add_arguments(parser)
    return parser.parse_args(["--sim", *argv])


def test_human_flags_reach_the_scripted_operator():
    flags = bringup.ros_arguments(
        parse("--human-patience", "2.5", "--human-value-drop", "1", "--human-release", "past_best"),
        "intervene",
        "rollout",
    )
    pairs = [flags[i + 1] for i in range(0, len(flags), 2)]
    assert "scripted_operator:human_patience_s:=2.5" in pairs
    assert "scripted_operator:human_value_drop:=1.0" in pairs
    assert "scripted_operator:human_release:=past_best" in pairs
    assert not any("human_value_drop" in p for p in bringup.ros_arguments(parse(), "drive", "demo"))


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2"])
def test_out_of_range_value_drop_is_refused(value, capsys):
    assert bringup.run(parse("--human-value-drop", value)) == 2
    assert "--human-value-drop must be in [0.01, 1]" in capsys.readouterr().err
