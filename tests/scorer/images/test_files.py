"""scorer.images.files: bounded reads that never block on special files, and image keys."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from images_support import PNG_SIGNATURE, reason_of_reading, write_file

from scorer.errors import ImageError
from scorer.images import files
from scorer.images.files import image_key, read_file
from scorer.images.listing import ImageRef, read_file_list

# --- reading -------------------------------------------------------------------------------------


def test_read_file_and_image_key(tmp_path):
    path = write_file(tmp_path / "a.bin", b"hello")

    data = read_file(ImageRef("a.bin", path, None))

    assert data == b"hello"
    assert image_key(data) == hashlib.sha256(b"hello").hexdigest()
    assert image_key(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    ("case", "reason"),
    [("missing", "unreadable"), ("broken link", "unreadable"), ("link loop", "unreadable"),
     ("directory", "not a regular file")],
)
def test_read_file_reports_unusable_files(tmp_path, case, reason):
    source = tmp_path / "x.jpg"
    if case == "directory":
        source.mkdir()
    elif case == "broken link":
        source.symlink_to(tmp_path / "nowhere.jpg")
    elif case == "link loop":
        source.symlink_to(source)

    with pytest.raises(ImageError) as caught:
        read_file(ImageRef("x.jpg", source, None))

    assert caught.value.reason == reason
    assert "x.jpg" in caught.value.detail


def test_the_size_limit_is_inclusive(tmp_path):
    ref = ImageRef("five", write_file(tmp_path / "five", b"12345"))

    assert read_file(ref, max_bytes=5) == b"12345"
    assert read_file(ImageRef("empty", write_file(tmp_path / "empty", b"")), max_bytes=0) == b""
    with pytest.raises(ImageError, match=r"five has 5 bytes, more than the limit of 4") as caught:
        read_file(ref, max_bytes=4)
    assert caught.value.reason == "too large"


def test_a_file_over_the_limit_is_refused_unread(tmp_path, monkeypatch):
    """A 300 MB file (sparse: nothing is allocated) is ``too large`` without one read.

    Its size is checked before anything is read, so none of its 314,572,800 bytes is loaded.
    """
    path = tmp_path / "huge.png"
    write_file(path, PNG_SIGNATURE)
    os.truncate(path, 300 << 20)
    reads: list[int] = []
    real_read = os.read

    def counting_read(fd: int, size: int) -> bytes:
        reads.append(size)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", counting_read)

    with pytest.raises(ImageError) as caught:
        read_file(ImageRef("huge.png", path))

    assert files.DEFAULT_MAX_FILE_MB == 256
    assert caught.value.reason == "too large"
    assert "314572800 bytes" in caught.value.detail
    assert reads == []


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux procfs")
def test_a_file_that_grows_past_its_size_is_cut_off_at_the_limit(tmp_path):
    """procfs files say 0 bytes in ``stat`` and then deliver more: the read loop stops at the limit."""
    ref = ImageRef("status", Path("/proc/self/status"))

    with pytest.raises(ImageError, match="grew past the limit of 10 bytes") as caught:
        read_file(ref, max_bytes=10)

    assert caught.value.reason == "too large"
    assert read_file(ref).startswith(b"Name:")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_a_device_named_in_a_file_list_is_not_read(tmp_path, device):
    """A device such as ``/dev/zero`` named in ``--files-from`` is refused at once, unread: reading
    ``/dev/zero`` would go on until memory ran out (MemoryError after 7 s under a 3 GB limit).
    """
    (ref,) = read_file_list([os.fsencode(device) + b"\n"], tmp_path, allow_outside=True)

    assert reason_of_reading(ref) == "not a regular file"
    with pytest.raises(ImageError, match="is a character device"):
        read_file(ref)


def test_reasons_are_the_module_constants():
    assert (files.REASON_UNREADABLE, files.REASON_NOT_REGULAR, files.REASON_FILE_TOO_LARGE) == (
        "unreadable", "not a regular file", "too large",
    )

