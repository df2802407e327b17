"""A page as the image sent to a model: encoding, and PDF pages rendered in a child process.

PDFium renders whatever a PDF asks: a few KB of nested form XObjects can draw for minutes, and
PDFium is not thread-safe, so in this process every render would hold one lock and stall every
other student's pages. So a PDF is rendered by a child process (this file run as a script, which
imports only PDFium and Pillow), one page after another, each within a time budget
(``PAGE_SECONDS``) and the whole child within a memory budget (``PAGE_MEMORY_BYTES`` of address
space). A page that overruns either fails alone, with a line saying which budget: the child is
killed and a new one goes on from the next page. Several PDFs render in parallel, one child each.

The child reads a JSON header line and the PDF's bytes on stdin and answers on stdout with JSON
header lines, each followed by ``size`` bytes of image when it has a ``size``:
``{"count": N}`` (or ``{"refused": why}``), then per page ``{"page": i, "mime": m, "size": n}``
or ``{"page": i, "error": why}``.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from PIL import Image

#: A normalised page above this is saved as JPEG instead (Anthropic refuses images over 5 MB).
MAX_IMAGE_BYTES = 4 * 1024 * 1024
JPEG_QUALITY = 90
#: PDF pages are never rendered finer than this (a small page is not blown up past 300 dpi).
MAX_PDF_SCALE = 300 / 72
#: Seconds one PDF page may take to render (opening the file counts as the first page's).
PAGE_SECONDS = 30.0
#: Address space the rendering child may use (a page of 2048 px is about 20 MB of pixels).
PAGE_MEMORY_BYTES = 1024 * 1024 * 1024
PLAIN_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})


def encoded(image: Image.Image, max_side: int, *, photo: bool) -> tuple[bytes, str]:
    """``image`` reduced to fit ``max_side`` and saved as JPEG (a photo) or PNG."""
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if not photo:
        if image.mode not in PLAIN_MODES:
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        png = io.BytesIO()
        image.save(png, format="PNG")
        if png.tell() <= MAX_IMAGE_BYTES:
            return png.getvalue(), "image/png"
    jpeg = io.BytesIO()
    _flattened(image).save(jpeg, format="JPEG", quality=JPEG_QUALITY)
    return jpeg.getvalue(), "image/jpeg"


def _flattened(image: Image.Image) -> Image.Image:
    """RGB or L for JPEG: transparency on white (a scan's paper), palettes expanded."""
    if image.mode in ("RGB", "L"):
        return image
    rgba = image.convert("RGBA")
    paper = Image.new("RGB", rgba.size, "white")
    paper.paste(rgba, mask=rgba.getchannel("A"))
    return paper


# -- the parent's side -----------------------------------------------------------------------


class PdfRefused(Exception):
    """The PDF as a whole is not rendered; the message says why (without the file's name)."""


@dataclass(frozen=True)
class Budget:
    """What rendering one page may take."""

    seconds: float = PAGE_SECONDS
    memory_bytes: int = PAGE_MEMORY_BYTES


def render_pdf(
    data: bytes, max_side: int, max_pages: int, budget: Budget | None = None
) -> list[tuple[bytes, str] | str]:
    """Every page of the PDF ``data``: (image, MIME type), or the line saying why not.

    Raises ``PdfRefused`` for a file that is no PDF, has no pages or more than ``max_pages``,
    or that cannot even be opened within the budget."""
    budget = budget or Budget()
    pages: list[tuple[bytes, str] | str] = []
    count: int | None = None
    while count is None or len(pages) < count:
        child = _Child(data, max_side, max_pages, len(pages), budget)
        try:
            count = child.read_pages(pages, count)
        finally:
            child.close()
        if count is None:  # it stopped before it could even count the pages
            raise PdfRefused(child.why_stopped().replace("render", "open", 1))
        if len(pages) < count:
            pages.append(child.why_stopped())  # the page it was on; the next child goes on
    return pages


class _Child:
    """One rendering process, from page ``first`` on."""

    def __init__(
        self, data: bytes, max_side: int, max_pages: int, first: int, budget: Budget
    ) -> None:
        self.budget = budget
        self.started = time.monotonic()
        self.timed_out = False
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        header = {
            "max_side": max_side,
            "max_pages": max_pages,
            "first": first,
            "memory": budget.memory_bytes,
        }
        assert self.process.stdin is not None and self.process.stdout is not None
        try:  # the child reads all of stdin before it does anything else
            self.process.stdin.write(json.dumps(header).encode() + b"\n" + data)
            self.process.stdin.close()
        except BrokenPipeError:
            pass
        self._stdout = self.process.stdout
        os.set_blocking(self._stdout.fileno(), False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._buffer = bytearray()

    def read_pages(self, pages: list[tuple[bytes, str] | str], count: int | None) -> int | None:
        """Append what the child renders to ``pages``; the page count (None: it never said)."""
        while True:
            message = self._message()
            if message is None:
                return count
            header, payload = message
            if "refused" in header:
                raise PdfRefused(str(header["refused"]))
            if "count" in header:
                count = int(header["count"])
            elif "error" in header:
                pages.append(str(header["error"]))
            else:
                pages.append((payload, str(header["mime"])))
            if count is not None and len(pages) >= count:
                return count

    def why_stopped(self) -> str:
        if self.timed_out:
            return f"took more than {self.budget.seconds:g} s to render; not sent"
        megabytes = self.budget.memory_bytes // (1024 * 1024)
        return f"could not be rendered within {megabytes} MB of memory; not sent"

    def _message(self) -> tuple[dict[str, Any], bytes] | None:
        """The next header and its payload; None once the child stopped or overran its time
        (then it is killed)."""
        deadline = time.monotonic() + self.budget.seconds
        header: dict[str, Any] | None = None
        while True:
            if header is None and b"\n" in self._buffer:
                line, _, rest = bytes(self._buffer).partition(b"\n")
                self._buffer = bytearray(rest)
                header = json.loads(line)
            if header is not None and len(self._buffer) >= int(header.get("size", 0)):
                size = int(header.get("size", 0))
                payload = bytes(self._buffer[:size])
                del self._buffer[:size]
                return header, payload
            left = deadline - time.monotonic()
            if left <= 0:
                self.timed_out = True
                return None
            if not self._selector.select(left):
                continue
            chunk = self._stdout.read(1 << 20)
            if chunk is None:
                continue
            if not chunk:  # the child ended (or the memory limit ended it)
                return None
            self._buffer += chunk

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._selector.close()
        self._stdout.close()


# -- the child's side ------------------------------------------------------------------------


def _child_main(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    import resource

    import pypdfium2

    raw = stdin.read()
    line, _, data = raw.partition(b"\n")
    header = json.loads(line)
    memory = int(header["memory"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    max_side, max_pages, first = int(header["max_side"]), int(header["max_pages"]), header["first"]

    def send(message: dict[str, Any], payload: bytes = b"") -> None:
        stdout.write(json.dumps(message).encode() + b"\n" + payload)
        stdout.flush()

    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as error:
        send({"refused": f"not a readable PDF ({error})"})
        return 0
    count = len(document)
    if count == 0:
        send({"refused": "a PDF without pages"})
        return 0
    if count > max_pages:
        send({"refused": f"{count} pages, more than the limit of {max_pages}"})
        return 0
    send({"count": count})
    for index in range(int(first), count):
        try:
            image, mime = _render_page(document, index, max_side)
        except _PageProblem as problem:
            send({"page": index, "error": str(problem)})
        except MemoryError:
            megabytes = memory // (1024 * 1024)
            send({"page": index, "error": f"needs more than {megabytes} MB to render; not sent"})
        else:
            send({"page": index, "mime": mime, "size": len(image)}, image)
    return 0


class _PageProblem(Exception):
    pass


def _render_page(document: Any, index: int, max_side: int) -> tuple[bytes, str]:
    import pypdfium2

    try:
        page = document[index]
        try:
            width, height = page.get_size()  # points, after the page's own rotation
            if min(width, height) <= 0:
                raise _PageProblem(f"an empty page ({width:g}x{height:g} pt)")
            bitmap = page.render(scale=min(max_side / max(width, height), MAX_PDF_SCALE))
            try:
                pixels: Image.Image = bitmap.to_pil().copy()  # ours: the bitmap is freed
            finally:
                bitmap.close()
        finally:
            page.close()
    except pypdfium2.PdfiumError as error:
        raise _PageProblem(f"cannot render ({error})") from None
    return encoded(pixels, max_side, photo=False)


if __name__ == "__main__":
    sys.exit(_child_main(sys.stdin.buffer, sys.stdout.buffer))
