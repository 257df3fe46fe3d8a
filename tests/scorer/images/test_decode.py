"""Tests for scorer.images.decode: formats, orientation, colour modes, normalisation, draft mode, and
the failure reasons (truncated files, decompression bombs, the decoding-memory estimate)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from scorer.contract import Preprocessing
from scorer.errors import ImageError, ScorerError
from scorer.images import decode as decode_module
from scorer.images.decode import DEFAULT_MAX_PIXELS, decode, decoding_bytes

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


def png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but whose pixel data is a few bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def png_solid_gray(width: int, height: int, value: int) -> bytes:
    """A whole 8-bit grayscale PNG of one value, written without Pillow and without holding the
    pixels in memory (each row: filter byte 0, then ``width`` samples)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * width
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


RGB = Preprocessing(height=32, width=40)


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


def reason_of(data: bytes, pre: Preprocessing = RGB, **options: object) -> str:
    with pytest.raises(ImageError) as caught:
        decode(data, pre, "NHWC", **options)
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
    """Damaged PNG pixel data is ``truncated`` or ``decode error``, never ok with black pixels: the
    memory check does not call Pillow's ``getexif`` on a PNG, which decodes the pixels to look for
    a late eXIf chunk and swallows a failed decode."""
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
        decode_module.REASON_EMPTY, decode_module.REASON_NOT_IMAGE, decode_module.REASON_TRUNCATED,
        decode_module.REASON_TOO_LARGE, decode_module.REASON_DECODE,
    } == {"empty file", "not an image", "truncated", "too large", "decode error"}


# --- truncated files -----------------------------------------------------------------------------

CUT_FORMATS = [
    ("JPEG", {}), ("PNG", {}), ("TIFF", {}), ("GIF", {}), ("BMP", {}),
    ("WEBP", {"lossless": True}), ("WEBP", {"quality": 80}),
]
CUT_IDS = ["JPEG", "PNG", "TIFF", "GIF", "BMP", "WEBP-lossless", "WEBP-lossy"]


@pytest.mark.parametrize(("fmt", "options"), CUT_FORMATS, ids=CUT_IDS)
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_files_are_rejected(fmt, options, keep):
    """Cut in the pixel data. A WebP's RIFF size is checked first, so a cut one is ``truncated``,
    not a ``decode error`` (libwebp refuses a short file before Pillow can say why)."""
    data = encode(astronaut(256, 256), fmt, **options)

    assert reason_of(data[: int(len(data) * keep)]) == "truncated"


@pytest.mark.parametrize(
    ("fmt", "options", "missing"),
    [
        ("PNG", {}, 12),
        ("PNG", {}, 4),
        ("PNG", {}, 1),
        ("GIF", {}, 1),
        ("GIF", {}, 2),
        ("BMP", {}, 1),
        ("TIFF", {}, 1),
        ("WEBP", {"lossless": True}, 1),
        ("WEBP", {"quality": 80}, 1),
        ("JPEG", {}, 2),
        ("JPEG", {}, 1),
    ],
    ids=["PNG-without-IEND", "PNG-IEND-without-CRC", "PNG-last-byte", "GIF-without-trailer",
         "GIF-without-terminator-and-trailer", "BMP-last-byte", "TIFF-last-byte",
         "WEBP-lossless-last-byte", "WEBP-lossy-last-byte", "JPEG-without-EOI", "JPEG-last-byte"],
)
def test_files_missing_their_last_bytes_are_truncated(fmt, options, missing):
    """Pillow decodes a PNG without IEND and a GIF without its trailer; the completeness check makes
    those, a PNG whose IEND chunk lost its CRC and a WebP missing its last byte ``truncated``,
    while the whole files decode.
    """
    data = encode(astronaut(64, 48), fmt, **options)
    assert decode(data, RGB, "NHWC").shape == (32, 40, 3)

    assert reason_of(data[:-missing]) == "truncated"


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF", "JPEG", "WEBP"])
def test_zero_padding_after_a_whole_file_is_not_truncation(fmt):
    data = encode(astronaut(64, 48), fmt)

    assert decode(data + b"\0" * 16, RGB, "NHWC").shape == (32, 40, 3)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the cut directory
def test_a_tiff_whose_directory_is_cut_off_fails():
    """Pillow writes a compressed TIFF's directory after the pixels: a cut loses it, and the file
    is then not recognised (``not an image``), which is still a failed row."""
    data = encode(astronaut(64, 48), "TIFF", compression="tiff_lzw")

    for keep in (len(data) // 2, len(data) * 9 // 10, len(data) - 1):
        assert reason_of(data[:keep]) in {"truncated", "not an image"}


def test_an_animated_gif_cut_inside_a_later_frame_is_truncated():
    """Only the first frame is decoded, so Pillow accepts a GIF cut anywhere after it. The trailer
    is found by walking the blocks, so a cut that happens to end on a 0x3B byte (the trailer's
    value, ``;``) is still ``truncated``."""
    for seed in range(20):  # the first seeds whose second frame holds a 0x3B byte
        noise = np.random.default_rng(seed).integers(0, 256, (16, 16), dtype=np.uint8)
        data = encode(Image.new("L", (16, 16), 10), "GIF", save_all=True,
                      append_images=[Image.fromarray(noise)])
        cuts = range(len(data) // 2, len(data))  # the first frame is a few dozen bytes
        if any(data[cut - 1] == 0x3B for cut in cuts):
            break
    else:
        pytest.fail("no GIF with a 0x3B byte in its second frame")
    assert decode(data, RGB, "NHWC").shape == (32, 40, 3)

    reasons = {cut: reason_of(data[:cut]) for cut in cuts}

    assert set(reasons.values()) == {"truncated"}, {c: r for c, r in reasons.items() if r != "truncated"}


def test_a_gif_ending_in_a_comment_that_ends_in_a_semicolon_still_needs_its_trailer():
    whole = encode(Image.new("L", (8, 8), 10), "GIF")
    assert whole[-1:] == b";"
    comment = b"\x21\xfe" + b"\x01;" + b"\x00"  # comment extension: one sub-block ";", terminator
    without_trailer = whole[:-1] + comment

    assert decode(without_trailer + b";", RGB, "NHWC").shape == (32, 40, 3)
    assert reason_of(without_trailer) == "truncated"


def test_a_bmp_shorter_than_its_header_says_is_truncated():
    """The pixels are whole, so Pillow decodes it; the header's file size says bytes are missing."""
    data = bytearray(encode(astronaut(64, 48), "BMP") + b"\0" * 8)
    data[2:6] = len(data).to_bytes(4, "little")

    assert decode(bytes(data), RGB, "NHWC").shape == (32, 40, 3)
    assert reason_of(bytes(data[:-8])) == "truncated"
    assert reason_of(bytes(data[:-1])) == "truncated"


# --- decoding memory -----------------------------------------------------------------------------

BOMB_SIDE = 7500
BOMB_NEED = 7500 * 7500 * (1 + 4)  # 'L' decoded (1 byte a pixel) plus its RGB copy (4): 281,250,000


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 7500x7500 single-value grayscale PNG of 70 kB."""
    return png_solid_gray(BOMB_SIDE, BOMB_SIDE, 77)


def test_a_small_png_inflating_to_a_huge_image_is_too_large(bomb, monkeypatch):
    """56 megapixels pass both pixel limits, but an rgb model needs 281 MB to decode them.

    Decoding would peak at 356 MB for a 70 kB file, so the estimate refuses it under the default
    limit of 256 MB before any pixel is decoded, and the limit is exact: one byte under the
    estimate refuses it, the estimate itself lets it through (next test).
    """
    assert len(bomb) < 100_000
    assert min(Image.MAX_IMAGE_PIXELS, DEFAULT_MAX_PIXELS) > BOMB_SIDE * BOMB_SIDE
    assert decode_module.DEFAULT_MAX_IMAGE_MB << 20 == 268_435_456 < BOMB_NEED
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: loads.append(image) or real_load(image))

    with pytest.raises(ImageError) as caught:
        decode(bomb, RGB, "NHWC")

    assert caught.value.reason == "too large"
    assert loads == []  # refused on the header: nothing decodes the PNG, getexif included
    assert "7500x7500 L image needs about 268 MB to decode, the limit is 256 MB" in str(caught.value)
    assert reason_of(bomb, max_image_bytes=BOMB_NEED - 1) == "too large"


def test_the_bomb_decodes_when_the_memory_limit_allows_it(bomb):
    small = Preprocessing(height=4, width=4)

    rgb = decode(bomb, small, "NHWC", max_image_bytes=BOMB_NEED)
    gray = decode(bomb, Preprocessing(height=4, width=4, color_mode="grayscale"), "NHWC")

    np.testing.assert_allclose(rgb, np.full((4, 4, 3), 77 / 255), rtol=1e-6)
    np.testing.assert_allclose(gray, np.full((4, 4, 1), 77 / 255), rtol=1e-6)  # 56 MB: no copy


@pytest.mark.parametrize(
    ("mode", "color_mode", "transposed", "per_pixel"),
    [
        ("L", "grayscale", False, 1),
        ("L", "rgb", False, 1 + 4),
        ("RGB", "rgb", False, 4),
        ("RGB", "grayscale", False, 4 + 4),
        ("RGBA", "rgb", False, 4 + 4),
        ("CMYK", "rgb", False, 4 + 4),
        ("P", "rgb", False, 1 + 8),
        ("P", "grayscale", False, 1 + 8),
        ("PA", "rgb", False, 4 + 8),
        ("I;16", "grayscale", False, 2 + 12),
        ("I;16B", "rgb", False, 2 + 12),
        ("I", "grayscale", False, 4 + 12),
        ("F", "rgb", False, 4 + 12),
        ("L", "grayscale", True, 1 + 1),
        ("L", "rgb", True, 1 + 1 + 4),
        ("RGB", "rgb", True, 4 + 4),
        ("P", "rgb", True, 1 + 1 + 8),
        ("I;16", "grayscale", True, 2 + 2 + 12),
    ],
)
def test_decoding_bytes_matches_hand_computed_values(mode, color_mode, transposed, per_pixel):
    """Stored bytes a pixel (1 for L and P, 2 for I;16, 4 for the rest: Pillow keeps RGB in 4),
    twice when an EXIF rotation copies them, +4 for a conversion, +8 for a palette expansion,
    +12 for the float copies of a high-depth image."""
    assert decoding_bytes(mode, (30, 20), color_mode, transposed) == 600 * per_pixel


@pytest.mark.parametrize(
    ("fmt", "mode", "color_mode", "stored"),
    [("JPEG", "L", "grayscale", 1), ("PNG", "L", "grayscale", 1), ("TIFF", "L", "grayscale", 1),
     ("WEBP", "RGB", "rgb", 4)],
)
@pytest.mark.parametrize("orientation", [1, 6])
def test_an_exif_rotation_doubles_the_estimate(fmt, mode, color_mode, stored, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.new(mode, (60, 40), 90), fmt, exif=exif.tobytes())
    pre = Preprocessing(height=40, width=60, color_mode=color_mode)
    need = 60 * 40 * stored * (2 if orientation == 6 else 1)

    assert decode(data, pre, "NHWC", draft=False, max_image_bytes=need).shape == (40, 60, pre.channels)
    assert reason_of(data, pre, max_image_bytes=need - 1, draft=False) == "too large"


def test_the_memory_check_uses_the_draft_size_of_a_jpeg():
    data = encode(astronaut(2048, 1536), "JPEG", quality=90)
    pre = Preprocessing(height=160, width=224)
    drafted = 256 * 192 * 4  # 1/8 scale, RGB

    assert decode(data, pre, "NHWC", max_image_bytes=drafted).shape == (160, 224, 3)
    assert reason_of(data, pre, max_image_bytes=drafted - 1) == "too large"
    assert reason_of(data, pre, max_image_bytes=drafted, draft=False) == "too large"  # 2048x1536x4


# --- decoding into a given row, and the decoder choice ---------------------------------------------


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_writes_into_the_given_row(layout, fmt):
    data = encode(astronaut(50, 40), fmt)
    pre = Preprocessing(height=12, width=16, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    batch = np.full((3, *decode_module.output_shape(pre, layout)), np.nan, np.float32)

    row = decode(data, pre, layout, out=batch[1])

    assert row is batch[1] or np.shares_memory(row, batch[1])
    np.testing.assert_array_equal(batch[1], decode(data, pre, layout))
    assert np.isnan(batch[0]).all() and np.isnan(batch[2]).all()


def test_an_unknown_decoder_is_a_programming_error():
    with pytest.raises(ValueError, match="decoder"):
        decode(encode(gradient(4, 4), "PNG"), Preprocessing(height=2, width=2), "NHWC", decoder="turbo")
