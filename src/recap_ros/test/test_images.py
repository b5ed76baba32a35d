"""Image conversion (recap_ros.images) against independent conversions: PIL for the RGB and grey encodings,
the BT.601 forward transform for YUV 4:2:2, and compressed_subscriber.cpp's reading of a format string."""

from __future__ import annotations

import array

import numpy as np
import pytest
import simplejpeg
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from recap_ros.images import (
    MessageError,
    image_to_rgb,
    numpy_to_compressed,
    numpy_to_image,
    parse_compressed_format,
)
from recap_ros.testing.image_transport import compressed_subscriber_view as subscriber_reads
from recap_ros.testing.image_transport import yuv422_bytes

#: encoding -> (PIL mode, PIL raw mode) the message bytes are made with
PIL_LAYOUT = {
    "rgb8": ("RGB", "RGB"),
    "bgr8": ("RGB", "BGR"),
    "rgba8": ("RGBA", "RGBA"),
    "bgra8": ("RGBA", "BGRA"),
    "mono8": ("L", "L"),
}


def raw_message(payload: bytes, height: int, width: int, row_bytes: int, encoding: str, pad: int) -> Image:
    """An Image whose rows are ``payload``'s rows followed by ``pad`` bytes of junk."""
    rows = np.frombuffer(payload, np.uint8).reshape(height, row_bytes)
    padded = np.concatenate([rows, np.full((height, pad), 77, np.uint8)], 1)
    msg = Image(height=height, width=width, encoding=encoding, step=row_bytes + pad)
    data = array.array("B")
    data.frombytes(padded.tobytes())
    msg.data = data
    return msg


def rgb_pictures(min_side=1):
    return st.builds(
        lambda h, w, seed: np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8),
        st.integers(min_side, 9),
        st.integers(min_side, 9),
        st.integers(0, 2**16),
    )


@settings(max_examples=60, deadline=None)
@given(rgb=rgb_pictures(), encoding=st.sampled_from(sorted(PIL_LAYOUT)), pad=st.integers(0, 5))
def test_raw_encodings_read_as_pil_converts_them_to_rgb(rgb, encoding, pad):
    mode, rawmode = PIL_LAYOUT[encoding]
    picture = PILImage.fromarray(rgb).convert(mode)
    payload = picture.tobytes("raw", rawmode)
    height, width = rgb.shape[:2]
    msg = raw_message(payload, height, width, len(payload) // height, encoding, pad)
    expected = np.asarray(picture.convert("RGB"))
    got = image_to_rgb(msg, expect_shape=(height, width))
    assert got.shape == (height, width, 3) and got.dtype == np.uint8
    assert np.array_equal(got, expected)


@settings(max_examples=30, deadline=None)
@given(rgb=rgb_pictures(), encoding=st.sampled_from(sorted(PIL_LAYOUT)))
def test_numpy_to_image_writes_what_pil_writes(rgb, encoding):
    mode, rawmode = PIL_LAYOUT[encoding]
    picture = PILImage.fromarray(rgb).convert(mode)
    msg = numpy_to_image(rgb, encoding=encoding)
    assert msg.encoding == encoding and msg.step * msg.height == len(msg.data)
    assert bytes(msg.data) == picture.tobytes("raw", rawmode)  # mono8: PIL's ITU-R 601-2 luma, exactly
    if encoding != "mono8":
        assert np.array_equal(image_to_rgb(msg), rgb)


@settings(max_examples=40, deadline=None)
@given(rgb=rgb_pictures(), encoding=st.sampled_from(["yuv422", "uyvy", "yuv422_yuy2", "yuyv"]), pad=st.integers(0, 4))
def test_yuv422_reads_back_the_colours_the_bt601_transform_encoded(rgb, encoding, pad):
    rgb = np.repeat(rgb, 2, axis=1)  # each pixel pair shares its chroma: 4:2:2 loses nothing
    height, width = rgb.shape[:2]
    payload = yuv422_bytes(rgb, uyvy=encoding in ("yuv422", "uyvy"))
    msg = raw_message(payload, height, width, width * 2, encoding, pad)
    got = image_to_rgb(msg).astype(int)
    # 8-bit Y'CbCr quantisation is worth about 2 levels of R, G or B
    assert np.abs(got - rgb.astype(int)).max() <= 3


def test_a_grey_yuv_pixel_is_grey_and_black_and_white_are_the_range_ends():
    # U=V=128: no colour; Y 16 -> black, 235 -> white
    msg = raw_message(bytes([128, 16, 128, 235]), 1, 2, 4, "yuv422", 0)
    assert image_to_rgb(msg).tolist() == [[[0, 0, 0], [255, 255, 255]]]


@pytest.mark.parametrize(
    "encoding, width, step, size, expect_shape, reason",
    [
        ("bayer_rggb8", 4, 4, 16, None, "'bayer_rggb8' is not supported"),
        ("rgb16", 4, 24, 96, None, "'rgb16' is not supported"),
        ("16UC1", 4, 8, 32, None, "'16UC1' is not supported"),
        ("", 4, 12, 48, None, "'' is not supported"),
        ("rgb8", 4, 11, 44, None, "step 11"),
        ("rgb8", 4, 12, 47, None, "47 bytes"),
        ("yuv422", 3, 6, 24, None, "odd width 3"),
        ("mono8", 4, 4, 16, (5, 4), "expected 5x4"),
    ],
)
def test_what_cannot_be_read_is_one_message_error(encoding, width, step, size, expect_shape, reason):
    msg = Image(height=4, width=width, encoding=encoding, step=step)
    msg.data = array.array("B", bytes(size))
    with pytest.raises(MessageError, match=reason) as caught:
        image_to_rgb(msg, expect_shape=expect_shape)
    assert "\n" not in str(caught.value)


# -- compressed -------------------------------------------------------------------------------------
def smooth(height=24, width=32) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([200 + 0 * xx, 8 * yy, 40 + 4 * xx], -1).astype(np.uint8)  # red-heavy, little blue


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_compressed_images_we_write_show_true_colours_the_image_transport_way_and_ours(kind):
    rgb = smooth()
    msg = numpy_to_compressed(rgb, kind=kind)
    assert msg.format == f"rgb8; {kind} compressed bgr8"
    tolerance = 6 if kind == "jpeg" else 0
    assert np.abs(subscriber_reads(msg.format, bytes(msg.data)).astype(int) - rgb).mean() <= tolerance
    assert np.abs(image_to_rgb(msg, expect_shape=rgb.shape[:2]).astype(int) - rgb).mean() <= tolerance


def jpeg_as_opencv_writes(buffer: np.ndarray) -> bytes:
    """cv::imencode: the array's channels are taken as B, G, R."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(buffer), quality=95, colorspace="BGR")


@pytest.mark.parametrize(
    "fmt, encoded_from",
    [
        ("rgb8; jpeg compressed bgr8", "bgr"),  # compressed_publisher.cpp for rgb8
        ("bgr8; jpeg compressed bgr8", "bgr"),
        ("rgba8; jpeg compressed bgr8", "bgr"),
        ("bgra8; jpeg compressed bgr8", "bgr"),
        ("rgb8; jpeg compressed rgb8", "rgb"),  # a publisher that handed imencode its RGB buffer
        ("bgra8; jpeg compressed rgb8", "rgb"),
        ("jpeg", "bgr"),  # ROS 1 / older compressed_image_transport
        ("JPEG", "bgr"),
    ],
)
def test_compressed_formats_are_read_as_compressed_subscriber_reads_them(fmt, encoded_from):
    rgb = smooth()
    data = jpeg_as_opencv_writes(rgb[..., ::-1] if encoded_from == "bgr" else rgb)
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", data)
    viewer = subscriber_reads(fmt, data).astype(int)
    ours = image_to_rgb(msg).astype(int)
    assert np.abs(viewer - rgb).mean() <= 6, "the test's reading of compressed_subscriber is wrong"
    assert np.abs(ours - viewer).max() <= 1


def test_grey_compressed_images_read_as_grey():
    grey = smooth()[..., 1:2]
    data = simplejpeg.encode_jpeg(np.ascontiguousarray(grey), colorspace="GRAY", colorsubsampling="Gray")
    for fmt in ("mono8; jpeg compressed mono8", "jpeg"):
        msg = CompressedImage(format=fmt)
        msg.data = array.array("B", data)
        got = image_to_rgb(msg).astype(int)
        assert np.abs(got - subscriber_reads(fmt, data)).max() <= 1
        assert np.abs(got[..., 0] - grey[..., 0]).mean() <= 3 and (got == got[..., :1]).all()


def test_parse_compressed_format():
    parsed = parse_compressed_format("rgb8; jpeg compressed bgr8")
    assert (parsed.kind, parsed.encoding, parsed.swapped) == ("jpeg", "rgb8", False)
    parsed = parse_compressed_format("bgr8; png compressed rgb8")
    assert (parsed.kind, parsed.encoding, parsed.swapped) == ("png", "bgr8", True)
    parsed = parse_compressed_format("mono8; jpeg compressed mono8")
    assert (parsed.kind, parsed.encoding, parsed.swapped) == ("jpeg", "mono8", False)
    parsed = parse_compressed_format("png")
    assert (parsed.kind, parsed.encoding, parsed.swapped) == ("png", "", False)


@pytest.mark.parametrize(
    "fmt, data, reason",
    [
        ("16UC1; compressedDepth png", b"\x89PNG", "not JPEG or PNG"),
        ("rgb8; tiff compressed bgr8", b"II*\x00", "not JPEG or PNG"),
        ("h264", b"\x00\x00\x00\x01", "not JPEG or PNG"),
        ("rgb16; png compressed bgr16", b"\x89PNG", "'rgb16' is not supported"),
        ("rgb8; jpeg compressed bgr8", b"\xff\xd8 not a jpeg", "not a readable JPEG"),
        ("png", b"\x89PNG\r\n\x1a\n broken", "not a readable PNG"),
        ("png", bytes(simplejpeg.encode_jpeg(np.zeros((4, 4, 3), np.uint8))), "says PNG but is JPEG"),
        ("jpeg", b"", "not a readable JPEG"),
    ],
)
def test_compressed_images_that_cannot_be_read_are_one_message_error(fmt, data, reason):
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", data)
    with pytest.raises(MessageError, match=reason) as caught:
        image_to_rgb(msg)
    assert "\n" not in str(caught.value)


def test_a_sixteen_bit_png_is_refused():
    import io

    buffer = io.BytesIO()
    PILImage.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(buffer, format="PNG")
    msg = CompressedImage(format="png")
    msg.data = array.array("B", buffer.getvalue())
    with pytest.raises(MessageError, match="not 8-bit"):
        image_to_rgb(msg)


def test_a_compressed_image_of_another_size_is_refused_before_it_is_decoded():
    msg = numpy_to_compressed(smooth(24, 32))
    with pytest.raises(MessageError, match="image is 24x32, expected 48x64"):
        image_to_rgb(msg, expect_shape=(48, 64))
