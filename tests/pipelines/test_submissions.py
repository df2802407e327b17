"""Real submissions through transcription and grading: PDFs and photos as they arrive, and no
silent zeros for work that is not there."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from aita.cli import main
from aita.pipelines.assignment import load_assignment
from aita.pipelines.dry_run import dry_run_responder
from aita.pipelines.execution import RunOptions
from aita.pipelines.transcribe import transcribe
from tests.support.doubles import SimulatorFactory, client_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"


@pytest.fixture
def assignment_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "midterm"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("results", "submissions"))
    return root


def scan(size: tuple[int, int], colour: str = "white") -> Image.Image:
    return Image.new("RGB", size, colour)


def test_pdf_and_photo_pages_are_sent_as_vision_models_take_them(
    assignment_dir: Path, simulator: SimulatorFactory
) -> None:
    dana = assignment_dir / "submissions" / "dana"
    dana.mkdir(parents=True)
    first, *rest = [scan((850, 1100), c) for c in ("white", "gray", "black")]
    first.save(dana / "exam.pdf", save_all=True, append_images=rest)
    eve = assignment_dir / "submissions" / "eve"
    eve.mkdir(parents=True)
    scan((6000, 8000)).save(eve / "page_001.jpg", quality=80)
    scan((900, 1200)).save(eve / "page_002.tif")
    (eve / "page_003.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")

    sent: list[tuple[str, str, tuple[int, int]]] = []
    lock = threading.Lock()

    def record(request: dict[str, Any]) -> str | None:
        parts = request["messages"][-1]["content"]
        text = next(p["text"] for p in parts if p["type"] == "text")
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        mime, data = url.removeprefix("data:").split(";base64,")
        with Image.open(io.BytesIO(base64.b64decode(data))) as image, lock:
            sent.append((text.split("(page ")[1].split(")")[0], mime, image.size))
        return dry_run_responder(request)

    sim = simulator(responder=record, announce=False)  # stands in for a real provider
    assignment = load_assignment(assignment_dir)
    options = RunOptions(show_progress=False, rate_limit=1000)
    outcome = transcribe(assignment, client_for(sim), options)

    assert outcome.incomplete == {"eve": [3]}  # the corrupt file fails only its page
    assert [f.task_id for f in outcome.failed] == ["transcribe/eve/page_003"]
    assert "page_003.png" in (outcome.failed[0].error or "")
    by_page = sorted(sent)
    assert len(by_page) == 5  # the failed page made no call
    dana_pages = [s for s in by_page if s[2][0] / s[2][1] == pytest.approx(850 / 1100, rel=0.01)]
    assert [s[0] for s in dana_pages] == ["1", "2", "3"]  # the PDF, page by page
    assert all(max(s[2]) <= 2048 for s in dana_pages)
    jpeg = next(s for s in by_page if s[1] == "image/jpeg")
    assert max(jpeg[2]) <= 2048 and jpeg[2][0] / jpeg[2][1] == pytest.approx(0.75, rel=0.01)
    assert ("2", "image/png", (900, 1200)) in by_page  # the TIFF, sent as PNG
    pages = sorted((assignment_dir / "results" / "transcriptions" / "dana").glob("page_*.json"))
    assert [p.name for p in pages] == ["page_001.json", "page_002.json", "page_003.json"]


def test_grading_a_student_with_no_transcription_names_them_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(EXAMPLE, data / "midterm", ignore=shutil.ignore_patterns("results"))
    common = ["--data-dir", str(data), "--assignment", "midterm", "--dry-run"]
    assert main(["generate-rubric", *common]) == 0
    assert main(["transcribe", *common, "--student", "alice"]) == 0
    capsys.readouterr()
    code = main(["grade", *common])
    out = capsys.readouterr().out
    assert code == 1
    assert "bob: not gradable: no transcription" in out
    assert "chen: not gradable: no transcription" in out
    assert "alice: " in out and "/42" in out.split("alice: ")[1].splitlines()[0]
    assert "bob: 0" not in out and "0/42" not in out


def test_a_missing_page_leaves_its_questions_ungraded_never_scored_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(EXAMPLE, data / "midterm", ignore=shutil.ignore_patterns("results"))
    common = ["--data-dir", str(data), "--assignment", "midterm", "--dry-run"]
    assert main(["generate-rubric", *common]) == 0
    assert main(["transcribe", *common]) == 0
    assert main(["grade", *common]) == 0
    grades = data / "midterm" / "results" / "dry-run" / "grades" / "alice.json"
    assert {"4a", "4b"} <= set(json.loads(grades.read_text()))  # page 2 holds 4a and 4b
    next((data / "midterm" / "submissions" / "alice").glob("page_002.*")).unlink()
    (data / "midterm" / "submissions" / "zed").mkdir()  # a student with no pages at all
    assert main(["transcribe", *common]) == 0
    capsys.readouterr()
    assert main(["grade", *common]) == 1
    out = capsys.readouterr().out
    assert "alice: not graded, their page is missing: question(s) 4a, 4b" in out
    assert "alice: " in out and "so far (8/10 graded)" in out
    assert "zed: not gradable: none of their pages was transcribed" in out
    assert "zed: 0" not in out and "0/42" not in out
    assert not {"4a", "4b"} & set(json.loads(grades.read_text()))  # the old grades are gone
    summary = json.loads((grades.parent.parent / "grades" / "summary.json").read_text())
    assert "zed" not in summary["students"] and not summary["students"]["alice"]["complete"]
