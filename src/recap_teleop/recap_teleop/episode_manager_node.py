"""The episode manager node: episode services, counters and the latched ``episode/status``.

A thin shell around :class:`recap_teleop.episodes.EpisodeStateMachine`; the services, counting and
auto-labelling are in :class:`EpisodeManagerNode` and docs/teleop.md, "The episode manager".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from recap_ros import qos
from recap_ros.conversions import diagnostic, diagnostic_values
from recap_ros.diagnostics import Diagnostics
from recap_ros.node_main import run_node
from recap_ros.params import ParameterError, declare, declare_station
from recap_teleop.episodes import (
    ABORTED,
    EPISODE_SOURCES,
    FAILURE,
    RUNNING,
    SUCCESS,
    TERMINAL,
    EpisodeError,
    EpisodeSettings,
    EpisodeStateMachine,
    auto_label,
)


class EpisodeManagerNode(Node):
    """The episode settings (task, source, operator, ...) may change at runtime and apply from the next episode
    on; the rest is read-only. ``episode/start`` (in sim: after resetting the world through
    ``reset_service``), ``episode/success``, ``episode/failure`` and ``episode/abort`` are std_srvs/Trigger; a
    call that is invalid in the current state is answered with success=false and the reason. Steps are counted
    from ``step_topic`` (the gate's ``joint_command``), interventions from rising edges of ``intervention``.
    With ``auto_label`` the sim's ``sim/status`` labels the episode (success, or failure at the time limit). A
    terminal state stays published for ``terminal_hold_s`` (so the recorder sees it even with a depth-1
    latched topic), then the manager goes back to idle.
    """

    def __init__(self, **kwargs):
        super().__init__("episode_manager", **kwargs)
        self.station = declare_station(self)
        declare(self, "task", "", "task prompt of the next episode (may change between episodes)", mutable=True)
        declare(
            self,
            "source",
            "rollout",
            "what produced the episode: demo | rollout | eval",
            choices=EPISODE_SOURCES,
            mutable=True,
        )
        declare(self, "operator", "", "operator name, goes into the episode metadata", mutable=True)
        declare(
            self, "policy_checkpoint", "", "checkpoint id for the metadata; empty = from policy/status", mutable=True
        )
        declare(
            self,
            "beta",
            -1.0,
            "CFG beta for the metadata; < 0 = from policy/status",
            min_value=-1.0,
            max_value=100.0,
            mutable=True,
        )
        declare(self, "auto_label", False, "label from sim/status: success, or failure at the time limit", mutable=True)
        declare(
            self,
            "max_episode_steps",
            400,
            "time limit of auto_label in steps (0 = none)",
            min_value=0,
            max_value=10_000_000,
            mutable=True,
        )
        declare(
            self,
            "reset_service",
            "",
            "std_srvs/Trigger called by episode/start before the episode begins (sim: sim/reset); empty = no reset",
            mutable=True,
        )
        declare(
            self,
            "reset_timeout_s",
            15.0,
            "how long episode/start waits for the reset (s)",
            min_value=0.1,
            max_value=120.0,
            mutable=True,
        )
        step_topic = declare(self, "step_topic", "joint_command", "JointState topic whose messages are steps")
        status_rate = declare(
            self,
            "status_rate_hz",
            2.0,
            "episode/status rate while running (Hz; the recorder relies on >= 2)",
            min_value=2.0,
            max_value=20.0,
        )
        self.terminal_hold_s = declare(
            self,
            "terminal_hold_s",
            0.5,
            "how long a terminal state stays published before idle (s)",
            min_value=0.0,
            max_value=10.0,
        )
        if not step_topic:
            raise ParameterError(
                "parameter 'step_topic' is empty: name the JointState topic to count "
                "steps from (the gate's joint_command)"
            )
        self.machine = EpisodeStateMachine(self.station.station_name)
        self._status_period = 1.0 / status_rate
        self._last_publish = -1.0
        self._idle_at: float | None = None
        self._starting = False
        self._policy_status: dict[str, str] = {}
        self._reset_clients: dict = {}
        # episode/start awaits the reset's reply and timers; a SingleThreadedExecutor (where EventsExecutor
        # cannot run coroutine callbacks) keeps a callback's group busy until it returns, so these live in a
        # group of their own that never waits on itself.
        self._reset_group = ReentrantCallbackGroup()

        # Publishers, subscriptions and services only after every parameter is valid.
        self.diagnostics = Diagnostics(self, self.station.station_name)
        self._status_pub = self.diagnostics.mirror(
            self.create_publisher(DiagnosticStatus, "episode/status", qos.LATCHED)
        )
        self.create_subscription(JointState, step_topic, self._on_step, qos.COMMAND)
        self.create_subscription(Bool, "intervention", self._on_intervention, qos.LATCHED)
        self.create_subscription(DiagnosticStatus, "sim/status", self._on_sim_status, qos.SENSOR)
        self.create_subscription(DiagnosticStatus, "policy/status", self._on_policy_status, qos.LATCHED)
        self.create_service(Trigger, "episode/start", self._on_start, callback_group=self._reset_group)
        self.create_service(Trigger, "episode/success", lambda rq, rs: self._on_label(SUCCESS, rs))
        self.create_service(Trigger, "episode/failure", lambda rq, rs: self._on_label(FAILURE, rs))
        self.create_service(Trigger, "episode/abort", lambda rq, rs: self._on_label(ABORTED, rs))
        self.create_timer(0.05, self._housekeeping)
        if self.get_parameter("reset_service").value:
            self._reset_client(self.get_parameter("reset_service").value)  # discover it early
        self._publish_status()
        self.get_logger().info(
            f"episode manager up: station {self.station.station_name}, auto_label "
            f"{self.get_parameter('auto_label').value}, reset_service "
            f"'{self.get_parameter('reset_service').value}', steps from {step_topic}"
        )

    def _param(self, name: str):
        return self.get_parameter(name).value

    # -- services ---------------------------------------------------------------------------------
    async def _on_start(self, request, response):
        if self._starting:
            return _answer(response, False, "an episode is already starting (waiting for the world reset)")
        try:
            self.machine.check_can_start()
            settings = self._settings()
        except EpisodeError as exc:
            return _answer(response, False, str(exc))
        reset_service = self._param("reset_service")
        if reset_service:
            self._starting = True
            try:
                ok, message = await self._reset_world(reset_service)
            finally:
                self._starting = False
            if not ok:
                return _answer(response, False, message)
            seed = re.search(r"seed\s+(-?\d+)", message)
            settings = dataclasses.replace(settings, seed=seed.group(1) if seed else "")
        try:
            episode = self.machine.start(settings, _utc_now())
        except EpisodeError as exc:
            return _answer(response, False, str(exc))
        self._publish_status()
        self.get_logger().info(
            f"episode {episode.episode_id} started: task '{settings.task}', "
            f"source {settings.source}" + (f", seed {settings.seed}" if settings.seed else "")
        )
        return _answer(response, True, f"started episode {episode.episode_id}")

    def _on_label(self, outcome: str, response):
        try:
            episode = self.machine.finish(outcome, _utc_now(), reason="operator")
        except EpisodeError as exc:
            return _answer(response, False, str(exc))
        self._ended()
        return _answer(
            response,
            True,
            f"episode {episode.episode_id} ended: {outcome} after {episode.steps} "
            f"steps, {episode.interventions} intervention(s)",
        )

    def _settings(self) -> EpisodeSettings:
        checkpoint = self._param("policy_checkpoint") or self._policy_status.get("checkpoint_id", "")
        beta = self._param("beta")
        beta = str(beta) if beta >= 0 else self._policy_status.get("beta", "")
        return EpisodeSettings(
            task=self._param("task"),
            source=self._param("source"),
            operator=self._param("operator"),
            policy_checkpoint=checkpoint,
            beta=beta,
        )

    # -- the world reset (sim/reset) ----------------------------------------------------------------
    def _reset_client(self, name: str):
        if name not in self._reset_clients:
            self._reset_clients[name] = self.create_client(Trigger, name, callback_group=self._reset_group)
        return self._reset_clients[name]

    async def _reset_world(self, name: str) -> tuple[bool, str]:
        client = self._reset_client(name)
        timeout = float(self._param("reset_timeout_s"))
        deadline = time.monotonic() + timeout
        while not client.service_is_ready():  # a freshly created client needs a moment of discovery
            if time.monotonic() > deadline:
                return False, (
                    f"reset service '{name}' is not available: start the sim station, or set "
                    "reset_service to '' to start without a reset"
                )
            await self._sleep(0.05)
        reply = await self._with_timeout(client.call_async(Trigger.Request()), deadline - time.monotonic())
        if reply is None:
            return False, f"reset service '{name}' did not answer within {timeout:.1f} s"
        if not reply.success:
            return False, f"reset service '{name}' failed: {reply.message}"
        return True, reply.message

    def _sleep(self, seconds: float) -> Future:
        done = Future()
        timer = None

        def fire():
            timer.cancel()
            self.destroy_timer(timer)
            done.set_result(None)

        timer = self.create_timer(seconds, fire, callback_group=self._reset_group)
        return done

    async def _with_timeout(self, future: Future, seconds: float):
        """The future's result, or None if it is not done within ``seconds``."""
        timer = None

        def expire():
            timer.cancel()
            future.cancel()

        timer = self.create_timer(max(seconds, 0.001), expire, callback_group=self._reset_group)
        try:
            return await future
        finally:
            timer.cancel()
            self.destroy_timer(timer)

    # -- inputs -----------------------------------------------------------------------------------
    def _on_step(self, msg: JointState) -> None:
        if not self.machine.running:
            return
        self.machine.on_step()
        if self._param("auto_label"):
            self._apply_auto_label(None)

    def _on_intervention(self, msg: Bool) -> None:
        self.machine.on_intervention(msg.data)

    def _on_sim_status(self, msg: DiagnosticStatus) -> None:
        if self.machine.running and self._param("auto_label"):
            self._apply_auto_label(diagnostic_values(msg))

    def _on_policy_status(self, msg: DiagnosticStatus) -> None:
        self._policy_status = diagnostic_values(msg)

    def _apply_auto_label(self, sim_status) -> None:
        verdict = auto_label(self.machine.episode, int(self._param("max_episode_steps")), sim_status)
        if verdict is None:
            return
        outcome, reason = verdict
        episode = self.machine.finish(outcome, _utc_now(), reason=reason)
        self.get_logger().info(f"episode {episode.episode_id} labelled {outcome}: {reason}")
        self._ended()

    # -- status -----------------------------------------------------------------------------------
    def _ended(self) -> None:
        self._publish_status()
        self._idle_at = time.monotonic() + self.terminal_hold_s

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.machine.state in TERMINAL and self._idle_at is not None and now >= self._idle_at:
            self._idle_at = None
            self.machine.to_idle()
            self._publish_status()
        elif self.machine.state == RUNNING and now - self._last_publish >= self._status_period:
            self._publish_status()

    def _publish_status(self) -> None:
        values = self.machine.status()
        self._last_publish = time.monotonic()
        message = values["state"] + (f" ({values['label']}: {values['reason']})" if values["label"] else "")
        self._status_pub.publish(
            diagnostic("episode_manager", values, message=message, hardware_id=self.station.station_name)
        )


def _answer(response, success: bool, message: str):
    response.success, response.message = success, message
    return response


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def main(args=None) -> int:
    return run_node(EpisodeManagerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
