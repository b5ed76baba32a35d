"""User errors of the learning side's ``recap`` commands: one line on stderr, exit 2, no traceback; ``--out``
never silently replaces what it holds; damaged datasets are named; every JSON file written is strict JSON."""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recap_core import cli, outputs
from recap_core.checkpoint import load_checkpoint
from recap_core.data import DatasetError, DatasetWriter, check_dataset, load_episodes, make_synthetic_dataset
from recap_core.errors import UserError
from recap_core.testing import recap, refused, strict_json

torch.set_num_threads(1)
QUIET = ["--no-progress", "--batch-size", "4"]


def digest(directory) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny dataset and a value and a policy checkpoint trained on it for one step."""
    root = tmp_path_factory.mktemp("made")
    make_synthetic_dataset(root / "data", num_episodes=3, seed=0, image_size=16, max_episode_length=30)
    assert recap("train-value", root / "data", "--out", root / "value", "--steps", "1", *QUIET) == 0
    assert recap("train-policy", root / "data", "--mode", "sft", "--out", root / "policy", "--steps", "1", *QUIET) == 0
    return root


@pytest.fixture
def data(made, tmp_path):
    return shutil.copytree(made / "data", tmp_path / "data")


# ----------------------------------------------------------------------------- --out never silently replaces


@pytest.mark.parametrize(
    "command, target, named",
    [
        (["train-value"], "policy", "a policy checkpoint"),
        (["train-policy", "--mode", "sft"], "value", "a value checkpoint"),
        (["train-value"], "data", "a RECAP dataset"),
        (["train-policy", "--mode", "sft"], "notes", "1 other entry (notes.txt)"),
    ],
)
def test_training_refuses_an_out_that_holds_something_else(made, tmp_path, capsys, command, target, named):
    out = tmp_path / target
    if target == "notes":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    else:
        shutil.copytree(made / target, out)
    before = digest(out)
    err = refused(capsys, command[0], made / "data", *command[1:], "--out", out, "--steps", "1", *QUIET)
    assert f"--out {out} already holds {named}" in err and "--overwrite" in err
    assert digest(out) == before, "a refused run must leave --out as it was"


def test_a_same_kind_checkpoint_is_resumed_or_overwritten_never_silently_replaced(made, tmp_path, capsys):
    out = shutil.copytree(made / "policy", tmp_path / "policy")
    before = digest(out)
    err = refused(capsys, "train-policy", made / "data", "--mode", "sft", "--out", out, "--steps", "1", *QUIET)
    assert "a policy checkpoint (step 1)" in err and "--resume" in err and digest(out) == before
    err = refused(
        capsys,
        "train-policy",
        made / "data",
        "--mode",
        "sft",
        "--out",
        out,
        "--steps",
        "2",
        "--resume",
        "--overwrite",
        *QUIET,
    )
    assert "give one of them" in err and digest(out) == before
    assert recap("train-policy", made / "data", "--mode", "sft", "--out", out, "--steps", "2", "--resume", *QUIET) == 0
    assert load_checkpoint(out).training_config["steps_done"] == 2
    # --overwrite deletes what was there: a value checkpoint replaces the policy, nothing of it is left
    (out / "stray.txt").write_text("left over")
    assert recap("train-value", made / "data", "--out", out, "--steps", "1", "--overwrite", *QUIET) == 0
    assert load_checkpoint(out).kind == "value" and not (out / "stray.txt").exists()


def test_overwrite_never_deletes_what_the_run_reads(data, made, tmp_path, capsys):
    before = digest(data)
    err = refused(capsys, "train-value", data, "--out", data, "--steps", "1", "--overwrite", *QUIET)
    assert "which this run reads" in err
    err = refused(
        capsys, "train-policy", data, "--mode", "sft", "--out", data.parent, "--steps", "1", "--overwrite", *QUIET
    )
    assert "which this run reads" in err and digest(data) == before


def test_resume_needs_a_resumable_run_of_the_same_kind(made, tmp_path, capsys):
    err = refused(capsys, "train-value", made / "data", "--out", made / "policy", "--steps", "2", "--resume", *QUIET)
    assert "cannot resume" in err and "a value one is needed" in err
    err = refused(capsys, "train-value", made / "data", "--out", made / "data", "--steps", "2", "--resume", *QUIET)
    assert "not a checkpoint (it holds a RECAP dataset)" in err


def test_an_out_that_is_a_file_is_refused(made, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = refused(capsys, "train-value", made / "data", "--out", tmp_path / "file", "--steps", "1", *QUIET)
    assert "is not a directory" in err


def test_iterate_refuses_a_non_empty_out(made, tmp_path, capsys):
    out = tmp_path / "iteration"
    out.mkdir()
    (out / "iteration.json").write_text("{}")
    err = refused(
        capsys,
        "iterate",
        "--data",
        made / "data",
        "--value-pretrained",
        made / "value",
        "--policy-pretrained",
        made / "policy",
        "--out",
        out,
        "--iteration",
        "0",
        "--value-steps",
        "1",
        "--policy-steps",
        "1",
        "--batch-size",
        "4",
        "--no-progress",
    )
    assert "recap iterate run" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["iteration.json"]


def test_overwrite_never_empties_the_working_directory_or_its_parents(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    monkeypatch.chdir(work)
    for directory in (work, tmp_path):
        with pytest.raises(UserError, match="holds the current directory"):
            outputs.clear_directory(directory)
    assert (work / "keep.txt").exists()


# ----------------------------------------------------------------------------- damaged datasets


def _no_episodes(root):
    shutil.rmtree(root / "meta" / "episodes")


def _garbage_tasks(root):
    (root / "meta" / "tasks.parquet").write_bytes(b"not a parquet file")


def _garbage_episodes(root):
    next((root / "meta" / "episodes").rglob("*.parquet")).write_bytes(b"PAR1 torn")


def _torn_info(root):
    info = root / "meta" / "info.json"
    info.write_text(info.read_text()[:40])


def _missing_data_file(root):
    next((root / "data").rglob("*.parquet")).unlink()


DAMAGE = [
    (_no_episodes, "meta/episodes"),
    (_garbage_tasks, "meta/tasks.parquet"),
    (_garbage_episodes, "meta/episodes/chunk-000/file-000.parquet"),
    (_torn_info, "meta/info.json"),
    (_missing_data_file, "data/chunk-000/file-000.parquet"),
]


@pytest.mark.parametrize("damage, named", DAMAGE, ids=[d.__name__.strip("_") for d, _ in DAMAGE])
def test_a_damaged_dataset_is_named_by_every_reader_and_never_appended_to(made, data, capsys, damage, named):
    damage(data)
    with pytest.raises(DatasetError, match=named):
        check_dataset(data)
    for argv in (
        ["dataset", "info", data],
        ["label", data, "--value", made / "value", "--no-progress"],
        ["train-value", data, "--out", data.parent / "v", "--steps", "1", *QUIET],
    ):
        err = refused(capsys, *argv)
        assert named in err and "damaged" in err, err
    before = digest(data)
    with pytest.raises(DatasetError, match=named):
        DatasetWriter(data, cameras=("base", "left_wrist", "right_wrist"), image_shape=(16, 16), robot="synthetic")
    assert digest(data) == before, "a refused writer must not touch the dataset"


def test_an_intact_dataset_passes_the_check(data):
    info = check_dataset(data)
    assert info["total_episodes"] == len(load_episodes(data)) == 3


def test_the_converter_can_check_a_dataset_without_torch(data):
    code = (
        "import sys; from recap_core.data import check_dataset; "
        f"check_dataset({str(data)!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


# ----------------------------------------------------------------------------- the command line itself


def test_command_line_mistakes_are_one_line(capsys):
    assert "unknown command 'trian-value'; did you mean 'train-value'?" in refused(capsys, "trian-value")
    assert "required: --out" in refused(capsys, "train-value", "somewhere")
    assert "invalid choice: 'fly'" in refused(capsys, "train-policy", "d", "--out", "o", "--mode", "fly")
    assert "unrecognized arguments: --nope" in refused(capsys, "label", "d", "--value", "v", "--nope")
    assert "recap dataset:" in refused(capsys, "dataset")


def test_missing_paths_are_one_line(made, tmp_path, capsys):
    assert "nowhere is not a RECAP dataset" in refused(capsys, "label", tmp_path / "nowhere", "--value", made / "value")
    assert "not a checkpoint directory" in refused(capsys, "label", made / "data", "--value", tmp_path / "v")


# ----------------------------------------------------------------------------- strict JSON


def test_strict_json_writes_null_for_undefined_numbers(tmp_path):
    value = {
        "nan": float("nan"),
        "inf": [float("inf"), -math.inf],
        "np": np.float64("nan"),
        "array": np.array([1.0, np.nan]),
        "int": np.int64(3),
        "tuple": (1, float("nan")),
    }
    path = outputs.write_json(tmp_path / "x.json", value)
    assert strict_json(path.read_text()) == {
        "nan": None,
        "inf": [None, None],
        "np": None,
        "array": [1.0, None],
        "int": 3,
        "tuple": [1, None],
    }


def test_a_run_without_steps_writes_strict_json(made, tmp_path, capsys):
    """--stop-at 0 saves before any step: the final loss is undefined, and null in train_summary.json."""
    out = tmp_path / "v"
    assert recap("train-value", made / "data", "--out", out, "--steps", "2", "--stop-at", "0", *QUIET) == 0
    summary = strict_json((out / "train_summary.json").read_text())
    assert summary["final_loss"] is None and summary["steps"] == 0
    for line in (out / "metrics.jsonl").read_text().splitlines():
        strict_json(line)


def test_the_label_summary_line_is_strict_json(made, data, capsys):
    capsys.readouterr()
    assert recap("label", data, "--value", made / "value", "--no-progress") == 0
    summary = strict_json(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] > 0


# ----------------------------------------------------------------------------- properties


# what a shell can pass: no NUL; -h / --help (or an abbreviation of it) asks for the help text, no error
ARGUMENT = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20
).filter(lambda a: not a.startswith(("-h", "--h")))
OPTIONS = [
    "--out",
    "--steps",
    "--resume",
    "--overwrite",
    "--init",
    "--folds",
    "--mode",
    "sft",
    "-1",
    "0",
    "nan",
    "--lr",
    "--threads",
    "--device",
    "cuda:7",
    "--mix",
    "demo=2",
    "--state-dropout",
    "--indicator-dropout",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.one_of(ARGUMENT, st.sampled_from(OPTIONS)), max_size=6))
def test_no_command_line_makes_a_training_command_print_a_traceback(argv, tmp_path_factory, capsys):
    """Whatever follows `recap train-policy` (no dataset exists under these names): an exit status, and on
    failure one line, never a traceback."""
    where = tmp_path_factory.mktemp("argv")
    capsys.readouterr()
    code = cli.main(["train-policy", str(where / "no-dataset"), *argv, "--out", str(where / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)


@given(text=ARGUMENT)
def test_a_message_holding_line_breaks_is_printed_on_one_line(text):
    from recap_core.errors import one_line

    assert len(one_line(f"a\n{text}\r\nb\x1c").splitlines()) == 1
