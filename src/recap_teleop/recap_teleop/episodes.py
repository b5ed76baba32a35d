"""Episode bookkeeping as plain Python: states, labels, counters, ids (DESIGN.md §5).

``idle -> running -> (success | failure | aborted) -> idle``. The operator (or,
in sim, :func:`auto_label`) ends a running episode; the node publishes the
terminal state so the recorder can close the bag, then returns to idle. No ROS
here: the node (``episode_manager_node.py``) passes time and messages in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Mapping

IDLE, RUNNING, SUCCESS, FAILURE, ABORTED = "idle", "running", "success", "failure", "aborted"
STATES = (IDLE, RUNNING, SUCCESS, FAILURE, ABORTED)
TERMINAL = (SUCCESS, FAILURE, ABORTED)
EPISODE_SOURCES = ("demo", "rollout", "eval")

#: Keys of the ``episode/status`` diagnostic, in publishing order.
STATUS_KEYS = (
    "episode_id",
    "task",
    "state",
    "label",
    "steps",
    "interventions",
    "intervention_steps",
    "source",
    "policy_checkpoint",
    "beta",
    "station",
    "operator",
    "seed",
    "start_time",
    "stop_time",
    "reason",
    "last_episode_id",
    "last_label",
)


class EpisodeError(ValueError):
    """A request that is invalid in the current state; the text is the answer to the operator."""


@dataclasses.dataclass(frozen=True)
class EpisodeSettings:
    """What is fixed when an episode starts (parameters snapshot + the sim seed)."""

    task: str
    source: str = "rollout"
    operator: str = ""
    policy_checkpoint: str = ""
    beta: str = ""
    seed: str = ""

    def __post_init__(self):
        if not self.task.strip():
            raise EpisodeError(
                "no task set: set the episode manager's `task` parameter (the task prompt) before starting an episode"
            )
        if self.source not in EPISODE_SOURCES:
            raise EpisodeError(f"episode source '{self.source}' is not one of {list(EPISODE_SOURCES)}")


@dataclasses.dataclass
class Episode:
    episode_id: str
    settings: EpisodeSettings
    start_time: dt.datetime
    state: str = RUNNING
    stop_time: dt.datetime | None = None
    steps: int = 0
    interventions: int = 0
    intervention_steps: int = 0
    reason: str = ""

    @property
    def label(self) -> str:
        return self.state if self.state in TERMINAL else ""


class EpisodeStateMachine:
    """One station's episodes, one at a time."""

    def __init__(self, station_name: str):
        if not station_name:
            raise ValueError("station_name must not be empty: it goes into every episode id")
        self.station_name = station_name
        self.episode: Episode | None = None  # the running or just-finished episode
        self.last: Episode | None = None  # the previous finished episode (shown while idle)
        self._count = 0
        self._intervention = False  # the newest `intervention` flag, across episodes

    @property
    def state(self) -> str:
        return self.episode.state if self.episode is not None else IDLE

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def new_episode_id(self, now: dt.datetime) -> str:
        """``<station>-<YYYYmmdd-HHMMSS>-<nnnn>`` (UTC): unique, and sorts in start order."""
        return f"{self.station_name}-{now.astimezone(dt.timezone.utc):%Y%m%d-%H%M%S}-{self._count + 1:04d}"

    # -- transitions ------------------------------------------------------------------------------
    def check_can_start(self) -> None:
        if self.state == RUNNING:
            raise EpisodeError(
                f"episode {self.episode.episode_id} is still running: label it "
                "(episode/success, episode/failure) or abort it first"
            )
        if self.state in TERMINAL:
            raise EpisodeError(
                f"episode {self.episode.episode_id} just ended ({self.state}); wait until "
                "episode/status says idle, then start again"
            )

    def start(self, settings: EpisodeSettings, now: dt.datetime) -> Episode:
        self.check_can_start()
        episode_id = self.new_episode_id(now)
        self._count += 1
        self.episode = Episode(episode_id, settings, now)
        if self._intervention:  # the episode starts with the human already in control
            self.episode.interventions = 1
        return self.episode

    def finish(self, outcome: str, now: dt.datetime, reason: str = "") -> Episode:
        if outcome not in TERMINAL:
            raise ValueError(f"outcome must be one of {list(TERMINAL)}, got {outcome!r}")
        if self.state != RUNNING:
            verb = {SUCCESS: "label success", FAILURE: "label failure", ABORTED: "abort"}[outcome]
            if self.state == IDLE:
                raise EpisodeError(f"cannot {verb}: no episode is running (state idle); call episode/start first")
            raise EpisodeError(f"cannot {verb}: episode {self.episode.episode_id} already ended ({self.state})")
        self.episode.state = outcome
        self.episode.stop_time = now
        self.episode.reason = reason
        return self.episode

    def to_idle(self) -> None:
        if self.state not in TERMINAL:
            raise EpisodeError(f"only a finished episode goes back to idle (state {self.state})")
        self.last, self.episode = self.episode, None

    # -- counters -------------------------------------------------------------------------------
    def on_step(self) -> None:
        if self.running:
            self.episode.steps += 1
            if self._intervention:
                self.episode.intervention_steps += 1

    def on_intervention(self, flag: bool) -> None:
        rising = bool(flag) and not self._intervention
        self._intervention = bool(flag)
        if rising and self.running:
            self.episode.interventions += 1

    # -- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, str]:
        """The ``episode/status`` key-values (all strings)."""
        values = dict.fromkeys(STATUS_KEYS, "")
        values.update(state=self.state, station=self.station_name)
        if self.last is not None:
            values.update(last_episode_id=self.last.episode_id, last_label=self.last.label)
        e = self.episode
        if e is not None:
            s = e.settings
            values.update(
                episode_id=e.episode_id,
                task=s.task,
                label=e.label,
                steps=str(e.steps),
                interventions=str(e.interventions),
                intervention_steps=str(e.intervention_steps),
                source=s.source,
                policy_checkpoint=s.policy_checkpoint,
                beta=s.beta,
                operator=s.operator,
                seed=s.seed,
                start_time=_iso(e.start_time),
                stop_time=_iso(e.stop_time) if e.stop_time else "",
                reason=e.reason,
            )
        return values


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


def _true(value: str | None) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def auto_label(episode: Episode, max_steps: int, sim_status: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The sim's verdict on a running episode: ``(outcome, reason)`` or None to keep going.

    Success when the sim reports it; failure when the sim reports truncation or
    the episode reaches ``max_steps`` (0 = no limit) by its own step count or the
    sim's. A ``sim/status`` from another seed (the world before the reset) is ignored.
    """
    sim_step = 0
    if sim_status is not None:
        seed = episode.settings.seed
        if seed and sim_status.get("seed", seed) != seed:
            return None
        try:
            sim_step = int(sim_status.get("step", 0))
        except ValueError:
            sim_step = 0
        if _true(sim_status.get("success")):
            return SUCCESS, f"sim reported success at step {sim_step}"
        if _true(sim_status.get("truncated")):
            return FAILURE, f"sim time limit (truncated) at step {sim_step}"
    steps = max(episode.steps, sim_step)
    if max_steps > 0 and steps >= max_steps:
        return FAILURE, f"time limit: {steps} steps >= max_episode_steps {max_steps}"
    return None
