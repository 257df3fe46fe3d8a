"""Tests for scorer.images: discovery, file lists, decoding, preprocessing and failure reasons."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from scorer import images
from scorer.contract import Preprocessing
from scorer.errors import ImageError, InputError, ScorerError
from scorer.images import ImageRef, decode, discover, image_key, read_bytes, read_file_list

INV_255 = np.float32(1.0 / 255.0)  # the default scale, as decode applies it


def encode(array: np.ndarray | Image.Image, fmt: str, **options: object) -> bytes:
    """The bytes of ``array`` saved by Pillow as ``fmt``."""
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def astronaut(width: int, height: int) -> np.ndarray:
    """A real photo, uint8 ``[height, width, 3]``."""
    photo = Image.fromarray(skimage.data.astronaut())
    return np.asarray(photo.resize((width, height), Image.Resampling.BILINEAR))


def gradient(width: int, height: int) -> np.ndarray:
    """A smooth, asymmetric uint8 ``[height, width, 3]`` image that survives JPEG well."""
    y, x = np.mgrid[0:height, 0:width]
    red = 255 * x / max(1, width - 1)
    green = 255 * y / max(1, height - 1)
    blue = 255 * (x + 2 * y) / max(1, width - 1 + 2 * (height - 1))
    return np.stack([red, green, blue], axis=2).round().astype(np.uint8)


def reference(array: np.ndarray, width: int, height: int, method=Image.Resampling.BILINEAR):
    """What decode should give for a lossless rgb file with the default preprocessing."""
    resized = Image.fromarray(array).resize((width, height), method)
    return np.asarray(resized, dtype=np.float32) * INV_255


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but whose pixel data is a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


RGB = Preprocessing(height=32, width=40)


# --- discovery -----------------------------------------------------------------------------------


def test_discover_sorts_by_relative_path_and_labels_by_top_folder(tmp_path):
    for name in ["b.jpg", "a.txt", "cat/x.png", "cat/sub/y.png", "dog/z.jpg", "Zebra/q.png"]:
        write(tmp_path / name)

    refs = discover(tmp_path)

    assert [ref.path for ref in refs] == [
        "Zebra/q.png", "a.txt", "b.jpg", "cat/sub/y.png", "cat/x.png", "dog/z.jpg",
    ]
    assert [ref.label for ref in refs] == ["Zebra", None, None, "cat", "cat", "dog"]
    for ref in refs:
        assert ref.source.is_absolute()
        assert ref.source == (tmp_path / ref.path).absolute()


def test_discover_skips_hidden_files_and_folders_but_keeps_non_images(tmp_path):
    write(tmp_path / "keep.txt")
    write(tmp_path / ".DS_Store")
    write(tmp_path / ".git" / "objects" / "abc")
    write(tmp_path / "cat" / ".thumbs" / "t.jpg")
    write(tmp_path / "cat" / ".hidden.jpg")
    write(tmp_path / "cat" / "empty.jpg", b"")

    assert [ref.path for ref in discover(tmp_path)] == ["cat/empty.jpg", "keep.txt"]


def test_discover_accepts_a_relative_root(tmp_path, monkeypatch):
    write(tmp_path / "imgs" / "cat" / "a.png")
    monkeypatch.chdir(tmp_path)

    (ref,) = discover(Path("imgs"))

    assert ref.path == "cat/a.png"
    assert ref.source == tmp_path / "imgs" / "cat" / "a.png"


def test_discover_follows_folder_links_but_not_cycles_and_keeps_broken_links(tmp_path):
    write(tmp_path / "cat" / "a.png")
    write(tmp_path / "dog" / "b.png")
    (tmp_path / "cat" / "loop").symlink_to(tmp_path / "cat", target_is_directory=True)
    (tmp_path / "cat" / "to_dog").symlink_to(tmp_path / "dog", target_is_directory=True)
    (tmp_path / "dog" / "to_cat").symlink_to(tmp_path / "cat", target_is_directory=True)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "missing.png")

    refs = discover(tmp_path)

    assert [ref.path for ref in refs] == [
        "cat/a.png", "cat/to_dog/b.png", "dangling.png", "dog/b.png", "dog/to_cat/a.png",
    ]
    with pytest.raises(ImageError) as caught:
        read_bytes(refs[2])
    assert caught.value.reason == "unreadable"


def test_discover_refuses_to_skip_an_unlistable_folder(tmp_path, monkeypatch):
    write(tmp_path / "cat" / "a.png")
    write(tmp_path / "dog" / "b.png")
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
        write(root)
    elif case == "empty":
        root.mkdir()
    elif case == "only hidden":
        write(root / ".hidden")

    with pytest.raises(InputError) as caught:
        discover(root)

    message = str(caught.value)
    assert str(root) in message
    expected = {
        "missing": "does not exist", "file": "expected a folder",
        "empty": "holds no files", "only hidden": "hidden",
    }[case]
    assert expected in message


# --- file lists and reading ----------------------------------------------------------------------


def test_read_file_list_skips_comments_and_resolves_relative_paths(tmp_path):
    absolute = tmp_path / "elsewhere" / "c.gif"
    lines = ["\ufeff# images to score\n", "\n", "b.jpg\n", "  sub/a.png  \r\n", "   \n",
             "  # indented comment\n", f"{absolute}\n", "b.jpg"]

    refs = read_file_list(lines, tmp_path / "base")

    assert [ref.path for ref in refs] == ["b.jpg", "sub/a.png", str(absolute), "b.jpg"]
    assert [ref.source for ref in refs] == [
        tmp_path / "base" / "b.jpg", tmp_path / "base" / "sub" / "a.png", absolute,
        tmp_path / "base" / "b.jpg",
    ]
    assert all(ref.label is None for ref in refs)


def test_read_file_list_rejects_a_list_without_paths(tmp_path):
    with pytest.raises(InputError, match="names no images"):
        read_file_list(["# only a comment", "", "  "], tmp_path)


def test_read_bytes_and_image_key(tmp_path):
    path = write(tmp_path / "a.bin", b"hello")

    data = read_bytes(ImageRef("a.bin", path, None))

    assert data == b"hello"
    assert image_key(data) == hashlib.sha256(b"hello").hexdigest()


@pytest.mark.parametrize("case", ["missing", "directory"])
def test_read_bytes_reports_unreadable_files(tmp_path, case):
    source = tmp_path / "x.jpg"
    if case == "directory":
        source.mkdir()

    with pytest.raises(ImageError) as caught:
        read_bytes(ImageRef("x.jpg", source, None))

    assert caught.value.reason == "unreadable"
    assert "x.jpg" in caught.value.detail


# --- formats, shapes and values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [
        ("PNG", {}, 0.0),
        ("BMP", {}, 0.0),
        ("TIFF", {}, 0.0),
        ("TIFF", {"compression": "tiff_lzw"}, 0.0),
        ("WEBP", {"lossless": True}, 0.0),
        ("JPEG", {"quality": 95}, 0.03),
        ("WEBP", {"quality": 90}, 0.04),
        ("GIF", {}, 0.05),
    ],
)
def test_each_format_decodes_to_the_resized_image(fmt, options, tolerance):
    photo = astronaut(80, 64)

    x = decode(encode(photo, fmt, **options), RGB, "NHWC")

    assert x.shape == (32, 40, 3)
    assert x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    error = np.abs(x - reference(photo, 40, 32)).mean()
    assert error <= tolerance + 1e-7


def test_gif_uses_the_first_frame():
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    blue = Image.new("RGB", (8, 8), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100)

    x = decode(data, Preprocessing(height=8, width=8), "NHWC")

    np.testing.assert_allclose(x[0, 0], [1.0, 0.0, 0.0])


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic", "lanczos", "box"])
def test_resize_method_is_pillows(method):
    photo = astronaut(70, 50)
    pre = Preprocessing(height=20, width=30, resize_method=method)

    x = decode(encode(photo, "PNG"), pre, "NHWC")

    expected = reference(photo, 30, 20, getattr(Image.Resampling, method.upper()))
    np.testing.assert_array_equal(x, expected)


def test_nchw_is_the_transposed_nhwc():
    data = encode(astronaut(50, 30), "PNG")
    pre = Preprocessing(height=16, width=24, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))

    nhwc = decode(data, pre, "NHWC")
    nchw = decode(data, pre, "NCHW")

    assert nchw.shape == (3, 16, 24)
    assert nchw.flags.c_contiguous
    np.testing.assert_array_equal(nchw, nhwc.transpose(2, 0, 1))


def test_unknown_layout_is_a_programming_error():
    with pytest.raises(ValueError, match="layout"):
        decode(encode(astronaut(8, 8), "PNG"), RGB, "HWC")


# --- EXIF orientation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "rotate", "wrong"),
    [
        (3, lambda a: np.rot90(a, 2), lambda a: a),
        (6, lambda a: np.rot90(a, -1), lambda a: np.rot90(a, 1)),
        (8, lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),
        (2, lambda a: a[:, ::-1], lambda a: a),
    ],
    ids=["rotate-180", "rotate-cw", "rotate-ccw", "mirror"],
)
@pytest.mark.parametrize("draft", [True, False])
def test_exif_orientation_is_applied(orientation, rotate, wrong, draft):
    pixels = gradient(60, 40)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(pixels, "JPEG", quality=95, exif=exif.tobytes())
    expected = rotate(pixels).astype(np.float32) / 255.0
    height, width = expected.shape[:2]

    x = decode(data, Preprocessing(height=height, width=width), "NHWC", draft=draft)

    assert x.shape == (height, width, 3)
    assert np.abs(x - expected).mean() < 0.01
    assert np.abs(x - wrong(pixels).astype(np.float32) / 255.0).mean() > 0.1


def test_exif_orientation_with_draft_reduction_matches_full_decode():
    pixels = gradient(800, 400)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(pixels, "JPEG", quality=95, exif=exif.tobytes())
    pre = Preprocessing(height=100, width=50)

    drafted = decode(data, pre, "NHWC", draft=True)
    full = decode(data, pre, "NHWC", draft=False)

    assert drafted.shape == (100, 50, 3)
    assert np.abs(drafted - full).mean() < 0.01


# --- colour modes --------------------------------------------------------------------------------


def test_grayscale_model_gets_pillow_luma():
    photo = astronaut(40, 32)
    pre = Preprocessing(height=32, width=40, color_mode="grayscale")

    x = decode(encode(photo, "PNG"), pre, "NHWC")

    assert x.shape == (32, 40, 1)
    expected = np.asarray(Image.fromarray(photo).convert("L"), dtype=np.float32) * INV_255
    np.testing.assert_array_equal(x[:, :, 0], expected)


def test_grayscale_file_fills_three_channels():
    gray = astronaut(40, 32)[:, :, 1]

    x = decode(encode(gray, "PNG"), RGB, "NHWC")

    assert x.shape == (32, 40, 3)
    np.testing.assert_array_equal(x[:, :, 0], gray.astype(np.float32) * INV_255)
    np.testing.assert_array_equal(x[:, :, 0], x[:, :, 2])


def solid(mode: str, size: tuple[int, int], value: object, **info: object) -> Image.Image:
    image = Image.new(mode, size, value)
    image.info.update(info)
    return image


def palette_with_transparency() -> Image.Image:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    image.info["transparency"] = 1
    return image


def int32_image(value: int) -> Image.Image:
    return Image.fromarray(np.full((4, 4), value, dtype=np.int32))


def float_image(value: float) -> Image.Image:
    return Image.fromarray(np.full((4, 4), value, dtype=np.float32))


@pytest.mark.parametrize(
    ("image", "fmt", "rgb"),
    [
        (solid("RGBA", (4, 4), (10, 20, 30, 0)), "PNG", (10, 20, 30)),
        (solid("LA", (4, 4), (100, 7)), "PNG", (100, 100, 100)),
        (palette_with_transparency(), "PNG", (200, 100, 50)),
        (palette_with_transparency(), "GIF", (200, 100, 50)),
        (solid("1", (4, 4), 1), "PNG", (255, 255, 255)),
        (solid("I;16", (4, 4), 65535), "PNG", (255, 255, 255)),
        (solid("I;16", (4, 4), 32896), "PNG", (128, 128, 128)),
        (int32_image(65535), "TIFF", (255, 255, 255)),
        (int32_image(100_000), "TIFF", (255, 255, 255)),
        (float_image(0.5), "TIFF", (127.5, 127.5, 127.5)),
        (float_image(200.0), "TIFF", (200, 200, 200)),
        (float_image(-3.0), "TIFF", (0, 0, 0)),
        (solid("CMYK", (4, 4), (0, 0, 0, 0)), "JPEG", (255, 255, 255)),
        (solid("CMYK", (4, 4), (255, 0, 0, 0)), "TIFF", (0, 255, 255)),
    ],
    ids=["RGBA", "LA", "P-transparency-png", "P-transparency-gif", "1", "I16-max", "I16-half",
         "I32", "I32-clipped", "F-unit", "F-255", "F-negative", "CMYK-jpeg", "CMYK-tiff"],
)
@pytest.mark.parametrize("color_mode", ["rgb", "grayscale"])
def test_every_mode_converts_to_0_255(image, fmt, rgb, color_mode):
    pre = Preprocessing(height=4, width=4, color_mode=color_mode, scale=1.0)
    data = encode(image, fmt)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = decode(data, pre, "NHWC")

    if color_mode == "rgb":
        expected = np.broadcast_to(np.asarray(rgb, dtype=np.float32), (4, 4, 3))
    else:
        luma = np.asarray(Image.new("RGB", (1, 1), tuple(round(v) for v in rgb)).convert("L"))
        same = len(set(rgb)) == 1
        expected = np.full((4, 4, 1), rgb[0] if same else float(luma[0, 0]), dtype=np.float32)
    np.testing.assert_allclose(x, expected, atol=1.0 if fmt == "JPEG" else 1e-4)


# --- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pre", "expected"),
    [
        (Preprocessing(height=2, width=3), [10 / 255, 20 / 255, 30 / 255]),
        (
            Preprocessing(height=2, width=3, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125)),
            [(10 / 255 - 0.1) / 0.5, (20 / 255 - 0.2) / 0.25, (30 / 255 - 0.3) / 0.125],
        ),
        (
            Preprocessing(height=2, width=3, scale=1.0, offset=-127.5, mean=(1.0,), std=(2.0,)),
            [(10 - 127.5 - 1) / 2, (20 - 127.5 - 1) / 2, (30 - 127.5 - 1) / 2],
        ),
        (
            Preprocessing(height=2, width=3, scale=2 / 255, offset=-1.0, mean=None, std=(4.0,)),
            [(20 / 255 - 1) / 4, (40 / 255 - 1) / 4, (60 / 255 - 1) / 4],
        ),
    ],
)
def test_normalisation_matches_hand_computed_values(pre, expected):
    data = encode(solid("RGB", (5, 4), (10, 20, 30)), "PNG")

    x = decode(data, pre, "NHWC")

    np.testing.assert_allclose(x, np.broadcast_to(expected, (2, 3, 3)), rtol=1e-6, atol=1e-6)


def test_grayscale_normalisation_with_one_mean_and_std():
    pre = Preprocessing(height=2, width=2, color_mode="grayscale", mean=(0.5,), std=(0.25,))

    x = decode(encode(solid("L", (2, 2), 51), "PNG"), pre, "NCHW")

    np.testing.assert_allclose(x, np.full((1, 2, 2), (51 / 255 - 0.5) / 0.25), rtol=1e-6)


@given(
    colour=st.tuples(*[st.integers(0, 255)] * 3),
    scale=st.floats(0.001, 2.0),
    offset=st.floats(-200.0, 200.0),
    mean=st.tuples(*[st.floats(-1.0, 1.0)] * 3),
    std=st.tuples(*[st.floats(0.05, 3.0)] * 3),
)
@settings(max_examples=30, deadline=None)
def test_normalisation_of_solid_images_is_affine_per_channel(colour, scale, offset, mean, std):
    pre = Preprocessing(height=3, width=2, scale=scale, offset=offset, mean=mean, std=std)

    x = decode(encode(solid("RGB", (7, 5), colour), "PNG"), pre, "NHWC")

    expected = (np.asarray(colour) * scale + offset - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(x, np.broadcast_to(expected, (3, 2, 3)), rtol=1e-4, atol=1e-3)


# --- JPEG draft mode -----------------------------------------------------------------------------


@pytest.fixture
def resize_sizes(monkeypatch):
    """The size of every image Pillow resizes during the test."""
    sizes = []
    original = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sizes.append(self.size)
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    return sizes


@pytest.mark.parametrize("color_mode", ["rgb", "grayscale"])
def test_draft_decodes_large_jpegs_smaller_and_close_to_full(resize_sizes, color_mode):
    data = encode(astronaut(2048, 1536), "JPEG", quality=90)
    pre = Preprocessing(height=160, width=224, color_mode=color_mode)
    resize_sizes.clear()

    drafted = decode(data, pre, "NHWC", draft=True)
    full = decode(data, pre, "NHWC", draft=False)

    assert resize_sizes == [(256, 192), (2048, 1536)]  # 1/8 scale: still >= 224x160
    assert drafted.shape == full.shape == (160, 224, pre.channels)
    assert np.abs(drafted - full).mean() < 0.01
    assert np.abs(drafted - full).max() < 0.25


def test_draft_never_goes_below_the_target_size(resize_sizes):
    data = encode(astronaut(1000, 600), "JPEG")
    resize_sizes.clear()

    decode(data, Preprocessing(height=300, width=240), "NHWC", draft=True)

    (size,) = resize_sizes
    assert size == (500, 300)  # 1/2 scale; 1/4 would give 150 rows < 300


def test_draft_is_not_applied_to_other_formats(resize_sizes):
    data = encode(astronaut(1000, 600), "PNG")
    resize_sizes.clear()

    decode(data, Preprocessing(height=60, width=100), "NHWC")

    assert resize_sizes == [(1000, 600)]


# --- failures ------------------------------------------------------------------------------------


def reason_of(data: bytes, **options: object) -> str:
    with pytest.raises(ImageError) as caught:
        decode(data, RGB, "NHWC", **options)
    return caught.value.reason


def test_zero_bytes_is_an_empty_file():
    assert reason_of(b"") == "empty file"


@pytest.mark.parametrize(
    "data",
    [b"hello, this is a text file\n", b"\x00" * 100, b"P6\n4 4\n255\n" + b"\x00" * 48],
    ids=["text", "zeros", "ppm"],
)
def test_non_images_and_other_formats_are_not_images(data):
    assert reason_of(data) == "not an image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "GIF", "BMP"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_files_are_rejected(fmt, keep):
    data = encode(astronaut(256, 256), fmt)

    assert reason_of(data[: int(len(data) * keep)]) == "truncated"


def test_load_truncated_images_stays_off(monkeypatch):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    with pytest.raises(ScorerError, match="LOAD_TRUNCATED_IMAGES"):
        decode(encode(astronaut(8, 8), "PNG"), RGB, "NHWC")


@pytest.mark.parametrize(
    ("width", "height"),
    [(100_000, 100_000), (10_000, 10_000)],
    ids=["pillow-error", "pillow-warning"],
)
def test_decompression_bombs_are_too_large(width, height):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reason_of(png_header_only(width, height)) == "too large"


def test_max_pixels_is_checked_before_decoding():
    data = encode(astronaut(64, 48), "PNG")

    assert reason_of(data, max_pixels=64 * 48 - 1) == "too large"
    assert decode(data, RGB, "NHWC", max_pixels=64 * 48).shape == (32, 40, 3)


def test_bomb_warning_is_not_left_as_an_error_filter():
    with pytest.raises(ImageError):
        decode(png_header_only(10_000, 10_000), RGB, "NHWC")

    with pytest.warns(Image.DecompressionBombWarning):
        warnings.warn("still a warning", Image.DecompressionBombWarning, stacklevel=1)


def test_corrupt_pixel_data_fails_with_a_reason():
    data = bytearray(encode(astronaut(64, 64), "PNG"))
    data[100:400] = b"\xff" * 300

    assert reason_of(bytes(data)) in {"truncated", "decode error"}


@given(data=st.data())
@settings(max_examples=60, deadline=None)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about some broken headers
def test_damaged_files_only_ever_raise_image_error(data):
    fmt = data.draw(st.sampled_from(["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"]))
    original = bytearray(encode(astronaut(24, 16), fmt))
    cut = data.draw(st.integers(0, len(original)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)),
                               max_size=8))
    for position, value in flips:
        original[position] = value
    damaged = bytes(original[:cut])

    try:
        x = decode(damaged, RGB, "NHWC", max_pixels=1_000_000)
    except ImageError as error:
        assert error.reason in {"empty file", "not an image", "truncated", "too large",
                                "decode error"}
    else:
        assert x.shape == (32, 40, 3)
        assert np.isfinite(x).all()


def test_reasons_are_the_module_constants():
    assert {
        images.REASON_UNREADABLE, images.REASON_EMPTY, images.REASON_NOT_IMAGE,
        images.REASON_TRUNCATED, images.REASON_TOO_LARGE, images.REASON_DECODE,
    } == {"unreadable", "empty file", "not an image", "truncated", "too large", "decode error"}
