"""recap experiment's profiles and the command-line overrides (the full run is test/test_experiment.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from recap_experiment import experiment


def parse(*argv):
    parser = argparse.ArgumentParser()
    experiment.add_arguments(parser)
    return parser.parse_args(list(argv))


def option(argv: list, flag: str) -> str:
    """The value that follows ``flag`` in ``argv`` (ValueError when the flag is missing)."""
    return argv[argv.index(flag) + 1]


def test_the_command_line_overrides_the_profile_and_nothing_else():
    full = experiment.PROFILES["full"]
    assert experiment.resolve_profile(parse()) == full and full.rollout_positives == "unforced"
    profile = experiment.resolve_profile(parse("--rollout-positives", "interventions", "--eval-seeds", "250"))
    assert profile.rollout_positives == "interventions" and profile.test_seeds == (full.test_seeds[0], 250)
    assert profile.policy_steps == full.policy_steps and profile.demos == full.demos
    assert experiment.resolve_profile(parse("--quick")).name == "quick"
    strict = experiment.resolve_profile(parse("--positive-fraction", "0.2"))
    assert strict.positive_fraction == 0.2 and strict.pretrain_positive_fraction == full.pretrain_positive_fraction


def test_bad_overrides_are_clear_errors():
    with pytest.raises(ValueError, match=">= 1 eval seed"):
        experiment.resolve_profile(parse("--eval-seeds", "0"))
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        parse("--rollout-positives", "everything")
    for fraction in ("0", "1", "nan"):
        with pytest.raises(ValueError, match="positive_fraction must be in"):
            experiment.resolve_profile(parse("--positive-fraction", fraction))
    with pytest.raises(ValueError, match="rollout_positives must be one of"):
        experiment.Profile(
            "x",
            "tiny",
            demos=((1.0, 1),),
            rollouts_per_iteration=1,
            iterations=1,
            max_steps=10,
            test_seeds=(0, 1),
            value_pretrain_steps=1,
            policy_pretrain_steps=1,
            value_steps=1,
            policy_steps=1,
            batch_size=2,
            rollout_positives="all",
        )


def test_a_bad_override_stops_the_run_before_any_stage(tmp_path, capsys):
    from recap_core import cli

    assert cli.main(["experiment", "--eval-seeds", "-3", "--out", str(tmp_path / "x")]) == 2
    assert "eval seed" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_iterations_override_and_a_resumed_evaluation_is_redone_only_when_asked_something_else(tmp_path):
    assert experiment.resolve_profile(parse("--iterations", "3")).iterations == 3
    assert experiment.resolve_profile(parse("--rollouts", "40")).rollouts_per_iteration == 40
    with pytest.raises(ValueError, match=">= 1 rollout per iteration"):
        experiment.resolve_profile(parse("--rollouts", "0"))
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        experiment.resolve_profile(parse("--iterations", "0"))
    ckpt = tmp_path / "checkpoints"
    arms = [f"sft={ckpt / 'iter_0' / 'policy'}", f"recap_beta2={ckpt / 'iter_2' / 'policy'}:beta=2"]
    report = tmp_path / "eval.json"
    report.write_text(
        json.dumps(
            {
                "seeds": [5, 6, 7],
                "arms": {
                    "sft": {"checkpoint": str(ckpt / "iter_0" / "policy"), "beta": 1.0},
                    "recap_beta2": {"checkpoint": str(ckpt / "iter_2" / "policy"), "beta": 2.0},
                },
            }
        )
    )
    assert experiment._evaluated(report, arms, [5, 6, 7])
    assert not experiment._evaluated(report, arms, [5, 6, 7, 8])  # more seeds asked
    assert not experiment._evaluated(report, arms[:1], [5, 6, 7])  # other arms
    assert not experiment._evaluated(report, [arms[0], arms[1].replace("iter_2", "iter_3")], [5, 6, 7])
    assert not experiment._evaluated(report, [arms[0], arms[1].replace("beta=2", "beta=1.5")], [5, 6, 7])
    # the advantage condition counts: an AWR checkpoint's own is no text; reports without the field said positive
    (ckpt / "iter_2" / "awr").mkdir(parents=True)
    (ckpt / "iter_2" / "awr" / "provenance.json").write_text(json.dumps({"mode": "awr"}))
    awr_arms = [f"awr={ckpt / 'iter_2' / 'awr'}", f"awr_positive={ckpt / 'iter_2' / 'awr'}:advantage=positive"]
    awr_entry = {"checkpoint": str(ckpt / "iter_2" / "awr"), "beta": 1.0}
    report.write_text(
        json.dumps(
            {
                "seeds": [5],
                "arms": {
                    "awr": {**awr_entry, "advantage": None},
                    "awr_positive": {**awr_entry, "advantage": "positive"},
                },
            }
        )
    )
    assert experiment._evaluated(report, awr_arms, [5])
    report.write_text(json.dumps({"seeds": [5], "arms": {"awr": awr_entry, "awr_positive": awr_entry}}))
    assert not experiment._evaluated(report, awr_arms, [5])  # written when AWR was prompted positive
    report.write_text("{not json")
    assert not experiment._evaluated(report, arms, [5, 6, 7])
    assert not experiment._evaluated(tmp_path / "missing.json", arms, [5, 6, 7])


def test_mix_and_takeover_overrides_reach_the_fine_tunes_and_the_awr_baseline(tmp_path, stage_commands):
    full = experiment.PROFILES["full"]
    assert full.policy_mix == ("demo=0.5", "autonomous=0") and full.takeover_negative == 75  # measured settings
    profile = experiment.resolve_profile(parse("--policy-mix", "demo=0.3", "--takeover-negative", "40"))
    assert profile.policy_mix == ("demo=0.3",) and profile.takeover_negative == 40
    paper = experiment.resolve_profile(parse("--policy-mix", "none", "--takeover-negative", "0"))
    assert paper.policy_mix == () and paper.takeover_negative == 0
    with pytest.raises(ValueError, match="policy_mix: --mix shares add up to"):
        experiment.resolve_profile(parse("--policy-mix", "demo=0.7", "--policy-mix", "correction=0.7"))
    with pytest.raises(ValueError, match="takeover_negative must be >= 0"):
        experiment.resolve_profile(parse("--takeover-negative", "-5"))
    commands = stage_commands(tmp_path, "--policy-mix", "demo=0.3", "--takeover-negative", "40")
    for stage in ("13_iterate", "23_iterate"):
        argv = commands[stage]
        assert "--policy-mix=demo=0.3" in argv and option(argv, "--takeover-negative") == "40"
    assert "--mix=demo=0.3" in commands["24_awr_positive"] and "--mix=demo=0.3" in commands["25_awr_T0.05_w20"]
    assert option(commands["05b_policy_pretrain_plain"], "--mix") == "demo=1"  # the pretraining's mix stays
    assert json.loads((tmp_path / "profile.json").read_text())["policy_mix"] == ["demo=0.3"]


def test_the_still_joint_threshold_reaches_only_the_pretrained_policy(tmp_path, stage_commands):
    assert experiment.PROFILES["full"].absolute_still_joints == 0.01  # the measured setting
    assert experiment.resolve_profile(parse("--absolute-still-joints", "0")).absolute_still_joints == 0
    with pytest.raises(ValueError, match="absolute_still_joints must be >= 0"):
        experiment.resolve_profile(parse("--absolute-still-joints", "-0.1"))
    commands = stage_commands(tmp_path, "--absolute-still-joints", "0.03")
    pretraining = ("05_policy_pretrain", "05b_policy_pretrain_plain", "05e_policy_pretrain_paper")
    for name in pretraining:
        assert option(commands[name], "--absolute-still-joints") == "0.03"
    # the fine-tunes inherit their init's mask (train-policy keeps a checkpoint's), so nothing else passes it
    assert not [
        name for name, argv in commands.items() if name not in pretraining and "--absolute-still-joints" in argv
    ]


def test_value_folds_reach_v_pre_and_every_iteration(tmp_path, stage_commands):
    assert experiment.PROFILES["full"].value_folds == 2 and experiment.PROFILES["quick"].value_folds == 2
    assert experiment.resolve_profile(parse("--value-folds", "0")).value_folds == 0
    with pytest.raises(ValueError, match="value_folds: --folds must be 0"):
        experiment.resolve_profile(parse("--value-folds", "1"))
    commands = stage_commands(tmp_path, "--value-folds", "3")
    argv = commands["03_value_pretrain"]
    assert option(argv, "--folds") == "3"
    for stage in ("06_iteration_0", "13_iterate", "23_iterate"):
        argv = commands[stage]
        assert option(argv, "--value-folds") == "3"
    assert json.loads((tmp_path / "profile.json").read_text())["value_folds"] == 3


def test_the_awr_baseline_fine_tunes_at_the_learning_rate_of_the_recap_iterations(tmp_path, stage_commands):
    commands = stage_commands(tmp_path)
    rates = {
        stage: float(option(commands[stage], "--lr"))
        for stage in ("06_iteration_0", "13_iterate", "23_iterate", "24_awr_positive", "25_awr_T0.05_w20")
    }
    assert set(rates.values()) == {experiment.PROFILES["quick"].fine_tune_lr}, rates
    with pytest.raises(ValueError, match="fine_tune_lr must be in"):
        dataclasses.replace(experiment.PROFILES["full"], fine_tune_lr=0.0)


def test_the_rollouts_get_the_profiles_release_rule_and_the_command_line_overrides_it(tmp_path, stage_commands):
    assert experiment.PROFILES["full"].human_release == "past_best"
    commands = stage_commands(tmp_path)
    rules = {stage: option(commands[stage], "--human-release") for stage in ("11_rollouts", "21_rollouts")}
    assert set(rules.values()) == {experiment.PROFILES["quick"].human_release}, rules
    commands = stage_commands(tmp_path / "override", "--human-release", "past_best")
    assert option(commands["21_rollouts"], "--human-release") == "past_best"
    with pytest.raises(ValueError, match="human_release must be one of"):
        dataclasses.replace(experiment.PROFILES["full"], human_release="never")


def test_each_awr_checkpoint_folder_is_named_as_its_arm(tmp_path, stage_commands):
    commands = stage_commands(tmp_path)
    last = tmp_path.resolve() / "checkpoints" / "iter_2"
    for stage, init, folder in (
        ("24_awr_positive", "pi_pre", last / "awr_positive"),
        ("25_awr_T0.05_w20", "pi_pre_plain", last / "awr_probes" / "T0.05_w20"),
    ):
        assert option(commands[stage], "--init").endswith(f"checkpoints/{init}")
        assert option(commands[stage], "--out") == str(folder)
    evaluated = [a for a in commands["90_eval"] if a.startswith("awr")]
    assert evaluated == [f"awr={last / 'awr'}", f"awr_positive={last / 'awr_positive'}:advantage=positive"]


def test_a_resumed_run_from_before_the_rename_keeps_its_awr_checkpoints_and_evaluation(tmp_path):
    """Runs that kept the hybrid in ``awr`` and the paper's AWR in ``awr_plain`` are renamed, not redone."""
    out = tmp_path / "run"
    last, logs = out / "checkpoints" / "iter_2", out / "logs"
    for folder, mode in (("awr", "hybrid"), ("awr_plain", "paper")):
        (last / folder).mkdir(parents=True)
        (last / folder / "provenance.json").write_text(json.dumps({"mode": "awr", "which": mode}))
    logs.mkdir(parents=True)
    for stage in ("24_awr", "25_awr_plain"):
        (logs / f"{stage}.done").write_text("12.0\n")
        (logs / f"{stage}.log").write_text("$ recap train-policy\n")
    (out / "eval.json").write_text(
        json.dumps(
            {
                "seeds": [1],
                "arms": {
                    "awr": {"checkpoint": str(last / "awr_plain"), "beta": 1.0, "advantage": None},
                    "awr_positive": {"checkpoint": str(last / "awr"), "beta": 1.0, "advantage": "positive"},
                },
            }
        )
    )
    experiment.rename_awr_folders(out)
    assert json.loads((last / "awr_positive" / "provenance.json").read_text())["which"] == "hybrid"
    assert json.loads((last / "awr" / "provenance.json").read_text())["which"] == "paper"
    assert not (last / "awr_plain").exists()
    assert sorted(p.name for p in logs.iterdir()) == [
        "24_awr_positive.done",
        "24_awr_positive.log",
        "25_awr.done",
        "25_awr.log",
    ]
    arms = [f"awr={last / 'awr'}", f"awr_positive={last / 'awr_positive'}:advantage=positive"]
    assert experiment._evaluated(out / "eval.json", arms, [1])
    experiment.rename_awr_folders(out)  # a second resume finds nothing to rename
    assert json.loads((last / "awr" / "provenance.json").read_text())["which"] == "paper"
