"""What each :class:`TaskMaster` method sends and how it reads the answer, shared by the blocking and the
asyncio clients: a method builds its parameters here, makes one call (or a few) through its transport, and
shapes the result here."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import yaml

from .constants import AVAILABLE, BLOCKED, FAILED, FINISHED, MAX_LEASE_SECONDS, MIN_LEASE_SECONDS, PENDING
from .constants import PAUSED, PRI_PRIORITY, RUNNABLE
from .exceptions import ProgrammerError

logger = logging.getLogger("coordinate.job_client")

#: The answer of most methods: (value, message); a message is logged, not raised (as 0.1.5 does).
Pair = Sequence[Any]


def value_of(method: str, answer: Any, level: int = logging.DEBUG) -> Any:
    """The first element of a ``(value, message)`` answer; the message, if any, is logged."""
    if not isinstance(answer, (list, tuple)) or len(answer) != 2:
        return answer
    value, message = answer
    if message:
        logger.log(level, "%s: %s", method, message)
    return value


def validate_work_spec(work_spec: Mapping[str, Any]) -> None:
    """A work spec needs a ``name`` and a numeric ``min_gb`` (0.1.5's check, before anything is sent)."""
    if "name" not in work_spec:
        raise ProgrammerError('work_spec lacks "name"\n' + yaml.safe_dump(dict(work_spec)))
    min_gb = work_spec.get("min_gb")
    if isinstance(min_gb, bool) or not isinstance(min_gb, (int, float)):
        raise ProgrammerError('work_spec["min_gb"] must be a number')


def control_options(paused: bool) -> dict[str, Any]:
    return {"status": PAUSED if paused else RUNNABLE}


def window(limit: Optional[int], start: Optional[Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if limit is not None:
        options["limit"] = limit
    if start is not None:
        options["start"] = start
    return options


def spec_pairs(answer: Any) -> tuple[list[tuple[Any, Any]], Any]:
    specs, next_start = answer
    return [(spec["name"], spec) for spec in specs], next_start


def unit_items(work_unit_key_vals: Union[Mapping[Any, Any], Iterable[Any]]) -> list[Any]:
    """The items of ``add_work_units``: a mapping becomes its (key, data) pairs."""
    if isinstance(work_unit_key_vals, Mapping):
        return [[key, data] for key, data in work_unit_key_vals.items()]
    return [list(item) if isinstance(item, tuple) else item for item in work_unit_key_vals]


def status_summary(counts: Mapping[Any, int]) -> dict[str, int]:
    return {
        "num_available": counts.get(AVAILABLE, 0),
        "num_pending": counts.get(PENDING, 0),
        "num_blocked": counts.get(BLOCKED, 0),
        "num_finished": counts.get(FINISHED, 0),
        "num_failed": counts.get(FAILED, 0),
        "num_tasks": sum(counts.values()),
    }


def prioritize_options(keys: Sequence[Any], priority: Optional[float], adjustment: Optional[float]) -> dict[str, Any]:
    if priority is None and adjustment is None:
        priority = PRI_PRIORITY
    return {"work_unit_keys": list(keys), "priority": priority, "adjustment": adjustment}


def unit_query(
    work_unit_keys: Optional[Sequence[Any]], state: Optional[Any], limit: Optional[int], start: Optional[Any]
) -> dict[str, Any]:
    options = window(limit, start)
    if work_unit_keys is not None:
        options["work_unit_keys"] = list(work_unit_keys)
    if state is not None:
        options["state"] = list(state) if isinstance(state, tuple) else state
    return options


def listing_window(start: int, limit: Optional[int]) -> Optional[int]:
    """``list_work_units`` counts from a position; the daemon's ``start`` is a key, so fetch up to start+limit."""
    return None if limit is None else limit + start


def listing(pairs: Sequence[Any], start: int) -> dict[Any, Any]:
    return {pair[0]: pair[1] for pair in pairs[start:]}


def delete_options(work_unit_keys: Optional[Sequence[Any]], state: Optional[Any], all: bool) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if work_unit_keys is not None:
        options["work_unit_keys"] = list(work_unit_keys)
    if state is not None:
        options["state"] = state
    if all is True:
        options["all"] = True
    return options


def status_keys(work_unit_keys: Union[str, bytes, Sequence[Any]]) -> tuple[list[Any], bool]:
    """The keys to ask for, and whether one key was given (the answer is then that key's status alone)."""
    if isinstance(work_unit_keys, (str, bytes)):
        return [work_unit_keys], True
    return list(work_unit_keys), False


def update_options(lease_time: Optional[float], status: Optional[int], data: Optional[Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if lease_time is not None:
        if lease_time >= MAX_LEASE_SECONDS:
            raise ValueError("lease_time too big %r >= %r" % (lease_time, MAX_LEASE_SECONDS))
        options["lease_time"] = lease_time
    if status is not None:
        options["status"] = status
    if data is not None:
        options["data"] = data
    return options


def get_work_options(
    available_gb: Optional[float],
    lease_time: Optional[float],
    work_spec_names: Optional[Sequence[Any]],
    max_jobs: Optional[int],
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if lease_time is not None:
        if lease_time >= MAX_LEASE_SECONDS:
            raise ValueError("lease_time too big %r >= %r" % (lease_time, MAX_LEASE_SECONDS))
        if lease_time < MIN_LEASE_SECONDS:
            logger.warning("get_work lease_time too small %s < %s", lease_time, MIN_LEASE_SECONDS)
        options["lease_time"] = lease_time
    if work_spec_names is not None:
        options["work_spec_names"] = list(work_spec_names)
    if available_gb is not None:
        if isinstance(available_gb, bool) or not isinstance(available_gb, (int, float)):
            raise ValueError("available_gb must be a number, got %r" % type(available_gb))
        options["available_gb"] = available_gb
    if max_jobs is not None:
        if isinstance(max_jobs, bool) or not isinstance(max_jobs, int):
            raise ValueError("max_jobs must be int, got %r" % type(max_jobs))
        options["max_jobs"] = max_jobs
    return options


def granted(answer: Any, max_jobs: Optional[int]) -> Optional[list[Sequence[Any]]]:
    """The (spec, key, data) triples a ``get_work`` answer grants; None when the single form granted nothing."""
    value = value_of("get_work", answer, logging.INFO)
    if max_jobs is None or max_jobs == 1:
        if value is None or value[0] is None or value[1] is None:
            return None
        return [value]
    return list(value or [])


def child_units(answer: Any) -> dict[Any, list[Mapping[str, Any]]]:
    units = value_of("get_child_work_units", answer, logging.ERROR) or {}
    return {worker: list(parts) for worker, parts in units.items() if parts}


def heartbeat_params(
    worker_id: Any, mode: Any, lifetime: float, environment: Optional[Mapping[str, Any]], parent: Any
) -> list[Any]:
    return [worker_id, mode, lifetime, environment, parent]


def flow_specs(flow: Mapping[str, Any], config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The work specs of ``add_flow``: every mapping with ``min_gb`` is a spec named by its path of keys, with
    ``config`` (overlaid by its own ``config``); chaining must stay inside the flow."""
    specs: dict[str, dict[str, Any]] = {}
    worklist: list[tuple[str, Any]] = list(flow.items())
    while worklist:
        name, value = worklist.pop()
        if not isinstance(value, Mapping):
            raise ProgrammerError("invalid work spec flow definition")
        if "min_gb" in value:
            spec = dict(value)
            spec["name"] = name
            spec["config"] = overlay(config, spec["config"]) if "config" in spec else dict(config)
            specs[name] = spec
        else:
            worklist.extend((name + "." + child, inner) for child, inner in value.items())
    for name, spec in specs.items():
        if "then" in spec and spec["then"] not in specs:
            raise ProgrammerError("work spec %s chained to invalid work spec %s" % (name, spec["then"]))
    return list(specs.values())


def overlay(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`top` over `base`, recursively for nested mappings (yakonfig's ``overlay_config``)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = overlay(merged[key], value)
        else:
            merged[key] = value
    return merged
