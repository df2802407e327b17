"""Where each teaching-assistant result came from, and when it may be reused.

Every answer key, rubric, transcription and grade records the model that made it, whether the
provider simulator made it, and ``inputs_hash``: the request key of the call that made it. That
key covers everything the model saw (the question's text, points and type, the instructions, the
answer key a rubric was built on, the page image's bytes, the rubric and transcription a grade
used) and the model asked, so a record is reused only when the call it would take now is the same
call. A change flows downstream by itself: new points give a new answer-key prompt, so a new key,
so a new rubric prompt, so new grades for that question and no other. A real run never reuses a
simulated record (and dry runs write elsewhere: ``results/dry-run/``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from aita.engine import LLMClient, LLMTask, TaskResult, client_model, request_key
from aita.pipelines.exam import Made

R = TypeVar("R", bound=Made)


def request_of(task: LLMTask, client: LLMClient) -> str | None:
    """The request key the task's call would have now; None if it cannot build its request
    (a missing dependency, an unreadable page): then it must run, and fail where it fails."""
    try:
        messages, params = task.build_messages(), task.request_params()
    except Exception:
        return None
    return request_key(client_model(client), messages, params, task.version)


def reusable(record: Made | None, key: str | None, dry_run: bool) -> bool:
    """Whether an earlier record stands for exactly the call that would be made now."""
    if record is None or key is None or record.inputs_hash != key:
        return False
    return dry_run or not record.simulated


CUT_OFF = "the answer was cut off at the token limit"


def stamped(record: R, result: TaskResult) -> R:
    """``record`` with the provenance of the call that made it; an answer cut off at the token
    limit is flagged for review (or noted, on records without a review flag)."""
    update: dict[str, Any] = {
        "model": result.model,
        "simulated": result.simulated,
        "inputs_hash": result.request_key,
    }
    if result.finish_reason == "length":
        if "needs_review" in type(record).model_fields:
            reason = getattr(record, "review_reason", None)
            update["needs_review"] = True
            update["review_reason"] = f"{reason}; {CUT_OFF}" if reason else CUT_OFF
        elif "notes" in type(record).model_fields:
            notes = getattr(record, "notes", "")
            update["notes"] = f"{notes}; {CUT_OFF}" if notes else CUT_OFF
    return record.model_copy(update=update)
