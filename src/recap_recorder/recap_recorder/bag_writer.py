"""Writing one episode's bag: :class:`EpisodeBagWriter` over rosbags' MCAP writer with every CRC filled in.

:func:`checksummed_writer` is ``rosbags``' rosbag2 writer (version 9, MCAP) plus the CRCs it leaves 0, so that
bit rot is found instead of converted; repair writes with it too (docs/recording.md, "Integrity").
"""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import time
import zlib
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from recap_core.data.schema import JPEG_QUALITY, JPEG_SUBSAMPLING
from recap_recorder.bag_files import BagError
from recap_recorder.images import COMPRESSED_SUFFIX, COMPRESSED_TYPE, compress_image
from recap_recorder.mcap_layout import CHUNK_HEAD, FOOTER_SIZE, MCAP_MAGIC, OP_CHUNK, OP_DATA_END, OP_FOOTER, U32, U64
from recap_recorder.recorder_config import LATCHED, SENSOR, TopicSpec


class _CrcFile:
    """The MCAP file being written; keeps the CRC-32 of every byte written so far (the data section CRC)."""

    def __init__(self, raw, crc: int):
        self.raw, self.crc = raw, crc

    def write(self, data) -> int:
        self.crc = zlib.crc32(data, self.crc)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()

    def flush(self) -> None:
        self.raw.flush()

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()


class _Held(io.BytesIO):
    """Records rosbags writes for one chunk, or for the file's end, held back until their CRC fields are
    filled in; ``tell`` answers in file offsets, since rosbags stores them in its indexes."""

    def __init__(self, base: int):
        super().__init__()
        self.base = base

    def tell(self) -> int:
        return self.base + super().tell()

    def close(self) -> None:  # rosbags closes the file after the footer; the bytes are still to be written
        pass


@functools.cache
def _checksummed_writer_class():
    """rosbags' rosbag2 ``Writer`` whose MCAP storage fills in the CRCs rosbags writes as 0.

    The records are rosbags' own, byte for byte, except the CRC fields, which are filled in before the
    records reach the file: nothing is patched after the fact. A chunk with its message indexes (and
    the file's end) goes to the file in one ``write``, so a crash leaves complete chunks followed by
    at most one cut-off record, which :func:`recap_recorder.bag_repair.repair_bag` handles as before.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.storage_mcap import McapWriter

    class ChecksummedMcapStorage(McapWriter):
        def __init__(self, path, compression):
            super().__init__(path, compression)
            self.bio.flush()
            self.bio = _CrcFile(self.bio, zlib.crc32(self.path.read_bytes()))  # the magic and header so far

        def _held(self, write, *args) -> bytearray:
            real, self.bio = self.bio, _Held(self.bio.tell())
            try:
                write(*args)
                return bytearray(self.bio.getvalue())
            finally:
                self.bio = real

        def close_chunk(self) -> None:
            size = self.chunk.bio.tell()
            with self.chunk.bio.getbuffer() as records:
                crc = zlib.crc32(records)
            out = self._held(super().close_chunk)
            opcode, _, _, _, written_size, _ = CHUNK_HEAD.unpack_from(out)
            if opcode == OP_CHUNK and written_size == size:  # else rosbags changed its layout: CRC stays 0
                U32.pack_into(out, CHUNK_HEAD.size - 4, crc)
            self.bio.write(out)

        def close(self, version: int, metadata: str) -> None:
            if self.chunk.bio.tell():
                self.close_chunk()
            base, crc = self.bio.tell(), self.bio.crc
            out = self._held(super().close, version, metadata)
            _fill_end_crcs(out, base, crc)
            self.bio.write(out)
            self.bio.flush()
            self.bio.close()

    class ChecksummedWriter(Writer):
        STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: ChecksummedMcapStorage}

    return ChecksummedWriter, StoragePlugin


def checksummed_writer(path: Path):
    """A rosbags ``Writer`` (rosbag2 version 9, MCAP) for a new bag at ``path`` that writes every MCAP CRC.

    rosbags leaves them 0: each chunk's ``uncompressed_crc``, the DataEnd record's ``data_section_crc`` and the
    Footer's ``summary_crc``; filled in, :meth:`recap_recorder.indexed_mcap.IndexedMcap.verify` can check them.
    """
    writer_class, plugins = _checksummed_writer_class()
    return writer_class(path, version=writer_class.VERSION_LATEST, storage_plugin=plugins.MCAP)


def _fill_end_crcs(out: bytearray, base: int, crc: int) -> None:
    """Fill in the data section CRC (DataEnd) and the summary CRC (Footer) of the end of an MCAP file.

    ``out`` holds the records from file offset ``base`` to the end; ``crc`` is the CRC-32 of the bytes
    before ``base``. A record that is not where the MCAP layout puts it keeps its CRC 0 ("not computed").
    """
    position = 0
    while position + 9 <= len(out) and out[position] != OP_DATA_END:
        position += 9 + U64.unpack_from(out, position + 1)[0]
    if position + 13 <= len(out) and U64.unpack_from(out, position + 1)[0] == 4:
        U32.pack_into(out, position + 9, zlib.crc32(memoryview(out)[:position], crc))
    footer = len(out) - len(MCAP_MAGIC) - FOOTER_SIZE
    if footer < 0 or out[footer] != OP_FOOTER or bytes(out[-len(MCAP_MAGIC) :]) != MCAP_MAGIC:
        return
    summary_start = U64.unpack_from(out, footer + 9)[0]
    start = summary_start - base if summary_start else footer
    if 0 <= start <= footer:
        U32.pack_into(out, footer + 25, zlib.crc32(memoryview(out)[start : footer + 25]))


def _qos_profile(kind: str) -> Qos:
    zero = QosTime(0, 0)
    return Qos(
        QosHistory.KEEP_LAST,
        1 if kind != SENSOR else 10,
        QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL if kind == LATCHED else QosDurability.VOLATILE,
        zero,
        zero,
        QosLiveliness.AUTOMATIC,
        zero,
        False,
    )


class EpisodeBagWriter:
    """One rosbag2 MCAP directory, chunks closed and flushed often so a crash loses little.

    Written with :func:`checksummed_writer`: every chunk carries the CRC of its
    records, and the file's end the data section and summary CRCs, so bit rot is found when the bag
    is read instead of being converted.

    ``compress`` names the (resolved) image topics stored JPEG-compressed under ``<topic>/compressed``;
    an image that cannot be compressed goes to the raw topic, whose connection is added when first
    needed, and is counted in ``uncompressed``.
    """

    def __init__(
        self,
        path: Path,
        topics: Sequence[tuple[str, TopicSpec]],
        *,
        typestore,
        chunk_size_bytes: int,
        chunk_max_duration_s: float,
        compress: Sequence[str] = (),
        jpeg_quality: int = JPEG_QUALITY,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = path
        self._writer = checksummed_writer(path)
        self._chunk_size, self._chunk_age = chunk_size_bytes, chunk_max_duration_s
        self._clock = clock
        self._typestore = typestore
        self._specs = dict(topics)
        self._compress = set(compress)
        self._jpeg = (jpeg_quality, JPEG_SUBSAMPLING)
        self.written: collections.Counter[str] = collections.Counter()
        self.uncompressed: collections.Counter[str] = collections.Counter()
        self.uncompressed_reason = ""
        self._writer.open()
        try:
            self._connections, self._compressed_connections = {}, {}
            for resolved, spec in topics:
                if resolved in self._compress:
                    self._compressed_connections[resolved] = self._add(
                        resolved + COMPRESSED_SUFFIX, COMPRESSED_TYPE, spec
                    )
                else:
                    self._connections[resolved] = self._add(resolved, spec.msgtype, spec)
        except BaseException:
            self._writer.abort()
            raise
        self._chunk_opened = clock()

    def _add(self, topic: str, msgtype: str, spec: TopicSpec):
        return self._writer.add_connection(
            topic, msgtype, typestore=self._typestore, offered_qos_profiles=[_qos_profile(spec.kind)]
        )

    def write(self, topic: str, log_time_ns: int, data: bytes) -> None:
        if topic in self._compress:
            try:
                data = compress_image(data, *self._jpeg)
                connection = self._compressed_connections[topic]
            except BagError as exc:  # kept as received: nothing recorded is lost
                self.uncompressed[topic] += 1
                self.uncompressed_reason = str(exc)
                if topic not in self._connections:
                    self._connections[topic] = self._add(topic, self._specs[topic].msgtype, self._specs[topic])
                connection = self._connections[topic]
        else:
            connection = self._connections[topic]
        self._writer.write(connection, log_time_ns, data)
        self.written[connection.topic] += 1
        storage = self._writer.storage
        if storage.chunk.bio.tell() >= self._chunk_size or self._clock() - self._chunk_opened >= self._chunk_age:
            self.flush_chunk()

    def image_metadata(self) -> dict[str, str]:
        """custom_data keys on how the images were stored."""
        if not self._compress:
            return {"image_compression": "none"}
        quality, subsampling = self._jpeg
        data = {
            "image_compression": f"jpeg quality {quality} subsampling {subsampling}",
            "recorder_uncompressed": json.dumps(dict(self.uncompressed), sort_keys=True),
        }
        if self.uncompressed_reason:
            data["recorder_uncompressed_reason"] = self.uncompressed_reason
        return data

    def flush_chunk(self) -> None:
        """Close the pending MCAP chunk and hand it to the OS (survives a SIGKILL of this process)."""
        storage = self._writer.storage
        if storage is not None and storage.chunk.msgs:
            storage.close_chunk()
            storage.bio.flush()
        self._chunk_opened = self._clock()

    def flush_if_due(self) -> None:
        if self._clock() - self._chunk_opened >= self._chunk_age:
            self.flush_chunk()

    def close(self, custom_data: Mapping[str, str]) -> None:
        for key, value in custom_data.items():
            self._writer.set_custom_data(str(key), str(value))
        self._writer.close()
        for name in (self.path / f"{self.path.name}.mcap", self.path / "metadata.yaml"):
            with open(name, "rb") as handle:  # durable before anyone converts it
                os.fsync(handle.fileno())

    def abort(self) -> None:
        """Stop writing without an index: ``recap bag repair`` recovers the complete chunks."""
        try:
            self.flush_chunk()
        except Exception:  # the disk failed: keep what the OS already has
            pass
        finally:
            self._writer.abort()
