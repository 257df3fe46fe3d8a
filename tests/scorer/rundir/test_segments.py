"""scorer.rundir.segments: rows committed as append-only files, never damaged by a later write or kill."""

from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scorer.errors import OutputError, OutputWriteError
from scorer.rundir import segments
from scorer.rundir.segments import Segment, SegmentWriter, committed, read_segment, write_segment

NON_UTF8 = os.fsdecode(b"caf\xe9/\xff\xfe.png")  # Latin-1 bytes: not valid UTF-8


def columns(start: int, count: int) -> dict[str, object]:
    rows = np.arange(start, start + count)
    return {"path": [f"img/{i}.png" for i in rows], "status": ["ok"] * count,
            "mean": np.stack([rows, rows + 0.5], axis=1).astype(np.float32),
            "predicted_class": rows.astype(np.int64)}


def test_round_trip_keeps_values_and_names_byte_exact(tmp_path: Path) -> None:
    data = columns(0, 3)
    data["path"][1] = NON_UTF8
    data["path"][2] = "ünïcødé ✓.jpg"
    segment = write_segment(tmp_path, 0, data)
    assert (segment.start, segment.stop, segment.path.name) == (0, 3, "000000000000-000000000003.npz")
    back = read_segment(segment)
    assert list(back["path"]) == data["path"]
    assert back["path"][1].encode("utf-8", "surrogateescape") == b"caf\xe9/\xff\xfe.png"
    np.testing.assert_array_equal(back["mean"], data["mean"])
    assert back["mean"].dtype == np.float32 and back["predicted_class"].dtype == np.int64
    assert set(read_segment(segment, ["status"])) == {"status"}


def test_committed_lists_contiguous_segments_and_removes_temporaries(tmp_path: Path) -> None:
    for start in (0, 4, 9):
        write_segment(tmp_path, start, columns(start, 4 if start < 8 else 2))
    (tmp_path / ".000000000011-000000000012.npz.123.tmp").write_bytes(b"half written")
    found = committed(tmp_path)
    # rows 8..9 are missing: the segment after the gap is not part of the run (and is removed)
    assert [(s.start, s.stop) for s in found] == [(0, 4), (4, 8)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [s.path.name for s in found]
    assert committed(tmp_path / "missing") == []


def test_writer_commits_when_the_buffer_is_full_and_on_flush(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, 0, flush_seconds=3600, buffer_bytes=1000)
    writer.append(columns(0, 2), 2)
    assert committed(tmp_path) == [] and writer.rows_done == 2
    writer.append(columns(2, 10), 10)  # now over 1000 bytes
    assert [(s.start, s.stop) for s in committed(tmp_path)] == [(0, 12)]
    writer.append(columns(12, 1), 1)
    writer.flush()
    writer.flush()  # nothing buffered: no empty segment
    found = committed(tmp_path)
    assert [(s.start, s.stop) for s in found] == [(0, 12), (12, 13)]
    merged = [p for s in found for p in read_segment(s, ["path"])["path"]]
    assert merged == [f"img/{i}.png" for i in range(13)]


def test_writer_commits_old_rows_on_the_next_append(tmp_path: Path, monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(segments.time, "monotonic", lambda: clock[0])
    writer = SegmentWriter(tmp_path, 0, flush_seconds=5.0)
    writer.append(columns(0, 1), 1)  # buffered at t=100
    clock[0] = 104.5
    writer.append(columns(1, 1), 1)  # the oldest row waited 4.5 s
    assert committed(tmp_path) == []
    clock[0] = 106.0
    writer.append(columns(2, 1), 1)  # the oldest row waited 6 s
    assert [(s.start, s.stop) for s in committed(tmp_path)] == [(0, 3)]


def test_a_damaged_segment_is_reported_not_read_as_data(tmp_path: Path) -> None:
    segment = write_segment(tmp_path, 0, columns(0, 50))
    data = bytearray(segment.path.read_bytes())
    with zipfile.ZipFile(segment.path) as archive:
        info = archive.getinfo("mean.npy")
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF  # inside mean.npy's bytes
    segment.path.write_bytes(bytes(data))
    with pytest.raises(OutputError, match="damaged"):
        read_segment(segment, ["mean"])
    truncated = Segment(0, 50, tmp_path / "cut.npz")
    truncated.path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(OutputError, match="damaged"):
        read_segment(truncated)


def test_a_failed_write_leaves_no_file_and_says_where(tmp_path: Path, monkeypatch) -> None:
    def full_disk(path, content) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(segments, "atomic_write", full_disk)
    with pytest.raises(OutputWriteError, match=r"No space left on device.*--resume") as caught:
        segments.write_segment(tmp_path, 0, {"path": ["a.png"], "mean": np.zeros((1, 2))})
    assert str(tmp_path / "000000000000-000000000001.npz") in str(caught.value)
    assert list(tmp_path.iterdir()) == []
