"""Access control over HTTP: static tokens, JWTs, scopes over globs, and what stays public.

Every test runs against both stores: the checks happen before a route touches
a store, and a store must never make a refused request half-happen.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ds_trio.auth import hash_token, new_token

from ..conftest import RunningServer, start_server
from .helpers import FakeClock, assert_short_text_error, wait_for_watchers

TEXT = {"Content-Type": "text/plain"}
NOW = 1_900_000_000.0

READER = new_token()
INGEST = new_token()  # write on events/**, no read
ADMIN = new_token()
FORKER = new_token()  # write on forks/**, read on events/**... only through a JWT below
TOKENS = [
    {"name": "reader", "sha256": hash_token(READER), "scopes": ["read"], "streams": ["**"]},
    {"name": "ingest", "sha256": hash_token(INGEST), "scopes": ["write"], "streams": ["events/**"]},
    {"name": "admin", "sha256": hash_token(ADMIN), "scopes": ["admin"]},
    {"name": "forker", "sha256": hash_token(FORKER), "scopes": ["write"], "streams": ["forks/*"]},
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def start(nursery: trio.Nursery, store_settings: dict[str, object], **settings: object) -> RunningServer:
    return await start_server(nursery, **store_settings, **settings)


@pytest.fixture(name="secured")
async def _secured(nursery: trio.Nursery, store_settings: dict[str, object]) -> RunningServer:
    return await start(nursery, store_settings, tokens=TOKENS)


def assert_challenge(response: httpx.Response, status: int, error: str | None) -> None:
    assert response.status_code == status, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="ds_trio"')
    if error is None:
        assert "error=" not in challenge
    else:
        assert f'error="{error}"' in challenge
    if response.request.method != "HEAD":
        assert_short_text_error(response.status_code, response.headers, response.text)


async def test_no_credentials_get_401_with_a_bearer_challenge(
    secured: RunningServer, client: httpx.AsyncClient
) -> None:
    url = secured.url("events/a")
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
        assert_challenge(await client.request(method, url, headers=TEXT), 401, None)
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert_challenge(await client.get(url, headers=basic), 401, None)
    assert (await client.head(url, headers=bearer(ADMIN))).status_code == 404  # nothing was made


async def test_unknown_or_malformed_tokens_get_401_invalid_token(
    secured: RunningServer, client: httpx.AsyncClient
) -> None:
    url = secured.url("events/a")
    for token in (new_token(), READER + "x", "a.b.c", "x" * 9000):
        response = await client.get(url, headers=bearer(token))
        assert_challenge(response, 401, "invalid_token")
        assert token not in response.text and token not in response.headers["www-authenticate"]


async def test_scopes_decide_each_method(secured: RunningServer, client: httpx.AsyncClient) -> None:
    url = secured.url("events/a")
    assert (await client.put(url, headers={**TEXT, **bearer(INGEST)})).status_code == 201
    append = await client.post(url, content=b"hello", headers={**TEXT, **bearer(INGEST)})
    assert append.status_code == 204
    # write does not include read: an ingest token cannot read back
    assert_challenge(await client.get(url, params={"offset": "-1"}, headers=bearer(INGEST)), 403, "insufficient_scope")
    read = await client.get(url, params={"offset": "-1"}, headers=bearer(READER))
    assert read.status_code == 200 and read.content == b"hello"
    assert (await client.head(url, headers=bearer(READER))).status_code == 200
    refused = await client.post(url, content=b"nope", headers={**TEXT, **bearer(READER)})
    assert_challenge(refused, 403, "insufficient_scope")
    assert 'scope="write"' in refused.headers["www-authenticate"]
    # deleting takes admin
    assert_challenge(await client.delete(url, headers=bearer(INGEST)), 403, "insufficient_scope")
    assert (await client.delete(url, headers=bearer(ADMIN))).status_code == 204


async def test_globs_confine_a_token_to_its_streams(
    secured: RunningServer, client: httpx.AsyncClient
) -> None:
    for name in ("other/a", "eventsx/a", "events-a"):
        response = await client.put(secured.url(name), headers={**TEXT, **bearer(INGEST)})
        assert_challenge(response, 403, "insufficient_scope")
    # a percent-encoded spelling names the same stream, and the same grant covers it
    deep = await client.put(secured.url("events/%61/b"), headers={**TEXT, **bearer(INGEST)})
    assert deep.status_code == 201
    refused = await client.put(secured.url("%65vents2/a"), headers={**TEXT, **bearer(INGEST)})
    assert refused.status_code == 403
    # out of scope is 403 whether or not the stream exists: no existence oracle
    missing = await client.get(secured.url("events/nothing"), headers=bearer(INGEST))
    present = await client.get(secured.url("events/a/b"), headers=bearer(INGEST))
    assert missing.status_code == present.status_code == 403


async def test_a_fork_needs_read_on_its_source(
    secured: RunningServer, client: httpx.AsyncClient
) -> None:
    source = secured.url("events/src")
    await client.put(source, content=b"base", headers={**TEXT, **bearer(ADMIN)})
    fork = {**TEXT, "Stream-Forked-From": f"{secured.service.config.stream_root}/events/src"}
    refused = await client.put(secured.url("forks/one"), headers={**fork, **bearer(FORKER)})
    assert_challenge(refused, 403, "insufficient_scope")
    assert 'scope="read"' in refused.headers["www-authenticate"]
    assert (await client.head(secured.url("forks/one"), headers=bearer(ADMIN))).status_code == 404
    made = await client.put(secured.url("forks/one"), headers={**fork, **bearer(ADMIN)})
    assert made.status_code == 201
    read = await client.get(secured.url("forks/one"), params={"offset": "-1"}, headers=bearer(READER))
    assert read.content == b"base"


async def test_preflights_health_and_the_jwks_stay_public(
    secured: RunningServer, client: httpx.AsyncClient
) -> None:
    preflight = await client.options(
        secured.url("events/a"),
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip
    assert preflight.status_code == 204
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert (await client.get(f"{secured.base_url}/healthz")).status_code == 200
    assert (await client.get(f"{secured.base_url}/readyz")).status_code == 200
    jwks = await client.get(f"{secured.stream_root}/__ds/jwks.json")
    assert jwks.status_code == 200 and jwks.json()["keys"]


async def test_metrics_need_admin(secured: RunningServer, client: httpx.AsyncClient) -> None:
    metrics = f"{secured.base_url}/metrics"
    assert_challenge(await client.get(metrics), 401, None)
    assert_challenge(await client.get(metrics, headers=bearer(READER)), 403, "insufficient_scope")
    assert (await client.get(metrics, headers=bearer(ADMIN))).status_code == 200


async def test_subscription_apis_need_admin_but_acks_carry_their_own_token(
    secured: RunningServer, client: httpx.AsyncClient
) -> None:
    subs = f"{secured.stream_root}/__ds/subscriptions"
    wakes = secured.url("wake/pool")
    await client.put(wakes, content=b"[]", headers={"Content-Type": "application/json", **bearer(ADMIN)})
    body = {"type": "pull-wake", "pattern": "events/*", "wake_stream": "wake/pool"}
    assert_challenge(await client.put(f"{subs}/s1", json=body), 401, None)
    refused = await client.put(f"{subs}/s1", json=body, headers=bearer(INGEST))
    assert_challenge(refused, 403, "insufficient_scope")
    assert (await client.put(f"{subs}/s1", json=body, headers=bearer(ADMIN))).status_code == 201
    await client.put(secured.url("events/e"), content=b"x", headers={**TEXT, **bearer(ADMIN)})
    with trio.fail_after(10):  # the wake event, appended once the create commits
        offset = "-1"
        while offset == "-1" or polled.content in (b"", b"[]"):
            params = {"offset": offset, "live": "long-poll"}
            polled = await client.get(wakes, params=params, headers=bearer(READER))
            offset = polled.headers["stream-next-offset"]
    assert_challenge(await client.post(f"{subs}/s1/claim", json={"worker": "w"}), 401, None)
    claim = await client.post(f"{subs}/s1/claim", json={"worker": "w"}, headers=bearer(ADMIN))
    assert claim.status_code == 200, claim.text
    grant = claim.json()
    acks = [{"stream": s["path"], "offset": s["tail_offset"]} for s in grant["streams"]]
    body = {"wake_id": grant["wake_id"], "generation": grant["generation"], "acks": acks, "done": True}
    ack = await client.post(f"{subs}/s1/ack", json=body, headers=bearer(grant["token"]))
    assert ack.status_code == 200, ack.text  # the claim's own token, no API token
    forged = await client.post(f"{subs}/s1/ack", json={"acks": []}, headers=bearer(ADMIN))
    assert forged.status_code == 401  # an API token is no claim token


async def test_authenticated_reads_are_cached_privately(
    secured: RunningServer, client: httpx.AsyncClient
) -> None:
    url = secured.url("events/c")
    await client.put(url, content=b"data", headers={**TEXT, **bearer(ADMIN)})
    catch_up = await client.get(url, params={"offset": "-1"}, headers=bearer(READER))
    assert catch_up.headers["cache-control"].startswith("private")
    tail = catch_up.headers["stream-next-offset"]
    async with trio.open_nursery() as nursery:
        polled: list[httpx.Response] = []

        async def poll() -> None:
            params = {"offset": tail, "live": "long-poll"}
            polled.append(await client.get(url, params=params, headers=bearer(READER)))

        nursery.start_soon(poll)
        await wait_for_watchers(secured, "events/c", 1)
        await client.post(url, content=b"more", headers={**TEXT, **bearer(ADMIN)})
    assert polled[0].status_code == 200
    assert polled[0].headers["cache-control"].startswith("private")
    assert "public" not in polled[0].headers["cache-control"]


async def test_tokens_file_and_config_errors(
    nursery: trio.Nursery, store_settings: dict[str, object], tmp_path: Path, client: httpx.AsyncClient
) -> None:
    token = new_token()
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[tokens]]\nname = "filed"\nsha256 = "{hash_token(token)}"\nscopes = ["admin"]\n'
    )
    server = await start(nursery, store_settings, tokens_file=tokens)
    assert (await client.put(server.url("x"), headers={**TEXT, **bearer(token)})).status_code == 201
    assert (await client.put(server.url("y"), headers=TEXT)).status_code == 401


# -- JWTs ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(key: Ed25519PrivateKey, **claims: object) -> str:
    header = _b64(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


@pytest.fixture(name="jwt_server")
async def _jwt_server(
    nursery: trio.Nursery, store_settings: dict[str, object], tmp_path: Path
) -> tuple[RunningServer, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    server = await start(
        nursery, store_settings,
        jwt_public_key_file=pem, jwt_audience="streams.example", jwt_issuer="https://auth.example",
    )  # fmt: skip
    server.service.clock = FakeClock(NOW)
    return server, key


def claims(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sub": "user-1", "aud": "streams.example", "iss": "https://auth.example",
        "exp": NOW + 300, "scope": "read write", "streams": ["users/user-1/**"],
    }  # fmt: skip
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


async def test_a_valid_jwt_gets_its_claimed_scopes(
    jwt_server: tuple[RunningServer, Ed25519PrivateKey], client: httpx.AsyncClient
) -> None:
    server, key = jwt_server
    token = mint(key, **claims())
    url = server.url("users/user-1/inbox")
    assert (await client.put(url, headers={**TEXT, **bearer(token)})).status_code == 201
    assert (await client.post(url, content=b"hi", headers={**TEXT, **bearer(token)})).status_code == 204
    read = await client.get(url, params={"offset": "-1"}, headers=bearer(token))
    assert read.content == b"hi" and read.headers["cache-control"].startswith("private")
    other = await client.get(server.url("users/user-2/inbox"), headers=bearer(token))
    assert_challenge(other, 403, "insufficient_scope")
    assert_challenge(await client.delete(url, headers=bearer(token)), 403, "insufficient_scope")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": NOW - 60}, "token expired"),
        ({"aud": "elsewhere"}, "wrong audience"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"exp": None}, "token has no exp"),
        ({"sub": None}, "token has no sub"),
        ({"streams": None}, "streams claim"),
        ({"scope": "superuser"}, "streams claim"),
    ],
)
async def test_bad_jwts_get_401_with_the_reason(
    jwt_server: tuple[RunningServer, Ed25519PrivateKey],
    client: httpx.AsyncClient,
    changes: dict[str, object],
    reason: str,
) -> None:
    server, key = jwt_server
    response = await client.get(server.url("users/user-1/inbox"), headers=bearer(mint(key, **claims(**changes))))
    assert_challenge(response, 401, "invalid_token")
    assert reason in response.text and reason in response.headers["www-authenticate"]


async def test_a_jwt_signed_by_another_key_is_refused(
    jwt_server: tuple[RunningServer, Ed25519PrivateKey], client: httpx.AsyncClient
) -> None:
    server, _ = jwt_server
    forged = mint(Ed25519PrivateKey.generate(), **claims())
    response = await client.get(server.url("users/user-1/inbox"), headers=bearer(forged))
    assert_challenge(response, 401, "invalid_token")
    assert "bad signature" in response.text


async def test_metrics_need_admin_however_the_path_is_spelled(
    secured: RunningServer, client: httpx.AsyncClient
) -> None:
    for path in ("/metrics/", "/%6Detrics", "/%6detrics", "/metrics%2f", "//metrics"):
        response = await client.get(f"{secured.base_url}{path}")
        assert response.status_code in (401, 404), (path, response.status_code)
        assert "ds_trio_" not in response.text


async def test_forged_worker_and_claim_headers_are_refused_not_crashed(
    secured: RunningServer, client: httpx.AsyncClient
) -> None:
    odd = {"DS-Trio-Forward": b"\xe9", "Authorization": b"Bearer x.\xe9"}
    response = await client.post(
        f"{secured.stream_root}/__ds/subscriptions/none/ack",
        json={"generation": 1, "wake_id": "w", "acks": []},
        headers=odd,
    )
    assert response.status_code in (401, 404), response.text


async def test_a_subscription_reaches_no_further_than_its_creator(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    own = new_token()
    tokens = [*TOKENS, {"name": "own", "sha256": hash_token(own), "scopes": ["admin"],
                        "streams": ["__ds/subscriptions/mine", "team/**"]}]  # fmt: skip
    server = await start(nursery, store_settings, tokens=tokens)
    sub = f"{server.stream_root}/__ds/subscriptions/mine"
    refused = [
        {"type": "pull-wake", "pattern": "**", "wake_stream": "team/wake"},
        {"type": "pull-wake", "pattern": "team/*", "wake_stream": "victim/log"},
        {"type": "pull-wake", "streams": ["secret/plans"], "wake_stream": "team/wake"},
        {"type": "webhook", "pattern": "*/x", "webhook": {"url": "https://hooks.example/x"}},
    ]
    for body in refused:
        response = await client.put(sub, json=body, headers=bearer(own))
        assert_challenge(response, 403, "insufficient_scope")
    allowed = {"type": "pull-wake", "pattern": "team/**", "wake_stream": "team/wake"}
    await client.put(server.url("team/wake"), content=b"[]", headers={"Content-Type": "application/json", **bearer(own)})
    assert (await client.put(sub, json=allowed, headers=bearer(own))).status_code == 201
    more = await client.post(f"{sub}/streams", json={"streams": ["secret/plans"]}, headers=bearer(own))
    assert_challenge(more, 403, "insufficient_scope")


async def test_subscription_bodies_are_capped(secured: RunningServer, client: httpx.AsyncClient) -> None:
    ack = f"{secured.stream_root}/__ds/subscriptions/none/ack"
    big = b"[" + b"1," * 600_000 + b"1]"
    assert (await client.post(ack, content=big, headers={"Content-Type": "application/json"})).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 100_000

    chunked = await client.post(ack, content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
