"""farm.paths: one rule for images, the image build cache and the state dir (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm import paths
from farm.config import FarmConfig
from farm.profile import load_profile
from farm.session import token

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """farm as if installed from a wheel: no checkout, HOME and XDG dirs in tmp_path."""
    monkeypatch.setattr(paths, "checkout_root", lambda: None)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("XDG_CACHE_HOME", "XDG_STATE_HOME", paths.ENV_STATE_DIR, paths.ENV_IMAGE_CACHE):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_a_checkout_keeps_its_images_and_per_directory_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(paths.ENV_STATE_DIR, raising=False)
    monkeypatch.delenv(paths.ENV_IMAGE_CACHE, raising=False)
    assert paths.checkout_root() == REPO
    assert paths.image_dir() == REPO / "images"
    assert paths.image_cache_dir() == REPO / "images" / "cache"
    assert paths.state_dir() == Path(".farm")


def test_installed_farm_follows_xdg(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = installed / "home"
    assert paths.image_dir() == home / ".cache" / "farm" / "images"
    assert paths.state_dir() == home / ".local" / "state" / "farm"
    monkeypatch.setenv("XDG_CACHE_HOME", str(installed / "c"))
    monkeypatch.setenv("XDG_STATE_HOME", str(installed / "s"))
    assert paths.image_dir() == installed / "c" / "farm" / "images"
    assert paths.image_cache_dir() == installed / "c" / "farm" / "images" / "cache"
    assert paths.state_dir() == installed / "s" / "farm"
    # the XDG spec: relative values are invalid and ignored
    assert paths.state_dir(env={"XDG_STATE_HOME": "rel"}) == home / ".local" / "state" / "farm"


def test_state_dir_precedence_config_then_env_then_default(
    installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert paths.state_dir("mine", env={paths.ENV_STATE_DIR: "/env"}) == Path("mine")
    assert paths.state_dir(None, env={paths.ENV_STATE_DIR: "/env"}) == Path("/env")
    monkeypatch.setenv(paths.ENV_STATE_DIR, str(installed / "env-state"))
    # every entry point agrees: FarmConfig, the sessions' token lookup, a farm.toml
    assert FarmConfig().state_dir == installed / "env-state"
    assert token.default_state_dir() == installed / "env-state"
    toml = installed / "farm.toml"
    toml.write_text('state_dir = "from-toml"\n')
    assert FarmConfig.load(toml).state_dir == Path("from-toml")
    assert FarmConfig(state_dir=installed / "x").state_dir == installed / "x"


def test_distributor_and_a_bare_session_read_one_token(
    installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(installed / "s"))
    monkeypatch.delenv(token.ENV_TOKEN, raising=False)
    config = FarmConfig()
    assert token.resolve_token(None, config.state_dir) == token.resolve_token()
    assert (installed / "s" / "farm" / "token").is_file()


def test_image_dir_does_not_depend_on_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert FarmConfig().image_dir == REPO / "images"
    assert load_profile().kernel == REPO / "images" / "image.elf"


def test_image_cache_env_overrides_the_images_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.ENV_IMAGE_CACHE, "/shared/cache")
    assert paths.image_cache_dir(Path("/x/images")) == Path("/shared/cache")
    monkeypatch.delenv(paths.ENV_IMAGE_CACHE)
    assert paths.image_cache_dir(Path("/x/images")) == Path("/x/images/cache")
