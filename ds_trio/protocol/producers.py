"""Idempotent producers: all producer validation lives here (spec 5.2.1).

Both stores call `check_producer` with the state they hold and persist the
state it returns, so the rules exist exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .errors import BadRequest, InvalidEpochSeq, SeqGap, StaleEpoch

__all__ = [
    "MAX_PRODUCER_INT",
    "ProducerAccepted",
    "ProducerClaim",
    "ProducerDuplicate",
    "ProducerState",
    "check_producer",
    "parse_producer_headers",
]

MAX_PRODUCER_INT: Final = 2**53 - 1  # JavaScript's largest safe integer


@dataclass(frozen=True, slots=True)
class ProducerClaim:
    """The (id, epoch, seq) triple an append request carries."""

    producer_id: str
    epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class ProducerState:
    """What the server remembers of one producer on one stream."""

    epoch: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class ProducerAccepted:
    """The append is new: write it and store `state`."""

    state: ProducerState


@dataclass(frozen=True, slots=True)
class ProducerDuplicate:
    """The append was already applied; answer success without writing."""

    state: ProducerState


def check_producer(
    state: ProducerState | None, claim: ProducerClaim
) -> ProducerAccepted | ProducerDuplicate:
    """Validate `claim` against the producer's stored `state`.

    Raises:
        StaleEpoch: the claim's epoch is older than the stored one (403).
        InvalidEpochSeq: a new epoch that does not start at seq 0 (400).
        SeqGap: the seq skips past the next expected one (409).
    """
    if state is None:
        if claim.seq != 0:
            raise SeqGap(expected=0, received=claim.seq)
        return ProducerAccepted(ProducerState(claim.epoch, 0))
    if claim.epoch < state.epoch:
        raise StaleEpoch(
            f"stale producer epoch {claim.epoch}; current epoch is {state.epoch}",
            {"Producer-Epoch": str(state.epoch)},
        )
    if claim.epoch > state.epoch:
        if claim.seq != 0:
            raise InvalidEpochSeq(f"a new epoch must start at seq 0, got {claim.seq}")
        return ProducerAccepted(ProducerState(claim.epoch, 0))
    if claim.seq <= state.last_seq:
        return ProducerDuplicate(state)
    if claim.seq == state.last_seq + 1:
        return ProducerAccepted(ProducerState(state.epoch, claim.seq))
    raise SeqGap(expected=state.last_seq + 1, received=claim.seq)


def _parse_producer_int(name: str, raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or (len(raw) > 1 and raw[0] == "0"):
        raise BadRequest(f"{name} must be a non-negative integer")
    value = int(raw) if len(raw) <= 20 else MAX_PRODUCER_INT + 1  # int() refuses 4301+ digits
    if value > MAX_PRODUCER_INT:
        raise BadRequest(f"{name} exceeds 2^53-1")
    return value


def parse_producer_headers(
    producer_id: str | None, epoch: str | None, seq: str | None
) -> ProducerClaim | None:
    """Parse Producer-Id/-Epoch/-Seq: all three or none.

    Raises:
        BadRequest: only some are present, the id is empty, or a number is malformed.
    """
    present = [value is not None for value in (producer_id, epoch, seq)]
    if not any(present):
        return None
    if not all(present):
        raise BadRequest("Producer-Id, Producer-Epoch and Producer-Seq must be sent together")
    assert producer_id is not None and epoch is not None and seq is not None
    if producer_id.strip() == "":
        raise BadRequest("Producer-Id must not be empty")
    return ProducerClaim(
        producer_id,
        _parse_producer_int("Producer-Epoch", epoch.strip()),
        _parse_producer_int("Producer-Seq", seq.strip()),
    )
