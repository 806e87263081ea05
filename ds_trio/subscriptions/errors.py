"""Subscription errors: a `ProtocolError` with a JSON body `{"error": {"code", "message"}}`.

The HTTP layer renders these as `application/json`; every other protocol
error stays plain text.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from ..protocol.errors import ProtocolError

__all__ = [
    "AckOffsetInvalid",
    "AlreadyClaimed",
    "Fenced",
    "InvalidSubscriptionRequest",
    "NoPendingWork",
    "SubscriptionError",
    "SubscriptionExists",
    "SubscriptionNotFound",
    "TokenExpired",
    "TokenInvalid",
    "WebhookUrlRejected",
]


class SubscriptionError(ProtocolError):
    """Base class; `code` names the error in the JSON body."""

    code: ClassVar[str] = "INVALID_REQUEST"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra

    def json_body(self) -> bytes:
        """The response body: the code, the message and any extra fields."""
        return json.dumps({"error": {"code": self.code, "message": self.message, **self.extra}}).encode()


class InvalidSubscriptionRequest(SubscriptionError):
    """A malformed subscription configuration or action body."""

    status = 400
    code = "INVALID_REQUEST"


class WebhookUrlRejected(SubscriptionError):
    """A webhook URL that is not https, or points at a private or local address."""

    status = 400
    code = "WEBHOOK_URL_REJECTED"


class SubscriptionNotFound(SubscriptionError):
    """No subscription has this id (or it was deleted)."""

    status = 404
    code = "SUBSCRIPTION_NOT_FOUND"


class SubscriptionExists(SubscriptionError):
    """PUT with a configuration that differs from the existing one."""

    status = 409
    code = "SUBSCRIPTION_ALREADY_EXISTS"


class TokenInvalid(SubscriptionError):
    """A missing, malformed or forged callback/claim token, or one for another subscription."""

    status = 401
    code = "TOKEN_INVALID"


class TokenExpired(SubscriptionError):
    """A well-signed token past its expiry."""

    status = 401
    code = "TOKEN_EXPIRED"


class Fenced(SubscriptionError):
    """A stale generation or wake id: a newer wake has superseded this one."""

    status = 409
    code = "FENCED"


class AlreadyClaimed(SubscriptionError):
    """A claim while another worker holds the lease; names the holder."""

    status = 409
    code = "ALREADY_CLAIMED"


class NoPendingWork(SubscriptionError):
    """A claim when every linked stream is acknowledged up to its tail."""

    status = 409
    code = "NO_PENDING_WORK"


class AckOffsetInvalid(SubscriptionError):
    """An ack for an unlinked stream, a malformed offset, a regression, or past the tail."""

    status = 409
    code = "INVALID_OFFSET"
