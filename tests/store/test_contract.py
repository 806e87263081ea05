"""One contract, every store: the same body runs against memory and LMDB."""

from __future__ import annotations

import json

import pytest
import trio

from ds_trio.protocol.errors import (
    ConfigMismatch,
    ContentTypeMismatch,
    InvalidOffset,
    SeqConflict,
    SeqGap,
    StaleEpoch,
    StreamClosed,
    StreamNotFound,
)
from ds_trio.protocol.headers import parse_expires_at
from ds_trio.protocol.offsets import format_offset
from ds_trio.protocol.producers import ProducerClaim
from ds_trio.protocol.streams import AppendRequest, CreateRequest
from ds_trio.store import Store

NOW = 1_800_000_000.0
TEXT = CreateRequest(content_type="text/plain", media_type="text/plain")
JSON = CreateRequest(content_type="application/json", media_type="application/json")


def text(data: bytes, **options: object) -> AppendRequest:
    return AppendRequest("text/plain", (data,), **options)  # type: ignore[arg-type]


async def read_all(store: Store, name: str, max_bytes: int = 1 << 20) -> bytes:
    chunks, position = [], 0
    for _ in range(10_000):
        result = await store.read(name, position, max_bytes, NOW)
        chunks.extend(result.pieces)
        if result.up_to_date:
            return b"".join(chunks)
        position = result.next_position
    raise AssertionError("read did not reach the tail")


async def test_create_append_read_round_trip(store: Store) -> None:
    created = await store.create("s", CreateRequest("text/plain", "text/plain", records=(b"ab",)), NOW)
    assert created.created and created.meta.tail == 2
    offsets = [(await store.append("s", text(part), NOW)).next_offset for part in (b"cd", b"e")]
    assert offsets == sorted(offsets) and len(set(offsets)) == 2
    assert await read_all(store, "s") == b"abcde"
    result = await store.read("s", 2, 100, NOW)
    assert b"".join(result.pieces) == b"cde" and result.up_to_date
    assert format_offset(result.next_position) == offsets[-1]


async def test_chunked_reads_cover_the_stream_once(store: Store) -> None:
    await store.create("s", TEXT, NOW)
    payload = bytes(range(256)) * 40
    for i in range(0, len(payload), 700):
        await store.append("s", text(payload[i : i + 700]), NOW)
    assert await read_all(store, "s", max_bytes=333) == payload


async def test_reading_past_the_tail_is_rejected(store: Store) -> None:
    await store.create("s", CreateRequest("text/plain", "text/plain", records=(b"abc",)), NOW)
    with pytest.raises(InvalidOffset):
        await store.read("s", 4, 100, NOW)
    at_tail = await store.read("s", None, 100, NOW)
    assert at_tail.start == 3 and at_tail.pieces == () and at_tail.up_to_date


async def test_json_messages_are_never_split(store: Store) -> None:
    await store.create("j", JSON, NOW)
    messages = [json.dumps({"i": i, "pad": "x" * i}).encode() for i in range(30)]
    await store.append("j", AppendRequest("application/json", tuple(messages)), NOW)
    seen, position = [], 0
    for _ in range(100):
        result = await store.read("j", position, 64, NOW)
        assert result.pieces, "a read must make progress"
        seen.extend(result.pieces)
        position = result.next_position
        if result.up_to_date:
            break
    assert seen == messages


async def test_recreate_is_idempotent_only_for_the_same_config(store: Store) -> None:
    first = await store.create("s", TEXT, NOW)
    again = await store.create("s", TEXT, NOW)
    assert first.created and not again.created
    assert again.meta.stream_id == first.meta.stream_id
    with pytest.raises(ConfigMismatch):
        await store.create("s", JSON, NOW)
    with pytest.raises(ConfigMismatch):
        await store.create("s", CreateRequest("text/plain", "text/plain", ttl=5), NOW)


async def test_missing_streams(store: Store) -> None:
    for operation in (
        store.append("nope", text(b"x"), NOW),
        store.read("nope", 0, 10, NOW),
        store.head("nope", NOW),
        store.delete("nope", NOW),
    ):
        with pytest.raises(StreamNotFound):
            await operation


async def test_delete_forgets_data_producers_and_seq(store: Store) -> None:
    await store.create("s", TEXT, NOW)
    await store.append("s", text(b"old", producer=ProducerClaim("p", 3, 0), stream_seq=b"9"), NOW)
    await store.delete("s", NOW)
    with pytest.raises(StreamNotFound):
        await store.head("s", NOW)
    recreated = await store.create("s", TEXT, NOW)
    assert recreated.created and recreated.meta.tail == 0
    fresh = await store.append("s", text(b"new", producer=ProducerClaim("p", 0, 0), stream_seq=b"1"), NOW)
    assert fresh.appended
    assert await read_all(store, "s") == b"new"


async def test_closed_stream_rules(store: Store) -> None:
    await store.create("s", TEXT, NOW)
    closing = await store.append("s", text(b"end", close=True), NOW)
    assert closing.closed and closing.changed
    again = await store.append("s", AppendRequest(None, close=True), NOW)
    assert again.closed and not again.changed
    with pytest.raises(StreamClosed) as excinfo:
        await store.append("s", text(b"more"), NOW)
    assert excinfo.value.headers == {"Stream-Closed": "true", "Stream-Next-Offset": closing.next_offset}
    result = await store.read("s", 0, 100, NOW)
    assert result.at_end and b"".join(result.pieces) == b"end"


async def test_content_type_and_stream_seq_checks(store: Store) -> None:
    await store.create("s", TEXT, NOW)
    with pytest.raises(ContentTypeMismatch):
        await store.append("s", AppendRequest("application/json", (b"1",)), NOW)
    await store.append("s", text(b"a", stream_seq=b"b"), NOW)
    with pytest.raises(SeqConflict):
        await store.append("s", text(b"a", stream_seq=b"a"), NOW)
    with pytest.raises(SeqConflict):
        await store.append("s", text(b"a", stream_seq=b"b"), NOW)
    assert await read_all(store, "s") == b"a"


async def test_idempotent_producer_sequence(store: Store) -> None:
    await store.create("s", TEXT, NOW)
    first = await store.append("s", text(b"0", producer=ProducerClaim("p", 0, 0)), NOW)
    assert first.appended and first.producer is not None and first.producer.last_seq == 0
    await store.append("s", text(b"1", producer=ProducerClaim("p", 0, 1)), NOW)
    duplicate = await store.append("s", text(b"0", producer=ProducerClaim("p", 0, 0)), NOW)
    assert not duplicate.appended and duplicate.producer is not None
    assert duplicate.producer.last_seq == 1
    with pytest.raises(SeqGap) as gap:
        await store.append("s", text(b"3", producer=ProducerClaim("p", 0, 3)), NOW)
    assert gap.value.headers["Producer-Expected-Seq"] == "2"
    await store.append("s", text(b"E", producer=ProducerClaim("p", 1, 0)), NOW)
    with pytest.raises(StaleEpoch) as stale:
        await store.append("s", text(b"Z", producer=ProducerClaim("p", 0, 2)), NOW)
    assert stale.value.headers == {"Producer-Epoch": "1"}
    assert await read_all(store, "s") == b"01E"


async def test_concurrent_producer_appends_serialise(store: Store) -> None:
    await store.create("s", TEXT, NOW)

    async def produce(producer: str) -> None:
        for seq in range(20):
            await store.append("s", text(producer.encode(), producer=ProducerClaim(producer, 0, seq)), NOW)

    async with trio.open_nursery() as nursery:
        for producer in "abcd":
            nursery.start_soon(produce, producer)
    data = await read_all(store, "s")
    assert sorted(data) == sorted(b"abcd" * 20)


async def test_ttl_slides_on_reads_and_writes_not_on_head(store: Store) -> None:
    await store.create("s", CreateRequest("text/plain", "text/plain", ttl=10), NOW)
    await store.read("s", 0, 10, NOW + 8)  # slides the window to NOW + 18
    await store.head("s", NOW + 17)  # does not slide it
    await store.append("s", text(b"x"), NOW + 17)  # slides it to NOW + 27
    assert (await store.head("s", NOW + 26)).tail == 1
    with pytest.raises(StreamNotFound):
        await store.head("s", NOW + 27)


async def test_expire_removes_streams_whose_time_passed(store: Store) -> None:
    expires = parse_expires_at("2030-01-01T00:00:00Z")
    assert expires is not None
    await store.create("ttl", CreateRequest("text/plain", "text/plain", ttl=5), NOW)
    await store.create("abs", CreateRequest("text/plain", "text/plain", expires_at=expires), NOW)
    await store.create("forever", TEXT, NOW)
    assert await store.expire(NOW + 4) == []
    assert await store.expire(NOW + 5) == ["ttl"]
    assert await store.expire(expires.timestamp + 1) == ["abs"]
    with pytest.raises(StreamNotFound):
        await store.head("ttl", NOW)
    assert (await store.head("forever", expires.timestamp + 10)).tail == 0


async def test_expired_stream_can_be_recreated_with_another_config(store: Store) -> None:
    await store.create("s", CreateRequest("text/plain", "text/plain", ttl=1), NOW)
    recreated = await store.create("s", JSON, NOW + 2)
    assert recreated.created and recreated.meta.is_json


async def test_large_appends_round_trip(store: Store) -> None:
    await store.create("big", CreateRequest("application/octet-stream", "application/octet-stream"), NOW)
    payload = bytes(range(251)) * (3 * 1024 * 1024 // 251)  # ~3 MiB, more than one LMDB piece
    await store.append("big", AppendRequest("application/octet-stream", (payload,)), NOW)
    await store.append("big", AppendRequest("application/octet-stream", (b"tail",)), NOW)
    assert await read_all(store, "big", max_bytes=1 << 20) == payload + b"tail"
    middle = await store.read("big", 1_500_000, 10, NOW)
    assert b"".join(middle.pieces) == payload[1_500_000:1_500_010]
