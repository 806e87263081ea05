"""Header parsing (`ds_trio.protocol.headers`, spec sections 4.1, 5.1 and 5.2).

Covers the strict Stream-TTL syntax, RFC 3339 Stream-Expires-At (offsets,
fractions, real calendar dates), Stream-Seq limits, the Stream-Closed presence
flag and Content-Type media-type normalisation. Every malformed value must
raise `BadRequest` (status 400).
"""

from __future__ import annotations

import pytest

from ds_trio.protocol.errors import BadRequest
from ds_trio.protocol.headers import (
    STREAM_SEQ_MAX_LENGTH,
    ExpiresAt,
    is_true_flag,
    media_type,
    parse_expires_at,
    parse_stream_seq,
    parse_ttl,
)

NEW_YEAR_2025 = 1735689600.0  # 2025-01-01T00:00:00Z in Unix seconds


# --- Stream-TTL --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("0", 0, id="zero"),
        pytest.param("1", 1, id="one"),
        pytest.param("3600", 3600, id="an-hour"),
        pytest.param(str(10**12), 10**12, id="largest"),
    ],
)
def test_ttl_valid(raw: str | None, expected: int | None) -> None:
    assert parse_ttl(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("-1", id="negative"),
        pytest.param("+1", id="plus-sign"),
        pytest.param("01", id="leading-zero"),
        pytest.param("00", id="double-zero"),
        pytest.param("1.0", id="decimal"),
        pytest.param("1e3", id="exponent"),
        pytest.param(" 1", id="leading-space"),
        pytest.param("1 ", id="trailing-space"),
        pytest.param("abc", id="letters"),
        pytest.param("0x10", id="hex"),
        pytest.param("1_000", id="underscore"),
        pytest.param("\u0661", id="arabic-indic-one"),
        pytest.param(str(10**12 + 1), id="too-large"),
        pytest.param("1" * 4301, id="beyond-int-parsing"),
    ],
)
def test_ttl_invalid(raw: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_ttl(raw)
    assert info.value.status == 400


# --- Stream-Expires-At ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "timestamp"),
    [
        pytest.param("2025-01-01T00:00:00Z", NEW_YEAR_2025, id="upper-z"),
        pytest.param("2025-01-01T00:00:00z", NEW_YEAR_2025, id="lower-z"),
        pytest.param("2025-01-01t00:00:00Z", NEW_YEAR_2025, id="lower-t"),
        pytest.param("2025-01-01T00:00:00+00:00", NEW_YEAR_2025, id="plus-zero-offset"),
        pytest.param("2025-01-01T00:00:00-00:00", NEW_YEAR_2025, id="minus-zero-offset"),
        pytest.param("2025-01-01T05:30:00+05:30", NEW_YEAR_2025, id="positive-offset"),
        pytest.param("2024-12-31T18:30:00-05:30", NEW_YEAR_2025, id="negative-offset"),
        pytest.param("2025-01-01T00:00:00.5Z", NEW_YEAR_2025 + 0.5, id="fraction"),
        pytest.param("2025-01-01T00:00:00.250+00:00", NEW_YEAR_2025 + 0.25, id="fraction-offset"),
        pytest.param("2025-01-01T00:00:00.000000001Z", NEW_YEAR_2025 + 1e-9, id="nanoseconds"),
        pytest.param("2024-02-29T12:00:00Z", 1709208000.0, id="leap-day"),
        pytest.param("2016-12-31T23:59:60Z", 1483228800.0, id="leap-second"),
        pytest.param(" 2025-01-01T00:00:00Z ", NEW_YEAR_2025, id="surrounding-space"),
    ],
)
def test_expires_at_valid(raw: str, timestamp: float) -> None:
    parsed = parse_expires_at(raw)
    assert isinstance(parsed, ExpiresAt)
    assert parsed.timestamp == pytest.approx(timestamp, abs=1e-6)
    assert parsed.text == raw.strip()


def test_expires_at_absent() -> None:
    assert parse_expires_at(None) is None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("garbage", id="garbage"),
        pytest.param("2025-02-30T00:00:00Z", id="february-30"),
        pytest.param("2023-02-29T00:00:00Z", id="february-29-non-leap"),
        pytest.param("2025-13-01T00:00:00Z", id="month-13"),
        pytest.param("2025-00-10T00:00:00Z", id="month-0"),
        pytest.param("2025-01-00T00:00:00Z", id="day-0"),
        pytest.param("2025-04-31T00:00:00Z", id="april-31"),
        pytest.param("0000-01-01T00:00:00Z", id="year-0"),
        pytest.param("2025-01-01T24:00:00Z", id="hour-24"),
        pytest.param("2025-01-01T00:60:00Z", id="minute-60"),
        pytest.param("2025-01-01T00:00:61Z", id="second-61"),
        pytest.param("2025-01-01T00:00:00", id="missing-offset"),
        pytest.param("2025-01-01", id="date-only"),
        pytest.param("2025-01-01T00:00Z", id="missing-seconds"),
        pytest.param("2025-01-01 00:00:00Z", id="space-separator"),
        pytest.param("2025-1-1T00:00:00Z", id="unpadded-date"),
        pytest.param("2025-01-01T00:00:00+0530", id="offset-without-colon"),
        pytest.param("2025-01-01T00:00:00+05", id="offset-hours-only"),
        pytest.param("2025-01-01T00:00:00+24:00", id="offset-hour-24"),
        pytest.param("2025-01-01T00:00:00+05:60", id="offset-minute-60"),
        pytest.param("2025-01-01T00:00:00.Z", id="empty-fraction"),
        pytest.param("2025-01-01T00:00:00,5Z", id="comma-fraction"),
        pytest.param("2025-01-01T00:00:00ZZ", id="trailing-garbage"),
        pytest.param("2025-01-01T00:00:00 UTC", id="zone-name"),
        pytest.param("1735689600", id="unix-seconds"),
        pytest.param("Wed, 01 Jan 2025 00:00:00 GMT", id="http-date"),
        pytest.param("\uff12\uff10\uff12\uff15-01-01T00:00:00Z", id="fullwidth-digits"),
    ],
)
def test_expires_at_invalid(raw: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_expires_at(raw)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        pytest.param("2025-01-01T00:00:00Z", "2025-01-01T00:00:00+00:00", True, id="z-vs-offset"),
        pytest.param("2025-01-01T00:00:00Z", "2024-12-31T19:00:00-05:00", True, id="other-zone"),
        pytest.param("2025-01-01T00:00:00Z", "2025-01-01T00:00:00.000Z", True, id="zero-fraction"),
        pytest.param("2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z", False, id="one-second-apart"),
        pytest.param(
            "2025-01-01T00:00:00Z", "2025-01-01T00:00:00+01:00", False, id="same-wall-clock"
        ),
    ],
)
def test_expires_at_equality_is_by_instant(a: str, b: str, equal: bool) -> None:
    first, second = parse_expires_at(a), parse_expires_at(b)
    assert (first == second) is equal
    if equal:
        assert hash(first) == hash(second)


# --- Stream-Seq --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("a", b"a", id="one-char"),
        pytest.param("00000000000000000001", b"00000000000000000001", id="padded-number"),
        pytest.param("\u00e9", b"\xe9", id="latin-1-byte"),
        pytest.param("x" * STREAM_SEQ_MAX_LENGTH, b"x" * STREAM_SEQ_MAX_LENGTH, id="longest"),
    ],
)
def test_stream_seq_valid(raw: str | None, expected: bytes | None) -> None:
    assert parse_stream_seq(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [pytest.param("", id="empty"), pytest.param("x" * (STREAM_SEQ_MAX_LENGTH + 1), id="too-long")],
)
def test_stream_seq_invalid(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_stream_seq(raw)


# --- Stream-Closed -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("true", True, id="true"),
        pytest.param("TRUE", True, id="upper-case"),
        pytest.param("True", True, id="title-case"),
        pytest.param(" true ", True, id="surrounding-space"),
        pytest.param(None, False, id="absent"),
        pytest.param("", False, id="empty"),
        pytest.param("false", False, id="false"),
        pytest.param("yes", False, id="yes"),
        pytest.param("1", False, id="one"),
        pytest.param("t", False, id="t"),
        pytest.param("truee", False, id="truee"),
        pytest.param("true, true", False, id="repeated"),
    ],
)
def test_is_true_flag(raw: str | None, expected: bool) -> None:
    assert is_true_flag(raw) is expected


# --- Content-Type --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("application/json", "application/json", id="plain"),
        pytest.param("Application/JSON", "application/json", id="mixed-case"),
        pytest.param("application/json; charset=utf-8", "application/json", id="parameter"),
        pytest.param("text/plain;charset=UTF-8", "text/plain", id="parameter-no-space"),
        pytest.param("text/plain ; a=b; c=d", "text/plain", id="several-parameters"),
        pytest.param("  text/plain  ", "text/plain", id="surrounding-space"),
        pytest.param("application/json;", "application/json", id="empty-parameters"),
        pytest.param("application/vnd.api+json", "application/vnd.api+json", id="suffix"),
        pytest.param("application/x-ndjson", "application/x-ndjson", id="x-type"),
        pytest.param("*/*", "*/*", id="wildcards-are-tokens"),
    ],
)
def test_media_type_valid(raw: str, expected: str) -> None:
    assert media_type(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("json", id="no-slash"),
        pytest.param("application/", id="no-subtype"),
        pytest.param("/json", id="no-type"),
        pytest.param("application/json/extra", id="two-slashes"),
        pytest.param("text /plain", id="space-before-slash"),
        pytest.param("text/ plain", id="space-after-slash"),
        pytest.param("text/pl ain", id="space-in-subtype"),
        pytest.param("t\u00ebxt/plain", id="non-ascii"),
        pytest.param("text/plain@", id="separator-in-token"),
        pytest.param("; charset=utf-8", id="parameters-only"),
    ],
)
def test_media_type_invalid(raw: str) -> None:
    with pytest.raises(BadRequest):
        media_type(raw)
