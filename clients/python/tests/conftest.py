"""A real ``coordinated`` on a loopback ephemeral port, once per storage backend.

Environment: ``COORDINATED`` (the daemon binary; default: the repository's debug build), and
``COORDINATE_TEST_POSTGRES_URL`` for the PostgreSQL backend (with ``CI=true`` it must be set: nothing is
skipped). ``COORDINATE_TEST_BACKENDS`` narrows the backends (comma-separated).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Iterator

import pytest

from coordinate import TaskMaster
from coordinate.exceptions import RpcError

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
COORDINATED = os.environ.get("COORDINATED") or os.path.join(REPOSITORY, ".build", "debug", "coordinated")


def backends() -> list[str]:
    wanted = ["memory", "sqlite", "postgres"]
    narrowed = os.environ.get("COORDINATE_TEST_BACKENDS")
    if narrowed:
        wanted = [name for name in wanted if name in narrowed.split(",")]
    if "postgres" in wanted and not os.environ.get("COORDINATE_TEST_POSTGRES_URL"):
        if os.environ.get("CI") == "true":
            raise RuntimeError("CI=true: COORDINATE_TEST_POSTGRES_URL must be set for the PostgreSQL backend")
        wanted.remove("postgres")
    return wanted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Daemon:
    """``coordinated`` on one backend, in a directory of its own."""

    def __init__(self, storage: str) -> None:
        self.storage = storage
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="coordinate-py3-")
        args = [COORDINATED, "--port", str(self.port), "--http-port", "0", "--storage", storage,
                "--data-dir", self.directory, "-q"]
        if storage == "postgres":
            config = os.path.join(self.directory, "coordinate.yaml")
            with open(config, "w") as stream:
                stream.write('coordinate:\n  server:\n    postgres_url: "%s"\n    postgres_schema: "py3_%s"\n' % (
                    os.environ["COORDINATE_TEST_POSTGRES_URL"], uuid.uuid4().hex[:12]))
            args += ["--config", config]
        if not os.access(COORDINATED, os.X_OK):
            raise RuntimeError("no coordinated at %s (build it, or set COORDINATED)" % COORDINATED)
        self.process = subprocess.Popen(args)
        deadline = time.monotonic() + 60
        while True:
            try:
                with TaskMaster({"address": self.address, "retries": 0}) as probe:
                    probe.list_work_specs()
                return
            except (OSError, RpcError):  # not listening yet, or its storage still initialising
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("coordinated did not become ready on %s" % storage)
                time.sleep(0.05)

    @property
    def address(self) -> str:
        return "127.0.0.1:%d" % self.port

    def config(self) -> dict[str, object]:
        return {"address": self.address, "retries": 2, "base_retry_seconds": 0.1}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(params=backends(), scope="module")
def daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    running = Daemon(request.param)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def tm(daemon: Daemon) -> Iterator[TaskMaster]:
    client = TaskMaster(daemon.config())
    client.clear()
    try:
        yield client
    finally:
        client.close()
