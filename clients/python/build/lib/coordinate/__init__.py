"""A Python 3 client and worker for ``coordinated``, API-compatible with coordinate 0.1.5.

``from coordinate import TaskMaster`` and the other imports of 0.1.5's client side work as they are: the
modules :mod:`coordinate.job_client`, :mod:`coordinate.base_client`, :mod:`coordinate.constants`,
:mod:`coordinate.exceptions`, :mod:`coordinate.workers` and :mod:`coordinate.workunit_run`. The daemon itself
(0.1.5's ``JobQueue`` and ``CoordinateServer``) is not part of this package: run ``coordinated``.
"""

from __future__ import annotations

from .aio import AsyncTaskMaster, AsyncWorkUnit
from .exceptions import CoordinateException, LostLease, ProgrammerError
from .job_client import TaskMaster, WorkUnit

__version__ = "0.2.0"

#: The name of the configuration block.
config_name = "coordinate"

__all__ = [
    "AsyncTaskMaster",
    "AsyncWorkUnit",
    "CoordinateException",
    "LostLease",
    "ProgrammerError",
    "TaskMaster",
    "WorkUnit",
    "config_name",
]
