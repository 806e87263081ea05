"""Configuration: units, precedence (TOML < environment < flags) and errors
that name the setting."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ds_trio.__main__ import _config, _parser, main
from ds_trio.auth import Authenticator
from ds_trio.auth.authenticator import parse_tokens
from ds_trio.config import Config, ConfigError, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5), ("7", 7.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("1024", 1024), ("512KiB", 512 * 1024), ("64MiB", 64 << 20), ("2G", 2 << 30), ("10k", 10240)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("long_poll_timeout", "soon", "long_poll_timeout: not a duration"),
        ("sse_reconnect_interval", "-5s", "sse_reconnect_interval: not a duration"),
        ("max_append_bytes", "lots", "max_append_bytes: not a size"),
        ("max_read_bytes", "0", "max_read_bytes: size must be positive"),
        ("port", "http", "port must be an integer"),
        ("port", "70000", "port out of range"),
        ("store_threads", "0", "store_threads must be at least 1"),
        ("workers", "0", "workers must be between 1 and 64"),
        ("workers", "65", "workers must be between 1 and 64"),
        ("workers", "two", "workers must be an integer"),
        ("workers", "2", "the in-memory store lives in one process"),
        ("lmdb_sync", "maybe", "lmdb_sync must be true or false"),
        ("cache_visibility", "shared", "cache_visibility must be"),
        ("log_level", "loud", "log_level must be one of"),
        ("trusted_proxies", "10.0.0.0/8,somewhere", "trusted_proxies: not an address"),
        ("stream_root", "v1/stream", "stream_root must start with '/'"),
        ("colour", "blue", "unknown setting: colour"),
        ("rate_limit", "fast", "rate_limit must be a number"),
        ("rate_limit", "-1", "rate_limit must be a non-negative"),
        ("max_live_readers", "0", "max_live_readers must be at least 1"),
        ("max_streams_per_prefix", "-1", "max_streams_per_prefix must not be negative"),
        ("max_header_bytes", "100", "max_header_bytes must be at least 1KiB"),
        ("keep_alive_timeout", "forever", "keep_alive_timeout: not a duration"),
        ("jwt_jwks_file", "/etc/jwks.json", "jwt_audience is required"),
        ("tokens", "secret", "tokens must be a list of tables"),
    ],
)
def test_bad_values_name_the_setting(setting: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Config().with_changes(**{setting: value})


def test_toml_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "ds_trio.toml"
    toml.write_text('port = 5000\nlong_poll_timeout = "10s"\nmax_read_bytes = "2MiB"\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("DS_TRIO_LONG_POLL_TIMEOUT", "20s")
    monkeypatch.setenv("DS_TRIO_MAX_READ_BYTES", "3MiB")
    args = _parser().parse_args(["serve", "--config", str(toml), "--max-read-bytes", "4MiB"])
    config = _config(args)
    assert config.port == 5000 and config.host == "0.0.0.0"  # from the file
    assert config.long_poll_timeout == 20.0  # the environment beats the file
    assert config.max_read_bytes == 4 << 20  # a flag beats both


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("workers", 2.5, "workers must be an integer"),
        ("workers", True, "workers: not a valid value"),
        ("workers", [2], "workers: not a valid value"),
        ("port", True, "port: not a valid value"),
        ("data_dir", 5, "data_dir: must be a string"),
        ("host", 5, "host: must be a string"),
        ("long_poll_timeout", [1], "long_poll_timeout: not a valid value"),
        ("max_append_bytes", {"a": 1}, "max_append_bytes: not a valid value"),
        ("max_append_bytes", 1.5, "max_append_bytes: not a size"),
        ("trusted_proxies", [1], "trusted_proxies: must be a comma-separated string"),
        ("lmdb_sync", [True], "lmdb_sync must be true or false"),
    ],
)
def test_toml_values_of_the_wrong_type_are_refused(setting: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_mapping({setting: value})


def test_toml_numbers_and_strings_that_mean_the_same_are_taken() -> None:
    config = Config.from_mapping(
        {"workers": 2.0, "data_dir": "d", "port": "8080", "long_poll_timeout": 5, "lmdb_sync": "no"}
    )
    assert (config.workers, config.port, config.long_poll_timeout, config.lmdb_sync) == (2, 8080, 5.0, False)


def test_workers_and_their_data_dir_may_come_from_different_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "ds_trio.toml"
    toml.write_text("workers = 2\n")
    args = _parser().parse_args(["serve", "--config", str(toml), "--data-dir", str(tmp_path / "d")])
    assert _config(args).workers == 2
    monkeypatch.setenv("DS_TRIO_WORKERS", "3")
    monkeypatch.setenv("DS_TRIO_DATA_DIR", str(tmp_path / "d"))
    assert _config(_parser().parse_args(["serve"])).workers == 3


def test_dev_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS_TRIO_PORT", "9999")
    assert _config(_parser().parse_args(["dev"])).port == 4437
    assert _config(_parser().parse_args(["serve"])).port == 9999


def test_bad_configuration_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("port = [")
    assert main(["serve", "--config", str(broken)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["dev", "--long-poll-timeout", "eventually"]) == 2
    assert "long_poll_timeout: not a duration" in capsys.readouterr().err


def test_http_webhooks_to_this_machine_only_in_dev() -> None:
    assert _config(_parser().parse_args(["dev"])).webhook_allow_http_loopback is True
    assert _config(_parser().parse_args(["serve"])).webhook_allow_http_loopback is False
    assert Config().webhook_allow_http_loopback is False


def test_the_console_is_on_in_dev_unless_tokens_are_configured(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("")
    assert _config(_parser().parse_args(["dev"])).console is True
    assert _config(_parser().parse_args(["dev", "--no-console"])).console is False
    assert _config(_parser().parse_args(["dev", "--tokens-file", str(tokens)])).console is False
    assert _config(_parser().parse_args(["serve"])).console is False
    assert _config(_parser().parse_args(["serve", "--console"])).console is True
    assert Config().console is False
    assert Config.from_env({"DS_TRIO_CONSOLE": "yes"}).console is True
    with pytest.raises(ConfigError, match="console must be true or false"):
        Config.from_mapping({"console": "sometimes"})


def test_other_tools_ds_trio_variables_are_not_settings() -> None:
    environ = {"DS_TRIO_PORT": "5000", "DS_TRIO_DOMAIN": "example.com", "DS_TRIO_VENV": "/v"}
    assert Config.from_env(environ).port == 5000


def test_the_asgi_app_reads_its_file_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ds_trio.asgi import config_from_environment

    toml = tmp_path / "ds_trio.toml"
    toml.write_text('workers = 2\nlong_poll_timeout = "5s"\n')
    monkeypatch.setenv("DS_TRIO_CONFIG", str(toml))
    monkeypatch.setenv("DS_TRIO_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("DS_TRIO_LONG_POLL_TIMEOUT", "7s")
    config = config_from_environment()
    assert config.workers == 2 and config.data_dir == tmp_path / "d"
    assert config.long_poll_timeout == 7.0


def test_tokens_in_toml_and_a_tokens_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    digest = "ab" * 32
    settings = tmp_path / "server.toml"
    settings.write_text(f'[[tokens]]\nname = "ci"\nsha256 = "{digest}"\nscopes = ["read", "write"]\n')
    config = _config(_parser().parse_args(["serve", "--config", str(settings)]))
    assert config.access_control and config.tokens[0].grant.scopes == {"read", "write"}
    assert not Config().access_control
    bad = tmp_path / "tokens.toml"
    bad.write_text('[[tokens]]\nname = "ci"\nsha256 = "nothex"\nscopes = ["read"]\n')
    assert main(["serve", "--tokens-file", str(bad)]) == 2
    assert "sha256 must be 64 hex digits" in capsys.readouterr().err
    key = tmp_path / "jwt.pem"
    key.write_text("not a key")
    jwt = tmp_path / "jwt.toml"
    jwt.write_text(f'jwt_public_key_file = "{key}"\njwt_audience = "streams"\n')
    assert main(["serve", "--config", str(jwt)]) == 2
    assert "not a readable public key" in capsys.readouterr().err


def test_token_command_prints_a_token_and_its_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "ingest", "--scopes", "write", "--streams", "events/**,logs/*"]) == 0
    printed = capsys.readouterr()
    secret = printed.err.rsplit(": ", 1)[1].strip()  # the secret goes to the terminal only
    assert secret.startswith("dst_") and secret not in printed.out  # `>> tokens.toml` is safe
    tokens = parse_tokens(tomllib.loads(printed.out)["tokens"])
    principal = Authenticator.build(tokens, None).authenticate(f"Bearer {secret}", 0)
    assert principal.allows("write", "logs/a") and not principal.allows("read", "logs/a")
    assert main(["token", "x", "--scopes", "root"]) == 2
    assert "unknown scope" in capsys.readouterr().err
