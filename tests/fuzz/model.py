"""What the campaign believes about the streams it touched.

Rule: the model changes only on what a response acknowledges (a 201, a 204
append, a 204 delete...), never on what a request merely asked for. When an
answer leaves the outcome open (a hang, a 5xx), the stream becomes unknown and
is no longer checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

JSON_MEDIA_TYPE: Final = "application/json"
MAX_OFFSETS: Final = 64  # observed offsets kept per incarnation


def media_type(content_type: str) -> str:
    """The lower-cased `type/subtype` of a Content-Type."""
    return content_type.split(";", 1)[0].strip().lower()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def json_messages(body: bytes) -> list[object] | None:
    """The messages a JSON body stores (one array level flattened); None if invalid."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, list) else [value]


class Existence(Enum):
    ABSENT = "absent"
    LIVE = "live"
    SOFT_DELETED = "soft-deleted"


@dataclass(eq=False)
class Incarnation:
    """One life of a stream path, from its 201 to its removal.

    `content` is bytes for byte streams and a list of messages for JSON
    streams; None when the campaign cannot know it (a fork at an offset it
    never observed).
    """

    owner: ModelStream
    serial: int
    content_type: str
    content: bytearray | list[object] | None
    closed: bool = False
    source: Incarnation | None = None
    forks: int = 0  # forks, not yet removed, that read this incarnation's data
    soft_deleted: bool = False
    offsets: dict[str, int] = field(default_factory=dict)  # observed token -> units before it

    @property
    def is_json(self) -> bool:
        return media_type(self.content_type) == JSON_MEDIA_TYPE

    @property
    def length(self) -> int | None:
        return None if self.content is None else len(self.content)

    def observe(self, token: str | None, units: int) -> str | None:
        """Remember that `token` names position `units`; a complaint if offsets disagree."""
        if token is None:
            return "a response lacks Stream-Next-Offset"
        known = self.offsets.get(token)
        if known is not None:
            if known != units:
                return f"offset {token} named position {known} and now {units}"
            return None
        for other, other_units in self.offsets.items():
            if (other < token) != (other_units < units):
                return f"offsets {other} ({other_units}) and {token} ({units}) are out of order"
        self.offsets[token] = units
        if len(self.offsets) > MAX_OFFSETS:
            oldest = next(t for t, u in self.offsets.items() if u != 0)
            del self.offsets[oldest]
        return None


@dataclass(eq=False)
class ModelStream:
    """One stream path the campaign models, and the spellings that reach it."""

    key: str  # the canonical name
    spellings: tuple[str, ...]
    current: Incarnation | None = None
    unknown_reason: str | None = None

    @property
    def known(self) -> bool:
        return self.unknown_reason is None

    def existence(self) -> Existence:
        if self.current is None:
            return Existence.ABSENT
        return Existence.SOFT_DELETED if self.current.soft_deleted else Existence.LIVE


class Model:
    """Every modelled stream of one lane."""

    def __init__(self, streams: list[ModelStream]) -> None:
        self.streams = streams
        self._serial = 0

    def create(
        self,
        stream: ModelStream,
        content_type: str,
        content: bytearray | list[object] | None,
        closed: bool,
        source: Incarnation | None = None,
    ) -> Incarnation:
        self._serial += 1
        incarnation = Incarnation(stream, self._serial, content_type, content, closed, source)
        if source is not None:
            source.forks += 1
        stream.current = incarnation
        return incarnation

    def delete(self, incarnation: Incarnation) -> None:
        """A 204 DELETE: soft-delete while forks read it, else remove it."""
        if incarnation.forks > 0:
            incarnation.soft_deleted = True
        else:
            self._remove(incarnation)

    def _remove(self, incarnation: Incarnation | None) -> None:
        """Remove, then release the hold on the source, up the chain."""
        while incarnation is not None:
            if incarnation.owner.current is incarnation:
                incarnation.owner.current = None
            source = incarnation.source
            if source is None:
                return
            source.forks -= 1
            if not (source.soft_deleted and source.forks == 0):
                return
            incarnation = source

    @staticmethod
    def forget(stream: ModelStream, reason: str) -> None:
        """Stop checking `stream`, and its sources, whose fork counts it may have changed."""
        if stream.unknown_reason is None:
            stream.unknown_reason = reason
        incarnation = stream.current
        source = incarnation.source if incarnation else None
        while source is not None:
            if source.owner.unknown_reason is None:
                source.owner.unknown_reason = f"a fork of it became unknown: {reason}"
            source = source.source
