"""The outage gate: while the provider is down, every worker waits and one probe tests it.

Connection errors, resets and 502/503/504 from many workers at once are one outage, not many
failures. The first such error closes the gate; from then on workers wait here instead of
calling, and their tasks keep their retries. One worker goes through as the probe at once (a
lone dropped connection costs one call), then after half a second, doubling up to
``max_interval``: if the provider answers the probe (with anything but another sign of being
down) the gate opens and everyone goes on. When the outage has lasted ``budget`` seconds the
gate gives up: every waiting worker gets ``ProviderOutage`` and the batch stops cleanly, with
what finished saved. Until the provider has answered once, the budget is
``FIRST_CONTACT_BUDGET`` and the error ``ProviderNeverReached`` (``cannot reach <url>: <cause>``):
nothing has ever answered, so there is no outage to ride through. Until then a call that timed
out closes the gate too (``timed out after <N>s``): a server that takes every connection and
never answers is as unreachable as one that refuses them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from aita.errors import (
    ProviderNeverReached,
    ProviderOutage,
    ProviderTimeout,
    ProviderUnreachable,
)

#: Seconds a provider that has never answered may stay unreachable before the run stops: a
#: wrong URL or a server that is not running is not an outage to wait out.
FIRST_CONTACT_BUDGET = 10.0


class OutageGate:
    """Holds every worker while the provider is down and lets one probe through at a time
    (see the module)."""

    def __init__(
        self,
        budget: float,
        *,
        first_interval: float = 0.5,
        max_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        reached: bool = False,
        first_contact_budget: float = FIRST_CONTACT_BUDGET,
    ) -> None:
        """``budget``: seconds an outage may last before the batch stops; ``reached``: the
        provider has answered before (an earlier run of the same executor)."""
        self.budget = budget
        #: the provider has answered a call (anything, a refusal included)
        self.reached = reached
        self.first_contact_budget = first_contact_budget
        #: the error that last found the provider down
        self.last_error: BaseException | None = None
        self.first_interval = first_interval
        self.max_interval = max_interval
        self._clock = clock
        self._changed = threading.Condition(threading.Lock())
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._interval = first_interval
        self._probing = False
        self._woken = False
        #: outages seen, for metrics
        self.outages = 0

    @property
    def down(self) -> bool:
        """Whether an outage is going on."""
        return self._down_since is not None

    def enter(self) -> bool:
        """Wait while the provider is down; True if this caller goes through as the probe.

        Raises ``ProviderOutage`` once the outage has outlasted the budget; returns at once (not
        as the probe) after ``wake``.
        """
        if self._down_since is None:  # the common case, without the lock
            return False
        with self._changed:
            while self._down_since is not None and not self._woken:
                now = self._clock()
                budget = self._budget()
                if now - self._down_since >= budget:
                    if not self.reached:
                        raise ProviderNeverReached(self._never_reached())
                    raise ProviderOutage(
                        f"no answer for {now - self._down_since:.0f}s, the outage budget "
                        f"(AITA_OUTAGE_BUDGET={self.budget:g}s)"
                    )
                if not self._probing and now >= self._next_probe:
                    self._probing = True
                    return True
                until = self._down_since + budget
                if not self._probing:
                    until = min(until, self._next_probe)
                self._changed.wait(max(0.001, until - now))
            return False

    def _budget(self) -> float:
        return self.budget if self.reached else min(self.budget, self.first_contact_budget)

    def _never_reached(self) -> str:
        error = self.last_error
        if isinstance(error, ProviderUnreachable):
            return error.message  # "cannot reach <url>: <cause>"
        if isinstance(error, ProviderTimeout) and error.url:
            return f"cannot reach {error.url}: timed out after {error.seconds:g}s"
        return f"cannot reach the provider: {error or 'no answer'}"

    def failed(self, probe: bool, error: BaseException | None = None) -> None:
        """A call found the provider down: start the outage, or schedule the next probe."""
        with self._changed:
            self.last_error = error or self.last_error
            now = self._clock()
            if self._down_since is None:
                self._down_since = now
                self._interval = self.first_interval / 2  # the first probe goes at once
                self._next_probe = now
                self._probing = False
                self.outages += 1
            elif probe:
                self._probing = False
                self._interval = min(self.max_interval, self._interval * 2)
                self._next_probe = now + self._interval
            self._changed.notify_all()

    def answered(self) -> None:
        """The provider answered a call: the outage, if any, is over."""
        self.reached = True
        if self._down_since is None:
            return
        with self._changed:
            self._down_since = None
            self._probing = False
            self._changed.notify_all()

    def wake(self) -> None:
        """Release every waiting worker (Ctrl-C): they return without calling."""
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    def reset(self) -> None:
        """A new batch: forget a wake-up of the last one."""
        with self._changed:
            self._woken = False
