"""Tests for scorer.images.batches: loading one file, ordered, prefetched batches from daemon threads."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from images_support import PRE, SETTINGS, flatten, make_files, many, run_with_timeout
from paths import ROOT
from PIL import ImageFile

from scorer.contract import Preprocessing
from scorer.errors import ScorerError
from scorer.images import load as load_module
from scorer.images.batches import default_workers, iter_batches
from scorer.images.decode import decode
from scorer.images.files import image_key
from scorer.images.listing import ImageRef
from scorer.images.load import DecodeSettings, Loaded, load

NOT_AN_IMAGE = "not a JPEG, PNG, BMP, TIFF, WEBP or GIF file"








@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path / "images")




def threads_named(prefix: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(prefix)]


def threads_left(prefix: str, seconds: float = 5.0) -> list[threading.Thread]:
    """The threads named ``prefix...`` still alive after waiting up to ``seconds`` for them to end.

    Closing the iterator does not wait for the daemon workers; idle ones end within milliseconds.
    """
    deadline = time.monotonic() + seconds
    while (alive := threads_named(prefix)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return alive


@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("batch_size", [1, 7])
def test_results_do_not_depend_on_workers_or_batch_size(files, workers, batch_size):
    refs, failures = files
    expected = [
        decode(ref.source.read_bytes(), PRE, "NHWC")
        for row, ref in enumerate(refs) if row not in failures
    ]

    batches = list(iter_batches(refs, SETTINGS, batch_size=batch_size, workers=workers))

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

    first, second, third = iter_batches(refs, SETTINGS, batch_size=7, workers=2)

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

    (batch,) = iter_batches(refs, DecodeSettings(PRE, "NCHW"), batch_size=4, workers=1)

    assert batch.status == ["not an image", "not an image"]
    assert batch.images.shape == (0, 3, 12, 16)
    assert batch.ok_rows.shape == (0,)


def test_nchw_batches(files):
    refs, _ = files
    nhwc = flatten(list(iter_batches(refs, SETTINGS, batch_size=5, workers=2)))[3]

    nchw = flatten(list(iter_batches(refs, DecodeSettings(PRE, "NCHW"), batch_size=5, workers=2)))[3]

    np.testing.assert_array_equal(nchw, nhwc.transpose(0, 3, 1, 2))


def test_options_reach_decode(files):
    refs, failures = files

    batches = list(iter_batches(refs, DecodeSettings(PRE, max_pixels=100), batch_size=4, workers=2))

    status = flatten(batches)[2]
    failures[9] = "too large"  # the truncated PNG's header is whole: its size fails first
    assert status == [failures.get(row, "too large") for row in range(len(refs))]


def test_file_and_memory_limits_reach_every_row(files):
    refs, failures = files
    sizes = {row: ref.source.stat().st_size for row, ref in enumerate(refs) if row != 15}
    small_files = DecodeSettings(PRE, max_file_bytes=3000)
    small_images = DecodeSettings(PRE, max_image_bytes=100)  # each photo needs > 1 kB, JPEG drafts too

    _, keys, by_file_size, _ = flatten(list(iter_batches(refs, small_files, batch_size=4, workers=2)))
    by_memory = flatten(list(iter_batches(refs, small_images, batch_size=4, workers=2)))[2]

    assert 0 < sum(size > 3000 for size in sizes.values()) < len(sizes)  # both kinds present
    assert by_file_size == [
        "too large" if sizes.get(row, 0) > 3000 else failures.get(row, "ok") for row in range(len(refs))
    ]
    assert all(keys[row] == "" for row, size in sizes.items() if size > 3000)  # never read
    failures[9] = "too large"  # the truncated PNG's header is whole: its memory fails first
    assert by_memory == [failures.get(row, "too large") for row in range(len(refs))]


def test_failure_reasons_travel_in_the_batch(files):
    """``Batch.reasons`` is new: the words for each failed row, ``""`` for the ok rows."""
    refs, failures = files

    (batch,) = iter_batches(refs, SETTINGS, batch_size=len(refs), workers=2)

    assert [row for row, reason in enumerate(batch.reasons) if reason] == sorted(failures)
    assert batch.reasons[3] == NOT_AN_IMAGE
    assert batch.reasons[8] == "the file has zero bytes"
    assert batch.reasons[9] not in ("", "truncated")  # what Pillow or the completeness check said
    assert batch.reasons[15] == "15.jpg: No such file or directory"


def test_load_reads_hashes_and_decodes_one_file(files):
    refs, _ = files
    data = refs[0].source.read_bytes()

    ok = load(refs[0], SETTINGS)
    not_image = load(refs[3], SETTINGS)
    missing = load(refs[15], SETTINGS)

    assert (ok.key, ok.status, ok.reason) == (hashlib.sha256(data).hexdigest(), "ok", "")
    np.testing.assert_array_equal(ok.pixels, decode(data, PRE, "NHWC"))
    assert not_image == Loaded(hashlib.sha256(b"not an image at all\n").hexdigest(), "not an image",
                               NOT_AN_IMAGE, None)
    assert missing == Loaded("", "unreadable", "15.jpg: No such file or directory", None)


def test_no_images_gives_no_batches():
    assert list(iter_batches([], SETTINGS, batch_size=4, workers=2)) == []


@pytest.mark.parametrize(("option", "value"), [("batch_size", 0), ("workers", -1), ("prefetch", 0)])
def test_bad_arguments_fail_at_the_call(files, option, value):
    arguments = {"batch_size": 2, "workers": 1, "prefetch": None}
    arguments[option] = value

    with pytest.raises(ValueError, match=option):
        iter_batches(files[0], SETTINGS, **arguments)


def test_settings_check_the_layout_and_give_the_row_shape():
    with pytest.raises(ValueError, match="layout"):
        DecodeSettings(PRE, "HWC")
    assert SETTINGS.row_shape == (12, 16, 3)
    assert DecodeSettings(PRE, "NCHW").row_shape == (3, 12, 16)
    assert DecodeSettings(Preprocessing(height=5, width=7, color_mode="grayscale")).row_shape == (5, 7, 1)


def test_default_workers_is_between_1_and_8():
    assert 1 <= default_workers() <= 8


# --- bounded prefetch and prompt shutdown --------------------------------------------------------


@pytest.fixture
def decode_calls(monkeypatch):
    """Count decodes; each one is slowed down a little so work is still queued at close."""
    calls = []
    lock = threading.Lock()
    real = load_module.decode

    def slow_decode(*args, **kwargs):
        with lock:
            calls.append(threading.current_thread().name)
        time.sleep(0.01)
        return real(*args, **kwargs)

    monkeypatch.setattr(load_module, "decode", slow_decode)
    return calls




@pytest.mark.parametrize("prefetch", [1, 2, 4])
def test_at_most_prefetch_batches_decode_ahead_of_the_consumer(files, decode_calls, prefetch):
    refs = many(files, 200)
    batches = iter_batches(refs, SETTINGS, batch_size=5, workers=4, prefetch=prefetch)

    first = next(batches)
    time.sleep(0.3)  # let the pool run as far ahead as it may

    assert len(first) == 5
    assert len(decode_calls) <= (prefetch + 1) * 5
    assert all(name.startswith("mcd-decode") for name in decode_calls)
    batches.close()


def test_inline_decoding_uses_the_caller_thread(files, decode_calls):
    refs = many(files, 12)

    list(iter_batches(refs, SETTINGS, batch_size=5, workers=0))

    assert set(decode_calls) == {threading.current_thread().name}




def test_break_shuts_the_pool_down(files, decode_calls):
    refs = many(files, 1000)

    def consume() -> None:
        for batch in iter_batches(refs, SETTINGS, batch_size=8, workers=3):
            assert len(batch) == 8
            break

    run_with_timeout(consume)

    assert threads_left("mcd-decode") == []
    assert len(decode_calls) < 100  # the queued work was cancelled, not finished


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_in_the_consumer_shuts_the_pool_down(files, decode_calls, error):
    refs = many(files, 1000)

    def consume() -> None:
        for _ in iter_batches(refs, SETTINGS, batch_size=8, workers=3):
            raise error("inference failed")

    with pytest.raises(error):
        run_with_timeout(consume)

    assert threads_left("mcd-decode") == []
    assert len(decode_calls) < 100


def test_an_unstarted_iterator_starts_no_threads(files):
    before = len(threads_named("mcd-decode"))

    batches = iter_batches(files[0], SETTINGS, batch_size=4, workers=3)

    assert len(threads_named("mcd-decode")) == before
    batches.close()


def test_the_pipeline_never_imports_tensorflow():
    code = (
        "import sys, scorer.images.batches\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_an_error_in_a_worker_reaches_the_consumer(files, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    def consume() -> None:
        list(iter_batches(files[0], SETTINGS, batch_size=4, workers=2))

    with pytest.raises(ScorerError, match="LOAD_TRUNCATED_IMAGES"):
        run_with_timeout(consume)
    assert threads_left("mcd-decode") == []


# --- a worker stuck for ever ---------------------------------------------------------------------


def test_closing_returns_at_once_while_a_worker_is_stuck_in_a_read(files, monkeypatch):
    """Closing the batches (on Ctrl-C or an inference error) returns at once and leaves the stuck
    reader behind as a daemon thread: waiting for the read, as
    ``ThreadPoolExecutor.shutdown(wait=True)`` does, would hang the run for as long as the read
    (for ever on a hung network file system)."""
    refs, failures = files
    good = list(dict.fromkeys(ref for row, ref in enumerate(refs) if row not in failures))
    stuck = good[6]  # in the second batch, decoded ahead while the first is consumed
    started, release = threading.Event(), threading.Event()
    stuck_threads: list[threading.Thread] = []
    real_read = load_module.read_file

    def read_file(ref: ImageRef, max_bytes: int) -> bytes:
        if ref == stuck:
            stuck_threads.append(threading.current_thread())
            started.set()
            release.wait()
        return real_read(ref, max_bytes)

    monkeypatch.setattr(load_module, "read_file", read_file)
    batches = iter_batches(good, SETTINGS, batch_size=4, workers=2)
    try:
        first = next(batches)
        assert started.wait(5.0), "the stuck read never started"

        run_with_timeout(batches.close, seconds=2.0)

        assert first.refs == good[:4]
        (thread,) = stuck_threads
        assert thread.is_alive() and thread.daemon
    finally:
        release.set()


def test_a_stuck_worker_does_not_keep_the_process_alive(tmp_path):
    """A worker stuck in a read is not joined at interpreter exit: the process ends once the batches
    are closed."""
    script = textwrap.dedent("""
        import sys, threading
        from pathlib import Path
        from PIL import Image
        from scorer.contract import Preprocessing
        from scorer.images import batches, load
        from scorer.images.listing import ImageRef

        refs = []
        for i in range(6):
            path = Path(sys.argv[1]) / f"{i}.png"
            Image.new("RGB", (4, 4)).save(path)
            refs.append(ImageRef(path.name, path))
        started = threading.Event()
        real_read = load.read_file

        def read_file(ref, max_bytes):
            if ref.path == "4.png":
                started.set()
                threading.Event().wait()  # a read that never returns
            return real_read(ref, max_bytes)

        load.read_file = read_file
        settings = load.DecodeSettings(Preprocessing(height=4, width=4))
        rows = batches.iter_batches(refs, settings, batch_size=2, workers=2)
        next(rows)
        assert started.wait(10)
        rows.close()
        print("closed")
    """)

    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                            text=True, timeout=30, cwd=ROOT)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "closed\n"
