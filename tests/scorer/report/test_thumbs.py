"""Thumbnails: small inline images of any decodable file, a placeholder for the rest."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scorer.report.thumbs import MIN_PIXELS, THUMBNAIL_PIXELS, thumbnail_uri


def decoded(uri: str) -> Image.Image:
    header, data = uri.split(",", 1)
    assert header in ("data:image/png;base64", "data:image/jpeg;base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.mark.parametrize(("size", "mode"), [((640, 480), "RGB"), ((28, 28), "L"), ((300, 40), "RGBA"),
                                            ((64, 64), "I;16")])
def test_thumbnail_size_and_mode(tmp_path: Path, size: tuple[int, int], mode: str) -> None:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 4000, size[::-1], dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], len(mode)), dtype=np.uint8)
                                .squeeze(), mode=mode)
    file = tmp_path / "x.png"
    image.save(file)
    thumb = decoded(thumbnail_uri(file))
    assert max(thumb.size) <= THUMBNAIL_PIXELS or max(size) < MIN_PIXELS
    assert max(thumb.size) >= min(MIN_PIXELS, THUMBNAIL_PIXELS)
    assert thumb.mode in ("L", "RGB")
    if mode == "I;16":  # scaled to 0..255 by the maximum, not clipped to white
        assert np.asarray(thumb).max() == 255 and np.asarray(thumb).mean() < 200


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (200, 100), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert decoded(thumbnail_uri(tmp_path / "r.jpg")).size == (64, 128)


@pytest.mark.parametrize("content", [b"", b"not an image", None])
def test_unreadable_files_raise_oserror(tmp_path: Path, content: bytes | None) -> None:
    file = tmp_path / "bad.png"
    if content is not None:
        file.write_bytes(content)
    with pytest.raises(OSError):
        thumbnail_uri(file)
