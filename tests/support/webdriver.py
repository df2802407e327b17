"""A real Chromium driven through chromedriver's WebDriver HTTP API, with the standard library.

Enough of the W3C WebDriver protocol for a test to open a page, type into a field, run a
script, reload and take a screenshot; no selenium needed. The driver listens on 127.0.0.1 at a
free port and is stopped (its process ended by pid) when the ``browser`` context ends.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
TAB = "\ue004"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Browser:
    def __init__(self, driver: str, session: str) -> None:
        self.base = f"{driver}/session/{session}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return _request(method, self.base + path, body)

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def reload(self) -> None:
        self._call("POST", "/refresh", {})

    def find(self, css: str) -> str:
        return str(self._call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def type_into(self, css: str, text: str) -> None:
        element = self.find(css)
        self._call("POST", f"/element/{element}/clear", {})
        self._call("POST", f"/element/{element}/value", {"text": text})

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click", {})

    def run(self, script: str, *args: Any) -> Any:
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, check: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError("the page did not get there in time")
            time.sleep(0.1)

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", "/screenshot"))


def _request(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["value"]


@contextmanager
def browser() -> Iterator[Browser]:
    """Headless Chromium in a throwaway profile, driven by chromedriver."""
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    port = _free_port()
    driver = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _request("GET", f"{base}/status").get("ready"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("chromedriver did not start")
            time.sleep(0.1)
        with tempfile.TemporaryDirectory(prefix="aita-chromium-") as profile:
            options = {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--no-first-run",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1400,1000",
                    f"--user-data-dir={profile}",
                ],
            }
            capabilities = {"alwaysMatch": {"goog:chromeOptions": options}}
            session = _request("POST", f"{base}/session", {"capabilities": capabilities})
            chrome = Browser(base, session["sessionId"])
            try:
                yield chrome
            finally:
                _request("DELETE", chrome.base)
    finally:
        driver.terminate()
        try:
            driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()
