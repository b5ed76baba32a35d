"""An in-process probe node in a private rclpy context, spun on a background thread.

Used by tests and benchmarks to subscribe, publish, call services and set
parameters of nodes running as separate processes.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile

from recap_ros.qos import LATCHED, RELIABLE_10
from recap_ros.testing.procs import session_domain_id


class Collector:
    """Messages of one subscription with their receive times (monotonic seconds)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.messages: list[Any] = []
        self.stamps: list[float] = []

    def __call__(self, msg) -> None:
        with self._lock:
            self.messages.append(msg)
            self.stamps.append(time.monotonic())

    def __len__(self) -> int:
        return len(self.messages)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.stamps.clear()

    def snapshot(self) -> tuple[list[Any], list[float]]:
        with self._lock:
            return list(self.messages), list(self.stamps)

    def last(self):
        with self._lock:
            return self.messages[-1] if self.messages else None

    def wait_for(self, count: int = 1, timeout: float = 10.0, predicate: Callable[[Any], bool] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                msgs = self.messages if predicate is None else [m for m in self.messages if predicate(m)]
                if len(msgs) >= count:
                    return True
            time.sleep(0.01)
        return False


class ArrivalCollector(Collector):
    """A :class:`Collector` that also keeps each message's arrival at the middleware (rmw's
    ``received_timestamp``, system-clock seconds, in ``arrivals``): when the sample reached this process's
    reader, before the executor took it, so this process's own Python work does not blur the timing."""

    def __init__(self):
        super().__init__()
        self.arrivals: list[float] = []

    def __call__(self, msg, info) -> None:
        with self._lock:
            self.messages.append(msg)
            self.stamps.append(time.monotonic())
            self.arrivals.append(info["received_timestamp"] * 1e-9)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.stamps.clear()
            self.arrivals.clear()

    def timed_snapshot(self) -> tuple[list[Any], list[float], list[float]]:
        """Messages, receive times (monotonic) and arrival times (system clock), consistent with each other."""
        with self._lock:
            return list(self.messages), list(self.stamps), list(self.arrivals)


class Probe:
    """A node for tests: subscribe, publish, call services, in its own context."""

    RELIABLE_10 = RELIABLE_10
    LATCHED = LATCHED

    def __init__(self, name: str = "test_probe", namespace: str = "", domain_id: int | None = None):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=session_domain_id() if domain_id is None else domain_id)
        self.node = Node(name, namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # context shut down while spinning
            pass

    def subscribe(self, msg_type, topic: str, qos: QoSProfile = RELIABLE_10, arrivals: bool = False) -> Collector:
        """Collect ``topic``; ``arrivals``: an :class:`ArrivalCollector`, with the middleware's arrival times."""
        collector = ArrivalCollector() if arrivals else Collector()
        self.node.create_subscription(msg_type, topic, collector, qos)
        return collector

    def publisher(self, msg_type, topic: str, qos: QoSProfile = RELIABLE_10):
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if publisher.get_subscription_count() >= count:
                return True
            time.sleep(0.02)
        return False

    def call(self, srv_type, name: str, request=None, timeout: float = 10.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available after {timeout} s")
            future = client.call_async(request if request is not None else srv_type.Request())
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"service {name} did not answer in {timeout} s")
                time.sleep(0.01)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node_fqn: str, values: dict, timeout: float = 10.0):
        """Set parameters of another node through its standard parameter service."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request()
        request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return self.call(SetParameters, f"{node_fqn}/set_parameters", request, timeout).results

    def parameters(self, node_fqn: str, timeout: float = 10.0) -> dict:
        """``{name: (value, ParameterDescriptor)}`` of every parameter of another node."""
        from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters
        from rclpy.parameter import parameter_value_to_python

        names = list(self.call(ListParameters, f"{node_fqn}/list_parameters", timeout=timeout).result.names)
        values = self.call(
            GetParameters, f"{node_fqn}/get_parameters", GetParameters.Request(names=names), timeout
        ).values
        descriptors = self.call(
            DescribeParameters, f"{node_fqn}/describe_parameters", DescribeParameters.Request(names=names), timeout
        ).descriptors
        return {n: (parameter_value_to_python(v), d) for n, v, d in zip(names, values, descriptors)}

    def get_parameter(self, node_fqn: str, name: str, timeout: float = 10.0):
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        values = self.call(
            GetParameters, f"{node_fqn}/get_parameters", GetParameters.Request(names=[name]), timeout
        ).values
        return parameter_value_to_python(values[0])

    def close(self) -> None:
        if self.context.ok():
            self.node.destroy_node()
            rclpy.shutdown(context=self.context)
        self._thread.join(timeout=2)

    def __enter__(self) -> "Probe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StationFeeder:
    """A fake station on the probe: camera images and joint states at ``rate_hz`` from a thread.

    ``stamp_offset_s`` shifts every stamp (stale or future data), ``running``
    pauses every stream; :meth:`publish_once` sends one round with any offset.
    """

    def __init__(
        self,
        probe: Probe,
        cameras=("base", "left_wrist", "right_wrist"),
        size: int = 64,
        rate_hz: float = 50.0,
        joints=None,
    ):
        import numpy as np
        from sensor_msgs.msg import Image, JointState

        self._np = np
        self.probe = probe
        self.cameras = tuple(cameras)
        self._image_pubs = {c: probe.publisher(Image, f"camera/{c}/image_raw") for c in self.cameras}
        self._joint_pub = probe.publisher(JointState, "joint_states")
        self.image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
        self.joints = np.zeros(14) if joints is None else np.asarray(joints, dtype=np.float64)
        self.period = 1.0 / rate_hz
        self.stamp_offset_s = 0.0
        self.running = threading.Event()
        self.running.set()
        self.rounds = 0
        self.last_round_at = float("nan")  # monotonic time of the newest round
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def publish_once(self, stamp_offset_s: float | None = None) -> None:
        from recap_ros.conversions import joint_state, seconds_to_stamp
        from recap_ros.images import numpy_to_image

        offset = self.stamp_offset_s if stamp_offset_s is None else stamp_offset_s
        stamp = seconds_to_stamp(self.probe.node.get_clock().now().nanoseconds * 1e-9 + offset)
        for pub in self._image_pubs.values():
            pub.publish(numpy_to_image(self.image, stamp))
        self._joint_pub.publish(joint_state(self.joints, stamp=stamp))
        self.rounds += 1
        self.last_round_at = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.running.is_set():
                self.publish_once()
            time.sleep(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def latest_diagnostic(collector: Collector, timeout: float = 5.0, predicate=None) -> dict:
    """The key-values of the newest DiagnosticStatus in ``collector`` (matching ``predicate``), with its
    ``level`` as an int; waits up to ``timeout`` for one."""
    from recap_ros.conversions import diagnostic_values

    assert collector.wait_for(1, timeout=timeout, predicate=predicate), "no matching status message"
    msgs = [m for m in collector.snapshot()[0] if predicate is None or predicate(m)]
    return {**diagnostic_values(msgs[-1]), "level": int.from_bytes(msgs[-1].level, "little")}
