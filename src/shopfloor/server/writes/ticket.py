"""The values of the two-step write that outlive one request: the ticket and the refusal.

Apart from :mod:`.service` so that where tickets wait (:mod:`.confirmations`) can name them.
"""

from __future__ import annotations

from dataclasses import dataclass

from shopfloor.errors import ShopfloorError
from shopfloor.model.control import WritableTag, WriteValue

__all__ = ["Confirmation", "WriteDenied"]


class WriteDenied(ShopfloorError):  # noqa: N818 - reads as the answer (HTTP 409)
    """A write step was refused by the platform's rules.

    Attributes:
        code: ``unknown_tag``, ``unknown_connector``, ``writes_disabled``,
            ``confirmation_expired``, ``confirmation_used``, ``confirmation_unknown`` or
            ``confirmation_mismatch``.
        field: the request field at fault, if any.
        message: a sentence for people.
        path: the tag a refused confirmation was for, when known (for the audit).
    """

    def __init__(
        self, code: str, field: str | None, message: str, *, path: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message
        self.path = path


@dataclass(frozen=True, slots=True)
class Confirmation:
    """The answer to the first step: what will be written, and the ticket to confirm it.

    Attributes:
        id: the opaque confirmation to send back.
        tag: the tag to be written.
        old: its value read from the device now (None when the read was Bad).
        new: the value to be written, as the tag takes it.
        asked: the value as it was asked for (a state's number, 1 for true …).
        user: who asked (only they may confirm).
        expires_s: when it expires, on the issuing service's monotonic clock (a
            confirmation kept in the shared database expires on the database's clock).
    """

    id: str
    tag: WritableTag
    old: WriteValue | None
    new: WriteValue
    asked: WriteValue
    user: str
    expires_s: float
