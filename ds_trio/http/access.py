"""Who may make the current request, and whether its client is within its limits.

Runs before every route and WebSocket handshake: authenticates the
`Authorization` header (when access control is on), checks the scopes the
route needs, and takes a token from the client's rate-limit bucket. A client
is its principal when it has one, else its address (the forwarded one only
from a trusted proxy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..auth import AuthConfigError, Authenticator, Principal, read_tokens_file
from ..auth.authenticator import load_jwt_verifier
from ..auth.grants import ADMIN, READ, WRITE
from ..config import Config, ConfigError
from ..limits import LiveReaderLimit, RateLimiter
from ..protocol.errors import (
    BadRequest,
    Forbidden,
    HeadersTooLarge,
    ProtocolError,
    Unauthorized,
)
from ..protocol.paths import RESERVED_PREFIX, canonical_stream_name
from .common import client_address, current, header
from .console import CONSOLE_ENDPOINTS
from .forward import forwarded_base_url

if TYPE_CHECKING:
    from .app import StreamService

__all__ = [
    "Access",
    "build_access",
    "check_request",
    "check_subscription_scope",
    "client_key",
    "principal",
]

PRINCIPAL_KEY: Final = "ds_trio.principal"  # scope key: the request's Principal, if any
_OPS_ENDPOINTS: Final = frozenset({"healthz", "readyz"})
_METHOD_SCOPES: Final = {"GET": READ, "HEAD": READ, "POST": WRITE, "PUT": WRITE, "DELETE": ADMIN}
_SELF_AUTHENTICATED: Final = frozenset({"callback", "ack", "release"})  # their own tokens


@dataclass(frozen=True, slots=True)
class Access:
    """The authenticator and the limiters of one server process."""

    authenticator: Authenticator
    rate_limiter: RateLimiter | None
    live_readers: LiveReaderLimit


def build_access(config: Config) -> Access:
    """The access control and limits `config` asks for, reading its key and token files.

    Raises:
        ConfigError: a token or key file that cannot be used.
    """
    try:
        tokens = list(config.tokens)
        if config.tokens_file is not None:
            tokens += read_tokens_file(config.tokens_file)
        verifier = load_jwt_verifier(
            public_key_file=config.jwt_public_key_file,
            jwks_file=config.jwt_jwks_file,
            audience=config.jwt_audience,
            issuer=config.jwt_issuer,
        )
        authenticator = Authenticator.build(tokens, verifier, config.jwt_streams_claim)
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from None
    rate_limiter = None
    if config.rate_limit > 0:
        burst = config.rate_limit_burst or max(10, round(2 * config.rate_limit))
        rate_limiter = RateLimiter(config.rate_limit, burst)
    live = LiveReaderLimit(config.max_live_readers, config.max_live_readers_per_client)
    return Access(authenticator, rate_limiter, live)


def principal() -> Principal | None:
    """The authenticated caller of the current request, if access control is on."""
    return current().scope.get(PRINCIPAL_KEY)


def client_key(service: StreamService) -> str:
    """What the current request's limits are counted against."""
    caller = principal()
    if caller is not None:
        return caller.name
    return "addr:" + (client_address(service.config.trusted_proxies) or "unknown")


async def check_request(service: StreamService) -> None:
    """Authenticate, authorize and rate-limit the current request (or WebSocket handshake).

    Raises:
        HeadersTooLarge: the request line and headers are over the limit (431).
        Unauthorized: credentials are needed and missing or invalid (401).
        Forbidden: the credentials lack a scope the request needs (403).
        TooManyRequests: the client is over its rate (429).
    """
    _check_header_size(service.config.max_header_bytes)
    endpoint = current().endpoint  # routing has run: decided on the route, not its spelling
    if endpoint in _OPS_ENDPOINTS:
        return
    path = _request_path()
    access = service.access
    assert access is not None
    limited = access.rate_limiter is not None and forwarded_base_url(service) is None
    needs = _needs(service.config, endpoint, path) if access.authenticator.enabled else None
    if needs is None:
        if limited:
            _take_token(service, access)
        return
    try:
        caller = access.authenticator.authenticate(header("Authorization"), service.clock())
    except Unauthorized:
        if limited:
            _take_token(service, access)  # guessing tokens is rate-limited by address
        raise
    current().scope[PRINCIPAL_KEY] = caller
    if limited:
        _take_token(service, access)
    for scope, name in needs:
        allowed = caller.allows(scope, name) if name is not None else caller.holds(scope)
        if not allowed:
            where = f"on {name}" if name is not None else "here"
            raise Forbidden(f"this token has no {scope} scope {where}", scope)


def check_subscription_scope(body: Any, canonical: Callable[[str], str]) -> None:
    """Refuse a subscription body that reaches past the caller's own grants.

    A subscription's answers list the streams it links with their offsets, and
    its wake events are appends: so its pattern and streams need `read`, and
    its wake stream `write`, as if the caller read and wrote them itself.
    `canonical` turns a body's root-relative path into a stream name.

    Raises:
        Forbidden: a pattern, stream or wake stream outside the caller's grants.
    """
    caller = principal()
    if caller is None or not isinstance(body, dict):
        return  # access control is off, or the manager refuses the body
    pattern = body.get("pattern")
    if isinstance(pattern, str) and not caller.covers(READ, pattern):
        raise Forbidden(f"this token cannot read every stream {pattern} matches", READ)
    streams = body.get("streams")
    for path in streams if isinstance(streams, list) else []:
        if isinstance(path, str) and not caller.allows(READ, _canonical_or_raw(canonical, path)):
            raise Forbidden(f"this token has no read scope on {path}", READ)
    wake = body.get("wake_stream")
    if isinstance(wake, str) and not caller.allows(WRITE, _canonical_or_raw(canonical, wake)):
        raise Forbidden(f"this token has no write scope on {wake}", WRITE)


def _canonical_or_raw(canonical: Callable[[str], str], path: str) -> str:
    try:
        return canonical(path)
    except ProtocolError:
        return path  # the manager refuses it; until then, judged as written


def _check_header_size(limit: int) -> None:
    """h11 only limits headers that arrive in pieces; this counts all of them."""
    scope = current().scope
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
    if size > limit:
        raise HeadersTooLarge(f"request headers exceed {limit} bytes")


def _take_token(service: StreamService, access: Access) -> None:
    assert access.rate_limiter is not None
    access.rate_limiter.check(client_key(service), service.clock())


def _request_path() -> str:
    served = current()
    raw_path = served.scope.get("raw_path") or served.path.encode()
    return raw_path.decode("latin-1").split("?", 1)[0]


def _needs(config: Config, endpoint: str | None, path: str) -> list[tuple[str, str | None]] | None:
    """The (scope, name) pairs the request must hold, or None for a public one.

    A name of None asks for the scope anywhere; an empty list for credentials only.
    The stream routes read the raw path, as `stream_name` and the reserved routes do.
    """
    method = current().method  # a WebSocket handshake is a GET
    if endpoint == "metrics" or endpoint in CONSOLE_ENDPOINTS:
        # The console is public only because Config refuses it with access control on;
        # should it ever be routed with tokens, its listing of every stream is admin's.
        return [(ADMIN, None)]
    prefix = config.stream_root + "/"
    if endpoint not in ("stream", "stream_ws", "reserved"):
        return [] if endpoint is not None else None  # unknown paths answer 404 to everyone
    if method == "OPTIONS" or not path.startswith(prefix):
        return None
    rest = path[len(prefix) :]
    first, _, tail = rest.partition("/")
    if first == RESERVED_PREFIX:
        parts = tail.split("/")
        if tail == "jwks.json" or (
            len(parts) == 3 and parts[0] == "subscriptions" and parts[2] in _SELF_AUTHENTICATED
        ):
            return None
        target = "/".join(parts[:2]) if parts[0] == "subscriptions" else tail
        return [(ADMIN, f"{RESERVED_PREFIX}/{target}")]
    scope = _METHOD_SCOPES.get(method)
    if scope is None:
        return []  # the route answers 405, to callers who may know
    try:
        name = canonical_stream_name(rest)
    except BadRequest:
        return []  # the route answers 400 once the caller is known
    needs: list[tuple[str, str | None]] = [(scope, name)]
    source = header("Stream-Forked-From") if method == "PUT" else None
    if source is not None:
        source_path = source.strip().split("?", 1)[0]
        if source_path.startswith(prefix):
            try:
                needs.append((READ, canonical_stream_name(source_path[len(prefix) :])))
            except ProtocolError:
                pass  # the route answers 400
    return needs
