"""One provider limit shared by every process and machine that names it, through Redis.

    limiter = RedisRateLimiter(20, redis_url="redis://host:6379/0", name="openrouter gemini")
    ParallelLLMExecutor(client, rate_limiter=limiter)   # run it in as many processes as you like

A provider's limit belongs to the API key, not to one process: three processes each pacing
themselves at the limit send three times too much. This is ``RateLimiter`` with its state in a
Redis hash instead of this process's memory, so the same guarantee holds for all of them
together: no one-second window sees more than ``rate`` starts, and ``rate`` is sustained.

- Each ``acquire`` runs one Lua script (EVALSHA, loaded again if Redis lost it) that reserves the
  next slot ``1/rate`` after the previous one, and its tokens in the token budget, atomically,
  on Redis's own clock (``TIME``), so machines with skewed clocks agree. The caller sleeps until
  its slot once; only if a pause arrived meanwhile does it reserve again, or if it woke
  ``STALL`` after its slot: the process stalled, and its request would reach the provider
  together with the slots of the others that came meanwhile (a strict server refuses that); the
  slot passes unused, and the next one is used however late.
- ``pause`` (a 429's retry-after) and ``set_rate`` (what ``AdaptiveRate`` learns) are stored
  there too, so every process waits and paces alike. The script returns the shared rate with
  each slot, so reading it back costs no extra round trip. A raise within ``raise_hold`` of
  the last change is not applied: N processes recovering from one 429 climb as one would.
- Nothing is leased or locked: a process killed mid-run leaves only the slots it reserved,
  which pass. The hash expires ``idle_ttl`` after its last reserved instant.
- Values in the hash are checked before they are obeyed: a rate below ``MIN_SHARED_RATE``, a
  pause longer than any retry-after is honoured, a wait for a slot beyond ``MAX_SHARED_WAIT``
  or a value that is not a number was written by someone else (or a bug), and would stall
  every process without a word: this process logs one warning naming the limit and paces
  alone, as when Redis is lost.
- Redis unreachable at construction is a ``ConfigError`` naming the URL (password hidden);
  Redis lost mid-run logs one warning and this process carries on alone on the inherited local
  limiter at the current rate, after the slots it had reserved (its own share of the schedule
  is kept locally as it goes): a batch never fails because Redis went away.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from aita.engine._adaptive import AdaptiveRate
from aita.engine._client import LLMClient
from aita.engine._keys import client_model
from aita.engine._limiter import HEADROOM, STALL, Clock, RateLimiter, Sleep
from aita.engine._retry import MAX_RETRY_AFTER
from aita.errors import ConfigError

log = logging.getLogger("aita.executor")

#: the lowest shared rate believed, in requests/s (``AdaptiveRate`` never cuts below it), unless
#: this process was configured lower
MIN_SHARED_RATE = 0.1
#: the longest wait for a shared slot believed, in seconds: beyond it the schedule was not
#: written by aita processes pacing at a believed rate
MAX_SHARED_WAIT = 2 * MAX_RETRY_AFTER

KEY_PREFIX = "aita:limit:"

# Every script: KEYS[1] the limit's hash; ARGV[1] now in microseconds ("" = Redis's TIME),
# ARGV[2] how long the state outlives its last reserved instant, in milliseconds. Times in the
# hash are microseconds on that clock: integers below 2^53, so a double holds them exactly.
_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end -- Redis < 5: TIME, then write
local key = KEYS[1]
local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local idle_ms = tonumber(ARGV[2])
local function fmt(x) return string.format('%.17g', x) end
local function keep_alive()
  local f = redis.call('HMGET', key, 'next', 'tokens', 'paused')
  local last = now
  for i = 1, 3 do
    local t = tonumber(f[i])
    if t and t > last then last = t end
  end
  redis.call('PEXPIRE', key, math.ceil((last - now) / 1000) + idle_ms)
end
"""

# ARGV[3] the caller's rate (0 = unlimited; stored only if the hash has none), ARGV[4] tokens,
# ARGV[5] tokens per second (0 = no budget), ARGV[6] 1 + the limiter's headroom. Returns the
# wait in microseconds, the shared rate and when it was set (so a late reply never overrides a
# newer rate), and the pause in force (so the caller can tell whether one arrived while it slept).
_ACQUIRE = (
    _PRELUDE
    + """
local rate = redis.call('HGET', key, 'rate')
if not rate then
  rate = ARGV[3]
  redis.call('HSET', key, 'rate', rate)
end
local f = redis.call('HMGET', key, 'next', 'tokens', 'paused', 'changed')
local paused = tonumber(f[3]) or 0
local slot = math.max(now, tonumber(f[1]) or now, tonumber(f[2]) or now, paused)
local per_second = tonumber(rate) or 0 -- not a number: the caller refuses it
local after = slot
if per_second > 0 then after = slot + math.ceil(1000000 * tonumber(ARGV[6]) / per_second) end
redis.call('HSET', key, 'next', fmt(after))
local tokens, token_rate = tonumber(ARGV[4]), tonumber(ARGV[5])
if tokens > 0 and token_rate > 0 then
  redis.call('HSET', key, 'tokens', fmt(slot + math.ceil(tokens * 1000000 / token_rate)))
end
keep_alive()
return {fmt(slot - now), rate, fmt(tonumber(f[4]) or 0), fmt(paused), fmt(slot)}
"""
)

# ARGV[3] seconds. Returns the pause's end.
_PAUSE = (
    _PRELUDE
    + """
local f = redis.call('HMGET', key, 'next', 'paused')
local paused = math.max(tonumber(f[2]) or 0, now + math.ceil(tonumber(ARGV[3]) * 1000000))
redis.call('HSET', key, 'paused', fmt(paused), 'next', fmt(math.max(tonumber(f[1]) or 0, paused)))
keep_alive()
return fmt(paused)
"""
)

# ARGV[3] microseconds to move the token budget by (negative: tokens given back).
_CORRECT = (
    _PRELUDE
    + """
local tokens = tonumber(redis.call('HGET', key, 'tokens'))
if tokens then
  redis.call('HSET', key, 'tokens', fmt(tokens + tonumber(ARGV[3])))
  keep_alive()
end
return 1
"""
)

# ARGV[3] the new rate (0 = unlimited), ARGV[4] the raise hold in microseconds. Returns the
# rate in force afterwards and when it was set: a raise within the hold of the last change is
# not applied.
_SET_RATE = (
    _PRELUDE
    + """
local f = redis.call('HMGET', key, 'rate', 'changed')
local current, changed, wanted = tonumber(f[1]), tonumber(f[2]), tonumber(ARGV[3])
local function faster(a, b) -- 0 is unlimited, faster than any rate
  if a == 0 then return b ~= 0 end
  return b ~= 0 and a > b
end
if current and changed and faster(wanted, current) and now - changed < tonumber(ARGV[4]) then
  return {f[1], f[2]}
end
redis.call('HSET', key, 'rate', ARGV[3], 'changed', fmt(now))
keep_alive()
return {ARGV[3], fmt(now)}
"""
)


def default_limit_name(client: LLMClient) -> str:
    """The limit a client's calls count against unless told otherwise: its base URL (without
    credentials) and model. Processes that should share a limit must agree on this name."""
    base_url = getattr(client, "base_url", None)
    where = redact_url(str(base_url), hide="") if base_url else type(client).__name__
    return f"{where.rstrip('/')} {client_model(client)}"


def redact_url(url: str, *, hide: str = "***") -> str:
    """``url`` with any user, password and query replaced by ``hide`` (a URL fit for a log)."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparsable URL>"
    netloc = f"{hide}@{host}" if hide and "@" in parts.netloc else host
    query = hide if hide and parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class RedisRateLimiter(RateLimiter):
    """``RateLimiter`` whose slots, token budget, pauses and rate live in Redis under ``name``
    (see the module). A drop-in: ``ParallelLLMExecutor(rate_limiter=...)``, ``AdaptiveRate``.

    ``clock`` is for tests only: by default the shared schedule runs on Redis's clock, which is
    what lets machines agree; with a ``clock`` (seconds) every instance must share it. ``sleep``
    is how a caller waits for its slot (the executor's ends early on Ctrl-C).
    """

    __slots__ = (
        "_acquire_script",
        "_configured",
        "_correct_script",
        "_idle_ms",
        "_key",
        "_local",
        "_password",
        "_pause_script",
        "_raise_hold_us",
        "_rate_changed",
        "_redis",
        "_set_rate_script",
        "_shared_clock",
        "name",
        "redis_url",
    )

    def __init__(
        self,
        rate: float | None,
        *,
        redis_url: str,
        name: str,
        tokens_per_minute: float | None = None,
        clock: Clock | None = None,
        sleep: Sleep = time.sleep,
        headroom: float = HEADROOM,
        idle_ttl: float = 60.0,
        raise_hold: float = AdaptiveRate.RECOVERY_SECONDS,
        timeout: float = 2.0,
    ) -> None:
        """``redis_url`` as ``redis://[:password@]host:6379/0``; ``timeout`` bounds each Redis
        call in seconds (past it, Redis counts as lost)."""
        super().__init__(
            rate,
            tokens_per_minute=tokens_per_minute,
            clock=clock or time.monotonic,
            sleep=sleep,
            headroom=headroom,
        )
        if not name:
            raise ValueError("a shared rate limit needs a name")
        self.name = name
        #: where the limit lives, with any password hidden
        self.redis_url = redact_url(redis_url)
        self._password = urlsplit(redis_url).password or ""
        self._key = KEY_PREFIX + name
        self._shared_clock = clock
        self._idle_ms = round(idle_ttl * 1000)
        self._raise_hold_us = round(raise_hold * 1_000_000)
        self._local = False
        self._configured = rate
        self._rate_changed = -1.0  # when the shared rate this process follows was set (Redis)
        self._redis = self._connect(redis_url, timeout)
        self._acquire_script = self._redis.register_script(_ACQUIRE)
        self._pause_script = self._redis.register_script(_PAUSE)
        self._correct_script = self._redis.register_script(_CORRECT)
        self._set_rate_script = self._redis.register_script(_SET_RATE)

    def _connect(self, redis_url: str, timeout: float) -> redis.Redis:
        try:
            client = redis.Redis.from_url(
                redis_url,
                decode_responses=True,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1),  # one reconnect for a dropped idle connection
            )
            client.ping()
            for script in (_ACQUIRE, _PAUSE, _CORRECT, _SET_RATE):
                client.script_load(script)
        except (RedisError, ValueError, OSError) as error:
            raise ConfigError(
                f"AITA_REDIS_URL: cannot use Redis at {self.redis_url}: {self._reason(error)}"
            ) from None
        return client

    @property
    def shared(self) -> bool:
        """False once Redis was lost and this process paces alone."""
        return not self._local

    def acquire(self, tokens: int = 0) -> float:
        waited = 0.0
        stalled = False
        while not self._local:
            try:
                delay, pause_seen, slot = self._reserve(tokens)
                if delay <= 0:
                    return waited + self._started()
                due = self._clock() + delay
                self._sleep(delay)
                waited += delay
                late = self._clock() - due
                # A pause imposed (by anyone) while we slept moves our slot behind it, if the
                # slot fell inside it; a slot after the pause stands.
                paused = float(self._redis.hget(self._key, "paused") or 0)
                if paused > pause_seen and slot < paused:
                    continue
                if late < STALL or stalled:
                    return waited + self._started()
                # This process stalled past its slot: sent now, the request would reach the
                # provider together with the next processes' (once; a slow machine still sends).
                stalled = True
                self.correct(-tokens)  # the slot passes unused: so do its tokens
            except RedisError as error:
                self._fall_back(error)
            except (_Untrusted, ValueError) as error:
                self._distrust(error)
        return waited + super().acquire(tokens)

    def _started(self) -> float:
        """Note this process's start (its own sent rate, for ``AdaptiveRate``); waits nothing."""
        with self._lock:
            self._starts.append(self._clock())
        return 0.0

    def correct(self, tokens: int) -> None:
        if not (self._token_rate and tokens):
            return
        if not self._local:
            shift = tokens / self._token_rate * 1_000_000
            try:
                self._correct_script(keys=[self._key], args=[*self._now(), shift])
            except RedisError as error:
                self._fall_back(error)
        super().correct(tokens)  # in the local copy of this process's schedule too

    def pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if not self._local:
            try:
                self._pause_script(keys=[self._key], args=[*self._now(), seconds])
            except RedisError as error:
                self._fall_back(error)
        super().pause(seconds)

    def set_rate(self, rate: float | None) -> None:
        """Change the shared rate (unless it is a raise too soon after the last change: then
        this process adopts the shared rate instead)."""
        super().set_rate(rate)  # validates; and the local limiter is ready if Redis goes
        if self._local:
            return
        try:
            in_force, changed = self._set_rate_script(
                keys=[self._key], args=[*self._now(), _encode(rate), self._raise_hold_us]
            )
            self._check(_decode(in_force), 0.0, 0.0)
        except RedisError as error:
            self._fall_back(error)
            return
        except (_Untrusted, ValueError) as error:
            self._distrust(error)
            return
        self._adopt(in_force, float(changed))

    def close(self) -> None:
        """Close the connections to Redis (the shared state stays for the other processes)."""
        self._redis.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(rate={self.rate}, name={self.name!r}, "
            f"redis_url={self.redis_url!r})"
        )

    # -- Redis ---------------------------------------------------------------------------------

    def _now(self) -> tuple[str, int]:
        """The script's clock argument ("" = Redis's TIME) and the idle lifetime."""
        now = "" if self._shared_clock is None else repr(self._shared_clock() * 1_000_000)
        return now, self._idle_ms

    def _reserve(self, tokens: int) -> tuple[float, float, float]:
        """Reserve the next shared slot: seconds until it, the pause in force then and the slot
        itself (as Redis holds them, microseconds) to compare with after the sleep."""
        token_rate = self._token_rate if tokens else 0.0
        wait_us, rate, changed, paused, slot_us = self._acquire_script(
            keys=[self._key],
            args=[*self._now(), _encode(self.rate), tokens, token_rate, 1.0 + self._headroom],
        )
        delay = float(wait_us) / 1_000_000
        self._check(_decode(rate), (float(paused) - float(slot_us)) / 1_000_000 + delay, delay)
        self._adopt(rate, float(changed))
        with self._lock:  # this process's own slots, for the local limiter to go on after
            slot = self._clock() + delay
            self._next_slot = max(self._next_slot, slot + self._interval)
            if token_rate:
                self._tokens_free_at = max(self._tokens_free_at, slot + tokens / token_rate)
        return delay, float(paused), float(slot_us)

    def _adopt(self, shared_rate: str, changed: float) -> None:
        """Take the shared rate, unless this thread's reply is older than one already taken."""
        rate = _decode(shared_rate)
        with self._lock:
            if changed < self._rate_changed:
                return
            self._rate_changed = changed
            self.rate = rate
            self._interval = (1.0 + self._headroom) / rate if rate else 0.0

    def _check(self, rate: float | None, paused: float, wait: float) -> None:
        """Refuse shared values no aita process writes (someone else's, or a bug's): a rate
        below ``MIN_SHARED_RATE`` (and below this process's own), a pause longer than any
        retry-after is honoured, or a wait for a slot longer than ``MAX_SHARED_WAIT``."""
        floor = min(MIN_SHARED_RATE, self._configured or MIN_SHARED_RATE)
        if rate is not None and rate < floor:
            raise _Untrusted(f"a rate of {rate:g} requests/s")
        if paused > MAX_RETRY_AFTER + 1.0:
            raise _Untrusted(f"a pause of {paused:.0f} s")
        if wait > MAX_SHARED_WAIT:
            raise _Untrusted(f"a wait of {wait:.0f} s for the next slot")

    def _distrust(self, error: Exception) -> None:
        with self._lock:
            if self._local:
                return
            self._local = True
        reason = str(error) if isinstance(error, _Untrusted) else "a value that is not a number"
        log.warning(
            "the shared rate limit %r in Redis at %s holds %s, which aita never writes: this "
            "process paces alone at %s requests/s",
            self.name,
            self.redis_url,
            reason,
            self.rate if self.rate is not None else "unlimited",
        )

    def _fall_back(self, error: RedisError) -> None:
        with self._lock:
            if self._local:
                return
            self._local = True
        log.warning(
            "lost Redis at %s (%s): this process now paces alone at %s requests/s",
            self.redis_url,
            self._reason(error),
            self.rate if self.rate is not None else "unlimited",
        )

    def _reason(self, error: Exception) -> str:
        text = f"{type(error).__name__}: {error}"
        return text.replace(self._password, "***") if self._password else text


class _Untrusted(Exception):
    """A value in the shared hash that no aita process would have written."""


def _encode(rate: float | None) -> str:
    return repr(float(rate)) if rate else "0"


def _decode(rate: Any) -> float | None:
    value = float(rate)
    if not math.isfinite(value):
        raise _Untrusted(f"a rate of {rate!r}")
    return value if value > 0 else None
