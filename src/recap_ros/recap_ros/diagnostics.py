"""Every node's entries on ``/diagnostics``, with diagnostic_updater's conventions (:class:`Diagnostics`).

diagnostic_updater is not on PyPI for either distro, so this is the part of it the nodes use: one
DiagnosticArray per period (parameter ``diagnostic_updater.period``, default 1 s) on the absolute topic
``/diagnostics`` (depth 1, reliable), one DiagnosticStatus per task named ``"<node>: <task>"``. The node is its
fully qualified name (the updater's ``use_fqn``), so stations under different namespaces stay apart on the one
``/diagnostics`` topic that rqt_robot_monitor and diagnostic_aggregator read.
"""

from __future__ import annotations

import threading
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from recap_ros.conversions import diagnostic
from recap_ros.params import declare

OK, WARN, ERROR, STALE = 0, 1, 2, 3
DIAGNOSTICS_TOPIC = "/diagnostics"
PERIOD_PARAMETER = "diagnostic_updater.period"
DEFAULT_PERIOD_S = 1.0


def level_of(status: DiagnosticStatus) -> int:
    """The level as an int (rclpy gives the ``byte`` field as ``bytes``)."""
    level = status.level
    return int.from_bytes(level, "little") if isinstance(level, (bytes, bytearray)) else int(level)


class StatusMirror:
    """A node's own status publisher whose newest message is also one of its ``/diagnostics`` tasks.

    Everything but ``publish`` goes to the wrapped publisher.
    """

    def __init__(self, publisher, record: Callable[[DiagnosticStatus], None]):
        self._publisher = publisher
        self._record = record

    def publish(self, msg: DiagnosticStatus) -> None:
        self._record(msg)
        self._publisher.publish(msg)

    def __getattr__(self, name):
        return getattr(self._publisher, name)


class Diagnostics:
    """The ``/diagnostics`` publisher of one node (create it with the node's other publishers).

    A task is a function returning the task's current DiagnosticStatus (:meth:`add`), or the newest message
    of one of the node's status topics (:meth:`mirror`); its level and message are the task's, its name
    becomes ``"<node fqn>: <task>"`` and an empty hardware_id becomes ``hardware_id`` ("none" where there is
    no hardware, as diagnostic_updater asks). A task that raises is reported at ERROR with the exception and
    counted in ``task_errors``; the others are still published. Before its first message a mirrored task is
    reported at STALE.
    """

    def __init__(self, node, hardware_id: str = "", period_s: float = DEFAULT_PERIOD_S):
        self.node = node
        self.period_s = declare(
            node,
            PERIOD_PARAMETER,
            float(period_s),
            "seconds between two DiagnosticArrays on /diagnostics (diagnostic_updater's parameter)",
            min_value=0.05,
            max_value=60.0,
        )
        self.prefix = node.get_fully_qualified_name()
        self.hardware_id = hardware_id or "none"
        self.task_errors = 0
        self._lock = threading.Lock()
        self._tasks: dict[str, Callable[[], DiagnosticStatus]] = {}
        self._mirrored: dict[str, DiagnosticStatus | None] = {}
        self._publisher = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 1)
        self._timer = node.create_timer(self.period_s, self.update)

    def name_of(self, task: str) -> str:
        return f"{self.prefix}: {task}"

    def add(self, task: str, status: Callable[[], DiagnosticStatus]) -> None:
        """Report ``status()`` as ``task`` at every period."""
        with self._lock:
            self._tasks[task] = status

    def mirror(self, publisher, task: str = "status") -> StatusMirror:
        """``publisher`` (of DiagnosticStatus), wrapped so its newest message is also reported as ``task``."""
        with self._lock:
            self._mirrored[task] = None

        def record(msg: DiagnosticStatus) -> None:
            with self._lock:
                self._mirrored[task] = msg

        return StatusMirror(publisher, record)

    def statuses(self) -> list[DiagnosticStatus]:
        """One DiagnosticStatus per task, as the next update publishes them."""
        with self._lock:
            tasks = dict(self._tasks)
            mirrored = dict(self._mirrored)
        out = []
        for task, msg in mirrored.items():
            if msg is None:
                msg = diagnostic(task, {}, level=STALE, message="no status published yet")
            out.append(self._entry(task, msg))
        for task, fn in tasks.items():
            try:
                msg = fn()
            except Exception as exc:  # a broken task must not silence the others
                self.task_errors += 1
                self.node.get_logger().error(
                    f"diagnostics task '{task}' failed ({self.task_errors} so far): {exc}", throttle_duration_sec=10.0
                )
                msg = diagnostic(task, {}, level=ERROR, message=f"diagnostics task failed: {exc}")
            out.append(self._entry(task, msg))
        return out

    def _entry(self, task: str, msg: DiagnosticStatus) -> DiagnosticStatus:
        entry = DiagnosticStatus()
        entry.level = msg.level
        entry.name = self.name_of(task)
        entry.message = msg.message
        entry.hardware_id = msg.hardware_id or self.hardware_id
        entry.values = [KeyValue(key=kv.key, value=kv.value) for kv in msg.values]
        return entry

    def update(self) -> None:
        """Publish every task now (the timer calls this once per period)."""
        array = DiagnosticArray()
        array.header.stamp = self.node.get_clock().now().to_msg()
        array.status = self.statuses()
        try:
            self._publisher.publish(array)
        except Exception as exc:  # shutting down, or a flooded reliable writer: the next period tries again
            if self.node.context.ok():
                self.node.get_logger().warning(f"/diagnostics publish failed: {exc}", throttle_duration_sec=10.0)
