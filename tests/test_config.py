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


def test_http_binds_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    assert load_config(environ={}).http_host == "127.0.0.1"
    assert load_config(environ={"EVENTSVC_HTTP_HOST": "0.0.0.0"}).http_host == "0.0.0.0"
    path = tmp_path / "c.yaml"
    path.write_text("http: {host: '::'}\n")
    assert load_config(path, environ={}).http_host == "::"
    assert load_config(path, environ={}, http_host="127.0.0.1").http_host == "127.0.0.1"


def test_events_tokens_with_type_and_source_prefixes() -> None:
    config = load_config(environ={"EVENTSVC_EVENTS_TOKEN": (
        "ci-t0k3n:type=com.example.ci.;source=https://ci.example, "
        "rel-t0k3n:type=com.example.release.;type=com.example.deploy.,admin-t0k3n")})  # fmt: skip
    assert [(t.token, t.types, t.sources) for t in config.events_tokens] == [
        ("ci-t0k3n", ("com.example.ci.",), ("https://ci.example",)),
        ("rel-t0k3n", ("com.example.release.", "com.example.deploy."), ()),
        ("admin-t0k3n", (), ()),
    ]
    assert config.events_token_file is None
    assert "t0k3n" not in repr(config) and "t0k3n" not in repr(config.events_tokens)
    assert config.redacted()["events_tokens"][0] == {
        "token": "<redacted>", "types": ["com.example.ci."], "sources": ["https://ci.example"]}  # fmt: skip
    assert "t0k3n" not in str(config.redacted())


def test_events_tokens_from_a_file_one_a_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("ci-s3cr3t:type=com.example.ci.\nadmin-s3cr3t\n\n")
    env = {"EVENTSVC_EVENTS_TOKEN_FILE": str(path)}
    config = load_config(environ=env)
    assert [t.token for t in config.events_tokens] == ["ci-s3cr3t", "admin-s3cr3t"]
    assert config.events_token_file == str(path)
    assert "s3cr3t" not in repr(config) and "s3cr3t" not in str(config.redacted())
    # the variable wins over the file, as for every secret
    both = load_config(environ={**env, "EVENTSVC_EVENTS_TOKEN": "other"})
    assert [t.token for t in both.events_tokens] == ["other"]


def test_a_missing_events_token_file_starts_with_events_closed(tmp_path: Path) -> None:
    # the Deployment mounts the Secret as optional: without it, the pod must still start
    missing = str(tmp_path / "nope" / "tokens")
    config = load_config(environ={"EVENTSVC_EVENTS_TOKEN_FILE": missing})
    assert config.events_tokens == () and config.events_token_file == missing
    with pytest.raises(ConfigError, match="mount the secret there or unset"):  # others: fatal
        load_config(environ={"EVENTSVC_NATS_PASSWORD_FILE": missing})


@pytest.mark.parametrize(("value", "message"), [
    ("type=com.example.ci.", "entry 1 has no token before its restrictions"),
    ("ok,:source=https://ci.example", "entry 2 has no token before its restrictions"),
    ("tok-s3cr3t:tpye=com.example.", "entry 1, restriction 1: not type=<prefix> or source=<prefix> (did you mean 'type'?)"),
    ("tok-s3cr3t:s3cr3t-tail", "entry 1, restriction 1: not type=<prefix> or source=<prefix>; a token cannot contain ':'"),
    ("tok-s3cr3t:type=", "entry 1, restriction 1: type= needs a prefix"),
    ("tok-s3cr3t:", "entry 1 has ':' and no restriction after it"),
    ("tok-s3cr3t;type=a.", "entry 1: a token cannot contain ';'"),
    ("Bearer tok-s3cr3t", "entry 1: a token is printable ASCII without spaces"),
    ("#s3cr3t-comment", "does not start with '#'"),
    ("tok-s3cr3t,x,tok-s3cr3t:type=a.", "entries 1 and 3 hold the same token"),
])  # fmt: skip
def test_events_token_syntax_errors_never_show_the_token(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(environ={"EVENTSVC_EVENTS_TOKEN": value})
    assert str(e.value).startswith("EVENTSVC_EVENTS_TOKEN")
    assert message in str(e.value)
    assert "s3cr3t" not in str(e.value)


def test_events_tokens_are_not_read_from_the_config_file(tmp_path: Path) -> None:
    # the config file is a ConfigMap: tokens go in a Secret, with their restrictions
    path = tmp_path / "c.yaml"
    path.write_text("http:\n  events:\n    tokens: [abc]\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, environ={})
    assert ("'http.events' is not read from the file; the /events tokens are secrets: set "
            "EVENTSVC_EVENTS_TOKEN or EVENTSVC_EVENTS_TOKEN_FILE") in str(e.value)  # fmt: skip
