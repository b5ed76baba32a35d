"""The experiment's protocol: validation and test seeds apart, fresh test seeds, the profile's hash, the arms."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from recap_experiment import experiment
from recap_experiment.protocol import (
    QUICK_TEST_RANGE,
    USED_SEED_RANGES,
    ProtocolError,
    check_seed_ranges,
    profile_sha256,
    protocol_block,
    training_seed_ranges,
)


def parse(*argv):
    parser = argparse.ArgumentParser()
    experiment.add_arguments(parser)
    return parser.parse_args(list(argv))


def option(argv: list, flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_the_protocol_block_names_both_ranges_the_pipeline_seed_and_the_profile_hash():
    full = experiment.PROFILES["full"]
    block = protocol_block(full, 2)
    assert block["validation_seeds"] == [100000, 100199] and block["test_seeds"] == [200000, 200199]
    assert block["pipeline_seed"] == 2 and len(block["profile_sha256"]) == 64
    assert block["training_seeds"][0] == [20000, 20035, "demonstrations"]
    assert block["training_seeds"][1] == [21000, 21039, "iteration 1 rollouts"]
    # the hash is the resolved profile's: the same recipe, the same hash, whatever the pipeline seed
    assert protocol_block(full, 0)["profile_sha256"] == block["profile_sha256"] == profile_sha256(full)
    changed = experiment.resolve_profile(parse("--awr-grid", "0.1:10"))
    assert profile_sha256(changed) != profile_sha256(full)
    assert profile_sha256(experiment.resolve_profile(parse())) == profile_sha256(full)


def test_the_full_profiles_test_seeds_are_a_range_never_used_and_apart_from_validation():
    full = experiment.PROFILES["full"]
    for seed in range(10):
        experiment.check_protocol(full, seed)
    test = (full.test_seeds[0], full.test_seeds[0] + full.test_seeds[1] - 1)
    assert all(test[0] > used[1] or test[1] < used[0] for used in (*USED_SEED_RANGES, QUICK_TEST_RANGE))
    # the ranges every earlier decision was taken on are listed: 100000-100799
    assert any(lo <= 100000 and 100799 <= hi for lo, hi, _ in USED_SEED_RANGES)
    experiment.check_protocol(experiment.PROFILES["quick"], 0)


@pytest.mark.parametrize(
    "validation, test, message",
    [
        ((100000, 100199), (100100, 100299), "overlap the test seeds"),
        ((100000, 100199), (100500, 100699), "overlap seeds used before"),
        ((100000, 100199), (300000, 300199), "overlap seeds used before"),  # the quick profile's
        ((0, 9), (200000, 200199), "overlap the demonstrations"),
        ((100000, 100199), (1000, 1009), "overlap the iteration 1 rollouts"),
        ((100000, 99999), (200000, 200199), "non-empty"),
    ],
)
def test_seed_ranges_that_break_the_protocol_are_refused(validation, test, message):
    training = training_seed_ranges(experiment.PROFILES["full"], 0)
    with pytest.raises(ProtocolError, match=message):
        check_seed_ranges(validation, test, training, used=USED_SEED_RANGES + (QUICK_TEST_RANGE,))


def test_training_scenes_must_not_overlap_each_other_or_the_evaluation():
    full = experiment.PROFILES["full"]
    with pytest.raises(ProtocolError, match="training seeds overlap"):  # 1000 rollouts run into iteration 2's
        experiment.check_protocol(dataclasses.replace(full, rollouts_per_iteration=1001), 0)
    with pytest.raises(ProtocolError, match="validation seeds .* overlap the demonstrations"):
        experiment.check_protocol(full, 10)  # its demonstrations would start at 100000


def test_a_run_that_breaks_the_protocol_stops_before_any_stage(tmp_path, capsys):
    from recap_core import cli

    assert cli.main(["experiment", "--quick", "--pipeline-seed", "10", "--out", str(tmp_path / "x")]) == 2
    assert "overlap" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert cli.main(["experiment", "--pipeline-seed", "-1", "--out", str(tmp_path / "x")]) == 2
    assert cli.main(["experiment", "--quick", "--pipeline-seeds", "0", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_the_arms_command_lines(tmp_path, stage_commands):
    quick = experiment.PROFILES["quick"]
    c = stage_commands(tmp_path, best={"sft_steps_10": 50.0, "awr_T0.2_w5": 30.0})
    ckpt = tmp_path.resolve() / "checkpoints"
    last = ckpt / "iter_2"
    # sft: one run from pi_pre on the demonstrations, indicator positive, a checkpoint at each candidate
    first, second = c["07_sft_5"], c["07_sft_10"]
    assert option(first, "--mode") == "sft" and option(first, "--mix") == "demo=1"
    assert option(first, "--init") == str(ckpt / "pi_pre") and option(first, "--steps") == "10"
    assert option(first, "--stop-at") == "5" and option(second, "--stop-at") == "10" and "--resume" in second
    assert option(first, "--lr") == str(quick.fine_tune_lr)
    # hg_dagger: supervised from pi_pre_plain, the demonstrations and the corrections, the fine-tunes' mix
    hg = c["26_hg_dagger"]
    assert option(hg, "--mode") == "bc" and option(hg, "--init") == str(ckpt / "pi_pre_plain")
    assert "--mix=demo=0.5" in hg and "--mix=autonomous=0" in hg
    assert option(hg, "--steps") == str(quick.policy_steps) and option(hg, "--out") == str(last / "hg_dagger")
    # awr: one probe per grid point, from pi_pre_plain
    for t, w in quick.awr_grid:
        probe = c[f"25_awr_T{t:g}_w{w:g}"]
        assert option(probe, "--mode") == "awr" and option(probe, "--init") == str(ckpt / "pi_pre_plain")
        assert (float(option(probe, "--awr-temperature")), float(option(probe, "--awr-max-weight"))) == (t, w)
    # recap_paper: N = T for the pretraining labels, corrections forced positive, all the data
    pre_label = c["05d_label_pretrain_paper"]
    assert int(option(pre_label, "--lookahead")) >= 10 * quick.max_steps
    assert option(pre_label, "--value") == str(ckpt / "V_pre")
    assert option(c["05e_policy_pretrain_paper"], "--mode") == "recap"
    label = c["28_label_paper"]
    assert option(label, "--rollout-positives") == "advantage" and option(label, "--takeover-negative") == "0"
    assert option(label, "--value") == str(last / "value") and label[1] == str(tmp_path.resolve() / "dataset_paper")
    paper = c["29_recap_paper"]
    assert option(paper, "--init") == str(ckpt / "pi_pre_paper") and not [a for a in paper if a.startswith("--mix")]
    # the validation seeds choose, the test seeds evaluate every arm once
    validation = c["80_validation"]
    assert option(validation, "--seeds") == "100000-100001" and option(validation, "--conditioning-seeds") == "0"
    assert not [a for a in validation if a.startswith(("recap", "hg_dagger"))]
    test = c["90_eval"]
    assert option(test, "--seeds") == "300000-300002"
    arms = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in test[1 : test.index("--seeds")]}
    assert list(arms) == [
        "sft",
        "hg_dagger",
        "awr",
        "awr_positive",
        "recap_paper",
        "recap_beta1",
        "recap_beta2",
        "iter_1",
    ]
    assert arms["sft"] == str(ckpt / "sft" / "steps_10") and arms["awr"] == str(last / "awr")
    assert arms["recap_paper"] == f"{last / 'recap_paper'}:beta=2"
    # the hybrid takes the weighting the validation seeds chose
    hybrid = c["24_awr_positive"]
    assert (option(hybrid, "--awr-temperature"), option(hybrid, "--awr-max-weight")) == ("0.2", "5.0")
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["sft"]["steps"] == 10 and selection["awr"]["chosen"] == "awr_T0.2_w5"
    assert selection["awr"]["probes"] == len(quick.awr_grid)
    report = c["report"]
    assert set(report["protocol"]) >= {"validation_seeds", "test_seeds", "pipeline_seed", "profile_sha256"}
    assert report["protocol"]["test_seeds"] == [300000, 300002] and report["protocol"]["pipeline_seed"] == 0
    assert set(report["costs"]) == {
        "sft",
        "hg_dagger",
        "awr",
        "awr_positive",
        "recap_paper",
        "recap_beta1",
        "recap_beta2",
    }
    assert "80_validation" in report["costs"]["awr"]["tuning_stages"]


def test_ties_on_validation_go_to_the_fewest_steps_and_the_grids_first_probe(tmp_path, stage_commands):
    stage_commands(tmp_path)  # every candidate at 0 successes/h
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["sft"]["steps"] == 5 and selection["awr"]["chosen"] == "awr_T0.05_w20"


def test_a_pipeline_seed_moves_the_training_scenes_and_the_training_seeds_not_the_evaluation(tmp_path, stage_commands):
    c = stage_commands(tmp_path, "--pipeline-seed", "3")
    assert option(c["01_demos_0_q1"], "--seed") == "30000" and option(c["01_demos_1_q0.4"], "--seed") == "30002"
    assert option(c["11_rollouts"], "--seed") == "31000" and option(c["21_rollouts"], "--seed") == "32000"
    trains = [a for n, a in c.items() if n != "report" and a[0] in ("train-value", "train-policy", "iterate")]
    assert trains and all(option(a, "--seed") == "3" for a in trains)
    assert option(c["90_eval"], "--seeds") == "300000-300002"
    assert option(c["80_validation"], "--seeds") == "100000-100001"


def test_pipeline_seeds_run_complete_runs_into_their_own_folders_and_pool_them(tmp_path, monkeypatch, fake_stages):
    commands: dict = {}
    fake_stages(commands)
    outs = []
    monkeypatch.setattr(experiment, "write_report", lambda out, *a, **k: outs.append((out, k["protocol"])) or out)
    pooled = []
    monkeypatch.setattr(experiment, "write_pooled_report", lambda out, runs: pooled.append(runs) or out / "report.md")
    out = tmp_path / "seeds"
    assert experiment.run(parse("--quick", "--out", str(out), "--pipeline-seed", "1", "--pipeline-seeds", "2")) == 0
    assert [(o.name, p["pipeline_seed"]) for o, p in outs] == [("seed_1", 1), ("seed_2", 2)]
    assert len({p["profile_sha256"] for _, p in outs}) == 1
    assert [r.name for r in pooled[0]] == ["seed_1", "seed_2"]
    assert json.loads((out / "pipeline.json").read_text())["pipeline_seeds"] == [1, 2]
    assert (out / "seed_2" / "profile.json").is_file()
    # the whole directory is one experiment now: a second start is refused, --resume continues every run
    from recap_core.errors import UserError

    with pytest.raises(UserError, match="already holds a recap experiment run"):
        experiment.run(parse("--quick", "--out", str(out), "--pipeline-seeds", "2"))
    assert (
        experiment.run(parse("--quick", "--out", str(out), "--pipeline-seed", "1", "--pipeline-seeds", "2", "--resume"))
        == 0
    )


def test_a_run_records_each_test_evaluation(tmp_path):
    protocol = protocol_block(experiment.PROFILES["quick"], 0)
    assert len(experiment._record_test_evaluation(tmp_path, protocol, True)) == 1
    assert len(experiment._record_test_evaluation(tmp_path, protocol, False)) == 1  # skipped on resume: the same
    assert len(experiment._record_test_evaluation(tmp_path, {**protocol, "profile_sha256": "x"}, True)) == 2
