"""Checkpoint directories (DESIGN.md §8): save, validate, load. Never pickle, never execute.

The layout and the loading rules are in docs/learning.md §6: loading reads JSON and safetensors only, refuses a
directory holding pickle-format files, and raises :class:`CheckpointError` naming the file on any defect.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import pathlib
import shutil
import subprocess
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from recap_core.errors import UserError

FORMAT = "recap-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.json"
PROCESSOR_FILE = "processor.json"
TOKENIZER_DIR = "tokenizer"
PROVENANCE_FILE = "provenance.json"
TRAINING_STATE_FILE = "training_state.safetensors"
TRAINING_STATE_JSON = "training_state.json"
REQUIRED_FILES = (CONFIG_FILE, MODEL_FILE, NORMALIZATION_FILE, PROCESSOR_FILE, PROVENANCE_FILE)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib")
KINDS = ("policy", "value")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint directory is missing a file or holds something wrong; the message names the file."""


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode) and everything needed to feed it."""

    path: pathlib.Path
    kind: str
    model_config: Any
    training_config: dict
    model: nn.Module
    normalization: dict
    processor_steps: list
    tokenizer: Any
    provenance: dict

    @property
    def checkpoint_id(self) -> str:
        return str(self.provenance.get("checkpoint_id", ""))

    @property
    def trained_advantage(self) -> str | None:
        """The advantage condition this policy was fine-tuned to act under (:func:`trained_advantage`)."""
        return trained_advantage(self.provenance)


# ---------------------------------------------------------------------------- helpers


def trained_advantage(provenance: dict) -> str | None:
    """The advantage condition a policy with this ``provenance.json`` was trained to act under: None (no
    advantage text) for an AWR fine-tune or a plain behaviour-cloning run (``bc``), which never see one;
    "positive" for the others (SFT fixes it, RECAP conditions on it)."""
    return None if provenance.get("mode") in ("awr", "bc") else "positive"


def read_json(path: pathlib.Path) -> Any:
    """Parse one JSON file of a checkpoint, or raise CheckpointError naming it."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete (was training interrupted?)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); the file is corrupt") from exc


def _write_json(path: pathlib.Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(temporary, path)


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> str:
    """HEAD of the source checkout this code runs from, or "unknown"."""
    from recap_core.station import repo_root

    root = repo_root()
    if root is None:
        return "unknown"
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def dataset_fingerprint(root: str | pathlib.Path) -> str:
    """sha256 over a dataset's metadata (info.json incl. labels id, tasks, episodes) — changes when data does."""
    root = pathlib.Path(root)
    digest = hashlib.sha256()
    files = [root / "meta" / "info.json", root / "meta" / "tasks.parquet"]
    files += sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def make_provenance(
    *,
    kind: str,
    datasets: list[str],
    iteration: int | None = None,
    parent: "Checkpoint | str | None" = None,
    extra: dict | None = None,
) -> dict:
    """Provenance fields known before saving (id, time and weight hash are added by :func:`save_checkpoint`)."""
    entries = [{"path": str(pathlib.Path(d).resolve()), "fingerprint": dataset_fingerprint(d)} for d in datasets]
    combined = hashlib.sha256("".join(sorted(e["fingerprint"] for e in entries)).encode()).hexdigest()
    parent_entry = None
    if isinstance(parent, Checkpoint):
        parent_entry = {"path": str(parent.path), "checkpoint_id": parent.checkpoint_id}
    elif parent:
        parent_entry = {"path": str(parent), "checkpoint_id": ""}
    return {
        "kind": kind,
        "datasets": entries,
        "dataset_hash": combined,
        "iteration": iteration,
        "parent_checkpoint": parent_entry,
        "git_commit": git_commit(),
        **(extra or {}),
    }


# ---------------------------------------------------------------------------- save


def save_checkpoint(
    directory: str | pathlib.Path,
    *,
    kind: str,
    model: nn.Module,
    model_config: Any,
    training_config: dict,
    normalization: dict,
    processor_steps: list,
    tokenizer: Any,
    provenance: dict,
    training_state: tuple[dict[str, torch.Tensor], dict] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> pathlib.Path:
    """Write a checkpoint into ``directory`` (created; existing checkpoint files replaced).

    ``state_dict`` (a sharded run's gathered weights) is written instead of ``model``'s own.
    Each file is replaced atomically and ``provenance.json`` (holding the
    weights' sha256) goes last, so a save killed half-way is detected on load.
    Other files in the directory (metrics, plots) are left alone.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PROVENANCE_FILE).unlink(missing_ok=True)  # the directory is incomplete until it is rewritten
    _write_json(
        directory / CONFIG_FILE,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "model": model_config.to_dict(),
            "training": training_config,
        },
    )
    _write_json(directory / NORMALIZATION_FILE, normalization)
    _write_json(directory / PROCESSOR_FILE, {"steps": processor_steps})
    staging = directory / f".{TOKENIZER_DIR}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer.save_pretrained(str(staging))
    shutil.rmtree(directory / TOKENIZER_DIR, ignore_errors=True)
    os.replace(staging, directory / TOKENIZER_DIR)
    if training_state is not None:
        tensors, state_json = training_state
        temporary = directory / f".{TRAINING_STATE_FILE}.tmp"
        safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary))
        os.replace(temporary, directory / TRAINING_STATE_FILE)
        _write_json(directory / TRAINING_STATE_JSON, state_json)
    temporary = directory / f".{MODEL_FILE}.tmp"
    if state_dict is None:
        safetensors.torch.save_model(model, str(temporary))
    else:  # the gathered weights of a sharded run (the module holds only this rank's shards)
        safetensors.torch.save_file(_unshared(state_dict), str(temporary))
    os.replace(temporary, directory / MODEL_FILE)
    created = _dt.datetime.now(_dt.timezone.utc)
    weights_sha256 = file_sha256(directory / MODEL_FILE)
    record = dict(provenance)
    record.update(
        {
            "kind": kind,
            "created": created.isoformat(timespec="seconds"),
            "model_sha256": weights_sha256,
            "checkpoint_id": f"{kind}-{created:%Y%m%dT%H%M%S}-{weights_sha256[:8]}",
        }
    )
    _write_json(directory / PROVENANCE_FILE, record)
    return directory


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors, a copy for any that shares memory with one before it (safetensors refuses shared)."""
    seen, out = set(), {}
    for name, tensor in state.items():
        tensor = tensor.detach().contiguous()
        pointer = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        out[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out


# ---------------------------------------------------------------------------- load


def check_directory(directory: str | pathlib.Path) -> pathlib.Path:
    """Refuse a directory that is missing required files or holds pickle-format files."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory (does not exist or is a file)")
    pickled = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise CheckpointError(
            f"{directory}: holds pickle-format file(s) {pickled}; RECAP checkpoints never use "
            f"pickle and refuse to load next to one. Remove them if you trust them."
        )
    if not any((directory / name).is_file() for name in REQUIRED_FILES):
        from recap_core.outputs import describe

        holds = describe(directory) if any(directory.iterdir()) else "nothing"
        raise CheckpointError(
            f"{directory}: not a checkpoint (it holds {holds}); give a checkpoint directory "
            f"written by `recap train-policy` or `recap train-value`"
        )
    for name in REQUIRED_FILES:
        if not (directory / name).is_file():
            raise CheckpointError(
                f"{directory / name}: missing; the checkpoint is incomplete "
                f"(needs {', '.join(REQUIRED_FILES)} and {TOKENIZER_DIR}/)"
            )
    if not (directory / TOKENIZER_DIR / "tokenizer.json").is_file():
        raise CheckpointError(f"{directory / TOKENIZER_DIR / 'tokenizer.json'}: missing; the checkpoint is incomplete")
    return directory


def read_config(directory: str | pathlib.Path) -> tuple[str, Any, dict]:
    """``(kind, model_config, training_config)`` from ``config.json`` (validated)."""
    from recap_core.models.configuration import ConfigError, PolicyConfig, ValueConfig

    path = pathlib.Path(directory) / CONFIG_FILE
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise CheckpointError(f"{path}: not a RECAP checkpoint config (format {found!r}, expected {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {data.get('format_version')!r}; this code reads {FORMAT_VERSION}"
        )
    kind = data.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{path}: kind must be one of {KINDS}, got {kind!r}")
    try:
        config_cls = PolicyConfig if kind == "policy" else ValueConfig
        model = data.get("model")
        if kind == "policy" and isinstance(model, dict) and "family" in model:
            from recap_core.models.configuration import FamilyPolicyConfig

            config_cls = FamilyPolicyConfig
        model_config = config_cls.from_dict(model)
        if config_cls is not PolicyConfig and config_cls is not ValueConfig:
            from recap_core.models.families import architecture_from_dict

            architecture_from_dict(model_config.family, model_config.architecture)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc
    return kind, model_config, data.get("training") or {}


def build_model(kind: str, model_config: Any) -> nn.Module:
    from recap_core.models.policy import RecapPolicy
    from recap_core.models.value import RecapValue

    if getattr(model_config, "family", "recap") != "recap":
        from recap_core.models.families import build_family_policy

        return build_family_policy(model_config)
    return RecapPolicy(model_config) if kind == "policy" else RecapValue(model_config)


def load_weights(model: nn.Module, path: pathlib.Path) -> None:
    """Load safetensors weights strictly, then refuse non-finite values."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the architecture in config.json: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match config.json: missing {sorted(missing)[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {sorted(unexpected)[:5]}"
            f"{'...' if len(unexpected) > 5 else ''} ({len(names)} tensors in file)"
        )
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path}: tensor {name!r} holds NaN or infinite values; the training run diverged "
                f"or the file is damaged"
            )


def load_checkpoint(
    directory: str | pathlib.Path,
    *,
    kind: str | None = None,
    device: str | torch.device = "cpu",
    verify_hash: bool = True,
) -> Checkpoint:
    """Load and validate a checkpoint directory; ``kind`` ("policy" | "value") if it must be one."""
    from recap_core.models.tokenizer import load_tokenizer

    directory = check_directory(directory).resolve()
    found_kind, model_config, training_config = read_config(directory)
    if kind is not None and found_kind != kind:
        raise CheckpointError(
            f"{directory / CONFIG_FILE}: this is a {found_kind} checkpoint, a {kind} one is needed; "
            f"give a {kind} checkpoint directory"
        )
    provenance = read_json(directory / PROVENANCE_FILE)
    if not isinstance(provenance, dict):
        raise CheckpointError(f"{directory / PROVENANCE_FILE}: must be a JSON object")
    if verify_hash and provenance.get("model_sha256") != file_sha256(directory / MODEL_FILE):
        raise CheckpointError(
            f"{directory / MODEL_FILE}: sha256 differs from provenance.json; the save was "
            f"interrupted or the weights were replaced"
        )
    normalization = read_json(directory / NORMALIZATION_FILE)
    processor = read_json(directory / PROCESSOR_FILE)
    if not isinstance(processor, dict) or not isinstance(processor.get("steps"), list):
        raise CheckpointError(f"{directory / PROCESSOR_FILE}: must be an object with a 'steps' list")
    _check_normalization(directory / NORMALIZATION_FILE, normalization)
    from recap_core.models.processor import check_action_masks, std_floor_of

    try:
        std_floor_of(processor["steps"])
        check_action_masks(processor["steps"])
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(f"{directory / PROCESSOR_FILE}: {exc}") from exc
    try:
        tokenizer = load_tokenizer(directory / TOKENIZER_DIR)
    except Exception as exc:
        raise CheckpointError(f"{directory / TOKENIZER_DIR / 'tokenizer.json'}: cannot load tokenizer ({exc})") from exc
    model = build_model(found_kind, model_config)
    load_weights(model, directory / MODEL_FILE)
    model.to(device).eval()
    return Checkpoint(
        directory,
        found_kind,
        model_config,
        training_config,
        model,
        normalization,
        processor["steps"],
        tokenizer,
        provenance,
    )


def _check_normalization(path: pathlib.Path, stats: Any) -> None:
    if not isinstance(stats, dict) or "observation.state" not in stats:
        raise CheckpointError(f"{path}: needs statistics for 'observation.state'")
    for name, entry in stats.items():
        for field in ("mean", "std"):
            values = entry.get(field) if isinstance(entry, dict) else None
            if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in values
            ):
                raise CheckpointError(f"{path}: {name}.{field} must be a list of finite numbers")


# ---------------------------------------------------------------------------- training state (resume)


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into safetensors-able tensors and a JSON part."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{param_id}.{key}"] = value.detach().cpu()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_training_state(directory: str | pathlib.Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, json)`` of a checkpoint's training state, for ``--resume``."""
    directory = pathlib.Path(directory)
    path = directory / TRAINING_STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing; this checkpoint was saved without training state and cannot "
            f"be resumed (start a new run with --init instead)"
        )
    try:
        tensors = safetensors.torch.load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    return tensors, read_json(directory / TRAINING_STATE_JSON)


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], state_json: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for param_id, entries in state_json.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(entries)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": state_json["param_groups"]})
    except (KeyError, ValueError) as exc:
        raise CheckpointError(
            f"training state does not fit this optimizer ({exc}); resume with the same "
            f"config and mode it was saved with"
        ) from exc
