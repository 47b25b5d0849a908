"""The one small interface every sender implements (after django-anymail's backends)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from engine.config.settings import Config
from engine.mail.message import OutgoingEmail


@dataclass
class SendResult:
    """The outcome for one message. `transient` failures are retried; others are final."""

    send_id: int
    ok: bool
    message_id: str | None = None
    error: str | None = None
    transient: bool = False
    retry_after: float | None = None  # seconds, when the provider said how long to wait
    invalid_address: bool = False


class Sender(ABC):
    """Delivers a batch of rendered messages; one bad recipient never fails the rest."""

    def __init__(self, config: Config):
        self.config = config

    @abstractmethod
    def send_batch(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        """Deliver each message; return one result per message, in any order."""

    def close(self) -> None:
        """Release connections held across batches."""
