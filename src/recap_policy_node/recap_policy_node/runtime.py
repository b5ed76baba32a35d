"""Loading the policy model for the node (torch is imported here, on first load)."""
from __future__ import annotations


def load_policy(path: str, *, threads: int = 2, seed: int = 0):
    """A ``recap_core.models.PolicyRunner`` for checkpoint directory ``path``.

    Raises ``recap_core.checkpoint.CheckpointError`` (or FileNotFoundError) with a
    message naming the file and what is wrong; nothing in the checkpoint is executed.
    """
    import torch

    torch.set_num_threads(int(threads))
    from recap_core.models import PolicyRunner

    return PolicyRunner.from_checkpoint(path, seed=seed)
