"""``aita report``: the page and the gradebook, from result files written here by hand.

The end-to-end check (the README's quickstart, then the page opened in headless Chromium) is
``test_report_in_chromium.py``.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from aita.cli import main
from aita.files import write_json_atomic
from aita.pipelines.assignment import ResultPaths, load_assignment
from aita.pipelines.exam import (
    CriterionScore,
    QuestionGrade,
    Rubric,
    RubricCriterion,
    StudentAnswer,
)
from aita.pipelines.report import write_report

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"
SPEC = json.loads((EXAMPLE / "exam_spec.json").read_text())
POINTS = {q["question_id"]: float(q["points"]) for q in SPEC["questions"]}
IDS = list(POINTS)  # exam order: 1 2 3 4a 4b 5 6 7 8 9


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The sample assignment without its scans: an exam and empty student folders."""
    root = tmp_path / "data" / "midterm"
    root.mkdir(parents=True)
    shutil.copy(EXAMPLE / "exam_spec.json", root)
    return root


def students(folder: Path, *names: str) -> ResultPaths:
    for name in names:
        (folder / "submissions" / name).mkdir(parents=True)
    return ResultPaths(folder / "results")


def grade(student: str, qid: str, points: float, **changes: Any) -> dict[str, Any]:
    half = POINTS[qid] / 2
    record = QuestionGrade(
        student=student,
        question_id=qid,
        points_awarded=points,
        max_points=POINTS[qid],
        criterion_scores=[
            CriterionScore(description="method", points_awarded=min(points, half), max_points=half),
            CriterionScore(
                description="answer", points_awarded=max(0, points - half), max_points=half
            ),
        ],
        feedback=f"feedback on {qid}",
    ).model_dump(mode="json")
    return {**record, **changes}


def answer(qid: str, text: str = "my answer") -> dict[str, Any]:
    return StudentAnswer(question_id=qid, text=text, pages=[1], confidence=0.8).model_dump()


def write_rubrics(paths: ResultPaths) -> None:
    write_json_atomic(
        paths.rubrics,
        {
            qid: Rubric(
                question_id=qid,
                total_points=points,
                criteria=[RubricCriterion(description="all", points=points)],
            ).model_dump(mode="json")
            for qid, points in POINTS.items()
        },
    )


def write_student(
    paths: ResultPaths,
    student: str,
    points: dict[str, float],
    answered: list[str] | None = None,
    **changes: Any,
) -> None:
    answered = IDS if answered is None else answered
    write_json_atomic(paths.student_answers(student), {q: answer(q) for q in answered})
    if points:
        write_json_atomic(
            paths.student_grades(student),
            {q: grade(student, q, p, **changes) for q, p in points.items()},
        )


def run(capsys: pytest.CaptureFixture[str], folder: Path) -> tuple[int, str, str]:
    code = main(["report", "--data-dir", str(folder.parent), "--assignment", "midterm"])
    out, err = capsys.readouterr()
    return code, out, err


def gradebook(paths: ResultPaths) -> list[dict[str, str]]:
    text = paths.gradebook.read_text(encoding="utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def full_marks(factor: float) -> dict[str, float]:
    return {q: p * factor for q, p in POINTS.items()}


def test_report_and_gradebook_hold_every_student_and_question_in_exam_order(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = students(folder, "alice", "bob")
    write_rubrics(paths)
    write_student(paths, "alice", full_marks(1.0))
    write_student(paths, "bob", full_marks(0.5))
    code, out, err = run(capsys, folder)
    assert (code, err) == (0, "")
    assert "2 student(s): 2 graded, 0 partly graded, 0 not graded" in out
    assert str(paths.report) in out and str(paths.gradebook) in out

    raw = paths.gradebook.read_bytes()
    assert raw.startswith(
        b'\xef\xbb\xbf"student","1","2","3","4a","4b","5","6","7","8","9","total",'
    )
    rows = gradebook(paths)
    assert [r["student"] for r in rows] == ["alice", "bob"]
    assert rows[0]["total"] == "42" and rows[1]["total"] == "21"
    assert rows[1]["4a"] == "2" and rows[1]["5"] == "2.5" and rows[1]["max_total"] == "42"
    assert rows[0]["status"] == "graded" and rows[0]["needs_review"] == ""

    html = paths.report.read_text()
    assert 'data-student="alice" data-status="graded" data-total="42"' in html
    assert 'data-total="21"' in html and "21 / 42" in html
    alice = html[
        html.index('data-student="alice" data-status') : html.index(
            'data-student="bob" data-status'
        )
    ]
    order = [part.split('"')[0] for part in alice.split('class="question" data-question="')[1:]]
    assert order == IDS
    assert "feedback on 4b" in html and "my answer" in html
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing to fetch
    assert "<script" not in html


def test_hostile_text_from_a_model_or_a_folder_name_is_escaped(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = '<img src=x onerror="alert(1)">'
    paths = students(folder, name)
    hostile = "<script>alert('feedback')</script>"
    write_json_atomic(
        paths.student_answers(name), {q: answer(q, "</pre><script>alert(2)</script>") for q in IDS}
    )
    write_json_atomic(
        paths.student_grades(name),
        {q: grade(name, q, 1, feedback=hostile, review_reason="<b>x</b>") for q in IDS},
    )
    code, _, err = run(capsys, folder)
    assert code == 0, err
    html = paths.report.read_text()
    assert "<script" not in html and "<img" not in html and "<b>x" not in html
    assert "&lt;script&gt;alert(&#39;feedback&#39;)&lt;/script&gt;" in html
    assert "&lt;/pre&gt;&lt;script&gt;alert(2)" in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "default-src 'none'" in html  # and were anything missed, no script could run


def test_missing_work_is_shown_as_such_and_never_as_zero(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = students(folder, "alice", "bob", "chen", "dana")
    write_rubrics(paths)
    write_student(paths, "alice", full_marks(1.0))
    write_student(paths, "bob", {"1": 2.0, "4a": 3.0, "9": 0.0}, answered=IDS[:6])
    write_student(paths, "chen", {})  # transcribed, not graded
    code, out, err = run(capsys, folder)  # dana: nothing at all
    assert code == 0, err
    assert "4 student(s): 1 graded, 1 partly graded, 2 not graded" in out

    rows = {r["student"]: r for r in gradebook(paths)}
    bob = rows["bob"]
    assert (bob["1"], bob["4a"], bob["9"]) == ("2", "3", "0")  # a real 0 stays a 0
    assert all(bob[q] == "" for q in IDS if q not in ("1", "4a", "9"))
    assert bob["total"] == "" and bob["max_total"] == "42"
    assert bob["status"] == "partly graded: 3 of 10 questions"
    assert rows["chen"]["status"] == "transcribed, not graded"
    assert rows["dana"]["status"] == "not transcribed"
    for student in ("chen", "dana"):
        assert all(rows[student][q] == "" for q in IDS) and rows[student]["total"] == ""

    html = paths.report.read_text()
    section = html[html.index('data-student="bob" data-status') :]
    section = section[: section.index("</section>")]
    assert 'data-question="1" data-status="graded" data-points="2"' in section
    assert 'data-question="2" data-status="not graded">' in section  # transcribed
    assert 'data-question="8" data-status="not transcribed">' in section  # page never read
    assert 'data-question="9" data-status="graded" data-points="0"' in section
    assert "partly graded: 3 of 10 questions" in section and "5 points in the 3 graded" in section
    assert "data-total" not in section.split(">")[0]
    dana = html[html.index('data-student="dana" data-status="not transcribed"') :]
    assert dana.count('data-status="not transcribed"') == 1 + len(IDS)
    # Class statistics count the one fully graded student only.
    assert "Totals of the 1 fully graded students" in html
    assert '<g data-range="90-100%" data-count="1">' in html


def test_gradebook_cells_that_look_like_formulas_are_defused(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["=HYPERLINK(1)", "+1", "-2", "@SUM(A1)", "ok-name"]
    paths = students(folder, *names)
    for name in names:
        write_student(paths, name, full_marks(0.5))
    assert run(capsys, folder)[0] == 0
    rows = gradebook(paths)
    assert sorted(r["student"] for r in rows) == sorted(
        ["'=HYPERLINK(1)", "'+1", "'-2", "'@SUM(A1)", "ok-name"]
    )
    assert all(r["total"] == "21" for r in rows)


def test_a_name_holding_another_locales_separator_stays_one_quoted_cell(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["x;=1+2", "y\t=3+4"]
    paths = students(folder, *names)
    for name in names:
        write_student(paths, name, full_marks(0.5))
    assert run(capsys, folder)[0] == 0
    text = paths.gradebook.read_text(encoding="utf-8-sig")
    for separator in (";", "\t"):  # as a spreadsheet in another locale splits the lines
        for row in csv.reader(io.StringIO(text), delimiter=separator):
            assert not any(cell.lstrip().startswith("=") for cell in row), row
    assert sorted(r["student"] for r in gradebook(paths)) == sorted(names)


def test_provenance_fields_are_tolerated_and_simulated_records_are_badged(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = students(folder, "alice", "bob")
    provenance: dict[str, Any] = {
        "simulated": True,
        "model": "dry-run/simulator",
        "inputs_hash": "x",
    }
    write_student(paths, "alice", full_marks(1.0), **provenance)
    write_student(paths, "bob", full_marks(1.0), reviewed_by={"name": "x"}, tags=[1, 2])
    code, out, err = run(capsys, folder)
    assert code == 0, err
    assert "dry run (simulated) results included" in out
    html = paths.report.read_text()
    alice = html[html.index('data-student="alice" data-status') :]
    alice, bob = alice.split('data-student="bob" data-status')
    assert alice.count("dry run (simulated)") == 1 + len(IDS)  # the student and each question
    assert "dry run (simulated)" not in bob
    assert "model: dry-run/simulator" in html
    rows = {r["student"]: r["status"] for r in gradebook(paths)}
    assert rows == {"alice": "graded (dry run: simulated)", "bob": "graded"}


def test_without_grades_it_says_what_to_run_first_and_writes_nothing(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = students(folder, "alice")
    code, _, err = run(capsys, folder)
    assert code == 2 and err.count("\n") == 1
    where = f"--data-dir {folder.parent} --assignment midterm"  # as typed, it runs
    assert err == (
        f"aita: nothing to report: no grades in {paths.grade_summary.parent}; run aita "
        f"generate-rubric {where}, then aita transcribe {where}, then aita grade {where} first\n"
    )
    write_rubrics(paths)
    write_student(paths, "alice", {})
    code, _, err = run(capsys, folder)
    assert code == 2 and err.endswith(f"run aita grade {where} first\n")
    assert not paths.report.exists() and not paths.gradebook.exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "cannot read (unexpected character"),
        (b"[1, 2]", "cannot read (expected a JSON object)"),
        (b'{"4a": {"student": "alice"}}', "cannot read (4a.question_id: Field required)"),
    ],
)
def test_a_corrupt_result_file_is_exit_2_with_one_line_naming_it(
    folder: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: str
) -> None:
    paths = students(folder, "alice", "bob")
    write_student(paths, "alice", full_marks(1.0))
    write_student(paths, "bob", full_marks(1.0))
    paths.student_grades("bob").write_bytes(content)
    code, _, err = run(capsys, folder)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"aita: {paths.student_grades('bob')}: {problem}")
    assert not paths.report.exists()


def test_a_missing_assignment_is_exit_2(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--data-dir", str(folder.parent), "--assignment", "final"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("aita: assignment 'final' not found")


def test_the_templates_are_package_data(folder: Path) -> None:
    """What setuptools ships (pyproject's package-data) covers the template the report loads."""
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["aita.pipelines"]
    package = root / "aita" / "pipelines"
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    assert package / "templates" / "report.html.j2" in shipped
    paths = students(folder, "alice")
    write_student(paths, "alice", full_marks(1.0))
    assignment = load_assignment(folder)
    outcome = write_report(assignment, assignment.paths)
    assert paths.report.read_text() == outcome.html
