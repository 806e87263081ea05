"""Stream decisions (`ds_trio.protocol.streams`, spec sections 4, 5.1, 5.2, 5.2.1, 5.3).

Covers `decide_create` (201 vs idempotent 200 vs 409 on content type, TTL,
Expires-At, closure, a soft-deleted path or a fork), `decide_append` with the
spec's precedence (closed, then content type, then producer checks, then
Stream-Seq) and our choices on closed streams, `slice_records` chunking for
byte and JSON streams, `is_expired` for sliding TTLs and absolute expiry, and
how a read is split into segments of stored records (`read_segments`,
`clip_records`).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_trio.protocol.errors import (
    BadRequest,
    ConfigMismatch,
    ContentTypeMismatch,
    InvalidEpochSeq,
    ProtocolError,
    SeqConflict,
    SeqGap,
    StaleEpoch,
    StreamClosed,
)
from ds_trio.protocol.headers import parse_expires_at
from ds_trio.protocol.offsets import format_offset
from ds_trio.protocol.producers import ProducerClaim, ProducerState
from ds_trio.protocol.streams import (
    AppendDecision,
    AppendOutcome,
    AppendRequest,
    CreateRequest,
    ForkOrigin,
    ReadSlice,
    Segment,
    StreamMeta,
    clip_records,
    decide_append,
    decide_create,
    is_expired,
    read_segments,
    slice_records,
)

PROPERTY = settings(max_examples=150, deadline=None, database=None)
TEXT = "text/plain"
JSON = "application/json"
NOW = 5000.0
EXPIRY = parse_expires_at("2030-01-01T00:00:00Z")
EXPIRY_OTHER_SPELLING = parse_expires_at("2030-01-01T01:00:00+01:00")
EXPIRY_LATER = parse_expires_at("2030-01-02T00:00:00Z")


def stream(**changes: object) -> StreamMeta:
    """An open text stream holding 10 bytes, last touched at t=1000."""
    base = StreamMeta(
        stream_id="s1",
        content_type="text/plain; charset=utf-8",
        media_type=TEXT,
        tail=10,
        touched_at=1000.0,
    )
    return replace(base, **changes)


def closed_stream(**changes: object) -> StreamMeta:
    return stream(closed=True, **changes)


def producer(epoch: int, seq: int) -> ProducerClaim:
    return ProducerClaim("p1", epoch, seq)


def off(position: int) -> str:
    return format_offset(position)


# --- decide_create -------------------------------------------------------------


def test_create_new_stream() -> None:
    request = CreateRequest(
        content_type="Text/Plain; charset=utf-8", media_type=TEXT, ttl=60, records=(b"ab", b"cde")
    )
    decision = decide_create(None, request, now=NOW, new_id="id-1")
    assert decision.created is True
    assert decision.records == (b"ab", b"cde")
    assert decision.meta == StreamMeta(
        stream_id="id-1",
        content_type="Text/Plain; charset=utf-8",
        media_type=TEXT,
        tail=5,
        ttl=60,
        touched_at=NOW,
    )


def test_create_closed_with_expiry() -> None:
    request = CreateRequest(
        content_type=JSON, media_type=JSON, expires_at=EXPIRY, closed=True, records=(b"[1]",)
    )
    decision = decide_create(None, request, now=NOW, new_id="id-2")
    assert decision.created is True
    assert decision.meta.closed is True
    assert decision.meta.expires_at == EXPIRY
    assert decision.meta.ttl is None
    assert decision.meta.tail == 3
    assert decision.meta.tail_offset == off(3)


def test_create_empty_stream() -> None:
    decision = decide_create(None, CreateRequest(TEXT, TEXT), now=NOW, new_id="id-3")
    assert (decision.created, decision.meta.tail, decision.records) == (True, 0, ())


def test_create_rejects_ttl_with_expiry() -> None:
    with pytest.raises(BadRequest):
        CreateRequest(TEXT, TEXT, ttl=60, expires_at=EXPIRY)


@pytest.mark.parametrize(
    ("existing", "request_config", "matches"),
    [
        pytest.param({}, {}, True, id="same-config"),
        pytest.param({}, {"content_type": "TEXT/PLAIN"}, True, id="content-type-parameters-differ"),
        pytest.param({}, {"content_type": JSON, "media_type": JSON}, False,
                     id="media-type-differs"),
        pytest.param({"ttl": 60}, {"ttl": 60}, True, id="same-ttl"),
        pytest.param({}, {"ttl": 60}, False, id="ttl-added"),
        pytest.param({"ttl": 60}, {}, False, id="ttl-dropped"),
        pytest.param({"ttl": 60}, {"ttl": 120}, False, id="ttl-changed"),
        pytest.param({"ttl": 0}, {}, False, id="ttl-zero-is-not-absent"),
        pytest.param({"expires_at": EXPIRY}, {"expires_at": EXPIRY}, True, id="same-expiry"),
        pytest.param({"expires_at": EXPIRY}, {"expires_at": EXPIRY_OTHER_SPELLING}, True,
                     id="same-expiry-other-spelling"),
        pytest.param({"expires_at": EXPIRY}, {"expires_at": EXPIRY_LATER}, False,
                     id="expiry-changed"),
        pytest.param({}, {"expires_at": EXPIRY}, False, id="expiry-added"),
        pytest.param({"expires_at": EXPIRY}, {}, False, id="expiry-dropped"),
        pytest.param({"ttl": 60}, {"expires_at": EXPIRY}, False, id="ttl-swapped-for-expiry"),
        pytest.param({"closed": True}, {"closed": True}, True, id="closed-and-close-requested"),
        pytest.param({"closed": True}, {}, False, id="closed-but-open-requested"),
        pytest.param({}, {"closed": True}, False, id="open-but-close-requested"),
        pytest.param({"soft_deleted": True}, {}, False, id="soft-deleted-path-is-blocked"),
        pytest.param({"fork": ForkOrigin("src", "src-id", 0)}, {}, False,
                     id="plain-put-on-a-fork"),
    ],
)  # fmt: skip
def test_create_on_existing_stream(
    existing: dict[str, object], request_config: dict[str, object], matches: bool
) -> None:
    meta = stream(**existing)
    config: dict[str, object] = {"content_type": TEXT, "media_type": TEXT, **request_config}
    request = CreateRequest(records=(b"ignored",), **config)  # type: ignore[arg-type]
    if matches:
        decision = decide_create(meta, request, now=NOW, new_id="unused")
        assert decision.created is False
        assert decision.meta == meta  # untouched: same id, tail and content type
        assert decision.records == ()  # the body of a matching PUT is not appended
    else:
        with pytest.raises(ConfigMismatch) as info:
            decide_create(meta, request, now=NOW, new_id="unused")
        assert info.value.status == 409


# --- decide_append: outcomes ---------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "state", "request_", "expected"),
    [
        pytest.param(
            stream(), None, AppendRequest(TEXT, (b"abc", b"de")),
            AppendDecision(
                AppendOutcome(off(15), False, changed=True, appended=True),
                meta=stream(tail=15, touched_at=NOW), records=(b"abc", b"de"),
                start=10, offsets=(10, 13),
            ),
            id="append",
        ),
        pytest.param(
            stream(media_type=JSON), None, AppendRequest(JSON, (b'{"a":1}', b"[2]")),
            AppendDecision(
                AppendOutcome(off(20), False, changed=True, appended=True),
                meta=stream(media_type=JSON, tail=20, touched_at=NOW),
                records=(b'{"a":1}', b"[2]"), start=10, offsets=(10, 17),
            ),
            id="append-json-messages",
        ),
        pytest.param(
            stream(), None, AppendRequest(TEXT, (b"end",), close=True),
            AppendDecision(
                AppendOutcome(off(13), True, changed=True, appended=True),
                meta=stream(tail=13, closed=True, touched_at=NOW), records=(b"end",),
                start=10, offsets=(10,),
            ),
            id="append-and-close",
        ),
        pytest.param(
            stream(), None, AppendRequest(None, close=True),
            AppendDecision(
                AppendOutcome(off(10), True, changed=True),
                meta=stream(closed=True, touched_at=NOW), start=10,
            ),
            id="close-only",
        ),
        pytest.param(
            stream(), None, AppendRequest(JSON, close=True),
            AppendDecision(
                AppendOutcome(off(10), True, changed=True),
                meta=stream(closed=True, touched_at=NOW), start=10,
            ),
            id="close-only-ignores-content-type",
        ),
        pytest.param(
            stream(), None, AppendRequest(TEXT, (b"x",), stream_seq=b"1"),
            AppendDecision(
                AppendOutcome(off(11), False, changed=True, appended=True),
                meta=stream(tail=11, last_stream_seq=b"1", touched_at=NOW), records=(b"x",),
                start=10, offsets=(10,),
            ),
            id="first-stream-seq",
        ),
        pytest.param(
            stream(last_stream_seq=b"5"), None, AppendRequest(TEXT, (b"x",)),
            AppendDecision(
                AppendOutcome(off(11), False, changed=True, appended=True),
                meta=stream(tail=11, last_stream_seq=b"5", touched_at=NOW), records=(b"x",),
                start=10, offsets=(10,),
            ),
            id="stream-seq-kept-when-absent",
        ),
        pytest.param(
            stream(), None, AppendRequest(TEXT, (b"x",), producer=producer(0, 0)),
            AppendDecision(
                AppendOutcome(off(11), False, changed=True, appended=True,
                              producer=ProducerState(0, 0)),
                meta=stream(tail=11, touched_at=NOW), records=(b"x",),
                producer_state=ProducerState(0, 0), start=10, offsets=(10,),
            ),
            id="producer-first-append",
        ),
        pytest.param(
            stream(), ProducerState(1, 4), AppendRequest(TEXT, (b"x",), producer=producer(1, 5)),
            AppendDecision(
                AppendOutcome(off(11), False, changed=True, appended=True,
                              producer=ProducerState(1, 5)),
                meta=stream(tail=11, touched_at=NOW), records=(b"x",),
                producer_state=ProducerState(1, 5), start=10, offsets=(10,),
            ),
            id="producer-next-seq",
        ),
        pytest.param(
            stream(), ProducerState(1, 4), AppendRequest(None, close=True, producer=producer(1, 5)),
            AppendDecision(
                AppendOutcome(off(10), True, changed=True, producer=ProducerState(1, 5)),
                meta=stream(closed=True, touched_at=NOW), producer_state=ProducerState(1, 5),
                start=10,
            ),
            id="producer-close-only",
        ),
        pytest.param(
            stream(), ProducerState(1, 4), AppendRequest(TEXT, (b"x",), producer=producer(1, 3)),
            AppendDecision(AppendOutcome(off(10), False, producer=ProducerState(1, 4))),
            id="producer-duplicate",
        ),
        pytest.param(
            stream(last_stream_seq=b"9"), ProducerState(1, 4),
            AppendRequest(TEXT, (b"x",), producer=producer(1, 4), stream_seq=b"1"),
            AppendDecision(AppendOutcome(off(10), False, producer=ProducerState(1, 4))),
            id="producer-duplicate-before-stream-seq",
        ),
        pytest.param(
            closed_stream(), None, AppendRequest(None, close=True),
            AppendDecision(AppendOutcome(off(10), True)),
            id="closed-close-only-is-idempotent",
        ),
        pytest.param(
            closed_stream(), None, AppendRequest(JSON, close=True, stream_seq=b"0"),
            AppendDecision(AppendOutcome(off(10), True)),
            id="closed-close-only-ignores-type-and-seq",
        ),
        pytest.param(
            closed_stream(), ProducerState(0, 4), AppendRequest(None, close=True,
                                                                producer=producer(0, 5)),
            AppendDecision(AppendOutcome(off(10), True, producer=ProducerState(0, 4))),
            id="closed-close-only-new-producer-seq",
        ),
        pytest.param(
            closed_stream(), ProducerState(2, 0), AppendRequest(None, close=True,
                                                                producer=producer(1, 0)),
            AppendDecision(AppendOutcome(off(10), True, producer=ProducerState(2, 0))),
            id="closed-close-only-stale-producer",
        ),
        pytest.param(
            closed_stream(), None, AppendRequest(None, close=True, producer=producer(0, 0)),
            AppendDecision(AppendOutcome(off(10), True)),
            id="closed-close-only-unknown-producer",
        ),
        pytest.param(
            closed_stream(), ProducerState(0, 4),
            AppendRequest(TEXT, (b"end",), close=True, producer=producer(0, 4)),
            AppendDecision(AppendOutcome(off(10), True, producer=ProducerState(0, 4))),
            id="closed-retry-of-closing-append",
        ),
        pytest.param(
            closed_stream(), ProducerState(0, 4), AppendRequest(TEXT, (b"x",),
                                                                producer=producer(0, 2)),
            AppendDecision(AppendOutcome(off(10), True, producer=ProducerState(0, 4))),
            id="closed-producer-duplicate",
        ),
        pytest.param(
            closed_stream(), ProducerState(0, 4), AppendRequest(JSON, (b"1",),
                                                                producer=producer(0, 4)),
            AppendDecision(AppendOutcome(off(10), True, producer=ProducerState(0, 4))),
            id="closed-producer-duplicate-before-content-type",
        ),
    ],
)  # fmt: skip
def test_decide_append(
    meta: StreamMeta,
    state: ProducerState | None,
    request_: AppendRequest,
    expected: AppendDecision,
) -> None:
    assert decide_append(meta, state, request_, now=NOW) == expected


@pytest.mark.parametrize(
    ("last", "new"),
    [
        pytest.param(b"1", b"2", id="digit"),
        pytest.param(b"a", b"ab", id="prefix-sorts-first"),
        pytest.param(b"9", b"a", id="letters-after-digits"),
        pytest.param(b"Z", b"a", id="lower-after-upper"),
        pytest.param(b"z", b"\xe9", id="high-byte-is-unsigned"),
        pytest.param(b"00000000000000000009", b"00000000000000000010", id="padded-numbers"),
    ],
)
def test_stream_seq_increases_byte_wise(last: bytes, new: bytes) -> None:
    decision = decide_append(
        stream(last_stream_seq=last), None, AppendRequest(TEXT, (b"x",), stream_seq=new), now=NOW
    )
    assert decision.meta is not None
    assert decision.meta.last_stream_seq == new


@pytest.mark.parametrize(
    ("last", "new"),
    [
        pytest.param(b"2", b"2", id="equal"),
        pytest.param(b"2", b"1", id="lower"),
        pytest.param(b"9", b"10", id="byte-wise-not-numeric"),
        pytest.param(b"a", b"B", id="upper-before-lower"),
        pytest.param(b"ab", b"a", id="prefix-is-lower"),
        pytest.param(b"\xe9", b"z", id="high-byte-is-unsigned"),
    ],
)
def test_stream_seq_regression(last: bytes, new: bytes) -> None:
    request = AppendRequest(TEXT, (b"x",), stream_seq=new)
    with pytest.raises(SeqConflict) as info:
        decide_append(stream(last_stream_seq=last), None, request, now=NOW)
    assert info.value.status == 409


# --- decide_append: errors and their precedence ------------------------------


@pytest.mark.parametrize(
    ("meta", "state", "request_", "error"),
    [
        # 1. A closed stream outranks everything except a producer duplicate.
        pytest.param(closed_stream(), None, AppendRequest(TEXT, (b"x",)), StreamClosed,
                     id="closed-append"),
        pytest.param(closed_stream(), None, AppendRequest(TEXT, (b"x",), close=True), StreamClosed,
                     id="closed-append-and-close"),
        pytest.param(closed_stream(), None, AppendRequest(JSON, (b"1",)), StreamClosed,
                     id="closed-beats-content-type"),
        pytest.param(closed_stream(last_stream_seq=b"9"), None,
                     AppendRequest(TEXT, (b"x",), stream_seq=b"1"), StreamClosed,
                     id="closed-beats-stream-seq"),
        pytest.param(closed_stream(), ProducerState(0, 4),
                     AppendRequest(TEXT, (b"x",), producer=producer(0, 5)), StreamClosed,
                     id="closed-new-producer-seq"),
        pytest.param(closed_stream(), None, AppendRequest(TEXT, (b"x",), producer=producer(0, 0)),
                     StreamClosed, id="closed-unknown-producer"),
        pytest.param(closed_stream(), ProducerState(2, 0),
                     AppendRequest(TEXT, (b"x",), producer=producer(1, 0)), StreamClosed,
                     id="closed-beats-stale-epoch"),
        pytest.param(closed_stream(), ProducerState(0, 4),
                     AppendRequest(TEXT, (b"x",), producer=producer(0, 9)), StreamClosed,
                     id="closed-beats-seq-gap"),
        pytest.param(closed_stream(), ProducerState(0, 4),
                     AppendRequest(TEXT, (b"x",), producer=producer(1, 3)), StreamClosed,
                     id="closed-beats-invalid-epoch-seq"),
        # 2. Content type, only when there is a body.
        pytest.param(stream(), None, AppendRequest(JSON, (b"1",)), ContentTypeMismatch,
                     id="content-type-mismatch"),
        pytest.param(stream(), None, AppendRequest(None, (b"x",)), ContentTypeMismatch,
                     id="body-without-media-type"),
        pytest.param(stream(), ProducerState(0, 4),
                     AppendRequest(JSON, (b"1",), producer=producer(0, 9)), ContentTypeMismatch,
                     id="content-type-beats-producer"),
        pytest.param(stream(), ProducerState(0, 4),
                     AppendRequest(JSON, (b"1",), producer=producer(0, 4)), ContentTypeMismatch,
                     id="content-type-beats-producer-duplicate"),
        pytest.param(stream(last_stream_seq=b"9"), None,
                     AppendRequest(JSON, (b"1",), stream_seq=b"1"), ContentTypeMismatch,
                     id="content-type-beats-stream-seq"),
        # 3. Producer validation.
        pytest.param(stream(), ProducerState(2, 0),
                     AppendRequest(TEXT, (b"x",), producer=producer(1, 0)), StaleEpoch,
                     id="stale-epoch"),
        pytest.param(stream(), ProducerState(0, 4),
                     AppendRequest(TEXT, (b"x",), producer=producer(0, 6)), SeqGap, id="seq-gap"),
        pytest.param(stream(), None, AppendRequest(TEXT, (b"x",), producer=producer(0, 1)),
                     SeqGap, id="unknown-producer-not-at-zero"),
        pytest.param(stream(), ProducerState(0, 4),
                     AppendRequest(TEXT, (b"x",), producer=producer(1, 1)), InvalidEpochSeq,
                     id="new-epoch-not-at-zero"),
        pytest.param(stream(last_stream_seq=b"9"), ProducerState(0, 4),
                     AppendRequest(TEXT, (b"x",), producer=producer(0, 6), stream_seq=b"1"),
                     SeqGap, id="producer-beats-stream-seq"),
        # 4. Stream-Seq, after a producer's claim was accepted.
        pytest.param(stream(last_stream_seq=b"9"), ProducerState(0, 4),
                     AppendRequest(TEXT, (b"x",), producer=producer(0, 5), stream_seq=b"1"),
                     SeqConflict, id="accepted-producer-then-stream-seq"),
        pytest.param(stream(last_stream_seq=b"5"), None,
                     AppendRequest(None, close=True, stream_seq=b"5"), SeqConflict,
                     id="stream-seq-on-close-only"),
    ],
)  # fmt: skip
def test_decide_append_errors(
    meta: StreamMeta,
    state: ProducerState | None,
    request_: AppendRequest,
    error: type[ProtocolError],
) -> None:
    with pytest.raises(error):
        decide_append(meta, state, request_, now=NOW)


def test_stream_closed_carries_headers() -> None:
    with pytest.raises(StreamClosed) as info:
        decide_append(closed_stream(tail=1234), None, AppendRequest(TEXT, (b"x",)), now=NOW)
    assert info.value.status == 409
    assert info.value.headers == {"Stream-Closed": "true", "Stream-Next-Offset": off(1234)}


def test_empty_append_request_rejected() -> None:
    with pytest.raises(BadRequest):
        AppendRequest(TEXT)


# --- slice_records ---------------------------------------------------------------

BYTE_RECORDS = [(0, b"abc"), (3, b"de"), (5, b"fghij")]  # tail 10
JSON_RECORDS = [(0, b'{"a":1}'), (7, b"[2]"), (10, b'"xyz"')]  # tail 15


@pytest.mark.parametrize(
    ("start", "max_bytes", "pieces", "next_position"),
    [
        pytest.param(0, 100, (b"abc", b"de", b"fghij"), 10, id="everything"),
        pytest.param(0, 3, (b"abc",), 3, id="exactly-one-record"),
        pytest.param(0, 4, (b"abc", b"d"), 4, id="split-second-record"),
        pytest.param(0, 1, (b"a",), 1, id="one-byte"),
        pytest.param(1, 100, (b"bc", b"de", b"fghij"), 10, id="start-mid-record"),
        pytest.param(4, 2, (b"e", b"f"), 6, id="mid-record-across-boundary"),
        pytest.param(6, 2, (b"gh",), 8, id="inside-last-record"),
        pytest.param(3, 100, (b"de", b"fghij"), 10, id="start-on-boundary"),
        pytest.param(9, 100, (b"j",), 10, id="last-byte"),
        pytest.param(10, 100, (), 10, id="at-tail"),
    ],
)
def test_slice_byte_records(
    start: int, max_bytes: int, pieces: tuple[bytes, ...], next_position: int
) -> None:
    assert slice_records(BYTE_RECORDS, start, max_bytes, whole_records=False) == ReadSlice(
        pieces, next_position
    )


@pytest.mark.parametrize(
    ("start", "max_bytes", "pieces", "next_position"),
    [
        pytest.param(0, 100, (b'{"a":1}', b"[2]", b'"xyz"'), 15, id="everything"),
        pytest.param(0, 7, (b'{"a":1}',), 7, id="exactly-one-message"),
        pytest.param(0, 9, (b'{"a":1}',), 7, id="next-message-would-not-fit"),
        pytest.param(0, 10, (b'{"a":1}', b"[2]"), 10, id="two-messages-fit"),
        pytest.param(0, 1, (b'{"a":1}',), 7, id="first-message-never-split"),
        pytest.param(7, 2, (b"[2]",), 10, id="one-message-over-limit"),
        pytest.param(3, 100, (b"[2]", b'"xyz"'), 15, id="start-inside-message-skips-it"),
        pytest.param(12, 100, (), 12, id="start-inside-last-message"),
        pytest.param(15, 100, (), 15, id="at-tail"),
    ],
)
def test_slice_json_records(
    start: int, max_bytes: int, pieces: tuple[bytes, ...], next_position: int
) -> None:
    assert slice_records(JSON_RECORDS, start, max_bytes, whole_records=True) == ReadSlice(
        pieces, next_position
    )


def test_slice_skips_records_before_start() -> None:
    records = iter([(0, b"abc"), (3, b"de"), (5, b"fghij")])
    assert slice_records(records, 5, 100, whole_records=False) == ReadSlice((b"fghij",), 10)


def with_positions(chunks: list[bytes]) -> list[tuple[int, bytes]]:
    records, position = [], 0
    for chunk in chunks:
        records.append((position, chunk))
        position += len(chunk)
    return records


record_lists = st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=12)


@PROPERTY
@given(chunks=record_lists, data=st.data(), max_bytes=st.integers(min_value=1, max_value=30))
def test_paging_bytes_reconstructs_data(
    chunks: list[bytes], data: st.DataObject, max_bytes: int
) -> None:
    records, full = with_positions(chunks), b"".join(chunks)
    position = data.draw(st.integers(min_value=0, max_value=len(full)), label="start")
    start, read = position, b""
    while position < len(full):
        page = slice_records(records, position, max_bytes, whole_records=False)
        size = sum(len(piece) for piece in page.pieces)
        assert 0 < size <= max_bytes
        assert page.next_position == position + size
        read += b"".join(page.pieces)
        position = page.next_position
    assert read == full[start:]


@PROPERTY
@given(chunks=record_lists, data=st.data(), max_bytes=st.integers(min_value=1, max_value=30))
def test_paging_json_returns_whole_messages(
    chunks: list[bytes], data: st.DataObject, max_bytes: int
) -> None:
    records = with_positions(chunks)
    tail = records[-1][0] + len(records[-1][1])
    position = data.draw(st.integers(min_value=0, max_value=tail), label="start")
    boundaries = {p for p, _ in records} | {tail}
    expected = [chunk for p, chunk in records if p >= position]
    read: list[bytes] = []
    while True:
        page = slice_records(records, position, max_bytes, whole_records=True)
        if not page.pieces:
            break
        assert len(page.pieces) == 1 or sum(len(p) for p in page.pieces) <= max_bytes
        assert page.next_position in boundaries
        read.extend(page.pieces)
        position = page.next_position
    assert read == expected


# --- expiry --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "now", "expired"),
    [
        pytest.param(stream(), 1e12, False, id="no-expiry-never-expires"),
        pytest.param(stream(ttl=60), 1059.9, False, id="ttl-before-deadline"),
        pytest.param(stream(ttl=60), 1060.0, True, id="ttl-at-deadline"),
        pytest.param(stream(ttl=60), 2000.0, True, id="ttl-after-deadline"),
        pytest.param(stream(ttl=0), 1000.0, True, id="ttl-zero-expires-at-once"),
        pytest.param(stream(expires_at=EXPIRY), EXPIRY.timestamp - 0.5, False,
                     id="expires-at-before"),
        pytest.param(stream(expires_at=EXPIRY), EXPIRY.timestamp, True, id="expires-at-reached"),
        pytest.param(stream(expires_at=EXPIRY, touched_at=EXPIRY.timestamp + 10),
                     EXPIRY.timestamp + 1, True, id="expires-at-ignores-activity"),
        pytest.param(stream(ttl=60, soft_deleted=True), 1e12, False,
                     id="soft-deleted-never-expires-again"),
    ],
)  # fmt: skip
def test_is_expired(meta: StreamMeta, now: float, expired: bool) -> None:
    assert is_expired(meta, now) is expired


@pytest.mark.parametrize(
    ("meta", "deadline"),
    [
        pytest.param(stream(), None, id="none"),
        pytest.param(stream(ttl=60), 1060.0, id="ttl"),
        pytest.param(stream(expires_at=EXPIRY), EXPIRY.timestamp, id="expires-at"),
        pytest.param(stream(ttl=60, soft_deleted=True), None, id="soft-deleted"),
    ],
)
def test_deadline(meta: StreamMeta, deadline: float | None) -> None:
    assert meta.deadline() == deadline


def test_append_slides_ttl() -> None:
    meta = stream(ttl=60, touched_at=0.0)
    decision = decide_append(meta, None, AppendRequest(TEXT, (b"x",)), now=50.0)
    assert decision.meta is not None
    assert is_expired(meta, 100.0) is True
    assert is_expired(decision.meta, 100.0) is False
    assert is_expired(decision.meta, 110.0) is True


@pytest.mark.parametrize(
    ("media", "is_json"),
    [
        pytest.param(JSON, True, id="json"),
        pytest.param(TEXT, False, id="text"),
        pytest.param("application/vnd.api+json", False, id="json-suffix-is-not-json-mode"),
    ],
)
def test_is_json(media: str, is_json: bool) -> None:
    assert stream(media_type=media).is_json is is_json


# --- read segments -------------------------------------------------------------

ROOT = Segment("root", 0, 5)
MID = Segment("mid", 5, 8)


@pytest.mark.parametrize(
    ("meta", "position", "segments"),
    [
        pytest.param(stream(), 0, [Segment("s1", 0, 10)], id="plain-stream"),
        pytest.param(stream(), 9, [Segment("s1", 0, 10)], id="plain-near-tail"),
        pytest.param(stream(), 10, [], id="plain-at-tail"),
        pytest.param(stream(tail=0), 0, [], id="empty-stream"),
        pytest.param(stream(base=8, tail=12, inherited=(ROOT, MID)), 0,
                     [ROOT, MID, Segment("s1", 8, 12)], id="fork-from-start"),
        pytest.param(stream(base=8, tail=12, inherited=(ROOT, MID)), 5,
                     [MID, Segment("s1", 8, 12)], id="fork-from-segment-boundary"),
        pytest.param(stream(base=8, tail=12, inherited=(ROOT, MID)), 9,
                     [Segment("s1", 8, 12)], id="fork-inside-own-records"),
        pytest.param(stream(base=8, tail=8, inherited=(ROOT, MID)), 6, [MID],
                     id="fork-without-own-records"),
        pytest.param(stream(base=8, tail=8, inherited=(ROOT, MID)), 8, [], id="fork-at-tail"),
    ],
)  # fmt: skip
def test_read_segments(meta: StreamMeta, position: int, segments: list[Segment]) -> None:
    assert read_segments(meta, position) == segments


RECORDS = [(5, b"abc"), (8, b"de"), (10, b"fgh")]  # one stream's records from position 5


@pytest.mark.parametrize(
    ("segment", "clipped"),
    [
        pytest.param(Segment("x", 5, 13), RECORDS, id="whole"),
        pytest.param(Segment("x", 5, 10), [(5, b"abc"), (8, b"de")], id="on-record-boundary"),
        pytest.param(Segment("x", 5, 9), [(5, b"abc"), (8, b"d")], id="inside-a-record"),
        pytest.param(Segment("x", 5, 6), [(5, b"a")], id="first-byte"),
        pytest.param(Segment("x", 5, 5), [], id="empty"),
    ],
)
def test_clip_records(segment: Segment, clipped: list[tuple[int, bytes]]) -> None:
    assert list(clip_records(iter(RECORDS), segment)) == clipped
