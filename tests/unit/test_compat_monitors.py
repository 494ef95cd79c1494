"""The MaLSAMi distributor's mongo, dataGeneration and valuetesting monitors.

MongoMonitor's pymongo path runs against ``fake_pymongo`` (a fake: no MongoDB
server can run here); its farm-store path (``sqlite:///``) is real, with two
distributors writing one database.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from farm.backend.fake import FakeBackend, session_class_for
from farm.compat.malsami.distributorClass import Distributor as MalsamiDistributor
from farm.compat.malsami.monitors.dataGenerationMonitor import DataGenerationMonitor
from farm.compat.malsami.monitors.docstore import DocumentStore, store_for
from farm.compat.malsami.monitors.loggingMonitor import LoggingMonitor
from farm.compat.malsami.monitors.mongo import MongoMonitor, task_document
from farm.compat.malsami.monitors.stdout import StdOutMonitor
from farm.compat.malsami.monitors.valuetestingmonitor import ValueTestingMonitor
from farm.compat.taskgen.task import Job
from farm.compat.taskgen.task import Task as TaskgenTask
from farm.config import FarmConfig
from farm.errors import MissingDependency
from tests.data.compat import malsami_test
from tests.helpers import wait_for


class FakeCollection:
    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    def insert_one(self, document: dict[str, Any]) -> Any:
        self.documents.append(copy.deepcopy(document))
        return types.SimpleNamespace(inserted_id=len(self.documents))


class FakeMongoClient:
    """Records what a MongoClient would have been asked (databases -> collections)."""

    made: list[FakeMongoClient] = []

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.databases: dict[str, dict[str, FakeCollection]] = {}
        self.closed = False
        FakeMongoClient.made.append(self)

    def __getitem__(self, name: str) -> Any:
        collections = self.databases.setdefault(name, {})

        class Database:
            def __getitem__(self, collection: str) -> FakeCollection:
                return collections.setdefault(collection, FakeCollection())

        return Database()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_pymongo(monkeypatch: pytest.MonkeyPatch) -> type[FakeMongoClient]:
    module = types.ModuleType("fake_pymongo")
    module.MongoClient = FakeMongoClient  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pymongo", module)
    FakeMongoClient.made = []
    return FakeMongoClient


def _malsami(tmp_path: Path, name: str = "state") -> MalsamiDistributor:
    backend = FakeBackend()
    config = FarmConfig(state_dir=tmp_path / name, log_dir=tmp_path / "log", idle_linger=0.05)
    return MalsamiDistributor(
        max_machine=2, max_allowed=4, logging_level=logging.INFO,
        config=config, backend=backend, session_class=session_class_for(backend),
    )  # fmt: skip


def _run(tmp_path: Path, sets: list[Any], monitor: Any, done: Any, name: str = "state") -> None:
    dist = _malsami(tmp_path, name)
    try:
        dist.add_job(sets, monitor)
        wait_for("sets finished", done, timeout=60)
    finally:
        dist.close()


def _check_documents(documents: list[dict[str, Any]], sets: int) -> None:
    assert len(documents) == 5 * sets  # one per task of exampleTest
    hey = [d for d in documents if d["description"]["pkg"] == "hey"]
    assert len(hey) == sets
    for doc in hey:
        assert set(doc) == {"description", "jobs"}
        assert doc["description"]["caps"] == 50 and doc["description"]["priority"] == 0
        assert len(doc["jobs"]) == 5  # numberofjobs 5
        for job in doc["jobs"]:
            assert set(job) == {"start_date", "end_date"}
            assert isinstance(job["start_date"], int) and job["end_date"] >= job["start_date"]


def test_mongo_monitor_inserts_one_document_per_task(
    tmp_path: Path, fake_pymongo: type[FakeMongoClient]
) -> None:
    monitor = MongoMonitor()
    (client,) = fake_pymongo.made
    assert client.uri == "mongodb://localhost:27017"
    sets = [malsami_test.exampleTest(), malsami_test.exampleTest()]
    collection = client["tasksets"]["taskset.task"]
    _run(tmp_path, sets, monitor, lambda: len(collection.documents) == 10)
    assert list(client.databases) == ["tasksets"]
    assert list(client.databases["tasksets"]) == ["taskset.task"]
    _check_documents(collection.documents, 2)
    assert client.closed  # the distributor's close() closes its monitors


def test_mongo_monitor_without_pymongo_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymongo", None)  # import pymongo -> ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'farm\[mongo\]'"):
        MongoMonitor("mongodb://db.example:27017")


def test_several_distributors_share_one_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    assert uri.startswith("sqlite:////")  # absolute path: four slashes
    first, second = MongoMonitor(uri), MongoMonitor(uri)
    reader = DocumentStore(store_for(uri))  # type: ignore[arg-type]

    def count() -> int:
        return len(reader.find("tasksets", "taskset.task"))

    one = _malsami(tmp_path, "one")
    two = _malsami(tmp_path, "two")
    try:
        one.add_job([malsami_test.exampleTest()], first)
        two.add_job([malsami_test.exampleTest(), malsami_test.exampleTest()], second)
        wait_for("three sets stored", lambda: count() == 15, timeout=60)
    finally:
        one.close()
        two.close()
    _check_documents(reader.find("tasksets", "taskset.task"), 3)
    reader.close()
    db = sqlite3.connect(tmp_path / "shared.db")  # beside farm's own results tables
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"documents", "tasksets", "jobs"} <= tables
    assert db.execute("SELECT DISTINCT db, collection FROM documents").fetchall() == [
        ("tasksets", "taskset.task")
    ]


def test_store_uris() -> None:
    assert store_for("mongodb://localhost:27017") is None
    rel = store_for("sqlite:///results.db")
    assert rel is not None and str(rel.path) == "results.db"  # type: ignore[attr-defined]
    assert type(store_for("postgresql://u@h/db")).__name__ == "PostgresMonitor"


def test_taskgen_tasks_give_the_same_document_shape() -> None:
    task = TaskgenTask({"id": 0, "pkg": "hey", "numberofjobs": 1})
    task.jobs = [Job()]
    task.jobs[0].start_date, task.jobs[0].end_date = 5, 9
    assert task_document(task)["jobs"] == [{"start_date": 5, "end_date": 9}]


def test_data_generation_and_value_testing_monitors(tmp_path: Path) -> None:
    generated: list[Any] = []
    values: list[Any] = []

    class Both(DataGenerationMonitor):
        def __taskset_finish__(self, taskset: Any) -> None:
            super().__taskset_finish__(taskset)
            ValueTestingMonitor(values).__taskset_finish__(taskset)

    sets = [malsami_test.exampleTest(), malsami_test.exampleTest()]
    _run(tmp_path, sets, Both(generated), lambda: len(generated) == 2)
    assert {id(s) for s in generated} == {id(s) for s in sets}  # the very sets added
    assert len(values) == 2
    for tries, by_task in values:
        assert tries == 0 and sorted(by_task) == ["0", "1", "2", "3", "4"]
        task, jobs = by_task["0"]
        assert task["pkg"] == "hey" and len(jobs) == 5
        assert all(kind == "EXIT" and end >= start for start, end, kind in jobs)


def test_bad_and_stopped_sets() -> None:
    taskset = malsami_test.exampleTest()
    hey = next(iter(taskset))
    hey["jobs"] = {"1": [10, 20, "EXIT"], "2": [30]}  # job 2 still running when given up
    values: list[Any] = []
    ValueTestingMonitor(values).__taskset_bad__(taskset, 3)
    (tries, by_task), *_ = values
    assert tries == 3 and by_task["0"][1] == [(10, 20, "EXIT"), (30, None, None)]
    generated: list[Any] = []
    DataGenerationMonitor(generated).__taskset_bad__(taskset, 3)
    assert generated == [taskset]
    for monitor in (DataGenerationMonitor([]), ValueTestingMonitor([])):
        hey["jobs"] = {"1": [1, 2, "EXIT"]}
        monitor.__taskset_stop__(taskset)
        assert hey["jobs"] == {}


def test_stdout_and_logging_monitors(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    taskset = malsami_test.exampleTest()
    next(iter(taskset))["jobs"] = {"2": [30, 40, "EXIT"], "1": [10, 20, "EXIT"]}
    StdOutMonitor().__taskset_finish__(taskset)
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["task: 0", "1 10 20 EXIT", "2 30 40 EXIT"] and "task: 4" in out
    with caplog.at_level(logging.INFO, logger="OutputMonitorLogger"):
        LoggingMonitor().__taskset_finish__(taskset)
        LoggingMonitor().__taskset_bad__(taskset, 2)
    messages = [r.getMessage() for r in caplog.records if r.name == "OutputMonitorLogger"]
    assert messages[0] == "task: 0" and "'jobs': {'2': [30, 40, 'EXIT']" in messages[1]
    assert messages[-1].startswith("BAD: after 2 tries")
    LoggingMonitor().__taskset_stop__(taskset)
    assert all(task["jobs"] == {} for task in taskset)
