"""Judging answers against the model, and updating the model from what they acknowledge.

`Judging` is the half of a `Lane` that reads answers; the lane's own half
generates and sends the calls.
"""

from __future__ import annotations

import base64
import json
from typing import Final

from .calls import Answer, Call
from .model import Existence, Incarnation, Model, ModelStream, json_messages, media_type

_MODEL_KINDS: Final = ("put", "fork", "post", "get", "long-poll", "sse", "head", "delete")


def _sse_events(body: bytes) -> list[tuple[str, str]]:
    """(event, data) of each event in an SSE body; data lines joined with newlines."""
    events = []
    for block in body.decode("utf-8", errors="replace").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                value = line[5:]
                data.append(value.removeprefix(" "))
        if data or name != "message":
            events.append((name, "\n".join(data)))
    return events


class Judging:
    """Model checks for a lane's answers; see `Lane` for the state they use."""

    index: int
    model: Model
    producers: dict[int, dict[str, tuple[int, int]]]
    cursor: str | None
    etags: dict[int, str]
    claim_tokens: dict[str, str]
    ops: int
    failures: list[str]

    def fail(self, message: str, call: Call | None = None, answer: Answer | None = None) -> None:
        text = f"lane {self.index} op #{self.ops}: {message}"
        if call is not None:
            text += f"\n  request: {call.describe()}"
        if answer is not None:
            text += f"\n  answer: {answer.describe()}"
        self.failures.append(text)

    def judge(self, call: Call, answer: Answer) -> None:
        """Check `answer` against the model, and update the model from it."""
        status = answer.status
        if call.context.get("must_reject") and status is not None and 200 <= status < 300:
            self.fail("a malformed path or method was accepted", call, answer)
        if call.kind == "subscription" and answer.status == 200:
            sub_id = call.context.get("claim_for")
            if sub_id is not None:
                try:
                    self.claim_tokens[sub_id] = json.loads(answer.body)["token"]
                except (ValueError, KeyError, TypeError):
                    self.fail("a claim's 200 lacks a token", call, answer)
        stream = call.context.get("stream")
        if call.kind not in _MODEL_KINDS or not isinstance(stream, ModelStream):
            return
        if not stream.known:
            return
        existence = stream.existence()
        status = answer.status
        if status == 404 and call.kind != "fork":
            self._expect(existence is Existence.ABSENT, "404 for a stream", call, answer)
            return
        if status == 410 and call.kind != "fork":
            self._expect(existence is Existence.SOFT_DELETED, "410 for a stream", call, answer)
            return
        handler = {
            "put": self._judge_put,
            "fork": self._judge_fork,
            "post": self._judge_post,
            "get": self._judge_read,
            "long-poll": self._judge_read,
            "sse": self._judge_sse,
            "head": self._judge_head,
            "delete": self._judge_delete,
        }[call.kind]
        handler(call, answer, stream)

    def _expect(self, condition: bool, message: str, call: Call, answer: Answer) -> bool:
        if not condition:
            stream = call.context.get("stream")
            state = ""
            if isinstance(stream, ModelStream):
                state = f" (the model: {stream.key} is {stream.existence().value}"
                if stream.current is not None:
                    inc = stream.current
                    state += f", {inc.content_type}, closed={inc.closed}, length={inc.length}"
                state += ")"
            self.fail(f"model mismatch: {message}{state}", call, answer)
            if isinstance(stream, ModelStream):
                self.model.forget(stream, message)
        return condition

    def _observe(self, call: Call, answer: Answer, incarnation: Incarnation, units: int) -> None:
        """Remember the answer's Stream-Next-Offset as position `units`."""
        if incarnation.content is None:
            return
        complaint = incarnation.observe(answer.header("stream-next-offset"), units)
        if complaint is not None:
            self._expect(False, complaint, call, answer)

    def _records(self, body: bytes, is_json: bool) -> list[object] | bytes | None:
        """What `body` stores: JSON messages or bytes; None for invalid JSON."""
        if not body:
            return [] if is_json else b""
        return json_messages(body) if is_json else body

    def _judge_put(self, call: Call, answer: Answer, stream: ModelStream) -> None:
        existence = stream.existence()
        if answer.status == 201:
            if not self._expect(
                existence is Existence.ABSENT, "201 created over a stream", call, answer
            ):
                return
            content_type = answer.header("content-type") or ""
            closed = answer.flag("stream-closed")
            self._check_created(call, answer, content_type, closed)
            body = b"".join(call.chunked) if call.chunked is not None else call.body
            records = self._records(body, media_type(content_type) == "application/json")
            if records is None:
                self._expect(False, "201 for an invalid JSON body", call, answer)
                return
            content = list(records) if isinstance(records, list) else bytearray(records)
            incarnation = self.model.create(stream, content_type, content, closed)
            self._observe(call, answer, incarnation, len(content))
        elif answer.status == 200:
            if self._expect(existence is Existence.LIVE, "200 confirmed a stream", call, answer):
                assert stream.current is not None
                self._expect(
                    answer.flag("stream-closed") == stream.current.closed,
                    "Stream-Closed on a confirming PUT",
                    call,
                    answer,
                )
        elif answer.status == 409:
            self._expect(existence is not Existence.ABSENT, "409 on a free path", call, answer)

    def _check_created(self, call: Call, answer: Answer, content_type: str, closed: bool) -> None:
        sent_type = call.context.get("sent_type")
        if isinstance(sent_type, str) and sent_type.strip():
            self._expect(content_type == sent_type.strip(), "Content-Type of a 201", call, answer)
        self._expect(closed == call.context["sent_closed"], "Stream-Closed of a 201", call, answer)

    def _judge_fork(self, call: Call, answer: Answer, stream: ModelStream) -> None:
        source: ModelStream | None = call.context["source"]
        source_incarnation: Incarnation | None = call.context["source_incarnation"]
        existence = stream.existence()
        if answer.status == 404:
            if source is not None and source.known:
                self._expect(
                    source.existence() is Existence.ABSENT, "404 for a fork's source", call, answer
                )
            return
        if answer.status == 200:
            self._expect(existence is Existence.LIVE, "200 confirmed a fork", call, answer)
            return
        if answer.status != 201:
            return
        if not self._expect(
            existence is Existence.ABSENT, "201 created over a stream", call, answer
        ):
            return
        if source is not None and source.known:
            self._expect(
                source.existence() is Existence.LIVE, "201 forked a missing source", call, answer
            )
        content_type = answer.header("content-type") or ""
        closed = answer.flag("stream-closed")
        self._check_created(call, answer, content_type, closed)
        if source_incarnation is not None and call.context["sent_type"] is None:
            self._expect(
                content_type == source_incarnation.content_type,
                "a fork's inherited Content-Type",
                call,
                answer,
            )
        anchor, sub_offset = call.context["anchor"], call.context["sub_offset"]
        content: bytearray | list[object] | None = None
        point = None
        if (
            source is not None
            and source.known
            and source_incarnation is not None
            and source_incarnation.content is not None
            and anchor is not None
            and sub_offset is not None
        ):
            point = anchor + sub_offset
            if not self._expect(
                point <= len(source_incarnation.content), "a fork past the tail", call, answer
            ):
                return
            body = b"".join(call.chunked) if call.chunked is not None else call.body
            records = self._records(body, source_incarnation.is_json)
            if records is None:
                self._expect(False, "201 for a fork with an invalid JSON body", call, answer)
                return
            inherited = source_incarnation.content[:point]
            content = inherited + (list(records) if isinstance(records, list) else records)
        incarnation = self.model.create(stream, content_type, content, closed, source_incarnation)
        if content is not None and source_incarnation is not None and point is not None:
            for token, units in source_incarnation.offsets.items():
                if units <= point:
                    incarnation.offsets[token] = units
            self._observe(call, answer, incarnation, len(content))

    def _judge_post(self, call: Call, answer: Answer, stream: ModelStream) -> None:
        existence = stream.existence()
        incarnation = stream.current
        context = call.context
        status = answer.status
        if status == 409 and answer.flag("stream-closed"):
            if self._expect(
                existence is Existence.LIVE and incarnation is not None and incarnation.closed,
                "409 Stream-Closed for an open stream",
                call,
                answer,
            ):
                assert incarnation is not None
                if incarnation.length is not None:
                    self._observe(call, answer, incarnation, incarnation.length)
            return
        if status not in (200, 204):
            if incarnation is not None and status in (403, 409):
                self._learn_producer(call, answer, incarnation)
            return
        if not self._expect(existence is Existence.LIVE, "an append acknowledged", call, answer):
            return
        assert incarnation is not None
        producer = context["producer"]
        body = b"".join(call.chunked) if call.chunked is not None else call.body
        self._expect(producer != "invalid", "2xx despite malformed producer headers", call, answer)
        if status == 200:
            self._expect(producer == "valid", "200 for an append without producer", call, answer)
        appended = status == 200 or (producer == "none" and bool(body))
        closed_after = answer.flag("stream-closed")
        if appended:
            self._expect(not incarnation.closed, "appended to a closed stream", call, answer)
            sent_type = context["sent_type"]
            if isinstance(sent_type, str):
                self._expect(
                    media_type(sent_type) == media_type(incarnation.content_type),
                    "an append of another content type",
                    call,
                    answer,
                )
            if incarnation.content is not None:
                records = self._records(body, incarnation.is_json)
                if records is None or (isinstance(records, list) and not records):
                    self._expect(False, "2xx for an invalid JSON append", call, answer)
                    return
                incarnation.content += records  # type: ignore[operator]
        if incarnation.closed:
            self._expect(closed_after, "a closed stream reopened", call, answer)
        elif producer == "none":
            self._expect(
                closed_after == context["close"], "Stream-Closed after a POST", call, answer
            )
        incarnation.closed = closed_after
        if producer == "valid":
            self._learn_producer(call, answer, incarnation)
        if incarnation.length is not None:
            self._observe(call, answer, incarnation, incarnation.length)

    def _learn_producer(self, call: Call, answer: Answer, incarnation: Incarnation) -> None:
        headers = dict(call.headers)
        producer_id = headers.get("Producer-Id")
        if not isinstance(producer_id, str) or not call.comparable:
            return
        states = self.producers.setdefault(incarnation.serial, {})
        epoch, seq = answer.header("producer-epoch"), answer.header("producer-seq")
        expected = answer.header("producer-expected-seq")
        try:
            if answer.status in (200, 204) and epoch is not None and seq is not None:
                states[producer_id] = (int(epoch), int(seq))
            elif answer.status == 403 and epoch is not None:
                states[producer_id] = (int(epoch), -1)
            elif answer.status == 409 and expected is not None:
                sent_epoch = headers.get("Producer-Epoch")
                states[producer_id] = (int(str(sent_epoch)), int(expected) - 1)
        except ValueError:
            self.fail("malformed producer headers in an answer", call, answer)

    def _judge_head(self, call: Call, answer: Answer, stream: ModelStream) -> None:
        if answer.status != 200:
            return
        if not self._expect(stream.existence() is Existence.LIVE, "200 HEAD", call, answer):
            return
        incarnation = stream.current
        assert incarnation is not None
        self._expect(
            answer.flag("stream-closed") == incarnation.closed,
            "Stream-Closed on HEAD",
            call,
            answer,
        )
        self._expect(
            answer.header("content-type") == incarnation.content_type,
            "Content-Type on HEAD",
            call,
            answer,
        )
        if incarnation.length is not None:
            self._observe(call, answer, incarnation, incarnation.length)

    def _judge_delete(self, call: Call, answer: Answer, stream: ModelStream) -> None:
        if answer.status != 204:
            return
        if self._expect(stream.existence() is Existence.LIVE, "204 DELETE", call, answer):
            assert stream.current is not None
            self.model.delete(stream.current)

    def _judge_read(self, call: Call, answer: Answer, stream: ModelStream) -> None:
        incarnation = stream.current
        status = answer.status
        start: int | None = call.context.get("start")
        pair = call.context.get("pair", False)
        if status in (200, 204):
            if not self._expect(stream.existence() is Existence.LIVE, "a read", call, answer):
                return
        else:
            if status == 400 and call.context.get("clean") and start is not None:
                length = incarnation.length if incarnation else None
                self._expect(
                    length is None or start > length, "400 for a valid offset", call, answer
                )
            return
        assert incarnation is not None
        cursor = answer.header("stream-cursor")
        if call.kind == "long-poll" and not pair and cursor is not None:
            self.cursor = cursor
        content = incarnation.content
        if content is None or start is None:
            return
        if status == 204:
            if pair:
                return
            self._expect(start == len(content), "long-poll 204 with data there", call, answer)
            self._expect(
                answer.flag("stream-closed") == incarnation.closed,
                "Stream-Closed on 204",
                call,
                answer,
            )
            self._observe(call, answer, incarnation, len(content))
            return
        if incarnation.is_json:
            try:
                got = json.loads(answer.body)
            except ValueError:
                self._expect(False, "a JSON read is not JSON", call, answer)
                return
            if not self._expect(isinstance(got, list), "a JSON read is not an array", call, answer):
                return
        else:
            got = answer.body
        expected = content[start : start + len(got)]
        if not self._expect(
            got == expected, f"read data from position {start} ({len(got)} units)", call, answer
        ):
            return
        end = start + len(got)
        if start < len(content):
            self._expect(end > start, "a read made no progress", call, answer)
        self._expect(
            answer.flag("stream-up-to-date") == (end == len(content)),
            "Stream-Up-To-Date",
            call,
            answer,
        )
        self._expect(
            answer.flag("stream-closed") == (incarnation.closed and end == len(content)),
            "Stream-Closed on a read",
            call,
            answer,
        )
        self._expect(
            answer.header("content-type") == incarnation.content_type,
            "Content-Type of a read",
            call,
            answer,
        )
        if call.kind == "get" and answer.header("etag"):
            self.etags[incarnation.serial] = answer.header("etag") or ""
        if not pair:
            self._observe(call, answer, incarnation, end)

    def _judge_sse(self, call: Call, answer: Answer, stream: ModelStream) -> None:
        if answer.status != 200:
            return
        if not self._expect(stream.existence() is Existence.LIVE, "an SSE read", call, answer):
            return
        incarnation = stream.current
        assert incarnation is not None
        events = _sse_events(answer.body)
        controls = [json.loads(data) for name, data in events if name == "control"]
        if not self._expect(
            bool(controls), "an SSE response without a control event", call, answer
        ):
            return
        start: int | None = call.context.get("start")
        content = incarnation.content
        if content is None or start is None:
            return
        base64_encoded = (answer.header("stream-sse-data-encoding") or "").lower() == "base64"
        mode = media_type(incarnation.content_type)
        self._expect(
            base64_encoded == (not (mode.startswith("text/") or mode == "application/json")),
            "Stream-SSE-Data-Encoding",
            call,
            answer,
        )
        got: list[object] | bytes | str
        if incarnation.is_json:
            got = []
            for name, data in events:
                if name == "data":
                    got.extend(json.loads(data))
            length = len(got)
        elif base64_encoded:
            got = b"".join(
                base64.b64decode(data.replace("\n", "")) for name, data in events if name == "data"
            )
            length = len(got)
        else:
            rest = bytes(content[start:])  # type: ignore[arg-type]
            if not rest.isascii() or b"\r" in rest:
                return  # text events carry lines, not bytes: CR and invalid UTF-8 are not kept
            got = "".join(data for name, data in events if name == "data")
            length = len(got)
            got = got.encode()
        expected = content[start : start + length]
        if isinstance(expected, bytearray):
            expected = bytes(expected)
        if not self._expect(got == expected, f"SSE data from position {start}", call, answer):
            return
        last = controls[-1]
        at_tail = start + length == len(content)
        self._expect(
            bool(last.get("upToDate")) == at_tail,
            "upToDate in the last control event",
            call,
            answer,
        )
        self._expect(
            bool(last.get("streamClosed")) == (incarnation.closed and at_tail),
            "streamClosed in the last control event",
            call,
            answer,
        )
