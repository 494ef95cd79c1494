"""HypervisorsBackend with fake per-host backends: placement, back-off, host loss, status."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from farm.backend import create
from farm.backend.base import Backend, Guest
from farm.backend.multihost import HypervisorsBackend, MultiHostGuest
from farm.config import FarmConfig, HypervisorConfig
from farm.errors import BackendError


class FakeGuest(Guest):
    """A guest that is alive until destroyed."""

    def __init__(self, name: str, host: FakeHostBackend) -> None:
        self.name = name
        self.host = host
        self.destroyed = False

    def address(self, timeout: float) -> tuple[str, int]:
        return ("127.0.0.1", 1)

    def alive(self) -> bool:
        return not self.destroyed

    def destroy(self) -> None:
        self.destroyed = True
        if self.host.gone:
            raise BackendError("client socket is closed")


class FakeHostBackend(Backend):
    """One fake hypervisor: can refuse spawns, be unreachable, or lose its connection."""

    def __init__(self, name: str, on_lost: Callable[[str], None]) -> None:
        self.name = name
        self.on_lost = on_lost
        self.fail_spawns = False
        self.gone = False
        self.spawned: list[str] = []
        self.probes = 0

    def spawn(self, name: str, token: str) -> Guest:
        if self.gone:
            raise BackendError(f"{self.name}: cannot connect")
        if self.fail_spawns:
            raise BackendError(f"{self.name}: createXML failed")
        self.spawned.append(name)
        return FakeGuest(name, self)

    def probe(self) -> None:
        self.probes += 1
        if self.gone:
            raise BackendError(f"{self.name}: connection refused")

    def check(self) -> None:
        self.probe()

    def lose(self) -> None:
        """The daemon dies: the connection's close callback fires."""
        self.gone = True
        self.on_lost("daemon closed the connection")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _setup(
    tmp_path: Path, limits: tuple[int, ...] = (2, 2), max_machines: int = 4
) -> tuple[HypervisorsBackend, dict[str, FakeHostBackend], FakeClock]:
    config = FarmConfig(
        state_dir=tmp_path,
        max_machines=max_machines,
        hypervisors=[
            {"name": f"h{i}", "uri": f"qemu+ssh://h{i}/system", "max_machines": n}
            for i, n in enumerate(limits)
        ],
        hypervisor_retry_max=8.0,
    )
    fakes: dict[str, FakeHostBackend] = {}

    def factory(cfg: FarmConfig, hv: HypervisorConfig, on_lost: Callable[[str], None]) -> Backend:
        fakes[hv.name] = FakeHostBackend(hv.name, on_lost)
        return fakes[hv.name]

    clock = FakeClock()
    backend = HypervisorsBackend(config, factory=factory, clock=clock, prober=False)
    backend.check()
    return backend, fakes, clock


def _hosts(backend: HypervisorsBackend) -> dict[str, dict[str, object]]:
    return {h["name"]: h for h in backend.status()}  # type: ignore[misc]


def test_least_loaded_host_first_and_per_host_limits(tmp_path: Path) -> None:
    """Guests alternate over equally loaded hosts; a full host takes no more."""
    backend, fakes, _ = _setup(tmp_path, limits=(3, 1), max_machines=4)
    guests = [backend.spawn(f"qemu{i}", "t") for i in range(1, 5)]
    assert fakes["h0"].spawned == ["qemu1", "qemu3", "qemu4"]
    assert fakes["h1"].spawned == ["qemu2"]
    with pytest.raises(BackendError, match=r"h0 full \(3/3\).*h1 full \(1/1\)"):
        backend.spawn("qemu5", "t")
    guests[1].destroy()  # frees h1's slot
    backend.spawn("qemu5", "t")
    assert fakes["h1"].spawned == ["qemu2", "qemu5"]
    assert backend.capacity == 4


def test_failing_host_backs_off_and_the_other_takes_its_share(tmp_path: Path) -> None:
    """A spawn failure falls over to the next host at once; retries back off exponentially."""
    backend, fakes, clock = _setup(tmp_path, limits=(4, 4))
    fakes["h0"].fail_spawns = True
    backend.spawn("qemu1", "t")
    assert fakes["h1"].spawned == ["qemu1"]
    h0 = _hosts(backend)["h0"]
    assert (
        h0["state"] == "backoff"
        and h0["next_retry"] == 1.0
        and "createXML" in str(h0["last_error"])
    )
    backend.spawn("qemu2", "t")  # h0 still backing off: no attempt there
    assert fakes["h1"].spawned == ["qemu1", "qemu2"]
    clock.now += 1.0  # retry due: h0 (least loaded) is tried, fails again, back-off doubles
    backend.spawn("qemu3", "t")
    assert _hosts(backend)["h0"]["next_retry"] == 2.0
    clock.now += 2.0
    fakes["h0"].fail_spawns = False
    backend.spawn("qemu4", "t")
    assert fakes["h0"].spawned == ["qemu4"]
    h0 = _hosts(backend)["h0"]
    assert h0["state"] == "up" and h0["failures"] == 0 and h0["machines"] == 1


def test_backoff_is_capped(tmp_path: Path) -> None:
    backend, fakes, clock = _setup(tmp_path, limits=(4, 10), max_machines=7)
    fakes["h0"].fail_spawns = True
    for i in range(1, 8):
        clock.now += 100.0
        backend.spawn(f"qemu{i}", "t")
    assert _hosts(backend)["h0"]["next_retry"] == 8.0  # hypervisor_retry_max


def test_lost_host_kills_its_guests_and_comes_back(tmp_path: Path) -> None:
    """Connection lost: its guests read dead at once, it is down, others take new guests."""
    backend, fakes, clock = _setup(tmp_path, limits=(4, 4))
    guests = [backend.spawn(f"qemu{i}", "t") for i in range(1, 5)]
    on_h1 = [g for g in guests if isinstance(g, MultiHostGuest) and g.host.name == "h1"]
    assert len(on_h1) == 2 and all(g.alive() for g in guests)
    fakes["h1"].lose()
    assert [g.alive() for g in on_h1] == [False, False]
    assert all(g.alive() for g in guests if g not in on_h1)
    status = _hosts(backend)["h1"]
    assert status["state"] == "down" and status["lost"] == 1
    assert "connection lost" in str(status["last_error"])
    for g in on_h1:
        g.destroy()  # the dead host's destroy error is swallowed; its slot is freed
    assert _hosts(backend)["h1"]["machines"] == 0
    respawned = [backend.spawn(g.name, "t") for g in on_h1]
    assert all(isinstance(g, MultiHostGuest) and g.host.name == "h0" for g in respawned)
    assert _hosts(backend)["h0"]["machines"] == 4
    # the daemon is back: after the back-off, the next spawn probes and uses it again
    fakes["h1"].gone = False
    guests[0].destroy()
    clock.now += 1.0
    again = backend.spawn("qemu9", "t")
    assert isinstance(again, MultiHostGuest) and again.host.name == "h1"
    assert _hosts(backend)["h1"]["state"] == "up"


def test_destroy_error_of_a_live_host_is_raised(tmp_path: Path) -> None:
    backend, fakes, _ = _setup(tmp_path, limits=(1, 1))
    guest = backend.spawn("qemu1", "t")
    fakes["h0"].gone = True  # destroy fails, but the connection was never reported lost
    with pytest.raises(BackendError):
        guest.destroy()
    assert _hosts(backend)["h0"]["machines"] == 0


def test_unreachable_host_at_start_is_down_not_fatal(tmp_path: Path) -> None:
    config = FarmConfig(
        state_dir=tmp_path,
        hypervisors=[{"name": "a", "uri": "qemu:///system"}, {"name": "b", "uri": "qemu:///x"}],
    )
    unreachable = {"b"}

    def factory(cfg: FarmConfig, hv: HypervisorConfig, on_lost: Callable[[str], None]) -> Backend:
        fake = FakeHostBackend(hv.name, on_lost)
        fake.gone = hv.name in unreachable
        return fake

    backend = HypervisorsBackend(config, factory=factory, prober=False)
    backend.check()
    assert [h["state"] for h in backend.status()] == ["up", "down"]
    unreachable.add("a")
    with pytest.raises(BackendError, match="no hypervisor host is reachable"):
        HypervisorsBackend(config, factory=factory, prober=False).check()


def test_all_hosts_failing_raises_with_every_reason(tmp_path: Path) -> None:
    backend, fakes, _ = _setup(tmp_path)
    for fake in fakes.values():
        fake.fail_spawns = True
    with pytest.raises(BackendError, match="h0: h0: createXML failed; h1: h1: createXML"):
        backend.spawn("qemu1", "t")
    assert {h["state"] for h in backend.status()} == {"backoff"}


def test_prober_reconnects_a_down_host(tmp_path: Path) -> None:
    """The prober thread brings a host whose daemon came back to ``up`` by itself."""
    backend, fakes, clock = _setup(tmp_path)
    told: list[int] = []
    backend.on_capacity_changed = lambda: told.append(backend.capacity)
    fakes["h1"].lose()
    assert backend.capacity == 2  # only h0's limit while h1 is down
    fakes["h1"].gone = False
    clock.now += 1.0  # the back-off has passed
    thread = threading.Thread(target=backend._probe_loop, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if _hosts(backend)["h1"]["state"] == "up":
                break
            threading.Event().wait(0.01)
        assert _hosts(backend)["h1"]["state"] == "up"
        assert fakes["h1"].probes >= 2
        for _ in range(200):
            if told:
                break
            threading.Event().wait(0.01)
        assert told == [4]  # the Distributor is told to fill the room again
    finally:
        backend.close()
        thread.join(2)
    assert not thread.is_alive()


def test_create_picks_multihost_when_hypervisors_are_configured(tmp_path: Path) -> None:
    config = FarmConfig(state_dir=tmp_path, hypervisors=[{"uri": "qemu+ssh://rack1/system"}])
    backend = create(config)
    try:
        assert isinstance(backend, HypervisorsBackend)
        assert [h["name"] for h in backend.status()] == ["rack1"]
        assert backend.status()[0]["limit"] == config.machine_cap
    finally:
        backend.close()
