"""Image files and helpers shared by the tests of the images stage (batches and worker processes)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from scorer.contract import Preprocessing
from scorer.errors import ImageError
from scorer.images.batches import Batch
from scorer.images.files import read_file
from scorer.images.listing import ImageRef
from scorer.images.load import DecodeSettings

PRE = Preprocessing(height=12, width=16, mean=(0.5,), std=(0.25,))


SETTINGS = DecodeSettings(PRE)


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def photo(seed: int) -> np.ndarray:
    """A different crop of a real photo for every seed, uint8 ``[h, w, 3]``."""
    full = skimage.data.astronaut()
    top, left = 7 * seed % 200, 13 * seed % 200
    return np.ascontiguousarray(full[top : top + 60 + seed, left : left + 90 - seed])


def make_files(folder: Path) -> tuple[list[ImageRef], dict[int, str]]:
    """Twenty files, five of them bad; returns the refs and the expected failure per row."""
    folder.mkdir(parents=True, exist_ok=True)
    refs: list[ImageRef] = []
    failures: dict[int, str] = {}
    for row in range(20):
        name = f"{row:02d}"
        if row == 3:
            name, data = f"{name}.txt", b"not an image at all\n"
            failures[row] = "not an image"
        elif row == 8:
            name, data = f"{name}.jpg", b""
            failures[row] = "empty file"
        elif row == 9:
            full = encode(photo(row), "PNG")
            name, data = f"{name}.png", full[: len(full) // 2]
            failures[row] = "truncated"
        elif row == 15:
            refs.append(ImageRef(f"{name}.jpg", folder / "missing.jpg", None))
            failures[row] = "unreadable"
            continue
        else:
            fmt = ("PNG", "JPEG", "BMP")[row % 3]
            name, data = f"{name}.{fmt.lower()}", encode(photo(row), fmt)
        (folder / name).write_bytes(data)
        refs.append(ImageRef(name, folder / name, None))
    refs.append(refs[0])  # the same file twice keeps two rows
    return refs, failures


def flatten(batches: list[Batch]) -> tuple[list[ImageRef], list[str], list[str], np.ndarray]:
    """Concatenate batches into rows: refs, keys, status, and the ok images in row order."""
    refs, keys, status, stacked = [], [], [], []
    for batch in batches:
        assert len(batch.refs) == len(batch.keys) == len(batch.status) == len(batch.reasons) == len(batch)
        assert batch.images.dtype == np.float32
        assert batch.ok_rows.dtype == np.int64
        assert len(batch.images) == len(batch.ok_rows)
        assert [batch.status[row] for row in batch.ok_rows] == ["ok"] * len(batch.ok_rows)
        refs += batch.refs
        keys += batch.keys
        status += batch.status
        stacked.append(batch.images)
    return refs, keys, status, np.concatenate(stacked)


def many(files: tuple[list[ImageRef], dict[int, str]], count: int) -> list[ImageRef]:
    refs, failures = files
    good = [ref for row, ref in enumerate(refs) if row not in failures]
    return [good[i % len(good)] for i in range(count)]


def run_with_timeout(target, seconds: float = 30.0) -> None:
    """Run ``target`` in a thread and fail, instead of hanging the suite, if it does not end."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            errors.append(error)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "closing the batch iterator hung"
    if errors:
        raise errors[0]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_file(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def link(path: Path, target: Path) -> None:
    """A symbolic link at ``path`` to the folder ``target``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target, target_is_directory=True)


def finishes_within(seconds: float, target: Callable[[], object]) -> object:
    """Run ``target`` in a daemon thread; its result, or fail if it is still running after ``seconds``."""
    result: list[object] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(target())
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if errors:
        raise errors[0]
    return result[0]


def reason_of_reading(ref: ImageRef, **options: int) -> str:
    """The ImageError reason of reading ``ref``, failing the test if the read takes 5 s or more."""

    def read() -> str:
        with pytest.raises(ImageError) as caught:
            read_file(ref, **options)
        return caught.value.reason

    return str(finishes_within(5.0, read))
