"""``main()`` for every node: rclpy.init, an EventsExecutor, clean shutdown.

rclpy 9.1.2's EventsExecutor busy-loops and never dispatches callbacks in
``spin()`` and in ``spin_once()`` without a timeout; every spin with a timeout
works. ``spin_forever`` is the one place that works around it.
"""
from __future__ import annotations

import sys
from typing import Callable

from recap_core.rosenv import apply_ros_environment


def run_node(factory: Callable[[], object], args: list[str] | None = None) -> int:
    """Create the node(s) with ``factory`` and spin until Ctrl-C or shutdown.

    ``factory`` returns a node or a list of nodes. A ParameterError (or any
    ValueError) while constructing is a startup error: printed, exit code 2.
    """
    import os

    if "ROS_AUTOMATIC_DISCOVERY_RANGE" not in os.environ:
        apply_ros_environment()
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.experimental import EventsExecutor

    with rclpy.init(args=sys.argv if args is None else args):
        try:
            created = factory()
        except ValueError as exc:
            print(f"[FATAL] {exc}", file=sys.stderr, flush=True)
            return 2
        nodes = created if isinstance(created, (list, tuple)) else [created]
        executor = EventsExecutor()
        for node in nodes:
            executor.add_node(node)
        try:
            spin_forever(executor)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            for node in nodes:
                close = getattr(node, "close", None)
                if close is not None:
                    close()
                node.destroy_node()
            executor.shutdown()
    return 0


def spin_forever(executor, until=None) -> None:
    """Spin ``executor`` until the context shuts down (or ``until()`` is true), always with a timeout."""
    import rclpy
    from rclpy.task import Future

    never = Future()
    context = executor.context
    while rclpy.ok(context=context) and not (until is not None and until()):
        executor.spin_until_future_complete(never, timeout_sec=0.25)
