"""What farm sends Genode for an original task set: the originals' task dicts, priorities as given.

Genode's Taskloader runs a task at CPU priority ``(128 - priority) * k``
(a lower Genode value is more urgent), so a larger task priority is more
urgent there as on farm's agents: no inversion on either path.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from farm.compat.convert import CompatSource, farm_priority, farm_task
from farm.compat.malsami.taskgen.blocks import caps, hey, numberofjobs, period, pi, priority, quota
from farm.compat.malsami.taskgen.task import Task
from farm.compat.malsami.taskgen.taskset import TaskSet
from farm.session import GenodeSession
from farm.session.fake_dom0 import FakeDom0Server
from farm.session.genode_wire import Command

#: The SEND_DESCS document farm sends for SAMPLE (the originals' keys, in their order).
SAMPLE_XML = (
    "<taskset>"
    "<periodictask><id>0</id><priority>127</priority><deadline>1</deadline><quota>5M</quota>"
    "<caps>50</caps><pkg>hey</pkg><config><arg1>1</arg1></config><cores>2</cores>"
    "<coreoffset>1</coreoffset><criticaltime>0</criticaltime><period>100</period>"
    "<numberofjobs>2</numberofjobs><offset>0</offset></periodictask>"
    "<periodictask><id>1</id><priority>0</priority><deadline>1</deadline><quota>5M</quota>"
    "<caps>50</caps><pkg>pi</pkg><config><arg1>0</arg1></config><cores>2</cores>"
    "<coreoffset>1</coreoffset><criticaltime>0</criticaltime><period>0</period>"
    "<numberofjobs>1</numberofjobs><offset>0</offset></periodictask>"
    "</taskset>"
)


def sample() -> TaskSet:
    """hey at priority 127 (most urgent) and pi at 0 (least), as a MaLSAMi user writes them."""
    return TaskSet(
        [
            Task(
                hey.Value(1),
                period.Value(100),
                priority.Value(127),
                numberofjobs.Value(2),
                quota.Value(5),
                caps.Value(50),
            ),
            Task(pi.Value(0), period.Value(0), priority.Value(0), quota.Value(5), caps.Value(50)),
        ]
    )


@pytest.fixture
def fake() -> Iterator[FakeDom0Server]:
    server = FakeDom0Server()
    try:
        yield server
    finally:
        server.close()


def test_genode_is_sent_the_original_tasks_unchanged(fake: FakeDom0Server) -> None:
    original = sample()
    variant = next(iter(CompatSource(original.variants(), "m").variants()))
    with GenodeSession("127.0.0.1", fake.port) as session:
        session.start(variant)
        for _ in range(200):
            if session.finished():
                break
            session.run(5.0)
        assert session.finished()
    assert fake.record.descs == [SAMPLE_XML]
    assert Command.START in fake.record.commands and fake.record.errors == []
    assert all("jobs" in task for task in original)  # filled for monitors, never sent


def test_farm_agents_keep_the_order_of_original_priorities() -> None:
    variant = next(iter(CompatSource(sample().variants(), "m").variants()))
    tasks = variant.description()["tasks"]
    assert [t["priority"] for t in tasks] == [127, 1]  # 0 is the Taskloader's lowest too
    assert [t["config"]["arg1"] for t in tasks] == [1, 1]  # farm's pi needs digits >= 1
    prios = [farm_priority(p) for p in range(129)]
    assert prios == [1, *range(1, 129)]
    assert all(a <= b for a, b in itertools.pairwise(prios))  # no inversion anywhere
    assert farm_task({"id": 0, "pkg": "hey", "critical-time": 30})["criticaltime"] == 30
