"""Idempotent producers (`ds_trio.protocol.producers`, spec section 5.2.1).

Covers every branch of `check_producer` as a table, the errors' statuses and
headers, parsing of the Producer-Id/-Epoch/-Seq triple, and a model check:
over random sequences of (epoch, seq) claims, `check_producer` agrees with a
small independent model written here straight from the spec's rule table.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_trio.protocol.errors import (
    BadRequest,
    InvalidEpochSeq,
    ProtocolError,
    SeqGap,
    StaleEpoch,
)
from ds_trio.protocol.producers import (
    MAX_PRODUCER_INT,
    ProducerAccepted,
    ProducerClaim,
    ProducerDuplicate,
    ProducerState,
    check_producer,
    parse_producer_headers,
)

PROPERTY = settings(max_examples=200, deadline=None, database=None)


def claim(epoch: int, seq: int) -> ProducerClaim:
    return ProducerClaim("producer-1", epoch, seq)


def accepted(epoch: int, seq: int) -> ProducerAccepted:
    return ProducerAccepted(ProducerState(epoch, seq))


def duplicate(epoch: int, seq: int) -> ProducerDuplicate:
    return ProducerDuplicate(ProducerState(epoch, seq))


@pytest.mark.parametrize(
    ("state", "epoch", "seq", "expected"),
    [
        pytest.param(None, 0, 0, accepted(0, 0), id="new-producer-starts"),
        pytest.param(None, 5, 0, accepted(5, 0), id="new-producer-any-epoch"),
        pytest.param(ProducerState(0, 0), 0, 1, accepted(0, 1), id="next-seq"),
        pytest.param(ProducerState(3, 41), 3, 42, accepted(3, 42), id="next-seq-later-epoch"),
        pytest.param(ProducerState(0, 3), 0, 3, duplicate(0, 3), id="retry-of-last"),
        pytest.param(ProducerState(0, 3), 0, 0, duplicate(0, 3), id="retry-of-older"),
        pytest.param(ProducerState(1, 9), 2, 0, accepted(2, 0), id="new-epoch"),
        pytest.param(ProducerState(1, 9), 7, 0, accepted(7, 0), id="epoch-jump"),
    ],
)
def test_check_producer_outcomes(
    state: ProducerState | None, epoch: int, seq: int, expected: object
) -> None:
    assert check_producer(state, claim(epoch, seq)) == expected


@pytest.mark.parametrize(
    ("state", "epoch", "seq", "error", "status", "headers"),
    [
        pytest.param(
            None, 0, 1, SeqGap, 409,
            {"Producer-Expected-Seq": "0", "Producer-Received-Seq": "1"},
            id="new-producer-not-at-zero",
        ),
        pytest.param(
            ProducerState(0, 3), 0, 5, SeqGap, 409,
            {"Producer-Expected-Seq": "4", "Producer-Received-Seq": "5"},
            id="seq-gap",
        ),
        pytest.param(
            ProducerState(2, 0), 1, 0, StaleEpoch, 403, {"Producer-Epoch": "2"},
            id="stale-epoch",
        ),
        pytest.param(
            ProducerState(2, 7), 0, 8, StaleEpoch, 403, {"Producer-Epoch": "2"},
            id="stale-epoch-beats-seq",
        ),
        pytest.param(
            ProducerState(1, 9), 2, 1, InvalidEpochSeq, 400, {},
            id="new-epoch-not-at-zero",
        ),
        pytest.param(
            ProducerState(1, 9), 2, 10, InvalidEpochSeq, 400, {},
            id="new-epoch-continuing-seq",
        ),
    ],
)  # fmt: skip
def test_check_producer_errors(
    state: ProducerState | None,
    epoch: int,
    seq: int,
    error: type[ProtocolError],
    status: int,
    headers: dict[str, str],
) -> None:
    with pytest.raises(error) as info:
        check_producer(state, claim(epoch, seq))
    assert info.value.status == status
    assert info.value.headers == headers


def test_seq_gap_carries_numbers() -> None:
    with pytest.raises(SeqGap) as info:
        check_producer(ProducerState(0, 10), claim(0, 20))
    assert (info.value.expected, info.value.received) == (11, 20)


# --- header parsing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param((None, None, None), None, id="absent"),
        pytest.param(("p", "0", "0"), ProducerClaim("p", 0, 0), id="zeros"),
        pytest.param(("order-service-1", "3", "17"), ProducerClaim("order-service-1", 3, 17),
                     id="typical"),
        pytest.param(("p", " 3 ", "\t4"), ProducerClaim("p", 3, 4), id="numbers-stripped"),
        pytest.param(("p", str(MAX_PRODUCER_INT), str(MAX_PRODUCER_INT)),
                     ProducerClaim("p", MAX_PRODUCER_INT, MAX_PRODUCER_INT), id="largest"),
    ],
)  # fmt: skip
def test_parse_producer_headers(
    raw: tuple[str | None, str | None, str | None], expected: ProducerClaim | None
) -> None:
    assert parse_producer_headers(*raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(("p", None, None), id="id-only"),
        pytest.param(("p", "0", None), id="missing-seq"),
        pytest.param((None, "0", "0"), id="missing-id"),
        pytest.param((None, None, "0"), id="seq-only"),
        pytest.param(("", "0", "0"), id="empty-id"),
        pytest.param(("  ", "0", "0"), id="blank-id"),
        pytest.param(("p", "", "0"), id="empty-epoch"),
        pytest.param(("p", "-1", "0"), id="negative-epoch"),
        pytest.param(("p", "+1", "0"), id="plus-epoch"),
        pytest.param(("p", "01", "0"), id="leading-zero-epoch"),
        pytest.param(("p", "1.0", "0"), id="decimal-epoch"),
        pytest.param(("p", "1e3", "0"), id="exponent-epoch"),
        pytest.param(("p", "abc", "0"), id="junk-epoch"),
        pytest.param(("p", "\u0661", "0"), id="non-ascii-digit-epoch"),
        pytest.param(("p", str(MAX_PRODUCER_INT + 1), "0"), id="epoch-over-2^53"),
        pytest.param(("p", "0", ""), id="empty-seq"),
        pytest.param(("p", "0", "-5"), id="negative-seq"),
        pytest.param(("p", "0", "007"), id="leading-zero-seq"),
        pytest.param(("p", "0", str(MAX_PRODUCER_INT + 1)), id="seq-over-2^53"),
        pytest.param(("p", "1" * 4301, "0"), id="epoch-beyond-int-parsing"),
    ],
)
def test_parse_producer_headers_rejects(raw: tuple[str | None, str | None, str | None]) -> None:
    with pytest.raises(BadRequest) as info:
        parse_producer_headers(*raw)
    assert info.value.status == 400


# --- model check -----------------------------------------------------------------

# The spec's validation table (5.2.1), keyed by how the claim relates to the
# stored state. "new" is a producer the server holds no state for: it must
# start at seq 0, otherwise the gap is reported against an expected seq of 0.
SPEC_RULES: dict[tuple[str, str], str] = {
    ("new", "zero"): "accept",
    ("new", "nonzero"): "gap",
    ("older", "any"): "stale",
    ("newer", "zero"): "accept",
    ("newer", "nonzero"): "bad-epoch-seq",
    ("same", "not-after-last"): "duplicate",
    ("same", "next"): "accept",
    ("same", "past-next"): "gap",
}


def model(state: tuple[int, int] | None, epoch: int, seq: int) -> tuple[Any, ...]:
    """(verdict, resulting state, error detail) as the spec's table dictates."""
    if state is None:
        key = ("new", "zero" if seq == 0 else "nonzero")
        expected_seq = 0
    elif epoch < state[0]:
        key = ("older", "any")
    elif epoch > state[0]:
        key = ("newer", "zero" if seq == 0 else "nonzero")
    else:
        expected_seq = state[1] + 1
        if seq <= state[1]:
            key = ("same", "not-after-last")
        elif seq == expected_seq:
            key = ("same", "next")
        else:
            key = ("same", "past-next")
    verdict = SPEC_RULES[key]
    if verdict == "accept":
        return ("accept", (epoch, seq), None)
    if verdict == "duplicate":
        return ("duplicate", state, None)
    if verdict == "stale":
        return ("stale", state, {"Producer-Epoch": str(state[0])})
    if verdict == "gap":
        gap = {"Producer-Expected-Seq": str(expected_seq), "Producer-Received-Seq": str(seq)}
        return ("gap", state, gap)
    return ("bad-epoch-seq", state, None)


def run_implementation(state: ProducerState | None, epoch: int, seq: int) -> tuple[Any, ...]:
    as_tuple = None if state is None else (state.epoch, state.last_seq)
    try:
        result = check_producer(state, claim(epoch, seq))
    except StaleEpoch as exc:
        return ("stale", as_tuple, exc.headers)
    except SeqGap as exc:
        return ("gap", as_tuple, exc.headers)
    except InvalidEpochSeq:
        return ("bad-epoch-seq", as_tuple, None)
    new = (result.state.epoch, result.state.last_seq)
    if isinstance(result, ProducerDuplicate):
        assert result.state == state  # a duplicate never changes the stored state
        return ("duplicate", new, None)
    assert isinstance(result, ProducerAccepted)
    return ("accept", new, None)


claims = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3), st.integers(min_value=0, max_value=5)),
    max_size=40,
)


@PROPERTY
@given(claims)
def test_check_producer_matches_spec_model(sequence: list[tuple[int, int]]) -> None:
    model_state: tuple[int, int] | None = None
    state: ProducerState | None = None
    for epoch, seq in sequence:
        expected = model(model_state, epoch, seq)
        actual = run_implementation(state, epoch, seq)
        assert actual == expected, f"claim (epoch={epoch}, seq={seq}) from {model_state}"
        model_state = expected[1]
        if actual[0] == "accept":
            state = ProducerState(*actual[1])
        assert (None if state is None else (state.epoch, state.last_seq)) == model_state


@PROPERTY
@given(st.integers(min_value=0, max_value=5), st.integers(min_value=1, max_value=20))
def test_in_order_run_is_all_accepted_and_replay_all_duplicate(epoch: int, length: int) -> None:
    state: ProducerState | None = None
    for seq in range(length):
        result = check_producer(state, claim(epoch, seq))
        assert result == accepted(epoch, seq)
        state = result.state
    for seq in range(length):
        assert check_producer(state, claim(epoch, seq)) == duplicate(epoch, length - 1)
