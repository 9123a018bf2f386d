"""``coordinate_worker`` end to end: a real module's run_function, failures with tracebacks, lease loss and a
SIGTERM drain, against a real daemon on every backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator

import pytest

from coordinate import TaskMaster
from coordinate.constants import AVAILABLE, FAILED, FINISHED, PENDING

from conftest import HERE, Daemon


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


class WorkerProcess:
    def __init__(self, daemon: Daemon, directory: str, num_workers: int = 1, lease_time: float = 3) -> None:
        config = os.path.join(directory, "worker.yaml")
        with open(config, "w") as stream:
            stream.write(
                "coordinate:\n"
                "  address: \"%s\"\n"
                "  lease_time: %s\n"
                "  fork_worker:\n"
                "    num_workers: %d\n"
                "    poll_interval: 0.2\n"
                "    heartbeat_interval: 0.5\n"
                "    child_lifetime: 30\n" % (daemon.address, lease_time, num_workers))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + sys.path))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coordinate.run_worker", "--config", config, "--foreground"], env=env)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def directory() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="coordinate-worker-") as path:
        yield path


def status(tm: TaskMaster, spec: str, key: str) -> dict[str, object]:
    result = tm.get_work_unit_status(spec, key)
    assert isinstance(result, dict)
    return result


def test_runs_functions_and_records_failures(daemon: Daemon, tm: TaskMaster, directory: str) -> None:
    tm.set_work_spec({"name": "ok", "min_gb": 0, "module": "py3_tasks", "run_function": "succeed"})
    tm.set_work_spec({"name": "bad", "min_gb": 0, "module": "py3_tasks", "run_function": "explode"})
    tm.add_work_units("ok", {"a": {"n": 1}, "b": {"n": 2}})
    tm.add_work_units("bad", {"x": {}})
    worker = WorkerProcess(daemon, directory, num_workers=2)
    try:
        wait_for(lambda: tm.count_work_units("ok") == {FINISHED: 2} and tm.count_work_units("bad") == {FAILED: 1},
                 what="every unit done")
        [(_, data)] = tm.get_work_units("ok", work_unit_keys=["b"])
        assert data["doubled"] == 4 and data["ran_by"] != os.getpid()
        failed = status(tm, "bad", "x")
        assert failed["status"] == FAILED
        traceback = str(failed["traceback"])
        assert "ValueError: task exploded on x" in traceback and "py3_tasks.py" in traceback
        # The parent and its children registered; children are gone when idle or done.
        assert any(info for info in tm.workers().values())
    finally:
        assert worker.stop() == 0
    assert tm.workers() == {}


def test_lease_loss_is_not_reported(daemon: Daemon, tm: TaskMaster, directory: str) -> None:
    marker = os.path.join(directory, "started")
    tm.set_work_spec({"name": "s", "min_gb": 0, "module": "py3_tasks", "run_function": "slow", "run_params": [3]})
    tm.add_work_units("s", {"u": {"marker": marker}})
    worker = WorkerProcess(daemon, directory, lease_time=1.5)
    try:
        wait_for(lambda: os.path.exists(marker), what="the task to start")
        # Another worker takes the unit over while the task runs.
        assert tm.update_work_unit("s", "u", status=PENDING, lease_time=600, data={"stolen": True}) is True
        tm._rpc("update_work_unit", ["s", "u", {"status": PENDING, "worker_id": "thief", "lease_time": 600}])
        wait_for(lambda: status(tm, "s", "u").get("worker_id") == "thief", what="the unit to change hands")
        time.sleep(4.5)  # past the task's end and several renewals
        held = status(tm, "s", "u")
        assert held["status"] == PENDING and held["worker_id"] == "thief"
        assert tm.get_work_units("s", work_unit_keys=["u"])[0][1] == {"stolen": True}
    finally:
        assert worker.stop() == 0


def test_sigterm_drains(daemon: Daemon, tm: TaskMaster, directory: str) -> None:
    marker = os.path.join(directory, "started")
    tm.set_work_spec({"name": "s", "min_gb": 0, "module": "py3_tasks", "run_function": "slow", "run_params": [2]})
    tm.add_work_units("s", [("a", {"marker": marker}, {"priority": 10}), ("b", {}), ("c", {})])
    worker = WorkerProcess(daemon, directory)
    wait_for(lambda: os.path.exists(marker), what="the task to start")
    started = time.monotonic()
    assert worker.stop() == 0
    # It waited for the running unit, which finished; the others were never started.
    assert time.monotonic() - started > 1.0
    assert status(tm, "s", "a")["status"] == FINISHED
    assert tm.get_work_units("s", work_unit_keys=["a"])[0][1]["slept"] == 2
    assert tm.count_work_units("s") == {FINISHED: 1, AVAILABLE: 2}
    assert tm.workers() == {}


def test_detaches_without_foreground(daemon: Daemon, tm: TaskMaster, directory: str) -> None:
    """As 0.1.5's: without --foreground it runs as a daemon, its pid in --pidfile and its log in --logpath."""
    pidfile, logpath = os.path.join(directory, "worker.pid"), os.path.join(directory, "worker.log")
    tm.set_work_spec({"name": "ok", "min_gb": 0, "module": "py3_tasks", "run_function": "succeed"})
    tm.add_work_units("ok", {"a": {"n": 1}})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE] + sys.path))
    launcher = subprocess.run(
        [sys.executable, "-m", "coordinate.run_worker", "--address", daemon.address, "-n", "1",
         "--pidfile", pidfile, "--logpath", logpath], env=env, timeout=30)
    assert launcher.returncode == 0
    wait_for(lambda: os.path.exists(pidfile) and open(pidfile).read().strip() != "", what="the pid file")
    pid = int(open(pidfile).read())
    try:
        wait_for(lambda: tm.count_work_units("ok") == {FINISHED: 1}, what="the unit to finish")
    finally:
        os.kill(pid, signal.SIGTERM)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, what="the daemonized worker to exit")
    assert not os.path.exists(pidfile)
    log = open(logpath).read()
    assert "starting 1 children" in log and "stopped" in log

