"""``aita batch run`` and ``aita batch cancel``: a JSONL file of requests through a model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aita.cli._options import client_of, options_of
from aita.cli._parsers import add_command, add_verbosity, run_options
from aita.cli._summary import EXIT_FAILED, EXIT_OK, cost_text, info
from aita.cli._types import positive_float, positive_int
from aita.engine import (
    BATCH_DISCOUNT,
    AitaError,
    OpenAICompatibleClient,
    ParallelLLMExecutor,
    ProviderError,
    cancel_batch_api,
)
from aita.pipelines.execution import Declined, RunOptions
from aita.provider import announces_simulation
from aita.terminal import confirm, printable
from aita.workflows.batchfile import BatchFileJob, BatchFileSummary, Shard, checkpoint_name_for


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = add_command(
        commands,
        "batch",
        help="a JSONL file of requests through a model (OpenAI Batch API formats)",
        description="Requests in OpenAI's Batch API input format in, its output format out.",
        examples=[
            "aita batch run requests.jsonl -o results.jsonl --dry-run",
            "aita batch cancel -o results.jsonl",
        ],
    )
    actions = batch.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = add_command(
        actions,
        "run",
        parents=[run_options()],
        help="answer every request line; resumes where an earlier run stopped",
        description="One result line per request line, in input order, written as each is "
        "ready. Run it again after a kill or Ctrl-C and it continues where it stopped: no line "
        "twice, none lost; lines that failed are asked again.",
        examples=[
            "aita batch run requests.jsonl -o results.jsonl --dry-run",
            "aita batch run requests.jsonl -o results.jsonl --workers 16 --rate-limit 20",
            "aita batch run requests.jsonl -o results.jsonl --batch-api   # half price",
            "aita batch run requests.jsonl -o part0.jsonl --shard 0/2     # machine A of 2",
            "aita batch run requests.jsonl -o results.jsonl --ray auto    # on a Ray cluster",
        ],
    )
    run.add_argument("requests", type=Path, help="the requests (JSON lines)")
    run.add_argument("-o", "--output", type=Path, required=True, help="the results (JSON lines)")
    run.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="only the requests whose custom_id hashes to part I of N",
    )
    run.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the file as blocks of Ray tasks on the cluster at ADDRESS (default: "
        "RAY_ADDRESS; auto: the cluster started on this machine), one rate limit for all of "
        "them; needs pip install 'aita[ray]'",
    )
    run.add_argument(
        "--block-size",
        type=positive_int,
        metavar="N",
        help="--ray: request lines per Ray task (default: 100)",
    )
    run.add_argument(
        "--batch-api",
        action="store_true",
        help="through the provider's Batch API (Files and Batches endpoints): half the price, "
        "answers within its completion window",
    )
    run.add_argument(
        "--poll-interval",
        type=positive_float,
        metavar="SECONDS",
        help="--batch-api: seconds between looks at the batches (default: 1, slowing to 60)",
    )
    run.add_argument(
        "--max-rounds",
        type=positive_int,
        metavar="N",
        default=5,
        help="--batch-api: how often failed requests are submitted",
    )
    run.set_defaults(handler=_run)

    cancel = add_command(
        actions,
        "cancel",
        help="cancel the provider batches a --batch-api run left running",
        description="Cancel the batches that --batch-api runs writing OUTPUT submitted and did "
        "not collect. What the provider already answered is still collected by the next run.",
        examples=[
            "aita batch cancel -o results.jsonl",
            "aita batch cancel -o part0.jsonl --shard 0/2",
        ],
    )
    cancel.add_argument("-o", "--output", type=Path, required=True, help="the results file")
    cancel.add_argument("--shard", type=_shard, metavar="I/N", help="as given to batch run")
    add_verbosity(cancel, default=argparse.SUPPRESS)
    cancel.set_defaults(handler=_cancel)


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run(args: argparse.Namespace) -> int:
    job = BatchFileJob(
        args.requests,
        args.output,
        shard=args.shard,
        default_model=args.model,
        dry_run=args.dry_run,
        warn=lambda line: print(f"aita: {printable(line)}", file=sys.stderr, flush=True),
    )
    options = options_of(args)
    if args.block_size is not None and args.ray is None:
        raise AitaError("--block-size: only with --ray")
    if args.ray is not None:
        return _run_on_ray(job, args, options)
    with client_of(options) as client:
        if not args.dry_run:  # aita simulate: its answers are simulated, and cost nothing
            job.simulated = announces_simulation(client.base_url)
        _check_spend(job, client, options, args.batch_api)
        try:
            if args.batch_api:
                summary = job.run_batch_api(
                    client, poll_interval=args.poll_interval, max_rounds=args.max_rounds
                )
            else:
                summary = job.run_live(_executor(client, options))
        except ProviderError as error:  # the provider went away while batches were polled
            print(f"aita: {printable(error)}", file=sys.stderr)
            return EXIT_FAILED
    return _report(job, summary, args.batch_api)


def _run_on_ray(job: BatchFileJob, args: argparse.Namespace, options: RunOptions) -> int:
    if args.batch_api or options.dry_run:
        raise AitaError(f"--ray: not with {'--batch-api' if args.batch_api else '--dry-run'}")
    from aita.workflows import ray_batch  # imports Ray: only here

    ray_batch.connect(args.ray or None)
    with client_of(options) as client:
        _check_spend(job, client, options, batch_api=False)
        executor = _executor(client, options)
        settings = executor.settings
        in_flight = ray_batch.default_in_flight()
        limit = ray_batch.shared_limit(
            settings.rate_limit,
            tokens_per_minute=settings.tokens_per_minute,
            redis_url=settings.redis_url,
            limit_name=settings.limit_name,
            holders=ray_batch.cluster_cpus(),
        )
        where = "Redis (AITA_REDIS_URL)" if limit.kind == "redis" else "a limiter actor"
        info(f"on the Ray cluster: one rate limit for every block, through {where}")
        try:
            summary = ray_batch.run_batch_on_ray(
                job,
                ray_batch.ClientSpec.from_config(options.model),
                ray_batch.ExecutorPlan.of(executor),
                limit,
                block_size=args.block_size or ray_batch.DEFAULT_BLOCK_SIZE,
                in_flight=in_flight,
            )
        except ray_batch.BlockFailed as error:
            print(f"aita: {error}", file=sys.stderr)
            return EXIT_FAILED
    return _report(job, summary, batch_api=False)


def _executor(client: OpenAICompatibleClient, options: RunOptions) -> ParallelLLMExecutor:
    settings: dict[str, Any] = {
        "max_workers": options.workers,
        "cache": options.cache,
        "show_progress": options.show_progress,
        **options.rate_settings(),
    }
    return ParallelLLMExecutor(client, **settings)


def _check_spend(
    job: BatchFileJob, client: OpenAICompatibleClient, options: RunOptions, batch_api: bool
) -> None:
    """Before paid calls: how many, and an estimate of their cost; asked on a terminal."""
    if options.dry_run or job.simulated:
        return
    calls, cost = job.estimate(client, BATCH_DISCOUNT if batch_api else 1.0)
    if not calls:
        return
    price = "price unknown" if cost is None else str(cost)
    way = " through the Batch API" if batch_api else ""
    host = urlsplit(client.base_url).hostname or client.base_url
    if not options.quiet or (not options.yes and sys.stdin.isatty()):
        print(f"about to make {calls} call(s){way} at {printable(host)} ({price})", file=sys.stderr)
    if not options.yes and not confirm("continue?", when_not_a_terminal=True):
        raise Declined("cancelled; no calls were made")


def _report(job: BatchFileJob, summary: BatchFileSummary, batch_api: bool) -> int:
    failed = summary.failed
    print(f"{printable(job.results)}: {summary.tally.describe('lines')}")
    m = summary.metrics
    if m is not None:
        if job.simulated:
            cost = "$0 (simulated)"
        else:
            cost = cost_text(m.total_cost, m.unpriced_requests, m.simulated_requests)
            cost += " at the batch price" if batch_api and m.requests else ""
        info(
            f"calls: {m.requests} ({m.total_retries} retries), tokens: {m.total_tokens}, "
            f"cost: {cost}, time: {m.wall_time:.1f}s"
        )
    for line, result in summary.failures:
        if line.problem is not None:
            continue  # said when the line was read
        where = f"{printable(job.requests)} line {line.number} ({printable(line.custom_id)})"
        print(f"failed: {where}: {printable(result.error)}", file=sys.stderr)
    if summary.failed > len(summary.failures):
        print(f"... and {summary.failed - len(summary.failures)} more", file=sys.stderr)
    calls_failed = failed - summary.invalid
    if calls_failed:
        print(
            f"{calls_failed} line(s) failed: their error lines are in {printable(job.results)}; "
            "run the same command again to retry them"
        )
    if summary.invalid:
        print(
            f"{summary.invalid} line(s) are not requests (said above): fix them in "
            f"{printable(job.requests)}, then run the same command again"
        )
    return EXIT_FAILED if failed else EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    with client_of(RunOptions()) as client:
        name = checkpoint_name_for(args.output, args.shard, dry_run=False)
        cancelled = cancel_batch_api(client, name)
    listed = f": {printable(' '.join(cancelled))}" if cancelled else ""
    print(f"cancelled {len(cancelled)} batch(es){listed}")
    return EXIT_OK
