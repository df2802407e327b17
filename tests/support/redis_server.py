"""A real ``redis-server`` on 127.0.0.1 for tests: ephemeral port, no persistence, own folder.

    from tests.support.redis_server import redis_server  # the fixture; tests take it as an argument

Tests that use it are marked ``real_server`` (left out of the default run; ``pytest -m
real_server`` runs them) and are skipped, saying why, where ``redis-server`` is not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """One ``redis-server`` process; ``stop()`` may be called mid-test (Redis lost)."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        assert REDIS_SERVER is not None
        folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.password = password
        self.url = f"redis://127.0.0.1:{self.port}/0"
        auth = ["--requirepass", password] if password else []
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
                *auth,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_up()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, decode_responses=True)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 10
        probe = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
        while True:
            try:
                probe.ping()
                probe.close()
                return
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` for one test, stopped after it."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()
