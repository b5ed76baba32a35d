"""Camera images in bags: the CDR layout of ``sensor_msgs/Image`` and ``CompressedImage``, and the JPEG
transcoding the recorder applies (DESIGN.md §6; docs/recording.md, "Images are stored compressed").

Parsing reads the few header fields straight from the CDR bytes (no deserialiser, no pixel copy): this runs
for every image of every episode. Pixels are converted by :mod:`recap_ros.images`, as the nodes convert them.
"""

from __future__ import annotations

import struct

import numpy as np

from recap_ros.images import CHANNELS, MessageError, parse_compressed_format, pixels_to_rgb
from recap_recorder.bag_files import BagError

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
COMPRESSED_SUFFIX = "/compressed"
#: what the recorder does with image topics: ``jpeg`` (stored as CompressedImage) or ``none`` (as received)
IMAGE_COMPRESSIONS = ("jpeg", "none")
#: pixel encodings encoded straight from the message bytes, and the JPEG colour space of each (YUV 4:2:2 is
#: converted to RGB first, see compress_image)
_JPEG_COLORSPACE = {"rgb8": "RGB", "bgr8": "BGR", "rgba8": "RGBA", "bgra8": "BGRA", "mono8": "GRAY"}
#: what bags recorded before the image_transport format hold: "compressed rgb8" claims a JPEG whose decoded
#: BGR buffer is really RGB, but simplejpeg had encoded the rgb8 pixels as RGB, a standard JPEG
LEGACY_FORMAT = "rgb8; jpeg compressed rgb8"
_CDR_LE = b"\x00\x01\x00\x00"


def _aligned(pos: int, size: int) -> int:
    """``pos`` rounded up to a multiple of ``size`` counted from the end of the 4-byte CDR encapsulation."""
    return 4 + -(-(pos - 4) // size) * size


def _header_end(raw) -> int:
    """Offset just after ``std_msgs/Header`` (stamp, frame_id) of a little-endian CDR message."""
    if bytes(raw[:2]) != b"\x00\x01":
        raise BagError("image is not little-endian CDR")
    (length,) = struct.unpack_from("<I", raw, 12)  # after the stamp's sec, nanosec
    return 16 + length


def image_layout(raw, total: int | None = None) -> tuple[int, int, str, int, int]:
    """(height, width, encoding, step, pixel offset) of a CDR sensor_msgs/Image, without copying pixels.

    ``raw`` may be just the start of the message (its first few hundred bytes) when ``total`` gives
    the full size.
    """
    pos = _aligned(_header_end(raw), 4)
    height, width, length = struct.unpack_from("<III", raw, pos)
    encoding = bytes(raw[pos + 12 : pos + 12 + length]).rstrip(b"\0").decode()
    pos = _aligned(pos + 12 + length + 1, 4)  # + is_bigendian
    step, size = struct.unpack_from("<II", raw, pos)
    offset = pos + 8
    if size != height * step or offset + size > (len(raw) if total is None else total) or step < width:
        raise BagError(f"image header inconsistent: {height}x{width}, step {step}, {size} bytes")
    return height, width, encoding, step, offset


def image_pixels(raw) -> np.ndarray:
    """CDR sensor_msgs/Image -> ``[H, W, 3]`` uint8 RGB (a view of the message bytes for rgb8 and bgr8);
    BagError for an encoding :mod:`recap_ros.images` does not read."""
    height, width, encoding, step, offset = image_layout(raw)
    try:
        return pixels_to_rgb(raw, height, width, step, encoding, offset)
    except MessageError as exc:
        raise BagError(str(exc)) from None


def compressed_payload(raw) -> tuple[str, memoryview]:
    """(format, compressed bytes) of a CDR sensor_msgs/CompressedImage, without copying them."""
    fmt, start, size = compressed_payload_at(raw)
    return fmt, memoryview(raw)[start : start + size]


def compressed_payload_at(raw) -> tuple[str, int, int]:
    """(format, offset, size) of the compressed bytes in a CDR sensor_msgs/CompressedImage."""
    try:
        pos = _aligned(_header_end(raw), 4)
        (length,) = struct.unpack_from("<I", raw, pos)
        fmt = bytes(raw[pos + 4 : pos + 4 + length]).rstrip(b"\0").decode()
        pos = _aligned(pos + 4 + length, 4)
        (size,) = struct.unpack_from("<I", raw, pos)
    except (struct.error, UnicodeDecodeError) as exc:
        raise BagError(f"compressed image message is damaged ({exc})") from exc
    if pos + 4 + size > len(raw):
        raise BagError(f"compressed image message is cut off ({len(raw) - pos - 4} of {size} bytes)")
    return fmt, pos + 4, size


def compression_of(fmt: str) -> str:
    """``jpeg`` or ``png`` from a CompressedImage format: image_transport's ``rgb8; jpeg compressed bgr8``
    or ROS 1's plain ``jpeg``; BagError for anything else."""
    words = fmt.replace(";", " ").lower().split()
    for kind in ("jpeg", "png"):
        if kind in words or (kind == "jpeg" and "jpg" in words):
            return kind
    raise BagError(f"compressed image format '{fmt}' is neither JPEG nor PNG")


def compressed_shape(data, kind: str) -> tuple[int, int]:
    """(height, width) from a JPEG or PNG stream's header."""
    if kind == "png":
        if bytes(data[:8]) != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
            raise BagError("compressed image is not a PNG stream")
        width, height = struct.unpack_from(">II", data, 16)
        return int(height), int(width)
    try:
        height, width, _, _ = _jpeg_header(data)
    except ValueError as exc:
        raise BagError(f"compressed image is not a JPEG stream ({exc})") from exc
    return int(height), int(width)


def _jpeg_header(data):
    global _jpeg_header
    import simplejpeg

    _jpeg_header = simplejpeg.decode_jpeg_header  # imported once, on first use
    return _jpeg_header(data)


def colours_swapped(fmt: str) -> bool:
    """Whether a recorded CompressedImage decodes with red and blue exchanged, as image_transport reads
    its format (:class:`recap_ros.images.CompressedFormat`); the recorder's own older format is not."""
    if fmt.strip() == LEGACY_FORMAT:
        return False
    try:
        return parse_compressed_format(fmt).swapped
    except MessageError as exc:
        raise BagError(str(exc)) from None


def decode_compressed(data, kind: str, fmt: str = "") -> np.ndarray:
    """A JPEG or PNG stream -> ``[H, W, 3]`` uint8 RGB in true colours (``fmt``: the message's format)."""
    try:
        if kind == "jpeg":
            import simplejpeg

            rgb = simplejpeg.decode_jpeg(data, colorspace="RGB")
        else:
            import io

            from PIL import Image

            rgb = np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))
    except (ValueError, OSError) as exc:
        raise BagError(f"compressed image cannot be decoded ({exc})") from exc
    return rgb[:, :, ::-1] if fmt and colours_swapped(fmt) else rgb


def compress_image(raw, quality: int, subsampling: str) -> bytes:
    """CDR sensor_msgs/Image -> CDR sensor_msgs/CompressedImage (JPEG), same header.

    Every encoding :mod:`recap_ros.images` reads is encoded, with the dataset's JPEG settings, into a standard
    JPEG (the converter copies the bytes into the dataset instead of encoding them again), under the format
    string compressed_publisher.cpp writes, so image_transport and rviz show true colours:
    ``<encoding>; jpeg compressed bgr8`` for colour, ``mono8; jpeg compressed mono8``; YUV 4:2:2 is
    converted to RGB and stored as an rgb8 image. BagError for any other encoding or a malformed message
    (the recorder then writes it unchanged on the raw topic: nothing received is lost).
    """
    import simplejpeg

    try:
        height, width, encoding, step, offset = image_layout(raw)
    except struct.error as exc:
        raise BagError(f"image message is damaged ({exc})") from exc
    if encoding not in CHANNELS:
        raise BagError(f"image encoding '{encoding}' is not JPEG-compressed (only {sorted(CHANNELS)})")
    colorspace = _JPEG_COLORSPACE.get(encoding)
    if colorspace is not None:
        channels = {"GRAY": 1, "RGB": 3, "BGR": 3}.get(colorspace, 4)
        if step < width * channels:
            raise BagError(f"image step {step} is shorter than {width} x {channels} bytes")
        pixels = np.frombuffer(raw, np.uint8, height * step, offset).reshape(height, step)[:, : width * channels]
        pixels = np.ascontiguousarray(pixels).reshape(height, width, channels)
    else:
        pixels, colorspace, channels, encoding = image_pixels(raw), "RGB", 3, "rgb8"  # YUV 4:2:2
    jpeg = simplejpeg.encode_jpeg(
        pixels, quality=quality, colorspace=colorspace, colorsubsampling="Gray" if channels == 1 else subsampling
    )
    header = bytes(raw[4 : _header_end(raw)])
    fmt = f"{encoding}; jpeg compressed {'mono8' if channels == 1 else 'bgr8'}".encode() + b"\0"
    out = bytearray(_CDR_LE)
    out += header
    out += b"\0" * (_aligned(len(out), 4) - len(out))
    out += struct.pack("<I", len(fmt)) + fmt
    out += b"\0" * (_aligned(len(out), 4) - len(out))
    out += struct.pack("<I", len(jpeg)) + jpeg
    return bytes(out)
