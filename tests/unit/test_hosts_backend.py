"""ExistingHostsBackend with fake availability (no sockets, no ping) and its Distributor wiring."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from farm import Distributor
from farm.backend.hosts import DOWN, REFUSED, UP, ExistingHostsBackend
from farm.config import FarmConfig
from farm.errors import BackendError, BootError, ConfigError, SessionError
from farm.events import Event
from farm.session.dry import SimulatedSession
from farm.taskset import Task, TaskSet

from .test_distributor import RecordingMonitor


class FakeNet:
    """Availability per host, changeable by the test; counts probes."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = dict(states)
        self.probes: dict[str, int] = {}
        self.lock = threading.Lock()

    def probe(self, host: str, port: int, timeout: float) -> str:
        with self.lock:
            self.probes[host] = self.probes.get(host, 0) + 1
            return self.states.get(host, DOWN)

    def set(self, host: str, state: str) -> None:
        with self.lock:
            self.states[host] = state


def cfg(tmp_path: Path, **kw: Any) -> FarmConfig:
    base: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "log_dir": tmp_path / "log",
        "boot_timeout": 5.0,
        "idle_linger": 0.05,
        "heartbeat_timeout": 2.0,
    }
    base.update(kw)
    return FarmConfig(**base)


@pytest.fixture
def make_backend(tmp_path: Path) -> Iterator[Callable[..., ExistingHostsBackend]]:
    made: list[ExistingHostsBackend] = []

    def make(targets: Any, net: FakeNet, **kw: Any) -> ExistingHostsBackend:
        config = cfg(tmp_path, **kw.pop("config", {}))
        kw.setdefault("rescan_interval", 0.05)
        backend = ExistingHostsBackend(config, targets, probe=net.probe, **kw)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for b in made:
            b.close()


def test_spawn_leases_distinct_available_hosts(
    make_backend: Callable[..., ExistingHostsBackend],
) -> None:
    net = FakeNet({"10.0.0.1": UP, "10.0.0.3": UP})
    backend = make_backend(["10.0.0.0/29"], net, config={"boot_timeout": 0.5})
    a = backend.spawn("qemu1", "tok")
    b = backend.spawn("qemu2", "tok")
    assert {a.address(1.0), b.address(1.0)} == {("10.0.0.1", 3001), ("10.0.0.3", 3001)}
    assert a.alive() and b.alive()
    assert "10.0.0." in a.describe()
    with pytest.raises(BootError, match="no available target among 6 hosts"):
        backend.spawn("qemu3", "tok")
    status = backend.counts()
    assert status["leased"] == 2 and status["down"] + status["probing"] == 4


def test_destroy_releases_and_host_is_reprobed(
    make_backend: Callable[..., ExistingHostsBackend],
) -> None:
    net = FakeNet({"10.0.0.1": UP})
    backend = make_backend(["10.0.0.1"], net, rescan_interval=60.0)
    guest = backend.spawn("qemu1", "tok")
    probes = net.probes["10.0.0.1"]
    guest.destroy()
    guest.destroy()  # idempotent
    again = backend.spawn("qemu1", "tok")  # released host probed again at once, not in 60 s
    assert again.address(1.0) == ("10.0.0.1", 3001)
    assert net.probes["10.0.0.1"] == probes + 1


def test_spawn_waits_until_a_rescan_finds_a_host(
    make_backend: Callable[..., ExistingHostsBackend],
) -> None:
    net = FakeNet({})
    backend = make_backend(["10.0.0.5", "10.0.0.6"], net)
    backend.start()
    assert backend.wait_for(lambda s: s["new"] == 0 and s["free"] == 0, 5.0)
    threading.Timer(0.2, net.set, ("10.0.0.6", UP)).start()
    guest = backend.spawn("qemu1", "tok")
    assert guest.address(1.0) == ("10.0.0.6", 3001)


def test_unavailable_hosts_are_rescanned(make_backend: Callable[..., ExistingHostsBackend]) -> None:
    net = FakeNet({})
    backend = make_backend(["10.0.0.9"], net, rescan_interval=0.02)
    backend.start()
    deadline = time.monotonic() + 5
    while net.probes.get("10.0.0.9", 0) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert net.probes["10.0.0.9"] >= 5
    assert backend.counts()["dropped"] == 0  # no reply is not a refusal


def test_refused_repeatedly_is_dropped(make_backend: Callable[..., ExistingHostsBackend]) -> None:
    net = FakeNet({"10.0.0.1": REFUSED, "10.0.0.2": UP})
    backend = make_backend(["10.0.0.1", "10.0.0.2"], net, drop_after=3, rescan_interval=0.01)
    backend.start()
    assert backend.wait_for(lambda s: s["dropped"] == 1, 5.0)
    assert net.probes["10.0.0.1"] == 3
    time.sleep(0.1)
    assert net.probes["10.0.0.1"] == 3  # never probed again
    assert backend.hosts()[0]["state"] == "dropped"


def test_refusals_must_be_consecutive(tmp_path: Path) -> None:
    script = [REFUSED, REFUSED, DOWN, REFUSED, REFUSED, DOWN, REFUSED, REFUSED, UP]
    seen: list[str] = []

    def probe(host: str, port: int, timeout: float) -> str:
        seen.append(script[min(len(seen), len(script) - 1)])
        return seen[-1]

    backend = ExistingHostsBackend(
        cfg(tmp_path), ["10.0.0.1"], probe=probe, drop_after=3, rescan_interval=0.01
    )
    try:
        guest = backend.spawn("qemu1", "tok")  # never 3 refusals in a row: not dropped
        assert guest.address(1.0) == ("10.0.0.1", 3001)
        assert len(seen) == len(script)
    finally:
        backend.close()


def test_host_that_once_answered_is_never_dropped(
    make_backend: Callable[..., ExistingHostsBackend],
) -> None:
    net = FakeNet({"10.0.0.1": UP})
    backend = make_backend(["10.0.0.1"], net, drop_after=2, rescan_interval=0.01)
    guest = backend.spawn("qemu1", "tok")
    net.set("10.0.0.1", REFUSED)  # rebooting: agent not up yet
    guest.destroy()
    deadline = time.monotonic() + 5
    # poll the outcome, not the probe count: a probe is counted before its result is
    # taken in, so on a busy host the 8th count could come before "down" (seen once)
    while time.monotonic() < deadline and not (
        net.probes["10.0.0.1"] >= 8
        and backend.hosts()[0]["state"] == "down"
        and backend.hosts()[0]["refusals"] >= 2
    ):
        time.sleep(0.01)
    assert backend.hosts()[0]["state"] == "down"
    assert backend.hosts()[0]["refusals"] >= 2
    net.set("10.0.0.1", UP)
    assert backend.spawn("qemu1", "tok").address(1.0) == ("10.0.0.1", 3001)


def test_probes_run_in_parallel_bounded(make_backend: Callable[..., ExistingHostsBackend]) -> None:
    lock = threading.Lock()
    running = [0, 0]  # now, max
    gate = threading.Barrier(3, timeout=5)

    def probe(host: str, port: int, timeout: float) -> str:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        try:
            gate.wait()  # only passes when 3 probes run at the same time
        except threading.BrokenBarrierError:
            pass
        with lock:
            running[0] -= 1
        return UP

    backend = ExistingHostsBackend(
        cfg(Path("/nonexistent")), ["10.0.0.0/29"], probe=probe, workers=3, rescan_interval=60
    )
    try:
        backend.start()
        assert backend.wait_for(lambda s: s["free"] == 6, 10.0)
        assert running[1] == 3
        assert not gate.broken
    finally:
        backend.close()


def test_spawn_gives_up_when_the_machine_retires(
    make_backend: Callable[..., ExistingHostsBackend],
) -> None:
    backend = make_backend(["10.0.0.1"], FakeNet({}), config={"boot_timeout": 30.0})
    errors: list[BaseException] = []

    class FakeMachine(threading.Thread):
        retiring = False

        def run(self) -> None:
            try:
                backend.spawn("qemu1", "tok")
            except BackendError as exc:
                errors.append(exc)

    machine = FakeMachine()
    machine.start()
    time.sleep(0.1)
    machine.retiring = True
    machine.join(5.0)
    assert not machine.is_alive()
    assert "shutting down" in str(errors[0])


def test_close_fails_leases_and_refuses_spawns(
    make_backend: Callable[..., ExistingHostsBackend],
) -> None:
    backend = make_backend(["10.0.0.1"], FakeNet({"10.0.0.1": UP}))
    guest = backend.spawn("qemu1", "tok")
    backend.close()
    assert not guest.alive()
    guest.destroy()
    with pytest.raises(BackendError, match="closed"):
        backend.spawn("qemu2", "tok")


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rescan_interval"):
        ExistingHostsBackend(cfg(tmp_path), ["10.0.0.1"], rescan_interval=0)
    with pytest.raises(ConfigError, match="drop_after"):
        ExistingHostsBackend(cfg(tmp_path), ["10.0.0.1"], drop_after=0)
    with pytest.raises(ConfigError, match="abc/24"):
        ExistingHostsBackend(cfg(tmp_path), ["abc/24"])


def test_default_port_is_the_agent_port(tmp_path: Path) -> None:
    backend = ExistingHostsBackend(cfg(tmp_path, agent_port=4444), "10.0.0.1, 10.0.0.2:5")
    assert [h["address"] for h in backend.hosts()] == ["10.0.0.1:4444", "10.0.0.2:5"]
    backend.close()


# -- Distributor wiring -------------------------------------------------------------


def test_distributor_targets_vs_config_rules(tmp_path: Path) -> None:
    base = cfg(tmp_path)
    dist = Distributor(["10.0.0.0/29"], config=base)
    try:
        assert dist.backend_kind() == "hosts"
        assert dist.get_max_machine_value() == 6  # min(hosts, machine_cap)
    finally:
        dist.close()
    dist = Distributor("10.0.0.1,10.0.0.2", config=base, max_machines=1)
    try:
        assert dist.backend_kind() == "hosts"
        assert dist.get_max_machine_value() == 1  # explicit max_machines wins
    finally:
        dist.close()
    dist = Distributor(["10.0.0.0/24"], config=base)
    try:
        assert dist.get_max_machine_value() == 7  # capped by machine_cap
    finally:
        dist.close()
    toml = tmp_path / "my.toml"
    toml.write_text(f'backend = "local"\nstate_dir = "{tmp_path / "s2"}"\nlog_dir = "{tmp_path}"\n')
    dist = Distributor(str(toml))
    try:
        assert dist.backend_kind() == "local"
    finally:
        dist.close()
    with pytest.raises(ConfigError, match="not found"):
        Distributor(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="leave backend unset"):
        Distributor(["10.0.0.1"], config=base, backend="qemu")
    with pytest.raises(ConfigError, match="config given twice"):
        Distributor(base, config=base)
    with pytest.raises(ConfigError, match="abc/24"):
        Distributor(["abc/24"], config=base)


class FakeHostSession(SimulatedSession):
    """Simulated session that fails once its host is marked dead in ``net``."""

    net: FakeNet

    def __init__(self, host: str, port: int | None = None, **options: Any) -> None:
        super().__init__(host, port, time_scale=1.0)

    def connect(
        self, timeout: float | None = None, alive: Callable[[], bool] | None = None
    ) -> None:
        if self.net.states.get(self.host) != UP:
            raise SessionError(f"{self.host} refused")

    def _write_start(self, description: dict[str, Any], params: list[Any]) -> None:
        pass

    def _write_events(self, events: list[Event]) -> None:
        pass

    def _receive(self, timeout: float) -> list[Event]:
        if self.net.states.get(self.host) != UP:
            raise SessionError(f"connection to {self.host} lost")
        return super()._receive(min(timeout, 0.05))


def test_distributor_runs_on_hosts_and_survives_a_lost_host(tmp_path: Path) -> None:
    net = FakeNet({"10.0.0.1": UP, "10.0.0.2": UP})
    session = type("BoundSession", (FakeHostSession,), {"net": net})
    config = cfg(tmp_path, set_tries=10, boot_timeout=2.0)
    backend = ExistingHostsBackend(
        config, ["10.0.0.0/29"], session, probe=net.probe, rescan_interval=0.05
    )
    dist = Distributor(config, backend=backend, session_class=session)
    mon = RecordingMonitor()
    ts = TaskSet([Task({"pkg": "hey", "period": 20, "numberofjobs": 10, "x-run": range(12)})])
    try:
        dist.set_max_machine_value(3)
        dist.add_job(ts, mon)
        deadline = time.monotonic() + 20
        while len(mon.finished) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        net.set("10.0.0.4", UP)  # host 4 comes up: the rescan finds it
        net.set("10.0.0.1", DOWN)  # hosts 1 and 2 vanish mid-job
        net.set("10.0.0.2", DOWN)
        assert dist.wait_finished(timeout=60), dist.jobs()
    finally:
        dist.close()
    assert sorted(mon.finished) == list(range(12))
    hosts = {h["address"]: h for h in backend.hosts()}
    assert hosts["10.0.0.4:3001"]["ever_up"]
    assert mon.stopped  # the sets running on the lost hosts were re-queued


def test_spawn_fails_at_once_when_every_target_is_dropped(
    make_backend: Callable[..., ExistingHostsBackend],
) -> None:
    net = FakeNet({"10.0.0.1": REFUSED})
    backend = make_backend(["10.0.0.1"], net, drop_after=2, config={"boot_timeout": 60.0})
    backend.start()
    assert backend.wait_for(lambda s: s["dropped"] == 1, 5.0)
    with pytest.raises(BootError, match="every target was dropped"):
        backend.spawn("qemu1", "tok")


def test_dead_named_target_is_reported_at_once_by_name(
    make_backend: Callable[..., ExistingHostsBackend], caplog: pytest.LogCaptureFixture
) -> None:
    net = FakeNet({"127.0.0.1": REFUSED})
    backend = make_backend(["127.0.0.1:1"], net, drop_after=3, rescan_interval=60.0)
    with caplog.at_level("WARNING", logger="farm.backend.hosts"):
        backend.start()
        assert backend.wait_for(lambda s: s["down"] == 1, 5.0)  # one probe, not drop_after
    assert [r.getMessage() for r in caplog.records] == [
        "127.0.0.1:1: connection refused on the first probe; probing again every 60s"
    ]


def test_every_target_dropped_names_the_targets_not_the_slot(
    make_backend: Callable[..., ExistingHostsBackend],
) -> None:
    net = FakeNet({"127.0.0.1": REFUSED})
    backend = make_backend(["127.0.0.1:1"], net, drop_after=2)
    backend.start()
    assert backend.wait_for(lambda s: s["dropped"] == 1, 5.0)
    with pytest.raises(BootError) as err:
        backend.spawn("qemu1", "tok")
    assert "127.0.0.1:1 refused" in str(err.value) and "qemu1" not in str(err.value)
