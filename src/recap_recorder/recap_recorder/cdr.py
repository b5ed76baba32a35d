"""The fields the converter needs of ``sensor_msgs/JointState``, read straight from the CDR bytes.

rosbags builds a message object per JointState (~45 us); the converter needs only the names and the
positions of the two joint topics, a few thousand messages per episode. :func:`joint_state` reads exactly
those from a little-endian CDR message, checking what rosbags' deserialiser checks on the way (string lengths
and terminators, sequence lengths, alignment, the message size), and gives up (None) on anything else, for
which the caller asks rosbags instead: the answer is then rosbags' own, an error included.
"""

from __future__ import annotations

import struct

import numpy as np

_U32 = struct.Struct("<I")
_MAX_SEQUENCE = 1 << 31  # rosbags' typestore default max_sequence_length is larger than any message here


#: the last names section read and its names (every message of a topic carries the same), one tuple so that
#: threads never see a section with another's names
_last: list[tuple[bytes, tuple[str, ...]]] = [(b"", ())]


def _string_end(raw, at: int, end: int) -> int:
    """Where the CDR string whose length is at ``at`` ends (after its terminator); -1 when it is not one."""
    if at + 4 > end:
        return -1
    length = _U32.unpack_from(raw, at)[0]
    stop = at + 4 + length
    if length < 1 or stop > end or raw[stop - 1] != 0:
        return -1
    return stop


def joint_state(raw) -> tuple[tuple[str, ...], np.ndarray] | None:
    """(names, positions as float64) of a CDR ``sensor_msgs/JointState``; None where rosbags must decide.

    Offsets count from the end of the 4-byte encapsulation header, as CDR aligns them.
    """
    end = len(raw)
    if end < 12 or raw[0] != 0 or raw[1] != 1:  # little-endian CDR only
        return None
    body = 4
    at = body + 8  # header.stamp (sec, nanosec)
    stop = _string_end(raw, at, end)  # header.frame_id
    if stop < 0:
        return None
    try:
        bytes(raw[at + 4 : stop - 1]).decode()  # rosbags decodes it
    except UnicodeDecodeError:
        return None
    at = stop
    at = body + ((at - body + 3) & -4)
    if at + 4 > end:
        return None
    count = _U32.unpack_from(raw, at)[0]
    section_start = at
    cached, cached_names = _last[0]
    if cached and raw[at : at + len(cached)] == cached:
        names, at = cached_names, at + len(cached)
    else:
        at += 4
        if at + count * 5 > end or count > _MAX_SEQUENCE:
            return None
        decoded = []
        for _ in range(count):
            at = body + ((at - body + 3) & -4)
            stop = _string_end(raw, at, end)
            if stop < 0:
                return None
            try:
                decoded.append(bytes(raw[at + 4 : stop - 1]).decode())
            except UnicodeDecodeError:
                return None
            at = stop
        names = tuple(decoded)
        _last[0] = (bytes(raw[section_start:at]), names)
    positions = None
    for field in range(3):  # position, velocity, effort: sequence<float64>
        at = body + ((at - body + 3) & -4)
        if at + 4 > end:
            return None
        size = _U32.unpack_from(raw, at)[0]
        at += 4
        if at + size * 8 > end or size > _MAX_SEQUENCE:
            return None
        if size:
            at = body + ((at - body + 7) & -8)
            if at + size * 8 > end:
                return None
            if field == 0:
                positions = np.frombuffer(raw, "<f8", size, at).astype(np.float64)
            at += size * 8
        elif field == 0:
            positions = np.zeros(0, np.float64)
    if at + 3 < end:  # rosbags: "CDR message size mismatch"
        return None
    return names, positions
