"""``aita generate-course``: an outline call, then every chapter in parallel, then a summary.

Each chapter is written to ``<output-dir>/<title>/chapter_NN_<Chapter_Title>.md`` the moment it
is done, so an interrupted run keeps what finished, and running the same command again resumes
from the checkpoints (the same outline, only the missing chapters). The summary task depends on
every chapter and starts when the last one is written. Titles, the user's or the model's,
become file names only through ``safe_filename``: nothing can be written outside the output
directory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field

from aita.engine import BatchResult, LLMMessage, LLMTask, TaskResult, validate_json
from aita.errors import AitaError
from aita.files import private_folder, safe_filename, write_text_atomic

#: Runs a batch: (tasks, checkpoint name, on_task_complete) -> result. The CLI passes one bound
#: to its client and options.
BatchRunner = Callable[[Sequence[LLMTask], str, Callable[[TaskResult], object] | None], BatchResult]

SYSTEM_PROMPT = (
    "You are an expert teacher turning raw notes into a clear course. Answer with JSON only, "
    "matching the requested schema."
)


class OutlineChapter(BaseModel):
    title: str = Field(min_length=1)
    focus: str = ""


class CourseOutline(BaseModel):
    chapters: list[OutlineChapter] = Field(min_length=1)


class ChapterContent(BaseModel):
    title: str
    summary: str
    explanation: str
    extension: str


class CourseSummaryContent(BaseModel):
    summary: str


def _file_name(title: str) -> str:
    return safe_filename(title, limit=60, empty="untitled")


class OutlineTask(LLMTask):
    response_model: ClassVar[type[BaseModel] | None] = CourseOutline
    expected_output_tokens = 400

    def __init__(self, content: str, title: str, max_chapters: int) -> None:
        self.content = content
        self.title = title
        self.max_chapters = max_chapters

    @property
    def task_id(self) -> str:
        return "outline"

    def build_messages(self) -> list[LLMMessage]:
        prompt = (
            f"Course title: {self.title}\n\nPlan a course of at most {self.max_chapters} "
            "chapters from these notes. Give each chapter a title and its focus.\n\n"
            f"Notes:\n{self.content}"
        )
        return [LLMMessage("system", SYSTEM_PROMPT), LLMMessage("user", prompt)]

    def parse_response(self, response_text: str) -> CourseOutline:
        outline = validate_json(CourseOutline, response_text)
        outline.chapters = outline.chapters[: self.max_chapters]
        return outline


class ChapterTask(LLMTask):
    response_model: ClassVar[type[BaseModel] | None] = ChapterContent
    expected_output_tokens = 1500

    def __init__(
        self,
        content: str,
        course_title: str,
        number: int,
        chapter: OutlineChapter,
        custom_prompt: str | None = None,
    ) -> None:
        self.content = content
        self.course_title = course_title
        self.number = number
        self.chapter = chapter
        self.custom_prompt = custom_prompt

    @property
    def task_id(self) -> str:
        return f"chapter_{self.number:02d}"

    def build_messages(self) -> list[LLMMessage]:
        prompt = (
            f"Course: {self.course_title}\nChapter {self.number}: {self.chapter.title}\n"
            f"Focus: {self.chapter.focus}\n\nWrite this chapter from the notes below: a short "
            "summary, a thorough explanation, and an extension for curious students."
        )
        if self.custom_prompt:
            prompt += f"\n\nAlso: {self.custom_prompt}"
        prompt += f"\n\nNotes:\n{self.content}"
        return [LLMMessage("system", SYSTEM_PROMPT), LLMMessage("user", prompt)]

    def parse_response(self, response_text: str) -> ChapterContent:
        return validate_json(ChapterContent, response_text)


class CourseSummaryTask(LLMTask):
    response_model: ClassVar[type[BaseModel] | None] = CourseSummaryContent
    expected_output_tokens = 400

    def __init__(self, course_title: str, chapter_ids: list[str]) -> None:
        self.course_title = course_title
        self.dependencies = tuple(chapter_ids)

    @property
    def task_id(self) -> str:
        return "course_summary"

    def build_messages(self) -> list[LLMMessage]:
        chapters = [
            f"- {c.title}: {c.summary}"
            for c in self.dependency_results.values()
            if isinstance(c, ChapterContent)
        ]
        prompt = (
            f"Course: {self.course_title}\nSummarise the whole course for a student in one "
            "paragraph, from its chapters:\n" + "\n".join(chapters)
        )
        return [LLMMessage("system", SYSTEM_PROMPT), LLMMessage("user", prompt)]

    def parse_response(self, response_text: str) -> str:
        return validate_json(CourseSummaryContent, response_text).summary


@dataclass
class CourseOutcome:
    course_dir: Path
    chapter_files: list[Path] = field(default_factory=list)
    summary_file: Path | None = None
    outline: CourseOutline | None = None
    batches: list[BatchResult] = field(default_factory=list)
    failed: list[TaskResult] = field(default_factory=list)


def course_directory(output_dir: Path, title: str) -> Path:
    course_dir = output_dir / _file_name(title)
    if not course_dir.resolve().is_relative_to(output_dir.resolve()):  # belt and braces
        raise AitaError(f"course title {title!r} would leave {output_dir}")
    return course_dir


def chapter_markdown(number: int, chapter: ChapterContent) -> str:
    return (
        f"# Chapter {number}: {chapter.title}\n\n## Summary\n\n{chapter.summary}\n\n"
        f"## Explanation\n\n{chapter.explanation}\n\n## Extension\n\n{chapter.extension}\n"
    )


def generate_course(
    content: str,
    title: str,
    output_dir: Path,
    run: BatchRunner,
    max_chapters: int = 8,
    custom_prompt: str | None = None,
) -> CourseOutcome:
    course_dir = course_directory(output_dir, title)
    outcome = CourseOutcome(course_dir=course_dir)
    first = run(
        [OutlineTask(content, title, max_chapters)],
        f"{_file_name(title)}__outline",
        None,
    )
    outcome.batches.append(first)
    [outline_result] = first.task_results
    if not outline_result.success:
        outcome.failed.append(outline_result)
        return outcome
    outline: CourseOutline = outline_result.result
    outcome.outline = outline
    private_folder(course_dir)
    chapters = [
        ChapterTask(content, title, number, chapter, custom_prompt)
        for number, chapter in enumerate(outline.chapters, start=1)
    ]
    by_id = {task.task_id: task for task in chapters}

    def save(result: TaskResult) -> None:
        if not result.success:
            return
        task = by_id.get(result.task_id)
        if task is not None:
            name = f"chapter_{task.number:02d}_{_file_name(task.chapter.title)}.md"
            path = course_dir / name
            write_text_atomic(path, chapter_markdown(task.number, result.result))
            outcome.chapter_files.append(path)
        elif result.task_id == "course_summary":
            path = course_dir / "course_summary.md"
            write_text_atomic(path, f"# {title}\n\n{result.result}\n")
            outcome.summary_file = path

    summary = CourseSummaryTask(title, list(by_id))
    second = run([*chapters, summary], f"{_file_name(title)}__chapters", save)
    outcome.batches.append(second)
    outcome.failed = second.failed_results
    outcome.chapter_files.sort()
    return outcome
