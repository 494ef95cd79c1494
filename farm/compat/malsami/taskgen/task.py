"""The malsami fork's Task: Genode defaults (caps, cores, ...) and ``task['jobs']`` records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from farm.compat.convert import stamp
from farm.compat.taskgen.task import BlockTask
from farm.compat.variants import dict_variants
from farm.events import Event, EventType


class Task(BlockTask):
    """A task: the fork's defaults, then each block merged in order (a callable is called)."""

    @staticmethod
    def _defaults() -> dict[str, Any]:
        return {
            "id": None,
            "priority": 128,  # 0 most urgent .. 127 least; 128: EDF (deadline)
            "deadline": 1,
            "quota": "0M",
            "caps": 0,
            "pkg": "",
            "config": {"arg1": 0},
            "cores": 2,
            "coreoffset": 1,
            "criticaltime": 0,
            "period": 1,
            "numberofjobs": 1,
            "offset": 0,
            "jobs": {},  # "1": [start, end, exit type], filled at run time
        }

    def variants(self) -> Iterator[Task]:
        """Every variant (farm addition: the fork had none; its Variants blocks need it)."""
        jobs = self.get("jobs")
        for values in dict_variants({k: v for k, v in self.items() if k != "jobs"}):
            task = Task(values)
            task["jobs"] = dict(jobs) if isinstance(jobs, dict) else {}
            yield task

    def reset_jobs(self) -> None:
        self["jobs"] = {}
        self._keys: dict[int | None, str] = {}

    def record_event(self, event: Event) -> None:
        """Fill ``jobs`` as the MaLSAMi Genode session did: ``{"1": [start, end, "EXIT"]}``.

        Jobs are numbered 1, 2, ... in the order they start (NOT_SCHEDULED counts
        as a job that starts and ends at once), whatever farm's job numbers are.
        """
        jobs = self.setdefault("jobs", {})
        keys = self.__dict__.setdefault("_keys", {})
        ts = stamp(event)
        if event.type is EventType.START or event.type is EventType.NOT_SCHEDULED:
            key = str(len(jobs) + 1)
            keys[event.job] = key
            done = event.type is EventType.NOT_SCHEDULED
            jobs[key] = [ts, ts, "NOT_SCHEDULED"] if done else [ts]
        elif event.is_exit:
            key = keys.get(event.job, str(len(jobs)))
            record = jobs.setdefault(key, [ts])
            record[1:] = [ts, str(event.type)]
