"""Past one machine: ``aita batch run --ray`` and ``LLMTask``s over a Ray Dataset, under one
provider limit for the whole cluster.

A provider's limit belongs to the API key. Ray's own LLM batch path paces each actor apart (n
actors x qps), so a cluster sends n times too much; here every executor on every node takes its
slots from one schedule:

- ``AITA_REDIS_URL`` set: the Redis limiter (``RedisRateLimiter``), because it is also shared
  with every aita process outside the cluster naming the same limit, outlives the driver, and
  runs on Redis's clock;
- otherwise a limiter actor (``LimiterSchedule``, one per run, on no CPU): every Ray cluster can
  host one, so ``--ray`` needs no other service. One actor call per request start, bounded by
  ``timeout``: about a millisecond on one machine, a few on a LAN, nothing at provider rates.
  An actor lost or slow past the bound logs one warning, and each executor then paces alone
  at its ``share`` of the rate (the rate over the blocks running at once), so the cluster as a
  whole stays at or under the limit; adaptive rate control still answers 429s.

``aita batch run --ray``: the driver reads and checks the files exactly as a local run does
(``BatchFileJob.remaining``), cuts the request lines into blocks of ``block_size`` numbered from
the first line of the file (so a resumed run gives a half-done block the same number), and runs
each block as a Ray task: an executor whose checkpoint journal is named after the job and the
block, in the checkpoint folder the nodes share. Only the driver writes the results file, block
after block in input order, each block once. A worker killed mid-block is retried by Ray
(``max_retries``) and its journal answers what had finished; a driver killed takes its tasks
with it, and the next run skips the lines written and asks the journals for the rest. So every
line is written once and only what had no answer is asked again.

``import ray`` happens only in here, and only when a function needs it: the default install and
``import aita`` never need Ray (``pip install 'aita[ray]'`` adds it).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aita.engine import (
    AdaptiveRate,
    ExecutionMetrics,
    LLMClient,
    LLMTask,
    OpenAICompatibleClient,
    ParallelLLMExecutor,
    RateLimiter,
    RedisRateLimiter,
    TaskResult,
    default_limit_name,
    outcome_of,
)
from aita.errors import AitaError, ConfigError
from aita.workflows.batchfile import (
    BatchFileJob,
    BatchFileSummary,
    RequestLine,
    ResultsFile,
    TaskIds,
    result_line,
    task_of,
)

log = logging.getLogger("aita.ray")

#: request lines per block: a block's journal and its retry after a lost worker cover this many
DEFAULT_BLOCK_SIZE = 100
#: how often Ray runs a block again after its worker died
DEFAULT_TASK_RETRIES = 3
#: seconds an actor call of the limiter may take before the actor counts as lost
LIMITER_TIMEOUT = 2.0


class RayUnavailable(ConfigError):
    """Ray is not installed, or the cluster cannot be reached."""


class BlockFailed(AitaError):
    """A block could not be run (its retries spent); the lines before it are written."""


def import_ray() -> Any:
    """The ``ray`` module, or a ``RayUnavailable`` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "--ray needs Ray: pip install 'aita[ray]' (on the driver and every node)"
        ) from None
    return ray


def connect(address: str | None) -> Any:
    """Join the cluster at ``address`` (``auto``: the one started on this machine; None:
    ``RAY_ADDRESS``); the ``ray`` module, connected. Never starts a cluster of its own."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise RayUnavailable(
            "--ray: no cluster address: give one (host:port, ray://host:10001, or auto for the "
            "cluster started on this machine) or set RAY_ADDRESS"
        )
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise RayUnavailable(
                f"--ray: cannot join the Ray cluster at {address}: {error}"
            ) from None
    return ray


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse an address nothing answers at, within ``timeout``: ``ray.init`` would wait for it
    for minutes. ``auto`` is resolved as Ray resolves it (the cluster started on this
    machine); an address this cannot read is left to Ray."""
    target = address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die
        except ImportError:
            return
        try:
            target = str(canonicalize_bootstrap_address_or_die("auto"))
        except ConnectionError as error:
            raise RayUnavailable(f"--ray auto: {error}") from None
        except Exception:  # a private helper of Ray's: if it changed, leave it to ray.init
            return
    host, _, port = target.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RayUnavailable(f"--ray: no Ray cluster answers at {address} ({reason})") from None


# -- the shared limit -----------------------------------------------------------------------------


class LimiterSchedule:
    """The state of one limit for a whole cluster, run as a Ray actor: ``RateLimiter``'s slots,
    token budget, pauses and rate, reserved one call at a time (an actor runs its calls one by
    one, so no lock). Times are on the actor's clock and never leave it except as delays, so
    nodes with other clocks agree. A raise of the rate within ``raise_hold`` of the last change
    is refused (N executors recovering from one 429 climb as one), as the Redis limiter does."""

    def __init__(
        self,
        rate: float | None,
        *,
        raise_hold: float = AdaptiveRate.RECOVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._wall = wall
        self._raise_hold = raise_hold
        self._next_slot = float("-inf")
        self._tokens_free_at = float("-inf")
        self._paused_until = float("-inf")
        self._changed = float("-inf")

    def reserve(self, tokens: int, token_rate: float) -> tuple[float, float | None, float, float]:
        """The next slot: seconds until it, the rate in force and when it was set, and the
        actor's wall clock now (so a caller can time its slot from when it was reserved, not
        from when the answer reached it: see ``ClusterRateLimiter.acquire``)."""
        now = self._clock()
        slot = max(now, self._next_slot, self._tokens_free_at, self._paused_until)
        self._next_slot = slot + (1.0 / self.rate if self.rate else 0.0)
        if tokens > 0 and token_rate > 0:
            self._tokens_free_at = slot + tokens / token_rate
        return slot - now, self.rate, self._changed, self._wall()

    def ready(self) -> bool:
        return True

    def pause(self, seconds: float) -> None:
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._clock() + min(seconds, 3600.0))
            self._next_slot = max(self._next_slot, self._paused_until)

    def correct(self, seconds: float) -> None:
        """Move the token budget by ``seconds`` (negative: tokens given back)."""
        if self._tokens_free_at > float("-inf"):
            self._tokens_free_at += seconds

    def set_rate(self, rate: float | None) -> tuple[float | None, float]:
        """Take ``rate`` unless it is a raise too soon after the last change; the rate in force
        and when it was set."""
        now = self._clock()
        faster = rate is None if self.rate is not None else False
        if rate is not None and self.rate is not None:
            faster = rate > self.rate
        if not (faster and now - self._changed < self._raise_hold):
            self.rate = rate if rate is None or rate > 0 else None
            self._changed = now
        return self.rate, self._changed


class ClusterRateLimiter(RateLimiter):
    """``RateLimiter`` whose schedule is a ``LimiterSchedule`` actor (see the module). A drop-in:
    ``ParallelLLMExecutor(rate_limiter=...)``, ``AdaptiveRate``."""

    __slots__ = ("_actor", "_local", "_rate_changed", "_share", "_timeout", "_wall", "shared_rate")

    def __init__(
        self,
        actor: Any,
        rate: float | None,
        *,
        tokens_per_minute: float | None = None,
        share: float = 1.0,
        timeout: float = LIMITER_TIMEOUT,
        sleep: Callable[[float], object] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(rate, tokens_per_minute=tokens_per_minute, sleep=sleep)
        self._actor = actor
        self._wall = wall
        self._share = min(1.0, max(share, 1e-6))
        self._timeout = timeout
        self._local = False
        self._rate_changed = float("-inf")
        #: the rate of the whole cluster (``rate`` is this process's own after a fall-back)
        self.shared_rate = rate

    @property
    def shared(self) -> bool:
        """False once the actor was lost and this process paces alone."""
        return not self._local

    def acquire(self, tokens: int = 0) -> float:
        waited = 0.0
        while not self._local:
            token_rate = self._token_rate if tokens else 0.0
            asked = self._wall()
            reply = self._call("reserve", tokens, token_rate)
            if reply is None:
                break
            answered = self._wall()
            delay, rate, changed = float(reply[0]), reply[1], float(reply[2])
            self._adopt(rate, changed)
            # The slot counts from when the actor reserved it, which happened between asking and
            # the answer: its wall clock says when, trusted within that span (a node whose clock
            # is off by more is held to the span). Timing it from the answer's arrival instead
            # would add the call's varying latency to every start, bunching them into 429s.
            reserved = min(max(float(reply[3]), asked), answered)
            left = reserved + delay - answered
            if left <= 0:
                return waited
            with self._lock:
                local_slot = self._clock() + left
            self._sleep(left)
            waited += left
            # A pause this process took while we slept (a 429 it met) moves our slot behind it.
            # Pauses from other processes are not asked after (a second call per request, whose
            # delay would bunch the starts): they are in the schedule for every later slot.
            with self._lock:
                if local_slot >= self._paused_until:
                    return waited
        return waited + super().acquire(tokens)

    def correct(self, tokens: int) -> None:
        if self._token_rate and tokens and not self._local:
            self._call("correct", tokens / self._token_rate)
        super().correct(tokens)

    def pause(self, seconds: float) -> None:
        if seconds > 0 and not self._local:
            self._call("pause", seconds)
        super().pause(seconds)

    def set_rate(self, rate: float | None) -> None:
        """Change the shared rate (a raise too soon after the last change is refused: this
        process then follows the shared rate)."""
        super().set_rate(rate)  # validates
        if self._local:
            return
        reply = self._call("set_rate", rate)
        if reply is not None:
            self._adopt(*reply)

    def _adopt(self, rate: float | None, changed: float) -> None:
        with self._lock:
            if changed < self._rate_changed or self._local:
                return
            self._rate_changed = changed
            self.rate = self.shared_rate = rate
            self._interval = 1.0 / rate if rate else 0.0

    def _call(self, method: str, *args: Any) -> Any:
        """The actor's answer, or None once it is lost (then this process paces alone)."""
        ray = import_ray()
        try:
            return ray.get(getattr(self._actor, method).remote(*args), timeout=self._timeout)
        except (ray.exceptions.RayError, TimeoutError) as error:
            self._fall_back(error)
            return None

    def _fall_back(self, error: BaseException) -> None:
        with self._lock:
            if self._local:
                return
            self._local = True
            own = self.shared_rate * self._share if self.shared_rate else None
            self.rate = own
            self._interval = 1.0 / own if own else 0.0
        log.warning(
            "lost the cluster's rate limiter (%s): this process now paces alone at %s requests/s",
            type(error).__name__,
            f"{own:.3g}" if own else "unlimited",
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rate={self.rate}, shared={self.shared})"


@dataclass(frozen=True)
class SharedLimit:
    """One provider limit for every executor of a run, wherever it runs; picklable, so it goes
    to Ray tasks and actors as an argument. Make it with ``shared_limit``."""

    rate: float | None
    tokens_per_minute: float | None = None
    #: the Redis of ``AITA_REDIS_URL`` (None: the limiter actor)
    redis_url: str | None = field(default=None, repr=False)
    limit_name: str | None = None
    actor: Any = field(default=None, repr=False)
    #: each holder's part of the rate if the actor is lost (1 / the holders running at once)
    share: float = 1.0

    @property
    def kind(self) -> str:
        return "redis" if self.redis_url else "actor" if self.actor is not None else "local"

    def limiter(self, client: LLMClient) -> RateLimiter:
        """A limiter of this process taking its slots from the shared schedule."""
        if self.redis_url:
            return RedisRateLimiter(
                self.rate,
                redis_url=self.redis_url,
                name=self.limit_name or default_limit_name(client),
                tokens_per_minute=self.tokens_per_minute,
            )
        if self.actor is not None:
            return ClusterRateLimiter(
                self.actor, self.rate, tokens_per_minute=self.tokens_per_minute, share=self.share
            )
        return RateLimiter(self.rate, tokens_per_minute=self.tokens_per_minute)


def shared_limit(
    rate: float | None,
    *,
    tokens_per_minute: float | None = None,
    redis_url: str | None = None,
    limit_name: str | None = None,
    holders: int = 1,
) -> SharedLimit:
    """The limit of one run on the connected cluster: through Redis when ``redis_url`` is given,
    otherwise a new limiter actor (``ray.init`` first). ``holders`` is how many executors run at
    once (their share of the rate, should the actor be lost)."""
    if redis_url:
        return SharedLimit(rate, tokens_per_minute, redis_url, limit_name)
    ray = import_ray()
    actor_class = ray.remote(num_cpus=0, max_restarts=0)(LimiterSchedule)
    actor = actor_class.remote(rate)
    try:
        ray.get(actor.ready.remote(), timeout=60)  # started, or fail here rather than later
    except (ray.exceptions.RayError, TimeoutError) as error:
        raise RayUnavailable(
            f"--ray: the cluster did not start the rate limiter's actor ({type(error).__name__})"
        ) from None
    return SharedLimit(rate, tokens_per_minute, None, limit_name, actor, 1.0 / max(1, holders))


# -- what goes to the workers ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSpec:
    """How a worker opens the provider's client: what ``create_openrouter_client`` takes. The
    key travels inside Ray's task arguments (in the cluster's memory, never in aita's files);
    ``repr`` leaves it out."""

    base_url: str
    model: str
    api_key: str = field(repr=False)
    timeout: float = 120.0
    max_answer_bytes: int | None = None

    @classmethod
    def from_config(cls, model: str | None = None) -> ClientSpec:
        from aita.config import get_config

        llm = get_config().llm
        if llm.api_key is None:
            raise ConfigError("no API key: set OPENROUTER_API_KEY in the environment or .env")
        return cls(
            llm.base_url,
            model or llm.model,
            llm.api_key.get_secret_value(),
            llm.request_timeout,
            llm.max_answer_bytes,
        )

    def __call__(self) -> OpenAICompatibleClient:
        return OpenAICompatibleClient(
            api_key=self.api_key,
            model=self.model,
            base_url=self.base_url,
            timeout=self.timeout,
            max_answer_bytes=self.max_answer_bytes,
        )


@dataclass(frozen=True)
class ExecutorPlan:
    """The settings of every block's executor, resolved once on the driver (a worker's own
    environment and config do not decide them)."""

    max_workers: int
    max_retries: int
    checkpoint_dir: str
    checkpoint_interval: int
    enable_checkpointing: bool
    outage_budget: float
    spend_ledger: str | None
    cache_path: str | None

    @classmethod
    def of(cls, executor: ParallelLLMExecutor) -> ExecutorPlan:
        s = executor.settings
        return cls(
            max_workers=s.max_workers,
            max_retries=s.max_retries,
            checkpoint_dir=str(Path(s.checkpoint_dir).resolve()),
            checkpoint_interval=s.checkpoint_interval,
            enable_checkpointing=s.enable_checkpointing,
            outage_budget=s.outage_budget,
            spend_ledger=str(Path(s.spend_ledger).expanduser()) if s.spend_ledger else None,
            cache_path=str(Path(s.cache_path).resolve()) if s.cache_path else None,
        )

    def executor(self, client: LLMClient, limit: SharedLimit) -> ParallelLLMExecutor:
        return ParallelLLMExecutor(
            client,
            max_workers=self.max_workers,
            rate_limit=limit.rate,
            tokens_per_minute=limit.tokens_per_minute,
            rate_limiter=limit.limiter(client),
            enable_checkpointing=self.enable_checkpointing,
            checkpoint_interval=self.checkpoint_interval,
            checkpoint_dir=self.checkpoint_dir,
            max_retries=self.max_retries,
            show_progress=False,
            spend_ledger=self.spend_ledger,
            outage_budget=self.outage_budget,
            redis_url=None,  # the limiter above is the shared one
            cache=self.cache_path or False,
        )


@dataclass(frozen=True)
class Block:
    """Request lines ``first``.. of the job (counted from the file's first request, so a resumed
    run gives a half-done block the same number and journal)."""

    number: int
    first: int
    lines: list[RequestLine]
    checkpoint_name: str


@dataclass(frozen=True)
class LineDone:
    """One answered line as the driver needs it: its result line, ready to append."""

    data: bytes
    outcome: str
    failed: bool
    error: str | None = None
    error_type: str | None = None


@dataclass(frozen=True)
class BlockDone:
    lines: list[LineDone]
    metrics: ExecutionMetrics


def run_block(
    block: Block, source: str, client: Callable[[], LLMClient], plan: ExecutorPlan,
    limit: SharedLimit,
) -> BlockDone:  # fmt: skip
    """One block on a worker: its lines through an executor under the shared limit, answered
    from the block's journal where an earlier attempt finished them. Writes no results: the
    driver does."""
    llm = client()
    try:
        executor = plan.executor(llm, limit)
        ids = TaskIds(remember=None)
        tasks = [task_of(line, ids.of(line), Path(source)) for line in block.lines]
        batch = executor.execute_batch(tasks, checkpoint_name=block.checkpoint_name)
    finally:
        close = getattr(llm, "close", None)
        if callable(close):
            close()
    done = [
        LineDone(
            result_line(result, line.custom_id, simulated=False),
            outcome_of(result),
            not result.success,
            result.error,
            result.error_type,
        )
        for line, result in zip(block.lines, batch.task_results, strict=True)
    ]
    return BlockDone(done, batch.metrics)


def blocks_of(
    lines: Iterable[RequestLine], start: int, size: int, checkpoint_name: str
) -> Iterator[Block]:
    """``lines`` (request ``start`` of the job onwards) in blocks of ``size`` aligned on the
    job's first request."""
    current: list[RequestLine] = []
    number = start // size
    first = start
    for index, line in enumerate(lines, start=start):
        if index // size != number and current:
            yield Block(number, first, current, f"{checkpoint_name}-block{number:06d}")
            current, number, first = [], index // size, index
        current.append(line)
    if current:
        yield Block(number, first, current, f"{checkpoint_name}-block{number:06d}")


# -- the driver -----------------------------------------------------------------------------------


def cluster_cpus() -> int:
    """The CPUs of the connected cluster: how many blocks run at once (one CPU each)."""
    return max(1, int(import_ray().cluster_resources().get("CPU", 1)))


def default_in_flight() -> int:
    """Blocks submitted at once: four per CPU, so while the block at the head of the results
    is retried the cluster runs the next ones rather than idling."""
    return 4 * cluster_cpus()


def run_batch_on_ray(
    job: BatchFileJob,
    client: ClientSpec,
    plan: ExecutorPlan,
    limit: SharedLimit,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    in_flight: int | None = None,
    task_retries: int = DEFAULT_TASK_RETRIES,
    on_block: Callable[[int], object] = lambda lines: None,
) -> BatchFileSummary:
    """``job`` on the connected cluster (see the module); ``in_flight`` blocks at most at once
    (default: ``default_in_flight``). ``on_block`` hears
    how many lines each block wrote. Raises ``BlockFailed`` when a block's retries are spent:
    the lines before it are written, and the next run continues there."""
    ray = import_ray()
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    in_flight = in_flight or default_in_flight()
    remote = ray.remote(run_block).options(max_retries=task_retries, retry_exceptions=False)
    started = time.perf_counter()
    summary = job.summary
    metrics: list[ExecutionMetrics] = []
    with ResultsFile(job.results) as results:
        remaining = job.remaining(results, client.model)  # checked before any work starts
        blocks = blocks_of(remaining, summary.earlier, block_size, job.checkpoint_name)
        pending: deque[tuple[Block, Any]] = deque()
        source = str(job.requests)
        try:
            while True:
                while len(pending) < in_flight:
                    block = next(blocks, None)
                    if block is None:
                        break
                    pending.append((block, remote.remote(block, source, client, plan, limit)))
                if not pending:
                    break
                block, ref = pending.popleft()
                try:
                    done: BlockDone = ray.get(ref)
                except ray.exceptions.RayError as error:
                    raise BlockFailed(
                        f"{job.requests}: the block of request lines {block.first + 1}-"
                        f"{block.first + len(block.lines)} failed on the cluster "
                        f"({_reason(error)}); the lines before it are in {job.results}: "
                        "run the same command again to continue"
                    ) from None
                for line, answer in zip(block.lines, done.lines, strict=True):
                    _record(job, results, line, answer)
                metrics.append(done.metrics)
                on_block(len(done.lines))
        finally:
            for _, ref in pending:
                ray.cancel(ref, force=True)
            summary.metrics = merged(metrics, time.perf_counter() - started)
    return summary


def _reason(error: BaseException) -> str:
    """What went wrong on the cluster, in one short line: the block's own exception when it
    raised one (aita's messages hold no key), else Ray's kind of failure."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        first = str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ""
        return f"{type(cause).__name__}: {first}" if first else type(cause).__name__
    return type(error).__name__


def _record(job: BatchFileJob, results: ResultsFile, line: RequestLine, done: LineDone) -> None:
    results.append(done.data)
    summary = job.summary
    summary.written += 1
    summary.outcomes[done.outcome] += 1  # type: ignore[index]
    if done.failed:
        summary.failed += 1
        if len(summary.failures) < job.KEEP_FAILURES:
            failure = TaskResult(
                line.custom_id or "", False, error=done.error, error_type=done.error_type
            )
            summary.failures.append((line, failure))


#: metrics that are not sums over blocks
_NOT_SUMMED = frozenset(
    {"wall_time", "throughput", "avg_task_time", "min_task_time", "max_task_time",
     "p50_latency", "p95_latency"}
)  # fmt: skip


def merged(parts: list[ExecutionMetrics], wall_time: float) -> ExecutionMetrics:
    """The blocks' metrics as one run's: counts, tokens and cost added; the driver's time."""
    total = ExecutionMetrics()
    for part in parts:
        for f in fields(ExecutionMetrics):
            value = getattr(part, f.name)
            if f.name in _NOT_SUMMED:
                continue
            if isinstance(value, dict):
                into = getattr(total, f.name)
                for key, amount in value.items():
                    into[key] = into.get(key, 0.0) + amount
            elif isinstance(value, int | float):
                setattr(total, f.name, getattr(total, f.name) + value)
    total.wall_time = wall_time
    total.throughput = total.completed_tasks / wall_time if wall_time > 0 else 0.0
    if parts:
        total.max_task_time = max(p.max_task_time for p in parts)
        total.p95_latency = max(p.p95_latency for p in parts)
    return total


# -- Ray Data -------------------------------------------------------------------------------------


class LLMTaskMapper:
    """A ``Dataset.map_batches`` callable class: each row becomes an ``LLMTask``
    (``make_task(row)``), a batch runs through one executor under the run's ``SharedLimit``, and
    the batch comes back with ``answer`` (the answer's text), ``result`` (what the task's
    ``parse_response`` made of it, as text) and ``error`` (None when it succeeded) added::

        ray.init(address="auto")
        limit = shared_limit(20, holders=4)            # one limit for the 4 mappers below
        ds = ray.data.read_json("questions.jsonl")
        ds = ds.map_batches(
            LLMTaskMapper,
            fn_constructor_kwargs={"make_task": ask, "client": make_client, "limit": limit},
            concurrency=4, batch_size=32,
        )

    ``make_task`` and ``client`` (a callable returning an ``LLMClient``) must be picklable:
    module-level functions, or a ``ClientSpec``. Rows that failed keep their place, with the
    error; answers already asked come from the response cache when ``cache`` names one that
    every node reaches (``ExecutorPlan``'s other settings: ``max_workers``, ``max_retries``).
    """

    def __init__(
        self,
        make_task: Callable[[dict[str, Any]], LLMTask],
        client: Callable[[], LLMClient],
        limit: SharedLimit,
        *,
        max_workers: int = 8,
        max_retries: int | None = None,
        cache: bool | str | None = False,
    ) -> None:
        self.make_task = make_task
        llm = client()
        self.executor = ParallelLLMExecutor(
            llm,
            max_workers=max_workers,
            rate_limit=limit.rate,
            tokens_per_minute=limit.tokens_per_minute,
            rate_limiter=limit.limiter(llm),
            enable_checkpointing=False,
            max_retries=max_retries,
            show_progress=False,
            redis_url=None,
            cache=cache,
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        size = len(next(iter(batch.values()))) if batch else 0
        rows = [{name: column[i] for name, column in batch.items()} for i in range(size)]
        results = self.executor.execute_batch([self.make_task(row) for row in rows]).task_results
        out = dict(batch)
        out["answer"] = [r.raw_response for r in results]
        out["result"] = [None if r.result is None else str(r.result) for r in results]
        out["error"] = [None if r.success else r.error or "failed" for r in results]
        return out
