"""Task model (taskgen compatible): tasks built from blocks, task sets, variants, job records.

A **task** is a dict of attributes (times in milliseconds)::

    id            int >= 0        auto-assigned 1..n by the task set when missing
    pkg           str             built-in workload, "shell", or an added binary (required)
    config        dict            arguments of the workload                default {}
    priority      int 1..128      1..127 fixed priority, 128 = EDF         default none: best effort
    period        number >= 0     0 = one-shot: jobs run back to back      default 0
    executiontime number >= 0     CPU budget of a job, 0 = no budget       default 0
    criticaltime  number >= 0     a job must end this long after release, 0 = no check  default 0
    deadline      number >= 0     relative deadline (EDF), 0 = none        default 0
    offset        number >= 0     release of the first job                 default 0
    numberofjobs  int >= 0        jobs to run, 0 = no limit (until stopped)  default 1
    quota         int | "512K"    memory limit in bytes (K/M/G/T = 1024^n), 0 = unlimited  default 0

Priorities are the target's: on farm agents 1..127 is SCHED_FIFO (a larger
number is more urgent) and 128 is SCHED_DEADLINE. A task that gives no
priority runs under the normal time-sharing policy (best effort); its
``description()`` says ``"priority": 0``, the wire value for "none", which
is never accepted as input. Built-in workload configs are checked here with
the agent's own schema (``farm.agent.workloads.check_config``).

Keys starting with ``x-`` or ``_`` are user annotations: not checked, left
out of ``description()``, but they may be dimensions (``"x-run": range(5)``
repeats a task set five times). Any other key is an error.

**Blocks.** ``Task(*blocks)`` merges blocks in order; ``config`` dicts merge
key by key. A block is a dict, or a callable returning one. Callable blocks
are evaluated once, when the task is appended to a task set, with that set's
``random.Random`` (passed if the callable has a required positional
parameter), in append order; until then the task holds only its dict blocks.
So a seeded set always draws the same values, and its variants (and a
re-queued or resumed set) repeat exactly. A callable's values still take
their place in the block order, and direct edits of an unbound task win.

**Dimensions.** A value that is a list, tuple, range, set/frozenset, other
iterable or iterator is a dimension of variation (str, bytes and dicts are
scalars); values inside ``config`` may be dimensions too (one level deep).
``TaskSet.variants()`` yields the product of all dimensions lazily, last
dimension fastest, except that one-shot iterators (generators) come first,
i.e. vary slowest: the first is consumed once, uncached; any further ones
must be replayed, so the values they yield are cached (memory grows with
the values they produce; keep infinite generators to one per set). Sets
vary in sorted order. Re-iterable dimensions are restarted, never copied:
memory stays flat however many variants there are.

Modules: ``values`` (scalars vs dimensions), ``validate`` (attributes,
defaults, checks, quotas), ``task`` (Task, blocks), ``variants`` (plan and
odometer), ``records`` (JobRecord, job log), ``core`` (TaskSet, BlockTaskSet).
"""

from __future__ import annotations

from farm.taskset.core import BlockTaskSet, TaskSet
from farm.taskset.records import JobRecord
from farm.taskset.task import Block, Task
from farm.taskset.validate import ATTRIBUTES, DEFAULTS, EDF_PRIORITY, parse_quota
from farm.taskset.values import is_dimension

# The public classes keep the module they had before farm.taskset became a
# package: pickles (the journal stores templates) and job keys, which name a
# task set's class and module, stay the same across the split.
for _cls in (Task, TaskSet, BlockTaskSet, JobRecord):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "ATTRIBUTES",
    "DEFAULTS",
    "EDF_PRIORITY",
    "Block",
    "BlockTaskSet",
    "JobRecord",
    "Task",
    "TaskSet",
    "is_dimension",
    "parse_quota",
]
