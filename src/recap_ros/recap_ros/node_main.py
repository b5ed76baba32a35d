"""``main()`` for every node: rclpy.init, an executor, a clean stop on SIGINT and SIGTERM.

How a node stops: :class:`StopSignals`; which executor: :func:`make_executor`; why every spin has a timeout:
:func:`spin_forever` (docs/nodes.md). A node keeps the DDS settings of the environment it is started in;
``--localhost`` (or ``RECAP_LOCALHOST=1``) gives it the localhost-only ones (recap_ros.localhost).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable

from recap_ros.localhost import (
    apply_ros_environment,
    dds_settings,
    localhost_requested,
    without_localhost_flag,
)

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
    A requested stop exits 0. The first node logs the DDS settings it runs with.
    """
    from rclpy.executors import ExternalShutdownException

    args = list(sys.argv if args is None else args)
    localhost = localhost_requested(args)
    if localhost:  # before rclpy.init creates the DDS participant, which reads these variables
        apply_ros_environment()
    with RosSession(without_localhost_flag(args)) as session:
        try:
            created = factory()
        except ValueError as exc:
            print(f"[FATAL] {exc}", file=sys.stderr, flush=True)
            return 2
        session.nodes = list(created) if isinstance(created, (list, tuple)) else [created]
        session.nodes[0].get_logger().info(f"DDS settings{' (--localhost)' if localhost else ''}: {dds_settings()}")
        session.executor = make_executor()
        for node in session.nodes:
            session.executor.add_node(node)
        try:
            spin_forever(session.executor, until=session.stop.is_set)
        except ExternalShutdownException:
            pass
        return 0


def events_executor_runs_coroutines() -> bool:
    """Whether rclpy's EventsExecutor is there and runs ``async def`` service and subscription callbacks.

    Jazzy's (rclpy 7.1.6) exists but hands a coroutine callback's unawaited result to the service and raises
    TypeError out of spin (ros2/rclpy#1473); the fix (#1478) came in the same releases as
    ``Executor.create_future`` (#1495), so that method marks an EventsExecutor that has it.
    test_jazzy_executor.py checks this against the behaviour on each distro CI runs.
    """
    try:
        from rclpy.experimental import events_executor
    except ImportError:
        return False
    implementation = getattr(getattr(events_executor, "_rclpy", None), "EventsExecutor", None)
    return implementation is not None and hasattr(implementation, "create_future")


def make_executor(context=None):
    """An EventsExecutor where it runs coroutine callbacks (~7x the callbacks/s of the others), otherwise a
    SingleThreadedExecutor (callback groups then matter: see the episode manager's reset group)."""
    if events_executor_runs_coroutines():
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    from rclpy.executors import SingleThreadedExecutor

    return SingleThreadedExecutor(context=context)


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
    ``spin_once()`` without a timeout; every spin with a timeout works (and costs nothing with the
    SingleThreadedExecutor). This is the one place that works around it.
    """
    import rclpy
    from rclpy.task import Future

    never = Future()
    context = executor.context
    while rclpy.ok(context=context) and not (until is not None and until()):
        executor.spin_until_future_complete(never, timeout_sec=0.25)
