"""``aita transcribe``: every page through a vision model, then answers per question.

Pages are what ``pages.student_pages`` makes of a student's folder: images normalised (EXIF
rotation applied, large scans scaled down, TIFF and BMP converted), PDF pages rendered.

Pages are written to ``results/transcriptions/<student>/page_NNN.json`` as each finishes. Each
student's ``answers.json`` maps questions to text by ``page_number``; where a page holds several
questions, the text is split at the markers the model was asked to write (``Q1a:``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aita.engine import BatchResult, OpenAICompatibleClient, TaskResult
from aita.files import write_json_atomic
from aita.pipelines.assignment import Assignment
from aita.pipelines.exam import PageTranscription, Question, StudentAnswer
from aita.pipelines.execution import RunOptions, run_batch
from aita.pipelines.pages import student_pages
from aita.pipelines.provenance import request_of, reusable, stamped
from aita.pipelines.result_files import read_model, write_model
from aita.pipelines.tasks import TranscriptionTask, create_transcription_tasks


@dataclass
class TranscribeOutcome:
    students: list[str]
    pages_total: int = 0
    pages_reused: int = 0
    batch: BatchResult | None = None
    failed: list[TaskResult] = field(default_factory=list)
    incomplete: dict[str, list[int]] = field(default_factory=dict)


def transcribe(
    assignment: Assignment,
    client: OpenAICompatibleClient,
    options: RunOptions,
    student: str | None = None,
) -> TranscribeOutcome:
    students = assignment.select_students(student)
    paths = assignment.results_for(options.dry_run)
    outcome = TranscribeOutcome(students=students)
    tasks: list[TranscriptionTask] = []
    numbers: dict[str, list[int]] = {}
    for name in students:
        pages = student_pages(assignment.submissions / name)
        numbers[name] = [page.number for page in pages]
        outcome.pages_total += len(pages)
        for task in create_transcription_tasks(name, pages, assignment.spec.questions):
            earlier = read_model(paths.page_transcription(name, task.page), PageTranscription)
            if options.reuse and reusable(earlier, request_of(task, client), options.dry_run):
                outcome.pages_reused += 1
            else:
                tasks.append(task)

    def save(result: TaskResult) -> None:
        if result.success and isinstance(result.result, PageTranscription):
            page = stamped(result.result, result)
            write_model(paths.page_transcription(page.student, page.page), page)

    if tasks:
        name = options.batch_name(assignment.name, "transcribe")
        outcome.batch = run_batch(tasks, client, options, name, save)
        outcome.failed = outcome.batch.failed_results
    for name in students:
        transcribed = {}
        for page in numbers[name]:
            found = read_model(paths.page_transcription(name, page), PageTranscription)
            if found is None or (found.simulated and not options.dry_run):
                outcome.incomplete.setdefault(name, []).append(page)
            else:
                transcribed[page] = found
        answers = map_answers(assignment.spec.questions, transcribed)
        write_json_atomic(
            paths.student_answers(name), {k: v.model_dump(mode="json") for k, v in answers.items()}
        )
    return outcome


def map_answers(
    questions: list[Question], pages: dict[int, PageTranscription]
) -> dict[str, StudentAnswer]:
    """Each question's answer text, from its page (split at markers when the page is shared)."""
    on_page: dict[int, list[str]] = {}
    for q in questions:
        if q.page_number is not None:
            on_page.setdefault(q.page_number, []).append(q.question_id)
    answers: dict[str, StudentAnswer] = {}
    for page_number, ids in on_page.items():
        page = pages.get(page_number)
        if page is None:
            for qid in ids:
                answers[qid] = StudentAnswer(
                    question_id=qid, text="", notes=f"page {page_number} missing"
                )
            continue
        segments = split_by_markers(page.text, ids)
        for qid in ids:
            text, note = segments.get(qid, ""), "" if qid in segments else "no answer marker found"
            if not segments:  # no markers: the page is the answer, split or not
                text = page.text.strip()
                note = "" if len(ids) == 1 else f"page {page_number} could not be split by question"
            answers[qid] = StudentAnswer(
                question_id=qid,
                text=text,
                pages=[page_number],
                confidence=page.confidence,
                notes="; ".join(n for n in (note, page.notes) if n),
                model=page.model,
                simulated=page.simulated,
            )
    for q in questions:
        if q.question_id not in answers:
            found = _search_all_pages(q.question_id, pages)
            answers[q.question_id] = found or StudentAnswer(
                question_id=q.question_id, text="", notes="no page_number and no marker found"
            )
    return {q.question_id: answers[q.question_id] for q in questions}


def split_by_markers(text: str, question_ids: list[str]) -> dict[str, str]:
    """{question id: its text} for each marker (``Q1a:``, ``Question 1a.``) found in ``text``."""
    ids = sorted(question_ids, key=len, reverse=True)
    pattern = re.compile(
        r"^[ \t*#>-]*(?:\[\[)?\s*(?:Q(?:uestion)?)\s*("
        + "|".join(re.escape(i) for i in ids)
        + r")\s*(?:\]\])?\s*[:.)]",
        re.IGNORECASE | re.MULTILINE,
    )
    matches = list(pattern.finditer(text))
    canonical = {i.lower(): i for i in question_ids}
    found: dict[str, str] = {}
    for n, match in enumerate(matches):
        end = matches[n + 1].start() if n + 1 < len(matches) else len(text)
        qid = canonical[match.group(1).lower()]
        found[qid] = f"{found.get(qid, '')}\n{text[match.end() : end].strip()}".strip()
    return found


def _search_all_pages(qid: str, pages: dict[int, PageTranscription]) -> StudentAnswer | None:
    for number in sorted(pages):
        segments = split_by_markers(pages[number].text, [qid])
        if qid in segments:
            page = pages[number]
            return StudentAnswer(
                question_id=qid,
                text=segments[qid],
                pages=[number],
                confidence=page.confidence,
                notes="found by marker (question has no page_number)",
                model=page.model,
                simulated=page.simulated,
            )
    return None
