"""Fixtures of recap_experiment's tests."""

from __future__ import annotations

import argparse
import json

import pytest

from recap_experiment import experiment


def fake_validation(argv: list[str], out, best: dict[str, float]) -> None:
    """What ``recap eval`` would write for the validation stage's ``argv``: each arm with the throughput ``best``
    gives it (0 otherwise)."""
    names = [a.split("=", 1)[0] for a in argv[1 : argv.index("--seeds")]]
    arms = {n: {"throughput_per_hour": best.get(n, 0.0), "success_rate": 0.0} for n in names}
    (out / "validation.json").write_text(json.dumps({"seeds": [1], "arms": arms}))


@pytest.fixture
def fake_stages(monkeypatch):
    """``install(commands, best=None)``: ``recap experiment``'s stages record their argv (name -> strings) in
    ``commands`` instead of running, the validation evaluation gives the arms in ``best`` their throughput, and
    checkpoints and datasets are not copied. The in-process stages (the selection) run."""

    def install(commands: dict, best: dict | None = None) -> None:
        def fake_run(self, name, stage_argv, *a, **k):
            commands[name] = list(map(str, stage_argv))
            if name == "80_validation":
                fake_validation(commands[name], self.out, best or {})
            return True

        monkeypatch.setattr(experiment.Stages, "run", fake_run)
        monkeypatch.setattr(experiment, "_copy_checkpoint", lambda *a: None)
        monkeypatch.setattr(experiment, "_copy_dataset", lambda *a: None)

    return install


@pytest.fixture
def stage_commands(monkeypatch, fake_stages):
    """``stage_commands(tmp, *argv, best=None)``: the quick experiment's stage commands for ``argv`` (name -> argv
    as strings), none of them run; the validation evaluation gives the arms in ``best`` their throughput, and the
    report's keyword arguments are under ``"report"``."""

    def commands_for(out, *argv, best=None) -> dict:
        commands: dict = {}
        fake_stages(commands, best)
        monkeypatch.setattr(experiment, "write_report", lambda *a, **k: commands.update(report=k) or out / "report.md")
        parser = argparse.ArgumentParser()
        experiment.add_arguments(parser)
        assert experiment.run(parser.parse_args(["--quick", "--out", str(out), *argv])) == 0
        return commands

    return commands_for
