"""Camera images <-> ``[H, W, 3]`` uint8 RGB arrays, without cv_bridge.

Raw ``sensor_msgs/Image`` in rgb8, bgr8, rgba8, bgra8, mono8 and YUV 4:2:2 (``yuv422``/``uyvy``,
``yuv422_yuy2``/``yuyv``), and ``sensor_msgs/CompressedImage`` in JPEG or PNG, read the way
image_transport's compressed_subscriber reads them; anything else is a :class:`MessageError`.
The pixel functions take any buffer, so the recorder runs them on the CDR bytes of a bag.
"""

from __future__ import annotations

import array
import dataclasses
import io

import numpy as np

from recap_ros.conversions import MessageError

#: raw encodings and their bytes per pixel (ROS ``yuv422`` is UYVY; ``uyvy``/``yuyv`` are the newer names)
CHANNELS = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "yuv422": 2,
    "uyvy": 2,
    "yuv422_yuy2": 2,
    "yuyv": 2,
}
#: sensor_msgs image_encodings::isColor, restricted to what is read here
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8")
_UYVY = ("yuv422", "uyvy")
# BT.601 limited range, YCbCr -> RGB (what OpenCV's cvtColor, so cv_bridge and v4l2_camera, use for 4:2:2)
_YUV_TO_RGB = np.array([[1.164, 0.0, 1.596], [1.164, -0.392, -0.813], [1.164, 2.017, 0.0]], np.float32)


@dataclasses.dataclass(frozen=True)
class CompressedFormat:
    """What a ``CompressedImage.format`` says, read as compressed_subscriber.cpp reads it.

    ``kind``: ``jpeg`` or ``png``. ``encoding``: the raw encoding before compression ('' for a plain
    ``jpeg``/``png``). ``swapped``: the decoded picture has red and blue exchanged: image_transport
    encodes colour from bgr8 and says ``compressed bgr8``; for a colour encoding without that, its
    subscriber hands on the decoder's BGR buffer under the RGB name (or converts RGB to BGR).
    """

    kind: str
    encoding: str
    swapped: bool


def parse_compressed_format(fmt: str) -> CompressedFormat:
    """``rgb8; jpeg compressed bgr8`` (image_transport), plain ``jpeg``/``png`` (older publishers)."""
    encoding, sep, rest = fmt.partition(";")
    encoding = encoding.strip() if sep else ""
    words = (rest if sep else fmt).replace(";", " ").lower().split()
    kind = "jpeg" if {"jpeg", "jpg"} & set(words) else "png" if "png" in words else ""
    if not kind or "compresseddepth" in words:
        raise MessageError(f"compressed image format '{fmt}' is not JPEG or PNG (e.g. 'rgb8; jpeg compressed bgr8')")
    if encoding and encoding not in CHANNELS:
        raise MessageError(
            f"compressed image format '{fmt}': encoding '{encoding}' is not supported (use one of {sorted(CHANNELS)})"
        )
    swapped = encoding in COLOR_ENCODINGS and "compressed bgr" not in rest
    return CompressedFormat(kind, encoding, swapped)


def pixels_to_rgb(
    data, height: int, width: int, step: int, encoding: str, offset: int = 0, expect_shape=None
) -> np.ndarray:
    """The pixels of a raw image (``data[offset:]``, rows of ``step`` bytes) -> ``[H, W, 3]`` uint8 RGB.

    rgb8 is a view of ``data`` and bgr8 a reversed view (no copy); the other encodings are converted.
    MessageError for an unknown encoding or a header that does not fit the data.
    """
    channels = CHANNELS.get(encoding)
    if channels is None:
        raise MessageError(f"image encoding '{encoding}' is not supported (use one of {sorted(CHANNELS)})")
    h, w, step = int(height), int(width), int(step)
    if h <= 0 or w <= 0 or step < w * channels:
        raise MessageError(f"image header inconsistent: {h}x{w} {encoding}, step {step}")
    if len(data) - offset != h * step:
        raise MessageError(f"image has {len(data) - offset} bytes, header says {h}*{step}={h * step}")
    if expect_shape is not None:
        _check_shape((h, w), expect_shape)
    if channels == 2 and w % 2:
        raise MessageError(f"{encoding} image has an odd width {w}: YUV 4:2:2 pairs pixels")
    rows = np.frombuffer(data, np.uint8, h * step, offset).reshape(h, step)[:, : w * channels]
    pixels = rows.reshape(h, w, channels)
    if encoding == "rgb8":
        return pixels
    if encoding in ("bgr8", "bgra8"):
        return pixels[:, :, 2::-1]
    if encoding == "rgba8":
        return pixels[:, :, :3]
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    return _yuv422_to_rgb(rows.reshape(h, w // 2, 4), uyvy=encoding in _UYVY)


def _yuv422_to_rgb(quads: np.ndarray, uyvy: bool) -> np.ndarray:
    """``[H, W/2, 4]`` macro-pixels (U Y0 V Y1 or Y0 U Y1 V) -> ``[H, W, 3]`` RGB."""
    y_at, u_at, v_at = ((1, 3), 0, 2) if uyvy else ((0, 2), 1, 3)
    h, half = quads.shape[:2]
    ycc = np.empty((h, half, 2, 3), np.float32)
    ycc[..., 0] = quads[..., y_at]
    ycc[..., 1] = quads[..., u_at, None]
    ycc[..., 2] = quads[..., v_at, None]
    ycc -= np.array([16.0, 128.0, 128.0], np.float32)
    rgb = ycc.reshape(h, half * 2, 3) @ _YUV_TO_RGB.T
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def decode_compressed(data, fmt: str, expect_shape=None) -> np.ndarray:
    """A CompressedImage's ``data`` and ``format`` -> ``[H, W, 3]`` uint8 RGB, true colours as
    image_transport shows them (see :class:`CompressedFormat`); MessageError if it cannot be read."""
    parsed = parse_compressed_format(fmt)
    if expect_shape is not None and parsed.kind == "jpeg":
        _check_shape(_jpeg_shape(data), expect_shape)  # before decoding: the header is enough
    rgb = decode_stream(data, parsed.kind)
    if expect_shape is not None:
        _check_shape(rgb.shape[:2], expect_shape)
    return rgb[:, :, ::-1] if parsed.swapped else rgb


def _jpeg_shape(data) -> tuple[int, int]:
    import simplejpeg

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise MessageError(f"compressed image is not a readable JPEG stream ({exc})") from None
    return int(height), int(width)


def _check_shape(shape, expect_shape) -> None:
    if tuple(shape) != tuple(expect_shape):
        raise MessageError(f"image is {shape[0]}x{shape[1]}, expected {expect_shape[0]}x{expect_shape[1]}")


def decode_stream(data, kind: str) -> np.ndarray:
    """A JPEG or PNG stream -> ``[H, W, 3]`` uint8 RGB as the file stores it; MessageError if unreadable."""
    data = data if isinstance(data, (bytes, bytearray, memoryview, array.array)) else bytes(data)
    if kind == "jpeg":
        import simplejpeg

        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError as exc:
            raise MessageError(f"compressed image is not a readable JPEG stream ({exc})") from None
    from PIL import Image

    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MessageError(f"compressed image is not a readable PNG stream ({exc})") from None
    if picture.format != "PNG":
        raise MessageError(f"compressed image says PNG but is {picture.format}")
    if picture.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA"):
        raise MessageError(f"PNG image mode {picture.mode} is not 8-bit (16-bit images are not read)")
    return np.asarray(picture.convert("RGB"))


def image_to_rgb(msg, expect_shape: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` -> ``[H, W, 3]`` uint8 RGB.

    MessageError (one line: what is wrong and the value) for an encoding or format not read here, a
    malformed message or, with ``expect_shape`` (height, width), another size.
    """
    if hasattr(msg, "format"):
        return decode_compressed(msg.data, msg.format, expect_shape)
    return pixels_to_rgb(msg.data, msg.height, msg.width, msg.step, msg.encoding, expect_shape=expect_shape)


def numpy_to_image(rgb: np.ndarray, stamp=None, frame_id: str = "", encoding: str = "rgb8"):
    """``[H, W, 3]`` uint8 RGB -> sensor_msgs/Image in ``encoding`` (rgb8, bgr8, rgba8, bgra8 or mono8).

    ``msg.data`` is filled from an ``array.array`` (microseconds); a numpy array or list would take
    milliseconds (ENVIRONMENT.md).
    """
    from sensor_msgs.msg import Image

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[:, :, ::-1]
    elif encoding in ("rgba8", "bgra8"):
        pixels = np.concatenate([rgb if encoding == "rgba8" else rgb[:, :, ::-1], np.full_like(rgb[:, :, :1], 255)], 2)
    elif encoding == "mono8":  # ITU-R 601-2 luma, in PIL's fixed point
        weighted = rgb.astype(np.uint32) @ np.array([19595, 38470, 7471], np.uint32) + 0x8000
        pixels = (weighted >> 16).astype(np.uint8)[:, :, None]
    else:
        raise ValueError(f"numpy_to_image writes rgb8, bgr8, rgba8, bgra8 or mono8, not {encoding!r}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * pixels.shape[2]
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).tobytes())
    msg.data = data
    return msg


def numpy_to_compressed(rgb: np.ndarray, stamp=None, frame_id: str = "", kind: str = "jpeg", quality: int = 90):
    """``[H, W, 3]`` uint8 RGB -> sensor_msgs/CompressedImage as compressed_publisher.cpp writes an rgb8
    image: a standard JPEG/PNG, format ``rgb8; jpeg compressed bgr8``."""
    from sensor_msgs.msg import CompressedImage

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
    if kind == "jpeg":
        import simplejpeg

        stream = simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=quality, colorspace="RGB")
    elif kind == "png":
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG")
        stream = buffer.getvalue()
    else:
        raise ValueError(f"kind must be 'jpeg' or 'png', not {kind!r}")
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = f"rgb8; {kind} compressed bgr8"
    data = array.array("B")
    data.frombytes(stream)
    msg.data = data
    return msg


__all__ = [
    "CHANNELS",
    "CompressedFormat",
    "MessageError",
    "decode_compressed",
    "decode_stream",
    "image_to_rgb",
    "numpy_to_compressed",
    "numpy_to_image",
    "parse_compressed_format",
    "pixels_to_rgb",
]
