"""Which session class speaks to spawned guests, and the factory that builds them.

The config's ``session`` key wins; left empty, the machine profile's
``session`` says it (``[profile] session = "genode"`` for a Genode image).
Genode sessions get the Genode config keys (``genode_binaries``,
``event_timeout``) and retry dialling until the slot's boot deadline.
"""

from __future__ import annotations

from collections.abc import Callable

from farm.config import FarmConfig
from farm.errors import ConfigError
from farm.session.agent import FarmSession
from farm.session.base import AbstractSession
from farm.session.genode import GenodeSession

#: Config/profile ``session`` value -> session class.
BY_NAME: dict[str, type[AbstractSession]] = {"farm": FarmSession, "genode": GenodeSession}


def session_name(cfg: FarmConfig) -> str:
    """``"farm"`` or ``"genode"``: the config's ``session``, else the profile's."""
    from_profile = cfg.profile.get("session", "") if isinstance(cfg.profile, dict) else ""
    if cfg.session and from_profile and cfg.session != from_profile:
        raise ConfigError(
            f"session = {cfg.session!r} but the profile says session = {from_profile!r}"
        )
    name = cfg.session or from_profile or "farm"
    if name not in BY_NAME:
        raise ConfigError(f"session must be one of {', '.join(BY_NAME)}, got {name!r}")
    return str(name)


def session_class_for(
    cfg: FarmConfig, explicit: type[AbstractSession] | None = None
) -> type[AbstractSession]:
    """``explicit`` if given, else the class the config/profile names."""
    return explicit or BY_NAME[session_name(cfg)]


def session_factory(
    cls: type[AbstractSession], cfg: FarmConfig, token: str
) -> Callable[[str, int], AbstractSession]:
    """The (host, port) -> session builder the slots use."""
    if issubclass(cls, GenodeSession):
        return cls.configured(binaries_dir=cfg.genode_binaries, event_timeout=cfg.event_timeout)
    return cls.factory(token=token, heartbeat_timeout=cfg.heartbeat_timeout)
