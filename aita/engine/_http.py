"""The chat-completions call over aiohttp: many calls in flight on one event loop.

A thread per call in flight costs memory and CPU that an event loop does not (the measurements
are in the README's "Lean call path"). So the built-in client posts over aiohttp: one
``ClientSession`` per event loop, at most ``connections`` connections. Synchronous callers go
through one background loop per client (``LoopThread``), so there is one HTTP path whichever
way a call comes.

Every call has a total deadline (``timeout``): a server that drips its answer a byte at a time
cannot hold a call for longer. A body (answer or error) is read only up to a limit, gzip decoded
here within it (``BodyCap``), so a huge or compressed answer is never held whole.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
import zlib
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp

from aita.errors import ProviderTimeout, ProviderUnreachable

T = TypeVar("T")
log = logging.getLogger("aita.client")

#: Open files kept free beside the connections (the journal, results, cache, logs).
FILES_SPARE = 64


class BodyTooLarge(Exception):
    """A body past the limit; raised while it is read."""


class BodyCap:
    """Counts a body's bytes as they come (after gzip, decoded here) and stops past ``limit``."""

    __slots__ = ("_gzip", "_limit", "_size", "_what")

    def __init__(self, limit: int, what: str, gzip: bool) -> None:
        self._limit = limit
        self._what = what
        self._size = 0
        self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None

    def feed(self, raw: bytes) -> bytes:
        """The decoded bytes of ``raw``; ``BodyTooLarge`` once past the limit, ``ValueError``
        for a corrupt gzip stream."""
        chunk = raw
        if self._gzip is not None:
            try:
                chunk = self._gzip.decompress(raw, self._limit + 1 - self._size)
            except zlib.error as error:
                raise ValueError(f"corrupt gzip body ({error})") from None
        self._size += len(chunk)
        if self._size > self._limit:
            raise self.too_large()
        return chunk

    def finish(self) -> bytes:
        """What gzip still holds at the end of the body."""
        if self._gzip is None:
            return b""
        rest = self._gzip.flush(self._limit + 1 - self._size)
        if self._size + len(rest) > self._limit:
            raise self.too_large()
        return rest

    def too_large(self) -> BodyTooLarge:
        return BodyTooLarge(
            f"{self._what} of more than the limit of {self._limit:,} bytes "
            "(AITA_MAX_ANSWER_BYTES); read no further"
        )


def open_body(status: int, headers: Any, limit: int) -> BodyCap:
    """The cap for a response's body, refusing at once a body announced larger than ``limit``
    (``BodyTooLarge``) or encoded in a way that was not asked for (``ValueError``)."""
    what = f"an answer (HTTP {status})"
    announced = headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise BodyTooLarge(
            f"{what} of {int(announced):,} bytes, more than the limit of {limit:,} bytes "
            "(AITA_MAX_ANSWER_BYTES); not read"
        )
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise ValueError(f"{what} encoded as {encoding[:40]!r}, which was not asked for")
    return BodyCap(limit, what, gzip=encoding != "identity")


class ChatHTTP:
    """POSTs to ``{base_url}/chat/completions``; one session per event loop.

    ``post`` returns (status, headers with lower-case names, body) for any HTTP answer, and
    raises ``ProviderTimeout`` past the deadline, ``ProviderUnreachable`` when no answer came
    (the message says where, via ``shown_url``; the caller redacts it), ``BodyTooLarge`` and
    ``ValueError`` for a body it will not read.
    """

    def __init__(
        self,
        base_url: str,
        *,
        shown_url: str,
        headers: dict[str, str],
        timeout: float,
        max_body: int,
    ) -> None:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        path = parts.path.rstrip("/") + "/chat/completions"
        self.url = urlunsplit((parts.scheme, netloc, path, parts.query, ""))
        self.shown_url = shown_url
        self.timeout = timeout
        self.max_body = max_body
        self.headers = dict(headers)
        if parts.username:  # credentials in the URL go as basic auth, as httpx sends them
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        # HTTPS_PROXY / NO_PROXY, as httpx (the SDK's transport) reads them; looked up once, not
        # per call (aiohttp's trust_env does it per call, doubling the CPU of a call)
        self._proxy = _proxy_for(self.url)
        #: most connections a session opens (the executor sets it to its calls in flight)
        self.connections = 100
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._lock = threading.Lock()

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.connections, limit_per_host=0, ttl_dns_cache=300
            )
            session = aiohttp.ClientSession(
                connector=connector,
                headers=self.headers,
                auto_decompress=False,  # decoded in BodyCap, within the limit
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                skip_auto_headers=("User-Agent",) if "User-Agent" in self.headers else (),
            )
            with self._lock:
                self._sessions[loop] = session
        return session

    async def close_loop_session(self) -> None:
        """Close this loop's session (the executor's driver, as its loop ends)."""
        with self._lock:
            session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    async def post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            async with self._session().post(self.url, data=body, proxy=self._proxy) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                cap = open_body(response.status, headers, self.max_body)
                chunks = [cap.feed(raw) async for raw in response.content.iter_any()]
                chunks.append(cap.finish())
                return response.status, headers, b"".join(chunks)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise ProviderTimeout(
                f"no response within {self.timeout:g}s from {self.shown_url}",
                url=self.shown_url,
                seconds=self.timeout,
            ) from None
        except aiohttp.ClientError as error:
            raise ProviderUnreachable(f"cannot reach {self.shown_url}: {_cause(error)}") from None

    def close(self) -> None:
        """Close the sessions of loops that are not running (the background loop's is closed
        by ``LoopThread.close``)."""
        with self._lock:
            sessions, self._sessions = self._sessions, {}
        for loop, session in sessions.items():
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(session.close())


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``), unless
    ``NO_PROXY`` exempts its host."""
    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if not proxy or proxy_bypass(parts.hostname or ""):
        return None
    return str(proxy)


def connections_for(wanted: int) -> int:
    """How many connections this process may open for ``wanted`` calls in flight: the open-file
    limit is raised (up to the hard limit) to make room, and what room there is caps the calls,
    so thousands of calls never fail on ``Too many open files``."""
    try:
        import resource
    except ImportError:  # pragma: no cover (Windows: no such limit to raise)
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FILES_SPARE
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    room = max(1, soft - FILES_SPARE)
    log.warning(
        "%d calls in flight need %d open files; this process may open %d: %d calls in flight "
        "(raise it with ulimit -n)",
        wanted,
        need,
        soft,
        room,
    )
    return room


def _cause(error: BaseException) -> str:
    """Why a connection failed, in the OS's words (``[Errno 111] Connection refused``)."""
    cause = error.__cause__ or error
    if isinstance(cause, OSError) and cause.errno:
        return f"[Errno {cause.errno}] {os.strerror(cause.errno)}"
    return str(cause)


class LoopThread:
    """One event loop on a daemon thread, started on first use: synchronous callers' calls
    run there, multiplexed like the executor's."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro``'s result, run on the background loop; this thread waits for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._started()).result()

    def close(self, http: ChatHTTP) -> None:
        """Close ``http``'s session on this loop and stop the loop."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:  # let go of by the loop's own thread
            loop.call_soon(loop.stop)
            return
        try:
            asyncio.run_coroutine_threadsafe(http.close_loop_session(), loop).result(5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            if not thread.is_alive():
                loop.close()
