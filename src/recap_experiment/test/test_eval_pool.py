"""recap eval-pool: evaluations of the same checkpoints on disjoint seeds pooled into one."""

from __future__ import annotations

import json

import pytest

from recap_core import cli
from recap_experiment.eval_pool import PoolError, compare, pool
from recap_experiment.evaluate import EpisodeOutcome, summarise


def outcome(seed, success, steps):
    return {"seed": seed, "success": success, "steps": steps, "max_reward": 4.0 if success else 1.0}


def report(arms, seeds, **settings):
    """A recap eval report: ``arms`` maps name -> (checkpoint_id, {seed: (success, steps)})."""
    out = {
        "seeds": list(seeds),
        "max_steps": 400,
        "task": "t",
        "replan_steps": 25,
        "blend_steps": 8,
        **settings,
        "arms": {},
    }
    for name, (checkpoint_id, results) in arms.items():
        outcomes = [outcome(seed, *results[seed]) for seed in seeds]
        out["arms"][name] = {
            "checkpoint": f"/ckpt/{name}",
            "checkpoint_id": checkpoint_id,
            "beta": 1.0,
            "advantage": "positive",
            "scene_conditioning": None,
            "outcomes": outcomes,
            **summarise([EpisodeOutcome(**o) for o in outcomes]),
        }
    return out


def results(seeds, solved, steps=200):
    return {seed: (seed in solved, steps if seed in solved else 400) for seed in seeds}


def test_pooled_arm_is_the_summary_of_all_its_outcomes():
    first, second = range(0, 10), range(10, 30)
    a = report({"good": ("g", results(first, {0, 1, 2, 3, 4})), "bad": ("b", results(first, {0}))}, first)
    b = report({"good": ("g", results(second, set(range(10, 25)))), "bad": ("b", results(second, {10, 11}))}, second)
    pooled = pool([a, b])
    good = pooled["arms"]["good"]
    assert good["episodes"] == 30 and good["successes"] == 20 and good["parts"] == 2
    assert [o["seed"] for o in good["outcomes"]] == list(range(30))
    robot_seconds = 20 * 200 * 0.02 + 10 * 400 * 0.02
    assert good["throughput_per_hour"] == pytest.approx(20 / robot_seconds * 3600)
    # the pooled interval is narrower than either part's: more episodes
    assert (
        good["success_rate_ci95"][1] - good["success_rate_ci95"][0]
        < a["arms"]["good"]["success_rate_ci95"][1] - a["arms"]["good"]["success_rate_ci95"][0]
    )
    assert pooled["seeds"] == list(range(30))
    paired = compare(pooled, [("good", "bad")])["good_vs_bad"]
    assert (paired["seeds"], paired["only_first"], paired["only_second"]) == (30, 17, 0)
    assert paired["throughput_difference_ci95"][0] > 0


def test_an_arm_in_some_parts_only_is_pooled_over_those_and_compared_on_common_seeds():
    first, second = range(0, 10), range(10, 20)
    a = report({"x": ("x", results(first, {0, 1})), "y": ("y", results(first, {0, 1, 2}))}, first)
    b = report({"x": ("x", results(second, {10}))}, second)
    pooled = pool([a, b])
    assert pooled["arms"]["x"]["episodes"] == 20 and pooled["arms"]["y"]["episodes"] == 10
    assert pooled["arms"]["y"]["parts"] == 1
    assert compare(pooled, [("y", "x")])["y_vs_x"]["seeds"] == 10


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b["arms"]["x"].update(checkpoint_id="other"), "not the same policy"),
        (lambda b: b["arms"]["x"].update(beta=2.0), "not the same policy"),
        (lambda b: b.update(max_steps=300), "max_steps"),
        (lambda b: b["arms"]["x"]["outcomes"].__setitem__(0, outcome(3, True, 100)), "seed 3 already"),
        (lambda b: b.pop("arms"), "not a recap eval report"),
    ],
)
def test_parts_that_are_not_one_evaluation_are_refused(change, message):
    a = report({"x": ("x", results(range(10), {1}))}, range(10))
    b = report({"x": ("x", results(range(10, 20), {11}))}, range(10, 20))
    change(b)
    with pytest.raises(PoolError, match=message):
        pool([a, b], ["a.json", "b.json"])


def test_command_line_pools_files_compares_and_rejects_bad_input(tmp_path, capsys):
    a = report({"x": ("x", results(range(10), {1, 2})), "y": ("y", results(range(10), {1}))}, range(10))
    b = report({"x": ("x", results(range(10, 20), {11, 12})), "y": ("y", results(range(10, 20), set()))}, range(10, 20))
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    out = tmp_path / "pooled.json"
    assert (
        cli.main(
            ["eval-pool", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--compare", "x,y", "--out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| x | 4/20" in printed and "| x vs y | 20 | 3 | 0 | 0.25 |" in printed
    written = json.loads(out.read_text())
    assert written["arms"]["y"]["successes"] == 1 and written["paired"]["x_vs_y"]["only_first"] == 3
    # an arm that is not there, a file that is not JSON, a second copy of the same part
    assert cli.main(["eval-pool", str(tmp_path / "a.json"), "--compare", "x,z"]) == 2
    assert "arm(s) ['z']" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert cli.main(["eval-pool", str(tmp_path / "bad.json")]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert cli.main(["eval-pool", str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 2
    assert "disjoint seeds" in capsys.readouterr().err
