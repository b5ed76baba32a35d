"""Training models of billions of parameters: FSDP2 sharding, bf16 mixed precision, activation checkpointing.

``fully_shard`` (torch.distributed.fsdp, FSDP2) makes each transformer block its own unit, all-gathered just
before its forward and freed after, with the rest of the model in the root unit; gradients are reduce-scattered
and each rank keeps only its shard of the weights, gradients and AdamW moments. The blocks are the modules whose
``forward`` the models call (a unit whose forward never runs would never be gathered): SigLIP / SmolVLM vision
encoder layers, the Gemma 3 decoder layers and expert layers of RECAP's own models, and the MLPs of the pi0 and
SmolVLA joint layers (their attention projections are called one by one, so they stay in the root unit).
Checkpoints are written from the full state dict gathered on rank 0, in the same format as any other run.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

#: Modules sharded as their own FSDP unit (class names; their forward is called by every model that has them).
BLOCK_CLASSES = frozenset(
    {"SiglipEncoderLayer", "SmolVLMEncoderLayer", "Gemma3DecoderLayer", "ExpertLayer", "GemmaMLP", "LlamaMLP"}
)
#: Blocks whose outputs also leave through a side channel (a K/V cache) and so are not resharded after forward.
KEEP_GATHERED = frozenset({"Gemma3DecoderLayer"})
PRECISIONS = ("fp32", "bf16")
STRATEGIES = ("ddp", "fsdp")


def shard_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules :func:`fully_shard_model` makes units of (outermost first; none nested in another)."""
    blocks, inside = [], set()
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if type(module).__name__ in BLOCK_CLASSES:
            blocks.append(module)
            inside.add(name)
    return blocks


def fully_shard_model(model: nn.Module, precision: str) -> nn.Module:
    """Shard ``model`` over the default process group (FSDP2), blocks first, then the root; in place.

    ``bf16``: weights are gathered and computed in bfloat16, gradients reduced in float32, the sharded master
    weights and AdamW moments stay float32.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" else None
    )
    kwargs = {"mesh": mesh, **({"mp_policy": policy} if policy is not None else {})}
    for block in shard_blocks(model):
        # A Gemma 3 decoder layer of RECAP's own models hands its K/V to the expert through the prefix cache, a
        # path FSDP's backward hooks do not see: its weights stay gathered from forward to backward.
        fully_shard(block, reshard_after_forward=type(block).__name__ not in KEEP_GATHERED, **kwargs)
    fully_shard(model, **kwargs)
    return model


def autocast(device: str, precision: str):
    """bf16 autocast for a run that is not sharded (FSDP casts through its policy); a null context for fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute the blocks' activations (:func:`shard_blocks`: whole encoder / decoder / expert layers, and the
    MLPs of pi0's and SmolVLA's joint layers, their largest activations) in the backward pass instead of keeping
    them; returns the number of blocks. The state dict and the module tree are unchanged (each block's
    ``forward`` is wrapped in ``torch.utils.checkpoint``)."""
    from torch.utils.checkpoint import checkpoint

    blocks = [block for block in shard_blocks(model) if type(block).__name__ not in KEEP_GATHERED]
    for block in blocks:  # (a layer that appends to a K/V cache cannot be run twice: not recomputed)
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
    return len(blocks)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every rank calls it; the full (unsharded) float32 weights on CPU on rank 0 (an empty dict on the others),
    keyed as ``model.state_dict()``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Every rank calls it; AdamW's full state keyed by parameter name: ``(tensors, json)`` for the checkpoint's
    ``training_state`` files (``"keys": "names"`` tells them from a single-process run's parameter indices)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if "state" not in state:  # cpu_offload gathers onto rank 0 only
        return {}, {}
    tensors, scalars = {}, {}
    for name, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{name}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars, "keys": "names"}


def restore_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], state_json: dict
) -> None:
    """The inverse of :func:`full_optimizer_state`, on every rank (each reads the same files)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if state_json.get("keys") != "names":
        raise ValueError(
            "this checkpoint's optimizer state was saved by a run without --fsdp (keyed by parameter index); "
            "resume it without --fsdp, or start a new run with --init"
        )
    state: dict[str, dict] = {}
    for flat, tensor in tensors.items():
        _, rest = flat.split(".", 1)
        name, key = rest.rsplit(".", 1)
        state.setdefault(name, {})[key] = tensor
    for name, entries in state_json.get("scalars", {}).items():
        state.setdefault(name, {}).update(entries)
    set_optimizer_state_dict(
        model,
        optimizer,
        {"state": state, "param_groups": state_json["param_groups"]},
        options=StateDictOptions(full_state_dict=True),
    )
