"""Image discovery, reading, decoding and preprocessing.

Files flow one way: :func:`discover` or :func:`read_file_list` name them (:class:`ImageRef`),
:func:`read_bytes` reads them, :func:`image_key` hashes them and :func:`decode` turns the bytes
into one preprocessed ``float32`` row of the graph input, ``[H, W, C]`` (layout ``NHWC``) or
``[C, H, W]`` (``NCHW``). A file that cannot be used raises :class:`~scorer.errors.ImageError`
with a short fixed ``reason`` that becomes its status; it never stops the run.

Decoding follows the Keras ``load_img`` pipeline the models were trained with (convert the colour
mode, then resize the 8-bit image with Pillow), plus EXIF orientation and safety checks:

- alpha is discarded, keeping the colour stored under transparent pixels (as ``load_img`` and
  ``tf.io.decode_image(channels=3)`` do);
- 16-bit integer grayscale (``I;16*``, and 32-bit ``I``, taken to hold 16-bit values) is
  scaled by ``255 / 65535`` and clipped; 32-bit float (``F``) is taken as ``0..1`` when its largest
  finite value is at most 1 and as ``0..255`` otherwise; these are resized as floats;
- RGB to grayscale uses Pillow's ITU-R 601-2 luma, grayscale to RGB repeats the channel.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, JpegImagePlugin, UnidentifiedImageError

from scorer.contract import LAYOUTS, Preprocessing
from scorer.errors import ImageError, InputError, ScorerError

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest accepted ``width * height``; the same as Pillow's default ``MAX_IMAGE_PIXELS``."""

FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
"""Pillow formats :func:`decode` accepts; anything else is ``"not an image"``."""

REASON_UNREADABLE = "unreadable"
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


@dataclass(frozen=True)
class ImageRef:
    """One input file.

    Attributes:
        path: POSIX path relative to the images root, or the line as written in a file list.
        source: Absolute path of the file.
        label: Top-level sub-folder of the root holding the file, or ``None``.
    """

    path: str
    source: Path
    label: str | None = None


def discover(root: Path) -> list[ImageRef]:
    """List every file under ``root``, sorted by relative POSIX path.

    Hidden files and folders (name starting with ``.``) are skipped; everything else is kept, images
    or not, so that nothing is silently dropped (non-images become failed rows). Links to folders
    are followed unless they loop back to a folder above; broken links are kept (they fail as
    ``"unreadable"``); FIFOs, sockets and devices are skipped.

    Args:
        root: The images folder. A file in ``root/cat/...`` gets label ``"cat"``; files directly in
            ``root`` get label ``None``.

    Raises:
        InputError: ``root`` does not exist, is not a folder, holds no files, or has a sub-folder
            that cannot be listed.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(
            f"image folder '{root}' does not exist; pass the folder that holds the images "
            "(one sub-folder per class is optional)"
        )
    if not root.is_dir():
        raise InputError(
            f"'{root}' is a file, expected a folder of images; pass its parent folder, "
            "or list the files to score in a file list"
        )
    base = root.absolute()
    refs = [_ref_for(base, relative) for relative in _walk_files(base)]
    if not refs:
        raise InputError(
            f"image folder '{root}' holds no files (hidden files and folders, whose names start "
            "with '.', are skipped); check the path or add images"
        )
    refs.sort(key=lambda ref: ref.path)
    return refs


def _walk_files(base: Path) -> list[str]:
    """Relative POSIX paths of the non-hidden files under ``base``.

    Linked folders are followed unless they lead back to a folder on the way down (a cycle).
    """
    found: list[str] = []
    real_ancestors = {os.fspath(base): frozenset({os.path.realpath(base)})}

    def fail(error: OSError) -> None:
        raise InputError(
            f"cannot list folder '{error.filename}': {error.strerror}; fix its permissions "
            "or move it out of the image folder"
        ) from error

    for folder, dirnames, filenames in os.walk(base, onerror=fail, followlinks=True):
        ancestors = real_ancestors.pop(folder)
        kept = []
        for name in dirnames:
            real = os.path.realpath(os.path.join(folder, name))
            if not name.startswith(".") and real not in ancestors:
                real_ancestors[os.path.join(folder, name)] = ancestors | {real}
                kept.append(name)
        dirnames[:] = kept
        relative_folder = PurePosixPath(Path(folder).relative_to(base).as_posix())
        for name in filenames:
            full = os.path.join(folder, name)
            is_broken_link = os.path.islink(full) and not os.path.exists(full)
            if name.startswith(".") or not (os.path.isfile(full) or is_broken_link):
                continue
            found.append((relative_folder / name).as_posix())
    return found


def _ref_for(base: Path, relative: str) -> ImageRef:
    parts = PurePosixPath(relative).parts
    label = parts[0] if len(parts) > 1 else None
    return ImageRef(path=relative, source=base.joinpath(*parts), label=label)


def read_file_list(lines: Iterable[str], base: Path) -> list[ImageRef]:
    """Read image paths from a file list, keeping the given order.

    One path per line; surrounding whitespace is stripped, and blank lines and lines starting with
    ``#`` are skipped. Relative paths are resolved against ``base``; ``path`` keeps the line as
    written and ``label`` is ``None``.

    Raises:
        InputError: The list names no file.
    """
    absolute_base = Path(base).absolute()
    refs = []
    for line in lines:
        text = line.strip().lstrip("\ufeff")
        if not text or text.startswith("#"):
            continue
        refs.append(ImageRef(path=text, source=absolute_base / text, label=None))
    if not refs:
        raise InputError(
            "the file list names no images (blank lines and lines starting with '#' are "
            "skipped); write one image path per line"
        )
    return refs


def read_bytes(ref: ImageRef) -> bytes:
    """Read a whole file.

    Raises:
        ImageError: ``"unreadable"``: missing, not a file, or no permission.
    """
    try:
        return ref.source.read_bytes()
    except OSError as error:
        raise ImageError(REASON_UNREADABLE, f"{ref.path}: {error.strerror or error}") from error


def image_key(data: bytes) -> str:
    """The SHA-256 hex digest of a file's bytes, used to match rows across runs."""
    return hashlib.sha256(data).hexdigest()


def decode(
    data: bytes,
    pre: Preprocessing,
    layout: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = True,
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
        image = _open(data, max_pixels)
        with image:
            if draft and isinstance(image, JpegImagePlugin.JpegImageFile):
                _draft(image, pre)
            _load(image)
            pixels = _to_pixels(image, pre)
    except ImageError:
        raise
    except _BOMB_ERRORS as error:
        raise ImageError(REASON_TOO_LARGE, str(error)) from error
    except MemoryError as error:
        raise ImageError(REASON_TOO_LARGE, "out of memory while decoding") from error
    except Exception as error:  # anything else Pillow raises on bad data
        raise ImageError(REASON_DECODE, f"{type(error).__name__}: {error}") from error
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
