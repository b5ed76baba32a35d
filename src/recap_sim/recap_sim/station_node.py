"""The ``sim_station`` node: a gym-aloha task (:class:`~recap_sim.sim.AlohaSim`) behind the station topics.

It stands in for the robot driver on machines without one: cameras and joint states out, joint
commands in, plus the sim-only task progress and object pose. docs/nodes.md lists its topics and
parameters.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from recap_ros import qos
from recap_ros.conversions import (
    MessageError,
    check_limits,
    diagnostic,
    joint_positions,
    joint_state,
    seconds_to_stamp,
)
from recap_ros.diagnostics import Diagnostics
from recap_ros.images import numpy_to_image
from recap_ros.node_main import run_node
from recap_ros.params import ParameterError, declare, declare_station
from diagnostic_msgs.msg import DiagnosticStatus
from recap_sim.sim import DEFAULT_RENDER_MESH_CELL, AlohaSim

TASKS = ("transfer_cube", "insertion")
#: station camera -> MuJoCo camera of the ALOHA model.
DEFAULT_MODEL_CAMERAS = {"base": "top", "left_wrist": "left_wrist", "right_wrist": "right_wrist"}


class SimStationNode(Node):
    """Publishes ``camera/<cam>/image_raw`` (rgb8) and ``joint_states`` every control step.

    50 Hz, paced to ``real_time_factor`` x real time, or as fast as possible with 0. It applies the
    newest valid ``joint_command`` (holding the last one when none arrives) and reports task progress on
    ``sim/status`` and the object pose on ``sim/object_pose`` (sim-only topics, used by the scripted
    operator and the episode manager). ``sim/reset`` (std_srvs/Trigger) resets with the ``seed``
    parameter and then advances it by one, so consecutive episodes differ and a given seed always
    reproduces the same object pose.

    Bad commands -- wrong joint count or names, NaN, outside the joint limits -- are rejected, logged
    (throttled) and counted in ``sim/status``; the station keeps holding the last valid command. After a
    reset the arm holds the reset pose until a command arrives within ``reset_anchor_steps``
    velocity-limited steps of it: commands still in flight for the previous episode (the gate
    re-anchors only when it hears of the new episode) are ignored and counted
    (``commands_ignored_after_reset``) instead of pulling the arm back to where that episode ended.
    """

    def __init__(self, **kwargs):
        super().__init__("sim_station", **kwargs)
        self.station = declare_station(self)
        self.task_name = declare(self, "task_name", "transfer_cube", "gym-aloha task", choices=TASKS)
        width = declare(self, "image_width", 224, "camera image width (px)", min_value=16, max_value=1280)
        height = declare(self, "image_height", 224, "camera image height (px)", min_value=16, max_value=960)
        mesh_cell = declare(
            self,
            "render_mesh_cell",
            DEFAULT_RENDER_MESH_CELL,
            "camera meshes drop detail finer than this (m); 0 = full meshes. Physics is unchanged",
            min_value=0.0,
            max_value=0.02,
        )
        render_threads = declare(
            self,
            "render_threads",
            0,
            "threads drawing the cameras at once, each with a GL context of its own; 0 = one per core, at most "
            "one per camera",
            min_value=0,
            max_value=16,
        )
        anchor_steps = declare(
            self,
            "reset_anchor_steps",
            3.0,
            "after sim/reset, commands further than this many velocity-limited steps from "
            "the arm are ignored until one lands near it (commands meant for the last episode "
            "never move the reset arm)",
            min_value=1.0,
            max_value=50.0,
        )
        self.real_time_factor = declare(
            self,
            "real_time_factor",
            1.0,
            "simulated seconds per wall second; 0 = as fast as possible",
            min_value=0.0,
            max_value=100.0,
        )
        max_steps = declare(
            self, "max_episode_steps", 400, "time limit reported as truncated (steps)", min_value=1, max_value=100000
        )
        self._seed = declare(
            self,
            "seed",
            0,
            "seed of the next sim/reset (advances by one after each; a change applies from the next reset)",
            min_value=0,
            max_value=2**31 - 1,
            mutable=True,
        )
        self.publish_clock = declare(
            self, "publish_clock", False, "stamp with the simulation clock and publish /clock (use_sim_time)"
        )
        model_cameras = declare(
            self,
            "camera_models",
            [DEFAULT_MODEL_CAMERAS.get(c, c) for c in self.station.cameras],
            "MuJoCo camera rendered for each entry of `cameras`",
        )
        if len(model_cameras) != len(self.station.cameras):
            raise ParameterError(
                f"camera_models has {len(model_cameras)} entries, cameras has "
                f"{len(self.station.cameras)}: give one model camera per station camera"
            )
        self.sim = AlohaSim(
            self.task_name,
            cameras=dict(zip(self.station.cameras, model_cameras)),
            width=width,
            height=height,
            max_episode_steps=max_steps,
            render_mesh_cell=mesh_cell,
            render_threads=render_threads or (os.cpu_count() or 1),
        )
        self.sim.reset(self._seed)
        self._episode_seed = self._seed
        self._lower, self._upper = self.station.lower_array, self.station.upper_array

        self._lock = threading.Lock()
        self._command = self.sim.joint_positions().copy()
        self._measured = self._command.copy()  # joints as last published (read by the command callback)
        self._anchor_tolerance = anchor_steps * self.station.max_step
        self._awaiting_anchor = False  # set by a reset, cleared by a command near the arm
        self._reset_request: tuple[int, threading.Event] | None = None
        self.commands_ignored_after_reset = 0
        self.commands_received = 0
        self.commands_rejected = 0
        self.overruns = 0
        self.publish_errors = 0
        self._sim_time = time.time()

        # Publishers and subscriptions only after every parameter is valid.
        self._image_pubs = {
            cam: self.create_publisher(Image, f"camera/{cam}/image_raw", qos.SENSOR) for cam in self.station.cameras
        }
        self._joint_pub = self.create_publisher(JointState, "joint_states", qos.SENSOR)
        self.diagnostics = Diagnostics(self, self.station.station_name)
        self._status_pub = self.diagnostics.mirror(self.create_publisher(DiagnosticStatus, "sim/status", qos.SENSOR))
        self._pose_pub = self.create_publisher(PoseStamped, "sim/object_pose", qos.SENSOR)
        self._clock_pub = self.create_publisher(Clock, "/clock", qos.SENSOR) if self.publish_clock else None
        self.create_subscription(JointState, "joint_command", self._on_command, qos.COMMAND)
        self.create_service(Trigger, "sim/reset", self._on_reset)

        self._running = True
        self._thread = threading.Thread(target=self._loop, name="sim_station_loop", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"sim station up: task {self.task_name}, cameras {list(self.station.cameras)} at {width}x{height}, "
            f"real_time_factor {self.real_time_factor}, seed {self._seed}"
        )

    # -- inputs ---------------------------------------------------------------------------
    def _on_command(self, msg: JointState) -> None:
        self.commands_received += 1
        try:
            target = joint_positions(msg, self.station.joint_names)
            check_limits(target, self._lower, self._upper, self.station.joint_names)
        except MessageError as exc:
            self.commands_rejected += 1
            self.get_logger().warning(
                f"rejected joint_command ({self.commands_rejected} so far): {exc}; holding the last valid command",
                throttle_duration_sec=1.0,
            )
            return
        with self._lock:
            if self._awaiting_anchor:
                gap = np.abs(target - self._measured)
                if np.any(gap > self._anchor_tolerance):
                    self.commands_ignored_after_reset += 1
                    self.get_logger().info(
                        f"after the reset: ignoring a command {gap.max():.2f} from the arm (joint "
                        f"{self.station.joint_names[int(gap.argmax())]}) until the command stream starts from "
                        f"where the arm is",
                        throttle_duration_sec=1.0,
                    )
                    return
                self._awaiting_anchor = False
            self._command = target

    def _on_reset(self, request, response):
        done = threading.Event()
        seed = int(self.get_parameter("seed").value)
        with self._lock:
            self._reset_request = (seed, done)
        if not done.wait(timeout=10.0):
            response.success, response.message = False, "reset timed out (is the station loop running?)"
            return response
        self.set_parameters([rclpy_parameter("seed", seed + 1)])
        response.success, response.message = True, f"reset with seed {seed}"
        return response

    # -- the control loop ------------------------------------------------------------------
    def _loop(self) -> None:
        dt = self.sim.dt
        period = dt / self.real_time_factor if self.real_time_factor > 0 else 0.0
        next_tick = time.monotonic()
        while self._running:
            with self._lock:
                reset, self._reset_request = self._reset_request, None
            if reset is not None:
                seed, done = reset
                self.sim.reset(seed)
                self._episode_seed = seed
                with self._lock:
                    self._command = self.sim.joint_positions().copy()
                    self._measured = self._command.copy()
                    self._awaiting_anchor = True
                done.set()
            with self._lock:
                command = self._command
            result = self.sim.step(command)
            self._sim_time += dt
            try:
                self._publish(result)
            except Exception as exc:  # a flooded reliable publisher raises now and then: count, go on
                if not self.context.ok():
                    return  # shutting down
                self.publish_errors += 1
                self.get_logger().warning(
                    f"publish failed ({self.publish_errors} so far): {exc}", throttle_duration_sec=2.0
                )
            if period:
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -5 * period:  # far behind: count it and re-anchor instead of bursting
                    self.overruns += 1
                    next_tick = time.monotonic()

    def _publish(self, result) -> None:
        stamp = seconds_to_stamp(self._sim_time) if self.publish_clock else self.get_clock().now().to_msg()
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=stamp))
        for cam, rgb in self.sim.render().items():
            self._image_pubs[cam].publish(numpy_to_image(rgb, stamp, frame_id=f"{cam}_camera"))
        measured = self.sim.joint_positions()
        with self._lock:
            self._measured = measured
        self._joint_pub.publish(joint_state(measured, self.sim.joint_velocities(), stamp, self.station.joint_names))
        pose = self.sim.object_pose()
        pose_msg = PoseStamped()
        pose_msg.header.stamp, pose_msg.header.frame_id = stamp, "world"
        p, q = pose_msg.pose.position, pose_msg.pose.orientation
        p.x, p.y, p.z = (float(v) for v in pose[:3])
        q.w, q.x, q.y, q.z = (float(v) for v in pose[3:7])
        self._pose_pub.publish(pose_msg)
        self._status_pub.publish(
            diagnostic(
                "sim_station",
                {
                    "task": self.task_name,
                    "seed": self._episode_seed,
                    "step": result.step,
                    "reward": f"{result.reward:.3f}",
                    "success": result.success,
                    "truncated": result.truncated,
                    "commands_received": self.commands_received,
                    "commands_rejected": self.commands_rejected,
                    "commands_ignored_after_reset": self.commands_ignored_after_reset,
                    "overruns": self.overruns,
                    "publish_errors": self.publish_errors,
                },
                hardware_id=self.station.station_name,
            )
        )

    def close(self) -> None:
        self._running = False
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            # the GL context now, while EGL is up: left to garbage collection it may be freed at interpreter
            # exit after EGL has terminated (a traceback on every clean stop)
            self.sim.close()


def rclpy_parameter(name: str, value):
    from rclpy.parameter import Parameter

    return Parameter(name, value=value)


def main(args=None) -> int:
    return run_node(SimStationNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
