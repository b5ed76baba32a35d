"""What value and policy training share: command-line flags, model set-up (new / --init / --resume), saving."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from typing import Any

import torch

from recap_core import outputs
from recap_core.checkpoint import (
    TRAINING_STATE_FILE,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_training_state,
    make_provenance,
    save_checkpoint,
)
from recap_core.errors import UserError
from recap_core.layout import StationLayout, check_cameras, model_problem
from recap_core.models.registry import CONFIG_NAMES, get_config
from recap_core.train.ddp import DistributedContext
from recap_core.train.loop import TrainConfig


def add_training_arguments(
    parser: argparse.ArgumentParser,
    *,
    default_steps: int,
    default_batch_size: int,
    default_lr: float,
    datasets: bool = True,
) -> None:
    """Flags every training command takes."""
    if datasets:
        parser.add_argument("datasets", nargs="+", metavar="DATASET", help="RECAP dataset directories")
    parser.add_argument(
        "--out",
        required=True,
        type=pathlib.Path,
        help="checkpoint directory to write: new or empty, or the run to continue with --resume",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete what --out holds (another checkpoint, files) and write the new checkpoint there",
    )
    parser.add_argument(
        "--config",
        choices=CONFIG_NAMES,
        default=None,
        help="model size for a new model (default tiny; taken from --init/--resume otherwise)",
    )
    parser.add_argument(
        "--pretrained",
        type=pathlib.Path,
        default=None,
        help="with --config pretrained: local Gemma 3 image-text model directory",
    )
    parser.add_argument(
        "--cameras",
        default=None,
        metavar="CAM,CAM",
        help="the cameras a new model reads, in this order (default: the first dataset's cameras); every "
        "dataset must have them. A model from --init/--resume keeps its own",
    )
    parser.add_argument(
        "--init",
        type=pathlib.Path,
        default=None,
        help="start from this checkpoint's weights: a RECAP checkpoint, or (policies) a pi0 / pi0.5 / SmolVLA "
        "checkpoint directory in LeRobot's or openpi's layout",
    )
    parser.add_argument(
        "--tokenizer",
        type=pathlib.Path,
        default=None,
        help="with --init of a LeRobot/openpi checkpoint: the directory holding its tokenizer.json (PaliGemma's "
        "for pi0/pi0.5, SmolVLM2's for SmolVLA; default: the checkpoint directory, or its tokenizer/)",
    )
    parser.add_argument(
        "--normalization",
        choices=("checkpoint", "data"),
        default="checkpoint",
        help="with --init of a LeRobot/openpi checkpoint: normalise with its own statistics (default) or with "
        "statistics of the training data (a base model on a new robot)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run saved in --out (weights, optimizer, step) up to --steps"
    )
    parser.add_argument("--iteration", type=int, default=None, help="RECAP iteration k recorded in provenance")
    parser.add_argument("--steps", type=int, default=default_steps, help="total optimiser steps")
    parser.add_argument("--batch-size", type=int, default=default_batch_size, help="samples per step per process")
    parser.add_argument("--lr", type=float, default=default_lr, help="peak learning rate (AdamW)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 5%% of --steps)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--augment-shift",
        type=int,
        default=0,
        metavar="PX",
        help="random-shift image augmentation: pad by PX and crop back at a random offset "
        "(default 0: off; ~4 px at 96 px is the usual choice)",
    )
    parser.add_argument("--log-every", type=int, default=10, help="steps between metrics.jsonl rows")
    parser.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (0: only at the end)")
    parser.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="end this run at that step (saved; schedule of --steps kept); continue with --resume",
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:0 (default: cuda when available)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: mixed precision (bf16 compute, fp32 master weights and optimizer state); default fp32",
    )
    parser.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard weights, gradients and optimizer state over the ranks (FSDP2) instead of "
        "replicating them (DDP), for models of billions of parameters",
    )
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute the transformer blocks' activations in the backward pass (less memory, ~1/3 more compute)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    warmup = args.warmup if args.warmup is not None else max(0, min(100, args.steps // 20))
    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=warmup,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        seed=args.seed,
        log_every=args.log_every,
        save_every=args.save_every,
        num_workers=args.workers,
        precision=getattr(args, "precision", "fp32"),
        strategy="fsdp" if getattr(args, "fsdp", False) else "ddp",
        activation_checkpointing=bool(getattr(args, "activation_checkpointing", False)),
    )


@dataclasses.dataclass
class ModelPlan:
    """The model a run trains and where it came from."""

    kind: str
    model_config: Any
    model: torch.nn.Module
    tokenizer: Any
    normalization: dict | None  # None: compute from the training data
    parent: Checkpoint | None
    processor_steps: list | None = None  # the init / resumed checkpoint's (its std floor is kept)
    start_step: int = 0
    resume_state: tuple[dict, dict] | None = None
    provenance: dict | None = None  # kept on resume


def plan_model(
    args: argparse.Namespace,
    kind: str,
    tasks: list[str],
    context: DistributedContext,
    layout: StationLayout,
    **config_overrides,
) -> ModelPlan:
    """A new model (``--config``), one initialised from ``--init``, or the run in ``--out`` (``--resume``).

    ``layout`` is the training data's (:func:`training_layout`): a new model reads its cameras and takes (and
    commands) its joints; a checkpoint's model must fit it (one-line UserError saying how it does not).
    """
    from recap_core.models.tokenizer import load_tokenizer, train_prompt_tokenizer

    if args.resume and args.init:
        raise UserError("give either --resume (continue --out) or --init (start from a checkpoint), not both")
    if args.init and is_foreign_checkpoint(args.init):
        if kind == "value" and _config_model_type(args.init) == "gemma3":
            # a vision-language model directory: the value model's pretrained backbone (--config pretrained)
            if args.config not in (None, "pretrained") or args.pretrained is not None:
                raise UserError(f"--init {args.init} is a Gemma 3 model directory; drop --config and --pretrained")
            args = argparse.Namespace(**{**vars(args), "config": "pretrained", "pretrained": args.init, "init": None})
        else:
            return _foreign_plan(args, kind, layout, **config_overrides)
    if args.resume or args.init:
        source = args.out if args.resume else args.init
        try:
            checkpoint = load_checkpoint(source, kind=kind, device="cpu")
        except CheckpointError as exc:
            raise CheckpointError(f"cannot {'resume' if args.resume else 'initialise'} from {source}: {exc}") from exc
        if args.config is not None and args.config != checkpoint.model_config.name:
            raise UserError(
                f"--config {args.config} differs from the checkpoint's config "
                f"'{checkpoint.model_config.name}'; drop --config"
            )
        cameras = getattr(args, "cameras", None)
        if cameras is not None and parse_cameras(cameras) != tuple(checkpoint.model_config.cameras):
            raise UserError(
                f"--cameras {cameras} differs from the cameras of {source}, "
                f"{','.join(checkpoint.model_config.cameras)}; a model keeps its cameras: drop --cameras"
            )
        problem = model_problem(kind, checkpoint.model_config, checkpoint.training_config, layout, "dataset")
        if problem:
            raise UserError(f"{source} cannot train on these datasets: {problem}")
        model_config = dataclasses.replace(checkpoint.model_config, **config_overrides)
        model = checkpoint.model
        model.config = model_config
        plan = ModelPlan(
            kind,
            model_config,
            model,
            checkpoint.tokenizer,
            checkpoint.normalization,
            parent=checkpoint if args.init else None,
            processor_steps=checkpoint.processor_steps,
        )
        if args.resume:
            tensors, state_json = load_training_state(args.out)
            plan.start_step = int(state_json["step"])
            plan.resume_state = (tensors, state_json)
            plan.provenance = checkpoint.provenance
            if plan.start_step >= args.steps:
                raise UserError(f"{args.out} is already at step {plan.start_step}; ask for more --steps to resume")
        return plan
    name = args.config or "tiny"
    sizes = {"cameras": layout.cameras, "state_dim": layout.num_joints}
    if kind == "policy":
        sizes["action_dim"] = layout.num_joints
    model_config = get_config(name, kind, pretrained_dir=args.pretrained, **sizes, **config_overrides)
    torch.manual_seed(args.seed)
    from recap_core.checkpoint import build_model

    if name == "pretrained":
        from recap_core.models.policy import RecapPolicy
        from recap_core.models.value import RecapValue

        model = (RecapPolicy if kind == "policy" else RecapValue)(model_config, load_pretrained_weights=True)
        tokenizer = load_tokenizer(pathlib.Path(model_config.backbone.pretrained_dir))
    else:
        model = build_model(kind, model_config)
        tokenizer = train_prompt_tokenizer(tasks, model_config.backbone.vocab_size)
    return ModelPlan(kind, model_config, model, tokenizer, None, parent=None)


def _config_model_type(directory: pathlib.Path) -> str | None:
    import json

    try:
        return json.loads((pathlib.Path(directory) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def is_foreign_checkpoint(directory: pathlib.Path) -> bool:
    """True for a directory whose config.json is not a RECAP checkpoint's (a LeRobot / openpi one)."""
    import json

    path = pathlib.Path(directory) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") != "recap-checkpoint"


def load_family_tokenizer(directory: pathlib.Path, explicit: pathlib.Path | None):
    """The prompt tokenizer of a pretrained family: ``tokenizer.json`` in ``explicit``, the checkpoint directory or
    its ``tokenizer/`` (JSON only; nothing downloaded). A tokenizer without a pad token pads with its EOS."""
    from transformers import PreTrainedTokenizerFast

    candidates = [explicit] if explicit is not None else [directory, directory / "tokenizer"]
    for candidate in candidates:
        path = pathlib.Path(candidate) / "tokenizer.json"
        if path.is_file():
            try:
                tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
            except Exception as exc:
                raise UserError(f"{path}: cannot load the tokenizer ({exc})") from exc
            config_path = path.with_name("tokenizer_config.json")
            if config_path.is_file():
                import json

                config = json.loads(config_path.read_text())
                for role in ("pad_token", "bos_token", "eos_token", "unk_token"):
                    token = config.get(role)
                    if isinstance(token, dict):
                        token = token.get("content")
                    if isinstance(token, str) and tokenizer.convert_tokens_to_ids(token) is not None:
                        setattr(tokenizer, role, token)
            if tokenizer.pad_token is None:
                if tokenizer.eos_token is None:
                    raise UserError(f"{path}: the tokenizer has neither a pad nor an EOS token")
                tokenizer.pad_token = tokenizer.eos_token
            return tokenizer
    where = " or ".join(str(pathlib.Path(c) / "tokenizer.json") for c in candidates)
    raise UserError(
        f"no tokenizer for {directory}: {where} does not exist. LeRobot and openpi checkpoints do not ship one; give "
        f"--tokenizer DIR holding the model's tokenizer.json (PaliGemma's for pi0/pi0.5, SmolVLM2's for SmolVLA)"
    )


def _foreign_plan(args: argparse.Namespace, kind: str, layout: StationLayout, **config_overrides) -> ModelPlan:
    """A policy initialised from a pi0 / pi0.5 / SmolVLA checkpoint in LeRobot's or openpi's layout."""
    from recap_core.models.families import family_normalisation, family_policy, family_steps, load_pretrained

    if kind != "policy":
        raise UserError(
            f"{args.init} is a LeRobot/openpi policy checkpoint; a value model starts from a vision-language model "
            f"directory: --config pretrained --pretrained DIR"
        )
    if args.config is not None:
        raise UserError(f"--config {args.config} names a RECAP model size; --init {args.init} brings its own: drop it")
    try:
        pretrained = load_pretrained(args.init)
    except CheckpointError as exc:
        raise UserError(f"cannot initialise from {args.init}: {exc}") from exc
    cameras = layout.cameras
    overrides = {k: v for k, v in config_overrides.items() if k in ("indicator_dropout", "knowledge_insulation")}
    try:
        model_config, model = family_policy(
            pretrained, cameras=cameras, state_dim=layout.num_joints, action_dim=layout.num_joints, **overrides
        )
        normalization = (
            family_normalisation(pretrained, layout.num_joints, layout.num_joints)
            if args.normalization == "checkpoint"
            else None
        )
    except (CheckpointError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    steps = family_steps(
        pretrained.family,
        pretrained.layout,
        cameras,
        model_config.image_size,
        pretrained.norm_modes,
        pretrained.pad_side,
    )
    tokenizer = load_family_tokenizer(pretrained.directory, getattr(args, "tokenizer", None))
    return ModelPlan(
        kind,
        model_config,
        model,
        tokenizer,
        normalization,
        parent=str(pretrained.directory),
        processor_steps=steps,
    )


def saver(
    *,
    args: argparse.Namespace,
    plan: ModelPlan,
    training_config: dict,
    normalization: dict,
    processor_steps: list,
    layout: StationLayout,
    extra_provenance: dict | None = None,
):
    """The ``save_fn`` for :func:`recap_core.train.loop.run_training` (rank 0 calls it).

    The checkpoint records the data's joint order and gripper joints (its model config holds the cameras): a
    node serves it only on a station with that layout.
    """
    if plan.provenance is not None:
        provenance = {k: v for k, v in plan.provenance.items() if k not in ("checkpoint_id", "created", "model_sha256")}
    else:
        provenance = make_provenance(
            kind=plan.kind,
            datasets=[str(d) for d in args.datasets],
            iteration=args.iteration,
            parent=plan.parent,
            extra=extra_provenance,
        )

    training_config = {
        **training_config,
        "joint_names": list(layout.joint_names),
        "gripper_joints": list(layout.gripper_joints),
    }

    def save(step: int, training_state: tuple[dict, dict], state_dict: dict | None = None) -> None:
        save_checkpoint(
            args.out,
            kind=plan.kind,
            model=plan.model,
            state_dict=state_dict,
            model_config=plan.model_config,
            training_config={**training_config, "steps_done": step},
            normalization=normalization,
            processor_steps=processor_steps,
            tokenizer=plan.tokenizer,
            provenance={**provenance, "step": step},
            training_state=training_state,
        )

    return save


def parse_cameras(text: str) -> tuple[str, ...]:
    """``--cameras a,b,c`` as a tuple of names; a one-line UserError for a bad list."""
    cameras = tuple(part.strip() for part in str(text).split(",") if part.strip())
    try:
        check_cameras(cameras)
    except ValueError as exc:
        raise UserError(f"--cameras {text!r}: {exc}") from None
    return cameras


def training_layout(datasets, cameras: str | None = None) -> StationLayout:
    """The station layout of the training datasets, with the cameras a new model reads.

    Every dataset must have the same joints in the same order and the same gripper joints (one model cannot
    serve two layouts). The cameras are those of ``cameras`` (``--cameras``), which every dataset must have,
    else the first dataset's. A one-line UserError (or DatasetError) names the dataset and what differs or is
    missing.
    """
    from recap_core.data import schema

    if not datasets:
        raise UserError("give at least one dataset directory")
    found: list[tuple[str, StationLayout]] = []
    for root in datasets:
        info = schema.load_info(root)  # FileNotFoundError / DatasetError naming the file
        try:
            found.append((str(root), schema.info_layout(info)))
        except (KeyError, TypeError, ValueError) as exc:
            raise schema.DatasetError(
                f"{pathlib.Path(root) / schema.INFO_PATH}: no usable station layout ({exc}); {schema.DAMAGED}"
            ) from None
    first_root, first = found[0]
    for root, layout in found[1:]:
        if layout.joint_names != first.joint_names:
            raise UserError(
                f"{root}: its joints {list(layout.joint_names)} differ from {first_root}'s "
                f"{list(first.joint_names)}; train on datasets of one station layout"
            )
        if sorted(layout.gripper_joints) != sorted(first.gripper_joints):
            raise UserError(
                f"{root}: its gripper joints {list(layout.gripper_joints)} differ from {first_root}'s "
                f"{list(first.gripper_joints)}; train on datasets of one station layout"
            )
    if cameras is None:  # the model's own cameras are checked against every dataset when they are opened
        return first
    chosen = parse_cameras(cameras)
    for root, layout in found:
        missing = [c for c in chosen if c not in layout.cameras]
        if missing:
            raise UserError(f"--cameras {cameras}: {root} has no camera {missing[0]!r}; it has {list(layout.cameras)}")
    return StationLayout(first.joint_names, first.gripper_joints, chosen)


def augment_shift(args: argparse.Namespace, image_size: int) -> int:
    """The run's random-shift pad in pixels (``--augment-shift``), checked against the image size."""
    shift = int(args.augment_shift)
    if not 0 <= shift < image_size // 2:
        raise ValueError(
            f"--augment-shift must be in [0, {image_size // 2}) pixels for {image_size} px images, got {shift}"
        )
    return shift


def check_out(args: argparse.Namespace, kind: str) -> None:
    """Refuse an ``--out`` that holds anything but the run ``--resume`` continues, unless ``--overwrite``.

    Read-only, so every rank of a torchrun job may call it before any of them writes; :func:`claim_out`
    then empties the directory on rank 0 when ``--overwrite`` asks.
    """
    overwrite = getattr(args, "overwrite", False)
    if args.resume:
        if overwrite:
            raise UserError("--resume continues the run in --out and --overwrite deletes it; give one of them")
        return  # plan_model loads it as a checkpoint of this kind with its training state
    if overwrite:
        outputs.refuse_clearing_inputs(
            args.out,
            {"DATASET": list(getattr(args, "datasets", [])), "--init": args.init, "--pretrained": args.pretrained},
        )
        return
    if not outputs.entries(args.out):
        return
    what = outputs.describe(args.out)
    if what.startswith(f"a {kind} checkpoint") and (args.out / TRAINING_STATE_FILE).is_file():
        hint = "continue it with --resume (and more --steps), or give --overwrite to replace it"
    elif what.startswith(f"a {kind} checkpoint"):
        hint = "choose another --out, or give --overwrite to replace it"
    else:
        hint = f"choose another --out for the {kind} checkpoint, or give --overwrite to delete what is there"
    raise UserError(f"--out {args.out} already holds {what}; {hint}")


def claim_out(args: argparse.Namespace) -> None:
    """With ``--overwrite``: empty ``--out`` (call on rank 0 only, after :func:`check_out`)."""
    if getattr(args, "overwrite", False):
        outputs.clear_directory(args.out)


def reports_user_errors(run):
    """Decorate a command's ``run``: the ValueErrors of its checks (and ConfigError, one of them) become user
    errors, which ``recap`` prints as one line (recap_core.cli) instead of a traceback."""
    import functools

    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except UserError:
            raise
        except ValueError as exc:
            raise UserError(str(exc)) from exc

    return wrapper


def apply_threads(args: argparse.Namespace) -> None:
    """``--threads N``: torch's CPU threads (a UserError below 1)."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return
    if int(threads) < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(int(threads))
