"""Forks (`ds_trio.protocol.forks`, spec section 4.2).

Covers Stream-Fork-Sub-Offset parsing, source validation (404, 409 for a
soft-deleted source or another content type, 400 past the tail), the fork
point for byte and JSON sources, the new fork's metadata (inherited segments
flattened along the chain, the spec's TTL/expiry table, fresh writer state,
open regardless of the source), idempotent re-creation, and the soft-delete
lifecycle. A property builds random fork chains and checks that reading a
fork through its segments returns the source's bytes up to the fork point
followed by the fork's own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_trio.protocol.errors import (
    BadRequest,
    ConfigMismatch,
    ContentTypeMismatch,
    ProtocolError,
    StreamGone,
    StreamNotFound,
)
from ds_trio.protocol.forks import (
    DeleteAction,
    ForkRequest,
    check_fork_source,
    decide_delete,
    expire_action,
    fork_point,
    match_existing_fork,
    new_fork,
    parse_sub_offset,
    release_fork,
)
from ds_trio.protocol.headers import parse_expires_at
from ds_trio.protocol.streams import (
    AppendRequest,
    ForkOrigin,
    Segment,
    StreamMeta,
    clip_records,
    decide_append,
    read_segments,
    slice_records,
)

PROPERTY = settings(max_examples=100, deadline=None, database=None)
TEXT = "text/plain"
JSON = "application/json"
NOW = 5000.0
EXPIRY = parse_expires_at("2030-01-01T00:00:00Z")
OTHER_EXPIRY = parse_expires_at("2031-01-01T00:00:00Z")


def source(**changes: object) -> StreamMeta:
    """An open text stream "src" holding 10 bytes."""
    base = StreamMeta(
        stream_id="src-id", content_type="text/plain; charset=utf-8", media_type=TEXT, tail=10
    )
    return replace(base, **changes)


# --- Stream-Fork-Sub-Offset ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, 0, id="absent"),
        pytest.param("0", 0, id="zero"),
        pytest.param("5", 5, id="five"),
        pytest.param("9" * 18, int("9" * 18), id="eighteen-digits"),
    ],
)
def test_parse_sub_offset(raw: str | None, expected: int) -> None:
    assert parse_sub_offset(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("-1", id="negative"),
        pytest.param("+1", id="plus-sign"),
        pytest.param("01", id="leading-zero"),
        pytest.param("1.5", id="decimal"),
        pytest.param("1e3", id="exponent"),
        pytest.param(" 1", id="leading-space"),
        pytest.param("abc", id="junk"),
        pytest.param("\u0661", id="non-ascii-digit"),
        pytest.param("1" * 19, id="too-long"),
    ],
)
def test_parse_sub_offset_rejects(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_sub_offset(raw)


def test_fork_request_rejects_ttl_with_expiry() -> None:
    with pytest.raises(BadRequest):
        ForkRequest("src", ttl=60, expires_at=EXPIRY)


# --- source validation and fork point --------------------------------------------


@pytest.mark.parametrize(
    ("meta", "request_", "expected"),
    [
        pytest.param(source(), ForkRequest("src"), 10, id="default-is-tail"),
        pytest.param(source(), ForkRequest("src", anchor=0), 0, id="from-start"),
        pytest.param(source(), ForkRequest("src", anchor=4), 4, id="mid-stream"),
        pytest.param(source(), ForkRequest("src", anchor=10), 10, id="at-tail"),
        pytest.param(source(), ForkRequest("src", media_type=TEXT), 10, id="same-media-type"),
        pytest.param(source(closed=True), ForkRequest("src", anchor=3), 3, id="closed-source"),
        pytest.param(None, ForkRequest("src"), StreamNotFound, id="no-source"),
        pytest.param(source(soft_deleted=True), ForkRequest("src"), ConfigMismatch,
                     id="soft-deleted-source"),
        pytest.param(source(), ForkRequest("src", media_type=JSON), ContentTypeMismatch,
                     id="other-media-type"),
        pytest.param(source(), ForkRequest("src", anchor=11), BadRequest, id="past-tail"),
    ],
)  # fmt: skip
def test_check_fork_source(
    meta: StreamMeta | None, request_: ForkRequest, expected: int | type[ProtocolError]
) -> None:
    if isinstance(expected, int):
        assert check_fork_source(meta, request_) == expected
    else:
        with pytest.raises(expected):
            check_fork_source(meta, request_)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(StreamNotFound, 404, id="not-found"),
        pytest.param(ConfigMismatch, 409, id="soft-deleted"),
        pytest.param(ContentTypeMismatch, 409, id="content-type"),
        pytest.param(BadRequest, 400, id="past-tail"),
        pytest.param(StreamGone, 410, id="gone"),
    ],
)
def test_fork_error_statuses(error: type[ProtocolError], status: int) -> None:
    assert error("x").status == status


JSON_SOURCE = source(media_type=JSON, content_type=JSON, tail=15)
JSON_RECORDS = [(0, b'{"a":1}'), (7, b"[2]"), (10, b'"xyz"')]


@pytest.mark.parametrize(
    ("meta", "anchor", "sub_offset", "expected"),
    [
        pytest.param(source(), 4, 0, 4, id="no-sub-offset"),
        pytest.param(source(), 3, 4, 7, id="bytes-past-anchor"),
        pytest.param(source(), 3, 7, 10, id="bytes-up-to-tail"),
        pytest.param(source(), 3, 8, BadRequest, id="bytes-past-tail"),
        pytest.param(JSON_SOURCE, 0, 0, 0, id="json-no-sub-offset"),
        pytest.param(JSON_SOURCE, 0, 1, 7, id="json-one-message"),
        pytest.param(JSON_SOURCE, 0, 2, 10, id="json-two-messages"),
        pytest.param(JSON_SOURCE, 0, 3, 15, id="json-all-messages"),
        pytest.param(JSON_SOURCE, 0, 4, BadRequest, id="json-too-many"),
        pytest.param(JSON_SOURCE, 7, 1, 10, id="json-counts-from-anchor"),
        pytest.param(JSON_SOURCE, 7, 2, 15, id="json-two-from-anchor"),
        pytest.param(JSON_SOURCE, 7, 3, BadRequest, id="json-too-many-from-anchor"),
        pytest.param(JSON_SOURCE, 15, 1, BadRequest, id="json-at-tail"),
    ],
)
def test_fork_point(
    meta: StreamMeta, anchor: int, sub_offset: int, expected: int | type[ProtocolError]
) -> None:
    if isinstance(expected, int):
        assert fork_point(meta, anchor, sub_offset, iter(JSON_RECORDS)) == expected
    else:
        with pytest.raises(expected):
            fork_point(meta, anchor, sub_offset, iter(JSON_RECORDS))


# --- new_fork --------------------------------------------------------------------


def test_new_fork_metadata() -> None:
    src = source(last_stream_seq=b"9", fork_count=2, ttl=None)
    decision = new_fork(src, ForkRequest("src"), anchor=6, point=6, now=NOW, new_id="fork-id")
    assert decision.created.created is True
    assert decision.created.records == ()
    assert decision.created.meta == StreamMeta(
        stream_id="fork-id",
        content_type="text/plain; charset=utf-8",  # inherited as the source spelled it
        media_type=TEXT,
        tail=6,
        touched_at=NOW,
        base=6,
        inherited=(Segment("src-id", 0, 6),),
        fork=ForkOrigin("src", "src-id", 6, 0),
    )  # no Stream-Seq (or producer) state comes along
    assert decision.source == replace(src, fork_count=3)


@pytest.mark.parametrize(
    ("meta", "request_", "records", "tail"),
    [
        pytest.param(source(), ForkRequest("src", body=b"more"), (b"more",), 14, id="bytes-body"),
        pytest.param(JSON_SOURCE, ForkRequest("src", body=b"[1, {\"b\": 2}]"),
                     (b"1", b'{"b": 2}'), 24, id="json-body-flattened"),
        pytest.param(JSON_SOURCE, ForkRequest("src", body=b"[]"), (), 15, id="json-empty-array"),
    ],
)  # fmt: skip
def test_new_fork_initial_body(
    meta: StreamMeta, request_: ForkRequest, records: tuple[bytes, ...], tail: int
) -> None:
    decision = new_fork(meta, request_, anchor=meta.tail, point=meta.tail, now=NOW, new_id="f")
    assert decision.created.records == records
    assert decision.created.meta.tail == tail
    assert decision.created.meta.base == meta.tail


def test_new_fork_rejects_invalid_json_body() -> None:
    with pytest.raises(BadRequest):
        request_ = ForkRequest("src", body=b"[1,")
        new_fork(JSON_SOURCE, request_, anchor=0, point=0, now=NOW, new_id="f")


@pytest.mark.parametrize(
    ("source_closed", "request_closed", "fork_closed"),
    [
        pytest.param(True, False, False, id="fork-of-closed-source-starts-open"),
        pytest.param(False, True, True, id="created-closed"),
        pytest.param(False, False, False, id="open"),
    ],
)
def test_new_fork_closure(source_closed: bool, request_closed: bool, fork_closed: bool) -> None:
    request_ = ForkRequest("src", closed=request_closed)
    decision = new_fork(
        source(closed=source_closed), request_, anchor=10, point=10, now=NOW, new_id="f"
    )
    assert decision.created.meta.closed is fork_closed


@pytest.mark.parametrize(
    ("source_expiry", "requested", "fork_gets"),
    [
        pytest.param({}, {}, {}, id="none-none"),
        pytest.param({}, {"ttl": 30}, {"ttl": 30}, id="none-ttl"),
        pytest.param({}, {"expires_at": EXPIRY}, {"expires_at": EXPIRY}, id="none-expires"),
        pytest.param({"ttl": 60}, {}, {"ttl": 60}, id="ttl-inherited"),
        pytest.param({"ttl": 60}, {"ttl": 30}, {"ttl": 30}, id="ttl-own-ttl"),
        pytest.param({"ttl": 60}, {"expires_at": EXPIRY}, {"expires_at": EXPIRY},
                     id="ttl-own-expires"),
        pytest.param({"expires_at": EXPIRY}, {}, {"expires_at": EXPIRY}, id="expires-inherited"),
        pytest.param({"expires_at": EXPIRY}, {"ttl": 30}, {"ttl": 30}, id="expires-own-ttl"),
        pytest.param({"expires_at": EXPIRY}, {"expires_at": OTHER_EXPIRY},
                     {"expires_at": OTHER_EXPIRY}, id="expires-own-expires"),
    ],
)  # fmt: skip
def test_new_fork_expiry_table(
    source_expiry: dict[str, object], requested: dict[str, object], fork_gets: dict[str, object]
) -> None:
    request_ = ForkRequest("src", **requested)  # type: ignore[arg-type]
    meta = new_fork(source(**source_expiry), request_, anchor=10, point=10, now=NOW, new_id="f")
    fork = meta.created.meta
    assert (fork.ttl, fork.expires_at) == (fork_gets.get("ttl"), fork_gets.get("expires_at"))


MID_SOURCE = source(  # "mid" forked "root" at 5 and appended 7 bytes of its own
    stream_id="mid-id",
    base=5,
    tail=12,
    inherited=(Segment("root-id", 0, 5),),
    fork=ForkOrigin("root", "root-id", 5),
)


@pytest.mark.parametrize(
    ("point", "inherited"),
    [
        pytest.param(0, (), id="at-zero-nothing-inherited"),
        pytest.param(3, (Segment("root-id", 0, 3),), id="inside-grandparent"),
        pytest.param(5, (Segment("root-id", 0, 5),), id="at-parents-fork-point"),
        pytest.param(8, (Segment("root-id", 0, 5), Segment("mid-id", 5, 8)), id="inside-parent"),
        pytest.param(12, (Segment("root-id", 0, 5), Segment("mid-id", 5, 12)), id="at-tail"),
    ],
)
def test_fork_of_fork_flattens_segments(point: int, inherited: tuple[Segment, ...]) -> None:
    request_ = ForkRequest("mid")
    decision = new_fork(MID_SOURCE, request_, anchor=point, point=point, now=NOW, new_id="leaf")
    assert decision.created.meta.inherited == inherited
    assert decision.created.meta.fork == ForkOrigin("mid", "mid-id", point, 0)


# --- idempotent re-creation ------------------------------------------------------

EXISTING_FORK = StreamMeta(  # forked from "src" at 10 with its own TTL, 2 bytes appended
    stream_id="fork-id",
    content_type=TEXT,
    media_type=TEXT,
    tail=12,
    ttl=60,
    base=10,
    inherited=(Segment("src-id", 0, 10),),
    fork=ForkOrigin("src", "src-id", 10, 0),
)


@pytest.mark.parametrize(
    ("existing", "request_", "matches"),
    [
        pytest.param(EXISTING_FORK, ForkRequest("src"), True, id="unspecified-fields-match"),
        pytest.param(EXISTING_FORK, ForkRequest("src", anchor=10, media_type=TEXT, ttl=60), True,
                     id="all-fields-match"),
        pytest.param(EXISTING_FORK, ForkRequest("other"), False, id="other-source"),
        pytest.param(EXISTING_FORK, ForkRequest("src", anchor=9), False, id="other-offset"),
        pytest.param(EXISTING_FORK, ForkRequest("src", sub_offset=1), False, id="other-sub-offset"),
        pytest.param(EXISTING_FORK, ForkRequest("src", media_type=JSON), False,
                     id="other-media-type"),
        pytest.param(EXISTING_FORK, ForkRequest("src", ttl=30), False, id="other-ttl"),
        pytest.param(EXISTING_FORK, ForkRequest("src", expires_at=EXPIRY), False,
                     id="expiry-instead-of-ttl"),
        pytest.param(EXISTING_FORK, ForkRequest("src", closed=True), False, id="closure-differs"),
        pytest.param(replace(EXISTING_FORK, closed=True), ForkRequest("src", closed=True), True,
                     id="closed-and-close-requested"),
        pytest.param(replace(EXISTING_FORK, fork=None), ForkRequest("src"), False,
                     id="not-a-fork"),
        pytest.param(replace(EXISTING_FORK, soft_deleted=True), ForkRequest("src"), False,
                     id="soft-deleted"),
    ],
)  # fmt: skip
def test_match_existing_fork(existing: StreamMeta, request_: ForkRequest, matches: bool) -> None:
    if matches:
        decision = match_existing_fork(existing, request_)
        assert decision.created is False
        assert decision.meta == existing
    else:
        with pytest.raises(ConfigMismatch):
            match_existing_fork(existing, request_)


# --- lifecycle -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "action"),
    [
        pytest.param(source(), DeleteAction.REMOVE, id="no-forks-removed"),
        pytest.param(source(fork_count=2), DeleteAction.SOFT, id="with-forks-soft-deleted"),
        pytest.param(source(fork_count=1, soft_deleted=True), StreamGone, id="already-deleted"),
    ],
)
def test_decide_delete(meta: StreamMeta, action: str | type[ProtocolError]) -> None:
    if isinstance(action, str):
        assert decide_delete(meta) == action
    else:
        with pytest.raises(action):
            decide_delete(meta)


@pytest.mark.parametrize(
    ("meta", "action"),
    [
        pytest.param(source(), DeleteAction.REMOVE, id="no-forks"),
        pytest.param(source(fork_count=1), DeleteAction.SOFT, id="with-forks"),
    ],
)
def test_expire_action(meta: StreamMeta, action: str) -> None:
    assert expire_action(meta) == action


@pytest.mark.parametrize(
    ("fork_count", "soft_deleted", "remaining", "remove"),
    [
        pytest.param(1, False, 0, False, id="live-source-stays"),
        pytest.param(2, True, 1, False, id="deleted-source-with-other-forks-stays"),
        pytest.param(1, True, 0, True, id="deleted-source-last-fork-removes"),
        pytest.param(0, True, 0, True, id="count-never-negative"),
    ],
)
def test_release_fork(fork_count: int, soft_deleted: bool, remaining: int, remove: bool) -> None:
    released, should_remove = release_fork(source(fork_count=fork_count, soft_deleted=soft_deleted))
    assert (released.fork_count, should_remove) == (remaining, remove)
    assert released.soft_deleted is soft_deleted


# --- property: reading a fork chain ------------------------------------------------

chunks = st.lists(st.binary(min_size=1, max_size=8), max_size=4)


class Records:
    """Each stream incarnation's own records, as a store would keep them."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[tuple[int, bytes]]] = {}

    def add(self, stream_id: str, start: int, records: tuple[bytes, ...]) -> None:
        own = self.by_id.setdefault(stream_id, [])
        for record in records:
            own.append((start, record))
            start += len(record)

    def read(self, meta: StreamMeta, position: int) -> bytes:
        parts: list[Iterator[tuple[int, bytes]]] = []
        for segment in read_segments(meta, position):
            begin = max(position, segment.start)
            owned = [(p, d) for p, d in self.by_id.get(segment.stream_id, []) if p + len(d) > begin]
            parts.append(clip_records(owned, segment))
        records = itertools.chain.from_iterable(parts)
        return b"".join(slice_records(records, position, 10**9, whole_records=False).pieces)


# A step forks stream number `pick` (mod count) at `at` (mod its tail + 1), then appends.
steps = st.lists(st.tuples(st.integers(), st.integers(), chunks), max_size=6)


@PROPERTY
@given(root=chunks, steps=steps, data=st.data())
def test_fork_reads_source_prefix_then_own_data(
    root: list[bytes], steps: list[tuple[int, int, list[bytes]]], data: st.DataObject
) -> None:
    store = Records()
    octets = "application/octet-stream"
    metas = [StreamMeta(stream_id="s0", content_type=octets, media_type=octets)]
    contents = [b""]
    if root:
        decision = decide_append(metas[0], None, AppendRequest(octets, tuple(root)), now=NOW)
        assert decision.meta is not None
        store.add("s0", decision.start, decision.records)
        metas[0], contents[0] = decision.meta, b"".join(root)
    for number, (pick, at, own) in enumerate(steps, start=1):
        index = pick % len(metas)
        parent = metas[index]
        point = at % (parent.tail + 1)
        request_ = ForkRequest(f"s{index}")
        fork = new_fork(parent, request_, anchor=point, point=point, now=NOW, new_id=f"s{number}")
        metas[index] = fork.source
        meta = fork.created.meta
        if own:
            decision = decide_append(meta, None, AppendRequest(octets, tuple(own)), now=NOW)
            assert decision.meta is not None
            store.add(meta.stream_id, decision.start, decision.records)
            meta = decision.meta
        metas.append(meta)
        contents.append(contents[index][:point] + b"".join(own))
    for meta, content in zip(metas, contents, strict=True):
        assert meta.tail == len(content)
        position = data.draw(st.integers(min_value=0, max_value=meta.tail))
        assert store.read(meta, position) == content[position:]
