"""A real rate-limiting gateway: Debian's nginx with ``limit_req`` in front of a server.

    with NginxGateway(tmp_path, upstream_port=sim.port, rate=20, burst=10) as gateway:
        client = create_openrouter_client(api_key="x", base_url=gateway.base_url)

nginx answers requests over the limit 429 itself, with no rate headers and no ``retry-after``
(``limit_req_status 429``): an enforcer nobody here wrote. It runs in the foreground of its own
process on a free port on 127.0.0.1, with its config, pid and logs in the given folder, and is
stopped by ``stop`` (or the ``with`` block). ``NGINX`` is None where nginx is not installed
(Debian: ``apt-get install nginx-light``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

_CONFIG = """
worker_processes 1;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    limit_req_zone $server_name zone=api:1m rate={rate}r/s;
    limit_req_status 429;
    upstream simulator {{ least_conn; {upstreams} keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        server_name gateway;
        location / {{
            {limit}
            proxy_pass http://simulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NginxGateway:
    """nginx's ``limit_req`` at ``rate`` requests/s (``burst`` excess requests admitted at
    once, ``nodelay``; no ``rate``: no limit) proxying to ``127.0.0.1:upstream_port`` (or to
    the least busy of ``upstream_ports``)."""

    def __init__(
        self,
        folder: Path,
        *,
        upstream_port: int | None = None,
        upstream_ports: list[int] | None = None,
        rate: int | None = None,
        burst: int = 0,
    ) -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        ports = upstream_ports or ([upstream_port] if upstream_port else [])
        if not ports:
            raise ValueError("nginx needs a server to proxy to")
        burst_text = f" burst={burst} nodelay" if burst else ""
        limit = f"limit_req zone=api{burst_text};" if rate else ""
        config = folder / "nginx.conf"
        config.write_text(
            _CONFIG.format(
                folder=folder,
                rate=rate or 1,
                limit=limit,
                upstreams=" ".join(f"server 127.0.0.1:{p};" for p in ports),
                port=self.port,
            )
        )
        self._process = subprocess.Popen(
            [NGINX, "-p", str(folder), "-c", str(config),
             "-g", f"daemon off; pid {folder}/nginx.pid;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._wait_ready()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"nginx exited: {error[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening within 10 s")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()

    def __enter__(self) -> NginxGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
