"""``host:port`` parsing shared by the target pool and NetJobs targets."""

from __future__ import annotations

from farm.errors import ConfigError


def split_host_port(text: str) -> tuple[str, int | None]:
    """``"h:3001"`` -> ("h", 3001); ``"[v6]:3001"`` -> ("v6", 3001); ``"h"``/bare IPv6 -> port None.

    ConfigError (naming ``text``) for a missing ']', an empty host or a port outside 1..65535.
    """
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"bad target {text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"bad target {text!r}: expected [address]:port")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ConfigError(f"bad target {text!r}: no host before the port")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"bad target {text!r}: port must be an integer in 1..65535")
    return host, int(port_text)
