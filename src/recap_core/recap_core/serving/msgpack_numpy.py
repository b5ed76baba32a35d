"""numpy arrays in msgpack exactly as openpi's ``openpi_client.msgpack_numpy`` writes and reads them.

An array is a map ``{b"__ndarray__": True, b"data": <raw bytes>, b"dtype": dtype.str, b"shape": [dims]}``, a numpy
scalar ``{b"__npgeneric__": True, b"data": <item>, b"dtype": dtype.str}`` (binary keys, no ext types, no pickle).
Object, void and complex dtypes are refused both ways. Unpacked arrays are read-only views of the message.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

_REFUSED_KINDS = ("V", "O", "c")


def pack_array(obj: Any) -> Any:
    """msgpack's ``default`` hook: numpy arrays and scalars as openpi's maps (anything else is msgpack's error)."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise ValueError(f"Unsupported dtype: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def unpack_array(obj: dict) -> Any:
    """msgpack's ``object_hook``: openpi's array and scalar maps back to numpy (other maps as they are)."""
    if b"__ndarray__" in obj:
        dtype = _dtype(obj[b"dtype"])
        return np.ndarray(buffer=obj[b"data"], dtype=dtype, shape=tuple(obj[b"shape"]))
    if b"__npgeneric__" in obj:
        return _dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def _dtype(text: Any) -> np.dtype:
    dtype = np.dtype(text)
    if dtype.kind in _REFUSED_KINDS:
        raise ValueError(f"Unsupported dtype: {dtype}")
    return dtype


def Packer(**kwargs) -> msgpack.Packer:  # noqa: N802 (openpi's name: a Packer factory)
    return msgpack.Packer(default=pack_array, **kwargs)


def packb(obj: Any, **kwargs) -> bytes:
    return msgpack.packb(obj, default=pack_array, **kwargs)


def unpackb(data: bytes, **kwargs) -> Any:
    return msgpack.unpackb(data, object_hook=unpack_array, **kwargs)
