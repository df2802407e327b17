"""Images for vision tasks: a local file becomes an inline base64 data URL (never an upload).

The file's first bytes must be those of an image, so a corrupt or mislabelled page fails here,
before any call is paid for; it must be a regular file (a FIFO or ``/dev/zero`` is refused, not
read) of at most 20 MB.
"""

from __future__ import annotations

import base64
from pathlib import Path

from aita.files import read_inside

#: What an image costs in prompt tokens, roughly, across vision models (for estimates only).
IMAGE_TOKENS = 1000
#: A local image larger than this is refused (providers take 20 MB at most).
MAX_IMAGE_BYTES = 20 * 1024 * 1024


def image_to_data_url(url_or_path: str | Path) -> str:
    """Return http(s) and data URLs unchanged; read a local image into a base64 data URL."""
    text = str(url_or_path)
    if text.startswith(("http://", "https://", "data:")):
        return text
    path = Path(text)
    data = read_inside(path, Path(path.anchor or "/"), max_bytes=MAX_IMAGE_BYTES)
    mime = image_type(data)
    if mime is None:
        raise ValueError(f"{path.name}: not a readable image (PNG, JPEG, WebP, TIFF or GIF)")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_type(data: bytes) -> str | None:
    """The MIME type of image bytes, by their signature; None if they are no image we know."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None
