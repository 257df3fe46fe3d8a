"""Tests for scorer.images.jpeg: the libjpeg-turbo path gives Pillow's pixels bit for bit, takes only the
files it can, and every file it hands back fails exactly as it does with Pillow.

The reference is ``decode(..., decoder="pillow")``, today's Pillow-only preprocessing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import simplejpeg
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from scorer.contract import Preprocessing
from scorer.errors import ImageError
from scorer.images import decode as decode_module
from scorer.images import jpeg
from scorer.images.decode import decode

PHOTO = skimage.data.astronaut()
TARGETS = [
    Preprocessing(height=28, width=28, color_mode="grayscale"),
    Preprocessing(height=160, width=160, scale=1 / 127.5, offset=-1.0),
    Preprocessing(height=40, width=90, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), resize_method="lanczos"),
    Preprocessing(height=3, width=500, color_mode="grayscale", resize_method="nearest"),
]


def photo(width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(PHOTO).resize((width, height), Image.Resampling.BILINEAR))


def save(image: np.ndarray | Image.Image, fmt: str = "JPEG", **options) -> bytes:
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def with_exif(data: bytes, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(Image.open(io.BytesIO(data)), exif=exif.tobytes(), quality=95)


def insert_segment(data: bytes, marker: int, body: bytes) -> bytes:
    """``data`` with one more marker segment right after SOI."""
    return data[:2] + bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body + data[2:]


def both(data: bytes, pre: Preprocessing, **options) -> tuple[np.ndarray, np.ndarray]:
    return (decode(data, pre, "NHWC", **options),
            decode(data, pre, "NHWC", decoder="pillow", **options))


def takes(data: bytes, pre: Preprocessing, draft: bool = True) -> bool:
    """Whether the libjpeg-turbo path decodes this file (rather than handing it to Pillow)."""
    return decode_module._decode_jpeg(data, pre, 10**9, draft, 1 << 40) is not None


PLAIN = {
    f"{w}x{h} {kind}": (w, h, kind)
    for (w, h) in [(1, 1), (7, 5), (17, 33), (320, 320), (321, 239), (1000, 13)]
    for kind in ["420", "422", "444", "progressive", "gray", "q5", "411", "440"]
}


def plain_jpeg(width: int, height: int, kind: str) -> bytes:
    pixels = photo(width, height)
    if kind in ("411", "440"):  # subsamplings Pillow cannot write
        return simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), 85, "RGB", kind)
    options = {"420": {"subsampling": 2}, "422": {"subsampling": 1}, "444": {"subsampling": 0},
               "progressive": {"progressive": True}, "gray": {}, "q5": {"quality": 5}}[kind]
    return save(pixels[:, :, 1] if kind == "gray" else pixels, **options)


@pytest.mark.parametrize("name", PLAIN)
def test_plain_jpegs_decode_to_pillows_pixels_bit_for_bit(name):
    data = plain_jpeg(*PLAIN[name])

    for pre in TARGETS:
        for draft in (True, False):
            assert takes(data, pre, draft)
            fast, pillow = both(data, pre, draft=draft)
            assert fast.dtype == pillow.dtype == np.float32
            np.testing.assert_array_equal(fast, pillow)


@pytest.mark.parametrize("orientation", range(10))
@pytest.mark.parametrize("where", ["exif", "xmp"])
def test_every_orientation_matches_pillow(orientation, where):
    base = save(photo(301, 207), quality=95)
    if where == "exif":
        data = with_exif(base, orientation)
    else:
        xmp = f'<x:xmpmeta><rdf:Description tiff:Orientation="{orientation}"/></x:xmpmeta>'
        data = save(Image.open(io.BytesIO(base)), xmp=xmp.encode(), quality=95)

    for pre in TARGETS[:3]:
        assert takes(data, pre)
        fast, pillow = both(data, pre)
        np.testing.assert_array_equal(fast, pillow)


def test_nchw_rows_match_pillow():
    data = save(photo(64, 48))
    pre = TARGETS[2]

    np.testing.assert_array_equal(decode(data, pre, "NCHW"), decode(data, pre, "NCHW", decoder="pillow"))


def unusual_files() -> dict[str, bytes]:
    base = save(photo(80, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    raw = exif.tobytes()
    block = raw if raw.startswith(b"Exif\0\0") else b"Exif\0\0" + raw
    mpo = io.BytesIO()
    Image.fromarray(photo(80, 60)).save(mpo, "MPO", save_all=True,
                                        append_images=[Image.fromarray(photo(80, 60)[::-1])])
    return {
        "cmyk": save(Image.fromarray(photo(80, 60)).convert("CMYK")),
        "adobe": insert_segment(base, 0xEE, b"Adobe\0\x64\0\0\0\0\x01"),
        "two exif blocks": insert_segment(insert_segment(base, 0xE1, block), 0xE1, block),
        "mpo": mpo.getvalue(),
        "junk between markers": base[:2] + b"\x00\x01" + base[2:],
        "lossless frame": base.replace(b"\xff\xc0", b"\xff\xc3", 1),
        "12-bit frame": base.replace(b"\xff\xc0\x00\x11\x08", b"\xff\xc0\x00\x11\x0c", 1),
    }


def assert_same_as_pillow(data: bytes, pre) -> None:
    """The default decoder gives Pillow's pixels, or fails with Pillow's reason and detail."""
    try:
        pillow = decode(data, pre, "NHWC", decoder="pillow")
    except ImageError as error:
        with pytest.raises(ImageError) as fast:
            decode(data, pre, "NHWC")
        assert (fast.value.reason, fast.value.detail) == (error.reason, error.detail)
    else:
        np.testing.assert_array_equal(decode(data, pre, "NHWC"), pillow)


@pytest.mark.parametrize("name", unusual_files())
def test_unusual_files_go_to_pillow_and_give_its_result(name):
    data = unusual_files()[name]
    pre = TARGETS[1]

    assert not takes(data, pre)
    assert_same_as_pillow(data, pre)


def damaged_files() -> dict[str, bytes]:
    whole = save(photo(200, 150), quality=90)
    scan = whole.index(b"\xff\xda")
    corrupt = bytearray(whole)
    corrupt[scan + 400:scan + 410] = b"\xff\xd0" * 5  # restart markers that do not belong there
    return {
        "cut in the scan": whole[: len(whole) * 2 // 3],
        "cut after the scan header": whole[: scan + 20],
        "cut in the header": whole[:scan - 50],
        "no end marker": whole[:-2],
        "corrupt entropy data": bytes(corrupt),
        "zeroed entropy data": whole[:scan + 200] + bytes(300) + whole[scan + 500:],
    }


@pytest.mark.parametrize("name", damaged_files())
def test_damaged_jpegs_fail_or_decode_exactly_as_with_pillow(name):
    data = damaged_files()[name]
    pre = TARGETS[0]

    assert_same_as_pillow(data, pre)


@pytest.mark.parametrize(("limits", "reason"), [({"max_pixels": 200 * 150 - 1}, "too large"),
                                                ({"max_image_bytes": 1000}, "too large")])
def test_limits_fail_with_pillows_words(limits, reason):
    data = save(photo(200, 150))
    pre = TARGETS[1]

    with pytest.raises(ImageError) as pillow:
        decode(data, pre, "NHWC", decoder="pillow", **limits)
    with pytest.raises(ImageError) as fast:
        decode(data, pre, "NHWC", **limits)

    assert pillow.value.reason == reason
    assert (fast.value.reason, fast.value.detail) == (pillow.value.reason, pillow.value.detail)


def test_without_simplejpeg_pillow_decodes_everything(monkeypatch):
    data = save(photo(50, 40))
    reference = decode(data, TARGETS[1], "NHWC")
    monkeypatch.setattr(jpeg, "simplejpeg", None)

    assert not jpeg.available()
    np.testing.assert_array_equal(decode(data, TARGETS[1], "NHWC"), reference)


def test_draft_scale_is_jpeg_image_files():
    """The scale Pillow's own draft picks: compare with JpegImageFile.draft on real files."""
    for width, height, target in [(320, 320, (160, 160)), (320, 320, (28, 28)), (300, 100, (70, 60)),
                                  (9, 9, (10, 10)), (1000, 13, (3, 500)), (640, 480, (40, 90))]:
        data = save(photo(width, height))
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", target)
        info = jpeg.probe(data)

        assert jpeg.scaled_size(info, jpeg.draft_scale(info, *target)) == image.size


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 120), height=st.integers(1, 120), quality=st.integers(1, 100),
       subsampling=st.sampled_from([0, 1, 2]), progressive=st.booleans(),
       target=st.sampled_from(TARGETS), draft=st.booleans(), seed=st.integers(0, 2**16))
def test_random_jpegs_match_pillow(width, height, quality, subsampling, progressive, target, draft, seed):
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels = ((photo(width, height).astype(np.uint16) + noise) // 2).astype(np.uint8)
    data = save(pixels, quality=quality, subsampling=subsampling, progressive=progressive)

    fast, pillow = both(data, target, draft=draft)

    np.testing.assert_array_equal(fast, pillow)
