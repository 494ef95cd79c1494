"""The guest's static network (``farm.ip=``) set by the agent's python at boot, with ioctls.

/init used to run ``ip link set lo up``, ``ip link set eth0 up``, ``ip addr add``
and ``ip route add``: four forks of busybox, ~60 ms of a cold boot under TCG.
The python that starts the agent does the same with six ioctls right after it
has bound the agent's socket (a connection that arrives before the address is
set waits in slirp or is retried by the host's staggered dial). DHCP stays in
/init (udhcpc). Builtins only (_socket, fcntl, struct): nothing to import.
"""

from __future__ import annotations

import _socket
import os
import struct
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is slow to import in a TCG guest
if TYPE_CHECKING:
    from collections.abc import Callable

SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCSIFADDR, SIOCSIFNETMASK, SIOCADDRT = 0x8916, 0x891C, 0x890B
IFF_UP = 0x1
RTF_UP_GATEWAY = 0x3  # RTF_UP | RTF_GATEWAY
#: seconds /init's loop gave the NIC to appear (30 x 0.1 s)
DEVICE_WAIT = 3.0


def parse(spec: str) -> tuple[str, int, str | None]:
    """``ADDR/PREFIX[,GATEWAY]`` (the ``farm.ip=`` value) as (address, prefix, gateway)."""
    addr, _, gateway = spec.partition(",")
    ip, slash, prefix = addr.partition("/")
    try:
        bits = int(prefix) if slash else 32
        dotted = all(_socket.inet_ntoa(_socket.inet_aton(a)) == a for a in (ip, gateway or ip))
    except (OSError, ValueError) as exc:
        raise ValueError(f"farm.ip={spec}: not ADDR/PREFIX[,GATEWAY]") from exc
    if not dotted or not 0 <= bits <= 32:
        raise ValueError(f"farm.ip={spec}: not ADDR/PREFIX[,GATEWAY] (dotted quads, prefix 0-32)")
    return ip, bits, gateway or None


def sockaddr_in(ip: str) -> bytes:
    """A struct sockaddr_in (16 bytes) for ``ip``, port 0."""
    return struct.pack("=H2x4s8x", _socket.AF_INET, _socket.inet_aton(ip))


def netmask(prefix: int) -> str:
    """The dotted mask of a prefix length (24 -> 255.255.255.0)."""
    return _socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF))


def ifreq(name: str, data: bytes = b"") -> bytes:
    """A struct ifreq (40 bytes): the interface name, then ``data`` (the union)."""
    return name.encode().ljust(16, b"\0") + data.ljust(24, b"\0")


def default_route(gateway: str) -> bytes:
    """A struct rtentry for ``default via gateway`` (what SIOCADDRT takes)."""
    any4 = sockaddr_in("0.0.0.0")
    return struct.pack(
        "@L16s16s16sHhLPhPLLH0L",  # 0L: the C struct's tail padding (120 bytes on x86-64)
        0, any4, sockaddr_in(gateway), any4, RTF_UP_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0,
    )  # fmt: skip


def configure(
    spec: str,
    iface: str = "eth0",
    *,
    ioctl: Callable[[int, int, bytes], bytes] | None = None,
    wait: float = DEVICE_WAIT,
) -> None:
    """Bring lo and ``iface`` up, give ``iface`` the address of ``spec``, add its default route.

    Raises OSError (ioctl failed, or no ``iface`` within ``wait`` seconds) or
    ValueError (``spec`` malformed). A default route that exists already is kept.
    """
    ip, prefix, gateway = parse(spec)
    if ioctl is None:
        import fcntl  # builtin in the guest's python

        ioctl = fcntl.ioctl
    deadline = time.monotonic() + wait
    while not os.path.exists(f"/sys/class/net/{iface}"):
        if time.monotonic() > deadline:
            have = " ".join(sorted(os.listdir("/sys/class/net"))) or "none"
            raise OSError(f"no network interface {iface} (have: {have})")
        time.sleep(0.05)
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        fd = sock.fileno()
        for name in ("lo", iface):
            flags = struct.unpack_from("=H", ioctl(fd, SIOCGIFFLAGS, ifreq(name)), 16)[0]
            ioctl(fd, SIOCSIFFLAGS, ifreq(name, struct.pack("=H", flags | IFF_UP)))
        ioctl(fd, SIOCSIFADDR, ifreq(iface, sockaddr_in(ip)))
        ioctl(fd, SIOCSIFNETMASK, ifreq(iface, sockaddr_in(netmask(prefix))))
        if gateway:
            try:
                ioctl(fd, SIOCADDRT, default_route(gateway))
            except FileExistsError:
                pass
    finally:
        sock.close()


def from_init() -> None:
    """What /init's python runs first: set ``FARM_STATIC_IP`` (taken out of the environment).

    Nothing without it (DHCP, or /init did it). On failure exits with /init's
    error line, so /init powers the guest off as it did when ``ip`` failed.
    """
    spec = os.environ.pop("FARM_STATIC_IP", "")
    if not spec:
        return
    try:
        configure(spec)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"farm-init: ERROR: cannot set eth0 to {spec}: {exc}") from exc
    print(f"farm-init: eth0 up\nfarm-init: static address {spec}")
