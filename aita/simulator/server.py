"""An OpenAI-compatible provider simulator: a real HTTP server on 127.0.0.1.

    with ProviderSimulator(SimulatorConfig(rate_limit=20, latency=0.05, error_rate=0.1)) as sim:
        client = create_openrouter_client(api_key="sim", base_url=sim.base_url)

It behaves like a hosted provider where that matters to a client: a request limit answered with
429 plus ``retry-after``/``retry-after-ms`` and ``x-ratelimit-*`` headers (``enforcement``: a
token bucket that lets small bursts through, or a strict window as many gateways enforce "N per
minute": at most ``rate_limit`` in any sliding second, or in each whole second), latency,
injected faults (500s, empty completions, malformed bodies, hangs), image inputs, and JSON-schema
response formats answered with a valid instance. Replies are deterministic: by default
``"[sim] " + <last user text>``, so a test can check that every task got its own answer.

Nagle's algorithm is off on every connection; otherwise small writes meet delayed ACKs and add
~40 ms to each response, which would make every timing measured against the simulator wrong.

One request cannot make it work without bound: a body above ``max_request_bytes`` is answered
413 unread, what a JSON schema asks for is capped (``schema_sample``), and a connection idle for
``idle_timeout`` seconds is closed. For testing clients against broken or hostile providers it
can also send oversized answers (``answer_bytes``, streamed: it never holds them), bodies
without a length (``announce_length``), gzip (``compress``), a usage of its choosing
(``usage``) and any body at all (``body``).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import random
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from aita.engine import SIMULATED_HEADER
from aita.simulator.batches import BATCH_PATHS, BatchService
from aita.simulator.schema_sample import sample_instance

log = logging.getLogger("aita.simulator")

#: Custom reply for a request; None falls back to the default reply.
Responder = Callable[[dict[str, Any]], str | None]

PRICE_PER_MILLION = (0.30, 2.50)  # simulated (prompt, completion) USD per 1M tokens
#: Pieces in which an oversized answer is written (it is never held whole).
_PIECE = 1024 * 1024


@dataclass
class SimulatorConfig:
    """Rates are probabilities per request (0-1); times in seconds."""

    rate_limit: float | None = None
    burst: float = 2.0
    #: how ``rate_limit`` is enforced: ``"bucket"`` (a token bucket holding ``burst``),
    #: ``"sliding"`` (at most ``rate_limit`` requests in any 1 s window) or ``"fixed"`` (at most
    #: ``rate_limit`` in each whole second); refused requests never count
    enforcement: str = "bucket"
    latency: float = 0.0
    latency_jitter: float = 0.0
    error_rate: float = 0.0
    empty_rate: float = 0.0
    malformed_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    api_key: str | None = None
    models: frozenset[str] | None = None
    report_cost: bool = True
    #: answer ``json_schema`` response formats with this status (400, 422, or 500 as llama.cpp's
    #: server does); ``json_object`` carrying a schema is still answered with an instance of it
    refuse_json_schema: int | None = None
    #: wrap JSON answers in a markdown fence, as many models do
    fence_json: bool = False
    #: the window ``x-ratelimit-limit-requests`` counts over, in seconds (60: per minute, as
    #: OpenAI sends it; 1: per second; 86400: per day, as Groq sends its daily limit)
    limit_window: float = 60.0
    #: send this as ``x-ratelimit-limit-requests`` instead (tests: ``"0"``, ``"garbage"``)
    limit_header: str | None = None
    #: a text-only model: a request with images fails as llama.cpp's server fails it
    vision: bool = True
    #: serve at most this many requests at once, the rest waiting their turn (a llama.cpp
    #: server with N slots); None: no limit
    concurrency: int | None = None
    #: say in a header of every answer that it is simulated, so no result of the simulator is
    #: ever taken for a real model's; tests switch it off to stand in for a real provider
    announce: bool = True
    seed: int | None = 0
    responder: Responder | None = None
    #: a request body larger than this is answered 413 without being read
    max_request_bytes: int = 32 * 1024 * 1024
    #: seconds a connection may sit idle (between requests, or mid-request) before it is closed
    idle_timeout: float = 30.0
    #: answer with a completion whose content is this many bytes (0: the usual answer), written
    #: in pieces as it is sent: a provider gone wrong, for testing a client's limits
    answer_bytes: int = 0
    #: send ``content-length``; off, bodies go chunked (as a streaming proxy sends them) and the
    #: client cannot know their size before reading them
    announce_length: bool = True
    #: gzip bodies for clients that accept it
    compress: bool = False
    #: merged into every answer's ``usage`` (tests: ``{"cost": "abc"}``, ``{"cost": -1e9}``)
    usage: dict[str, Any] | None = None
    #: answer 200 with exactly this body (tests: bodies that are JSON but not a completion)
    body: bytes | None = None
    #: refuse every request 429 with ``retry-after`` this many seconds: a spent daily quota
    quota_spent_for: float | None = None


@dataclass
class SimulatorStats:
    """What the server saw; read it after (or during) a run."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    calls_by_prompt: Counter[str] = field(default_factory=Counter)
    ok_by_prompt: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    images_received: int = 0
    #: requests dropped (connection reset) or answered 503 during a simulated outage
    outage_hits: int = 0
    #: seconds each answered completion spent in the server, waiting for a slot included (the
    #: last 100,000)
    seconds_in_server: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    @property
    def rate_limited(self) -> int:
        return self.by_status[429]

    def repeated_calls(self) -> int:
        """Successful answers beyond the first, per prompt: work done twice."""
        return sum(count - 1 for count in self.ok_by_prompt.values() if count > 1)


class _TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, burst)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self, now: float) -> tuple[bool, float, float]:
        """(admitted, seconds until a token, tokens left)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True, 0.0, self.tokens
        return False, (1.0 - self.tokens) / self.rate, self.tokens


class _SlidingWindow:
    """At most ``rate`` admissions in any window of ``window`` seconds (strict: no burst)."""

    def __init__(self, rate: float, window: float = 1.0) -> None:
        self.rate = rate
        self.capacity = max(1, math.floor(rate * window))
        self.window = window
        self.admitted: deque[float] = deque()

    def take(self, now: float) -> tuple[bool, float, float]:
        while self.admitted and self.admitted[0] <= now - self.window:
            self.admitted.popleft()
        if len(self.admitted) < self.capacity:
            self.admitted.append(now)
            return True, 0.0, float(self.capacity - len(self.admitted))
        return False, self.admitted[0] + self.window - now, 0.0


class _FixedWindow:
    """At most ``rate`` admissions in each whole second (counted from the server's start)."""

    def __init__(self, rate: float, window: float = 1.0) -> None:
        self.rate = rate
        self.capacity = max(1, math.floor(rate * window))
        self.window = window
        self.start = time.monotonic()
        self.current = -1
        self.count = 0

    def take(self, now: float) -> tuple[bool, float, float]:
        index = math.floor((now - self.start) / self.window)
        if index != self.current:
            self.current, self.count = index, 0
        if self.count < self.capacity:
            self.count += 1
            return True, 0.0, float(self.capacity - self.count)
        return False, self.start + (index + 1) * self.window - now, 0.0


_Limit = _TokenBucket | _SlidingWindow | _FixedWindow


def _enforcer(config: SimulatorConfig) -> _Limit | None:
    if not config.rate_limit:
        return None
    if config.enforcement == "bucket":
        return _TokenBucket(config.rate_limit, config.burst)
    if config.enforcement == "sliding":
        return _SlidingWindow(config.rate_limit)
    if config.enforcement == "fixed":
        return _FixedWindow(config.rate_limit)
    raise ValueError(f"unknown enforcement {config.enforcement!r} (bucket, sliding or fixed)")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request (a killed or interrupted batch) is normal here."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, OSError)):
            return
        log.exception("simulator: error while serving %s", client_address)


class ProviderSimulator:
    def __init__(self, config: SimulatorConfig | None = None, port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self.stats = SimulatorStats()
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.seed)
        self._stopping = threading.Event()
        self._bucket = _enforcer(self.config)
        self._outage_until = 0.0
        self._refusals: tuple[int, float | None] = (0, None)
        self._outage_kind = "reset"
        self._slots = (
            threading.BoundedSemaphore(self.config.concurrency)
            if self.config.concurrency
            else contextlib.nullcontext()
        )
        #: the Files and Batches API (``aita.simulator.batches``)
        self.batch_api = BatchService(self)
        handler = type(
            "Handler", (_Handler,), {"simulator": self, "timeout": self.config.idle_timeout}
        )
        self._server = _QuietServer(("127.0.0.1", port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ProviderSimulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.005}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start_outage(self, seconds: float, kind: str = "reset") -> None:
        """Be down for ``seconds``: every request's connection is reset (``"reset"``) or
        answered 503 (``"503"``) or 429 (``"429"``, a gateway that refuses everything, asking
        to wait 10 ms)."""
        if kind not in {"reset", "503", "429"}:
            raise ValueError(f"unknown outage kind {kind!r}")
        with self._lock:
            self._outage_kind = kind
            self._outage_until = time.monotonic() + seconds

    def refuse_next(self, count: int = 1, retry_after: float | None = 1.0) -> None:
        """Answer the next ``count`` completions 429 whatever the limit says (an isolated
        refusal, as a gateway shared with others gives one), with ``retry_after`` if not None."""
        with self._lock:
            self._refusals = (count, retry_after)

    def _refused(self) -> float | bool | None:
        """False, or the ``retry-after`` of an injected refusal (None: without one)."""
        with self._lock:
            count, wait = self._refusals
            if count <= 0:
                return False
            self._refusals = (count - 1, wait)
            return wait

    def _outage(self) -> str | None:
        with self._lock:
            if time.monotonic() >= self._outage_until:
                return None
            self.stats.outage_hits += 1
            return self._outage_kind

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = SimulatorStats()

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------------------

    def _admit(self) -> tuple[bool, dict[str, str]]:
        """Rate-limit decision plus the ``x-ratelimit-*`` headers for it."""
        now = time.monotonic()
        with self._lock:
            self.stats.requests += 1
            if self.config.quota_spent_for is not None:
                return False, {"retry-after": f"{self.config.quota_spent_for:g}"}
        injected = self._refused()
        if injected is not False:
            headers = {} if injected is None else {"retry-after-ms": f"{injected * 1000:.0f}"}
            return False, headers
        with self._lock:
            if self._bucket is None:
                return True, {}
            admitted, wait, left = self._bucket.take(now)
        rate, capacity = self._bucket.rate, self._bucket.capacity
        limit = max(1, math.floor(rate * self.config.limit_window))
        headers = {
            "x-ratelimit-limit-requests": self.config.limit_header or str(limit),
            "x-ratelimit-remaining-requests": str(max(0, math.floor(limit - (capacity - left)))),
            "x-ratelimit-reset-requests": f"{(capacity - left) / rate:.3f}s",
        }
        if not admitted:
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        return admitted, headers

    def _roll(self) -> str:
        c = self.config
        with self._lock:
            r = self._rng.random()
        for fault, rate in (
            ("error", c.error_rate),
            ("empty", c.empty_rate),
            ("malformed", c.malformed_rate),
            ("hang", c.hang_rate),
        ):
            if r < rate:
                return fault
            r -= rate
        return "ok"

    def _latency(self) -> float:
        c = self.config
        if c.latency_jitter <= 0:
            return c.latency
        with self._lock:
            return max(0.0, c.latency + self._rng.uniform(-c.latency_jitter, c.latency_jitter))

    def answer(self, request: dict[str, Any]) -> str:
        if self.config.responder is not None:
            custom = self.config.responder(request)
            if custom is not None:
                return custom
        schema = _json_schema_of(request)
        if schema is not None:
            return orjson.dumps(sample_instance(schema)).decode()
        text, images = _last_user_text(request)
        suffix = f" [images: {images}]" if images else ""
        return f"[sim] {text}{suffix}"


class _Handler(BaseHTTPRequestHandler):
    simulator: ProviderSimulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _down(self) -> bool:
        """During a simulated outage: the request answered as the outage's kind says."""
        outage = self.simulator._outage()
        if outage == "reset":  # drop the connection with a TCP reset, as a dead proxy does
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        elif outage == "503":
            self._send(503, _error("service unavailable", "server_error"))
        elif outage == "429":
            self._send(
                429, _error("too many requests", "rate_limit_exceeded"), {"retry-after-ms": "10"}
            )
        return outage is not None

    def do_GET(self) -> None:
        if self._down():
            return
        if self.path.startswith(BATCH_PATHS):
            self.simulator.batch_api.handle(self, "GET", b"")
        elif self.path.rstrip("/") == "/v1/models":
            models = sorted(self.simulator.config.models or {"sim/echo"})
            self._send(
                200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]}
            )
        else:
            self._send(404, _error("not found", "not_found"))

    def do_POST(self) -> None:
        sim = self.simulator
        length = self._request_length()
        if length is None:
            return
        body = self.rfile.read(length)
        if self._down():
            return
        if self.path.startswith(BATCH_PATHS):
            sim.batch_api.handle(self, "POST", body)
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, _error(f"unknown endpoint {self.path}", "not_found"))
            return
        auth = self.headers.get("authorization", "")
        admitted, limit_headers = sim._admit()
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._count(400, None)
            self._send(400, _error("request body is not JSON", "invalid_request_error"))
            return
        prompt, images = _last_user_text(request)
        expected = sim.config.api_key
        if expected is not None and auth != f"Bearer {expected}":
            given = auth.removeprefix("Bearer ")
            # Like some real providers, echo the key that was refused: clients must redact it.
            self._count(401, prompt)
            self._send(401, _error(f"Incorrect API key provided: {given}", "invalid_api_key"))
            return
        model = str(request.get("model", ""))
        if sim.config.models is not None and model not in sim.config.models:
            self._count(404, prompt)
            self._send(404, _error(f"model '{model}' does not exist", "model_not_found"))
            return
        refusal = sim.config.refuse_json_schema
        if (
            refusal is not None
            and (request.get("response_format") or {}).get("type") == "json_schema"
        ):
            # llama.cpp's server: a 500 whose message names the field it cannot take
            self._count(refusal, prompt)
            message = "Input should be 'text' or 'json_object' (body.response_format.type)"
            self._send(refusal, _error(message, "invalid_request_error"))
            return
        if images and not sim.config.vision:
            self._count(500, prompt)
            message = 'can only concatenate str (not "list") to str'
            self._send(500, _error(message, "internal_server_error"))
            return
        if not admitted:
            self._count(429, prompt)
            self._send(
                429, _error("Rate limit exceeded: too many requests", "rate_limit"), limit_headers
            )
            return
        with sim._lock:
            sim.stats.in_flight += 1
            sim.stats.max_in_flight = max(sim.stats.max_in_flight, sim.stats.in_flight)
            sim.stats.images_received += images
        arrived = time.monotonic()
        try:
            with sim._slots:  # wait for a free slot, as a server with few slots does
                self._complete(request, prompt, limit_headers)
        finally:
            with sim._lock:
                sim.stats.in_flight -= 1
                sim.stats.seconds_in_server.append(time.monotonic() - arrived)

    def _body_limit(self) -> int:
        """Uploads of batch files may be as large as the Files API allows; requests no more
        than ``max_request_bytes``."""
        if self.path.rstrip("/") == "/v1/files":
            files = self.simulator.batch_api.simulation.max_file_bytes
            return max(self.simulator.config.max_request_bytes, files)
        return self.simulator.config.max_request_bytes

    def _request_length(self) -> int | None:
        """The body's announced length, or None after refusing the request (and closing the
        connection, since its body is left unread)."""
        declared = self.headers.get("content-length")
        problem = None
        if self.headers.get("transfer-encoding"):
            status, problem = 411, "send the body with a content-length"
        elif declared is not None and not declared.strip().isdigit():
            status, problem = 400, "invalid content-length"
        elif int(declared or 0) > (limit := self._body_limit()):
            status, problem = 413, f"request body larger than {limit} bytes"
        if problem is None:
            return int(declared or 0)
        self.close_connection = True
        self._count(status, None)
        self._send(status, _error(problem, "invalid_request_error"))
        return None

    def _complete(self, request: dict[str, Any], prompt: str, headers: dict[str, str]) -> None:
        sim = self.simulator
        fault = sim._roll()
        if fault == "hang":
            sim._stopping.wait(sim.config.hang_seconds)
            self._count(200, prompt)
            self.close_connection = True
            return
        delay = sim._latency()
        if delay > 0:
            time.sleep(delay)
        if fault == "error":
            self._count(500, prompt)
            self._send(500, _error("simulated internal error", "server_error"), headers)
            return
        if fault == "malformed":
            self._count(200, prompt)
            self._send_raw(200, b'{"id": "chatcmpl-sim", "choices": [{"index": 0, "mess', headers)
            return
        try:
            content = "" if fault == "empty" else sim.answer(request)
        except Exception as error:  # a test's responder failed: tell the client, keep serving
            self._count(500, prompt)
            self._send(500, _error(f"responder failed: {error}", "server_error"), headers)
            return
        if sim.config.fence_json and content.lstrip().startswith(("{", "[")):
            content = f"```json\n{content}\n```"
        self._count(200, prompt, ok=fault == "ok")
        if sim.config.body is not None:
            self._send_raw(200, sim.config.body, headers)
            return
        completion = _completion(request, content, sim.config.report_cost, sim.config.usage)
        if sim.config.answer_bytes:
            self._send_oversized(completion, sim.config.answer_bytes, headers)
            return
        self._send(200, completion, headers)

    def _count(self, status: int, prompt: str | None, ok: bool = False) -> None:
        stats = self.simulator.stats
        with self.simulator._lock:
            stats.by_status[status] += 1
            if prompt is not None:
                stats.calls_by_prompt[prompt] += 1
                if ok:
                    stats.ok_by_prompt[prompt] += 1

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, orjson.dumps(payload), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self._send_pieces(status, [data], len(data), headers)

    def _send_oversized(
        self, completion: dict[str, Any], size: int, headers: dict[str, str]
    ) -> None:
        """``completion`` with its content replaced by ``size`` bytes, written piece by piece."""
        marker = f"@@{uuid.uuid4().hex}@@"  # nothing a request sent can hold it
        completion["choices"][0]["message"]["content"] = marker
        head, tail = orjson.dumps(completion).split(marker.encode())

        def pieces() -> Iterator[bytes]:
            yield head
            for start in range(0, size, _PIECE):
                yield b"x" * min(_PIECE, size - start)
            yield tail

        self._send_pieces(200, pieces(), len(head) + size + len(tail), headers)

    def _send_pieces(
        self,
        status: int,
        pieces: Iterable[bytes],
        length: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Headers, then the body's pieces: with ``content-length`` or chunked, gzipped when
        the simulator compresses and the client accepts it."""
        config = self.simulator.config
        gzip = config.compress and "gzip" in self.headers.get("accept-encoding", "")
        chunked = gzip or not config.announce_length
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            if config.announce:
                self.send_header(SIMULATED_HEADER, "true")
            if gzip:
                self.send_header("content-encoding", "gzip")
            if chunked:
                self.send_header("transfer-encoding", "chunked")
            else:
                self.send_header("content-length", str(length))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if gzip:
                pieces = _gzipped(pieces)
            for piece in pieces:
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True


def _gzipped(pieces: Iterable[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    for piece in pieces:
        yield compressor.compress(piece)
    yield compressor.flush()


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": kind}}


def _last_user_text(request: dict[str, Any]) -> tuple[str, int]:
    """Text of the last user message and how many valid images it carried."""
    for message in reversed(request.get("messages") or []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content, 0
        texts, images = [], 0
        for part in content or []:
            if part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                url = str((part.get("image_url") or {}).get("url", ""))
                images += _valid_image_url(url)
        return "\n".join(texts), images
    return "", 0


def _valid_image_url(url: str) -> int:
    if url.startswith(("http://", "https://")):
        return 1
    if url.startswith("data:image/") and ";base64," in url:
        try:
            base64.b64decode(url.split(";base64,", 1)[1], validate=True)
            return 1
        except ValueError:
            return 0
    return 0


def _json_schema_of(request: dict[str, Any]) -> dict[str, Any] | None:
    """The schema a request asks the answer to follow: ``json_schema``, or ``json_object`` with
    a ``schema`` (as llama.cpp's server takes it)."""
    fmt = request.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else {}
    if fmt.get("type") == "json_object" and isinstance(fmt.get("schema"), dict):
        return dict(fmt["schema"])
    return None


def _completion(
    request: dict[str, Any],
    content: str,
    report_cost: bool,
    usage_override: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A chat completion; an answer longer than ``max_tokens`` (4 characters a token) is cut
    there, with ``finish_reason`` ``length``, as a real model's would be."""
    finish_reason = "stop"
    cap = request.get("max_tokens") or request.get("max_completion_tokens")
    if isinstance(cap, int) and cap > 0 and len(content) > 4 * cap:
        content, finish_reason = content[: 4 * cap], "length"
    prompt_chars = len(orjson.dumps(request.get("messages") or []))
    prompt_tokens = max(1, prompt_chars // 4)
    completion_tokens = max(1, len(content) // 4) if content else 0
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if report_cost:
        usage["cost"] = (
            prompt_tokens * PRICE_PER_MILLION[0] + completion_tokens * PRICE_PER_MILLION[1]
        ) / 1e6
    usage.update(usage_override or {})
    return {
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or "sim/echo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
    }
