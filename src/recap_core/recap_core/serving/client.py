"""The client of a policy server (``recap serve``, or any openpi policy server): :class:`RemotePolicyRunner`.

It has what the policy node uses of a ``PolicyRunner`` (``infer``, ``reset``, ``checkpoint_id``, ``cameras``,
``config``, ``checkpoint.trained_advantage``, ``checkpoint.training_config``), taken from the server's metadata,
so the node checks the served layout against its station as it checks a checkpoint. Synchronous (websockets'
sync client): call it from one thread. No torch.

Every request has a deadline (``timeout_s``): past it the connection is dropped (a late reply must never be taken
for the next request's) and :class:`PolicyServerTimeout` is raised. A lost or dropped connection is opened again
by the next ``infer``, no sooner than a backoff that doubles from ``backoff_s`` to ``max_backoff_s`` while the
server stays away; a server that comes back serving another checkpoint or layout is refused.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import types
from typing import Any, Mapping

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from recap_core.errors import one_line
from recap_core.serving import msgpack_numpy
from recap_core.serving.protocol import normalise_server_url

_UNSET = object()
#: Metadata fields the layout of a served policy is made of: a reconnect must find the same.
LAYOUT_FIELDS = ("checkpoint_id", "cameras", "state_dim", "action_dim", "joint_names", "gripper_joints")


class RemotePolicyError(RuntimeError):
    """The policy server cannot be reached, refused the request, or serves what this client cannot use."""


class PolicyServerTimeout(RemotePolicyError, TimeoutError):
    """No reply within the request's deadline (the connection was dropped; the next request reconnects)."""


@dataclasses.dataclass(frozen=True)
class RemoteCheckpoint:
    """What the node reads of a ``Checkpoint``, from the server's metadata."""

    checkpoint_id: str
    trained_advantage: str | None
    training_config: dict
    path: str


class RemotePolicyRunner:
    """A ``PolicyRunner`` whose model runs behind a policy server at ``url`` (openpi's websocket protocol)."""

    remote = True  # what a node asks to tell it from an in-process runner

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 1.0,
        connect_timeout_s: float | None = None,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        connect_now: bool = True,
    ):
        self.url = normalise_server_url(url)
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = connect_timeout_s
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.metadata: dict | None = None
        self._ws: ClientConnection | None = None
        self._lock = threading.RLock()
        self._delay = 0.0
        self._next_attempt = 0.0
        self.connects = 0
        self.timeouts = 0
        self.last_error = ""
        self.last_round_trip_ms = float("nan")
        self.last_server_ms = float("nan")
        self.last_hop_ms = float("nan")
        if connect_now:
            self.connect()

    # -- the runner interface -----------------------------------------------------------------------
    @property
    def checkpoint_id(self) -> str:
        return str(self._meta("checkpoint_id"))

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self._meta("cameras"))

    @property
    def config(self) -> types.SimpleNamespace:
        """The layout fields of the served model's config (``cameras``, ``state_dim``, ``action_dim``, …)."""
        meta = self._require_metadata()
        return types.SimpleNamespace(
            cameras=tuple(meta["cameras"]),
            state_dim=int(meta["state_dim"]),
            action_dim=int(meta["action_dim"]),
            action_horizon=int(meta.get("action_horizon") or 0),
            family=str(meta.get("family") or ""),
        )

    @property
    def checkpoint(self) -> RemoteCheckpoint:
        meta = self._require_metadata()
        training = {k: meta[k] for k in ("joint_names", "gripper_joints") if meta.get(k) is not None}
        return RemoteCheckpoint(self.checkpoint_id, meta.get("trained_advantage"), training, self.url)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def helper_threads(self) -> tuple[threading.Thread, ...]:
        """The threads of the open connection (websockets' receiving and keepalive threads), alive ones only.

        Every reply is parsed on the receiving thread, in Python: a caller that runs its requests at real-time
        priority gives these the same (a receiving thread at normal priority, preempted while it holds the
        interpreter lock, would delay the reply and every other thread of the process behind it)."""
        ws = self._ws
        if ws is None:
            return ()
        threads = (getattr(ws, "recv_events_thread", None), getattr(ws, "keepalive_thread", None))
        return tuple(t for t in threads if t is not None and t.is_alive())

    def reset(self) -> None:
        """Nothing to restart: the node passes a seed with every request (openpi's protocol has no reset)."""

    def infer(
        self, obs: Mapping[str, Any], *, beta: Any = _UNSET, advantage: Any = _UNSET, seed: Any = _UNSET, **extra
    ) -> dict:
        """Like ``PolicyRunner.infer``: ``{"actions": float32 [H, J], "latency_ms", "beta", "advantage", …}``.

        ``latency_ms`` is the round trip; ``server_ms`` the server's inference, ``hop_ms`` what the hop added.
        Any ``extra`` keyword travels as ``recap/<name>`` (e.g. ``guide``). Raises :class:`RemotePolicyError`
        (:class:`PolicyServerTimeout` past ``timeout_s``); the next call reconnects.
        """
        request = self._request(obs, beta=beta, advantage=advantage, seed=seed, **extra)
        with self._lock:
            ws = self._ensure_connected()
            start = time.perf_counter()
            try:
                ws.send(msgpack_numpy.packb(request))
                reply = ws.recv(timeout=self.timeout_s)
            except TimeoutError as exc:
                self.timeouts += 1
                self._drop(f"no reply within {self.timeout_s * 1e3:.0f} ms")
                raise PolicyServerTimeout(
                    f"policy server {self.url}: no reply within {self.timeout_s * 1e3:.0f} ms (dropped the "
                    "connection; the next request reconnects)"
                ) from exc
            except (ConnectionClosed, OSError) as exc:
                self._drop(one_line(exc))
                raise RemotePolicyError(f"policy server {self.url}: connection lost ({one_line(exc)})") from exc
            round_trip_ms = (time.perf_counter() - start) * 1e3
        if isinstance(reply, str):
            self.last_error = one_line(reply)
            raise RemotePolicyError(f"policy server {self.url}: {one_line(reply)}")
        out = msgpack_numpy.unpackb(reply)
        if not isinstance(out, dict) or "actions" not in out:
            raise RemotePolicyError(f"policy server {self.url} replied without actions")
        out["actions"] = np.array(out["actions"], dtype=np.float32)  # writable, and float32 whatever was sent
        timing = out.get("server_timing") if isinstance(out.get("server_timing"), dict) else {}
        server_ms = float(timing.get("infer_ms", float("nan")))
        self.last_round_trip_ms, self.last_server_ms = round_trip_ms, server_ms
        self.last_hop_ms = round_trip_ms - server_ms
        self.last_error = ""
        out.update(latency_ms=round_trip_ms, server_ms=server_ms, hop_ms=self.last_hop_ms)
        return out

    def _request(self, obs: Mapping[str, Any], **knobs) -> dict:
        images = obs["images"]
        cameras = self.cameras if self.metadata is not None else tuple(images)
        request: dict[str, Any] = {
            "images": {c: np.ascontiguousarray(images[c]) for c in cameras if c in images},
            "state": np.asarray(obs["state"], dtype=np.float32).reshape(-1),
            "prompt": obs.get("task") or obs.get("prompt") or "",
        }
        for name, value in knobs.items():
            if value is _UNSET:
                value = obs.get(name, _UNSET)
            if value is not _UNSET:
                request[f"recap/{name}"] = value
        return request

    # -- connection ------------------------------------------------------------------------------
    def connect(self) -> dict:
        """Open the connection now and read the metadata (RemotePolicyError if the server cannot be used)."""
        with self._lock:
            self._drop("")
            self._next_attempt = 0.0
            self._ensure_connected()
            return dict(self.metadata or {})

    def close(self) -> None:
        with self._lock:
            self._drop("closed")

    def _ensure_connected(self) -> ClientConnection:
        if self._ws is not None:
            return self._ws
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        open_timeout = self.connect_timeout_s if self.connect_timeout_s is not None else max(self.timeout_s, 1.0)
        try:
            ws = connect(self.url, compression=None, max_size=None, open_timeout=open_timeout, close_timeout=0.2)
            try:
                metadata = msgpack_numpy.unpackb(ws.recv(timeout=open_timeout))
            except BaseException:
                ws.close()
                raise
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed, ValueError) as exc:
            self._delay = min(max(self._delay * 2, self.backoff_s), self.max_backoff_s)
            self._next_attempt = time.monotonic() + self._delay
            self.last_error = f"cannot connect: {one_line(exc) or type(exc).__name__}"
            raise RemotePolicyError(
                f"policy server {self.url}: {self.last_error} (next try in {self._delay:.1f} s)"
            ) from exc
        problem = self._metadata_problem(metadata)
        if problem:
            ws.close()
            self.last_error = problem
            self._next_attempt = time.monotonic() + self.max_backoff_s
            raise RemotePolicyError(f"policy server {self.url}: {problem}")
        self.metadata = metadata
        self._ws = ws
        self._delay = 0.0
        self.connects += 1
        self.last_error = ""
        return ws

    def _metadata_problem(self, metadata: Any) -> str:
        if not isinstance(metadata, dict):
            return f"its first message is no metadata map ({type(metadata).__name__})"
        missing = [k for k in ("checkpoint_id", "cameras", "state_dim", "action_dim") if k not in metadata]
        if missing:
            return f"its metadata lacks {missing}: is it a recap serve server?"
        if self.metadata is not None:
            changed = [k for k in LAYOUT_FIELDS if metadata.get(k) != self.metadata.get(k)]
            if changed:
                return (
                    f"it now serves checkpoint {metadata.get('checkpoint_id')!r} "
                    f"(connected for {self.metadata.get('checkpoint_id')!r}; changed: {changed}); "
                    "set the policy server again to accept it"
                )
        return ""

    def _drop(self, why: str) -> None:
        ws, self._ws = self._ws, None
        if why:
            self.last_error = why
        if ws is not None:
            try:
                ws.close()
            except Exception:  # closing a dead connection: nothing left to do
                pass

    def _meta(self, key: str) -> Any:
        return self._require_metadata()[key]

    def _require_metadata(self) -> dict:
        if self.metadata is None:
            raise RemotePolicyError(f"policy server {self.url}: not connected yet (no metadata)")
        return self.metadata
