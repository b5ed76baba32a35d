"""What image_transport's compressed_subscriber.cpp, and a display after it (rviz), make of a CompressedImage:
the reference the tests hold recorded and published compressed images to (no OpenCV here: simplejpeg and PIL
stand in for cv::imdecode)."""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image as PILImage


def _reverse(buf):
    return buf[..., ::-1]


def _with_alpha(buf):
    return np.concatenate([buf, np.full_like(buf[..., :1], 255)], 2)


#: cvtColor(BGR2<encoding>) after a "compressed bgr" format, cvtColor(RGB2<encoding>) otherwise
_FROM_BGR = {"rgb8": _reverse, "bgr8": lambda b: b, "rgba8": lambda b: _with_alpha(b[..., ::-1]), "bgra8": _with_alpha}
_FROM_RGB = {"rgb8": lambda b: b, "bgr8": _reverse, "rgba8": _with_alpha, "bgra8": lambda b: _with_alpha(b[..., ::-1])}
#: how a display (rviz's ros_image_texture) shows each encoding, as RGB
_SHOWN = {
    "rgb8": lambda b: b,
    "bgr8": _reverse,
    "rgba8": lambda b: b[..., :3],
    "bgra8": lambda b: b[..., 2::-1],
    "mono8": lambda b: np.repeat(b[..., :1], 3, axis=2),
}


def compressed_subscriber_view(fmt: str, data: bytes) -> np.ndarray:
    """compressed_subscriber.cpp, then a display that honours the encoding: the RGB a viewer shows.

    cv::imdecode gives B, G, R (or one grey channel); the encoding before ';' names the result, and for a
    colour encoding the buffer is converted from BGR ('compressed bgr...') or else from RGB to it.
    """
    data = bytes(data)
    if data[:4] == b"\x89PNG":
        buf = _reverse(np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB")))
    elif simplejpeg.decode_jpeg_header(data)[2] == "Gray":
        buf = simplejpeg.decode_jpeg(data, colorspace="GRAY")
    else:
        buf = simplejpeg.decode_jpeg(data, colorspace="BGR")
    encoding, sep, rest = fmt.partition(";")
    if not sep:
        encoding = "mono8" if buf.shape[2] == 1 else "bgr8"
    elif encoding in _FROM_BGR:
        buf = (_FROM_BGR if "compressed bgr" in rest else _FROM_RGB)[encoding](buf)
    if encoding not in _SHOWN:
        raise ValueError(f"no reference view of encoding {encoding!r}")
    return _SHOWN[encoding](buf)


def bt601_limited(rgb: np.ndarray) -> np.ndarray:
    """RGB -> limited-range Y'CbCr (float) from the BT.601 definition (Kr 0.299, Kb 0.114)."""
    r, g, b = (rgb[..., i].astype(np.float64) / 255 for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([16 + 219 * y, 128 + 224 * (b - y) / 1.772, 128 + 224 * (r - y) / 1.402], -1)


def yuv422_bytes(rgb: np.ndarray, uyvy: bool = True) -> bytes:
    """``[H, W, 3]`` RGB (W even) -> packed UYVY (ROS ``yuv422``) or YUYV (``yuv422_yuy2``) rows, each pixel
    pair's chroma averaged."""
    ycc = bt601_limited(rgb)
    ycc[:, 0::2, 1:] = ycc[:, 1::2, 1:] = (ycc[:, 0::2, 1:] + ycc[:, 1::2, 1:]) / 2
    ycc = np.clip(np.rint(ycc), 0, 255).astype(np.uint8)
    y0, y1, cb, cr = ycc[:, 0::2, 0], ycc[:, 1::2, 0], ycc[:, 0::2, 1], ycc[:, 0::2, 2]
    return np.stack((cb, y0, cr, y1) if uyvy else (y0, cb, y1, cr), -1).tobytes()
