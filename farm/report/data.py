"""Reads a results database into per-set job timelines and summary numbers.

The database is a SqliteMonitor file or, given a ``postgresql://`` URL (or a
libpq ``key=value`` string), a PostgresMonitor database (farm.report.pgsource):
both have the same tables, and the queries here run unchanged on either.

Times come from the guest clock (seconds). The database keeps each job's
START and exit timestamps but not its release time, so the release is
estimated per run: the run's origin ``t0`` is the tightest bound every start
allows (``min(start - offset - k * period)``; a job never starts before its
release), job ``k`` of a periodic task is released at
``t0 + offset + k * period``, a one-shot task's later jobs at their start.
A response time (end - release) is therefore never overestimated: a miss
computed from it is a real miss.

A job counts as a deadline miss if its exit says so (EXIT_CRITICAL,
EXIT_PERIOD: still running at its next release, NOT_SCHEDULED: its release
was skipped) or if its response exceeds the task's limit (criticaltime, else
deadline; 0 = none), the limit the agent checks too. Jobs without an exit
(a run that was cut off) are shown but not counted.

For each variant the report uses its finished run if it has one, else its
latest attempt (a stopped, bad or still running set shows what it got).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.core.records import SetState
from farm.errors import ConfigError
from farm.report import pgsource

log = logging.getLogger(__name__)

MISS_TYPES = frozenset({"EXIT_CRITICAL", "EXIT_PERIOD", "NOT_SCHEDULED"})
"""Exit types that are deadline misses by themselves."""

STATES: tuple[str, ...] = tuple(
    str(s) for s in (SetState.FINISHED, SetState.STOPPED, SetState.BAD, SetState.STARTED)
)
"""Task-set states of the ``tasksets`` table (``started``: cut off or still running)."""

_REQUIRED_TABLES = frozenset({"tasksets", "runs", "tasks", "jobs"})


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task of a variant as described (times in ms)."""

    task_id: int
    pkg: str | None = None
    priority: int | None = None
    period: float = 0.0
    criticaltime: float = 0.0
    deadline: float = 0.0
    offset: float = 0.0
    numberofjobs: int | None = None

    @property
    def limit_ms(self) -> float:
        """The response-time limit the agent checks: criticaltime, else deadline (0 = none)."""
        return self.criticaltime if self.criticaltime > 0 else max(self.deadline, 0.0)


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job of a run: guest times (s), exit type, estimated release and response."""

    task_id: int
    job: int
    start: float | None
    end: float | None
    exit_type: str | None
    detail: str | None
    release: float | None
    response: float | None  # seconds, None if the job has no end or no release
    missed: bool

    @property
    def ended(self) -> bool:
        """True if the job has an exit (counts towards the miss rate)."""
        return self.exit_type is not None


@dataclass(slots=True)
class SetData:
    """A variant with the jobs of the run the report shows."""

    id: int
    job: str
    variant: int | None
    state: str
    tries: int
    run_attempt: int | None = None
    run_state: str | None = None
    tasks: dict[int, TaskInfo] = field(default_factory=dict)
    jobs: list[JobRow] = field(default_factory=list)
    t0: float | None = None

    @property
    def label(self) -> str:
        """Short name ``Class#variant`` (the job key without its module path and hash)."""
        name = self.job.split(":", 1)[0].rsplit(".", 1)[-1] or self.job
        return name if self.variant is None else f"{name}#{self.variant}"

    @property
    def ended_jobs(self) -> int:
        """Jobs with an exit."""
        return sum(1 for j in self.jobs if j.ended)

    @property
    def misses(self) -> int:
        """Jobs that missed their deadline."""
        return sum(1 for j in self.jobs if j.missed)


@dataclass(slots=True)
class JobSummary:
    """Counts for one job name (or all): sets by state, jobs, exit types, misses."""

    name: str
    states: Counter[str] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)
    jobs: int = 0
    misses: int = 0

    @property
    def sets(self) -> int:
        """Number of variants recorded."""
        return sum(self.states.values())

    @property
    def miss_rate(self) -> float | None:
        """Deadline misses per ended job (None without any ended job)."""
        return self.misses / self.jobs if self.jobs else None

    def add(self, s: SetData) -> None:
        """Count one variant."""
        self.states[s.state] += 1
        self.jobs += s.ended_jobs
        self.misses += s.misses
        self.exits.update(j.exit_type for j in s.jobs if j.exit_type is not None)


@dataclass(slots=True)
class ReportData:
    """Everything the report shows: every variant in id order and summaries per job.

    ``source`` names the database (a file's absolute path, a URL without its
    password), ``name`` shortly (file name, database name).
    """

    source: str
    name: str
    sets: list[SetData]
    by_job: dict[str, JobSummary]
    total: JobSummary


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0  # a varying value stored as JSON: not a single number


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def is_url(source: str | Path) -> bool:
    """True if ``source`` names a PostgreSQL database rather than an SQLite file."""
    return isinstance(source, str) and pgsource.is_postgres(source)


def connect(path: str | Path) -> Any:
    """Open a results database read-only, check its tables (ConfigError if not farm's).

    An SQLite file gives an sqlite3 connection, a PostgreSQL URL a psycopg one;
    both have ``execute()`` returning an iterable cursor, which is all load() uses.
    """
    if is_url(path):
        return pgsource.connect(str(path), _REQUIRED_TABLES)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no results database at {p}")
    try:
        conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from exc
    missing = _REQUIRED_TABLES - names
    if missing:
        conn.close()
        raise ConfigError(
            f"{p} is not a farm results database (no table {', '.join(sorted(missing))})"
        )
    return conn


def _tasks(conn: Any) -> dict[int, dict[int, TaskInfo]]:
    out: dict[int, dict[int, TaskInfo]] = {}
    rows = conn.execute(
        'SELECT taskset_id, task_id, pkg, priority, period, criticaltime, deadline, "offset", '
        "numberofjobs FROM tasks"
    )
    for ts_id, task_id, pkg, prio, period, crit, deadline, offset, njobs in rows:
        if _int(task_id) is None:
            continue
        out.setdefault(ts_id, {})[int(task_id)] = TaskInfo(
            int(task_id),
            pkg,
            _int(prio),
            _num(period),
            _num(crit),
            _num(deadline),
            _num(offset),
            _int(njobs),
        )
    return out


def _shown_runs(conn: Any) -> dict[int, tuple[int, int, str]]:
    """taskset id -> (run id, attempt, state) of its finished run, else its latest one."""
    out: dict[int, tuple[int, int, str]] = {}
    rank = {"finished": 1}
    for run_id, ts_id, attempt, state in conn.execute(
        "SELECT id, taskset_id, attempt, state FROM runs ORDER BY taskset_id, attempt"
    ):
        best = out.get(ts_id)
        if best is None or rank.get(state, 0) >= rank.get(best[2], 0):
            out[ts_id] = (run_id, attempt, state)
    return out


def estimate_t0(tasks: dict[int, TaskInfo], starts: list[tuple[int, int, float]]) -> float | None:
    """Latest origin consistent with every (task, job, start): no job starts before release."""
    bounds = []
    for task_id, job, start in starts:
        task = tasks.get(task_id, TaskInfo(task_id))
        if task.period > 0:
            bounds.append(start - (task.offset + job * task.period) / 1000.0)
        elif job == 0:
            bounds.append(start - task.offset / 1000.0)
    return min(bounds) if bounds else None


def build_jobs(
    tasks: dict[int, TaskInfo], rows: list[tuple[Any, ...]]
) -> tuple[list[JobRow], float | None]:
    """Job rows (task, job, start, end, exit, detail) -> JobRows with release, response, miss."""
    starts = [(int(r[0]), int(r[1]), float(r[2])) for r in rows if r[2] is not None]
    t0 = estimate_t0(tasks, starts)
    out = []
    for task_id, job, start, end, exit_type, detail in rows:
        task = tasks.get(int(task_id), TaskInfo(int(task_id)))
        release: float | None = None
        if t0 is not None and (task.period > 0 or job == 0):
            release = t0 + (task.offset + job * max(task.period, 0.0)) / 1000.0
        elif start is not None:
            release = float(start)  # a one-shot task's next job: released when started
        response = None
        if end is not None and release is not None and exit_type not in (None, "NOT_SCHEDULED"):
            response = max(float(end) - release, 0.0)
        missed = exit_type in MISS_TYPES or (
            response is not None and task.limit_ms > 0 and response * 1000.0 > task.limit_ms
        )
        out.append(
            JobRow(int(task_id), int(job), start, end, exit_type, detail, release, response, missed)
        )
    out.sort(key=lambda j: (j.task_id, j.job))
    return out, t0


def load(path: str | Path) -> ReportData:
    """Read the whole database: variants in id order with their shown run's jobs, and summaries."""
    conn = connect(path)
    try:
        tasks = _tasks(conn)
        runs = _shown_runs(conn)
        jobs_by_run: dict[int, list[tuple[Any, ...]]] = {}
        for run_id, *rest in conn.execute(
            "SELECT run_id, task_id, job, start_ts, end_ts, exit_type, detail FROM jobs"
        ):
            jobs_by_run.setdefault(run_id, []).append(tuple(rest))
        sets: list[SetData] = []
        for ts_id, job, variant, state, tries, description in conn.execute(
            "SELECT id, job, variant, state, tries, description FROM tasksets ORDER BY id"
        ):
            s = SetData(int(ts_id), str(job), _int(variant), str(state), int(tries or 0))
            s.tasks = tasks.get(ts_id) or _tasks_from_description(description)
            if ts_id in runs:
                run_id, s.run_attempt, s.run_state = runs[ts_id]
                s.jobs, s.t0 = build_jobs(s.tasks, jobs_by_run.get(run_id, []))
            sets.append(s)
    except _db_errors() as exc:
        raise ConfigError(f"cannot read {describe(path)}: {exc}") from exc
    finally:
        conn.close()
    total = JobSummary("all")
    by_job: dict[str, JobSummary] = {}
    for s in sets:
        name = s.label.split("#", 1)[0]
        by_job.setdefault(s.job, JobSummary(name)).add(s)
        total.add(s)
    log.info("read %d task sets from %s", len(sets), describe(path))
    if is_url(path):
        source, name = pgsource.describe(str(path)), pgsource.dbname(str(path))
    else:
        source, name = str(Path(path).resolve()), Path(path).name
    return ReportData(source, name, sets, by_job, total)


def _db_errors() -> tuple[type[BaseException], ...]:
    return (sqlite3.Error, *pgsource.errors())


def describe(source: str | Path) -> str:
    """``source`` as it may be shown (a URL without its password)."""
    return pgsource.describe(str(source)) if is_url(source) else str(source)


def _tasks_from_description(description: str | None) -> dict[int, TaskInfo]:
    """Fallback when the tasks table has no rows for a variant: its JSON description."""
    try:
        tasks = json.loads(description or "{}").get("tasks", [])
    except (ValueError, AttributeError):
        return {}
    out = {}
    for t in tasks if isinstance(tasks, list) else []:
        if isinstance(t, dict) and _int(t.get("id")) is not None:
            tid = int(t["id"])
            out[tid] = TaskInfo(
                tid,
                t.get("pkg"),
                _int(t.get("priority")),
                _num(t.get("period")),
                _num(t.get("criticaltime")),
                _num(t.get("deadline")),
                _num(t.get("offset")),
                _int(t.get("numberofjobs")),
            )
    return out
