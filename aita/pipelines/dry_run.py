"""Plausible answers for ``--dry-run``: the simulator answers each pipeline task in kind.

A JSON-schema placeholder would be valid but useless here (a rubric whose criteria do not add
up, a grade of 0.5 on every criterion), so these answers follow what the prompt asks: rubric
criteria that sum to the question's points, one score per listed criterion, a transcription with
the expected question markers. Everything else falls back to the simulator's default.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

_WORTH = re.compile(r"must sum to exactly ([0-9.]+)")
_CRITERION = re.compile(r"^C(\d+) \(([0-9.]+) points\): ", re.MULTILINE)
_EXPECTED = re.compile(r"Questions expected on this page: ([^.]*)\.")
_QUESTION = re.compile(r"^Question (\S+) \(", re.MULTILINE)


def dry_run_responder(request: dict[str, Any]) -> str | None:
    fmt = request.get("response_format") or {}
    name = (fmt.get("json_schema") or {}).get("name") or (fmt.get("schema") or {}).get("title")
    text = _all_text(request)
    if name == "AnswerKeyContent":
        return _answer_key(text)
    if name == "RubricContent":
        return _rubric(text)
    if name == "PageTranscriptionContent":
        return _transcription(text, _image_digest(request))
    if name == "GradeContent":
        return _grade(text, str(request.get("model") or ""))
    if name == "CourseOutline":
        return _outline(text)
    if name == "ChapterContent":
        return _chapter(text)
    if name == "CourseSummaryContent":
        return orjson.dumps({"summary": "[dry run] what the course covers"}).decode()
    return None


def _all_text(request: dict[str, Any]) -> str:
    parts = []
    for message in request.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [p.get("text", "") for p in content or [] if p.get("type") == "text"]
    return "\n".join(parts)


def _question_id(text: str) -> str:
    match = _QUESTION.search(text)
    return match.group(1) if match else "?"


def _answer_key(text: str) -> str:
    qid = _question_id(text)
    return orjson.dumps(
        {
            "correct_answer": f"[dry run] the correct answer to question {qid}",
            "alternative_answers": [f"[dry run] an equivalent answer to question {qid}"],
            "explanation": "[dry run] why this answer is correct",
            "solution_steps": ["[dry run] first step", "[dry run] second step"],
            "grading_notes": "[dry run] award partial credit for a correct method",
        }
    ).decode()


def _rubric(text: str) -> str:
    match = _WORTH.search(text)
    total = float(match.group(1)) if match else 1.0
    # Two criteria for method and result, rounded to halves, adding up exactly.
    method = round(total * 0.6 * 2) / 2 if total >= 1 else total
    parts = [("Correct method or reasoning", method), ("Correct final answer", total - method)]
    criteria = [
        {"description": d, "points": p, "examples": [f"[dry run] an answer earning {p:g}"]}
        for d, p in parts
        if p > 0
    ]
    return orjson.dumps({"criteria": criteria}).decode()


def _image_digest(request: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for message in request.get("messages") or []:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "image_url":
                digest.update(str((part.get("image_url") or {}).get("url", "")).encode())
    return digest.hexdigest()[:8]


def _transcription(text: str, scan: str) -> str:
    match = _EXPECTED.search(text)
    ids = [i.strip() for i in match.group(1).split(",")] if match else []
    ids = [i for i in ids if i and i != "none listed"]
    lines = [f"Q{i}: [dry run] the answer to question {i} on scan {scan}" for i in ids]
    body = "\n".join(lines) or "[dry run] a page with no expected question"
    return orjson.dumps({"text": body, "confidence": 0.9, "notes": "[dry run]"}).decode()


def _grade(text: str, model: str) -> str:
    # A share of each criterion's points that differs by answer but not between runs; a model
    # named in the request (a second opinion) grades differently, and always the same way.
    seen = text if model.startswith("dry-run/") or not model else f"{model}\n{text}"
    share = 0.4 + 0.6 * (int(hashlib.sha256(seen.encode()).hexdigest()[:8], 16) % 100) / 100
    scores = [
        {
            "criterion": int(n),
            "points_awarded": round(float(points) * share * 2) / 2,
            "comment": "[dry run] scored",
        }
        for n, points in _CRITERION.findall(text)
    ]
    return orjson.dumps({"scores": scores, "feedback": "[dry run] good work overall"}).decode()


_HEADING = re.compile(r"^#{1,3} +(.+)$", re.MULTILINE)
_CHAPTER = re.compile(r"^Chapter (\d+): (.+)$", re.MULTILINE)


def _outline(text: str) -> str:
    notes = text.split("Notes:", 1)[-1]
    titles = [t.strip() for t in _HEADING.findall(notes)][:8] or ["Foundations", "Practice"]
    chapters = [{"title": t, "focus": f"[dry run] the key ideas of {t}"} for t in titles]
    return orjson.dumps({"chapters": chapters}).decode()


def _chapter(text: str) -> str:
    match = _CHAPTER.search(text)
    title = match.group(2).strip() if match else "Chapter"
    return orjson.dumps(
        {
            "title": title,
            "summary": f"[dry run] a summary of {title}",
            "explanation": f"[dry run] a thorough explanation of {title}",
            "extension": f"[dry run] further reading on {title}",
        }
    ).decode()
