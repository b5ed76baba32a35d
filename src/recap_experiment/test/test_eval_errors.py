"""User errors of `recap eval`, `eval-pool`, `experiment` and `operator-eval`: one line on stderr, exit 2, no
traceback; their JSON is strict (null where a figure is undefined) and their readers take that null."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recap_core import cli
from recap_experiment import experiment
from recap_experiment.evaluate import MAX_SEED, EpisodeOutcome, parse_arm, parse_seeds, summarise
from recap_core.testing import recap, refused, strict_json

NOT_A_CHECKPOINT = "/nonexistent/recap-policy"
# what a shell can pass: no NUL; -h / --help (or an abbreviation of it) asks for the help text, no error
ARGUMENT = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=24
).filter(lambda a: not a.startswith(("-h", "--h")))


# ----------------------------------------------------------------------------- recap eval


def test_a_checkpoint_that_is_no_policy_is_named_before_any_episode(tiny_checkpoints, tmp_path, capsys):
    err = refused(capsys, "eval", f"v={tiny_checkpoints['value']}", "--seeds", "1", "--no-progress")
    assert err.startswith("recap eval: arm v: ") and "a value checkpoint, a policy one is needed" in err
    err = refused(capsys, "eval", f"d={tiny_checkpoints['dataset']}", "--seeds", "1", "--no-progress")
    assert "not a checkpoint (it holds a RECAP dataset)" in err
    damaged = shutil.copytree(tiny_checkpoints["policy_a"], tmp_path / "damaged")
    (damaged / "model.safetensors").write_bytes(b"garbage")
    assert "model.safetensors" in refused(capsys, "eval", f"x={damaged}", "--seeds", "1", "--no-progress")
    err = refused(
        capsys,
        "eval",
        f"a={tiny_checkpoints['policy_a']}",
        f"a={tiny_checkpoints['policy_b']}",
        "--seeds",
        "1",
        "--no-progress",
    )
    assert "given twice" in err


def test_bad_seeds_and_arm_options_are_named(tiny_checkpoints, capsys):
    policy = tiny_checkpoints["policy_a"]
    err = refused(capsys, "eval", f"x={policy}", "--seeds", "5-2")
    assert "'5-2'" in err and "empty" in err
    err = refused(capsys, "eval", f"x={policy}:beta=abc", "--seeds", "1")
    assert f"arm 'x={policy}:beta=abc'" in err and "'abc'" in err and "invalid parse_arm value" not in err
    assert "advantage" in refused(capsys, "eval", f"x={policy}:advantage=maybe", "--seeds", "1")
    assert "--max-steps must be >= 1" in refused(capsys, "eval", f"x={policy}", "--seeds", "1", "--max-steps", "0")


def test_parse_seeds_reads_seeds_ranges_and_mixes():
    assert parse_seeds("5-7") == [5, 6, 7] and parse_seeds("1,9") == [1, 9] and parse_seeds("1-3,7") == [1, 2, 3, 7]
    for bad in ("5-2", "", ",", "a-b", "1,1", "1-3,2", f"0-{MAX_SEED + 1}", "0-99999999"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seeds(bad)


@given(text=ARGUMENT | st.text(alphabet="0123456789,- ", max_size=16))
def test_any_seeds_text_gives_distinct_valid_seeds_or_says_what_is_wrong(text):
    try:
        seeds = parse_seeds(text)
    except argparse.ArgumentTypeError as exc:
        assert str(exc).startswith(f"seeds {text!r}: ")
        return
    assert seeds and len(set(seeds)) == len(seeds) and all(0 <= s <= MAX_SEED for s in seeds)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds=ARGUMENT | st.text(alphabet="0123456789,- ", max_size=16), spec=ARGUMENT)
def test_no_seeds_or_arm_spec_makes_recap_eval_print_a_traceback(seeds, spec, capsys):
    for argv in (["eval", f"x={NOT_A_CHECKPOINT}", "--seeds", seeds], ["eval", spec, "--seeds", "1"]):
        capsys.readouterr()
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)


@given(spec=ARGUMENT)
def test_an_arm_spec_parses_or_says_which_spec_is_wrong(spec):
    try:
        arm = parse_arm(spec)
    except argparse.ArgumentTypeError as exc:
        assert str(exc).startswith(f"arm {spec!r}: ")
        return
    assert arm.name and str(arm.checkpoint) and arm.beta >= 0


def test_the_eval_report_is_strict_json_and_out_never_replaces_something_else(tiny_checkpoints, tmp_path, capsys):
    policy = tiny_checkpoints["policy_a"]
    run = [
        "eval",
        f"a={policy}",
        "--seeds",
        "3-4",
        "--task",
        "reach",
        "--max-steps",
        "3",
        "--image-size",
        "32",
        "--threads",
        "1",
        "--conditioning-seeds",
        "0",
        "--no-progress",
    ]
    (tmp_path / "notes.json").write_text('{"mine": true}')
    assert "is not a recap eval report" in refused(capsys, *run, "--out", tmp_path / "notes.json")
    assert "is a directory" in refused(capsys, *run, "--out", tmp_path)
    out = tmp_path / "eval.json"
    assert recap(*run, "--out", out) == 0
    report = strict_json(out.read_text())
    arm = report["arms"]["a"]
    assert arm["successes"] == 0 and arm["mean_time_to_success_s"] is None  # 3 steps solve nothing
    assert arm["time_to_success_ci95"] == [None, None]
    assert "| a | 0/2 (0%)" in capsys.readouterr().out
    assert recap(*run, "--out", out) == 0, "an earlier report is replaced"


def test_a_family_checkpoint_is_evaluated_like_any_policy(family_checkpoint, tmp_path):
    out = tmp_path / "eval.json"
    run = ["eval", f"pi0={family_checkpoint}:beta=2", "--seeds", "5", "--task", "reach", "--max-steps", "3"]
    assert recap(*run, "--image-size", "32", "--threads", "1", "--conditioning-seeds", "0", "--no-progress",
                 "--out", out) == 0  # fmt: skip
    arm = strict_json(out.read_text())["arms"]["pi0"]
    assert arm["beta"] == 2.0 and arm["advantage"] == "positive" and len(arm["outcomes"]) == 1


# ----------------------------------------------------------------------------- readers of null


def _report(seeds, solved):
    outcomes = [EpisodeOutcome(seed, seed in solved, 100 if seed in solved else 400, float("nan")) for seed in seeds]
    arm = {
        "checkpoint": "/ckpt/a",
        "checkpoint_id": "a",
        "beta": 1.0,
        "advantage": "positive",
        "scene_conditioning": None,
        **summarise(outcomes),
        "outcomes": [{"seed": o.seed, "success": o.success, "steps": o.steps, "max_reward": None} for o in outcomes],
    }
    return {
        "seeds": list(seeds),
        "max_steps": 400,
        "task": "t",
        "replan_steps": 25,
        "blend_steps": 8,
        "arms": {"sft": arm, "recap_beta2": {**arm, "checkpoint_id": "b"}},
    }


def test_eval_pool_reads_null_and_writes_strict_json(tmp_path, capsys):
    from recap_core.outputs import write_json

    write_json(tmp_path / "a.json", _report(range(3), set()))  # nothing solved: undefined times
    write_json(tmp_path / "b.json", _report(range(3, 6), set()))
    assert strict_json((tmp_path / "a.json").read_text())["arms"]["sft"]["mean_time_to_success_s"] is None
    out = tmp_path / "pooled.json"
    assert (
        recap("eval-pool", tmp_path / "a.json", tmp_path / "b.json", "--compare", "recap_beta2,sft", "--out", out) == 0
    )
    pooled = strict_json(out.read_text())
    assert pooled["arms"]["sft"]["episodes"] == 6 and pooled["arms"]["sft"]["mean_time_to_success_s"] is None
    assert "n/a" in capsys.readouterr().out
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "not a recap eval report" in refused(capsys, "eval-pool", tmp_path / "list.json")
    broken = _report(range(3), set())
    del broken["arms"]["sft"]["outcomes"][0]["seed"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    assert "arm sft is not as `recap eval --out` writes" in refused(capsys, "eval-pool", tmp_path / "broken.json")


def test_the_experiment_report_reads_null_and_writes_strict_json(tmp_path):
    from recap_core.data import make_synthetic_dataset
    from recap_core.outputs import write_json
    from recap_experiment.experiment_report import write_report

    make_synthetic_dataset(tmp_path / "dataset", num_episodes=2, seed=0, image_size=8, max_episode_length=20)
    write_json(tmp_path / "eval.json", _report(range(4), set()))
    report = write_report(tmp_path, experiment.PROFILES["quick"], {"01": 1.0}, 60.0)
    summary = strict_json((tmp_path / "summary.json").read_text())
    assert summary["arms"]["sft"]["mean_time_to_success_s"] is None
    assert summary["beyond_95_intervals"]["recap_beats_sft_on_throughput"] is False
    assert "n/a [n/a, n/a]" in report.read_text()


# ----------------------------------------------------------------------------- recap experiment --out


def test_experiment_refuses_an_out_that_is_not_its_run(tmp_path, monkeypatch, capsys, fake_stages):
    commands = {}
    fake_stages(commands)
    ran = commands
    monkeypatch.setattr(experiment, "write_report", lambda *a, **k: tmp_path / "report.md")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for extra in ([], ["--resume"]):
        err = refused(capsys, "experiment", "--quick", "--out", other, *extra)
        assert "1 other entry (notes.txt)" in err and "--overwrite" in err
    assert not ran and sorted(p.name for p in other.iterdir()) == ["notes.txt"]

    run = tmp_path / "run"
    assert recap("experiment", "--quick", "--out", run) == 0 and ran
    ran.clear()
    err = refused(capsys, "experiment", "--quick", "--out", run)
    assert "a recap experiment run" in err and "--resume" in err and not ran
    assert "give one of them" in refused(capsys, "experiment", "--quick", "--out", run, "--resume", "--overwrite")
    assert recap("experiment", "--quick", "--out", run, "--resume") == 0 and ran
    strict_json((run / "profile.json").read_text())
    (run / "logs" / "stale.done").write_text("1\n")
    assert recap("experiment", "--quick", "--out", run, "--overwrite") == 0
    assert not (run / "logs" / "stale.done").exists()


def test_experiment_stages_replace_what_an_unfinished_attempt_left(tmp_path, monkeypatch, fake_stages):
    """A stage runs again only when it did not finish; its training command must then accept its --out: it
    replaces it, or (SFT's later candidates, checkpoints of one run) continues the run saved there."""
    commands = {}
    fake_stages(commands)
    monkeypatch.setattr(experiment, "write_report", lambda *a, **k: tmp_path / "report.md")
    assert recap("experiment", "--quick", "--out", tmp_path / "run") == 0
    trains = [name for name, argv in commands.items() if argv[0] in ("train-value", "train-policy", "iterate")]
    assert len(trains) >= 8 and all("--overwrite" in commands[name] for name in trains if name != "07_sft_10")
    assert "--resume" in commands["07_sft_10"] and "--overwrite" not in commands["07_sft_10"]


# ----------------------------------------------------------------------------- recap operator-eval


def test_operator_eval_output_is_checked_before_any_episode(tmp_path, capsys):
    err = refused(
        capsys, "operator-eval", "--seeds", "1", "--max-steps", "1", "--qualities", "1.0", "--output", tmp_path
    )
    assert "--output" in err and "is a directory" in err
    assert "--qualities must be in [0, 1]" in refused(capsys, "operator-eval", "--qualities", "2")
