"""Recorded images as image_transport and rviz show them, every encoding the nodes read, and bags written in the
recorder's older format ("rgb8; jpeg compressed rgb8"), which still convert in true colours."""

from __future__ import annotations

import array

import numpy as np
import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from recap_recorder.bag_files import BagError
from recap_recorder.bag_info import read_info
from recap_recorder.images import (
    LEGACY_FORMAT,
    colours_swapped,
    compress_image,
    compressed_payload,
    decode_compressed,
    image_pixels,
)
from recap_ros.images import numpy_to_image
from recap_ros.testing.image_transport import compressed_subscriber_view, yuv422_bytes

#: a picture whose red and blue differ everywhere: a swap cannot hide
RED, BLUE = 210, 30


def picture(height=16, width=24) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([RED + 0 * xx, 6 * yy + 4 * xx, BLUE + 0 * xx], -1).astype(np.uint8)


def raw_image(rgb: np.ndarray, encoding: str) -> bytes:
    """The CDR bytes a raw subscription hands the recorder."""
    if encoding.startswith(("yuv", "uyvy")):
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * 2)
        msg.data = array.array("B", yuv422_bytes(rgb, uyvy=encoding == "yuv422"))
    else:
        msg = numpy_to_image(rgb, encoding=encoding)
    msg.header.frame_id = "cam"
    return serialize_message(msg)


EXPECTED_FORMAT = {  # compressed_publisher.cpp's, for what it can encode; YUV goes in as rgb8
    "rgb8": "rgb8; jpeg compressed bgr8",
    "bgr8": "bgr8; jpeg compressed bgr8",
    "rgba8": "rgba8; jpeg compressed bgr8",
    "bgra8": "bgra8; jpeg compressed bgr8",
    "mono8": "mono8; jpeg compressed mono8",
    "yuv422": "rgb8; jpeg compressed bgr8",
    "yuv422_yuy2": "rgb8; jpeg compressed bgr8",
}


@pytest.mark.parametrize("encoding", sorted(EXPECTED_FORMAT))
def test_recorded_images_show_true_colours_the_image_transport_way(encoding):
    rgb = picture()
    raw = raw_image(rgb, encoding)
    truth = np.repeat(image_pixels(raw)[..., :1], 3, 2) if encoding == "mono8" else rgb
    assert np.abs(image_pixels(raw).astype(int) - truth).max() <= 3  # the raw topic, as the converter reads it
    fmt, data = compressed_payload(compress_image(raw, 95, "420"))
    assert fmt == EXPECTED_FORMAT[encoding]
    shown = compressed_subscriber_view(fmt, bytes(data)).astype(int)
    assert np.abs(shown - truth).mean() < 6, f"{encoding}: image_transport shows other colours"
    assert shown[..., 0].mean() > 150 or encoding == "mono8"
    assert np.abs(decode_compressed(data, "jpeg", fmt).astype(int) - shown).max() <= 1


def test_an_encoding_the_nodes_do_not_read_is_refused_by_image_pixels():
    msg = Image(height=2, width=2, encoding="bayer_rggb8", step=2)
    msg.data = array.array("B", bytes(4))
    with pytest.raises(BagError, match="'bayer_rggb8' is not supported"):
        image_pixels(serialize_message(msg))
    with pytest.raises(BagError, match="'bayer_rggb8' is not JPEG-compressed"):
        compress_image(serialize_message(msg), 95, "420")


def test_which_recorded_formats_decode_with_red_and_blue_exchanged():
    assert not colours_swapped("rgb8; jpeg compressed bgr8") and not colours_swapped("jpeg")
    assert not colours_swapped(LEGACY_FORMAT)  # the recorder's older bags: standard JPEG data
    assert colours_swapped("bgr8; jpeg compressed rgb8") and colours_swapped("rgba8; png compressed rgb8")
    with pytest.raises(BagError, match="not JPEG or PNG"):
        colours_swapped("rgb8; tiff compressed bgr8")


def coloured_image(synth):
    """``synth.image`` with red and blue apart (the green channel carries the frame number)."""

    def image(fill: int, stamp_ns: int = 0, shape=(8, 8)) -> bytes:
        T = synth.T
        pixels = np.zeros((*shape, 3), np.uint8)
        pixels[..., 0], pixels[..., 1], pixels[..., 2] = RED, fill % 256, BLUE
        msg = T["sensor_msgs/msg/Image"](
            header=synth._header(stamp_ns),
            height=shape[0],
            width=shape[1],
            encoding="rgb8",
            is_bigendian=0,
            step=shape[1] * 3,
            data=pixels.reshape(-1),
        )
        return bytes(synth.ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))

    return image


def as_the_older_recorder(raw, quality, subsampling) -> bytes:
    """What the recorder wrote before the image_transport format: the same JPEG bytes (simplejpeg, RGB
    colour space from rgb8 pixels), under "rgb8; jpeg compressed rgb8" (same length, so the CDR stays valid)."""
    out = compress_image(raw, quality, subsampling)
    assert out.count(b"rgb8; jpeg compressed bgr8") == 1
    return out.replace(b"rgb8; jpeg compressed bgr8", LEGACY_FORMAT.encode())


@pytest.mark.parametrize("older", [True, False], ids=["older-format", "image_transport-format"])
@pytest.mark.parametrize("image_format", ["jpeg", "png"])
def test_bags_convert_in_true_colours_in_either_format(
    new_recorder, feed, synth, tmp_path, monkeypatch, older, image_format
):
    import pyarrow.parquet as pq

    from recap_core.data.schema import decode_image
    from recap_recorder import bag_writer
    from recap_recorder.bag_to_dataset import convert_bags

    monkeypatch.setattr(synth, "image", coloured_image(synth))
    if older:
        monkeypatch.setattr(bag_writer, "compress_image", as_the_older_recorder)
    recorder = new_recorder()
    feed(recorder, "sim-0001", "success", steps=30, image_shape=(16, 16))
    assert recorder.drain(20)
    bag = tmp_path / "bags" / "sim-0001"
    info = read_info(bag)
    assert info.custom_data["image_compression"].startswith("jpeg")
    fmt, data = _first_compressed(bag, "/camera/base/image_raw/compressed")
    assert fmt == (LEGACY_FORMAT if older else "rgb8; jpeg compressed bgr8")
    shown = compressed_subscriber_view(fmt, data)
    # image_transport and rviz show the older bags with red and blue exchanged, the new ones true
    assert (shown[..., 0].mean() < shown[..., 2].mean()) == older
    [outcome] = convert_bags([bag], tmp_path / "dataset", image_format=image_format, progress=False)
    assert outcome.status == "converted" and outcome.frames == 30, outcome
    cells = pq.read_table(next((tmp_path / "dataset" / "data").rglob("*.parquet")))
    for cam in ("base", "left_wrist", "right_wrist"):
        for cell in cells[f"observation.images.{cam}"].to_pylist():
            frame = decode_image(cell["bytes"], image_format, (16, 16)).astype(int)
            assert abs(frame[..., 0].mean() - RED) < 8 and abs(frame[..., 2].mean() - BLUE) < 8, cam


def _first_compressed(bag, topic) -> tuple[str, bytes]:
    from recap_recorder.bag_files import storage_file
    from recap_recorder.bag_repair import recover_mcap

    recovered = recover_mcap(storage_file(bag))
    for message in recovered.messages:
        if recovered.channels[message.channel_id].topic == topic:
            fmt, data = compressed_payload(message.data)
            return fmt, bytes(data)
    raise AssertionError(f"no message on {topic}")
