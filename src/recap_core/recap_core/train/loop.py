"""The training loop shared by value and policy training.

Deterministic given the seed: batch ``k`` is the sampler's ``k``-th batch and
the noise / dropout randomness of step ``k`` comes from generators seeded
with ``(seed, rank, k)``. So a run resumed from a checkpoint saved at step
``k`` continues exactly as the uninterrupted run would have (tested).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from recap_core.checkpoint import optimizer_state_tensors, restore_optimizer
from recap_core.errors import UserError
from recap_core.outputs import dumps, write_json
from recap_core.train.ddp import (
    DistributedContext,
    StepBatchSampler,
    barrier,
    gather_strings,
    parameter_checksum,
    state_checksum,
    unwrap,
    wrap_model,
)
from recap_core.train.plots import plot_loss_curve

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
LOSS_PLOT_FILE = "loss_curve.png"


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite (the message says what to try)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    save_every: int = 0  # 0: save only at the end
    num_workers: int = 0
    precision: str = "fp32"  # bf16: mixed precision (autocast, or FSDP's bf16 compute with fp32 master weights)
    strategy: str = "ddp"  # fsdp: shard weights, gradients and optimizer state over the ranks (FSDP2)
    activation_checkpointing: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "save_every", "num_workers", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.log_every, int) or self.log_every < 1:
            raise ValueError(f"log_every must be a positive integer, got {self.log_every!r}")
        from recap_core.train.fsdp import PRECISIONS, STRATEGIES

        if self.precision not in PRECISIONS or self.strategy not in STRATEGIES:
            raise ValueError(
                f"precision must be one of {PRECISIONS} and strategy one of {STRATEGIES}; got {self.precision!r}, "
                f"{self.strategy!r}"
            )
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not (
            math.isfinite(self.weight_decay)
            and self.weight_decay >= 0
            and math.isfinite(self.grad_clip)
            and self.grad_clip > 0
        ):
            raise ValueError(f"weight_decay must be >= 0 and grad_clip > 0; got {self.weight_decay}, {self.grad_clip}")

    def learning_rate_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to 10 % of the peak at the last step."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclasses.dataclass
class StepRandomness:
    """Randomness of one step on one rank: torch (noise, flow time) and numpy (indicator dropout)."""

    torch: torch.Generator
    numpy: np.random.Generator

    @classmethod
    def for_step(cls, seed: int, rank: int, step: int) -> "StepRandomness":
        entropy = np.random.SeedSequence([seed, rank, step])
        return cls(
            torch.Generator().manual_seed(int(entropy.generate_state(1, np.uint64)[0] >> 1)),
            np.random.default_rng(entropy),
        )


# step_fn(model, batch, randomness) -> (scalar loss, metrics of this batch)
StepFunction = Callable[[nn.Module, dict, StepRandomness], tuple[torch.Tensor, dict]]
# save_fn(step, training_state[, state_dict]) with training_state = (tensors, json); a sharded run passes the
# gathered full weights as state_dict
SaveFunction = Callable[..., None]


def run_training(
    *,
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    config: TrainConfig,
    context: DistributedContext,
    out_dir: pathlib.Path,
    step_fn: StepFunction,
    save_fn: SaveFunction,
    title: str,
    start_step: int = 0,
    resume_state: tuple[dict, dict] | None = None,
    find_unused_parameters: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    sample_weights: np.ndarray | None = None,
) -> dict:
    """Train ``model`` for ``config.steps`` steps (from ``start_step``); returns the run summary.

    ``stop_at`` ends this process early at that step (saving it) while keeping
    the learning-rate schedule of ``config.steps``: a time-sliced run resumed
    with ``--resume`` then matches an uninterrupted one. ``sample_weights``
    (one per dataset item) samples batches by weight instead of in shuffled
    epochs (see :class:`StepBatchSampler`).
    """
    end = config.steps if stop_at is None else max(start_step, min(int(stop_at), config.steps))
    from tqdm import tqdm

    from recap_core.train import fsdp

    model.to(context.device)
    if config.activation_checkpointing:
        fsdp.enable_activation_checkpointing(model)
    sharded = config.strategy == "fsdp"
    if sharded:
        if not context.distributed:
            raise UserError("--fsdp shards over the ranks of a torchrun launch; run it under torchrun")
        trained = fsdp.fully_shard_model(model, config.precision)
    else:
        trained = wrap_model(model, context, find_unused_parameters=find_unused_parameters)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=config.weight_decay
    )
    if resume_state is not None:
        if sharded:
            fsdp.restore_full_optimizer_state(model, optimizer, *resume_state)
        else:
            restore_optimizer(optimizer, *resume_state)
    precision = contextlib.nullcontext() if sharded else fsdp.autocast(context.device, config.precision)
    sampler = StepBatchSampler(
        len(dataset), config.batch_size, context, seed=config.seed, start_batch=start_step, weights=sample_weights
    )
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=config.num_workers)
    metrics_path = out_dir / METRICS_FILE
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if start_step == 0:
            metrics_path.write_text("")
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        desc=title,
        unit="step",
        disable=not (progress and context.is_main),
        dynamic_ncols=True,
    )
    started = time.perf_counter()
    window_start, window_samples = started, 0
    last_loss = float("nan")
    batches = iter(loader)
    samples_seen = 0
    for step in range(start_step, end):
        batch = next(batches)
        learning_rate = config.learning_rate_at(step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        trained.train()
        with precision:
            loss, metrics = step_fn(trained, batch, StepRandomness.for_step(config.seed, context.rank, step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        last_loss = float(loss.detach())
        if not math.isfinite(last_loss):
            raise TrainingDiverged(f"{title}: loss is {last_loss} at step {step}; lower --lr or check the data")
        optimizer.step()
        size = len(batch["task"])
        samples_seen += size * context.world_size
        window_samples += size * context.world_size
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}")
        done = step + 1
        if context.is_main and (done % config.log_every == 0 or done == end):
            now = time.perf_counter()
            row = {
                "step": done,
                "loss": last_loss,
                "lr": learning_rate,
                "grad_norm": grad_norm,
                "samples_per_s": window_samples / max(now - window_start, 1e-9),
                "time_s": now - started,
                **{k: float(v) for k, v in metrics.items()},
            }
            with open(metrics_path, "a") as handle:
                handle.write(dumps(row, indent=None) + "\n")
            window_start, window_samples = now, 0
        if config.save_every and done % config.save_every == 0 and done < end:
            _save(save_fn, model, optimizer, done, context, sharded)
    bar.close()
    elapsed = time.perf_counter() - started
    checksums = _save(save_fn, model, optimizer, end, context, sharded)
    summary = {
        "title": title,
        "steps": end,
        "planned_steps": config.steps,
        "start_step": start_step,
        "final_loss": last_loss,
        "seconds": elapsed,
        "samples_per_s": samples_seen / max(elapsed, 1e-9),
        "world_size": context.world_size,
        "strategy": config.strategy,
        "precision": config.precision,
        "activation_checkpointing": config.activation_checkpointing,
        "rank_parameter_checksums": checksums,
        "ranks_identical": len(set(checksums)) == 1,
    }
    if context.is_main:
        write_json(out_dir / SUMMARY_FILE, summary)
        plot_loss_curve(metrics_path, out_dir / LOSS_PLOT_FILE, title=title)
    return summary


def _save(
    save_fn: SaveFunction,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    context: DistributedContext,
    sharded: bool = False,
) -> list[str]:
    """Every rank agrees on its weights' checksum; rank 0 writes the checkpoint; all wait for it.

    A sharded (FSDP) run gathers the full weights and optimizer state first (every rank takes part) and writes
    them as any other run does; its checksums are of the gathered weights.
    """
    if sharded:
        from recap_core.train import fsdp

        weights = fsdp.full_state_dict(model)
        tensors, state_json = fsdp.full_optimizer_state(model, optimizer)
        # the gathered weights exist on rank 0 only: one checksum, of what the checkpoint holds
        checksums = [c for c in gather_strings(state_checksum(weights) if weights else "", context) if c]
        if context.is_main:
            save_fn(step, (tensors, {**state_json, "step": step}), weights)
        barrier(context)
        return checksums
    checksums = gather_strings(parameter_checksum(model), context)
    if context.is_main:
        tensors, state_json = optimizer_state_tensors(optimizer)
        state_json = {**state_json, "step": step}
        save_fn(step, (tensors, state_json))
    barrier(context)
    return checksums


def trained_module(model: nn.Module) -> nn.Module:
    return unwrap(model)
