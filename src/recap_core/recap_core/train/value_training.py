"""Distributional value training (``recap train-value``, paper Eq. 1), with its cross-fitted fold models.

The loss is in :func:`train_value` and docs/learning.md §3; the folds in :mod:`recap_core.train.crossfit`.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import shutil

import torch

from recap_core import rl
from recap_core.checkpoint import read_json
from recap_core.models.processor import Processor, std_floor_of, value_steps
from recap_core.models.tokenizer import PromptTokenizer
from recap_core.models.value import value_loss
from recap_core.train import crossfit
from recap_core.train.common import augment_shift, plan_model, saver, train_config_from_args, training_layout
from recap_core.train.data import dataset_tasks, frames_from_batch, frames_to_device, normalization_for, open_datasets
from recap_core.train.loop import run_training


def train_value(args: argparse.Namespace, context) -> dict:
    """Train (or resume / fine-tune) a value model on ``args.datasets``, then its fold models when
    ``args.folds`` asks for them; returns the run summary (``folds``: one summary per fold model).

    ``args`` holds the options of ``recap train-value``. The loss is the cross-entropy between the model's
    201-bin distribution and the two-hot encoding of each frame's normalised Monte-Carlo return
    ``return_normalised`` (the dataset computes it from the sparse rewards); the prompt is the task alone (no
    advantage text). ``args.folds`` K also trains one model per fold of the episodes on the others, under
    ``OUT/folds/`` (:mod:`recap_core.train.crossfit`), so that ``recap label`` can give every episode a value
    from a model that never saw it.
    """
    folds = crossfit.check_folds(getattr(args, "folds", 0))
    init, config_name = args.init, args.config
    if args.resume and folds:  # fold models not started yet begin where the main run began
        recorded = read_json(args.out / "config.json")  # CheckpointError when --out holds no checkpoint
        init, config_name = (recorded.get("training") or {}).get("init"), (recorded.get("model") or {}).get("name")
        init = pathlib.Path(init) if init else None
    init_assignment: dict[str, int] = {}
    if folds and init is not None:
        init_folds, init_assignment = crossfit.read_assignment(init)
        if init_folds != folds:
            raise ValueError(
                f"--folds {folds} with --init {init}, which has "
                + (f"{init_folds} folds" if init_folds else "no fold models")
                + f": its fold models would have trained on the episodes each new fold holds out; "
                f"train {init} with --folds {folds} too"
            )
    if not args.resume and context.is_main:
        # a new model: fold models of an earlier run in OUT would label with values of another model
        shutil.rmtree(args.out / crossfit.FOLDS_DIR, ignore_errors=True)
    summary = _train_one(args, context, init=init)
    stopped_early = args.stop_at is not None and args.stop_at < args.steps
    if folds and not stopped_early:
        summary["folds"] = _train_folds(
            args, context, folds, init=init, init_assignment=init_assignment, config_name=config_name
        )
    return summary


def _train_folds(
    args: argparse.Namespace,
    context,
    folds: int,
    *,
    init: pathlib.Path | None,
    init_assignment: dict[str, int],
    config_name: str | None,
) -> list[dict]:
    """One model per fold, each on the episodes outside it (from ``init``'s model of that fold, whose
    manifest ``init_assignment`` is); the manifest is written last, so a label run never meets half a set."""
    from recap_core.data import load_episodes

    roots = [pathlib.Path(d) for d in args.datasets]
    episodes = [load_episodes(root) for root in roots]
    # the init's episodes stay in the fold whose init model never saw them; new ones balance the folds
    assignment = crossfit.assign_folds((crossfit.episode_key(e) for es in episodes for e in es), folds, init_assignment)
    held_out = {fold: sum(1 for f in assignment.values() if f == fold) for fold in range(folds)}
    summaries = []
    for fold in range(folds):
        chosen = [crossfit.training_episodes(e, fold, assignment) for e in episodes]
        kept = [i for i, c in enumerate(chosen) if c]
        if not kept:
            raise ValueError(f"fold {fold} of {folds} holds out every episode; give more episodes or fewer --folds")
        fold_args = copy.copy(args)
        fold_args.datasets = [str(roots[i]) for i in kept]
        fold_args.out = crossfit.fold_dir(args.out, fold)
        fold_args.init = None if init is None else crossfit.fold_dir(init, fold)
        fold_args.config = None if init is not None else config_name
        fold_args.resume = False
        if args.resume and (fold_args.out / "provenance.json").is_file():
            done = _steps_done(fold_args.out)
            if done >= args.steps:
                if context.is_main:
                    print(f"value fold {fold}/{folds}: done already ({done} steps)", flush=True)
                continue
            fold_args.resume, fold_args.init, fold_args.config = True, None, None
        if context.is_main:
            print(
                f"value fold {fold}/{folds}: {sum(map(len, chosen))} training episodes, {held_out[fold]} held out",
                flush=True,
            )
        summaries.append(
            _train_one(
                fold_args,
                context,
                episodes=[chosen[i] for i in kept],
                cross_fit={"fold": fold, "folds": folds, "held_out_episodes": held_out[fold]},
            )
        )
    if context.is_main:
        crossfit.write_manifest(args.out, folds, assignment)
    return summaries


def _steps_done(checkpoint: pathlib.Path) -> int:
    try:
        return int(json.loads((checkpoint / "config.json").read_text())["training"]["steps_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _train_one(
    args: argparse.Namespace, context, episodes=None, cross_fit: dict | None = None, init: pathlib.Path | None = None
) -> dict:
    """One value model; ``init`` is recorded as where the run started (a resumed run passes its original)."""
    roots = [pathlib.Path(d) for d in args.datasets]
    layout = training_layout(roots, getattr(args, "cameras", None))
    plan = plan_model(args, "value", dataset_tasks(roots), context, layout)
    config = plan.model_config
    data = open_datasets(roots, cameras=config.cameras, image_size=config.image_size, chunk_size=1, episodes=episodes)
    normalization = plan.normalization or normalization_for(data, horizon=1, relative_mask=None)
    steps = value_steps(config.cameras, config.image_size, std_floor=std_floor_of(plan.processor_steps))
    processor = Processor(steps, normalization, PromptTokenizer(plan.tokenizer, config.max_prompt_tokens))
    train_config = train_config_from_args(args)
    shift = augment_shift(args, config.image_size)
    num_bins = config.num_bins

    def step(model, batch, randomness):
        frames = frames_to_device(
            frames_from_batch(batch, config.cameras, with_actions=False, shift=shift, generator=randomness.torch),
            context.device,
        )
        inputs = processor.preprocess({**frames, "advantage": None})
        logits = model(inputs["pixels"], inputs["state_normalised"], inputs["prompt_ids"], inputs["prompt_mask"])
        returns = batch["return_normalised"].double().numpy()
        targets = torch.from_numpy(rl.two_hot(returns, num_bins)).float().to(logits.device)
        loss = value_loss(logits, targets).mean()
        with torch.no_grad():
            predicted = torch.softmax(logits.float(), dim=-1) @ plan.model.bin_values
            error = (predicted.cpu().double() - torch.from_numpy(returns)).abs().mean()
        return loss, {"value_mae": float(error)}

    training = {
        "command": "train-value",
        **train_config.__dict__,
        "augment_shift": shift,
        "datasets": [str(r) for r in roots],
        "init": str(init or args.init) if (init or args.init) else None,
        "folds": getattr(args, "folds", 0) if cross_fit is None else 0,
    }
    if cross_fit is not None:
        training["cross_fit"] = {**cross_fit, "training_frames": len(data)}
    save = saver(
        args=args,
        plan=plan,
        training_config=training,
        normalization=normalization,
        processor_steps=steps,
        layout=layout,
    )
    return run_training(
        model=plan.model,
        dataset=data.dataset,
        config=train_config,
        context=context,
        out_dir=args.out,
        step_fn=step,
        save_fn=save,
        title="train-value",
        start_step=plan.start_step,
        resume_state=plan.resume_state,
        progress=not args.no_progress,
        stop_at=args.stop_at,
    )
