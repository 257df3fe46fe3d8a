"""The common JPEG through libjpeg-turbo directly (simplejpeg), pixel for pixel what Pillow gives.

Pillow decodes a JPEG with libjpeg-turbo too, but around it runs Python: the marker parser, the
EXIF reader (three times per file in :mod:`scorer.images.decode`), the plugin and tile machinery. For a
320x320 photo that glue costs as much as the decoding itself, and it holds the GIL.
:func:`probe` reads what decoding needs from the markers (a short loop over a few segments) and
:func:`decode_pixels` calls libjpeg-turbo once, with the GIL released, with the settings Pillow
uses: the same DCT scale (``1/1``, ``1/2``, ``1/4``, ``1/8``, as ``JpegImageFile.draft`` picks
it), the accurate integer IDCT, fancy upsampling, and libjpeg's own colour conversion. The
EXIF orientation is applied afterwards with numpy (a pure reordering of pixels).

Anything out of the ordinary returns ``None`` and :mod:`scorer.images.decode` gives the file to Pillow,
so failures keep their exact status and reason: CMYK/YCCK, Adobe or MPO files, 12-bit, lossless
or arithmetic-coded frames, several EXIF blocks, EXIF that Pillow could not read or write back,
junk between markers, and every file libjpeg-turbo warns about (``strict``: corrupt or truncated
data). ``tests/scorer/images/test_jpeg.py`` checks bit-identity against Pillow on varied files.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image

try:  # optional: without it every file goes to Pillow
    import simplejpeg
except ImportError:  # pragma: no cover - exercised by uninstalling the package
    simplejpeg = None

TRANSPOSING = (5, 6, 7, 8)
"""EXIF orientations that swap width and height."""

_FRAMES = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman, 8-bit
_SKIPPED = {0xC4, 0xDB, 0xDD, 0xFE} | set(range(0xE0, 0xF0))  # DHT, DQT, DRI, COM, APPn
_EXIF = b"Exif\0\0"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def available() -> bool:
    """Whether the libjpeg-turbo path can be used (simplejpeg is installed)."""
    return simplejpeg is not None


def version() -> str:
    """simplejpeg's version, or ``""`` when it is not installed."""
    return getattr(simplejpeg, "__version__", "") if simplejpeg is not None else ""


@dataclass(frozen=True)
class JpegInfo:
    """What a plain JPEG's markers say: stored size, component count, EXIF orientation."""

    width: int
    height: int
    gray: bool
    orientation: int = 1

    @property
    def transposed(self) -> bool:
        return self.orientation in TRANSPOSING


def probe(data: bytes) -> JpegInfo | None:
    """Read the markers up to the first scan; ``None`` for anything Pillow should decode.

    Args:
        data: The whole file.

    Returns:
        The frame's size and kind and the orientation Pillow would apply, or ``None`` when the
        file is not a plain 8-bit Huffman JPEG with one or three components, or has Adobe, MPO,
        several EXIF blocks or anything unusual between its markers.
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    position, frame, exif, xmp = 2, None, None, None
    while True:
        if position + 4 > len(data) or data[position] != 0xFF:
            return None
        marker = data[position + 1]
        length = int.from_bytes(data[position + 2:position + 4], "big")
        body = data[position + 4:position + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None
        if marker == 0xDA:
            break
        if marker in _FRAMES:
            if frame is not None:
                return None
            frame = body
        elif marker not in _SKIPPED or _unusual_app(marker, body):
            return None
        elif marker == 0xE1 and body.startswith(_EXIF):
            if exif is not None:
                return None  # Pillow concatenates several EXIF blocks
            exif = body
        elif marker == 0xE1 and body.startswith(_XMP):
            xmp = body.split(b"\x00", 1)[1]
        position += 2 + length
    return _frame_info(frame, exif, xmp)


def _unusual_app(marker: int, body: bytes) -> bool:
    """APP segments that change how Pillow opens or decodes the file: Adobe (APP14), MPF."""
    return (marker == 0xEE and body.startswith(b"Adobe")) or (marker == 0xE2 and body.startswith(b"MPF\0"))


def _frame_info(frame: bytes | None, exif: bytes | None, xmp: bytes | None) -> JpegInfo | None:
    if frame is None or len(frame) < 6 or frame[0] != 8 or frame[5] not in (1, 3):
        return None
    height = int.from_bytes(frame[1:3], "big")
    width = int.from_bytes(frame[3:5], "big")
    if not width or not height:
        return None
    orientation = _orientation(exif, xmp)
    if orientation is None:
        return None
    return JpegInfo(width, height, frame[5] == 1, orientation)


def _orientation(exif: bytes | None, xmp: bytes | None) -> int | None:
    """The orientation ``ImageOps.exif_transpose`` applies (1: none), ``None`` if Pillow might fail.

    Mirrors ``Image.getexif`` (the EXIF tag, else the XMP ``tiff:Orientation``) and, for a
    rotated image, the EXIF block written back without its orientation, which can raise.
    """
    if exif is None and xmp is None:
        return 1
    try:
        tags = Image.Exif()
        if exif is not None:
            tags.load(exif)
            _dpi(tags)
        orientation = tags.get(ExifTags.Base.Orientation)
        if orientation is None and xmp and (match := _XMP_ORIENTATION.search(xmp)):
            orientation = tags[ExifTags.Base.Orientation] = int(match[2])
        if orientation not in _ORIENT:
            return 1
        del tags[ExifTags.Base.Orientation]
        if exif is not None:
            tags.tobytes()
        return orientation
    except Exception:  # noqa: BLE001 - whatever Pillow would do with it, Pillow shall do
        return None


def _dpi(tags: Image.Exif) -> None:
    """What ``JpegImageFile._read_dpi_from_exif`` does when the file is opened; the errors it
    does not catch make Pillow fail, so they must reach :func:`_orientation`'s handler."""
    try:
        unit, resolution = tags[0x0128], tags[0x011A]
        try:
            dpi = float(resolution[0]) / resolution[1]
        except TypeError:
            dpi = resolution
        if math.isnan(dpi):
            raise ValueError("DPI is not a number")
        if unit == 3:
            dpi *= 2.54
    except (struct.error, KeyError, SyntaxError, TypeError, ValueError, ZeroDivisionError):
        pass


def draft_scale(info: JpegInfo, width: int, height: int) -> int:
    """The DCT scale ``JpegImageFile.draft`` picks for a ``width x height`` target: the largest
    of 8, 4, 2, 1 at most ``min(stored width // target width, stored height // target height)``,
    the target turned for transposing orientations."""
    if info.transposed:
        width, height = height, width
    ratio = min(info.width // width, info.height // height)
    return next((scale for scale in (8, 4, 2) if ratio >= scale), 1)


def scaled_size(info: JpegInfo, scale: int) -> tuple[int, int]:
    """``(width, height)`` decoded at ``1/scale``, rounded up as libjpeg does."""
    return -(-info.width // scale), -(-info.height // scale)


def decode_pixels(data: bytes, info: JpegInfo, gray: bool, scale: int) -> np.ndarray | None:
    """Decode at ``1/scale`` to ``uint8`` ``[h, w]`` (``gray``) or ``[h, w, 3]``, oriented.

    Returns:
        The pixels, or ``None`` if libjpeg-turbo reported an error or a warning (corrupt or
        truncated data) or chose another size: such files go to Pillow.
    """
    width, height = scaled_size(info, scale)
    try:
        pixels = simplejpeg.decode_jpeg(data, "GRAY" if gray else "RGB", min_height=height,
                                        min_width=width, strict=True)
    except (ValueError, RuntimeError):
        return None
    if pixels.shape[:2] != (height, width):
        return None
    pixels = pixels[:, :, 0] if gray else pixels
    if info.orientation != 1:
        pixels = np.ascontiguousarray(_ORIENT[info.orientation](pixels))
    return pixels
