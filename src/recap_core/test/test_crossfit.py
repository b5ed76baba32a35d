"""Cross-fitted values: fold assignment, fold models, out-of-fold labels, iterate (tiny configs, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_core import cli
from recap_core.checkpoint import load_checkpoint
from recap_core.data import RecapDataset, load_episodes, load_frames_table, make_synthetic_dataset
from recap_core.models import ValueRunner
from recap_core.train import crossfit
from recap_core.train.data import frames_from_batch

torch.set_num_threads(1)
QUIET = ["--no-progress", "--batch-size", "8"]


def recap(*argv) -> int:
    return cli.main([str(a) for a in argv])


# --------------------------------------------------------------------------- fold assignment (pure)


def test_an_episode_is_named_by_its_bag_directory_else_by_index_and_start():
    key = crossfit.episode_key({"episode_index": 3, "bag_path": "/bags/demos/sim-20261203-0001/"})
    assert key == "sim-20261203-0001"
    assert crossfit.episode_key({"episode_index": 3, "bag_path": "C:\\bags\\sim-0002"}) == "sim-0002"
    assert crossfit.episode_key({"episode_index": 3, "bag_path": "", "start_time": 12.5}) == "episode-3@12.5"
    assert crossfit.episode_key({"episode_index": 4, "bag_path": None}) == "episode-4@None"


@given(
    st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=30, unique=True),
    st.integers(2, 6),
    st.randoms(use_true_random=False),
)
@settings(max_examples=50, deadline=None)
def test_each_episode_has_one_fold_and_each_fold_trains_on_all_the_others(keys, folds, rng):
    assignment = crossfit.assign_folds(keys, folds)
    shuffled = list(keys)
    rng.shuffle(shuffled)
    assert crossfit.assign_folds(shuffled, folds) == assignment, "the folds must not depend on the episodes' order"
    counts = np.bincount(list(assignment.values()), minlength=folds)
    assert len(counts) == folds and counts.max() - counts.min() <= 1, f"unbalanced folds {counts}"
    episodes = [{"episode_index": i, "bag_path": f"/bags/{key}"} for i, key in enumerate(keys)]
    assigned = crossfit.episode_folds(episodes, assignment)
    for fold in range(folds):
        training = crossfit.training_episodes(episodes, fold, assignment)
        assert sorted(training + [i for i in range(len(keys)) if assigned[i] == fold]) == list(range(len(keys)))
        assert not set(training) & {i for i in range(len(keys)) if assigned[i] == fold}


def test_few_episodes_never_leave_a_fold_holding_out_all_of_them():
    # bag names carry the recording time, so any three of them must split 2/1 (a hash alone gives 3/0 in 1 of 4)
    for start in range(200):
        keys = [f"sim_aloha-20261203-2115{start % 60:02d}-{i:04d}-{start}" for i in range(3)]
        counts = np.bincount(list(crossfit.assign_folds(keys, 2).values()), minlength=2)
        assert sorted(counts) == [1, 2], counts


@given(st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=40, unique=True), st.integers(2, 5), st.data())
@settings(max_examples=50, deadline=None)
def test_episodes_keep_the_fold_their_init_held_them_out_in(keys, folds, data):
    old = data.draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys) - 1))
    previous = {key: data.draw(st.integers(0, folds - 1)) for key in old}
    previous["gone-from-this-dataset"] = 0
    assignment = crossfit.assign_folds(keys, folds, previous)
    assert set(assignment) == set(keys)
    assert all(assignment[key] == fold for key, fold in previous.items() if key in assignment)
    # new episodes go where they even the folds out: no fold that got one holds out more than one more than any
    counts = np.bincount(list(assignment.values()), minlength=folds)
    for fold in set(assignment[k] for k in keys if k not in previous):
        assert counts[fold] <= counts.min() + 1, counts


def test_a_previous_assignment_outside_the_folds_is_refused():
    with pytest.raises(ValueError, match="outside 0..1"):
        crossfit.assign_folds(["a", "b"], 2, {"a": 2})


@pytest.mark.parametrize("bad", [1, -1, 21, 2.5, True, "2"])
def test_a_bad_fold_count_is_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        crossfit.check_folds(bad)


def test_folds_on_disk_are_read_only_when_complete(tmp_path):
    assert crossfit.read_folds(tmp_path) == 0
    (crossfit.fold_dir(tmp_path, 0)).mkdir(parents=True)
    with pytest.raises(ValueError, match="did not finish"):
        crossfit.read_folds(tmp_path)
    crossfit.write_manifest(tmp_path, 2, {"a": 0, "b": 1, "c": 1})
    with pytest.raises(ValueError, match=r"fold model\(s\) \[0, 1\] of 2 are missing"):
        crossfit.read_folds(tmp_path)
    manifest = tmp_path / crossfit.FOLDS_DIR / crossfit.MANIFEST
    assert json.loads(manifest.read_text())["held_out"] == {"0": ["a"], "1": ["b", "c"]}
    for fold in range(2):
        crossfit.fold_dir(tmp_path, fold).mkdir(parents=True, exist_ok=True)
        (crossfit.fold_dir(tmp_path, fold) / "provenance.json").write_text("{}")
    assert crossfit.read_assignment(tmp_path) == (2, {"a": 0, "b": 1, "c": 1})
    # a manifest of the earlier hash rule lists its folds too: it is read as it is
    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**record, "rule": crossfit.EARLIER_RULES[0]}))
    assert crossfit.read_assignment(tmp_path) == (2, {"a": 0, "b": 1, "c": 1})
    manifest.write_text(json.dumps({**record, "held_out": {"0": ["a"], "1": ["a"]}}))
    with pytest.raises(ValueError, match="held out by two folds"):
        crossfit.read_folds(tmp_path)
    manifest.write_text(json.dumps({**record, "held_out": {"0": ["a"], "2": ["b"]}}))
    with pytest.raises(ValueError, match="beyond its 2"):
        crossfit.read_folds(tmp_path)
    manifest.write_text(json.dumps({"folds": 2, "rule": "something else", "held_out": {}}))
    with pytest.raises(ValueError, match="train the value again"):
        crossfit.read_folds(tmp_path)
    manifest.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid folds manifest"):
        crossfit.read_folds(tmp_path)


# --------------------------------------------------------------------------- fold models and labels


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossfit")
    make_synthetic_dataset(root / "reach", num_episodes=8, seed=0, max_episode_length=40)
    return root / "reach"


@pytest.fixture(scope="module")
def cross_fitted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("value") / "v_pre"
    assert recap("train-value", data, "--out", out, "--steps", "3", "--folds", "2", *QUIET) == 0
    return out


def _predict(checkpoint, root, episodes) -> np.ndarray:
    runner = ValueRunner.from_checkpoint(checkpoint)
    dataset = RecapDataset(root, chunk_size=1, image_size=runner.config.backbone.image_size, episodes=episodes)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    predicted, _ = runner.predict_frames(frames_from_batch(batch, runner.cameras, with_actions=False))
    return predicted.double().numpy()


def test_train_value_folds_writes_one_model_per_fold_trained_without_it(data, cross_fitted):
    assert crossfit.read_folds(cross_fitted) == 2
    episodes = load_episodes(data)
    assignment = crossfit.assign_folds([crossfit.episode_key(e) for e in episodes], 2)
    assert crossfit.read_assignment(cross_fitted) == (2, assignment)
    assigned = crossfit.episode_folds(episodes, assignment)
    manifest = json.loads((cross_fitted / crossfit.FOLDS_DIR / crossfit.MANIFEST).read_text())
    for fold in range(2):
        held_out = sorted(crossfit.episode_key(e) for e, f in zip(episodes, assigned) if f == fold)
        assert manifest["held_out"][str(fold)] == held_out
        model = load_checkpoint(crossfit.fold_dir(cross_fitted, fold), kind="value")
        trained_on = sum(e["length"] for e, f in zip(episodes, assigned) if f != fold)
        assert model.training_config["cross_fit"] == {
            "fold": fold,
            "folds": 2,
            "held_out_episodes": len(held_out),
            "training_frames": trained_on,
        }
    assert load_checkpoint(cross_fitted, kind="value").training_config["folds"] == 2


def test_label_gives_each_episode_the_value_of_the_model_that_never_saw_it(data, cross_fitted, tmp_path, capsys):
    import shutil

    root = shutil.copytree(data, tmp_path / "reach")
    assert recap("label", root, "--value", cross_fitted, "--no-progress") == 0
    assert '"value_folds": 2' in capsys.readouterr().out
    table = load_frames_table(root)
    values, episode_index = table["value"].to_numpy(), table["episode_index"].to_numpy()
    episodes = load_episodes(root)
    assigned = crossfit.episode_folds(episodes, crossfit.read_assignment(cross_fitted)[1])
    for fold in range(2):
        chosen = [e["episode_index"] for e, f in zip(episodes, assigned) if f == fold]
        rows = np.isin(episode_index, chosen)
        expected = _predict(crossfit.fold_dir(cross_fitted, fold), root, chosen)
        np.testing.assert_allclose(values[rows], expected, atol=1e-5)
        assert not np.allclose(values[rows], _predict(cross_fitted, root, chosen), atol=1e-5), (
            "the labels must not come from the model trained on every episode"
        )
    info = json.loads((root / "meta" / "info.json").read_text())
    assert "cross-fitted, 2 folds" in info["recap"]["labels"]["value_checkpoint"]


def test_new_episodes_are_labelled_by_the_model_on_all_and_keep_their_folds_in_v_k(data, cross_fitted, tmp_path):
    grown = tmp_path / "grown"  # the same 8 episodes and 2 more no model of cross_fitted saw
    make_synthetic_dataset(grown, num_episodes=10, seed=0, max_episode_length=40)
    folds, before = crossfit.read_assignment(cross_fitted)
    new = [e["episode_index"] for e in load_episodes(grown) if crossfit.episode_key(e) not in before]
    assert folds == 2 and new == [8, 9]
    assert recap("label", grown, "--value", cross_fitted, "--no-progress") == 0
    table = load_frames_table(grown)
    rows = np.isin(table["episode_index"].to_numpy(), new)
    np.testing.assert_allclose(table["value"].to_numpy()[rows], _predict(cross_fitted, grown, new), atol=1e-5)

    v_1 = tmp_path / "v_1"
    assert (
        recap("train-value", grown, "--out", v_1, "--init", cross_fitted, "--folds", "2", "--steps", "1", *QUIET) == 0
    )
    _, after = crossfit.read_assignment(v_1)
    assert {k: after[k] for k in before} == before, "an episode must stay in the fold its init model never saw"
    counts = np.bincount(list(after.values()), minlength=2)
    assert sorted(counts) == [5, 5], counts


def test_folds_need_an_init_with_the_same_folds_and_a_new_model_drops_stale_ones(data, cross_fitted, tmp_path, capsys):
    plain = tmp_path / "plain"
    assert recap("train-value", data, "--out", plain, "--steps", "1", *QUIET) == 0
    assert (
        recap("train-value", data, "--out", tmp_path / "v", "--init", plain, "--folds", "2", "--steps", "1", *QUIET)
        == 2
    )
    assert "has no fold models" in capsys.readouterr().err
    assert (
        recap(
            "train-value", data, "--out", tmp_path / "v", "--init", cross_fitted, "--folds", "3", "--steps", "1", *QUIET
        )
        == 2
    )
    assert "which has 2 folds" in capsys.readouterr().err
    assert recap("train-value", data, "--out", tmp_path / "v", "--folds", "1", "--steps", "1", *QUIET) == 2
    assert "--folds must be 0" in capsys.readouterr().err

    stale = tmp_path / "stale"
    assert recap("train-value", data, "--out", stale, "--steps", "1", "--folds", "2", *QUIET) == 0
    capsys.readouterr()
    assert recap("train-value", data, "--out", stale, "--steps", "1", *QUIET) == 2  # a new model needs --overwrite
    assert "--resume" in capsys.readouterr().err and crossfit.read_folds(stale) == 2
    assert recap("train-value", data, "--out", stale, "--steps", "1", "--overwrite", *QUIET) == 0
    assert not (stale / crossfit.FOLDS_DIR).exists() and crossfit.read_folds(stale) == 0


def test_a_resumed_run_trains_its_folds_from_where_it_began(data, cross_fitted, tmp_path):
    out = tmp_path / "v_1"
    assert (
        recap(
            "train-value",
            data,
            "--out",
            out,
            "--init",
            cross_fitted,
            "--folds",
            "2",
            "--steps",
            "2",
            "--stop-at",
            "1",
            *QUIET,
        )
        == 0
    )
    assert crossfit.read_folds(out) == 0, "a run stopped early trains no fold models yet"
    assert recap("train-value", data, "--out", out, "--resume", "--folds", "2", "--steps", "2", *QUIET) == 0
    assert crossfit.read_folds(out) == 2
    for fold in range(2):
        parent = load_checkpoint(crossfit.fold_dir(out, fold)).provenance["parent_checkpoint"]
        assert parent["checkpoint_id"] == load_checkpoint(crossfit.fold_dir(cross_fitted, fold)).checkpoint_id


def test_iterate_cross_fits_v_k_from_v_pre_s_folds(data, cross_fitted, tmp_path):
    import shutil

    root = shutil.copytree(data, tmp_path / "reach")
    pi_pre = tmp_path / "pi_pre"
    assert recap("train-policy", root, "--mode", "sft", "--out", pi_pre, "--steps", "1", *QUIET) == 0
    out = tmp_path / "iteration_1"
    assert (
        recap(
            "iterate",
            "--data",
            root,
            "--value-pretrained",
            cross_fitted,
            "--policy-pretrained",
            pi_pre,
            "--out",
            out,
            "--iteration",
            "1",
            "--value-steps",
            "2",
            "--policy-steps",
            "1",
            "--batch-size",
            "8",
            "--value-folds",
            "2",
            "--no-progress",
        )
        == 0
    )
    assert crossfit.read_folds(out / "value") == 2
    for fold in range(2):
        parent = load_checkpoint(crossfit.fold_dir(out / "value", fold)).provenance["parent_checkpoint"]
        assert parent["checkpoint_id"] == load_checkpoint(crossfit.fold_dir(cross_fitted, fold)).checkpoint_id
    assert json.loads((out / "iteration.json").read_text())["labels"]["value_folds"] == 2
    # iteration 0 (SFT) labels nothing, so it trains no fold models
    assert (
        recap(
            "iterate",
            "--data",
            root,
            "--value-pretrained",
            cross_fitted,
            "--policy-pretrained",
            pi_pre,
            "--out",
            tmp_path / "iteration_0",
            "--iteration",
            "0",
            "--value-steps",
            "1",
            "--policy-steps",
            "1",
            "--batch-size",
            "8",
            "--value-folds",
            "2",
            "--no-progress",
        )
        == 0
    )
    assert crossfit.read_folds(tmp_path / "iteration_0" / "value") == 0
