"""``recap experiment``: the whole RECAP loop (Algorithm 1) in simulation, through the real nodes and bags.

Demonstrations, pretraining, SFT, rollouts with the simulated human, RECAP iterations, the AWR baselines,
evaluation on held-out seeds and a report, each stage a ``recap`` command in its own process, logged
under ``OUT/logs`` and skipped on ``--resume`` once done. docs/experiment.md has the stages and profiles.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import subprocess
import sys
import time
from typing import Callable

from recap_core import outputs
from recap_core.data.schema import ROLLOUT_POSITIVES
from recap_core.errors import UserError
from recap_core.train.crossfit import check_folds
from recap_core.train.mix import parse_mix
from recap_experiment.experiment_report import write_report
from recap_sim.human import RELEASE_RULES


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    model_config: str  # tiny | small
    demos: tuple[tuple[float, int], ...]  # (operator quality, episodes)
    rollouts_per_iteration: int
    iterations: int
    max_steps: int
    eval_seeds: tuple[int, int]  # first, count
    value_pretrain_steps: int
    policy_pretrain_steps: int
    value_steps: int
    policy_steps: int
    batch_size: int
    human_patience_s: float = 3.0  # the simulated human takes over after this long without progress
    human_release: str = "next_stage"  # where its corrections end (recap station --human-release)
    image_size: int = 96  # station cameras: the models see 96 px or less, rendering stays cheap
    pretrain_positive_fraction: float = 0.3
    positive_fraction: float = 0.4
    rollout_positives: str = "advantage"  # or "unforced", "interventions": see ``recap label --help``
    eval_workers: int = 2  # processes sharing the evaluation's seeds (recap eval --workers)
    policy_mix: tuple[str, ...] = ()  # KIND=SHARE of the iterations' and AWR's samples (train-policy --mix)
    takeover_negative: int = 0  # steps before a take-over labelled negative (recap label --takeover-negative)
    absolute_still_joints: float = 0.0  # pi_pre: absolute targets for joints the demos hold still (train-policy)
    value_folds: int = 0  # cross-fitted values for the labels (train-value --folds; 0: off)
    fine_tune_lr: float = 1e-4  # peak learning rate of the iterations' fine-tunes and of AWR's

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"profile {self.name}: iterations must be >= 1, got {self.iterations}")
        if not self.demos or any(not 0 <= q <= 1 or n < 1 for q, n in self.demos):
            raise ValueError(f"profile {self.name}: demos must be (quality in [0, 1], episodes >= 1) pairs")
        if self.eval_workers < 1:
            raise ValueError(f"profile {self.name}: eval_workers must be >= 1, got {self.eval_workers}")
        if self.eval_seeds[1] < 1 or self.rollouts_per_iteration < 1:
            raise ValueError(f"profile {self.name}: needs >= 1 rollout per iteration and >= 1 eval seed")
        if not self.absolute_still_joints >= 0:
            raise ValueError(
                f"profile {self.name}: absolute_still_joints must be >= 0 rad, got {self.absolute_still_joints}"
            )
        try:
            check_folds(self.value_folds)
        except ValueError as exc:
            raise ValueError(f"profile {self.name}: value_folds: {exc}") from None
        if not 0 < self.fine_tune_lr < 1:
            raise ValueError(f"profile {self.name}: fine_tune_lr must be in (0, 1), got {self.fine_tune_lr}")
        if self.takeover_negative < 0:
            raise ValueError(f"profile {self.name}: takeover_negative must be >= 0 steps, got {self.takeover_negative}")
        try:
            parse_mix(self.policy_mix)
        except ValueError as exc:
            raise ValueError(f"profile {self.name}: policy_mix: {exc}") from None
        if self.human_release not in RELEASE_RULES:
            raise ValueError(
                f"profile {self.name}: human_release must be one of {RELEASE_RULES}, got {self.human_release!r}"
            )
        for field in ("pretrain_positive_fraction", "positive_fraction"):
            if not 0 < getattr(self, field) < 1:
                raise ValueError(f"profile {self.name}: {field} must be in (0, 1), got {getattr(self, field)}")
        if self.rollout_positives not in ROLLOUT_POSITIVES:
            raise ValueError(
                f"profile {self.name}: rollout_positives must be one of {ROLLOUT_POSITIVES}, "
                f"got {self.rollout_positives!r}"
            )


PROFILES = {
    # every stage, tiny sizes: checks artefacts, not a gain (CI). The full profile's time limit: the
    # scripted operator needs ~140 steps at quality 1 and up to ~350 at 0.4 (docs/operator.md), and
    # demonstrations that all time out leave the values nothing to tell apart. The values train longer
    # than the policies (seconds at tiny size): after 10 steps every value is the untrained -0.5
    "quick": Profile(
        "quick",
        "tiny",
        demos=((1.0, 2), (0.4, 1)),
        rollouts_per_iteration=2,
        iterations=2,
        max_steps=400,
        eval_seeds=(100000, 3),
        value_pretrain_steps=800,
        policy_pretrain_steps=10,
        value_steps=200,
        policy_steps=10,
        batch_size=8,
        human_patience_s=0.5,
        eval_workers=1,
        policy_mix=("demo=0.5", "autonomous=0"),
        takeover_negative=75,
        absolute_still_joints=0.01,
        value_folds=2,
        rollout_positives="unforced",
    ),
    # the measured experiment on 2 CPU cores (see docs/experiment.md for runtime and results)
    "full": Profile(
        "full",
        "small",
        demos=((1.0, 12), (0.7, 12), (0.4, 12)),
        rollouts_per_iteration=40,
        iterations=2,
        max_steps=400,
        eval_seeds=(100000, 200),
        value_pretrain_steps=800,
        policy_pretrain_steps=2500,
        value_steps=800,
        policy_steps=1200,
        batch_size=32,
        # half of every fine-tune batch from the demonstrations, the other half from the human's
        # corrections, none from the policy's own frames (they train the value only): every
        # fine-tune with the policy's own frames lost the handover, without them RECAP went from
        # SFT's level to 57 % against SFT's 41 % on the same data (docs/experiment.md, Protocol).
        # The 1.5 s before a take-over negative (it labels autonomous frames only, kept for
        # --policy-mix overrides)
        policy_mix=("demo=0.5", "autonomous=0"),
        takeover_negative=75,
        # the demos hold the right forearm roll (std 0.005 rad) and the left waist (0.009) still: with
        # relative targets the policy has no angle to return them to (docs/experiment.md, Protocol)
        absolute_still_joints=0.01,
        # every episode labelled by a value model that never trained on it: one trained on it
        # knows its return, and its advantages are noise (docs/experiment.md, Protocol)
        value_folds=2,
        # the simulated human's corrections go on past the step the policy failed (the handover
        # it dropped), so the rollouts hold the operator's handovers from the policy's own states
        human_release="past_best",
        # the corrections by their advantage too, not all positive: with the policy's own frames out
        # of the fine-tune, forced-positive corrections leave the indicator little to separate and
        # guidance did not help (beta 2 103/200); by advantage beta 2 got 117/200, 368/h on the same
        # data (docs/experiment.md, Protocol)
        rollout_positives="unforced",
    ),
}


class Stages:
    """Runs the stage commands, logging each, skipping finished ones on resume."""

    def __init__(self, out: pathlib.Path, resume: bool):
        self.out = out
        self.resume = resume
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}

    def run(
        self,
        name: str,
        argv: list[str],
        artefact: pathlib.Path | None = None,
        current: Callable[[], bool] | None = None,
    ) -> None:
        """Run a stage; on resume skip it when it finished, its artefact exists and, given ``current``,
        that artefact still answers what is asked now (the evaluation after a change of arms or seeds)."""
        done = self.logs / f"{name}.done"
        if self.resume and done.exists() and (artefact is None or artefact.exists()) and (current is None or current()):
            print(f"[experiment] {name}: done already", flush=True)
            try:  # keep its measured time for the report
                self.timings[name] = float(done.read_text().strip())
            except ValueError:
                pass
            return
        log = self.logs / f"{name}.log"
        cmd = [sys.executable, "-m", "recap_core.cli", *map(str, argv)]
        print(f"[experiment] {name}: recap {' '.join(map(str, argv))}", flush=True)
        t0 = time.monotonic()
        with open(log, "w", encoding="utf-8") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.timings[name] = time.monotonic() - t0
        if proc.returncode != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
            raise RuntimeError(f"stage {name} failed (exit {proc.returncode}); log {log}:\n{tail}")
        if artefact is not None and not artefact.exists():
            raise RuntimeError(f"stage {name} finished but did not produce {artefact}; log {log}")
        done.write_text(f"{self.timings[name]:.1f}\n")
        print(f"[experiment] {name}: {self.timings[name]:.0f} s", flush=True)


def _evaluated(report: pathlib.Path, arms: list[str], seeds: list[int]) -> bool:
    """Whether ``report`` (eval.json) evaluated exactly these ``name=checkpoint[:beta=b][:advantage=a]`` arms,
    each under the advantage condition asked (an arm without one: its checkpoint's), on ``seeds``."""
    from recap_core.checkpoint import PROVENANCE_FILE, trained_advantage
    from recap_experiment.evaluate import AS_TRAINED, parse_arm

    def condition(arm) -> str | None:
        if arm.advantage != AS_TRAINED:
            return arm.advantage
        try:
            return trained_advantage(json.loads((arm.checkpoint / PROVENANCE_FILE).read_text()))
        except (OSError, ValueError):
            return "positive"

    try:
        done = json.loads(report.read_text())
        asked = {arm.name: (str(arm.checkpoint), arm.beta, condition(arm)) for arm in map(parse_arm, arms)}
        # reports written before they recorded the advantage prompted every arm "positive"
        found = {
            name: (str(pathlib.Path(a["checkpoint"])), float(a["beta"]), a.get("advantage", "positive"))
            for name, a in done["arms"].items()
        }
        return found == asked and list(done["seeds"]) == seeds
    except (OSError, ValueError, KeyError, TypeError, argparse.ArgumentTypeError):
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("runs/experiment"),
        help="experiment directory (bags, dataset, checkpoints, report)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--quick",
        action="store_const",
        dest="profile",
        const="quick",
        help="every stage at tiny sizes (minutes; checks the pipeline, not the gain)",
    )
    group.add_argument("--profile", choices=sorted(PROFILES), help="default: full")
    parser.set_defaults(profile="full")  # not on the options: the group's first default (None) would win
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out: skip stages whose artefacts exist"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete what --out holds (an earlier run, other files) and start a new run there",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training stages")
    parser.add_argument(
        "--rollout-positives",
        choices=ROLLOUT_POSITIVES,
        default=None,
        help="override the profile's rule for the rollouts' indicators (the profiles': "
        "'unforced', the corrections by their advantage too; the paper's: 'advantage', the "
        "corrections forced positive; 'interventions': only the corrections are positive)",
    )
    parser.add_argument(
        "--positive-fraction",
        type=float,
        default=None,
        metavar="F",
        help="override the share of the iterations' frames whose advantage passes the threshold "
        "(see `recap label --positive-fraction`)",
    )
    parser.add_argument(
        "--eval-seeds",
        type=int,
        default=None,
        metavar="N",
        help="override the profile's number of held-out evaluation seeds",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        metavar="K",
        help="override the profile's number of RECAP iterations (with --resume: add one to a "
        "finished run; its AWR and evaluation are redone for the new last iteration)",
    )
    parser.add_argument(
        "--rollouts",
        type=int,
        default=None,
        metavar="N",
        help="override the profile's number of rollouts per iteration",
    )
    parser.add_argument(
        "--policy-mix",
        action="append",
        default=None,
        metavar="KIND=SHARE",
        help="override the profile's sampling of the RECAP and AWR fine-tunes by frame kind "
        "(see `recap train-policy --mix`; 'none' for uniform over frames)",
    )
    parser.add_argument(
        "--absolute-still-joints",
        type=float,
        default=None,
        metavar="STD",
        help="override the profile's threshold (rad) below which pi_pre learns absolute targets "
        "for a joint the demonstrations hold still (0: every arm joint relative)",
    )
    parser.add_argument(
        "--value-folds",
        type=int,
        default=None,
        metavar="K",
        help="override the profile's cross-fitting of the values used for the labels "
        "(see `recap train-value --folds`; 0: off, every episode labelled in-sample)",
    )
    parser.add_argument(
        "--human-release",
        choices=RELEASE_RULES,
        default=None,
        help="override where the simulated human's corrections end (see `recap station --human-release`)",
    )
    parser.add_argument(
        "--takeover-negative",
        type=int,
        default=None,
        metavar="STEPS",
        help="override the profile's steps before a take-over labelled negative "
        "(see `recap label --takeover-negative`; 0: off)",
    )


def resolve_profile(args) -> Profile:
    """The named profile with the command line's overrides (ValueError when they make it invalid)."""
    profile = PROFILES[args.profile]
    overrides = {}
    if args.rollout_positives is not None:
        overrides["rollout_positives"] = args.rollout_positives
    if args.positive_fraction is not None:
        overrides["positive_fraction"] = args.positive_fraction
    if args.eval_seeds is not None:
        overrides["eval_seeds"] = (profile.eval_seeds[0], args.eval_seeds)
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.rollouts is not None:
        overrides["rollouts_per_iteration"] = args.rollouts
    if args.policy_mix is not None:
        overrides["policy_mix"] = tuple(m for m in args.policy_mix if m != "none")
    if args.takeover_negative is not None:
        overrides["takeover_negative"] = args.takeover_negative
    if args.absolute_still_joints is not None:
        overrides["absolute_still_joints"] = args.absolute_still_joints
    if args.value_folds is not None:
        overrides["value_folds"] = args.value_folds
    if args.human_release is not None:
        overrides["human_release"] = args.human_release
    return dataclasses.replace(profile, **overrides)


def claim_out(out: pathlib.Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an ``out`` that holds anything but the run ``--resume`` continues, unless ``--overwrite``, which
    deletes what is there: a fresh run in an earlier one's directory would append its demonstrations to that
    run's dataset and mix the two."""
    if resume and overwrite:
        raise UserError("--resume continues the run in --out and --overwrite deletes it; give one of them")
    if overwrite:
        outputs.clear_directory(out)
        return
    if not outputs.entries(out):
        return
    if not ((out / "profile.json").is_file() or (out / "logs").is_dir()):
        outputs.refuse_non_empty(
            out, hint="choose another --out for the experiment, or give --overwrite to delete what is there"
        )
    if not resume:
        done = len(list((out / "logs").glob("*.done")))
        raise UserError(
            f"--out {out} already holds a recap experiment run ({done} stage(s) done); continue it "
            f"with --resume, or give --overwrite to delete it and start again"
        )


def rename_awr_folders(out: pathlib.Path) -> None:
    """Name a resumed run's AWR checkpoints as their arms, as runs do now.

    Runs before that kept the hybrid (the arm ``awr_positive``) in ``iter_K/awr`` and the paper's
    baseline (the arm ``awr``) in ``iter_K/awr_plain``. Their folders, stage markers and logs, and the
    checkpoint paths in ``eval.json``, are renamed, so resuming neither retrains nor re-evaluates them.
    """
    ckpt, logs = out / "checkpoints", out / "logs"
    moved: dict[str, str] = {}
    for iteration in sorted(ckpt.glob("iter_*")):
        k = iteration.name[len("iter_") :]
        for old_stage, old, new_stage, new in (
            (f"{k}4_awr", "awr", f"{k}4_awr_positive", "awr_positive"),
            (f"{k}5_awr_plain", "awr_plain", f"{k}5_awr", "awr"),
        ):
            # the hybrid first: its old folder is the paper baseline's new one
            if (
                not (logs / f"{old_stage}.done").is_file()
                or not (iteration / old).is_dir()
                or (iteration / new).exists()
            ):
                continue
            (iteration / old).rename(iteration / new)
            moved[str(iteration / old)] = str(iteration / new)
            for suffix in (".done", ".log"):
                if (logs / f"{old_stage}{suffix}").is_file():
                    (logs / f"{old_stage}{suffix}").rename(logs / f"{new_stage}{suffix}")
            print(
                f"[experiment] renamed {iteration.name}/{old} to {iteration.name}/{new} (named as its arm)", flush=True
            )
    report = out / "eval.json"
    if not moved or not report.is_file():
        return
    try:
        done = json.loads(report.read_text())
        arms = done["arms"].values()
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return  # an unreadable evaluation is redone anyway
    for arm in arms:
        if isinstance(arm, dict) and str(arm.get("checkpoint")) in moved:
            arm["checkpoint"] = moved[str(arm["checkpoint"])]
    outputs.write_json(report, done)


def run(args) -> int:
    try:
        profile = resolve_profile(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out = args.out.resolve()
    claim_out(out, resume=args.resume, overwrite=args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, args.resume)
    if args.resume:
        rename_awr_folders(out)
    data = out / "dataset"
    bags = out / "bags"
    ckpt = out / "checkpoints"
    task = "transfer the cube to the other arm"
    # a stage runs again only when it did not finish: what its last attempt left in its --out goes
    train = [
        "--config",
        profile.model_config,
        "--batch-size",
        profile.batch_size,
        "--threads",
        args.threads,
        "--no-progress",
        "--overwrite",
    ]
    station = ["station", "--sim", "--max-steps", profile.max_steps, "--task", task, "--image-size", profile.image_size]
    t_start = time.monotonic()
    outputs.write_json(out / "profile.json", dataclasses.asdict(profile))
    try:
        # 1. demonstrations at mixed quality
        seed = 0
        for i, (quality, episodes) in enumerate(profile.demos):
            stages.run(
                f"01_demos_{i}_q{quality:g}",
                [
                    *station,
                    "--episodes",
                    episodes,
                    "--quality",
                    quality,
                    "--seed",
                    seed,
                    "--source",
                    "demo",
                    "--record",
                    bags / "demos",
                ],
            )
            seed += episodes
        stages.run(
            "02_convert_demos", ["convert", *sorted((bags / "demos").glob("*/")), "--out", data, "--no-progress"]
        )
        # 2. pretraining: V_pre, labels, pi_pre
        stages.run(
            "03_value_pretrain",
            [
                "train-value",
                data,
                "--steps",
                profile.value_pretrain_steps,
                "--folds",
                profile.value_folds,
                "--out",
                ckpt / "V_pre",
                *train,
            ],
            artefact=ckpt / "V_pre" / "provenance.json",
        )
        stages.run(
            "04_label_pretrain",
            [
                "label",
                data,
                "--value",
                ckpt / "V_pre",
                "--positive-fraction",
                profile.pretrain_positive_fraction,
                "--no-progress",
            ],
        )
        stages.run(
            "05_policy_pretrain",
            [
                "train-policy",
                data,
                "--mode",
                "recap",
                "--steps",
                profile.policy_pretrain_steps,
                "--absolute-still-joints",
                profile.absolute_still_joints,
                "--out",
                ckpt / "pi_pre",
                *train,
            ],
            artefact=ckpt / "pi_pre" / "provenance.json",
        )
        # the AWR baseline's init, as in the paper: the same pretraining without advantage conditioning
        # (no advantage text, no labels), on the demonstrations alone (--mix: also on a resumed run whose
        # dataset holds rollouts by now)
        stages.run(
            "05b_policy_pretrain_plain",
            [
                "train-policy",
                data,
                "--mode",
                "bc",
                "--mix",
                "demo=1",
                "--steps",
                profile.policy_pretrain_steps,
                "--absolute-still-joints",
                profile.absolute_still_joints,
                "--out",
                ckpt / "pi_pre_plain",
                *train,
            ],
            artefact=ckpt / "pi_pre_plain" / "provenance.json",
        )
        iterate = [
            "iterate",
            "--data",
            data,
            "--value-pretrained",
            ckpt / "V_pre",
            "--policy-pretrained",
            ckpt / "pi_pre",
            "--value-steps",
            profile.value_steps,
            "--policy-steps",
            profile.policy_steps,
            "--batch-size",
            profile.batch_size,
            "--positive-fraction",
            profile.positive_fraction,
            "--value-folds",
            profile.value_folds,
            "--lr",
            profile.fine_tune_lr,
            "--rollout-positives",
            profile.rollout_positives,
            "--takeover-negative",
            profile.takeover_negative,
            "--threads",
            args.threads,
            "--no-progress",
            "--overwrite",
            *[f"--policy-mix={m}" for m in profile.policy_mix],
        ]
        # 3. iteration 0: SFT fine-tune
        stages.run(
            "06_iteration_0",
            [*iterate, "--iteration", 0, "--out", ckpt / "iter_0"],
            artefact=ckpt / "iter_0" / "policy" / "provenance.json",
        )
        # 4. iterations with rollouts and interventions
        for k in range(1, profile.iterations + 1):
            previous = ckpt / f"iter_{k - 1}"
            stages.run(
                f"{k}1_rollouts",
                [
                    *station,
                    "--episodes",
                    profile.rollouts_per_iteration,
                    "--seed",
                    1000 * k,
                    "--policy",
                    previous / "policy",
                    "--value",
                    previous / "value",
                    "--operator-mode",
                    "intervene",
                    "--source",
                    "rollout",
                    "--human-patience",
                    profile.human_patience_s,
                    "--human-release",
                    profile.human_release,
                    "--record",
                    bags / f"iter_{k}",
                ],
            )
            stages.run(
                f"{k}2_convert", ["convert", *sorted((bags / f"iter_{k}").glob("*/")), "--out", data, "--no-progress"]
            )
            stages.run(
                f"{k}3_iterate",
                [*iterate, "--iteration", k, "--out", ckpt / f"iter_{k}"],
                artefact=ckpt / f"iter_{k}" / "policy" / "provenance.json",
            )
        # 5. the AWR baselines on the same final data and labels (only the last one is evaluated), each in the
        # folder named as its arm: awr_positive, from pi_pre, which keeps the pretraining's conditioning (a
        # hybrid, evaluated prompted positive); awr, the paper's, from pi_pre_plain (a model without
        # advantage conditioning)
        k = profile.iterations
        awr = [
            "train-policy",
            data,
            "--mode",
            "awr",
            "--steps",
            profile.policy_steps,
            "--lr",
            profile.fine_tune_lr,
            "--iteration",
            k,
            *train,
            *[f"--mix={m}" for m in profile.policy_mix],
        ]
        for stage, init, arm in (
            (f"{k}4_awr_positive", "pi_pre", "awr_positive"),
            (f"{k}5_awr", "pi_pre_plain", "awr"),
        ):
            stages.run(
                stage,
                [*awr, "--init", ckpt / init, "--out", ckpt / f"iter_{k}" / arm],
                artefact=ckpt / f"iter_{k}" / arm / "provenance.json",
            )
        # 6. evaluation on held-out seeds, no interventions
        last = ckpt / f"iter_{profile.iterations}"
        first, count = profile.eval_seeds
        # AWR as the paper runs it (from pi_pre_plain, prompted as trained: no advantage text), and the hybrid:
        # AWR from pi_pre prompted "Advantage: positive", which its fine-tune never saw but its init learnt to
        # follow (docs/experiment.md, Arms)
        arms = [
            f"sft={ckpt / 'iter_0' / 'policy'}",
            f"recap_beta1={last / 'policy'}",
            f"recap_beta2={last / 'policy'}:beta=2",
            f"awr={last / 'awr'}",
            f"awr_positive={last / 'awr_positive'}:advantage=positive",
        ]
        arms += [f"iter_{k}={ckpt / f'iter_{k}' / 'policy'}" for k in range(1, profile.iterations)]
        seeds = list(range(first, first + count))
        stages.run(
            "90_eval",
            [
                "eval",
                *arms,
                "--seeds",
                f"{first}-{first + count - 1}",
                "--task",
                task,
                "--max-steps",
                profile.max_steps,
                "--image-size",
                profile.image_size,
                "--threads",
                args.threads,
                "--workers",
                profile.eval_workers,
                "--no-progress",
                "--out",
                out / "eval.json",
            ],
            artefact=out / "eval.json",
            current=lambda: _evaluated(out / "eval.json", arms, seeds),
        )
    except RuntimeError as exc:
        print(f"[experiment] {exc}", file=sys.stderr)
        return 1
    total = time.monotonic() - t_start
    if args.resume:  # stages done by an earlier invocation count with their recorded times
        total = max(total, sum(stages.timings.values()))
    report = write_report(out, profile, stages.timings, total)
    print(f"[experiment] done in {time.monotonic() - t_start:.0f} s: report {report}", flush=True)
    return 0
