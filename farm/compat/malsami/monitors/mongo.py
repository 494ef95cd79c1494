"""``MongoMonitor`` (``distributor.monitors.mongo``): each finished set's tasks as documents.

As the original: ``MongoMonitor(uri='mongodb://localhost:27017')``; on every
``__taskset_finish__`` one document per task goes to database ``tasksets``,
collection ``taskset.task``::

    {"description": <the task dict>, "jobs": [{"start_date": ms, "end_date": ms}, ...]}

A ``mongodb://`` (or ``mongodb+srv://``) URI needs pymongo (``pip install
'farm[mongo]'``), imported when the monitor is made. A ``sqlite:///PATH`` or
``postgresql://`` URI stores the same documents in farm's own results
database instead (farm.compat.malsami.monitors.docstore), without MongoDB.
"""

from __future__ import annotations

import copy
from typing import Any

from farm.compat.malsami.monitor import AbstractMonitor
from farm.compat.malsami.monitors.docstore import DocumentStore, store_for
from farm.extras import require


def job_records(task: Any) -> list[dict[str, Any]]:
    """The task's jobs as ``{"start_date", "end_date"}`` (taskgen's ``jobs`` or the fork's)."""
    jobs = getattr(task, "jobs", None)
    if isinstance(jobs, list):  # argos taskgen: a list of Job
        return [{"start_date": j.start_date, "end_date": j.end_date} for j in jobs]
    records = task.get("jobs") or {}  # malsami fork: {"1": [start, end, exit type]}
    out = []
    for key in sorted(records, key=lambda k: int(k) if str(k).isdigit() else 0):
        record = [*records[key], None, None]
        out.append({"start_date": record[0], "end_date": record[1]})
    return out


def task_document(task: Any) -> dict[str, Any]:
    """One task's document, as the original inserted it (a copy: the set may run again)."""
    return {"description": copy.deepcopy(dict(task)), "jobs": job_records(task)}


class MongoMonitor(AbstractMonitor):
    """Stores the tasks of every finished set, with their jobs, in MongoDB (or farm's store)."""

    DATABASE = "tasksets"
    COLLECTION = "taskset.task"

    def __init__(self, uri: str = "mongodb://localhost:27017") -> None:
        self.uri = uri
        self.client: Any = None
        self.database: Any = None
        store = store_for(uri)
        self.documents = DocumentStore(store) if store is not None else None
        if self.documents is None:
            pymongo = require("pymongo", "mongo", "MongoMonitor")
            self.client = pymongo.MongoClient(uri)
            self.database = self.client[self.DATABASE]

    def __taskset_event__(self, taskset: Any, event: Any = None) -> None:
        pass

    def __taskset_start__(self, taskset: Any) -> None:
        pass

    def __taskset_finish__(self, taskset: Any) -> None:
        documents = [task_document(task) for task in taskset]
        if self.documents is not None:
            self.documents.insert(self.DATABASE, self.COLLECTION, documents, taskset)
            return
        collection = self.database[self.COLLECTION]
        for document in documents:
            collection.insert_one(document)

    def __taskset_stop__(self, taskset: Any) -> None:
        pass

    def close(self) -> None:
        """Close the client or the store connection (farm addition; called by farm at close)."""
        if self.documents is not None:
            self.documents.close()
        elif self.client is not None:
            self.client.close()
