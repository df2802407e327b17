"""``aita review``'s server, asked directly over HTTP on 127.0.0.1: the token, the host, the
body cap and the content type guard it; changes go through the same checks as ``aita
override``; what came from outside is escaped. The browser test is ``test_review_in_chromium``.
"""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from aita.cli import main
from aita.errors import AitaError
from aita.pipelines.assignment import load_assignment
from aita.pipelines.review import MAX_BODY, ReviewServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "midterm"
ODD = '<img src=x onerror="alert(1)">'


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("review") / "data"
    shutil.copytree(EXAMPLE, data / "midterm", ignore=shutil.ignore_patterns("results"))
    shutil.copytree(
        data / "midterm" / "submissions" / "chen", data / "midterm" / "submissions" / ODD
    )
    common = ["--data-dir", str(data), "--assignment", "midterm", "--dry-run", "--yes", "-q"]
    for command in ("generate-rubric", "transcribe", "grade"):
        assert main([command, *common]) == 0
    return data / "midterm"


@pytest.fixture
def server(graded: Path) -> Iterator[ReviewServer]:
    (graded / "results" / "dry-run" / "overrides.json").unlink(missing_ok=True)
    assignment = load_assignment(graded)
    with ReviewServer(assignment, assignment.results_for(dry_run=True)) as review:
        yield review


def ask(
    server: ReviewServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def change(server: ReviewServer, value: object, **headers: str) -> tuple[int, dict[str, object]]:
    sent = {"Content-Type": "application/json", "X-Aita-Token": server.token, **headers}
    status, data, _ = ask(server, "POST", "/change", json.dumps(value).encode(), sent)
    return status, json.loads(data)


def test_every_request_needs_the_token_and_the_local_host(server: ReviewServer) -> None:
    token = server.token
    assert ask(server, "GET", f"/?token={token}")[0] == 200
    for path in ("/", "/?token=wrong", "/student/0", "/page/0/1", "/page/0/1?token=x"):
        assert ask(server, "GET", path)[0] == 403, path
    status, _, _ = ask(server, "GET", f"/?token={token}", headers={"Host": "evil.example:80"})
    assert status == 403  # a DNS-rebinding page names its own host
    assert change(server, {"student": "alice"}, **{"X-Aita-Token": "wrong"})[0] == 403
    assert ask(server, "GET", f"/student/99?token={token}")[0] == 404


def test_a_page_shows_the_scans_and_is_locked_down(server: ReviewServer) -> None:
    alice = server.assignment.students().index("alice")
    status, html, headers = ask(server, "GET", f"/student/{alice}?token={server.token}")
    assert status == 200
    text = html.decode()
    assert f'src="/page/{alice}/1?token={server.token}"' in text
    assert "script-src 'nonce-" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    status, image, headers = ask(server, "GET", f"/page/{alice}/1?token={server.token}")
    assert status == 200 and image.startswith(b"\x89PNG") and headers["Content-Type"] == "image/png"


def test_a_student_folder_name_is_escaped(server: ReviewServer) -> None:
    index = server.assignment.students().index(ODD)
    for path in ("/", f"/student/{index}"):
        html = ask(server, "GET", f"{path}?token={server.token}")[1].decode()
        assert ODD not in html and "&lt;img src=x onerror=" in html


def test_changes_must_be_json_and_small(server: ReviewServer) -> None:
    sent = {"X-Aita-Token": server.token, "Content-Type": "application/x-www-form-urlencoded"}
    assert ask(server, "POST", "/change", b"student=alice", sent)[0] == 415
    big = b"{" + b" " * MAX_BODY + b"}"
    sent["Content-Type"] = "application/json"
    assert ask(server, "POST", "/change", big, sent)[0] == 413
    assert ask(server, "POST", "/change", b"[1, 2]", sent)[0] == 400
    assert not server.paths.overrides.exists()


def test_a_change_is_checked_and_saved_as_aita_override_does(server: ReviewServer) -> None:
    status, answer = change(server, {"student": "alice", "question": "4a", "points": 9})
    assert status == 400 and answer["error"] == "9 points is more than the points of question 4a: 4"
    status, answer = change(server, {"student": "alice", "question": "4a", "points": True})
    assert status == 400 and not server.paths.overrides.exists()
    status, answer = change(server, {"student": "nobody", "question": "4a", "points": 1})
    assert status == 400 and "nobody" in str(answer["error"])

    status, answer = change(server, {"student": "alice", "question": "4a", "points": 3.5})
    assert status == 200 and answer["points"] == 3.5 and answer["overridden"] is True
    status, answer = change(server, {"student": "alice", "question": "4a", "note": "see me"})
    assert status == 200 and answer["points"] == 3.5
    status, answer = change(server, {"student": "alice", "question": "4a", "regrade": True})
    assert answer["regrade"] is True
    saved = json.loads(server.paths.overrides.read_text())["overrides"]["alice"]["4a"]
    assert saved["points"] == 3.5 and saved["note"] == "see me" and saved["regrade"] is True
    alice = server.assignment.students().index("alice")
    html = ask(server, "GET", f"/student/{alice}?token={server.token}")[1].decode()
    assert 'value="3.5"' in html and "see me" in html


def test_a_port_in_use_is_one_line(server: ReviewServer, graded: Path) -> None:
    assignment = load_assignment(graded)
    with pytest.raises(AitaError, match=f"cannot listen on 127.0.0.1:{server.port} "):
        ReviewServer(assignment, assignment.results_for(dry_run=True), port=server.port)
