"""Where farm keeps its guest images, their build cache and its state: one rule for all.

*Checkout* means farm is imported from a git tree that has ``images/`` (a clone,
``pip install -e``); otherwise farm is *installed* (a wheel, ``pip install .``).

- images (``image.elf``, ``initrd.img``, ``manifest.json``): the checkout's
  ``images/``; installed: ``$XDG_CACHE_HOME/farm/images`` (``~/.cache/farm/images``).
  The config's ``image_dir`` overrides it. The result does not depend on the
  current directory, so ``farm run`` anywhere boots the image built once.
- image build cache (downloads, compiled kernel, rootfs): ``$FARM_IMAGE_CACHE``,
  else ``<images>/cache``; ``farm image build --cache DIR`` overrides both.
- state (token, journal, PID records, control socket, libvirt root): the config's
  ``state_dir`` > ``$FARM_STATE_DIR`` > checkout: ``./.farm`` (per directory, as
  farm always did) / installed: ``$XDG_STATE_HOME/farm`` (``~/.local/state/farm``).
  FarmConfig, the sessions' token lookup (farm.session.token), the CLI and
  farm.testing all go through :func:`state_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ENV_STATE_DIR = "FARM_STATE_DIR"
ENV_IMAGE_CACHE = "FARM_IMAGE_CACHE"
#: the state dir of a checkout, relative to the current directory
CHECKOUT_STATE_DIR = Path(".farm")


def checkout_root() -> Path | None:
    """The git tree farm is imported from, if it has ``images/``; None when installed."""
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists() and (root / "images").is_dir():
        return root
    return None


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _xdg(env: Mapping[str, str], name: str, fallback: str) -> Path:
    """$name if set to an absolute path (the XDG spec ignores relative ones), else ~/fallback."""
    value = env.get(name, "")
    return Path(value) if os.path.isabs(value) else Path.home() / fallback


def image_dir(env: Mapping[str, str] | None = None) -> Path:
    """Default directory of the guest image (see the module docstring)."""
    root = checkout_root()
    if root is not None:
        return root / "images"
    return _xdg(_env(env), "XDG_CACHE_HOME", ".cache") / "farm" / "images"


def image_cache_dir(images: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Build cache of the image in ``images``: $FARM_IMAGE_CACHE, else ``images/cache``."""
    value = _env(env).get(ENV_IMAGE_CACHE)
    if value:
        return Path(value)
    return (image_dir(env) if images is None else Path(images)) / "cache"


def state_dir(
    configured: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """farm's state dir: ``configured`` > $FARM_STATE_DIR > ./.farm (checkout) / XDG state."""
    if configured is not None and str(configured):
        return Path(configured)
    env = _env(env)
    if env.get(ENV_STATE_DIR):
        return Path(env[ENV_STATE_DIR])
    if checkout_root() is not None:
        return CHECKOUT_STATE_DIR
    return _xdg(env, "XDG_STATE_HOME", ".local/state") / "farm"
