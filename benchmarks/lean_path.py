"""Scenario h: many calls in flight against a server that costs almost nothing per request.

    python benchmarks/lean_path.py              # 5,000 calls of 1 s, 500 in flight; then 5,000
    python benchmarks/lean_path.py --smoke      # tiny sizes (CI)

A minimal asyncio HTTP server (its own process, on 127.0.0.1) answers every chat completion after
``--latency`` seconds with a fixed body, so the client's own cost is what is measured. Each
runner runs in a fresh process of its own (peak memory is the runner's alone): aita (checkpoints
on), raw aiohttp + orjson (the floor), and the openai SDK's async client over httpx2 and, when
``httpx-aiohttp`` is installed, over aiohttp. Reported per runner:
wall time, of-ideal (ideal / wall: ideal is calls / in-flight x latency), client CPU per call
(process CPU time, which other load on the machine does not inflate the way it does wall time)
and peak RSS. Nothing is asserted: the figures go into the README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BODY = (
    b'{"id":"c","object":"chat.completion","model":"lean/model","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
)
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Lean(asyncio.Protocol):
    """HTTP/1.1 keep-alive: every request (headers and a content-length body) is answered with
    ``RESPONSE`` after the latency, in order."""

    latency = 1.0
    #: requests received, written to ``count_file`` when the server is stopped (SIGTERM)
    requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            _Lean.requests += 1
            if self.latency > 0:
                self.loop.call_later(self.latency, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)


def serve(latency: float) -> None:
    """The server process: prints its port, then serves until SIGTERM, when it prints the
    number of requests it received."""
    _raise_file_limit()
    _Lean.latency = latency

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Lean, "127.0.0.1", 0, backlog=8192)
        print(server.sockets[0].getsockname()[1], flush=True)
        stopped = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stopped.set)
        await stopped.wait()
        server.close()
        print(_Lean.requests, flush=True)

    asyncio.run(main())


# -- runners (each in a process of its own) ----------------------------------------------------


def run_aita(base_url: str, calls: int, in_flight: int) -> int:
    from aita.engine import ParallelLLMExecutor, SimpleLLMTask, create_openrouter_client

    client = create_openrouter_client(api_key="bench", base_url=base_url, timeout=60)
    with tempfile.TemporaryDirectory() as folder:
        executor = ParallelLLMExecutor(
            client, max_workers=in_flight, rate_limit=None, checkpoint_dir=folder,
            enable_checkpointing=True, show_progress=False, spend_ledger=None,
        )  # fmt: skip
        batch = executor.execute_batch(SimpleLLMTask(f"t{i}", f"task {i}") for i in range(calls))
    client.close()
    return sum(r.success and r.result == "ok" for r in batch.task_results)


def run_aiohttp(base_url: str, calls: int, in_flight: int) -> int:
    import aiohttp
    import orjson

    async def main() -> int:
        gate = asyncio.Semaphore(in_flight)
        connector = aiohttp.TCPConnector(limit=in_flight)
        headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

            async def call(i: int) -> bool:
                body = {"model": "m", "messages": [{"role": "user", "content": f"task {i}"}]}
                async with (
                    gate,
                    session.post(
                        f"{base_url}/chat/completions", data=orjson.dumps(body)
                    ) as response,
                ):
                    data = orjson.loads(await response.read())
                return bool(data["choices"][0]["message"]["content"] == "ok")

            return sum(await asyncio.gather(*(call(i) for i in range(calls))))

    return asyncio.run(main())


def run_sdk_async(base_url: str, calls: int, in_flight: int, aiohttp: bool = False) -> int:
    import httpx2
    import openai

    async def main() -> int:
        gate = asyncio.Semaphore(in_flight)
        limits = httpx2.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        http_client = (
            openai.DefaultAioHttpClient(limits=limits)
            if aiohttp
            else openai.DefaultAsyncHttpxClient(limits=limits)
        )
        sdk = openai.AsyncOpenAI(
            api_key="bench", base_url=base_url, max_retries=0, timeout=60, http_client=http_client
        )

        async def call(i: int) -> bool:
            async with gate:
                answer = await sdk.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"task {i}"}]
                )
            return answer.choices[0].message.content == "ok"

        try:
            return sum(await asyncio.gather(*(call(i) for i in range(calls))))
        finally:
            await sdk.close()

    return asyncio.run(main())


RUNNERS: dict[str, Callable[[str, int, int], int]] = {
    "aita": run_aita,
    "aiohttp + orjson (no SDK)": run_aiohttp,
    "openai SDK, async": run_sdk_async,
    "openai SDK, async, aiohttp transport": lambda *a: run_sdk_async(*a, aiohttp=True),
}


#: What each runner imports, paid before the clock starts (start-up is not per-call cost).
IMPORTS = {
    "aita": ["aita.engine"],
    "openai SDK, async": ["openai", "httpx2"],
    "openai SDK, async, aiohttp transport": ["openai", "httpx2", "httpx_aiohttp"],
}


def available(name: str) -> bool:
    """A runner whose packages are installed (the SDK's aiohttp transport is optional:
    ``pip install httpx-aiohttp``)."""
    try:
        for module in IMPORTS.get(name, []):
            __import__(module)
    except ImportError:
        return False
    return True


def child(name: str, base_url: str, calls: int, in_flight: int) -> None:
    _raise_file_limit()
    for module in ["aiohttp", "orjson", *IMPORTS.get(name, [])]:
        __import__(module)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    ok = RUNNERS[name](base_url, calls, in_flight)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(json.dumps({"ok": ok, "wall": wall, "cpu": cpu, "peak": peak_rss()}))


def peak_rss() -> int:
    """This process's peak RSS in bytes (``VmHWM``: ``ru_maxrss`` keeps the parent's peak
    across fork and exec, which would charge every runner the benchmark script's own)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(
    name: str, calls: int, in_flight: int, latency: float, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(latency)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        base_url = f"http://127.0.0.1:{port}/v1"
        done = subprocess.run(
            [sys.executable, __file__, "--child", name, base_url, str(calls), str(in_flight)],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, **(extra_env or {})},
        )  # fmt: skip
    finally:
        server.kill()
        server.wait()
    if done.returncode != 0:
        return {"runner": name, "error": done.stderr.strip().splitlines()[-1:]}
    got = json.loads(done.stdout.strip().splitlines()[-1])
    ideal = calls / in_flight * latency
    return {
        "runner": name,
        "calls": calls,
        "in_flight": in_flight,
        "wall": round(got["wall"], 2),
        "of_ideal": round(ideal / got["wall"], 3) if got["ok"] == calls else None,
        "failed": calls - got["ok"],
        "cpu_ms_per_call": round(1000 * got["cpu"] / calls, 3),
        "peak_rss_mb": round(got["peak"] / 2**20, 1),
    }


def scenario_h(smoke: bool) -> list[dict[str, Any]]:
    """500 in flight with every runner, then 5,000 in flight with aita and raw aiohttp."""
    latency = 0.2 if smoke else 1.0
    calls, wide_calls = (200, 1000) if smoke else (5000, 10000)
    in_flight, wide = (50, 500) if smoke else (500, 5000)
    rows = [measure(name, calls, in_flight, latency) for name in RUNNERS if available(name)]
    rows += [
        measure(name, wide_calls, wide, latency) for name in ("aita", "aiohttp + orjson (no SDK)")
    ]
    return rows


def row_text(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"h) {row['runner']:<28} failed to run: {row['error']}"
    ideal = "-" if row["of_ideal"] is None else f"{row['of_ideal']:.2f}"
    return (
        f"h) {row['calls']:>6} calls, {row['in_flight']:>5} in flight  {row['runner']:<28} "
        f"{row['wall']:>6.2f}s  of ideal {ideal:>5}  CPU {row['cpu_ms_per_call']:.3f} ms/call  "
        f"peak RSS {row['peak_rss_mb']:.0f} MB  failed={row['failed']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    if args.child:
        name, base_url, calls, in_flight = args.child
        child(name, base_url, int(calls), int(in_flight))
        return 0
    rows = []
    for row in scenario_h(args.smoke):
        print(row_text(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
