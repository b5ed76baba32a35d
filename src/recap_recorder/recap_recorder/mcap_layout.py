"""The few bits of the MCAP record layout this package reads or fills in by hand.

Record opcodes, the Footer and Chunk record headers and little-endian integers, shared by the
CRC-filling writer (:mod:`recap_recorder.bag_writer`), the index reader and CRC checks
(:mod:`recap_recorder.indexed_mcap`) and repair (:mod:`recap_recorder.bag_repair`). Everything
else is read with the ``mcap`` library.
"""

from __future__ import annotations

import struct

MCAP_MAGIC = b"\x89MCAP0\r\n"
OP_FOOTER, OP_CHUNK, OP_MESSAGE, OP_MESSAGE_INDEX, OP_DATA_END = 0x02, 0x06, 0x05, 0x07, 0x0F
FOOTER_SIZE = 9 + 20  # opcode, length, summary_start, summary_offset_start, summary_crc
CHUNK_HEAD = struct.Struct("<BQQQQI")  # opcode, length, message_start_time, message_end_time, size, crc
U32, U64 = struct.Struct("<I"), struct.Struct("<Q")
