"""A student's submitted pages, ready for a vision model: PDFs rendered, photos normalised.

    pages = student_pages(assignment.submissions / "alice")
    for page in pages:
        if page.error:  # one line naming the file: that page fails, the others go on
            ...
        else:
            page.data_url()  # what a vision task sends; page.sha256 names its content

``submissions/<student>/`` may hold PDFs (``.pdf``) and images (``.png``, ``.jpg``, ``.jpeg``,
``.webp``, ``.gif``, ``.tif``, ``.tiff``, ``.bmp``); other files and hidden files are ignored.

**Page numbers.** An image named as a page is that page: the name without its extension is a
number, or ends in ``page``, ``pg`` or ``p`` and a number (``3.png``, ``page_003.png``,
``Page 3.jpg``, ``alice-p3.jpg`` are page 3). Every other page, each PDF's pages in order and
images named otherwise (``IMG_4567.jpg``: a camera's counter is not a page number), takes the
lowest numbers no named image holds, files in natural name order (``IMG_9`` before ``IMG_10``).
So ``exam.pdf`` of three pages and ``page_004.jpg`` are pages 1-4, and three phone photos are
pages 1-3 whatever the camera called them. Two images named as the same page make that page
fail with a line naming both. A file that cannot be opened counts as one page; a multi-page
TIFF counts like a PDF.

**Images.** A model sees at most about 2048 pixels on the long side (OpenAI fits high-detail
images into 2048x2048, Anthropic and Gemini scale or tile larger ones down), so pages are
rendered or reduced to ``MAX_SIDE``: handwriting stays legible (an A4 or Letter page comes out
at about 175-185 dpi) and no pixels are sent that the provider would throw away. A PNG, JPEG,
WebP or GIF that is already within that size, upright (no EXIF rotation), still and below
``MAX_IMAGE_BYTES`` is passed through byte for byte, so its content hash does not change. Anything
else is turned upright (EXIF orientation), reduced and saved as JPEG if it was a photo (a JPEG)
or PNG otherwise (TIFF, BMP, a PDF page), falling back to JPEG when the PNG would exceed
``MAX_IMAGE_BYTES``.

**Guards.** A file above ``MAX_FILE_BYTES``, an image that would decode to more than
``MAX_DECODED_PIXELS`` (decompression bombs; a JPEG counts at the reduced size it is decoded
at), a PDF or TIFF of more than ``MAX_PDF_PAGES`` pages, a symlink that leads out of the
student's folder, and anything unreadable or corrupt fail their page(s) only, with a line
naming the file. A PDF page that takes longer than its time budget or more than its memory
budget to render fails alone (``rendering``: PDFs render in a child process, one per PDF, so
``student_pages`` may run on several threads at once and one slow PDF stalls no other). Only
the image formats listed above are decoded (Pillow is never asked to guess among all its
plugins). HEIC photos fail with a line saying to export them as JPEG: phones convert them when
sharing, and decoding them would need ``pillow-heif`` (libheif).
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from aita.files import FileRefused, read_inside
from aita.pipelines.rendering import (
    MAX_IMAGE_BYTES,
    PLAIN_MODES,
    Budget,
    PdfRefused,
    render_pdf,
)
from aita.pipelines.rendering import encoded as _encoded

#: Longest side, in pixels, of a page sent to a model.
MAX_SIDE = 2048
#: A file larger than this is refused (a 600 dpi uncompressed A4 colour TIFF is about 100 MB).
MAX_FILE_BYTES = 100 * 1024 * 1024
#: A PDF or a TIFF with more pages is refused as a whole (every rendered page is held in
#: memory, and each is a vision call).
MAX_PDF_PAGES = 200
#: An image that would decode to more pixels is refused (after a JPEG's reduced decoding): a
#: 257 KB PNG can hold 88 million pixels, 1 GB once decoded. A 600 dpi A4 or Letter scan is
#: about 35 million.
MAX_DECODED_PIXELS = 40_000_000

PDF_SUFFIXES = frozenset({".pdf"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".bmp"})
HEIC_SUFFIXES = frozenset({".heic", ".heif"})

#: Pillow formats decoded here (a JPEG may open as MPO, the same bytes), and the ones
#: providers accept as they are.
_DECODED = ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP")
_SENT_AS_IS = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg"}
_SENT_AS_IS |= {"WEBP": "image/webp", "GIF": "image/gif"}
_PLAIN_MODES = PLAIN_MODES
_ORIENTATION = 0x0112
_NAMED_PAGE = re.compile(r"(?:(?:.*[^a-z])?(?:page|pg|p)[\s_.-]*)?(\d+)", re.IGNORECASE)
_DIGITS = re.compile(r"(\d+)")
_FORMAT_NAMES = "PNG, JPEG, WebP, GIF, TIFF or BMP"
#: What Pillow raises for a file it cannot decode.
_DECODER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Page:
    """One page of a submission: its image ready to send, or the line saying why it is not.

    ``label`` names the page's source for people (``exam.pdf page 2``, ``page_003.jpg``);
    ``source`` is the file it came from. Exactly one of ``image`` (with ``mime_type``) and
    ``error`` is set.
    """

    number: int
    label: str
    source: Path
    image: bytes | None = None
    mime_type: str | None = None
    error: str | None = None

    @cached_property
    def sha256(self) -> str | None:
        """The hex SHA-256 of the image sent: what the page's transcription was made from."""
        return hashlib.sha256(self.image).hexdigest() if self.image is not None else None

    def data_url(self) -> str:
        """The image as an inline ``data:`` URL (what a vision task sends)."""
        if self.image is None or self.mime_type is None:
            raise ValueError(f"{self.label}: no image ({self.error})")
        return f"data:{self.mime_type};base64,{base64.b64encode(self.image).decode('ascii')}"


@dataclass(frozen=True)
class _Rendered:
    """One page of one file, before it is numbered."""

    label: str
    image: bytes | None = None
    mime_type: str | None = None
    error: str | None = None


class _Refused(Exception):
    """A file or page that is not sent; the message is the line that says why."""


def student_pages(
    folder: Path,
    *,
    max_side: int = MAX_SIDE,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_pixels: int | None = None,
    page_budget: Budget | None = None,
) -> list[Page]:
    """Every page in ``folder`` (one student's submission), numbered, in page order.

    ``max_pixels`` (decoded pixels per image) defaults to ``MAX_DECODED_PIXELS`` or Pillow's
    ``Image.MAX_IMAGE_PIXELS``, whichever is lower; ``page_budget`` is the time and memory one
    PDF page may take to render. Never raises for a bad file: its pages carry the error. A
    folder that does not exist has no pages.
    """
    if not folder.is_dir():
        return []
    if max_pixels is None:
        max_pixels = min(MAX_DECODED_PIXELS, Image.MAX_IMAGE_PIXELS or MAX_DECODED_PIXELS)
    limits = _Limits(max_side, max_file_bytes, max_pixels, page_budget or Budget())
    root = folder.resolve()
    named: dict[int, list[tuple[Path, _Rendered]]] = {}
    unnamed: list[tuple[Path, _Rendered]] = []
    for path in sorted(_submitted_files(folder), key=lambda p: _natural_key(p.name)):
        rendered = _render_file(path, root, limits)
        number = _named_page(path)
        if number is not None and len(rendered) == 1:
            named.setdefault(number, []).append((path, rendered[0]))
        else:
            unnamed += [(path, r) for r in rendered]
    pages = [_named(number, claims) for number, claims in named.items()]
    free = (n for n in itertools.count(1) if n not in named)
    pages += [_page(next(free), path, r) for path, r in unnamed]
    return sorted(pages, key=lambda p: p.number)


@dataclass(frozen=True)
class _Limits:
    max_side: int
    max_file_bytes: int
    max_pixels: int | None  # None: no limit (Pillow's own was switched off)
    budget: Budget


def _submitted_files(folder: Path) -> Iterator[Path]:
    for path in folder.iterdir():
        suffix = path.suffix.lower()
        known = suffix in PDF_SUFFIXES | IMAGE_SUFFIXES | HEIC_SUFFIXES
        if known and not path.name.startswith(".") and (path.is_file() or path.is_symlink()):
            yield path


def _render_file(path: Path, root: Path, limits: _Limits) -> list[_Rendered]:
    try:
        data = _read_inside(path, root, limits.max_file_bytes)
        suffix = path.suffix.lower()
        if suffix in HEIC_SUFFIXES:
            raise _Refused(f"{path}: HEIC photos are not supported; export the photo as JPEG")
        if suffix in PDF_SUFFIXES:
            return _render_pdf(path, data, limits)
        return _render_image(path, data, limits)
    except _Refused as refused:
        return [_Rendered(path.name, error=str(refused))]


def _read_inside(path: Path, root: Path, max_bytes: int) -> bytes:
    """The file's bytes, if it (or what its symlink leads to) is a file inside ``root``."""
    try:
        data = read_inside(path, root, max_bytes=max_bytes, root_name="the student's folder")
    except FileRefused as refused:
        raise _Refused(str(refused)) from None
    if not data:
        raise _Refused(f"{path}: empty file")
    return data


def _render_image(path: Path, data: bytes, limits: _Limits) -> list[_Rendered]:
    try:
        with Image.open(io.BytesIO(data), formats=_DECODED) as image:
            if image.format in ("JPEG", "MPO") and max(image.size) > limits.max_side:
                image.draft("RGB", (limits.max_side, limits.max_side))  # 1/2, 1/4 or 1/8
            _check_pixels(path, image, limits.max_pixels)  # what will be decoded
            if image.format == "TIFF" and getattr(image, "n_frames", 1) > 1:
                return _tiff_pages(path, image, limits)
            return [_Rendered(path.name, *_normalised(image, data, limits.max_side))]
    except Image.DecompressionBombError as error:
        raise _Refused(f"{path}: {error}") from None
    except UnidentifiedImageError:
        raise _Refused(f"{path}: not a readable image ({_FORMAT_NAMES})") from None
    except _DECODER_ERRORS as error:
        raise _Refused(f"{path}: corrupt or truncated image ({error})") from None


def _check_pixels(path: Path, image: Image.Image, max_pixels: int | None) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise _Refused(
            f"{path}: {width}x{height} pixels, more than the limit of {max_pixels:,} "
            "(a decompression bomb?)"
        )


def _tiff_pages(path: Path, image: Image.Image, limits: _Limits) -> list[_Rendered]:
    frames = getattr(image, "n_frames", 1)
    if frames > MAX_PDF_PAGES:  # each page would be a vision call, as a PDF's
        raise _Refused(f"{path}: {frames} pages, more than the limit of {MAX_PDF_PAGES}")
    pages = []
    for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
        label = f"{path.name} page {number}"
        try:
            _check_pixels(path, frame, limits.max_pixels)
            frame.load()
            upright = ImageOps.exif_transpose(frame)
            pages.append(_Rendered(label, *_encoded(upright, limits.max_side, photo=False)))
        except _Refused as refused:
            pages.append(_Rendered(label, error=f"{refused} (page {number})"))
        except _DECODER_ERRORS as error:
            pages.append(_Rendered(label, error=f"{path} page {number}: corrupt ({error})"))
    return pages


def _normalised(image: Image.Image, data: bytes, max_side: int) -> tuple[bytes, str]:
    """(bytes, MIME type): ``data`` itself when it can be sent as it is, else re-encoded."""
    photo = image.format in ("JPEG", "MPO")
    image.load()  # the whole image is decoded: a truncated or corrupt file fails here
    upright = image.getexif().get(_ORIENTATION, 1) in (0, 1)
    still = not getattr(image, "is_animated", False) or image.format == "MPO"
    mime = _SENT_AS_IS.get(image.format or "")
    if (
        mime is not None
        and upright
        and still
        and image.mode in _PLAIN_MODES
        and max(image.size) <= max_side
        and len(data) <= MAX_IMAGE_BYTES
    ):
        return data, mime
    return _encoded(ImageOps.exif_transpose(image), max_side, photo=photo)


def _render_pdf(path: Path, data: bytes, limits: _Limits) -> list[_Rendered]:
    """Each page rendered by a child process within its budget (``rendering``); a page that
    overruns fails alone."""
    try:
        rendered = render_pdf(data, limits.max_side, MAX_PDF_PAGES, limits.budget)
    except PdfRefused as refused:
        raise _Refused(f"{path}: {refused}") from None
    pages = []
    for number, page in enumerate(rendered, start=1):
        label = f"{path.name} page {number}"
        if isinstance(page, str):
            pages.append(_Rendered(label, error=f"{path} page {number}: {page}"))
        else:
            pages.append(_Rendered(label, *page))
    return pages


def _named(number: int, claims: list[tuple[Path, _Rendered]]) -> Page:
    if len(claims) == 1:
        return _page(number, *claims[0])
    names = ", ".join(path.name for path, _ in claims)
    path = claims[0][0]
    error = f"{path.parent}: page {number} is given by several files ({names}); keep one"
    return Page(number=number, label=names, source=path, error=error)


def _page(number: int, path: Path, rendered: _Rendered) -> Page:
    return Page(
        number=number,
        label=rendered.label,
        source=path,
        image=rendered.image,
        mime_type=rendered.mime_type,
        error=rendered.error,
    )


def _named_page(path: Path) -> int | None:
    """The page an image's name gives (``page_003.png`` -> 3), or None (PDFs never name one)."""
    if path.suffix.lower() not in IMAGE_SUFFIXES | HEIC_SUFFIXES:
        return None
    match = _NAMED_PAGE.fullmatch(path.stem)
    return int(match.group(1)) or None if match else None


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that compares digit runs as numbers: ``IMG_9`` before ``IMG_10``."""
    parts = _DIGITS.split(name.casefold())
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts if p)
