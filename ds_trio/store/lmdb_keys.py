"""How the LMDB store lays out keys and values (pure; no lmdb import).

Databases in one environment:
- `info`:      layout marker, checked at start-up.
- `streams`:   stream name (UTF-8) -> encoded `StreamMeta` (JSON).
- `data`:      stream id (8 bytes) + record position (8 bytes, big-endian) -> record
               bytes, so one stream's records are contiguous and a catch-up read
               is a cursor range scan from the record holding the start position.
- `producers`: stream id + producer id (UTF-8) -> epoch, last seq (2 x u64 BE).
- `expiry`:    deadline in ms (u64 BE) + stream id -> stream name; a sweep is a
               scan from the smallest key up to now.
Keying data and producers by the stream *id* (new for every incarnation of a
name) means a re-created stream can never see its predecessor's records.

LMDB keys hold at most 511 bytes, but a canonical name may take 3 KiB and a
producer id is as long as its header: longer keys are stored shortened
(`bounded_key`), and a shortened stream key's metadata carries the full name.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Final

from ..protocol.headers import ExpiresAt
from ..protocol.producers import ProducerState
from ..protocol.streams import ForkOrigin, Segment, StreamMeta

__all__ = [
    "FORMAT_NAME",
    "LAYOUT_VERSION",
    "MAX_KEY_BYTES",
    "bounded_key",
    "data_key",
    "decode_meta",
    "decode_producer",
    "encode_meta",
    "encode_producer",
    "expiry_key",
    "expiry_deadline",
    "position_of",
    "producer_key",
    "stream_key",
    "stream_name",
    "stream_prefix",
]

FORMAT_NAME: Final = b"ds_trio"
LAYOUT_VERSION: Final = b"1"
_U64: Final = struct.Struct(">Q")
_PRODUCER: Final = struct.Struct(">QQ")
MAX_KEY_BYTES: Final = 511  # LMDB's MDB_MAXKEYSIZE
_KEPT_BYTES: Final = 400  # of a shortened key: its start, so prefix scans still reach it
_SHORTENED: Final = b"\xff"  # never in UTF-8: marks a shortened key


def bounded_key(key: bytes) -> bytes:
    """`key`, or if LMDB cannot hold it, its first bytes, a mark and its SHA-256."""
    if len(key) <= MAX_KEY_BYTES:
        return key
    return key[:_KEPT_BYTES] + _SHORTENED + hashlib.sha256(key).digest()


def stream_key(name: bytes) -> bytes:
    """The `streams` key of a stream name (UTF-8)."""
    return bounded_key(name)


def stream_name(key: bytes, meta_value: bytes) -> str:
    """The name a `streams` entry is for: its key, or the name in a shortened key's metadata."""
    if _SHORTENED not in key:
        return key.decode("utf-8")
    return json.loads(bytes(meta_value))["name"]


def stream_prefix(stream_id: str) -> bytes:
    """The 8-byte key prefix of a stream incarnation (its id is 16 hex digits)."""
    return bytes.fromhex(stream_id)


def data_key(stream_id: str, position: int) -> bytes:
    return stream_prefix(stream_id) + _U64.pack(position)


def position_of(key: bytes) -> int:
    """The record position encoded in a data key."""
    return _U64.unpack_from(key, 8)[0]


def producer_key(stream_id: str, producer_id: str) -> bytes:
    return bounded_key(stream_prefix(stream_id) + producer_id.encode("utf-8"))


def encode_producer(state: ProducerState) -> bytes:
    return _PRODUCER.pack(state.epoch, state.last_seq)


def decode_producer(value: bytes) -> ProducerState:
    epoch, last_seq = _PRODUCER.unpack(value)
    return ProducerState(epoch, last_seq)


def expiry_key(deadline: float, stream_id: str) -> bytes:
    return _U64.pack(max(0, int(deadline * 1000))) + stream_prefix(stream_id)


def expiry_deadline(key: bytes) -> float:
    """The deadline (Unix seconds) encoded in an expiry key."""
    return _U64.unpack_from(key, 0)[0] / 1000


def encode_meta(meta: StreamMeta, name: bytes | None = None) -> bytes:
    """The stored metadata; with `name` when its key is shortened (see `stream_key`)."""
    fields: dict[str, object] = {
        "id": meta.stream_id,
        "ct": meta.content_type,
        "mt": meta.media_type,
        "tail": meta.tail,
        "touched": meta.touched_at,
    }
    if meta.ttl is not None:
        fields["ttl"] = meta.ttl
    if meta.expires_at is not None:
        fields["exp"] = [meta.expires_at.text, meta.expires_at.timestamp]
    if meta.closed:
        fields["closed"] = True
    if meta.last_stream_seq is not None:
        fields["seq"] = meta.last_stream_seq.hex()
    if meta.fork is not None:
        origin = meta.fork
        fields["fork"] = [origin.source, origin.source_id, origin.anchor, origin.sub_offset]
        fields["base"] = meta.base
        fields["inherit"] = [[s.stream_id, s.start, s.end] for s in meta.inherited]
    if meta.fork_count:
        fields["forks"] = meta.fork_count
    if meta.soft_deleted:
        fields["deleted"] = True
    if name is not None and stream_key(name) != name:
        fields["name"] = name.decode("utf-8")
    return json.dumps(fields, separators=(",", ":")).encode("utf-8")


def decode_meta(value: bytes) -> StreamMeta:
    fields = json.loads(bytes(value))
    expires = fields.get("exp")
    seq = fields.get("seq")
    return StreamMeta(
        stream_id=fields["id"],
        content_type=fields["ct"],
        media_type=fields["mt"],
        tail=fields["tail"],
        ttl=fields.get("ttl"),
        expires_at=ExpiresAt(expires[0], expires[1]) if expires else None,
        closed=fields.get("closed", False),
        last_stream_seq=bytes.fromhex(seq) if seq is not None else None,
        touched_at=fields["touched"],
        base=fields.get("base", 0),
        inherited=tuple(Segment(*segment) for segment in fields.get("inherit", ())),
        fork=ForkOrigin(*fields["fork"]) if "fork" in fields else None,
        fork_count=fields.get("forks", 0),
        soft_deleted=fields.get("deleted", False),
    )
