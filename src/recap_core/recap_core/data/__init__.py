"""The RECAP dataset: LeRobotDataset v3 layout plus RECAP columns (see docs/dataset.md).

The writer and the metadata readers need only numpy, pyarrow and Pillow, so the bag converter imports them
without torch; the reader's torch Dataset needs torch. Names are re-exported lazily so that importing this
package pulls in neither. A damaged dataset raises ``DatasetError``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DatasetWriter": "recap_core.data.writer",
    "RecapDataset": "recap_core.data.reader",
    "load_frames_table": "recap_core.data.reader",
    "load_episodes": "recap_core.data.meta",
    "load_tasks": "recap_core.data.meta",
    "load_stats": "recap_core.data.meta",
    "check_dataset": "recap_core.data.meta",
    "DatasetError": "recap_core.data.schema",
    "normalised_rewards": "recap_core.data.reader",
    "write_labels": "recap_core.data.reader",
    "RecapConfig": "recap_core.data.schema",
    "EpisodeMetadata": "recap_core.data.schema",
    "load_info": "recap_core.data.schema",
    "make_synthetic_dataset": "recap_core.data.synthetic",
    "make_bimodal_dataset": "recap_core.data.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recap_core.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
