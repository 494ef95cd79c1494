"""Where the per-farm agent token comes from: argument, FARM_TOKEN, or a state-dir file.

The file ``<state dir>/token`` is created on first use with 256 random bits
(mode 0600, created atomically so two farms starting together agree).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from farm import paths
from farm.errors import ConfigError

ENV_TOKEN = "FARM_TOKEN"
ENV_STATE_DIR = paths.ENV_STATE_DIR
TOKEN_FILE = "token"


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """farm's state dir when none is given: the one rule of :func:`farm.paths.state_dir`."""
    return paths.state_dir(None, env)


def ensure_token_file(state_dir: str | os.PathLike[str]) -> Path:
    """Path of the token file in ``state_dir``, generating the token first if missing.

    The file appears atomically with its content (written aside, then hard-linked
    into place), so concurrent farms never read a half-written token.
    """
    directory = Path(state_dir)
    path = directory / TOKEN_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            aside = directory / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32) + "\n")
                try:
                    os.link(aside, path)
                except FileExistsError:
                    pass  # another farm won the race: use its token
            finally:
                aside.unlink(missing_ok=True)
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read or create token file {path}: {exc}") from exc
    if not token:
        raise ConfigError(f"token file {path} is empty; delete it to generate a new token")
    return path


def secure_dirs(*dirs: str | os.PathLike[str]) -> None:
    """Make each directory (created if missing) 0700 and the files directly in it 0600.

    The state and log dirs hold the token file, guest run dirs, consoles and the
    journal: whatever the token's source, no other local user may read them.
    """
    for directory in map(Path, dirs):
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            directory.chmod(0o700)
            for entry in directory.iterdir():
                if entry.is_file() and not entry.is_symlink():
                    entry.chmod(0o600)
        except OSError as exc:
            raise ConfigError(f"cannot make {directory} private (0700): {exc}") from exc


def resolve_token(
    explicit: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The token to use: ``explicit``, else $FARM_TOKEN, else the state dir's token file."""
    if explicit:
        return explicit
    env = os.environ if env is None else env
    if env.get(ENV_TOKEN):
        return env[ENV_TOKEN]
    directory = default_state_dir(env) if state_dir is None else Path(state_dir)
    return ensure_token_file(directory).read_text().strip()
