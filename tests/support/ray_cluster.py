"""A local Ray cluster for the ``--ray`` tests: ``ray start --head --block`` on 127.0.0.1, every
port chosen free, its own temp folder; stopped by the test that started it, and only its own
processes (not ``ray stop``, which ends every Ray process of the user on the machine)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_range(width: int) -> int:
    """The first of ``width`` consecutive ports that are free now, below the ephemeral range
    (where outgoing connections take theirs, so a busy machine has no free run of ports)."""
    for _ in range(200):
        start = random.randrange(20000, 32000 - width)
        held: list[socket.socket] = []
        try:
            for port in range(start, start + width):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port range")


@dataclass
class RayCluster:
    address: str
    temp_dir: Path
    process: subprocess.Popen[bytes]

    def processes(self) -> list[int]:
        """The pids of this cluster's processes: its head process's session (it was started in
        a new one, and Ray's processes stay in it)."""
        return [pid for pid, _ in _session(self.process.pid)]

    def workers(self) -> list[int]:
        """The pids of the Ray workers running a block now (titled ``ray::run_block``)."""
        return [
            pid for pid, title in _session(self.process.pid) if title.startswith("ray::run_block")
        ]

    def stop(self) -> None:
        leftovers = self.processes()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        deadline = time.monotonic() + 10
        for pid in leftovers:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _session(sid: int) -> list[tuple[int, str]]:
    """The processes of session ``sid`` (Linux's /proc): pid and command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) != sid:
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        found.append((int(entry.name), title))
    return found


def start_ray_cluster(num_cpus: int = 2, env: dict[str, str] | None = None) -> RayCluster:
    """A head node on 127.0.0.1 (``num_cpus`` CPUs), ready when this returns."""
    ray_bin = Path(sys.executable).with_name("ray")
    # A short path: Ray's unix sockets live in it and their paths are limited to 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="aita-ray-", dir="/tmp"))
    gcs, node_manager, object_manager, client, agent, agent_grpc, env_agent, metrics = free_ports(8)
    workers = free_range(40)
    command = [
        str(ray_bin), "start", "--head", "--block",
        f"--port={gcs}", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
        f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
        f"--metrics-export-port={metrics}",
        f"--min-worker-port={workers}", f"--max-worker-port={workers + 39}",
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environment.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(
        command,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    cluster = RayCluster(f"127.0.0.1:{gcs}", temp_dir, process)
    deadline = time.monotonic() + 120
    while not _ready(cluster):
        if process.poll() is not None or time.monotonic() > deadline:
            error = process.stderr.read().decode()[-2000:] if process.stderr else ""
            cluster.stop()
            raise RuntimeError(f"ray start failed: {error}")
        time.sleep(0.5)
    return cluster


def _ready(cluster: RayCluster) -> bool:
    ray_bin = Path(sys.executable).with_name("ray")
    try:
        check = subprocess.run(
            [str(ray_bin), "status", f"--address={cluster.address}"],
            capture_output=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return False
    return check.returncode == 0 and b"CPU" in check.stdout


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    pytest.importorskip("ray", reason="pip install 'aita[ray]'")
    cluster = start_ray_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
