"""rename_tap (farm/backend/spare_tap.py) with a fake netlink socket: no root, no tap.

At hand-over the spare's tap becomes the machine's ``farm-tapN``. A ``farm-tapN`` that
exists already is removed only when no live guest may use it (no carrier, no process
holds it open); else NetworkError names it (the spawn restores instead). On Linux < 6.2
(EBUSY) the tap is renamed down, and a failed rename or "up" leaves it up under its old
name, not down or half renamed.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from farm.backend import spare_tap
from farm.errors import NetworkError

SPARE, MACHINE = "farm-taps123a", "farm-tap3"


class NetlinkError(Exception):
    """As pyroute2's: the errno in ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code, errno.errorcode[code])
        self.code = code


class Link(dict[str, Any]):
    """A link as pyroute2 returns it: ``link["index"]``, ``get_attr(NAME)``."""

    def get_attr(self, name: str) -> Any:
        return self["attrs"].get(name)


class FakeIPRoute:
    """Links by name ({"index", "up", "carrier"}); ``old_kernel``: a running link is not
    renamed (EBUSY); ``fail``: how many times a change ("ifname"/"state", value) fails
    (EPERM)."""

    def __init__(self, old_kernel: bool = False) -> None:
        self.links: dict[str, dict[str, Any]] = {}
        self.old_kernel = old_kernel
        self.fail: dict[tuple[str, str], int] = {}
        self.calls: list[tuple[Any, ...]] = []

    def add(self, name: str, carrier: int = 0) -> None:
        self.links[name] = {"index": len(self.links) + 10, "up": True, "carrier": carrier}

    def __call__(self) -> FakeIPRoute:
        return self

    def __enter__(self) -> FakeIPRoute:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _name(self, index: int) -> str:
        return next(n for n, link in self.links.items() if link["index"] == index)

    def link_lookup(self, ifname: str) -> list[int]:
        return [self.links[ifname]["index"]] if ifname in self.links else []

    def get_links(self, index: int) -> list[Link]:
        name = self._name(index)
        attrs = {"IFLA_IFNAME": name, "IFLA_CARRIER": self.links[name]["carrier"]}
        return [Link(index=index, attrs=attrs)]

    def link(self, cmd: str, index: int, **kw: str) -> None:
        self.calls.append((cmd, index, *sorted(kw.items())))
        name = self._name(index)
        if cmd == "del":
            del self.links[name]
            return
        for key, value in kw.items():
            renamed = key == "ifname" and value != name
            if renamed and self.old_kernel and self.links[name]["up"]:
                raise NetlinkError(errno.EBUSY)
            if self.fail.get((key, value), 0) > 0:
                self.fail[key, value] -= 1
                raise NetlinkError(errno.EPERM)
            if key == "state":
                self.links[name]["up"] = value == "up"
            elif renamed:
                self.links[value] = self.links.pop(name)

    def state(self) -> dict[str, bool]:
        """Each link's name and whether it is up."""
        return {name: link["up"] for name, link in self.links.items()}


@pytest.fixture
def ipr(monkeypatch: pytest.MonkeyPatch) -> FakeIPRoute:
    fake = FakeIPRoute()
    fake.add(SPARE, carrier=1)  # the spare's QEMU holds it
    monkeypatch.setattr(spare_tap, "_ipr", fake)
    monkeypatch.setattr(spare_tap, "_held", lambda tap: False, raising=False)  # none holds it
    return fake


def test_a_machine_tap_with_a_carrier_is_not_removed(ipr: FakeIPRoute) -> None:
    ipr.add(MACHINE, carrier=1)  # a live QEMU on it
    with pytest.raises(NetworkError, match=MACHINE):
        spare_tap.rename_tap(SPARE, MACHINE)
    assert ipr.state() == {SPARE: True, MACHINE: True}
    assert not ipr.calls  # nothing deleted, nothing renamed


def test_a_machine_tap_a_process_holds_is_not_removed(
    ipr: FakeIPRoute, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A down tap has no carrier, even with its QEMU on it: who holds it open decides."""
    ipr.add(MACHINE, carrier=0)
    held: list[str] = []
    monkeypatch.setattr(spare_tap, "_held", lambda tap: held.append(tap) or True, raising=False)
    with pytest.raises(NetworkError, match=MACHINE):
        spare_tap.rename_tap(SPARE, MACHINE)
    assert held == [MACHINE]
    assert set(ipr.links) == {SPARE, MACHINE} and not ipr.calls


def test_a_stale_machine_tap_is_removed_and_the_spare_tap_takes_its_name(
    ipr: FakeIPRoute,
) -> None:
    ipr.add(MACHINE, carrier=0)  # its QEMU is gone, nobody holds it
    stale = ipr.links[MACHINE]["index"]
    spare_tap.rename_tap(SPARE, MACHINE)
    assert ipr.state() == {MACHINE: True}
    assert ipr.calls[0] == ("del", stale)


def test_an_old_kernel_renames_the_tap_down_and_brings_it_up(ipr: FakeIPRoute) -> None:
    ipr.old_kernel = True
    spare_tap.rename_tap(SPARE, MACHINE)
    assert ipr.state() == {MACHINE: True}
    assert [c[2] for c in ipr.calls] == [
        ("ifname", MACHINE), ("state", "down"), ("ifname", MACHINE), ("state", "up"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "failing",
    [("ifname", MACHINE), ("state", "up")],
    ids=["rename-fails", "up-fails"],
)
def test_an_old_kernels_failed_rename_leaves_the_tap_up_under_its_old_name(
    ipr: FakeIPRoute, failing: tuple[str, str]
) -> None:
    """The spare keeps its network, and its discard removes its tap by its old name."""
    ipr.old_kernel = True
    ipr.fail[failing] = 1
    with pytest.raises(NetworkError, match=f"cannot rename tap {SPARE} to {MACHINE}"):
        spare_tap.rename_tap(SPARE, MACHINE)
    assert ipr.state() == {SPARE: True}


def test_what_cannot_be_restored_is_logged_and_the_first_error_raised(
    ipr: FakeIPRoute, caplog: pytest.LogCaptureFixture
) -> None:
    ipr.old_kernel = True
    ipr.fail["state", "up"] = 2  # the "up" after the rename, and the restoring one
    with pytest.raises(NetworkError, match=f"cannot rename tap {SPARE} to {MACHINE}"):
        spare_tap.rename_tap(SPARE, MACHINE)
    assert ipr.state() == {SPARE: False}  # its old name back at least
    assert f"tap {SPARE}: cannot restore" in caplog.text
