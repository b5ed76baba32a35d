"""Fixtures of recap_experiment's tests."""

from __future__ import annotations

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
