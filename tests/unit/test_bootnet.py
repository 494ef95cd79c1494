"""farm.agent.bootnet: the guest's farm.ip= set with ioctls instead of four forks of ip."""

from __future__ import annotations

import socket
import struct

import pytest

from farm.agent import bootnet


def test_parse_reads_address_prefix_and_gateway() -> None:
    assert bootnet.parse("10.0.2.15/24,10.0.2.2") == ("10.0.2.15", 24, "10.0.2.2")
    assert bootnet.parse("10.9.0.5/16") == ("10.9.0.5", 16, None)
    assert bootnet.parse("10.9.0.5") == ("10.9.0.5", 32, None)
    for bad in ("", "10.0.2/24", "10.0.2.15/33", "10.0.2.15/x", "10.0.2.15/24,gw"):
        with pytest.raises(ValueError, match=r"farm\.ip="):
            bootnet.parse(bad)


def test_netmask_of_prefixes() -> None:
    assert bootnet.netmask(24) == "255.255.255.0"
    assert bootnet.netmask(0) == "0.0.0.0"
    assert bootnet.netmask(32) == "255.255.255.255"


class FakeIoctl:
    """Records (request, argument); SIOCGIFFLAGS answers with IFF_BROADCAST set."""

    def __init__(self, exists: bool = False) -> None:
        self.calls: list[tuple[int, bytes]] = []
        self.exists = exists

    def __call__(self, fd: int, request: int, arg: bytes) -> bytes:
        assert len(arg) in (40, 120), len(arg)  # ifreq, rtentry (x86-64)
        self.calls.append((request, arg))
        if request == bootnet.SIOCGIFFLAGS:
            return arg[:16] + struct.pack("=H", 0x2) + arg[18:]
        if request == bootnet.SIOCADDRT and self.exists:
            raise FileExistsError(17, "File exists")
        return arg


def _sin(data: bytes) -> str:
    family, raw = struct.unpack_from("=H2x4s", data)
    assert family == socket.AF_INET
    return socket.inet_ntoa(raw)


def test_configure_brings_both_up_then_sets_address_mask_and_route() -> None:
    fake = FakeIoctl()
    bootnet.configure("10.0.2.15/24,10.0.2.2", "lo", ioctl=fake, wait=0)  # lo: on every host
    requests = [request for request, _ in fake.calls]
    assert requests == [
        bootnet.SIOCGIFFLAGS, bootnet.SIOCSIFFLAGS, bootnet.SIOCGIFFLAGS, bootnet.SIOCSIFFLAGS,
        bootnet.SIOCSIFADDR, bootnet.SIOCSIFNETMASK, bootnet.SIOCADDRT,
    ]  # fmt: skip
    flags = fake.calls[1][1]
    assert flags[:16].rstrip(b"\0") == b"lo"
    assert struct.unpack_from("=H", flags, 16)[0] == 0x2 | bootnet.IFF_UP  # kept, plus up
    assert _sin(fake.calls[4][1][16:]) == "10.0.2.15"
    assert _sin(fake.calls[5][1][16:]) == "255.255.255.0"
    route = fake.calls[6][1]
    assert _sin(route[8:]) == "0.0.0.0" and _sin(route[24:]) == "10.0.2.2"
    assert struct.unpack_from("=H", route, 56)[0] == 0x3  # RTF_UP | RTF_GATEWAY


def test_configure_keeps_an_existing_default_route_and_needs_no_gateway() -> None:
    bootnet.configure("10.0.2.15/24,10.0.2.2", "lo", ioctl=FakeIoctl(exists=True), wait=0)
    fake = FakeIoctl()
    bootnet.configure("10.9.0.5/16", "lo", ioctl=fake, wait=0)
    assert bootnet.SIOCADDRT not in [request for request, _ in fake.calls]


def test_configure_gives_up_without_the_interface() -> None:
    with pytest.raises(OSError, match="no network interface nosuchnic0"):
        bootnet.configure("10.0.2.15/24", "nosuchnic0", ioctl=FakeIoctl(), wait=0)


def test_from_init_runs_only_with_an_address_and_exits_like_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FARM_STATIC_IP", raising=False)
    bootnet.from_init()  # DHCP (or /init did it): nothing
    monkeypatch.setenv("FARM_STATIC_IP", "10.0.2.15/99")
    with pytest.raises(SystemExit, match=r"farm-init: ERROR: cannot set eth0 to 10\.0\.2\.15/99"):
        bootnet.from_init()
    import os

    assert "FARM_STATIC_IP" not in os.environ  # jobs never see it
