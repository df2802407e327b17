"""Submitted files built to exhaust the machine fail their own pages only, quickly: a PDF page
that renders for minutes, a TIFF of a thousand frames, a small PNG of 88 million pixels."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from aita.pipelines.pages import MAX_PDF_PAGES, student_pages
from aita.pipelines.rendering import Budget
from tests.pipelines.test_pages import BLUE, RED, decoded, pdf


def nested_forms_pdf(depth: int = 10, fanout: int = 4) -> bytes:
    """A PDF of about 3 KB whose first page draws a form that draws a form ... ``fanout``
    times at each of ``depth`` levels (4**9 fills: minutes of PDFium's time); its second page
    is blank."""
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R 5 0 R] /Count 2 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /XObject << /X 10 0 R >> >> /Contents 4 0 R >>",
        4: _stream(b"", b"q /X Do Q"),
        5: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 6 0 R >>",
        6: _stream(b"", b"0 0 1 rg 0 0 612 792 re f"),
    }
    for level in range(depth):
        number = 10 + level
        if level == depth - 1:
            body, resources = b"1 0 0 rg 0 0 612 792 re f", b""
        else:
            body = b" ".join(b"q 1 0 0 1 %d 0 cm /X Do Q" % i for i in range(fanout))
            resources = b"/Resources << /XObject << /X %d 0 R >> >>" % (number + 1)
        objects[number] = _stream(
            b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] " + resources, body
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    size = max(objects) + 1
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        entry = b"%010d 00000 n \n" % offsets[number] if number in offsets else None
        out += entry or b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


def _stream(dictionary: bytes, body: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (dictionary, len(body), body)


@pytest.mark.timeout(60)
def test_a_pdf_page_that_renders_for_minutes_fails_alone_and_stalls_no_one(
    tmp_path: Path,
) -> None:
    slow, other = tmp_path / "slow", tmp_path / "other"
    slow.mkdir()
    other.mkdir()
    (slow / "exam.pdf").write_bytes(nested_forms_pdf())
    pdf(other / "exam.pdf", [RED, BLUE], size=(300, 400))
    budget = Budget(seconds=2)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        bomb = pool.submit(student_pages, slow, page_budget=budget)
        fine = pool.submit(student_pages, other, page_budget=budget)
        assert all(p.error is None for p in fine.result())
        assert time.monotonic() - started < 15  # not held behind the slow one
        first, second = bomb.result()
    assert first.error is not None and "took more than 2 s to render" in first.error
    assert first.error.startswith(f"{slow / 'exam.pdf'} page 1")
    assert second.error is None
    assert decoded(second).convert("RGB").getpixel((10, 10)) == (0, 0, 255)
    assert time.monotonic() - started < 30


@pytest.mark.timeout(60)
def test_a_pdf_page_over_its_memory_budget_fails_alone(tmp_path: Path) -> None:
    pdf(tmp_path / "exam.pdf", [RED, BLUE])  # Letter: 2048 px high, 22 MB of pixels
    pages = student_pages(tmp_path, page_budget=Budget(memory_bytes=64 * 1024 * 1024))
    assert [p.label for p in pages] == ["exam.pdf page 1", "exam.pdf page 2"]
    assert all("needs more than 64 MB to render" in (p.error or "") for p in pages)
    assert all(p.error is None for p in student_pages(tmp_path))  # within the usual budget


def test_a_tiff_of_more_frames_than_a_pdf_may_have_pages_is_one_failed_page(
    tmp_path: Path,
) -> None:
    frames = [Image.new("L", (2, 2), n % 256) for n in range(MAX_PDF_PAGES + 1)]
    frames[0].save(tmp_path / "scan.tiff", save_all=True, append_images=frames[1:])
    (page,) = student_pages(tmp_path)
    assert page.error == f"{tmp_path / 'scan.tiff'}: 201 pages, more than the limit of 200"


def test_a_small_png_of_88_million_pixels_is_refused_before_it_is_decoded(
    tmp_path: Path,
) -> None:
    Image.new("1", (11000, 8000)).save(tmp_path / "page_001.png")  # a few KB on disk
    (page,) = student_pages(tmp_path)
    assert page.error is not None and "11000x8000 pixels, more than the limit" in page.error


def test_a_48_megapixel_phone_photo_is_decoded_reduced_and_sent(tmp_path: Path) -> None:
    Image.new("RGB", (8000, 6000), RED).save(tmp_path / "page_001.jpg", quality=50)
    (page,) = student_pages(tmp_path)
    assert page.error is None and max(decoded(page).size) == 2048
