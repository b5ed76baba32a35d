"""What travels over the policy server's websocket (openpi's protocol; pure Python + numpy, no torch).

A connection: the server first sends its metadata (one binary msgpack frame, :func:`policy_metadata`); then each
request is one binary frame, a packed observation map, and each reply one binary frame, a packed map with
``"actions"`` (float32 ``[H, J]``) and ``"server_timing"`` (``infer_ms``, and ``prev_total_ms`` from the second
request on), or one text frame, a one-line error (a bad observation: the connection stays open).

Observation keys (:func:`runner_observation`), so that openpi-client users' observations and ours both work:

* images, uint8, HWC (or CHW, as openpi's ALOHA examples send them), one per camera the model reads:
  nested ``{"images": {cam: array}}``, or flat ``"observation/images/<cam>"`` or ``"images/<cam>"``;
* the joint state: ``"state"`` or ``"observation/state"`` (the station's joint order);
* the task prompt: ``"prompt"`` (openpi) or ``"task"``;
* RECAP's knobs (optional): ``"recap/beta"``, ``"recap/advantage"`` ("positive", "negative" or nil: no advantage
  text), ``"recap/seed"``; any other ``"recap/<name>"`` is passed to the runner's ``infer`` as the keyword
  ``name`` (e.g. ``"recap/guide"`` for real-time chunking) when ``infer`` takes it, else listed in the reply's
  ``"ignored"``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Mapping

import numpy as np

#: Version of RECAP's additions to openpi's protocol (metadata fields, ``recap/`` keys).
RECAP_PROTOCOL = 1
IMAGE_PREFIXES = ("observation/images/", "images/")
STATE_KEYS = ("state", "observation/state")
TASK_KEYS = ("prompt", "task")
KNOB_PREFIX = "recap/"
KNOBS = ("beta", "advantage", "seed")


def normalise_server_url(url: str) -> str:
    """``ws://host:port`` from ``host:port``, ``ws://…`` or ``wss://…``; ValueError (one line) otherwise."""
    text = str(url).strip()
    if "://" not in text:
        text = f"ws://{text}"
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname:
        raise ValueError(f"policy server {url!r} is not a websocket address: give ws://HOST:PORT (or wss://)")
    try:
        parsed.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"policy server {url!r}: {exc}") from exc
    return text


class ObservationError(ValueError):
    """An observation the server cannot use; the message (one line) goes back to the client."""


def policy_metadata(runner: Any) -> dict:
    """What the server says first on every connection: the checkpoint, the layout it serves, the chunk size."""
    config = runner.config
    checkpoint = runner.checkpoint
    training = checkpoint.training_config if isinstance(checkpoint.training_config, dict) else {}
    joint_names = training.get("joint_names")
    grippers = training.get("gripper_joints")
    return {
        "recap_protocol": RECAP_PROTOCOL,
        "kind": "policy",
        "checkpoint_id": runner.checkpoint_id,
        "family": str(getattr(config, "family", "recap")),
        "cameras": list(config.cameras),
        "joint_names": list(joint_names) if joint_names else None,
        "gripper_joints": list(grippers) if grippers is not None else None,
        "state_dim": int(config.state_dim),
        "action_dim": int(config.action_dim),
        "action_horizon": int(config.action_horizon),
        "trained_advantage": checkpoint.trained_advantage,
        "image_keys": [f"observation/images/{c}" for c in config.cameras],
        "state_key": "state",
        "prompt_key": "prompt",
    }


def _image(name: str, value: Any) -> np.ndarray:
    image = np.asarray(value)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ObservationError(
            f"image {name!r} must be uint8 [h, w, 3] (or [3, h, w]), got {image.dtype} {image.shape}"
        )
    if image.shape[0] == 3 and image.shape[2] != 3:  # CHW, as openpi's ALOHA clients send it
        image = image.transpose(1, 2, 0)
    return image


def runner_observation(message: Any, cameras) -> tuple[dict, dict]:
    """A decoded request -> (the observation ``PolicyRunner.infer`` reads, its keyword arguments).

    Raises :class:`ObservationError` (one line) for what cannot be an observation; the runner checks the rest
    (camera set, state size, task) with its own one-line errors.
    """
    if not isinstance(message, Mapping):
        raise ObservationError(f"an observation is a map of named arrays, got {type(message).__name__}")
    keys = [k for k in message if not isinstance(k, str)]
    if keys:
        raise ObservationError(f"observation keys must be strings, got {keys[:3]}")
    images: dict[str, np.ndarray] = {}
    nested = message.get("images")
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise ObservationError(f"'images' must map camera names to arrays, got {type(nested).__name__}")
        images.update({str(c): v for c, v in nested.items()})
    for key, value in message.items():
        for prefix in IMAGE_PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                images[key[len(prefix) :]] = value
    wanted = list(cameras)
    missing = [c for c in wanted if c not in images]
    if missing:
        raise ObservationError(
            f"observation lacks camera(s) {missing}: send uint8 HWC images as 'observation/images/<cam>' or "
            f"'images': {{cam: image}} for cameras {wanted}; got {sorted(images)}"
        )
    state = next((message[k] for k in STATE_KEYS if k in message), None)
    if state is None:
        raise ObservationError("observation lacks the joint state: send it as 'state' (float array, joint order)")
    task = next((message[k] for k in TASK_KEYS if k in message), None)
    if not isinstance(task, str) or not task:
        raise ObservationError(f"observation needs a non-empty 'prompt' (the task), got {task!r}")
    try:
        state = np.array(state, dtype=np.float32).reshape(-1)  # a copy: unpacked arrays are read-only
    except (TypeError, ValueError) as exc:
        raise ObservationError(f"observation state must be a float array, got {exc}") from exc
    obs = {"images": {c: _image(c, images[c]) for c in wanted}, "state": state, "task": task}
    kwargs: dict[str, Any] = {}
    for key, value in message.items():
        if key.startswith(KNOB_PREFIX) and len(key) > len(KNOB_PREFIX):
            kwargs[key[len(KNOB_PREFIX) :]] = _writable(value)
    if "beta" in kwargs:
        try:
            kwargs["beta"] = float(kwargs["beta"])
        except (TypeError, ValueError) as exc:
            raise ObservationError(f"recap/beta must be a number, got {kwargs['beta']!r}") from exc
    if "seed" in kwargs and kwargs["seed"] is not None:
        try:
            kwargs["seed"] = int(kwargs["seed"])
        except (TypeError, ValueError) as exc:
            raise ObservationError(f"recap/seed must be an integer, got {kwargs['seed']!r}") from exc
    if "advantage" in kwargs:
        if isinstance(kwargs["advantage"], bytes):
            kwargs["advantage"] = kwargs["advantage"].decode()
        if kwargs["advantage"] in ("none", ""):
            kwargs["advantage"] = None
    return obs, kwargs


def _writable(value: Any) -> Any:
    """``value`` with every numpy array copied out of the (read-only) message, through maps and lists."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, Mapping):
        return {k: _writable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_writable(v) for v in value]
    return value
