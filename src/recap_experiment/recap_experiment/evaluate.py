"""``recap eval``: policies on held-out sim seeds, without interventions, each figure with a 95 % interval.

The simulator, the policy runner and the policy node's own ChunkExecutor run synchronously in one loop,
so an episode's outcome depends only on its seed, and every arm sees the same seeds. docs/experiment.md
has the metrics and the scene-conditioning diagnostic. Torch is imported only when it runs.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import pathlib
import sys
import time
from typing import Sequence

import numpy as np

from recap_core.stats import bootstrap_interval, throughput, wilson_interval

DT = 0.02
# an arm without ``:advantage=``: the condition its checkpoint was fine-tuned under (Checkpoint.trained_advantage)
AS_TRAINED = "as_trained"


@dataclasses.dataclass(frozen=True)
class EvalArm:
    """One policy configuration under evaluation."""

    name: str
    checkpoint: pathlib.Path
    beta: float = 1.0
    advantage: str | None = AS_TRAINED


@dataclasses.dataclass
class EpisodeOutcome:
    seed: int
    success: bool
    steps: int  # until success, or the time limit
    max_reward: float


def summarise(outcomes: Sequence[EpisodeOutcome], dt: float = DT) -> dict:
    """Success rate, throughput (successes per hour) and mean time to success, with 95 % intervals.

    Success rate with a Wilson interval; throughput: successful episodes per hour of robot time, where an
    episode costs its duration until success or the time limit (bootstrap over episodes); mean time to
    success over the successful episodes (bootstrap; NaN when none succeeded).
    """
    n = len(outcomes)
    success = np.array([o.success for o in outcomes], dtype=bool)
    seconds = np.array([o.steps * dt for o in outcomes], dtype=float)
    k = int(success.sum())
    pairs = np.stack([success.astype(float), seconds], axis=1) if n else np.zeros((0, 2))
    tts = seconds[success]
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else float("nan"),
        "success_rate_ci95": list(wilson_interval(k, n)),
        "throughput_per_hour": throughput(pairs) if n else float("nan"),
        "throughput_ci95": list(bootstrap_interval(pairs, throughput)),
        "mean_time_to_success_s": float(tts.mean()) if k else float("nan"),
        "time_to_success_ci95": list(bootstrap_interval(tts, np.mean)) if k else [float("nan")] * 2,
        "robot_hours": float(seconds.sum() / 3600.0),
    }


def scene_conditioning(
    sim, runner, arm: EvalArm, seeds: Sequence[int], *, task: str, noise_draws: int = 10, station=None
) -> dict:
    """How much the first chunk's last target depends on the scene versus the sampling noise.

    A flow policy that ignores its cameras samples the demonstrations' spread of targets at random (ratio
    near 0); one that reads the scene (the cube's place) moves with it (ratio >> 1).

    ``scene_spread``: std over ``seeds`` (each a freshly reset scene, same noise seed), averaged over the arm
    joints (rad). ``noise_spread``: std over ``noise_draws`` noise seeds on the first seed's scene. Both at
    the reset pose, where the joint state is the same for every seed, so only the images can tell the
    scenes apart. ``station`` (the simulated one by default) names the grippers, which are left out.
    """
    from recap_core.station import StationConfig

    grippers = (station or StationConfig.sim_aloha()).gripper_indices

    def first_chunk_end(seed: int, noise_seed: int) -> np.ndarray:
        sim.reset(seed)
        runner.reset()
        obs = {"images": sim.render(), "state": sim.joint_positions(), "task": task}
        return np.asarray(runner.infer(obs, beta=arm.beta, advantage=arm.advantage, seed=noise_seed)["actions"])[-1]

    if len(seeds) < 2 or noise_draws < 2:
        raise ValueError("scene conditioning needs at least 2 seeds and 2 noise draws")
    by_scene = np.array([first_chunk_end(int(seed), 0) for seed in seeds])
    # noise seed 0 on the first scene is by_scene[0]: draw only the others
    by_noise = np.array([by_scene[0], *(first_chunk_end(int(seeds[0]), k) for k in range(1, noise_draws))])
    joints = [i for i in range(by_scene.shape[1]) if i not in grippers]
    scene = float(by_scene[:, joints].std(axis=0).mean())
    noise = float(by_noise[:, joints].std(axis=0).mean())
    return {
        "seeds": len(seeds),
        "noise_draws": noise_draws,
        "scene_spread_rad": scene,
        "noise_spread_rad": noise,
        "ratio": scene / max(noise, 1e-9),
    }


def run_episode(
    sim,
    runner,
    arm: EvalArm,
    seed: int,
    *,
    task: str,
    max_steps: int,
    replan_steps: int,
    blend_steps: int,
    sample_seed: int,
    limits,
    chunk_mode: str = "crossfade",
    inference_delay_ms: float = 0.0,
    trace: dict | None = None,
) -> EpisodeOutcome:
    """One episode; ``limits`` is the StationConfig whose joint limits clip every command.

    ``chunk_mode`` (``ChunkExecutor``'s: naive, crossfade over ``blend_steps``, rtc) and ``inference_delay_ms``,
    simulated without a clock: the chunk planned from the observation at tick ``t`` arrives at tick
    ``t + ceil(D / 20 ms)`` (:func:`delay_ticks`); the robot executes the old plan meanwhile (holds its last command
    where there is none), and one chunk is in flight at a time, as in the policy node. rtc passes the runner the
    plan from ``t`` on as its guide (inference delay: the simulated one; execution horizon: ``replan_steps``).
    ``trace`` (a dict) receives the ``commands`` ``[T, 14]`` sent and the executor's ``switch_ticks``.
    """
    from recap_policy_node.chunking import ChunkExecutor

    sim.reset(seed)
    runner.reset()
    executor = ChunkExecutor(blend_steps, mode=chunk_mode)
    delay = delay_ticks(inference_delay_ms)
    max_reward = 0.0
    last_plan = None
    pending = None  # (arrival tick, plan tick, actions): the chunk being computed
    command = None
    commands = []

    def finish(outcome: EpisodeOutcome) -> EpisodeOutcome:
        if trace is not None:
            trace["commands"] = np.array(commands)
            trace["switch_ticks"] = list(executor.switch_ticks)
        return outcome

    for tick in range(max_steps):
        if pending is not None and pending[0] <= tick:
            executor.add_chunk(pending[2], start_tick=pending[1], now_tick=tick)
            pending = None
        if pending is None and (last_plan is None or tick - last_plan >= replan_steps or not executor.has_plan(tick)):
            obs = {"images": sim.render(), "state": sim.joint_positions(), "task": task}
            knobs = dict(beta=arm.beta, advantage=arm.advantage, seed=sample_seed + tick)
            if chunk_mode == "rtc":
                prefix = executor.planned(tick)
                if len(prefix):
                    knobs["guide"] = {
                        "prefix_actions": prefix.astype(np.float32),
                        "inference_delay": delay,
                        "execution_horizon": int(replan_steps),
                    }
            out = runner.infer(obs, **knobs)
            if delay == 0:
                executor.add_chunk(out["actions"], start_tick=tick, now_tick=tick)
            else:
                pending = (tick + delay, tick, out["actions"])
            last_plan = tick
        action = executor.action(tick)
        if action is None:  # no plan yet (the first chunk is still being computed): hold
            action = sim.joint_positions() if command is None else command
        command = np.clip(action, limits.lower_array, limits.upper_array)  # as the station would
        commands.append(command)
        result = sim.step(command)
        max_reward = max(max_reward, result.reward)
        if result.success:
            return finish(EpisodeOutcome(seed, True, result.step, max_reward))
    return finish(EpisodeOutcome(seed, False, max_steps, max_reward))


def delay_ticks(inference_delay_ms: float, dt: float = DT) -> int:
    """Control ticks an inference of ``inference_delay_ms`` takes: ``ceil(D / dt)`` (0 for 0)."""
    if not np.isfinite(inference_delay_ms) or inference_delay_ms < 0:
        raise ValueError(f"inference delay must be a finite number of ms >= 0, got {inference_delay_ms!r}")
    return int(np.ceil(inference_delay_ms / (dt * 1e3) - 1e-9))


def chunk_mode_of(chunk_mode: str, blend_steps: int) -> str:
    """The mode a run effectively used: ``crossfade`` over 0 steps is naive switching."""
    return "naive" if chunk_mode == "crossfade" and blend_steps == 0 else chunk_mode


def _episodes(
    arms: Sequence[EvalArm],
    seeds: Sequence[int],
    *,
    task: str,
    max_steps: int,
    replan_steps: int,
    blend_steps: int,
    image_size: int,
    threads: int,
    progress: bool,
    sim_task: str,
    conditioning_seeds: int,
    cameras: Sequence[str] | None = None,
    chunk_mode: str = "crossfade",
    inference_delay_ms: float = 0.0,
) -> dict[str, dict]:
    """Every arm on ``seeds`` in this process: outcomes, checkpoint id, seconds, and the conditioning
    diagnostic on the first ``conditioning_seeds`` seeds (0: none), and per seed the jerk at chunk switches and
    elsewhere (:func:`~recap_policy_node.chunking.boundary_jerk`). The sim renders ``cameras`` (:func:`sim_station`)."""
    import torch

    from recap_policy_node.chunking import boundary_jerk

    from recap_core.errors import UserError
    from recap_core.models import PolicyRunner
    from recap_sim.sim import DEFAULT_CAMERAS, AlohaSim

    torch.set_num_threads(threads)
    limits = sim_station(cameras)
    try:
        sim = AlohaSim(
            sim_task,
            cameras={c: DEFAULT_CAMERAS.get(c, c) for c in limits.cameras},
            width=image_size,
            height=image_size,
            max_episode_steps=max_steps,
        )
    except ValueError as exc:
        raise UserError(f"--cameras {','.join(limits.cameras)}: {exc}") from None
    found = {}
    try:
        for arm in arms:
            runner = PolicyRunner.from_checkpoint(arm.checkpoint)
            if arm.advantage == AS_TRAINED:
                arm = dataclasses.replace(arm, advantage=runner.checkpoint.trained_advantage)
            t0 = time.perf_counter()
            iterator = seeds
            if progress:
                from tqdm import tqdm

                iterator = tqdm(seeds, desc=f"eval {arm.name}", unit="ep", file=sys.stderr)
            outcomes, jerks = [], {}
            for seed in iterator:
                trace: dict = {}
                outcomes.append(
                    run_episode(
                        sim,
                        runner,
                        arm,
                        int(seed),
                        task=task,
                        max_steps=max_steps,
                        replan_steps=replan_steps,
                        blend_steps=blend_steps,
                        sample_seed=int(seed) * 1000,
                        limits=limits,
                        chunk_mode=chunk_mode,
                        inference_delay_ms=inference_delay_ms,
                        trace=trace,
                    )
                )
                boundary, elsewhere = boundary_jerk(
                    trace["commands"], trace["switch_ticks"], DT, window=jerk_window(blend_steps)
                )
                jerks[int(seed)] = (boundary, elsewhere, len(trace["switch_ticks"]))
            count = min(int(conditioning_seeds), len(seeds))
            found[arm.name] = {
                "checkpoint_id": runner.checkpoint_id,
                "advantage": arm.advantage,
                "outcomes": [dataclasses.asdict(o) for o in outcomes],
                "scene_conditioning": (
                    scene_conditioning(sim, runner, arm, list(seeds)[:count], task=task, station=limits)
                    if count >= 2
                    else None
                ),
                "seconds": time.perf_counter() - t0,
                "jerk": jerks,
            }
    finally:
        sim.close()
    return found


def jerk_window(blend_steps: int) -> int:
    """Ticks after a chunk switch that count as its boundary, the same for every mode: the crossfade's length."""
    return max(1, int(blend_steps))


def evaluate(
    arms: Sequence[EvalArm],
    seeds: Sequence[int],
    *,
    task: str,
    max_steps: int = 400,
    replan_steps: int = 25,
    blend_steps: int = 8,
    image_size: int = 224,
    threads: int = 2,
    progress: bool = True,
    sim_task: str = "transfer_cube",
    conditioning_seeds: int = 20,
    workers: int = 1,
    cameras: Sequence[str] | None = None,
    chunk_mode: str = "crossfade",
    inference_delay_ms: float = 0.0,
) -> dict:
    """Evaluate every arm on the same ``seeds``, the sim rendering ``cameras`` (:func:`sim_station`).

    ``chunk_mode`` and ``inference_delay_ms``: how chunks take over and the simulated inference delay
    (:func:`run_episode`). Each arm reports its ``boundary_jerk`` (rad/s^3, the norm over the joints of the
    commands' third difference): mean and p95 over the ticks of chunk switches (and the ``jerk_window`` after them)
    and elsewhere, pooled over the episodes.

    ``workers`` > 1 shares the seeds out among that many processes, each with ``threads // workers``
    (at least 1) torch threads: batch-1 inference of a small model does not keep two threads busy, two
    processes do. Episodes are deterministic given the seed and the thread count, so a run is
    reproducible for the same ``workers`` and ``threads``; the diagnostic runs in the first shard on the
    first seeds, as with one worker.
    """
    from recap_policy_node.chunking import CHUNK_MODES, jerk_summary

    if chunk_mode not in CHUNK_MODES:
        raise ValueError(f"chunk mode must be one of {list(CHUNK_MODES)}, got {chunk_mode!r}")
    delay = delay_ticks(inference_delay_ms)
    seeds = [int(seed) for seed in seeds]
    workers = max(1, min(int(workers), len(seeds)))
    common = dict(
        chunk_mode=chunk_mode,
        inference_delay_ms=float(inference_delay_ms),
        task=task,
        max_steps=max_steps,
        replan_steps=replan_steps,
        blend_steps=blend_steps,
        image_size=image_size,
        sim_task=sim_task,
        cameras=None if cameras is None else tuple(cameras),
    )
    t0 = time.perf_counter()
    if workers == 1:
        shards = [
            _episodes(arms, seeds, threads=threads, progress=progress, conditioning_seeds=conditioning_seeds, **common)
        ]
        parts = [seeds]
    else:
        import concurrent.futures
        import multiprocessing

        count = min(int(conditioning_seeds), len(seeds))
        # the diagnostic's seeds go first into shard 0 so it sees the same scenes as a single process
        parts = [seeds[count:][k::workers] for k in range(workers)]
        parts[0] = seeds[:count] + parts[0]
        per_worker = max(1, threads // workers)
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [
                pool.submit(
                    _episodes,
                    arms,
                    part,
                    threads=per_worker,
                    progress=progress and k == 0,
                    conditioning_seeds=count if k == 0 else 0,
                    **common,
                )
                for k, part in enumerate(parts)
            ]
            shards = [future.result() for future in futures]
    report = {
        "seeds": seeds,
        "max_steps": max_steps,
        "replan_steps": replan_steps,
        "blend_steps": blend_steps,
        "chunk_mode": chunk_mode_of(chunk_mode, blend_steps),
        "inference_delay_ms": float(inference_delay_ms),
        "inference_delay_ticks": delay,
        "task": task,
        "workers": workers,
        "arms": {},
    }
    for arm in arms:
        by_seed = {o["seed"]: o for shard in shards for o in shard[arm.name]["outcomes"]}
        outcomes = [EpisodeOutcome(**by_seed[seed]) for seed in seeds]
        jerks = {seed: j for shard in shards for seed, j in shard[arm.name]["jerk"].items()}
        boundary_jerk = {
            **jerk_summary(
                np.concatenate([jerks[seed][0] for seed in seeds]),
                np.concatenate([jerks[seed][1] for seed in seeds]),
                sum(jerks[seed][2] for seed in seeds),
            ),
            "window": jerk_window(blend_steps),
        }
        report["arms"][arm.name] = {
            "checkpoint": str(arm.checkpoint),
            "checkpoint_id": shards[0][arm.name]["checkpoint_id"],
            "beta": arm.beta,
            "advantage": shards[0][arm.name]["advantage"],
            **summarise(outcomes),
            "outcomes": [dataclasses.asdict(o) for o in outcomes],
            "scene_conditioning": shards[0][arm.name]["scene_conditioning"],
            "boundary_jerk": boundary_jerk,
            "wall_seconds": max(shard[arm.name]["seconds"] for shard in shards),
        }  # shards run side by side
    report["wall_seconds"] = time.perf_counter() - t0
    return report


def sim_station(cameras: Sequence[str] | None = None):
    """The simulated station evaluated on, rendering ``cameras`` (default its own): each a station camera
    of the sim (``base`` is the overhead ``top``) or a MuJoCo camera of the model (``angle``,
    ``front_close``...)."""
    from recap_core.station import StationConfig

    station = StationConfig.sim_aloha()
    return station if cameras is None else dataclasses.replace(station, cameras=tuple(cameras))


def parse_cameras(text: str) -> tuple[str, ...]:
    """``--cameras a,b,c``; ``argparse.ArgumentTypeError`` for a bad list."""
    from recap_core.layout import check_cameras

    cameras = tuple(part.strip() for part in text.split(",") if part.strip())
    try:
        check_cameras(cameras)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cameras {text!r}: {exc}") from None
    return cameras


def parse_arm(text: str) -> EvalArm:
    """``NAME=CHECKPOINT[:beta=B][:advantage=positive|negative|none]``; without ``advantage`` the checkpoint's
    own (``Checkpoint.trained_advantage``: none for an AWR fine-tune, positive otherwise). A malformed spec
    raises ``argparse.ArgumentTypeError`` naming the arm and the bad part."""
    form = "NAME=CHECKPOINT[:beta=B][:advantage=positive|negative|none]"
    name, separator, rest = text.partition("=")
    if not separator or not name or not rest:
        raise argparse.ArgumentTypeError(f"arm {text!r}: expected {form}")
    path, *parts = rest.split(":")
    if not path:
        raise argparse.ArgumentTypeError(f"arm {text!r}: no checkpoint directory before the options; expected {form}")
    options: dict[str, str] = {}
    for part in parts:
        key, separator, value = part.partition("=")
        if not separator or key not in ("beta", "advantage"):
            raise argparse.ArgumentTypeError(
                f"arm {text!r}: option {part!r} is not beta=B or advantage=A (expected {form})"
            )
        if key in options:
            raise argparse.ArgumentTypeError(f"arm {text!r}: {key} given twice")
        options[key] = value
    try:
        beta = float(options.get("beta", "1"))
    except ValueError:
        beta = float("nan")
    if not (np.isfinite(beta) and beta >= 0):
        raise argparse.ArgumentTypeError(
            f"arm {text!r}: beta must be a finite number >= 0 (the CFG guidance "
            f"weight; 1: no guidance), got {options['beta']!r}"
        )
    advantage = options.get("advantage", AS_TRAINED)
    if advantage not in ("positive", "negative", "none", AS_TRAINED):
        raise argparse.ArgumentTypeError(
            f"arm {text!r}: advantage must be positive, negative or none, got {advantage!r}"
        )
    return EvalArm(name, pathlib.Path(path), beta, None if advantage == "none" else advantage)


MAX_SEEDS = 100_000
MAX_SEED = 2**32 - 1  # numpy / MuJoCo seeds are unsigned 32-bit


def parse_seeds(text: str) -> list[int]:
    """``1000-1049``, ``1,2,3`` or a mix (``1-3,7``): distinct seeds in 0..2**32-1, at least one; a bad spec
    raises ``argparse.ArgumentTypeError`` saying what is wrong."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, separator, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if separator else low
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"seeds {text!r}: {part!r} is not a seed N or a range FIRST-LAST of non-negative integers"
            ) from None
        if not (0 <= low <= MAX_SEED and 0 <= high <= MAX_SEED):
            raise argparse.ArgumentTypeError(f"seeds {text!r}: {part!r} is outside 0..{MAX_SEED}")
        if high < low:
            raise argparse.ArgumentTypeError(
                f"seeds {text!r}: the range {part!r} is empty (its first seed is "
                f"after its last); write FIRST-LAST with FIRST <= LAST"
            )
        if len(seeds) + high - low + 1 > MAX_SEEDS:
            raise argparse.ArgumentTypeError(
                f"seeds {text!r}: more than {MAX_SEEDS} seeds; evaluate in parts and pool them with `recap eval-pool`"
            )
        seeds.extend(range(low, high + 1))
    if not seeds:
        raise argparse.ArgumentTypeError(f"seeds {text!r}: no seed; give e.g. 100000-100049 or 1,2,3")
    if len(set(seeds)) != len(seeds):
        twice = sorted(seed for seed, count in collections.Counter(seeds).items() if count > 1)[:5]
        raise argparse.ArgumentTypeError(f"seeds {text!r}: seed(s) {twice} given twice; each seed once")
    return seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "arms",
        nargs="+",
        type=parse_arm,
        metavar="NAME=CHECKPOINT[:beta=B][:advantage=A]",
        help="policies to evaluate, e.g. sft=runs/pi0 recap_b2=runs/pi2:beta=2",
    )
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=parse_seeds("100000-100049"),
        help="held-out sim seeds, e.g. 100000-100049 (default), 1,2,3 or 1-3,7; each once",
    )
    parser.add_argument("--task", default="transfer the cube to the other arm", help="task prompt")
    parser.add_argument("--max-steps", type=int, default=400, help="time limit (50 Hz steps)")
    parser.add_argument("--replan-steps", type=int, default=25, help="ticks executed per chunk before replanning")
    parser.add_argument("--blend-steps", type=int, default=8, help="crossfade ticks at chunk boundaries")
    parser.add_argument(
        "--chunk-mode",
        choices=("naive", "crossfade", "rtc"),
        default="crossfade",
        help="how a new chunk takes over: naive switching, crossfade (over --blend-steps), rtc (real-time chunking: "
        "the chunk is sampled to continue the plan still being executed)",
    )
    parser.add_argument(
        "--inference-delay-ms",
        type=float,
        default=0.0,
        metavar="D",
        help="simulated inference delay: a chunk planned at tick t arrives at tick t + ceil(D / 20 ms), the old plan "
        "running meanwhile (deterministic, no clock; default 0)",
    )
    parser.add_argument("--image-size", type=int, default=224, help="rendered camera size (the station's)")
    parser.add_argument(
        "--cameras",
        type=parse_cameras,
        default=None,
        metavar="CAM,CAM",
        help="the cameras the sim renders, by the names the policies read: the sim station's (base, "
        "left_wrist, right_wrist: the default) or MuJoCo cameras (top, angle, front_close, ...); every "
        "checkpoint's cameras must be among them",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (shared among the workers)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes that share the seeds (2 on a 2-core machine: ~1.5x faster)"
    )
    parser.add_argument(
        "--conditioning-seeds",
        type=int,
        default=20,
        help="seeds of the scene-conditioning diagnostic (first chunk vs scene and noise; 0: skip)",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="write the JSON report here (strict JSON: null where a figure is undefined)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file that is not a recap eval report"
    )
    parser.add_argument("--no-progress", action="store_true")


def check_arms(arms: Sequence[EvalArm], cameras: Sequence[str] | None = None) -> None:
    """Load every arm's checkpoint once before any episode runs: a missing, damaged or value checkpoint, one
    made for another station layout than the sim's (joints, grippers, the ``cameras`` rendered), or guidance
    without an advantage to guide towards, is a UserError naming the arm (not a traceback minutes in)."""
    from recap_core.checkpoint import CheckpointError, load_checkpoint
    from recap_core.errors import UserError
    from recap_core.layout import model_problem

    station = sim_station(cameras)

    names = [arm.name for arm in arms]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"arm name(s) {twice} given twice; give each arm its own NAME")
    for arm in arms:
        try:
            checkpoint = load_checkpoint(arm.checkpoint, kind="policy")
        except CheckpointError as exc:
            raise UserError(f"arm {arm.name}: {exc}") from exc
        problem = model_problem("policy", checkpoint.model_config, checkpoint.training_config, station.layout)
        if problem:
            raise UserError(f"arm {arm.name}: {arm.checkpoint} cannot run on the simulated station: {problem}")
        advantage = checkpoint.trained_advantage if arm.advantage == AS_TRAINED else arm.advantage
        if arm.beta != 1.0 and advantage is None:
            raise UserError(
                f"arm {arm.name}: beta {arm.beta:g} guides towards an advantage, but {arm.checkpoint} "
                f"was trained without advantage text ({checkpoint.provenance.get('mode')}); use beta=1 "
                f"or add :advantage=positive"
            )
        del checkpoint


def is_eval_report(data) -> bool:
    """Whether parsed JSON is a ``recap eval`` (or ``recap eval-pool``) report."""
    return isinstance(data, dict) and isinstance(data.get("arms"), dict)


def run(args) -> int:
    from recap_core.errors import UserError
    from recap_core.outputs import check_output_file, write_json

    for option, value, least in (
        ("--workers", args.workers, 1),
        ("--threads", args.threads, 1),
        ("--max-steps", args.max_steps, 1),
        ("--replan-steps", args.replan_steps, 1),
        ("--blend-steps", args.blend_steps, 0),
        ("--image-size", args.image_size, 1),
        ("--conditioning-seeds", args.conditioning_seeds, 0),
    ):
        if value < least:
            raise UserError(f"{option} must be >= {least}, got {value}")
    if not (np.isfinite(args.inference_delay_ms) and args.inference_delay_ms >= 0):
        raise UserError(f"--inference-delay-ms must be a finite number >= 0, got {args.inference_delay_ms}")
    if args.out:
        check_output_file(args.out, overwrite=args.overwrite, what="a recap eval report", accepts=is_eval_report)
    check_arms(args.arms, args.cameras)
    report = evaluate(
        args.arms,
        args.seeds,
        task=args.task,
        max_steps=args.max_steps,
        replan_steps=args.replan_steps,
        blend_steps=args.blend_steps,
        image_size=args.image_size,
        threads=args.threads,
        progress=not args.no_progress,
        conditioning_seeds=args.conditioning_seeds,
        workers=args.workers,
        cameras=args.cameras,
        chunk_mode=args.chunk_mode,
        inference_delay_ms=args.inference_delay_ms,
    )
    print(format_table(report))
    if args.out:
        write_json(args.out, report)
        print(f"report: {args.out}")
    return 0


def number(value, spec: str, missing: str = "n/a") -> str:
    """``value`` formatted with ``spec``, or ``missing`` where it is undefined (None in a report read back from
    JSON, NaN in one just computed: no episodes, or no success to time)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return missing
    return format(value, spec)


def format_table(report: dict) -> str:
    rows = [
        "| arm | success | 95% CI | throughput, successes per hour | 95% CI | mean time to success (s) | 95% CI "
        "| scene / noise spread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, a in report["arms"].items():
        lo, hi = a["success_rate_ci95"]
        tlo, thi = a["throughput_ci95"]
        slo, shi = a["time_to_success_ci95"]
        rows.append(
            f"| {name} | {a['successes']}/{a['episodes']} ({number(a['success_rate'], '.0%')}) | "
            f"{number(lo, '.0%')}–{number(hi, '.0%')} | {number(a['throughput_per_hour'], '.0f')} | "
            f"{number(tlo, '.0f')}–{number(thi, '.0f')} | {number(a['mean_time_to_success_s'], '.2f')} | "
            f"{number(slo, '.2f')}–{number(shi, '.2f')} | {conditioning_cell(a.get('scene_conditioning'))} |"
        )
    jerks = {name: a["boundary_jerk"] for name, a in report["arms"].items() if a.get("boundary_jerk")}
    if jerks:
        rows += [
            "",
            f"chunk mode {report.get('chunk_mode')}, inference delay "
            f"{number(report.get('inference_delay_ms'), 'g')} ms ({report.get('inference_delay_ticks')} ticks); "
            "jerk (rad/s³) at chunk switches vs elsewhere:",
            "",
            "| arm | switches | boundary jerk mean | p95 | elsewhere mean | p95 |",
            "|---|---|---|---|---|---|",
        ]
        for name, j in jerks.items():
            rows.append(
                f"| {name} | {j['switches']} | {number(j['boundary_mean'], '.0f')} | "
                f"{number(j['boundary_p95'], '.0f')} | {number(j['elsewhere_mean'], '.0f')} | "
                f"{number(j['elsewhere_p95'], '.0f')} |"
            )
    return "\n".join(rows)


def conditioning_cell(conditioning: dict | None) -> str:
    """``scene / noise rad (xratio)`` for a report table; ``–`` when the diagnostic was skipped."""
    if not conditioning:
        return "–"
    return (
        f"{number(conditioning['scene_spread_rad'], '.3f')} / {number(conditioning['noise_spread_rad'], '.3f')} "
        f"rad (x{number(conditioning['ratio'], '.2f')})"
    )
