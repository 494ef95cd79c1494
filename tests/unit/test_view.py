"""The live view ends when the jobs are done and when the farm has stalled (no busy loop)."""

from __future__ import annotations

from typing import Any

from farm.view import live_view


class FakeStalledDistributor:
    """A farm whose every boot failed: wait_finished returns False at once, forever."""

    def __init__(self) -> None:
        self.waits = 0

    def wait_finished(self, timeout: float | None = None) -> bool:
        self.waits += 1
        assert self.waits < 100, "live_view keeps polling a stalled farm"
        return False

    def stalled(self) -> bool:
        return True

    def jobs(self) -> list[dict[str, Any]]:
        return [
            {
                "job": 1,
                "name": "Hey0TaskSet",
                "total": 1,
                "finished": 0,
                "bad": 0,
                "resumed_from": 0,
            }
        ]

    def machines(self) -> list[dict[str, Any]]:
        return []


def test_live_view_returns_when_no_machine_can_boot() -> None:
    dist = FakeStalledDistributor()
    live_view(dist, refresh=0.01)
    assert dist.waits == 1
