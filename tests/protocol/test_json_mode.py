"""JSON mode (`ds_trio.protocol.json_mode`, spec section 9.1).

Covers one-level array flattening, byte-faithful storage of each message (the
client's own spelling, surrounding whitespace trimmed), the empty-array rule
(`[]` creates an empty stream on PUT, is a 400 on POST), rejection of invalid
JSON, NaN/Infinity, invalid UTF-8 and trailing data, and rendering stored
messages as one JSON array.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_trio.protocol.errors import BadRequest
from ds_trio.protocol.json_mode import flatten_json_body, render_json_array

PROPERTY = settings(max_examples=100, deadline=None, database=None)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=10,
)
json_whitespace = st.text(alphabet=" \t\r\n", max_size=3)
indents = st.one_of(st.none(), st.integers(min_value=0, max_value=4), st.sampled_from(["\t", " "]))


# --- tables --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "messages"),
    [
        pytest.param(b'{"event": "created"}', [b'{"event": "created"}'], id="object"),
        pytest.param(
            b'[{"event": "a"}, {"event": "b"}]', [b'{"event": "a"}', b'{"event": "b"}'], id="batch"
        ),
        pytest.param(b"[[1,2], [3,4]]", [b"[1,2]", b"[3,4]"], id="array-of-arrays"),
        pytest.param(b"[[[1,2,3]]]", [b"[[1,2,3]]"], id="one-level-only"),
        pytest.param(b"[1]", [b"1"], id="single-element"),
        pytest.param(b"  42  ", [b"42"], id="scalar-trimmed"),
        pytest.param(b"-0", [b"-0"], id="negative-zero"),
        pytest.param(b"1e400", [b"1e400"], id="huge-exponent"),
        pytest.param(b'"text"', [b'"text"'], id="string"),
        pytest.param(b"null", [b"null"], id="null"),
        pytest.param(b"false", [b"false"], id="false"),
        pytest.param(b'"\\u00e9"', [b'"\\u00e9"'], id="escape-kept-as-sent"),
        pytest.param('"\u00e9"'.encode(), ['"\u00e9"'.encode()], id="raw-utf8-kept"),
        pytest.param(
            b'\n[ 1 ,\t"two" ,\r\n{"three" : 3} ]\n',
            [b"1", b'"two"', b'{"three" : 3}'],
            id="whitespace-inside-elements-kept",
        ),
        pytest.param(b'[{"a":[1,\n 2]}]', [b'{"a":[1,\n 2]}'], id="newline-inside-element"),
    ],
)
def test_flatten(body: bytes, messages: list[bytes]) -> None:
    assert flatten_json_body(body, allow_empty_array=False) == messages
    assert flatten_json_body(body, allow_empty_array=True) == messages


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[]", id="compact"),
        pytest.param(b"[ ]", id="spaced"),
        pytest.param(b" \n[\r\n]\t", id="whitespace"),
    ],
)
def test_empty_array(body: bytes) -> None:
    assert flatten_json_body(body, allow_empty_array=True) == []
    with pytest.raises(BadRequest, match="empty JSON array"):
        flatten_json_body(body, allow_empty_array=False)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b" \n\t", id="whitespace-only"),
        pytest.param(b"{", id="unterminated-object"),
        pytest.param(b"[", id="unterminated-array"),
        pytest.param(b"[1", id="array-missing-bracket"),
        pytest.param(b"[1,", id="array-trailing-comma-eof"),
        pytest.param(b"]", id="closing-bracket"),
        pytest.param(b"[1,]", id="trailing-comma"),
        pytest.param(b"[,1]", id="leading-comma"),
        pytest.param(b"[1 2]", id="missing-comma"),
        pytest.param(b"[01]", id="leading-zero-in-array"),
        pytest.param(b"01", id="leading-zero"),
        pytest.param(b'{"a":1}}', id="extra-brace"),
        pytest.param(b'{"a":1} {"b":2}', id="two-values"),
        pytest.param(b"[1] x", id="trailing-garbage-after-array"),
        pytest.param(b"[1][2]", id="two-arrays"),
        pytest.param(b"[1]\x00", id="trailing-nul"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"[NaN]", id="nan-element"),
        pytest.param(b"Infinity", id="infinity"),
        pytest.param(b"[1, -Infinity]", id="minus-infinity-element"),
        pytest.param(b'{"a": [NaN]}', id="nested-nan"),
        pytest.param(b"'single'", id="single-quotes"),
        pytest.param(b"{a:1}", id="unquoted-key"),
        pytest.param(b"True", id="python-true"),
        pytest.param(b'"tab\there"', id="raw-control-char-in-string"),
        pytest.param(b"\x0c1", id="form-feed-is-not-whitespace"),
        pytest.param(b"\xff", id="invalid-utf8-byte"),
        pytest.param(b'"\xc3"', id="truncated-utf8"),
        pytest.param(b'["\xed\xa0\x80"]', id="utf8-encoded-surrogate"),
        pytest.param(b"\xef\xbb\xbf{}", id="byte-order-mark"),
        pytest.param(b"[" * 100_000, id="deeply-nested-array"),
        pytest.param(b'{"a":' * 100_000, id="deeply-nested-object"),
    ],
)
@pytest.mark.parametrize("allow_empty_array", [False, True], ids=["post", "put"])
def test_flatten_rejects(body: bytes, allow_empty_array: bool) -> None:
    with pytest.raises(BadRequest) as info:
        flatten_json_body(body, allow_empty_array=allow_empty_array)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("messages", "rendered"),
    [
        pytest.param([], b"[]", id="none"),
        pytest.param([b"1"], b"[1]", id="one"),
        pytest.param([b'{"a": 1}', b"2", b'"x"'], b'[{"a": 1},2,"x"]', id="several"),
        pytest.param(iter([b"[1]", b"[]"]), b"[[1],[]]", id="iterator"),
    ],
)
def test_render_json_array(messages: Any, rendered: bytes) -> None:
    assert render_json_array(messages) == rendered


# --- properties ----------------------------------------------------------------


@PROPERTY
@given(value=json_values, ensure_ascii=st.booleans())
def test_flatten_follows_json_structure(value: Any, ensure_ascii: bool) -> None:
    body = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8")
    expected = value if isinstance(value, list) else [value]
    messages = flatten_json_body(body, allow_empty_array=True)
    assert len(messages) == len(expected)
    assert [json.loads(message) for message in messages] == expected
    assert json.loads(render_json_array(messages)) == expected
    if not isinstance(value, list):
        assert messages == [body]
    if value == []:
        with pytest.raises(BadRequest):
            flatten_json_body(body, allow_empty_array=False)
    else:
        assert flatten_json_body(body, allow_empty_array=False) == messages


@PROPERTY
@given(
    elements=st.lists(json_values, min_size=1, max_size=6),
    indent=indents,
    gaps=st.lists(json_whitespace, min_size=14, max_size=14),
)
def test_pretty_printed_elements_kept_byte_for_byte(
    elements: list[Any], indent: int | str | None, gaps: list[str]
) -> None:
    texts = [json.dumps(element, indent=indent, ensure_ascii=False) for element in elements]
    body = "[" + gaps[0]
    for i, text in enumerate(texts):
        if i:
            body += gaps[2 * i] + "," + gaps[2 * i + 1]
        body += text
    body += gaps[-2] + "]" + gaps[-1]
    messages = flatten_json_body(body.encode("utf-8"), allow_empty_array=False)
    assert messages == [text.encode("utf-8") for text in texts]


@PROPERTY
@given(value=json_values, indent=indents, before=json_whitespace, after=json_whitespace)
def test_single_value_trimmed_but_otherwise_kept(
    value: Any, indent: int | str | None, before: str, after: str
) -> None:
    text = json.dumps({"v": value}, indent=indent, ensure_ascii=False)
    body = (before + text + after).encode("utf-8")
    assert flatten_json_body(body, allow_empty_array=False) == [text.encode("utf-8")]


@PROPERTY
@given(
    value=json_values,
    gap=json_whitespace,
    garbage=st.sampled_from(["x", "]", "}", ",", ":", "[", "{", '"', "null", "\x00"]),
)
def test_trailing_garbage_rejected(value: Any, gap: str, garbage: str) -> None:
    body = (json.dumps(value) + gap + garbage).encode("utf-8")
    with pytest.raises(BadRequest):
        flatten_json_body(body, allow_empty_array=True)


@PROPERTY
@given(
    elements=st.lists(json_values, max_size=3),
    index=st.integers(min_value=0, max_value=5),
    constant=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    nested=st.booleans(),
)
def test_nan_and_infinity_rejected_anywhere(
    elements: list[Any], index: int, constant: float, nested: bool
) -> None:
    bad = {"k": [constant]} if nested else constant
    body = json.dumps([*elements[:index], bad, *elements[index:]]).encode("utf-8")
    with pytest.raises(BadRequest):
        flatten_json_body(body, allow_empty_array=True)


@PROPERTY
@given(
    value=json_values,
    position=st.integers(min_value=0),
    junk=st.sampled_from([b"\xff", b"\xc3", b"\x80", b"\xfe\xff"]),
)
def test_invalid_utf8_rejected_anywhere(value: Any, position: int, junk: bytes) -> None:
    body = json.dumps(value, ensure_ascii=False).encode("utf-8")
    cut = position % (len(body) + 1)
    with pytest.raises(BadRequest, match="UTF-8"):
        flatten_json_body(body[:cut] + junk + body[cut:], allow_empty_array=True)
