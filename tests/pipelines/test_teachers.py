"""The teacher's loop through the command line: override, regrade, second opinion, export,
and the checks at load, on the sample assignment (copied) and on a fresh one."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from aita.cli import main
from aita.config import get_config
from aita.pipelines.dry_run import dry_run_responder
from tests.support.doubles import SimulatorFactory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(tmp_path: Path) -> Path:
    shutil.copytree(
        EXAMPLE, tmp_path / "data" / "midterm", ignore=shutil.ignore_patterns("results")
    )
    return tmp_path / "data"


def where(data: Path) -> list[str]:
    return ["--data-dir", str(data), "--assignment", "midterm"]


def graded(data: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    for command in ("generate-rubric", "transcribe", "grade"):
        code, _, err = run(capsys, command, *where(data), "--dry-run", "--yes", "-q")
        assert code == 0, err
    return data / "midterm" / "results" / "dry-run"


def grades(results: Path, student: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((results / "grades" / f"{student}.json").read_text())
    return found


def gradebook(results: Path) -> dict[str, dict[str, str]]:
    text = (results / "gradebook.csv").read_text(encoding="utf-8-sig")
    return {row["student"]: row for row in csv.DictReader(io.StringIO(text))}


# -- aita override --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--question", "4a", "--points", "8"], "more than the points of question 4a: 4"),
        (["--question", "4a", "--points", "-1"], "from 0 to 4"),
        (["--question", "4a", "--points", "nan"], "from 0 to 4"),
        (
            ["--question", "4a", "--criterion", "2", "--points", "2"],
            "criterion 2 of question 4a: 1.5",
        ),
        (["--question", "4a", "--criterion", "3", "--points", "1"], "criteria 1 to 2"),
        (["--question", "99", "--points", "1"], "question '99' not in the exam"),
    ],
)
def test_an_override_out_of_bounds_is_refused_naming_the_bound_and_nothing_is_written(
    data: Path, capsys: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    results = graded(data, capsys)
    code, _, err = run(capsys, "override", *where(data), "--student", "alice", *extra)
    assert code == 2 and named in err, err
    assert not (results / "overrides.json").exists()


def test_an_override_wins_everywhere_and_survives_force_and_a_changed_rubric(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = graded(data, capsys)
    model = grades(results, "alice")
    code, out, err = run(
        capsys, "override", *where(data), "--student", "alice", "--question", "9",
        "--points", "7.5", "--note", "a fine essay",
    )  # fmt: skip
    assert code == 0, err
    assert f"alice question 9: 7.5/8 (the model gave {model['9']['points_awarded']:g})" in out
    saved = json.loads((results / "overrides.json").read_text())["overrides"]["alice"]["9"]
    assert saved["points"] == 7.5 and saved["note"] == "a fine essay" and saved["who"]
    assert saved["original_points"] == model["9"]["points_awarded"] and saved["when"]
    expected = sum(g["points_awarded"] for g in model.values()) - model["9"]["points_awarded"] + 7.5

    # --force regrades everything: the override is kept and said to be
    code, out, err = run(capsys, "grade", *where(data), "--dry-run", "--yes", "--force")
    assert code == 0, err
    assert "--force kept 1 teacher override(s)" in out
    summary = json.loads((results / "grades" / "summary.json").read_text())
    assert summary["students"]["alice"]["total"] == pytest.approx(expected)
    assert summary["students"]["alice"]["overridden"] == ["9"]
    assert run(capsys, "report", *where(data))[0] == 0
    assert float(gradebook(results)["alice"]["9"]) == 7.5
    assert float(gradebook(results)["alice"]["total"]) == pytest.approx(expected)
    html = (results / "report.html").read_text()
    assert 'class="badge overridden"' in html and "a fine essay" in html

    # a rubric change regrades question 1: an override on it turns stale, is kept, still wins
    assert run(capsys, "override", *where(data), "--student", "bob", "--question", "1",
               "--points", "1")[0] == 0  # fmt: skip
    rubric = data / "midterm" / "user_rubrics.json"
    rubric.write_text(json.dumps({"1": [{"description": "hash table", "points": 1},
                                        {"description": "says why", "points": 1}]}))  # fmt: skip
    assert run(capsys, "generate-rubric", *where(data), "--dry-run", "--yes", "-q")[0] == 0
    code, out, _ = run(capsys, "grade", *where(data), "--dry-run", "--yes")
    assert code == 0
    summary = json.loads((results / "grades" / "summary.json").read_text())
    assert "1" in summary["students"]["bob"]["needs_review"]
    assert summary["students"]["bob"]["overridden"] == ["1"]
    assert run(capsys, "report", *where(data))[0] == 0
    assert float(gradebook(results)["bob"]["1"]) == 1
    assert "graded this answer again since" in (results / "report.html").read_text()


def test_a_criterion_override_changes_the_question_by_that_criterion(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = graded(data, capsys)
    model = grades(results, "chen")["4a"]
    first = model["criterion_scores"][0]["points_awarded"]
    code, out, err = run(
        capsys, "override", *where(data), "--student", "chen", "--question", "4a",
        "--criterion", "2", "--points", "0",
    )  # fmt: skip
    assert code == 0, err
    assert f"chen question 4a: {first:g}/4" in out
    # accepting the model's grade drops the override's points
    assert run(capsys, "override", *where(data), "--student", "chen", "--question", "4a",
               "--accept")[0] == 0  # fmt: skip
    assert run(capsys, "report", *where(data))[0] == 0
    assert float(gradebook(results)["chen"]["4a"]) == model["points_awarded"]


# -- aita grade --question / --student, and marks for regrade -------------------------------


def test_grade_question_and_student_asks_exactly_those_answers_again(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = graded(data, capsys)
    before = {s: grades(results, s) for s in ("alice", "bob", "chen")}
    code, out, err = run(
        capsys, "grade", *where(data), "--dry-run", "--yes", "--question", "4a", "--student", "bob"
    )
    assert code == 0, err
    assert "graded again: bob 4a" in out and "calls: 1 " in out
    assert {s: grades(results, s) for s in ("alice", "bob", "chen")} == before

    code, out, _ = run(capsys, "grade", *where(data), "--dry-run", "--yes", "--question", "5")
    assert code == 0 and "calls: 3 " in out
    code, _, err = run(capsys, "grade", *where(data), "--dry-run", "--question", "nope")
    assert code == 2 and "question 'nope' not in the exam" in err


def test_an_answer_marked_for_regrade_is_asked_again_by_the_next_run(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = graded(data, capsys)
    assert run(capsys, "override", *where(data), "--student", "alice", "--question", "6",
               "--regrade")[0] == 0  # fmt: skip
    code, out, _ = run(capsys, "grade", *where(data), "--dry-run", "--yes")
    assert code == 0 and "graded again: alice 6" in out and "calls: 1 " in out
    saved = json.loads((results / "overrides.json").read_text())["overrides"]["alice"]["6"]
    assert saved["regrade"] is False
    code, out, _ = run(capsys, "grade", *where(data), "--dry-run", "--yes")
    assert "graded again" not in out and "30 grades reused" in out and "calls:" not in out


# -- second opinion -------------------------------------------------------------------------


def test_a_second_opinion_flags_disagreements_and_the_report_lists_them_first(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = graded(data, capsys)
    code, out, err = run(
        capsys, "grade", *where(data), "--dry-run", "--yes", "--second-opinion", "other/grader"
    )
    assert code == 0, err
    assert "second opinion (other/grader):" in out
    flagged = []
    for student in ("alice", "bob", "chen"):
        for qid, grade in grades(results, student).items():
            opinion = grade["second_opinion"]
            if opinion is None:  # a blank answer: no call, nothing to compare
                continue
            difference = abs(grade["points_awarded"] - opinion["points_awarded"])
            assert opinion["disagrees"] == (difference > opinion["tolerance"] + 1e-6)
            assert opinion["tolerance"] == pytest.approx(0.25 * grade["max_points"])
            if opinion["disagrees"]:
                flagged.append((student, qid))
    assert flagged, "the dry-run graders always disagree somewhere"
    summary = json.loads((results / "grades" / "summary.json").read_text())
    for student, qid in flagged:
        assert qid in summary["students"][student]["needs_review"]
        assert f"{student} {qid}" in out
    assert run(capsys, "report", *where(data))[0] == 0
    html = (results / "report.html").read_text()
    assert html.index('id="disagreements"') < html.index('id="summary"')
    # a teacher's decision settles it
    student, qid = flagged[0]
    assert run(capsys, "override", *where(data), "--student", student, "--question", qid,
               "--accept")[0] == 0  # fmt: skip
    summary = json.loads((results / "grades" / "summary.json").read_text())
    assert qid not in summary["students"][student]["needs_review"]
    # reused the second time: no new calls
    code, out, _ = run(
        capsys, "grade", *where(data), "--dry-run", "--yes", "--second-opinion", "other/grader"
    )
    assert code == 0 and "calls:" not in out


# -- checks at load -------------------------------------------------------------------------


def test_a_total_that_is_not_the_sum_of_the_questions_is_refused(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = data / "midterm" / "exam_spec.json"
    spec = json.loads(spec_file.read_text())
    spec["total_points"] = 25
    spec_file.write_text(json.dumps(spec))
    code, _, err = run(capsys, "grade", *where(data), "--dry-run")
    assert code == 2
    assert "total_points is 25, but the questions' points add up to 42" in err


def test_an_edited_rubric_that_does_not_add_up_is_refused_by_grade(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = graded(data, capsys)
    rubrics = json.loads((results / "rubrics.json").read_text())
    rubrics["4a"]["criteria"][0]["points"] = 12  # 12 + 1.5 on a 4-point question
    (results / "rubrics.json").write_text(json.dumps(rubrics))
    code, _, err = run(capsys, "grade", *where(data), "--dry-run", "--yes")
    assert code == 2
    assert "question 4a add up to 13.5 points, but the question is worth 4" in err


# -- export ---------------------------------------------------------------------------------

ROSTER = (
    "folder,id,name,email,section\n"
    'alice,S1001,"Lee, Alice",alice@example.edu,A\n'
    "bob,S1002,Bob Ray,bob@example.edu,B\n"
    "chen,S1003,=Chen Wu,chen@example.edu,A\n"
    "dana,S1004,Dana Fox,dana@example.edu,B\n"
)


def test_export_writes_what_canvas_and_moodle_import(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = graded(data, capsys)
    (data / "midterm" / "roster.csv").write_text(ROSTER)
    assert run(capsys, "override", *where(data), "--student", "bob", "--question", "9",
               "--points", "0")[0] == 0  # fmt: skip
    summary = json.loads((results / "grades" / "summary.json").read_text())["students"]

    out_file = data.parent / "canvas.csv"
    code, _, err = run(capsys, "export", *where(data), "--format", "canvas", "-o", str(out_file))
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out_file.read_text())))
    exam = "CS 210 Midterm: Algorithms and Systems"
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", exam]
    assert rows[1][0].strip() == "Points Possible" and rows[1][5] == "42"
    by_id = {row[2]: row for row in rows[2:]}
    assert by_id["S1001"][0] == "Lee, Alice" and by_id["S1001"][4] == "A"
    assert float(by_id["S1002"][5]) == pytest.approx(summary["bob"]["total"])
    assert by_id["S1003"][0] == "'=Chen Wu"  # never a formula in a spreadsheet
    assert "S1004" not in by_id  # no submission

    code, _, err = run(capsys, "export", *where(data), "--format", "moodle")
    assert code == 0, err
    moodle = list(csv.DictReader(io.StringIO((results / "export-moodle.csv").read_text())))
    assert [r["ID number"] for r in moodle] == ["S1001", "S1002", "S1003"]
    assert moodle[1]["Email address"] == "bob@example.edu"
    assert float(moodle[1][exam]) == pytest.approx(summary["bob"]["total"])

    code, _, _ = run(capsys, "export", *where(data), "--format", "csv")
    plain = list(csv.DictReader(io.StringIO((results / "export-csv.csv").read_text())))
    assert plain[1]["9"] == "0" and plain[1]["folder"] == "bob"


def test_export_names_students_missing_from_the_roster_and_exits_1(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = graded(data, capsys)
    roster = data.parent / "class.csv"
    roster.write_text("folder,id,name,email\nalice,S1,Alice,a@x.edu\n")
    code, out, err = run(
        capsys, "export", *where(data), "--format", "moodle", "--roster", str(roster)
    )
    assert code == 1
    assert "not in the roster" in err and "bob, chen" in err
    assert "1 student(s) exported" in out
    assert len((results / "export-moodle.csv").read_text().splitlines()) == 2
    roster.write_text("folder,name\nalice,Alice\n")
    code, _, err = run(capsys, "export", *where(data), "--format", "csv", "--roster", str(roster))
    assert code == 2 and "missing column(s) id, email" in err


# -- a fresh assignment, and privacy --------------------------------------------------------

FOLDERS = ("quokka-marguerite-7731", "pangolin-theodore-4410")
ROSTER_FIELDS = ("Marguerite Quokkason", "ID-99887766", "mq.private@school.example")


def fresh(data: Path) -> Path:
    root = data / "quiz"
    questions = [
        {"question_id": "1", "question_text": "Name a sorting algorithm.", "points": 2,
         "page_number": 1},
        {"question_id": "2", "question_text": "What is 2 + 2?", "points": 3, "page_number": 1},
    ]  # fmt: skip
    root.mkdir(parents=True)
    (root / "exam_spec.json").write_text(
        json.dumps({"exam_name": "Quiz", "total_points": 5, "questions": questions})
    )
    for n, folder in enumerate(FOLDERS):
        (root / "submissions" / folder).mkdir(parents=True)
        Image.new("RGB", (60 + n, 40), "white").save(root / "submissions" / folder / "page_1.png")
    (root / "roster.csv").write_text(
        "folder,id,name,email\n"
        f"{FOLDERS[0]},{ROSTER_FIELDS[1]},{ROSTER_FIELDS[0]},{ROSTER_FIELDS[2]}\n"
        f"{FOLDERS[1]},ID-11223344,Theo Pangolino,theo.private@school.example\n"
    )
    return root


def test_no_folder_name_or_roster_field_reaches_the_provider_on_a_fresh_assignment(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    simulator: SimulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies: list[str] = []

    def respond(request: dict[str, Any]) -> str | None:
        bodies.append(orjson.dumps(request).decode())
        return dry_run_responder(request)

    sim = simulator(announce=False, responder=respond)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-not-secret")
    monkeypatch.setenv("AITA_BASE_URL", sim.base_url)
    monkeypatch.setenv("AITA_MODEL", "sim/unpriced")
    get_config.cache_clear()
    data = tmp_path / "data"
    root = fresh(data)
    common = ["--data-dir", str(data), "--assignment", "quiz", "--yes", "-q"]
    for command in ("generate-rubric", "transcribe", "grade"):
        assert run(capsys, command, *common)[0] == 0, command
    assert run(capsys, "grade", *common, "--second-opinion", "sim/other")[0] == 0
    assert len(bodies) == 2 + 2 + 2 + 4 + 4  # keys, rubrics, pages, grades, second grades
    secrets = [*FOLDERS, *ROSTER_FIELDS, "Theo Pangolino", "theo.private", "ID-11223344"]
    for body in bodies:
        for secret in secrets:
            assert secret.lower() not in body.lower()
    # the loop on the fresh assignment: override, report, export
    where_quiz = ["--data-dir", str(data), "--assignment", "quiz"]
    code, _, err = run(capsys, "override", *where_quiz, "--student", FOLDERS[0], "--question",
                       "2", "--points", "3")  # fmt: skip
    assert code == 0, err
    assert run(capsys, "report", *where_quiz)[0] == 0
    code, _, err = run(capsys, "export", *where_quiz, "--format", "canvas")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO((root / "results" / "export-canvas.csv").read_text())))
    mine = next(r for r in rows if r[2] == ROSTER_FIELDS[1])
    one = json.loads((root / "results" / "grades" / f"{FOLDERS[0]}.json").read_text())["1"]
    assert float(mine[5]) == pytest.approx(one["points_awarded"] + 3)
    assert not math.isnan(float(mine[5]))


def test_a_grade_file_edited_by_hand_that_does_not_add_up_is_refused(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = graded(data, capsys)
    path = results / "grades" / "alice.json"
    edited = json.loads(path.read_text())
    edited["6"]["points_awarded"] = 6 if edited["6"]["points_awarded"] != 6 else 5
    path.write_text(json.dumps(edited))
    code, _, err = run(capsys, "report", *where(data))
    assert code == 2
    assert f"{path}: question 6: " in err and "but its criteria add up to" in err
    assert "aita override" in err
    # regrading that answer is one way out
    assert run(capsys, "grade", *where(data), "--dry-run", "--yes", "--question", "6",
               "--student", "alice")[0] == 0  # fmt: skip
    assert run(capsys, "report", *where(data))[0] == 0


def test_an_override_whose_student_folder_is_gone_is_named_not_dropped(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = graded(data, capsys)
    assert run(capsys, "override", *where(data), "--student", "chen", "--question", "2",
               "--points", "3")[0] == 0  # fmt: skip
    submissions = data / "midterm" / "submissions"
    (submissions / "chen").rename(submissions / "chen_wu")
    code, _, err = run(capsys, "report", *where(data))
    assert code == 0
    assert "counted nowhere: chen/2" in err
    assert "chen" in json.loads((results / "overrides.json").read_text())["overrides"]
