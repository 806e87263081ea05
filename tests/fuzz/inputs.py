"""Random and semi-valid inputs: names, JSON documents, bodies, header values, raw requests.

Everything is drawn from the `random.Random` it is given, so a seed replays it.
"""

from __future__ import annotations

import json
import random
from typing import Final

STREAM_ROOT: Final = "/v1/stream"
MAX_APPEND_BYTES: Final = 256 * 1024  # the campaign's servers run with this limit
MAX_READ_BYTES: Final = 96 * 1024  # above 64 KiB, so large gzip reads go to a thread

_STRING_PIECES: Final = [
    "a", "Z", "0", " ", "é", "ü", "€", "😀", "\u2028", '"', "\\", "/", "\n", "\r\n", "\t",
    "\x00", "\x1f", "null", "[", "]", "{", "}", ",", ":", "\ud800", "\udfff",
]  # fmt: skip
_TEXT_PIECES: Final = ["hello", " ", "\n", "\r\n", "\r", "data: x", "event: y", "é", "\t", "::"]
JUNK_VALUES: Final = [
    "", " ", "\t", "x", "-1", "01", "+1", "1.0", "1e3", "0x10", "true", "false", "null",
    "9007199254740992", "99999999999999999999", "é", "a,b", "[]", "%00",
]  # fmt: skip
JUNK_OFFSETS: Final = [
    "", "abc", "-2", "5", "%2B5", "%20-1", "NOW", "Now", "-1-1", "%00", "%ff", "%EF%BC%90",
    "0000000000000000_", "_0000000000000000", "0000000000000001_0000000000000000",
    "000000000000000_00000000000000000", "0000000000000000_00000000000000000",
    "0000000000000000-0000000000000000", "9999999999999999_9999999999999999", "x" * 300,
]  # fmt: skip
CONTENT_TYPES: Final = [
    ("application/octet-stream", 25),
    ("text/plain", 20),
    ("application/json", 30),
    ("application/json; charset=utf-8", 4),
    ("Application/JSON", 3),
    ("text/plain; charset=utf-8", 3),
    ("application/x-ndjson", 3),
    (None, 10),
]
JUNK_CONTENT_TYPES: Final = [
    "",
    " ",
    "junk",
    "a/b/c",
    "/",
    "text/",
    "/json",
    ";",
    "te xt/plain",
    "é/ü",
]


def weighted(rng: random.Random, choices: list[tuple[object, int]]) -> object:
    values, weights = zip(*choices, strict=True)
    return rng.choices(values, weights)[0]


def model_names(prefix: str) -> list[tuple[str, tuple[str, ...]]]:
    """(canonical name, spellings that reach it) of a lane's modelled streams."""
    return [
        (f"{prefix}-a", (f"{prefix}-a",)),
        (f"{prefix}-b", (f"{prefix}-b",)),
        (f"{prefix}-c", (f"{prefix}-c",)),
        (f"{prefix}-d", (f"{prefix}-d",)),
        (f"{prefix}-e", (f"{prefix}-e",)),
        (f"{prefix}-n/x", (f"{prefix}-n/x",)),
        (f"{prefix}-n/x/y", (f"{prefix}-n/x/y",)),
        (f"{prefix}-%C3%BC", (f"{prefix}-%C3%BC", f"{prefix}-%c3%bc", f"{prefix}-ü")),
        (f"{prefix}-t~x", (f"{prefix}-t~x", f"{prefix}-t%7Ex", f"{prefix}-t%7ex")),
        (f"{prefix}-A", (f"{prefix}-A", f"{prefix}-%41")),
        (f"{prefix}-s%2Fl", (f"{prefix}-s%2Fl", f"{prefix}-s%2fl")),
        (f"{prefix}-s/l", (f"{prefix}-s/l",)),
        (f"{prefix}-sp%20x", (f"{prefix}-sp%20x", f"{prefix}-sp x")),
        (f"{prefix}-" + "L" * 900, (f"{prefix}-" + "L" * 900,)),
    ]


def weird_paths(prefix: str) -> list[str]:
    """Paths below (and beside) the stream root that no modelled stream answers to.

    Those holding `..`, `.` or control characters must go out raw: httpx
    would normalise or refuse them.
    """
    return [
        f"{STREAM_ROOT}/{prefix}-w/../{prefix}-a",
        f"{STREAM_ROOT}/{prefix}-w/./x",
        f"{STREAM_ROOT}/{prefix}-w/..",
        f"{STREAM_ROOT}/..",
        f"{STREAM_ROOT}/.",
        f"{STREAM_ROOT}/{prefix}-w//x",
        f"{STREAM_ROOT}//{prefix}-w",
        f"{STREAM_ROOT}/{prefix}-w/",
        f"{STREAM_ROOT}/",
        STREAM_ROOT,
        f"{STREAM_ROOT}/%",
        f"{STREAM_ROOT}/{prefix}-%zz",
        f"{STREAM_ROOT}/{prefix}-%0",
        f"{STREAM_ROOT}/{prefix}-%00x",
        f"{STREAM_ROOT}/{prefix}-%7Fx",
        f"{STREAM_ROOT}/{prefix}-%C2%85",
        f"{STREAM_ROOT}/{prefix}-%FF",
        f"{STREAM_ROOT}/{prefix}-%ED%A0%80",
        f"{STREAM_ROOT}/{prefix}-%2E%2E",
        f"{STREAM_ROOT}/{prefix}-w/%2E%2E/x",
        f"{STREAM_ROOT}/{prefix}-\x01x",
        f"{STREAM_ROOT}/{prefix}-\x7fx",
        f"{STREAM_ROOT}/{prefix}-" + "x" * 1100,
        f"{STREAM_ROOT}/{prefix}-" + "/x" * 40,
        f"{STREAM_ROOT}/{prefix}-ok/" + "é" * 10,
        f"{STREAM_ROOT}/{prefix}-q?offset=-1&offset=now",
        f"{STREAM_ROOT}/{prefix}-q?live=sse",
        f"{STREAM_ROOT}/{prefix}-q?offset=-1&live=long-poll&live=sse",
        f"{STREAM_ROOT}/{prefix}-q#frag",
        f"{STREAM_ROOT}/__ds",
        f"{STREAM_ROOT}/__ds/",
        f"{STREAM_ROOT}/__ds/{prefix}-x",
        f"{STREAM_ROOT}/__ds/subscriptions",
        f"{STREAM_ROOT}/__ds/subscriptions/",
        f"{STREAM_ROOT}/__ds/jwks.json/x",
        f"{STREAM_ROOT}/%5F_ds/{prefix}-x",
        f"{STREAM_ROOT}X/{prefix}-a",
        "/v1",
        "/v1/",
        "/",
        "/healthz/x",
        "/metrics?x=1",
        "/console/streams",
        "/console/app.js/x",
    ]


def needs_raw(target: str) -> bool:
    """Whether httpx would not put `target` on the wire as it is."""
    path = target.split("?", 1)[0]
    segments = path.split("/")
    return (
        "." in segments
        or ".." in segments
        or "#" in target
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    )


def json_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(10 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 7, 2**53, -(2**63), 10**30, rng.randint(-(10**6), 10**6)])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e300, 1e-300, rng.uniform(-1e6, 1e6)])
    if kind in (4, 5, 6):
        return "".join(rng.choice(_STRING_PIECES) for _ in range(rng.randrange(12)))
    if kind in (7, 8):
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(["k", "", "é", "a b", "__ds", "k"]): json_value(rng, depth + 1)
        for _ in range(rng.randrange(4))
    }


def json_document(rng: random.Random, *, allow_empty: bool) -> bytes:
    """A valid JSON body: one value, or an array of messages (maybe empty)."""
    pick = rng.random()
    if pick < 0.03:  # many messages: reads split them at message boundaries
        return json.dumps([rng.randrange(1000) for _ in range(rng.randint(100, 3000))]).encode()
    if pick < 0.05:  # one message larger than a read's limit
        size = rng.randint(MAX_READ_BYTES, MAX_APPEND_BYTES - 100)
        return json.dumps({"big": "m" * size}).encode()
    if pick < 0.45:
        value: object = json_value(rng)
    else:
        low = 0 if allow_empty and rng.random() < 0.3 else 1
        value = [json_value(rng) for _ in range(rng.randint(low, 6))]
    ensure_ascii = rng.random() < 0.5
    indent = rng.choice([None, None, None, 2])
    separators = rng.choice([None, (",", ":"), (" , ", " : ")])
    text = json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators)
    text = rng.choice(["", " ", "\n", "\r\n\t"]) + text + rng.choice(["", " ", "\n"])
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from the pieces: escape it instead
        return json.dumps(value).encode("utf-8")


def invalid_json(rng: random.Random) -> bytes:
    return rng.choice(
        [
            b"{", b"[1,]", b"[,1]", b"[1 2]", b"{'a': 1}", b"NaN", b"[Infinity]", b"-Infinity",
            b"[1] [2]", b"1 2", b"\xef\xbb\xbf[1]", b"\xff\xfe", b"\"\xff\"", b" ", b"\n\t",
            b"tru", b"nul", b"[" * 5000, b"[" * 100_000 + b"]" * 100_000, b'"\\x41"',
            b'{"a":}', b"01", b"[01]", b"1.", b".5", b"+1", b'"unterminated', b"[\"\x00\"]",
            b"]", b"[]]", b"{}}", b"/* c */ 1",
        ]
    )  # fmt: skip


def random_bytes(rng: random.Random) -> bytes:
    size = int(
        weighted(
            rng,
            [
                (rng.randint(1, 64), 50),
                (rng.randint(65, 1024), 30),
                (rng.randint(1025, 8192), 15),
                (rng.randint(8193, 40_000), 4),
                (MAX_APPEND_BYTES + rng.randint(1, 40_000), 1),
            ],
        )
    )
    if rng.random() < 0.3:
        text = "".join(rng.choice(_TEXT_PIECES) for _ in range(size // 4 + 1))
        return text.encode("utf-8")[:size]
    return rng.randbytes(size)


def split_chunks(rng: random.Random, body: bytes) -> list[bytes]:
    """`body` cut into chunks for a chunked upload (sometimes with empty pieces)."""
    chunks: list[bytes] = []
    rest = body
    while rest:
        size = rng.randint(1, max(1, len(rest)))
        chunks.append(rest[:size])
        rest = rest[size:]
        if rng.random() < 0.1:
            chunks.append(b"")
    return chunks or [b""]


def junk_header_value(rng: random.Random) -> str | bytes:
    pick = rng.randrange(4)
    if pick == 0:
        return rng.choice(JUNK_VALUES)
    if pick == 1:
        return bytes(rng.choice(range(0x20, 0x7F)) for _ in range(rng.randint(1, 40)))
    if pick == 2:
        return bytes(rng.choice([*range(0x20, 0x7F), *range(0x80, 0x100)]) for _ in range(20))
    return "x" * rng.choice([1100, 5000])


def rfc3339(rng: random.Random, *, future: bool) -> str:
    year = rng.choice([2099, 2150, 9999]) if future else rng.choice([1970, 2000, 2020])
    fraction = rng.choice(["", ".5", ".123456789"])
    zone = rng.choice(["Z", "z", "+05:30", "-00:00"])
    return f"{year}-01-02T03:04:05{fraction}{zone}"


JUNK_EXPIRES: Final = [
    "", "tomorrow", "2099-01-01", "2099-01-01T00:00:00", "2099-13-01T00:00:00Z",
    "2099-02-30T00:00:00Z", "2099-01-01T24:00:00Z", "2099-01-01T00:00:00+24:00",
    "2099-01-01 00:00:00Z", "99999-01-01T00:00:00Z", "2099-01-01T00:00:60Z", "１９９９-01-01T00:00:00Z",
]  # fmt: skip


def raw_malformed(rng: random.Random, host: str, target: str) -> bytes:
    """A malformed or hostile HTTP/1.1 exchange, as bytes."""
    head = f"Host: {host}\r\n"
    pick = rng.randrange(24)
    if pick == 0:
        return rng.randbytes(rng.randint(1, 300))
    if pick == 1:
        return b"GET / HTTP/1.1\r\n\r\n"
    if pick == 2:
        return f"GET {target} HTTP/9.9\r\n{head}\r\n".encode()
    if pick == 3:
        return f"G\x00T {target} HTTP/1.1\r\n{head}\r\n".encode()
    if pick == 4:
        return f"GET {target} HTTP/1.1\r\n{head}NoColonHere\r\n\r\n".encode()
    if pick == 5:
        return f"GET {target} HTTP/1.1\r\n{head}Bad : space\r\n\r\n".encode()
    if pick == 6:
        return f"GET {target} HTTP/1.1\r\n{head}X-A: b\r\n folded\r\n\r\n".encode()
    if pick == 7:
        return f"GET {target} HTTP/1.1\r\n{head}X-Big: {'x' * 70_000}\r\n\r\n".encode()
    if pick == 8:
        return f"POST {target} HTTP/1.1\r\n{head}Content-Length: 10\r\n\r\nabc".encode()
    if pick == 9:
        length = rng.choice(["-1", "abc", "1e3", "10, 11", " ", "99999999999999999999"])
        return f"POST {target} HTTP/1.1\r\n{head}Content-Length: {length}\r\n\r\nabc".encode()
    if pick == 10:
        return (
            f"POST {target} HTTP/1.1\r\n{head}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
        ).encode()
    if pick == 11:
        return (
            f"POST {target} HTTP/1.1\r\n{head}Content-Length: 3\r\n"
            f"Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        ).encode()
    if pick == 12:
        size = rng.choice(["zz", "-1", "ffffffffffffffffff", "3 3", "", "0x3", "3;ext=\x01"])
        return (
            f"POST {target} HTTP/1.1\r\n{head}Transfer-Encoding: chunked\r\n"
            f"Content-Type: text/plain\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
        ).encode()
    if pick == 13:
        ending = rng.choice(["3\r\nabc", "3\r\nabcdef\r\n0\r\n\r\n", "3\r\nab", "5\r\nabc\r\n"])
        return (
            f"POST {target} HTTP/1.1\r\n{head}Transfer-Encoding: chunked\r\n"
            f"Content-Type: text/plain\r\n\r\n{ending}"
        ).encode()
    if pick == 14:
        return (
            f"POST {target} HTTP/1.1\r\n{head}Transfer-Encoding: chunked\r\n"
            f"Content-Type: text/plain\r\n\r\n3;name=value\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
        ).encode()
    if pick == 15:
        coding = rng.choice(["gzip, chunked", "identity", "chunked, chunked", "Chunked", "foo"])
        return (
            f"POST {target} HTTP/1.1\r\n{head}Transfer-Encoding: {coding}\r\n"
            f"Content-Type: text/plain\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        ).encode()
    if pick == 16:
        one = f"GET {target} HTTP/1.1\r\n{head}\r\n"
        return (one * rng.randint(2, 5)).encode() + rng.randbytes(rng.randint(0, 50))
    if pick == 17:
        return f"GET {target} HTTP/1.0\r\n\r\n".encode()
    if pick == 18:
        return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(rng.randint(0, 100))
    if pick == 19:
        return f"GET http://{host}{target} HTTP/1.1\r\n{head}\r\n".encode()
    if pick == 20:
        return f"OPTIONS * HTTP/1.1\r\n{head}\r\n".encode()
    if pick == 21:
        return f"CONNECT {host} HTTP/1.1\r\n{head}\r\n".encode()
    if pick == 22:
        return (
            f"POST {target} HTTP/1.1\r\n{head}Expect: 100-continue\r\n"
            f"Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc"
        ).encode()
    line = rng.choice([b"GET", b"GET /", b"\r\n\r\n", b"GET / HTTP/1.1", b"HTTP/1.1 200 OK"])
    return line + b"\r\n" + rng.randbytes(rng.randint(0, 40)) + b"\r\n\r\n"
