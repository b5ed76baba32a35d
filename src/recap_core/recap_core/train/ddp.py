"""Distributed data parallel plumbing: training runs unchanged under ``torchrun``.

With ``WORLD_SIZE > 1`` in the environment (torchrun sets it) the process
group is initialised (gloo on CPU, nccl on GPU), the model is wrapped in
``DistributedDataParallel``, each rank reads its own share of every epoch
(``DistributedSampler`` order) and only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, Sampler


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the torchrun process group if there is one; pick the device for this rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    else:
        check_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    return DistributedContext(rank, world_size, local_rank, device)


def check_device(device: str) -> None:
    """A UserError unless ``device`` is cpu, or cuda / cuda:N on a machine with that CUDA device."""
    from recap_core.errors import UserError

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r} is not a device this code trains on; give cpu, cuda or cuda:N")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this machine has no usable CUDA device; give --device cpu")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def shutdown(context: DistributedContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.distributed:
        dist.barrier()


def wrap_model(model: nn.Module, context: DistributedContext, *, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` itself on one process, else DistributedDataParallel around it."""
    if not context.distributed:
        return model
    device_ids = [context.local_rank] if context.device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def parameter_checksum(model: nn.Module) -> str:
    """sha256 of every parameter's bytes: equal across ranks iff their weights are identical."""
    return state_checksum(unwrap(model).state_dict())


def state_checksum(state: dict) -> str:
    """sha256 over a state dict's names and bytes (float32 on CPU as they are)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def gather_strings(value: str, context: DistributedContext) -> list[str]:
    """Every rank's ``value``, in rank order (one element without a process group)."""
    if not context.distributed:
        return [value]
    gathered: list[str | None] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return [str(v) for v in gathered]


class StepBatchSampler(Sampler[list[int]]):
    """Endless batches of this rank's indices, starting after ``start_batch`` batches (resume).

    Epoch ``e`` visits the indices in ``DistributedSampler(seed, epoch=e)``
    order (each rank a disjoint share, padded to equal length); batches run
    across epoch boundaries, so every rank makes the same number of steps and
    a resumed run continues exactly where the saved one stopped.

    With ``weights`` (one non-negative number per index) an epoch is instead
    ``dataset_size`` draws with replacement, index ``i`` with probability
    ``weights[i] / sum(weights)``, from a generator seeded with ``(seed, e)``
    and dealt out to the ranks in turn: the data-mixture sampling of
    ``recap train-policy --mix``, as deterministic and resumable as the plain order.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        context: DistributedContext,
        *,
        seed: int,
        start_batch: int = 0,
        weights: np.ndarray | None = None,
    ):
        if dataset_size < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.dataset_size, self.batch_size = int(dataset_size), int(batch_size)
        self.context, self.seed, self.start_batch = context, int(seed), int(start_batch)
        self.probabilities = None
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != (self.dataset_size,):
                raise ValueError(f"need one sampling weight per index ({self.dataset_size}), got {weights.shape}")
            if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
                raise ValueError("sampling weights must be finite, >= 0 and not all 0")
            self.probabilities = weights / weights.sum()

    def _epoch(self, epoch: int) -> list[int]:
        if self.probabilities is not None:
            world = self.context.world_size
            draws = -(-self.dataset_size // world) * world
            rng = np.random.default_rng([self.seed, epoch])
            chosen = rng.choice(self.dataset_size, size=draws, replace=True, p=self.probabilities)
            return chosen[self.context.rank :: world].tolist()
        sampler = DistributedSampler(
            range(self.dataset_size),
            num_replicas=self.context.world_size,
            rank=self.context.rank,
            shuffle=True,
            seed=self.seed,
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[list[int]]:
        skip = self.start_batch * self.batch_size
        epoch, pending = 0, []
        per_epoch = len(self._epoch(0))
        epoch, skip = skip // per_epoch, skip % per_epoch
        pending = self._epoch(epoch)[skip:]
        while True:
            while len(pending) < self.batch_size:
                epoch += 1
                pending += self._epoch(epoch)
            batch, pending = pending[: self.batch_size], pending[self.batch_size :]
            yield batch
