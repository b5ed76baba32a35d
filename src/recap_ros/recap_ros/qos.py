"""QoS per stream (docs/design.md §3): what sensors, commands and latched status offer and request.

Sensor subscriptions are best effort, which reliable and best-effort publishers (a camera driver with
sensor-data QoS) both match, and overridable by parameters (:func:`subscribe_sensor`); the recorder adapts
each subscription to what its publishers offer instead (:class:`AdaptedSubscriptions`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

#: what our own sensor publishers offer (sim cameras, joint_states, value/estimate): reliable, which
#: reliable and best-effort subscribers both match.
SENSOR = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
RELIABLE_10 = SENSOR
#: what sensor subscriptions request (through :func:`subscribe_sensor`): any publisher matches.
SENSOR_IN = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
#: commands: only the newest matters.
COMMAND = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
#: status a late joiner must see (episode/status, intervention, command_source, policy/status).
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

_POLICY_CHOICES = {
    "reliability": tuple(p.name.lower() for p in ReliabilityPolicy if p.name != "UNKNOWN"),
    "history": tuple(p.name.lower() for p in HistoryPolicy if p.name != "UNKNOWN"),
}


def subscribe_sensor(
    node,
    msg_type,
    topic: str,
    callback: Callable[[Any], None],
    *,
    depth: int = 10,
    reliability: ReliabilityPolicy = ReliabilityPolicy.BEST_EFFORT,
    **kwargs,
):
    """A best-effort sensor subscription whose history, depth and reliability a lab can override with
    the read-only parameters ``qos_overrides.<resolved topic>.subscription.{history,depth,reliability}``
    (rclpy's QoSOverridingOptions; declared here first so a bad value is a one-line ParameterError)."""
    from recap_ros.params import declare

    profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability)
    prefix = f"qos_overrides.{node.resolve_topic_name(topic)}.subscription"
    for policy, default in (
        ("history", profile.history.name.lower()),
        ("depth", profile.depth),
        ("reliability", profile.reliability.name.lower()),
    ):
        name = f"{prefix}.{policy}"
        if not node.has_parameter(name):  # a second subscription on the topic shares the first one's values
            declare(
                node,
                name,
                default,
                f"{policy} of the subscription to {topic}",
                choices=_POLICY_CHOICES.get(policy),
                min_value=0 if policy == "depth" else None,
                max_value=100000 if policy == "depth" else None,
            )
    return node.create_subscription(
        msg_type,
        topic,
        callback,
        profile,  # a fresh profile: rclpy writes the overrides into the one it is given
        qos_overriding_options=QoSOverridingOptions.with_default_policies(),
        **kwargs,
    )


def adapted_reliability(offered: Iterable[ReliabilityPolicy]) -> ReliabilityPolicy:
    """rosbag2's rule (Rosbag2QoS::adapt_request_to_offers): reliable when every known publisher offers
    it (or none is known yet), else best effort, which matches them all."""
    return (
        ReliabilityPolicy.RELIABLE
        if all(p == ReliabilityPolicy.RELIABLE for p in offered)
        else ReliabilityPolicy.BEST_EFFORT
    )


@dataclasses.dataclass
class _Adapted:
    msg_type: Any
    callback: Callable[[Any], None]
    raw: bool
    reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE
    subscription: Any = None


class AdaptedSubscriptions:
    """Sensor subscriptions that request what their publishers offer, so nothing is lost unseen.

    A topic is subscribed reliable while every publisher known offers reliable (rosbag2's rule), so a busy
    subscriber gets lost samples repaired; best effort as soon as one offers only that: found in the graph
    when the topic is added, or later from the subscription's incompatible-QoS event, on which the topic
    is subscribed again best effort (rosbag2 only warns, and never records that publisher). The change is
    one way: best effort still matches a reliable publisher. :meth:`status` lists the best-effort topics,
    the publishers that offered what a subscription could not match, and the messages the middleware
    reported lost on best-effort subscriptions.
    """

    def __init__(self, node, depth: int):
        self._node = node
        self._depth = int(depth)
        self._topics: dict[str, _Adapted] = {}
        self.incompatible_publishers = 0
        self.messages_lost = 0

    def add(self, msg_type, topic: str, callback: Callable[[Any], None], *, raw: bool = False) -> None:
        entry = _Adapted(msg_type, callback, raw)
        offers = self._node.get_publishers_info_by_topic(self._node.resolve_topic_name(topic))
        entry.reliability = adapted_reliability(info.qos_profile.reliability for info in offers)
        if entry.reliability == ReliabilityPolicy.BEST_EFFORT:
            self._node.get_logger().info(f"{topic}: a publisher offers best effort, subscribing best effort")
        self._topics[topic] = entry
        self._subscribe(topic, entry)

    def reliability(self, topic: str) -> ReliabilityPolicy:
        return self._topics[topic].reliability

    def status(self) -> dict[str, object]:
        best_effort = [t for t, e in self._topics.items() if e.reliability == ReliabilityPolicy.BEST_EFFORT]
        return {
            "best_effort_topics": ",".join(best_effort),
            "incompatible_publishers": self.incompatible_publishers,
            "messages_lost": self.messages_lost,
        }

    def _subscribe(self, topic: str, entry: _Adapted) -> None:
        from rclpy.event_handler import SubscriptionEventCallbacks

        profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._depth, reliability=entry.reliability)
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info: self._on_incompatible(topic, info),
            message_lost=lambda info: self._on_lost(topic, info),
        )
        entry.subscription = self._node.create_subscription(
            entry.msg_type, topic, entry.callback, profile, event_callbacks=events, raw=entry.raw
        )

    def _on_incompatible(self, topic: str, info) -> None:
        self.incompatible_publishers += int(info.total_count_change)
        entry = self._topics[topic]
        if info.last_policy_kind == QoSPolicyKind.RELIABILITY and entry.reliability == ReliabilityPolicy.RELIABLE:
            self._node.get_logger().warning(
                f"{topic}: a publisher offers best effort; subscribing again best effort, which matches every "
                "publisher (messages lost from now on are counted in messages_lost)"
            )
            entry.reliability = ReliabilityPolicy.BEST_EFFORT
            # Not from inside the subscription's own event callback: on the executor's next turn.
            timer = None

            def resubscribe() -> None:
                self._node.destroy_timer(timer)
                old, entry.subscription = entry.subscription, None
                self._subscribe(topic, entry)
                self._node.destroy_subscription(old)

            timer = self._node.create_timer(0.0, resubscribe)
        else:
            kind = getattr(info.last_policy_kind, "name", info.last_policy_kind)
            self._node.get_logger().error(
                f"{topic}: a publisher offers QoS this subscription cannot match ({kind}); its messages are "
                "not received"
            )

    def _on_lost(self, topic: str, info) -> None:
        self.messages_lost += int(info.total_count_change)
        self._node.get_logger().warning(
            f"{topic}: {info.total_count_change} message(s) lost on the best-effort subscription "
            f"({self.messages_lost} in all)",
            throttle_duration_sec=2.0,
        )
