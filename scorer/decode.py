"""Decoding and preprocessing: file bytes -> one ``float32`` row of the graph input.

:func:`decode` turns the bytes into ``[H, W, C]`` (layout ``NHWC``) or ``[C, H, W]`` (``NCHW``). A
file that cannot be used raises :class:`~scorer.errors.ImageError` with a short fixed ``reason``
that becomes its status; it never stops the run.

Decoding follows the Keras ``load_img`` pipeline the models were trained with (convert the colour
mode, then resize the 8-bit image with Pillow), plus EXIF orientation and safety checks:

- alpha is discarded, keeping the colour stored under transparent pixels (as ``load_img`` and
  ``tf.io.decode_image(channels=3)`` do);
- 16-bit integer grayscale (``I;16*``, and 32-bit ``I``, taken to hold 16-bit values) is
  scaled by ``255 / 65535`` and clipped; 32-bit float (``F``) is taken as ``0..1`` when its largest
  finite value is at most 1 and as ``0..255`` otherwise; these are resized as floats;
- RGB to grayscale uses Pillow's ITU-R 601-2 luma, grayscale to RGB repeats the channel.

Safety: the size is checked on the header before any pixel is decoded, against ``max_pixels`` and
against ``max_image_bytes``, an estimate of the memory decoding and converting will take (so a
small file that inflates to a huge image is refused); a file whose data ends early is
``truncated`` in every format, including the cases Pillow accepts (a PNG without its ``IEND``
chunk, a GIF without its trailer, a WebP or BMP shorter than its header says).
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from scorer.contract import LAYOUTS, Preprocessing
from scorer.errors import ImageError, ScorerError

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest accepted ``width * height``; the same as Pillow's default ``MAX_IMAGE_PIXELS``."""

FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
"""Pillow formats :func:`decode` accepts; anything else is ``"not an image"``."""

DEFAULT_MAX_IMAGE_MB = 256
"""Largest estimated decoding memory of one image (an RGB image of 64 megapixels)."""

REASON_EMPTY = "empty file"
REASON_NOT_IMAGE = "not an image"
REASON_TRUNCATED = "truncated"
REASON_TOO_LARGE = "too large"
REASON_DECODE = "decode error"

_RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_GRAY_MODES = ("1", "L", "LA", "La")
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)

# Pillow reports decompression bombs with a warning; turning it into an error needs the global
# warnings filters, so the short, header-only Image.open runs under a lock while they are changed.
_OPEN_LOCK = threading.Lock()


def decode(
    data: bytes,
    pre: Preprocessing,
    layout: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = True,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_MB << 20,
) -> np.ndarray:
    """Decode and preprocess one image file.

    Pixels are decoded (first frame only), oriented by their EXIF tag, converted to
    ``pre.color_mode``, resized to ``pre.width x pre.height`` with ``pre.resize_method``, then
    ``x = (pixel * scale + offset - mean[c]) / std[c]`` with ``pixel`` in ``0..255``.

    Pillow's own limit ``PIL.Image.MAX_IMAGE_PIXELS`` applies as well as ``max_pixels``; raise both
    to accept larger images.

    Args:
        data: The file's bytes (JPEG, PNG, BMP, TIFF, WebP or GIF).
        pre: Preprocessing from the model's metadata.
        layout: ``"NHWC"`` or ``"NCHW"``.
        max_pixels: Largest ``width * height`` accepted, checked on the header before decoding.
        draft: Let JPEGs decode at a reduced size (1/2, 1/4 or 1/8, never below the target size)
            before the resize; much faster for large photos, very close to a full decode.
        max_image_bytes: Largest memory decoding may take (:func:`decoding_bytes`), checked on
            the header (at the reduced JPEG size) before decoding.

    Returns:
        ``float32`` ``[H, W, C]`` for ``NHWC`` or ``[C, H, W]`` for ``NCHW``; ``C`` is 1 for
        grayscale, 3 for rgb.

    Raises:
        ImageError: ``reason`` is ``"empty file"``, ``"not an image"``, ``"truncated"``,
            ``"too large"`` or ``"decode error"``.
        ValueError: ``layout`` is not one of ``NHWC``, ``NCHW``.
        ScorerError: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was switched on by someone.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    if not data:
        raise ImageError(REASON_EMPTY, "the file has zero bytes")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ScorerError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated files would be scored as "
            "if whole; leave it False"
        )
    try:
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            _check_complete(data, "WEBP")  # libwebp refuses a short file before Pillow can say why
        image = _open(data, max_pixels)
        with image:
            if draft and isinstance(image, JpegImagePlugin.JpegImageFile):
                _draft(image, pre)
            _check_memory(image, pre, max_image_bytes)
            _load(image)
            _check_complete(data, image.format)
            pixels = _to_pixels(image, pre)
    except ImageError:
        raise
    except _BOMB_ERRORS as error:
        raise ImageError(REASON_TOO_LARGE, str(error)) from error
    except MemoryError as error:
        raise ImageError(REASON_TOO_LARGE, "out of memory while decoding") from error
    except Exception as error:  # anything else Pillow raises on bad data
        reason = REASON_TRUNCATED if "truncated" in str(error).lower() else REASON_DECODE
        raise ImageError(reason, f"{type(error).__name__}: {error}") from error
    return _normalise(pixels, pre, layout)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header; check the size before any pixel is decoded."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as error:
        raise ImageError(
            REASON_NOT_IMAGE, f"not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file"
        ) from error
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(
            REASON_TOO_LARGE,
            f"{width}x{height} = {width * height} pixels, the limit is {max_pixels}",
        )
    return image


def decoding_bytes(mode: str, size: tuple[int, int], color_mode: str, transposed: bool) -> int:
    """Estimated peak memory of decoding an image of Pillow ``mode`` and ``size``: the decoded
    pixels (Pillow keeps RGB as 4 bytes a pixel), the converted copy, the float copies of
    high-depth images, and the copy an EXIF rotation makes."""
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    total = stored + (stored if transposed else 0)
    if mode in _HIGH_DEPTH_MODES:
        total += 12
    elif mode != ("L" if color_mode == "grayscale" else "RGB"):
        total += 8 if mode in ("P", "PA") else 4
    return size[0] * size[1] * total


def _check_memory(image: Image.Image, pre: Preprocessing, limit: int) -> None:
    transposed = _header_orientation(image) in _TRANSPOSING_ORIENTATIONS
    need = decoding_bytes(image.mode, image.size, pre.color_mode, transposed)
    if need > limit:
        raise ImageError(REASON_TOO_LARGE, f"{image.size[0]}x{image.size[1]} {image.mode} image "
                         f"needs about {need >> 20} MB to decode, the limit is {limit >> 20} MB "
                         "(--max-image-memory)")


def _header_orientation(image: Image.Image) -> int:
    """The EXIF orientation known before any pixel is decoded (1 when there is none).

    Pillow's ``PngImageFile.getexif`` decodes the whole image to look for an ``eXIf`` chunk after
    the pixel data (and a failed decode would go unnoticed); such a late chunk is not counted here,
    ``exif_transpose`` still applies it.
    """
    if isinstance(image, PngImagePlugin.PngImageFile) and "exif" not in image.info:
        return 1
    try:
        return image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block: exif_transpose will ignore it too
        return 1


def _check_complete(data: bytes, fmt: str | None) -> None:
    """Raise ``truncated`` for files that end early in ways Pillow decodes without complaint."""
    missing = None
    if fmt == "PNG" and not _png_has_end(data):
        missing = "its IEND chunk"
    elif fmt == "GIF" and not _gif_has_trailer(data):
        missing = "its trailer"
    elif fmt == "WEBP" and int.from_bytes(data[4:8], "little") + 8 > len(data):
        missing = "part of the RIFF data its header announces"
    elif fmt == "BMP" and int.from_bytes(data[2:6], "little") > len(data):
        missing = "part of the data its header announces"
    if missing:
        raise ImageError(REASON_TRUNCATED, f"the {fmt} file ends early: it lacks {missing}")


def _png_has_end(data: bytes) -> bool:
    """Whether the chunks lead to a whole ``IEND`` chunk (length, type and CRC: 12 bytes)."""
    position = 8
    while position + 12 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        if data[position + 4:position + 8] == b"IEND":
            return True
        position += 12 + length
    return False


def _gif_has_trailer(data: bytes) -> bool:
    """Whether the blocks after the colour table lead to the trailer (``0x3B``) before the end."""
    position = 13 + _gif_color_table_bytes(data[10:11])
    while position < len(data):
        block = data[position]
        if block == 0x3B:
            return True
        if block == 0x21:  # extension: introducer and label, then data sub-blocks
            position += 2
        elif block == 0x2C:  # image: descriptor, local colour table, LZW code size, data sub-blocks
            position += 10 + _gif_color_table_bytes(data[position + 9:position + 10]) + 1
        else:
            return False
        while position < len(data) and data[position]:
            position += 1 + data[position]
        position += 1  # the empty sub-block that ends the block
    return False


def _gif_color_table_bytes(flags: bytes) -> int:
    return 3 << ((flags[0] & 7) + 1) if flags and flags[0] & 0x80 else 0


def _draft(image: JpegImagePlugin.JpegImageFile, pre: Preprocessing) -> None:
    """Ask libjpeg to decode at the smallest DCT scale still at least the target size."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block only costs the speed-up
        return
    size = (pre.width, pre.height)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        size = (pre.height, pre.width)
    image.draft("L" if pre.color_mode == "grayscale" else "RGB", size)


def _load(image: Image.Image) -> None:
    """Decode every pixel now, so that truncated or corrupt data fails here."""
    try:
        image.load()
    except _BOMB_ERRORS:
        raise
    except (OSError, EOFError, SyntaxError, struct.error, zlib.error) as error:
        message = str(error)
        if "not available" in message or "unsupported" in message.lower():
            raise ImageError(REASON_DECODE, message) from error
        raise ImageError(REASON_TRUNCATED, message or type(error).__name__) from error


def _to_pixels(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """Orient, convert and resize; ``float32`` ``[H, W, C]`` in ``0..255``."""
    image = ImageOps.exif_transpose(image)
    size = (pre.width, pre.height)
    resample = _RESAMPLING[pre.resize_method]
    if image.mode in _HIGH_DEPTH_MODES:
        gray = Image.fromarray(_high_depth_to_255(image))
        if gray.size != size:
            gray = gray.resize(size, resample)
        pixels = np.asarray(gray, dtype=np.float32)[:, :, None]
        return np.repeat(pixels, pre.channels, axis=2)
    image = _to_8bit(image, "L" if pre.color_mode == "grayscale" else "RGB")
    if image.size != size:
        image = image.resize(size, resample)
    pixels = np.asarray(image, dtype=np.float32)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _high_depth_to_255(image: Image.Image) -> np.ndarray:
    """A 16/32-bit integer or float grayscale image as ``float32`` ``[H, W]`` in ``0..255``."""
    values = np.asarray(image).astype(np.float32)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
    else:
        values = values * np.float32(255.0 / 65535.0)
    return np.clip(values, 0.0, 255.0)


def _to_8bit(image: Image.Image, mode: str) -> Image.Image:
    """Convert any 8-bit-per-channel mode to ``"L"`` or ``"RGB"``, dropping alpha."""
    if image.mode == "P":
        # Pillow wants palette transparency expanded to RGBA before any other conversion.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in _GRAY_MODES else "RGB")
    return image if image.mode == mode else image.convert(mode)


def _normalise(pixels: np.ndarray, pre: Preprocessing, layout: str) -> np.ndarray:
    """Apply ``(pixel * scale + offset - mean[c]) / std[c]`` and the layout."""
    x = pixels * np.float32(pre.scale) + np.float32(pre.offset)
    if pre.mean is not None:
        x -= np.asarray(pre.mean, dtype=np.float32)
    if pre.std is not None:
        x /= np.asarray(pre.std, dtype=np.float32)
    x = x.astype(np.float32, copy=False)
    if layout == "NCHW":
        return np.ascontiguousarray(x.transpose(2, 0, 1))
    return np.ascontiguousarray(x)
