"""AsyncTaskMaster: the same calls as coroutines, on every backend."""

from __future__ import annotations

import asyncio

from coordinate import AsyncTaskMaster, AsyncWorkUnit, TaskMaster
from coordinate.constants import AVAILABLE, FAILED, FINISHED, RUN

from conftest import Daemon


def test_async_client(daemon: Daemon, tm: TaskMaster) -> None:
    async def scenario() -> None:
        async with AsyncTaskMaster(daemon.config()) as client:
            assert await client.set_work_spec({"name": "s", "min_gb": 1})
            assert (await client.get_work_spec("s")) == {"name": "s", "min_gb": 1}
            assert await client.add_work_units("s", {"a": {"n": 1}, "b": {"n": 2}, "c": {}})
            assert await client.count_work_units("s") == {AVAILABLE: 3}
            assert (await client.status("s"))["num_tasks"] == 3
            assert [spec["name"] async for spec in client.iter_work_specs()] == ["s"]
            assert (await client.list_work_specs())[0][0][0] == "s"
            assert await client.prioritize_work_units("s", ["c"], priority=5)
            await client.worker_heartbeat("w", mode=RUN, lifetime=60)
            unit = await client.get_work("w", lease_time=60)
            assert isinstance(unit, AsyncWorkUnit) and unit.key == "c"
            unit.data["done"] = 1
            assert await unit.update()
            assert await unit.finish()
            units = await client.get_work("w", max_jobs=5)
            assert isinstance(units, list) and [u.key for u in units] == ["a", "b"]
            try:
                raise RuntimeError("async failure")
            except RuntimeError as exc:
                assert await units[0].fail(exc)
            assert await client.retry("s", "b")
            assert await client.count_work_units("s") == {FINISHED: 1, FAILED: 1, AVAILABLE: 1}
            status = await client.get_work_unit_status("s", "a")
            assert "RuntimeError: async failure" in status["traceback"]
            assert await client.list_finished_work_units("s") == {"c": {"done": 1}}
            assert await client.workers() == {"w": RUN}
            assert await client.del_work_units("s", all=True) == 3
            # Two clients in parallel, each with its own connection.
            async with AsyncTaskMaster(daemon.config()) as other:
                counts, config = await asyncio.gather(client.count_work_units("s"), other.get_server_config())
                assert counts == {} and "coordinate" in config
            await client.worker_unregister("w")
            assert await client.del_work_spec("s")

    asyncio.run(scenario())
    # What the async client wrote, the blocking one reads.
    assert tm.list_work_specs() == ([], None)
