"""JSON mode: validating appends, flattening one array level, rendering reads.

Rule: a message is stored as the exact UTF-8 text the client sent for it
(surrounding whitespace trimmed), so reads are byte-faithful to the writes and
nothing is re-serialised. A read renders the stored messages as one JSON array.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final

from .errors import BadRequest

__all__ = ["JSON_MEDIA_TYPE", "flatten_json_body", "render_json_array"]

JSON_MEDIA_TYPE: Final = "application/json"
_WHITESPACE: Final = " \t\n\r"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _skip_ws(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _decode_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("JSON body is not valid UTF-8") from exc


def _value_end(text: str, index: int) -> int:
    """Index just past the JSON value starting at `index`; raises BadRequest."""
    try:
        _, end = _DECODER.raw_decode(text, index)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("invalid JSON body") from exc
    return end


def flatten_json_body(body: bytes, *, allow_empty_array: bool) -> list[bytes]:
    """Split a JSON request body into the messages it stores.

    A top-level array contributes each element as one message (one level of
    flattening); any other value is one message.

    Args:
        body: the raw request body.
        allow_empty_array: True for PUT, where `[]` creates an empty stream;
            False for POST, where `[]` is a client error.

    Raises:
        BadRequest: the body is not valid UTF-8 JSON, or is `[]` on POST.
    """
    text = _decode_text(body)
    start = _skip_ws(text, 0)
    if start == len(text):
        raise BadRequest("empty JSON body")
    if text[start] != "[":
        end = _value_end(text, start)
        if _skip_ws(text, end) != len(text):
            raise BadRequest("invalid JSON body: trailing data")
        return [text[start:end].encode("utf-8")]
    messages: list[bytes] = []
    index = _skip_ws(text, start + 1)
    if index < len(text) and text[index] == "]":
        index += 1
    else:
        while True:
            end = _value_end(text, index)
            messages.append(text[index:end].encode("utf-8"))
            index = _skip_ws(text, end)
            if index < len(text) and text[index] == ",":
                index = _skip_ws(text, index + 1)
                continue
            if index < len(text) and text[index] == "]":
                index += 1
                break
            raise BadRequest("invalid JSON body: malformed array")
    if _skip_ws(text, index) != len(text):
        raise BadRequest("invalid JSON body: trailing data")
    if not messages and not allow_empty_array:
        raise BadRequest("empty JSON array: nothing to append")
    return messages


def render_json_array(messages: Iterable[bytes]) -> bytes:
    """Render stored messages as one JSON array."""
    return b"[" + b",".join(messages) + b"]"
