"""``main()`` for every node: rclpy.init, an EventsExecutor, a clean stop on SIGINT and SIGTERM.

How a node stops: :class:`StopSignals`; why every spin has a timeout: :func:`spin_forever` (docs/nodes.md).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable

from recap_ros.localhost import apply_ros_environment

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """A stop request set by SIGINT or SIGTERM (install from the main thread).

    rclpy's own signal handlers are not installed: the first SIGINT or SIGTERM becomes a stop request, so the
    main thread leaves its loop, every node's ``close()`` runs (threads joined, an open bag finished) and the
    process exits 0 without a traceback. A second signal of the same kind ends the process the default way.
    """

    def __init__(self):
        self.event = threading.Event()
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "StopSignals":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.received = signum
        self.event.set()
        signal.signal(signum, signal.SIG_DFL)  # a second one is not ignored

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def is_set(self) -> bool:
        return self.event.is_set()


def init_ros(args: list[str] | None) -> None:
    """``rclpy.init`` of the default context without rclpy's signal handlers (the caller owns SIGINT/SIGTERM)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)


class RosSession:
    """rclpy for the length of a ``with`` block, stopped by SIGINT or SIGTERM (``stop``).

    Whatever ends the block, the nodes added to ``nodes`` are closed and destroyed, ``executor`` (if set) is
    shut down, rclpy is shut down and the previous signal handlers come back.
    """

    def __init__(self, args: list[str] | None):
        self.args = args
        self.stop = StopSignals()
        self.nodes: list = []
        self.executor = None

    def __enter__(self) -> "RosSession":
        self.stop.install()
        init_ros(self.args)
        return self

    def __exit__(self, *exc) -> None:
        import rclpy

        close_nodes(self.nodes)
        if self.executor is not None:
            self.executor.shutdown()
        rclpy.try_shutdown()
        self.stop.restore()


def run_node(factory: Callable[..., object], args: list[str] | None = None) -> int:
    """Create the node(s) with ``factory`` and spin until SIGINT, SIGTERM or shutdown.

    ``factory`` returns a node or a list of nodes. A ParameterError (or any
    ValueError) while constructing is a startup error: printed, exit code 2.
    A requested stop exits 0.
    """
    import os

    if "ROS_AUTOMATIC_DISCOVERY_RANGE" not in os.environ:
        apply_ros_environment()
    from rclpy.executors import ExternalShutdownException
    from rclpy.experimental import EventsExecutor

    with RosSession(sys.argv if args is None else args) as session:
        try:
            created = factory()
        except ValueError as exc:
            print(f"[FATAL] {exc}", file=sys.stderr, flush=True)
            return 2
        session.nodes = list(created) if isinstance(created, (list, tuple)) else [created]
        session.executor = EventsExecutor()
        for node in session.nodes:
            session.executor.add_node(node)
        try:
            spin_forever(session.executor, until=session.stop.is_set)
        except ExternalShutdownException:
            pass
        return 0


def close_nodes(nodes) -> None:
    """``close()`` (where a node has one), then ``destroy_node()``, each node once, never raising."""
    for node in nodes:
        close = getattr(node, "close", None)
        try:
            if close is not None:
                close()
        except Exception as exc:  # one node failing to close must not keep the others open
            print(f"[ERROR] closing {getattr(node, 'get_name', lambda: node)()}: {exc}", file=sys.stderr)
    for node in nodes:
        try:
            node.destroy_node()
        except Exception:
            pass


def spin_forever(executor, until=None) -> None:
    """Spin ``executor`` until the context shuts down (or ``until()`` is true), always with a timeout.

    rclpy 9.1.2's EventsExecutor busy-loops and never dispatches callbacks in ``spin()`` and in
    ``spin_once()`` without a timeout; every spin with a timeout works. This is the one place that works
    around it.
    """
    import rclpy
    from rclpy.task import Future

    never = Future()
    context = executor.context
    while rclpy.ok(context=context) and not (until is not None and until()):
        executor.spin_until_future_complete(never, timeout_sec=0.25)
