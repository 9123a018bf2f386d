"""Every TaskMaster method against a real daemon, on every backend."""

from __future__ import annotations

import pytest

from coordinate import ProgrammerError, TaskMaster
from coordinate.constants import AVAILABLE, FAILED, FINISHED, PENDING, PRI_PRIORITY, RUN
from coordinate.exceptions import RpcError

from conftest import Daemon


def spec(name: str, **extra: object) -> dict[str, object]:
    return dict({"name": name, "min_gb": 1}, **extra)


def test_work_specs(tm: TaskMaster) -> None:
    with pytest.raises(ProgrammerError):
        tm.set_work_spec({"min_gb": 1})
    with pytest.raises(ProgrammerError):
        tm.set_work_spec({"name": "x"})
    assert tm.set_work_spec(spec("a", module="m", run_function="f")) is True
    assert tm.set_work_spec(spec("b"))
    assert tm.get_work_spec("a") == spec("a", module="m", run_function="f")
    assert tm.get_work_spec("missing") is None
    names, next_start = tm.list_work_specs()
    assert [name for name, _ in names] == ["a", "b"] and next_start is None
    page, next_start = tm.list_work_specs(limit=1)
    assert [name for name, _ in page] == ["a"] and next_start is not None
    assert [s["name"] for s in tm.iter_work_specs()] == ["a", "b"]
    assert [s["name"] for s in tm.iter_work_specs(limit=1)] == ["a"]
    tm.pause_work_spec("a")
    tm.add_work_units("a", {"u": {}})
    assert tm.get_work("w", work_spec_names=["a"]) is None
    tm.pause_work_spec("a", paused=False)
    assert tm.get_work("w", work_spec_names=["a"]) is not None
    assert tm.del_work_spec("b") is True
    assert tm.del_work_spec("b") is False
    assert tm.clear() == 1
    assert tm.list_work_specs() == ([], None)


def test_adding_and_reading_units(tm: TaskMaster) -> None:
    tm.set_work_spec(spec("s"))
    assert tm.add_work_units("s", {"a": {"n": 1}, "b": {"n": 2}}) is True
    assert tm.add_work_units("s", [("c", {"n": 3}), ("d", {"n": 4}, {"priority": 5})]) is True
    assert tm.add_work_units("missing", {"x": {}}) is False
    assert tm.count_work_units("s") == {AVAILABLE: 4}
    assert tm.status("s") == {
        "num_available": 4, "num_pending": 0, "num_blocked": 0, "num_finished": 0, "num_failed": 0, "num_tasks": 4}
    assert list(tm.get_work_units("s")) == [("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3}), ("d", {"n": 4})]
    assert list(tm.get_work_units("s", work_unit_keys=["b", "zz"])) == [("b", {"n": 2}), ("zz", None)]
    assert [key for key, _ in tm.get_work_units("s", limit=2, start="b")] == ["b", "c"]
    # The priority from the item's meta: d comes first.
    assert tm.get_work("w").key == "d"
    assert [key for key, _ in tm.get_work_units("s", state=PENDING)] == ["d"]
    # A state selection lists by priority, then key.
    assert [key for key, _ in tm.get_work_units("s", state=(AVAILABLE, PENDING))] == ["d", "a", "b", "c"]
    assert tm.list_work_units("s") == {"a": {"n": 1}, "b": {"n": 2}, "c": {"n": 3}, "d": {"n": 4}}
    assert tm.list_work_units("s", start=1, limit=2) == {"a": {"n": 1}, "b": {"n": 2}}
    assert tm.prioritize_work_units("s", ["c"]) is True
    assert tm.get_work("w").key == "c"
    assert tm.prioritize_work_units("s", ["a"], priority=10)
    assert tm.prioritize_work_units("s", ["b"], adjustment=20)
    assert tm.get_work("w").key == "b"
    assert tm.update_work_unit("s", "b", status=FINISHED, data={"done": True}) is True
    assert tm.list_finished_work_units("s") == {"b": {"done": True}}
    status = tm.get_work_unit_status("s", "b")
    assert status["status"] == FINISHED and status["worker_id"] == "w"
    statuses = tm.get_work_unit_status("s", ["a", "zz"])
    assert statuses[0]["status"] == AVAILABLE and statuses[1] is None
    assert tm.del_work_units("s", work_unit_keys=["a"]) == 1
    assert tm.del_work_units("s", state=FINISHED) == 1
    assert tm.del_work_units("s") == 0
    assert tm.del_work_units("s", all=True) == 2
    assert tm.count_work_units("s") == {}


def test_get_work_update_retry(tm: TaskMaster) -> None:
    tm.set_work_spec(spec("s"))
    assert tm.get_work("w") is None
    assert tm.get_work("w", max_jobs=3) == []
    tm.add_work_units("s", [("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3})])
    units = tm.get_work("w", max_jobs=2, lease_time=60, available_gb=1.5)
    assert isinstance(units, list) and [u.key for u in units] == ["a", "b"]
    with pytest.raises(ValueError):
        tm.get_work("w", max_jobs="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        tm.get_work("w", lease_time=86400 * 2)
    first, second = units
    assert first.update() is True
    first.data["progress"] = 1
    assert first.update(lease_time=30) is True
    assert tm.get_work_units("s", work_unit_keys=["a"])[0][1] == {"n": 1, "progress": 1}
    assert first.finish() is True
    try:
        raise KeyError("boom")
    except KeyError as exc:
        assert second.fail(exc) is True
    failed = tm.get_work_unit_status("s", "b")
    assert failed["status"] == FAILED
    assert "KeyError: 'boom'" in failed["traceback"] and "test_get_work_update_retry" in failed["traceback"]
    assert tm.retry("s", "a", "b") is True
    assert tm.count_work_units("s") == {AVAILABLE: 3}
    assert tm.update_work_unit("s", "zz", status=FINISHED) is False
    with pytest.raises(ValueError):
        tm.update_work_unit("s", "a", lease_time=86400)
    tm.update_bundle(spec("t"), {"x": {"k": "v"}})
    assert tm.get_work_units("t") == [("x", {"k": "v"})]


def test_flow_modes_and_config(tm: TaskMaster) -> None:
    tm.add_flow({"f": {"one": {"min_gb": 1, "then": "f.two"}, "two": {"min_gb": 1, "config": {"k": 2}}}},
                config={"k": 1, "shared": True})
    assert tm.get_work_spec("f.one")["config"] == {"k": 1, "shared": True}
    assert tm.get_work_spec("f.two")["config"] == {"k": 2, "shared": True}
    with pytest.raises(ProgrammerError):
        tm.add_flow({"g": {"min_gb": 1, "then": "nowhere"}})
    tm.set_mode("IDLE")
    assert tm.get_mode() == RUN
    assert "coordinate" in tm.get_server_config()
    with pytest.raises(RpcError):
        tm._rpc("no_such_method", [])


def test_workers(tm: TaskMaster) -> None:
    tm.set_work_spec(spec("s"))
    tm.add_work_units("s", {"a": {}})
    tm.worker_register("parent", mode=RUN, lifetime=60, environment={"host": "h"})
    tm.worker_heartbeat("child", mode=RUN, lifetime=60, environment={"pid": 1}, parent="parent")
    assert tm.workers() == {"parent": RUN, "child": RUN}
    assert tm.get_heartbeat("child")["pid"] == 1
    assert tm.mode_counts() == {RUN: 2}
    unit = tm.get_work("child")
    children = tm.get_child_work_units("parent")
    assert list(children) == ["child"]
    [held] = children["child"]
    assert (held.work_spec_name, held.key, held.worker_id) == ("s", "a", "child") and held.expires is not None
    assert unit is not None and unit.finish()
    tm.worker_unregister("child")
    assert tm.workers() == {"parent": RUN}


def test_strings_travel_as_byte_strings(daemon: Daemon, tm: TaskMaster) -> None:
    """A str key is sent as a CBOR byte string, as Python 2 sent it: the same unit as a bytes key."""
    tm.set_work_spec(spec("s"))
    tm.add_work_units("s", {"k": {"v": 1}})
    assert tm.add_work_units("s", {b"k": {"v": 2}})
    with TaskMaster(dict(daemon.config(), send_str_as_bytes=False, decode_utf8_bytes=False)) as raw:
        assert raw.add_work_units("s", {"k": {"v": 3}})
        [(key, data)] = raw.get_work_units("s")
        # Stored under its first spelling: a byte string.
        assert key == b"k" and data == {"v": 3}
    assert tm.count_work_units("s") == {AVAILABLE: 1}
    binary = bytes([0xFF, 0x00])
    tm.add_work_units("s", {binary: {}})
    assert sorted(tm.list_work_units("s"), key=repr) == sorted(["k", binary], key=repr)
