"""MongoMonitor's documents in farm's shared PostgreSQL store: several distributors, one store.

A real PostgreSQL server (farm.testing's farm_postgres fixture); the distributors
run on the fake backend. No MongoDB server can run here: the pymongo path is
tested against a fake in tests/unit/test_compat_monitors.py.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from farm.backend.fake import FakeBackend, session_class_for
from farm.compat.malsami.distributorClass import Distributor as MalsamiDistributor
from farm.compat.malsami.monitors.docstore import DocumentStore, store_for
from farm.compat.malsami.monitors.mongo import MongoMonitor
from farm.config import FarmConfig
from tests.data.compat import malsami_test
from tests.helpers import wait_for

pytestmark = pytest.mark.process


def _malsami(tmp_path: Path, name: str) -> MalsamiDistributor:
    backend = FakeBackend()
    config = FarmConfig(state_dir=tmp_path / name, log_dir=tmp_path / "log", idle_linger=0.05)
    return MalsamiDistributor(
        max_machine=2, max_allowed=4, logging_level=logging.INFO,
        config=config, backend=backend, session_class=session_class_for(backend),
    )  # fmt: skip


def test_three_distributors_write_one_postgres_store(
    tmp_path: Path, farm_postgres_url: str
) -> None:
    assert farm_postgres_url.startswith("postgresql://")
    reader = DocumentStore(store_for(farm_postgres_url))  # type: ignore[arg-type]
    dists = [_malsami(tmp_path, f"d{i}") for i in range(3)]
    gate = threading.Barrier(3)

    def submit(dist: MalsamiDistributor, sets: int) -> None:
        monitor: Any = MongoMonitor(farm_postgres_url)  # each opens its own connection
        gate.wait()  # the first inserts (and the table's creation) race
        dist.add_job([malsami_test.exampleTest() for _ in range(sets)], monitor)

    threads = [threading.Thread(target=submit, args=(d, n)) for d, n in zip(dists, (1, 2, 3))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        def stored() -> int:
            return len(reader.find("tasksets", "taskset.task"))

        wait_for("six sets stored", lambda: stored() == 6 * 5, timeout=90)
    finally:
        for dist in dists:
            dist.close()
    documents = reader.find("tasksets", "taskset.task")
    reader.close()
    hey = [d for d in documents if d["description"]["pkg"] == "hey"]
    assert len(hey) == 6 and all(len(d["jobs"]) == 5 for d in hey)
    assert all(set(j) == {"start_date", "end_date"} for d in hey for j in d["jobs"])
    with psycopg.connect(farm_postgres_url) as conn:
        rows = conn.execute("SELECT db, collection, COUNT(*) FROM documents GROUP BY 1, 2")
        assert rows.fetchall() == [("tasksets", "taskset.task", 30)]
        # farm's own results tables live in the same database
        assert conn.execute("SELECT to_regclass('tasksets') IS NOT NULL").fetchone() == (True,)
