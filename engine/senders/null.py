"""Accepts every message and delivers none: for load tests and dry environments."""

from __future__ import annotations

from engine.mail.message import OutgoingEmail
from engine.senders.base import Sender, SendResult


class NullSender(Sender):
    name = "null"
    acknowledges = 500  # nothing leaves: a kill strands nothing real, so groups as big as a batch

    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        return [SendResult(email.send_id, ok=True, message_id=email.message_id) for email in emails]
