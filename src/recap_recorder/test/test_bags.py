"""``recap bag info`` and ``recap bag repair`` on complete, killed, truncated and corrupt bags."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recap_core.cli import main as recap
from recap_recorder.bag_files import BagError, storage_file
from recap_recorder.bag_info import read_info
from recap_recorder.bag_repair import recover_mcap, repair_bag


@pytest.fixture
def recorded(example_bags):
    return example_bags


def messages_of(path):
    recovered = recover_mcap(storage_file(path))
    return [(recovered.channels[m.channel_id].topic, m.log_time, bytes(m.data)) for m in recovered.messages]


def test_info_lists_topics_counts_rates_label_and_metadata(recorded, capsys):
    assert recap(["bag", "info", str(recorded["complete"])]) == 0
    out = capsys.readouterr().out
    assert "label:      success" in out and "/joint_command" in out
    assert re.search(r"/camera/base/image_raw/compressed +120 msgs .* sensor_msgs/msg/CompressedImage", out)
    assert re.search(r"policy_checkpoint +ckpt-7", out) and re.search(r"image_compression +jpeg quality 95", out)
    assert recap(["bag", "info", "--json", str(recorded["complete"])]) == 0
    info = json.loads(capsys.readouterr().out)
    command = next(t for t in info["topics"] if t["name"] == "/joint_command")
    assert command["count"] == 120 and 49 < command["rate_hz"] < 51
    assert 2.3 < info["duration_s"] < 2.5


def test_info_explains_missing_killed_truncated_and_corrupt_bags(recorded, tmp_path, capsys):
    assert recap(["bag", "info", str(tmp_path / "nope")]) == 1
    assert "no such bag" in capsys.readouterr().err
    assert recap(["bag", "info", str(recorded["killed"])]) == 1
    err = capsys.readouterr().err
    assert "no metadata.yaml" in err and "recap bag repair" in err
    truncated = tmp_path / "truncated"
    shutil.copytree(recorded["complete"], truncated)
    mcap = storage_file(truncated)
    mcap.write_bytes(mcap.read_bytes()[:-5000])
    with pytest.raises(BagError, match="damaged.*recap bag repair"):
        read_info(truncated)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(recorded["complete"], corrupt)
    mcap = storage_file(corrupt)
    mcap.write_bytes(b"garbage!" + mcap.read_bytes()[8:])
    with pytest.raises(BagError, match="damaged"):
        read_info(corrupt)


def test_repair_of_a_killed_bag_keeps_every_written_message_and_recovers_the_metadata(recorded, tmp_path, capsys):
    out = tmp_path / "fixed"
    assert recap(["bag", "repair", str(recorded["killed"]), "--out", str(out)]) == 0
    assert "messages kept" in capsys.readouterr().out
    info = read_info(out)
    meta = info.custom_data
    assert meta["repaired"] == "true" and info.label == "unknown"  # killed before a terminal status
    assert meta["episode_id"] == "sim-0002" and meta["task"] == "transfer the cube"
    assert meta["policy_checkpoint"] == "ckpt-7" and meta["cameras"] == "base,left_wrist,right_wrist"
    kept = messages_of(out)
    written = messages_of(recorded["killed"])
    assert kept == written and len(kept) == info.message_count
    commands = [m for m in kept if m[0] == "/joint_command"]
    assert 100 <= len(commands) <= 150  # everything up to the last complete chunk
    assert recap(["bag", "repair", str(recorded["killed"]), "--out", str(out)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert recap(["bag", "repair", str(recorded["complete"])]) == 0
    assert "nothing to repair" in capsys.readouterr().out


def chunk_ends(mcap_path):
    """(file offset after each chunk, messages in all chunks so far) of an intact MCAP file."""
    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader, breakup_chunk
    from mcap.records import Message

    ends, total = [], 0
    with open(mcap_path, "rb") as handle:
        for record in StreamReader(handle, emit_chunks=True).records:
            if isinstance(record, Chunk):
                total += sum(isinstance(r, Message) for r in breakup_chunk(record))
                ends.append((handle.tell(), total))
    return ends


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut_fraction=st.floats(0.02, 1.0))
def test_repair_after_a_cut_anywhere_keeps_exactly_the_complete_chunks(recorded, tmp_path_factory, cut_fraction):
    source = storage_file(recorded["complete"])
    data = source.read_bytes()
    cut = int(len(data) * cut_fraction)
    work = tmp_path_factory.mktemp("cut")
    bag = work / "sim-0001"
    bag.mkdir()
    (bag / "sim-0001.mcap").write_bytes(data[:cut])
    everything = messages_of(recorded["complete"])
    expected = max([n for end, n in chunk_ends(source) if end <= cut], default=0)
    if expected == 0:
        with pytest.raises(BagError, match="nothing recoverable|no channels"):
            repair_bag(bag)
        return
    report = repair_bag(bag)
    kept = messages_of(report.output)
    assert len(kept) >= expected and kept == everything[: len(kept)]
    assert report.label == ("success" if len(kept) == len(everything) else "unknown")
