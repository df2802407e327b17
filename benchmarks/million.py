"""The headline: a million request lines through ``aita batch run``, killed once and resumed.

    python benchmarks/million.py                 # 1,000,000 lines, 256 in flight
    python benchmarks/million.py --lines 20000   # a quick look

A lean local server (``lean_path.py``'s, answering at once, in a process of its own) answers
every call. ``aita batch run`` is started, killed with SIGKILL halfway through the results, and
run again to the end; beside it, raw aiohttp + orjson (no engine: no journal, no order, no
retries) answers the same file once. Reported: wall time, CPU time and peak RSS of each process
(from ``wait4``), and the calls the server received beyond one per line: the calls repeated
after the kill. Nothing is asserted: the figures go into the README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def count_lines(path: Path) -> int:
    with open(path, "rb") as lines:
        return sum(1 for _ in lines)


def write_requests(path: Path, lines: int) -> None:
    with open(path, "wb") as out:
        for i in range(lines):
            out.write(b'{"custom_id": "r%07d", "prompt": "task %d"}\n' % (i, i))


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, str(HERE / "lean_path.py"), "--serve", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, f"http://127.0.0.1:{int(server.stdout.readline())}/v1"


def stop_server(server: subprocess.Popen[str]) -> int:
    """Stop the server; the requests it received."""
    server.send_signal(signal.SIGTERM)
    assert server.stdout is not None
    count = int(server.stdout.readline())
    server.wait()
    return count


def timed(command: list[str], env: dict[str, str], cwd: Path, kill_at: tuple[Path, int] | None):
    """Run ``command``; SIGKILL it once ``kill_at``'s file has that many lines. Returns (wall,
    cpu, peak RSS bytes, killed)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    killed = False
    if kill_at is not None:
        path, lines = kill_at
        seen, offset = 0, 0
        while process.poll() is None:
            time.sleep(0.2)
            if path.exists():
                with open(path, "rb") as results:
                    results.seek(offset)
                    chunk = results.read()
                seen, offset = seen + chunk.count(b"\n"), offset + len(chunk)
            if seen >= lines:
                process.kill()
                killed = True
                break
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if not killed and status != 0:
        raise SystemExit(f"{command[:4]} exited with {status}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, killed


def run_aita(requests: Path, folder: Path, in_flight: int) -> dict[str, Any]:
    server, base_url = start_server()
    env = {
        **os.environ,
        "OPENROUTER_API_KEY": "local",
        "AITA_BASE_URL": base_url,
        "AITA_MODEL": "lean/model",
        "AITA_RATE_LIMIT_RPS": "none",
        "AITA_SPEND_LEDGER": "none",
        "AITA_SHOW_PROGRESS": "false",
        "AITA_CHECKPOINT_DIR": str(folder / "checkpoints"),
    }
    results = folder / "results.jsonl"
    lines = count_lines(requests)
    command = [sys.executable, "-m", "aita", "batch", "run", str(requests), "-o", str(results)]
    command += ["--workers", str(in_flight), "-q"]
    try:
        first = timed(command, env, folder, (results, lines // 2))
        second = timed(command, env, folder, None)
    finally:
        received = stop_server(server)
    written = count_lines(results)
    return {
        "runner": "aita batch run (killed once, resumed)",
        "lines": lines,
        "written": written,
        "wall": round(first[0] + second[0], 1),
        "cpu": round(first[1] + second[1], 1),
        "peak_rss_mb": round(max(first[2], second[2]) / 2**20),
        "killed_at_line": lines // 2,
        "calls_repeated": received - lines,
    }


def run_raw(requests: Path, folder: Path, in_flight: int) -> dict[str, Any]:
    server, base_url = start_server()
    out = folder / "raw.jsonl"
    command = [sys.executable, __file__, "--raw", base_url, str(requests), str(out), str(in_flight)]
    try:
        wall, cpu, peak, _ = timed(command, dict(os.environ), folder, None)
    finally:
        received = stop_server(server)
    lines = count_lines(requests)
    return {
        "runner": "aiohttp + orjson (no engine)",
        "lines": lines,
        "written": count_lines(out),
        "wall": round(wall, 1),
        "cpu": round(cpu, 1),
        "peak_rss_mb": round(peak / 2**20),
        "calls_repeated": received - lines,
    }


def raw_child(base_url: str, requests: Path, out: Path, in_flight: int) -> None:
    """The reference: each line posted, its answer written; ``in_flight`` at once."""
    import aiohttp
    import orjson

    async def main() -> None:
        url = f"{base_url}/chat/completions"
        headers = {"Authorization": "Bearer local", "Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=in_flight)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            source, sink = open(requests, "rb"), open(out, "wb")  # noqa: SIM115

            async def worker() -> None:
                for raw in source:
                    line = orjson.loads(raw)
                    body = {
                        "model": "lean/model",
                        "messages": [{"role": "user", "content": line["prompt"]}],
                    }
                    async with session.post(url, data=orjson.dumps(body)) as response:
                        answer = orjson.loads(await response.read())
                    result = {"custom_id": line["custom_id"], "response": {"body": answer}}
                    sink.write(orjson.dumps(result) + b"\n")

            await asyncio.gather(*(worker() for _ in range(in_flight)))
            sink.close()
            source.close()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=256, help="calls in flight")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--raw", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw:
        base_url, requests, out, in_flight = args.raw
        raw_child(base_url, Path(requests), Path(out), int(in_flight))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        requests = folder / "requests.jsonl"
        write_requests(requests, args.lines)
        for runner in (run_aita, run_raw):
            work = folder / runner.__name__
            work.mkdir()
            rows.append(runner(requests, work, args.workers))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
