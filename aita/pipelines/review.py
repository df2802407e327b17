"""``aita review``: a page on 127.0.0.1 where a teacher checks and changes grades.

Each student's answers are shown beside their scanned pages, with the rubric, the model's
points and feedback; the teacher accepts a grade, changes points per criterion or for the
question, comments, or marks an answer for regrade. Every change is saved the moment it is made
through ``overrides.record``, the same code as ``aita override`` (same checks, same file).

The page is rendered on the server (Jinja2, autoescaped, the report's environment); its only
script sends changes. What guards it, since anything on the machine (or a web page in the
teacher's browser) can reach 127.0.0.1:

- it listens on 127.0.0.1 only, and answers only requests whose ``Host`` is that address or
  ``localhost`` at its port (a DNS-rebinding page names another host);
- a random token (``secrets.token_urlsafe``) is in the address it prints; every request must
  carry it (``?token=`` for pages and images, the ``X-Aita-Token`` header for changes), checked
  in constant time, else 403;
- a change is a POST of ``application/json`` with the token in a header: a cross-site form can
  send neither without the browser asking first (CORS), and no CORS header is ever sent;
- a POST body is at most ``MAX_BODY`` bytes; pages say ``no-store``, ``no-referrer`` (the token
  must not leak in a Referer) and a Content-Security-Policy that allows only this origin's
  images and the page's own script (by nonce).
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aita.errors import AitaError
from aita.pipelines import overrides
from aita.pipelines.assignment import Assignment, ResultPaths
from aita.pipelines.exam import Rubric
from aita.pipelines.pages import Page, student_pages
from aita.pipelines.report import _environment, build_report
from aita.pipelines.result_files import read_records

#: a change is a few numbers and a note: anything larger is refused unread
MAX_BODY = 16 * 1024


class ReviewServer:
    """The review page for one assignment's results, on 127.0.0.1 (``port`` 0: a free one)."""

    def __init__(
        self, assignment: Assignment, paths: ResultPaths, *, port: int = 0, token: str | None = None
    ) -> None:
        self.assignment = assignment
        self.paths = paths
        self.token = token or secrets.token_urlsafe(24)
        self._pages: dict[str, list[Page]] = {}
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"review": self})
        try:
            self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError as error:
            reason = (error.strerror or type(error).__name__).lower()
            raise AitaError(f"cannot listen on 127.0.0.1:{port} ({reason})") from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def start(self) -> ReviewServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ReviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pages(self, student: str) -> list[Page]:
        """The student's scanned pages, as the model saw them (read once, then kept)."""
        with self._lock:
            if student not in self._pages:
                self._pages[student] = student_pages(self.assignment.submissions / student)
            return self._pages[student]

    def render(self, student_index: int | None, nonce: str) -> str:
        report = build_report(self.assignment, self.paths)
        rubrics = read_records(self.paths.rubrics, Rubric) or {}
        student = None
        if student_index is not None:
            if not 0 <= student_index < len(report.students):
                raise LookupError(student_index)
            student = report.students[student_index]
        template = _environment().get_template("review.html.j2")
        return template.render(
            report=report,
            spec=self.assignment.spec,
            student=student,
            index=student_index,
            rubrics=rubrics,
            pages=[p.number for p in self.pages(student.name)] if student else [],
            token=self.token,
            nonce=nonce,
        )

    def change(self, body: dict[str, Any]) -> dict[str, Any]:
        """Save one change (``overrides.record``) and say what the answer's grade is now."""
        student, question = body.get("student"), body.get("question")
        if not isinstance(student, str) or not isinstance(question, str):
            raise overrides.OverrideError("student and question are required")
        points = body.get("points")
        if points is not None and (isinstance(points, bool) or not isinstance(points, int | float)):
            raise overrides.OverrideError("points must be a number")
        criterion = body.get("criterion")
        whole = isinstance(criterion, int) and not isinstance(criterion, bool)
        if criterion is not None and not whole:
            raise overrides.OverrideError("criterion must be a whole number")
        note = body.get("note")
        if note is not None and not isinstance(note, str):
            raise overrides.OverrideError("note must be text")
        change = overrides.Change(
            student=student,
            question_id=question,
            points=None if points is None else float(points),
            criterion=criterion,
            note=note,
            accept=body.get("accept") is True,
            regrade=body.get("regrade") is True,
        )
        saved = overrides.record(self.assignment, self.paths, change)
        spec_question = self.assignment.spec.question(question)
        questions = self.assignment.spec.questions
        grade = overrides.read_grades(self.paths, student, questions).get(question)
        applied = overrides.apply(spec_question, grade, saved)
        from aita.pipelines.grade import write_summary

        if self.paths.grade_summary.parent.is_dir():
            write_summary(self.assignment, self.paths)
        points_now = applied.grade.points_awarded if applied.grade else None
        return {
            "ok": True,
            "points": None if points_now is None or math.isnan(points_now) else points_now,
            "overridden": applied.overridden,
            "accepted": saved.accepted,
            "regrade": saved.regrade,
            "who": saved.who,
            "when": saved.when,
        }


def serve(
    assignment: Assignment,
    paths: ResultPaths,
    *,
    port: int = 0,
    announce: Callable[[str], object] = print,
) -> None:
    """Serve until Ctrl-C (the caller's ``KeyboardInterrupt`` handler says what is saved)."""
    server = ReviewServer(assignment, paths, port=port)
    announce(server.url)
    try:
        server.httpd.serve_forever()
    finally:
        server.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    review: ReviewServer
    server_version = "aita-review"
    sys_version = ""
    timeout = 30  # a connection that sends nothing for this long is closed

    def log_message(self, format: str, *args: Any) -> None:  # no token in any log
        return

    def _allowed_host(self) -> bool:
        port = self.review.port
        return self.headers.get("Host", "") in (f"127.0.0.1:{port}", f"localhost:{port}")

    def _token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.review.token.encode())

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._allowed_host():
            return self._text(HTTPStatus.FORBIDDEN, "wrong host")
        if not self._token_ok(query.get("token", [""])[0]):
            return self._text(HTTPStatus.FORBIDDEN, "the address needs its token")
        parts = [p for p in url.path.split("/") if p]
        try:
            if not parts:
                return self._page(None)
            if len(parts) == 2 and parts[0] == "student" and parts[1].isdigit():
                return self._page(int(parts[1]))
            if len(parts) == 3 and parts[0] == "page" and parts[1].isdigit() and parts[2].isdigit():
                return self._image(int(parts[1]), int(parts[2]))
        except LookupError:
            pass
        except AitaError as error:
            return self._text(HTTPStatus.CONFLICT, str(error))
        return self._text(HTTPStatus.NOT_FOUND, "not found")

    def do_POST(self) -> None:
        if not self._allowed_host():
            return self._json(HTTPStatus.FORBIDDEN, {"ok": False, "error": "wrong host"})
        if not self._token_ok(self.headers.get("X-Aita-Token")):
            return self._json(HTTPStatus.FORBIDDEN, {"ok": False, "error": "token required"})
        if urlsplit(self.path).path != "/change":
            return self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": "not found"})
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return self._json(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"ok": False, "error": "send JSON"}
            )
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._json(HTTPStatus.LENGTH_REQUIRED, {"ok": False, "error": "no length"})
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            return self._json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"ok": False, "error": f"a change is at most {MAX_BODY} bytes"},
            )
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError):
            return self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "invalid JSON"})
        if not isinstance(body, dict):
            return self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": "expected an object"})
        try:
            answer = self.review.change(body)
        except AitaError as error:
            return self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": str(error)})
        self._json(HTTPStatus.OK, answer)

    def _page(self, student: int | None) -> None:
        nonce = secrets.token_urlsafe(16)
        html = self.review.render(student, nonce)
        csp = (
            "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
            f"script-src 'nonce-{nonce}'; connect-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        )
        headers = {"Content-Security-Policy": csp}
        self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8", headers)

    def _image(self, student: int, number: int) -> None:
        names = self.review.assignment.students()
        if not 0 <= student < len(names):
            raise LookupError(student)
        for page in self.review.pages(names[student]):
            if page.number == number and page.image is not None and page.mime_type:
                return self._send(HTTPStatus.OK, page.image, page.mime_type)
        raise LookupError(number)

    def _text(self, status: HTTPStatus, text: str) -> None:
        self._send(status, (text + "\n").encode(), "text/plain; charset=utf-8")

    def _json(self, status: HTTPStatus, value: dict[str, Any]) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(
        self,
        status: HTTPStatus,
        data: bytes,
        kind: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
