"""scorer.images.listing: discovery of a folder, label hints and file lists."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest
from images_support import PNG_SIGNATURE, finishes_within, link, reason_of_reading, write_file

from scorer.errors import ImageError, InputError
from scorer.images.files import read_file
from scorer.images.listing import ImageRef, discover, label_hint, read_file_list

# --- discovery -----------------------------------------------------------------------------------


def test_discover_sorts_by_relative_path_and_labels_by_top_folder(tmp_path):
    for name in ["b.jpg", "a.txt", "cat/x.png", "cat/sub/y.png", "dog/z.jpg", "Zebra/q.png"]:
        write_file(tmp_path / name)

    refs = discover(tmp_path)

    assert [ref.path for ref in refs] == [
        "Zebra/q.png", "a.txt", "b.jpg", "cat/sub/y.png", "cat/x.png", "dog/z.jpg",
    ]
    assert [ref.label for ref in refs] == ["Zebra", None, None, "cat", "cat", "dog"]
    for ref in refs:
        assert ref.source.is_absolute()
        assert ref.source == (tmp_path / ref.path).absolute()


def test_discover_skips_hidden_files_and_folders_but_keeps_non_images(tmp_path):
    write_file(tmp_path / "keep.txt")
    write_file(tmp_path / ".DS_Store")
    write_file(tmp_path / ".git" / "objects" / "abc")
    write_file(tmp_path / "cat" / ".thumbs" / "t.jpg")
    write_file(tmp_path / "cat" / ".hidden.jpg")
    write_file(tmp_path / "cat" / "empty.jpg", b"")

    assert [ref.path for ref in discover(tmp_path)] == ["cat/empty.jpg", "keep.txt"]


def test_discover_accepts_a_relative_root(tmp_path, monkeypatch):
    write_file(tmp_path / "imgs" / "cat" / "a.png")
    monkeypatch.chdir(tmp_path)

    (ref,) = discover(Path("imgs"))

    assert ref.path == "cat/a.png"
    assert ref.source == tmp_path / "imgs" / "cat" / "a.png"


def test_discover_lists_linked_folders_once_under_their_real_path_and_keeps_broken_links(tmp_path):
    """A folder reached by a link and by its real path is listed once, under the real path.

    ``dog/b.png`` is listed once, as itself with the label ``dog``: never again, nor instead, as
    ``cat/to_dog/b.png`` with the label ``cat``.
    """
    write_file(tmp_path / "cat" / "a.png")
    write_file(tmp_path / "dog" / "b.png")
    link(tmp_path / "cat" / "loop", tmp_path / "cat")
    link(tmp_path / "cat" / "to_dog", tmp_path / "dog")
    link(tmp_path / "dog" / "to_cat", tmp_path / "cat")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / "cat" / "alias.png").symlink_to(tmp_path / "dog" / "b.png")

    refs = discover(tmp_path)

    assert [(ref.path, ref.label) for ref in refs] == [
        ("cat/a.png", "cat"), ("cat/alias.png", "cat"), ("dangling.png", None), ("dog/b.png", "dog"),
    ]
    assert read_file(refs[1]) == b"x"
    with pytest.raises(ImageError) as caught:
        read_file(refs[2])
    assert caught.value.reason == "unreadable"


def test_discover_follows_links_to_folders_outside_the_root_once(tmp_path):
    write_file(tmp_path / "elsewhere" / "x.png")
    write_file(tmp_path / "elsewhere" / "deeper" / "y.png")
    root = tmp_path / "root"
    link(root / "second", tmp_path / "elsewhere")
    link(root / "first", tmp_path / "elsewhere")
    link(root / "first" / "deeper" / "up", tmp_path / "elsewhere")  # a loop through the link target

    refs = discover(root)

    assert [(ref.path, ref.label) for ref in refs] == [
        ("first/deeper/y.png", "first"), ("first/x.png", "first"),
    ]
    assert refs[1].source == root / "first" / "x.png"


def test_discover_mutually_linked_folders_each_once(tmp_path):
    """``a/link_to_b -> b``, ``b/link_to_a -> a`` and several links to one folder.

    Each real folder is listed once, so each image is one row with its own folder's label, on
    every call. Following each link that does not lead back to a folder above it would list every
    image again under every chain of links: 10 rows here, ``2.png`` five times (``b/``,
    ``a/link_to_b/``, ``c1/``, ``c2/``, ``c3/``), four of them with a wrong label.
    """
    root = tmp_path / "images"
    write_file(root / "a" / "1.png")
    write_file(root / "b" / "2.png")
    link(root / "a" / "link_to_b", root / "b")
    link(root / "b" / "link_to_a", root / "a")
    for name in ("c1", "c2", "c3"):
        link(root / name, root / "b")

    first = discover(root)

    assert [(ref.path, ref.label) for ref in first] == [("a/1.png", "a"), ("b/2.png", "b")]
    assert discover(root) == first


def test_discover_lists_a_mesh_of_folder_links_in_bounded_time(tmp_path, monkeypatch):
    """Seven folders each linking to all the others, plus two more links to one of them.

    Each real folder is listed once: eight ``scandir`` calls, root included. A walk following every
    chain of links that does not revisit a folder of the same chain would take 1,957 chains from
    each of the 9 entries of the root, so 17,614 folders listed and 17,613 rows, in about 31 s
    (growing factorially with more folders); the budget stops such a walk after 100 calls.
    """
    root = tmp_path / "images"
    names = [f"n{i}" for i in range(7)]
    for name in names:
        write_file(root / name / f"{name}.png")
        for other in names:
            if other != name:
                link(root / name / f"to_{other}", root / other)
    link(root / "alias1", root / "n3")
    link(root / "alias2", root / "n3")
    listed: list[str] = []
    real_scandir = os.scandir

    def counting_scandir(path):
        listed.append(os.fspath(path))
        if len(listed) > 100:
            raise RuntimeError("discover listed more than 100 folders for 8 real ones")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)

    refs = finishes_within(5.0, lambda: discover(root))

    assert [(ref.path, ref.label) for ref in refs] == [(f"{n}/{n}.png", n) for n in names]
    assert len(listed) == 8
    assert sorted(os.path.realpath(path) for path in listed) == sorted(
        os.path.realpath(path) for path in [root, *(root / name for name in names)]
    )


def test_discover_refuses_to_skip_an_unlistable_folder(tmp_path, monkeypatch):
    write_file(tmp_path / "cat" / "a.png")
    write_file(tmp_path / "dog" / "b.png")
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("dog"):  # as if chmod 0, which root would ignore
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)

    with pytest.raises(InputError, match=r"cannot list folder '.*dog': Permission denied"):
        discover(tmp_path)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "only hidden"])
def test_discover_rejects_unusable_roots(tmp_path, case):
    root = tmp_path / "root"
    if case == "file":
        write_file(root)
    elif case == "empty":
        root.mkdir()
    elif case == "only hidden":
        write_file(root / ".hidden")

    with pytest.raises(InputError) as caught:
        discover(root)

    message = str(caught.value)
    assert str(root) in message
    expected = {
        "missing": "does not exist", "file": "expected a folder",
        "empty": "holds no files", "only hidden": "hidden",
    }[case]
    assert expected in message


def test_special_files_in_the_folder_are_kept_and_fail_without_blocking(tmp_path):
    """A FIFO, a character device (a link to /dev/null) and a socket in IMAGES.

    All three are listed, though ``os.path.isfile`` is false for them, and each fails as ``not a
    regular file`` without being read: reading the FIFO would block forever waiting for a writer,
    and /dev/null would read as an empty file.
    """
    root = tmp_path / "imgs"
    write_file(root / "cat" / "a.png", PNG_SIGNATURE)
    os.mkfifo(root / "cat" / "pipe.png")
    (root / "null.png").symlink_to("/dev/null")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(os.fspath(root / "s.png"))

        refs = discover(root)

        assert [ref.path for ref in refs] == ["cat/a.png", "cat/pipe.png", "null.png", "s.png"]
        assert read_file(refs[0]) == PNG_SIGNATURE
        try:
            for ref in refs[1:]:
                assert reason_of_reading(ref) == "not a regular file", ref.path
        finally:  # if the FIFO read is stuck in open(), a writer lets it finish (ENXIO: none was)
            with contextlib.suppress(OSError):
                os.close(os.open(root / "cat" / "pipe.png", os.O_WRONLY | os.O_NONBLOCK))
    finally:
        server.close()


def test_the_fifo_error_says_what_the_file_is(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")

    with pytest.raises(ImageError, match=r"pipe.png is a FIFO; only regular files are read"):
        finishes_within(5.0, lambda: read_file(ImageRef("pipe.png", tmp_path / "pipe.png")))


def test_a_name_that_is_not_utf8_is_discovered_and_read_exactly(tmp_path):
    raw = b"bad\xff.png"
    fd = os.open(os.path.join(os.fsencode(tmp_path), raw), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, PNG_SIGNATURE)
    os.close(fd)

    (ref,) = discover(tmp_path)

    assert ref.path == "bad\udcff.png"
    assert os.fsencode(ref.path) == raw
    assert os.fsencode(ref.source) == os.path.join(os.fsencode(tmp_path), raw)
    assert read_file(ref) == PNG_SIGNATURE


# --- label hint ----------------------------------------------------------------------------------


def test_label_hint_names_the_class_folder_when_every_image_is_under_it(tmp_path):
    root = tmp_path / "images"
    for name in ["animals/cat/1.png", "animals/cat/2.png", "animals/dog/3.png", "animals/4.png"]:
        write_file(root / name)

    hint = label_hint(discover(root), root)

    assert hint is not None
    assert "'animals/'" in hint
    assert "'animals'" in hint
    assert f"IMAGES={root / 'animals'}" in hint


@pytest.mark.parametrize(
    "names",
    [
        ["cat/1.png", "dog/2.png"],
        ["cat/a/1.png", "dog/b/2.png"],
        ["cat/1.png", "cat/2.png"],
        ["1.png", "2.png"],
        ["cat/a/1.png", "loose.png"],
    ],
    ids=["two-classes", "two-classes-nested", "one-class-flat", "no-classes", "class-and-loose-file"],
)
def test_label_hint_is_none_otherwise(tmp_path, names):
    for name in names:
        write_file(tmp_path / name)

    assert label_hint(discover(tmp_path), tmp_path) is None


# --- file lists ----------------------------------------------------------------------------------


def test_read_file_list_skips_comments_and_resolves_relative_paths(tmp_path):
    base = tmp_path / "base"
    inside = base / "deep" / "c.gif"
    elsewhere = tmp_path / "elsewhere" / "d.gif"
    lines = ["\ufeff# images to score\n", "\n", "b.jpg\n", "  sub/a.png  \r\n", "   \n",
             "  # indented comment\n", f"{inside}\n", "b.jpg"]

    refs = read_file_list(lines, base)
    outside = read_file_list([f"{elsewhere}\n", "b.jpg\n"], base, allow_outside=True)

    assert [ref.path for ref in refs] == ["b.jpg", "sub/a.png", str(inside), "b.jpg"]
    assert [ref.source for ref in refs] == [base / "b.jpg", base / "sub" / "a.png", inside, base / "b.jpg"]
    assert all(ref.label is None for ref in refs)
    assert [(ref.path, ref.source) for ref in outside] == [
        (str(elsewhere), elsewhere), ("b.jpg", base / "b.jpg"),
    ]


def test_read_file_list_rejects_a_list_without_paths(tmp_path):
    with pytest.raises(InputError, match="names no images"):
        read_file_list(["# only a comment", "", "  "], tmp_path)
    with pytest.raises(InputError, match="names no images"):
        read_file_list([b"# only a comment\n", b"\r\n"], tmp_path)


@pytest.mark.parametrize(
    "line",
    ["../../etc/shadow", "sub/../../x.png", "../imgs2/a.png", "/etc/passwd", "{tmp}/imgs2/a.png"],
    ids=["dotdot", "dotdot-after-sub", "sibling-with-the-same-prefix", "absolute", "absolute-sibling"],
)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_read_file_list_refuses_paths_outside_the_folder(tmp_path, line, as_bytes):
    """A list line outside the folder (``../../etc/shadow``, an absolute path, a sibling with the
    same prefix) is refused, naming the line and --allow-outside, which lets it through."""
    base = tmp_path / "imgs"
    line = line.format(tmp=tmp_path)
    lines = ["ok.png", "# a comment still counts as a line", f"{line}\n"]
    encoded = [os.fsencode(text) for text in lines] if as_bytes else lines

    with pytest.raises(InputError) as caught:
        read_file_list(encoded, base)
    allowed = read_file_list(encoded, base, allow_outside=True)

    message = str(caught.value)
    assert f"line 3 of the file list, {line!r}, is outside the image folder" in message
    assert "--allow-outside" in message
    assert allowed[1].path == line
    assert allowed[1].source == Path(os.path.normpath(base / line))


@pytest.mark.parametrize(
    ("line", "relative"),
    [
        ("sub/../x.png", "x.png"),
        ("./a.png", "a.png"),
        ("a//b/./c.png", "a/b/c.png"),
        ("a/b/../../c.png", "c.png"),
        ("{base}/sub/y.png", "sub/y.png"),
        ("../imgs/z.png", "z.png"),
    ],
)
def test_read_file_list_accepts_paths_that_stay_inside(tmp_path, line, relative):
    base = tmp_path / "imgs"
    line = line.format(base=base)

    (ref,) = read_file_list([line], base)

    assert ref.path == line
    assert ref.source == base / relative


def test_read_file_list_keeps_names_that_are_not_utf8_exactly(tmp_path):
    """Bytes lines (``--files-from`` is read in binary) keep any name, UTF-8 or not, byte for byte."""
    raw_names = [b"caf\xe9.png", b"sub/\xff\xfe.png", "naïve.png".encode()]
    for raw in raw_names:
        path = os.path.join(os.fsencode(tmp_path), raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(raw)
    lines = [b"\xef\xbb\xbf# a list with a byte order mark\n", raw_names[0] + b"\r\n",
             b"  " + raw_names[1] + b"\n", raw_names[2]]

    refs = read_file_list(lines, tmp_path)

    assert [ref.path for ref in refs] == [os.fsdecode(raw) for raw in raw_names]
    assert refs[0].path == "caf\udce9.png"
    assert refs[2].path == "naïve.png"
    for ref, raw in zip(refs, raw_names, strict=True):
        assert os.fsencode(ref.path) == raw
        assert os.fsencode(ref.source) == os.path.join(os.fsencode(tmp_path), raw)
        assert read_file(ref) == raw


@pytest.mark.parametrize("line", [b"a.png\x00b.png\x00", "a.png\x00"], ids=["find-print0", "str"])
def test_read_file_list_refuses_a_nul_character(tmp_path, line):
    """A path with a NUL (``os.open`` would raise ValueError in a worker and stop the whole run) is
    a usage error naming the line."""
    with pytest.raises(InputError, match="line 2 of the file list holds a NUL"):
        read_file_list([b"ok.png\n" if isinstance(line, bytes) else "ok.png\n", line], tmp_path)


