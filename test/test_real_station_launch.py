"""A real station through the launch system itself: ``station.launch.py`` run by ``launch.LaunchService``
(the engine behind ``ros2 launch``) from a colcon install space, facing a foreign robot.

The fake robot behaves like real drivers: a joint_state_broadcaster publishing 16 joints in a new order
every message with system-default QoS, or per-arm Interbotix-style state topics; two bgr8 cameras at
best-effort QoS stamped by a device clock 1,000 s off, one of them compressed; and per-arm controllers
(Float64MultiArray like forward_command_controller, JointTrajectory like joint_trajectory_controller) whose
joints follow the last command. The test shows the policy driving the arm through the gate, a deadman
take-over moving it, an episode recorded, converted and trained on under the station's own camera names,
and two namespaced stations on one machine, each with its own parameters.

launch and launch_ros are not on PyPI: they come from ../shared/wheels. Where those are absent (a user's
fresh clone) the tests skip; where they are present but not installed (CI without setup), they fail.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml

from recap_core.robot_contract import load_contract, parse_contract

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = pathlib.Path(__file__).resolve().parents[1]
WHEELS = ROOT.parent / "shared" / "wheels"
ROBOTS = ROOT / "src" / "recap_bringup" / "config" / "robots"
DEVICE_CLOCK_OFFSET_S = 1000.0
CAMERAS = ("overhead", "wrist")  # the station's own camera names


def require_launch() -> None:
    try:
        import launch  # noqa: F401
        import launch_ros  # noqa: F401
    except ImportError as exc:
        if WHEELS.is_dir():
            pytest.fail(f"../shared/wheels is here but launch/launch_ros do not import ({exc}): run scripts/setup.sh")
        pytest.skip("launch and launch_ros are not on PyPI; their wheels come from ../shared/wheels, absent here")


def station_contract(example: str, prefix: str) -> dict:
    """An example contract with this test's two cameras (bgr8, best effort, one compressed)."""
    doc = yaml.safe_load((ROBOTS / example).read_text())
    doc["station_name"] = prefix
    doc["stamps"] = "receive"  # the cameras stamp with a device clock 1,000 s off
    doc["cameras"] = [
        {"name": "overhead", "topic": f"/{prefix}/overhead/image_raw", "transport": "raw", "qos": "sensor_data"},
        {
            "name": "wrist",
            "topic": f"/{prefix}/wrist/image_raw/compressed",
            "transport": "compressed",
            "encoding": "jpeg",
            "qos": "sensor_data",
        },
    ]
    return doc


class FakeRobot:
    """Drivers and controllers as a real robot has them, built from a contract (in the test's probe node)."""

    def __init__(self, probe, contract_doc: dict, extra_joints=("left_finger_mirror", "right_finger_mirror")):
        from rclpy.qos import QoSProfile, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        self.contract = parse_contract(contract_doc)
        self.node = probe.node
        self.lock = threading.Lock()
        self.rng = np.random.default_rng(0)
        self.received: dict[str, list] = {}
        # robot state in robot units: (topic or "", robot name) -> position; grippers half open
        self.position: dict[tuple[str, str], float] = {}
        for arm in self.contract.arms:
            topic = arm.joint_states.topic if arm.joint_states else ""
            for j in arm.joints:
                self.position[(topic, j.robot_name)] = j.to_robot(0.5) if j.gripper else 0.0
        self.extra = list(extra_joints)
        default = QoSProfile(depth=10)  # system default: reliable, volatile
        self.state_pubs = {}
        for s in self.contract.joint_states:
            self.state_pubs[""] = (self.node.create_publisher(JointState, s.topic, default), s.topic)
        for arm in self.contract.arms:
            if arm.joint_states:
                t = arm.joint_states.topic
                self.state_pubs[t] = (self.node.create_publisher(JointState, t, qos_profile_sensor_data), t)
        self.camera_pubs = [
            (
                c,
                self.node.create_publisher(
                    CompressedImage if c.transport == "compressed" else Image, c.topic, qos_profile_sensor_data
                ),
            )
            for c in self.contract.cameras
        ]
        for arm in self.contract.arms:
            key = arm.joint_states.topic if arm.joint_states else ""
            for command in arm.commands:
                kind = {
                    "forward_command_controller": Float64MultiArray,
                    "joint_trajectory_controller": JointTrajectory,
                }.get(command.type, JointState)
                self.received[command.topic] = []
                self.node.create_subscription(
                    kind, command.topic, lambda m, c=command, k=key: self._on_command(c, k, m), default
                )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_command(self, command, key, msg) -> None:
        if command.type == "forward_command_controller":
            values = list(msg.data)
        elif command.type == "joint_trajectory_controller":
            values = list(msg.points[-1].positions)
            assert list(msg.joint_names) == list(command.joints)
        else:
            values = list(msg.position)
        with self.lock:
            self.received[command.topic].append((time.monotonic(), values))
            for name, v in zip(command.joints, values):  # a position controller that reaches its target
                self.position[(key, name)] = v

    def model_state(self) -> np.ndarray:
        with self.lock:
            out = []
            for arm in self.contract.arms:
                key = arm.joint_states.topic if arm.joint_states else ""
                out += [j.to_model(self.position[(key, j.robot_name)]) for j in arm.joints]
        return np.asarray(out)

    def _run(self) -> None:
        import simplejpeg
        from sensor_msgs.msg import CompressedImage, Image, JointState

        image = np.zeros((48, 64, 3), np.uint8)
        image[:, :, 0] = 200  # blue in bgr8
        image[:, :, 2] = 30
        tick = 0
        while not self._stop.is_set():
            now = self.node.get_clock().now().nanoseconds * 1e-9
            device = now + DEVICE_CLOCK_OFFSET_S
            stamp = lambda t: (int(t), int((t % 1) * 1e9))  # noqa: E731
            with self.lock:
                for key, (pub, _topic) in self.state_pubs.items():
                    names = [n for (k, n) in self.position if k == key] + (self.extra if key == "" else [])
                    values = [self.position.get((key, n), 0.01) for n in names]
                    order = self.rng.permutation(len(names))
                    msg = JointState(name=[names[i] for i in order], position=[float(values[i]) for i in order])
                    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp(now)
                    pub.publish(msg)
            if tick % 2 == 0:  # cameras at 25 Hz, stamped by their own clock
                for cam, pub in self.camera_pubs:
                    if cam.transport == "compressed":
                        msg = CompressedImage(format="bgr8; jpeg compressed bgr8")
                        msg.data = simplejpeg.encode_jpeg(image, quality=90, colorspace="BGR")
                    else:
                        msg = Image(height=48, width=64, encoding="bgr8", step=64 * 3, data=image.tobytes())
                    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp(device)
                    pub.publish(msg)
            tick += 1
            time.sleep(0.02)

    def commands_since(self, topic: str, t0: float) -> list:
        with self.lock:
            return [v for t, v in self.received[topic] if t >= t0]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class Launch:
    """``station.launch.py`` run by launch.LaunchService in its own process, from the install space."""

    SCRIPT = (
        "import sys\n"
        "from launch import LaunchService\n"
        "from launch.actions import IncludeLaunchDescription\n"
        "from launch.launch_description_sources import PythonLaunchDescriptionSource\n"
        "args = [a.split(':=', 1) for a in sys.argv[2:]]\n"
        "ls = LaunchService(argv=sys.argv[2:])\n"
        "ls.include_launch_description(IncludeLaunchDescription(PythonLaunchDescriptionSource(sys.argv[1]),"
        " launch_arguments=[(k, v) for k, v in args]))\n"
        "sys.exit(ls.run())\n"
    )

    def __init__(self, install: pathlib.Path, log: pathlib.Path, launch_file: str, drop_env=(), **arguments):
        from recap_ros.testing.colcon import install_environment

        path = install / "recap_bringup" / "share" / "recap_bringup" / "launch" / launch_file
        argv = [f"{k}:={v}" for k, v in arguments.items()]
        self.log_path = log
        self._log = open(log, "w")
        env = install_environment(install)
        env["PYTHONUNBUFFERED"] = "1"
        for name in drop_env:
            env.pop(name, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(path), *argv],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: every node it starts can be ended with it
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def stop(self) -> int | None:
        """Ctrl-C as a terminal sends it: SIGINT to the launch process and every node in its process group
        (launch then does not signal them again); the group is killed if it has not ended in 30 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # nodes of this launch that outlived it
        except ProcessLookupError:
            pass
        self._log.close()
        return self.proc.returncode


def recap(*args):
    from recap_ros.testing.procs import run_recap

    out = run_recap(*args)
    assert out.returncode == 0, f"recap {' '.join(map(str, args))}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def station_policy(tmp_path_factory):
    """A tiny policy trained for this station's layout: 14 joints, cameras overhead and wrist."""
    root = tmp_path_factory.mktemp("station_policy")
    recap("dataset", "synth", root / "data", "--kind", "reach", "--episodes", "3", "--cameras", ",".join(CAMERAS))
    common = ["--config", "tiny", "--steps", "2", "--batch-size", "4", "--no-progress", "--threads", "1"]
    recap("train-policy", root / "data", "--mode", "sft", "--out", root / "policy", *common)
    return root / "policy"


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_a_foreign_ros2_control_robot_is_driven_taken_over_recorded_and_trained_on(
    colcon_install, probe, tmp_path, station_policy
):
    require_launch()
    from diagnostic_msgs.msg import DiagnosticStatus
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, String
    from std_srvs.srv import Trigger

    from recap_ros.conversions import diagnostic_values
    from recap_ros.qos import COMMAND, LATCHED

    doc = station_contract("aloha_ros2_control.yaml", "s1")
    contract_file = tmp_path / "robot.yaml"
    contract_file.write_text(yaml.safe_dump(doc))
    contract = load_contract(contract_file)
    config = yaml.safe_load((ROOT / "src" / "recap_bringup" / "config" / "station_real.yaml").read_text())
    for node in ("policy_node", "episode_manager"):
        config[node]["ros__parameters"]["task"] = "reach"
    params = tmp_path / "lab.yaml"
    params.write_text(yaml.safe_dump(config))
    robot = FakeRobot(probe, doc)
    bags = tmp_path / "bags"
    ns = "/lab_a"
    launch = Launch(
        colcon_install,
        tmp_path / "launch.log",
        "station.launch.py",
        contract=contract_file,
        config=params,
        namespace=ns.strip("/"),
        operator_device="none",
        policy_checkpoint=station_policy,
        bag_dir=bags,
    )
    try:
        source = probe.subscribe(String, f"{ns}/command_source", LATCHED)
        intervention = probe.subscribe(Bool, f"{ns}/intervention", LATCHED)
        bridge = probe.subscribe(DiagnosticStatus, f"{ns}/bridge/status", LATCHED)
        policy = probe.subscribe(DiagnosticStatus, f"{ns}/policy/status", LATCHED)
        seen = lambda c: diagnostic_values(c.last()) if c.last() else None  # noqa: E731
        left, right = (a.commands[0].topic for a in contract.arms)

        # 1. the policy drives the arm through the gate: commands reach both arm controllers, inside the limits
        t0 = time.monotonic()
        assert wait_until(lambda: len(robot.commands_since(left, t0)) >= 50, 180), launch.output()[-6000:]
        assert source.wait_for(1, timeout=60, predicate=lambda m: m.data == "policy"), (seen(policy), seen(bridge))
        sent = np.asarray(robot.commands_since(left, t0) + robot.commands_since(right, t0))
        assert np.all(np.isfinite(sent)) and sent.shape[1] == 7
        state = robot.model_state()
        assert np.all(state >= contract.station_config().lower_array - 1e-6)
        assert np.all(state <= contract.station_config().upper_array + 1e-6)
        values = diagnostic_values(bridge.last())
        assert int(values["frames_rejected"]) == 0 and int(values["joint_states_rejected"]) == 0, values

        # 2. an episode, with a deadman take-over in the middle that moves the arm to the operator's target
        assert probe.call(Trigger, f"{ns}/episode/start").success
        time.sleep(1.0)
        engage = probe.publisher(Bool, f"{ns}/teleop/engage", COMMAND)
        teleop = probe.publisher(JointState, f"{ns}/teleop/joint_command", COMMAND)
        target = np.r_[0.3, -0.2, 0.2, 0.0, 0.1, 0.0, 0.9, -0.3, -0.2, 0.2, 0.0, 0.1, 0.0, 0.1]
        t_take = time.monotonic()
        while time.monotonic() - t_take < 3.0:
            engage.publish(Bool(data=True))
            teleop.publish(JointState(name=list(contract.joint_names), position=target.tolist()))
            time.sleep(0.02)
        assert intervention.wait_for(1, timeout=5, predicate=lambda m: m.data), launch.output()[-4000:]
        assert source.wait_for(1, timeout=5, predicate=lambda m: m.data == "teleop")
        np.testing.assert_allclose(robot.model_state(), target, atol=1e-3)
        gripper = robot.commands_since(left, t_take)[-1][6]
        assert gripper == pytest.approx(0.9 * 0.044, abs=1e-4)  # robot units (metres) at the controller
        engage.publish(Bool(data=False))
        time.sleep(1.0)
        assert probe.call(Trigger, f"{ns}/episode/success").success
        assert wait_until(lambda: any((p / "metadata.yaml").is_file() for p in bags.glob("*")), 30), launch.output()[
            -4000:
        ]
    finally:
        code = launch.stop()
        robot.stop()
    log = launch.output()
    assert code == 0, log[-6000:]
    assert "Traceback" not in log, log[-6000:]

    # 3. the recorded episode converts, under the station's camera names, and trains a tiny policy
    (bag,) = [p for p in bags.iterdir() if (p / "metadata.yaml").is_file()]
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["custom_data"]
    assert meta["label"] == "success", meta
    assert meta["joint_names"] == ",".join(contract.joint_names) and meta["cameras"] == ",".join(CAMERAS), meta
    dataset = tmp_path / "dataset"
    recap("convert", bag, "--out", dataset, "--no-progress")
    info = json.loads((dataset / "meta" / "info.json").read_text())
    assert {f"observation.images.{c}" for c in CAMERAS} <= set(info["features"]), sorted(info["features"])
    assert info["features"]["observation.state"]["names"] == list(contract.joint_names)
    out = tmp_path / "policy"
    recap("train-policy", dataset, "--mode", "sft", "--config", "tiny", "--steps", "2", "--batch-size", "2",
          "--no-progress", "--threads", "1", "--out", out)  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert list(config["model"]["cameras"]) == list(CAMERAS), config["model"]


def test_two_namespaced_stations_run_side_by_side_with_their_own_parameters(colcon_install, probe, tmp_path):
    require_launch()
    from rcl_interfaces.srv import GetParameters
    from std_msgs.msg import String

    from recap_ros.qos import LATCHED

    stations = {
        "station1": ("aloha_ros2_control.yaml", 0.4),
        "station2": ("aloha_interbotix.yaml", 0.7),
    }
    config = yaml.safe_load((ROOT / "src" / "recap_bringup" / "config" / "station_real.yaml").read_text())
    launches, robots = [], []
    try:
        for ns, (example, scale) in stations.items():
            doc = station_contract(example, ns)
            contract_file = tmp_path / f"{ns}.yaml"
            contract_file.write_text(yaml.safe_dump(doc))
            # one parameter file for the lab; each station's own values under its fully qualified node name
            config[f"/{ns}/gate"] = {"ros__parameters": {"velocity_scale": scale}}
            robots.append(FakeRobot(probe, doc))
        params = tmp_path / "lab.yaml"
        params.write_text(yaml.safe_dump(config))
        for ns in stations:
            launches.append(
                Launch(
                    colcon_install,
                    tmp_path / f"{ns}.log",
                    "station.launch.py",
                    contract=tmp_path / f"{ns}.yaml",
                    config=params,
                    namespace=ns,
                    operator_device="joy",
                    bag_dir=tmp_path / f"bags-{ns}-2026-12-04",
                )
            )
        for ns, (example, scale) in stations.items():
            source = probe.subscribe(String, f"/{ns}/command_source", LATCHED)
            launch = launches[list(stations).index(ns)]
            assert source.wait_for(1, timeout=120), launch.output()[-6000:]
            request = GetParameters.Request(names=["velocity_scale", "station_name"])
            answer = probe.call(GetParameters, f"/{ns}/gate/get_parameters", request, timeout=30)
            assert answer.values[0].double_value == pytest.approx(scale)
            assert answer.values[1].string_value == ns  # from that station's contract
            cameras = probe.call(
                GetParameters, f"/{ns}/recorder/get_parameters", GetParameters.Request(names=["output_dir"])
            )
            assert cameras.values[0].string_value == str(tmp_path / f"bags-{ns}-2026-12-04")  # a string, not a date
    finally:
        codes = [launch.stop() for launch in launches]
        for robot in robots:
            robot.stop()
    for launch, code in zip(launches, codes):
        assert code == 0 and "Traceback" not in launch.output(), launch.output()[-6000:]


def test_the_simulated_station_launches_with_its_own_localhost_settings(colcon_install, probe, tmp_path):
    """sim.launch.py sets localhost discovery and the shared-memory profile for its nodes itself: started
    from an environment without them, its nodes still run with them (and the probe, localhost, sees them)."""
    require_launch()
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from recap_ros.qos import LATCHED, SENSOR_IN

    ns = "/sim_a"
    launch = Launch(
        colcon_install,
        tmp_path / "sim.log",
        "sim.launch.py",
        drop_env=("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE"),
        namespace=ns.strip("/"),
        bag_dir=tmp_path / "bags",
    )
    try:
        images = probe.subscribe(Image, f"{ns}/camera/base/image_raw", SENSOR_IN)
        states = probe.subscribe(JointState, f"{ns}/joint_states", SENSOR_IN)
        source = probe.subscribe(String, f"{ns}/command_source", LATCHED)
        assert images.wait_for(5, timeout=120) and states.wait_for(5, timeout=10), launch.output()[-6000:]
        assert source.wait_for(1, timeout=10), launch.output()[-4000:]
        assert launch.wait_for_output("sim station up", 10)
    finally:
        code = launch.stop()
    log = launch.output()
    assert code == 0 and "Traceback" not in log, log[-6000:]
    settings = [line for line in log.splitlines() if "[sim_a.sim_station]: DDS settings" in line]
    assert settings and "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in settings[0], settings
    assert "fastdds_localhost.xml" in settings[0], settings
