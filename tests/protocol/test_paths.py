"""Stream names (`ds_trio.protocol.paths`).

Covers canonicalisation (percent-decoding, re-encoding unreserved characters
literally and everything else as upper-case `%XX`), rejection of traversal
and malformed names ('.', '..', empty segments, control characters, bad
escapes, invalid UTF-8, too long or too deep), and the properties that make a
name a safe key: idempotence, `%2F` never aliasing `/`, and every spelling of
the same characters reaching the same stream.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_trio.protocol.errors import BadRequest
from ds_trio.protocol.paths import MAX_NAME_BYTES, canonical_stream_name, glob_covers, glob_match

PROPERTY = settings(max_examples=150, deadline=None, database=None)
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-F]{2})"
CANONICAL = re.compile(rf"{_PCHAR}+(?:/{_PCHAR}+)*")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        pytest.param("abc", "abc", id="plain"),
        pytest.param("a/b/c", "a/b/c", id="nested"),
        pytest.param("a%62c", "abc", id="encoded-unreserved-decoded"),
        pytest.param("%61%62%63", "abc", id="all-encoded"),
        pytest.param("%7E%7e", "~~", id="encoded-tilde"),
        pytest.param("Az09-._~", "Az09-._~", id="unreserved"),
        pytest.param("user@host:1;v=2,x!$&'()*+", "user@host:1;v=2,x!$&'()*+", id="sub-delims"),
        pytest.param("a%2Fb", "a%2Fb", id="encoded-slash-stays-encoded"),
        pytest.param("a%2fb", "a%2Fb", id="hex-upper-cased"),
        pytest.param("a b", "a%20b", id="space-encoded"),
        pytest.param("a%20b", "a%20b", id="encoded-space"),
        pytest.param("a%25b", "a%25b", id="encoded-percent"),
        pytest.param("a%3Fb%23c", "a%3Fb%23c", id="encoded-query-and-fragment"),
        pytest.param("\u00e9", "%C3%A9", id="literal-non-ascii"),
        pytest.param("%c3%a9", "%C3%A9", id="encoded-non-ascii"),
        pytest.param("%F0%9F%98%80", "%F0%9F%98%80", id="emoji"),
        pytest.param("...", "...", id="three-dots"),
        pytest.param(".a/a.", ".a/a.", id="dots-inside-names"),
        pytest.param("%2E%2E%2Fetc", "..%2Fetc", id="encoded-dotdot-slash-is-one-segment"),
        pytest.param("__ds", "__ds", id="reserved-prefix-not-checked-here"),
        pytest.param("a" * MAX_NAME_BYTES, "a" * MAX_NAME_BYTES, id="longest"),
        pytest.param("\u00e9" * (MAX_NAME_BYTES // 2), "%C3%A9" * (MAX_NAME_BYTES // 2),
                     id="longest-multibyte"),
        pytest.param("/".join(["a"] * 32), "/".join(["a"] * 32), id="deepest"),
    ],
)  # fmt: skip
def test_canonical_name(raw: str, name: str) -> None:
    assert canonical_stream_name(raw) == name


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("/", id="slash-only"),
        pytest.param("/abc", id="leading-slash"),
        pytest.param("abc/", id="trailing-slash"),
        pytest.param("a//b", id="empty-segment"),
        pytest.param(".", id="dot"),
        pytest.param("..", id="dotdot"),
        pytest.param("a/./b", id="inner-dot"),
        pytest.param("a/../b", id="inner-dotdot"),
        pytest.param("../a", id="leading-dotdot"),
        pytest.param("%2e", id="encoded-dot"),
        pytest.param("%2E%2E", id="encoded-dotdot"),
        pytest.param(".%2e", id="half-encoded-dotdot"),
        pytest.param("a/%2e%2E/b", id="inner-encoded-dotdot"),
        pytest.param("\x00", id="nul"),
        pytest.param("a%00b", id="encoded-nul"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a%0Ab", id="encoded-lf"),
        pytest.param("a%0d", id="encoded-cr"),
        pytest.param("%1F", id="unit-separator"),
        pytest.param("a\x7fb", id="del"),
        pytest.param("%7F", id="encoded-del"),
        pytest.param("%C2%80", id="c1-first"),
        pytest.param("%C2%85", id="c1-next-line"),
        pytest.param("%C2%9B", id="c1-csi"),
        pytest.param("\u009f", id="c1-last-literal"),
        pytest.param("%", id="lone-percent"),
        pytest.param("a%", id="trailing-percent"),
        pytest.param("a%4", id="short-escape"),
        pytest.param("%G0", id="non-hex"),
        pytest.param("%4g", id="non-hex-second"),
        pytest.param("%%41", id="double-percent"),
        pytest.param("%+1", id="signed-escape"),
        pytest.param("% 1", id="space-in-escape"),
        pytest.param("%\u0661\u0661", id="non-ascii-digits-in-escape"),
        pytest.param("%FF", id="invalid-utf8-byte"),
        pytest.param("%C3", id="truncated-utf8"),
        pytest.param("%C3%28", id="bad-continuation"),
        pytest.param("%C0%AF", id="overlong-slash"),
        pytest.param("%ED%A0%80", id="encoded-surrogate"),
        pytest.param("a\ud800", id="lone-surrogate"),
        pytest.param("a" * (MAX_NAME_BYTES + 1), id="too-long"),
        pytest.param("a" * 512 + "/" + "a" * 513, id="too-long-across-segments"),
        pytest.param("%41" * (MAX_NAME_BYTES + 1), id="too-long-decoded"),
        pytest.param("\u00e9" * (MAX_NAME_BYTES // 2 + 1), id="too-long-multibyte"),
        pytest.param("/".join(["a"] * 33), id="too-deep"),
    ],
)
def test_rejects(raw: str) -> None:
    with pytest.raises(BadRequest) as info:
        canonical_stream_name(raw)
    assert info.value.status == 400


# --- properties ----------------------------------------------------------------

safe_chars = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/%")
segment_text = st.text(safe_chars, min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))


def spell(text: str, modes: list[int]) -> str:
    """One spelling of `text`: each character literal, `%xx` or `%XX`."""
    out = []
    for char, mode in zip(text, modes + [0] * len(text), strict=False):
        if mode == 0:
            out.append(char)
        else:
            hex_form = "%{:02X}" if mode == 1 else "%{:02x}"
            out.append("".join(hex_form.format(byte) for byte in char.encode("utf-8")))
    return "".join(out)


spelled_segment = st.builds(
    lambda text, modes: (text, spell(text, modes)),
    segment_text,
    st.lists(st.integers(min_value=0, max_value=2), max_size=8),
)
spelled_paths = st.lists(spelled_segment, min_size=1, max_size=5)


path_like_text = st.text(st.one_of(st.sampled_from("%/.aF2e~ "), st.characters()), max_size=24)


@PROPERTY
@given(path_like_text)
def test_idempotent_or_rejected(raw: str) -> None:
    try:
        name = canonical_stream_name(raw)
    except BadRequest:
        return
    assert CANONICAL.fullmatch(name), name
    assert canonical_stream_name(name) == name


@PROPERTY
@given(spelled_paths)
def test_every_spelling_reaches_one_name(segments: list[tuple[str, str]]) -> None:
    literal = "/".join(text for text, _ in segments)
    spelled = "/".join(spelling for _, spelling in segments)
    name = canonical_stream_name(literal)
    assert canonical_stream_name(spelled) == name
    assert canonical_stream_name(name) == name
    assert CANONICAL.fullmatch(name), name
    # Segment for segment, the name decodes to the characters that were spelled.
    assert [unquote_to_bytes(part) for part in name.split("/")] == [
        text.encode("utf-8") for text, _ in segments
    ]


@PROPERTY
@given(left=segment_text, right=segment_text, slash=st.sampled_from(["%2F", "%2f"]))
def test_encoded_slash_never_aliases_a_real_slash(left: str, right: str, slash: str) -> None:
    encoded = canonical_stream_name(left + slash + right)
    real = canonical_stream_name(left + "/" + right)
    assert encoded != real
    assert encoded == canonical_stream_name(left) + "%2F" + canonical_stream_name(right)
    assert real == canonical_stream_name(left) + "/" + canonical_stream_name(right)


BAD_SEGMENTS = ["", ".", "..", "%2e", "%2E%2e", ".%2E", "a%00", "%0A", "\x01", "%C2%85", "%",
                "%z1", "%FF", "%C3"]  # fmt: skip


@PROPERTY
@given(
    segments=st.lists(segment_text, min_size=1, max_size=4),
    index=st.integers(min_value=0, max_value=4),
    bad=st.sampled_from(BAD_SEGMENTS),
)
def test_one_bad_segment_rejects_the_path(segments: list[str], index: int, bad: str) -> None:
    canonical_stream_name("/".join(segments))  # valid on its own
    with_bad = [*segments[:index], bad, *segments[index:]]
    with pytest.raises(BadRequest):
        canonical_stream_name("/".join(with_bad))


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("events/*", "events/a", True),
        ("events/*", "events/a/b", False),
        ("events/*", "events", False),
        ("events/**", "events", True),
        ("events/**", "events/a/b/c", True),
        ("**", "anything/at/all", True),
        ("a/**/z", "a/z", True),
        ("a/**/z", "a/b/c/z", True),
        ("a/**/z", "a/b/c", False),
        ("*/logs", "svc/logs", True),
        ("exact", "exact", True),
        ("exact", "exactly", False),
    ],
)
def test_glob(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


def _reference_glob(pattern: list[str], path: list[str]) -> bool:
    """The obvious backtracking matcher, as an oracle."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_reference_glob(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and head in ("*", path[0]) and _reference_glob(rest, path[1:])


_SEGMENTS = st.sampled_from(["a", "b", "*", "**"])


@given(
    st.lists(_SEGMENTS, min_size=1, max_size=6),
    st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=6),
)
def test_glob_agrees_with_backtracking(pattern: list[str], path: list[str]) -> None:
    assert glob_match("/".join(pattern), "/".join(path)) is _reference_glob(pattern, path)


def test_glob_with_many_double_stars_is_fast_enough_to_finish() -> None:
    pattern = "/".join(["**"] * 32 + ["never"])
    assert glob_match(pattern, "/".join(["x"] * 32)) is False


@pytest.mark.parametrize(
    ("outer", "inner", "covered"),
    [
        ("events/**", "events/*", True),
        ("events/**", "events/**", True),
        ("events/**", "events/a/b", True),
        ("events/*", "events/**", False),
        ("events/*", "events/*", True),
        ("events/a", "events/*", False),
        ("**", "**", True),
        ("a/**", "**", False),
        ("*/logs", "svc/logs", True),
        ("a/**/z", "a/*/**/z", True),
    ],
)
def test_glob_covers(outer: str, inner: str, covered: bool) -> None:
    assert glob_covers(outer, inner) is covered


@given(
    st.lists(_SEGMENTS, min_size=1, max_size=4),
    st.lists(_SEGMENTS, min_size=1, max_size=4),
    st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=6),
)
def test_a_covering_glob_matches_whatever_the_covered_one_does(
    outer: list[str], inner: list[str], path: list[str]
) -> None:
    outer_glob, inner_glob, name = "/".join(outer), "/".join(inner), "/".join(path)
    if glob_covers(outer_glob, inner_glob) and glob_match(inner_glob, name):
        assert glob_match(outer_glob, name)
