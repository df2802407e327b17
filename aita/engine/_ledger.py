"""The spend ledger: one JSON line per paid call, kept apart from checkpoints.

Checkpoints are working files that users clean; what was spent must survive that, so every
answered call to a real provider appends a line here (time, batch, operation, model, tokens,
cost or null when nobody knows the price). Calls answered by the simulator are never spend and
never written. Lines are appended with one ``write`` each (``O_APPEND``), so several processes
can share one ledger; reading validates every line and skips what is not a valid entry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, NonNegativeInt, ValidationError

from aita.files import json_line, private_folder

log = logging.getLogger("aita.ledger")


class SpendEntry(BaseModel):
    """One paid call."""

    model_config = ConfigDict(extra="ignore", strict=True)

    time: str
    batch: str
    operation: str
    model: str
    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    #: USD; None when neither the provider nor a price table knows the price
    cost: NonNegativeFloat | None = None
    #: answered from the response cache: no call was made, nothing was paid
    cached: bool = False


def operation_of(batch: str) -> str:
    """The operation a batch name stands for: ``midterm__grade`` -> ``grade``."""
    return batch.rsplit("__", 1)[-1] if "__" in batch else batch


class SpendLedger:
    """The ledger file: ``record`` appends a paid call, ``entries`` reads them back."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._fd = -1
        #: (a second since the epoch, its local time as entries give it): formatted once a second
        self._second: tuple[int, str] = (-1, "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def record(
        self,
        *,
        batch: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost: float | None,
        cached: bool = False,
    ) -> None:
        """Append one paid (or cached) call; a failure to write warns, never fails the call."""
        # The fields of a SpendEntry, in its order, without a model per call (the values are
        # aita's own: counts clamped here, costs bounded by ``Usage``).
        now = int(time.time())
        second, stamp = self._second
        if second != now:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
            self._second = (now, stamp)
        line = json_line(
            {
                "time": stamp,
                "batch": batch,
                "operation": operation_of(batch),
                "model": model,
                "prompt_tokens": max(0, prompt_tokens),
                "completion_tokens": max(0, completion_tokens),
                "cost": cost,
                "cached": cached,
            }
        )
        with self._lock:
            try:
                if self._fd < 0:
                    private_folder(self.path.parent)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.write(self._fd, line)
            except OSError as error:  # spend accounting must never fail a paid call
                log.warning("could not write to the spend ledger %s: %s", self.path, error)

    def close(self) -> None:
        """Release the file (the next ``record`` opens it again)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def entries(self) -> Iterator[SpendEntry]:
        """Every valid entry, oldest first; invalid lines are skipped with one warning."""
        if not self.path.exists():
            return
        skipped = 0
        with open(self.path, "rb") as handle:
            for line in handle:
                try:
                    yield SpendEntry.model_validate_json(line)
                except ValidationError:
                    skipped += line.strip() != b""
        if skipped:
            log.warning("%s: skipped %d invalid line(s)", self.path, skipped)
