"""The compact input index: the same refs, order, labels, byte-exact names and digest as the
list of ``ImageRef`` it replaces, and a bounded number of bytes per input."""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from paths import REGRESSION, ROOT

from scorer.images.index import ImageIndex, ImageRef, Packed, encode, sort_order
from scorer.images.listing import discover, read_file_list
from scorer.scoring import inputs_digest

AWKWARD = ["b/z.png", "a.txt", "a/b/c.jpg", "a/b.jpg", "É/x.png", "e/x.png", "zz", "中/文.png",
           "a b/c.png", "a-b/c.png", "😀/x.png", "a/é.png", "Z/upper.png", "a/b/c/d/e.png"]


def awkward_tree(root: Path) -> list[bytes]:
    """Files under names that sort differently by folder walk and as strings, and one name that
    is not UTF-8 (links are test_listing's)."""
    raw = [name.encode() for name in AWKWARD] + [b"bad/\xff\xfename.png", b"bad/ok.png"]
    for name in raw:
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(b"x")
    return raw


def reference_listing(root: Path) -> list[ImageRef]:
    """What discover gave before the index: refs sorted by their path string (os.walk here)."""
    refs = []
    for folder, folders, files in os.walk(root, followlinks=True):
        folders[:] = [f for f in folders if not f.startswith(".")]
        for name in files:
            full = Path(folder) / name
            relative = full.relative_to(root).as_posix()
            parts = PurePosixPath(relative).parts
            refs.append(ImageRef(relative, root.absolute().joinpath(*parts),
                                 parts[0] if len(parts) > 1 else None))
    return sorted(refs, key=lambda ref: ref.path)


def test_discover_equals_the_sorted_list_of_refs(tmp_path):
    awkward_tree(tmp_path)
    index = discover(tmp_path)
    expected = reference_listing(tmp_path)
    assert isinstance(index, ImageIndex)
    assert list(index) == expected and index == expected
    assert [ref.path for ref in index] == sorted(ref.path for ref in expected)
    assert index.has_labels and index.labels() == {ref.label for ref in expected}
    assert list(index.paths()) == [ref.path for ref in expected]
    # the digest a resumed run is checked by is the one the list of refs gives
    assert inputs_digest(index) == inputs_digest(expected)
    bad = next(ref for ref in index if ref.path.startswith("bad/\udcff"))
    assert os.fsencode(bad.path) == b"bad/\xff\xfename.png" and bad.source.is_file()


def test_slices_are_views_and_pickle_as_their_rows(tmp_path):
    awkward_tree(tmp_path)
    index = discover(tmp_path)
    part = index[3:9]
    assert isinstance(part, ImageIndex) and list(part) == list(index)[3:9]
    assert part[0] == index[3] and part[-1] == index[8] and len(index[9:3]) == 0
    assert inputs_digest(part) == inputs_digest(list(index)[3:9])
    again = pickle.loads(pickle.dumps(part))
    assert list(again) == list(part)
    with pytest.raises(IndexError):
        index[len(index)]


def test_a_file_list_keeps_its_order_and_exact_names(tmp_path):
    lines = ["z.png", "./a/../b.png", "sub/x y.png", os.fsdecode(b"\xff.png")]
    index = read_file_list(lines, tmp_path)
    base = os.path.normpath(tmp_path.absolute())
    assert [ref.path for ref in index] == ["z.png", "./a/../b.png", "sub/x y.png",
                                           os.fsdecode(b"\xff.png")]
    assert [ref.source for ref in index] == [Path(os.path.normpath(os.path.join(base, line)))
                                             for line in lines]
    assert not index.has_labels and {ref.label for ref in index} == {None}
    assert inputs_digest(index) == inputs_digest(list(index))


def test_refs_given_as_objects_keep_their_sources():
    refs = [ImageRef("x.png", Path("/somewhere/else/x.png"), "cat"),
            ImageRef("y.png", Path("/other/y.png"), None)]
    index = ImageIndex.of(refs)
    assert list(index) == refs and inputs_digest(index) == inputs_digest(refs)


def test_packed_strings_sort_as_the_strings_do():
    texts = ["b", "a/b", "a.b", "a", "", "é", "\udcff", "\U0001F600", "中", "A", "a\udcfe", "ab"]
    packed = Packed()
    for text in texts:
        packed.append(encode(text))
    buffer, offsets = packed.freeze()
    assert [texts[k] for k in sort_order(buffer, offsets)] == sorted(texts)


def test_bytes_per_input_of_discovery_and_of_a_file_list(tmp_path):
    """50,000 files: the index keeps about 36 bytes an input here (a 20-byte path, offset,
    label), at most twice that while it is built; a list of refs took about 600."""
    root = tmp_path / "many"
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True)
    count = 50_000
    for i in range(count):
        (root / f"c{i % 10}" / f"{i:07d}.png").touch()
    discover(root)  # imports and caches out of the measure
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        index = discover(root)
        retained, peak = (value - base for value in tracemalloc.get_traced_memory())
        inputs_digest(index)
    finally:
        tracemalloc.stop()
    path_bytes = len("c0/0000000.png")
    assert retained / count <= path_bytes + 40, retained / count
    assert peak / count <= 2 * path_bytes + 120, peak / count
    lines = (f"folder/{i:08d}.jpg" for i in range(200_000))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        listed = read_file_list(lines, tmp_path)
        retained = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(listed) == 200_000 and retained / 200_000 <= len("folder/00000000.jpg") + 40


PROBE = """
import resource, sys
from pathlib import Path
from scorer.scoring import ScoreOptions, score
score(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
      ScoreOptions(passes=2, workers=0, device="cpu", commit_seconds=0.5))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_a_run_of_50000_images_grows_the_main_process_by_little_per_image(tmp_path):
    """Peak RSS of the scoring process, 5,000 vs 50,000 tiny images: 384 bytes an image here
    (975 with the list of refs), bounded at 600."""
    from PIL import Image

    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tiny)
    data = tiny.read_bytes()
    peaks = []
    for count in (5_000, 50_000):
        root = tmp_path / f"images{count}"
        for c in range(10):
            (root / f"class{c}").mkdir(parents=True)
        for i in range(count):
            (root / f"class{i % 10}" / f"image_{i:07d}.png").write_bytes(data)
        run = subprocess.run([sys.executable, "-c", PROBE, str(root), str(tmp_path / f"{count}.h5"),
                              str(REGRESSION / "model.onnx")], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
        assert run.returncode in (0, 3), run.stderr
        peaks.append(int(run.stdout.split()[-1]) * 1024)
    per_image = (peaks[1] - peaks[0]) / 45_000
    assert per_image <= 600, per_image
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
