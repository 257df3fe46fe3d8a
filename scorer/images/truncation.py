"""Files that end early in ways Pillow decodes without complaint: a PNG without its ``IEND``
chunk, a GIF without its trailer, a WebP or BMP shorter than its header says.

:func:`check_complete` raises :class:`~scorer.errors.ImageError` ``"truncated"`` for them, so that
every format reports a cut-off file the same way (JPEG and TIFF fail inside Pillow already).
"""

from __future__ import annotations

from scorer.errors import ImageError

REASON_TRUNCATED = "truncated"


def check_complete(data: bytes, fmt: str | None) -> None:
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


