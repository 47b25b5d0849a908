"""Signed links into the preference centre: bound to one customer and one purpose, carrying an
internal number rather than anything personal, and still valid after the secret is rotated."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer

from engine.config.settings import Config

PURPOSES = ("preferences", "unsubscribe", "confirm")
# Purposes bound to one send of one customer: a rating names the email rated, an alert the email
# that carried it. The send id is an internal number too.
SEND_PURPOSES = ("rate", "alert")


class Links:
    def __init__(self, config: Config):
        self.base = config.public_url.rstrip("/")
        # itsdangerous signs with the LAST key and verifies with all, so the current secret
        # (first in config) goes last: links signed with an old key listed in config still work.
        self.secrets = list(reversed(config.secret_keys()))
        # One serializer a purpose, made once: every email signs three links.
        self._serializers = {
            p: URLSafeSerializer(self.secrets, salt=f"lifecycle.{p}") for p in PURPOSES + SEND_PURPOSES
        }

    def token(self, purpose: str, customer_id: int, topic: str | None = None) -> str:
        return self._serializers[purpose].dumps([customer_id, topic])

    def read(self, purpose: str, token: str) -> tuple[int, str | None] | None:
        """The (customer id, topic) a token was made for, or None for any forged or foreign token."""
        try:
            customer_id, topic = self._serializers[purpose].loads(token)
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(customer_id, int) or isinstance(customer_id, bool):
            return None
        return (customer_id, topic) if topic is None or isinstance(topic, str) else None

    def send_token(self, purpose: str, customer_id: int, send_id: int) -> str:
        return self._serializers[purpose].dumps([customer_id, send_id])

    def read_send(self, purpose: str, token: str) -> tuple[int, int] | None:
        """The (customer id, send id) a send token was made for, or None for any forged or foreign token."""
        try:
            customer_id, send_id = self._serializers[purpose].loads(token)
        except (BadSignature, ValueError, TypeError):
            return None
        numbers = (customer_id, send_id)
        return numbers if all(isinstance(n, int) and not isinstance(n, bool) for n in numbers) else None

    def rating(self, customer_id: int, send_id: int, scores: range) -> dict[int, str]:
        """One link a score, all with the same token: the score is in the path."""
        base = f"{self.base}/feedback/{self.send_token('rate', customer_id, send_id)}"
        return {score: f"{base}/{score}" for score in scores}

    def alert(self, customer_id: int, send_id: int) -> str:
        return f"{self.base}/alerts/{self.send_token('alert', customer_id, send_id)}"

    def for_customer(self, customer_id: int, topic: str | None) -> dict[str, str]:
        return {
            "preferences": f"{self.base}/preferences/{self.token('preferences', customer_id)}",
            "unsubscribe": f"{self.base}/unsubscribe/{self.token('unsubscribe', customer_id, topic)}",
            "confirm": f"{self.base}/confirm/{self.token('confirm', customer_id)}",
        }
