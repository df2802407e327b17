"""``aita review`` in a real browser: open a student's page, change a criterion's points,
reload, see the change stick (and in the report), screenshot.

Marked ``real_server`` (``pytest -m real_server``); skipped when Chromium or chromedriver is
not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aita.cli import main
from tests.support.webdriver import CHROMEDRIVER, CHROMIUM, TAB, browser

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"

pytestmark = [
    pytest.mark.real_server,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None, reason="chromium or chromedriver missing"
    ),
]


@pytest.fixture
def graded(tmp_path: Path) -> Path:
    """The sample assignment, through the README's dry-run quickstart."""
    data = tmp_path / "data"
    shutil.copytree(EXAMPLE, data / "midterm", ignore=shutil.ignore_patterns("results"))
    common = ["--data-dir", str(data), "--assignment", "midterm", "--dry-run", "--yes", "-q"]
    for command in ("generate-rubric", "transcribe", "grade"):
        assert main([command, *common]) == 0, command
    return data


@pytest.fixture
def review(graded: Path) -> Iterator[str]:
    """``aita review`` running in its own process; its printed address."""
    command = [sys.executable, "-m", "aita", "review", "--data-dir", str(graded)]
    process = subprocess.Popen(
        [*command, "--assignment", "midterm", "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout=60)
    try:
        assert lines and lines[0].startswith("http://127.0.0.1:"), lines
        yield lines[0].strip()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        assert process.returncode == 0, err
        assert "every change is saved" in err


def test_a_grade_changed_in_the_browser_is_saved_and_sticks_after_reload(
    graded: Path, review: str, tmp_path: Path
) -> None:
    results = graded / "midterm" / "results" / "dry-run"
    model = json.loads((results / "grades" / "alice.json").read_text())["4a"]
    criterion = model["criterion_scores"][1]
    new = 0.5 if criterion["points_awarded"] != 0.5 else 1.0
    base, token = review.split("/?token=")
    field = 'section[data-question="4a"] input.criterion[data-criterion="2"]'
    status = 'section[data-question="4a"] .status'

    with browser() as chrome:
        chrome.open(f"{base}/student/0?token={token}")
        # the scanned page is beside the answer, served by the review page itself
        chrome.wait_for(
            lambda: bool(
                chrome.run(
                    "const i = document.querySelector(arguments[0]);"
                    "return i !== null && i.complete && i.naturalWidth > 0;",
                    'section[data-question="4a"] img',
                )
            )
        )
        chrome.type_into(field, f"{new}{TAB}")
        chrome.wait_for(
            lambda: (
                chrome.run("return document.querySelector(arguments[0]).textContent;", status)
                == "saved"
            )
        )
        chrome.reload()
        value = chrome.run("return document.querySelector(arguments[0]).value;", field)
        badge = chrome.run(
            "return document.querySelector(arguments[0]) !== null;",
            'section[data-question="4a"] .badge.overridden',
        )
        total = chrome.run(
            "return document.querySelector(arguments[0]).value;",
            'section[data-question="4a"] input.question-points',
        )
        picture = chrome.screenshot()
        # an emptied field is not a 0: nothing is saved, and the page says why
        chrome.type_into('section[data-question="4a"] input.question-points', TAB)
        chrome.wait_for(
            lambda: (
                chrome.run("return document.querySelector(arguments[0]).textContent;", status)
                == "not saved: enter a number"
            )
        )

    shot = tmp_path / "review.png"
    shot.write_bytes(picture)
    assert picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) > 10_000
    assert float(value) == new and badge
    expected = model["points_awarded"] - criterion["points_awarded"] + new
    assert float(total) == pytest.approx(expected)

    saved = json.loads((results / "overrides.json").read_text())["overrides"]["alice"]["4a"]
    assert saved["criteria"] == {"2": new}
    assert saved["original_points"] == model["points_awarded"]
    # the grade file is the model's still; the summary and the report count the teacher's
    assert json.loads((results / "grades" / "alice.json").read_text())["4a"] == model
    summary = json.loads((results / "grades" / "summary.json").read_text())
    assert summary["students"]["alice"]["overridden"] == ["4a"]
    assert main(["report", "--data-dir", str(graded), "--assignment", "midterm", "-q"]) == 0
    html = (results / "report.html").read_text()
    assert 'class="badge overridden"' in html
