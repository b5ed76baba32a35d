"""Named model configs behind one :func:`get_config` (openpi ``training/config.py`` style).

``tiny`` (tests), ``small`` (CPU demos) and ``pretrained`` (real Gemma 3 weights from a local directory; GPU);
their sizes are in docs/learning.md §4. A preset fixes sizes only: the cameras and the state/action sizes
come from the training data (``recap_core.train.common.plan_model`` passes them as overrides). The value
model of each name is a smaller backbone of the same family (paper Sec. V-C: 670M value vs the policy's
larger VLM).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import pathlib

from recap_core.models.configuration import BackboneConfig, ConfigError, ExpertConfig, PolicyConfig, ValueConfig

_TINY_BACKBONE = BackboneConfig()
_SMALL_BACKBONE = BackboneConfig(
    image_size=96,
    patch_size=16,
    vision_hidden_size=128,
    vision_intermediate_size=384,
    vision_num_layers=3,
    vision_num_heads=4,
    tokens_per_image=9,
    vocab_size=768,
    hidden_size=192,
    intermediate_size=768,
    num_layers=4,
    num_heads=4,
    num_kv_heads=1,
    head_dim=48,
)
# From scratch the small policy reads the cube only through a conv stem and the expert's image conditioning
# (with the patch stem alone it sampled the same targets wherever the cube was; see docs/lab/,
# scene-conditioning); the value model keeps the plain backbone.
_SMALL_POLICY_BACKBONE = dataclasses.replace(_SMALL_BACKBONE, vision_stem="conv")

_POLICY_CONFIGS: dict[str, PolicyConfig] = {
    "tiny": PolicyConfig(backbone=_TINY_BACKBONE, expert=ExpertConfig(width=32, mlp_dim=64, num_heads=2), name="tiny"),
    "small": PolicyConfig(
        backbone=_SMALL_POLICY_BACKBONE,
        expert=ExpertConfig(width=128, mlp_dim=384, num_heads=4, image_conditioning=True, advantage_embedding=True),
        name="small",
    ),
}

_VALUE_CONFIGS: dict[str, ValueConfig] = {
    "tiny": ValueConfig(
        backbone=dataclasses.replace(_TINY_BACKBONE, hidden_size=32, intermediate_size=64),
        head_hidden_size=64,
        name="tiny",
    ),
    "small": ValueConfig(
        backbone=dataclasses.replace(
            _SMALL_BACKBONE, vision_num_layers=2, hidden_size=128, intermediate_size=512, num_layers=3, head_dim=32
        ),
        head_hidden_size=128,
        name="small",
    ),
}

CONFIG_NAMES = ("tiny", "small", "pretrained")
MODEL_KINDS = ("policy", "value")


def get_config(
    name: str, kind: str = "policy", *, pretrained_dir: str | pathlib.Path | None = None, **overrides
) -> PolicyConfig | ValueConfig:
    """The named ``kind`` ("policy" | "value") config, with field ``overrides`` applied.

    ``pretrained`` reads the architecture from ``pretrained_dir/config.json``
    (a local ``Gemma3ForConditionalGeneration`` directory).
    """
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    if name not in CONFIG_NAMES:
        close = difflib.get_close_matches(name, CONFIG_NAMES, n=1, cutoff=0.4)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown {kind} config '{name}'{hint} (known: {', '.join(CONFIG_NAMES)})")
    if name == "pretrained":
        config = _pretrained_config(kind, pretrained_dir)
    else:
        if pretrained_dir is not None:
            raise ConfigError(f"config '{name}' builds random weights; pretrained_dir is only for 'pretrained'")
        config = (_POLICY_CONFIGS if kind == "policy" else _VALUE_CONFIGS)[name]
    if overrides:
        known = {f.name for f in dataclasses.fields(config)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"{type(config).__name__} has no field(s) {unknown}; known: {sorted(known)}")
        config = dataclasses.replace(config, **overrides)
    return config


def _pretrained_config(kind: str, pretrained_dir) -> PolicyConfig | ValueConfig:
    from recap_core.models.backbone import backbone_config_from_hf

    if pretrained_dir is None:
        raise ConfigError(
            "config 'pretrained' needs pretrained_dir: a local directory holding a Gemma 3 "
            "image-text model (config.json, model.safetensors, tokenizer.json)"
        )
    directory = pathlib.Path(pretrained_dir).expanduser().resolve()
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ConfigError(
            f"pretrained_dir {directory} has no config.json; it must be a local "
            f"Gemma3ForConditionalGeneration directory (save_pretrained output)"
        )
    try:
        hf_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{config_path} is not valid JSON: {exc}") from exc
    backbone = backbone_config_from_hf(hf_config, str(directory))
    if kind == "value":
        return ValueConfig(backbone=backbone, head_hidden_size=max(64, backbone.hidden_size // 4), name="pretrained")
    width = max(backbone.hidden_size // 2, backbone.head_dim)
    heads = max(backbone.num_kv_heads, (backbone.num_heads // 2) // backbone.num_kv_heads * backbone.num_kv_heads)
    return PolicyConfig(
        backbone=backbone, expert=ExpertConfig(width=width, mlp_dim=4 * width, num_heads=heads), name="pretrained"
    )
