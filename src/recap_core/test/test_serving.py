"""Remote inference: openpi's wire format, the observation keys, and ``recap serve`` as a real process on a
real localhost socket answering :class:`RemotePolicyRunner` (timeouts, restarts, bad observations)."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recap_core.serving import msgpack_numpy
from recap_core.serving.client import PolicyServerTimeout, RemotePolicyError, RemotePolicyRunner
from recap_core.serving.protocol import ObservationError, normalise_server_url, runner_observation
from recap_core.serving.testing import ServeProcess

CAMERAS = ("base", "left_wrist", "right_wrist")


def observation(size=32, seed=0, task="reach"):
    rng = np.random.default_rng(seed)
    return {
        "images": {c: rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for c in CAMERAS},
        "state": rng.normal(size=14).astype(np.float32) * 0.1,
        "task": task,
    }


# -- the wire format ----------------------------------------------------------------------------------------
def test_an_array_is_openpis_map_with_binary_keys():
    """openpi_client.msgpack_numpy writes {b"__ndarray__": True, b"data", b"dtype": dtype.str, b"shape"}."""
    array = np.arange(6, dtype="<f4").reshape(2, 3)
    expected = msgpack.packb({"a": {b"__ndarray__": True, b"data": array.tobytes(), b"dtype": "<f4", b"shape": [2, 3]}})
    assert msgpack_numpy.packb({"a": array}) == expected
    scalar = msgpack.packb({b"__npgeneric__": True, b"data": 7, b"dtype": "<i8"})
    assert msgpack_numpy.packb(np.int64(7)) == scalar
    assert msgpack_numpy.unpackb(scalar) == 7 and isinstance(msgpack_numpy.unpackb(scalar), np.int64)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(["u1", "<i4", ">i4", "<i8", "<f2", "<f4", "<f8", "?"]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_arrays_round_trip_bit_exactly(array):
    out = msgpack_numpy.unpackb(msgpack_numpy.packb({"x": [array, {"y": array}]}))
    for got in (out["x"][0], out["x"][1]["y"]):
        assert got.dtype == array.dtype and got.shape == array.shape
        assert got.tobytes() == array.tobytes()


@pytest.mark.parametrize("array", [np.array([object()]), np.zeros(2, np.complex64), np.zeros(2, "V4")])
def test_object_complex_and_void_arrays_are_refused(array):
    with pytest.raises(ValueError, match="Unsupported dtype"):
        msgpack_numpy.packb(array)


def test_a_message_claiming_an_object_array_is_refused():
    data = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]})
    with pytest.raises(ValueError, match="Unsupported dtype"):
        msgpack_numpy.unpackb(data)


# -- observation keys ---------------------------------------------------------------------------------------
def test_openpi_style_and_recap_style_observations_read_alike():
    obs = observation()
    nested = {"images": obs["images"], "state": obs["state"], "prompt": "reach"}
    flat = {f"observation/images/{c}": im.transpose(2, 0, 1) for c, im in obs["images"].items()}  # CHW
    flat.update({"observation/state": obs["state"].astype(np.float64), "task": "reach", "recap/beta": 1.5})
    flat.update({"recap/advantage": "none", "recap/seed": np.int64(4), "recap/guide": {"p": np.zeros(2)}})
    a, ka = runner_observation(msgpack_numpy.unpackb(msgpack_numpy.packb(nested)), CAMERAS)
    b, kb = runner_observation(msgpack_numpy.unpackb(msgpack_numpy.packb(flat)), CAMERAS)
    for c in CAMERAS:
        assert np.array_equal(a["images"][c], obs["images"][c]) and np.array_equal(b["images"][c], obs["images"][c])
    assert np.array_equal(a["state"], b["state"]) and a["task"] == b["task"] == "reach"
    assert ka == {} and kb["beta"] == 1.5 and kb["advantage"] is None and kb["seed"] == 4
    assert kb["guide"]["p"].flags.writeable


@pytest.mark.parametrize(
    "message, match",
    [
        ([1, 2], "map of named arrays"),
        ({"images": {}, "state": np.zeros(14), "prompt": "x"}, "lacks camera"),
        ({"images": {c: np.zeros((8, 8, 3), np.float32) for c in CAMERAS}, "state": [0], "prompt": "x"}, "uint8"),
        ({"images": {c: np.zeros((8, 8, 3), np.uint8) for c in CAMERAS}, "prompt": "x"}, "joint state"),
        ({"images": {c: np.zeros((8, 8, 3), np.uint8) for c in CAMERAS}, "state": [0.0]}, "prompt"),
    ],
)
def test_bad_observations_are_one_line_errors(message, match):
    with pytest.raises(ObservationError, match=match) as info:
        runner_observation(message, CAMERAS)
    assert "\n" not in str(info.value)


def test_server_addresses():
    assert normalise_server_url("gpu-box:8000") == "ws://gpu-box:8000"
    assert normalise_server_url("wss://gpu-box") == "wss://gpu-box"
    for bad in ("http://gpu-box:8000", "ws://", "ws://host:port"):
        with pytest.raises(ValueError):
            normalise_server_url(bad)


# -- recap serve as a process -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tiny_checkpoints, tmp_path_factory):
    with ServeProcess(tiny_checkpoints["policy_a"], log_dir=tmp_path_factory.mktemp("serve")) as proc:
        yield proc


def test_recap_serve_answers_as_the_runner_in_process(server, tiny_checkpoints):
    from recap_core.models.runner import PolicyRunner

    remote = RemotePolicyRunner(server.url, timeout_s=30)
    try:
        local = PolicyRunner.from_checkpoint(tiny_checkpoints["policy_a"])
        meta = remote.metadata
        assert meta["checkpoint_id"] == local.checkpoint_id == remote.checkpoint_id == server.checkpoint_id
        assert tuple(meta["cameras"]) == local.cameras == remote.cameras
        assert meta["action_horizon"] == 50 and meta["state_dim"] == meta["action_dim"] == 14
        assert meta["joint_names"] == local.checkpoint.training_config["joint_names"]
        assert remote.checkpoint.trained_advantage == local.checkpoint.trained_advantage == "positive"
        obs = observation()
        for beta in (1.0, 2.0):
            want = local.infer(obs, beta=beta, advantage="positive", seed=7)
            got = remote.infer(obs, beta=beta, advantage="positive", seed=7)
            assert got["actions"].dtype == np.float32 and got["actions"].shape == (50, 14)
            np.testing.assert_allclose(got["actions"], want["actions"], atol=1e-5)
            assert got["beta"] == beta and got["advantage"] == "positive"
            assert got["server_ms"] > 0 and got["latency_ms"] >= got["server_ms"] and got["hop_ms"] >= 0
    finally:
        remote.close()


def test_a_bad_observation_gets_one_line_and_the_server_keeps_serving(server):
    remote = RemotePolicyRunner(server.url, timeout_s=30)
    try:
        bad = observation()
        del bad["images"]["base"]
        with pytest.raises(RemotePolicyError, match="lacks camera") as info:
            remote.infer(bad)
        assert "\n" not in str(info.value)
        with pytest.raises(RemotePolicyError, match="beta"):
            remote.infer(observation(), beta=2.0, advantage=None)  # the runner's own check, one line
        assert remote.infer(observation(), seed=1)["actions"].shape == (50, 14)  # same connection
        assert remote.connects == 1
    finally:
        remote.close()
    assert server.proc.poll() is None


def test_timeout_then_reconnect_then_a_restarted_server(tiny_checkpoints, tmp_path):
    logs = tmp_path / "serve"
    first = ServeProcess(tiny_checkpoints["policy_a"], log_dir=logs)
    second = None
    remote = RemotePolicyRunner(first.url, timeout_s=0.5, backoff_s=0.05, max_backoff_s=0.2)
    try:
        obs = observation()
        assert remote.infer(obs, seed=1)["actions"].shape == (50, 14)
        first.pause()
        start = time.monotonic()
        with pytest.raises(PolicyServerTimeout, match="no reply within 500 ms"):
            remote.infer(obs, seed=1)
        assert time.monotonic() - start < 2.0 and not remote.connected and remote.timeouts == 1
        first.resume()
        out = remote.infer(obs, seed=2)  # reconnects by itself; the late reply of the timed-out request is gone
        assert out["actions"].shape == (50, 14) and remote.connects == 2
        port = first.port
        assert first.stop() == 0 and "stopped on signal 15" in first.output()
        with pytest.raises(RemotePolicyError):
            remote.infer(obs, seed=3)
        second = ServeProcess(tiny_checkpoints["policy_a"], port=port, log_dir=logs)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert remote.infer(obs, seed=3)["actions"].shape == (50, 14)
                break
            except RemotePolicyError:
                assert time.monotonic() < deadline, remote.last_error
        assert remote.connects == 3
    finally:
        remote.close()
        first.stop()
        if second is not None:
            second.stop()


def test_a_server_back_with_another_checkpoint_is_refused(tiny_checkpoints, tmp_path):
    logs = tmp_path / "serve"
    with ServeProcess(tiny_checkpoints["policy_a"], log_dir=logs) as first:
        remote = RemotePolicyRunner(first.url, timeout_s=30, backoff_s=0.05, max_backoff_s=0.1)
        port = first.port
    try:
        with ServeProcess(tiny_checkpoints["policy_b"], port=port, log_dir=logs):
            with pytest.raises(RemotePolicyError, match="connection lost"):
                remote.infer(observation(), seed=1)  # the first server went away
            with pytest.raises(RemotePolicyError, match="now serves checkpoint"):
                remote.infer(observation(), seed=1)  # the second serves another model: refused
            assert remote.checkpoint_id == first.checkpoint_id
    finally:
        remote.close()


def test_recap_serve_usage_errors(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "recap_core.cli", "serve", str(tmp_path / "none"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.startswith("recap serve: ") and out.stderr.count("\n") == 1, out.stderr


def test_a_local_server_stops_when_its_parent_closes_its_input_and_says_why_it_cannot_start(tiny_checkpoints, tmp_path):
    from recap_core.serving.local import LocalPolicyServer

    server = LocalPolicyServer(tiny_checkpoints["policy_a"], log_dir=tmp_path)
    try:
        server.proc.stdin.close()  # what the kernel does when the parent dies, even by SIGKILL
        assert server.proc.wait(timeout=15) == 0, server.output()
        assert "stopped on signal 15" in server.output()
    finally:
        server.stop()
    with pytest.raises(RuntimeError, match=r"recap serve exited with status \d+: .*value"):
        LocalPolicyServer(tiny_checkpoints["value"], log_dir=tmp_path)
