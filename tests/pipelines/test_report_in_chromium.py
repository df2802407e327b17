"""The README's quickstart, then ``aita report``, then the page as headless Chromium renders it.

Marked ``real_server`` (left out of the default run; ``pytest -m real_server`` runs it); skipped
when no Chromium is installed.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from aita.cli import main
from aita.pipelines.report import number

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.real_server,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]


class Rendered(HTMLParser):
    """Per student section: its name, total and the questions in the order they appear."""

    def __init__(self) -> None:
        super().__init__()
        self.students: dict[str, dict[str, object]] = {}
        self.current: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section" and "student" in (found.get("class") or "").split():
            self.current = found["data-student"]
            assert self.current is not None
            self.students[self.current] = {"total": found.get("data-total"), "questions": []}
        elif tag == "article" and self.current is not None:
            questions = self.students[self.current]["questions"]
            assert isinstance(questions, list)
            questions.append((found["data-question"], found.get("data-points")))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="aita-chromium-") as profile:
        return subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )


def test_quickstart_then_report_renders_every_student_question_and_total(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(EXAMPLE, data / "midterm", ignore=shutil.ignore_patterns("results"))
    common = ["--data-dir", str(data), "--assignment", "midterm"]
    for command in ("generate-rubric", "transcribe", "grade"):
        assert main([command, *common, "--dry-run", "--yes"]) == 0, command
    assert main(["report", *common]) == 0
    results = data / "midterm" / "results" / "dry-run"  # the quickstart is a dry run

    spec = json.loads((data / "midterm" / "exam_spec.json").read_text())
    order = [q["question_id"] for q in spec["questions"]]
    max_total = sum(q["points"] for q in spec["questions"])
    grades = {
        path.stem: json.loads(path.read_text())
        for path in sorted((results / "grades").glob("*.json"))
        if path.name != "summary.json"
    }
    assert sorted(grades) == ["alice", "bob", "chen"]

    done = chromium("--dump-dom", (results / "report.html").as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    page = Rendered()
    page.feed(done.stdout)
    text = " ".join(" ".join(page.text).split())
    assert "CS 210 Midterm: Algorithms and Systems" in text
    assert sorted(page.students) == sorted(grades)
    for student, graded in grades.items():
        total = sum(g["points_awarded"] for g in graded.values())
        rendered = page.students[student]
        assert rendered["total"] == number(total)
        assert f"{number(total)} / {number(max_total)}" in text
        assert rendered["questions"] == [
            (qid, number(graded[qid]["points_awarded"])) for qid in order
        ]

    book = results / "gradebook.csv"
    rows = list(csv.DictReader(io.StringIO(book.read_text(encoding="utf-8-sig"))))
    assert list(rows[0])[: len(order) + 2] == ["student", *order, "total"]
    for row in rows:
        graded = grades[row["student"]]
        assert float(row["total"]) == pytest.approx(
            sum(g["points_awarded"] for g in graded.values())
        )
        assert [float(row[qid]) for qid in order] == [graded[q]["points_awarded"] for q in order]
