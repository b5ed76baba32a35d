"""The base of the model-serving nodes (policy, value): the checkpoint, the observations, episodes.

:class:`ModelServingNode` owns what both nodes share; :func:`checkpoint_problem` is the station check of a
checkpoint (docs/nodes.md).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from recap_core.errors import one_line
from recap_core.layout import model_problem as layout_model_problem
from recap_core.station import StationConfig
from recap_ros import qos
from recap_ros.conversions import MessageError, diagnostic_values
from recap_ros.observation import FutureStampError, ObservationBuffer
from recap_ros.params import ParameterError, declare, declare_station


def model_problem(kind: str, model_config: Any, training_config: dict, station: StationConfig) -> str:
    """Why a checkpoint of ``kind`` with this config cannot run on ``station`` ('' if it can)."""
    return layout_model_problem(kind, model_config, training_config, station.layout)


def checkpoint_problem(path: str, kind: str, station: StationConfig) -> str:
    """Why the checkpoint directory ``path`` cannot be served as ``kind`` on ``station`` ('' if it can).

    It must be the right kind, read only cameras the station has, have a state (and action) size equal to the
    station's joint count and the same joint names and gripper joints where it records them. Only
    ``config.json`` is read, so a runtime ``checkpoint`` change is refused at once, before any weights load.
    """
    from recap_core.checkpoint import check_directory, read_config

    if not path:
        return "no checkpoint given"
    try:
        check_directory(path)
        found, model_config, training_config = read_config(path)
    except Exception as exc:  # CheckpointError, OSError, JSON errors: all one line for the operator
        return one_line(exc)
    if found != kind:
        return one_line(f"{path} is a {found} checkpoint, a {kind} one is needed")
    problem = model_problem(kind, model_config, training_config, station)
    return one_line(f"{path}: {problem}") if problem else ""


def load_runner(kind: str, path: str, *, threads: int, seed: int = 0):
    """A ``PolicyRunner`` or ``ValueRunner`` for checkpoint ``path`` (torch is imported here, on first load)."""
    import torch

    torch.set_num_threads(int(threads))
    from recap_core.models import PolicyRunner, ValueRunner

    if kind == "policy":
        return PolicyRunner.from_checkpoint(path, seed=seed)
    return ValueRunner.from_checkpoint(path)


class ModelServingNode(Node):
    """A node that runs a checkpoint of ``KIND`` on the newest observation of the station.

    It owns the station description, the ``checkpoint`` parameter with its station check and background hot
    reload, ``max_observation_age_ms``, ``future_stamp_tolerance_ms``, ``task`` and ``inference_threads``; the
    camera, ``joint_states`` and ``episode/status`` subscriptions feeding an
    :class:`~recap_ros.observation.ObservationBuffer` (bad messages logged and counted); the restart on a new
    episode; the worker threads and their stop. A subclass adds its own parameters, publishers and threads
    and implements the hooks.
    """

    KIND = ""  # "policy" | "value"

    def __init__(self, name: str, *, max_age_ms: float, threads: int, **kwargs):
        super().__init__(name, **kwargs)
        self.station = declare_station(self)
        self.checkpoint = declare(
            self,
            "checkpoint",
            "",
            f"{self.KIND} checkpoint directory (empty: none); a change hot-reloads",
            on_change=self._set_checkpoint,
            validate=self._check_checkpoint,
        )
        self.max_age = (
            declare(
                self,
                "max_observation_age_ms",
                max_age_ms,
                "never use observations older than this (ms)",
                min_value=1.0,
                max_value=10000.0,
                on_change=lambda v: setattr(self, "max_age", v / 1e3),
            )
            / 1e3
        )
        future_ms = declare(
            self,
            "future_stamp_tolerance_ms",
            50.0,
            "refuse observations stamped further ahead of the node clock than this (ms)",
            min_value=0.0,
            max_value=10000.0,
        )
        self.default_task = declare(
            self,
            "task",
            "",
            "task prompt until episode/status gives one (a change applies at once)",
            on_change=self._set_task,
        )
        self.threads = declare(
            self, "inference_threads", threads, "torch threads for inference", min_value=1, max_value=64
        )
        self.seed = 0  # the sampling seed a runner starts from (the policy node declares it as a parameter)
        self._runner = None
        self._checkpoint_id = ""
        self._load_error = ""
        self._task = self.default_task
        self._episode_id: str | None = None
        self._observations = ObservationBuffer(
            self.station.cameras, self.station.joint_names, clock=self.now_s, future_tolerance_s=future_ms / 1e3
        )
        self.counters: dict[str, int] = {
            "rejected_images": 0,
            "rejected_states": 0,
            "future_stamps": 0,
            "refused_checkpoints": 0,
        }
        self._running = True
        self._threads: list[threading.Thread] = []

    # -- to be called by the subclass --------------------------------------------------------------
    def start_serving(self) -> None:
        """Load the checkpoint and subscribe (call once the subclass's publishers exist)."""
        self._load(self.checkpoint)
        for cam in self.station.cameras:
            qos.subscribe_sensor(self, Image, f"camera/{cam}/image_raw", lambda m, c=cam: self._on_image(c, m))
        qos.subscribe_sensor(self, JointState, "joint_states", self._on_joints)
        self.create_subscription(DiagnosticStatus, "episode/status", self._on_episode, qos.LATCHED)

    def start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def now_s(self) -> float:
        """The node clock in seconds (the observations' stamp time base)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def observation(self) -> tuple[dict | None, str]:
        """The newest usable observation, or None and why not."""
        return self._observations.latest(self.now_s(), self.max_age, self._task)

    @property
    def runner(self):
        return self._runner

    @property
    def model_error(self) -> str:
        """Why no model runs ('' while one does)."""
        return "" if self._runner is not None else (self._load_error or f"no {self.KIND} checkpoint loaded")

    @property
    def load_error(self) -> str:
        """The last checkpoint error ('' after a successful load): the status reports it at level ERROR."""
        return self._load_error

    # -- hooks -------------------------------------------------------------------------------------
    def on_model(self, runner, path: str) -> None:
        """A new model was loaded and swapped in."""

    def on_model_error(self, message: str) -> None:
        """A checkpoint was refused or failed to load (``load_error`` says why)."""

    def on_episode(self, episode_id: str) -> None:
        """A new episode began (the observations were restarted)."""

    def on_joints(self) -> None:
        """A valid joint state arrived."""

    def open_runner(self, path: str):
        """The runner for ``path`` (a subclass may serve from elsewhere: the policy node's ``policy_server``)."""
        return load_runner(self.KIND, path, threads=self.threads, seed=self.seed)

    # -- checkpoint -------------------------------------------------------------------------------
    def _check_checkpoint(self, path: str) -> None:
        problem = checkpoint_problem(path, self.KIND, self.station) if path else ""
        if problem:
            self.counters["refused_checkpoints"] += 1
            self._load_error = f"refused checkpoint {path}: {problem}; still running {self._checkpoint_id or 'none'}"
            self.get_logger().error(self._load_error)
            self.on_model_error(self._load_error)
            raise ParameterError(self._load_error)

    def _set_checkpoint(self, path: str) -> None:
        if path != self.checkpoint:
            self.checkpoint = path
            threading.Thread(target=self._load, args=(path,), daemon=True).start()

    def _set_task(self, task: str) -> None:
        self.default_task = task
        self._task = task

    def _load(self, path: str) -> bool:
        if not path:
            self._load_error = ""
            self.on_model_error(f"parameter `checkpoint` is empty: no {self.KIND} runs")
            return False
        try:
            runner = self.open_runner(path)
            problem = model_problem(self.KIND, runner.config, runner.checkpoint.training_config, self.station)
            if problem:
                raise ValueError(problem)
        except Exception as exc:  # a bad checkpoint must never take the node down
            self._load_error = f"cannot load {self.KIND} checkpoint {path}: {exc}" + (
                f"; still running {self._checkpoint_id}" if self._runner is not None else ""
            )
            self.get_logger().error(self._load_error)
            self.on_model_error(self._load_error)
            return False
        self._runner, self._checkpoint_id, self._load_error = runner, runner.checkpoint_id, ""
        self.get_logger().info(f"loaded {self.KIND} checkpoint {runner.checkpoint_id} from {path}")
        self.on_model(runner, path)
        return True

    # -- inputs -----------------------------------------------------------------------------------
    def _on_image(self, cam: str, msg: Image) -> None:
        try:
            self._observations.on_image(cam, msg)
        except FutureStampError as exc:
            self.counters["future_stamps"] += 1
            self.get_logger().warning(f"rejected image on camera/{cam}: {exc}", throttle_duration_sec=2.0)
        except MessageError as exc:
            self.counters["rejected_images"] += 1
            self.get_logger().warning(f"rejected image on camera/{cam}: {exc}", throttle_duration_sec=2.0)

    def _on_joints(self, msg: JointState) -> None:
        try:
            self._observations.on_joints(msg)
        except FutureStampError as exc:
            self.counters["future_stamps"] += 1
            self.get_logger().warning(f"rejected joint_states: {exc}", throttle_duration_sec=2.0)
            return
        except MessageError as exc:
            self.counters["rejected_states"] += 1
            self.get_logger().warning(f"rejected joint_states: {exc}", throttle_duration_sec=2.0)
            return
        self.on_joints()

    def _on_episode(self, msg: DiagnosticStatus) -> None:
        values = diagnostic_values(msg)
        if values.get("task"):
            self._task = values["task"]
        episode_id = values.get("episode_id")
        if values.get("state") == "running" and episode_id != self._episode_id:
            self._episode_id = episode_id
            # The world was reset for this episode: use only what is observed from now on.
            self._observations.restart(self.now_s(), f"waiting for the first observation of episode {episode_id}")
            self.on_episode(episode_id)

    def close(self) -> None:
        self._running = False
        self.wake()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=2.0)

    def wake(self) -> None:
        """Wake the subclass's threads so they see ``_running`` is false (override if they wait)."""
