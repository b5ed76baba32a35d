"""A policy runner served over openpi's websocket protocol (:class:`PolicyServer`; ``recap serve`` runs it).

One model, one inference at a time: every connection's requests queue on one worker thread, so the event loop
keeps accepting connections and answering ``/healthz`` while the model runs. A bad observation is answered with a
one-line text frame and the connection stays open; the server keeps serving whatever a client sends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import inspect
import logging
import signal
import time
from typing import Any, Callable

import msgpack
import websockets
from websockets.asyncio.server import ServerConnection, serve

from recap_core.errors import one_line
from recap_core.serving import msgpack_numpy
from recap_core.serving.protocol import KNOBS, ObservationError, policy_metadata, runner_observation

log = logging.getLogger("recap.serve")

#: Errors that mean the request was bad, not the server: answered without a traceback in the log.
REQUEST_ERRORS = (ObservationError, ValueError, TypeError, KeyError, msgpack.exceptions.UnpackException)


class PolicyServer:
    """Serve ``runner`` (a ``PolicyRunner``: ``infer(obs, *, beta, advantage, seed, ...)``) on ``host:port``.

    ``metadata`` (default :func:`~recap_core.serving.protocol.policy_metadata`) is sent first on every
    connection. Keywords of ``infer`` beyond the observation (``recap/<name>`` keys) are passed only when
    ``infer`` declares them (or takes ``**kwargs``).
    """

    def __init__(self, runner: Any, *, host: str = "0.0.0.0", port: int = 8000, metadata: dict | None = None):
        self.runner = runner
        self.host, self.port = host, int(port)
        self.metadata = dict(metadata if metadata is not None else policy_metadata(runner))
        self.cameras = tuple(self.metadata.get("cameras") or runner.cameras)
        parameters = inspect.signature(runner.infer).parameters
        self._any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        self._keywords = {n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="recap_serve_infer")
        self.requests = 0
        self.errors = 0
        self.bound_port: int | None = None

    # -- one request -----------------------------------------------------------------------------
    def _infer(self, obs: dict, kwargs: dict) -> dict:
        accepted = {k: v for k, v in kwargs.items() if k in KNOBS or self._any_keyword or k in self._keywords}
        ignored = sorted(set(kwargs) - set(accepted))
        start = time.perf_counter()
        out = self.runner.infer(obs, **accepted)
        infer_ms = (time.perf_counter() - start) * 1e3
        reply = {key: value for key, value in out.items() if key != "latency_ms"}
        reply["checkpoint_id"] = self.metadata.get("checkpoint_id", "")
        reply["server_timing"] = {"infer_ms": infer_ms}
        if ignored:
            reply["ignored"] = ignored
        return reply

    async def _handle(self, websocket: ServerConnection) -> None:
        peer = websocket.remote_address
        log.info("connection from %s", peer)
        loop = asyncio.get_running_loop()
        packer = msgpack_numpy.Packer()
        await websocket.send(packer.pack(self.metadata))
        prev_total_ms = None
        try:
            async for frame in websocket:
                start = time.monotonic()
                self.requests += 1
                try:
                    if isinstance(frame, str):
                        raise ObservationError("expected a binary frame holding a msgpack observation, got text")
                    obs, kwargs = runner_observation(msgpack_numpy.unpackb(frame), self.cameras)
                    reply = await loop.run_in_executor(self._pool, self._infer, obs, kwargs)
                except Exception as exc:  # a bad request never takes the server down
                    self.errors += 1
                    if not isinstance(exc, REQUEST_ERRORS):
                        log.exception("inference failed")
                    await websocket.send(one_line(f"{type(exc).__name__}: {exc}"))
                    continue
                if prev_total_ms is not None:
                    reply["server_timing"]["prev_total_ms"] = prev_total_ms
                await websocket.send(packer.pack(reply))
                prev_total_ms = (time.monotonic() - start) * 1e3
        except websockets.ConnectionClosed:
            pass
        log.info("connection from %s closed", peer)

    # -- serving ---------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Future | None = None, ready: Callable[[int], None] | None = None) -> None:
        """Serve until ``stop`` is done (forever without it); ``ready(port)`` once the socket listens."""
        async with serve(
            self._handle,
            self.host,
            self.port,
            compression=None,
            max_size=None,
            process_request=_health_check,
        ) as server:
            self.bound_port = next(iter(server.sockets)).getsockname()[1]
            if ready is not None:
                ready(self.bound_port)
            await (stop if stop is not None else asyncio.get_running_loop().create_future())
            server.close()
            await server.wait_closed()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def serve_forever(self, ready: Callable[[int], None] | None = None) -> int:
        """Serve until SIGINT or SIGTERM; then close every connection and return the signal's number."""

        async def main() -> int:
            loop = asyncio.get_running_loop()
            stop = loop.create_future()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(int(s)))
            await self.run(stop, ready)
            return stop.result()

        return asyncio.run(main())


def _health_check(connection: ServerConnection, request) -> Any:
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None
