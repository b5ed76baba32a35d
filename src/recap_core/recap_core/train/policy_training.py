"""Flow-matching policy training (``recap train-policy``) in its four modes: sft, recap, awr, bc.

What each mode trains on is in :func:`train_policy` and docs/learning.md §3.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Sequence

import numpy as np
import torch

from recap_core import rl
from recap_core.models.policy import PolicyInputs
from recap_core.models.processor import (
    STATE_KEY,
    Processor,
    absolute_still_joints,
    default_relative_mask,
    policy_steps,
    prompt_template,
    relative_mask_of,
    std_floor_of,
)
from recap_core.models.tokenizer import PromptTokenizer
from recap_core.errors import UserError
from recap_core.train.common import augment_shift, plan_model, saver, train_config_from_args, training_layout
from recap_core.train.data import (
    dataset_tasks,
    family_data_stats,
    frame_kinds,
    frames_from_batch,
    frames_to_device,
    normalization_for,
    open_datasets,
    pooled_stats,
)
from recap_core.train.mix import mixture_weights, parse_mix
from recap_core.train.loop import run_training

MODES = ("sft", "recap", "awr", "bc")
LABELLED_MODES = ("recap", "awr")  # the modes that read the labels of `recap label`


def advantage_texts(mode: str, batch: dict, dropout: float, rng: np.random.Generator) -> list[str | None]:
    """Per-sample advantage condition of one training batch for ``mode``."""
    size = len(batch["task"])
    if mode == "sft":
        return ["positive"] * size
    if mode in ("awr", "bc"):
        return [None] * size
    indicator = np.asarray(batch["indicator"], dtype=bool)
    dropped = rl.drop_indicator(size, dropout, rng)
    return [None if drop else ("positive" if positive else "negative") for positive, drop in zip(indicator, dropped)]


def still_joint_mask(
    args: argparse.Namespace, plan, data, dim: int, verbose: bool, gripper_indices: Sequence[int]
) -> list[bool]:
    """The relative-action mask: the checkpoint's when training from one, else every joint but the grippers
    (``gripper_indices``) relative, but those ``--absolute-still-joints`` finds held still in the training data."""
    threshold = float(args.absolute_still_joints)
    if not np.isfinite(threshold) or threshold < 0:
        raise UserError(f"--absolute-still-joints must be a number >= 0 (rad), got {args.absolute_still_joints}")
    inherited = relative_mask_of(plan.processor_steps)
    if inherited is not None:
        if len(inherited) != dim:
            raise UserError(
                f"the checkpoint's relative-action mask has {len(inherited)} entries, its model {dim} action dims"
            )
        if threshold > 0 and verbose:
            print(
                "train-policy: --absolute-still-joints ignored: a fine-tune keeps its checkpoint's relative-action mask"
            )
        return inherited
    base = default_relative_mask(dim, gripper_indices)
    if threshold == 0:
        return base
    state_std = pooled_stats(data.datasets, STATE_KEY)["std"]
    mask = absolute_still_joints(base, state_std, threshold)
    still = [i for i, (before, after) in enumerate(zip(base, mask)) if before != after]
    if verbose:
        print(
            f"train-policy: absolute targets for the still joints {still} "
            f"(state std {[round(state_std[i], 4) for i in still]} < {threshold:g} rad)"
        )
    return mask


def train_policy(args: argparse.Namespace, context) -> dict:
    """Train (or resume / fine-tune) a policy on ``args.datasets``; returns the run summary.

    ``args`` holds the options of ``recap train-policy``. By ``args.mode``:

    * ``sft``: the prompt always says "Advantage: positive" (the paper's first fine-tune, indicator fixed True);
    * ``recap``: the prompt carries the dataset's indicator label ("positive" / "negative"), dropped (no
      advantage text) for ``indicator_dropout`` of the samples so one network is both conditional and
      unconditional (paper Sec. V-B, Eq. 3);
    * ``awr``: no advantage text; each sample's loss is weighted by ``min(exp(A / T), w_max)``
      (advantage-weighted regression baseline);
    * ``bc``: no advantage text, every sample weighted alike: plain behaviour cloning, the pretraining of a
      policy *without* advantage conditioning (the paper's AWR baseline fine-tunes such a model, not RECAP's
      pi_pre).

    ``args.mix`` (``demo=0.5``) samples batches by frame kind (demonstration, human correction, autonomous
    rollout frame) instead of uniformly over frames: the named kinds get that share of the samples, the
    others share the rest by size.
    """
    if not 0.0 <= args.indicator_dropout <= 1.0:
        raise UserError(f"--indicator-dropout must be in [0, 1], got {args.indicator_dropout}")
    if not 0.0 <= args.state_dropout < 1.0:
        raise UserError(f"--state-dropout must be in [0, 1), got {args.state_dropout}")
    if not (
        np.isfinite(args.awr_temperature)
        and args.awr_temperature > 0
        and np.isfinite(args.awr_max_weight)
        and args.awr_max_weight > 0
    ):
        raise UserError(
            f"--awr-temperature and --awr-max-weight must be numbers > 0, got {args.awr_temperature} "
            f"and {args.awr_max_weight}"
        )
    try:
        mix = parse_mix(args.mix)
    except ValueError as error:
        raise UserError(str(error)) from None
    roots = [pathlib.Path(d) for d in args.datasets]
    layout = training_layout(roots, getattr(args, "cameras", None))
    plan = plan_model(
        args,
        "policy",
        dataset_tasks(roots),
        context,
        layout,
        knowledge_insulation=bool(args.knowledge_insulation),
        indicator_dropout=float(args.indicator_dropout),
    )
    config = plan.model_config
    data = open_datasets(
        roots,
        cameras=config.cameras,
        image_size=config.image_size,
        chunk_size=config.action_horizon,
        need_labels=args.mode in LABELLED_MODES,
    )
    if config.family == "recap":
        relative_mask = still_joint_mask(args, plan, data, config.action_dim, context.is_main, layout.gripper_indices)
        normalization = plan.normalization or normalization_for(
            data, horizon=config.action_horizon, relative_mask=relative_mask
        )
        steps = policy_steps(
            config.cameras, config.image_size, relative_mask, std_floor=std_floor_of(plan.processor_steps)
        )
    else:  # a pretrained family keeps its own steps (padding, normalisation modes, prompt template)
        steps = plan.processor_steps
        normalization = plan.normalization or family_data_stats(data)
    processor = Processor(
        steps, normalization, PromptTokenizer(plan.tokenizer, config.max_prompt_tokens, prompt_template(steps))
    )
    train_config = train_config_from_args(args)
    shift = augment_shift(args, config.image_size)
    sample_weights, sample_shares = None, None
    if mix:
        try:
            sample_weights, sample_shares = mixture_weights(frame_kinds(data), mix)
        except ValueError as error:
            raise UserError(str(error)) from None
        if context.is_main:
            print(
                "train-policy: samples by frame kind "
                + ", ".join(f"{kind} {share:.0%}" for kind, share in sample_shares.items())
            )

    def step(model, batch, randomness):
        advantages = advantage_texts(args.mode, batch, args.indicator_dropout, randomness.numpy)
        frames = frames_to_device(
            frames_from_batch(batch, config.cameras, with_actions=True, shift=shift, generator=randomness.torch),
            context.device,
        )
        prepared = processor.preprocess({**frames, "advantage": advantages})
        weights = None
        if args.mode == "awr":
            weights = (
                torch.from_numpy(
                    rl.awr_weights(batch["advantage"].double().numpy(), args.awr_temperature, args.awr_max_weight)
                )
                .float()
                .to(context.device)
            )
        keep = None
        if args.state_dropout > 0:
            keep = torch.from_numpy(randomness.numpy.random(len(advantages)) >= args.state_dropout)
            keep = keep.to(context.device)
        inputs = PolicyInputs(
            prepared["pixels"],
            prepared["state_normalised"],
            prepared["prompt_ids"],
            prepared["prompt_mask"],
            prepared["actions"],
            batch["action_is_pad"].to(context.device),
            weights,
            keep,
            prepared["advantage_code"],
        )
        loss = model(inputs, randomness.torch).mean()
        metrics = {
            "fraction_positive": float(np.mean([a == "positive" for a in advantages])),
            "fraction_no_advantage_text": float(np.mean([a is None for a in advantages])),
        }
        if weights is not None:
            metrics["awr_weight_mean"] = float(weights.mean())
        return loss, metrics

    training = {
        "command": "train-policy",
        "mode": args.mode,
        **train_config.__dict__,
        "augment_shift": shift,
        "state_dropout": args.state_dropout,
        "indicator_dropout": args.indicator_dropout,
        "knowledge_insulation": bool(args.knowledge_insulation),
        "awr_temperature": args.awr_temperature,
        "awr_max_weight": args.awr_max_weight,
        "mix": mix,
        "sample_shares": sample_shares,
        "datasets": [str(r) for r in roots],
    }
    extra = {"mode": args.mode, "value_checkpoints": _value_checkpoints(data)}
    save = saver(
        args=args,
        plan=plan,
        training_config=training,
        normalization=normalization,
        processor_steps=steps,
        layout=layout,
        extra_provenance=extra,
    )
    # With knowledge insulation nothing reaches the backbone: DDP must not wait for its gradients.
    return run_training(
        model=plan.model,
        dataset=data.dataset,
        config=train_config,
        context=context,
        out_dir=args.out,
        step_fn=step,
        save_fn=save,
        title=f"train-policy ({args.mode})",
        start_step=plan.start_step,
        resume_state=plan.resume_state,
        # a pretrained family keeps tensors no loss reaches (the expert's LM head, the prefix model's last-layer
        # query and MLP): DDP must not wait for their gradients
        find_unused_parameters=bool(args.knowledge_insulation) or config.family != "recap",
        progress=not args.no_progress,
        stop_at=args.stop_at,
        sample_weights=sample_weights,
    )


def _value_checkpoints(data) -> list[str]:
    """The value checkpoints that labelled the datasets (recorded in their info.json)."""
    found = []
    for dataset in data.datasets:
        labels = dataset.info.get("recap", {}).get("labels") or {}
        if labels.get("value_checkpoint"):
            found.append(str(labels["value_checkpoint"]))
    return found
