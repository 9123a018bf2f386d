"""Workers that run work specs' ``run_function`` (coordinate 0.1.5's worker model, for Python 3).

:class:`ForkWorker` is what ``coordinate_worker`` runs: a parent process that keeps ``num_workers`` child
processes busy. Each child takes units one at a time (:class:`LoopWorker`), renews each unit's lease while its
function runs, finishes it when the function returns and fails it — with the Python traceback in its data —
when it raises. The parent heartbeats, replaces children that exit, and kills a child whose unit another
worker now holds (its lease was lost). On SIGTERM the parent stops starting work and asks each child to
finish its current unit; it exits once they have (a second SIGTERM, or SIGINT, kills them at once).

Configuration (the ``coordinate:`` block)::

    coordinate:
      address: "coordinated.example:5932"
      fork_worker:
        num_workers: 4            # default: num_workers_per_core × cores
        num_workers_per_core: 1
        poll_interval: 1          # seconds between looks for work when there was none
        heartbeat_interval: 15    # seconds between heartbeats and checks of the children's units
        child_lifetime: 10        # seconds a child keeps taking units before it is replaced
      lease_time: 300             # seconds of each unit's lease; renewed every third of it
      work_spec_names: [a, b]     # only these specs (default: any)
"""

from __future__ import annotations

import abc
import logging
import os
import signal
import socket
import sys
import threading
import time
import types
from typing import Any, Mapping, Optional, Sequence

from .constants import PENDING
from .exceptions import LostLease, ProgrammerError
from .job_client import TaskMaster, WorkUnit

logger = logging.getLogger(__name__)


def nice_identifier() -> str:
    """A random worker id: 32 hex digits."""
    return os.urandom(16).hex()


def run_worker(worker_class: type["Worker"], *args: Any, **kwargs: Any) -> None:
    """Creates a worker and runs it through register, run and unregister."""
    worker = worker_class(*args, **kwargs)
    try:
        worker.register()
        worker.run()
    finally:
        worker.unregister()


class Worker(abc.ABC):
    """What every worker does: register, heartbeat, unregister."""

    def __init__(self, config: Mapping[str, Any], task_master: Optional[TaskMaster] = None) -> None:
        #: Configuration for the worker: the ``coordinate`` block
        self.config = dict(config)
        #: Client of the daemon
        self.task_master = task_master if task_master is not None else TaskMaster(self.config)
        #: Worker id, set by :meth:`register`
        self.worker_id: Optional[str] = None
        #: Parent worker id
        self.parent: Optional[str] = None
        #: How long a heartbeat keeps the worker alive, in seconds
        self.lifetime: float = 100 * 60

    def environment(self) -> dict[str, Any]:
        """What the worker reports in its heartbeat (:meth:`TaskMaster.get_heartbeat` reads it back)."""
        from . import __version__

        return {
            "worker_id": self.worker_id,
            "parent": self.parent,
            "hostname": socket.gethostname(),
            "fqdn": socket.getfqdn(),
            "version": __version__,
            "python": sys.version.split()[0],
            "pid": os.getpid(),
        }

    def register(self, parent: Optional[str] = None, worker_id: Optional[str] = None) -> str:
        """Records this worker with the daemon under a new id (or `worker_id`) and heartbeats once."""
        if self.worker_id:
            raise ProgrammerError(
                "Worker.register cannot be called again without first calling unregister; it is not idempotent")
        self.parent = parent
        self.worker_id = worker_id or nice_identifier()
        self.task_master.worker_id = self.worker_id
        self.heartbeat()
        return self.worker_id

    def unregister(self) -> None:
        """Removes this worker from the daemon's list of workers."""
        if self.worker_id is not None:
            self.task_master.worker_unregister(self.worker_id)
        self.task_master.worker_id = None
        self.worker_id = None

    def heartbeat(self) -> str:
        """Reports this worker alive for :attr:`lifetime` seconds; returns the mode."""
        mode = self.task_master.get_mode()
        self.task_master.worker_heartbeat(
            self.worker_id, mode, self.lifetime, self.environment(), parent=self.parent)
        return mode

    @abc.abstractmethod
    def run(self) -> Any:
        ...


class LeaseKeeper:
    """Renews a unit's lease every third of it while its function runs, from a thread of its own.

    Before each renewal it asks who holds the unit: a renewal extends whoever holds it, so once another worker
    holds the unit (or nobody does) it stops and marks the unit's :attr:`WorkUnit.lease_lost`.
    """

    def __init__(self, unit: WorkUnit, lease_time: float) -> None:
        self.unit = unit
        self.lease_time = lease_time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coordinate-lease", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _held(self) -> bool:
        taskmaster = self.unit.taskmaster
        assert taskmaster is not None
        status = taskmaster.get_work_unit_status(self.unit.work_spec_name, [self.unit.key])
        state = status[0] if status else None
        if not isinstance(state, dict):
            return False
        return state.get("status") == PENDING and state.get("worker_id") == self.unit.worker_id

    def _run(self) -> None:
        interval = max(self.lease_time / 3.0, 0.2)
        while not self._stop.wait(interval):
            try:
                if not self._held() or not self.unit.update(self.lease_time):
                    logger.warning("lost the lease on %r %r", self.unit.work_spec_name, self.unit.key)
                    self.unit.lease_lost = True
                    return
            except Exception:  # noqa: BLE001 - a failed renewal is retried at the next interval
                logger.warning("renewing the lease on %r failed", self.unit.key, exc_info=True)


class SingleWorker(Worker):
    """Takes one unit (or ``worker_job_fetch`` of them), runs it and reports the outcome."""

    #: :meth:`as_child` exit code: it ran work (maybe unsuccessfully)
    EXIT_SUCCESS = 0
    #: :meth:`as_child` exit code: getting work failed
    EXIT_EXCEPTION = 1
    #: :meth:`as_child` exit code: there was no work
    EXIT_BORED = 2

    def __init__(
        self,
        config: Mapping[str, Any],
        task_master: Optional[TaskMaster] = None,
        work_spec_names: Optional[Sequence[Any]] = None,
        max_jobs: int = 1,
    ) -> None:
        super().__init__(config, task_master)
        names = work_spec_names if work_spec_names is not None else self.config.get("work_spec_names")
        self.work_spec_names = list(names) if names else None
        self.max_jobs = int(self.config.get("worker_job_fetch", max_jobs))
        self.lease_time = float(self.config.get("lease_time", self.task_master.default_lifetime or 300))
        #: Set (by SIGTERM in a child) to stop after the current unit
        self.stopping = False

    def run(self, set_title: bool = False) -> bool:
        return self.run_one(set_title)

    def run_one(self, set_title: bool = False) -> bool:
        """Gets work once and runs it; False when there was none."""
        units = self.task_master.get_work(
            self.worker_id, lease_time=self.lease_time, work_spec_names=self.work_spec_names, max_jobs=self.max_jobs)
        if not units:
            return False
        batch = units if isinstance(units, list) else [units]
        for index, unit in enumerate(batch):
            if self.stopping and index > 0:
                # Leave the rest to other workers at once rather than at the end of their leases.
                unit.update(-1)
                continue
            self._run_unit(unit)
        return True

    def _run_unit(self, unit: WorkUnit) -> None:
        try:
            with LeaseKeeper(unit, self.lease_time):
                unit.run()
        except LostLease:
            logger.warning("lost the lease on %r", unit.key)
        except Exception as exc:  # noqa: BLE001 - any failure of the task fails the unit
            if unit.lease_lost:
                logger.warning("%r failed after its lease was lost; not reported", unit.key)
            else:
                unit.fail(exc)
            return
        if unit.lease_lost:
            logger.warning("%r finished after its lease was lost; not reported", unit.key)
        else:
            unit.finish()

    @classmethod
    def as_child(cls, config: Mapping[str, Any], parent: Optional[str] = None, worker_id: Optional[str] = None) -> None:
        """Runs as a forked child and exits with :attr:`EXIT_SUCCESS`, :attr:`EXIT_BORED` or
        :attr:`EXIT_EXCEPTION`; SIGTERM lets the current unit finish first."""
        code = cls.EXIT_EXCEPTION
        try:
            worker = cls(config)

            def drain(signum: int, frame: Optional[types.FrameType]) -> None:
                worker.stopping = True

            signal.signal(signal.SIGTERM, drain)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            worker.register(parent=parent, worker_id=worker_id)
            try:
                code = cls.EXIT_SUCCESS if worker.run() else cls.EXIT_BORED
            finally:
                worker.unregister()
                worker.task_master.close()
        except BaseException:  # noqa: BLE001 - a child reports every failure through its exit code
            logger.critical("worker child failed", exc_info=True)
        finally:
            logging.shutdown()
            os._exit(code)


class LoopWorker(SingleWorker):
    """Takes units one after another for ``fork_worker.child_lifetime`` seconds (or until SIGTERM)."""

    def run(self, set_title: bool = False) -> bool:
        duration = float(self.config.get("fork_worker", {}).get("child_lifetime", 10))
        deadline = time.monotonic() + duration
        did_work = False
        while time.monotonic() < deadline and not self.stopping:
            if not self.run_one(set_title):
                break
            did_work = True
        return did_work


class ForkWorker(Worker):
    """A parent process keeping ``num_workers`` children busy (see the module's documentation)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        fork_config = dict(self.config.get("fork_worker") or {})
        workers = fork_config.get("num_workers")
        if workers is None:
            workers = int(fork_config.get("num_workers_per_core", 1)) * (os.cpu_count() or 1)
        self.num_workers = max(1, int(workers))
        self.poll_interval = float(fork_config.get("poll_interval", 1))
        self.heartbeat_interval = float(fork_config.get("heartbeat_interval", 15))
        self.children: dict[int, str] = {}
        self.stopping = False
        self.scrammed = False
        self._wake_read, self._wake_write = os.pipe()

    def _signal(self, signum: int, frame: Optional[types.FrameType]) -> None:
        if self.stopping or signum == signal.SIGINT:
            self.scrammed = True
        self.stopping = True
        os.write(self._wake_write, b"x")

    def _spawn(self) -> None:
        child_id = nice_identifier()
        pid = os.fork()
        if pid == 0:
            os.close(self._wake_read)
            os.close(self._wake_write)
            # The child talks to the daemon on a connection of its own.
            self.task_master.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            LoopWorker.as_child(self.config, parent=self.worker_id, worker_id=child_id)
        self.children[pid] = child_id

    def _reap(self) -> bool:
        """Collects exited children; True when one said there was no work (or failed)."""
        bored = False
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                break
            if pid == 0:
                break
            self.children.pop(pid, None)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) != SingleWorker.EXIT_SUCCESS:
                bored = True
        return bored

    def _kill_lost_children(self) -> None:
        """Kills a child whose unit another worker now holds: it must not report that unit."""
        assert self.worker_id is not None
        held = self.task_master.get_child_work_units(self.worker_id)
        by_id = {child_id: pid for pid, child_id in self.children.items()}
        for child_id, units in held.items():
            pid = by_id.get(child_id)
            if pid is None:
                continue
            if any(unit.worker_id is not None and unit.worker_id != child_id for unit in units):
                logger.warning("child %s lost its lease; stopping it", child_id)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _signal_children(self, signum: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def run(self) -> None:
        """Runs until SIGTERM (drain) or SIGINT (stop at once)."""
        logger.info("coordinate worker %s starting %d children", self.worker_id, self.num_workers)
        previous = {sig: signal.signal(sig, self._signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous_child = signal.signal(signal.SIGCHLD, lambda signum, frame: os.write(self._wake_write, b"c"))
        try:
            next_heartbeat = time.monotonic() + self.heartbeat_interval
            idle_until = 0.0
            drained_sent = False
            while True:
                if self._reap():
                    idle_until = time.monotonic() + self.poll_interval
                if self.scrammed:
                    self._signal_children(signal.SIGKILL)
                elif self.stopping and not drained_sent:
                    self._signal_children(signal.SIGTERM)
                    drained_sent = True
                if self.stopping and not self.children:
                    logger.info("coordinate worker %s stopped", self.worker_id)
                    return
                now = time.monotonic()
                if not self.stopping and now >= idle_until:
                    while len(self.children) < self.num_workers:
                        self._spawn()
                if now >= next_heartbeat:
                    next_heartbeat = now + self.heartbeat_interval
                    try:
                        self.heartbeat()
                        self._kill_lost_children()
                    except Exception:  # noqa: BLE001 - the daemon may be briefly away; try again next time
                        logger.warning("heartbeat failed", exc_info=True)
                timeout = max(0.05, min(next_heartbeat, idle_until if idle_until > now else next_heartbeat) - now)
                self._wait(timeout)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGCHLD, previous_child)

    def _wait(self, timeout: float) -> None:
        import select

        try:
            readable, _, _ = select.select([self._wake_read], [], [], timeout)
        except InterruptedError:
            return
        if readable:
            os.read(self._wake_read, 512)
