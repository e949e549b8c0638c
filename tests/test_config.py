from __future__ import annotations

from pathlib import Path

import pytest

from eventsvc.config import load_config
from eventsvc.errors import ConfigError


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("http: {port: 9000}\nstreams: {duplicateWindow: 2h}\nkubernetes: {context: dev}\n")
    config = load_config(path, environ={"EVENTSVC_HTTP_PORT": "9100"}, data_dir="/x")
    assert config.http_port == 9100
    assert config.duplicate_window == 7200
    assert config.data_dir == "/x"
    assert config.section("kubernetes") == {"context": "dev"}


def test_secrets_from_env_and_file_never_in_redacted(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t-a,s3cr3t-b\n")
    config = load_config(environ={"EVENTSVC_GITHUB_WEBHOOK_SECRET_FILE": str(secret_file)})
    assert config.github_webhook_secrets == ("s3cr3t-a", "s3cr3t-b")
    assert "s3cr3t" not in repr(config)
    assert config.redacted()["github_webhook_secrets"] == "<redacted>"


def test_bad_value_names_setting_and_value() -> None:
    with pytest.raises(ConfigError, match="Config 'EVENTSVC_HTTP_PORT' has value 'abc'"):
        load_config(environ={"EVENTSVC_HTTP_PORT": "abc"})
    with pytest.raises(ConfigError, match="not a duration"):
        load_config(environ={"EVENTSVC_DUPLICATE_WINDOW": "soon"})


def test_unreadable_secret_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mount the secret there or unset"):
        load_config(environ={"EVENTSVC_GITHUB_WEBHOOK_SECRET_FILE": str(tmp_path / "nope")})


def test_unknown_component_is_refused() -> None:
    with pytest.raises(ConfigError, match="Choose from gateway, sensors, cron"):
        load_config(environ={"EVENTSVC_COMPONENTS": "gateway,sensor"})


def test_a_typo_in_allowed_events_is_refused() -> None:
    # a misspelt event would answer every real one with 200 "ignored": silently dropped
    with pytest.raises(ConfigError, match="'pull_requests', which is not a GitHub webhook "
                       "event; did you mean 'pull_request'"):  # fmt: skip
        load_config(environ={"EVENTSVC_GITHUB_ALLOWED_EVENTS": "push,pull_requests"})
    # a name far from every known event may be newer than the list: let through
    allowed = load_config(environ={"EVENTSVC_GITHUB_ALLOWED_EVENTS": "push,future_event"})
    assert allowed.github_allowed_events == ("push", "future_event")


@pytest.mark.parametrize(("text", "message"), [
    ("http:\n  prot: 8080\n", "unknown key 'http.prot'; did you mean 'http.port'?"),
    ("sensor:\n  maxDeliveries: 3\n", "unknown key 'sensor'; did you mean 'sensors'?"),
    ("log: {levle: debug}\n", "unknown key 'log.levle'; did you mean 'log.level'?"),
    ("kubernets: {context: prod}\n", "unknown key 'kubernets'; did you mean 'kubernetes'?"),
    ("http: 8080\n", "'http' must be a mapping of settings, got 8080"),
])  # fmt: skip
def test_config_file_typos_are_refused(tmp_path: Path, text: str, message: str) -> None:
    # a misspelt key would leave its setting at the default without a word
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path, environ={})
    assert str(e.value) == f"config file {str(path)!r}: {message}"


def test_config_file_sections_of_parts_pass(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kubernetes: {context: prod}\npromotion: {gitCacheDir: false}\n"
                    "github: {appId: 1}\nstreams: {events: {maxAge: 1d}}\nfutureplugin: {a: 1}\n")
    assert load_config(path, environ={}).events_max_age == 86400
