"""RECAP models: the pi0-style flow-matching policy, the distributional value model, their runners.

``get_config(name, kind)`` (``tiny`` / ``small`` / ``pretrained``), the ``nn.Module``s ``RecapPolicy`` and
``RecapValue``, and ``PolicyRunner`` / ``ValueRunner`` (``from_checkpoint``, ``infer``, ``reset``); see
docs/learning.md. Names are re-exported lazily so that reading a config does not import transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "get_config": "recap_core.models.registry",
    "CONFIG_NAMES": "recap_core.models.registry",
    "PolicyConfig": "recap_core.models.configuration",
    "ValueConfig": "recap_core.models.configuration",
    "BackboneConfig": "recap_core.models.configuration",
    "ExpertConfig": "recap_core.models.configuration",
    "ConfigError": "recap_core.models.configuration",
    "RecapPolicy": "recap_core.models.policy",
    "PolicyInputs": "recap_core.models.policy",
    "RecapValue": "recap_core.models.value",
    "PolicyRunner": "recap_core.models.runner",
    "ValueRunner": "recap_core.models.runner",
    "format_prompt": "recap_core.models.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recap_core.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
