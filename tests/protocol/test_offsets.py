"""Offsets (`ds_trio.protocol.offsets`, spec section 8).

Covers the fixed-width token format (`<16 zero digits>_<16-digit position>`)
and its strict parser, the read-offset sentinels `-1` and `now`, and the
properties the spec requires: tokens never contain `,&=?/` nor equal a
sentinel, comparing two minted tokens as strings orders them like their
positions, and the offsets a stream hands out over a run of appends strictly
increase in append order.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_trio.protocol.errors import BadRequest, InvalidOffset
from ds_trio.protocol.offsets import (
    BEGINNING,
    NOW,
    WIDTH,
    Offset,
    format_offset,
    parse_read_offset,
)
from ds_trio.protocol.streams import AppendRequest, StreamMeta, decide_append

PROPERTY = settings(max_examples=150, deadline=None, database=None)
ZERO_FIELD = "0" * 16  # the reserved first field, always zero
MAX_POSITION = 10**16 - 1
positions = st.integers(min_value=0, max_value=MAX_POSITION)


def token(position: str) -> str:
    return f"{ZERO_FIELD}_{position}"


def test_width() -> None:
    assert WIDTH == len(format_offset(0)) == 33


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        pytest.param(0, "0000000000000000_0000000000000000", id="zero-as-clients-hard-code-it"),
        pytest.param(1, "0000000000000000_0000000000000001", id="one"),
        pytest.param(1234, "0000000000000000_0000000000001234", id="small"),
        pytest.param(2**53 - 1, "0000000000000000_9007199254740991", id="2^53-1"),
        pytest.param(MAX_POSITION, "0000000000000000_9999999999999999", id="largest"),
    ],
)
def test_format_and_parse(position: int, expected: str) -> None:
    assert format_offset(position) == expected
    assert str(Offset(position)) == expected
    assert Offset.parse(expected) == Offset(position)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param(BEGINNING, id="beginning-sentinel"),
        pytest.param(NOW, id="now-sentinel"),
        pytest.param("0" * 32, id="no-separator"),
        pytest.param(token("0" * 15), id="short-position"),
        pytest.param(token("0" * 17), id="long-position"),
        pytest.param("0" * 15 + "_" + "0" * 17, id="separator-misplaced"),
        pytest.param("0000000000000001_0000000000000000", id="reserved-field-not-zero"),
        pytest.param("0000000000000000-0000000000000000", id="dash-separator"),
        pytest.param(token("000000000000000a"), id="letter"),
        pytest.param(token("-000000000000001"), id="minus-sign"),
        pytest.param(token("+000000000000001"), id="plus-sign"),
        pytest.param(token(" 000000000000001"), id="inner-space"),
        pytest.param(token("0" * 16) + "\n", id="trailing-newline"),
        pytest.param(token("\uff10" * 16), id="fullwidth-digits"),
        pytest.param(token("\u0660" * 16), id="arabic-indic-digits"),
        pytest.param(token("0" * 15 + "\u00b2"), id="superscript-two"),
        pytest.param("00000000000000000000", id="bare-20-digits"),
    ],
)
def test_parse_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="not an offset"):
        Offset.parse(raw)


@pytest.mark.parametrize(
    "position",
    [pytest.param(-1, id="negative"), pytest.param(MAX_POSITION + 1, id="too-wide")],
)
def test_position_out_of_range(position: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        Offset(position)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, Offset(0), id="omitted-is-start"),
        pytest.param("-1", Offset(0), id="minus-one-is-start"),
        pytest.param("now", None, id="now-is-tail"),
        pytest.param(token("0000000000000000"), Offset(0), id="minted-zero"),
        pytest.param(token("0000000000000042"), Offset(42), id="minted-42"),
    ],
)
def test_parse_read_offset(raw: str | None, expected: Offset | None) -> None:
    read_from = parse_read_offset(raw)
    assert read_from.offset == expected
    assert read_from.is_now is (expected is None)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("42", id="unpadded"),
        pytest.param("-2", id="minus-two"),
        pytest.param("-01", id="padded-minus-one"),
        pytest.param("NOW", id="upper-case-now"),
        pytest.param("now ", id="now-with-space"),
        pytest.param("abc", id="junk"),
        pytest.param("0" * WIDTH, id="right-length-no-separator"),
        pytest.param("00000000000000000000", id="old-20-digit-form"),
        pytest.param(token("0000000000000042") + "0", id="too-long"),
    ],
)
def test_parse_read_offset_rejects(raw: str) -> None:
    with pytest.raises(InvalidOffset) as info:
        parse_read_offset(raw)
    assert isinstance(info.value, BadRequest)
    assert info.value.status == 400


@PROPERTY
@given(positions)
def test_round_trip(position: int) -> None:
    minted = format_offset(position)
    assert len(minted) == WIDTH
    assert not set(minted) & set(",&=?/")
    assert minted not in (BEGINNING, NOW)
    assert Offset.parse(minted) == Offset(position)
    assert str(Offset.parse(minted)) == minted


@PROPERTY
@given(positions, positions)
def test_string_order_is_position_order(a: int, b: int) -> None:
    token_a, token_b = format_offset(a), format_offset(b)
    assert (token_a < token_b) == (a < b)
    assert (token_a == token_b) == (a == b)
    assert (Offset(a) < Offset(b)) == (a < b)


# One append = a non-empty tuple of non-empty records (what the HTTP layer builds).
appends = st.lists(
    st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=4).map(tuple),
    min_size=1,
    max_size=25,
)


@PROPERTY
@given(start=st.integers(min_value=0, max_value=MAX_POSITION - 10_000), batches=appends)
def test_offsets_strictly_increase_over_appends(
    start: int, batches: list[tuple[bytes, ...]]
) -> None:
    octets = "application/octet-stream"
    meta = StreamMeta(stream_id="s", content_type=octets, media_type=octets, tail=start)
    tails = [meta.tail_offset]
    record_offsets: list[str] = []
    for now, records in enumerate(batches):
        decision = decide_append(meta, None, AppendRequest(octets, records), now=float(now))
        assert decision.meta is not None
        assert format_offset(decision.start) == tails[-1]  # the append starts at the old tail
        record_offsets.extend(format_offset(p) for p in decision.offsets)
        meta = decision.meta
        tails.append(decision.outcome.next_offset)
        assert decision.outcome.next_offset == meta.tail_offset
    for earlier, later in zip(tails, tails[1:], strict=False):
        assert earlier < later
    for earlier, later in zip(record_offsets, record_offsets[1:], strict=False):
        assert earlier < later
    assert sorted(record_offsets) == record_offsets
    assert Offset.parse(tails[-1]).position == start + sum(
        len(record) for records in batches for record in records
    )
