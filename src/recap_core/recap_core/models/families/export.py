"""``recap export``: a RECAP-trained pi0 / pi0.5 / SmolVLA policy written back in the layout it came from.

LeRobot's layout: ``config.json`` (the source's, with the station's features), ``model.safetensors`` (keys
``model.`` + the family's), and the statistics where that LeRobot version keeps them: 0.3 as normalisation buffers
inside the weights, 0.4 as the normaliser's state files next to ``policy_preprocessor.json`` /
``policy_postprocessor.json``. openpi's layout: ``model.safetensors`` (the family's keys), ``config.json``,
``assets/<asset_id>/norm_stats.json``. Both get ``recap.json``, which records the advantage prompt the policy was
trained to act under: a policy server must send that prompt to get the RECAP-improved behaviour.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import shutil

import safetensors.torch
import torch

from recap_core.checkpoint import CheckpointError, load_checkpoint
from recap_core.errors import UserError
from recap_core.models.families.common import ACTION_KEY, STATE_KEY

#: A pseudo source file of FamilyPolicyConfig.source_files: {our key: the source file's key} where they differ.
KEY_MAP = "recap_key_map.json"
EXPORT_LAYOUTS = ("lerobot", "openpi")


def _write_json(path: pathlib.Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def _stats_tensors(normalization: dict) -> dict[str, dict[str, torch.Tensor]]:
    return {
        key: {stat: torch.tensor(values, dtype=torch.float32) for stat, values in normalization[key].items()}
        for key in (STATE_KEY, ACTION_KEY)
    }


def _lerobot_features(config, source: dict) -> tuple[dict, dict]:
    size = config.image_size
    inputs = {f"observation.images.{camera}": {"type": "VISUAL", "shape": [3, size, size]} for camera in config.cameras}
    inputs[STATE_KEY] = {"type": "STATE", "shape": [config.state_dim]}
    outputs = {ACTION_KEY: {"type": "ACTION", "shape": [config.action_dim]}}
    return inputs, outputs


def export_policy(
    checkpoint_dir: str | pathlib.Path,
    out: str | pathlib.Path,
    *,
    layout: str | None = None,
    advantage: str | None = "positive",
    overwrite: bool = False,
) -> pathlib.Path:
    """Write the family policy of a RECAP checkpoint into ``out`` in ``layout`` (default: the one it came from)."""
    from recap_core.models.tokenizer import family_prompt

    checkpoint = load_checkpoint(checkpoint_dir, kind="policy")
    config = checkpoint.model_config
    if getattr(config, "family", "recap") == "recap":
        raise UserError(
            f"{checkpoint_dir} is a policy of RECAP's own architecture; only a policy initialised from a pi0, "
            f"pi0.5 or SmolVLA checkpoint exports to LeRobot's or openpi's layout"
        )
    layout = layout or config.source_layout
    if layout not in EXPORT_LAYOUTS:
        raise UserError(f"--layout must be one of {EXPORT_LAYOUTS}, got {layout!r}")
    if layout == "openpi" and config.family == "smolvla":
        raise UserError("openpi has no SmolVLA; export a SmolVLA policy in LeRobot's layout")
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} is not empty; give an empty or new directory, or --overwrite")
        shutil.rmtree(out)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    key_map = config.source_files.get(KEY_MAP, {}) if config.source_layout == layout else {}
    core = {k: v.detach().contiguous().cpu() for k, v in checkpoint.model.model.state_dict().items()}
    tensors = {key_map.get(k, k): v for k, v in core.items()}
    stats = _stats_tensors(checkpoint.normalization)
    source_config = copy.deepcopy(config.source_files.get("config.json", {}))
    if layout == "lerobot":
        processors = {
            n: config.source_files[n]
            for n in ("policy_preprocessor.json", "policy_postprocessor.json")
            if n in config.source_files
        }
        inputs, outputs = _lerobot_features(config, source_config)
        source_config.update({"type": config.family, "input_features": inputs, "output_features": outputs})
        tensors = {f"model.{k}": v for k, v in tensors.items()}
        if processors:
            _write_lerobot_processors(staging, processors, stats, inputs, outputs)
        else:  # LeRobot 0.3: the statistics live in the policy's weights
            for prefix, feature in (
                ("normalize_inputs", STATE_KEY),
                ("normalize_targets", ACTION_KEY),
                ("unnormalize_outputs", ACTION_KEY),
            ):
                for stat in ("mean", "std") if config.family != "pi05" else ("q01", "q99"):
                    if stat in stats[feature]:
                        tensors[f"{prefix}.buffer_{feature.replace('.', '_')}.{stat}"] = stats[feature][stat].clone()
    else:
        asset = config.asset_id or "recap"
        norm = {}
        for theirs, ours in (("state", STATE_KEY), ("actions", ACTION_KEY)):
            entry = {k: v.tolist() for k, v in stats[ours].items() if k in ("mean", "std", "q01", "q99")}
            norm[theirs] = entry
        (staging / "assets" / asset).mkdir(parents=True)
        _write_json(staging / "assets" / asset / "norm_stats.json", {"norm_stats": norm})
        if not {"paligemma_variant", "action_expert_variant"} <= set(source_config):
            source_config = {
                "action_dim": checkpoint.model.arch.max_action_dim,
                "action_horizon": checkpoint.model.arch.chunk_size,
                "paligemma_variant": "gemma_2b",
                "action_expert_variant": "gemma_300m",
                "precision": "float32",
                "pi05": config.family == "pi05",
            }
    _write_json(staging / "config.json", source_config)
    if layout == "lerobot" and "vlm_config.json" in config.source_files:
        _write_json(staging / "vlm_config.json", config.source_files["vlm_config.json"])
    if "architecture.json" in config.source_files:
        _write_json(staging / "architecture.json", config.source_files["architecture.json"])
    safetensors.torch.save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
    template = {"pi0": "pi0", "pi05": "pi05", "smolvla": "smolvla"}[config.family]
    _write_json(
        staging / "recap.json",
        {
            "format": "recap-export",
            "family": config.family,
            "layout": layout,
            "checkpoint_id": checkpoint.checkpoint_id,
            "cameras": list(config.cameras),
            "joint_names": list(checkpoint.training_config.get("joint_names") or []),
            "advantage": advantage,
            "prompt_template": template,
            "prompt_example": family_prompt(template, "<task>", advantage, [128] if template == "pi05" else None),
            "note": "send the task in this prompt (with its advantage text) to act as RECAP trained the policy",
        },
    )
    tokenizer_dir = staging / "tokenizer"
    checkpoint.tokenizer.save_pretrained(str(tokenizer_dir))
    if out.exists():
        out.rmdir()
    os.replace(staging, out)
    return out


def _write_lerobot_processors(staging, processors: dict, stats: dict, inputs: dict, outputs: dict) -> None:
    """LeRobot 0.4's pipelines with the normaliser state files rewritten from the RECAP checkpoint's statistics."""
    for name, pipeline in processors.items():
        pipeline = copy.deepcopy(pipeline)
        for step in pipeline.get("steps", []):
            if step.get("registry_name") not in ("normalizer_processor", "unnormalizer_processor"):
                continue
            state_file = step.get("state_file")
            if not isinstance(state_file, str) or "/" in state_file:
                raise CheckpointError(f"{name}: a normaliser step without a plain state_file name")
            step_config = step.setdefault("config", {})
            if "features" in step_config:
                step_config["features"] = {**inputs, **outputs}
            flat = {f"{feature}.{stat}": tensor for feature, entry in stats.items() for stat, tensor in entry.items()}
            safetensors.torch.save_file(flat, str(staging / state_file))
        _write_json(staging / name, pipeline)
