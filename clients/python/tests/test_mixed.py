"""Old and new clients on the same units: the published Python 2.7 client (coordinate 0.1.5) and this one.

Needs the interop environment of ``scripts/python-env`` (``INTEROP_PREFIX``); with ``CI=true`` its absence
fails the run instead of skipping.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from typing import Any

import pytest

from coordinate import TaskMaster
from coordinate.constants import AVAILABLE, FINISHED

from conftest import REPOSITORY, Daemon

PREFIX = os.environ.get("INTEROP_PREFIX") or os.path.join(REPOSITORY, ".build", "python-interop")

if not os.path.exists(os.path.join(PREFIX, "python")):
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI=true: the Python 2.7 interop environment is missing at %s" % PREFIX)
    pytest.skip("no Python 2.7 interop environment (scripts/python-env)", allow_module_level=True)


def python2(daemon: Daemon, script: str) -> Any:
    """Runs `script` under Python 2.7 with coordinate 0.1.5; `tm` is its TaskMaster; it prints JSON."""
    prologue = "import json\nfrom coordinate import TaskMaster\ntm = TaskMaster({'address': %r})\n" % daemon.address
    env = dict(os.environ, PYTHONNOUSERSITE="1", PYTHONPATH=os.path.join(PREFIX, "lib", "python2.7", "site-packages"))
    result = subprocess.run(
        [os.path.join(PREFIX, "python"), "-c", prologue + textwrap.dedent(script)],
        env=env, capture_output=True, text=True, timeout=60, cwd=PREFIX)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_python2_adds_python3_finishes(daemon: Daemon, tm: TaskMaster) -> None:
    python2(daemon, """
        tm.set_work_spec({'name': 'mixed', 'min_gb': 1})
        tm.add_work_units('mixed', [('p1', {'k': 'v', 'n': 1}), ('p2', {'k': 'w', 'n': 2})])
        print(json.dumps(True))
    """)
    unit = tm.get_work("py3", work_spec_names=["mixed"], lease_time=60)
    assert unit is not None and unit.key == "p1" and unit.data == {"k": "v", "n": 1}
    unit.data["by"] = "python3"
    assert unit.finish()
    # Re-adding the key from Python 3 resets the same unit rather than making a second one.
    assert tm.add_work_units("mixed", {"p2": {"k": "again"}})
    seen = python2(daemon, """
        status = tm.get_work_unit_status('mixed', ['p1'])[0]
        units = dict(tm.get_work_units('mixed'))
        print(json.dumps({'status': status['status'], 'worker': status['worker_id'], 'p1': units['p1'],
                          'p2': units['p2'], 'count': len(units)}))
    """)
    assert seen == {"status": FINISHED, "worker": "py3", "p1": {"k": "v", "n": 1, "by": "python3"},
                    "p2": {"k": "again"}, "count": 2}


def test_python3_adds_python2_finishes(daemon: Daemon, tm: TaskMaster) -> None:
    tm.set_work_spec({"name": "mixed3", "min_gb": 1})
    tm.add_work_units("mixed3", {"q1": {"from": "python3"}})
    done = python2(daemon, """
        unit = tm.get_work('py2', work_spec_names=['mixed3'], lease_time=60)
        unit.data['by'] = 'python2'
        unit.finish()
        print(json.dumps({'key': unit.key, 'data': unit.data}))
    """)
    assert done == {"key": "q1", "data": {"from": "python3", "by": "python2"}}
    assert tm.get_work_unit_status("mixed3", "q1")["status"] == FINISHED
    assert tm.get_work_units("mixed3") == [("q1", {"from": "python3", "by": "python2"})]
    assert tm.count_work_units("mixed3") == {FINISHED: 1}
    assert tm.add_work_units("mixed3", {"q2": {}}) and tm.count_work_units("mixed3")[AVAILABLE] == 1
