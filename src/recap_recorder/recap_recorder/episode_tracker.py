"""Episode boundaries: which episode is being recorded, and when a bag starts and stops.

:class:`EpisodeTracker` turns the stream of ``episode/status`` key-values into :class:`StartBag`
and :class:`StopBag` actions with the bag's label (pure: no files, no threads). See
docs/recording.md, "Episodes", for the rules.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Mapping

from recap_recorder.bag_metadata import TERMINAL_STATES, UNKNOWN_LABEL


@dataclasses.dataclass(frozen=True)
class StartBag:
    episode_id: str
    status: Mapping[str, str]
    partial_start: bool  # the recorder joined an episode already under way


@dataclasses.dataclass(frozen=True)
class StopBag:
    episode_id: str
    status: Mapping[str, str]
    label: str  # success | failure | aborted | unknown
    reason: str


class EpisodeTracker:
    """Turns the stream of ``episode/status`` key-values into bag starts and stops (pure)."""

    def __init__(self, remember: int = 1000):
        self.recording: str | None = None
        self._done: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remember = remember
        self._seen_any = False

    def _finish(self, episode_id: str) -> None:
        self._done[episode_id] = None
        while len(self._done) > self._remember:
            self._done.popitem(last=False)

    def refuse(self, episode_id: str) -> None:
        """The episode was not recorded (disk full): never start it later half-way."""
        if self.recording == episode_id:
            self.recording = None
        self._finish(episode_id)

    def update(self, status: Mapping[str, str]) -> list[StartBag | StopBag]:
        first = not self._seen_any
        self._seen_any = True
        state, episode_id = status.get("state", ""), status.get("episode_id", "")
        actions: list[StartBag | StopBag] = []
        current = self.recording
        if current is not None:
            if state in TERMINAL_STATES and episode_id == current:
                actions.append(StopBag(current, status, state, f"episode ended: {state}"))
            elif state == "running" and episode_id != current:
                actions.append(
                    StopBag(current, status, UNKNOWN_LABEL, f"episode {episode_id} started before {current} ended")
                )
            elif state == "idle" or (state in TERMINAL_STATES and episode_id != current):
                last_label = status.get("last_label", "")
                if status.get("last_episode_id") == current and last_label in TERMINAL_STATES:
                    actions.append(StopBag(current, status, last_label, f"episode ended: {last_label}"))
                else:
                    actions.append(
                        StopBag(
                            current,
                            status,
                            UNKNOWN_LABEL,
                            f"episode manager went {state} without a label for {current}",
                        )
                    )
            if actions:
                self.recording = None
                self._finish(current)
        if state == "running" and episode_id and self.recording is None and episode_id not in self._done:
            partial = first and _int(status.get("steps")) > 0
            actions.append(StartBag(episode_id, status, partial))
            self.recording = episode_id
        return actions


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
