"""Pretrained VLA families RECAP trains and runs: pi0, pi0.5 (``pi0.py``) and SmolVLA (``smolvla.py``).

:func:`load_pretrained` reads a local checkpoint directory in the layouts the ecosystem ships (LeRobot's
``config.json`` + ``model.safetensors`` [+ processor files]; openpi's PyTorch conversion with
``assets/<robot>/norm_stats.json``), strictly; :func:`family_policy` wraps it for RECAP training and inference;
:mod:`recap_core.models.families.export` writes a RECAP-trained one back. docs/models.md has the formats.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
from typing import Any

import torch

from recap_core.checkpoint import PICKLE_SUFFIXES, CheckpointError
from recap_core.models.families.common import (
    ACTION_KEY,
    STATE_KEY,
    lerobot_processor_stats,
    lerobot_v03_stats,
    openpi_norm_stats,
    read_json_file,
    read_tensors,
    strict_load,
)

#: family -> (module, config class, model class)
FAMILIES = {
    "pi0": ("recap_core.models.families.pi0", "Pi0Config", "Pi0Model"),
    "pi05": ("recap_core.models.families.pi0", "Pi0Config", "Pi0Model"),
    "smolvla": ("recap_core.models.families.smolvla", "SmolVLAConfig", "SmolVLAModel"),
}
#: How each family writes its prompt, pads its images and normalises (LeRobot's defaults for the family).
PROMPT_TEMPLATE = {"pi0": "pi0", "pi05": "pi05", "smolvla": "smolvla"}
DEFAULT_NORM = {"pi0": "MEAN_STD", "pi05": "QUANTILES", "smolvla": "MEAN_STD"}
#: LeRobot's eps (``(x - mean) / (std + 1e-8)``) and openpi's (1e-6).
NORM_EPS = {"lerobot": 1e-8, "openpi": 1e-6}


def family_classes(family: str):
    if family not in FAMILIES:
        raise CheckpointError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
    module_name, config_name, model_name = FAMILIES[family]
    module = importlib.import_module(module_name)
    return module, getattr(module, config_name), getattr(module, model_name)


def architecture_from_dict(family: str, data: dict):
    _, config_cls, _ = family_classes(family)
    return config_cls.from_dict(data)


def build_core(family: str, architecture: dict) -> torch.nn.Module:
    """The family's model with random weights from its architecture dict (what a RECAP checkpoint records)."""
    _, config_cls, model_cls = family_classes(family)
    return model_cls(config_cls.from_dict(architecture))


@dataclasses.dataclass
class PretrainedPolicy:
    """A family checkpoint read from disk: its model (weights loaded), statistics and what its files say."""

    directory: pathlib.Path
    family: str
    layout: str  # "lerobot" | "openpi"
    model: torch.nn.Module
    stats: dict  # {"observation.state": {"mean": [...], ...}, "action": {...}}
    norm_modes: dict  # {"state": "MEAN_STD" | "QUANTILES" | "IDENTITY", "action": ...}
    cameras: list  # the checkpoint's camera names (LeRobot's observation.images.<name>), [] where unknown
    source_config: dict  # its config.json
    asset_id: str | None = None  # openpi's assets/<asset_id>
    pad_side: str = "center"  # how its images were padded: LeRobot 0.3 and SmolVLA "left_top", openpi "center"
    key_map: dict = dataclasses.field(default_factory=dict)  # {our key: the file's key} where they differ

    @property
    def architecture(self):
        return self.model.config


def detect_layout(directory: pathlib.Path) -> tuple[str, str]:
    """``(family, layout)`` of a checkpoint directory from its ``config.json`` (and, for openpi, its keys)."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory")
    pickled = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise CheckpointError(f"{directory}: holds pickle-format file(s) {pickled}; only safetensors + JSON load")
    config = read_json_file(directory / "config.json")
    if not isinstance(config, dict):
        raise CheckpointError(f"{directory / 'config.json'}: must be a JSON object")
    if config.get("format") == "recap-checkpoint":
        raise CheckpointError(f"{directory}: a RECAP checkpoint, not a LeRobot or openpi one")
    if config.get("type") in FAMILIES:
        return str(config["type"]), "lerobot"
    if "paligemma_variant" in config and "action_expert_variant" in config:
        from safetensors import safe_open

        path = directory / "model.safetensors"
        try:
            with safe_open(str(path), framework="pt") as handle:
                keys = set(handle.keys())
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
        return ("pi05" if "time_mlp_in.weight" in keys else "pi0"), "openpi"
    raise CheckpointError(
        f"{directory / 'config.json'}: neither LeRobot's (\"type\": pi0 | pi05 | smolvla) nor openpi's "
        f"(paligemma_variant, action_expert_variant); cannot tell the model family"
    )


def load_pretrained(directory: str | pathlib.Path) -> PretrainedPolicy:
    """Read a pi0 / pi0.5 / SmolVLA checkpoint directory (LeRobot or openpi layout) strictly."""
    directory = pathlib.Path(directory).expanduser().resolve()
    family, layout = detect_layout(directory)
    module, config_cls, model_cls = family_classes(family)
    source_config = read_json_file(directory / "config.json")
    weights = directory / "model.safetensors"
    tensors = read_tensors(weights)
    norm_modes = {"state": DEFAULT_NORM[family], "action": DEFAULT_NORM[family]}
    asset_id = None
    # Sizes the layout's config.json cannot say (neither LeRobot's pi0 config nor openpi's holds any but the
    # published ones): architecture.json beside it, the family config's fields.
    sizes_path = directory / "architecture.json"
    sizes = read_json_file(sizes_path) if sizes_path.is_file() else {}
    if not isinstance(sizes, dict):
        raise CheckpointError(f"{sizes_path}: must be a JSON object of {family} config fields")
    if layout == "lerobot":
        try:
            if family == "smolvla":
                # LeRobot names SmolVLA's VLM by hub id only; its sizes come from a local copy of that VLM's
                # config.json (vlm_config.json) where one is given, else SmolVLM2-500M's
                vlm = directory / "vlm_config.json"
                architecture = config_cls.from_lerobot_config(
                    source_config, read_json_file(vlm) if vlm.is_file() else None
                )
                architecture = dataclasses.replace(architecture, **sizes)
            else:
                architecture = config_cls.from_lerobot_config(source_config, **sizes)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{directory / 'config.json'}: {exc}") from exc
        stats, tensors = lerobot_v03_stats(tensors, str(weights))
        processor = lerobot_processor_stats(directory)
        if processor is not None:
            if stats:
                raise CheckpointError(f"{weights}: holds normalisation buffers and the directory a normaliser too")
            stats, norm_map = processor
        else:
            norm_map = source_config.get("normalization_mapping") or {}
        for ours, theirs in (("state", "STATE"), ("action", "ACTION")):
            if theirs in norm_map:
                norm_modes[ours] = str(norm_map[theirs])
        foreign = [k for k in tensors if not k.startswith("model.")]
        if foreign:
            raise CheckpointError(
                f"{weights}: tensor {foreign[0]!r} is outside the policy's model (no 'model.' prefix)"
            )
        names = {k[len("model.") :]: k for k in tensors}  # the family's key -> the file's
        pad_side = "left_top" if family == "smolvla" or processor is None else "center"
        features = source_config.get("input_features") or {}
        cameras = [k.split(".", 2)[2] for k in features if k.startswith("observation.images.")]
    else:
        try:
            architecture = config_cls.from_openpi_config(source_config, pi05=family == "pi05", **sizes)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{directory / 'config.json'}: {exc}") from exc
        stats, asset_id = openpi_norm_stats(directory)
        names = {k: k for k in tensors}
        cameras = []
        pad_side = "center"
    for ours, mode in norm_modes.items():
        if mode not in ("MEAN_STD", "QUANTILES", "IDENTITY"):
            raise CheckpointError(f"{directory}: {ours} normalisation {mode!r} is not one RECAP applies")
    for key in (STATE_KEY, ACTION_KEY):
        if key not in stats:
            raise CheckpointError(f"{directory}: no normalisation statistics for {key!r}")
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every parameter is overwritten below: skip drawing 3B random numbers first
        model = model_cls(architecture)
    ours = module.remap_keys(list(names))
    rename = {file_key: ours.get(name, name) for name, file_key in names.items()}
    strict_load(model, tensors, str(weights), rename)
    key_map = {ours.get(name, name): name for name in names if ours.get(name, name) != name}
    return PretrainedPolicy(
        directory, family, layout, model.eval(), stats, norm_modes, cameras, source_config, asset_id, pad_side, key_map
    )


def family_normalisation(pretrained: PretrainedPolicy, state_dim: int, action_dim: int) -> dict:
    """The checkpoint's statistics cut to the station's ``state_dim`` / ``action_dim`` (the checkpoint's data
    may have had more dims, padded; fewer is refused): the ``normalization.json`` of a RECAP checkpoint."""
    out = {}
    for key, dim in ((STATE_KEY, state_dim), (ACTION_KEY, action_dim)):
        entry = pretrained.stats[key]
        sizes = {len(v) for v in entry.values()}
        if min(sizes) < dim:
            raise CheckpointError(
                f"{pretrained.directory}: its {key} statistics cover {min(sizes)} dims, the station has {dim}; "
                f"train with --normalization data to compute them from the datasets"
            )
        out[key] = {stat: list(values[:dim]) for stat, values in entry.items()}
    return out


def family_steps(
    family: str, layout: str, cameras, image_size: int, norm_modes: dict, pad_side: str = "center"
) -> list[dict]:
    """The processor steps of a family policy: images padded to the family's size, its normalisation, its prompt."""
    eps = NORM_EPS[layout]
    modes = {
        k: {"MEAN_STD": "mean_std", "QUANTILES": "quantiles", "IDENTITY": "identity"}[v] for k, v in norm_modes.items()
    }
    state = {"stats": STATE_KEY, "mode": modes["state"], "eps": eps}
    action = {"stats": ACTION_KEY, "mode": modes["action"], "eps": eps}
    return [
        {"step": "images", "cameras": list(cameras), "size": int(image_size), "resize": "pad", "pad_side": pad_side},
        {"step": "normalise_state", **state},
        {"step": "normalise_actions", **action},
        {"step": "tokenise_prompt", "template": PROMPT_TEMPLATE[family]},
        {"step": "unnormalise_actions", **action},
    ]


KEY_MAP = "recap_key_map.json"  # see recap_core.models.families.export
#: The JSON files of a LeRobot / openpi checkpoint a RECAP checkpoint keeps for ``recap export``.
SOURCE_JSON = (
    "config.json",
    "policy_preprocessor.json",
    "policy_postprocessor.json",
    "vlm_config.json",
    "architecture.json",
)


def source_files(directory: pathlib.Path) -> dict:
    return {name: read_json_file(directory / name) for name in SOURCE_JSON if (directory / name).is_file()}


def family_policy(pretrained: PretrainedPolicy, *, cameras, state_dim: int, action_dim: int, **overrides: Any):
    """``(FamilyPolicyConfig, FamilyPolicy)`` running ``pretrained``'s model on a station's layout."""
    from recap_core.models.configuration import FamilyPolicyConfig
    from recap_core.models.families.common import FamilyPolicy

    arch = pretrained.architecture
    if state_dim > arch.max_state_dim or action_dim > arch.max_action_dim:
        raise CheckpointError(
            f"{pretrained.directory}: the model takes at most {arch.max_state_dim} state and {arch.max_action_dim} "
            f"action dims, the station has {state_dim} and {action_dim}"
        )
    config = FamilyPolicyConfig(
        family=pretrained.family,
        architecture=arch.to_dict(),
        cameras=tuple(cameras),
        state_dim=int(state_dim),
        action_dim=int(action_dim),
        action_horizon=int(arch.chunk_size),
        num_flow_steps=int(arch.num_steps),
        image_size=int(arch.image_size),
        max_prompt_tokens=int(arch.tokenizer_max_length),
        source_layout=pretrained.layout,
        source_files={
            **source_files(pretrained.directory),
            **({KEY_MAP: pretrained.key_map} if pretrained.key_map else {}),
        },
        asset_id=pretrained.asset_id,
        name=pretrained.family,
        **overrides,
    )
    return config, FamilyPolicy(config, pretrained.model)


def build_family_policy(config) -> torch.nn.Module:
    """A :class:`FamilyPolicy` with random weights for a RECAP checkpoint's ``FamilyPolicyConfig``."""
    from recap_core.models.families.common import FamilyPolicy

    return FamilyPolicy(config, build_core(config.family, config.architecture))
