"""Tests for scorer.pipeline: ordered, prefetched, thread-pooled batches."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from scorer import pipeline
from scorer.contract import Preprocessing
from scorer.images import ImageRef, decode, image_key
from scorer.pipeline import Batch, default_workers, iter_batches

PRE = Preprocessing(height=12, width=16, mean=(0.5,), std=(0.25,))


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


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path / "images")


def flatten(batches: list[Batch]) -> tuple[list[ImageRef], list[str], list[str], np.ndarray]:
    """Concatenate batches into rows: refs, keys, status, and the ok images in row order."""
    refs, keys, status, stacked = [], [], [], []
    for batch in batches:
        assert len(batch.refs) == len(batch.keys) == len(batch.status) == len(batch)
        assert batch.images.dtype == np.float32
        assert batch.ok_rows.dtype == np.int64
        assert len(batch.images) == len(batch.ok_rows)
        assert [batch.status[row] for row in batch.ok_rows] == ["ok"] * len(batch.ok_rows)
        refs += batch.refs
        keys += batch.keys
        status += batch.status
        stacked.append(batch.images)
    return refs, keys, status, np.concatenate(stacked)


def threads_named(prefix: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(prefix)]


@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("batch_size", [1, 7])
def test_results_do_not_depend_on_workers_or_batch_size(files, workers, batch_size):
    refs, failures = files
    expected = [
        decode(ref.source.read_bytes(), PRE, "NHWC")
        for row, ref in enumerate(refs) if row not in failures
    ]

    batches = list(iter_batches(refs, PRE, "NHWC", batch_size=batch_size, workers=workers))

    assert [len(batch) for batch in batches[:-1]] == [batch_size] * (len(batches) - 1)
    got_refs, keys, status, stacked = flatten(batches)
    assert got_refs == refs
    assert status == [failures.get(row, "ok") for row in range(len(refs))]
    assert keys[15] == ""
    for row, ref in enumerate(refs):
        if row != 15:
            assert keys[row] == image_key(ref.source.read_bytes())
    np.testing.assert_array_equal(stacked, np.stack(expected))


def test_failed_rows_keep_their_position_in_the_batch(files):
    refs, failures = files

    first, second, third = iter_batches(refs, PRE, "NHWC", batch_size=7, workers=2)

    assert first.status[3] == "not an image"
    assert first.ok_rows.tolist() == [0, 1, 2, 4, 5, 6]
    assert second.status[1:3] == ["empty file", "truncated"]
    assert second.ok_rows.tolist() == [0, 3, 4, 5, 6]
    assert third.status[1] == "unreadable"
    assert third.ok_rows.tolist() == [0, 2, 3, 4, 5, 6]
    assert third.images.shape == (6, 12, 16, 3)


def test_a_batch_of_failures_has_empty_images(tmp_path):
    bad = [tmp_path / "a.txt", tmp_path / "b.txt"]
    for path in bad:
        path.write_text("text")
    refs = [ImageRef(path.name, path, None) for path in bad]

    (batch,) = iter_batches(refs, PRE, "NCHW", batch_size=4, workers=1)

    assert batch.status == ["not an image", "not an image"]
    assert batch.images.shape == (0, 3, 12, 16)
    assert batch.ok_rows.shape == (0,)


def test_nchw_batches(files):
    refs, _ = files
    nhwc = flatten(list(iter_batches(refs, PRE, "NHWC", batch_size=5, workers=2)))[3]

    nchw = flatten(list(iter_batches(refs, PRE, "NCHW", batch_size=5, workers=2)))[3]

    np.testing.assert_array_equal(nchw, nhwc.transpose(0, 3, 1, 2))


def test_options_reach_decode(files):
    refs, failures = files

    batches = list(iter_batches(refs, PRE, "NHWC", batch_size=4, workers=2, max_pixels=100))

    status = flatten(batches)[2]
    failures[9] = "too large"  # the truncated PNG's header is whole: its size fails first
    assert status == [failures.get(row, "too large") for row in range(len(refs))]


def test_no_images_gives_no_batches():
    assert list(iter_batches([], PRE, "NHWC", batch_size=4, workers=2)) == []


@pytest.mark.parametrize(
    ("option", "value"),
    [("layout", "HWC"), ("batch_size", 0), ("workers", -1), ("prefetch", 0)],
)
def test_bad_arguments_fail_at_the_call(files, option, value):
    arguments = {"layout": "NHWC", "batch_size": 2, "workers": 1, "prefetch": None}
    arguments[option] = value

    with pytest.raises(ValueError, match=option):
        iter_batches(files[0], PRE, **arguments)


def test_default_workers_is_between_1_and_8():
    assert 1 <= default_workers() <= 8


# --- bounded prefetch and prompt shutdown --------------------------------------------------------


@pytest.fixture
def decode_calls(monkeypatch):
    """Count decodes; each one is slowed down a little so work is still queued at close."""
    calls = []
    lock = threading.Lock()
    real = pipeline.decode

    def slow_decode(*args, **kwargs):
        with lock:
            calls.append(threading.current_thread().name)
        time.sleep(0.01)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "decode", slow_decode)
    return calls


def many(files: tuple[list[ImageRef], dict[int, str]], count: int) -> list[ImageRef]:
    refs, failures = files
    good = [ref for row, ref in enumerate(refs) if row not in failures]
    return [good[i % len(good)] for i in range(count)]


@pytest.mark.parametrize("prefetch", [1, 2, 4])
def test_at_most_prefetch_batches_decode_ahead_of_the_consumer(files, decode_calls, prefetch):
    refs = many(files, 200)
    batches = iter_batches(refs, PRE, "NHWC", batch_size=5, workers=4, prefetch=prefetch)

    first = next(batches)
    time.sleep(0.3)  # let the pool run as far ahead as it may

    assert len(first) == 5
    assert len(decode_calls) <= (prefetch + 1) * 5
    assert all(name.startswith("mcd-decode") for name in decode_calls)
    batches.close()


def test_inline_decoding_uses_the_caller_thread(files, decode_calls):
    refs = many(files, 12)

    list(iter_batches(refs, PRE, "NHWC", batch_size=5, workers=0))

    assert set(decode_calls) == {threading.current_thread().name}


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


def test_break_shuts_the_pool_down(files, decode_calls):
    refs = many(files, 1000)

    def consume() -> None:
        for batch in iter_batches(refs, PRE, "NHWC", batch_size=8, workers=3):
            assert len(batch) == 8
            break

    run_with_timeout(consume)

    assert threads_named("mcd-decode") == []
    assert len(decode_calls) < 100  # the queued work was cancelled, not finished


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_in_the_consumer_shuts_the_pool_down(files, decode_calls, error):
    refs = many(files, 1000)

    def consume() -> None:
        for _ in iter_batches(refs, PRE, "NHWC", batch_size=8, workers=3):
            raise error("inference failed")

    with pytest.raises(error):
        run_with_timeout(consume)

    assert threads_named("mcd-decode") == []
    assert len(decode_calls) < 100


def test_an_unstarted_iterator_starts_no_threads(files):
    before = len(threads_named("mcd-decode"))

    batches = iter_batches(files[0], PRE, "NHWC", batch_size=4, workers=3)

    assert len(threads_named("mcd-decode")) == before
    batches.close()


def test_the_pipeline_never_imports_tensorflow():
    code = (
        "import sys, scorer.pipeline\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
