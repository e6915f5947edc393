from __future__ import annotations

from pathlib import Path

import pytest

from vidq.config import DEFAULT_URL, default_path, resolve
from vidq.errors import ExitCode, UsageProblem


def _file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_default_url_with_nothing_configured(tmp_path: Path) -> None:
    config = resolve(environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert config.url == DEFAULT_URL
    assert config.api_key is None
    assert config.source is None


def test_the_config_file_lives_under_xdg_config_home_or_dot_config() -> None:
    assert default_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/vidq/config.toml")
    assert default_path({"HOME": "/home/a"}) == Path("/home/a/.config/vidq/config.toml")


def test_options_win_over_environment_over_file(tmp_path: Path) -> None:
    _file(tmp_path / "vidq" / "config.toml", 'url = "http://file:1"\napi_key = "vidq_file"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path), "VIDQ_URL": "http://env:2/", "VIDQ_API_KEY": "vidq_env"}

    assert resolve(environ={"XDG_CONFIG_HOME": str(tmp_path)}).api_key == "vidq_file"
    assert resolve(environ=env).url == "http://env:2"
    assert resolve(environ=env).api_key == "vidq_env"
    chosen = resolve(url="http://opt:3", api_key="vidq_opt", environ=env)
    assert (chosen.url, chosen.api_key) == ("http://opt:3", "vidq_opt")


def test_the_file_fills_what_the_environment_leaves_out(tmp_path: Path) -> None:
    path = _file(tmp_path / "vidq" / "config.toml", 'url = "http://file:1"\napi_key = "vidq_file"\n')
    config = resolve(environ={"XDG_CONFIG_HOME": str(tmp_path), "VIDQ_API_KEY": "vidq_env"})
    assert (config.url, config.api_key, config.source) == ("http://file:1", "vidq_env", path)


def test_a_named_config_file_comes_from_the_option_or_vidq_config(tmp_path: Path) -> None:
    named = _file(tmp_path / "other.toml", 'api_key = "vidq_named"\n')
    assert resolve(config_file=named, environ={}).api_key == "vidq_named"
    assert resolve(environ={"VIDQ_CONFIG": str(named)}).api_key == "vidq_named"


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageProblem, match="cannot read config file") as caught:
        resolve(config_file=tmp_path / "missing.toml", environ={})
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("text", "message"), [("url = ", "not valid TOML"), ("api_key = 7", "must be a string")]
)
def test_a_broken_config_file_is_a_usage_error(tmp_path: Path, text: str, message: str) -> None:
    path = _file(tmp_path / "vidq" / "config.toml", text)
    with pytest.raises(UsageProblem, match=message):
        resolve(environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert path.is_file()
