"""What every pipeline command shares: the provider (real or simulated), the spend check and
the executor run.

``--dry-run`` starts the built-in simulator in-process and needs no key. Before a paid model is
called, the number of calls and an estimated cost are shown; on a terminal the user confirms
(``--yes`` skips), and when stdin is not a terminal the run goes on rather than block.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from aita.engine import (
    Backoff,
    BatchResult,
    LLMTask,
    OpenAICompatibleClient,
    ParallelLLMExecutor,
    TaskResult,
    estimate_cost,
)
from aita.errors import AitaError
from aita.terminal import confirm, printable


class Declined(AitaError):
    """The user answered no to the spend check; nothing was called."""


@dataclass
class RunOptions:
    dry_run: bool = False
    workers: int | Literal["auto"] | None = None
    rate_limit: float | None = None
    reuse: bool = True
    yes: bool = False
    show_progress: bool | None = None
    checkpoint_dir: Path | None = None
    backoff: Backoff | None = None
    #: the model to call (None: ``AITA_MODEL``); a dry run always uses the simulator's
    model: str | None = None
    #: answer requests asked before from the response cache (None: ``AITA_CACHE``)
    cache: bool | None = None
    #: ``-q``: say nothing that needs no answer (the spend check is still asked on a terminal)
    quiet: bool = False

    def rate_settings(self) -> dict[str, Any]:
        """The executor's ``rate_limit``: ``--rate-limit`` when given (a dry run too: it shows
        the pacing a real run will have), else none for a dry run's simulator (it has no limit),
        else the settings' (nothing passed)."""
        if self.rate_limit is not None:
            return {"rate_limit": self.rate_limit}
        return {"rate_limit": None} if self.dry_run else {}

    def batch_name(self, assignment: str, operation: str) -> str:
        """The checkpoint name of one pipeline's batch; a dry run's is apart from a real one's."""
        return (
            f"{assignment}__dry-run__{operation}" if self.dry_run else f"{assignment}__{operation}"
        )


def check_spend(
    tasks: Sequence[LLMTask],
    client: OpenAICompatibleClient,
    options: RunOptions,
    stdin: TextIO | None = None,
    stderr: TextIO | None = None,
) -> None:
    stderr = stderr or sys.stderr
    if options.dry_run or not tasks:
        return
    by_model: dict[str, list[LLMTask]] = {}
    for task in tasks:  # a task may name its own model (a pipeline step's ``model``)
        by_model.setdefault(_model_of(task, client.model), []).append(task)
    estimates = [estimate_cost(group, model) for model, group in by_model.items()]
    known = [e for e in estimates if e is not None]
    price = (
        f"estimated ${sum(known):.4f} before retries"
        if len(known) == len(estimates)
        else "price unknown"
    )
    host = urlsplit(client.base_url).hostname or client.base_url
    asking = not options.yes and (stdin or sys.stdin).isatty()
    if asking or not options.quiet:
        print(
            f"about to make {len(tasks)} call(s) to {printable(', '.join(by_model))} at "
            f"{printable(host)} ({price})",
            file=stderr,
        )
    if not options.yes and not confirm(
        "continue?", when_not_a_terminal=True, stdin=stdin, stderr=stderr
    ):
        raise Declined("cancelled; no calls were made")


def _model_of(task: LLMTask, default: str) -> str:
    try:
        model = task.request_params().get("model")
    except Exception:  # a task that cannot build its request fails when it runs, not here
        model = None
    return model if isinstance(model, str) and model else default


def run_batch(
    tasks: Sequence[LLMTask],
    client: OpenAICompatibleClient,
    options: RunOptions,
    checkpoint_name: str,
    on_task_complete: Callable[[TaskResult], object] | None = None,
) -> BatchResult:
    """Run the batch, continuing its checkpoint journal unless ``--force``/``--no-resume``: a
    task that asks exactly what an earlier call asked is answered from it."""
    check_spend(tasks, client, options)
    limit = options.rate_settings()
    executor = ParallelLLMExecutor(
        client,
        max_workers=options.workers,
        **limit,
        checkpoint_dir=options.checkpoint_dir,
        show_progress=options.show_progress,
        backoff=options.backoff,
        cache=options.cache,
    )
    return executor.execute_batch(
        tasks,
        checkpoint_name=checkpoint_name,
        resume_from_checkpoint=options.reuse,
        on_task_complete=on_task_complete,
    )
