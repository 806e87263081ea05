"""Cursors, ETags and Cache-Control (`ds_trio.protocol.caching`, spec 5.6 and 10.1).

Covers the interval cursor (epoch, interval, clamping, echoed cursors plus
jitter, junk cursors ignored) and its monotonicity property for every jitter
in 1..3600, the ETag shape (stream incarnation, range, `:c` when closed) and
If-None-Match matching, and the Cache-Control strings.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_trio.protocol.caching import (
    CACHE_NO_STORE,
    CURSOR_EPOCH,
    CURSOR_INTERVAL,
    JITTER_MAX_SECONDS,
    accepts_gzip,
    cacheable,
    cursor_at_least,
    etag_for,
    etag_matches,
    gzip_etag,
    next_cursor,
)

PROPERTY = settings(max_examples=200, deadline=None, database=None)
INTERVAL_1000 = CURSOR_EPOCH + 1000 * CURSOR_INTERVAL + 5  # 5 s into interval 1000


def test_cursor_defaults_match_spec() -> None:
    assert CURSOR_EPOCH == 1728432000.0  # 2024-10-09T00:00:00Z
    assert CURSOR_INTERVAL == 20.0
    assert JITTER_MAX_SECONDS == 3600


@pytest.mark.parametrize(
    ("now", "cursor", "jitter", "expected"),
    [
        pytest.param(CURSOR_EPOCH, None, 1, "0", id="at-epoch"),
        pytest.param(CURSOR_EPOCH + 19.999, None, 1, "0", id="end-of-first-interval"),
        pytest.param(CURSOR_EPOCH + 20, None, 1, "1", id="second-interval"),
        pytest.param(INTERVAL_1000, None, 3600, "1000", id="no-cursor-ignores-jitter"),
        pytest.param(CURSOR_EPOCH - 100, None, 1, "0", id="before-epoch-clamped"),
        pytest.param(INTERVAL_1000, "999", 1, "1000", id="older-cursor-gets-current"),
        pytest.param(INTERVAL_1000, "0", 1, "1000", id="much-older-cursor"),
        pytest.param(INTERVAL_1000, "1000", 1, "1001", id="same-interval-min-jitter"),
        pytest.param(INTERVAL_1000, "1000", 20, "1001", id="jitter-one-interval"),
        pytest.param(INTERVAL_1000, "1000", 21, "1002", id="jitter-rounds-up"),
        pytest.param(INTERVAL_1000, "1000", 3600, "1180", id="max-jitter"),
        pytest.param(INTERVAL_1000, "1500", 50, "1503", id="cursor-ahead-advances-further"),
        pytest.param(INTERVAL_1000, "abc", 1, "1000", id="junk-cursor-ignored"),
        pytest.param(INTERVAL_1000, "", 1, "1000", id="empty-cursor-ignored"),
        pytest.param(INTERVAL_1000, "1000.5", 1, "1000", id="decimal-cursor-ignored"),
        pytest.param(INTERVAL_1000, "-5", 1, "1000", id="negative-cursor"),
        pytest.param(INTERVAL_1000, "9" * 5000, 1, "1000", id="absurdly-long-cursor-ignored"),
    ],
)
def test_next_cursor(now: float, cursor: str | None, jitter: int, expected: str) -> None:
    assert next_cursor(now, cursor, jitter) == expected


@pytest.mark.parametrize(
    ("now", "cursor", "jitter", "interval", "epoch", "expected"),
    [
        pytest.param(95.0, None, 1, 10.0, 0.0, "9", id="custom-interval-and-epoch"),
        pytest.param(95.0, "9", 25, 10.0, 0.0, "12", id="custom-interval-jitter"),
        pytest.param(95.0, "9", 1, 3600.0, 0.0, "10", id="interval-longer-than-jitter"),
    ],
)
def test_next_cursor_custom_clock(
    now: float, cursor: str | None, jitter: int, interval: float, epoch: float, expected: str
) -> None:
    assert next_cursor(now, cursor, jitter, interval=interval, epoch=epoch) == expected


nows = st.floats(min_value=CURSOR_EPOCH - 1e6, max_value=CURSOR_EPOCH + 1e10)
jitters = st.integers(min_value=1, max_value=JITTER_MAX_SECONDS)


def current_interval(now: float) -> int:
    return max(0, math.floor((now - CURSOR_EPOCH) / CURSOR_INTERVAL))


@PROPERTY
@given(now=nows, jitter=jitters, delta=st.integers(min_value=-1000, max_value=1000))
def test_cursor_never_goes_backwards(now: float, jitter: int, delta: int) -> None:
    current = current_interval(now)
    echoed = current + delta
    result = int(next_cursor(now, str(echoed), jitter))
    assert result >= current
    if echoed >= current:
        assert echoed < result <= echoed + math.ceil(JITTER_MAX_SECONDS / CURSOR_INTERVAL)
    else:
        assert result == current


@PROPERTY
@given(now=nows, jitter=jitters, junk=st.one_of(st.none(), st.text(max_size=8)))
def test_cursor_without_usable_echo_is_current_interval(
    now: float, jitter: int, junk: str | None
) -> None:
    current = current_interval(now)
    result = int(next_cursor(now, junk, jitter))
    assert result >= current
    try:
        echoed = None if junk is None else int(junk)
    except ValueError:
        echoed = None
    if echoed is None or echoed < current:
        assert result == current


def test_a_cursor_too_long_to_be_one_is_junk() -> None:
    now = CURSOR_EPOCH + 1000 * CURSOR_INTERVAL
    assert next_cursor(now, "9" * 4300, 1) == next_cursor(now, None, 1)
    assert next_cursor(now, "9" * 21, 1) == next_cursor(now, None, 1)


@PROPERTY
@given(now=nows, jitters=st.lists(jitters, min_size=1, max_size=10))
def test_echoing_cursors_strictly_increases(now: float, jitters: list[int]) -> None:
    cursor = next_cursor(now, None, 1)
    for jitter in jitters:
        following = next_cursor(now, cursor, jitter)
        assert int(following) > int(cursor)
        cursor = following


# --- ETags ---------------------------------------------------------------------

START = "00000000000000000000"
END = "00000000000000000042"


@pytest.mark.parametrize(
    ("stream_id", "start", "end", "closed", "etag"),
    [
        pytest.param("ab12", START, END, False, f'"ab12:{START}:{END}"', id="open"),
        pytest.param("ab12", START, END, True, f'"ab12:{START}:{END}:c"', id="closed"),
        pytest.param("ab12", END, END, False, f'"ab12:{END}:{END}"', id="empty-range"),
    ],
)
def test_etag_for(stream_id: str, start: str, end: str, closed: bool, etag: str) -> None:
    assert etag_for(stream_id, start, end, closed) == etag


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(("s1", START, END, False), ("s1", START, END, True), id="closure"),
        pytest.param(("s1", START, END, False), ("s2", START, END, False), id="incarnation"),
        pytest.param(("s1", START, END, False), ("s1", END, END, False), id="start"),
        pytest.param(("s1", START, END, False), ("s1", START, START, False), id="end"),
    ],
)
def test_etag_varies(a: tuple[str, str, str, bool], b: tuple[str, str, str, bool]) -> None:
    assert etag_for(*a) != etag_for(*b)
    assert not etag_matches(etag_for(*a), etag_for(*b))


ETAG = '"s1:0:5"'


@pytest.mark.parametrize(
    ("if_none_match", "matches"),
    [
        pytest.param(None, False, id="absent"),
        pytest.param("", False, id="empty"),
        pytest.param(ETAG, True, id="exact"),
        pytest.param("*", True, id="wildcard"),
        pytest.param(f"W/{ETAG}", True, id="weak-form"),
        pytest.param(f'"other", {ETAG}', True, id="in-list"),
        pytest.param(f'"other",{ETAG} , "more"', True, id="in-list-no-spaces"),
        pytest.param('"s1:0:5:c"', False, id="closed-variant"),
        pytest.param('"s1:0:6"', False, id="other-range"),
        pytest.param("s1:0:5", False, id="unquoted"),
        pytest.param('"other", "more"', False, id="list-without-it"),
    ],
)
def test_etag_matches(if_none_match: str | None, matches: bool) -> None:
    assert etag_matches(if_none_match, ETAG) is matches


def test_weak_stored_etag_matches_strong_header() -> None:
    assert etag_matches(ETAG, f"W/{ETAG}") is True


# --- Cache-Control -------------------------------------------------------------


@pytest.mark.parametrize(
    ("visibility", "header"),
    [
        pytest.param("public", "public, max-age=60, stale-while-revalidate=300", id="public"),
        pytest.param("private", "private, max-age=60, stale-while-revalidate=300", id="private"),
    ],
)
def test_cacheable(visibility: str, header: str) -> None:
    assert cacheable(visibility) == header


def test_no_store() -> None:
    assert CACHE_NO_STORE == "no-store"


@pytest.mark.parametrize(
    ("accept_encoding", "admits"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZip", True),
        ("x-gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("br, deflate", False),
        ("identity", False),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip; q=0.001", True),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),  # naming gzip overrides the wildcard
        ("*, gzip;q=0", False),
        ("gzip;q=abc", False),
        ("gzip;q=2", False),
        ("gzip;level=9", True),
    ],
)
def test_accepts_gzip(accept_encoding: str | None, admits: bool) -> None:
    assert accepts_gzip(accept_encoding) is admits


def test_gzip_etag_differs_and_stays_strong() -> None:
    etag = etag_for("s1", "a", "b", closed=True)
    variant = gzip_etag(etag)
    assert variant != etag
    assert variant.startswith('"') and variant.endswith('"')
    assert not etag_matches(etag, variant) and etag_matches(variant, variant)


@pytest.mark.parametrize(
    ("floor", "expected"),
    [("999", "1000"), ("1000", "1000"), ("1003", "1003")],
)
def test_cursor_at_least_follows_the_clock_from_a_floor(floor: str, expected: str) -> None:
    assert cursor_at_least(INTERVAL_1000, floor) == expected


@PROPERTY
@given(
    start=st.floats(min_value=CURSOR_EPOCH, max_value=CURSOR_EPOCH + 1e9),
    steps=st.lists(st.floats(min_value=0, max_value=1e5), max_size=20),
    jitter=st.integers(min_value=1, max_value=JITTER_MAX_SECONDS),
    echoed=st.one_of(st.none(), st.integers(min_value=0, max_value=10**8).map(str)),
)
def test_sse_cursor_sequence_is_monotonic_and_above_the_echo(
    start: float, steps: list[float], jitter: int, echoed: str | None
) -> None:
    now = start
    cursors = [next_cursor(now, echoed, jitter)]
    for step in steps:
        now += step
        cursors.append(cursor_at_least(now, cursors[-1]))
    values = [int(c) for c in cursors]
    assert values == sorted(values)
    if echoed is not None and int(echoed) >= math.floor((start - CURSOR_EPOCH) / CURSOR_INTERVAL):
        assert values[0] > int(echoed)
    assert values[-1] <= max(values[0], math.floor((now - CURSOR_EPOCH) / CURSOR_INTERVAL))
