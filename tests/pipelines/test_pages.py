"""Submitted pages: PDFs rendered, photos normalised, numbering, and the guards around them.

Every fixture is made here with Pillow; assertions decode what comes out.
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from aita.pipelines.assignment import load_assignment
from aita.pipelines.pages import MAX_SIDE, Page, student_pages

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 128, 0), (0, 0, 255), (255, 255, 255)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "submissions" / "alice"
    path.mkdir(parents=True)
    return path


def decoded(page: Page) -> Image.Image:
    assert page.image is not None, page.error
    image = Image.open(io.BytesIO(page.image))
    image.load()
    return image


def pdf(
    path: Path, colours: list[tuple[int, int, int]], size: tuple[int, int] = (612, 792)
) -> Path:
    """A PDF of one page per colour, ``size`` in points (Pillow writes 72 pixels per inch)."""
    pages = [Image.new("RGB", size, colour) for colour in colours]
    pages[0].save(path, "PDF", save_all=True, append_images=pages[1:])
    return path


def png(path: Path, size: tuple[int, int] = (400, 500), colour: tuple[int, ...] = WHITE) -> Path:
    Image.new("RGB", size, colour).save(path, "PNG")
    return path


def summary(pages: list[Page]) -> list[tuple[int, str, bool]]:
    return [(p.number, p.label, p.error is None) for p in pages]


def test_a_pdf_contributes_its_pages_in_order_rendered_to_the_long_side(folder: Path) -> None:
    pdf(folder / "exam.pdf", [RED, GREEN, BLUE])
    pages = student_pages(folder)
    assert summary(pages) == [
        (1, "exam.pdf page 1", True),
        (2, "exam.pdf page 2", True),
        (3, "exam.pdf page 3", True),
    ]
    for page, colour in zip(pages, [RED, GREEN, BLUE], strict=True):
        assert page.mime_type == "image/png" and page.source == folder / "exam.pdf"
        image = decoded(page)
        assert image.format == "PNG"
        # Letter, 612x792 pt, rendered so the long side is 2048 px (about 186 dpi).
        assert image.size == (round(612 * MAX_SIDE / 792), MAX_SIDE)
        # Pillow stores PDF images as JPEG, hence "near".
        assert _near(image.convert("RGB").getpixel((image.width // 2, image.height // 2)), colour)


def test_a_small_pdf_page_is_not_blown_up_past_300_dpi(folder: Path) -> None:
    pdf(folder / "card.pdf", [RED], size=(144, 72))  # 2 x 1 inches
    (page,) = student_pages(folder)
    assert decoded(page).size == (600, 300)


def test_a_huge_scan_is_reduced_to_the_long_side_and_stays_a_jpeg(folder: Path) -> None:
    scan = Image.new("RGB", (6000, 8000), WHITE)
    scan.paste(BLUE, (0, 0, 3000, 4000))  # the top-left quarter
    scan.save(folder / "page_001.jpg", "JPEG", quality=85)
    (page,) = student_pages(folder)
    image = decoded(page)
    assert page.mime_type == "image/jpeg" and image.format == "JPEG"
    assert image.size == (1536, 2048)
    assert _near(image.getpixel((100, 100)), BLUE)
    assert _near(image.getpixel((1400, 1900)), WHITE)


def test_a_tiff_and_a_bmp_are_converted_to_png_with_their_pixels(folder: Path) -> None:
    tiff = Image.new("RGB", (300, 400), GREEN)
    tiff.save(folder / "page_001.tiff", "TIFF")
    Image.new("RGB", (120, 80), RED).save(folder / "page_002.bmp", "BMP")
    first, second = student_pages(folder)
    assert (first.mime_type, second.mime_type) == ("image/png", "image/png")
    assert decoded(first).size == (300, 400) and decoded(first).getpixel((5, 5)) == GREEN
    assert decoded(second).size == (120, 80) and decoded(second).getpixel((5, 5)) == RED


def test_exif_orientation_is_applied(folder: Path) -> None:
    """A phone held upright stores the picture sideways with orientation 6 (rotate 90° CW)."""
    stored = Image.new("RGB", (600, 400), WHITE)
    stored.paste(RED, (0, 0, 100, 100))  # stored top-left is shown top-right
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(folder / "page_001.jpg", "JPEG", exif=exif, quality=95)
    (page,) = student_pages(folder)
    image = decoded(page)
    assert page.mime_type == "image/jpeg"
    assert image.size == (400, 600)
    assert _near(image.getpixel((350, 50)), RED)
    assert _near(image.getpixel((50, 50)), WHITE)
    assert image.getexif().get(0x0112, 1) == 1  # no second rotation by whoever reads it


@pytest.mark.parametrize(
    ("name", "kind", "mime"),
    [
        ("page_001.png", "PNG", "image/png"),
        ("page_001.jpg", "JPEG", "image/jpeg"),
        ("page_001.webp", "WEBP", "image/webp"),
        ("page_001.gif", "GIF", "image/gif"),
    ],
)
def test_an_image_providers_accept_is_passed_through_byte_for_byte(
    folder: Path, name: str, kind: str, mime: str
) -> None:
    image = Image.new("RGB", (800, 1000), WHITE)
    image.paste(BLUE, (0, 0, 400, 500))
    image.save(folder / name, kind)
    (page,) = student_pages(folder)
    original = (folder / name).read_bytes()
    assert page.image == original and page.mime_type == mime
    assert page.sha256 == hashlib.sha256(original).hexdigest()
    assert page.data_url().startswith(f"data:{mime};base64,")


def test_an_animated_gif_is_sent_as_its_first_frame(folder: Path) -> None:
    frames = [Image.new("RGB", (200, 200), c) for c in (RED, BLUE)]
    frames[0].save(folder / "page_001.gif", save_all=True, append_images=frames[1:])
    (page,) = student_pages(folder)
    image = decoded(page)
    assert page.mime_type == "image/png" and not getattr(image, "is_animated", False)
    assert image.convert("RGB").getpixel((10, 10)) == RED


def test_a_multipage_tiff_counts_like_a_pdf(folder: Path) -> None:
    frames = [Image.new("RGB", (300, 400), c) for c in (RED, GREEN)]
    frames[0].save(folder / "scan.tiff", save_all=True, append_images=frames[1:])
    pages = student_pages(folder)
    assert summary(pages) == [(1, "scan.tiff page 1", True), (2, "scan.tiff page 2", True)]
    assert decoded(pages[1]).getpixel((5, 5)) == GREEN


def test_a_pdf_and_images_are_numbered_by_the_one_rule(folder: Path) -> None:
    pdf(folder / "exam.pdf", [RED, GREEN, BLUE])
    png(folder / "page_004.png")
    png(folder / "cover.png")  # not named as a page: the lowest number still free
    assert summary(student_pages(folder)) == [
        (1, "cover.png", True),
        (2, "exam.pdf page 1", True),
        (3, "exam.pdf page 2", True),
        (4, "page_004.png", True),
        (5, "exam.pdf page 3", True),
    ]


@pytest.mark.parametrize(
    ("names", "numbers"),
    [
        (["page_001.png", "page_003.png"], [1, 3]),  # a missing page keeps the others in place
        (["IMG_10.jpg", "IMG_9.jpg", "IMG_11.jpg"], [2, 1, 3]),  # camera counters, natural order
        (["Page 2.png", "alice-p1.png", "3.png"], [2, 1, 3]),
        (["scan_2024-05-01_p2.png", "scan_2024-05-01_p1.png"], [2, 1]),
        (["exp_1.png", "exp_2.png"], [1, 2]),
    ],
)
def test_image_names_give_page_numbers(folder: Path, names: list[str], numbers: list[int]) -> None:
    for name in names:
        png(folder / name)
    by_label = {p.label: p.number for p in student_pages(folder)}
    assert [by_label[name] for name in names] == numbers


def test_two_images_named_for_one_page_fail_that_page_naming_both(folder: Path) -> None:
    png(folder / "page_001.png")
    png(folder / "page_001.jpg")
    png(folder / "page_002.png")
    first, second = student_pages(folder)
    assert first.number == 1 and first.image is None
    assert first.error is not None and "page_001.jpg" in first.error
    assert "page_001.png" in first.error and "page 1" in first.error
    assert second.number == 2 and second.error is None


def test_a_corrupt_or_truncated_file_fails_only_its_own_page(folder: Path) -> None:
    png(folder / "page_001.png")
    (folder / "page_002.png").write_bytes(b"this is not a picture at all")
    whole = io.BytesIO()
    Image.new("RGB", (400, 400), BLUE).save(whole, "JPEG")
    (folder / "page_003.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (folder / "page_004.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    png(folder / "page_005.png")
    pages = student_pages(folder)
    assert [p.number for p in pages] == [1, 2, 3, 4, 5]
    assert pages[0].error is None and pages[4].error is None
    assert pages[1].error == f"{folder / 'page_002.png'}: not a readable image " + (
        "(PNG, JPEG, WebP, GIF, TIFF or BMP)"
    )
    assert pages[2].error is not None
    assert pages[2].error.startswith(f"{folder / 'page_003.jpg'}: corrupt or truncated image")
    assert pages[3].error is not None and "HEIC" in pages[3].error and "JPEG" in pages[3].error
    for page in pages[1:4]:
        assert page.image is None and "\n" not in (page.error or "")
        with pytest.raises(ValueError, match="no image"):
            page.data_url()


def test_a_corrupt_pdf_is_one_failed_page(folder: Path) -> None:
    (folder / "exam.pdf").write_bytes(b"%PDF-1.7\nnothing else\n")
    png(folder / "page_002.png")
    first, second = student_pages(folder)
    assert first.number == 1 and first.label == "exam.pdf"
    assert first.error is not None
    assert first.error.startswith(f"{folder / 'exam.pdf'}: not a readable PDF")
    assert second.number == 2 and second.error is None


def test_a_file_over_the_byte_limit_is_refused(folder: Path) -> None:
    png(folder / "page_001.png", size=(1000, 1000))
    limit = (folder / "page_001.png").stat().st_size - 1
    (page,) = student_pages(folder, max_file_bytes=limit)
    assert page.error is not None and "more than the limit of" in page.error
    assert page.error.startswith(str(folder / "page_001.png"))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_decompression_bomb_is_refused_before_it_is_decoded(folder: Path) -> None:
    # 10000 x 9000 one-bit pixels: 90 million, past Pillow's limit, in a file of a few KB.
    Image.new("1", (10000, 9000)).save(folder / "page_001.png", "PNG")
    png(folder / "page_002.png", size=(500, 500))
    first, second = student_pages(folder)
    assert first.error is not None
    assert first.error.startswith(f"{folder / 'page_001.png'}: 10000x9000 pixels")
    assert second.error is None
    (small,) = student_pages(folder, max_pixels=100_000)[1:]
    assert (
        small.error is not None and "500x500 pixels, more than the limit of 100,000" in small.error
    )


def test_a_symlink_out_of_the_student_folder_is_not_followed(folder: Path, tmp_path: Path) -> None:
    secret = png(tmp_path / "secret.png")
    png(folder / "page_001.png")
    (folder / "page_002.png").symlink_to(secret)
    png(folder / "real.png")
    (folder / "page_003.png").symlink_to(folder / "real.png")  # inside: fine
    (folder / "page_004.png").symlink_to(folder / "gone.png")  # broken
    pages = {p.number: p for p in student_pages(folder)}
    assert pages[1].error is None and pages[3].error is None
    assert pages[2].image is None and pages[2].error is not None
    assert pages[2].error.startswith(f"{folder / 'page_002.png'}: a link to {secret}")
    assert "outside the student's folder" in pages[2].error
    assert pages[4].error == f"{folder / 'page_004.png'}: broken link or unreadable file"


def test_other_files_hidden_files_and_a_missing_folder_give_no_pages(
    folder: Path, tmp_path: Path
) -> None:
    (folder / "notes.txt").write_text("hello")
    (folder / "._page_001.png").write_bytes(b"AppleDouble resource fork")
    (folder / "sub").mkdir()
    assert student_pages(folder) == []
    assert student_pages(tmp_path / "nobody") == []


def test_the_sample_scans_keep_their_numbers_and_their_bytes() -> None:
    """page_NNN.png is page NNN, and a PNG that needs no change is sent byte for byte."""
    assignment = load_assignment(EXAMPLE)
    for student in assignment.students():
        pages = student_pages(assignment.submissions / student)
        files = sorted((assignment.submissions / student).glob("page_*.png"))
        assert [(p.number, p.source) for p in pages] == [
            (int(f.stem.removeprefix("page_")), f) for f in files
        ]
        assert all(p.image == p.source.read_bytes() for p in pages)


def test_pdfs_render_correctly_on_several_threads_at_once(tmp_path: Path) -> None:
    folders = []
    for n, colour in enumerate((RED, GREEN, BLUE, WHITE)):
        folder = tmp_path / f"student{n}"
        folder.mkdir()
        pdf(folder / "exam.pdf", [colour] * 3, size=(300, 400))
        folders.append((folder, colour))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda f: student_pages(f[0]), folders))
    for pages, (_, colour) in zip(results, folders, strict=True):
        assert len(pages) == 3
        for page in pages:
            assert _near(decoded(page).convert("RGB").getpixel((20, 20)), colour)


def _near(pixel: object, colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))
