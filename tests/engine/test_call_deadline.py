"""A call has a total deadline: an answer dripped a byte at a time cannot hold it forever."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from aita.engine import LLMMessage, SimpleLLMTask, create_openrouter_client
from aita.errors import ProviderTimeout
from tests.support.doubles import executor_for

HELLO = [LLMMessage(role="user", content="hello")]


@pytest.fixture
def dripping_server() -> Iterator[tuple[str, list[int]]]:
    """A server on 127.0.0.1 that answers 200 at once, then sends its body one byte every
    0.2 s (each read is quick: only the whole call is slow); yields its base URL and a list
    that grows by one per request."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    stop = threading.Event()
    requests: list[int] = []

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)
                requests.append(1)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
                conn.sendall(b"content-length: 100000\r\n\r\n")
                while not stop.wait(0.2):
                    conn.sendall(b" ")
            except OSError:
                return  # the client gave up and closed the connection

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}/v1", requests
    finally:
        stop.set()
        server.join(5)
        listener.close()


def test_a_dripped_answer_times_out_within_the_deadline(
    dripping_server: tuple[str, list[int]],
) -> None:
    base_url, _ = dripping_server
    client = create_openrouter_client(api_key="local", base_url=base_url, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="no response within 1s"):
        client.complete(HELLO)
    assert time.monotonic() - started < 10  # 1 s and change; never the body's 100,000 s
    client.close()


def test_a_dripped_answer_is_retried_like_any_timeout(
    dripping_server: tuple[str, list[int]],
) -> None:
    base_url, requests = dripping_server
    client = create_openrouter_client(api_key="local", base_url=base_url, timeout=0.5)
    executor = executor_for(client, max_retries=2, enable_checkpointing=False, outage_budget=60)
    result = executor.execute_batch([SimpleLLMTask("t", "hello")]).task_results[0]
    client.close()
    assert not result.success and result.error_type == "ProviderTimeout"
    assert result.retry_count == 2 and len(requests) == 3
