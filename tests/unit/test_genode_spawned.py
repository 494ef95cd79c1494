"""Genode on spawned guests: session selection, dialling while booting, binaries once,
caps, REBOOT, hung targets, and safe XML names (issue 14, part 4)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farm.config import FarmConfig
from farm.errors import ConfigError, SessionTimeout
from farm.events import Event
from farm.session import FarmSession, GenodeSession
from farm.session.fake_dom0 import FakeDom0Server
from farm.session.genode_select import session_class_for, session_factory, session_name
from farm.session.genode_wire import Command, description_xml, render_xml, xml_name
from farm.taskset import TaskSet
from tests.helpers import FakeTaskSet


def task(tid: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": tid, "pkg": "hey", "config": {}, "numberofjobs": 1}
    base.update(over)
    return base


@pytest.fixture
def fake() -> Iterator[FakeDom0Server]:
    with FakeDom0Server() as server:
        yield server


def collect(session: GenodeSession) -> list[Event]:
    events: list[Event] = []
    for _ in range(200):
        if session.finished():
            return events
        events.extend(session.run(5.0))
    raise AssertionError(f"set did not finish; got {events}")


# -- selection -------------------------------------------------------------------------


def test_config_or_profile_session_selects_genode(tmp_path: Path) -> None:
    assert session_name(FarmConfig()) == "farm"
    assert session_class_for(FarmConfig()) is FarmSession
    assert session_class_for(FarmConfig(session="genode")) is GenodeSession
    assert session_class_for(FarmConfig(profile={"session": "genode"})) is GenodeSession
    assert session_class_for(FarmConfig(session="genode"), FarmSession) is FarmSession
    with pytest.raises(ConfigError, match="profile says"):
        session_name(FarmConfig(session="farm", profile={"session": "genode"}))
    with pytest.raises(ConfigError, match="session"):
        FarmConfig(session="seer")


def test_genode_factory_passes_config_and_dials_without_attempt_limit(tmp_path: Path) -> None:
    cfg = FarmConfig(session="genode", genode_binaries=str(tmp_path), event_timeout=7.5)
    session = session_factory(GenodeSession, cfg, "token")("127.0.0.1", 1)
    assert isinstance(session, GenodeSession)
    assert session.connect_attempts is None
    assert session.event_timeout == 7.5
    assert session.binaries_dir == tmp_path
    with pytest.raises(ConfigError, match="event_timeout"):
        FarmConfig(event_timeout=0)


def test_dialling_retries_while_the_guest_boots() -> None:
    """The target listens only after a while (a booting guest): connect() waits for it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    servers: list[FakeDom0Server] = []

    def boot_later() -> None:
        time.sleep(1.0)
        servers.append(FakeDom0Server(port=port))

    booter = threading.Thread(target=boot_later)
    booter.start()
    try:
        session = session_factory(GenodeSession, FarmConfig(session="genode"), "t")(
            "127.0.0.1", port
        )
        with session:
            assert isinstance(session, GenodeSession)
            session.connect(timeout=30.0)
            session.start(FakeTaskSet([task(0)]))
            collect(session)
    finally:
        booter.join()
        for server in servers:
            server.close()


# -- binaries --------------------------------------------------------------------------


def test_binaries_dir_is_uploaded_once_per_session(fake: FakeDom0Server, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cond_42").write_bytes(b"\x7fELF cond_42")
    (bin_dir / "hey").write_bytes(b"\x7fELF hey")
    taskset = FakeTaskSet([task(0, pkg="cond_42"), task(1, pkg="hey"), task(2, pkg="pi")])
    with GenodeSession("127.0.0.1", fake.port, binaries_dir=bin_dir) as session:
        session.start(taskset)
        collect(session)
        session.start(taskset)
        collect(session)
    record = fake.record
    assert sorted((b.name, b.data) for b in record.binaries) == [
        ("cond_42", b"\x7fELF cond_42"),
        ("hey", b"\x7fELF hey"),
    ]
    assert record.commands.count(Command.SEND_BINARIES) == 2  # the second carried 0


def test_changed_binary_is_sent_again(fake: FakeDom0Server, tmp_path: Path) -> None:
    (tmp_path / "hey").write_bytes(b"one")
    with GenodeSession("127.0.0.1", fake.port, binaries_dir=tmp_path) as session:
        session.start(FakeTaskSet([task(0)]))
        collect(session)
        (tmp_path / "hey").write_bytes(b"two")
        session.start(FakeTaskSet([task(0)]))
        collect(session)
    assert [b.data for b in fake.record.binaries] == [b"one", b"two"]


# -- caps, REBOOT, hung targets ----------------------------------------------------------


def test_caps_is_a_task_attribute_sent_to_genode(fake: FakeDom0Server) -> None:
    taskset = TaskSet([{"id": 0, "pkg": "hey", "caps": 50}, {"id": 1, "pkg": "hey"}])
    tasks = taskset.description()["tasks"]
    assert tasks[0]["caps"] == 50 and "caps" not in tasks[1]
    assert "<caps>50</caps>" in description_xml(tasks)
    with pytest.raises(ConfigError, match="caps"):
        TaskSet([{"id": 0, "pkg": "hey", "caps": -1}]).validate()
    with GenodeSession("127.0.0.1", fake.port) as session:
        session.start(taskset)
        collect(session)
    assert fake.record.tasks[0][0]["caps"] == 50


def test_reboot_genode_sends_reboot_and_redials(fake: FakeDom0Server, tmp_path: Path) -> None:
    (tmp_path / "hey").write_bytes(b"bin")
    with GenodeSession("127.0.0.1", fake.port, binaries_dir=tmp_path) as session:
        session.start(FakeTaskSet([task(0)]))
        collect(session)
        session.reboot_genode()
        assert fake.wait_for(lambda r: r.reboots == 1)
        session.start(FakeTaskSet([task(0)]))  # dials again; binaries sent again
        collect(session)
    assert Command.REBOOT in fake.record.commands
    assert fake.record.connections == 2
    assert [b.name for b in fake.record.binaries] == ["hey"]  # the reboot forgot the first


def test_silent_target_raises_session_timeout() -> None:
    with (
        FakeDom0Server(silent_after=2) as server,
        GenodeSession("127.0.0.1", server.port, event_timeout=0.5) as session,
    ):
        session.start(FakeTaskSet([task(0, numberofjobs=5)]))
        with pytest.raises(SessionTimeout, match="event timeout"):
            collect(session)
        assert server.hung.is_set()


# -- XML names --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a><b", "x y", "1abc", "", "xmlfoo", "a:b", 'q"'])
def test_xml_names_from_task_keys_are_validated(bad: str) -> None:
    with pytest.raises(ConfigError, match="XML"):
        xml_name(bad)
    with pytest.raises(ConfigError, match="XML"):
        description_xml([task(0, config={bad: 1})])
    with pytest.raises(ConfigError, match="XML"):
        render_xml({"optimize": {f"@{bad}": 1}})


def test_good_xml_names_pass() -> None:
    for good in ("periodictask", "arg_1", "_x", "a.b-c"):
        assert xml_name(good) == good
