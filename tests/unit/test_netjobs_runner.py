"""NetJobs runner, target resolution and monitor mapping against fakes (no network)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from farm.errors import ConfigError, SessionError
from farm.monitors import SqliteMonitor
from farm.netaddr import split_host_port
from farm.netjobs.client import best_offset
from farm.netjobs.grammar import parse_text
from farm.netjobs.monitor import NetJobsTaskSet, report_to_monitor
from farm.netjobs.report import format_result
from farm.netjobs.runner import Status, TestRunner, simulate
from farm.netjobs.targets import Address, Resolver


class FakeAgentLink:
    """Fake agent: a clock ``offset`` ahead of ours; commands 'sleep S [exit N] [say TEXT]'."""

    def __init__(self, address: Address, offset: float) -> None:
        self.address = address
        self.offset = offset
        self.runs: dict[str, dict[str, Any]] = {}
        self.kills: list[str] = []
        self.closed = False
        self.lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() + self.offset

    def clock(self, samples: int = 8) -> tuple[float, float]:
        return best_offset([(time.monotonic(), self.now(), time.monotonic()) for _ in range(3)])

    def exec(self, command: str, at: float, timeout: float | None) -> dict[str, Any]:
        words = command.split()
        run = {"at": at, "sleep": float(words[1]), "timeout": timeout, "killed": None,
               "exit": int(words[3]) if "exit" in words else 0,
               "say": command.split("say ", 1)[1].encode() if "say" in words else b""}  # fmt: skip
        with self.lock:
            rid = f"x{len(self.runs)}"
            self.runs[rid] = run
        return {"id": rid, "at": at, "late": at < self.now()}

    def poll(self, rid: str, offset: int, wait: float) -> dict[str, Any]:
        time.sleep(min(wait, 0.01))
        run, now = self.runs[rid], self.now()
        end = run["at"] + run["sleep"]
        state = "running" if now >= run["at"] else "waiting"
        ended = None
        if run["killed"] is not None:
            state, ended = "killed", run["killed"]
        elif run["timeout"] is not None and now >= run["at"] + run["timeout"] and end > now:
            state, ended = "timeout", run["at"] + run["timeout"]
        elif now >= end:
            state, ended = "exited", end
        done = state in ("exited", "timeout", "killed")
        data = run["say"][offset:] if done else b""
        return {"state": state, "exit_code": run["exit"] if state == "exited" else -9,
                "started": run["at"] if now >= run["at"] else None, "started_wall": 1e9,
                "ended": ended, "detail": None, "data": data,
                "next_offset": offset + len(data), "eof": done}  # fmt: skip

    def kill(self, rid: str) -> dict[str, Any]:
        self.kills.append(rid)
        self.runs[rid]["killed"] = self.now()
        return {"killed": True, "state": "killed"}

    def close(self) -> None:
        self.closed = True


class FakeFarm:
    """Hands out FakeAgentLinks; addresses in ``down`` refuse to connect."""

    def __init__(self, down: tuple[str, ...] = ()) -> None:
        self.links: list[FakeAgentLink] = []
        self.down = down

    def connect(self, address: Address) -> FakeAgentLink:
        if str(address) in self.down:
            raise SessionError(f"agent at {address} unreachable")
        link = FakeAgentLink(address, offset=1000.0 * (len(self.links) + 1))
        self.links.append(link)
        return link


def runner(farm: FakeFarm) -> TestRunner:
    return TestRunner(farm.connect, Resolver(3001, host_exists=lambda h: h == "localhost"),
                      lead=0.05, poll_wait=0.01, backstop=5.0)  # fmt: skip


def one(text: str) -> Any:
    (test,) = parse_text(text)
    return test


def test_all_start_together_whatever_their_clock_offset() -> None:
    farm = FakeFarm()
    test = one(
        't:\na:1: "sleep 0.05 say hi"\nb:2: "sleep 0.02 exit 3"\nlocalhost: "sleep 0"\nend\n'
    )
    result = runner(farm).run(test)
    assert [r.status for r in result.results] == [Status.SUCCESS, Status.ERROR, Status.SUCCESS]
    assert result.results[0].output == "hi" and result.results[1].exit_code == 3
    assert [r.address for r in result.results] == ["a:1", "b:2", "localhost:3001"]
    assert result.skew is not None and result.skew < 1e-3  # the fakes' offsets cancel out
    assert result.passed and result.returned == 3  # ERROR returned: it did not time out
    assert all(link.closed for link in farm.links)
    assert "=== test t: PASSED" in format_result(result)


def test_minhosts_all_aborts_at_first_timeout_and_kills_the_rest() -> None:
    farm = FakeFarm()
    test = one('t:\na:1: "sleep 5"\n-timeout: 0.05s\nb:1: "sleep 5"\nc:1: "sleep 0"\nend\n')
    result = runner(farm).run(test)
    assert [r.status for r in result.results] == [Status.TIMEOUT, Status.KILLED, Status.SUCCESS]
    assert farm.links[1].kills == ["x0"]
    assert not result.passed and result.aborted and "minhosts all" in result.aborted


def test_minhosts_n_counts_hosts_that_did_not_time_out() -> None:
    text = 't:\n-minhosts: {n}\na:1: "sleep 5"\n-timeout: 0.05s\nb:1: "sleep 0.1"\nend\n'
    ok = runner(FakeFarm()).run(one(text.format(n=1)))
    assert [r.status for r in ok.results] == [Status.TIMEOUT, Status.SUCCESS]
    assert ok.passed and ok.aborted is None
    bad = runner(FakeFarm()).run(one(text.format(n=2)))
    assert bad.results[0].status is Status.TIMEOUT and not bad.passed
    zero = runner(FakeFarm()).run(one(text.format(n=0)))
    assert zero.passed


def test_general_timeout_applies_to_targets_without_their_own() -> None:
    test = one('t:\n-generaltimeout: 0.05s\n-minhosts: 0\na:1: "sleep 5"\nb:1: "sleep 0"\n'
               '-timeout: none\nend\n')  # fmt: skip
    result = runner(FakeFarm()).run(test)
    assert [r.status for r in result.results] == [Status.TIMEOUT, Status.SUCCESS]
    assert result.passed


def test_unreachable_target_with_minhosts_all_starts_nothing() -> None:
    farm = FakeFarm(down=("b:1",))
    result = runner(farm).run(one('t:\na:1: "sleep 0"\nb:1: "sleep 0"\nend\n'))
    assert [r.status for r in result.results] == [Status.KILLED, Status.ERROR]
    assert "unreachable" in (result.results[1].detail or "")
    assert farm.links[0].runs == {} and farm.links[0].closed and not result.passed


def test_unreachable_target_with_minhosts_1_runs_the_others() -> None:
    farm = FakeFarm(down=("b:1",))
    result = runner(farm).run(one('t:\n-minhosts: 1\na:1: "sleep 0"\nb:1: "sleep 0"\nend\n'))
    assert [r.status for r in result.results] == [Status.SUCCESS, Status.ERROR]
    assert result.passed


def test_unresolvable_target_is_an_error_of_that_target() -> None:
    result = runner(FakeFarm()).run(one('t:\n-minhosts: 0\nnowhere: "sleep 0"\nend\n'))
    assert result.results[0].status is Status.ERROR
    assert "neither a farm machine" in (result.results[0].detail or "")


def test_simulate_touches_no_network() -> None:
    result = simulate(one('t:\na:1: "sleep 9"\n-timeout: 2s\nend\n'))
    assert result.simulated and result.passed
    assert result.results[0].status is Status.SUCCESS and "(simulated)" in result.results[0].output


def test_best_offset_takes_the_fastest_sample() -> None:
    assert best_offset([(0.0, 10.0, 1.0), (2.0, 12.05, 2.1)]) == pytest.approx((10.0, 0.1))
    with pytest.raises(ValueError):
        best_offset([])


# -- target resolution --------------------------------------------------------------------


class FakeControlClient:
    """Fake of farm.control.client.ControlClient(path).status()."""

    def __init__(self, machines: list[dict[str, Any]]) -> None:
        self.machines = machines
        self.calls = 0

    def status(self) -> dict[str, Any]:
        self.calls += 1
        return {"machines": self.machines}


def test_resolution_of_addresses_and_machine_names() -> None:
    control = FakeControlClient([
        {"name": "qemu1", "state": "running", "address": "127.0.0.1:40001"},
        {"name": "qemu2", "state": "booting", "address": None},
    ])  # fmt: skip
    resolver = Resolver(3001, lambda: control.status()["machines"], host_exists=lambda h: False)
    assert str(resolver.resolve("10.0.0.7")) == "10.0.0.7:3001"
    assert str(resolver.resolve("host:3005")) == "host:3005"
    assert str(resolver.resolve("[::1]:3005")) == "[::1]:3005"
    assert str(resolver.resolve("qemu1")) == "127.0.0.1:40001"
    with pytest.raises(ConfigError, match="no address yet"):
        resolver.resolve("qemu2")
    with pytest.raises(ConfigError, match="machines of the running farm: qemu1, qemu2"):
        resolver.resolve("qemu9")
    assert control.calls == 1  # asked once


def test_control_lister_uses_the_control_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import farm.control.client as client_module
    from farm.netjobs.targets import control_lister

    seen: list[Any] = []

    class Fake(FakeControlClient):
        def __init__(self, path: Any) -> None:
            seen.append(path)
            super().__init__([{"name": "qemu1", "state": "running", "address": "h:1"}])

    monkeypatch.setattr(client_module, "ControlClient", Fake)
    assert control_lister(tmp_path)() == []  # no socket: no farm running
    (tmp_path / "control.sock").touch()
    assert control_lister(tmp_path)()[0]["name"] == "qemu1"
    assert seen == [tmp_path / "control.sock"]


@pytest.mark.parametrize("bad", ["h:0", "h:70000", "h:x", "[::1", "[::1]x", ":5"])
def test_bad_target_addresses(bad: str) -> None:
    with pytest.raises(ConfigError):
        split_host_port(bad)


# -- monitors -------------------------------------------------------------------------------


def test_a_test_goes_to_a_sqlite_monitor(tmp_path: Any) -> None:
    farm = FakeFarm()
    test = one('t:\n-minhosts: 1\na:1: "sleep 0 say out"\nb:1: "sleep 5"\n-timeout: 0.05s\nend\n')
    result = runner(farm).run(test)
    monitor = SqliteMonitor(tmp_path / "r.db")
    taskset = report_to_monitor(monitor, result)
    assert isinstance(taskset, NetJobsTaskSet) and taskset.job_id == "netjobs:t"
    conn = monitor.connection
    assert conn.execute("SELECT job, state FROM tasksets").fetchall() == [("netjobs:t", "finished")]
    rows = conn.execute("SELECT task_id, exit_type, detail FROM jobs ORDER BY task_id").fetchall()
    assert rows[0][:2] == (0, "EXIT") and rows[0][2].startswith("SUCCESS exit 0")
    assert rows[1][:2] == (1, "EXIT_EXTERNAL") and rows[1][2].startswith("TIMEOUT")
    notices = conn.execute("SELECT detail FROM events WHERE type = 'NOTICE'").fetchall()
    assert ("out",) in notices and any("start skew" in n[0] for n in notices)
    monitor.close()
