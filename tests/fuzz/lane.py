"""One lane of the campaign: a sequential, seeded loop of operations on its own streams.

Lanes run side by side against one server, each owning the stream names
that start with its prefix, so every lane's model is exact while the server
still sees concurrent traffic. Each operation is generated from the lane's
`random.Random` and its model, sent, checked (no 5xx, no hang), and judged
against the model, which it then updates from what the answer acknowledged.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from typing import Final
from urllib.parse import quote

import httpx
import trio

from .calls import OP_TIMEOUT, Answer, Call, Header, send_httpx, send_raw
from .inputs import (
    CONTENT_TYPES,
    JUNK_CONTENT_TYPES,
    JUNK_EXPIRES,
    JUNK_OFFSETS,
    JUNK_VALUES,
    MAX_APPEND_BYTES,
    STREAM_ROOT,
    invalid_json,
    json_document,
    junk_header_value,
    model_names,
    needs_raw,
    random_bytes,
    raw_malformed,
    rfc3339,
    split_chunks,
    weighted,
    weird_paths,
)
from .judge import Judging
from .model import Existence, Incarnation, Model, ModelStream, media_type

MAX_FAILURES: Final = 20  # per lane; a broken server need not be described 5000 times
OPERATIONS: Final = [
    ("post", 30), ("put", 13), ("get", 13), ("head", 6), ("fork", 6), ("delete", 3),
    ("close", 1), ("long-poll", 4), ("sse", 3), ("live-pair", 2), ("weird", 5), ("method", 2),
    ("subscription", 5), ("raw", 2), ("ops", 1), ("volatile", 3), ("wake", 1),
    ("concurrent-appends", 3), ("producer-pipeline", 2), ("live-delete", 1),
]  # fmt: skip
_CONCURRENT: Final = ("live-pair", "concurrent-appends", "producer-pipeline", "live-delete")
SUBSCRIPTION_ACTIONS: Final = [
    ("put", 35), ("get", 15), ("delete", 8), ("add", 10), ("remove", 7), ("claim", 8),
    ("ack", 6), ("release", 4), ("callback", 3), ("junk", 4), ("jwks", 3),
]  # fmt: skip
# RFC 9112 6.1: a transfer coding the server does not implement may get 501.
_ODD_TRANSFER_CODING: Final = re.compile(rb"(?i)\r\ntransfer-encoding: *(?!chunked\r\n)")
_TRUE_SPELLINGS: Final = ["true", "TRUE", "True", " true "]
_OTHER_FLAGS: Final = ["false", "yes", "1", "", "truee"]


def _token(position: int) -> str:
    """A well-formed offset the server never handed out (for undefined-behaviour probes)."""
    return f"{0:016d}_{position:016d}"


class Lane(Judging):
    """A sequential stream of operations over the streams named `l<index>-...`."""

    def __init__(
        self, index: int, seed: int, base_url: str, client: httpx.AsyncClient, webhook_url: str
    ) -> None:
        self.index = index
        self.rng = random.Random(f"{seed}-lane{index}")
        self.base_url = base_url
        host_port = base_url.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.client = client
        self.webhook_url = webhook_url
        self.prefix = f"l{index}"
        self.model = Model([ModelStream(key, sp) for key, sp in model_names(self.prefix)])
        self.volatile = [f"{self.prefix}-v{i}" for i in range(4)]
        self.wakes = [f"{self.prefix}-wake{i}" for i in range(2)]
        self.subscriptions = [f"{self.prefix}-s{i}" for i in range(3)]
        self.weird = weird_paths(self.prefix)
        self.producers: dict[int, dict[str, tuple[int, int]]] = {}  # incarnation -> id -> state
        self.stream_seq = 0
        self.cursor: str | None = None
        self.etags: dict[int, str] = {}  # incarnation -> the last ETag read
        self.claim_tokens: dict[str, str] = {}
        self.log: list[tuple[str, int | None]] = []  # (label, status when comparable)
        self.statuses: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.failures: list[str] = []
        self.ops = 0

    # -- running ----------------------------------------------------------------------

    async def run(self, deadline: float) -> None:
        """Operations until `deadline` (trio time), or too many failures."""
        while trio.current_time() < deadline and len(self.failures) < MAX_FAILURES:
            kind = str(weighted(self.rng, OPERATIONS))
            if kind in _CONCURRENT:
                self.kinds[f"{kind} (group)"] += 1
                await getattr(self, "_" + kind.replace("-", "_"))()
            else:
                call = self._generate(kind)
                answer = await self.execute(call)
                if answer is not None:
                    self.judge(call, answer)

    async def execute(self, call: Call, *, log: bool = True) -> Answer | None:
        """Send `call`; None (after recording a failure) when it got no usable answer.

        With `log` False the caller logs it (`log_answer`), to keep concurrent
        calls in a fixed order.
        """
        self.ops += 1
        self.kinds[call.kind] += 1
        try:
            with trio.fail_after(OP_TIMEOUT):
                if call.raw is not None:
                    answer = await send_raw(self.host, self.port, call.raw)
                else:
                    answer = await send_httpx(self.client, self.base_url, call)
        except (trio.TooSlowError, httpx.TimeoutException):
            return self._no_answer(call, "no answer within the timeout (a hang)", log)
        except httpx.TransportError as exc:
            if not call.may_drop:
                return self._no_answer(call, f"the connection failed: {exc!r}", log)
            answer = Answer(None, httpx.Headers(), b"")
        self.statuses[str(answer.status or "closed")] += 1
        if log:
            self.log_answer(call, answer)
        tolerated = call.context.get("tolerated", ())
        statuses = (*answer.statuses, answer.status or 0)
        if any(status >= 500 and status not in tolerated for status in statuses):
            self.fail(f"a {answer.status} answer", call, answer)
            self._forget(call, f"answered {answer.status}")
            return None
        return answer

    def log_answer(self, call: Call, answer: Answer | None) -> None:
        """Log the call for comparing runs: its status, when comparable (-1: none)."""
        status = -1 if answer is None else answer.status
        self.log.append((call.label, status if call.comparable else None))

    def _no_answer(self, call: Call, message: str, log: bool) -> None:
        self.statuses["no answer"] += 1
        if log:
            self.log_answer(call, None)
        self.fail(message, call)
        self._forget(call, message)

    def _forget(self, call: Call, reason: str) -> None:
        for key in ("stream", "source"):
            stream = call.context.get(key)
            if isinstance(stream, ModelStream):
                self.model.forget(stream, reason)

    # -- choosing -----------------------------------------------------------------------

    def _pick_stream(self, prefer_live: float = 0.85) -> ModelStream:
        live = [s for s in self.model.streams if s.existence() is Existence.LIVE]
        if live and self.rng.random() < prefer_live:
            return self.rng.choice(live)
        return self.rng.choice(self.model.streams)

    def _target(self, stream: ModelStream) -> str:
        return f"{STREAM_ROOT}/{self.rng.choice(stream.spellings)}"

    def _observed(self, stream: ModelStream) -> tuple[str, int] | None:
        incarnation = stream.current
        if incarnation is None or not incarnation.offsets:
            return None
        return self.rng.choice(sorted(incarnation.offsets.items()))

    def _generate(self, kind: str) -> Call:
        if kind == "put":
            return self._put(self._pick_stream(prefer_live=0.3))
        if kind == "fork":
            return self._fork(self._pick_stream(prefer_live=0.2))
        if kind == "post":
            return self._post(self._pick_stream(prefer_live=0.92))
        if kind == "close":
            return self._post(self._pick_stream(), close_only=True)
        if kind in ("get", "long-poll", "sse"):
            live = None if kind == "get" else kind
            return self._read(self._pick_stream(), live)
        if kind == "head":
            return self._head(self._pick_stream(prefer_live=0.7))
        if kind == "delete":
            return self._delete(self._pick_stream())
        if kind == "weird":
            return self._weird()
        if kind == "method":
            return self._method(self._pick_stream())
        if kind == "subscription":
            return self._subscription()
        if kind == "raw":
            target = f"{STREAM_ROOT}/{self.prefix}-raw"
            data = raw_malformed(self.rng, f"{self.host}:{self.port}", target)
            call = Call("raw", "RAW", target, raw=data, comparable=False)
            if _ODD_TRANSFER_CODING.search(data):
                call.context["tolerated"] = {501}
            return call
        if kind == "ops":
            method, target = self.rng.choice(
                [("GET", "/healthz"), ("HEAD", "/healthz"), ("GET", "/readyz"),
                 ("GET", "/metrics"), ("POST", "/healthz"), ("DELETE", "/metrics"),
                 ("GET", "/healthz?x=%zz"), ("PUT", "/readyz")]
            )  # fmt: skip
            return Call("ops", method, target)
        if kind == "volatile":
            return self._volatile()
        return self._wake()

    # -- headers and bodies -----------------------------------------------------------

    def _content_type_header(self, headers: list[Header], model_type: str | None) -> str | None:
        """Add a Content-Type (mostly the stream's); return it when exactly one was sent."""
        pick = self.rng.random()
        if model_type is not None and pick < 0.72:
            value = model_type
        elif model_type is not None and pick < 0.85:
            value = self.rng.choice(
                [model_type.upper(), media_type(model_type) + "; charset=utf-8", " " + model_type]
            )
        elif pick < 0.91:
            value = str(weighted(self.rng, CONTENT_TYPES) or "text/plain")
        elif pick < 0.96:
            return None
        else:
            value = self.rng.choice(JUNK_CONTENT_TYPES)
        headers.append(("Content-Type", value))
        if self.rng.random() < 0.015:
            headers.append(("Content-Type", "text/plain"))
            return None
        return value

    def _body_for(self, is_json: bool, *, on_create: bool) -> bytes:
        rng = self.rng
        if is_json:
            pick = rng.random()
            if pick < 0.85:
                return json_document(rng, allow_empty=on_create)
            if pick < 0.88:
                return b"[]"
            if pick < 0.96:
                return invalid_json(rng)
            return b""
        return b"" if rng.random() < 0.04 else random_bytes(rng)

    def _closed_header(self, headers: list[Header], probability: float) -> bool:
        """Maybe add Stream-Closed; whether the server must read it as `true`."""
        pick = self.rng.random()
        if pick < probability:
            headers.append(("Stream-Closed", self.rng.choice(_TRUE_SPELLINGS)))
            return True
        if pick < probability * 1.5:
            headers.append(("Stream-Closed", self.rng.choice(_OTHER_FLAGS)))
        return False

    def _expiry_headers(self, headers: list[Header]) -> None:
        """Long-lived expiry (or junk) only: modelled streams must not expire mid-run."""
        pick = self.rng.random()
        if pick < 0.06:
            headers.append(("Stream-TTL", self.rng.choice(["3600", "86400"])))
        elif pick < 0.09:
            headers.append(("Stream-Expires-At", rfc3339(self.rng, future=True)))
        elif pick < 0.12:
            headers.append(("Stream-TTL", self.rng.choice(["+5", "05", "1.5", "-1", "", "3.6e3"])))
        elif pick < 0.14:
            headers.append(("Stream-Expires-At", self.rng.choice(JUNK_EXPIRES)))
        elif pick < 0.15:
            headers.append(("Stream-TTL", "3600"))
            headers.append(("Stream-Expires-At", rfc3339(self.rng, future=True)))

    def _maybe_chunked(self, call: Call, probability: float = 0.15) -> Call:
        if call.body and len(call.body) < 1 << 17 and self.rng.random() < probability:
            call.chunked = split_chunks(self.rng, call.body)
            call.body = b""
        return call

    # -- stream operations ------------------------------------------------------------

    def _put(self, stream: ModelStream) -> Call:
        rng = self.rng
        headers: list[Header] = []
        if rng.random() < 0.05:
            content_type: str | None = rng.choice(JUNK_CONTENT_TYPES)
        else:
            content_type = weighted(rng, CONTENT_TYPES)  # type: ignore[assignment]
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        self._expiry_headers(headers)
        closed = self._closed_header(headers, 0.06)
        is_json = content_type is not None and media_type(content_type) == "application/json"
        body = b"" if rng.random() < 0.5 else self._body_for(is_json, on_create=True)
        if rng.random() < 0.02:
            headers.append(("Content-Type", "text/plain"))
            content_type = None
        context = {"stream": stream, "sent_closed": closed, "sent_type": content_type}
        return self._maybe_chunked(
            Call("put", "PUT", self._target(stream), headers, body, context=context)
        )

    def _fork(self, stream: ModelStream) -> Call:
        rng = self.rng
        source = self._pick_stream(prefer_live=0.9)
        if rng.random() < 0.05:
            source = stream
        incarnation = source.current
        ascii_spellings = [s for s in source.spellings if s.isascii()]
        headers: list[Header] = []
        modelled_source: ModelStream | None = source
        pick = rng.random()
        if pick < 0.8:
            headers.append(("Stream-Forked-From", f"{STREAM_ROOT}/{rng.choice(ascii_spellings)}"))
        elif pick < 0.85:
            headers.append(("Stream-Forked-From", f"{STREAM_ROOT}/{source.key}?x=1"))
        else:
            modelled_source = None
            junk = rng.choice(
                ["", STREAM_ROOT + "/", "relative", f"http://{self.host}{STREAM_ROOT}/{source.key}",
                 f"{STREAM_ROOT}/{source.key}/../x", f"{STREAM_ROOT}/__ds/x",
                 f"{STREAM_ROOT}/{self.prefix}-nosuch", f"{STREAM_ROOT}/{self.prefix}-%zz"]
            )  # fmt: skip
            headers.append(("Stream-Forked-From", junk))
            if rng.random() < 0.3:
                headers[-1] = ("Stream-Forked-From", f"{STREAM_ROOT}/{self.prefix}-ü".encode())
        length = incarnation.length if incarnation else None
        anchor: int | None = None
        pick = rng.random()
        observed = self._observed(source)
        if pick < 0.45 and observed is not None:
            headers.append(("Stream-Fork-Offset", observed[0]))
            anchor = observed[1]
        elif pick < 0.65:
            anchor = length
        elif pick < 0.7:
            headers.append(("Stream-Fork-Offset", "-1"))
            anchor = 0
        elif pick < 0.75:
            headers.append(("Stream-Fork-Offset", "now"))
            anchor = length
        elif pick < 0.85:
            headers.append(("Stream-Fork-Offset", _token(rng.randint(0, (length or 0) + 5))))
        elif pick < 0.95:
            headers.append(("Stream-Fork-Offset", rng.choice(JUNK_OFFSETS)))
        else:
            other = self._observed(rng.choice(self.model.streams))
            headers.append(("Stream-Fork-Offset", other[0] if other else _token(3)))
        sub_offset: int | None = 0
        pick = rng.random()
        if pick < 0.1:
            sub_offset = rng.choice([0, 1, 2, 5])
            headers.append(("Stream-Fork-Sub-Offset", str(sub_offset)))
        elif pick < 0.13:
            headers.append(
                ("Stream-Fork-Sub-Offset", rng.choice(["-1", "01", "x", "1.5", "9" * 20]))
            )
            sub_offset = None
        source_type = incarnation.content_type if incarnation else "application/octet-stream"
        pick = rng.random()
        sent_type: str | None = None
        if pick < 0.2:
            sent_type = rng.choice([source_type, source_type.upper()])
        elif pick < 0.3:
            sent_type = str(weighted(rng, CONTENT_TYPES) or "text/plain")
        if sent_type is not None:
            headers.append(("Content-Type", sent_type))
        self._expiry_headers(headers)
        closed = self._closed_header(headers, 0.05)
        is_json = incarnation is not None and incarnation.is_json
        body = b"" if rng.random() < 0.7 else self._body_for(is_json, on_create=True)
        context = {
            "stream": stream,
            "source": modelled_source,
            "source_incarnation": incarnation if modelled_source else None,
            "anchor": anchor,
            "sub_offset": sub_offset,
            "sent_closed": closed,
            "sent_type": sent_type,
        }
        return self._maybe_chunked(
            Call("fork", "PUT", self._target(stream), headers, body, context=context)
        )

    def _producer_headers(self, headers: list[Header], incarnation: Incarnation | None) -> str:
        """Maybe add producer headers: 'none', 'valid' (all three, well-formed) or 'invalid'."""
        rng = self.rng
        if rng.random() >= 0.2:
            return "none"
        producer_id = rng.choice(["p0", "p1", "p2"])
        known = self.producers.get(incarnation.serial, {}) if incarnation else {}
        epoch, last = known.get(producer_id, (0, -1))
        choice = rng.choice(
            ["next", "next", "next", "next", "dup", "gap", "stale", "bump", "bump-gap", "junk",
             "partial", "empty-id"]
        )  # fmt: skip
        seq = last + 1
        if choice == "dup":
            seq = rng.randint(0, max(0, last))
        elif choice == "gap":
            seq = last + rng.randint(2, 4)
        elif choice == "stale":
            epoch = max(0, epoch - 1)
        elif choice == "bump":
            epoch, seq = epoch + 1, 0
        elif choice == "bump-gap":
            epoch, seq = epoch + 1, 3
        values: dict[str, str | bytes] = {
            "Producer-Id": producer_id,
            "Producer-Epoch": str(epoch),
            "Producer-Seq": str(seq),
        }
        if choice == "junk":
            values[rng.choice(["Producer-Epoch", "Producer-Seq"])] = rng.choice(JUNK_VALUES[:17])
        elif choice == "partial":
            del values[rng.choice(list(values))]
        elif choice == "empty-id":
            values["Producer-Id"] = rng.choice(["", " "])
        headers.extend(values.items())
        return "invalid" if choice in ("junk", "partial", "empty-id") else "valid"

    def _post(self, stream: ModelStream, *, close_only: bool = False) -> Call:
        rng = self.rng
        incarnation = stream.current
        model_type = (
            incarnation.content_type
            if incarnation
            else rng.choice(["text/plain", "application/json"])
        )
        headers: list[Header] = []
        sent_type = self._content_type_header(headers, model_type)
        is_json = media_type(model_type) == "application/json"
        if close_only:
            body = b""
            headers.append(("Stream-Closed", rng.choice(_TRUE_SPELLINGS)))
            close = True
            if rng.random() < 0.5:
                headers = [h for h in headers if h[0] != "Content-Type"]
        else:
            body = self._body_for(is_json, on_create=False)
            close = self._closed_header(headers, 0.025)
        pick = rng.random()
        if pick < 0.12:
            self.stream_seq += 1
            headers.append(("Stream-Seq", f"{self.stream_seq:012d}"))
        elif pick < 0.14:
            headers.append(("Stream-Seq", "000000000000"))
        elif pick < 0.15:
            headers.append(("Stream-Seq", rng.choice(["", "x" * 1100, "zzz"])))
        producer = self._producer_headers(headers, incarnation)
        if rng.random() < 0.02:
            headers.append(
                (rng.choice(["Stream-TTL", "Stream-Forked-From", "If-None-Match", "Stream-Seq"]),
                 junk_header_value(rng))
            )  # fmt: skip
        context = {
            "stream": stream,
            "producer": producer,
            "close": close,
            "sent_type": sent_type,
            "body": body,
        }
        call = Call("post", "POST", self._target(stream), headers, body, context=context)
        call.may_drop = any(len(v) > 4000 for _, v in headers)
        return self._maybe_chunked(call)

    def _read(self, stream: ModelStream, live: str | None) -> Call:
        rng = self.rng
        incarnation = stream.current
        length = incarnation.length if incarnation else None
        params: list[tuple[str, str]] = []
        start: int | None = None
        clean = True
        pick = rng.random()
        observed = self._observed(stream)
        if pick < 0.2:
            params.append(("offset", "-1"))
            start = 0
        elif pick < 0.28 and live is None:
            start = 0
        elif pick < 0.38:
            params.append(("offset", "now"))
            start = length
        elif pick < 0.8 and observed is not None:
            params.append(("offset", observed[0]))
            start = observed[1]
        elif pick < 0.88:
            params.append(("offset", _token(rng.randint(0, (length or 0) + 3))))
        elif pick < 0.95:
            params.append(("offset", rng.choice(JUNK_OFFSETS)))
            clean = False
        else:
            other = self._observed(rng.choice(self.model.streams))
            params.append(("offset", other[0] if other else "-1"))
        if live is not None:
            params.append(("live", live))
            pick = rng.random()
            if pick < 0.5 and self.cursor is not None:
                params.append(("cursor", self.cursor))
            elif pick < 0.7:
                params.append(("cursor", rng.choice(["", "0", "-5", "abc", "9" * 30])))
        pick = rng.random()
        if pick < 0.03:
            params.append(("offset", "-1"))
            clean = False
        elif pick < 0.06:
            params.append(("x", "1"))
        elif pick < 0.08:
            params.append(("live", rng.choice(["", "poll", "SSE", "long-poll "])))
            clean = False
        headers: list[Header] = []
        if incarnation is not None and rng.random() < 0.1:
            etag = self.etags.get(incarnation.serial)
            headers.append(("If-None-Match", rng.choice([etag or '"x"', "*", '"a", "b"', "junk"])))
        if rng.random() < 0.1:
            headers.append(
                ("Accept-Encoding", rng.choice(["identity", "gzip", "br", "*", "gzip;q=0", "x"]))
            )
        path = self._target(stream)
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='-_.~')}" for k, v in params)
        shown = "&".join(
            f"{k}=<cursor>" if (k, v) == ("cursor", self.cursor) else f"{k}={v}" for k, v in params
        )
        label = f"{live or 'get'} {path}?{shown}"
        target = path + (f"?{query}" if query else "")
        context = {"stream": stream, "start": start, "clean": clean}
        call = Call(live or "get", "GET", target, headers, context=context, label=label)
        return self._stray_body(call)

    def _stray_body(self, call: Call) -> Call:
        """Now and then a body where none belongs (GET, HEAD, DELETE): it must be ignored."""
        if self.rng.random() < 0.03:
            call.body = self.rng.choice([b"x", b"[1]", b"\x00" * 100])
            call.headers.append(
                ("Content-Type", self.rng.choice(["text/plain", "application/json"]))
            )
            self._maybe_chunked(call, 0.3)
        return call

    def _head(self, stream: ModelStream) -> Call:
        return self._stray_body(
            Call("head", "HEAD", self._target(stream), context={"stream": stream})
        )

    def _delete(self, stream: ModelStream) -> Call:
        call = Call("delete", "DELETE", self._target(stream), context={"stream": stream})
        return self._stray_body(call)

    def _open_stream(self) -> ModelStream | None:
        """A random live, open stream whose content the model knows, if any."""
        candidates = [
            s
            for s in self.model.streams
            if s.known
            and s.existence() is Existence.LIVE
            and s.current is not None
            and not s.current.closed
            and s.current.content is not None
        ]
        return self.rng.choice(candidates) if candidates else None

    def _plain_append(self, stream: ModelStream, incarnation: Incarnation) -> Call:
        """An append with the stream's own content type and no producer or closing headers."""
        body = self._body_for(incarnation.is_json, on_create=False) or b"x"
        if len(body) > MAX_APPEND_BYTES:
            body = body[:1000]
        headers: list[Header] = [("Content-Type", incarnation.content_type)]
        context = {"stream": stream, "producer": "none", "close": False, "body": body}
        context["sent_type"] = incarnation.content_type
        return self._maybe_chunked(
            Call("post", "POST", self._target(stream), headers, body, context=context)
        )

    async def _together(self, calls: list[Call]) -> list[Answer | None]:
        """Send `calls` concurrently (started in list order); log them in list order."""
        answers: list[Answer | None] = [None] * len(calls)

        async def send(index: int) -> None:
            answers[index] = await self.execute(calls[index], log=False)

        async with trio.open_nursery() as nursery:
            for index in range(len(calls)):
                nursery.start_soon(send, index)
                await trio.lowlevel.checkpoint()
        for call, answer in zip(calls, answers, strict=True):
            self.log_answer(call, answer)
        return answers

    def _tail_token(self, incarnation: Incarnation) -> str | None:
        return next((t for t, u in incarnation.offsets.items() if u == incarnation.length), None)

    async def _live_pair(self) -> None:
        """A long-poll at the tail while an append lands: it must carry the append."""
        stream = self._open_stream()
        if stream is None or stream.current is None:
            return
        incarnation = stream.current
        tail = self._tail_token(incarnation)
        if tail is None:
            head = self._head(stream)
            answer = await self.execute(head)
            if answer is not None:
                self.judge(head, answer)
            return
        poll = Call(
            "long-poll",
            "GET",
            f"{self._target(stream)}?offset={tail}&live=long-poll",
            context={"stream": stream, "start": incarnation.length, "pair": True},
            comparable=False,
        )
        append = self._plain_append(stream, incarnation)
        polled, appended = await self._together([poll, append])
        if appended is not None:
            self.judge(append, appended)
        if polled is not None:
            self.judge(poll, polled)

    async def _concurrent_appends(self) -> None:
        """Appends racing on one stream: each lands whole, in the order their offsets say."""
        stream = self._open_stream()
        if stream is None or stream.current is None:
            return
        incarnation = stream.current
        calls = [self._plain_append(stream, incarnation) for _ in range(self.rng.randint(2, 4))]
        if incarnation.is_json:  # the race's order would move message boundaries between runs
            for call in calls[1:]:
                call.body, call.chunked = calls[0].body, calls[0].chunked
        answers = await self._together(calls)
        accepted: list[tuple[str, int]] = []
        for index, (call, answer) in enumerate(zip(calls, answers, strict=True)):
            if answer is None or not stream.known:
                return
            if answer.status == 204:
                accepted.append((answer.header("stream-next-offset") or "", index))
            elif answer.status is not None and answer.status < 300:
                self._expect(
                    False, "a plain append answered neither 204 nor an error", call, answer
                )
        order = sorted(accepted)
        for number, (_, index) in enumerate(order, 1):
            call, answer = calls[index], answers[index]
            assert answer is not None and incarnation.content is not None
            records = self._records(call.body or b"".join(call.chunked or []), incarnation.is_json)
            if not records:
                self._expect(False, "204 for an append that stores nothing", call, answer)
                return
            incarnation.content += records  # type: ignore[operator]
            self._observe(call, answer, incarnation, len(incarnation.content))
            token = answer.header("stream-next-offset")
            if number < len(order) and token is not None:  # its position hangs on the race
                incarnation.offsets.pop(token, None)

    async def _producer_pipeline(self) -> None:
        """One producer's consecutive appends sent at once, out of order: all land, in order."""
        rng = self.rng
        stream = self._open_stream()
        if stream is None or stream.current is None:
            return
        incarnation = stream.current
        producer_id = rng.choice(["q0", "q1"])
        states = self.producers.setdefault(incarnation.serial, {})
        epoch, last = states.get(producer_id, (0, -1))
        count = rng.randint(2, 4)
        calls = []
        for seq in range(last + 1, last + 1 + count):
            call = self._plain_append(stream, incarnation)
            call.headers += [
                ("Producer-Id", producer_id),
                ("Producer-Epoch", str(epoch)),
                ("Producer-Seq", str(seq)),
            ]
            call.context.update(producer="valid", seq=seq)
            call.comparable = False  # a predecessor may come later than the gap wait
            call.label = f"pipelined {call.label} seq {seq}"
            calls.append(call)
        rng.shuffle(calls)
        answers = await self._together(calls)
        in_order = sorted(zip(calls, answers, strict=True), key=lambda pair: pair[0].context["seq"])
        accepted, gap = 0, False
        for call, answer in in_order:
            if answer is None or not stream.known:
                return
            if answer.status != 200:
                gap = True
                continue
            if not self._expect(not gap, "accepted past a refused seq", call, answer):
                return
            records = self._records(call.body or b"".join(call.chunked or []), incarnation.is_json)
            if not records or incarnation.content is None:
                self._expect(False, "200 for an append that stores nothing", call, answer)
                return
            incarnation.content += records  # type: ignore[operator]
            self._observe(call, answer, incarnation, len(incarnation.content))
            states[producer_id] = (epoch, call.context["seq"])
            accepted += 1
        # How many landed may differ between runs: a diverging outcome ends the comparison.
        self.log.append((f"~pipeline {stream.key} accepted", accepted))

    async def _live_delete(self) -> None:
        """A live read at the tail while its stream is deleted: the read must end."""
        stream = self._pick_stream(prefer_live=0.95)
        incarnation = stream.current
        tail = self._tail_token(incarnation) if incarnation is not None else None
        live = self.rng.choice(["long-poll", "sse"])
        reader = Call(
            "live-delete",
            "GET",
            f"{self._target(stream)}?offset={tail or 'now'}&live={live}",
            comparable=False,
        )
        delete = self._delete(stream)
        _, deleted = await self._together([reader, delete])
        if deleted is not None:
            self.judge(delete, deleted)

    # -- the rest of the surface ------------------------------------------------------

    def _raw_exchange(self, method: str, target: str, headers: list[Header], body: bytes) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v if isinstance(v, str) else v.decode('latin-1')}" for k, v in headers]
        lines += [f"Content-Length: {len(body)}", "Connection: close"]
        return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body

    def _weird(self) -> Call:
        rng = self.rng
        target = rng.choice(self.weird)
        method = rng.choice(
            ["GET", "GET", "HEAD", "PUT", "PUT", "POST", "POST", "DELETE", "OPTIONS"]
        )
        headers: list[Header] = [("Content-Type", rng.choice(["text/plain", "application/json"]))]
        body = rng.choice([b"", b"x", b"[1]"]) if method in ("PUT", "POST") else b""
        must_reject = needs_raw(target) and "#" not in target and method != "OPTIONS"
        context = {"must_reject": must_reject}
        if needs_raw(target):
            raw = self._raw_exchange(method, target, headers, body)
            return Call("weird", method, target, raw=raw, context=context)
        return Call("weird", method, target, headers, body, context=context)

    def _method(self, stream: ModelStream) -> Call:
        rng = self.rng
        method = rng.choice(["PATCH", "TRACE", "FOO", "OPTIONS", "PROPFIND", "MKCOL", "CONNECT"])
        target = self._target(stream)
        headers: list[Header] = []
        if method == "OPTIONS" and rng.random() < 0.5:
            headers.append(("Access-Control-Request-Headers", junk_header_value(rng)))
            headers.append(("Access-Control-Request-Method", rng.choice(["POST", "FOO", ""])))
        body = b"x" if rng.random() < 0.3 else b""
        context = {"must_reject": method != "OPTIONS"}
        if method == "CONNECT" or not target.isascii():
            raw = self._raw_exchange(method, quote(target, safe="/%~"), headers, body)
            return Call("method", method, target, raw=raw, context=context)
        return Call("method", method, target, headers, body, context=context)

    def _subscription_body(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.15:
            return rng.choice([invalid_json(rng), b"[]", b'"x"', b"1", b"null", b""])
        body: dict[str, object] = {}
        kind = rng.choice(["pull-wake", "pull-wake", "webhook"])
        if rng.random() < 0.08:
            body["type"] = rng.choice(["", "pull", 5, None, "WEBHOOK"])
        else:
            body["type"] = kind
        p = self.prefix
        if rng.random() < 0.6:
            body["pattern"] = rng.choice(
                [f"{p}-*", f"{p}-n/**", "**", f"{p}-?", "*", f"{p}-a", "", "[", "/x", "a//b", 7]
            )
        if rng.random() < 0.5 or "pattern" not in body:
            names = [s.key for s in self.model.streams] + self.wakes
            body["streams"] = [
                rng.choice([*names, "", "..", "a/../b", "%2F", "__ds/x", "a\ud800", "\udfff"])
                if rng.random() < 0.2
                else rng.choice(names)
                for _ in range(rng.randint(0, 3))
            ]  # fmt: skip
        if kind == "pull-wake":
            wake = rng.choice(self.wakes)
            body["wake_stream"] = (
                wake if rng.random() < 0.9 else rng.choice(["", 5, "..", "__ds/x", "w\ud800"])
            )
        else:
            url = self.webhook_url
            if rng.random() < 0.2:
                url = rng.choice(
                    ["https://10.0.0.1/h", "https://127.0.0.1/h", "ftp://127.0.0.1/h",
                     "http://u:p@127.0.0.1/h", "https://127.1/h", "not a url", "https://[::1]/h",
                     "http://169.254.169.254/h", "https://0x7f000001/h", "",
                     f"{url}\ud800", f"{url}\x00", f"{url}\n", f"{url}\x7f", url + "x" * 70_000]
                )  # fmt: skip
            body["webhook"] = {"url": url} if rng.random() < 0.95 else url
        if rng.random() < 0.3:
            body["lease_ttl_ms"] = rng.choice([1000, 30000, 600000, 999, 600001, "1000", 1.5, True])
        if rng.random() < 0.2:
            body["description"] = rng.choice(["d", "é" * 50, 5, None, ""])
        if rng.random() < 0.05:
            body["unexpected"] = [1, 2]
        return json.dumps(body).encode()

    def _subscription(self) -> Call:
        rng = self.rng
        sub_id = rng.choice(self.subscriptions)
        if rng.random() < 0.1:
            junk = rng.choice(["%2F", "a%20b", "x" * 300, "x" * 600, "%C3%A9", "%00", "a/b", "%zz"])
            sub_id = "" if rng.random() < 0.1 else f"{self.prefix}{junk}"  # lanes own their ids
        base = f"{STREAM_ROOT}/__ds/subscriptions/{sub_id}"
        action = str(weighted(rng, SUBSCRIPTION_ACTIONS))
        json_type: list[Header] = [("Content-Type", "application/json")]
        if action == "put":
            return Call("subscription", "PUT", base, json_type, self._subscription_body())
        if action == "get":
            return Call("subscription", rng.choice(["GET", "GET", "HEAD", "PATCH"]), base)
        if action == "delete":
            return Call("subscription", "DELETE", base)
        if action == "add":
            names = [s.key for s in self.model.streams]
            streams: object = [rng.choice(names) for _ in range(rng.randint(0, 3))]
            if rng.random() < 0.15:
                streams = rng.choice([None, "x", [1], [""], {"a": 1}])
            body = json.dumps({"streams": streams}).encode()
            return Call("subscription", "POST", f"{base}/streams", json_type, body)
        if action == "remove":
            stream = rng.choice(self.model.streams)
            path = rng.choice([quote(stream.key, safe=""), stream.key, "%zz", "", "..%2Fx"])
            return Call("subscription", "DELETE", f"{base}/streams/{path}")
        token = self.claim_tokens.get(sub_id, "none") if rng.random() < 0.7 else "junk"
        auth: list[Header] = [("Authorization", f"Bearer {token}")] if rng.random() < 0.9 else []
        label = f"subscription POST {base} {action}"
        if action == "claim":
            body = json.dumps({"worker": rng.choice(["w1", "w2", "", 5])}).encode()
            call = Call("subscription", "POST", f"{base}/claim", json_type, body, label=label)
            call.context["claim_for"] = sub_id
        elif action in ("ack", "callback"):
            stream = rng.choice(self.model.streams)
            observed = self._observed(stream)
            offset = observed[0] if observed else rng.choice(JUNK_OFFSETS)
            acks: list[object] = [{"stream": stream.key, "offset": offset}]
            if rng.random() < 0.3:
                acks.append(
                    rng.choice(
                        [{"stream": 5, "offset": None}, {"stream": "a\ud800", "offset": "x"},
                         {"stream": stream.key, "offset": 7}, {"stream": stream.key}, "x", None,
                         {"stream": "..", "offset": "-1"}, {"stream": stream.key, "offset": "now"}]
                    )
                )  # fmt: skip
            body = json.dumps(
                rng.choice(
                    [{"acks": acks, "done": rng.random() < 0.5}, {"acks": "x"}, {"done": 1}, []]
                )
            ).encode()
            call = Call("subscription", "POST", f"{base}/{action}", json_type + auth, body)
            call.label = label
        elif action == "release":
            body = rng.choice([b"{}", b"[]", b"{", b'{"wake_id": "w_x"}'])
            call = Call("subscription", "POST", f"{base}/release", json_type + auth, body)
            call.label = label
        elif action == "junk":
            rest = rng.choice(["nope", "streams/", "claim/x", "ack/", "", "callback/more"])
            method = rng.choice(["GET", "POST", "PUT", "DELETE"])
            return Call("subscription", method, f"{base}/{rest}", json_type, b"{}")
        else:
            method = rng.choice(["GET", "GET", "HEAD", "POST", "DELETE"])
            return Call("subscription", method, f"{STREAM_ROOT}/__ds/jwks.json")
        call.comparable = False  # claims race the server's wake scheduling
        return call

    def _volatile(self) -> Call:
        """Short-lived streams: expiring under the campaign, never modelled or compared."""
        rng = self.rng
        name = rng.choice(self.volatile)
        target = f"{STREAM_ROOT}/{name}"
        action = rng.choice(["put", "put", "post", "get", "head", "delete", "fork", "poll"])
        headers: list[Header] = [("Content-Type", "text/plain")]
        body = b""
        method = {"put": "PUT", "fork": "PUT", "post": "POST", "head": "HEAD", "delete": "DELETE"}
        if action in ("put", "fork"):
            if rng.random() < 0.7:
                headers.append(("Stream-TTL", rng.choice(["0", "1", "2"])))
            else:
                headers.append(("Stream-Expires-At", rfc3339(rng, future=False)))
            if action == "fork":
                source = rng.choice(self.volatile)
                headers.append(("Stream-Forked-From", f"{STREAM_ROOT}/{source}"))
            body = rng.choice([b"", b"abc"])
        elif action == "post":
            body = b"x" * rng.randint(1, 100)
            if rng.random() < 0.3:
                headers += [("Producer-Id", "v"), ("Producer-Epoch", "0"), ("Producer-Seq", "0")]
        elif action == "poll":
            target += "?offset=now&live=" + rng.choice(["long-poll", "sse"])
        call = Call("volatile", method.get(action, "GET"), target, headers, body)
        call.comparable = False
        return call

    def _wake(self) -> Call:
        """The lane's wake streams: written by the server, so never modelled or compared."""
        rng = self.rng
        name = rng.choice(self.wakes)
        target = f"{STREAM_ROOT}/{name}"
        action = rng.choice(["put", "put", "get", "head", "delete", "sse"])
        if action == "put":
            content_type = rng.choice(["application/json", "application/json", "text/plain"])
            call = Call("wake", "PUT", target, [("Content-Type", content_type)])
        elif action == "sse":
            call = Call("wake", "GET", target + "?offset=-1&live=sse")
        else:
            call = Call("wake", {"get": "GET", "head": "HEAD"}.get(action, "DELETE"), target)
        call.comparable = False
        return call
