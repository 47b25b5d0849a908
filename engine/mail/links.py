"""Links into the preference centre: bound to one customer and one purpose, revealing nothing
about either, and still valid after the secret is rotated.

A token is the customer's internal number (with the topic, or the send it is about) sealed with
AES-SIV under a key derived from the secret and the purpose: the link shows no number, not even
the store's own, and any change to it fails authentication. AES-SIV is deterministic, so one
customer's link for one purpose is the same in every email, as before.

Tokens of the first format (`payload.signature`, itsdangerous-signed JSON whose payload is the
internal number in readable base64) are no longer made, but are still read: links already in
inboxes keep working."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from itsdangerous import BadSignature, URLSafeSerializer

from engine.config.settings import Config

PURPOSES = ("preferences", "unsubscribe", "confirm")
# Purposes bound to one send of one customer: a rating names the email rated, an alert the email
# that carried it. The send id is an internal number too.
SEND_PURPOSES = ("rate", "alert")


def sealing_key(secret: str, purpose: str) -> AESSIV:
    """An AES-SIV key (512 bits) of its own for each secret and purpose: a token made for one
    purpose never opens as another."""
    return AESSIV(hmac.new(secret.encode(), f"lifecycle.link.{purpose}".encode(), hashlib.sha512).digest())


class Links:
    def __init__(self, config: Config):
        self.base = config.public_url.rstrip("/")
        keys = config.secret_keys()  # the current secret first, then old ones still accepted
        # itsdangerous signs with the LAST key and verifies with all (the CSRF fields use this order).
        self.secrets = list(reversed(keys))
        everything = PURPOSES + SEND_PURPOSES
        # Made once: every email seals three to five links.
        self._keys = {p: [sealing_key(secret, p) for secret in keys] for p in everything}
        self._first_format = {p: URLSafeSerializer(self.secrets, salt=f"lifecycle.{p}") for p in everything}

    def _seal(self, purpose: str, fields: list[Any]) -> str:
        # orjson writes what json.dumps(fields, separators=(",", ":")) writes, in a fifth of the time
        # (text not ASCII as UTF-8 rather than escaped: json.loads reads both)
        sealed = self._keys[purpose][0].encrypt(orjson.dumps(fields), None)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def _open(self, purpose: str, token: str) -> Any:
        """The fields a token was made with, or None for any forged, altered or foreign token."""
        if "." in token:  # the first format: base64url never contains a dot
            try:
                return self._first_format[purpose].loads(token)
            except (BadSignature, ValueError, TypeError):
                return None
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        for key in self._keys[purpose]:
            try:
                return json.loads(key.decrypt(sealed, None))
            except (InvalidTag, ValueError):
                continue
        return None

    def token(self, purpose: str, customer_id: int, topic: str | None = None) -> str:
        return self._seal(purpose, [customer_id, topic])

    def read(self, purpose: str, token: str) -> tuple[int, str | None] | None:
        """The (customer id, topic) a token was made for, or None for any forged or foreign token."""
        fields = self._open(purpose, token)
        if not isinstance(fields, list) or len(fields) != 2:
            return None
        customer_id, topic = fields
        if not isinstance(customer_id, int) or isinstance(customer_id, bool):
            return None
        return (customer_id, topic) if topic is None or isinstance(topic, str) else None

    def send_token(self, purpose: str, customer_id: int, send_id: int) -> str:
        return self._seal(purpose, [customer_id, send_id])

    def read_send(self, purpose: str, token: str) -> tuple[int, int] | None:
        """The (customer id, send id) a send token was made for, or None for any forged or foreign token."""
        fields = self._open(purpose, token)
        if not isinstance(fields, list) or len(fields) != 2:
            return None
        customer_id, send_id = fields
        numbers = (customer_id, send_id)
        return numbers if all(isinstance(n, int) and not isinstance(n, bool) for n in numbers) else None

    def rating(self, customer_id: int, send_id: int, scores: range) -> dict[int, str]:
        """One link a score, all with the same token: the score is in the path."""
        base = f"{self.base}/feedback/{self.send_token('rate', customer_id, send_id)}"
        return {score: f"{base}/{score}" for score in scores}

    def alert(self, customer_id: int, send_id: int) -> str:
        return f"{self.base}/alerts/{self.send_token('alert', customer_id, send_id)}"

    def for_customer(self, customer_id: int, topic: str | None) -> LazyLinks:
        return LazyLinks(
            {
                "preferences": lambda: f"{self.base}/preferences/{self.token('preferences', customer_id)}",
                "unsubscribe": lambda: f"{self.base}/unsubscribe/{self.token('unsubscribe', customer_id, topic)}",
                "confirm": lambda: f"{self.base}/confirm/{self.token('confirm', customer_id)}",
            }
        )


class LazyLinks(Mapping[str, Any]):
    """Links each sealed when first read: a message pays only for those its template uses (most
    use two of five; sealing one is a good part of composing a message)."""

    def __init__(self, makers: Mapping[str, Callable[[], Any]]) -> None:
        self.makers = makers
        self.made: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.made:
            self.made[name] = self.makers[name]()
        return self.made[name]

    def __contains__(self, name: object) -> bool:
        return name in self.makers  # without making the link, as Mapping's would

    def __iter__(self) -> Iterator[str]:
        return iter(self.makers)

    def __len__(self) -> int:
        return len(self.makers)

    def __or__(self, other: LazyLinks) -> LazyLinks:
        return LazyLinks({**self.makers, **other.makers})
