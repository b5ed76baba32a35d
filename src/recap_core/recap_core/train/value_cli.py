"""``recap train-value DATASET... --out DIR``: the distributional value function (paper Eq. 1).

Cross-entropy between the model's 201-bin distribution and the two-hot
encoding of each frame's normalised Monte-Carlo return ``return_normalised``
(the dataset computes it from the sparse rewards). The prompt is the task
alone (no advantage text).
"""
from __future__ import annotations

import argparse
import pathlib

import torch

from recap_core import rl
from recap_core.models.processor import Processor, std_floor_of, value_steps
from recap_core.models.tokenizer import PromptTokenizer
from recap_core.models.value import value_loss
from recap_core.train.common import (add_training_arguments, apply_threads, augment_shift, plan_model,
                                     reports_user_errors, saver, train_config_from_args)
from recap_core.train.data import dataset_tasks, frames_from_batch, frames_to_device, normalization_for, open_datasets
from recap_core.train.ddp import init_distributed, shutdown
from recap_core.train.loop import run_training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, default_steps=2000, default_batch_size=32, default_lr=3e-4)


@reports_user_errors
def run(args: argparse.Namespace) -> int:
    apply_threads(args)
    context = init_distributed(args.device)
    try:
        summary = train_value(args, context)
    finally:
        shutdown(context)
    if context.is_main:
        print(f"value checkpoint: {args.out}  (final loss {summary['final_loss']:.4f}, "
              f"{summary['samples_per_s']:.1f} samples/s)")
    return 0


def train_value(args: argparse.Namespace, context) -> dict:
    """Train (or resume / fine-tune) a value model on ``args.datasets``; returns the run summary."""
    roots = [pathlib.Path(d) for d in args.datasets]
    plan = plan_model(args, "value", dataset_tasks(roots), context)
    config = plan.model_config
    data = open_datasets(roots, cameras=config.cameras, image_size=config.backbone.image_size, chunk_size=1)
    normalization = plan.normalization or normalization_for(data, horizon=1, relative_mask=None)
    steps = value_steps(config.cameras, config.backbone.image_size, std_floor=std_floor_of(plan.processor_steps))
    processor = Processor(steps, normalization, PromptTokenizer(plan.tokenizer, config.max_prompt_tokens))
    train_config = train_config_from_args(args)
    shift = augment_shift(args, config.backbone.image_size)
    num_bins = config.num_bins

    def step(model, batch, randomness):
        frames = frames_to_device(frames_from_batch(batch, config.cameras, with_actions=False, shift=shift,
                                                    generator=randomness.torch), context.device)
        inputs = processor.preprocess({**frames, "advantage": None})
        logits = model(inputs["pixels"], inputs["state_normalised"], inputs["prompt_ids"], inputs["prompt_mask"])
        returns = batch["return_normalised"].double().numpy()
        targets = torch.from_numpy(rl.two_hot(returns, num_bins)).float().to(logits.device)
        loss = value_loss(logits, targets).mean()
        with torch.no_grad():
            predicted = torch.softmax(logits.float(), dim=-1) @ plan.model.bin_values
            error = (predicted.cpu().double() - torch.from_numpy(returns)).abs().mean()
        return loss, {"value_mae": float(error)}

    training = {"command": "train-value", **train_config.__dict__, "augment_shift": shift,
                "datasets": [str(r) for r in roots]}
    save = saver(args=args, plan=plan, training_config=training, normalization=normalization,
                 processor_steps=steps)
    return run_training(model=plan.model, dataset=data.dataset, config=train_config, context=context,
                        out_dir=args.out, step_fn=step, save_fn=save, title="train-value",
                        start_step=plan.start_step, resume_state=plan.resume_state, progress=not args.no_progress,
                        stop_at=args.stop_at)
