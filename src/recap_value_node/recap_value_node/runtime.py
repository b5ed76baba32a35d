"""Loading the value model for the node (torch is imported here, on first load)."""
from __future__ import annotations


def load_value(path: str, *, threads: int = 1):
    """A ``recap_core.models.ValueRunner`` for checkpoint directory ``path`` (clear error if bad)."""
    import torch

    torch.set_num_threads(int(threads))
    from recap_core.models import ValueRunner

    return ValueRunner.from_checkpoint(path)
