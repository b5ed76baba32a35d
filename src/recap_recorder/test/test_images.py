"""Recorded images: the CDR parsing of Image / CompressedImage and the recorder's JPEG transcoding."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st

from recap_recorder.bag_files import BagError
from recap_recorder.bag_info import read_info
from recap_recorder.images import (
    compress_image,
    compressed_payload,
    compressed_shape,
    compression_of,
    decode_compressed,
)


def image_cdr(synth, pixels: np.ndarray, encoding: str, frame_id: str = "", pad: int = 0, stamp=(3, 4)) -> bytes:
    T = synth.T
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = np.zeros((height, width * channels * pixels.itemsize + pad), np.uint8)
    rows[:, : width * channels * pixels.itemsize] = pixels.reshape(height, -1).view(np.uint8)
    msg = T["sensor_msgs/msg/Image"](
        header=T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=stamp[0], nanosec=stamp[1]), frame_id=frame_id
        ),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=rows.shape[1],
        data=rows.reshape(-1),
    )
    return bytes(synth.ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    phase = np.random.default_rng(seed).uniform(0, 6)
    return np.stack(
        [
            (xx * 255 // max(1, width - 1)),
            (yy * 255 // max(1, height - 1)),
            (127 + 100 * np.sin(xx / 5 + yy / 7 + phase)),
        ],
        -1,
    ).astype(np.uint8)


@settings(max_examples=40, deadline=None)
@given(
    frame_id=st.text(max_size=11),
    height=st.integers(16, 48),
    width=st.integers(16, 48),
    encoding=st.sampled_from(["rgb8", "bgr8"]),
    pad=st.integers(0, 5),
    seed=st.integers(0, 9),
)
def test_compressed_message_is_a_valid_compressed_image_with_the_same_header(
    synth, frame_id, height, width, encoding, pad, seed
):
    rgb = smooth_image(height, width, seed)
    sent = rgb if encoding == "rgb8" else rgb[:, :, ::-1]
    raw = image_cdr(synth, sent, encoding, frame_id, pad, stamp=(17, 123456789))
    out = compress_image(raw, 95, "420")
    msg = synth.ts.deserialize_cdr(out, "sensor_msgs/msg/CompressedImage")  # rosbags reads it
    assert msg.header.frame_id == frame_id and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (17, 123456789)
    assert msg.format == f"{encoding}; jpeg compressed bgr8"  # compressed_publisher.cpp's, for any colour input
    fmt, data = compressed_payload(out)
    assert fmt == msg.format and bytes(data) == bytes(msg.data)
    assert compression_of(fmt) == "jpeg" and compressed_shape(data, "jpeg") == (height, width)
    decoded = decode_compressed(data, "jpeg")  # RGB whatever the recorded channel order
    assert decoded.shape == (height, width, 3) and np.abs(decoded.astype(int) - rgb).mean() < 6
    # the dataset's own encoder gives the same bytes for the same rgb8 pixels
    if encoding == "rgb8":
        from recap_core.data.schema import encode_image

        assert bytes(data) == encode_image(rgb, "jpeg")


def test_mono_images_are_compressed_and_other_encodings_refused(synth):
    gray = smooth_image(16, 24)[:, :, 0]
    fmt, data = compressed_payload(compress_image(image_cdr(synth, gray, "mono8"), 95, "420"))
    assert fmt == "mono8; jpeg compressed mono8" and compressed_shape(data, "jpeg") == (16, 24)
    depth = np.arange(16 * 24, dtype=np.uint16).reshape(16, 24)
    with pytest.raises(BagError, match="16UC1.*not JPEG-compressed"):
        compress_image(image_cdr(synth, depth, "16UC1"), 95, "420")
    broken = bytearray(image_cdr(synth, smooth_image(8, 8), "rgb8"))
    with pytest.raises(BagError):
        compress_image(bytes(broken[:-20]), 95, "420")  # cut off
    broken[0] = 1  # big-endian CDR
    with pytest.raises(BagError, match="little-endian"):
        compress_image(bytes(broken), 95, "420")


def test_compressed_formats_and_streams_from_other_recorders(synth):
    assert compression_of("bgr8; jpeg compressed bgr8") == "jpeg" and compression_of("jpeg") == "jpeg"
    assert compression_of("rgb8; png compressed rgb8") == "png" and compression_of("PNG") == "png"
    with pytest.raises(BagError, match="neither JPEG nor PNG"):
        compression_of("rgb8; tiff compressed rgb8")
    from PIL import Image

    rgb = smooth_image(12, 20)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    assert compressed_shape(buffer.getvalue(), "png") == (12, 20)
    assert np.array_equal(decode_compressed(buffer.getvalue(), "png"), rgb)
    with pytest.raises(BagError, match="not a JPEG"):
        compressed_shape(b"\xff\xd8 not really", "jpeg")
    with pytest.raises(BagError, match="not a PNG"):
        compressed_shape(simplejpeg.encode_jpeg(rgb), "png")
    T = synth.T
    msg = T["sensor_msgs/msg/CompressedImage"](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="cam"),
        format="png",
        data=np.frombuffer(buffer.getvalue(), np.uint8),
    )
    raw = bytes(synth.ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    assert compressed_payload(raw)[0] == "png" and bytes(compressed_payload(raw)[1]) == buffer.getvalue()
    with pytest.raises(BagError, match="cut off"):
        compressed_payload(raw[:-10])


def test_an_image_the_recorder_cannot_compress_is_kept_raw_and_counted(new_recorder, feed, tmp_path, monkeypatch):
    """Nothing received is lost: frames the encoder refuses go to the raw topic, and the converter reads
    the camera from both topics in receive order."""
    from recap_recorder import bag_writer
    from recap_recorder.bag_to_dataset import convert_bags

    real = bag_writer.compress_image
    calls = {"n": 0}

    def flaky(raw, quality, subsampling):
        calls["n"] += 1
        if calls["n"] % 5 == 0:
            raise BagError("encoder refused this one")
        return real(raw, quality, subsampling)

    monkeypatch.setattr(bag_writer, "compress_image", flaky)
    recorder = new_recorder()
    episode = feed(recorder, "sim-0001", "success", steps=40, image_shape=(16, 16))
    assert recorder.drain(20)
    info = read_info(tmp_path / "bags" / "sim-0001")
    counts = {t.name: t.count for t in info.topics}
    uncompressed = json.loads(info.custom_data["recorder_uncompressed"])
    assert sum(uncompressed.values()) == 40 * 3 // 5 and info.custom_data["recorder_uncompressed_reason"]
    for cam in ("base", "left_wrist", "right_wrist"):
        topic = f"/camera/{cam}/image_raw"
        assert counts[topic] + counts[topic + "/compressed"] == 40 and counts[topic] == uncompressed[topic]
    [outcome] = convert_bags([tmp_path / "bags" / "sim-0001"], tmp_path / "dataset", image_format="png", progress=False)
    assert outcome.status == "converted" and outcome.frames == 40
    import pyarrow.parquet as pq

    from recap_core.data.schema import decode_image

    cells = pq.read_table(next((tmp_path / "dataset" / "data").rglob("*.parquet")))
    for cam in ("base", "left_wrist", "right_wrist"):
        fills = [
            int(decode_image(c["bytes"], "png", (16, 16))[8, 8, 0])
            for c in cells[f"observation.images.{cam}"].to_pylist()
        ]
        expected = episode.image_fill[cam] % 256
        assert np.all(np.abs(np.array(fills) - expected) <= 12), (fills, expected)
        steps = (np.diff(fills) + 128) % 256 - 128  # fills wrap at 256
        assert np.all(np.abs(steps) <= 12)  # in receive order, not raw first then compressed
