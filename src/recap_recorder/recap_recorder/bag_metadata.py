"""What a bag's ``metadata.yaml`` ``custom_data`` says about its episode, and how its topics are named.

The labels and custom_data keys (DESIGN.md §6) the recorder writes (:func:`episode_custom_data`)
and repair rebuilds; topic names relative to the station namespace; camera names and the
namespace of a bag recorded without them in its metadata. Pure: no files, no ROS.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Mapping

EPISODE_STATUS = "episode/status"
TERMINAL_STATES = ("success", "failure", "aborted")
UNKNOWN_LABEL = "unknown"  # the episode did not reach a terminal state while recorded
#: The label of an episode whose recording was stopped before it ended (the converter skips it unless asked).
ABORTED_LABEL = "aborted"
#: custom_data keys copied from ``episode/status`` (DESIGN.md §6).
METADATA_KEYS = (
    "episode_id",
    "task",
    "source",
    "policy_checkpoint",
    "beta",
    "station",
    "operator",
    "seed",
    "start_time",
    "stop_time",
    "steps",
    "interventions",
    "intervention_steps",
)


def resolve_topic(name: str, namespace: str) -> str:
    """The absolute name a relative topic has in ``namespace`` (what `ros2 bag record` stores)."""
    if name.startswith("/"):
        return name
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{namespace}/{name}"


def episode_custom_data(
    start: Mapping[str, str],
    end: Mapping[str, str],
    *,
    label: str,
    reason: str,
    station: str,
    namespace: str,
    cameras,
    partial_start: bool,
    joint_names=(),
    gripper_joints=(),
    received: Mapping[str, int],
    overflows: Mapping[str, int],
) -> dict[str, str]:
    """DESIGN.md §6 episode metadata for ``metadata.yaml`` ``custom_data`` (all strings).

    Values come from the final ``episode/status`` when it is about this episode,
    else from the one that started it; ``received``/``overflows`` are the recorder's
    per-topic counters for the episode.
    """
    same = end.get("episode_id") == start.get("episode_id") and end.get("state") in TERMINAL_STATES
    source = end if same else start
    data = {key: str(source.get(key, "") or start.get(key, "")) for key in METADATA_KEYS}
    data["station"] = data["station"] or station
    if not data["stop_time"]:
        data["stop_time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    data.update(
        {
            "label": label,
            "stop_reason": reason,
            "partial_start": str(partial_start).lower(),
            "repaired": "false",
            "namespace": namespace,
            "cameras": ",".join(cameras),
            "recorder_received": json.dumps(dict(received), sort_keys=True),
            "recorder_dropped": str(sum(overflows.values())),
            "recorder_queue_overflows": json.dumps(dict(overflows), sort_keys=True),
        }
    )
    if joint_names:  # the station's layout: the converter reads it instead of asking for --station
        data["joint_names"] = ",".join(joint_names)
        data["gripper_joints"] = ",".join(gripper_joints)
    return data


def relative_topic_name(relative: str, namespace: str) -> str:
    return resolve_topic(relative, namespace)


_CAMERA_TOPIC = re.compile(r"(?:^|/)camera/(?P<camera>[^/]+)/image_raw(?:/compressed)?$")


def bag_cameras(topics) -> tuple[str, ...]:
    """Camera names of the ``camera/<cam>/image_raw`` topics (raw or ``/compressed``), in first-seen order."""
    found = (_CAMERA_TOPIC.search(t) for t in topics)
    return tuple(dict.fromkeys(m["camera"] for m in found if m))


def guess_namespace(names) -> str:
    """The namespace of a bag recorded without one in its metadata: where episode/status lives."""
    for name in names:
        if name.endswith("/" + EPISODE_STATUS):
            return name[: -len(EPISODE_STATUS) - 1] or "/"
    return "/"
