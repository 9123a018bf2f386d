"""Task functions the worker tests run (a spec's ``module: py3_tasks``)."""

from __future__ import annotations

import os
import time
from typing import Any


def succeed(work_unit: Any) -> None:
    """Records that it ran, in the unit's data."""
    work_unit.data["ran_by"] = os.getpid()
    work_unit.data["doubled"] = work_unit.data.get("n", 0) * 2


def explode(work_unit: Any) -> None:
    raise ValueError("task exploded on %s" % work_unit.key)


def slow(work_unit: Any, seconds: float = 3.0) -> None:
    """Runs for `seconds` (its spec's run_params), leaving a marker file when it starts, then records it finished."""
    marker = work_unit.data.get("marker")
    if marker:
        with open(marker, "w") as stream:
            stream.write(str(os.getpid()))
    time.sleep(seconds)
    work_unit.data["slept"] = seconds
