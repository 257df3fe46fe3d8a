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

Decoders: with ``decoder="auto"`` (the default) a plain JPEG goes to libjpeg-turbo directly
(:mod:`scorer.images.jpeg`, when simplejpeg is installed), which gives the same pixels bit for bit and
releases the GIL; everything else, and every JPEG it does not take, goes to Pillow.
``decoder="pillow"`` sends every file to Pillow.
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
from scorer.images import jpeg
from scorer.images.truncation import REASON_TRUNCATED, check_complete

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest accepted ``width * height``; the same as Pillow's default ``MAX_IMAGE_PIXELS``."""

FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
"""Pillow formats :func:`decode` accepts; anything else is ``"not an image"``."""

DEFAULT_MAX_IMAGE_MB = 256
"""Largest estimated decoding memory of one image (an RGB image of 64 megapixels)."""

REASON_EMPTY = "empty file"
REASON_NOT_IMAGE = "not an image"
REASON_TOO_LARGE = "too large"
REASON_DECODE = "decode error"

DECODERS = ("auto", "pillow")
"""``auto``: libjpeg-turbo for plain JPEGs (same pixels), Pillow for the rest; ``pillow``: Pillow."""

_RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_GRAY_MODES = ("1", "L", "LA", "La")
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
    decoder: str = "auto",
    out: np.ndarray | None = None,
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
        decoder: ``"auto"`` or ``"pillow"`` (:data:`DECODERS`); both give the same pixels.
        out: Where to write the row (``float32``, :func:`output_shape`), e.g. a row of a batch
            in shared memory; a new array when ``None``. Left unspecified if decoding fails.

    Returns:
        ``float32`` ``[H, W, C]`` for ``NHWC`` or ``[C, H, W]`` for ``NCHW`` (``out`` if given);
        ``C`` is 1 for grayscale, 3 for rgb.

    Raises:
        ImageError: ``reason`` is ``"empty file"``, ``"not an image"``, ``"truncated"``,
            ``"too large"`` or ``"decode error"``.
        ValueError: ``layout`` or ``decoder`` is not one of its values.
        ScorerError: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was switched on by someone.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r} is not one of {DECODERS}")
    if not data:
        raise ImageError(REASON_EMPTY, "the file has zero bytes")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ScorerError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated files would be scored as "
            "if whole; leave it False"
        )
    if decoder == "auto" and jpeg.available():
        fast = _decode_jpeg(data, pre, max_pixels, draft, max_image_bytes)
        if fast is not None:
            return normalise(_resize_8bit(fast, pre), pre, layout, out)
    try:
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            check_complete(data, "WEBP")  # libwebp refuses a short file before Pillow can say why
        image = _open(data, max_pixels)
        with image:
            if draft and isinstance(image, JpegImagePlugin.JpegImageFile):
                _draft(image, pre)
            _check_memory(image, pre, max_image_bytes)
            _load(image)
            check_complete(data, image.format)
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
    return normalise(pixels, pre, layout, out)


def _decode_jpeg(data: bytes, pre: Preprocessing, max_pixels: int, draft: bool,
                 max_image_bytes: int) -> np.ndarray | None:
    """A plain JPEG through libjpeg-turbo, ``uint8`` in the model's colour mode, oriented;
    ``None`` hands the file to Pillow (not a plain JPEG, over a limit, or any error), so
    failures keep Pillow's exact status and reason."""
    try:
        info = jpeg.probe(data)
        pillow_limit = Image.MAX_IMAGE_PIXELS or max_pixels
        if info is None or info.width * info.height > min(max_pixels, pillow_limit):
            return None
        gray = info.gray or (draft and pre.color_mode == "grayscale")  # as JpegImageFile.draft
        scale = jpeg.draft_scale(info, pre.width, pre.height) if draft else 1
        need = decoding_bytes("L" if gray else "RGB", jpeg.scaled_size(info, scale),
                              pre.color_mode, info.transposed)
        if need > max_image_bytes:
            return None
        pixels = jpeg.decode_pixels(data, info, gray, scale)
    except Exception:  # noqa: BLE001 - anything unexpected: Pillow decodes the file
        return None
    if pixels is None or gray == (pre.color_mode == "grayscale"):
        return pixels
    return np.asarray(_to_8bit(Image.fromarray(pixels), "L" if pre.color_mode == "grayscale" else "RGB"))


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
    transposed = _header_orientation(image) in jpeg.TRANSPOSING
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


def _draft(image: JpegImagePlugin.JpegImageFile, pre: Preprocessing) -> None:
    """Ask libjpeg to decode at the smallest DCT scale still at least the target size."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block only costs the speed-up
        return
    size = (pre.width, pre.height)
    if orientation in jpeg.TRANSPOSING:
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
    """Orient, convert and resize; ``[H, W, C]`` in ``0..255`` (``uint8``, or ``float32`` for
    high-depth images)."""
    image = ImageOps.exif_transpose(image)
    size = (pre.width, pre.height)
    resample = _RESAMPLING[pre.resize_method]
    if image.mode in _HIGH_DEPTH_MODES:
        gray = Image.fromarray(_high_depth_to_255(image))
        if gray.size != size:
            gray = gray.resize(size, resample)
        pixels = np.asarray(gray, dtype=np.float32)[:, :, None]
        return np.repeat(pixels, pre.channels, axis=2)
    return _resize_8bit(_to_8bit(image, "L" if pre.color_mode == "grayscale" else "RGB"), pre)


def _resize_8bit(image: Image.Image | np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Resize an ``L`` or ``RGB`` image (or its ``uint8`` array) to the model's size with Pillow;
    ``uint8`` ``[H, W, C]``."""
    if isinstance(image, np.ndarray):
        if image.shape[:2] == (pre.height, pre.width):
            return image[:, :, None] if image.ndim == 2 else image
        image = Image.fromarray(image)
    size = (pre.width, pre.height)
    if image.size != size:
        image = image.resize(size, _RESAMPLING[pre.resize_method])
    pixels = np.asarray(image)
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


def output_shape(pre: Preprocessing, layout: str) -> tuple[int, int, int]:
    """The shape of one decoded row: ``[H, W, C]`` (``NHWC``) or ``[C, H, W]`` (``NCHW``)."""
    if layout == "NCHW":
        return pre.channels, pre.height, pre.width
    return pre.height, pre.width, pre.channels


def normalise(pixels: np.ndarray, pre: Preprocessing, layout: str,
              out: np.ndarray | None = None) -> np.ndarray:
    """Apply ``(pixel * scale + offset - mean[c]) / std[c]`` in ``float32`` and the layout.

    ``pixels`` is ``uint8`` or ``float32`` ``[H, W, C]`` (or ``[N, H, W, C]``: a batch); the
    result is written into ``out`` (``float32`` of :func:`output_shape`, e.g. one row of a
    batch, or ``[N, *output_shape]``) or a new array. Every operation is a ``float32`` operation
    on each value, so the numbers do not depend on where they are written, nor on how many
    images are normalised at once.
    """
    if out is None:
        out = np.empty((*pixels.shape[:-3], *output_shape(pre, layout)), np.float32)
    x = np.moveaxis(out, -3, -1) if layout == "NCHW" else out  # an [..., H, W, C] view of out
    np.multiply(pixels, np.float32(pre.scale), out=x)
    np.add(x, np.float32(pre.offset), out=x)
    if pre.mean is not None:
        np.subtract(x, np.asarray(pre.mean, dtype=np.float32), out=x)
    if pre.std is not None:
        np.divide(x, np.asarray(pre.std, dtype=np.float32), out=x)
    return out
