"""``recap serve CHECKPOINT``: a policy checkpoint served over openpi's websocket protocol.

A GPU box serves the station this way; the policy node connects with its ``policy_server`` parameter, openpi's
``WebsocketClientPolicy`` connects as well (docs/nodes.md, "Remote inference"). Stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import signal
import sys
import threading

from recap_core.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=pathlib.Path, help="RECAP policy checkpoint directory")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000, openpi's; 0: any free port)")
    parser.add_argument("--device", default="cpu", help="torch device of the model: cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed for requests that carry none (default 0)")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="lower this server's CPU priority by this much (0-19; default 0), e.g. to yield the CPU to a "
        "control loop on the same machine",
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when standard input ends: for a server started by another process (the policy node's "
        "inference process), which then never outlives it",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from recap_core.models.runner import PolicyRunner
    from recap_core.serving.server import PolicyServer

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a port (0..65535)")
    if not 0 <= args.nice <= 19:
        raise UserError(f"--nice {args.nice}: give 0..19 (how much lower than its parent's CPU priority)")
    if args.nice:
        os.nice(args.nice)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: this machine has no CUDA device (use --device cpu)")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    logging.basicConfig(level=logging.INFO, format="recap serve: %(message)s", stream=sys.stderr)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        runner = PolicyRunner.from_checkpoint(args.checkpoint, seed=args.seed, device=args.device)
    except ValueError as exc:  # a value checkpoint, a config this version cannot read: one line
        raise UserError(str(exc)) from exc
    server = PolicyServer(runner, host=args.host, port=args.port)

    def ready(port: int) -> None:
        host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        print(
            f"recap serve: serving policy {runner.checkpoint_id} ({server.metadata['family']}, cameras "
            f"{list(runner.cameras)}, chunks of {server.metadata['action_horizon']}) on {args.host}:{port} "
            f"(ws://{host}:{port}) on {args.device}",
            flush=True,
        )

    if args.exit_on_stdin_eof:
        threading.Thread(target=_stop_at_stdin_eof, daemon=True).start()
    try:
        signum = server.serve_forever(ready)
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    print(f"recap serve: stopped on signal {signum} after {server.requests} requests ({server.errors} errors)")
    return 0


def _stop_at_stdin_eof() -> None:
    """Read standard input to its end (the parent closed it, or died), then stop as on SIGTERM."""
    try:  # the raw descriptor: a daemon thread blocked in sys.stdin's buffered reader aborts interpreter exit
        while os.read(0, 4096):
            pass
    except OSError:  # a closed or unreadable stdin counts as the end
        pass
    os.kill(os.getpid(), signal.SIGTERM)
