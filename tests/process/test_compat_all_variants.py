"""The two example sets of a million variants each, iterated whole through farm.compat.

Every variant is generated, converted to a farm set and validated (one to two
minutes of CPU each: too slow for the unit tier, which runs their first variants);
a stride sample (every 100000th and the last) then runs end to end on the fake
backend. Nothing here starts a process: it lives in this tier for its time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.compat.convert import CompatSource
from tests.unit.test_compat_tasksets import EXAMPLES, HUGE, VARIANT_COUNTS, _Collect, _distributor

pytestmark = pytest.mark.process

STRIDE = 100_000


class _Listed:
    """Original-shaped variants already made, as a task set taskgen's Distributor can start."""

    def __init__(self, sets: list[Any]) -> None:
        self.sets = sets

    def variants(self) -> Iterator[Any]:
        return iter(self.sets)


@pytest.mark.parametrize("name", sorted(HUGE))
def test_every_variant_of_a_million_variant_set(name: str, tmp_path: Path) -> None:
    taskset = EXAMPLES[name]()
    count = VARIANT_COUNTS[name]
    ids = [t["id"] for t in taskset]
    sample: list[Any] = []
    seen = 0
    last: Any = None
    for seen, variant in enumerate(CompatSource(taskset.variants(), name).variants(), 1):
        assert variant.index == seen - 1
        if (seen - 1) % STRIDE == 0:
            assert [t["id"] for t in variant.description()["tasks"]] == ids
            sample.append(variant.compat)
        last = variant
    assert seen == count
    sample.append(last.compat)
    configs = {tuple(str(t["config"]) for t in s) for s in sample}
    assert len(configs) == len(sample)  # distinct variants, the last one too
    dist = _distributor(tmp_path, set_time_limit=0.3, max_machines=2)
    mon = _Collect()
    dist.event_handler = mon
    try:
        dist.start(_Listed(sample), wait=False)
        assert dist.wait_finished(timeout=120)
    finally:
        dist.close()
    assert len(mon.finished) == len(sample) == count // STRIDE + 1
    assert all(j.start_date is not None for s in mon.finished for t in s for j in t.jobs)
