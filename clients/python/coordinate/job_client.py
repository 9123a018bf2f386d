"""The job-queue client: :class:`TaskMaster` and the :class:`WorkUnit` it hands out (coordinate 0.1.5's API).

Every method keeps 0.1.5's name, arguments, return shape and exceptions. Strings: see :mod:`coordinate._wire`.
"""

from __future__ import annotations

import logging
import traceback
from copy import deepcopy
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from . import _calls
from .base_client import CborRpcClient
from .constants import AVAILABLE, BLOCKED, FAILED, FINISHED, IDLE, MAX_LEASE_SECONDS, PENDING, RUN, TERMINATE
from .constants import MIN_LEASE_SECONDS  # noqa: F401  (0.1.5 exported it from here)
from .exceptions import LostLease  # noqa: F401  (0.1.5's workers import it through this module)

logger = logging.getLogger(__name__)


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class LeasedUnit:
    """What a unit leased to a worker carries, for :class:`WorkUnit` and the asyncio client's unit alike."""

    def __init__(
        self,
        taskmaster: Any,
        work_spec_name: Any,
        key: Any,
        data: Any,
        worker_id: Any = None,
        expires: Any = None,
        default_lease_time: Optional[float] = 900,
    ) -> None:
        #: The client this unit came from
        self.taskmaster = taskmaster
        #: Name of the work spec
        self.work_spec_name = work_spec_name
        #: Name of the work unit
        self.key = key
        #: Data provided for the work unit
        self.data = data
        #: Worker currently responsible for the work unit
        self.worker_id = worker_id
        #: Expiration time for the work unit
        self.expires = expires
        #: How long ``update`` extends the lease by default
        self.default_lease_time = default_lease_time if default_lease_time is not None else 900
        #: Set when the daemon says this worker no longer holds the unit (see :mod:`coordinate.workers`)
        self.lease_lost = False
        self._old_data = deepcopy(data)

    def __str__(self) -> str:
        return "work unit {!r} {!r} {!r}".format(self.work_spec_name, self.key, self.data)

    def __repr__(self) -> str:
        return (
            "{0}(work_spec_name={1.work_spec_name}, key={1.key!r}, worker_id={1.worker_id}, expires={1.expires}, "
            "default_lease_time={1.default_lease_time}, data={1.data!r})".format(type(self).__name__, self)
        )

    def _changed_data(self) -> Optional[Any]:
        """The data to send with the next update: only when it changed since it was last sent."""
        return self.data if self.data != self._old_data else None

    def _data_sent(self, data: Optional[Any]) -> None:
        if data is not None:
            self._old_data = deepcopy(self.data)

    def _lease(self, lease_time: Optional[float]) -> float:
        lease = self.default_lease_time if lease_time is None else lease_time
        return min(lease, MAX_LEASE_SECONDS - 1)

    def _record_failure(self, exc: Optional[BaseException]) -> None:
        if exc is not None:
            if not isinstance(self.data, dict):
                self.data = {}
            self.data["traceback"] = format_traceback(exc) or repr(exc)


class WorkUnit(LeasedUnit):
    """One unit of work as a worker holds it: its spec's name, its key and its data.

    Passed to a work spec's ``run_function``, which may change :attr:`data` and call :meth:`update` to report
    progress; the worker calls :meth:`finish` or :meth:`fail` when the function returns or raises.
    """

    taskmaster: Optional["TaskMaster"]

    def __init__(
        self,
        taskmaster: Optional["TaskMaster"],
        work_spec_name: Any,
        key: Any,
        data: Any,
        worker_id: Any = None,
        expires: Any = None,
        default_lease_time: Optional[float] = 900,
    ) -> None:
        super().__init__(taskmaster, work_spec_name, key, data, worker_id, expires, default_lease_time)
        self._spec_cache: Optional[dict[str, Any]] = None

    @property
    def spec(self) -> dict[str, Any]:
        """The work spec (fetched on first use)."""
        if self._spec_cache is None and self.taskmaster is not None:
            self._spec_cache = self.taskmaster.get_work_spec(self.work_spec_name)
        if self._spec_cache is None:
            raise AssertionError(
                "need work spec value for spec={} unit={}".format(self.work_spec_name, self.key))
        return self._spec_cache

    @spec.setter
    def spec(self, value: dict[str, Any]) -> None:
        self._spec_cache = value

    def _do_update(self, **kwargs: Any) -> bool:
        if self.taskmaster is None:
            raise AssertionError("work unit without a TaskMaster")
        data = self._changed_data()
        ok = self.taskmaster.update_work_unit(self.work_spec_name, self.key, data=data, **kwargs)
        self._data_sent(data)
        return bool(ok)

    def update(self, lease_time: Optional[float] = None) -> bool:
        """Checks in with the daemon and extends the lease (by :attr:`default_lease_time` when not given)."""
        return self._do_update(lease_time=self._lease(lease_time))

    def finish(self) -> bool:
        """Marks this unit finished (with its data, if it changed)."""
        return self._do_update(status=FINISHED)

    def fail(self, exc: Optional[BaseException] = None) -> bool:
        """Marks this unit failed; with `exc`, its data's ``traceback`` is that exception's traceback."""
        self._record_failure(exc)
        return self._do_update(status=FAILED)

    def run(self) -> Any:
        """Runs the spec's ``run_function`` on this unit (:func:`coordinate.workunit_run.run`)."""
        from .workunit_run import run as workunit_run

        return workunit_run(self, self.spec)


class TaskMaster(CborRpcClient):
    """Client of the job queue: specs, units, workers.

    ``TaskMaster(config)`` takes the ``coordinate:`` configuration block (see :mod:`coordinate.base_client`),
    for example ``TaskMaster({"address": "coordinated.example:5932"})`` or
    ``TaskMaster(coordinate.config.load_config("config.yaml"))``.
    """

    RUN = RUN
    IDLE = IDLE
    TERMINATE = TERMINATE

    AVAILABLE = AVAILABLE
    BLOCKED = BLOCKED
    PENDING = PENDING
    FINISHED = FINISHED
    FAILED = FAILED

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        self.config = dict(config or {})
        self.default_lifetime: Optional[float] = self.config.get("default_lifetime", 900)
        #: Set by a worker while it is registered (0.1.5 kept it here too).
        self.worker_id: Any = None
        super().__init__(self.config)

    # Work specs

    @classmethod
    def validate_work_spec(cls, work_spec: Mapping[str, Any]) -> None:
        """Raises :class:`~coordinate.exceptions.ProgrammerError` unless `work_spec` has ``name`` and ``min_gb``."""
        _calls.validate_work_spec(work_spec)

    def set_work_spec(self, work_spec: Mapping[str, Any]) -> bool:
        """Adds or replaces a work spec; True on success."""
        self.validate_work_spec(work_spec)
        return bool(_calls.value_of("set_work_spec", self._rpc("set_work_spec", [work_spec])))

    def get_work_spec(self, work_spec_name: Any) -> Optional[dict[str, Any]]:
        """The work spec's dictionary, or None."""
        spec: Optional[dict[str, Any]] = self._rpc("get_work_spec", [work_spec_name])
        return spec

    def pause_work_spec(self, work_spec_name: Any, paused: bool = True) -> None:
        """Pauses (or, with ``paused=False``, resumes) a work spec."""
        self._rpc("control_work_spec", [work_spec_name, _calls.control_options(paused)])

    def list_work_specs(
        self, limit: Optional[int] = None, start: Optional[Any] = None
    ) -> tuple[list[tuple[Any, Any]], Any]:
        """A page of ``(name, spec)`` pairs and the next start (None at the end)."""
        return _calls.spec_pairs(self._rpc("list_work_specs", [_calls.window(limit, start)]))

    def iter_work_specs(self, limit: Optional[int] = None, start: Optional[Any] = None) -> Iterator[dict[str, Any]]:
        """Every work spec dictionary (at most `limit`), page by page."""
        count = 0
        options = _calls.window(limit, start)
        while True:
            specs, next_start = self._rpc("list_work_specs", [options])
            for spec in specs:
                yield spec
                count += 1
                if limit is not None and count >= limit:
                    return
            if not next_start:
                return
            options["start"] = next_start
            if limit is not None:
                options["limit"] = limit - count

    def clear(self) -> int:
        """Deletes every work spec and unit; returns how many units went."""
        count: int = self._rpc("clear", [])
        return count

    def del_work_spec(self, work_spec_name: Any) -> bool:
        return bool(_calls.value_of("del_work_spec", self._rpc("del_work_spec", [work_spec_name])))

    # Work units

    def add_work_units(self, work_spec_name: Any, work_unit_key_vals: Any) -> bool:
        """Adds units: a mapping of key to data, or a list of ``(key, data)`` or ``(key, data, meta)`` items."""
        answer = self._rpc("add_work_units", [work_spec_name, _calls.unit_items(work_unit_key_vals)])
        return bool(_calls.value_of("add_work_units", answer, logging.INFO))

    def count_work_units(self, work_spec_name: Any) -> dict[int, int]:
        """Unit counts by status constant."""
        counts: dict[int, int] = _calls.value_of("count_work_units", self._rpc("count_work_units", [work_spec_name]))
        return counts

    def status(self, work_spec_name: Any) -> dict[str, int]:
        """Counts as ``num_available``, ``num_pending``, ``num_blocked``, ``num_finished``, ``num_failed``,
        ``num_tasks``."""
        return _calls.status_summary(self.count_work_units(work_spec_name) or {})

    def prioritize_work_units(
        self,
        work_spec_name: Any,
        work_unit_keys: Sequence[Any],
        priority: Optional[float] = None,
        adjustment: Optional[float] = None,
    ) -> bool:
        """Sets (or adjusts) the priority of units; with neither, sets ``PRI_PRIORITY``."""
        options = _calls.prioritize_options(work_unit_keys, priority, adjustment)
        return bool(_calls.value_of("prioritize_work_units", self._rpc("prioritize_work_units", [work_spec_name, options])))

    def get_work_units(
        self,
        work_spec_name: Any,
        work_unit_keys: Optional[Sequence[Any]] = None,
        state: Optional[Any] = None,
        limit: Optional[int] = None,
        start: Optional[Any] = None,
    ) -> Any:
        """``(key, data)`` pairs: the given keys, or those in `state` (a status or a list), from key `start`."""
        options = _calls.unit_query(work_unit_keys, state, limit, start)
        return _calls.value_of("get_work_units", self._rpc("get_work_units", [work_spec_name, options]))

    def list_work_units(self, work_spec_name: Any, start: int = 0, limit: Optional[int] = None) -> dict[Any, Any]:
        """Unfinished units (available or pending) as a key → data dictionary."""
        pairs = self.get_work_units(
            work_spec_name, limit=_calls.listing_window(start, limit), state=(AVAILABLE, PENDING))
        return _calls.listing(pairs or [], start)

    def list_finished_work_units(
        self, work_spec_name: Any, start: int = 0, limit: Optional[int] = None
    ) -> dict[Any, Any]:
        pairs = self.get_work_units(work_spec_name, limit=_calls.listing_window(start, limit), state=FINISHED)
        return _calls.listing(pairs or [], start)

    def del_work_units(
        self,
        work_spec_name: Any,
        work_unit_keys: Optional[Sequence[Any]] = None,
        state: Optional[int] = None,
        all: bool = False,
    ) -> int:
        """Deletes units (all, the given keys, or those in `state`); returns how many."""
        options = _calls.delete_options(work_unit_keys, state, all)
        count: int = _calls.value_of("del_work_units", self._rpc("del_work_units", [work_spec_name, options]))
        return count

    def get_work_unit_status(self, work_spec_name: Any, work_unit_keys: Union[str, bytes, Sequence[Any]]) -> Any:
        """Status dictionaries (``status``, ``expiration``, ``worker_id``, ``traceback``) in key order, None for
        a missing unit; one dictionary when one key was given as a string."""
        keys, one = _calls.status_keys(work_unit_keys)
        statuses = _calls.value_of("get_work_unit_status", self._rpc("get_work_unit_status", [work_spec_name, keys]))
        return statuses[0] if one and statuses is not None else statuses

    def update_work_unit(
        self,
        work_spec_name: Any,
        work_unit_key: Any,
        lease_time: Optional[float] = None,
        status: Optional[int] = None,
        data: Optional[Any] = None,
    ) -> bool:
        """Renews a lease, changes a unit's status or data; True when the daemon applied it."""
        options = _calls.update_options(lease_time, status, data)
        answer = self._rpc("update_work_unit", [work_spec_name, work_unit_key, options])
        return bool(_calls.value_of("update_work_unit", answer))

    def get_work(
        self,
        worker_id: Any,
        available_gb: Optional[float] = None,
        lease_time: Optional[float] = None,
        work_spec_names: Optional[Sequence[Any]] = None,
        max_jobs: Optional[int] = 1,
    ) -> Union[None, WorkUnit, list[WorkUnit]]:
        """Leases work: with ``max_jobs`` 1 (the default) one :class:`WorkUnit` or None, else a list."""
        if lease_time is None:
            lease_time = self.default_lifetime
        options = _calls.get_work_options(available_gb, lease_time, work_spec_names, max_jobs)
        triples = _calls.granted(self._rpc("get_work", [worker_id, options]), max_jobs)
        if triples is None:
            return None
        units = [
            WorkUnit(self, spec, key, data, worker_id, default_lease_time=lease_time) for spec, key, data in triples
        ]
        return units[0] if max_jobs is None or max_jobs == 1 else units

    def retry(self, work_spec_name: Any, *work_unit_names: Any) -> bool:
        """Makes units available again, whatever their status; True if all could be."""
        all_ok = True
        for key in work_unit_names:
            if not self.update_work_unit(work_spec_name, key, lease_time=0, status=AVAILABLE):
                logger.warning("failed to update for retry key %r", key)
                all_ok = False
        return all_ok

    def update_bundle(self, work_spec: Mapping[str, Any], work_units: Any, nice: Optional[int] = None) -> None:
        """Sets the work spec and adds its units."""
        if nice is not None:
            logger.warning("coordinated does not understand a work spec's nice value, ignored value=%r", nice)
        self.set_work_spec(work_spec)
        self.add_work_units(work_spec["name"], work_units)

    def add_flow(self, flow: Mapping[str, Any], config: Optional[Mapping[str, Any]] = None) -> None:
        """Adds a tree of related work specs, each named by its path and given `config` (overlaid by its own)."""
        for spec in _calls.flow_specs(flow, config if config is not None else {}):
            self.set_work_spec(spec)

    def set_mode(self, mode: Any) -> None:
        """Does nothing (an early API's leftover, kept for compatibility)."""

    def get_mode(self) -> str:
        """Always ``RUN``."""
        return RUN

    # Workers

    def get_child_work_units(self, worker_id: Any) -> dict[Any, list[WorkUnit]]:
        """The units held by each child of `worker_id`, as :class:`WorkUnit` lists."""
        return {
            child: [
                WorkUnit(
                    self,
                    parts.get("work_spec_name"),
                    parts.get("work_unit_key"),
                    parts.get("work_unit_data"),
                    worker_id=parts.get("worker_id"),
                    expires=parts.get("expires"),
                )
                for parts in units
            ]
            for child, units in _calls.child_units(self._rpc("get_child_work_units", [worker_id])).items()
        }

    def worker_register(
        self,
        worker_id: Any,
        mode: Any = None,
        lifetime: float = 6000,
        environment: Optional[Mapping[str, Any]] = None,
        parent: Any = None,
    ) -> None:
        self.worker_heartbeat(worker_id, mode, lifetime, environment, parent)

    def worker_heartbeat(
        self,
        worker_id: Any,
        mode: Any = None,
        lifetime: float = 6000,
        environment: Optional[Mapping[str, Any]] = None,
        parent: Any = None,
    ) -> None:
        params = _calls.heartbeat_params(worker_id, mode, lifetime, environment, parent)
        _calls.value_of("worker_heartbeat", self._rpc("worker_heartbeat", params), logging.ERROR)

    def worker_unregister(self, worker_id: Any, parent: Any = None) -> None:
        _calls.value_of("worker_unregister", self._rpc("worker_unregister", [worker_id]), logging.ERROR)

    def workers(self, alive: bool = True) -> dict[Any, Any]:
        """Worker id → last reported mode."""
        modes: dict[Any, Any] = _calls.value_of("list_worker_modes", self._rpc("list_worker_modes", []), logging.WARNING)
        return modes

    def get_heartbeat(self, worker_id: Any) -> dict[str, Any]:
        """What a live worker last reported (its environment), or an empty dictionary."""
        info: dict[str, Any] = _calls.value_of("get_worker_info", self._rpc("get_worker_info", [worker_id]), logging.WARNING)
        return info

    def mode_counts(self) -> dict[Any, int]:
        counts: dict[Any, int] = _calls.value_of("mode_counts", self._rpc("mode_counts", []), logging.WARNING)
        return counts

    def get_server_config(self) -> dict[str, Any]:
        """The daemon's effective configuration (secrets redacted)."""
        config: dict[str, Any] = _calls.value_of("get_config", self._rpc("get_config", []), logging.WARNING)
        return config
