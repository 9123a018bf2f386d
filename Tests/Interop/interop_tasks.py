'''Work functions run by the real Python fork worker (coordinate_worker) in the interop tests.

A work spec names them with ``module: interop_tasks`` and ``run_function: ...``; the worker imports this module
(the tests put this directory on PYTHONPATH) and calls the function with the work unit.
'''
import time


def double(work_unit):
    '''Records twice the input value in the unit's data.'''
    work_unit.data['result'] = work_unit.data['value'] * 2


def explode(work_unit):
    '''Always fails, with a recognisable message.'''
    raise ValueError('interop task exploded on %s' % work_unit.key)


def linger(work_unit):
    '''Outlives its lease.'''
    time.sleep(work_unit.data.get('seconds', 30))
