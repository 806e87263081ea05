"""Server configuration: one frozen object with typed defaults and units."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from .auth.authenticator import AuthConfigError, parse_tokens
from .auth.grants import StaticToken

__all__ = ["Config", "ConfigError", "env_settings", "parse_duration", "parse_size", "read_toml"]

MAX_WORKERS: Final = 64  # processes; more than any machine this serves has cores for
SECONDS: Final = 1.0
KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB

_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE_RE: Final = re.compile(r"(\d+)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_SIZE_UNITS: Final = {"": 1, "b": 1, "k": KIB, "m": MIB, "g": GIB, "t": 1024 * GIB}


class ConfigError(ValueError):
    """A configuration value that cannot be used."""


def parse_duration(value: str | float | int) -> float:
    """Seconds from `500ms`, `30s`, `2m`, `1h` or a bare number of seconds."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.fullmatch(value.strip())
        if not match:
            raise ConfigError(f"not a duration: {value!r} (try 500ms, 30s, 2m)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ConfigError(f"duration must not be negative: {value!r}")
    return seconds


def parse_size(value: str | int) -> int:
    """Bytes from `1048576`, `512KiB`, `64MiB`, `10G` and the like."""
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE_RE.fullmatch(value.strip())
        if not match:
            raise ConfigError(f"not a size: {value!r} (try 64MiB)")
        unit = (match.group(2) or "")[:1].lower()
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    if size <= 0:
        raise ConfigError(f"size must be positive: {value!r}")
    return size


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server can be told. Durations are seconds, sizes bytes."""

    host: str = "127.0.0.1"
    port: int = 4437
    stream_root: str = "/v1/stream"
    data_dir: Path | None = None  # None: the in-memory store
    long_poll_timeout: float = 30 * SECONDS
    sse_reconnect_interval: float = 60 * SECONDS
    max_append_bytes: int = 64 * MIB  # larger request bodies get 413
    max_read_bytes: int = 1 * MIB  # the most data one catch-up response carries
    producer_gap_wait: float = 1 * SECONDS  # how long a seq gap waits for its predecessor
    expiry_sweep_interval: float = 1 * SECONDS
    cache_visibility: str = "public"  # or "private", for Cache-Control on reads
    cors_origin: str = "*"
    shutdown_grace: float = 10 * SECONDS
    trusted_proxies: tuple[str, ...] = ()  # addresses/networks whose X-Forwarded-* we believe
    log_level: str = "info"
    lmdb_map_size: int = 1 * GIB  # initial map; it grows when full
    lmdb_sync: bool = True  # fsync on commit; False trades durability for speed
    store_threads: int = 8  # worker threads for LMDB calls
    workers: int = 1  # server processes sharing the listening socket and the data dir
    access_log: bool = False
    webhook_timeout: float = 10 * SECONDS  # one webhook POST, connect to reply
    webhook_concurrency: int = 16  # webhook POSTs in flight at most
    webhook_retry_base: float = 1 * SECONDS  # first retry delay; doubles per failure
    webhook_retry_max: float = 60 * SECONDS
    webhook_allow_http_loopback: bool = False  # http://localhost, 127.0.0.x; on in `dev`
    console: bool = False  # the browser console at / and /console/*; on in `dev`, needs no tokens
    # Access control: off unless tokens or a JWT key are configured.
    tokens: tuple[StaticToken, ...] = ()  # [[tokens]] tables: name, sha256, scopes, streams
    tokens_file: Path | None = None  # a TOML file of [[tokens]] tables, kept apart from this one
    jwt_public_key_file: Path | None = None  # a PEM public key (Ed25519, EC or RSA)
    jwt_jwks_file: Path | None = None  # or a JWK Set file
    jwt_audience: str | None = None  # required with either: the `aud` tokens must carry
    jwt_issuer: str | None = None  # when set, the `iss` tokens must carry
    jwt_streams_claim: str = "streams"  # the claim listing a JWT's stream globs
    # Limits: what one client, or all of them, may hold.
    rate_limit: float = 0.0  # requests per second per client (token or address); 0: off
    rate_limit_burst: int = 0  # requests a client may make at once; 0: twice the rate, at least 10
    max_live_readers: int = 50_000  # long-polls and SSE streams in this process at once
    max_live_readers_per_client: int = 10_000
    max_streams_per_prefix: int = 0  # streams under one first path segment; 0: no limit
    max_header_bytes: int = 16 * KIB  # request line and headers
    keep_alive_timeout: float = 75 * SECONDS  # idle connections; also bounds reading headers
    body_timeout: float = 60 * SECONDS  # the most time a request body may take to arrive
    send_timeout: float = 60 * SECONDS  # a client leaving sent data unread this long is dropped

    def __post_init__(self) -> None:
        if not self.stream_root.startswith("/") or self.stream_root.endswith("/"):
            raise ConfigError("stream_root must start with '/' and not end with one")
        if self.cache_visibility not in ("public", "private"):
            raise ConfigError("cache_visibility must be 'public' or 'private'")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port out of range: {self.port}")
        if self.store_threads < 1:
            raise ConfigError("store_threads must be at least 1")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers must be between 1 and {MAX_WORKERS}")
        if self.workers > 1 and self.data_dir is None:
            raise ConfigError(
                "workers: the in-memory store lives in one process; "
                "give a data_dir (--data-dir) to run several workers"
            )
        if self.webhook_concurrency < 1:
            raise ConfigError("webhook_concurrency must be at least 1")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        if self.jwt_public_key_file is not None and self.jwt_jwks_file is not None:
            raise ConfigError("give jwt_public_key_file or jwt_jwks_file, not both")
        if (self.jwt_public_key_file or self.jwt_jwks_file) and not self.jwt_audience:
            raise ConfigError("jwt_audience is required to accept JWTs")
        if not math.isfinite(self.rate_limit) or self.rate_limit < 0:
            raise ConfigError("rate_limit must be a non-negative number of requests per second")
        for name in ("rate_limit_burst", "max_streams_per_prefix"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        for name in ("max_live_readers", "max_live_readers_per_client"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.max_header_bytes < 1 * KIB:
            raise ConfigError("max_header_bytes must be at least 1KiB")
        if self.console and self.access_control:
            # The console's pages and its stream listing carry no credentials of their own.
            raise ConfigError("console needs access control off (no tokens or JWT keys)")
        if self.console and self.stream_root == "/console":
            raise ConfigError("stream_root /console would hide streams behind the console's files")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as exc:
                raise ConfigError(f"trusted_proxies: not an address or network: {proxy!r}") from exc

    @property
    def access_control(self) -> bool:
        """Whether requests need credentials (tokens or a JWT key are configured)."""
        return bool(self.tokens or self.tokens_file or self.jwt_public_key_file or self.jwt_jwks_file)

    @property
    def stream_url(self) -> str:
        """The URL of the stream root, as a client would use it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.stream_root}"

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Config:
        """Build from a mapping of field names to values or strings (`30s`, `64MiB`)."""
        return cls().with_changes(**mapping)

    @classmethod
    def from_toml(cls, path: str | Path) -> Config:
        """Build from a TOML file of settings."""
        return cls.from_mapping(read_toml(path))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build from `DS_TRIO_*` environment variables."""
        return cls().with_changes(**env_settings(environ))

    def with_changes(self, **changes: Any) -> Config:
        """A copy with some settings replaced (strings are parsed as in from_mapping)."""
        known = {f.name for f in fields(self)}
        values: dict[str, Any] = {}
        for key, raw in changes.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown setting: {key}")
            values[name] = _coerce(name, raw)
        return replace(self, **values)


def read_toml(path: str | Path) -> dict[str, Any]:
    """The settings in a TOML file, unchecked (merge them with others, then build once).

    Raises:
        ConfigError: the file cannot be read or is not TOML.
    """
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


ENV_PREFIX: Final = "DS_TRIO_"


def env_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings given as `DS_TRIO_<NAME>` environment variables.

    Only names of settings count: other `DS_TRIO_*` variables (the Caddyfile's
    DS_TRIO_DOMAIN, scripts' DS_TRIO_VENV) belong to other tools.
    """
    environ = os.environ if environ is None else environ
    known = {f.name for f in fields(Config)}
    picked = {k[len(ENV_PREFIX) :].lower(): v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    return {name: value for name, value in picked.items() if name in known}


_DURATIONS: Final = {
    "long_poll_timeout",
    "sse_reconnect_interval",
    "producer_gap_wait",
    "expiry_sweep_interval",
    "shutdown_grace",
    "webhook_timeout",
    "webhook_retry_base",
    "webhook_retry_max",
    "keep_alive_timeout",
    "body_timeout",
    "send_timeout",
}
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_LISTS: Final = {"trusted_proxies"}
_SIZES: Final = {"max_append_bytes", "max_read_bytes", "lmdb_map_size", "max_header_bytes"}
_INTS: Final = {
    "port",
    "store_threads",
    "webhook_concurrency",
    "workers",
    "rate_limit_burst",
    "max_live_readers",
    "max_live_readers_per_client",
    "max_streams_per_prefix",
}
_FLOATS: Final = {"rate_limit"}
_PATHS: Final = {"data_dir", "tokens_file", "jwt_public_key_file", "jwt_jwks_file"}
_BOOLS: Final = {"lmdb_sync", "access_log", "webhook_allow_http_loopback", "console"}


def _coerce(name: str, raw: Any) -> Any:
    try:
        return _coerce_value(name, raw)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(name) else f"{name}: {message}") from None


def _coerce_value(name: str, raw: Any) -> Any:
    if raw is None:
        return None
    if name == "tokens":
        if isinstance(raw, tuple) and all(isinstance(t, StaticToken) for t in raw):
            return raw
        try:
            return tuple(parse_tokens(raw))
        except AuthConfigError as exc:
            raise ConfigError(str(exc)) from None
    if name in _LISTS:
        if not isinstance(raw, str | list | tuple) or not all(isinstance(i, str) for i in raw):
            raise ConfigError(f"must be a comma-separated string or a list of strings: {raw!r}")
        items = raw.split(",") if isinstance(raw, str) else raw
        return tuple(item.strip() for item in items if item.strip())
    if name in _BOOLS:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower() if isinstance(raw, str | int) else ""
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{name} must be true or false: {raw!r}")
        return text in ("true", "1", "yes")
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Path):
        raise ConfigError(f"not a valid value: {raw!r}")  # TOML arrays, tables, true/false
    if name == "log_level":
        return str(raw).strip().lower()
    if name in _DURATIONS:
        return parse_duration(raw)
    if name in _SIZES:
        if isinstance(raw, float):
            raise ConfigError(f"not a size: {raw!r} (try 64MiB)")
        return parse_size(raw)
    if name in _FLOATS:
        try:
            return float(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a number: {raw!r}") from exc
    if name in _INTS:
        if isinstance(raw, float) and not raw.is_integer():
            raise ConfigError(f"{name} must be an integer: {raw!r}")
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be an integer: {raw!r}") from exc
    if name in _PATHS and isinstance(raw, str | Path):
        return Path(raw) if str(raw) else None
    if not isinstance(raw, str):
        raise ConfigError(f"must be a string: {raw!r}")
    return raw
