"""The asyncio client: :class:`AsyncTaskMaster`, the same methods as :class:`coordinate.TaskMaster` as
coroutines, over the same wire and call code (:mod:`coordinate._wire`, :mod:`coordinate._calls`).

Calls on one :class:`AsyncTaskMaster` take turns on its connection; use several for parallel calls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Mapping, Optional, Sequence, Union

from . import _calls, _wire
from .config import optional_float, server_address
from .constants import AVAILABLE, FAILED, FINISHED, PENDING, RUN
from .exceptions import ProtocolError
from .job_client import LeasedUnit

logger = logging.getLogger(__name__)


class AsyncWorkUnit(LeasedUnit):
    """A leased unit, as :class:`coordinate.WorkUnit` but with coroutine methods."""

    taskmaster: "AsyncTaskMaster"

    async def _do_update(self, **kwargs: Any) -> bool:
        data = self._changed_data()
        ok = await self.taskmaster.update_work_unit(self.work_spec_name, self.key, data=data, **kwargs)
        self._data_sent(data)
        return ok

    async def update(self, lease_time: Optional[float] = None) -> bool:
        return await self._do_update(lease_time=self._lease(lease_time))

    async def finish(self) -> bool:
        return await self._do_update(status=FINISHED)

    async def fail(self, exc: Optional[BaseException] = None) -> bool:
        self._record_failure(exc)
        return await self._do_update(status=FAILED)


class AsyncTaskMaster:
    """Client of the job queue for asyncio programs; configuration as :class:`coordinate.TaskMaster`."""

    def __init__(self, config: Optional[Mapping[str, Any]] = None) -> None:
        self.config = dict(config or {})
        self.default_lifetime: Optional[float] = self.config.get("default_lifetime", 900)
        self._address = server_address(self.config)
        self._retries = int(self.config.get("retries", 5))
        self._base_retry_seconds = float(self.config.get("base_retry_seconds", 0.5))
        self._timeout = optional_float(self.config, "timeout", 60.0)
        self._options = _wire.WireOptions.from_config(self.config)
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._frames = _wire.FrameBuffer()
        self._message_count = 0
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> "AsyncTaskMaster":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        self._frames.clear()
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def _read_item(self, reader: asyncio.StreamReader) -> bytes:
        while (item := self._frames.take()) is None:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("coordinated closed the connection")
            self._frames.feed(chunk)
        return item

    async def _exchange(self, request: bytes) -> bytes:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(*self._address)
        self._writer.write(request)
        await self._writer.drain()
        return await self._read_item(self._reader)

    async def _rpc(self, method_name: str, params: Sequence[Any]) -> Any:
        """Calls ``method_name(*params)``; retries a broken connection as :class:`coordinate.TaskMaster` does."""
        async with self._lock:
            self._message_count += 1
            request_id = self._message_count
            request = _wire.encode_request(request_id, method_name, list(params), self._options)
            delay = self._base_retry_seconds
            attempt = 0
            while True:
                try:
                    item = await asyncio.wait_for(self._exchange(request), self._timeout)
                except (OSError, ProtocolError, asyncio.TimeoutError) as error:
                    await self.close()
                    if attempt >= self._retries:
                        logger.error("call %s failed: %s", method_name, error)
                        raise
                    attempt += 1
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                return _wire.decode_response(item, request_id, self._options)

    # Work specs

    async def set_work_spec(self, work_spec: Mapping[str, Any]) -> bool:
        _calls.validate_work_spec(work_spec)
        return bool(_calls.value_of("set_work_spec", await self._rpc("set_work_spec", [work_spec])))

    async def get_work_spec(self, work_spec_name: Any) -> Optional[dict[str, Any]]:
        spec: Optional[dict[str, Any]] = await self._rpc("get_work_spec", [work_spec_name])
        return spec

    async def pause_work_spec(self, work_spec_name: Any, paused: bool = True) -> None:
        await self._rpc("control_work_spec", [work_spec_name, _calls.control_options(paused)])

    async def list_work_specs(
        self, limit: Optional[int] = None, start: Optional[Any] = None
    ) -> tuple[list[tuple[Any, Any]], Any]:
        return _calls.spec_pairs(await self._rpc("list_work_specs", [_calls.window(limit, start)]))

    async def iter_work_specs(
        self, limit: Optional[int] = None, start: Optional[Any] = None
    ) -> AsyncIterator[dict[str, Any]]:
        count = 0
        options = _calls.window(limit, start)
        while True:
            specs, next_start = await self._rpc("list_work_specs", [options])
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

    async def clear(self) -> int:
        count: int = await self._rpc("clear", [])
        return count

    async def del_work_spec(self, work_spec_name: Any) -> bool:
        return bool(_calls.value_of("del_work_spec", await self._rpc("del_work_spec", [work_spec_name])))

    # Work units

    async def add_work_units(self, work_spec_name: Any, work_unit_key_vals: Any) -> bool:
        answer = await self._rpc("add_work_units", [work_spec_name, _calls.unit_items(work_unit_key_vals)])
        return bool(_calls.value_of("add_work_units", answer, logging.INFO))

    async def count_work_units(self, work_spec_name: Any) -> dict[int, int]:
        counts: dict[int, int] = _calls.value_of(
            "count_work_units", await self._rpc("count_work_units", [work_spec_name]))
        return counts

    async def status(self, work_spec_name: Any) -> dict[str, int]:
        return _calls.status_summary(await self.count_work_units(work_spec_name) or {})

    async def prioritize_work_units(
        self,
        work_spec_name: Any,
        work_unit_keys: Sequence[Any],
        priority: Optional[float] = None,
        adjustment: Optional[float] = None,
    ) -> bool:
        options = _calls.prioritize_options(work_unit_keys, priority, adjustment)
        answer = await self._rpc("prioritize_work_units", [work_spec_name, options])
        return bool(_calls.value_of("prioritize_work_units", answer))

    async def get_work_units(
        self,
        work_spec_name: Any,
        work_unit_keys: Optional[Sequence[Any]] = None,
        state: Optional[Any] = None,
        limit: Optional[int] = None,
        start: Optional[Any] = None,
    ) -> Any:
        options = _calls.unit_query(work_unit_keys, state, limit, start)
        return _calls.value_of("get_work_units", await self._rpc("get_work_units", [work_spec_name, options]))

    async def list_work_units(
        self, work_spec_name: Any, start: int = 0, limit: Optional[int] = None
    ) -> dict[Any, Any]:
        pairs = await self.get_work_units(
            work_spec_name, limit=_calls.listing_window(start, limit), state=(AVAILABLE, PENDING))
        return _calls.listing(pairs or [], start)

    async def list_finished_work_units(
        self, work_spec_name: Any, start: int = 0, limit: Optional[int] = None
    ) -> dict[Any, Any]:
        pairs = await self.get_work_units(work_spec_name, limit=_calls.listing_window(start, limit), state=FINISHED)
        return _calls.listing(pairs or [], start)

    async def del_work_units(
        self,
        work_spec_name: Any,
        work_unit_keys: Optional[Sequence[Any]] = None,
        state: Optional[int] = None,
        all: bool = False,
    ) -> int:
        options = _calls.delete_options(work_unit_keys, state, all)
        count: int = _calls.value_of("del_work_units", await self._rpc("del_work_units", [work_spec_name, options]))
        return count

    async def get_work_unit_status(
        self, work_spec_name: Any, work_unit_keys: Union[str, bytes, Sequence[Any]]
    ) -> Any:
        keys, one = _calls.status_keys(work_unit_keys)
        answer = await self._rpc("get_work_unit_status", [work_spec_name, keys])
        statuses = _calls.value_of("get_work_unit_status", answer)
        return statuses[0] if one and statuses is not None else statuses

    async def update_work_unit(
        self,
        work_spec_name: Any,
        work_unit_key: Any,
        lease_time: Optional[float] = None,
        status: Optional[int] = None,
        data: Optional[Any] = None,
    ) -> bool:
        options = _calls.update_options(lease_time, status, data)
        answer = await self._rpc("update_work_unit", [work_spec_name, work_unit_key, options])
        return bool(_calls.value_of("update_work_unit", answer))

    async def get_work(
        self,
        worker_id: Any,
        available_gb: Optional[float] = None,
        lease_time: Optional[float] = None,
        work_spec_names: Optional[Sequence[Any]] = None,
        max_jobs: Optional[int] = 1,
    ) -> Union[None, AsyncWorkUnit, list[AsyncWorkUnit]]:
        if lease_time is None:
            lease_time = self.default_lifetime
        options = _calls.get_work_options(available_gb, lease_time, work_spec_names, max_jobs)
        triples = _calls.granted(await self._rpc("get_work", [worker_id, options]), max_jobs)
        if triples is None:
            return None
        units = [
            AsyncWorkUnit(self, spec, key, data, worker_id, default_lease_time=lease_time)
            for spec, key, data in triples
        ]
        return units[0] if max_jobs is None or max_jobs == 1 else units

    async def retry(self, work_spec_name: Any, *work_unit_names: Any) -> bool:
        all_ok = True
        for key in work_unit_names:
            if not await self.update_work_unit(work_spec_name, key, lease_time=0, status=AVAILABLE):
                all_ok = False
        return all_ok

    async def update_bundle(self, work_spec: Mapping[str, Any], work_units: Any, nice: Optional[int] = None) -> None:
        await self.set_work_spec(work_spec)
        await self.add_work_units(work_spec["name"], work_units)

    async def add_flow(self, flow: Mapping[str, Any], config: Optional[Mapping[str, Any]] = None) -> None:
        for spec in _calls.flow_specs(flow, config if config is not None else {}):
            await self.set_work_spec(spec)

    def get_mode(self) -> str:
        return RUN

    # Workers

    async def get_child_work_units(self, worker_id: Any) -> dict[Any, list[AsyncWorkUnit]]:
        units = _calls.child_units(await self._rpc("get_child_work_units", [worker_id]))
        return {
            child: [
                AsyncWorkUnit(
                    self,
                    parts.get("work_spec_name"),
                    parts.get("work_unit_key"),
                    parts.get("work_unit_data"),
                    worker_id=parts.get("worker_id"),
                    expires=parts.get("expires"),
                )
                for parts in held
            ]
            for child, held in units.items()
        }

    async def worker_heartbeat(
        self,
        worker_id: Any,
        mode: Any = None,
        lifetime: float = 6000,
        environment: Optional[Mapping[str, Any]] = None,
        parent: Any = None,
    ) -> None:
        params = _calls.heartbeat_params(worker_id, mode, lifetime, environment, parent)
        _calls.value_of("worker_heartbeat", await self._rpc("worker_heartbeat", params), logging.ERROR)

    async def worker_register(
        self,
        worker_id: Any,
        mode: Any = None,
        lifetime: float = 6000,
        environment: Optional[Mapping[str, Any]] = None,
        parent: Any = None,
    ) -> None:
        await self.worker_heartbeat(worker_id, mode, lifetime, environment, parent)

    async def worker_unregister(self, worker_id: Any, parent: Any = None) -> None:
        _calls.value_of("worker_unregister", await self._rpc("worker_unregister", [worker_id]), logging.ERROR)

    async def workers(self, alive: bool = True) -> dict[Any, Any]:
        modes: dict[Any, Any] = _calls.value_of("list_worker_modes", await self._rpc("list_worker_modes", []))
        return modes

    async def get_heartbeat(self, worker_id: Any) -> dict[str, Any]:
        info: dict[str, Any] = _calls.value_of("get_worker_info", await self._rpc("get_worker_info", [worker_id]))
        return info

    async def mode_counts(self) -> dict[Any, int]:
        counts: dict[Any, int] = _calls.value_of("mode_counts", await self._rpc("mode_counts", []))
        return counts

    async def get_server_config(self) -> dict[str, Any]:
        config: dict[str, Any] = _calls.value_of("get_config", await self._rpc("get_config", []))
        return config
