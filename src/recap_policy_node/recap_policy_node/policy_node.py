"""Policy inference node: observations -> chunked 50 Hz joint commands with runtime CFG.

Threads, staleness, checkpoint reloads and parameters: :class:`PolicyNode` and docs/nodes.md, "Policy node".
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from recap_core.serving.protocol import normalise_server_url
from recap_ros import qos
from recap_ros.conversions import diagnostic, joint_state, seconds_to_stamp
from recap_ros.diagnostics import Diagnostics
from recap_ros.node_main import run_node
from recap_ros.params import ParameterError, declare
from recap_ros.serving import ModelServingNode
from recap_policy_node.chunking import CHUNK_MODES, ChunkExecutor, DelayEstimator

# How long a thread may hold the interpreter lock while another waits for it, while the model runs in another
# process (a child or a policy server): a control tick woken while the executor runs Python waits at most this
# long. CPython's default (5 ms) stays while the model runs on a thread of the node: with 0.5 ms there, the
# executor lost best-effort camera messages it keeps up with otherwise (docs/nodes.md, "Control timing").
REMOTE_SWITCH_INTERVAL_S = 0.0005
DEFAULT_SWITCH_INTERVAL_S = sys.getswitchinterval()

# as_trained: the condition the checkpoint was fine-tuned under (none for an AWR fine-tune, positive otherwise)
ADVANTAGE_CHOICES = ("as_trained", "positive", "negative", "none")


class PolicyNode(ModelServingNode):
    """Inference runs on a worker thread, never on the executor; a dedicated control thread publishes
    ``policy/joint_command`` every 20 ms from the current chunk (replanning every ``replan_steps`` ticks,
    crossfading at chunk boundaries, see chunking.py).

    It never commands from stale observations: when the newest camera image or joint state is older than
    ``max_observation_age_ms`` it drops its plan, publishes nothing (the gate and the station hold) and says so
    in ``policy/status``; a stamp from the future cannot keep an observation fresh (see
    ``recap_ros.observation``). A checkpoint that fails to load leaves the node up and silent, with the error
    in ``policy/status`` (level ERROR); setting ``checkpoint`` at runtime hot-reloads: a checkpoint that does
    not fit the station (kind, cameras, state/action size, joints) is refused at once, and one that fails to
    load leaves the old model running with the status at ERROR. Parameters are applied at runtime or refused
    (``recap_ros.params``).
    """

    KIND = "policy"

    def __init__(self, **kwargs):
        super().__init__("policy_node", max_age_ms=250.0, threads=2, **kwargs)
        self.beta = declare(
            self,
            "beta",
            1.0,
            "CFG weight: 1 = conditional only, >1 = guided",
            min_value=0.0,
            max_value=10.0,
            on_change=lambda v: setattr(self, "beta", float(v)),
        )
        self.advantage = declare(
            self,
            "advantage",
            "as_trained",
            "advantage tag in the prompt",
            choices=ADVANTAGE_CHOICES,
            on_change=lambda v: setattr(self, "advantage", v),
        )
        self.replan_steps = declare(
            self,
            "replan_steps",
            25,
            "ticks executed from a chunk before replanning",
            min_value=1,
            max_value=1000,
            on_change=lambda v: setattr(self, "replan_steps", int(v)),
        )
        self.blend_steps = declare(
            self, "blend_steps", 8, "crossfade ticks at chunk boundaries (0 = naive)", min_value=0, max_value=100
        )
        self.chunk_mode = declare(
            self,
            "chunk_mode",
            "crossfade",
            "how a new chunk takes over: naive, crossfade (over blend_steps), rtc (real-time chunking)",
            choices=CHUNK_MODES,
            on_change=self._set_chunk_mode,
        )
        self.control_priority = declare(
            self,
            "control_priority",
            0,
            "SCHED_FIFO priority of the control thread (1-99; 0: normal scheduling), the executor's and the "
            "middleware's receiving threads one below; needs CAP_SYS_NICE or an rtprio limit, else the node warns "
            "and runs with normal scheduling",
            min_value=0,
            max_value=99,
        )
        self.control_scheduling = "other"  # what the control thread got: "fifo N", or "other (why)"
        self._inference_fifo = False
        self._fifo_helpers: list[int] = []  # ids of the connection's threads given the inference thread's priority
        self.inference_scheduling = "other"  # "fifo N (threads tid,...)" while the model runs in another process
        self.middleware_scheduling = "other"  # "fifo N (threads tid,...)": the DDS receiving threads raised
        self.seed = declare(
            self, "seed", 0, "sampling seed (fixed-seed flow sampling)", min_value=0, max_value=2**31 - 1
        )
        # remote inference (docs/nodes.md, "Remote inference"): declared before start_serving() loads the model
        self._remote_runner = None  # the runner in use when it is a RemotePolicyRunner
        self.policy_server_timeout_ms = declare(
            self,
            "policy_server_timeout_ms",
            1000.0,
            "deadline of one request to the policy server (ms); past it the node holds and reconnects",
            min_value=10.0,
            max_value=60000.0,
            on_change=self._set_policy_server_timeout,
        )
        self.policy_server = declare(
            self,
            "policy_server",
            "",
            "policy server (ws://HOST:PORT, `recap serve` or openpi's) to infer on; empty: the checkpoint in-process",
            on_change=self._set_policy_server,
            validate=self._check_policy_server,
        )
        if self.policy_server:
            try:
                self.policy_server = normalise_server_url(self.policy_server)
            except ValueError as exc:
                raise ParameterError(f"parameter 'policy_server': {exc}") from exc
        # the model in a child process (docs/nodes.md, "Inference process"); declared before start_serving()
        self.inference_process = declare(
            self,
            "inference_process",
            False,
            "run the checkpoint in a child process (recap serve on loopback), so that the control loop never "
            "waits for the model's interpreter lock; a change reloads the model",
            on_change=self._set_inference_process,
        )
        self.inference_nice = declare(
            self,
            "inference_nice",
            10,
            "with inference_process: how much lower the inference process's CPU priority is than the node's "
            "(0-19), so that the control path wins a contended CPU; the chunks are planned ahead",
            min_value=0,
            max_value=19,
        )
        self._restart_lock = threading.Lock()
        self._restarting = False
        self._restart_backoff_s = 0.0
        self.dt = 1.0 / self.station.control_rate_hz

        self._lock = threading.Lock()
        self._executor = ChunkExecutor(self.blend_steps, mode=self.chunk_mode)
        # real-time chunking's inference delay d: a high quantile of the measured plan-to-arrival ticks
        self._delay = DelayEstimator()
        self._tick = 0
        self._last_plan_tick: int | None = None
        self._plan_request = threading.Event()
        self._plan_epoch = 0  # bumped by every reset: a chunk planned before it is never executed
        self._in_flight = False
        self._pending = None  # (tick, observation, state stamp, epoch) handed to the inference thread
        self._replan_due = False
        self._mode = "starting"
        self._reason = ""
        self.latency_ms = float("nan")
        self._chunk_received_at = float("nan")
        self._chunk_obs_stamp = float("nan")
        self.counters.update(commands=0, chunks=0, stale_holds=0, inference_errors=0, discarded_chunks=0)
        self._inference_failure = ""  # the last inference's error, until a chunk arrives
        self.counters.update(rtc_guided_chunks=0)  # chunks sampled to continue the plan (chunk_mode rtc)
        self.counters.update(inference_process_restarts=0)

        self._cmd_pub = self.create_publisher(JointState, "policy/joint_command", qos.COMMAND)
        self._chunk_pub = self.create_publisher(JointTrajectory, "policy/action_chunk", qos.COMMAND)
        self.diagnostics = Diagnostics(self, self.station.station_name)
        self._status_pub = self.diagnostics.mirror(
            self.create_publisher(DiagnosticStatus, "policy/status", qos.LATCHED)
        )
        self.start_serving()
        self.create_service(Trigger, "policy/reset", self._on_reset)
        self.create_timer(0.5, self.publish_status)

        self.start_thread(self._inference_loop, "policy_inference")
        self.start_thread(self._control_loop, "policy_control")

    # -- serving hooks ----------------------------------------------------------------------
    def on_model(self, runner, path: str) -> None:
        remote = getattr(runner, "remote", False)
        sys.setswitchinterval(REMOTE_SWITCH_INTERVAL_S if remote else DEFAULT_SWITCH_INTERVAL_S)
        old, self._remote_runner = self._remote_runner, runner if remote else None
        if old is not None and old is not runner:
            old.close()
        self._set_mode("running", "")
        self.publish_status()

    def on_model_error(self, message: str) -> None:
        if self._runner is None:
            self._set_mode("no_checkpoint", message)
        self.publish_status()

    def on_joints(self) -> None:
        if self._replan_due:
            self._request_plan()

    def on_episode(self, episode_id: str) -> None:
        self._reset_plan()

    # -- remote inference (policy_server) ---------------------------------------------------
    def open_runner(self, path: str):
        """The model behind ``policy_server`` when it is set (``path`` is then its address), else the checkpoint:
        in a child process with ``inference_process``, in this one without."""
        if not self.policy_server:
            if self.inference_process:
                from recap_core.serving.local import ProcessPolicyRunner  # websockets, only for these modes

                return ProcessPolicyRunner(
                    path,
                    threads=self.threads,
                    seed=self.seed,
                    nice=self.inference_nice,
                    timeout_s=self.policy_server_timeout_ms / 1e3,
                )
            return super().open_runner(path)
        from recap_core.serving.client import RemotePolicyRunner  # websockets, only for remote inference

        runner = RemotePolicyRunner(path, timeout_s=self.policy_server_timeout_ms / 1e3)
        if path != self.policy_server:  # the parameter changed while this one connected
            runner.close()
            raise RuntimeError(f"policy_server changed to {self.policy_server} while connecting")
        return runner

    def _load(self, path: str) -> bool:
        """With ``policy_server`` set, connect to it on a thread, retrying until it answers (the old model, if
        any, keeps running meanwhile); else load the checkpoint ``path``."""
        if not self.policy_server:
            return super()._load(path)
        threading.Thread(target=self._connect_loop, args=(self.policy_server,), daemon=True).start()
        return False

    def _connect_loop(self, url: str) -> None:
        delay = 0.5
        while self._running and self.policy_server == url:
            if ModelServingNode._load(self, url) or not self._running or self.policy_server != url:
                return
            deadline = time.monotonic() + delay
            while self._running and self.policy_server == url and time.monotonic() < deadline:
                time.sleep(0.05)
            delay = min(2 * delay, 5.0)

    def _set_checkpoint(self, path: str) -> None:
        if self.policy_server:  # kept for when policy_server is cleared; the server's model runs meanwhile
            self.checkpoint = path
            return
        super()._set_checkpoint(path)

    def _check_policy_server(self, url: str) -> None:
        if url:
            try:
                normalise_server_url(url)
            except ValueError as exc:
                raise ParameterError(str(exc)) from exc

    def _set_policy_server(self, url: str) -> None:
        url = normalise_server_url(url) if url else ""
        if url == self.policy_server:
            return
        self.policy_server = url
        if url:
            self._load(url)
        else:  # back to the checkpoint in-process
            threading.Thread(target=self._load, args=(self.checkpoint,), daemon=True).start()

    def _set_inference_process(self, value: bool) -> None:
        if bool(value) == self.inference_process:
            return
        self.inference_process = bool(value)
        if not self.policy_server:  # with a policy server the flag applies when it is cleared
            threading.Thread(target=self._load, args=(self.checkpoint,), daemon=True).start()

    def _restart_inference_process(self, reason: str) -> None:
        """The inference process died: say why, and start a new one (backing off 1 s doubling to 30 s between
        tries; the node holds meanwhile). Another restart never runs at the same time."""
        with self._restart_lock:
            if self._restarting:
                return
            self._restarting = True
        self.counters["inference_process_restarts"] += 1
        self.get_logger().error(f"{reason}; starting a new one")

        def restart() -> None:
            try:
                if self._restart_backoff_s:
                    time.sleep(self._restart_backoff_s)
                self._restart_backoff_s = min(max(2 * self._restart_backoff_s, 1.0), 30.0)
                if self._running and self.inference_process and not self.policy_server:
                    self._load(self.checkpoint)
            finally:
                with self._restart_lock:
                    self._restarting = False

        threading.Thread(target=restart, daemon=True).start()

    def close(self) -> None:
        super().close()
        runner, self._remote_runner = self._remote_runner, None
        if runner is not None:
            runner.close()  # an inference process is stopped here

    def _set_policy_server_timeout(self, value: float) -> None:
        self.policy_server_timeout_ms = float(value)
        remote = self._remote_runner
        if remote is not None:
            remote.timeout_s = self.policy_server_timeout_ms / 1e3

    def _server_status(self) -> dict:
        remote = self._remote_runner if self._remote_runner is self._runner else None
        process = getattr(remote, "pid", "") if getattr(remote, "process", False) else ""
        if remote is None:
            return {
                "policy_server": self.policy_server,
                "policy_server_state": "",
                "hop_ms": "nan",
                "inference_process_pid": "",
            }
        return {
            "inference_process_pid": process,
            "policy_server": self.policy_server,
            "policy_server_state": "connected" if remote.connected else f"disconnected: {remote.last_error}",
            "hop_ms": f"{remote.last_hop_ms:.3f}",
            "server_infer_ms": f"{remote.last_server_ms:.3f}",
            "policy_server_timeouts": remote.timeouts,
            "policy_server_connects": remote.connects,
        }

    # -- planning -------------------------------------------------------------------------
    def _request_plan(self) -> None:
        """Hand the newest observation to the inference thread (plans start on a fresh joint state)."""
        obs, _ = self.observation()
        if obs is None:
            return
        with self._lock:
            if self._in_flight or not self._replan_due:
                return
            self._in_flight = True
            self._replan_due = False
            self._pending = (self._tick, obs, self._observations.state_stamp, self._plan_epoch)
            self._last_plan_tick = self._tick
        self._plan_request.set()

    def _on_reset(self, request, response):
        self._reset_plan()
        response.success, response.message = True, "dropped the current chunk; replanning from now"
        return response

    def _reset_plan(self) -> None:
        """Drop the plan, and the one being computed: it was planned from an observation before the reset."""
        with self._lock:
            self._executor.reset()
            self._last_plan_tick = None
            self._plan_epoch += 1
        runner = self._runner
        if runner is not None:
            runner.reset()

    # -- threads ----------------------------------------------------------------------------
    def _set_control_scheduling(self) -> None:
        """Called on the control thread: SCHED_FIFO at ``control_priority`` when it is set and allowed, and the
        ROS executor's thread (the main thread) and the middleware's receiving threads one below it, so the
        observations reach the node on time."""
        if not self.control_priority:
            return
        why = _set_fifo(0, self.control_priority)  # 0: this thread
        if why:
            self.control_scheduling = f"other (SCHED_FIFO {self.control_priority} refused: {why})"
            self.get_logger().warning(
                f"control thread: normal scheduling, SCHED_FIFO {self.control_priority} refused ({why}); give this "
                "user an rtprio limit (docs/nodes.md, 'Control timing') or set control_priority 0"
            )
            return
        self.control_scheduling = f"fifo {self.control_priority}"
        _set_fifo(threading.main_thread().native_id, self._path_priority)
        raised = _raise_middleware_threads(self._path_priority)
        if raised:
            self.middleware_scheduling = f"fifo {self._path_priority} (threads {','.join(raised)})"

    @property
    def _path_priority(self) -> int:
        """SCHED_FIFO of the threads an observation or a chunk passes through: one below the control thread."""
        return max(1, self.control_priority - 1)

    def _inference_scheduling(self, runner) -> None:
        """On the inference thread, before each chunk: one below ``control_priority`` while the model runs in
        another process (this thread then only sends the observation and waits), normal scheduling while it
        runs on this thread (a model computing at real-time priority would starve the machine).

        The connection's own threads (the reply is parsed on one) get the same priority: one at normal priority,
        preempted (by a training, say) while it holds the interpreter lock, would delay the chunk and the
        control thread waiting for the lock: a priority inversion."""
        if not self.control_scheduling.startswith("fifo"):
            return
        fifo = bool(self.control_priority) and getattr(runner, "remote", False)
        priority = self._path_priority
        if fifo != self._inference_fifo:
            _set_fifo(0, priority if fifo else 0)
            self._inference_fifo = fifo
            self._fifo_helpers = []
        if not fifo:
            self.inference_scheduling = "other"
            return
        current = [t.native_id for t in runner.helper_threads() if t.native_id is not None]
        for tid in current:
            if tid not in self._fifo_helpers:
                why = _set_fifo(tid, priority)
                if why and os.path.exists(f"/proc/self/task/{tid}"):
                    self.get_logger().warning(f"connection thread {tid}: SCHED_FIFO {priority} refused ({why})")
        self._fifo_helpers = current
        threads = ",".join(map(str, [threading.get_native_id(), *current]))
        self.inference_scheduling = f"fifo {priority} (threads {threads})"

    def _control_loop(self) -> None:
        self._set_control_scheduling()
        next_t = time.monotonic()
        while self._running:
            self._control_step()
            next_t += self.dt
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -5 * self.dt:
                next_t = time.monotonic()

    def _control_step(self) -> None:
        tick = self._tick
        self._tick += 1
        if self._runner is None:
            return
        obs, why = self.observation()
        if obs is None:
            if self._mode != "holding" or self._reason != why:
                self.counters["stale_holds"] += 1
                self._set_mode("holding", why)
            with self._lock:
                self._executor.reset()
                self._last_plan_tick = None
            return
        with self._lock:
            due = self._last_plan_tick is None or tick - self._last_plan_tick >= self.replan_steps
            if due and not self._in_flight:
                # planned on the next joint_states arrival, so the observation is as fresh as it gets;
                # without a plan at all there is nothing to wait for
                self._replan_due = True
                plan_now = not self._executor.has_plan(tick)
            else:
                plan_now = False
            action = self._executor.action(tick)
        if plan_now:
            self._request_plan()
        if action is None:
            failure = self._inference_failure
            if failure:  # the last inference failed (a policy server timed out, ...): the gate holds
                self._set_mode("holding", f"no plan: the last inference failed ({failure})")
            else:
                self._set_mode("waiting_for_chunk", "no plan for this tick yet")
            return
        if self._mode != "running":
            self._set_mode("running", "")
        self._cmd_pub.publish(
            joint_state(action, stamp=self.get_clock().now().to_msg(), names=self.station.joint_names)
        )
        self.counters["commands"] += 1

    def _inference_loop(self) -> None:
        while self._running:
            if not self._plan_request.wait(timeout=0.1):
                continue
            self._plan_request.clear()
            with self._lock:
                if not self._running or self._pending is None:  # woken to stop, or before any plan
                    continue
                tick, obs, obs_stamp, epoch = self._pending
                runner = self._runner
                guide = self._rtc_guide(tick)
            self._inference_scheduling(runner)
            try:
                t0 = time.perf_counter()
                advantage = self._prompt_advantage(runner)
                unconditional = advantage is None  # no advantage text: nothing to guide towards
                out = runner.infer(
                    obs,
                    beta=1.0 if unconditional else self.beta,
                    advantage=advantage,
                    seed=self.seed + tick,
                    **({"guide": guide} if guide is not None else {}),
                )
                actions = np.asarray(out["actions"], dtype=np.float64)
                self.latency_ms = (time.perf_counter() - t0) * 1e3
                if actions.ndim != 2 or actions.shape[1] != len(self.station.joint_names):
                    raise ValueError(f"policy returned a chunk of shape {actions.shape}, expected [H, 14]")
                actions = np.clip(actions, self.station.lower_array, self.station.upper_array)
                with self._lock:
                    if epoch != self._plan_epoch:
                        # A reset (new episode, policy/reset) came while this chunk was computed.
                        self.counters["discarded_chunks"] += 1
                        continue
                    self._executor.add_chunk(actions, start_tick=tick, now_tick=self._tick)
                    self._delay.add(self._tick - tick)
                self._chunk_received_at = time.monotonic()
                self._inference_failure = ""
                self._restart_backoff_s = 0.0
                self.counters["chunks"] += 1
                self.counters["rtc_guided_chunks"] += guide is not None
                self._chunk_obs_stamp = obs_stamp
                self._publish_chunk(actions, obs_stamp)
                self.publish_status()  # carries this chunk's latency and observation stamp
            except Exception as exc:
                self.counters["inference_errors"] += 1
                self._inference_failure = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                self.get_logger().error(f"inference failed: {exc}", throttle_duration_sec=2.0)
                died = runner.exit_reason() if getattr(runner, "process", False) else ""
                if died:
                    self._inference_failure = died[:200]
                    self._restart_inference_process(died)
            finally:
                with self._lock:
                    self._in_flight = False

    def _set_chunk_mode(self, mode: str) -> None:
        with self._lock:
            self.chunk_mode = mode
            self._executor.set_mode(mode)

    def _rtc_guide(self, tick: int) -> dict | None:
        """Real-time chunking's guide for a chunk planned at ``tick`` (call under the lock): the plan the robot
        executes from ``tick`` on, the estimated delay and ``replan_steps`` as the execution horizon; None unless
        ``chunk_mode`` is rtc and there is a plan to continue."""
        if self.chunk_mode != "rtc":
            return None
        prefix = self._executor.planned(tick)
        if not len(prefix):
            return None
        return {
            "prefix_actions": prefix.astype(np.float32),
            "inference_delay": int(self._delay.estimate()),
            "execution_horizon": int(self.replan_steps),
        }

    # -- outputs ----------------------------------------------------------------------------
    def _publish_chunk(self, actions: np.ndarray, obs_stamp: float) -> None:
        """The chunk as a trajectory whose time origin is the observation it was planned from."""
        msg = JointTrajectory()
        msg.header.stamp = seconds_to_stamp(obs_stamp)
        msg.joint_names = list(self.station.joint_names)
        step_ns = round(self.dt * 1e9)
        points = []
        for i, row in enumerate(actions.tolist()):  # on the observation -> chunk path: a list per row is cheapest
            point = JointTrajectoryPoint(positions=row)
            point.time_from_start.sec, point.time_from_start.nanosec = divmod(i * step_ns, 1_000_000_000)
            points.append(point)
        msg.points = points
        self._chunk_pub.publish(msg)

    def _set_mode(self, mode: str, reason: str) -> None:
        changed = mode != self._mode or reason != self._reason
        self._mode, self._reason = mode, reason
        if changed and mode == "holding":
            self.get_logger().warning(f"holding: {reason}", throttle_duration_sec=2.0)
        if changed and hasattr(self, "_status_pub"):
            self.publish_status()

    def _prompt_advantage(self, runner) -> str | None:
        """The advantage text the prompt carries (None: no text), the parameter with ``as_trained`` resolved
        from ``runner``'s checkpoint (``Checkpoint.trained_advantage``)."""
        if self.advantage == "as_trained":
            return runner.checkpoint.trained_advantage
        return None if self.advantage == "none" else self.advantage

    def publish_status(self) -> None:
        if not hasattr(self, "_status_pub"):
            return
        age = (time.monotonic() - self._chunk_received_at) * 1e3
        level = 2 if self.load_error else {"running": 0, "waiting_for_chunk": 0, "holding": 1}.get(self._mode, 2)
        if level == 0 and self.control_scheduling.startswith("other ("):  # asked for SCHED_FIFO, did not get it
            level = 1
        self._status_pub.publish(
            diagnostic(
                "policy_node",
                {
                    "state": self._mode,
                    "reason": self._reason or self.load_error,
                    "checkpoint_id": self._checkpoint_id,
                    "checkpoint": self.checkpoint,
                    "beta": self.beta,
                    "advantage": self.advantage,
                    "prompt_advantage": (
                        str(self._prompt_advantage(self._runner) or "none") if self._runner is not None else ""
                    ),
                    "replan_steps": self.replan_steps,
                    "control_scheduling": self.control_scheduling,
                    "inference_scheduling": self.inference_scheduling,
                    "middleware_scheduling": self.middleware_scheduling,
                    "chunk_mode": self.chunk_mode,
                    "inference_delay_ticks": self._delay.estimate(),
                    "max_observation_age_ms": self.max_age * 1e3,
                    "latency_ms": f"{self.latency_ms:.3f}",
                    "chunk_observation_stamp": f"{self._chunk_obs_stamp:.6f}",
                    "chunk_age_ms": f"{age:.0f}" if age == age else "nan",
                    "task": self._task,
                    **self._server_status(),
                    **self.counters,
                },
                level=level,
                message=self._reason
                or self.load_error
                or (f"control thread: {self.control_scheduling}" if level else ""),
            )
        )

    def wake(self) -> None:
        self._plan_request.set()


def _set_fifo(thread_id: int, priority: int) -> str:
    """SCHED_FIFO ``priority`` for the thread ``thread_id`` (0: the calling one; priority 0: back to normal
    scheduling); '' if done, else why not."""
    try:
        if priority:
            os.sched_setscheduler(thread_id, os.SCHED_FIFO, os.sched_param(priority))
        else:
            os.sched_setscheduler(thread_id, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError) as exc:  # no CAP_SYS_NICE / rtprio limit; not Linux
        return getattr(exc, "strerror", None) or str(exc)
    return ""


# The threads on which the middleware delivers received samples: Fast DDS names them dds.udp.<port>,
# dds.shm.<port> and dds.tcp.<port>; Cyclone DDS recv, recvUC, recvMC and dq.user (its delivery queue).
MIDDLEWARE_RECEIVE_THREADS = ("dds.udp.", "dds.shm.", "dds.tcp.")
MIDDLEWARE_RECEIVE_THREAD_NAMES = ("recv", "recvUC", "recvMC", "dq.user")


def _raise_middleware_threads(priority: int) -> list[str]:
    """SCHED_FIFO ``priority`` for this process's middleware receiving threads (by their names in /proc); the ids
    of those raised. A sample waits on one of them before any callback sees it: at normal priority, on cores
    kept busy by a training, it waited for a CPU (the observation reached the node milliseconds late)."""
    raised = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:  # not Linux
        return raised
    for tid in sorted(tasks, key=int):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if (name.startswith(MIDDLEWARE_RECEIVE_THREADS) and name != "dds.shm.wdog") or (
            name in MIDDLEWARE_RECEIVE_THREAD_NAMES
        ):
            if not _set_fifo(int(tid), priority):
                raised.append(tid)
    return raised


def main(args=None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
