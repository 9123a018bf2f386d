"""Running a work unit: the spec's ``module`` and ``run_function`` (coordinate 0.1.5's task model)."""

from __future__ import annotations

import importlib
from typing import Any, Mapping, Optional

from .exceptions import ProgrammerError


def run(work_unit: Any, work_spec_dict: Mapping[str, Any]) -> Any:
    """Runs ``run_function(work_unit)`` from the spec's ``module`` (with its ``run_params``, if any)."""
    module_name = work_spec_dict.get("module")
    if module_name is None:
        raise ProgrammerError('work spec {!r} does not specify a "module" to run from'.format(work_spec_dict.get("name")))
    run_function_name = work_spec_dict.get("run_function")
    if run_function_name is None:
        raise ProgrammerError('work spec {!r} does not specify a "run_function"'.format(work_spec_dict.get("name")))
    return run_module_func_for_work_unit(work_unit, module_name, run_function_name, work_spec_dict.get("run_params"))


def run_module_func_for_work_unit(work_unit: Any, module_name: str, func_name: str, params: Optional[Any] = None) -> Any:
    """Imports `module_name` and calls its `func_name` with the unit, then `params` (a list: positional, a
    mapping: keywords)."""
    run_function = getattr(importlib.import_module(module_name), func_name)
    if isinstance(params, Mapping):
        return run_function(work_unit, **params)
    if isinstance(params, (list, tuple)):
        return run_function(work_unit, *params)
    return run_function(work_unit)
