"""Frozen, validated configurations of the RECAP policy and value models.

Sizes live here; :mod:`recap_core.models.registry` names useful combinations
(``tiny``, ``small``, ``pretrained``). The layout fields (``cameras``, ``state_dim``, ``action_dim``) default
to the simulated station's; training sets them from its datasets (``recap_core.train.common.plan_model``),
so a preset fixes sizes and the data fixes names. Every config round-trips through plain
JSON (``to_dict`` / ``from_dict``) so a checkpoint's ``config.json`` rebuilds the
architecture without executing anything from the checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from recap_core.station import DEFAULT_CAMERAS, NUM_JOINTS  # the simulated station's: tests, benchmarks


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent; the message says which and what to do."""


VISION_STEMS = ("patch", "conv")


def _positive_int(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{owner}.{name} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Vision tower (SigLIP) + language model (Gemma 3 text) sizes.

    The prefix the backbone encodes is ``tokens_per_image`` tokens per camera,
    one state token and the prompt tokens, all attending to each other
    (prefix-LM, as PaliGemma/pi0). ``hf_config`` holds the full transformers
    ``Gemma3Config`` dict of a pretrained model (real weights loaded from
    ``pretrained_dir``); when it is set the size fields mirror it.

    ``vision_stem``: ``"patch"`` is SigLIP's patch embedding (one strided
    convolution, what pretrained weights have); ``"conv"`` replaces it with a
    stack of stride-2 3x3 convolutions ending on the same patch grid ("early
    convolutions", Xiao et al. 2021). Trained from scratch, only the conv stem
    learns to locate a few-pixel object: SigLIP's single patch convolution
    puts the whole object inside one patch (docs/learning.md §2; the probes:
    docs/lab/, scene-conditioning).
    """

    image_size: int = 32
    patch_size: int = 8
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_layers: int = 1
    vision_num_heads: int = 2
    tokens_per_image: int = 4
    vocab_size: int = 384
    hidden_size: int = 48
    intermediate_size: int = 96
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    head_dim: int = 16
    rope_theta: float = 10_000.0
    pretrained_dir: str | None = None
    hf_config: dict | None = None
    vision_stem: str = "patch"

    def __post_init__(self):
        owner = "BackboneConfig"
        if self.vision_stem not in VISION_STEMS:
            raise ConfigError(f"{owner}.vision_stem must be one of {VISION_STEMS}, got {self.vision_stem!r}")
        if self.vision_stem == "conv":
            if self.hf_config is not None:
                raise ConfigError(
                    f"{owner}.vision_stem 'conv' has no pretrained weights; pretrained backbones "
                    f"keep SigLIP's 'patch' stem"
                )
            if self.patch_size < 2 or self.patch_size & (self.patch_size - 1):
                raise ConfigError(
                    f"{owner}.vision_stem 'conv' halves the image per layer down to the patch grid, "
                    f"so patch_size must be a power of two >= 2, got {self.patch_size}"
                )
        for name in (
            "image_size",
            "patch_size",
            "vision_hidden_size",
            "vision_intermediate_size",
            "vision_num_layers",
            "vision_num_heads",
            "tokens_per_image",
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
        ):
            _positive_int(owner, name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"{owner}.image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size}); pick e.g. image_size={self.patch_size * 4}"
            )
        patches_per_side = self.image_size // self.patch_size
        tokens_per_side = round(self.tokens_per_image**0.5)
        if tokens_per_side**2 != self.tokens_per_image or patches_per_side % tokens_per_side:
            raise ConfigError(
                f"{owner}.tokens_per_image ({self.tokens_per_image}) must be a square whose side divides the "
                f"{patches_per_side} patches per image side; e.g. {(patches_per_side // 2) ** 2 or 1}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"{owner}.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.vision_hidden_size % self.vision_num_heads:
            raise ConfigError(
                f"{owner}.vision_hidden_size ({self.vision_hidden_size}) must be divisible by "
                f"vision_num_heads ({self.vision_num_heads})"
            )
        if not self.rope_theta > 0:
            raise ConfigError(f"{owner}.rope_theta must be > 0, got {self.rope_theta!r}")

    @property
    def patches_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """The action expert: as many layers as the backbone, narrower, same head_dim and KV heads.

    Layer ``i`` of the expert attends to ``[backbone layer i prefix K/V ; its own K/V]``,
    so only its width, MLP size and number of query heads are free.

    ``image_conditioning``: also add a linear read of every camera's image
    tokens (flattened, RMS-normalised) to each action token, a global
    observation vector in the manner of Diffusion Policy's conditioning. Small
    models trained from scratch otherwise learn the demonstrations' marginal
    over targets and ignore where the object is (docs/learning.md §2; the
    probes: docs/lab/, scene-conditioning).

    ``advantage_embedding``: also add a learned vector per advantage
    condition (none / positive / negative) to each action token, besides the
    ``Advantage: ...`` text of the prompt. A small backbone barely reads those
    few text tokens: without the embedding the chunks under "positive" and
    "negative" differed by half as much as two noise draws, so classifier-free
    guidance had nothing to amplify (docs/experiment.md, Protocol; the
    measurements: docs/lab/, batch-mix). Zero-initialised.
    """

    width: int = 32
    mlp_dim: int = 64
    num_heads: int = 2
    image_conditioning: bool = False
    advantage_embedding: bool = False

    def __post_init__(self):
        for name in ("width", "mlp_dim", "num_heads"):
            _positive_int("ExpertConfig", name, getattr(self, name))
        for name in ("image_conditioning", "advantage_embedding"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"ExpertConfig.{name} must be true or false, got {getattr(self, name)!r}")


def _check_cameras(owner: str, cameras: tuple[str, ...]) -> None:
    if not cameras or not all(isinstance(c, str) and c for c in cameras):
        raise ConfigError(f"{owner}.cameras must be a non-empty tuple of camera names, got {cameras!r}")
    if len(set(cameras)) != len(cameras):
        raise ConfigError(f"{owner}.cameras has duplicates: {cameras!r}")


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """pi0-style flow-matching policy: backbone prefix + action expert over a chunk ``[H, action_dim]``."""

    backbone: BackboneConfig = BackboneConfig()
    expert: ExpertConfig = ExpertConfig()
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    state_dim: int = NUM_JOINTS
    action_dim: int = NUM_JOINTS
    action_horizon: int = 50
    max_prompt_tokens: int = 32
    num_flow_steps: int = 10
    indicator_dropout: float = 0.3
    knowledge_insulation: bool = False
    name: str = "custom"

    def __post_init__(self):
        owner = "PolicyConfig"
        for name in ("state_dim", "action_dim", "action_horizon", "max_prompt_tokens", "num_flow_steps"):
            _positive_int(owner, name, getattr(self, name))
        _check_cameras(owner, self.cameras)
        if not 0.0 <= self.indicator_dropout <= 1.0:
            raise ConfigError(f"{owner}.indicator_dropout must be in [0, 1], got {self.indicator_dropout!r}")
        head_dim = self.backbone.head_dim
        if self.expert.num_heads % self.backbone.num_kv_heads:
            raise ConfigError(
                f"ExpertConfig.num_heads ({self.expert.num_heads}) must be a multiple of the "
                f"backbone's num_kv_heads ({self.backbone.num_kv_heads}) to share its K/V"
            )
        if head_dim % 2:
            raise ConfigError(f"BackboneConfig.head_dim must be even for rotary embeddings, got {head_dim}")

    @property
    def image_size(self) -> int:
        """The square side the model's images are resized to."""
        return self.backbone.image_size

    @property
    def family(self) -> str:
        return "recap"

    def to_dict(self) -> dict:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PolicyConfig":
        return _from_dict(cls, data)


@dataclasses.dataclass(frozen=True)
class ValueConfig:
    """Distributional value model: backbone prefix + a readout token -> ``num_bins`` logits."""

    backbone: BackboneConfig = BackboneConfig()
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    state_dim: int = NUM_JOINTS
    num_bins: int = 201
    max_prompt_tokens: int = 32
    head_hidden_size: int = 64
    name: str = "custom"

    def __post_init__(self):
        owner = "ValueConfig"
        for name in ("state_dim", "max_prompt_tokens", "head_hidden_size"):
            _positive_int(owner, name, getattr(self, name))
        _check_cameras(owner, self.cameras)
        if not isinstance(self.num_bins, int) or self.num_bins < 2:
            raise ConfigError(f"{owner}.num_bins must be an integer >= 2, got {self.num_bins!r}")

    @property
    def image_size(self) -> int:
        """The square side the model's images are resized to."""
        return self.backbone.image_size

    @property
    def family(self) -> str:
        return "recap"

    def to_dict(self) -> dict:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ValueConfig":
        return _from_dict(cls, data)


FAMILY_NAMES = ("pi0", "pi05", "smolvla")
SOURCE_LAYOUTS = ("lerobot", "openpi")


@dataclasses.dataclass(frozen=True)
class FamilyPolicyConfig:
    """A policy of a pretrained VLA family (pi0, pi0.5, SmolVLA) run by RECAP (``recap_core.models.families``).

    ``architecture`` is the family's own config (``Pi0Config`` / ``SmolVLAConfig`` as plain JSON); the model
    pads ``state_dim`` / ``action_dim`` to its ``max_state_dim`` / ``max_action_dim`` and samples chunks of its
    ``chunk_size`` (``action_horizon``). ``source_layout`` is the on-disk layout the weights came from, which
    ``recap export`` writes back by default; ``source_files`` keeps that checkpoint's JSON files (its
    ``config.json``, LeRobot's processor configs) and ``asset_id`` openpi's ``assets/<asset_id>``, so the export
    is a directory the ecosystem's own loaders read. The prompt carries the task and RECAP's advantage text in the
    family's own template (docs/models.md).
    """

    family: str
    architecture: dict
    cameras: tuple[str, ...]
    state_dim: int
    action_dim: int
    action_horizon: int
    num_flow_steps: int
    image_size: int
    max_prompt_tokens: int
    source_layout: str = "lerobot"
    source_files: dict = dataclasses.field(default_factory=dict)
    asset_id: str | None = None
    indicator_dropout: float = 0.3
    knowledge_insulation: bool = False
    name: str = "custom"

    def __post_init__(self):
        owner = "FamilyPolicyConfig"
        if self.family not in FAMILY_NAMES:
            raise ConfigError(f"{owner}.family must be one of {FAMILY_NAMES}, got {self.family!r}")
        if self.source_layout not in SOURCE_LAYOUTS:
            raise ConfigError(f"{owner}.source_layout must be one of {SOURCE_LAYOUTS}, got {self.source_layout!r}")
        for name in ("architecture", "source_files"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{owner}.{name} must be a JSON object, got {type(getattr(self, name)).__name__}")
        for name in ("state_dim", "action_dim", "action_horizon", "num_flow_steps", "image_size", "max_prompt_tokens"):
            _positive_int(owner, name, getattr(self, name))
        _check_cameras(owner, self.cameras)
        if not 0.0 <= self.indicator_dropout <= 1.0:
            raise ConfigError(f"{owner}.indicator_dropout must be in [0, 1], got {self.indicator_dropout!r}")
        if self.knowledge_insulation:
            raise ConfigError(f"{owner}: knowledge insulation is not implemented for the {self.family} family")

    def to_dict(self) -> dict:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FamilyPolicyConfig":
        return _from_dict(cls, data)


_NESTED = {"backbone": BackboneConfig, "expert": ExpertConfig}


def _to_dict(config) -> dict:
    data = dataclasses.asdict(config)
    if "cameras" in data:
        data["cameras"] = list(data["cameras"])
    return data


def _from_dict(cls, data: dict):
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(known)}")
    kwargs = dict(data)
    for key, nested in _NESTED.items():
        if key in kwargs and isinstance(kwargs[key], dict):
            nested_known = {f.name for f in dataclasses.fields(nested)}
            extra = sorted(set(kwargs[key]) - nested_known)
            if extra:
                raise ConfigError(f"{nested.__name__} has no field(s) {extra}; known: {sorted(nested_known)}")
            kwargs[key] = nested(**kwargs[key])
    if "cameras" in kwargs:
        kwargs["cameras"] = tuple(kwargs["cameras"])
    return cls(**kwargs)
