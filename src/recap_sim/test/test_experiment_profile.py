"""recap experiment's profiles and the command-line overrides (the full run is test/test_experiment.py)."""
from __future__ import annotations

import argparse

import pytest

from recap_sim import experiment


def parse(*argv):
    parser = argparse.ArgumentParser()
    experiment.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_command_line_overrides_the_profile_and_nothing_else():
    full = experiment.PROFILES["full"]
    assert experiment.resolve_profile(parse()) == full and full.rollout_positives == "advantage"
    profile = experiment.resolve_profile(parse("--rollout-positives", "interventions", "--eval-seeds", "250"))
    assert profile.rollout_positives == "interventions" and profile.eval_seeds == (full.eval_seeds[0], 250)
    assert profile.policy_steps == full.policy_steps and profile.demos == full.demos
    assert experiment.resolve_profile(parse("--quick")).name == "quick"


def test_bad_overrides_are_clear_errors():
    with pytest.raises(ValueError, match=">= 1 eval seed"):
        experiment.resolve_profile(parse("--eval-seeds", "0"))
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        parse("--rollout-positives", "everything")
    with pytest.raises(ValueError, match="rollout_positives must be one of"):
        experiment.Profile("x", "tiny", demos=((1.0, 1),), rollouts_per_iteration=1, iterations=1, max_steps=10,
                           eval_seeds=(0, 1), value_pretrain_steps=1, policy_pretrain_steps=1, value_steps=1,
                           policy_steps=1, batch_size=2, rollout_positives="all")


def test_a_bad_override_stops_the_run_before_any_stage(tmp_path, capsys):
    assert experiment.run(parse("--eval-seeds", "-3", "--out", str(tmp_path / "x"))) == 2
    assert "eval seed" in capsys.readouterr().err and not (tmp_path / "x").exists()
