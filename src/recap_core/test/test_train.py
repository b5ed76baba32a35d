"""Training commands end to end on tiny configs and small synthetic datasets (CPU, seconds each)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch
from scipy.stats import spearmanr

from recap_core import cli, rl
from recap_core.checkpoint import load_checkpoint
from recap_core.data import RecapDataset, load_frames_table, make_synthetic_dataset
from recap_core.models import PolicyRunner, ValueRunner
from recap_core.station import GRIPPER_INDICES
from recap_core.train.data import frames_from_batch, random_shift

torch.set_num_threads(1)
QUIET = ["--no-progress", "--batch-size", "8"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(root / "reach", num_episodes=6, seed=0, max_episode_length=60)
    make_synthetic_dataset(root / "reach_far", num_episodes=4, seed=1, task="reach far", max_episode_length=60)
    return root


@pytest.fixture
def datasets(pristine, tmp_path):
    for name in ("reach", "reach_far"):
        shutil.copytree(pristine / name, tmp_path / name)
    return tmp_path / "reach", tmp_path / "reach_far"


@pytest.fixture(scope="module")
def value_checkpoint(pristine, tmp_path_factory):
    out = tmp_path_factory.mktemp("value") / "v"
    assert (
        cli.main(
            [
                "train-value",
                str(pristine / "reach"),
                str(pristine / "reach_far"),
                "--out",
                str(out),
                "--steps",
                "2",
                *QUIET,
            ]
        )
        == 0
    )
    return out


def recap(*argv) -> int:
    return cli.main([str(a) for a in argv])


def refused(capsys, *argv) -> str:
    """Run a recap command that must fail as a user error: exit 2, one line on stderr (returned), no traceback."""
    capsys.readouterr()
    assert recap(*argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def metrics(directory) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def test_value_checkpoint_has_everything(value_checkpoint):
    loaded = load_checkpoint(value_checkpoint, kind="value")
    assert loaded.training_config["command"] == "train-value"
    assert len(loaded.provenance["datasets"]) == 2 and loaded.provenance["step"] == 2
    assert (value_checkpoint / "loss_curve.png").stat().st_size > 1000
    rows = metrics(value_checkpoint)
    assert rows[-1]["step"] == 2 and np.isfinite(rows[-1]["loss"]) and "value_mae" in rows[-1]


def test_label_then_train_resume_and_infer(datasets, value_checkpoint, tmp_path, capsys):
    reach, reach_far = datasets
    assert (
        recap(
            "label",
            reach,
            reach_far,
            "--value",
            value_checkpoint,
            "--no-progress",
            "--task-positive-fraction",
            "reach far=0.1",
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "'reach far': threshold" in printed
    table = load_frames_table(reach)
    indicator = table["indicator"].to_numpy(zero_copy_only=False)
    intervention = table["is_intervention"].to_numpy(zero_copy_only=False)
    assert indicator[intervention].all(), "interventions must be labelled positive"
    far = load_frames_table(reach_far)["indicator"].to_numpy(zero_copy_only=False)
    far_interventions = load_frames_table(reach_far)["is_intervention"].to_numpy(zero_copy_only=False)
    assert far[~far_interventions].mean() == pytest.approx(0.1, abs=0.05)
    values = table["value"].to_numpy()
    assert np.all((values >= -1) & (values <= 0))

    out = tmp_path / "policy"
    assert recap("train-policy", reach, reach_far, "--mode", "recap", "--out", out, "--steps", "2", *QUIET) == 0
    assert (
        recap("train-policy", reach, reach_far, "--mode", "recap", "--out", out, "--steps", "4", "--resume", *QUIET)
        == 0
    )
    rows = metrics(out)
    assert [r["step"] for r in rows] == [2, 4]
    loaded = load_checkpoint(out, kind="policy")
    assert loaded.training_config["steps_done"] == 4 and loaded.training_config["mode"] == "recap"
    assert loaded.provenance["value_checkpoints"], "the labelling value checkpoint is recorded"
    runner = PolicyRunner.from_checkpoint(out)
    assert loaded.trained_advantage == "positive"
    sample = RecapDataset(reach, chunk_size=1)[0]
    obs = {
        "images": {c: sample[f"observation.images.{c}"].permute(1, 2, 0).numpy() for c in runner.cameras},
        "state": sample["observation.state"].numpy(),
        "task": "reach",
    }
    actions = runner.infer(obs, seed=0)["actions"]
    assert actions.shape == (50, 14) and np.isfinite(actions).all()
    # arm joints are predicted relative to the state, grippers absolute: output is absolute targets
    assert np.abs(actions[:, :2] - obs["state"][:2]).max() < 50


def test_intervention_only_rollout_positives(datasets, value_checkpoint, capsys):
    """``--rollout-positives interventions``: demos by advantage, rollouts positive only where corrected."""
    from recap_core.data.reader import load_episodes

    reach, _ = datasets
    assert (
        recap(
            "label",
            reach,
            "--value",
            value_checkpoint,
            "--no-progress",
            "--positive-fraction",
            "0.5",
            "--rollout-positives",
            "interventions",
        )
        == 0
    )
    table = load_frames_table(reach)
    indicator = table["indicator"].to_numpy(zero_copy_only=False)
    intervention = table["is_intervention"].to_numpy(zero_copy_only=False)
    demos = {int(e["episode_index"]) for e in load_episodes(reach) if e["source"] == "demo"}
    in_demo = np.isin(table["episode_index"].to_numpy(), sorted(demos))
    assert in_demo.any() and (~in_demo).any() and (intervention & ~in_demo).any()
    assert np.array_equal(indicator[~in_demo], intervention[~in_demo])
    assert indicator[in_demo].mean() == pytest.approx(0.5, abs=0.05)
    # The paper's rule on the same values does make some of the policy's own frames positive.
    assert recap("label", reach, "--value", value_checkpoint, "--no-progress", "--positive-fraction", "0.5") == 0
    paper = load_frames_table(reach)["indicator"].to_numpy(zero_copy_only=False)
    assert paper[~in_demo & ~intervention].any()
    # --takeover-negative: the policy's frames just before each take-over become negative, nothing else moves
    assert (
        recap(
            "label",
            reach,
            "--value",
            value_checkpoint,
            "--no-progress",
            "--positive-fraction",
            "0.5",
            "--takeover-negative",
            "5",
        )
        == 0
    )
    relabelled = load_frames_table(reach)
    leading = rl.before_takeover(intervention & ~in_demo, relabelled["episode_index"].to_numpy(), 5)
    assert leading.any() and (paper & leading).any()
    changed = relabelled["indicator"].to_numpy(zero_copy_only=False)
    assert not changed[leading].any() and np.array_equal(changed[~leading], paper[~leading])
    # unforced: the corrections are labelled by their advantage like any other frame, so with a high threshold
    # some of them are negative
    assert (
        recap(
            "label",
            reach,
            "--value",
            value_checkpoint,
            "--no-progress",
            "--positive-fraction",
            "0.1",
            "--rollout-positives",
            "unforced",
        )
        == 0
    )
    unforced = load_frames_table(reach)
    labels = unforced["indicator"].to_numpy(zero_copy_only=False)
    correction = intervention & ~in_demo
    advantage = unforced["advantage"].to_numpy()
    threshold = next(
        iter(json.loads((reach / "meta" / "info.json").read_text())["recap"]["labels"]["thresholds"].values())
    )
    assert np.array_equal(labels, advantage > threshold)
    assert (~labels[correction]).any() and labels[correction].any()
    err = refused(capsys, "label", reach, "--value", value_checkpoint, "--no-progress", "--takeover-negative", "-1")
    assert "--takeover-negative must be >= 0" in err


def test_mix_samples_each_kind_of_frame_in_its_share(datasets):
    """``--mix``: frames typed demo / correction / autonomous from the episode source and intervention flag;
    the weighted sampler gives each kind its share, skips a kind set to 0 and resumes where it stopped."""
    from itertools import islice

    from recap_core.data.reader import load_episodes
    from recap_core.train.data import frame_kinds, open_datasets
    from recap_core.train.mix import mixture_weights, parse_mix
    from recap_core.train.ddp import DistributedContext, StepBatchSampler

    reach, _ = datasets
    data = open_datasets([reach], cameras=["base"], image_size=32, chunk_size=4, load_images=False)
    kinds = frame_kinds(data)
    table = load_frames_table(reach)
    demos = {int(e["episode_index"]) for e in load_episodes(reach) if e["source"] == "demo"}
    in_demo = np.isin(table["episode_index"].to_numpy(), sorted(demos))
    intervention = table["is_intervention"].to_numpy(zero_copy_only=False).astype(bool)
    assert np.array_equal(kinds == "demo", in_demo)
    assert np.array_equal(kinds == "correction", ~in_demo & intervention)
    assert {"demo", "correction", "autonomous"} == set(kinds)

    weights, shares = mixture_weights(kinds, parse_mix(["demo=0.6,autonomous=0"]))
    assert shares == pytest.approx({"demo": 0.6, "correction": 0.4, "autonomous": 0.0})
    sampler = StepBatchSampler(len(kinds), 64, DistributedContext(), seed=1, weights=weights)
    drawn = np.concatenate(list(islice(iter(sampler), 60)))
    assert not np.any(kinds[drawn] == "autonomous")
    assert np.mean(kinds[drawn] == "demo") == pytest.approx(0.6, abs=0.03)
    resumed = StepBatchSampler(len(kinds), 64, DistributedContext(), seed=1, weights=weights, start_batch=25)
    assert np.array_equal(np.concatenate(list(islice(iter(resumed), 35))), drawn[25 * 64 :])
    # unnamed kinds share the rest by size; no --mix is uniform over frames
    _, shares = mixture_weights(kinds, {"demo": 0.5})
    rollout = ~in_demo
    assert shares["correction"] == pytest.approx(0.5 * np.sum(rollout & intervention) / np.sum(rollout))
    uniform, _ = mixture_weights(kinds, {})
    assert np.allclose(uniform, 1 / len(kinds))
    # a kind absent from the data drops out and the others are rescaled
    _, shares = mixture_weights(kinds[in_demo], {"demo": 0.5, "correction": 0.3})
    assert shares == {"demo": 1.0}
    for bad, message in (
        (["demo=1.5"], "in \\[0, 1\\]"),
        (["demo=0.7", "correction=0.6"], "add up to"),
        (["teleop=0.2"], "KIND one of"),
        (["demo=0.2", "demo=0.3"], "twice"),
        (["demo=x"], "must be a number"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_mix(bad)
    with pytest.raises(ValueError, match="leaves nothing to sample"):
        mixture_weights(kinds[in_demo], {"demo": 0.0})


def test_train_policy_records_the_mix_and_rejects_a_bad_one(datasets, tmp_path, capsys):
    reach, _ = datasets
    assert (
        recap(
            "train-policy", reach, "--mode", "sft", "--out", tmp_path / "p", "--steps", "1", "--mix", "demo=0.5", *QUIET
        )
        == 0
    )
    recorded = load_checkpoint(tmp_path / "p").training_config
    assert recorded["mix"] == {"demo": 0.5} and recorded["sample_shares"]["demo"] == pytest.approx(0.5)
    err = refused(
        capsys,
        "train-policy",
        reach,
        "--mode",
        "sft",
        "--out",
        tmp_path / "q",
        "--steps",
        "1",
        "--mix",
        "demo=0.8",
        "--mix",
        "autonomous=0.8",
        *QUIET,
    )
    assert "add up to" in err


def test_random_shift_moves_each_image_by_its_own_offset_within_the_pad():
    base = torch.zeros(6, 3, 24, 24, dtype=torch.uint8)
    base[:, :, 12, 12] = 255  # one bright pixel away from the edges
    shifted = random_shift({"base": base, "wrist": base.clone()}, 3, torch.Generator().manual_seed(0))
    assert shifted["base"].shape == base.shape and shifted["base"].dtype == torch.uint8
    positions = []
    for image in (*shifted["base"], *shifted["wrist"]):
        ys, xs = torch.nonzero(image[0] == 255, as_tuple=True)
        assert len(ys) == 1  # moved, not blurred or lost
        positions.append((int(ys[0]), int(xs[0])))
        assert all(abs(p - 12) <= 3 for p in positions[-1])
    assert len(set(positions)) > 3  # offsets differ per image
    again = random_shift({"base": base, "wrist": base.clone()}, 3, torch.Generator().manual_seed(0))
    assert torch.equal(again["base"], shifted["base"])  # the step's generator makes it reproducible
    assert random_shift({"base": base}, 0, torch.Generator())["base"] is base


def test_augmentation_and_state_dropout_are_recorded_and_checked(datasets, tmp_path, capsys):
    reach, _ = datasets
    assert recap("train-value", reach, "--out", tmp_path / "v", "--steps", "1", "--augment-shift", "2", *QUIET) == 0
    assert load_checkpoint(tmp_path / "v", kind="value").training_config["augment_shift"] == 2
    assert (
        recap(
            "train-policy",
            reach,
            "--mode",
            "sft",
            "--out",
            tmp_path / "p",
            "--steps",
            "1",
            "--state-dropout",
            "0.5",
            *QUIET,
        )
        == 0
    )
    recorded = load_checkpoint(tmp_path / "p").training_config
    assert recorded["augment_shift"] == 0 and recorded["state_dropout"] == 0.5
    err = refused(
        capsys,
        "train-policy",
        reach,
        "--mode",
        "sft",
        "--out",
        tmp_path / "sd",
        "--steps",
        "1",
        "--state-dropout",
        "1",
        *QUIET,
    )
    assert "--state-dropout must be in" in err
    assert (
        recap(
            "train-policy",
            reach,
            "--mode",
            "sft",
            "--out",
            tmp_path / "bad",
            "--steps",
            "1",
            "--augment-shift",
            "16",
            *QUIET,
        )
        == 2
    )
    assert "--augment-shift must be in [0, 16)" in capsys.readouterr().err


def test_resume_continues_exactly_like_an_uninterrupted_run(datasets, tmp_path, capsys):
    reach, _ = datasets
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--mode", "sft", *QUIET, "--seed", "3", "--lr", "1e-3"]
    assert recap("train-policy", reach, "--out", straight, "--steps", "4", *common) == 0
    assert recap("train-policy", reach, "--out", split, "--steps", "4", "--stop-at", "2", *common) == 0
    assert load_checkpoint(split).training_config["steps_done"] == 2
    assert recap("train-policy", reach, "--out", split, "--steps", "4", "--resume", *common) == 0
    a = safetensors.torch.load_file(str(straight / "model.safetensors"))
    b = safetensors.torch.load_file(str(split / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    err = refused(capsys, "train-policy", reach, "--out", split, "--steps", "4", "--resume", *common)
    assert "already at step 4" in err


def test_awr_weights_samples_and_drops_the_text(datasets, value_checkpoint, tmp_path):
    reach, _ = datasets
    assert recap("label", reach, "--value", value_checkpoint, "--no-progress") == 0
    out = tmp_path / "awr"
    assert recap("train-policy", reach, "--mode", "awr", "--out", out, "--steps", "2", "--log-every", "1", *QUIET) == 0
    rows = metrics(out)
    assert all(r["fraction_no_advantage_text"] == 1.0 for r in rows)
    assert all(0 < r["awr_weight_mean"] <= 20.0 for r in rows)
    # deployed as trained: without advantage text (the fine-tune never saw one), unless asked otherwise
    loaded = load_checkpoint(out, kind="policy")
    assert loaded.trained_advantage is None
    runner = PolicyRunner(loaded)
    obs = {
        "images": {c: np.zeros((32, 32, 3), np.uint8) for c in runner.cameras},
        "state": np.zeros(14, np.float32),
        "task": "reach",
    }
    assert runner.infer(obs, seed=0)["advantage"] is None
    assert runner.infer(obs, seed=0, advantage="positive")["advantage"] == "positive"
    with pytest.raises(ValueError, match="guides towards an advantage"):
        runner.infer(obs, seed=0, beta=2.0)


def test_bc_trains_without_labels_text_or_weights_and_is_deployed_without_text(datasets, tmp_path):
    reach, _ = datasets  # unlabelled: plain behaviour cloning needs no value
    out = tmp_path / "bc"
    assert recap("train-policy", reach, "--mode", "bc", "--out", out, "--steps", "2", "--log-every", "1", *QUIET) == 0
    rows = metrics(out)
    assert rows and all(r["fraction_no_advantage_text"] == 1.0 and r["fraction_positive"] == 0.0 for r in rows)
    assert all("awr_weight_mean" not in r for r in rows)
    loaded = load_checkpoint(out, kind="policy")
    assert loaded.provenance["mode"] == "bc" and loaded.trained_advantage is None
    runner = PolicyRunner(loaded)
    obs = {
        "images": {c: np.zeros((32, 32, 3), np.uint8) for c in runner.cameras},
        "state": np.zeros(14, np.float32),
        "task": "reach",
    }
    assert runner.infer(obs, seed=0)["advantage"] is None


def test_recap_mode_needs_labels_and_init_keeps_the_config(datasets, tmp_path, capsys):
    reach, _ = datasets
    assert recap("train-policy", reach, "--mode", "recap", "--out", tmp_path / "p", "--steps", "1", *QUIET) == 2
    assert "recap label" in capsys.readouterr().err
    assert recap("train-value", tmp_path / "nowhere", "--out", tmp_path / "v", "--steps", "1", *QUIET) == 2
    assert "not a RECAP dataset" in capsys.readouterr().err
    assert recap("train-policy", reach, "--mode", "sft", "--out", tmp_path / "base", "--steps", "1", *QUIET) == 0
    err = refused(
        capsys,
        "train-policy",
        reach,
        "--mode",
        "sft",
        "--out",
        tmp_path / "ft",
        "--steps",
        "1",
        "--init",
        tmp_path / "base",
        "--config",
        "small",
        *QUIET,
    )
    assert "differs from the checkpoint's config" in err
    assert (
        recap(
            "train-policy",
            reach,
            "--mode",
            "sft",
            "--out",
            tmp_path / "ki",
            "--steps",
            "1",
            "--init",
            tmp_path / "base",
            "--knowledge-insulation",
            *QUIET,
        )
        == 0
    )
    loaded = load_checkpoint(tmp_path / "ki")
    assert loaded.model_config.knowledge_insulation
    assert loaded.provenance["parent_checkpoint"]["path"] == str((tmp_path / "base").resolve())


def test_iterate_trains_from_the_pretrained_checkpoints(datasets, tmp_path):
    reach, reach_far = datasets
    v_pre, pi_pre = tmp_path / "v_pre", tmp_path / "pi_pre"
    assert recap("train-value", reach, "--out", v_pre, "--steps", "1", *QUIET) == 0
    assert recap("train-policy", reach, "--mode", "sft", "--out", pi_pre, "--steps", "1", *QUIET) == 0
    out = tmp_path / "iteration_1"
    assert (
        recap(
            "iterate",
            "--data",
            reach,
            reach_far,
            "--value-pretrained",
            v_pre,
            "--policy-pretrained",
            pi_pre,
            "--out",
            out,
            "--iteration",
            "1",
            "--value-steps",
            "2",
            "--policy-steps",
            "2",
            "--batch-size",
            "8",
            "--no-progress",
        )
        == 0
    )
    record = json.loads((out / "iteration.json").read_text())
    assert record["iteration"] == 1 and record["policy_mode"] == "recap"
    value, policy = load_checkpoint(out / "value"), load_checkpoint(out / "policy")
    assert value.provenance["iteration"] == 1 and policy.provenance["iteration"] == 1
    assert value.provenance["parent_checkpoint"]["checkpoint_id"] == load_checkpoint(v_pre).checkpoint_id
    assert policy.provenance["parent_checkpoint"]["checkpoint_id"] == load_checkpoint(pi_pre).checkpoint_id
    assert value.checkpoint_id in " ".join(policy.provenance["value_checkpoints"])
    assert record["labels"]["tasks"]["reach"]["frames"] > 0


def test_value_model_learns_to_rank_remaining_steps(tmp_path):
    """Held-out expert episodes: predicted value ranks frames by true steps-to-go (Spearman >= 0.8).

    Expert demonstrations make the return-to-go a deterministic function of
    the observation (distance / speed), so the ranking is a fair target.
    """
    train, held_out = tmp_path / "train", tmp_path / "held_out"
    make_synthetic_dataset(train, num_episodes=30, seed=0, demo_fraction=1.0, corrected_fraction=0.0)
    make_synthetic_dataset(held_out, num_episodes=6, seed=99, demo_fraction=1.0, corrected_fraction=0.0)
    out = tmp_path / "value"
    # 1,000 steps: at 600, one seed in four stayed near 0.67 on this stack (the others 0.94-0.98); at 1,000
    # seeds 0-3 give 0.90-0.98
    assert (
        recap(
            "train-value", train, "--out", out, "--steps", "1000", "--batch-size", "32", "--lr", "3e-3", "--no-progress"
        )
        == 0
    )
    runner = ValueRunner.from_checkpoint(out)
    dataset = RecapDataset(held_out, chunk_size=1, image_size=runner.config.backbone.image_size)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    predicted, _ = runner.predict_frames(frames_from_batch(batch, runner.cameras, with_actions=False))
    steps_to_go = (batch["episode_length"] - batch["frame_index"]).numpy()
    correlation = spearmanr(predicted.numpy(), -steps_to_go).statistic
    assert correlation >= 0.8, f"value ranks held-out frames with Spearman {correlation:.3f} < 0.8"


def test_training_from_a_local_pretrained_directory(datasets, tmp_path):
    """``--config pretrained --pretrained DIR``: real-weights path, offline (a tiny saved Gemma 3 stands in)."""
    from transformers import Gemma3ForConditionalGeneration

    from recap_core.models import get_config
    from recap_core.models.backbone import hf_gemma3_config
    from recap_core.models.tokenizer import train_prompt_tokenizer

    reach, _ = datasets
    hf_dir = tmp_path / "gemma3-local"
    torch.manual_seed(0)
    Gemma3ForConditionalGeneration(hf_gemma3_config(get_config("tiny").backbone)).save_pretrained(hf_dir)
    train_prompt_tokenizer(["reach"], 384).save_pretrained(str(hf_dir))
    out = tmp_path / "policy"
    assert (
        recap(
            "train-policy",
            reach,
            "--mode",
            "sft",
            "--config",
            "pretrained",
            "--pretrained",
            hf_dir,
            "--out",
            out,
            "--steps",
            "1",
            *QUIET,
        )
        == 0
    )
    loaded = load_checkpoint(out)
    assert loaded.model_config.name == "pretrained"
    assert loaded.model_config.backbone.pretrained_dir == str(hf_dir.resolve())
    obs = {
        "images": {c: np.zeros((32, 32, 3), np.uint8) for c in loaded.model_config.cameras},
        "state": np.zeros(14, np.float32),
        "task": "reach",
    }
    assert PolicyRunner(loaded).infer(obs, seed=0)["actions"].shape == (50, 14)


def test_the_std_floor_is_recorded_kept_by_a_fine_tune_and_checked(datasets, tmp_path):
    from recap_core.models.processor import LEGACY_STD_FLOOR, STD_FLOOR, Processor, std_floor_of

    reach, _ = datasets
    assert recap("train-policy", reach, "--mode", "sft", "--out", tmp_path / "new", "--steps", "1", *QUIET) == 0
    new = load_checkpoint(tmp_path / "new")
    assert std_floor_of(new.processor_steps) == STD_FLOOR
    assert [s["std_floor"] for s in new.processor_steps if "stats" in s] == [STD_FLOOR] * 3
    # a checkpoint written before the floor was recorded means 0.01, and a fine-tune of it keeps 0.01
    shutil.copytree(tmp_path / "new", tmp_path / "legacy")
    processor_file = tmp_path / "legacy" / "processor.json"
    steps = json.loads(processor_file.read_text())["steps"]
    processor_file.write_text(json.dumps({"steps": [{k: v for k, v in s.items() if k != "std_floor"} for s in steps]}))
    assert std_floor_of(load_checkpoint(tmp_path / "legacy").processor_steps) == LEGACY_STD_FLOOR
    assert (
        recap(
            "train-policy",
            reach,
            "--mode",
            "sft",
            "--out",
            tmp_path / "ft",
            "--steps",
            "1",
            "--init",
            tmp_path / "legacy",
            *QUIET,
        )
        == 0
    )
    assert std_floor_of(load_checkpoint(tmp_path / "ft").processor_steps) == LEGACY_STD_FLOOR
    # the floor is what a near-constant dimension is divided by
    stats = {"observation.state": {"mean": [0.0] * 14, "std": [0.001] * 13 + [1.0]}}
    state = torch.full((1, 14), 0.1)
    for floor in (STD_FLOOR, LEGACY_STD_FLOOR):
        out = Processor(
            [{"step": "normalise_state", "stats": "observation.state", "std_floor": floor}], stats, None
        ).preprocess({"state": state})["state_normalised"]
        assert out[0, 0].item() == pytest.approx(0.1 / floor) and out[0, 13].item() == pytest.approx(0.1)
    # a bad floor is a clear error at load, naming the file
    processor_file.write_text(json.dumps({"steps": [{**s, "std_floor": -1} if "stats" in s else s for s in steps]}))
    with pytest.raises(Exception, match="processor.json.*std_floor must be a positive number"):
        load_checkpoint(tmp_path / "legacy")


def test_training_feeds_the_advantage_condition_to_an_embedding_expert(datasets, tmp_path):
    """SFT conditions every sample "positive": only that row of the advantage embedding learns."""
    import dataclasses

    from recap_core.models import get_config
    from recap_core.models.untrained import save_untrained_checkpoint

    reach, _ = datasets
    base = get_config("tiny")
    config = dataclasses.replace(base, expert=dataclasses.replace(base.expert, advantage_embedding=True))
    save_untrained_checkpoint(tmp_path / "init", config, tasks=["reach"])
    assert (
        recap(
            "train-policy",
            reach,
            "--mode",
            "sft",
            "--out",
            tmp_path / "ft",
            "--steps",
            "2",
            "--init",
            tmp_path / "init",
            *QUIET,
        )
        == 0
    )
    rows = load_checkpoint(tmp_path / "ft").model.expert.advantage_embedding.weight.detach().abs().sum(dim=1)
    assert rows[1] > 0 and rows[0] == 0 and rows[2] == 0, rows.tolist()  # none / positive / negative


def test_joints_the_data_holds_still_get_absolute_targets_kept_by_a_fine_tune(datasets, tmp_path, capsys):
    from recap_core.models.processor import Processor, default_relative_mask, relative_mask_of

    reach, _ = datasets
    state_std = np.asarray(RecapDataset(reach).stats["observation.state"]["std"], dtype=np.float64).reshape(-1)
    arm = [i for i, relative in enumerate(default_relative_mask(14, GRIPPER_INDICES)) if relative]
    spreads = sorted({float(state_std[i]) for i in arm})
    assert len(spreads) >= 2
    threshold = (spreads[0] + spreads[1]) / 2
    still = [i for i in arm if state_std[i] < threshold]
    stillest, next_one = still[0], next(i for i in arm if state_std[i] >= threshold)
    assert (
        recap(
            "train-policy",
            reach,
            "--mode",
            "sft",
            "--out",
            tmp_path / "new",
            "--steps",
            "1",
            "--absolute-still-joints",
            threshold,
            *QUIET,
        )
        == 0
    )
    new = load_checkpoint(tmp_path / "new")
    expected = [relative and i not in still for i, relative in enumerate(default_relative_mask(14, GRIPPER_INDICES))]
    assert expected != default_relative_mask(14, GRIPPER_INDICES) and any(expected)
    assert relative_mask_of(new.processor_steps) == expected
    post = [s for s in new.processor_steps if s["step"] == "absolute_actions"]
    assert post and post[0]["mask"] == expected
    # the still joint's target does not move with the state; a relative joint's does
    post_steps = [s for s in new.processor_steps if s["step"] in ("unnormalise_actions", "absolute_actions")]
    processor = Processor(post_steps, new.normalization, None)
    chunk = torch.zeros(1, 4, 14)
    state = torch.zeros(1, 14)
    moved = state.clone()
    moved[0, stillest] += 0.3
    moved[0, next_one] += 0.3
    before, after = processor.postprocess(chunk, {"state": state}), processor.postprocess(chunk, {"state": moved})
    assert torch.allclose(after[..., stillest], before[..., stillest])
    assert torch.allclose(after[..., next_one], before[..., next_one] + 0.3)
    # a fine-tune keeps its parent's mask whatever the threshold; without the option nothing changes
    assert (
        recap(
            "train-policy",
            reach,
            "--mode",
            "sft",
            "--out",
            tmp_path / "ft",
            "--steps",
            "1",
            "--init",
            tmp_path / "new",
            "--absolute-still-joints",
            10.0,
            *QUIET,
        )
        == 0
    )
    assert relative_mask_of(load_checkpoint(tmp_path / "ft").processor_steps) == expected
    assert recap("train-policy", reach, "--mode", "sft", "--out", tmp_path / "plain", "--steps", "1", *QUIET) == 0
    assert relative_mask_of(load_checkpoint(tmp_path / "plain").processor_steps) == default_relative_mask(
        14, GRIPPER_INDICES
    )
    # a wrong threshold is a clear error; a corrupt mask is one at load, naming the file
    err = refused(
        capsys,
        "train-policy",
        reach,
        "--mode",
        "sft",
        "--out",
        tmp_path / "bad",
        "--steps",
        "1",
        "--absolute-still-joints",
        -1,
        *QUIET,
    )
    assert "--absolute-still-joints must be a number >= 0" in err
    processor_file = tmp_path / "new" / "processor.json"
    steps = json.loads(processor_file.read_text())["steps"]
    processor_file.write_text(json.dumps({"steps": [{**s, "mask": [1] * 14} if "mask" in s else s for s in steps]}))
    with pytest.raises(Exception, match="processor.json.*mask must be a non-empty list of booleans"):
        load_checkpoint(tmp_path / "new")
